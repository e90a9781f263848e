//! Service tests: decisioning started with `run` on an ephemeral port, called
//! over real gRPC and fed through the bus. The profile service is a stand-in
//! that serves fixed profiles and checks the forwarded credential. Every case
//! runs on the embedded adapters (SQLite, in-process bus and cache) and also on
//! PostgreSQL, NATS and Redis when `RTIM_TEST_DATABASE_URL`,
//! `RTIM_TEST_NATS_URL` and `RTIM_TEST_REDIS_URL` are set.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use rtim_bus::{Bus, OutgoingMessage};
use rtim_cache::Cache;
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::decisioning::v1::decisioning_service_client::DecisioningServiceClient;
use rtim_proto::decisioning::v1::{
    Action, DecideRequest, DecideResponse, DeleteActionRequest, ListActionsRequest, PutActionRequest,
};
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::json_to_struct;
use rtim_proto::profile::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use rtim_proto::profile::v1::{GetProfileRequest, GetProfileResponse, Profile, get_profile_request::Lookup};
use rtim_runtime::ServiceContext;
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::errors::field_violations;
use rtim_runtime::settings::Settings;
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

const KEY: &str = "test-key";
const READ_ONLY_KEY: &str = "read-only-key";
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

/// A stand-in profile service that serves fixed profiles by user id or
/// anonymous id, NOT_FOUND for any other shopper, and UNAUTHENTICATED when
/// the caller's credential was not forwarded.
struct ProfileStub {
    profiles: HashMap<String, Profile>,
}

#[tonic::async_trait]
impl ProfileService for ProfileStub {
    async fn get_profile(&self, request: Request<GetProfileRequest>) -> Result<Response<GetProfileResponse>, Status> {
        let credential = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if credential != Some(&format!("Bearer {KEY}")) {
            return Err(Status::unauthenticated("credential was not forwarded"));
        }
        let id = match request.into_inner().lookup {
            Some(Lookup::UserId(id) | Lookup::AnonymousId(id)) => id,
            None => return Err(Status::invalid_argument("lookup is required")),
        };
        match self.profiles.get(&id) {
            Some(profile) => Ok(Response::new(GetProfileResponse {
                profile: Some(profile.clone()),
            })),
            None => Err(Status::not_found(format!("profile '{id}' not found"))),
        }
    }
}

/// Serves `profiles` on an ephemeral port until the guard is dropped.
async fn start_profiles(profiles: Vec<(&str, Profile)>) -> (String, DropGuard) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stub = ProfileStub {
        profiles: profiles
            .into_iter()
            .map(|(id, profile)| (id.to_owned(), profile))
            .collect(),
    };
    let stop = CancellationToken::new();
    let signal = stop.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(ProfileServiceServer::new(stub))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), signal.cancelled_owned())
            .await
    });
    (url, stop.drop_guard())
}

/// Returns a URL where nothing listens, for a profile service that is down.
async fn closed_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A running decisioning service and what a test needs to drive it.
struct Harness {
    client: DecisioningServiceClient<Channel>,
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
            scopes: vec![Scope::Read],
            sha256: hash_key_hex(READ_ONLY_KEY),
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
    let task = tokio::spawn(rtim_decisioning::run(ctx, listener, shutdown.clone()));
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    Harness {
        client: DecisioningServiceClient::new(channel),
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

    async fn put(&self, action: Action) -> Result<Action, Status> {
        let request = authorized(PutActionRequest { action: Some(action) }, KEY);
        Ok(self
            .client
            .clone()
            .put_action(request)
            .await?
            .into_inner()
            .action
            .unwrap())
    }

    async fn decide(&self, request: DecideRequest) -> Result<DecideResponse, Status> {
        Ok(self.client.clone().decide(authorized(request, KEY)).await?.into_inner())
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

fn action(id: &str, placement: &str, condition: &str, value: f64, priority: f64) -> Action {
    Action {
        id: id.to_owned(),
        name: format!("Action {id}"),
        placements: vec![placement.to_owned()],
        condition: condition.to_owned(),
        value,
        priority,
        payload: None,
    }
}

fn decide_for(user_id: &str, placement: &str, limit: i32) -> DecideRequest {
    DecideRequest {
        placement: placement.to_owned(),
        user_id: user_id.to_owned(),
        limit,
        ..DecideRequest::default()
    }
}

fn ids(response: &DecideResponse) -> Vec<String> {
    response
        .actions
        .iter()
        .map(|ranked| ranked.action.as_ref().unwrap().id.clone())
        .collect()
}

fn examples_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/actions.yaml")
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

/// Counts the rows of a table of tenant `demo` through the service's own database.
async fn count_rows(settings: &Settings, table: &str) -> i64 {
    let (url, schema) = settings.database.for_service("decisioning");
    let db = rtim_store::connect(&url, schema.as_deref(), 1).await.unwrap();
    let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE tenant_id = '{TENANT}'");
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    let count = row.try_get::<i64>("", "n").unwrap();
    db.close().await.unwrap();
    count
}

#[tokio::test]
async fn example_actions_follow_profile() {
    let profiles = vec![
        (
            "buyer",
            Profile {
                user_id: "buyer".to_owned(),
                order_count: 2,
                cart_value: 500.0,
                ..Profile::default()
            },
        ),
        (
            "big-cart",
            Profile {
                user_id: "big-cart".to_owned(),
                cart_value: 350.5,
                ..Profile::default()
            },
        ),
        (
            "exact-cart",
            Profile {
                user_id: "exact-cart".to_owned(),
                cart_value: 300.0,
                ..Profile::default()
            },
        ),
        (
            "small-cart",
            Profile {
                user_id: "small-cart".to_owned(),
                cart_value: 42.5,
                event_counts: HashMap::from([("Product Added".to_owned(), 1)]),
                ..Profile::default()
            },
        ),
    ];
    let (profile_url, _profiles) = start_profiles(profiles).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        settings.decisioning.actions_file = Some(examples_file());
        let service = start(&settings).await;

        let cases = [
            ("buyer", vec!["returning-buyer-reward"]),
            ("big-cart", vec!["free-shipping-big-cart"]),
            ("exact-cart", vec!["free-shipping-big-cart"]),
            ("small-cart", vec!["cart-reminder"]),
            ("never-seen", vec![]),
        ];
        for (user, expected) in cases {
            let response = service.decide(decide_for(user, "cart", 5)).await.unwrap();
            assert!(!response.degraded, "{name}: {user}: not degraded, credential forwarded");
            assert_eq!(ids(&response), expected, "{name}: {user}: cart actions");
        }
        let home = service.decide(decide_for("never-seen", "home", 0)).await.unwrap();
        assert_eq!(ids(&home), ["welcome-back"], "{name}: home action");
        let payload = home.actions[0].action.as_ref().unwrap().payload.as_ref().unwrap();
        assert!(
            payload.fields.contains_key("headline"),
            "{name}: payload returned: {payload:?}"
        );
        service.stop().await;
    }
}

#[tokio::test]
async fn decide_ranks_by_value_times_priority() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        service.put(action("low", "home", "", 10.0, 1.0)).await.unwrap();
        service.put(action("tied-b", "home", "", 4.0, 3.0)).await.unwrap();
        service.put(action("tied-c", "home", "", 6.0, 2.0)).await.unwrap();
        service
            .put(action("ineligible", "home", "false", 100.0, 100.0))
            .await
            .unwrap();
        service
            .put(action("elsewhere", "cart", "", 100.0, 100.0))
            .await
            .unwrap();

        let all = service.decide(decide_for("u-1", "home", 10)).await.unwrap();
        assert_eq!(ids(&all), ["tied-b", "tied-c", "low"], "{name}: order");
        let scores: Vec<f64> = all.actions.iter().map(|ranked| ranked.score).collect();
        assert_eq!(scores, [12.0, 12.0, 10.0], "{name}: scores");
        assert!(
            uuid::Uuid::parse_str(&all.decision_id).is_ok(),
            "{name}: decision id is a UUID"
        );

        let one = service.decide(decide_for("u-1", "home", 0)).await.unwrap();
        assert_eq!(ids(&one), ["tied-b"], "{name}: limit 0 means 1");
        let two = service.decide(decide_for("u-1", "home", 2)).await.unwrap();
        assert_eq!(ids(&two), ["tied-b", "tied-c"], "{name}: limit 2");
        assert_ne!(one.decision_id, two.decision_id, "{name}: each decision has its own id");
        assert_eq!(count_rows(&settings, "decisions").await, 3, "{name}: decisions logged");
        service.stop().await;
    }
}

#[tokio::test]
async fn context_is_visible_to_conditions() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        service
            .put(action("mobile-only", "home", "context.device == 'mobile'", 1.0, 1.0))
            .await
            .unwrap();
        let serde_json::Value::Object(context) = json!({"device": "mobile"}) else {
            unreachable!()
        };
        let mobile = DecideRequest {
            context: Some(json_to_struct(context)),
            ..decide_for("u-1", "home", 1)
        };
        assert_eq!(
            ids(&service.decide(mobile).await.unwrap()),
            ["mobile-only"],
            "{name}: mobile"
        );
        let no_context = service.decide(decide_for("u-1", "home", 1)).await.unwrap();
        assert!(
            no_context.actions.is_empty(),
            "{name}: missing key makes the action ineligible"
        );
        service.stop().await;
    }
}

#[tokio::test]
async fn bad_condition_is_rejected() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        for condition in ["profile.order_count >", "shopper.order_count > 0"] {
            let status = service
                .put(action("broken", "cart", condition, 1.0, 1.0))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {condition}: code");
            let fields: Vec<String> = field_violations(&status).into_iter().map(|v| v.field).collect();
            assert_eq!(fields, ["action.condition"], "{name}: {condition}: field");
            assert!(
                status.message().contains("action.condition"),
                "{name}: message: {}",
                status.message()
            );
        }
        let listed = service
            .client
            .clone()
            .list_actions(authorized(ListActionsRequest::default(), KEY))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.actions.is_empty(), "{name}: nothing saved");
        service.stop().await;
    }
}

#[tokio::test]
async fn decide_requires_placement_and_identity() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        let status = service.decide(decide_for("u-1", "", 1)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: placement code");
        assert_eq!(
            field_violations(&status)[0].field,
            "placement",
            "{name}: placement field"
        );
        let status = service.decide(decide_for("", "cart", 1)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: identity code");
        assert_eq!(field_violations(&status)[0].field, "user_id", "{name}: identity field");
        service.stop().await;
    }
}

#[tokio::test]
async fn decide_rejects_bad_ids() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        let long = "p".repeat(100_000);
        let cases = [
            (decide_for("u-1", &long, 1), "placement"),
            (decide_for("u-1", "ca\0rt", 1), "placement"),
            (decide_for("a\0b", "cart", 1), "user_id"),
            (decide_for(&"u".repeat(257), "cart", 1), "user_id"),
            (
                DecideRequest {
                    anonymous_id: "a\u{1b}[31m".to_owned(),
                    ..decide_for("", "cart", 1)
                },
                "anonymous_id",
            ),
        ];
        for (request, field) in cases {
            let shown: String = request.placement.chars().take(16).collect();
            let status = service.decide(request).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {field} {shown:?}: code");
            let fields: Vec<String> = field_violations(&status).into_iter().map(|v| v.field).collect();
            assert_eq!(fields, [field], "{name}: {field} {shown:?}: fields");
        }
        let at_limit = service.decide(decide_for(&"u".repeat(256), "cart", 1)).await;
        assert!(at_limit.is_ok(), "{name}: id at the limit: {at_limit:?}");
        service.stop().await;
    }
}

#[tokio::test]
async fn admin_rejects_bad_ids() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        let status = service.put(action("a\0b", "cart", "", 1.0, 1.0)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: put id code");
        assert_eq!(field_violations(&status)[0].field, "action.id", "{name}: put id field");
        let status = service.put(action("a", "ca\0rt", "", 1.0, 1.0)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: put placement code");
        assert_eq!(
            field_violations(&status)[0].field,
            "action.placements[0]",
            "{name}: put placement field"
        );

        let mut client = service.client.clone();
        for id in ["a\0b".to_owned(), "a".repeat(100_000)] {
            let delete = DeleteActionRequest { id };
            let status = client.delete_action(authorized(delete, KEY)).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: delete code");
            assert_eq!(field_violations(&status)[0].field, "id", "{name}: delete field");
        }
        let list = ListActionsRequest {
            placement: "ca\0rt".to_owned(),
        };
        let status = client.list_actions(authorized(list, KEY)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: list code");
        assert_eq!(field_violations(&status)[0].field, "placement", "{name}: list field");
        service.stop().await;
    }
}

#[tokio::test]
async fn unknown_shopper_gets_empty_profile() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        let new_shopper = "profile.order_count == 0 && profile.cart_value == 0.0 && size(profile.event_counts) == 0";
        service
            .put(action("first-visit", "home", new_shopper, 1.0, 1.0))
            .await
            .unwrap();
        let request = DecideRequest {
            placement: "home".to_owned(),
            anonymous_id: "anonymous-1".to_owned(),
            ..DecideRequest::default()
        };
        let response = service.decide(request).await.unwrap();
        assert!(!response.degraded, "{name}: an unknown shopper is not a failure");
        assert_eq!(response.degraded_reason, "", "{name}: no reason");
        assert_eq!(ids(&response), ["first-visit"], "{name}: empty profile");
        service.stop().await;
    }
}

#[tokio::test]
async fn profile_down_degrades() {
    let down = closed_url().await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = down.clone();
        let service = start(&settings).await;
        service.put(action("always", "home", "", 1.0, 1.0)).await.unwrap();
        service
            .put(action("buyers", "home", "profile.order_count > 0", 9.0, 9.0))
            .await
            .unwrap();
        let response = service.decide(decide_for("buyer", "home", 5)).await.unwrap();
        assert!(response.degraded, "{name}: degraded");
        assert!(
            response.degraded_reason.contains("profile"),
            "{name}: reason: {}",
            response.degraded_reason
        );
        assert_eq!(ids(&response), ["always"], "{name}: decided with an empty profile");
        service.stop().await;
    }
}

#[tokio::test]
async fn wrong_scope_is_denied() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        let mut client = service.client.clone();
        let decide = authorized(decide_for("u-1", "home", 1), READ_ONLY_KEY);
        assert_eq!(
            client.decide(decide).await.unwrap_err().code(),
            Code::PermissionDenied,
            "{name}: decide"
        );
        let put = authorized(
            PutActionRequest {
                action: Some(action("a", "home", "", 1.0, 1.0)),
            },
            READ_ONLY_KEY,
        );
        assert_eq!(
            client.put_action(put).await.unwrap_err().code(),
            Code::PermissionDenied,
            "{name}: put"
        );
        let unknown = authorized(ListActionsRequest::default(), "not-a-key");
        assert_eq!(
            client.list_actions(unknown).await.unwrap_err().code(),
            Code::Unauthenticated,
            "{name}: unknown key"
        );
        service.stop().await;
    }
}

#[tokio::test]
async fn actions_listed_deleted_and_reloaded() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        service.put(action("on-home", "home", "", 1.0, 1.0)).await.unwrap();
        service.put(action("on-cart", "cart", "", 1.0, 1.0)).await.unwrap();
        service.put(action("replaced", "cart", "", 1.0, 1.0)).await.unwrap();
        let replaced = service.put(action("replaced", "home", "", 7.0, 1.0)).await.unwrap();
        assert_eq!(replaced.value, 7.0, "{name}: put returns the saved action");

        let mut client = service.client.clone();
        let home = ListActionsRequest {
            placement: "home".to_owned(),
        };
        let listed = client
            .list_actions(authorized(home.clone(), KEY))
            .await
            .unwrap()
            .into_inner();
        let listed_ids: Vec<&str> = listed.actions.iter().map(|action| action.id.as_str()).collect();
        assert_eq!(listed_ids, ["on-home", "replaced"], "{name}: home actions by id");

        let delete = DeleteActionRequest {
            id: "on-home".to_owned(),
        };
        client.delete_action(authorized(delete.clone(), KEY)).await.unwrap();
        let status = client.delete_action(authorized(delete, KEY)).await.unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{name}: second delete");
        assert_eq!(
            ids(&service.decide(decide_for("u-1", "home", 5)).await.unwrap()),
            ["replaced"],
            "{name}: after delete"
        );
        service.stop().await;

        let restarted = start(&settings).await;
        let response = restarted.decide(decide_for("u-1", "home", 5)).await.unwrap();
        assert_eq!(ids(&response), ["replaced"], "{name}: actions reloaded at start");
        restarted.stop().await;
    }
}

#[tokio::test]
async fn outcome_is_stored_once() {
    let (profile_url, _profiles) = start_profiles(vec![]).await;
    for backend in backends() {
        let name = backend.name;
        let mut settings = backend.settings.clone();
        settings.endpoints.profile = profile_url.clone();
        let service = start(&settings).await;
        service.put(action("always", "home", "", 1.0, 1.0)).await.unwrap();
        let decision = service.decide(decide_for("u-1", "home", 1)).await.unwrap();

        let clicked = |message_id: &str| {
            let serde_json::Value::Object(properties) =
                json!({"decision_id": decision.decision_id, "action_id": "always"})
            else {
                unreachable!()
            };
            Event {
                message_id: message_id.to_owned(),
                r#type: EventType::Track as i32,
                user_id: "u-1".to_owned(),
                event: "Offer Clicked".to_owned(),
                properties: Some(json_to_struct(properties)),
                ..Event::default()
            }
        };
        let viewed = Event {
            message_id: "unrelated".to_owned(),
            r#type: EventType::Track as i32,
            user_id: "u-1".to_owned(),
            event: "Product Viewed".to_owned(),
            ..Event::default()
        };
        service.publish("click-1", clicked("click-1")).await;
        // The same event again under another bus id, as after a redelivery
        // past the bus's duplicate window.
        service.publish("click-1-again", clicked("click-1")).await;
        service.publish("unrelated", viewed).await;
        service.publish("click-2", clicked("click-2")).await;

        // Events are applied in order, so once the last one is stored the duplicate was seen too.
        wait_until("both outcomes are stored", || async {
            count_rows(&settings, "decision_outcomes").await >= 2
        })
        .await;
        assert_eq!(
            count_rows(&settings, "decision_outcomes").await,
            2,
            "{name}: one row per event id"
        );
        service.stop().await;
    }
}
