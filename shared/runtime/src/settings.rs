//! Layered configuration shared by every service: built-in defaults, then an
//! optional file, then `RTIM__` environment variables (`RTIM__BUS__URL` sets
//! `bus.url`), then overrides passed in code. Unknown keys are rejected so a
//! typo fails at start-up instead of being ignored.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::ApiKeySpec;

/// Every setting of every service. One type for all of them keeps one
/// environment layout valid for the whole mesh.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub bus: BusSettings,
    pub cache: CacheSettings,
    pub auth: AuthSettings,
    pub telemetry: TelemetrySettings,
    pub endpoints: Endpoints,
    pub ingestion: IngestionSettings,
    pub decisioning: DecisioningSettings,
    pub surveys: SurveysSettings,
    pub gamification: GamificationSettings,
    pub gateway: GatewaySettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the gRPC listener; each service has its own default port.
    pub listen: Option<SocketAddr>,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// How long shutdown waits for in-flight requests and messages.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: None,
            max_message_bytes: 4 * 1024 * 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://...` or `sqlite://PATH?mode=rwc`. `{service}` in the URL is
    /// replaced by the service name, which gives each service its own SQLite
    /// file.
    pub url: String,
    /// On PostgreSQL each service owns the schema `<schema_prefix><service>`.
    pub schema_prefix: String,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://.rtim/{service}.db?mode=rwc".to_owned(),
            schema_prefix: "rtim_".to_owned(),
            max_connections: 8,
        }
    }
}

impl DatabaseSettings {
    /// Returns the connection URL and, on PostgreSQL, the schema of one service.
    pub fn for_service(&self, service: &str) -> (String, Option<String>) {
        let url = self.url.replace("{service}", service);
        let schema = url
            .starts_with("postgres")
            .then(|| format!("{}{}", self.schema_prefix, service));
        (url, schema)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusSettings {
    /// `nats://HOST:PORT` for JetStream, or `memory` for the in-process bus.
    pub url: String,
    /// First token of every subject and, upper-cased, of every stream name.
    pub subject_prefix: String,
    /// Deliveries of one message before a consumer gives up on it.
    pub max_deliver: i64,
    /// How long a delivered message may stay unacknowledged before redelivery.
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// How long a publish waits for JetStream to confirm that it stored the
    /// message before the publish counts as failed. It also bounds the
    /// stream and consumer set-up requests. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long the event stream remembers message ids to drop a repeated
    /// publish; default 2 minutes. JetStream applies it only when it creates
    /// the stream. Ingestion's dedupe window covers longer spans.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long the dead-letter stream keeps an entry; default 14 days.
    #[serde(with = "humantime_serde")]
    pub dead_letter_max_age: Duration,
    /// Size in bytes beyond which the dead-letter stream drops its oldest
    /// entries; default 1 GiB. JetStream reserves this much file storage for
    /// the stream when it creates it.
    pub dead_letter_max_bytes: i64,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            url: "memory".to_owned(),
            subject_prefix: "rtim".to_owned(),
            max_deliver: 20,
            ack_wait: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(5),
            duplicate_window: rtim_bus::DUPLICATE_WINDOW,
            dead_letter_max_age: Duration::from_secs(14 * 24 * 3600),
            dead_letter_max_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// `redis://HOST:PORT` or `memory` for the in-process cache.
    pub url: String,
    /// Prepended to every key; each service adds its own name after it.
    pub prefix: String,
    pub pool_size: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            url: "memory".to_owned(),
            prefix: "rtim:".to_owned(),
            pool_size: 16,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// YAML file with a `keys` list in the same shape as `auth.keys`; in
    /// Kubernetes, a mounted Secret.
    pub keys_file: Option<PathBuf>,
    pub keys: Vec<ApiKeySpec>,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty when standard error is a terminal, JSON otherwise.
    #[default]
    Auto,
    Pretty,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `tracing_subscriber` filter directives, overridden by `RUST_LOG`.
    /// Spans sent over OTLP do not depend on it.
    pub log_filter: String,
    /// OTLP/gRPC endpoint that receives spans, such as
    /// `http://otel-collector:4317`. When unset, the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// variable switches export on; with neither, nothing is exported.
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
        }
    }
}

/// gRPC addresses of the services, for callers inside the mesh.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoints {
    pub ingestion: String,
    pub profile: String,
    pub decisioning: String,
    pub recommendations: String,
    pub surveys: String,
    pub gamification: String,
    /// Deadline of each call to another service.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Endpoints {
    fn default() -> Self {
        let url = |service: Service| format!("http://127.0.0.1:{}", service.default_port());
        Self {
            ingestion: url(Service::Ingestion),
            profile: url(Service::Profile),
            decisioning: url(Service::Decisioning),
            recommendations: url(Service::Recommendations),
            surveys: url(Service::Surveys),
            gamification: url(Service::Gamification),
            timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestionSettings {
    /// Most events accepted in one Batch call.
    pub max_batch_events: usize,
    /// Largest event accepted, in bytes of its protobuf encoding as the
    /// client sent it. Default 32 KiB.
    pub max_event_bytes: usize,
    /// How far after its receive time an event's timestamp may lie; a later
    /// timestamp is replaced by the receive time. Default 24 hours.
    #[serde(with = "humantime_serde")]
    pub max_future: Duration,
    /// Events of one Stream call that may be in flight, read and not yet
    /// acknowledged. While the window is full the server stops reading the
    /// stream. Also the maximum number of events in one stream request.
    /// Default 512.
    pub stream_window: usize,
    /// How long a stored message id (and the order id of an "Order
    /// Completed" event) keeps a retry from being stored again; default 24
    /// hours. The claims are kept in the cache, which is Redis in the mesh.
    #[serde(with = "humantime_serde")]
    pub dedupe_window: Duration,
}

impl Default for IngestionSettings {
    fn default() -> Self {
        Self {
            max_batch_events: 1000,
            max_event_bytes: 32 * 1024,
            max_future: Duration::from_secs(24 * 60 * 60),
            stream_window: 512,
            dedupe_window: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecisioningSettings {
    /// YAML file of actions loaded (upserted) at start.
    pub actions_file: Option<PathBuf>,
    /// How long a profile read for a decision is reused.
    #[serde(with = "humantime_serde")]
    pub profile_cache_ttl: Duration,
}

impl Default for DecisioningSettings {
    fn default() -> Self {
        Self {
            actions_file: None,
            profile_cache_ttl: Duration::from_secs(1),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SurveysSettings {
    /// YAML file of surveys loaded (upserted) at start.
    pub surveys_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GamificationSettings {
    /// YAML file of point rules loaded (upserted) at start.
    pub rules_file: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Address of the HTTP listener.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes, before decompression.
    pub max_body_bytes: usize,
    /// Largest batch body accepted, in bytes, after decompression. Default
    /// 512000, Segment's 500 KB batch limit.
    pub max_batch_bytes: usize,
    /// Largest tracking event, in bytes of its compact JSON encoding. Default
    /// 32768, Segment's 32 KB limit per call and per event of a batch.
    pub max_event_bytes: usize,
    /// `Retry-After` sent with a 503 response, rounded up to whole seconds.
    /// Default 1 s.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 512 * 1024,
            max_batch_bytes: 500 * 1024,
            max_event_bytes: 32 * 1024,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// The services of the mesh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    Ingestion,
    Profile,
    Decisioning,
    Recommendations,
    Surveys,
    Gamification,
    Gateway,
}

impl Service {
    pub const ALL: [Service; 7] = [
        Service::Ingestion,
        Service::Profile,
        Service::Decisioning,
        Service::Recommendations,
        Service::Surveys,
        Service::Gamification,
        Service::Gateway,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Ingestion => "ingestion",
            Service::Profile => "profile",
            Service::Decisioning => "decisioning",
            Service::Recommendations => "recommendations",
            Service::Surveys => "surveys",
            Service::Gamification => "gamification",
            Service::Gateway => "gateway",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Service::Ingestion => 50051,
            Service::Profile => 50052,
            Service::Decisioning => 50053,
            Service::Recommendations => 50054,
            Service::Surveys => 50055,
            Service::Gamification => 50056,
            Service::Gateway => 8080,
        }
    }

    pub fn parse(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|service| service.name() == name)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct SettingsError(#[from] config::ConfigError);

/// Loads settings from an optional file, the `RTIM__` environment and
/// `overrides` (dotted keys such as `bus.url`), in that order of precedence.
pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Settings, SettingsError> {
    let mut builder = config::Config::builder();
    if let Some(file) = file {
        builder = builder.add_source(config::File::from(file));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("RTIM")
            .prefix_separator("__")
            .separator("__"),
    );
    for (key, value) in overrides {
        builder = builder.set_override(*key, value.as_str())?;
    }
    Ok(builder.build()?.try_deserialize()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_file() {
        let settings = load(None, &[]).unwrap();
        assert_eq!(settings.bus.url, "memory");
        assert_eq!(settings.server.drain_timeout, Duration::from_secs(10));
    }

    #[test]
    fn overrides_win_and_durations_parse() {
        let settings = load(
            None,
            &[
                ("bus.url", "nats://127.0.0.1:4222".to_owned()),
                ("server.drain_timeout", "3s".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(settings.bus.url, "nats://127.0.0.1:4222");
        assert_eq!(settings.server.drain_timeout, Duration::from_secs(3));
    }

    #[test]
    fn ingestion_limits_parse() {
        let settings = load(
            None,
            &[
                ("ingestion.max_future", "2h 30m".to_owned()),
                ("ingestion.stream_window", "64".to_owned()),
                ("bus.publish_timeout", "750ms".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(settings.ingestion.max_future, Duration::from_secs(9000));
        assert_eq!(settings.ingestion.stream_window, 64);
        assert_eq!(settings.ingestion.max_event_bytes, 32768);
        assert_eq!(settings.bus.publish_timeout, Duration::from_millis(750));
    }

    #[test]
    fn dedupe_and_dead_letter_settings_parse() {
        let defaults = load(None, &[]).unwrap();
        assert_eq!(defaults.ingestion.dedupe_window, Duration::from_secs(86_400));
        assert_eq!(defaults.bus.duplicate_window, Duration::from_secs(120));
        assert_eq!(defaults.bus.dead_letter_max_age, Duration::from_secs(14 * 86_400));
        assert_eq!(defaults.bus.dead_letter_max_bytes, 1_073_741_824);

        let settings = load(
            None,
            &[
                ("ingestion.dedupe_window", "36h".to_owned()),
                ("bus.duplicate_window", "30s".to_owned()),
                ("bus.dead_letter_max_age", "7days".to_owned()),
                ("bus.dead_letter_max_bytes", "1048576".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(settings.ingestion.dedupe_window, Duration::from_secs(36 * 3600));
        assert_eq!(settings.bus.duplicate_window, Duration::from_secs(30));
        assert_eq!(settings.bus.dead_letter_max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(settings.bus.dead_letter_max_bytes, 1_048_576);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let error = load(None, &[("bus.ulr", "memory".to_owned())]).unwrap_err();
        assert!(error.to_string().contains("ulr"), "{error}");
    }

    #[test]
    fn gateway_limits_configurable() {
        let defaults = load(None, &[]).unwrap().gateway;
        assert_eq!(defaults.max_event_bytes, 32_768, "default event limit");
        assert_eq!(defaults.max_batch_bytes, 512_000, "default batch limit");
        assert_eq!(defaults.retry_after, Duration::from_secs(1), "default Retry-After");
        let settings = load(
            None,
            &[
                ("gateway.max_event_bytes", "1024".to_owned()),
                ("gateway.retry_after", "5s".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(settings.gateway.max_event_bytes, 1024, "event limit");
        assert_eq!(settings.gateway.retry_after, Duration::from_secs(5), "Retry-After");
    }

    #[test]
    fn postgres_schema_per_service() {
        let database = DatabaseSettings {
            url: "postgres://root@127.0.0.1/test".to_owned(),
            ..DatabaseSettings::default()
        };
        let (url, schema) = database.for_service("profile");
        assert_eq!(url, "postgres://root@127.0.0.1/test");
        assert_eq!(schema.as_deref(), Some("rtim_profile"));
        let (url, schema) = DatabaseSettings::default().for_service("profile");
        assert_eq!(url, "sqlite://.rtim/profile.db?mode=rwc");
        assert_eq!(schema, None);
    }
}
