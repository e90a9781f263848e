//! Runtime shared by every rtim service.
//!
//! - [`settings`]: layered configuration (defaults, file, `RTIM__` environment).
//! - [`telemetry`]: `tracing` subscriber and OpenTelemetry export.
//! - [`propagation`]: W3C trace context in HTTP headers and gRPC metadata.
//! - [`metrics`]: the Prometheus recorder and the RPC metrics.
//! - [`auth`]: API keys, tenants, scopes and the gRPC interceptor.
//! - [`server`]: gRPC server with health, reflection, metrics and graceful shutdown.
//! - [`errors`]: `tonic::Status` construction with rich error details.
//! - [`context`]: the dependencies handed to each service's `run`.
//! - [`client`]: traced channels to other services with deadlines.

pub mod auth;
pub mod client;
pub mod context;
pub mod errors;
pub mod metrics;
pub mod propagation;
pub mod server;
pub mod settings;
pub mod telemetry;

pub use context::ServiceContext;
pub use settings::{Service, Settings};
