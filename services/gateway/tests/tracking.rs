//! Segment's HTTP tracking API end to end: the gateway in front of the real
//! ingestion service, on the in-process bus and, when `RTIM_TEST_NATS_URL`
//! is set, on JetStream. Each test reads back what the stream stored.
//!
//! A check that a request stored nothing sends a valid marker event after
//! it and expects the marker alone: the stream keeps events in order, so
//! anything the rejected request had stored would come first.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use rtim_bus::{Bus, BusConfig};
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::struct_to_json;
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::{ServiceContext, Settings};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const KEY: &str = "test-key";
const OTHER_KEY: &str = "other-key";
/// The default `gateway.max_event_bytes` and `gateway.max_batch_bytes`.
const MAX_EVENT_BYTES: usize = 32 * 1024;
const MAX_BATCH_BYTES: usize = 500 * 1024;

fn keys() -> ApiKeys {
    let spec = |key: &str, tenant: &str| ApiKeySpec {
        tenant: tenant.to_owned(),
        scopes: Scope::ALL.to_vec(),
        sha256: hash_key_hex(key),
    };
    ApiKeys::from_specs(&[spec(KEY, "demo"), spec(OTHER_KEY, "other")]).expect("hashes are 64 hex digits")
}

/// The gateway and the ingestion service on one bus; dropping it stops both.
struct Stack {
    base: String,
    http: reqwest::Client,
    bus: Bus,
    shutdown: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Stack {
    async fn start(bus_url: &str) -> Stack {
        let shutdown = CancellationToken::new();
        let mut settings = Settings::default();
        settings.bus.url = bus_url.to_owned();
        settings.bus.subject_prefix = format!("t{}", uuid::Uuid::new_v4().simple());
        let bus = Bus::connect(&BusConfig {
            url: settings.bus.url.clone(),
            subject_prefix: settings.bus.subject_prefix.clone(),
            ..BusConfig::default()
        })
        .await
        .expect("bus connects");

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind ingestion port");
        settings.endpoints.ingestion = format!("http://{}", listener.local_addr().expect("bound address"));
        let ingestion = context(settings.clone(), bus.clone());
        tokio::spawn(rtim_ingestion::run(ingestion, listener, shutdown.clone()));
        let base = start_gateway(settings, bus.clone(), &shutdown).await;
        Stack {
            base,
            http: reqwest::Client::new(),
            bus,
            shutdown,
        }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base))
    }

    /// Posts `body` as JSON with the key as HTTP Basic user name, as
    /// Segment's libraries do.
    async fn send(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post(path)
            .basic_auth(KEY, Some(""))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Sends a track event with message id `marker` and returns everything
    /// the stream stored up to and including it.
    async fn stored_through_marker(&self, marker: &str) -> Vec<Event> {
        let body = json!({"userId": "marker", "event": "Marker", "messageId": marker});
        let response = self.send("/v1/track", &body).await;
        assert_eq!(response.status(), StatusCode::OK, "marker stored");
        let events = stored(&self.bus, marker).await;
        assert_eq!(
            events.last().map(|event| event.message_id.as_str()),
            Some(marker),
            "marker last"
        );
        events
    }
}

fn context(settings: Settings, bus: Bus) -> ServiceContext {
    ServiceContext {
        settings: Arc::new(settings),
        keys: keys(),
        bus,
        cache: rtim_cache::Cache::memory("gateway-test:"),
    }
}

/// Starts the gateway with `settings` and returns its base URL. Services
/// other than ingestion are never called by these tests, so they point at
/// a closed port.
async fn start_gateway(mut settings: Settings, bus: Bus, shutdown: &CancellationToken) -> String {
    let closed = closed_port_url();
    settings.endpoints.profile = closed.clone();
    settings.endpoints.decisioning = closed.clone();
    settings.endpoints.recommendations = closed.clone();
    settings.endpoints.surveys = closed.clone();
    settings.endpoints.gamification = closed;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gateway port");
    let base = format!("http://{}", listener.local_addr().expect("bound address"));
    tokio::spawn(rtim_gateway::run(context(settings, bus), listener, shutdown.clone()));
    base
}

async fn stacks() -> Vec<Stack> {
    let mut stacks = vec![Stack::start("memory").await];
    if let Ok(url) = std::env::var("RTIM_TEST_NATS_URL") {
        stacks.push(Stack::start(&url).await);
    }
    stacks
}

/// Reads the stream from the start until the event with message id `last`.
async fn stored(bus: &Bus, last: &str) -> Vec<Event> {
    let name = format!("reader-{}", uuid::Uuid::new_v4().simple());
    let mut consumer = bus
        .consumer(&name, &bus.all_events_filter())
        .await
        .expect("consumer created");
    let mut events = Vec::new();
    while events.last().is_none_or(|event: &Event| event.message_id != last) {
        let batch = tokio::time::timeout(Duration::from_secs(10), consumer.next_batch(100))
            .await
            .unwrap_or_else(|_| panic!("event {last} stored within 10 s; stored so far: {events:?}"))
            .expect("fetch from the stream");
        for delivery in batch {
            let envelope = EventEnvelope::decode(delivery.payload.clone()).expect("stored envelope decodes");
            delivery.ack().await.expect("ack");
            events.push(envelope.event.expect("envelope carries an event"));
        }
    }
    events
}

fn message_ids(events: &[Event]) -> Vec<&str> {
    events.iter().map(|event| event.message_id.as_str()).collect()
}

fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe port");
    let address = listener.local_addr().expect("bound address");
    drop(listener);
    format!("http://{address}")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("write to memory");
    encoder.finish().expect("finish gzip stream")
}

/// Asserts a problem response with `status` and returns its body.
async fn problem(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response.headers().get(CONTENT_TYPE).cloned();
    assert_eq!(
        content_type.as_ref().map(|value| value.as_bytes()),
        Some(&b"application/problem+json"[..]),
        "content type"
    );
    response.json().await.expect("problem body is JSON")
}

async fn ok(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.expect("body is JSON");
    assert_eq!(status, StatusCode::OK, "status, body {body}");
    body
}

fn track(user_id: &str, message_id: &str) -> Value {
    json!({"type": "track", "userId": user_id, "event": "Product Viewed", "messageId": message_id})
}

#[tokio::test]
async fn every_endpoint_stores_its_call() {
    for stack in stacks().await {
        let calls = [
            (
                "/v1/track",
                json!({"userId": "u1", "event": "Product Viewed", "messageId": "m-track", "properties": {"product_id": "p1"}}),
            ),
            (
                "/v1/identify",
                json!({"userId": "u1", "messageId": "m-identify", "traits": {"plan": "gold"}}),
            ),
            (
                "/v1/page",
                json!({"anonymousId": "a1", "messageId": "m-page", "name": "Home"}),
            ),
            (
                "/v1/screen",
                json!({"userId": "u1", "messageId": "m-screen", "name": "Cart"}),
            ),
            (
                "/v1/alias",
                json!({"userId": "u1", "messageId": "m-alias", "previousId": "a1"}),
            ),
            (
                "/v1/group",
                json!({"userId": "u1", "messageId": "m-group", "groupId": "acme", "traits": {"name": "Acme"}}),
            ),
        ];
        for (path, body) in &calls {
            let reply = ok(stack.send(path, body).await).await;
            let expected = json!({"success": true, "messageId": body["messageId"], "duplicate": false});
            assert_eq!(reply, expected, "reply of {path}");
        }
        for (path, message_id) in [("/v1/batch", "m-batch"), ("/v1/import", "m-import")] {
            let body = json!({"batch": [track("u1", message_id)]});
            let reply = ok(stack.send(path, &body).await).await;
            assert_eq!(reply["success"], true, "success of {path}");
            assert_eq!(reply["accepted"], 1, "accepted by {path}: {reply}");
            assert_eq!(reply["results"][0]["messageId"], message_id, "result of {path}");
        }

        let events = stack.stored_through_marker("m-marker").await;
        let kinds: Vec<_> = events
            .iter()
            .map(|event| (event.message_id.as_str(), event.r#type()))
            .collect();
        let expected = [
            ("m-track", EventType::Track),
            ("m-identify", EventType::Identify),
            ("m-page", EventType::Page),
            ("m-screen", EventType::Screen),
            ("m-alias", EventType::Alias),
            ("m-group", EventType::Group),
            ("m-batch", EventType::Track),
            ("m-import", EventType::Track),
            ("m-marker", EventType::Track),
        ];
        assert_eq!(kinds, expected, "stored calls in order");
        assert_eq!(events[2].name, "Home", "page name");
        assert_eq!(events[3].name, "Cart", "screen name");
        assert_eq!(events[4].previous_id, "a1", "alias previous id");
        assert_eq!(events[5].group_id, "acme", "group id");
        assert_eq!(
            struct_to_json(events[5].traits.as_ref()),
            json!({"name": "Acme"}),
            "group traits"
        );
        assert_eq!(
            struct_to_json(events[1].traits.as_ref()),
            json!({"plan": "gold"}),
            "identify traits"
        );
    }
}

#[tokio::test]
async fn single_calls_name_client_fields() {
    for stack in stacks().await {
        let cases = [
            ("/v1/group", json!({"userId": "u1"}), "groupId"),
            ("/v1/alias", json!({"userId": "u1"}), "previousId"),
            ("/v1/screen", json!({"name": "Cart"}), "userId"),
            ("/v1/screen", json!({"anonymous_id": "a\u{0}b"}), "anonymous_id"),
        ];
        for (path, body, field) in cases {
            let body = problem(stack.send(path, &body).await, StatusCode::BAD_REQUEST).await;
            assert_eq!(body["violations"][0]["field"], field, "{path}: {body}");
        }
        let events = stack.stored_through_marker("m-marker").await;
        assert_eq!(message_ids(&events), ["m-marker"], "nothing stored");
    }
}

#[tokio::test]
async fn write_key_in_body_or_header() {
    for stack in stacks().await {
        let body = json!({"writeKey": KEY, "batch": [track("u1", "m-body-key")]});
        let response = stack.post("/v1/batch").json(&body).send().await.expect("request sent");
        assert_eq!(ok(response).await["accepted"], 1, "key in the body alone");

        let body = json!({"writeKey": KEY, "userId": "u1", "event": "x", "messageId": "m-both-keys"});
        let response = stack.send("/v1/track", &body).await;
        assert_eq!(ok(response).await["messageId"], "m-both-keys", "same key in both");

        let body = json!({"writeKey": OTHER_KEY, "userId": "u1", "event": "x", "messageId": "m-mismatch"});
        let reply = problem(stack.send("/v1/track", &body).await, StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            reply["detail"],
            "the body's writeKey does not match the API key in the Authorization header: send one key, or the same key in both",
            "detail"
        );

        let body = json!({"writeKey": "unknown", "batch": [track("u1", "m-unknown-key")]});
        let response = stack.post("/v1/batch").json(&body).send().await.expect("request sent");
        let reply = problem(response, StatusCode::UNAUTHORIZED).await;
        assert_eq!(reply["detail"], "unknown API key", "detail");

        let events = stack.stored_through_marker("m-marker").await;
        assert_eq!(
            message_ids(&events),
            ["m-body-key", "m-both-keys", "m-marker"],
            "stored"
        );
    }
}

#[tokio::test]
async fn gzip_body_stored() {
    for stack in stacks().await {
        let body = json!({"batch": [track("u1", "m-gzip-1"), track("u2", "m-gzip-2")]});
        let response = stack
            .post("/v1/batch")
            .basic_auth(KEY, Some(""))
            .header(CONTENT_ENCODING, "gzip")
            .body(gzip(&serde_json::to_vec(&body).expect("serializable")))
            .send()
            .await
            .expect("request sent");
        assert_eq!(ok(response).await["accepted"], 2, "accepted");

        let single = json!({"userId": "u3", "name": "Home", "messageId": "m-gzip-screen"});
        let response = stack
            .post("/v1/screen")
            .basic_auth(KEY, Some(""))
            .header(CONTENT_ENCODING, "gzip")
            .body(gzip(&serde_json::to_vec(&single).expect("serializable")))
            .send()
            .await
            .expect("request sent");
        assert_eq!(ok(response).await["messageId"], "m-gzip-screen", "single call");

        let events = stack.stored_through_marker("m-marker").await;
        assert_eq!(
            message_ids(&events),
            ["m-gzip-1", "m-gzip-2", "m-gzip-screen", "m-marker"],
            "stored"
        );
    }
}

#[tokio::test]
async fn bad_gzip_is_400() {
    for stack in stacks().await {
        let mut truncated = gzip(&serde_json::to_vec(&json!({"batch": [track("u1", "m-cut")]})).expect("serializable"));
        truncated.truncate(truncated.len() / 2);
        for (case, body) in [("not gzip", b"{\"batch\": []}".to_vec()), ("truncated", truncated)] {
            let response = stack
                .post("/v1/batch")
                .basic_auth(KEY, Some(""))
                .header(CONTENT_ENCODING, "gzip")
                .body(body)
                .send()
                .await
                .expect("request sent");
            let reply = problem(response, StatusCode::BAD_REQUEST).await;
            let detail = reply["detail"].as_str().unwrap_or_default();
            assert!(
                detail.starts_with("request body is not valid gzip data (Content-Encoding: gzip): "),
                "{case}: detail: {detail}"
            );
        }
        let events = stack.stored_through_marker("m-marker").await;
        assert_eq!(message_ids(&events), ["m-marker"], "nothing stored");
    }
}

/// Builds a batch body of `count` track events, padded to exactly `size` bytes.
fn batch_of_size(count: usize, size: usize) -> Vec<u8> {
    let items: Vec<Value> = (0..count)
        .map(|index| json!({"type": "track", "userId": "big", "event": "x", "messageId": format!("m-big-{index}"), "properties": {"pad": ""}}))
        .collect();
    let mut batch = json!({"batch": items});
    let unpadded = serde_json::to_vec(&batch).expect("serializable").len();
    let padding = size.checked_sub(unpadded).expect("size exceeds the unpadded body");
    for (index, item) in batch["batch"].as_array_mut().expect("array").iter_mut().enumerate() {
        let remainder = if index == 0 { padding % count } else { 0 };
        item["properties"]["pad"] = json!("x".repeat(padding / count + remainder));
    }
    let body = serde_json::to_vec(&batch).expect("serializable");
    assert_eq!(body.len(), size, "body size");
    body
}

#[tokio::test]
async fn batch_over_limit_is_413() {
    for stack in stacks().await {
        // 501 KB: 501 * 1024 bytes in 20 events of about 25 KB, each under the event limit.
        let body = batch_of_size(20, 501 * 1024);
        for (case, compressed) in [("plain", false), ("gzip", true)] {
            let mut request = stack
                .post("/v1/batch")
                .basic_auth(KEY, Some(""))
                .header(CONTENT_TYPE, "application/json");
            request = if compressed {
                request.header(CONTENT_ENCODING, "gzip").body(gzip(&body))
            } else {
                request.body(body.clone())
            };
            let reply = problem(
                request.send().await.expect("request sent"),
                StatusCode::PAYLOAD_TOO_LARGE,
            )
            .await;
            assert_eq!(
                reply["detail"],
                format!("request body exceeds the limit of {MAX_BATCH_BYTES} bytes (gateway.max_batch_bytes)"),
                "{case}: detail"
            );
        }
        let at_limit = batch_of_size(20, MAX_BATCH_BYTES);
        let response = stack
            .post("/v1/batch")
            .basic_auth(KEY, Some(""))
            .header(CONTENT_TYPE, "application/json")
            .body(at_limit)
            .send()
            .await
            .expect("request sent");
        assert_eq!(ok(response).await["accepted"], 20, "a batch at the limit");

        let events = stack.stored_through_marker("m-marker").await;
        assert_eq!(events.len(), 21, "only the batch at the limit and the marker");
    }
}

#[tokio::test]
async fn oversized_event_rejected_alone() {
    for stack in stacks().await {
        let big = json!({"type": "track", "userId": "u1", "event": "x", "messageId": "m-big", "properties": {"pad": "x".repeat(MAX_EVENT_BYTES)}});
        let size = serde_json::to_vec(&big).expect("serializable").len();
        let body = json!({"batch": [track("u1", "m-before"), big, track("u1", "m-after")]});
        let reply = ok(stack.send("/v1/batch", &body).await).await;
        assert_eq!(reply["accepted"], 2, "accepted: {reply}");
        assert_eq!(reply["rejected"], 1, "rejected");
        let expected = json!({
            "index": 1,
            "messageId": "m-big",
            "accepted": false,
            "duplicate": false,
            "reason": "EVENT_TOO_LARGE",
            "violations": [{
                "field": "batch[1]",
                "description": format!("event is {size} bytes, over the limit of {MAX_EVENT_BYTES} bytes (gateway.max_event_bytes)"),
            }],
        });
        assert_eq!(reply["results"][1], expected, "result of the big event");

        let single = json!({"userId": "u1", "event": "x", "messageId": "m-big-single", "properties": {"pad": "x".repeat(MAX_EVENT_BYTES)}});
        let size = serde_json::to_vec(&single).expect("serializable").len();
        let reply = problem(stack.send("/v1/track", &single).await, StatusCode::PAYLOAD_TOO_LARGE).await;
        assert_eq!(
            reply["detail"],
            format!("event is {size} bytes, over the limit of {MAX_EVENT_BYTES} bytes (gateway.max_event_bytes)"),
            "single call"
        );

        let events = stack.stored_through_marker("m-marker").await;
        assert_eq!(message_ids(&events), ["m-before", "m-after", "m-marker"], "stored");
    }
}

#[tokio::test]
async fn nul_rejected_alone() {
    for stack in stacks().await {
        let body = json!({"batch": [
            track("u1", "m-clean-1"),
            {"type": "track", "userId": "u1", "event": "x", "messageId": "m-nul", "properties": {"note": "a\u{0}b"}},
            track("u1", "m-clean-2"),
        ]});
        let reply = ok(stack.send("/v1/batch", &body).await).await;
        let accepted: Vec<_> = reply["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|result| result["accepted"].clone())
            .collect();
        assert_eq!(
            accepted,
            [true, false, true].map(Value::from),
            "accepted flags: {reply}"
        );
        let rejected = &reply["results"][1];
        assert_eq!(rejected["messageId"], "m-nul", "message id");
        assert_eq!(rejected["reason"], "INVALID_FIELD", "reason");
        assert_eq!(rejected["violations"][0]["field"], "batch[1].properties.note", "field");

        let events = stack.stored_through_marker("m-marker").await;
        assert_eq!(message_ids(&events), ["m-clean-1", "m-clean-2", "m-marker"], "stored");
    }
}

#[tokio::test]
async fn segment_fields_kept() {
    for stack in stacks().await {
        let body = json!({
            "batch": [
                {
                    "type": "track",
                    "userId": "u1",
                    "event": "Order Completed",
                    "messageId": "m-fields",
                    "originalTimestamp": "2026-12-01T10:00:00.250Z",
                    "receivedAt": "2001-01-01T00:00:00Z",
                    "integrations": {"All": false, "Mixpanel": true},
                    "context": {"ip": "203.0.113.7"},
                },
                {"type": "page", "anonymousId": "a1", "messageId": "m-sent-at", "name": "Home"},
            ],
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "sentAt": "2026-12-01T10:00:01Z",
        });
        ok(stack.send("/v1/batch", &body).await).await;
        let events = stack.stored_through_marker("m-marker").await;
        let fields = &events[0];
        assert_eq!(fields.message_id, "m-fields", "message id");
        assert_eq!(
            struct_to_json(fields.integrations.as_ref()),
            json!({"All": false, "Mixpanel": true}),
            "integrations"
        );
        assert_eq!(
            struct_to_json(fields.context.as_ref()),
            json!({"ip": "203.0.113.7", "library": {"name": "analytics-python", "version": "2.4.0"}}),
            "item context with the batch context"
        );
        let received = fields.received_at.expect("set by ingestion").seconds;
        let now = chrono::Utc::now().timestamp();
        assert!(
            (now - 60..=now).contains(&received),
            "server time {received}, now {now}"
        );
        assert_eq!(
            events[1].sent_at.map(|time| (time.seconds, time.nanos)),
            Some((1_796_119_201, 0)),
            "batch sentAt"
        );
        let original = fields.original_timestamp.or(fields.timestamp);
        assert_eq!(
            original.map(|time| (time.seconds, time.nanos)),
            Some((1_796_119_200, 250_000_000)),
            "client time"
        );
    }
}

#[tokio::test]
async fn same_batch_twice_stored_once() {
    for stack in stacks().await {
        let body = json!({"batch": [track("u1", "m-retry-1"), track("u2", "m-retry-2")]});
        let first = ok(stack.send("/v1/batch", &body).await).await;
        let second = ok(stack.send("/v1/batch", &body).await).await;
        let duplicates = |reply: &Value| -> Vec<Value> {
            reply["results"]
                .as_array()
                .expect("results")
                .iter()
                .map(|result| result["duplicate"].clone())
                .collect()
        };
        assert_eq!(duplicates(&first), [false, false].map(Value::from), "first post");
        assert_eq!(duplicates(&second), [true, true].map(Value::from), "second post");
        assert_eq!(second["accepted"], 2, "a duplicate counts as accepted");

        let events = stack.stored_through_marker("m-marker").await;
        assert_eq!(
            message_ids(&events),
            ["m-retry-1", "m-retry-2", "m-marker"],
            "stored once"
        );
    }
}

#[tokio::test]
async fn unavailable_ingestion_is_503() {
    let shutdown = CancellationToken::new();
    let mut settings = Settings::default();
    settings.endpoints.ingestion = closed_port_url();
    settings.gateway.retry_after = Duration::from_secs(5);
    let bus = Bus::connect(&BusConfig::default()).await.expect("in-process bus");
    let base = start_gateway(settings, bus, &shutdown).await;
    let http = reqwest::Client::new();
    let cases = [
        ("/v1/track", json!({"userId": "u1", "event": "x"})),
        ("/v1/screen", json!({"userId": "u1", "name": "Cart"})),
        ("/v1/batch", json!({"batch": [track("u1", "m1")]})),
    ];
    for (path, body) in cases {
        let response = http
            .post(format!("{base}{path}"))
            .basic_auth(KEY, Some(""))
            .json(&body)
            .send()
            .await
            .expect("request sent");
        let retry_after = response.headers().get(RETRY_AFTER).cloned();
        let reply = problem(response, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(
            retry_after.as_ref().map(|value| value.as_bytes()),
            Some(&b"5"[..]),
            "{path}: Retry-After"
        );
        assert_eq!(
            reply["detail"], "the ingestion service is unavailable, retry later",
            "{path}: detail"
        );
    }
    shutdown.cancel();
}
