//! API-key authentication. Keys are configured as SHA-256 hashes, each with a
//! tenant and scopes. The gRPC interceptor resolves the `authorization`
//! metadata (`Bearer KEY`) into a [`Caller`] request extension that handlers
//! read with [`caller`].

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::settings::AuthSettings;

/// Permission granted to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Send events.
    Write,
    /// Read profiles, recommendations, eligible surveys and balances, and
    /// submit survey responses.
    Read,
    /// Ask for decisions.
    Decide,
    /// Manage actions, surveys, point rules and the catalog.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Write, Scope::Read, Scope::Decide, Scope::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Decide => "decide",
            Scope::Admin => "admin",
        }
    }
}

/// A tenant identifier; every stored row and bus subject carries one.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TenantId(pub String);

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One configured key: the hex SHA-256 of the secret, never the secret itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    pub tenant: String,
    pub scopes: Vec<Scope>,
    pub sha256: String,
}

/// The authenticated caller of a request.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: TenantId,
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// Returns the tenant when the caller has `scope`, PERMISSION_DENIED otherwise.
    pub fn require(&self, scope: Scope) -> Result<&TenantId, Status> {
        if self.scopes.contains(&scope) {
            Ok(&self.tenant)
        } else {
            Err(Status::permission_denied(format!(
                "API key lacks the '{}' scope",
                scope.name()
            )))
        }
    }

    /// Like [`Caller::require`], accepting any of `scopes`.
    pub fn require_any(&self, scopes: &[Scope]) -> Result<&TenantId, Status> {
        if scopes.iter().any(|scope| self.scopes.contains(scope)) {
            Ok(&self.tenant)
        } else {
            let names: Vec<_> = scopes.iter().map(|scope| scope.name()).collect();
            Err(Status::permission_denied(format!(
                "API key lacks one of the scopes {names:?}"
            )))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("cannot read API keys file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid API keys file {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("invalid API key for tenant '{tenant}': sha256 must be 64 hex digits, got '{value}'")]
    BadHash { tenant: String, value: String },
}

#[derive(Deserialize)]
struct KeysFile {
    keys: Vec<ApiKeySpec>,
}

/// The set of valid keys, indexed by hash.
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    by_hash: Arc<HashMap<[u8; 32], Caller>>,
}

impl ApiKeys {
    /// Builds the key set from `auth.keys` and the keys file, if any.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, AuthConfigError> {
        let mut specs = settings.keys.clone();
        if let Some(path) = &settings.keys_file {
            specs.extend(read_keys_file(path)?);
        }
        Self::from_specs(&specs)
    }

    pub fn from_specs(specs: &[ApiKeySpec]) -> Result<Self, AuthConfigError> {
        let mut by_hash = HashMap::new();
        for spec in specs {
            let bad_hash = || AuthConfigError::BadHash {
                tenant: spec.tenant.clone(),
                value: spec.sha256.clone(),
            };
            let bytes = hex::decode(&spec.sha256).map_err(|_| bad_hash())?;
            let hash: [u8; 32] = bytes.try_into().map_err(|_| bad_hash())?;
            let caller = Caller {
                tenant: TenantId(spec.tenant.clone()),
                scopes: spec.scopes.clone(),
            };
            by_hash.insert(hash, caller);
        }
        Ok(Self {
            by_hash: Arc::new(by_hash),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// Resolves a raw key.
    pub fn authenticate(&self, key: &str) -> Option<&Caller> {
        self.by_hash.get(&hash_key(key))
    }

    /// Resolves the `authorization` metadata of a gRPC request.
    pub fn authenticate_metadata(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let header = metadata
            .get("authorization")
            .ok_or_else(|| Status::unauthenticated("missing authorization metadata: expected 'Bearer <API key>'"))?;
        let value = header
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not valid ASCII"))?;
        let key = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| Status::unauthenticated("authorization metadata must be 'Bearer <API key>'"))?;
        self.authenticate(key.trim())
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown API key"))
    }
}

fn read_keys_file(path: &Path) -> Result<Vec<ApiKeySpec>, AuthConfigError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read {
        path: display.clone(),
        source,
    })?;
    let file: KeysFile =
        serde_yaml::from_str(&text).map_err(|source| AuthConfigError::Parse { path: display, source })?;
    Ok(file.keys)
}

/// SHA-256 of a raw key, the form in which keys are configured.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Hex SHA-256 of a raw key, as written in `auth.keys[].sha256`.
pub fn hash_key_hex(key: &str) -> String {
    hex::encode(hash_key(key))
}

/// Builds the gRPC interceptor that authenticates every request.
pub fn interceptor(keys: ApiKeys) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        let caller = keys.authenticate_metadata(request.metadata())?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Returns the caller that the interceptor attached to a request.
pub fn caller<T>(request: &Request<T>) -> Result<&Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| Status::unauthenticated("request was not authenticated"))
}

/// Copies the caller's credential onto an outgoing request, so that a call
/// to another service acts for the same tenant with the same scopes.
pub fn forward<T, U>(from: &Request<T>, mut to: Request<U>) -> Request<U> {
    if let Some(value) = from.metadata().get("authorization") {
        to.metadata_mut().insert("authorization", value.clone());
    }
    to
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::from_specs(&[ApiKeySpec {
            tenant: "acme".to_owned(),
            scopes: vec![Scope::Write],
            sha256: hash_key_hex("secret"),
        }])
        .unwrap()
    }

    #[test]
    fn bearer_key_resolves_tenant() {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", "Bearer secret".parse().unwrap());
        let caller = keys().authenticate_metadata(&metadata).unwrap();
        assert_eq!(caller.tenant.as_str(), "acme");
        assert!(caller.require(Scope::Write).is_ok());
        assert_eq!(
            caller.require(Scope::Admin).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn unknown_key_is_unauthenticated() {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", "Bearer nope".parse().unwrap());
        let status = keys().authenticate_metadata(&metadata).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("unknown API key"));
    }

    #[test]
    fn short_hash_is_rejected() {
        let error = ApiKeys::from_specs(&[ApiKeySpec {
            tenant: "acme".to_owned(),
            scopes: vec![],
            sha256: "abc".to_owned(),
        }])
        .unwrap_err();
        assert!(error.to_string().contains("64 hex digits"), "{error}");
    }
}
