//! The whole platform in one `rtim up` child process on ephemeral ports.

use std::time::Duration;

use serde_json::Value;

use super::{ChildGuard, rtim, wait_until};

pub struct Embedded {
    pub process: ChildGuard,
    pub endpoints: Value,
    pub key: String,
    _data_dir: tempfile::TempDir,
}

impl Embedded {
    /// Returns the `host:port` of one service, as `rtim up` wrote it.
    pub fn address(&self, service: &str) -> &str {
        self.endpoints[service]
            .as_str()
            .unwrap_or_else(|| panic!("endpoints.json names {service}"))
    }

    /// Returns the ingestion URL in the form `rtim replay --ingestion` takes.
    pub fn ingestion(&self) -> String {
        format!("http://{}", self.address("ingestion"))
    }

    pub fn gateway(&self) -> super::Gateway {
        super::Gateway::new(self.address("gateway"), &self.key)
    }
}

/// Starts `rtim up` and waits until it has written its endpoints and key.
pub async fn start() -> Embedded {
    start_embedded_with(&[]).await
}

pub async fn start_embedded() -> Embedded {
    start().await
}

/// Starts `rtim up` with extra environment variables, such as the OTLP
/// endpoint.
pub async fn start_embedded_with(environment: &[(&str, &str)]) -> Embedded {
    let data_dir = tempfile::tempdir().unwrap();
    let process = ChildGuard::spawn(
        "rtim up",
        rtim()
            .args(["up", "--ephemeral-ports", "--data-dir"])
            .arg(data_dir.path())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "warn")
            .envs(environment.iter().copied()),
    );
    let endpoints_file = data_dir.path().join("endpoints.json");
    let endpoints: Value = wait_until("endpoints.json", Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&endpoints_file).ok()?;
        serde_json::from_str(&text).ok()
    })
    .await;
    let key = std::fs::read_to_string(data_dir.path().join("api-key"))
        .unwrap()
        .trim()
        .to_owned();
    Embedded {
        process,
        endpoints,
        key,
        _data_dir: data_dir,
    }
}
