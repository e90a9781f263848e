//! Prometheus metrics: one recorder per process, rendered by every server's
//! `/metrics` route. In embedded mode every service shares the process, so
//! every port renders the same series.
//!
//! Names follow a convention where one exists: go-grpc-prometheus for gRPC
//! servers, the OpenTelemetry HTTP semantic conventions (as the OpenTelemetry
//! Prometheus exporter spells them) for the gateway. Series specific to rtim
//! start with `rtim_`. `docs/telemetry.md` lists them all.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// RPCs completed, by `grpc_service`, `grpc_method` and `grpc_code`.
pub const GRPC_SERVER_HANDLED_TOTAL: &str = "grpc_server_handled_total";
/// Time from request headers to response headers, by `grpc_service` and `grpc_method`.
pub const GRPC_SERVER_HANDLING_SECONDS: &str = "grpc_server_handling_seconds";
/// Gateway requests, by `http_request_method`, `http_route` and
/// `http_response_status_code`; its `_count` is the request rate.
pub const HTTP_SERVER_REQUEST_DURATION_SECONDS: &str = "http_server_request_duration_seconds";

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

/// Records one completed RPC. `path` is the HTTP/2 path,
/// `/<package>.<Service>/<Method>`.
pub(crate) fn record_rpc(path: &str, code: tonic::Code, elapsed: Duration) {
    let (service, method) = split_rpc_path(path);
    let service = service.to_owned();
    let method = method.to_owned();
    metrics::counter!(
        GRPC_SERVER_HANDLED_TOTAL,
        "grpc_service" => service.clone(),
        "grpc_method" => method.clone(),
        "grpc_code" => code_name(code),
    )
    .increment(1);
    metrics::histogram!(
        GRPC_SERVER_HANDLING_SECONDS,
        "grpc_service" => service,
        "grpc_method" => method,
    )
    .record(elapsed.as_secs_f64());
}

/// Splits `/<package>.<Service>/<Method>` into the fully qualified service
/// and the method. A path without a second slash is all service.
pub fn split_rpc_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// Returns the code's name as grpc-go spells it, which is what
/// go-grpc-prometheus puts in `grpc_code` and what dashboards filter on.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_path_splits_into_service_and_method() {
        assert_eq!(
            split_rpc_path("/rtim.ingestion.v1.IngestionService/Track"),
            ("rtim.ingestion.v1.IngestionService", "Track")
        );
        assert_eq!(split_rpc_path("/odd"), ("odd", ""));
    }

    #[test]
    fn code_names_match_grpc_go() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "InvalidArgument");
    }
}
