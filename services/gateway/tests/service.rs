//! Starts the gateway on an ephemeral port in front of in-process test
//! doubles of the ingestion, profile and surveys services, and calls it over
//! HTTP.
//! The gateway keeps no state, so the embedded bus and cache in its context
//! are never used. The end-to-end tests run it in front of the real services.

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost_types::Timestamp;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use rtim_bus::Bus;
use rtim_cache::Cache;
use rtim_proto::events::v1::Event;
use rtim_proto::ingestion::v1::ingestion_service_server::{IngestionService, IngestionServiceServer};
use rtim_proto::ingestion::v1::{
    BatchRequest, BatchResponse, EventResult, FieldViolation as ProtoViolation, IdentifyRequest, IdentifyResponse,
    PageRequest, PageResponse, TrackRequest, TrackResponse,
};
use rtim_proto::profile::v1::get_profile_request::Lookup;
use rtim_proto::profile::v1::profile_service_server::{ProfileService, ProfileServiceServer};
use rtim_proto::profile::v1::{GetProfileRequest, GetProfileResponse, Profile};
use rtim_proto::surveys::v1::surveys_service_server::{SurveysService, SurveysServiceServer};
use rtim_proto::surveys::v1::{
    GetSurveyResultsRequest, GetSurveyResultsResponse, ListEligibleSurveysRequest, ListEligibleSurveysResponse,
    ListSurveysRequest, ListSurveysResponse, PutSurveyRequest, PutSurveyResponse, SubmitResponseRequest,
    SubmitResponseResponse,
};
use rtim_runtime::auth::{self, ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::errors::{FieldViolation, invalid_argument, invalid_field, not_found, unavailable};
use rtim_runtime::server::GrpcServer;
use rtim_runtime::{ServiceContext, Settings};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

const KEY: &str = "test-key";
const READ_ONLY_KEY: &str = "read-key";
/// Largest batch the ingestion double accepts, as the real service's default.
const MAX_BATCH_EVENTS: usize = 1000;
/// User whose events the ingestion double reports as not stored.
const UNSTORABLE_USER: &str = "unstorable";

/// What the ingestion double received.
#[derive(Debug, Default)]
struct Received {
    /// Events it accepted, in order.
    events: Vec<Event>,
    /// Calls of any method, including rejected ones.
    calls: usize,
    /// `authorization` metadata of each call.
    authorization: Vec<String>,
}

/// Accepts events that name a shopper and rejects the others the way the
/// real service does. A single call gets INVALID_ARGUMENT naming
/// `event.<field>`. In a batch, a rejected event gets a result naming
/// `events[k].<field>` and no message id, and a batch that is too long gets
/// INVALID_ARGUMENT naming `events`. An event of user [`UNSTORABLE_USER`]
/// gets the result of an event the stream could not store.
#[derive(Clone, Debug, Default)]
struct IngestionDouble {
    received: Arc<Mutex<Received>>,
}

impl IngestionDouble {
    fn received<T>(&self, read: impl FnOnce(&Received) -> T) -> T {
        read(&self.received.lock().expect("lock is never poisoned"))
    }

    fn note_call<T>(&self, request: &Request<T>) -> Result<(), Status> {
        auth::caller(request)?.require(Scope::Write)?;
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let mut received = self.received.lock().expect("lock is never poisoned");
        received.calls += 1;
        received.authorization.push(authorization);
        Ok(())
    }

    /// Stores a valid event and returns its message id. Violations name
    /// the event's fields after `prefix`.
    fn store(&self, event: Option<Event>, prefix: &str) -> Result<String, Vec<FieldViolation>> {
        let mut event = event.ok_or_else(|| vec![FieldViolation::new("event", "missing")])?;
        if event.user_id.is_empty() && event.anonymous_id.is_empty() {
            return Err(vec![FieldViolation::new(
                format!("{prefix}user_id"),
                "either user_id or anonymous_id is required",
            )]);
        }
        if event.user_id.contains('\0') {
            return Err(vec![FieldViolation::new(
                format!("{prefix}user_id"),
                "contains a control character",
            )]);
        }
        let mut received = self.received.lock().expect("lock is never poisoned");
        if event.message_id.is_empty() {
            event.message_id = format!("generated-{}", received.events.len());
        }
        let message_id = event.message_id.clone();
        received.events.push(event);
        Ok(message_id)
    }

    fn store_single<T>(&self, request: Request<T>, event: impl FnOnce(T) -> Option<Event>) -> Result<String, Status> {
        self.note_call(&request)?;
        self.store(event(request.into_inner()), "event.")
            .map_err(|violations| invalid_argument(&violations))
    }
}

#[tonic::async_trait]
impl IngestionService for IngestionDouble {
    async fn track(&self, request: Request<TrackRequest>) -> Result<Response<TrackResponse>, Status> {
        let message_id = self.store_single(request, |message| message.event)?;
        Ok(Response::new(TrackResponse {
            message_id,
            duplicate: false,
        }))
    }

    async fn identify(&self, request: Request<IdentifyRequest>) -> Result<Response<IdentifyResponse>, Status> {
        let message_id = self.store_single(request, |message| message.event)?;
        Ok(Response::new(IdentifyResponse {
            message_id,
            duplicate: false,
        }))
    }

    async fn page(&self, request: Request<PageRequest>) -> Result<Response<PageResponse>, Status> {
        let message_id = self.store_single(request, |message| message.event)?;
        Ok(Response::new(PageResponse {
            message_id,
            duplicate: false,
        }))
    }

    // The gateway sends screen, alias and group calls through Batch and never streams.
    async fn screen(
        &self,
        _request: Request<rtim_proto::ingestion::v1::ScreenRequest>,
    ) -> Result<Response<rtim_proto::ingestion::v1::ScreenResponse>, Status> {
        Err(Status::unimplemented("the gateway does not call Screen"))
    }

    async fn alias(
        &self,
        _request: Request<rtim_proto::ingestion::v1::AliasRequest>,
    ) -> Result<Response<rtim_proto::ingestion::v1::AliasResponse>, Status> {
        Err(Status::unimplemented("the gateway does not call Alias"))
    }

    async fn group(
        &self,
        _request: Request<rtim_proto::ingestion::v1::GroupRequest>,
    ) -> Result<Response<rtim_proto::ingestion::v1::GroupResponse>, Status> {
        Err(Status::unimplemented("the gateway does not call Group"))
    }

    type StreamStream = tonic::codegen::BoxStream<rtim_proto::ingestion::v1::StreamResponse>;

    async fn stream(
        &self,
        _request: Request<tonic::Streaming<rtim_proto::ingestion::v1::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        Err(Status::unimplemented("the gateway does not call Stream"))
    }

    async fn batch(&self, request: Request<BatchRequest>) -> Result<Response<BatchResponse>, Status> {
        self.note_call(&request)?;
        let events = request.into_inner().events;
        if events.len() > MAX_BATCH_EVENTS {
            let description = format!("a batch holds at most {MAX_BATCH_EVENTS} events, got {}", events.len());
            return Err(invalid_field("events", description));
        }
        let mut response = BatchResponse::default();
        for (index, event) in events.into_iter().enumerate() {
            let mut result = EventResult {
                index: index as i32,
                ..EventResult::default()
            };
            if event.user_id == UNSTORABLE_USER {
                result.reason = "STREAM_UNAVAILABLE".to_owned();
                response.rejected += 1;
                response.results.push(result);
                continue;
            }
            match self.store(Some(event), &format!("events[{index}].")) {
                Ok(stored_id) => {
                    result.message_id = stored_id;
                    result.accepted = true;
                    response.accepted += 1;
                }
                Err(violations) => {
                    result.reason = "MISSING_IDENTITY".to_owned();
                    result.violations = violations
                        .into_iter()
                        .map(|violation| ProtoViolation {
                            field: violation.field,
                            description: violation.description,
                        })
                        .collect();
                    response.rejected += 1;
                }
            }
            response.results.push(result);
        }
        Ok(Response::new(response))
    }
}

/// Serves the profile of one shopper: user `u1`, also seen as anonymous `a1`.
/// A lookup of user `slow` never completes.
#[derive(Clone, Debug, Default)]
struct ProfileDouble;

fn known_profile() -> Profile {
    Profile {
        profile_id: "profile-1".to_owned(),
        user_id: "u1".to_owned(),
        anonymous_ids: vec!["a1".to_owned()],
        event_counts: [("Product Viewed".to_owned(), 3), ("Order Completed".to_owned(), 1)].into(),
        first_seen: Some(Timestamp {
            seconds: 1_796_378_400,
            nanos: 0,
        }),
        last_seen: Some(Timestamp {
            seconds: 1_796_382_000,
            nanos: 500_000_000,
        }),
        recently_viewed: vec!["p3".to_owned(), "p2".to_owned(), "p1".to_owned()],
        category_affinity: [("electronics".to_owned(), 0.75), ("books".to_owned(), 0.25)].into(),
        brand_affinity: [("lenovo".to_owned(), 1.0)].into(),
        cart_value: 35.5,
        traits: None,
        total_spent: 120.0,
        order_count: 1,
        groups: [(
            "acme".to_owned(),
            rtim_proto::json::json_to_struct(json!({"plan": "enterprise"}).as_object().cloned().unwrap_or_default()),
        )]
        .into(),
    }
}

#[tonic::async_trait]
impl ProfileService for ProfileDouble {
    async fn get_profile(&self, request: Request<GetProfileRequest>) -> Result<Response<GetProfileResponse>, Status> {
        auth::caller(&request)?.require(Scope::Read)?;
        if request.get_ref().lookup == Some(Lookup::UserId("slow".to_owned())) {
            std::future::pending::<()>().await;
        }
        let profile = known_profile();
        let found = match request.into_inner().lookup {
            Some(Lookup::UserId(id)) => id == profile.user_id,
            Some(Lookup::AnonymousId(id)) => profile.anonymous_ids.contains(&id),
            None => false,
        };
        if !found {
            return Err(not_found("profile", "requested"));
        }
        Ok(Response::new(GetProfileResponse { profile: Some(profile) }))
    }
}

/// Answers every eligibility request the way the surveys service does when
/// the profile service, which it depends on, is down, and counts the
/// responses submitted to it.
#[derive(Clone, Debug, Default)]
struct SurveysDouble {
    submitted: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl SurveysService for SurveysDouble {
    async fn put_survey(&self, _request: Request<PutSurveyRequest>) -> Result<Response<PutSurveyResponse>, Status> {
        Err(Status::unimplemented("not used by the gateway"))
    }

    async fn list_surveys(
        &self,
        _request: Request<ListSurveysRequest>,
    ) -> Result<Response<ListSurveysResponse>, Status> {
        Err(Status::unimplemented("not used by the gateway"))
    }

    async fn list_eligible_surveys(
        &self,
        _request: Request<ListEligibleSurveysRequest>,
    ) -> Result<Response<ListEligibleSurveysResponse>, Status> {
        Err(unavailable("profile service", "connection refused"))
    }

    async fn submit_response(
        &self,
        _request: Request<SubmitResponseRequest>,
    ) -> Result<Response<SubmitResponseResponse>, Status> {
        self.submitted.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(SubmitResponseResponse {
            response_id: "response-1".to_owned(),
        }))
    }

    async fn get_survey_results(
        &self,
        _request: Request<GetSurveyResultsRequest>,
    ) -> Result<Response<GetSurveyResultsResponse>, Status> {
        Err(Status::unimplemented("not used by these tests"))
    }
}

fn keys() -> ApiKeys {
    let spec = |key: &str, scopes: Vec<Scope>| ApiKeySpec {
        tenant: "demo".to_owned(),
        scopes,
        sha256: hash_key_hex(key),
    };
    ApiKeys::from_specs(&[spec(KEY, Scope::ALL.to_vec()), spec(READ_ONLY_KEY, vec![Scope::Read])])
        .expect("hashes are 64 hex digits")
}

/// A gateway in front of the doubles; dropping it stops every server.
struct Gateway {
    base: String,
    http: reqwest::Client,
    ingestion: IngestionDouble,
    surveys: SurveysDouble,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Gateway {
    async fn start() -> Gateway {
        Gateway::start_with_timeout(Duration::from_secs(10)).await
    }

    /// Starts a gateway whose calls to the services time out after `timeout`.
    async fn start_with_timeout(timeout: Duration) -> Gateway {
        let shutdown = CancellationToken::new();
        let keys = keys();
        let ingestion = IngestionDouble::default();
        let ingestion_service = InterceptedService::new(
            IngestionServiceServer::new(ingestion.clone()),
            auth::interceptor(keys.clone()),
        );
        let profile_service = InterceptedService::new(
            ProfileServiceServer::new(ProfileDouble),
            auth::interceptor(keys.clone()),
        );
        let surveys = SurveysDouble::default();
        let surveys_service = InterceptedService::new(
            SurveysServiceServer::new(surveys.clone()),
            auth::interceptor(keys.clone()),
        );
        let ingestion_url = serve_grpc(GrpcServer::new("ingestion").add_service(ingestion_service), &shutdown).await;
        let profile_url = serve_grpc(GrpcServer::new("profile").add_service(profile_service), &shutdown).await;
        let surveys_url = serve_grpc(GrpcServer::new("surveys").add_service(surveys_service), &shutdown).await;

        let mut settings = Settings::default();
        settings.endpoints.ingestion = ingestion_url;
        settings.endpoints.profile = profile_url;
        settings.endpoints.surveys = surveys_url;
        let closed = closed_port_url();
        settings.endpoints.decisioning = closed.clone();
        settings.endpoints.recommendations = closed.clone();
        settings.endpoints.gamification = closed;
        settings.endpoints.timeout = timeout;
        settings.server.drain_timeout = Duration::from_secs(5);

        let bus = Bus::connect(&rtim_runtime::context::bus_config(&settings))
            .await
            .expect("in-process bus starts");
        let ctx = ServiceContext {
            settings: Arc::new(settings),
            keys,
            bus,
            cache: Cache::memory("gateway-test:"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gateway port");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let task = tokio::spawn(rtim_gateway::run(ctx, listener, shutdown.clone()));
        Gateway {
            base,
            http: reqwest::Client::new(),
            ingestion,
            surveys,
            shutdown,
            task: Some(task),
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base))
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(KEY)
    }

    fn stored_message_ids(&self) -> Vec<String> {
        self.ingestion
            .received(|received| received.events.iter().map(|event| event.message_id.clone()).collect())
    }

    fn ingestion_calls(&self) -> usize {
        self.ingestion.received(|received| received.calls)
    }
}

async fn serve_grpc(server: GrpcServer, shutdown: &CancellationToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind double port");
    let url = format!("http://{}", listener.local_addr().expect("bound address"));
    tokio::spawn(server.serve(listener, shutdown.clone(), Duration::from_secs(1)));
    url
}

/// Returns a loopback URL where nothing listens, for a service that is down.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe port");
    let address = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{address}")
}

/// Asserts a problem-details response and returns its status and body.
async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        content_type, "application/problem+json",
        "content type of a {status} response"
    );
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["type"], "about:blank", "problem type");
    assert_eq!(body["status"], status.as_u16(), "problem status");
    assert!(body["title"].is_string(), "problem title: {body}");
    (status, body)
}

async fn json_ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("body is JSON");
    assert_eq!(status, StatusCode::OK, "status, body {body}");
    body
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("write to memory");
    encoder.finish().expect("finish gzip stream")
}

fn track_item(user_id: &str, message_id: &str) -> Value {
    json!({"type": "track", "userId": user_id, "event": "Product Viewed", "messageId": message_id})
}

#[tokio::test]
async fn basic_auth_write_key_accepted() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/track")
        .basic_auth(KEY, Some(""))
        .json(&json!({"userId": "u1", "event": "Product Viewed", "messageId": "m1"}))
        .send()
        .await
        .expect("request sent");
    let body = json_ok(response).await;
    assert_eq!(body["success"], true, "success");
    assert_eq!(body["messageId"], "m1", "message id");
    assert_eq!(gateway.stored_message_ids(), ["m1"], "stored events");
    let forwarded = gateway.ingestion.received(|received| received.authorization.clone());
    assert_eq!(forwarded, [format!("Bearer {KEY}")], "key forwarded as Bearer metadata");
}

#[tokio::test]
async fn identify_and_page_forwarded() {
    let gateway = Gateway::start().await;
    let identify = json!({"user_id": "u1", "message_id": "m1", "traits": {"plan": "gold"}});
    let response = gateway
        .post("/v1/identify")
        .bearer_auth(KEY)
        .json(&identify)
        .send()
        .await;
    json_ok(response.expect("request sent")).await;
    let page = json!({"anonymous_id": "a1", "name": "Home", "context": {"session_id": "s1"}});
    let response = gateway.post("/v1/page").bearer_auth(KEY).json(&page).send().await;
    let body = json_ok(response.expect("request sent")).await;
    assert_eq!(body["messageId"], "generated-1", "message id assigned by the service");
    let events = gateway.ingestion.received(|received| received.events.clone());
    assert_eq!(events.len(), 2, "stored events");
    assert_eq!(events[0].user_id, "u1", "identify user id");
    assert_eq!(events[1].session_id, "s1", "page session id");
}

#[tokio::test]
async fn write_key_in_body_accepted() {
    let gateway = Gateway::start().await;
    let body = json!({"writeKey": KEY, "batch": [track_item("u1", "m1")]});
    let response = gateway
        .post("/v1/batch")
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let body = json_ok(response).await;
    assert_eq!(body["accepted"], 1, "accepted");
    assert_eq!(gateway.stored_message_ids(), ["m1"], "stored events");
}

#[tokio::test]
async fn unknown_key_is_401() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/track")
        .bearer_auth("not-a-key")
        .json(&json!({"userId": "u1", "event": "x"}))
        .send()
        .await
        .expect("request sent");
    let challenge = response.headers().get(WWW_AUTHENTICATE).cloned();
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "status");
    assert_eq!(body["title"], "Unauthorized", "title");
    assert_eq!(body["detail"], "unknown API key", "detail");
    assert!(challenge.is_some(), "WWW-Authenticate header");
    assert_eq!(gateway.ingestion_calls(), 0, "ingestion calls");
}

#[tokio::test]
async fn missing_key_is_401() {
    let gateway = Gateway::start().await;
    let response = gateway
        .http
        .get(format!("{}/v1/profiles/u1", gateway.base))
        .send()
        .await;
    let (status, body) = problem(response.expect("request sent")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "status");
    assert!(
        body["detail"].as_str().is_some_and(|detail| detail.contains("Bearer")),
        "detail: {body}"
    );
}

#[tokio::test]
async fn wrong_scope_is_403() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/track")
        .bearer_auth(READ_ONLY_KEY)
        .json(&json!({"userId": "u1", "event": "x"}))
        .send()
        .await
        .expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "status");
    assert!(
        body["detail"].as_str().is_some_and(|detail| detail.contains("'write'")),
        "detail: {body}"
    );
    assert_eq!(gateway.ingestion_calls(), 0, "ingestion calls");
}

#[tokio::test]
async fn oversized_batch_is_413() {
    let gateway = Gateway::start().await;
    // 480 items of about 1080 bytes: just over 501 KiB, under max_body_bytes.
    let padding = "x".repeat(1000);
    let items: Vec<Value> = (0..480)
        .map(|index| json!({"type": "track", "userId": "u1", "event": "x", "properties": {"padding": padding, "n": index}}))
        .collect();
    let body = serde_json::to_vec(&json!({"batch": items})).expect("serializable");
    assert!(body.len() > 501 * 1024, "body of {} bytes", body.len());
    assert!(body.len() < 512 * 1024, "body of {} bytes", body.len());
    let response = gateway
        .post("/v1/batch")
        .bearer_auth(KEY)
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "status");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("512000 bytes")),
        "detail: {body}"
    );
    assert_eq!(gateway.ingestion_calls(), 0, "ingestion calls");
}

#[tokio::test]
async fn gzip_batch_accepted() {
    let gateway = Gateway::start().await;
    let body = json!({"batch": [track_item("u1", "m1"), track_item("u2", "m2")]});
    let response = gateway
        .post("/v1/batch")
        .basic_auth(KEY, Some(""))
        .header(CONTENT_ENCODING, "gzip")
        .body(gzip(&serde_json::to_vec(&body).expect("serializable")))
        .send()
        .await
        .expect("request sent");
    let body = json_ok(response).await;
    assert_eq!(body["accepted"], 2, "accepted");
    assert_eq!(gateway.stored_message_ids(), ["m1", "m2"], "stored events");
}

#[tokio::test]
async fn gzip_limit_after_decompression() {
    let gateway = Gateway::start().await;
    let padding = "x".repeat(600 * 1024);
    let body = json!({"batch": [{"type": "track", "userId": "u1", "event": "x", "properties": {"padding": padding}}]});
    let compressed = gzip(&serde_json::to_vec(&body).expect("serializable"));
    assert!(
        compressed.len() < 100 * 1024,
        "compressed to {} bytes",
        compressed.len()
    );
    let response = gateway
        .post("/v1/batch")
        .bearer_auth(KEY)
        .header(CONTENT_ENCODING, "gzip")
        .body(compressed)
        .send()
        .await
        .expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "status");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("512000 bytes")),
        "detail: {body}"
    );
    assert_eq!(gateway.ingestion_calls(), 0, "ingestion calls");
}

#[tokio::test]
async fn corrupt_gzip_is_400() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/batch")
        .bearer_auth(KEY)
        .header(CONTENT_ENCODING, "gzip")
        .body("this is not a gzip stream")
        .send()
        .await
        .expect("request sent");
    let (status, _body) = problem(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "status");
    assert_eq!(gateway.ingestion_calls(), 0, "ingestion calls");
}

#[tokio::test]
async fn unsupported_encoding_is_415() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/batch")
        .bearer_auth(KEY)
        .header(CONTENT_ENCODING, "br")
        .body("{}")
        .send()
        .await
        .expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "status");
    assert!(
        body["detail"].as_str().is_some_and(|detail| detail.contains("'br'")),
        "detail: {body}"
    );
}

#[tokio::test]
async fn malformed_timestamp_is_400() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/track")
        .bearer_auth(KEY)
        .json(&json!({"userId": "u1", "event": "x", "timestamp": "next tuesday"}))
        .send()
        .await
        .expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "status");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("timestamp"), "field named in detail: {detail}");
    assert!(detail.contains("next tuesday"), "value named in detail: {detail}");
    assert_eq!(body["violations"][0]["field"], "timestamp", "violation field");
    assert_eq!(gateway.ingestion_calls(), 0, "ingestion calls");
}

#[tokio::test]
async fn bad_json_is_400() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/track")
        .bearer_auth(KEY)
        .header(CONTENT_TYPE, "application/json")
        .body("{\"userId\": ")
        .send()
        .await
        .expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "status");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("invalid JSON")),
        "detail: {body}"
    );
}

#[tokio::test]
async fn batch_bad_item_stores_others() {
    let gateway = Gateway::start().await;
    let body = json!({"batch": [
        track_item("u1", "m0"),
        {"type": "page", "anonymousId": "a1", "name": "Home", "messageId": "m1"},
        {"type": "track", "userId": "u1", "event": "x", "messageId": "m2", "timestamp": "next tuesday"},
        42,
        {"type": "track", "event": "x", "messageId": "m4"},
        track_item("u2", "m5"),
    ]});
    let response = gateway.post("/v1/batch").bearer_auth(KEY).json(&body).send().await;
    let body = json_ok(response.expect("request sent")).await;

    assert_eq!(body["accepted"], 3, "accepted: {body}");
    assert_eq!(body["rejected"], 3, "rejected: {body}");
    let results = body["results"].as_array().expect("results array");
    let indexes: Vec<_> = results.iter().map(|result| result["index"].clone()).collect();
    assert_eq!(
        indexes,
        [0, 1, 2, 3, 4, 5].map(Value::from),
        "one result per item in order"
    );
    let accepted: Vec<_> = results.iter().map(|result| result["accepted"].clone()).collect();
    assert_eq!(
        accepted,
        [true, true, false, false, false, true].map(Value::from),
        "accepted flags"
    );

    assert_eq!(results[2]["messageId"], "m2", "rejected item keeps its message id");
    assert_eq!(
        results[2]["violations"][0]["field"], "batch[2].timestamp",
        "timestamp field"
    );
    let description = results[2]["violations"][0]["description"].as_str().unwrap_or_default();
    assert!(description.contains("next tuesday"), "value named: {description}");
    assert_eq!(results[3]["violations"][0]["field"], "batch[3]", "non-object item");
    assert_eq!(
        results[4]["reason"], "MISSING_IDENTITY",
        "service rejection: {}",
        results[4]
    );
    assert_eq!(
        results[4]["violations"][0]["field"], "batch[4].userId",
        "service violation field, once prefixed, in the client's spelling"
    );
    assert_eq!(
        results[4]["messageId"], "m4",
        "item rejected by the service keeps its message id"
    );

    assert_eq!(gateway.stored_message_ids(), ["m0", "m1", "m5"], "stored events");
    assert_eq!(gateway.ingestion_calls(), 1, "one batch call");
}

#[tokio::test]
async fn invalid_argument_is_400() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/track")
        .bearer_auth(KEY)
        .json(&json!({"event": "Product Viewed"}))
        .send()
        .await
        .expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "status");
    assert_eq!(body["violations"][0]["field"], "userId", "violation field: {body}");
    let description = body["violations"][0]["description"].as_str().unwrap_or_default();
    assert!(description.contains("required"), "violation description: {description}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("invalid userId:"), "detail: {detail}");
    assert_eq!(gateway.ingestion_calls(), 1, "ingestion calls");
}

#[tokio::test]
async fn service_field_in_client_spelling() {
    let gateway = Gateway::start().await;
    let cases = [
        (json!({"user_id": "", "event": "x"}), "user_id"),
        (json!({"userId": "a\u{0}b", "event": "x"}), "userId"),
        (json!({"user_id": "a\u{0}b", "event": "x"}), "user_id"),
    ];
    for (event, field) in cases {
        let response = gateway.post("/v1/track").bearer_auth(KEY).json(&event).send().await;
        let (status, body) = problem(response.expect("request sent")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "status for {event}");
        assert_eq!(
            body["violations"][0]["field"], field,
            "violation field for {event}: {body}"
        );
    }
}

#[tokio::test]
async fn batch_service_rejection_named() {
    let gateway = Gateway::start().await;
    let body = json!({"batch": [
        42,
        track_item("u1", "mix-ok"),
        {"type": "track", "user_id": "a\u{0}b", "event": "x", "messageId": "mix-bad"},
    ]});
    let response = gateway.post("/v1/batch").bearer_auth(KEY).json(&body).send().await;
    let body = json_ok(response.expect("request sent")).await;
    let rejected = &body["results"][2];
    assert_eq!(rejected["accepted"], false, "rejected: {body}");
    assert_eq!(rejected["messageId"], "mix-bad", "message id kept: {rejected}");
    assert_eq!(
        rejected["violations"][0]["field"], "batch[2].user_id",
        "field: {rejected}"
    );
}

#[tokio::test]
async fn batch_too_long_names_batch() {
    let gateway = Gateway::start().await;
    let items: Vec<Value> = (0..1200).map(|index| track_item("u1", &format!("m{index}"))).collect();
    let response = gateway
        .post("/v1/batch")
        .bearer_auth(KEY)
        .json(&json!({"batch": items}))
        .send()
        .await
        .expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "status: {body}");
    assert_eq!(body["violations"][0]["field"], "batch", "violation field: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("invalid batch:"), "detail: {detail}");
}

#[tokio::test]
async fn profile_json_shape() {
    let gateway = Gateway::start().await;
    let response = gateway.get("/v1/profiles/u1").send().await.expect("request sent");
    let body = json_ok(response).await;
    assert_eq!(body["profile_id"], "profile-1", "profile id");
    assert_eq!(body["user_id"], "u1", "user id");
    assert_eq!(body["anonymous_ids"], json!(["a1"]), "anonymous ids");
    assert_eq!(
        body["event_counts"],
        json!({"Product Viewed": 3, "Order Completed": 1}),
        "event counts"
    );
    assert_eq!(body["first_seen"], "2026-12-04T10:00:00.000Z", "first seen");
    assert_eq!(body["last_seen"], "2026-12-04T11:00:00.500Z", "last seen");
    assert_eq!(body["recently_viewed"], json!(["p3", "p2", "p1"]), "recently viewed");
    assert_eq!(
        body["category_affinity"],
        json!({"electronics": 0.75, "books": 0.25}),
        "categories"
    );
    assert_eq!(body["brand_affinity"], json!({"lenovo": 1.0}), "brands");
    assert_eq!(body["cart_value"], 35.5, "cart value");
    assert_eq!(body["total_spent"], 120.0, "total spent");
    assert_eq!(body["order_count"], 1, "order count");
    assert_eq!(body["traits"], json!({}), "traits");
    assert_eq!(body["groups"], json!({"acme": {"plan": "enterprise"}}), "groups");
}

#[tokio::test]
async fn profile_by_anonymous_id() {
    let gateway = Gateway::start().await;
    let response = gateway.get("/v1/profiles/a1").send().await.expect("request sent");
    let body = json_ok(response).await;
    assert_eq!(body["profile_id"], "profile-1", "profile id");
}

#[tokio::test]
async fn unknown_profile_is_404() {
    let gateway = Gateway::start().await;
    let response = gateway.get("/v1/profiles/nobody").send().await.expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "status");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|detail| detail.contains("'nobody'")),
        "detail: {body}"
    );
}

#[tokio::test]
async fn unavailable_service_is_503() {
    let gateway = Gateway::start().await;
    let response = gateway
        .post("/v1/decide")
        .bearer_auth(KEY)
        .json(&json!({"placement": "cart", "userId": "u1"}))
        .send()
        .await
        .expect("request sent");
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "status: {body}");
    assert_eq!(
        body["detail"], "the decisioning service is unavailable, retry later",
        "detail names the service called"
    );
    assert_eq!(
        retry_after.as_ref().map(|value| value.as_bytes()),
        Some(&b"1"[..]),
        "Retry-After"
    );
}

#[tokio::test]
async fn unavailable_dependency_named() {
    let gateway = Gateway::start().await;
    let response = gateway
        .get("/v1/surveys/eligible?user_id=u1")
        .send()
        .await
        .expect("request sent");
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "status: {body}");
    assert_eq!(
        body["detail"], "the profile service is unavailable, retry later",
        "detail names the service's dependency"
    );
    assert_eq!(
        retry_after.as_ref().map(|value| value.as_bytes()),
        Some(&b"1"[..]),
        "Retry-After"
    );
}

/// Asserts a 400 problem whose only violation names `field`, and returns
/// the violation's description.
async fn rejected_field(response: reqwest::Response, field: &str, case: &str) -> String {
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: status: {body}");
    let violations = body["violations"].as_array().cloned().unwrap_or_default();
    assert_eq!(violations.len(), 1, "{case}: one violation: {body}");
    assert_eq!(violations[0]["field"], field, "{case}: violation field: {body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(field), "{case}: detail names the field: {detail}");
    violations[0]["description"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn read_path_ids_checked() {
    let gateway = Gateway::start().await;
    let long = "u".repeat(257);
    let cases = [
        ("/v1/points/a%00b".to_owned(), "user_id", "U+0000"),
        ("/v1/profiles/a%00b".to_owned(), "id", "U+0000"),
        ("/v1/profiles/a%1Bb".to_owned(), "id", "U+001B"),
        ("/v1/recommendations?user_id=a%00b".to_owned(), "user_id", "U+0000"),
        ("/v1/recommendations?itemId=a%00b".to_owned(), "itemId", "U+0000"),
        ("/v1/surveys/eligible?user_id=a%00b".to_owned(), "user_id", "U+0000"),
        (
            "/v1/surveys/eligible?anonymousId=a%00b".to_owned(),
            "anonymousId",
            "U+0000",
        ),
        ("/v1/surveys/nps%00/results".to_owned(), "id", "U+0000"),
        (format!("/v1/points/{long}"), "user_id", "at most 256 bytes"),
        (format!("/v1/profiles/{long}"), "id", "at most 256 bytes"),
        (
            format!("/v1/recommendations?anonymous_id={long}"),
            "anonymous_id",
            "at most 256 bytes",
        ),
    ];
    for (path, field, problem_named) in cases {
        let response = gateway.get(&path).send().await.expect("request sent");
        let description = rejected_field(response, field, &path).await;
        assert!(
            description.contains(problem_named),
            "{path}: description: {description}"
        );
    }
}

#[tokio::test]
async fn body_ids_checked() {
    let gateway = Gateway::start().await;
    let long = "u".repeat(257);
    let cases = [
        (
            "/v1/decide",
            json!({"placement": "cart", "user_id": "a\u{0}b"}),
            "user_id",
        ),
        (
            "/v1/decide",
            json!({"placement": "ca\u{0}rt", "userId": "u1"}),
            "placement",
        ),
        (
            "/v1/decide",
            json!({"placement": "cart", "anonymousId": long}),
            "anonymousId",
        ),
        (
            "/v1/surveys/nps/responses",
            json!({"user_id": "a\u{0}b", "answers": [{"question_id": "nps", "score": 9}]}),
            "user_id",
        ),
        (
            "/v1/surveys/nps/responses",
            json!({"user_id": "u1", "answers": [{"question_id": "why", "text": "a\u{0}b"}]}),
            "answers[0].text",
        ),
        (
            "/v1/surveys/nps/responses",
            json!({"user_id": "u1", "answers": [{"questionId": "a\u{0}b", "score": 9}]}),
            "answers[0].questionId",
        ),
    ];
    for (path, body, field) in cases {
        let response = gateway.post(path).bearer_auth(KEY).json(&body).send().await;
        let case = format!("{path} {body}");
        rejected_field(response.expect("request sent"), field, &case).await;
    }
    assert_eq!(
        gateway.surveys.submitted.load(Ordering::SeqCst),
        0,
        "surveys service not called"
    );
}

#[tokio::test]
async fn body_type_errors_named() {
    let gateway = Gateway::start().await;
    let survey = "/v1/surveys/nps/responses";
    let cases = [
        (
            "/v1/decide",
            json!({"placement": "cart", "userId": "u1", "limit": "a"}),
            "limit",
        ),
        (
            "/v1/decide",
            json!({"placement": "cart", "userId": "u1", "limit": 1.5}),
            "limit",
        ),
        (
            "/v1/decide",
            json!({"placement": "cart", "userId": "u1", "limit": 99_999_999_999_i64}),
            "limit",
        ),
        (
            "/v1/decide",
            json!({"placement": "cart", "userId": "u1", "context": []}),
            "context",
        ),
        ("/v1/decide", json!({"placement": 5, "userId": "u1"}), "placement"),
        (
            survey,
            json!({"userId": "u1", "answers": [{"questionId": "nps", "score": 5.5}]}),
            "answers[0].score",
        ),
        (
            survey,
            json!({"userId": "u1", "answers": [{"questionId": "nps", "score": "9"}]}),
            "answers[0].score",
        ),
        (survey, json!({"userId": "u1", "answers": {}}), "answers"),
        (survey, json!({"userId": "u1", "answers": [1]}), "answers[0]"),
    ];
    for (path, body, field) in cases {
        let response = gateway.post(path).bearer_auth(KEY).json(&body).send().await;
        let case = format!("{path} {body}");
        let description = rejected_field(response.expect("request sent"), field, &case).await;
        assert!(description.starts_with("must be"), "{case}: description: {description}");
        for rust_word in ["i32", "expected", "struct", "sequence", "map"] {
            assert!(
                !description.contains(rust_word),
                "{case}: description mentions {rust_word}: {description}"
            );
        }
    }
    assert_eq!(
        gateway.surveys.submitted.load(Ordering::SeqCst),
        0,
        "surveys service not called"
    );
}

#[tokio::test]
async fn query_type_error_named() {
    let gateway = Gateway::start().await;
    let response = gateway
        .get("/v1/recommendations?user_id=u1&limit=abc")
        .send()
        .await
        .expect("request sent");
    let description = rejected_field(response, "limit", "limit=abc").await;
    assert_eq!(
        description, "must be an integer from 0 to 2147483647, got \"abc\"",
        "description"
    );
}

#[tokio::test]
async fn survey_response_forwarded() {
    let gateway = Gateway::start().await;
    let body = json!({"userId": "u1", "answers": [{"questionId": "nps", "score": 9}, {"question_id": "why", "text": "fast\ndelivery"}]});
    let response = gateway
        .post("/v1/surveys/nps/responses")
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let body: Value = response.json().await.expect("body is JSON");
    assert_eq!(status, StatusCode::CREATED, "status: {body}");
    assert_eq!(body["response_id"], "response-1", "response id");
    assert_eq!(
        gateway.surveys.submitted.load(Ordering::SeqCst),
        1,
        "surveys service called"
    );
}

#[tokio::test]
async fn slow_service_is_504() {
    let gateway = Gateway::start_with_timeout(Duration::from_millis(200)).await;
    let response = gateway.get("/v1/profiles/slow").send().await.expect("request sent");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "status: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|detail| detail.contains("profile")),
        "detail: {body}"
    );
}

#[tokio::test]
async fn ops_endpoints_and_metrics() {
    let gateway = Gateway::start().await;
    for path in ["/healthz", "/readyz"] {
        let response = gateway.http.get(format!("{}{path}", gateway.base)).send().await;
        let status = response.expect("request sent").status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let response = gateway.get("/v1/nothing-here").send().await.expect("request sent");
    let (status, _body) = problem(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unknown route");

    let response = gateway.get("/metrics").send().await.expect("request sent");
    let text = response.text().await.expect("metrics text");
    let counted = |route: &str| {
        text.lines().any(|line| {
            line.starts_with("http_server_request_duration_seconds_count")
                && line.contains(&format!("http_route=\"{route}\""))
                && line.contains("http_request_method=\"GET\"")
        })
    };
    assert!(counted("/healthz"), "healthz requests counted:\n{text}");
    assert!(counted("unmatched"), "unmatched requests counted:\n{text}");
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "duration histogram:\n{text}"
    );
}

#[tokio::test]
async fn shutdown_stops_gateway() {
    let mut gateway = Gateway::start().await;
    let response = gateway.http.get(format!("{}/healthz", gateway.base)).send().await;
    assert_eq!(response.expect("request sent").status(), StatusCode::OK, "serving");
    gateway.shutdown.cancel();
    let task = gateway.task.take().expect("task started");
    let result = tokio::time::timeout(Duration::from_secs(30), task).await;
    let result = result
        .expect("gateway stops before the deadline")
        .expect("task did not panic");
    assert!(result.is_ok(), "run returned {result:?}");
    let refused = gateway.http.get(format!("{}/healthz", gateway.base)).send().await;
    assert!(refused.is_err(), "listener closed");
}

#[tokio::test]
async fn unstored_batch_item_is_503() {
    let gateway = Gateway::start().await;
    let body = json!({"batch": [track_item("u1", "m-stored"), track_item(UNSTORABLE_USER, "m-unstored")]});
    let response = gateway
        .post("/v1/batch")
        .basic_auth(KEY, Some(""))
        .json(&body)
        .send()
        .await;
    let response = response.expect("request sent");
    let retry_after = response.headers().get(RETRY_AFTER).cloned();
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "status: {body}");
    assert_eq!(
        retry_after.as_ref().map(|value| value.as_bytes()),
        Some(&b"1"[..]),
        "Retry-After"
    );
    assert_eq!(
        body["detail"],
        "1 of 2 events were not stored because the event stream is unavailable; send them again after \
         Retry-After (events stored already are recognised by their messageId)",
        "detail"
    );

    let screen = json!({"userId": UNSTORABLE_USER, "name": "Cart"});
    let response = gateway
        .post("/v1/screen")
        .basic_auth(KEY, Some(""))
        .json(&screen)
        .send()
        .await;
    let (status, body) = problem(response.expect("request sent")).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "single call sent as a batch: {body}"
    );
}

#[tokio::test]
async fn screen_alias_group_sent_as_batch() {
    let gateway = Gateway::start().await;
    let calls = [
        (
            "/v1/screen",
            json!({"userId": "u1", "name": "Cart", "messageId": "m-screen"}),
        ),
        (
            "/v1/alias",
            json!({"userId": "u1", "previousId": "a1", "messageId": "m-alias"}),
        ),
        (
            "/v1/group",
            json!({"userId": "u1", "groupId": "g1", "messageId": "m-group"}),
        ),
    ];
    for (path, body) in calls {
        let response = gateway.post(path).basic_auth(KEY, Some("")).json(&body).send().await;
        let reply = json_ok(response.expect("request sent")).await;
        assert_eq!(reply["messageId"], body["messageId"], "{path}");
    }
    let response = gateway
        .post("/v1/group")
        .basic_auth(KEY, Some(""))
        .json(&json!({"groupId": "g1"}))
        .send()
        .await;
    let (status, body) = problem(response.expect("request sent")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "status");
    assert_eq!(body["violations"][0]["field"], "userId", "batch field renamed: {body}");
    assert_eq!(
        gateway.stored_message_ids(),
        ["m-screen", "m-alias", "m-group"],
        "stored"
    );
    assert_eq!(gateway.ingestion_calls(), 4, "one batch call each");
}
