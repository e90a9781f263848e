//! Service tests: start the surveys service with `run` on an ephemeral port,
//! beside a small in-process profile service that serves fixed profiles, and
//! call it over gRPC. Every test runs on the embedded adapters (SQLite,
//! in-process bus and cache) and, when `RTIM_TEST_DATABASE_URL`,
//! `RTIM_TEST_NATS_URL` and `RTIM_TEST_REDIS_URL` are set, on PostgreSQL,
//! NATS and Redis too.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rtim_bus::{Bus, OutgoingMessage};
use rtim_cache::Cache;
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::profile::v1::get_profile_request::Lookup;
use rtim_proto::profile::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use rtim_proto::profile::v1::{GetProfileRequest, GetProfileResponse, Profile};
use rtim_proto::surveys::v1::answer::Value;
use rtim_proto::surveys::v1::surveys_service_client::SurveysServiceClient;
use rtim_proto::surveys::v1::{
    Answer, GetSurveyResultsRequest, GetSurveyResultsResponse, ListEligibleSurveysRequest, ListSurveysRequest,
    PutSurveyRequest, Question, QuestionType, SubmitResponseRequest, Survey,
};
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::errors::field_violations;
use rtim_runtime::server::GrpcServer;
use rtim_runtime::{ServiceContext, Settings};
use rtim_surveys::entity::shopper_event;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

const TENANT: &str = "demo";
const KEY: &str = "test-key";
const DEADLINE: Duration = Duration::from_secs(30);
const BUYER: &str = "buyer";
const BROWSER: &str = "browser";

/// Profile service double: fixed profiles by user or anonymous id, NOT_FOUND
/// for anyone else, and UNAUTHENTICATED unless the caller's key was forwarded.
#[derive(Clone)]
struct FixedProfiles {
    profiles: Arc<HashMap<String, Profile>>,
}

#[tonic::async_trait]
impl ProfileService for FixedProfiles {
    async fn get_profile(&self, request: Request<GetProfileRequest>) -> Result<Response<GetProfileResponse>, Status> {
        let expected = format!("Bearer {KEY}");
        let forwarded = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        if forwarded != Some(expected.as_str()) {
            return Err(Status::unauthenticated("the caller's API key was not forwarded"));
        }
        let id = match request.into_inner().lookup {
            Some(Lookup::UserId(id) | Lookup::AnonymousId(id)) => id,
            None => return Err(Status::invalid_argument("missing lookup")),
        };
        match self.profiles.get(&id) {
            Some(profile) => Ok(Response::new(GetProfileResponse {
                profile: Some(profile.clone()),
            })),
            None => Err(Status::not_found(format!("profile '{id}' not found"))),
        }
    }
}

/// Starts the profile double and returns its URL and the token that stops it.
async fn start_profiles() -> (String, CancellationToken) {
    let buyer = Profile {
        user_id: BUYER.into(),
        order_count: 2,
        total_spent: 80.0,
        event_counts: HashMap::from([("Order Completed".to_owned(), 2)]),
        ..Profile::default()
    };
    let browser = Profile {
        user_id: BROWSER.into(),
        event_counts: HashMap::from([("Product Viewed".to_owned(), 12)]),
        ..Profile::default()
    };
    let double = FixedProfiles {
        profiles: Arc::new(HashMap::from([
            (BUYER.to_owned(), buyer),
            (BROWSER.to_owned(), browser),
        ])),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local address"));
    let shutdown = CancellationToken::new();
    let server = GrpcServer::new("profile").add_service(ProfileServiceServer::new(double));
    tokio::spawn(server.serve(listener, shutdown.clone(), Duration::from_secs(1)));
    (url, shutdown)
}

/// A running service and the handles a test drives it with.
struct Running {
    backend: &'static str,
    settings: Arc<Settings>,
    client: SurveysServiceClient<Channel>,
    bus: Bus,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
    profiles: CancellationToken,
    _dir: tempfile::TempDir,
}

/// Settings of each backend to test: embedded always, real servers when
/// configured. The embedded database URL is filled in by [`context`].
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

/// Builds the service context of one backend, with the profile double as
/// the profile endpoint.
async fn context(backend: &str, mut settings: Settings, dir: &tempfile::TempDir, profiles: &str) -> ServiceContext {
    if backend == "embedded" {
        settings.database.url = format!("sqlite://{}/{{service}}.db?mode=rwc", dir.path().display());
    }
    settings.endpoints.profile = profiles.to_owned();

    let bus = Bus::connect(&rtim_runtime::context::bus_config(&settings))
        .await
        .expect("bus connects");
    let cache = Cache::connect(&settings.cache.url, &settings.cache.prefix, settings.cache.pool_size).expect("cache");
    let keys = ApiKeys::from_specs(&[ApiKeySpec {
        tenant: TENANT.into(),
        scopes: Scope::ALL.to_vec(),
        sha256: hash_key_hex(KEY),
    }])
    .expect("valid keys");
    ServiceContext {
        settings: Arc::new(settings),
        keys,
        bus,
        cache,
    }
}

async fn start_all() -> Vec<Running> {
    let mut running = Vec::new();
    for (backend, settings) in backends() {
        let (profiles_url, profiles) = start_profiles().await;
        let dir = tempfile::tempdir().expect("temporary folder");
        let ctx = context(backend, settings, &dir, &profiles_url).await;
        running.push(start(backend, ctx, dir, profiles).await);
    }
    running
}

async fn start(
    backend: &'static str,
    ctx: ServiceContext,
    dir: tempfile::TempDir,
    profiles: CancellationToken,
) -> Running {
    let settings = ctx.settings.clone();
    let bus = ctx.bus.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("local address");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(rtim_surveys::run(ctx, listener, shutdown.clone()));

    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("valid URL")
        .connect_lazy();
    Running {
        backend,
        settings,
        client: SurveysServiceClient::new(channel),
        bus,
        shutdown,
        task,
        profiles,
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
        self.profiles.cancel();
    }

    async fn put(&self, survey: Survey) -> Result<Survey, Status> {
        let request = authorized(PutSurveyRequest { survey: Some(survey) });
        let response = self.client.clone().put_survey(request).await?;
        Ok(response.into_inner().survey.expect("PutSurvey returns the survey"))
    }

    async fn eligible(&self, user_id: &str) -> Result<Vec<String>, Status> {
        let request = authorized(ListEligibleSurveysRequest {
            user_id: user_id.into(),
            anonymous_id: String::new(),
        });
        let response = self.client.clone().list_eligible_surveys(request).await?;
        Ok(response
            .into_inner()
            .surveys
            .into_iter()
            .map(|survey| survey.id)
            .collect())
    }

    async fn submit(&self, survey_id: &str, user_id: &str, answers: Vec<Answer>) -> Result<String, Status> {
        let request = authorized(SubmitResponseRequest {
            survey_id: survey_id.into(),
            user_id: user_id.into(),
            anonymous_id: String::new(),
            answers,
        });
        let response = self.client.clone().submit_response(request).await?;
        Ok(response.into_inner().response_id)
    }

    async fn results(&self, survey_id: &str) -> Result<GetSurveyResultsResponse, Status> {
        let request = authorized(GetSurveyResultsRequest {
            survey_id: survey_id.into(),
        });
        Ok(self.client.clone().get_survey_results(request).await?.into_inner())
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
}

fn authorized<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    let value = format!("Bearer {KEY}").parse().expect("ASCII metadata");
    request.metadata_mut().insert("authorization", value);
    request
}

/// Builds the post-purchase survey of the examples under the id `id`.
fn nps_survey(id: &str, targeting: &str) -> Survey {
    Survey {
        id: id.into(),
        title: "How was your order?".into(),
        questions: vec![
            Question {
                id: "likelihood".into(),
                r#type: QuestionType::Nps.into(),
                text: "How likely are you to recommend us to a friend?".into(),
                required: true,
            },
            Question {
                id: "reason".into(),
                r#type: QuestionType::Text.into(),
                text: "What is the main reason for your score?".into(),
                required: false,
            },
        ],
        targeting: targeting.into(),
    }
}

fn score(value: i32) -> Vec<Answer> {
    vec![Answer {
        question_id: "likelihood".into(),
        value: Some(Value::Score(value)),
    }]
}

fn violation_fields(status: &Status) -> Vec<String> {
    field_violations(status)
        .into_iter()
        .map(|violation| violation.field)
        .collect()
}

#[tokio::test]
async fn buyer_eligible_non_buyer_not() {
    for service in start_all().await {
        let name = service.backend;
        service
            .put(nps_survey("buyers", "profile.order_count > 0"))
            .await
            .expect("save buyers");
        service.put(nps_survey("everyone", "")).await.expect("save everyone");

        let buyer = service.eligible(BUYER).await.expect("eligible for the buyer");
        assert_eq!(buyer, ["buyers", "everyone"], "{name}: the buyer gets both surveys");
        let browser = service.eligible(BROWSER).await.expect("eligible for the browser");
        assert_eq!(browser, ["everyone"], "{name}: a non-buyer is not targeted");
        let newcomer = service
            .eligible("newcomer")
            .await
            .expect("eligible for a shopper without profile");
        assert_eq!(newcomer, ["everyone"], "{name}: a missing profile is an empty one");

        let status = service.eligible("").await.expect_err("a shopper is required");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert_eq!(
            violation_fields(&status),
            ["user_id"],
            "{name}: the missing field is named"
        );
        service.stop().await;
    }
}

#[tokio::test]
async fn answered_survey_not_eligible() {
    for service in start_all().await {
        let name = service.backend;
        service
            .put(nps_survey("buyers", "profile.order_count > 0"))
            .await
            .expect("save");
        assert_eq!(
            service.eligible(BUYER).await.expect("eligible"),
            ["buyers"],
            "{name}: before responding"
        );

        let response_id = service.submit("buyers", BUYER, score(9)).await.expect("submit");
        assert!(!response_id.is_empty(), "{name}: a response id is returned");
        let after = service.eligible(BUYER).await.expect("eligible after responding");
        assert!(
            after.is_empty(),
            "{name}: an answered survey is not offered again: {after:?}"
        );
        service.stop().await;
    }
}

#[tokio::test]
async fn nps_results_known_set() {
    for service in start_all().await {
        let name = service.backend;
        service.put(nps_survey("nps", "")).await.expect("save");
        for (index, value) in [10, 9, 8, 6, 0].into_iter().enumerate() {
            let mut answers = score(value);
            answers.push(Answer {
                question_id: "reason".into(),
                value: Some(Value::Text(format!("reason {index}"))),
            });
            service
                .submit("nps", &format!("shopper-{index}"), answers)
                .await
                .expect("submit");
        }

        let results = service.results("nps").await.expect("results");
        assert_eq!(results.survey_id, "nps", "{name}: the survey is named");
        assert_eq!(results.responses, 5, "{name}: five responses");
        assert_eq!(results.nps.len(), 1, "{name}: one NPS question");
        let nps = &results.nps[0];
        assert_eq!(nps.question_id, "likelihood", "{name}: the NPS question");
        assert_eq!(nps.promoters, 2, "{name}: 10 and 9 promote");
        assert_eq!(nps.passives, 1, "{name}: 8 is passive");
        assert_eq!(nps.detractors, 2, "{name}: 6 and 0 detract");
        assert_eq!(nps.score, 0.0, "{name}: as many promoters as detractors");
        service.stop().await;
    }
}

#[tokio::test]
async fn out_of_range_score_rejected() {
    for service in start_all().await {
        let name = service.backend;
        service.put(nps_survey("nps", "")).await.expect("save");
        let status = service
            .submit("nps", BUYER, score(11))
            .await
            .expect_err("11 is out of range");
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        let violations = field_violations(&status);
        assert_eq!(violations[0].field, "answers[0].score", "{name}: the field is named");
        assert!(
            violations[0].description.contains("11"),
            "{name}: the value is named: {violations:?}"
        );

        let unanswered = service
            .submit("nps", BUYER, Vec::new())
            .await
            .expect_err("the NPS question is required");
        assert_eq!(
            violation_fields(&unanswered),
            ["answers"],
            "{name}: a missing required answer"
        );
        let results = service.results("nps").await.expect("results");
        assert_eq!(results.responses, 0, "{name}: rejected responses are not stored");
        service.stop().await;
    }
}

#[tokio::test]
async fn duplicate_response_already_exists() {
    for service in start_all().await {
        let name = service.backend;
        service.put(nps_survey("nps", "")).await.expect("save");
        service.submit("nps", BUYER, score(10)).await.expect("first response");
        let status = service
            .submit("nps", BUYER, score(3))
            .await
            .expect_err("second response");
        assert_eq!(status.code(), Code::AlreadyExists, "{name}: {status:?}");

        let results = service.results("nps").await.expect("results");
        assert_eq!(results.responses, 1, "{name}: one response per shopper");
        assert_eq!(results.nps[0].promoters, 1, "{name}: the first response is kept");
        service.stop().await;
    }
}

#[tokio::test]
async fn bad_targeting_rejected() {
    for service in start_all().await {
        let name = service.backend;
        for targeting in ["profile.order_count >", "user.orders > 0"] {
            let status = service
                .put(nps_survey("broken", targeting))
                .await
                .expect_err("bad targeting is rejected");
            assert_eq!(status.code(), Code::InvalidArgument, "{name}: {targeting}: {status:?}");
            assert_eq!(violation_fields(&status), ["survey.targeting"], "{name}: {targeting}");
        }

        let mut untyped = nps_survey("untyped", "");
        untyped.questions[1].r#type = QuestionType::Unspecified.into();
        let status = service.put(untyped).await.expect_err("a question type is required");
        assert_eq!(
            violation_fields(&status),
            ["survey.questions[1].type"],
            "{name}: the question is named"
        );

        let listed = service
            .client
            .clone()
            .list_surveys(authorized(ListSurveysRequest {}))
            .await
            .expect("list surveys")
            .into_inner()
            .surveys;
        assert!(listed.is_empty(), "{name}: rejected surveys are not stored: {listed:?}");
        service.stop().await;
    }
}

#[tokio::test]
async fn unknown_survey_not_found() {
    for service in start_all().await {
        let name = service.backend;
        let status = service
            .submit("missing", BUYER, score(5))
            .await
            .expect_err("no such survey");
        assert_eq!(status.code(), Code::NotFound, "{name}: {status:?}");
        let status = service.results("missing").await.expect_err("no such survey");
        assert_eq!(status.code(), Code::NotFound, "{name}: {status:?}");
        service.stop().await;
    }
}

#[tokio::test]
async fn profile_failure_unavailable() {
    for (backend, settings) in backends() {
        // A port that this test just released usually has no listener.
        let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", closed.local_addr().expect("local address"));
        drop(closed);
        let dir = tempfile::tempdir().expect("temporary folder");
        let ctx = context(backend, settings, &dir, &url).await;
        let service = start(backend, ctx, dir, CancellationToken::new()).await;

        service.put(nps_survey("everyone", "")).await.expect("save");
        let status = service.eligible(BUYER).await.expect_err("the profile service is down");
        assert_eq!(status.code(), Code::Unavailable, "{backend}: {status:?}");
        service.stop().await;
    }
}

#[tokio::test]
async fn surveys_file_loaded_at_start() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/surveys.yaml");
    for (backend, mut settings) in backends() {
        settings.surveys.surveys_file = Some(example.clone());
        let (profiles_url, profiles) = start_profiles().await;
        let dir = tempfile::tempdir().expect("temporary folder");
        let ctx = context(backend, settings, &dir, &profiles_url).await;
        let service = start(backend, ctx, dir, profiles).await;

        let listed = service
            .client
            .clone()
            .list_surveys(authorized(ListSurveysRequest {}))
            .await
            .expect("list surveys")
            .into_inner()
            .surveys;
        let ids: Vec<&str> = listed.iter().map(|survey| survey.id.as_str()).collect();
        assert_eq!(
            ids,
            ["browse-feedback", "post-purchase-nps"],
            "{backend}: both example surveys"
        );
        assert_eq!(
            service.eligible(BUYER).await.expect("eligible"),
            ["post-purchase-nps"],
            "{backend}: the buyer gets the post-purchase survey"
        );
        assert_eq!(
            service.eligible(BROWSER).await.expect("eligible"),
            ["browse-feedback"],
            "{backend}: the browser with 12 views gets the browse feedback survey"
        );
        service.stop().await;
    }
}

#[tokio::test]
async fn invalid_surveys_file_stops_start() {
    for (backend, mut settings) in backends() {
        let dir = tempfile::tempdir().expect("temporary folder");
        let file = dir.path().join("surveys.yaml");
        let text = "tenant: demo\nsurveys:\n  - id: broken\n    title: Broken\n    targeting: 'profile.order_count >'\n    questions:\n      - {id: q, type: nps, text: Score?}\n";
        std::fs::write(&file, text).expect("write the surveys file");
        settings.surveys.surveys_file = Some(file);
        let ctx = context(backend, settings, &dir, "http://127.0.0.1:9").await;

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let run = rtim_surveys::run(ctx, listener, CancellationToken::new());
        let error = tokio::time::timeout(DEADLINE, run)
            .await
            .expect("run returns")
            .expect_err("an invalid surveys file stops the start");
        let message = format!("{error:#}");
        assert!(
            message.contains("survey 'broken'"),
            "{backend}: the survey is named: {message}"
        );
        assert!(
            message.contains("survey.targeting"),
            "{backend}: the field is named: {message}"
        );
    }
}

#[tokio::test]
async fn events_counted_once() {
    for service in start_all().await {
        let name = service.backend;
        let viewed = Event {
            message_id: "v1".into(),
            r#type: EventType::Track.into(),
            user_id: "counted".into(),
            event: "Product Viewed".into(),
            ..Event::default()
        };
        let page = Event {
            message_id: "p1".into(),
            r#type: EventType::Page.into(),
            user_id: "counted".into(),
            name: "Home".into(),
            ..Event::default()
        };
        // The view again under a new bus message id, as a redelivery after a
        // crash would bring it: only the inbox can drop it.
        service.publish("v1", viewed.clone()).await;
        service.publish("v1-again", viewed).await;
        service.publish("p1", page).await;
        let marker = Event {
            message_id: "marker".into(),
            r#type: EventType::Track.into(),
            user_id: "marker".into(),
            event: "Order Completed".into(),
            ..Event::default()
        };
        service.publish("marker", marker).await;

        // The tables exist once the service serves, because it migrates first.
        service
            .client
            .clone()
            .list_surveys(authorized(ListSurveysRequest {}))
            .await
            .expect("the service serves");
        let (url, schema) = service.settings.database.for_service("surveys");
        let db = rtim_store::connect(&url, schema.as_deref(), 1)
            .await
            .expect("connect to the service database");
        let started = Instant::now();
        let counts = loop {
            let rows = shopper_event::Entity::find()
                .filter(shopper_event::Column::TenantId.eq(TENANT))
                .all(&db)
                .await
                .expect("read shopper events");
            if rows.iter().any(|row| row.shopper_key == "marker") {
                break rows;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{name}: the marker event is counted within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let count = |event: &str| {
            counts
                .iter()
                .find(|row| row.shopper_key == "counted" && row.event == event)
                .map(|row| row.count)
        };
        assert_eq!(
            count("Product Viewed"),
            Some(1),
            "{name}: the redelivered view counts once"
        );
        assert_eq!(
            count("Page Viewed"),
            Some(1),
            "{name}: a page call counts as Page Viewed"
        );
        service.stop().await;
    }
}
