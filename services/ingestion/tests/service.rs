//! Ingestion over real gRPC, on the in-process bus and, when
//! `RTIM_TEST_NATS_URL` is set, on JetStream.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{KEY, READ_KEY, authorized, backends, backends_with, start, stored_count, stored_events, viewed};
use futures::StreamExt;
use prost_types::Timestamp;
use rtim_proto::events::v1::{Event, EventType, TimestampCorrection};
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::ingestion::v1::{
    AliasRequest, BatchRequest, EventOutcome, EventResult, FieldViolation, GroupRequest, ScreenRequest, StreamRequest,
    StreamResponse, TrackRequest,
};
use tonic::Code;
use tonic_types::StatusExt;

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

fn violation(field: &str, description: &str) -> FieldViolation {
    FieldViolation {
        field: field.to_owned(),
        description: description.to_owned(),
    }
}

fn with_properties(mut event: Event, properties: serde_json::Value) -> Event {
    let serde_json::Value::Object(properties) = properties else {
        panic!("properties must be an object");
    };
    event.properties = Some(rtim_proto::json::json_to_struct(properties));
    event
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
                KEY,
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
                KEY,
            ))
            .await
            .unwrap()
            .into_inner();
        let second = running
            .client
            .track(authorized(TrackRequest { event: Some(event) }, KEY))
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
                KEY,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let violations = rtim_runtime::errors::field_violations(&status);
        assert_eq!(violations[0].field, "event.user_id");
        let info = status.get_details_error_info().expect("an ErrorInfo detail");
        assert_eq!(info.reason, "MISSING_IDENTITY");
        assert_eq!(info.domain, "rtim.ingestion");
    }
}

#[tokio::test]
async fn batch_stores_valid_events_beside_bad_one() {
    for mut running in backends().await {
        let mut bad = viewed("u2");
        bad.timestamp = Some(Timestamp {
            seconds: 0,
            nanos: 2_000_000_000,
        });
        let events = vec![viewed("u1"), bad, viewed("u3")];
        let response = running
            .client
            .batch(authorized(BatchRequest { events }, KEY))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.accepted, 2);
        assert_eq!(response.rejected, 1);
        assert!(!response.results[1].accepted);
        assert_eq!(response.results[1].violations[0].field, "events[1].timestamp");
        let outcomes: Vec<_> = response.results.iter().map(EventResult::outcome).collect();
        assert_eq!(
            outcomes,
            [EventOutcome::Accepted, EventOutcome::Rejected, EventOutcome::Accepted]
        );
        assert_eq!(stored_count(&running.bus, 2).await, 2);
    }
}

#[tokio::test]
async fn batch_marks_retried_event_duplicate() {
    for mut running in backends().await {
        let event = Event {
            message_id: "order-7".to_owned(),
            ..viewed("u1")
        };
        let events = vec![event.clone(), event];
        let response = running
            .client
            .batch(authorized(BatchRequest { events }, KEY))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.accepted, 2, "{}", running.name);
        let result = &response.results[1];
        assert_eq!(result.outcome(), EventOutcome::Duplicate);
        assert!(result.accepted);
        assert!(result.duplicate);
        assert_eq!(result.message_id, "order-7");
        assert_eq!(stored_count(&running.bus, 1).await, 1);
    }
}

#[tokio::test]
async fn oversized_batch_names_limit() {
    for mut running in backends().await {
        let events = (0..11).map(|i| viewed(&format!("u{i}"))).collect();
        let status = running
            .client
            .batch(authorized(BatchRequest { events }, KEY))
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
                READ_KEY,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied);

        let status = running
            .client
            .stream(authorized(futures::stream::empty::<StreamRequest>(), READ_KEY))
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
        .batch(authorized(BatchRequest { events: vec![event] }, KEY))
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

#[tokio::test]
async fn screen_alias_and_group_are_stored() {
    for mut running in backends().await {
        let screen = Event {
            anonymous_id: "a1".to_owned(),
            name: "Checkout".to_owned(),
            ..Event::default()
        };
        let alias = Event {
            user_id: "u1".to_owned(),
            previous_id: "a1".to_owned(),
            ..Event::default()
        };
        let group = Event {
            user_id: "u1".to_owned(),
            group_id: "acme-corp".to_owned(),
            ..Event::default()
        };
        let client = &mut running.client;
        let screen_id = client
            .screen(authorized(ScreenRequest { event: Some(screen) }, KEY))
            .await
            .unwrap()
            .into_inner()
            .message_id;
        let alias_id = client
            .alias(authorized(AliasRequest { event: Some(alias) }, KEY))
            .await
            .unwrap()
            .into_inner()
            .message_id;
        let group_id = client
            .group(authorized(GroupRequest { event: Some(group) }, KEY))
            .await
            .unwrap()
            .into_inner()
            .message_id;

        let stored = stored_events(&running.bus, 3).await;
        let summary: Vec<(String, EventType)> = stored
            .iter()
            .map(|event| (event.message_id.clone(), event.r#type()))
            .collect();
        assert_eq!(
            summary,
            [
                (screen_id, EventType::Screen),
                (alias_id, EventType::Alias),
                (group_id, EventType::Group),
            ],
            "{}",
            running.name
        );
        assert_eq!(stored[0].name, "Checkout");
        assert_eq!(stored[1].previous_id, "a1");
        assert_eq!(stored[2].group_id, "acme-corp");
    }
}

#[tokio::test]
async fn alias_and_group_name_required_fields() {
    for mut running in backends().await {
        let alias = Event {
            anonymous_id: "a1".to_owned(),
            ..Event::default()
        };
        let status = running
            .client
            .alias(authorized(AliasRequest { event: Some(alias) }, KEY))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = rtim_runtime::errors::field_violations(&status)
            .into_iter()
            .map(|violation| violation.field)
            .collect();
        assert_eq!(fields, ["event.user_id", "event.previous_id"]);
        assert_eq!(status.get_details_error_info().unwrap().reason, "INVALID_FIELD");

        let group = Event {
            user_id: "u1".to_owned(),
            ..Event::default()
        };
        let status = running
            .client
            .group(authorized(GroupRequest { event: Some(group) }, KEY))
            .await
            .unwrap_err();
        assert_eq!(status.message(), "invalid event.group_id: group events need group_id");
        assert_eq!(stored_count(&running.bus, 0).await, 0);
    }
}

#[tokio::test]
async fn batch_corrects_timestamps() {
    for mut running in backends().await {
        let now = now_seconds();
        let client_time = Timestamp {
            seconds: 1_772_359_200,
            nanos: 250_000_000,
        };
        let skewed = Event {
            message_id: "skewed".to_owned(),
            timestamp: Some(client_time),
            sent_at: Some(Timestamp {
                seconds: 1_772_359_205,
                nanos: 0,
            }),
            ..viewed("u1")
        };
        let far_future = Timestamp {
            seconds: now + 48 * 3600,
            nanos: 0,
        };
        let future = Event {
            message_id: "future".to_owned(),
            timestamp: Some(far_future),
            ..viewed("u1")
        };
        let missing = Event {
            message_id: "missing".to_owned(),
            ..viewed("u1")
        };
        let unchanged = Event {
            message_id: "unchanged".to_owned(),
            timestamp: Some(client_time),
            ..viewed("u1")
        };
        let events = vec![skewed, future, missing, unchanged];
        let response = running
            .client
            .batch(authorized(BatchRequest { events }, KEY))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.accepted, 4, "{}", running.name);

        let stored = stored_events(&running.bus, 4).await;
        let received_at = stored[0].received_at.expect("received_at is set");
        assert!((received_at.seconds - now).abs() <= 5, "received now: {received_at:?}");
        for event in &stored {
            assert_eq!(event.received_at, Some(received_at), "one receive time per call");
        }

        // timestamp = received_at - (sent_at - original_timestamp): 4.75 s before received_at.
        let (seconds, nanos) = if received_at.nanos >= 750_000_000 {
            (received_at.seconds - 4, received_at.nanos - 750_000_000)
        } else {
            (received_at.seconds - 5, received_at.nanos + 250_000_000)
        };
        assert_eq!(stored[0].original_timestamp, Some(client_time));
        assert_eq!(stored[0].timestamp, Some(Timestamp { seconds, nanos }));
        assert_eq!(stored[0].timestamp_correction(), TimestampCorrection::Skew);

        assert_eq!(stored[1].original_timestamp, Some(far_future));
        assert_eq!(stored[1].timestamp, Some(received_at));
        assert_eq!(stored[1].timestamp_correction(), TimestampCorrection::Future);

        assert_eq!(stored[2].original_timestamp, None);
        assert_eq!(stored[2].timestamp, Some(received_at));
        assert_eq!(stored[2].timestamp_correction(), TimestampCorrection::Missing);

        assert_eq!(stored[3].original_timestamp, Some(client_time));
        assert_eq!(stored[3].timestamp, Some(client_time));
        assert_eq!(stored[3].timestamp_correction(), TimestampCorrection::None);
    }
}

#[tokio::test]
async fn max_future_comes_from_settings() {
    let configure = |settings: &mut rtim_runtime::Settings| settings.ingestion.max_future = Duration::from_secs(3600);
    for mut running in backends_with(configure).await {
        let now = now_seconds();
        let later = |seconds: i64, id: &str| Event {
            message_id: id.to_owned(),
            timestamp: Some(Timestamp {
                seconds: now + seconds,
                nanos: 0,
            }),
            ..viewed("u1")
        };
        let events = vec![later(2 * 3600, "two-hours"), later(1800, "half-hour")];
        running
            .client
            .batch(authorized(BatchRequest { events }, KEY))
            .await
            .unwrap();
        let stored = stored_events(&running.bus, 2).await;
        assert_eq!(stored[0].timestamp_correction(), TimestampCorrection::Future);
        assert_eq!(stored[0].timestamp, stored[0].received_at);
        assert_eq!(stored[1].timestamp_correction(), TimestampCorrection::None);
        assert_eq!(
            stored[1].timestamp,
            Some(Timestamp {
                seconds: now + 1800,
                nanos: 0
            })
        );
    }
}

#[tokio::test]
async fn nul_and_oversized_events_rejected_alone() {
    for mut running in backends().await {
        let nul = with_properties(viewed("u2"), serde_json::json!({"query": "shoes\u{0}"}));
        // 2 bytes of type, 4 of user_id, 16 of event and 1 + 3 + 40000 of name.
        let oversized = Event {
            name: "x".repeat(40_000),
            ..viewed("u3")
        };
        let events = vec![viewed("u1"), nul, oversized, viewed("u4")];
        let response = running
            .client
            .batch(authorized(BatchRequest { events }, KEY))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((response.accepted, response.rejected), (2, 2), "{}", running.name);

        let nul = &response.results[1];
        assert_eq!(nul.outcome(), EventOutcome::Rejected);
        assert_eq!(nul.reason, "INVALID_FIELD");
        assert_eq!(
            nul.violations,
            [violation(
                "events[1].properties.query",
                "value contains the control character U+0000 (NUL)"
            )]
        );
        let oversized = &response.results[2];
        assert_eq!(oversized.reason, "EVENT_TOO_LARGE");
        assert_eq!(
            oversized.violations,
            [violation(
                "events[2]",
                "event is 40026 bytes encoded, over the limit of 32768 bytes (ingestion.max_event_bytes)"
            )]
        );

        let users: Vec<String> = stored_events(&running.bus, 2)
            .await
            .into_iter()
            .map(|event| event.user_id)
            .collect();
        assert_eq!(users, ["u1", "u4"]);
    }
}

#[tokio::test]
async fn max_event_bytes_comes_from_settings() {
    let configure = |settings: &mut rtim_runtime::Settings| settings.ingestion.max_event_bytes = 100;
    for mut running in backends_with(configure).await {
        let event = Event {
            name: "x".repeat(80),
            ..viewed("u1")
        };
        let status = running
            .client
            .track(authorized(TrackRequest { event: Some(event) }, KEY))
            .await
            .unwrap_err();
        assert_eq!(
            status.message(),
            "invalid event: event is 104 bytes encoded, over the limit of 100 bytes (ingestion.max_event_bytes)"
        );
        assert_eq!(status.get_details_error_info().unwrap().reason, "EVENT_TOO_LARGE");
    }
}

#[tokio::test]
async fn reserved_property_types_are_checked() {
    for mut running in backends().await {
        let event = with_properties(
            Event {
                event: "Order Completed".to_owned(),
                ..viewed("u1")
            },
            serde_json::json!({
                "order_id": 50_314,
                "total": 27.5,
                "revenue": "25.00",
                "products": [{"product_id": "507f1f77", "quantity": "2"}],
            }),
        );
        let status = running
            .client
            .track(authorized(TrackRequest { event: Some(event) }, KEY))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let violations = rtim_runtime::errors::field_violations(&status);
        let found: Vec<(&str, &str)> = violations
            .iter()
            .map(|violation| (violation.field.as_str(), violation.description.as_str()))
            .collect();
        assert_eq!(
            found,
            [
                ("event.properties.revenue", "must be a number, got a string"),
                (
                    "event.properties.products[0].quantity",
                    "must be a number, got a string"
                ),
            ]
        );
        assert_eq!(stored_count(&running.bus, 0).await, 0);
    }
}

/// Messages with the field numbers of `Event` and `TrackRequest` whose
/// strings are bytes, so that a test can send what no protobuf library
/// encodes: a string that is not UTF-8.
mod raw {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        #[prost(int32, tag = "2")]
        pub r#type: i32,
        #[prost(bytes = "vec", tag = "3")]
        pub user_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "5")]
        pub event: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrackRequest {
        #[prost(message, optional, tag = "1")]
        pub event: Option<Event>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StreamRequest {
        #[prost(uint64, tag = "1")]
        pub sequence: u64,
        #[prost(message, repeated, tag = "2")]
        pub events: Vec<Event>,
    }

    pub fn track(user_id: &[u8]) -> Event {
        Event {
            r#type: 1,
            user_id: user_id.to_vec(),
            event: b"Product Viewed".to_vec(),
        }
    }
}

const NOT_UTF8: &[u8] = b"caf\xe9";

#[tokio::test]
async fn invalid_utf8_is_invalid_argument() {
    for running in backends().await {
        let mut grpc = tonic::client::Grpc::new(running.channel.clone());
        grpc.ready().await.unwrap();
        let request = raw::TrackRequest {
            event: Some(raw::track(NOT_UTF8)),
        };
        let status = grpc
            .unary::<_, rtim_proto::ingestion::v1::TrackResponse, _>(
                authorized(request, KEY),
                http::uri::PathAndQuery::from_static("/rtim.ingestion.v1.IngestionService/Track"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(
            status.message(),
            "invalid request: the message is not valid protobuf (Event.user_id: TrackRequest.event: invalid \
             string value: data is not UTF-8 encoded); string fields must hold valid UTF-8"
        );
        assert_eq!(status.get_details_error_info().unwrap().reason, "UNDECODABLE_MESSAGE");
        assert_eq!(stored_count(&running.bus, 0).await, 0);
    }
}

fn stream_request(sequence: u64, events: Vec<Event>) -> StreamRequest {
    StreamRequest { sequence, events }
}

/// Reads the response stream to its end: the responses, then the final
/// status (`Ok` when the stream ended cleanly).
async fn read_all(mut responses: tonic::Streaming<StreamResponse>) -> (Vec<StreamResponse>, Result<(), tonic::Status>) {
    let mut received = Vec::new();
    loop {
        match responses.message().await {
            Ok(Some(response)) => received.push(response),
            Ok(None) => return (received, Ok(())),
            Err(status) => return (received, Err(status)),
        }
    }
}

fn outcomes(response: &StreamResponse) -> Vec<(i32, EventOutcome, String)> {
    response
        .results
        .iter()
        .map(|result| (result.index, result.outcome(), result.reason.clone()))
        .collect()
}

#[tokio::test]
async fn stream_acknowledges_each_event() {
    for mut running in backends().await {
        let first = Event {
            message_id: "s-1".to_owned(),
            ..viewed("u1")
        };
        let second = Event {
            message_id: "s-2".to_owned(),
            ..viewed("u2")
        };
        let screen = Event {
            r#type: EventType::Screen as i32,
            anonymous_id: "a1".to_owned(),
            ..Event::default()
        };
        let untyped = Event {
            user_id: "u3".to_owned(),
            ..Event::default()
        };
        let requests = vec![
            stream_request(10, vec![first.clone(), viewed(""), second]),
            stream_request(11, vec![screen, untyped]),
            stream_request(12, vec![first]),
        ];
        let responses = running
            .client
            .stream(authorized(futures::stream::iter(requests), KEY))
            .await
            .unwrap()
            .into_inner();
        let (responses, end) = read_all(responses).await;
        assert!(end.is_ok(), "{}: {end:?}", running.name);

        let sequences: Vec<u64> = responses.iter().map(|response| response.sequence).collect();
        assert_eq!(sequences, [10, 11, 12]);
        let accepted = || (EventOutcome::Accepted, String::new());
        let expected_first = [
            (0, accepted().0, accepted().1),
            (1, EventOutcome::Rejected, "MISSING_IDENTITY".to_owned()),
            (2, accepted().0, accepted().1),
        ];
        assert_eq!(outcomes(&responses[0]), expected_first);
        assert_eq!(responses[0].results[0].message_id, "s-1");
        assert_eq!(responses[0].results[2].message_id, "s-2");
        assert_eq!(
            responses[0].results[1].violations,
            [violation(
                "events[1].user_id",
                "either user_id or anonymous_id is required"
            )]
        );
        assert_eq!(
            outcomes(&responses[1]),
            [
                (0, EventOutcome::Accepted, String::new()),
                (1, EventOutcome::Rejected, "INVALID_FIELD".to_owned()),
            ]
        );
        assert_eq!(responses[1].results[0].message_id.len(), 36, "a UUID is assigned");
        assert_eq!(responses[1].results[1].violations[0].field, "events[1].type");
        assert_eq!(outcomes(&responses[2]), [(0, EventOutcome::Duplicate, String::new())]);
        assert_eq!(responses[2].results[0].message_id, "s-1");

        assert_eq!(stored_count(&running.bus, 3).await, 3);
    }
}

#[tokio::test]
async fn stream_keeps_order_across_many_requests() {
    let configure = |settings: &mut rtim_runtime::Settings| settings.ingestion.stream_window = 16;
    for mut running in backends_with(configure).await {
        let requests = (0..300u64).map(|sequence| {
            let events = (0..=(sequence % 3))
                .map(|index| Event {
                    message_id: format!("e-{sequence}-{index}"),
                    ..viewed("u1")
                })
                .collect();
            stream_request(sequence, events)
        });
        let responses = running
            .client
            .stream(authorized(futures::stream::iter(requests), KEY))
            .await
            .unwrap()
            .into_inner();
        let (responses, end) = read_all(responses).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(responses.len(), 300, "{}", running.name);
        for (sequence, response) in responses.iter().enumerate() {
            assert_eq!(response.sequence, sequence as u64);
            let ids: Vec<String> = response
                .results
                .iter()
                .map(|result| result.message_id.clone())
                .collect();
            let expected: Vec<String> = (0..=(sequence % 3))
                .map(|index| format!("e-{sequence}-{index}"))
                .collect();
            assert_eq!(ids, expected);
            assert!(
                response
                    .results
                    .iter()
                    .all(|result| result.outcome() == EventOutcome::Accepted)
            );
        }
        assert_eq!(stored_count(&running.bus, 600).await, 600);
    }
}

#[tokio::test]
async fn stream_request_over_window_ends_stream() {
    let configure = |settings: &mut rtim_runtime::Settings| settings.ingestion.stream_window = 4;
    for mut running in backends_with(configure).await {
        let requests = vec![
            stream_request(1, vec![viewed("u1"), viewed("u2")]),
            stream_request(2, (0..5).map(|_| viewed("u3")).collect()),
            stream_request(3, vec![viewed("u4")]),
        ];
        let responses = running
            .client
            .stream(authorized(futures::stream::iter(requests), KEY))
            .await
            .unwrap()
            .into_inner();
        let (responses, end) = read_all(responses).await;
        assert_eq!(responses.len(), 1, "{}", running.name);
        assert_eq!(responses[0].sequence, 1);
        assert_eq!(responses[0].results.len(), 2);
        let status = end.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid events: request 2 holds 5 events, more than the stream window of 4 (ingestion.stream_window)"
        );
        assert_eq!(stored_count(&running.bus, 2).await, 2);
    }
}

#[tokio::test]
async fn stream_empty_request_ends_stream() {
    for mut running in backends().await {
        let requests = vec![stream_request(1, vec![viewed("u1")]), stream_request(2, Vec::new())];
        let responses = running
            .client
            .stream(authorized(futures::stream::iter(requests), KEY))
            .await
            .unwrap()
            .into_inner();
        let (responses, end) = read_all(responses).await;
        assert_eq!(responses.len(), 1);
        assert_eq!(
            end.unwrap_err().message(),
            "invalid events: request 2 holds no events; send at least one"
        );
    }
}

#[tokio::test]
async fn stream_invalid_utf8_ends_stream() {
    for running in backends().await {
        let mut grpc = tonic::client::Grpc::new(running.channel.clone());
        grpc.ready().await.unwrap();
        let requests = vec![
            raw::StreamRequest {
                sequence: 1,
                events: vec![raw::track(b"u1")],
            },
            raw::StreamRequest {
                sequence: 2,
                events: vec![raw::track(b"u2"), raw::track(NOT_UTF8)],
            },
        ];
        let responses = grpc
            .streaming::<_, raw::StreamRequest, StreamResponse, _>(
                authorized(futures::stream::iter(requests), KEY),
                http::uri::PathAndQuery::from_static("/rtim.ingestion.v1.IngestionService/Stream"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap()
            .into_inner();
        let (responses, end) = read_all(responses).await;
        assert_eq!(responses.len(), 1, "{}", running.name);
        assert_eq!(outcomes(&responses[0]), [(0, EventOutcome::Accepted, String::new())]);
        let status = end.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "invalid request: the message is not valid protobuf (Event.user_id: StreamRequest.events: invalid \
             string value: data is not UTF-8 encoded); string fields must hold valid UTF-8"
        );
        assert_eq!(stored_count(&running.bus, 1).await, 1, "nothing of request 2 is stored");
    }
}

#[tokio::test]
async fn stream_ends_unavailable_on_shutdown() {
    for mut running in backends().await {
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        let mut responses = running
            .client
            .stream(authorized(tokio_stream::wrappers::ReceiverStream::new(receiver), KEY))
            .await
            .unwrap()
            .into_inner();
        sender.send(stream_request(1, vec![viewed("u1")])).await.unwrap();
        let first = responses.message().await.unwrap().unwrap();
        assert_eq!(outcomes(&first), [(0, EventOutcome::Accepted, String::new())]);

        running.shutdown.cancel();
        let (rest, end) = read_all(responses).await;
        assert!(rest.is_empty(), "{rest:?}");
        let status = end.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{}: {status:?}", running.name);
        assert_eq!(
            status.message(),
            "ingestion is shutting down; open a new stream and resend what was not acknowledged"
        );
        drop(sender);
    }
}

/// Waits until `counter` has not changed for one second and returns its
/// value, or panics after 60 s.
async fn settled(counter: &AtomicUsize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = counter.load(Ordering::SeqCst);
    let mut unchanged_since = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.load(Ordering::SeqCst);
        if now != last {
            last = now;
            unchanged_since = tokio::time::Instant::now();
        } else if unchanged_since.elapsed() >= Duration::from_secs(1) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the count kept changing for 60 s"
        );
    }
}

#[tokio::test]
async fn slow_reader_holds_sender_back() {
    const WINDOW: usize = 32;
    const REQUESTS: usize = 1000;
    let configure = |settings: &mut rtim_runtime::Settings| settings.ingestion.stream_window = WINDOW;
    for running in backends_with(configure).await {
        // A small receive window on the client, so that unread responses
        // push back on the server soon.
        let channel = running
            .endpoint
            .clone()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect_lazy();
        let mut client = IngestionServiceClient::new(channel);
        let pulled = Arc::new(AtomicUsize::new(0));
        let requests = {
            let pulled = pulled.clone();
            futures::stream::iter(0..REQUESTS).map(move |sequence| {
                pulled.fetch_add(1, Ordering::SeqCst);
                let events = (0..WINDOW)
                    .map(|_| with_properties(viewed("u1"), serde_json::json!({"note": "n".repeat(200)})))
                    .collect();
                stream_request(sequence as u64, events)
            })
        };
        let responses = client.stream(authorized(requests, KEY)).await.unwrap().into_inner();

        let read_while_unanswered = settled(&pulled).await;
        assert!(
            read_while_unanswered < REQUESTS / 2,
            "{}: the client sent {read_while_unanswered} of {REQUESTS} requests while nobody read a response",
            running.name
        );

        let (responses, end) = read_all(responses).await;
        assert!(end.is_ok(), "{end:?}");
        assert_eq!(responses.len(), REQUESTS);
        assert!(
            responses
                .iter()
                .enumerate()
                .all(|(sequence, response)| response.sequence == sequence as u64
                    && response.results.iter().all(|result| result.accepted))
        );
        assert_eq!(stored_count(&running.bus, REQUESTS * WINDOW).await, REQUESTS * WINDOW);
    }
}
