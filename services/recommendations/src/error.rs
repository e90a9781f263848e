//! Errors of the service and their mapping to gRPC status codes, done once
//! here at the RPC edge.

use rtim_runtime::errors::{self, FieldViolation};
use sea_orm::DbErr;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    /// The request is invalid; each violation names a field.
    #[error("invalid request: {0:?}")]
    Invalid(Vec<FieldViolation>),
    #[error("{operation} failed: {source}")]
    Database {
        operation: &'static str,
        #[source]
        source: DbErr,
    },
}

impl RecommendError {
    /// Wraps a database error with the operation that failed, for `map_err`.
    pub fn database(operation: &'static str) -> impl FnOnce(DbErr) -> RecommendError {
        move |source| RecommendError::Database { operation, source }
    }
}

impl From<RecommendError> for Status {
    fn from(error: RecommendError) -> Status {
        match error {
            RecommendError::Invalid(violations) => errors::invalid_argument(&violations),
            RecommendError::Database { operation, source } => errors::internal(operation, source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_maps_to_invalid_argument() {
        let status = Status::from(RecommendError::Invalid(vec![FieldViolation::new("limit", "negative")]));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(errors::field_violations(&status)[0].field, "limit");
    }

    #[test]
    fn database_error_is_opaque() {
        let error = RecommendError::Database {
            operation: "reading co-visits",
            source: DbErr::Custom("relation \"co_visits\" does not exist".to_owned()),
        };
        let status = Status::from(error);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            !status.message().contains("co_visits\" does not exist"),
            "{}",
            status.message()
        );
    }
}
