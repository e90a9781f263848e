//! Errors of the service and their mapping to gRPC status codes, done once
//! here at the RPC edge.

use rtim_runtime::errors::{self, FieldViolation};
use sea_orm::DbErr;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    /// The request is invalid; each violation names a field.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldViolation>),
    #[error("survey '{survey_id}' not found")]
    NotFound { survey_id: String },
    #[error("shopper '{respondent_key}' already responded to survey '{survey_id}'")]
    AlreadyResponded { survey_id: String, respondent_key: String },
    #[error("reading the profile failed: {status}")]
    ProfileUnavailable {
        #[source]
        status: Status,
    },
    #[error("{operation} failed: {source}")]
    Database {
        operation: &'static str,
        #[source]
        source: DbErr,
    },
}

impl SurveyError {
    /// Wraps a database error with the operation that failed, for `map_err`.
    pub fn database(operation: &'static str) -> impl FnOnce(DbErr) -> SurveyError {
        move |source| SurveyError::Database { operation, source }
    }

    /// Builds the error for a single invalid field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> SurveyError {
        SurveyError::Invalid(vec![FieldViolation::new(field, description)])
    }
}

impl From<SurveyError> for Status {
    fn from(error: SurveyError) -> Status {
        match error {
            SurveyError::Invalid(violations) => errors::invalid_argument(&violations),
            SurveyError::NotFound { survey_id } => errors::not_found("survey", &survey_id),
            SurveyError::AlreadyResponded { survey_id, .. } => Status::already_exists(format!(
                "this shopper already responded to survey '{survey_id}'; each shopper responds once"
            )),
            SurveyError::ProfileUnavailable { status } => errors::unavailable("profile service", status),
            SurveyError::Database { operation, source } => errors::internal(operation, source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_per_variant() {
        let cases = [
            (
                SurveyError::invalid("survey_id", "missing"),
                tonic::Code::InvalidArgument,
            ),
            (
                SurveyError::NotFound {
                    survey_id: "nps".to_owned(),
                },
                tonic::Code::NotFound,
            ),
            (
                SurveyError::AlreadyResponded {
                    survey_id: "nps".to_owned(),
                    respondent_key: "u1".to_owned(),
                },
                tonic::Code::AlreadyExists,
            ),
            (
                SurveyError::ProfileUnavailable {
                    status: Status::deadline_exceeded("slow"),
                },
                tonic::Code::Unavailable,
            ),
            (
                SurveyError::Database {
                    operation: "reading surveys",
                    source: DbErr::Custom("no such table: surveys".to_owned()),
                },
                tonic::Code::Internal,
            ),
        ];
        for (error, code) in cases {
            let description = error.to_string();
            assert_eq!(Status::from(error).code(), code, "{description}");
        }
    }

    #[test]
    fn database_error_is_opaque() {
        let status = Status::from(SurveyError::Database {
            operation: "reading surveys",
            source: DbErr::Custom("no such table: surveys".to_owned()),
        });
        assert!(!status.message().contains("no such table"), "{}", status.message());
    }
}
