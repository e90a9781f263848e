//! The profile service over real gRPC, fed through the bus: on SQLite and
//! the in-process bus always, and on PostgreSQL and JetStream when
//! `RTIM_TEST_DATABASE_URL` and `RTIM_TEST_NATS_URL` are set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use rtim_bus::{Bus, BusConfig, OutgoingMessage};
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::{datetime_to_timestamp, json_to_struct};
use rtim_proto::profile::v1::get_profile_request::Lookup;
use rtim_proto::profile::v1::profile_service_client::ProfileServiceClient;
use rtim_proto::profile::v1::{GetProfileRequest, Profile};
use rtim_runtime::auth::{ApiKeySpec, ApiKeys, Scope, hash_key_hex};
use rtim_runtime::{ServiceContext, Settings};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

struct Running {
    client: ProfileServiceClient<Channel>,
    bus: Bus,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(database_url: Option<String>, bus_url: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let unique = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut settings = Settings::default();
    settings.database.url =
        database_url.unwrap_or_else(|| format!("sqlite://{}/{{service}}.db?mode=rwc", dir.path().display()));
    settings.database.schema_prefix = format!("{unique}_");
    let bus = Bus::connect(&BusConfig {
        url: bus_url.to_owned(),
        subject_prefix: unique,
        ..BusConfig::default()
    })
    .await
    .unwrap();
    let keys = ApiKeys::from_specs(&[ApiKeySpec {
        tenant: "demo".to_owned(),
        scopes: Scope::ALL.to_vec(),
        sha256: hash_key_hex("test-key"),
    }])
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
    tokio::spawn(rtim_profile::run(ctx, listener, shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect_lazy();
    Running {
        client: ProfileServiceClient::new(channel),
        bus,
        shutdown,
        _dir: dir,
    }
}

async fn backends() -> Vec<Running> {
    let mut running = vec![start(None, "memory").await];
    if let (Ok(database), Ok(nats)) = (
        std::env::var("RTIM_TEST_DATABASE_URL"),
        std::env::var("RTIM_TEST_NATS_URL"),
    ) {
        running.push(start(Some(database), &nats).await);
    }
    running
}

fn event(
    id: &str,
    kind: EventType,
    user: &str,
    anonymous: &str,
    name: &str,
    at: i64,
    properties: serde_json::Value,
) -> Event {
    let serde_json::Value::Object(properties) = properties else {
        panic!("properties must be an object");
    };
    Event {
        message_id: id.to_owned(),
        r#type: kind as i32,
        user_id: user.to_owned(),
        anonymous_id: anonymous.to_owned(),
        event: name.to_owned(),
        properties: Some(json_to_struct(properties)),
        timestamp: Some(datetime_to_timestamp(chrono::DateTime::from_timestamp(at, 0).unwrap())),
        ..Event::default()
    }
}

fn viewed(id: &str, user: &str, anonymous: &str, product: &str, at: i64) -> Event {
    event(
        id,
        EventType::Track,
        user,
        anonymous,
        "Product Viewed",
        at,
        json!({"product_id": product, "category": "phones"}),
    )
}

/// Publishes events as ingestion does. The bus message id is unique per
/// call so that a deliberate redelivery is not dropped by the stream's own
/// duplicate window, and reaches the consumer's inbox.
async fn publish(bus: &Bus, events: Vec<Event>) {
    let messages = events
        .into_iter()
        .map(|event| OutgoingMessage {
            subject: bus.events_subject("demo", "track").unwrap(),
            message_id: format!("demo:{}:{}", event.message_id, uuid::Uuid::new_v4()),
            tenant: "demo".to_owned(),
            payload: Bytes::from(
                EventEnvelope {
                    tenant_id: "demo".to_owned(),
                    event: Some(event),
                }
                .encode_to_vec(),
            ),
            trace: rtim_bus::TraceContext::default(),
        })
        .collect();
    for ack in bus.publish_many(messages).await {
        ack.unwrap();
    }
}

fn request(lookup: Lookup) -> tonic::Request<GetProfileRequest> {
    let mut request = tonic::Request::new(GetProfileRequest { lookup: Some(lookup) });
    request
        .metadata_mut()
        .insert("authorization", "Bearer test-key".parse().unwrap());
    request
}

/// Polls until the profile contains `total` events in all.
async fn profile_with(running: &mut Running, lookup: Lookup, total: i64) -> Profile {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(response) = running.client.get_profile(request(lookup.clone())).await {
            let profile = response.into_inner().profile.unwrap();
            if profile.event_counts.values().sum::<i64>() >= total {
                return profile;
            }
        }
        assert!(
            Instant::now() < deadline,
            "profile {lookup:?} never reached {total} events"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn counts_and_recently_viewed() {
    for mut running in backends().await {
        publish(
            &running.bus,
            vec![
                viewed("e1", "u1", "", "p1", 100),
                viewed("e2", "u1", "", "p2", 200),
                event(
                    "e3",
                    EventType::Track,
                    "u1",
                    "",
                    "Product Added",
                    210,
                    json!({"product_id": "p2", "price": 120.5}),
                ),
            ],
        )
        .await;
        let profile = profile_with(&mut running, Lookup::UserId("u1".to_owned()), 3).await;
        assert_eq!(profile.event_counts["Product Viewed"], 2);
        assert_eq!(profile.event_counts["Product Added"], 1);
        assert_eq!(profile.recently_viewed, ["p2", "p1"]);
        assert_eq!(profile.cart_value, 120.5);
        assert_eq!(profile.first_seen.unwrap().seconds, 100);
        assert_eq!(profile.last_seen.unwrap().seconds, 210);
    }
}

#[tokio::test]
async fn redelivered_event_counts_once() {
    for mut running in backends().await {
        publish(&running.bus, vec![viewed("same", "u2", "", "p1", 100)]).await;
        publish(
            &running.bus,
            vec![viewed("same", "u2", "", "p1", 100), viewed("next", "u2", "", "p3", 300)],
        )
        .await;
        let profile = profile_with(&mut running, Lookup::UserId("u2".to_owned()), 2).await;
        assert_eq!(
            profile.event_counts["Product Viewed"], 2,
            "the repeated event id is applied once"
        );
    }
}

#[tokio::test]
async fn identify_merges_anonymous_history() {
    for mut running in backends().await {
        publish(&running.bus, vec![viewed("a1", "", "anon-1", "p9", 100)]).await;
        profile_with(&mut running, Lookup::AnonymousId("anon-1".to_owned()), 1).await;
        publish(&running.bus, vec![viewed("u1", "u3", "", "p8", 150)]).await;
        profile_with(&mut running, Lookup::UserId("u3".to_owned()), 1).await;
        publish(
            &running.bus,
            vec![event("i1", EventType::Identify, "u3", "anon-1", "", 200, json!({}))],
        )
        .await;
        let profile = profile_with(&mut running, Lookup::UserId("u3".to_owned()), 3).await;
        assert_eq!(profile.event_counts["Product Viewed"], 2);
        assert_eq!(profile.event_counts["Identify"], 1);
        assert_eq!(profile.anonymous_ids, ["anon-1"]);
        let by_anonymous = profile_with(&mut running, Lookup::AnonymousId("anon-1".to_owned()), 3).await;
        assert_eq!(
            by_anonymous.profile_id, profile.profile_id,
            "both ids lead to one profile"
        );
    }
}

#[tokio::test]
async fn unknown_profile_is_not_found() {
    for mut running in backends().await {
        let status = running
            .client
            .get_profile(request(Lookup::UserId("nobody".to_owned())))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
    }
}

#[tokio::test]
async fn empty_lookup_is_invalid_argument() {
    for mut running in backends().await {
        let status = running
            .client
            .get_profile(request(Lookup::UserId(String::new())))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(rtim_runtime::errors::field_violations(&status)[0].field, "user_id");
    }
}

#[tokio::test]
async fn alias_merges_previous_user() {
    for mut running in backends().await {
        publish(&running.bus, vec![viewed("o1", "old-user", "", "p1", 100)]).await;
        profile_with(&mut running, Lookup::UserId("old-user".to_owned()), 1).await;
        publish(&running.bus, vec![viewed("n1", "new-user", "", "p2", 200)]).await;
        profile_with(&mut running, Lookup::UserId("new-user".to_owned()), 1).await;

        let mut alias = event("al1", EventType::Alias, "new-user", "", "", 300, json!({}));
        alias.previous_id = "old-user".to_owned();
        publish(&running.bus, vec![alias]).await;

        let merged = profile_with(&mut running, Lookup::UserId("new-user".to_owned()), 3).await;
        assert_eq!(
            merged.event_counts["Product Viewed"], 2,
            "both histories are in one profile"
        );
        assert_eq!(merged.event_counts["Alias"], 1);
        let by_previous = profile_with(&mut running, Lookup::UserId("old-user".to_owned()), 3).await;
        assert_eq!(
            by_previous.profile_id, merged.profile_id,
            "the previous id leads to the merged profile"
        );
    }
}

#[tokio::test]
async fn group_and_screen_reach_profile() {
    for mut running in backends().await {
        let mut screen = event("s1", EventType::Screen, "grouped", "", "", 100, json!({}));
        screen.name = "Cart".to_owned();
        let mut joined = event("g1", EventType::Group, "grouped", "", "", 200, json!({}));
        joined.group_id = "acme".to_owned();
        joined.traits = Some(json_to_struct(
            json!({"name": "Acme", "plan": "basic"}).as_object().unwrap().clone(),
        ));
        let mut upgraded = event("g2", EventType::Group, "grouped", "", "", 300, json!({}));
        upgraded.group_id = "acme".to_owned();
        upgraded.traits = Some(json_to_struct(
            json!({"plan": "enterprise"}).as_object().unwrap().clone(),
        ));
        publish(&running.bus, vec![screen, joined, upgraded]).await;

        let profile = profile_with(&mut running, Lookup::UserId("grouped".to_owned()), 3).await;
        assert_eq!(profile.event_counts["Screen Viewed"], 1, "screen calls");
        assert_eq!(profile.event_counts["Group"], 2, "group calls");
        let groups: Vec<_> = profile.groups.keys().cloned().collect();
        assert_eq!(groups, ["acme"], "group ids");
        assert_eq!(
            rtim_proto::json::struct_to_json(profile.groups.get("acme")),
            json!({"name": "Acme", "plan": "enterprise"}),
            "group traits merged over calls"
        );
    }
}
