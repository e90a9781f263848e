//! Shared helpers of the end-to-end tests: the REES46 and DIGINETICA files
//! and the figures expected from them, child processes of the `rtim` binary,
//! and an HTTP client for the gateway.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

pub mod diginetica;
pub mod embedded;
pub mod expected;
pub mod mesh;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const REES46_FILE: &str = "../shared/data/rees46_ecommerce_oct2019/events_2019-10-01_0000-0249UTC.csv";

/// Returns the REES46 file, or `None` (with a note) on a machine without the data sets.
pub fn rees46_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(REES46_FILE);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("skipping: {} not found", path.display());
        None
    }
}

pub const DIGINETICA_DIR: &str = "../shared/data/diginetica_cikm2016";

/// Returns the DIGINETICA folder, or `None` (with a note) when its views or
/// purchases file is missing.
pub fn diginetica_path() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DIGINETICA_DIR);
    let files = [
        diginetica::VIEWS_FILE,
        diginetica::PURCHASES_FILE,
        diginetica::CATEGORIES_FILE,
    ];
    if files.iter().all(|file| path.join(file).is_file()) {
        Some(path)
    } else {
        eprintln!("skipping: {} or its files not found", path.display());
        None
    }
}

pub fn rtim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtim"))
}

/// A child process killed when dropped.
pub struct ChildGuard {
    pub name: String,
    pub child: Child,
}

impl ChildGuard {
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {name}: {error}"));
        Self {
            name: name.to_owned(),
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident memory in KiB, from /proc.
    pub fn resident_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `check` until it returns `Some`, panicking with `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs `rtim replay` to completion and returns its standard output.
pub fn replay(file: &Path, ingestion: &str, key: &str) -> String {
    replay_with(file, ingestion, key, &[])
}

/// Like [`replay`], with extra arguments such as `--speed`.
pub fn replay_with(file: &Path, ingestion: &str, key: &str, extra: &[&str]) -> String {
    replay_format("rees46", file, ingestion, key, extra)
}

/// Runs `rtim replay --format FORMAT` to completion and returns its standard output.
pub fn replay_format(format: &str, file: &Path, ingestion: &str, key: &str, extra: &[&str]) -> String {
    let output = run_replay(format, file, ingestion, key, extra);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "replay failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs `rtim replay --format FORMAT --quiet` and returns how it ended, successful or not.
pub fn run_replay(format: &str, file: &Path, ingestion: &str, key: &str, extra: &[&str]) -> Output {
    rtim()
        .args([
            "replay",
            "--format",
            format,
            "--quiet",
            "--ingestion",
            ingestion,
            "--api-key",
            key,
        ])
        .args(extra)
        .arg(file)
        .output()
        .expect("rtim replay runs")
}

/// HTTP client for the gateway with the API key.
#[derive(Clone)]
pub struct Gateway {
    pub base: String,
    pub key: String,
    pub http: reqwest::Client,
}

impl Gateway {
    pub fn new(address: &str, key: &str) -> Self {
        Self {
            base: format!("http://{address}"),
            key: key.to_owned(),
            http: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("gateway answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Returns the profile once it shows `expected_total` events in all.
    pub async fn profile_with_total(&self, user_id: &str, expected_total: i64) -> Option<Value> {
        let (status, profile) = self.get(&format!("/v1/profiles/{user_id}")).await;
        if status != 200 {
            return None;
        }
        let total: i64 = profile["event_counts"]
            .as_object()?
            .values()
            .filter_map(Value::as_i64)
            .sum();
        (total >= expected_total).then_some(profile)
    }
}

/// Returns a free loopback port. The listener is dropped, so a rare race
/// with another process is possible.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Tracks one event for `user` and waits until its profile shows it. The
/// profile consumer applies events in stream order, so everything stored
/// before the marker has been applied once the marker is.
pub async fn wait_for_marker(gateway: &Gateway, user: &str, timeout: Duration) {
    let body = json!({"userId": user, "event": "Replay Checked"});
    let (status, response) = gateway.post("/v1/track", &body).await;
    assert_eq!(status, 200, "marker event: {response}");
    wait_until(&format!("profile of {user}"), timeout, || {
        gateway.profile_with_total(user, 1)
    })
    .await;
}

pub fn count(profile: &Value, event: &str) -> i64 {
    profile["event_counts"][event].as_i64().unwrap_or(0)
}

/// Checks the ten shoppers with the most events against the file: counts of
/// Product Viewed, Product Added and Order Completed, and the last viewed
/// product. Waits up to `timeout` for each profile to hold all its events.
pub async fn check_top_profiles(gateway: &Gateway, expected: &expected::Expected, timeout: Duration) {
    for shopper in expected.top_shoppers(10) {
        let profile = wait_until(
            &format!("profile of {} with {} events", shopper.user_id, shopper.events),
            timeout,
            || gateway.profile_with_total(&shopper.user_id, shopper.events),
        )
        .await;
        let user = &shopper.user_id;
        assert_eq!(count(&profile, "Product Viewed"), shopper.views, "views of {user}");
        assert_eq!(count(&profile, "Product Added"), shopper.carts, "cart adds of {user}");
        assert_eq!(
            count(&profile, "Order Completed"),
            shopper.purchases,
            "purchases of {user}"
        );
        assert_eq!(
            profile["recently_viewed"][0].as_str(),
            shopper.last_viewed.as_deref(),
            "last viewed product of {user}"
        );
    }
}
