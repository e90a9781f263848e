//! RFC 9457 problem details: the error type of every handler, and the one
//! mapping from gRPC status codes to HTTP statuses.

use std::time::Duration;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use rtim_runtime::errors::{FieldViolation, field_violations};
use serde::Serialize;
use tonic::{Code, Status};

/// Media type of a problem-details body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// `Retry-After` of a 503 response when no other value is configured
/// (`gateway.retry_after` sets it for the calls to the services).
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// An HTTP error response with a problem-details body.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
    violations: Vec<FieldViolation>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            detail: detail.into(),
            violations: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 400 listing every violation; the detail names the first one, in the
    /// same words as the services' INVALID_ARGUMENT messages.
    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        let detail = match violations.as_slice() {
            [] => "invalid request".to_owned(),
            [only] => format!("invalid {}: {}", only.field, only.description),
            [first, rest @ ..] => format!(
                "invalid {}: {} (and {} more)",
                first.field,
                first.description,
                rest.len()
            ),
        };
        Self::bad_request(detail).with_violations(violations)
    }

    /// 401 with a `WWW-Authenticate` challenge naming the Bearer scheme.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, detail)
    }

    pub fn with_violations(mut self, violations: Vec<FieldViolation>) -> Self {
        self.violations = violations;
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 503 with a `Retry-After` header, so that tracking libraries wait
    /// before they send the same request again.
    pub fn unavailable(detail: impl Into<String>, retry_after: Duration) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, detail).with_header(header::RETRY_AFTER, retry_seconds(retry_after))
    }

    /// Replaces the `Retry-After` value of a 503 response; other responses
    /// are returned unchanged.
    pub fn with_retry_after(mut self, retry_after: Duration) -> Self {
        if let Some((_, value)) = self.headers.iter_mut().find(|(name, _)| name == header::RETRY_AFTER) {
            *value = retry_seconds(retry_after);
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    pub fn violations(&self) -> &[FieldViolation] {
        &self.violations
    }
}

/// Maps the status of a failed call to `service`. Client mistakes keep the
/// service's message. Server faults are logged here, once, and returned
/// with an opaque detail.
pub fn from_status(service: &str, status: &Status) -> Problem {
    let message = status.message();
    match status.code() {
        Code::InvalidArgument => Problem::bad_request(message).with_violations(field_violations(status)),
        Code::Unauthenticated => Problem::unauthorized(message),
        Code::PermissionDenied => Problem::new(StatusCode::FORBIDDEN, message),
        Code::NotFound => Problem::not_found(message),
        Code::AlreadyExists => Problem::new(StatusCode::CONFLICT, message),
        Code::ResourceExhausted => Problem::new(StatusCode::PAYLOAD_TOO_LARGE, message),
        Code::Unavailable => {
            let unavailable = match unavailable_dependency(message) {
                Some(dependency) => dependency.to_owned(),
                None => format!("{service} service"),
            };
            tracing::warn!(
                rpc.service = service,
                dependency = unavailable.as_str(),
                error = message,
                "service unavailable"
            );
            Problem::unavailable(
                format!("the {unavailable} is unavailable, retry later"),
                DEFAULT_RETRY_AFTER,
            )
        }
        Code::DeadlineExceeded => {
            tracing::warn!(rpc.service = service, error = message, "service call timed out");
            Problem::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the {service} service did not respond before the deadline"),
            )
        }
        code @ (Code::Ok
        | Code::Cancelled
        | Code::Unknown
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Internal
        | Code::DataLoss) => {
            tracing::error!(rpc.service = service, rpc.code = ?code, error = message, "service call failed");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the {service} call failed; see the gateway logs"),
            )
        }
    }
}

/// Maps a failed call like [`from_status`], except that the fields of
/// INVALID_ARGUMENT violations pass through `rename`, and the detail is
/// rebuilt from the renamed violations so that both use the same names.
pub fn from_status_renaming(service: &str, status: &Status, rename: impl Fn(&str) -> String) -> Problem {
    let violations = field_violations(status);
    if status.code() != Code::InvalidArgument || violations.is_empty() {
        return from_status(service, status);
    }
    let renamed = violations
        .into_iter()
        .map(|violation| FieldViolation::new(rename(&violation.field), violation.description))
        .collect();
    Problem::invalid(renamed)
}

/// Formats a delay as `Retry-After` seconds, rounded up and at least one,
/// because HTTP allows only whole seconds and zero would invite a retry storm.
fn retry_seconds(retry_after: Duration) -> HeaderValue {
    let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    HeaderValue::from(seconds.max(1))
}

/// Returns the dependency named by an UNAVAILABLE message that a service
/// wrote with `rtim_runtime::errors::unavailable`, in the form
/// "<dependency> is unavailable, retry later". Returns `None` for other
/// messages, such as tonic's when the service itself cannot be reached.
fn unavailable_dependency(message: &str) -> Option<&str> {
    const MAX_NAME_LEN: usize = 64;
    let dependency = message.strip_suffix(" is unavailable, retry later")?;
    let is_name = !dependency.is_empty()
        && dependency.len() <= MAX_NAME_LEN
        && dependency
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || matches!(character, ' ' | '-' | '_'));
    is_name.then_some(dependency)
}

/// A path parameter that axum could not decode.
impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Self {
        Problem::new(rejection.status(), rejection.body_text())
    }
}

/// A query string that does not fit the endpoint's parameters.
impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Self {
        Problem::new(rejection.status(), rejection.body_text())
    }
}

#[derive(Serialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    violations: Vec<ViolationBody<'a>>,
}

#[derive(Serialize)]
struct ViolationBody<'a> {
    field: &'a str,
    description: &'a str,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            kind: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: self.status.as_u16(),
            detail: &self.detail,
            violations: self
                .violations
                .iter()
                .map(|violation| ViolationBody {
                    field: &violation.field,
                    description: &violation.description,
                })
                .collect(),
        };
        // serde_json fails only on maps with non-string keys or on a failing
        // Serialize impl, and this struct has neither.
        let json = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, [(header::CONTENT_TYPE, PROBLEM_JSON)], json).into_response();
        for (name, value) in self.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use rtim_runtime::errors::invalid_field;

    use super::*;

    #[test]
    fn codes_map_to_statuses() {
        let cases = [
            (Code::InvalidArgument, StatusCode::BAD_REQUEST),
            (Code::Unauthenticated, StatusCode::UNAUTHORIZED),
            (Code::PermissionDenied, StatusCode::FORBIDDEN),
            (Code::NotFound, StatusCode::NOT_FOUND),
            (Code::AlreadyExists, StatusCode::CONFLICT),
            (Code::ResourceExhausted, StatusCode::PAYLOAD_TOO_LARGE),
            (Code::Unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (Code::DeadlineExceeded, StatusCode::GATEWAY_TIMEOUT),
            (Code::Internal, StatusCode::INTERNAL_SERVER_ERROR),
            (Code::Unknown, StatusCode::INTERNAL_SERVER_ERROR),
            (Code::FailedPrecondition, StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (code, expected) in cases {
            let problem = from_status("profile", &Status::new(code, "boom"));
            assert_eq!(problem.status(), expected, "status for {code:?}");
        }
    }

    #[test]
    fn invalid_argument_keeps_violations() {
        let status = invalid_field("timestamp", "invalid timestamp 'soon'");
        let problem = from_status("ingestion", &status);
        assert_eq!(problem.violations().len(), 1, "violation count");
        assert_eq!(problem.violations()[0].field, "timestamp", "violation field");
        assert!(problem.detail().contains("soon"), "detail: {}", problem.detail());
    }

    #[test]
    fn internal_detail_is_opaque() {
        let problem = from_status("profile", &Status::internal("database password rejected"));
        assert!(!problem.detail().contains("password"), "detail: {}", problem.detail());
    }

    #[test]
    fn unavailable_sets_retry_after() {
        let response = from_status("ingestion", &Status::unavailable("connection refused")).into_response();
        let retry = response.headers().get(header::RETRY_AFTER);
        assert_eq!(retry.map(HeaderValue::as_bytes), Some(&b"1"[..]), "Retry-After header");
        let content_type = response.headers().get(header::CONTENT_TYPE);
        assert_eq!(
            content_type.map(HeaderValue::as_bytes),
            Some(PROBLEM_JSON.as_bytes()),
            "Content-Type header"
        );
    }

    #[test]
    fn retry_after_whole_seconds() {
        let cases = [
            (Duration::from_secs(5), "5"),
            (Duration::from_millis(1500), "2"),
            (Duration::ZERO, "1"),
        ];
        for (delay, expected) in cases {
            let response = from_status("ingestion", &Status::unavailable("down"))
                .with_retry_after(delay)
                .into_response();
            let values: Vec<_> = response.headers().get_all(header::RETRY_AFTER).iter().collect();
            assert_eq!(values, [expected], "Retry-After for {delay:?}");
        }
        let problem = Problem::bad_request("bad").with_retry_after(Duration::from_secs(5));
        let response = problem.into_response();
        assert!(
            response.headers().get(header::RETRY_AFTER).is_none(),
            "only a 503 gets Retry-After"
        );
    }

    #[test]
    fn unavailable_names_dependency() {
        let status = Status::unavailable("profile service is unavailable, retry later");
        let problem = from_status("surveys", &status);
        assert_eq!(problem.status(), StatusCode::SERVICE_UNAVAILABLE, "status");
        assert_eq!(
            problem.detail(),
            "the profile service is unavailable, retry later",
            "dependency named"
        );
        let problem = from_status("surveys", &Status::unavailable("tcp connect error"));
        assert_eq!(
            problem.detail(),
            "the surveys service is unavailable, retry later",
            "called service named"
        );
        let odd = Status::unavailable("a\nb is unavailable, retry later");
        assert_eq!(
            from_status("surveys", &odd).detail(),
            "the surveys service is unavailable, retry later",
            "not a dependency name"
        );
    }

    #[test]
    fn renaming_rebuilds_detail() {
        let status = invalid_field("event.user_id", "either user_id or anonymous_id is required");
        let problem = from_status_renaming("ingestion", &status, |field| {
            field.strip_prefix("event.").unwrap_or(field).to_owned()
        });
        assert_eq!(problem.violations()[0].field, "user_id", "renamed field");
        assert_eq!(
            problem.detail(),
            "invalid user_id: either user_id or anonymous_id is required",
            "detail"
        );
        let problem = from_status_renaming("ingestion", &Status::internal("boom"), |_| unreachable!());
        assert_eq!(problem.status(), StatusCode::INTERNAL_SERVER_ERROR, "other codes");
    }

    #[test]
    fn invalid_detail_names_first_field() {
        let problem = Problem::invalid(vec![
            FieldViolation::new("batch[2].timestamp", "invalid timestamp 'soon'"),
            FieldViolation::new("batch[3]", "must be a JSON object"),
        ]);
        assert_eq!(
            problem.detail(),
            "invalid batch[2].timestamp: invalid timestamp 'soon' (and 1 more)",
            "detail"
        );
    }
}
