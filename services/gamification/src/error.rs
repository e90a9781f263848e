//! Errors of the gamification service and their mapping to gRPC status
//! codes, done once here at the RPC edge.

use rtim_runtime::errors::{self, FieldViolation};
use sea_orm::DbErr;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum GamificationError {
    #[error("invalid point rule '{id}': {}", describe(violations))]
    InvalidRule {
        id: String,
        violations: Vec<FieldViolation>,
    },
    #[error("invalid request: {}", describe(violations))]
    InvalidRequest { violations: Vec<FieldViolation> },
    #[error("{operation} failed: {source}")]
    Database {
        operation: &'static str,
        #[source]
        source: DbErr,
    },
}

impl GamificationError {
    /// Builds a closure for `map_err` that wraps a database error with the operation it interrupted.
    pub fn database(operation: &'static str) -> impl FnOnce(DbErr) -> Self {
        move |source| GamificationError::Database { operation, source }
    }
}

impl From<GamificationError> for Status {
    fn from(error: GamificationError) -> Status {
        match error {
            GamificationError::InvalidRule { violations, .. } | GamificationError::InvalidRequest { violations } => {
                errors::invalid_argument(&violations)
            }
            GamificationError::Database { operation, source } => errors::internal(operation, source),
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
    fn invalid_rule_maps_to_invalid_argument() {
        let error = GamificationError::InvalidRule {
            id: "orders".to_owned(),
            violations: vec![FieldViolation::new("rule.points", "is required")],
        };
        assert_eq!(
            error.to_string(),
            "invalid point rule 'orders': rule.points: is required"
        );
        let status = Status::from(error);
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "code");
        assert_eq!(errors::field_violations(&status)[0].field, "rule.points", "field");
    }

    #[test]
    fn database_error_is_opaque() {
        let status = Status::from(GamificationError::Database {
            operation: "reading a balance",
            source: DbErr::Custom("relation \"ledger\" does not exist".to_owned()),
        });
        assert_eq!(status.code(), tonic::Code::Internal, "code");
        assert!(!status.message().contains("relation"), "message: {}", status.message());
    }
}
