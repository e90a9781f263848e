//! Prometheus metrics: one recorder per process, rendered by every server's
//! `/metrics` route.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once; later calls return the same handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .expect("bucket list is non-empty")
            .build_recorder();
        let handle = recorder.handle();
        if let Err(error) = metrics::set_global_recorder(recorder) {
            tracing::warn!(%error, "a metrics recorder was already installed, metrics from it are not exported");
        }
        handle
    })
}

pub(crate) async fn render() -> String {
    install().render()
}

pub(crate) fn record_rpc(method: &str, code: &str, elapsed: Duration) {
    let labels = [("rpc_method", method.to_owned()), ("rpc_code", code.to_owned())];
    metrics::counter!("rpc_requests_total", &labels).increment(1);
    metrics::histogram!("rpc_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}
