//! Request authentication. The gateway finds the API key of each request,
//! resolves it with the configured keys and checks the endpoint's scope
//! itself, then forwards the same key to the services, which check it again.

use axum::http::header::{AUTHORIZATION, HeaderMap};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rtim_runtime::auth::{ApiKeys, Scope, TenantId};

use crate::problem::Problem;

/// Sources of the API key that an endpoint accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credentials {
    /// `Authorization: Bearer KEY` only.
    Bearer,
    /// Also HTTP Basic with the key as the user name, and a `writeKey` body
    /// field, as Segment's tracking libraries send them.
    Tracking,
}

/// A request whose key was resolved and has the endpoint's scope.
#[derive(Clone)]
pub struct Authorized {
    key: String,
    tenant: TenantId,
}

/// Shows the tenant and never the key.
impl std::fmt::Debug for Authorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorized")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Authorized {
    /// Returns the raw key, which is forwarded to the services.
    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// Checks the body's `writeKey` of a request authenticated by its
    /// `Authorization` header: when present and not empty, it must be the
    /// same key.
    pub fn check_write_key(&self, write_key: Option<&str>) -> Result<(), AuthError> {
        match write_key {
            Some(body_key) if !body_key.is_empty() && body_key != self.key => Err(AuthError::WriteKeyMismatch),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing API key: send 'Authorization: Bearer <API key>'")]
    Missing,
    #[error("invalid Authorization header: {reason}")]
    Malformed { reason: &'static str },
    #[error("unknown API key")]
    UnknownKey,
    #[error("API key lacks the '{scope}' scope")]
    MissingScope { scope: String },
    #[error(
        "the body's writeKey does not match the API key in the Authorization header: send one key, or the same key in both"
    )]
    WriteKeyMismatch,
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::MissingScope { .. } => Problem::new(axum::http::StatusCode::FORBIDDEN, error.to_string()),
            AuthError::Missing | AuthError::Malformed { .. } | AuthError::UnknownKey | AuthError::WriteKeyMismatch => {
                Problem::unauthorized(error.to_string())
            }
        }
    }
}

/// The configured API keys.
#[derive(Clone, Debug)]
pub struct Auth {
    keys: ApiKeys,
}

impl Auth {
    pub fn new(keys: ApiKeys) -> Self {
        Self { keys }
    }

    /// Authenticates a request that carries its key in `Authorization: Bearer`
    /// and requires one of `scopes`.
    pub fn authorize(&self, headers: &HeaderMap, scopes: &[Scope]) -> Result<Authorized, AuthError> {
        let key = header_key(headers, Credentials::Bearer)?.ok_or(AuthError::Missing)?;
        self.resolve(key, scopes)
    }

    /// Authenticates a tracking request: the `Authorization` header when
    /// present, otherwise the body's `writeKey`.
    pub fn authorize_tracking(
        &self,
        headers: &HeaderMap,
        write_key: Option<&str>,
        scopes: &[Scope],
    ) -> Result<Authorized, AuthError> {
        let key = match header_key(headers, Credentials::Tracking)? {
            Some(key) => key,
            None => write_key
                .filter(|key| !key.is_empty())
                .ok_or(AuthError::Missing)?
                .to_owned(),
        };
        self.resolve(key, scopes)
    }

    fn resolve(&self, key: String, scopes: &[Scope]) -> Result<Authorized, AuthError> {
        let caller = self.keys.authenticate(&key).ok_or(AuthError::UnknownKey)?;
        let tenant = caller.require_any(scopes).map_err(|_| AuthError::MissingScope {
            scope: scope_names(scopes),
        })?;
        Ok(Authorized {
            tenant: tenant.clone(),
            key,
        })
    }
}

fn scope_names(scopes: &[Scope]) -> String {
    let names: Vec<_> = scopes.iter().map(|scope| scope.name()).collect();
    names.join("' or '")
}

/// Reads the key from the `Authorization` header; `None` when the header is absent.
pub fn header_key(headers: &HeaderMap, accepted: Credentials) -> Result<Option<String>, AuthError> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed {
        reason: "not visible ASCII",
    })?;
    parse_authorization(value, accepted).map(Some)
}

/// Parses `Bearer KEY`, or with [`Credentials::Tracking`] also `Basic
/// base64(KEY:)`, the form in which Segment's libraries send the write key.
pub fn parse_authorization(value: &str, accepted: Credentials) -> Result<String, AuthError> {
    let (scheme, credentials) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return non_empty(credentials, "the Bearer token is empty");
    }
    if scheme.eq_ignore_ascii_case("basic") && accepted == Credentials::Tracking {
        return basic_user(credentials);
    }
    Err(AuthError::Malformed {
        reason: match accepted {
            Credentials::Bearer => "expected 'Bearer <API key>'",
            Credentials::Tracking => "expected 'Bearer <API key>' or Basic with the API key as the user name",
        },
    })
}

fn basic_user(credentials: &str) -> Result<String, AuthError> {
    let malformed = |reason| AuthError::Malformed { reason };
    let decoded = BASE64
        .decode(credentials)
        .map_err(|_| malformed("Basic credentials are not valid base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| malformed("Basic credentials are not valid UTF-8"))?;
    let user = text.split_once(':').map_or(text.as_str(), |(user, _password)| user);
    non_empty(user, "Basic credentials must carry the API key as the user name")
}

fn non_empty(key: &str, reason: &'static str) -> Result<String, AuthError> {
    if key.is_empty() {
        Err(AuthError::Malformed { reason })
    } else {
        Ok(key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use rtim_runtime::auth::{ApiKeySpec, hash_key_hex};

    use super::*;

    fn basic(user_and_password: &str) -> String {
        format!("Basic {}", BASE64.encode(user_and_password))
    }

    fn auth() -> Auth {
        let keys = ApiKeys::from_specs(&[ApiKeySpec {
            tenant: "demo".to_owned(),
            scopes: vec![Scope::Write],
            sha256: hash_key_hex("write-key"),
        }])
        .expect("hash is 64 hex digits");
        Auth::new(keys)
    }

    #[test]
    fn bearer_parses() {
        let key = parse_authorization("Bearer abc", Credentials::Bearer);
        assert_eq!(key, Ok("abc".to_owned()));
        let key = parse_authorization("bearer  abc ", Credentials::Bearer);
        assert_eq!(key, Ok("abc".to_owned()), "scheme is case-insensitive");
    }

    #[test]
    fn basic_user_is_key() {
        let key = parse_authorization(&basic("write-key:"), Credentials::Tracking);
        assert_eq!(key, Ok("write-key".to_owned()), "empty password");
        let key = parse_authorization(&basic("write-key"), Credentials::Tracking);
        assert_eq!(key, Ok("write-key".to_owned()), "no colon");
    }

    #[test]
    fn basic_rejected_outside_tracking() {
        let result = parse_authorization(&basic("write-key:"), Credentials::Bearer);
        assert!(matches!(result, Err(AuthError::Malformed { .. })), "{result:?}");
    }

    #[test]
    fn basic_rejects_bad_input() {
        let result = parse_authorization("Basic %%%", Credentials::Tracking);
        assert!(
            matches!(result, Err(AuthError::Malformed { .. })),
            "bad base64: {result:?}"
        );
        let result = parse_authorization(&basic(":secret"), Credentials::Tracking);
        assert!(
            matches!(result, Err(AuthError::Malformed { .. })),
            "empty user: {result:?}"
        );
    }

    #[test]
    fn write_key_used_without_header() {
        let authorized = auth().authorize_tracking(&HeaderMap::new(), Some("write-key"), &[Scope::Write]);
        let tenant = authorized.map(|authorized| authorized.tenant().to_string());
        assert_eq!(tenant, Ok("demo".to_owned()));
    }

    #[test]
    fn write_key_must_match_header() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, basic("write-key:").parse().expect("valid header value"));
        let caller = auth()
            .authorize_tracking(&headers, None, &[Scope::Write])
            .expect("known key");
        assert_eq!(caller.check_write_key(Some("write-key")), Ok(()), "same key");
        assert_eq!(caller.check_write_key(None), Ok(()), "no body key");
        assert_eq!(caller.check_write_key(Some("")), Ok(()), "empty body key");
        let error = caller.check_write_key(Some("other-key")).unwrap_err();
        assert_eq!(error, AuthError::WriteKeyMismatch, "different key");
        assert!(error.to_string().contains("writeKey"), "names the field: {error}");
        assert_eq!(
            Problem::from(error).status(),
            axum::http::StatusCode::UNAUTHORIZED,
            "status"
        );
    }

    #[test]
    fn missing_and_unknown_keys() {
        let result = auth().authorize(&HeaderMap::new(), &[Scope::Write]);
        assert_eq!(result.unwrap_err(), AuthError::Missing, "no header");
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer nope".parse().expect("valid header value"));
        let result = auth().authorize(&headers, &[Scope::Write]);
        assert_eq!(result.unwrap_err(), AuthError::UnknownKey, "unknown key");
    }

    #[test]
    fn scope_is_checked() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer write-key".parse().expect("valid header value"));
        let error = auth().authorize(&headers, &[Scope::Read, Scope::Admin]).unwrap_err();
        assert_eq!(error.to_string(), "API key lacks the 'read' or 'admin' scope");
        let problem = Problem::from(error);
        assert_eq!(problem.status(), axum::http::StatusCode::FORBIDDEN);
    }
}
