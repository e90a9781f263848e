//! The whole platform in one process: `rtim up` on ephemeral ports with its
//! own data folder.

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
    /// The ingestion address as `rtim replay --ingestion` takes it.
    pub fn ingestion(&self) -> String {
        format!("http://{}", self.endpoints["ingestion"].as_str().unwrap())
    }

    pub fn gateway(&self) -> super::Gateway {
        super::Gateway::new(self.endpoints["gateway"].as_str().unwrap(), &self.key)
    }
}

/// Starts `rtim up` and waits until it has written its endpoints and key.
pub async fn start() -> Embedded {
    let data_dir = tempfile::tempdir().unwrap();
    let process = ChildGuard::spawn(
        "rtim up",
        rtim()
            .args(["up", "--ephemeral-ports", "--data-dir"])
            .arg(data_dir.path())
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("RUST_LOG", "warn"),
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
