//! Starts ingestion on an ephemeral port and calls it over real gRPC, on the
//! in-process bus and, when `RTIM_TEST_NATS_URL` is set, on JetStream. Each
//! start uses its own subject prefix, so tests never see each other's events.

#![allow(dead_code, reason = "each test binary uses a different part of the harness")]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message;
use rtim_bus::{Bus, BusConfig};
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::{ServiceContext, Settings};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

pub const KEY: &str = "test-key";
pub const READ_KEY: &str = "read-key";

pub struct Running {
    /// `memory` or `nats`, for assertion messages.
    pub name: &'static str,
    pub client: IngestionServiceClient<Channel>,
    pub channel: Channel,
    pub endpoint: Endpoint,
    pub bus: Bus,
    pub shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts ingestion on the bus at `bus_url` with the test defaults
/// (`max_batch_events` = 10), changed by `configure`.
pub async fn start_with(bus_url: &str, configure: impl FnOnce(&mut Settings)) -> Running {
    let config = BusConfig {
        url: bus_url.to_owned(),
        subject_prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        ..BusConfig::default()
    };
    start_on(config, configure).await
}

pub async fn start(bus_url: &str) -> Running {
    start_with(bus_url, |_| {}).await
}

/// Starts ingestion on a bus built from `config`.
pub async fn start_on(config: BusConfig, configure: impl FnOnce(&mut Settings)) -> Running {
    let mut settings = Settings::default();
    settings.ingestion.max_batch_events = 10;
    configure(&mut settings);
    let name = if config.url == "memory" { "memory" } else { "nats" };
    let bus = Bus::connect(&config).await.unwrap();
    let ctx = ServiceContext {
        settings: Arc::new(settings),
        keys: keys(),
        bus: bus.clone(),
        cache: rtim_cache::Cache::memory("test:"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(rtim_ingestion::run(ctx, listener, shutdown.clone()));
    let endpoint = Endpoint::from_shared(format!("http://{address}")).unwrap();
    let channel = endpoint.connect_lazy();
    Running {
        name,
        client: IngestionServiceClient::new(channel.clone()),
        channel,
        endpoint,
        bus,
        shutdown,
    }
}

fn keys() -> ApiKeys {
    ApiKeys::from_specs(&[
        ApiKeySpec {
            tenant: "demo".to_owned(),
            scopes: Scope::ALL.to_vec(),
            sha256: hash_key_hex(KEY),
        },
        ApiKeySpec {
            tenant: "demo".to_owned(),
            scopes: vec![Scope::Read],
            sha256: hash_key_hex(READ_KEY),
        },
    ])
    .unwrap()
}

/// Ingestion on the in-process bus and, when `RTIM_TEST_NATS_URL` is set, on
/// JetStream, each changed by `configure`.
pub async fn backends_with(configure: impl Fn(&mut Settings)) -> Vec<Running> {
    let mut running = vec![start_with("memory", &configure).await];
    if let Ok(url) = std::env::var("RTIM_TEST_NATS_URL") {
        running.push(start_with(&url, &configure).await);
    }
    running
}

pub async fn backends() -> Vec<Running> {
    backends_with(|_| {}).await
}

pub fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

pub fn viewed(user: &str) -> Event {
    Event {
        r#type: EventType::Track as i32,
        user_id: user.to_owned(),
        event: "Product Viewed".to_owned(),
        ..Event::default()
    }
}

/// Reads every stored event until `expected` arrived and 300 ms pass without
/// another, and returns them in stream order.
pub async fn stored_events(bus: &Bus, expected: usize) -> Vec<Event> {
    let durable = format!("reader-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = bus.consumer(&durable, &bus.all_events_filter()).await.unwrap();
    let mut events = Vec::new();
    loop {
        let wait = if events.len() < expected {
            Duration::from_secs(10)
        } else {
            Duration::from_millis(300)
        };
        let Ok(batch) = tokio::time::timeout(wait, consumer.next_batch(500)).await else {
            assert!(
                events.len() >= expected,
                "only {} of {expected} stored events arrived within 10 s",
                events.len()
            );
            return events;
        };
        for delivery in batch.unwrap() {
            let envelope = EventEnvelope::decode(delivery.payload.clone()).unwrap();
            events.push(envelope.event.expect("every envelope holds an event"));
            delivery.ack().await.unwrap();
        }
    }
}

pub async fn stored_count(bus: &Bus, expected: usize) -> usize {
    stored_events(bus, expected).await.len()
}

/// Counts stored events by message id.
pub async fn stored_ids(bus: &Bus, expected: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for event in stored_events(bus, expected).await {
        *counts.entry(event.message_id).or_insert(0) += 1;
    }
    counts
}
