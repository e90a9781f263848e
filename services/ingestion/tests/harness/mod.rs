//! Ingestion over real gRPC for the dedupe and dead-letter tests, on the
//! in-process bus and cache and, when `RTIM_TEST_NATS_URL` or
//! `RTIM_TEST_REDIS_URL` is set, on JetStream and Redis. Every start gets
//! its own subject prefix, cache prefix and two fresh tenants, so tests
//! running side by side share nothing, metrics included.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rtim_bus::{Bus, BusConfig};
use rtim_cache::Cache;
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::ingestion::v1::dead_letter_service_client::DeadLetterServiceClient;
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::{ServiceContext, Settings};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Key with every scope for tenant `a`.
pub const KEY_A: &str = "key-a";
/// Key with only the write scope for tenant `a`.
pub const WRITE_KEY_A: &str = "write-key-a";
/// Key with every scope for tenant `b`.
pub const KEY_B: &str = "key-b";

/// Which bus and cache a test runs on.
#[derive(Clone, Debug)]
pub struct Backend {
    pub name: &'static str,
    pub bus_url: String,
    pub cache_url: String,
}

/// Returns the in-process adapters always, and the real servers whose URL is set.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend {
        name: "memory",
        bus_url: "memory".to_owned(),
        cache_url: "memory".to_owned(),
    }];
    let nats = std::env::var("RTIM_TEST_NATS_URL").ok();
    let redis = std::env::var("RTIM_TEST_REDIS_URL").ok();
    if nats.is_some() || redis.is_some() {
        backends.push(Backend {
            name: "servers",
            bus_url: nats.unwrap_or_else(|| "memory".to_owned()),
            cache_url: redis.unwrap_or_else(|| "memory".to_owned()),
        });
    }
    backends
}

/// What a test changes from the defaults.
#[derive(Clone, Debug)]
pub struct Options {
    pub duplicate_window: Duration,
    pub max_deliver: i64,
    pub ack_wait: Duration,
    /// Replaces the backend's cache URL, to point at a server that is down.
    pub cache_url: Option<String>,
    /// Tenant `a`, when a test needs a particular name.
    pub tenant_a: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            duplicate_window: rtim_bus::DUPLICATE_WINDOW,
            max_deliver: 20,
            ack_wait: Duration::from_secs(30),
            cache_url: None,
            tenant_a: None,
        }
    }
}

pub struct Running {
    pub name: &'static str,
    pub ingestion: IngestionServiceClient<Channel>,
    pub dead_letters: DeadLetterServiceClient<Channel>,
    pub bus: Bus,
    /// The cache root that ingestion scopes with `ingestion:`.
    pub cache: Cache,
    pub tenant_a: String,
    pub tenant_b: String,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Starts ingestion on an ephemeral port.
pub async fn start(backend: &Backend, options: Options) -> Running {
    rtim_runtime::metrics::install();
    let bus = Bus::connect(&BusConfig {
        url: backend.bus_url.clone(),
        subject_prefix: unique("t"),
        max_deliver: options.max_deliver,
        ack_wait: options.ack_wait,
        duplicate_window: options.duplicate_window,
        // JetStream reserves the whole size on disk for every stream a test creates.
        dead_letter_max_bytes: 1024 * 1024,
        ..BusConfig::default()
    })
    .await
    .unwrap();
    let cache_url = options.cache_url.as_deref().unwrap_or(&backend.cache_url);
    let cache = Cache::connect(cache_url, &format!("{}:", unique("rtim-test-")), 8).unwrap();

    let tenant_a = options.tenant_a.clone().unwrap_or_else(|| unique("a"));
    let tenant_b = unique("b");
    let spec = |tenant: &str, scopes: Vec<Scope>, key: &str| ApiKeySpec {
        tenant: tenant.to_owned(),
        scopes,
        sha256: hash_key_hex(key),
    };
    let keys = ApiKeys::from_specs(&[
        spec(&tenant_a, Scope::ALL.to_vec(), KEY_A),
        spec(&tenant_a, vec![Scope::Write], WRITE_KEY_A),
        spec(&tenant_b, Scope::ALL.to_vec(), KEY_B),
    ])
    .unwrap();
    let ctx = ServiceContext {
        settings: Arc::new(Settings::default()),
        keys,
        bus: bus.clone(),
        cache: cache.clone(),
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(rtim_ingestion::run(ctx, listener, shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    Running {
        name: backend.name,
        ingestion: IngestionServiceClient::new(channel.clone()),
        dead_letters: DeadLetterServiceClient::new(channel),
        bus,
        cache,
        tenant_a,
        tenant_b,
        shutdown,
    }
}

pub fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

pub fn viewed(message_id: &str, user: &str) -> Event {
    Event {
        r#type: EventType::Track as i32,
        message_id: message_id.to_owned(),
        user_id: user.to_owned(),
        event: "Product Viewed".to_owned(),
        ..Event::default()
    }
}

pub fn order_completed(message_id: &str, order_id: &str) -> Event {
    let properties = serde_json::json!({ "order_id": order_id, "total": 42.5 });
    let serde_json::Value::Object(properties) = properties else {
        unreachable!("the literal is an object");
    };
    Event {
        event: "Order Completed".to_owned(),
        properties: Some(rtim_proto::json::json_to_struct(properties)),
        ..viewed(message_id, "u1")
    }
}

/// Reads the event stream back from the start with a fresh durable
/// consumer: waits for `expected` events, then 300 ms more for any extra,
/// and returns the `Nats-Msg-Id` and envelope of each, in stream order.
pub async fn stored_events(bus: &Bus, expected: usize) -> Vec<(String, EventEnvelope)> {
    let mut consumer = bus.consumer(&unique("reader"), &bus.all_events_filter()).await.unwrap();
    let mut events = Vec::new();
    loop {
        let wait = if events.len() < expected {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(300)
        };
        let Ok(batch) = tokio::time::timeout(wait, consumer.next_batch(100)).await else {
            break;
        };
        for delivery in batch.unwrap() {
            let envelope = EventEnvelope::decode(delivery.payload.as_ref()).unwrap();
            delivery.ack().await.unwrap();
            events.push((delivery.message_id.clone(), envelope));
        }
    }
    events
}

/// Returns the value of a counter labelled with `tenant`, 0 when it was never incremented.
pub fn counter(name: &str, tenant: &str) -> u64 {
    let text = rtim_runtime::metrics::install().render();
    let label = format!("tenant=\"{tenant}\"");
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with('{') && line.contains(&label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
