//! Logging and tracing through `tracing`: JSON lines in the mesh, pretty
//! output in a terminal, and OpenTelemetry spans.
//!
//! Spans always get W3C trace context, so a trace started by a caller runs
//! on through gRPC calls and bus messages. They are exported over OTLP/gRPC
//! only when an endpoint is configured (`telemetry.otlp_endpoint`, or the
//! standard `OTEL_EXPORTER_OTLP_ENDPOINT` and
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variables). Without one, the tracer
//! provider has no span processor: spans carry ids for propagation and are
//! dropped when they end.

use std::io::IsTerminal;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Key, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::{EnvResourceDetector, ResourceDetector as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::settings::{LogFormat, TelemetrySettings};

/// Variables that switch OTLP export on when the settings name no endpoint.
const ENDPOINT_VARIABLES: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// The tracer provider behind the global subscriber. Call
/// [`Telemetry::shutdown`] before the process exits, so that spans still
/// buffered are exported.
#[must_use = "call shutdown before exit, or buffered spans are lost"]
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

/// Installs the global subscriber: a log layer filtered by `RUST_LOG` or
/// `telemetry.log_filter`, and an OpenTelemetry layer for spans and events
/// at INFO and above, independent of the log filter. `service` names the
/// resource (`rtim-<service>`) unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` names it. A second call in the same process, as
/// in tests, keeps the first subscriber.
///
/// Fails when the OTLP endpoint is not a valid URL.
pub fn init(settings: &TelemetrySettings, service: &str) -> anyhow::Result<Telemetry> {
    let exporting = export_configured(settings);
    let mut builder = SdkTracerProvider::builder().with_resource(resource(service));
    if exporting {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if let Some(endpoint) = &settings.otlp_endpoint {
            exporter = exporter.with_endpoint(endpoint.clone());
        }
        let exporter = exporter.build().context("invalid OTLP trace exporter configuration")?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();

    let spans = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("rtim"))
        // Thread names and busy/idle times cost an allocation per span and
        // are of little use for async code that moves between threads.
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(LevelFilter::INFO);
    let result = tracing_subscriber::registry()
        .with(log_layer(settings))
        .with(spans)
        .try_init();
    if result.is_err() {
        tracing::debug!("tracing subscriber already installed");
    }
    if exporting {
        tracing::info!(service.name = %service_name(service), "exporting traces over OTLP");
    }
    Ok(Telemetry { provider, exporting })
}

impl Telemetry {
    /// Exports the spans still buffered and stops the exporter. The flush
    /// blocks, so it runs on the blocking pool: on a runtime thread it would
    /// wait for the very thread that drives the export.
    pub async fn shutdown(self) {
        if !self.exporting {
            return;
        }
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => tracing::debug!("trace exporter flushed and stopped"),
            Ok(Err(error)) => tracing::warn!(%error, "flushing spans to the OTLP endpoint failed, some are lost"),
            Err(error) => tracing::warn!(%error, "the trace exporter shutdown task failed"),
        }
    }
}

fn export_configured(settings: &TelemetrySettings) -> bool {
    settings
        .otlp_endpoint
        .as_deref()
        .is_some_and(|endpoint| !endpoint.is_empty())
        || ENDPOINT_VARIABLES
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

fn log_layer(settings: &TelemetrySettings) -> impl Layer<Registry> + Send + Sync {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.log_filter));
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = if json {
        layer.json().flatten_event(true).boxed()
    } else {
        layer.boxed()
    };
    layer.with_filter(filter)
}

/// Returns the service name the resource gets when the environment names none.
fn service_name(service: &str) -> String {
    format!("rtim-{service}")
}

/// Builds the resource from the standard variables, with `rtim-<service>`
/// as `service.name` unless they set one.
fn resource(service: &str) -> Resource {
    let service_key = Key::from_static_str("service.name");
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some_and(|name| !name.is_empty())
        || EnvResourceDetector::new().detect().get(&service_key).is_some();
    let builder = Resource::builder();
    if named {
        builder.build()
    } else {
        builder
            .with_attribute(KeyValue::new(service_key, service_name(service)))
            .build()
    }
}
