//! gRPC addresses of the services under load: a flag, else the
//! `endpoints.json` that `rtim up` writes, else the service's default port on
//! loopback.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use rtim_runtime::Service;

/// Base URLs such as `http://127.0.0.1:50051`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub ingestion: String,
    pub profile: String,
    pub decisioning: String,
    pub recommendations: String,
    /// The gateway's HTTP base URL.
    pub gateway: String,
}

/// Addresses given as flags, each overriding the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub ingestion: Option<String>,
    pub profile: Option<String>,
    pub decisioning: Option<String>,
    pub recommendations: Option<String>,
    pub gateway: Option<String>,
}

impl Endpoints {
    /// Resolves every address from `overrides`, then `file` (service name to
    /// `host:port`), then the default port.
    pub fn resolve(file: Option<&Path>, overrides: &Overrides) -> anyhow::Result<Self> {
        let listed = match file {
            Some(path) => read_file(path)?,
            None => BTreeMap::new(),
        };
        let address = |service: Service, given: &Option<String>| {
            let address = given
                .clone()
                .or_else(|| listed.get(service.name()).cloned())
                .unwrap_or_else(|| format!("127.0.0.1:{}", service.default_port()));
            with_scheme(&address)
        };
        Ok(Self {
            ingestion: address(Service::Ingestion, &overrides.ingestion),
            profile: address(Service::Profile, &overrides.profile),
            decisioning: address(Service::Decisioning, &overrides.decisioning),
            recommendations: address(Service::Recommendations, &overrides.recommendations),
            gateway: address(Service::Gateway, &overrides.gateway),
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "invalid endpoints file {}: expected a JSON object of service name to host:port",
            path.display()
        )
    })
}

/// Adds `http://` to a bare `host:port`.
fn with_scheme(address: &str) -> String {
    if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_then_file_then_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        std::fs::write(
            &path,
            r#"{"ingestion": "127.0.0.1:7001", "profile": "127.0.0.1:7002", "gateway": "127.0.0.1:8080"}"#,
        )
        .unwrap();
        let overrides = Overrides {
            profile: Some("http://127.0.0.1:9002".to_owned()),
            ..Overrides::default()
        };
        let endpoints = Endpoints::resolve(Some(&path), &overrides).unwrap();
        assert_eq!(endpoints.ingestion, "http://127.0.0.1:7001", "from the file");
        assert_eq!(endpoints.profile, "http://127.0.0.1:9002", "from the flag");
        assert_eq!(endpoints.decisioning, "http://127.0.0.1:50053", "default port");
    }

    #[test]
    fn invalid_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("endpoints.json");
        std::fs::write(&path, "[1, 2]").unwrap();
        let error = Endpoints::resolve(Some(&path), &Overrides::default()).unwrap_err();
        assert!(error.to_string().contains("endpoints.json"), "message: {error}");
    }
}
