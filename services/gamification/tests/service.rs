//! Service tests: gamification started with `run` on an ephemeral port,
//! fed track events through the bus and called over real gRPC. Every case
//! runs on the embedded adapters (SQLite, in-process bus and cache) and also
//! on PostgreSQL, NATS and Redis when `RTIM_TEST_DATABASE_URL`,
//! `RTIM_TEST_NATS_URL` and `RTIM_TEST_REDIS_URL` are set.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use rtim_bus::{Bus, OutgoingMessage};
use rtim_cache::Cache;
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::gamification::v1::gamification_service_client::GamificationServiceClient;
use rtim_proto::gamification::v1::{
    GetBalanceRequest, GetBalanceResponse, ListPointRulesRequest, PointRule, PutPointRuleRequest,
};
use rtim_proto::json::json_to_struct;
use rtim_runtime::ServiceContext;
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::errors::field_violations;
use rtim_runtime::settings::Settings;
use serde_json::json;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

const KEY: &str = "test-key";
const WRITE_ONLY_KEY: &str = "write-only-key";
const TENANT: &str = "demo";

/// Settings for one set of adapters, each test on its own schema, subject
/// prefix and key prefix.
struct Backend {
    name: &'static str,
    settings: Settings,
    _dir: TempDir,
}

fn backends() -> Vec<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let mut embedded = Settings::default();
    embedded.database.url = format!("sqlite://{}/{{service}}.db?mode=rwc", dir.path().display());
    embedded.database.max_connections = 2;
    let mut backends = vec![Backend {
        name: "embedded",
        settings: embedded,
        _dir: dir,
    }];

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
        real.database.max_connections = 2;
        real.bus.url = nats;
        real.bus.subject_prefix = unique.clone();
        real.cache.url = redis;
        real.cache.prefix = format!("{unique}:");
        real.cache.pool_size = 2;
        backends.push(Backend {
            name: "real",
            settings: real,
            _dir: tempfile::tempdir().unwrap(),
        });
    }
    backends
}

/// A running gamification service and what a test needs to drive it.
struct Harness {
    client: GamificationServiceClient<Channel>,
    bus: Bus,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(settings: &Settings) -> Harness {
    let keys = ApiKeys::from_specs(&[
        ApiKeySpec {
            tenant: TENANT.into(),
            scopes: Scope::ALL.to_vec(),
            sha256: hash_key_hex(KEY),
        },
        ApiKeySpec {
            tenant: TENANT.into(),
            scopes: vec![Scope::Write],
            sha256: hash_key_hex(WRITE_ONLY_KEY),
        },
    ])
    .unwrap();
    let bus = Bus::connect(&rtim_runtime::context::bus_config(settings))
        .await
        .unwrap();
    let cache = Cache::connect(&settings.cache.url, &settings.cache.prefix, settings.cache.pool_size).unwrap();
    let ctx = ServiceContext {
        settings: Arc::new(settings.clone()),
        keys,
        bus: bus.clone(),
        cache,
    };

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(rtim_gamification::run(ctx, listener, shutdown.clone()));
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    Harness {
        client: GamificationServiceClient::new(channel),
        bus,
        shutdown,
        task,
    }
}

impl Harness {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = self.task.await.expect("service task does not panic");
        assert!(result.is_ok(), "service stops cleanly: {result:?}");
    }

    async fn put(&self, rule: PointRule) -> Result<PointRule, Status> {
        let request = authorized(PutPointRuleRequest { rule: Some(rule) }, KEY);
        Ok(self
            .client
            .clone()
            .put_point_rule(request)
            .await?
            .into_inner()
            .rule
            .unwrap())
    }

    async fn balance(&self, user_id: &str) -> Result<GetBalanceResponse, Status> {
        let request = authorized(
            GetBalanceRequest {
                user_id: user_id.to_owned(),
            },
            KEY,
        );
        Ok(self.client.clone().get_balance(request).await?.into_inner())
    }

    /// Polls the balance of `user_id` until it has `entries` ledger entries.
    async fn wait_for_entries(&self, user_id: &str, entries: i64) -> GetBalanceResponse {
        wait_until(&format!("{user_id} has {entries} ledger entries"), || async {
            self.balance(user_id).await.unwrap().entries >= entries
        })
        .await;
        self.balance(user_id).await.unwrap()
    }

    async fn publish(&self, bus_id: &str, event: Event) {
        let envelope = EventEnvelope {
            tenant_id: TENANT.to_owned(),
            event: Some(event),
        };
        let message = OutgoingMessage {
            subject: self.bus.events_subject(TENANT, "track").unwrap(),
            message_id: format!("{TENANT}:{bus_id}"),
            tenant: TENANT.to_owned(),
            payload: Bytes::from(envelope.encode_to_vec()),
            trace: rtim_bus::TraceContext::default(),
        };
        self.bus.publish(message).await.unwrap();
    }
}

fn authorized<T>(body: T, key: &str) -> Request<T> {
    let mut request = Request::new(body);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

/// Builds a track event of user `user_id` (anonymous when it starts with "anon-")
/// with a `price` property.
fn track(message_id: &str, user_id: &str, name: &str, price: serde_json::Value) -> Event {
    let serde_json::Value::Object(properties) = json!({"product_id": "p-1", "price": price}) else {
        unreachable!()
    };
    let (user_id, anonymous_id) = if user_id.starts_with("anon-") {
        (String::new(), user_id.to_owned())
    } else {
        (user_id.to_owned(), String::new())
    };
    Event {
        message_id: message_id.to_owned(),
        r#type: EventType::Track as i32,
        user_id,
        anonymous_id,
        event: name.to_owned(),
        properties: Some(json_to_struct(properties)),
        ..Event::default()
    }
}

fn rule(id: &str, event: &str, condition: &str, points: &str) -> PointRule {
    PointRule {
        id: id.to_owned(),
        event: event.to_owned(),
        condition: condition.to_owned(),
        points: points.to_owned(),
        description: format!("rule {id}"),
    }
}

fn with_examples(settings: &Settings) -> Settings {
    let mut settings = settings.clone();
    settings.gamification.rules_file =
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/point-rules.yaml"));
    settings
}

/// Polls `check` until it returns true, failing after 20 seconds.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn order_points_sum_floor_of_price() {
    for backend in backends() {
        let name = backend.name;
        let service = start(&with_examples(&backend.settings)).await;
        service
            .publish("o-1", track("o-1", "u-1", "Order Completed", json!(35.79)))
            .await;
        service
            .publish("o-2", track("o-2", "u-1", "Order Completed", json!(120)))
            .await;
        service
            .publish("o-3", track("o-3", "u-1", "Order Completed", json!(10.5)))
            .await;
        service
            .publish("o-4", track("o-4", "u-2", "Order Completed", json!(99.99)))
            .await;

        let first = service.wait_for_entries("u-1", 3).await;
        assert_eq!(first.balance, 35 + 120 + 10, "{name}: floor of each price, summed");
        assert_eq!(first.entries, 3, "{name}: one entry per order");
        assert_eq!(first.user_id, "u-1", "{name}: user echoed");
        let second = service.wait_for_entries("u-2", 1).await;
        assert_eq!(second.balance, 99, "{name}: other shopper kept apart");
        service.stop().await;
    }
}

#[tokio::test]
async fn redelivered_event_pays_once() {
    for backend in backends() {
        let name = backend.name;
        let service = start(&with_examples(&backend.settings)).await;
        service
            .publish("o-1", track("o-1", "u-1", "Order Completed", json!(40.2)))
            .await;
        // The same event again under another bus id, as after a redelivery
        // past the bus's duplicate window.
        service
            .publish("o-1-again", track("o-1", "u-1", "Order Completed", json!(40.2)))
            .await;
        service
            .publish("o-2", track("o-2", "u-1", "Order Completed", json!(7)))
            .await;

        // Events are applied in order, so once the last one has paid the duplicate was seen too.
        let balance = service.wait_for_entries("u-1", 2).await;
        assert_eq!(balance.entries, 2, "{name}: one entry per event id");
        assert_eq!(balance.balance, 47, "{name}: the first order paid once");
        service.stop().await;
    }
}

#[tokio::test]
async fn condition_filters_events() {
    for backend in backends() {
        let name = backend.name;
        let service = start(&with_examples(&backend.settings)).await;
        service
            .publish("a-1", track("a-1", "u-1", "Product Added", json!(150.5)))
            .await;
        service
            .publish("a-2", track("a-2", "u-1", "Product Added", json!(99.99)))
            .await;
        service
            .publish("a-3", track("a-3", "u-1", "Product Added", json!(100)))
            .await;
        service
            .publish("v-1", track("v-1", "u-1", "Product Viewed", json!(500)))
            .await;
        service
            .publish("a-4", track("a-4", "anon-1", "Product Added", json!(300)))
            .await;
        service
            .publish("o-1", track("o-1", "u-1", "Order Completed", json!(1)))
            .await;

        let known = service.wait_for_entries("u-1", 3).await;
        assert_eq!(known.entries, 3, "{name}: two adds of 100 or more and the order");
        assert_eq!(known.balance, 5 + 5 + 1, "{name}: points of the matching events");
        let anonymous = service.wait_for_entries("anon-1", 1).await;
        assert_eq!(anonymous.balance, 5, "{name}: keyed by anonymous id without a user id");
        service.stop().await;
    }
}

#[tokio::test]
async fn failing_rule_is_skipped() {
    for backend in backends() {
        let name = backend.name;
        let service = start(&backend.settings).await;
        service
            .put(rule("fractional", "Order Completed", "", "event.properties.price"))
            .await
            .unwrap();
        service.put(rule("flat", "Order Completed", "", "10")).await.unwrap();
        service
            .publish("o-1", track("o-1", "u-1", "Order Completed", json!(12.5)))
            .await;
        service
            .publish("o-2", track("o-2", "u-1", "Order Completed", json!(20)))
            .await;

        let balance = service.wait_for_entries("u-1", 3).await;
        assert_eq!(
            balance.entries, 3,
            "{name}: flat twice, fractional only for the whole price"
        );
        assert_eq!(balance.balance, 10 + 10 + 20, "{name}: balance");
        service.stop().await;
    }
}

#[tokio::test]
async fn bad_points_rejected() {
    for backend in backends() {
        let name = backend.name;
        let service = start(&backend.settings).await;
        let cases = [
            ("math.floor(", "syntax error"),
            ("shopper.points", "unknown variable"),
            ("", "missing"),
        ];
        for (points, case) in cases {
            let status = service
                .put(rule("broken", "Order Completed", "", points))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {case}: code");
            let fields: Vec<String> = field_violations(&status).into_iter().map(|v| v.field).collect();
            assert_eq!(fields, ["rule.points"], "{name}: {case}: field");
        }
        let status = service.put(rule("broken", "", "", "1")).await.unwrap_err();
        assert_eq!(
            field_violations(&status)[0].field,
            "rule.event",
            "{name}: event required"
        );

        let listed = service
            .client
            .clone()
            .list_point_rules(authorized(ListPointRulesRequest {}, KEY))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.rules.is_empty(), "{name}: nothing saved");
        service.stop().await;
    }
}

#[tokio::test]
async fn unknown_user_balance_is_zero() {
    for backend in backends() {
        let name = backend.name;
        let service = start(&backend.settings).await;
        let balance = service.balance("nobody").await.unwrap();
        assert_eq!(balance.balance, 0, "{name}: balance");
        assert_eq!(balance.entries, 0, "{name}: entries");
        let status = service.balance("").await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: user id required");
        assert_eq!(field_violations(&status)[0].field, "user_id", "{name}: field");
        service.stop().await;
    }
}

#[tokio::test]
async fn wrong_scope_is_denied() {
    for backend in backends() {
        let name = backend.name;
        let service = start(&backend.settings).await;
        let mut client = service.client.clone();
        let balance = authorized(
            GetBalanceRequest {
                user_id: "u-1".to_owned(),
            },
            WRITE_ONLY_KEY,
        );
        let status = client.get_balance(balance).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: balance");
        let put = authorized(
            PutPointRuleRequest {
                rule: Some(rule("a", "Order Completed", "", "1")),
            },
            WRITE_ONLY_KEY,
        );
        let status = client.put_point_rule(put).await.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: put");
        service.stop().await;
    }
}

#[tokio::test]
async fn saved_rule_applies_and_reloads() {
    for backend in backends() {
        let name = backend.name;
        let service = start(&backend.settings).await;
        let saved = service.put(rule("signup", "Signed Up", "", "50")).await.unwrap();
        assert_eq!(saved.points, "50", "{name}: put returns the saved rule");
        service.publish("s-1", track("s-1", "u-1", "Signed Up", json!(0))).await;
        assert_eq!(
            service.wait_for_entries("u-1", 1).await.balance,
            50,
            "{name}: new rule applies"
        );

        let replaced = rule("signup", "Signed Up", "", "75");
        service.put(replaced).await.unwrap();
        let listed = service
            .client
            .clone()
            .list_point_rules(authorized(ListPointRulesRequest {}, KEY))
            .await
            .unwrap()
            .into_inner();
        let points: Vec<&str> = listed.rules.iter().map(|rule| rule.points.as_str()).collect();
        assert_eq!(points, ["75"], "{name}: one rule, replaced");
        service.stop().await;

        let restarted = start(&backend.settings).await;
        restarted
            .publish("s-2", track("s-2", "u-2", "Signed Up", json!(0)))
            .await;
        let balance = restarted.wait_for_entries("u-2", 1).await;
        assert_eq!(balance.balance, 75, "{name}: rules reloaded at start");
        restarted.stop().await;
    }
}
