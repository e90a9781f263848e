//! Ingestion over real gRPC, on the in-process bus and, when
//! `RTIM_TEST_NATS_URL` is set, on JetStream.

use std::sync::Arc;
use std::time::Duration;

use rtim_bus::{Bus, BusConfig};
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::ingestion::v1::{BatchRequest, TrackRequest};
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::{ServiceContext, Settings};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

struct Running {
    client: IngestionServiceClient<Channel>,
    bus: Bus,
    shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(bus_url: &str) -> Running {
    let mut settings = Settings::default();
    settings.ingestion.max_batch_events = 10;
    let bus = Bus::connect(&BusConfig {
        url: bus_url.to_owned(),
        subject_prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        ..BusConfig::default()
    })
    .await
    .unwrap();
    let keys = ApiKeys::from_specs(&[
        ApiKeySpec {
            tenant: "demo".to_owned(),
            scopes: Scope::ALL.to_vec(),
            sha256: hash_key_hex("test-key"),
        },
        ApiKeySpec {
            tenant: "demo".to_owned(),
            scopes: vec![Scope::Read],
            sha256: hash_key_hex("read-key"),
        },
    ])
    .unwrap();
    let ctx = ServiceContext {
        settings: Arc::new(settings),
        keys,
        bus: bus.clone(),
        cache: rtim_cache::Cache::memory("test:"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(rtim_ingestion::run(ctx, listener, shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    Running {
        client: IngestionServiceClient::new(channel),
        bus,
        shutdown,
    }
}

async fn backends() -> Vec<Running> {
    let mut running = vec![start("memory").await];
    if let Ok(url) = std::env::var("RTIM_TEST_NATS_URL") {
        running.push(start(&url).await);
    }
    running
}

fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

fn viewed(user: &str) -> Event {
    Event {
        r#type: EventType::Track as i32,
        user_id: user.to_owned(),
        event: "Product Viewed".to_owned(),
        ..Event::default()
    }
}

async fn stored_count(bus: &Bus, expected: usize) -> usize {
    let mut consumer = bus.consumer("counter", &bus.all_events_filter()).await.unwrap();
    let mut seen = 0;
    while seen < expected {
        let batch = tokio::time::timeout(Duration::from_secs(5), consumer.next_batch(100))
            .await
            .expect("stored events arrive within 5 s")
            .unwrap();
        seen += batch.len();
    }
    let extra = tokio::time::timeout(Duration::from_millis(300), consumer.next_batch(100)).await;
    seen + extra.map(|batch| batch.unwrap().len()).unwrap_or(0)
}

#[tokio::test]
async fn track_assigns_message_id() {
    for mut running in backends().await {
        let response = running
            .client
            .track(authorized(
                TrackRequest {
                    event: Some(viewed("u1")),
                },
                "test-key",
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.message_id.len(), 36, "a UUID is assigned");
        assert!(!response.duplicate);
    }
}

#[tokio::test]
async fn retried_message_id_is_duplicate() {
    for mut running in backends().await {
        let event = Event {
            message_id: "m-1".to_owned(),
            ..viewed("u1")
        };
        let first = running
            .client
            .track(authorized(
                TrackRequest {
                    event: Some(event.clone()),
                },
                "test-key",
            ))
            .await
            .unwrap()
            .into_inner();
        let second = running
            .client
            .track(authorized(TrackRequest { event: Some(event) }, "test-key"))
            .await
            .unwrap()
            .into_inner();
        assert!(!first.duplicate);
        assert!(second.duplicate);
        assert_eq!(stored_count(&running.bus, 1).await, 1);
    }
}

#[tokio::test]
async fn missing_identity_is_invalid_argument() {
    for mut running in backends().await {
        let status = running
            .client
            .track(authorized(
                TrackRequest {
                    event: Some(viewed("")),
                },
                "test-key",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let violations = rtim_runtime::errors::field_violations(&status);
        assert_eq!(violations[0].field, "event.user_id");
    }
}

#[tokio::test]
async fn batch_stores_valid_events_beside_bad_one() {
    for mut running in backends().await {
        let mut bad = viewed("u2");
        bad.timestamp = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: 2_000_000_000,
        });
        let events = vec![viewed("u1"), bad, viewed("u3")];
        let response = running
            .client
            .batch(authorized(BatchRequest { events }, "test-key"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.accepted, 2);
        assert_eq!(response.rejected, 1);
        assert!(!response.results[1].accepted);
        assert_eq!(response.results[1].violations[0].field, "events[1].timestamp");
        assert_eq!(stored_count(&running.bus, 2).await, 2);
    }
}

#[tokio::test]
async fn oversized_batch_names_limit() {
    for mut running in backends().await {
        let events = (0..11).map(|i| viewed(&format!("u{i}"))).collect();
        let status = running
            .client
            .batch(authorized(BatchRequest { events }, "test-key"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("at most 10 events, got 11"),
            "{}",
            status.message()
        );
    }
}

#[tokio::test]
async fn unknown_key_is_unauthenticated() {
    for mut running in backends().await {
        let status = running
            .client
            .track(authorized(
                TrackRequest {
                    event: Some(viewed("u1")),
                },
                "wrong",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}

#[tokio::test]
async fn read_only_key_cannot_write() {
    for mut running in backends().await {
        let status = running
            .client
            .track(authorized(
                TrackRequest {
                    event: Some(viewed("u1")),
                },
                "read-key",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);
    }
}

#[tokio::test]
async fn message_over_size_limit_names_limit() {
    let mut running = start("memory").await;
    let mut event = viewed("u1");
    event.name = "x".repeat(5 * 1024 * 1024);
    let status = running
        .client
        .batch(authorized(BatchRequest { events: vec![event] }, "test-key"))
        .await
        .unwrap_err();
    // tonic reports an oversized message as OUT_OF_RANGE; gRPC's own docs use RESOURCE_EXHAUSTED.
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );
    assert!(
        status.message().contains("4194304"),
        "names the limit in bytes: {}",
        status.message()
    );
    assert_eq!(stored_count(&running.bus, 0).await, 0, "nothing is stored");
}
