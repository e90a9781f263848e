//! Conversions from service errors to `tonic::Status` with rich details.

use std::fmt::Display;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// A client mistake in one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Builds INVALID_ARGUMENT with a `BadRequest` detail listing every violation.
/// The message names the first one, so that clients without detail support
/// still learn which field was wrong.
pub fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let message = match violations.first() {
        Some(first) if violations.len() == 1 => format!("invalid {}: {}", first.field, first.description),
        Some(first) => format!(
            "invalid {}: {} (and {} more)",
            first.field,
            first.description,
            violations.len() - 1
        ),
        None => "invalid request".to_owned(),
    };
    let mut details = ErrorDetails::new();
    for violation in violations {
        details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// INVALID_ARGUMENT for a single field.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    invalid_argument(&[FieldViolation::new(field, description)])
}

/// Maximum length of an id (user, anonymous, item, placement), in bytes.
pub const MAX_ID_LEN: usize = 256;

/// Checks an identifier supplied by a client: at most [`MAX_ID_LEN`] bytes
/// and no control characters, which PostgreSQL text cannot hold (NUL) or
/// which no real id contains.
pub fn check_id(field: &str, value: &str) -> Result<(), Status> {
    if value.len() > MAX_ID_LEN {
        return Err(invalid_field(
            field,
            format!("must be at most {MAX_ID_LEN} bytes, got {}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid_field(field, format!("contains a control character: {value:?}")));
    }
    Ok(())
}

pub fn not_found(kind: &str, id: &str) -> Status {
    Status::not_found(format!("{kind} '{id}' not found"))
}

/// Logs an internal fault once, with its cause chain, and returns an opaque
/// INTERNAL status that carries no database or driver text.
pub fn internal(operation: &str, error: impl Display) -> Status {
    tracing::error!(operation, error = %error, "internal error");
    Status::internal(format!("{operation} failed; see the service logs"))
}

/// UNAVAILABLE for a dependency that cannot be reached right now.
pub fn unavailable(dependency: &str, error: impl Display) -> Status {
    tracing::warn!(dependency, error = %error, "dependency unavailable");
    Status::unavailable(format!("{dependency} is unavailable, retry later"))
}

/// Extracts the field violations of a status built by [`invalid_argument`].
pub fn field_violations(status: &Status) -> Vec<FieldViolation> {
    status
        .get_details_bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .into_iter()
                .map(|violation| FieldViolation::new(violation.field, violation.description))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_with_nul_is_invalid() {
        let status = check_id("user_id", "a\0b").unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(field_violations(&status)[0].field, "user_id");
        assert!(check_id("user_id", "541312140").is_ok());
        assert!(check_id("user_id", &"x".repeat(257)).is_err());
    }

    #[test]
    fn violations_round_trip_through_status() {
        let status = invalid_argument(&[
            FieldViolation::new("timestamp", "not RFC 3339"),
            FieldViolation::new("user_id", "missing"),
        ]);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("timestamp"));
        let violations = field_violations(&status);
        assert_eq!(violations.len(), 2);
        assert_eq!(violations[1].field, "user_id");
    }
}
