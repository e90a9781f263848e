//! Service tests: start the recommendations service with `run` on an
//! ephemeral port, feed it events over the bus and call it over gRPC. Every
//! test runs on the embedded adapters (SQLite, in-process bus and cache) and,
//! when `RTIM_TEST_DATABASE_URL`, `RTIM_TEST_NATS_URL` and
//! `RTIM_TEST_REDIS_URL` are set, on PostgreSQL, NATS and Redis too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rtim_bus::{Bus, OutgoingMessage};
use rtim_cache::Cache;
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::json_to_struct;
use rtim_proto::recommendations::v1::recommendations_service_client::RecommendationsServiceClient;
use rtim_proto::recommendations::v1::{ImportCatalogRequest, Item, RecommendRequest, Recommendation, Strategy};
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::errors::field_violations;
use rtim_runtime::{ServiceContext, Settings};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const TENANT: &str = "demo";
const KEY: &str = "test-key";
const READ_ONLY_KEY: &str = "read-only-key";
const DEADLINE: Duration = Duration::from_secs(30);

/// A running service and the handles a test drives it with.
struct Running {
    backend: &'static str,
    client: RecommendationsServiceClient<Channel>,
    bus: Bus,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Settings of each backend to test: embedded always, real servers when
/// configured. The embedded database URL is filled in by [`start`].
fn backends() -> Vec<(&'static str, Settings)> {
    let mut backends = vec![("embedded", Settings::default())];
    let urls = (
        std::env::var("RTIM_TEST_DATABASE_URL"),
        std::env::var("RTIM_TEST_NATS_URL"),
        std::env::var("RTIM_TEST_REDIS_URL"),
    );
    if let (Ok(database), Ok(nats), Ok(redis)) = urls {
        let unique = format!("t{}", uuid::Uuid::new_v4().simple());
        let mut real = Settings::default();
        real.database.url = database;
        real.database.schema_prefix = format!("{unique}_");
        real.bus.url = nats;
        real.bus.subject_prefix = unique.clone();
        real.cache.url = redis;
        real.cache.prefix = format!("{unique}:");
        backends.push(("real", real));
    }
    backends
}

async fn start_all() -> Vec<Running> {
    let mut running = Vec::new();
    for (backend, settings) in backends() {
        running.push(start(backend, settings).await);
    }
    running
}

async fn start(backend: &'static str, mut settings: Settings) -> Running {
    let dir = tempfile::tempdir().expect("temporary folder");
    if backend == "embedded" {
        settings.database.url = format!("sqlite://{}/{{service}}.db?mode=rwc", dir.path().display());
    }

    let bus = Bus::connect(&rtim_runtime::context::bus_config(&settings))
        .await
        .expect("bus connects");
    let cache = Cache::connect(&settings.cache.url, &settings.cache.prefix, settings.cache.pool_size).expect("cache");
    let keys = ApiKeys::from_specs(&[
        ApiKeySpec {
            tenant: TENANT.into(),
            scopes: Scope::ALL.to_vec(),
            sha256: hash_key_hex(KEY),
        },
        ApiKeySpec {
            tenant: TENANT.into(),
            scopes: vec![Scope::Read],
            sha256: hash_key_hex(READ_ONLY_KEY),
        },
    ])
    .expect("valid keys");

    let ctx = ServiceContext {
        settings: Arc::new(settings),
        keys,
        bus: bus.clone(),
        cache,
    };

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(rtim_recommendations::run(ctx, listener, shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("valid URL")
        .connect_lazy();
    Running {
        backend,
        client: RecommendationsServiceClient::new(channel),
        bus,
        shutdown,
        task,
        _dir: dir,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(DEADLINE, self.task)
            .await
            .unwrap_or_else(|_| panic!("{}: run returns after shutdown", self.backend));
        result
            .expect("run does not panic")
            .unwrap_or_else(|error| panic!("{}: run failed: {error:#}", self.backend));
    }

    async fn publish(&self, bus_message_id: &str, event: Event) {
        let envelope = EventEnvelope {
            tenant_id: TENANT.into(),
            event: Some(event),
        };
        self.bus
            .publish(OutgoingMessage {
                subject: self.bus.events_subject(TENANT, "track").expect("valid subject"),
                message_id: format!("{TENANT}:{bus_message_id}"),
                tenant: TENANT.into(),
                payload: envelope.encode_to_vec().into(),
                trace: rtim_bus::TraceContext::default(),
            })
            .await
            .expect("publish");
    }

    /// Publishes one event per (message id, shopper, session, product) view.
    async fn views(&self, views: &[(&str, &str, &str, &str)]) {
        for (message_id, shopper, session, product) in views {
            self.publish(message_id, viewed(message_id, shopper, session, product))
                .await;
        }
    }

    async fn recommend(&self, request: RecommendRequest) -> Result<Vec<Recommendation>, tonic::Status> {
        let response = self.client.clone().recommend(authorized(request, KEY)).await?;
        Ok(response.into_inner().recommendations)
    }

    /// Polls Recommend until `done` holds for its response, and returns that response.
    async fn recommend_until(
        &self,
        request: RecommendRequest,
        what: &str,
        done: impl Fn(&[Recommendation]) -> bool,
    ) -> Vec<Recommendation> {
        let started = Instant::now();
        loop {
            let list = self.recommend(request.clone()).await.expect("Recommend succeeds");
            if done(&list) {
                return list;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{}: {what} within {DEADLINE:?}; last answer: {list:?}",
                self.backend
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn authorized<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    let value = format!("Bearer {key}").parse().expect("ASCII metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

fn track(message_id: &str, shopper: &str, name: &str, properties: serde_json::Value) -> Event {
    let serde_json::Value::Object(properties) = properties else {
        unreachable!("event properties are objects")
    };
    Event {
        message_id: message_id.into(),
        r#type: EventType::Track.into(),
        user_id: shopper.into(),
        event: name.into(),
        properties: Some(json_to_struct(properties)),
        ..Event::default()
    }
}

fn viewed(message_id: &str, shopper: &str, session: &str, product: &str) -> Event {
    let mut event = track(
        message_id,
        shopper,
        "Product Viewed",
        json!({"product_id": product, "category": "shoes", "price": 10.0}),
    );
    event.session_id = session.into();
    event
}

fn ordered(message_id: &str, shopper: &str, products: &[&str]) -> Event {
    let lines: Vec<serde_json::Value> = products
        .iter()
        .map(|product| json!({"product_id": product, "price": 10.0, "quantity": 1}))
        .collect();
    track(
        message_id,
        shopper,
        "Order Completed",
        json!({"order_id": format!("order-{message_id}"), "revenue": 10.0, "products": lines}),
    )
}

fn for_item(item_id: &str, limit: i32) -> RecommendRequest {
    RecommendRequest {
        item_id: item_id.into(),
        limit,
        ..RecommendRequest::default()
    }
}

fn for_user(user_id: &str) -> RecommendRequest {
    RecommendRequest {
        user_id: user_id.into(),
        ..RecommendRequest::default()
    }
}

fn find<'a>(list: &'a [Recommendation], item_id: &str) -> Option<&'a Recommendation> {
    list.iter().find(|entry| entry.item_id == item_id)
}

/// Returns the score of `item_id` when co-visitation recommended it.
fn co_visit_score(list: &[Recommendation], item_id: &str) -> Option<f64> {
    find(list, item_id)
        .filter(|entry| entry.strategy() == Strategy::CoVisitation)
        .map(|entry| entry.score)
}

fn ids(list: &[Recommendation]) -> Vec<&str> {
    list.iter().map(|entry| entry.item_id.as_str()).collect()
}

#[tokio::test]
async fn co_visits_count_sessions() {
    for service in start_all().await {
        let name = service.backend;
        // Session s1 views a and b twice each: one session, so one co-visit.
        service
            .views(&[
                ("v1", "u1", "s1", "a"),
                ("v2", "u1", "s1", "b"),
                ("v3", "u1", "s1", "a"),
                ("v4", "u1", "s1", "b"),
                ("v5", "u2", "s2", "a"),
                ("v6", "u2", "s2", "c"),
                ("v7", "u3", "s3", "c"),
                ("v8", "u3", "s3", "a"),
            ])
            .await;

        let list = service
            .recommend_until(for_item("a", 10), "c co-visited twice with a", |list| {
                co_visit_score(list, "c") == Some(2.0)
            })
            .await;
        assert_eq!(
            ids(&list),
            ["c", "b"],
            "{name}: most co-visited first, a itself left out"
        );
        assert_eq!(
            list[0].strategy(),
            Strategy::CoVisitation,
            "{name}: c comes from co-visitation"
        );
        assert_eq!(
            list[1].score, 1.0,
            "{name}: b and a share one session however often viewed"
        );
        assert_eq!(
            list[1].strategy(),
            Strategy::CoVisitation,
            "{name}: b comes from co-visitation"
        );

        let reverse = service.recommend(for_item("c", 10)).await.expect("Recommend for c");
        assert_eq!(reverse[0].item_id, "a", "{name}: co-visits count in both directions");
        assert_eq!(reverse[0].score, 2.0, "{name}: c and a share two sessions");
        service.stop().await;
    }
}

#[tokio::test]
async fn bought_item_excluded_for_shopper() {
    for service in start_all().await {
        let name = service.backend;
        service
            .views(&[
                ("v1", "shopper", "s1", "a"),
                ("v2", "shopper", "s1", "b"),
                ("v3", "u2", "s2", "a"),
                ("v4", "u2", "s2", "c"),
                ("v5", "u3", "s3", "b"),
                ("v6", "u3", "s3", "d"),
                ("v7", "u4", "s4", "b"),
                ("v8", "u4", "s4", "d"),
            ])
            .await;
        service.publish("o1", ordered("o1", "shopper", &["c"])).await;

        let list = service
            .recommend_until(for_user("shopper"), "d co-visited twice and bought c gone", |list| {
                co_visit_score(list, "d") == Some(2.0) && find(list, "c").is_none()
            })
            .await;
        assert_eq!(
            list[0].strategy(),
            Strategy::CoVisitation,
            "{name}: d is co-visited with b"
        );
        assert!(find(&list, "c").is_none(), "{name}: c was bought");
        assert!(find(&list, "a").is_none(), "{name}: a was viewed by the shopper");
        assert!(find(&list, "b").is_none(), "{name}: b was viewed by the shopper");
        service.stop().await;
    }
}

#[tokio::test]
async fn popularity_fills() {
    for service in start_all().await {
        let name = service.backend;
        service.views(&[("v1", "u1", "s1", "x"), ("v2", "u1", "s1", "y")]).await;
        service.publish("o1", ordered("o1", "u2", &["z"])).await;

        let list = service
            .recommend_until(for_item("x", 3), "co-visited y and popular z", |list| {
                co_visit_score(list, "y").is_some() && find(list, "z").is_some()
            })
            .await;
        assert_eq!(ids(&list), ["y", "z"], "{name}: co-visited y, then popular z, never x");
        assert_eq!(
            list[0].strategy(),
            Strategy::CoVisitation,
            "{name}: y comes from co-visitation"
        );
        assert_eq!(
            list[1].strategy(),
            Strategy::Popularity,
            "{name}: z fills from popularity"
        );
        assert_eq!(list[1].score, 5.0, "{name}: an order adds 5 to popularity");
        assert!(
            list[1].item.is_none(),
            "{name}: z was never imported, so it has no catalog data"
        );

        let one = service
            .recommend(for_item("x", 1))
            .await
            .expect("Recommend with limit 1");
        assert_eq!(ids(&one), ["y"], "{name}: limit 1 keeps only the co-visited item");
        service.stop().await;
    }
}

#[tokio::test]
async fn duplicate_delivery_changes_nothing() {
    for service in start_all().await {
        let name = service.backend;
        // The same events again under new bus message ids, as a redelivery
        // after a crash would bring them: only the inbox can drop them.
        for bus_id in ["first", "again"] {
            service
                .publish(&format!("v1-{bus_id}"), viewed("v1", "u1", "s1", "p1"))
                .await;
            service
                .publish(&format!("v2-{bus_id}"), viewed("v2", "u1", "s1", "p2"))
                .await;
            service
                .publish(&format!("o1-{bus_id}"), ordered("o1", "u1", &["p3"]))
                .await;
        }
        service.publish("marker", ordered("marker", "u9", &["marker"])).await;

        let list = service
            .recommend_until(for_item("unknown", 10), "the marker order", |list| {
                find(list, "marker").is_some()
            })
            .await;
        let score = |item_id: &str| find(&list, item_id).map(|entry| entry.score);
        assert_eq!(score("p1"), Some(1.0), "{name}: p1 viewed once");
        assert_eq!(score("p2"), Some(1.0), "{name}: p2 viewed once");
        assert_eq!(score("p3"), Some(5.0), "{name}: p3 ordered once");

        let co_visited = service.recommend(for_item("p1", 1)).await.expect("Recommend for p1");
        assert_eq!(co_visited[0].item_id, "p2", "{name}: p2 is co-visited with p1");
        assert_eq!(co_visited[0].score, 1.0, "{name}: one session");
        service.stop().await;
    }
}

#[tokio::test]
async fn import_validation_errors() {
    for service in start_all().await {
        let name = service.backend;
        let item = |id: &str, price: f64| Item {
            id: id.into(),
            category: "shoes".into(),
            brand: "acme".into(),
            price,
            name: format!("Shoe {id}"),
        };
        let mut client = service.client.clone();

        let bad = ImportCatalogRequest {
            items: vec![item("ok", 1.0), item("neg", -1.0), item("", 2.0), item("nan", f64::NAN)],
        };
        let status = client
            .import_catalog(authorized(bad, KEY))
            .await
            .expect_err("invalid items are rejected");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name}: {status:?}");
        let fields: Vec<String> = field_violations(&status)
            .into_iter()
            .map(|violation| violation.field)
            .collect();
        assert_eq!(
            fields,
            ["items[1].price", "items[2].id", "items[3].price"],
            "{name}: each bad field named"
        );

        let read_only = ImportCatalogRequest {
            items: vec![item("ok", 1.0)],
        };
        let status = client
            .import_catalog(authorized(read_only, READ_ONLY_KEY))
            .await
            .expect_err("import needs the admin scope");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{name}: {status:?}");

        let good = ImportCatalogRequest {
            items: vec![item("y", 12.5), item("x", 3.0), item("y", 13.0)],
        };
        let imported = client
            .import_catalog(authorized(good, KEY))
            .await
            .expect("valid import")
            .into_inner()
            .imported;
        assert_eq!(imported, 2, "{name}: a repeated id is imported once");

        service.views(&[("v1", "u1", "s1", "x"), ("v2", "u1", "s1", "y")]).await;
        let list = service
            .recommend_until(for_item("x", 10), "y co-visited with x", |list| {
                co_visit_score(list, "y").is_some()
            })
            .await;
        let catalog = list[0].item.as_ref().expect("imported item carries catalog data");
        assert_eq!(catalog.price, 13.0, "{name}: the last occurrence of y wins");
        assert_eq!(catalog.name, "Shoe y", "{name}: catalog name attached");
        service.stop().await;
    }
}

#[tokio::test]
async fn missing_target_is_invalid() {
    for service in start_all().await {
        let name = service.backend;
        let status = service
            .recommend(RecommendRequest::default())
            .await
            .expect_err("a target is required");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name}: {status:?}");
        assert_eq!(
            field_violations(&status)[0].field,
            "item_id",
            "{name}: the missing field is named"
        );

        let both = RecommendRequest {
            item_id: "a".into(),
            anonymous_id: "anon".into(),
            ..RecommendRequest::default()
        };
        let status = service.recommend(both).await.expect_err("only one target is allowed");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{name}: {status:?}");

        let empty = service
            .recommend(for_user("nobody"))
            .await
            .expect("Recommend succeeds for an unknown shopper");
        assert!(
            empty.is_empty(),
            "{name}: nothing is known yet, so nothing is recommended"
        );
        service.stop().await;
    }
}
