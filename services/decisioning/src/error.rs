//! Errors of the decisioning service and their mapping to gRPC status codes,
//! done once here at the RPC edge.

use rtim_runtime::errors::{self, FieldViolation};
use sea_orm::DbErr;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum DecisioningError {
    #[error("invalid action '{id}': {}", describe(violations))]
    InvalidAction {
        id: String,
        violations: Vec<FieldViolation>,
    },
    #[error("invalid request: {}", describe(violations))]
    InvalidRequest { violations: Vec<FieldViolation> },
    #[error("action '{id}' not found")]
    ActionNotFound { id: String },
    #[error("stored action '{id}' of tenant '{tenant}' is unreadable: {message}")]
    CorruptAction {
        tenant: String,
        id: String,
        message: String,
    },
    #[error("{operation} failed: {source}")]
    Database {
        operation: &'static str,
        #[source]
        source: DbErr,
    },
}

impl DecisioningError {
    /// Builds a closure for `map_err` that wraps a database error with the operation it interrupted.
    pub fn database(operation: &'static str) -> impl FnOnce(DbErr) -> Self {
        move |source| DecisioningError::Database { operation, source }
    }
}

impl From<DecisioningError> for Status {
    fn from(error: DecisioningError) -> Status {
        match error {
            DecisioningError::InvalidAction { violations, .. } | DecisioningError::InvalidRequest { violations } => {
                errors::invalid_argument(&violations)
            }
            DecisioningError::ActionNotFound { id } => errors::not_found("action", &id),
            DecisioningError::CorruptAction { .. } => errors::internal("reading actions", &error),
            DecisioningError::Database { operation, source } => errors::internal(operation, source),
        }
    }
}

/// Joins violations as `field: description; field: description`.
fn describe(violations: &[FieldViolation]) -> String {
    let parts: Vec<String> = violations
        .iter()
        .map(|violation| format!("{}: {}", violation.field, violation.description))
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_action_maps_to_invalid_argument() {
        let error = DecisioningError::InvalidAction {
            id: "promo".to_owned(),
            violations: vec![FieldViolation::new("action.value", "must be >= 0, got -1")],
        };
        assert_eq!(
            error.to_string(),
            "invalid action 'promo': action.value: must be >= 0, got -1"
        );
        let status = Status::from(error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "code");
        assert_eq!(errors::field_violations(&status)[0].field, "action.value", "field");
    }

    #[test]
    fn missing_action_maps_to_not_found() {
        let status = Status::from(DecisioningError::ActionNotFound { id: "gone".to_owned() });
        assert_eq!(status.code(), tonic::Code::NotFound, "code");
        assert!(status.message().contains("'gone'"), "message: {}", status.message());
    }

    #[test]
    fn database_error_is_opaque() {
        let status = Status::from(DecisioningError::Database {
            operation: "saving an action",
            source: DbErr::Custom("relation \"actions\" does not exist".to_owned()),
        });
        assert_eq!(status.code(), tonic::Code::Internal, "code");
        assert!(!status.message().contains("relation"), "message: {}", status.message());
    }
}
