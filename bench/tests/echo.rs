//! The echo baseline driven against itself over real gRPC on loopback, closed
//! and open loop, for a few hundred requests each.

use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use rtim_bench::driver::{Load, Measurement, Workload, drive};
use rtim_bench::echo::{EchoServer, EchoWorkload};
use rtim_bench::grpc;
use rtim_bench::report::{Role, Row};

const REQUESTS: u64 = 300;

/// Sends `REQUESTS` echo calls of 512 bytes with `rate` (closed loop when
/// `None`) and returns what the driver measured.
async fn run_echo(rate: Option<f64>) -> Measurement {
    let server = EchoServer::start().await.expect("the echo server starts");
    let channels = grpc::channels(&server.url(), 2, Duration::from_secs(10)).unwrap();
    let workload: Arc<dyn Workload> = Arc::new(EchoWorkload::new(&channels, 512));
    let load = Load {
        concurrency: 8,
        rate,
        // Long enough that the request limit, not the clock, ends the run.
        duration: Duration::from_secs(120),
        limit: Some(REQUESTS),
    };
    let measured = drive(workload, &load, &ProgressBar::hidden()).await;
    server.stop().await.expect("the echo server stops");
    measured
}

fn assert_counts_and_order(measured: &Measurement, mode: &str) {
    assert_eq!(measured.issued, REQUESTS, "{mode}: requests sent");
    assert_eq!(measured.succeeded, REQUESTS, "{mode}: requests answered");
    assert_eq!(measured.error_count(), 0, "{mode}: errors {:?}", measured.errors);
    assert_eq!(measured.items, REQUESTS, "{mode}: one item per echo");
    assert_eq!(measured.latency.count(), REQUESTS, "{mode}: one latency per request");

    let summary = measured.latency.summary();
    assert!(summary.p50 > 0, "{mode}: p50 recorded");
    assert!(summary.p50 <= summary.p90, "{mode}: p50 <= p90 in {summary:?}");
    assert!(summary.p90 <= summary.p99, "{mode}: p90 <= p99 in {summary:?}");
    assert!(summary.p99 <= summary.p999, "{mode}: p99 <= p99.9 in {summary:?}");
    assert!(summary.p999 <= summary.max, "{mode}: p99.9 <= max in {summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_closed_loop() {
    let measured = run_echo(None).await;
    assert_counts_and_order(&measured, "closed loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_open_loop() {
    let measured = run_echo(Some(1_000.0)).await;
    assert_counts_and_order(&measured, "open loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_row_in_report() {
    let measured = run_echo(None).await;
    let load = Load {
        concurrency: 8,
        rate: None,
        duration: Duration::from_secs(120),
        limit: Some(REQUESTS),
    };
    let row = Row::new("echo", Role::Baseline, &load, 512, &measured);
    assert_eq!(row.requests, REQUESTS, "requests in the row");
    assert_eq!(row.errors, 0, "errors in the row");
    assert!(row.requests_per_second > 0.0, "throughput recorded");
    let json = serde_json::to_value(&row).unwrap();
    assert_eq!(json["role"], "baseline", "role in JSON");
    assert_eq!(json["request_bytes"], 512, "request size in JSON");
}
