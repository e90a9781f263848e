//! Long-window dedupe by message id and by order id, over real gRPC, on the
//! in-process bus and cache and on JetStream and Redis when their URLs are set.

mod harness;

use std::time::{Duration, Instant};

use harness::{KEY_A, KEY_B, Options, authorized, backends, counter, order_completed, start, stored_events, viewed};
use rtim_bus::OutgoingMessage;
use rtim_proto::ingestion::v1::{BatchRequest, TrackRequest, TrackResponse};
use tonic::Code;

async fn track(running: &mut harness::Running, key: &str, event: rtim_proto::events::v1::Event) -> TrackResponse {
    running
        .ingestion
        .track(authorized(TrackRequest { event: Some(event) }, key))
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn retried_batch_is_stored_once() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let mut timed = viewed("m-2", "u2");
        timed.timestamp = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        let events = vec![viewed("m-1", "u1"), timed, order_completed("m-3", "o-3")];

        let first = running
            .ingestion
            .batch(authorized(BatchRequest { events: events.clone() }, KEY_A))
            .await
            .unwrap()
            .into_inner();
        let retry = running
            .ingestion
            .batch(authorized(BatchRequest { events }, KEY_A))
            .await
            .unwrap()
            .into_inner();

        assert_eq!(first.accepted, 3, "{name}");
        assert!(first.results.iter().all(|result| !result.duplicate), "{name}");
        assert_eq!(retry.accepted, 3, "{name}");
        assert!(retry.results.iter().all(|result| result.duplicate), "{name}");
        let stored = stored_events(&running.bus, 3).await;
        let ids: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
        let tenant = &running.tenant_a;
        assert_eq!(
            ids,
            [
                format!("{tenant}:m-1"),
                format!("{tenant}:m-2"),
                format!("{tenant}:m-3")
            ],
            "{name}"
        );
        assert_eq!(
            counter("rtim_ingestion_duplicate_conflicts_total", tenant),
            0,
            "{name}: an exact retry is no conflict"
        );
        assert_eq!(counter("rtim_ingestion_duplicate_orders_total", tenant), 0, "{name}");
    }
}

#[tokio::test]
async fn retry_after_stream_window_is_caught_by_cache() {
    for backend in backends() {
        let options = Options {
            duplicate_window: Duration::from_secs(1),
            ..Options::default()
        };
        let mut running = start(&backend, options).await;
        let name = running.name;
        let first = track(&mut running, KEY_A, viewed("m-1", "u1")).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let retry = track(&mut running, KEY_A, viewed("m-1", "u1")).await;

        assert!(!first.duplicate, "{name}");
        assert!(retry.duplicate, "{name}");
        assert_eq!(stored_events(&running.bus, 1).await.len(), 1, "{name}");

        // The stream alone no longer remembers the id: the cache caught the retry.
        let subject = running.bus.events_subject(&running.tenant_a, "track").unwrap();
        let direct = running
            .bus
            .publish(OutgoingMessage {
                subject,
                message_id: format!("{}:m-1", running.tenant_a),
                tenant: running.tenant_a.clone(),
                payload: bytes::Bytes::from_static(b"raw"),
                trace: rtim_bus::TraceContext::default(),
            })
            .await
            .unwrap();
        assert!(!direct.duplicate, "{name}: the stream's window has passed");
    }
}

#[tokio::test]
async fn same_id_two_tenants_stored_twice() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let in_a = track(&mut running, KEY_A, viewed("m-1", "u1")).await;
        let in_b = track(&mut running, KEY_B, viewed("m-1", "u1")).await;
        let again_in_b = track(&mut running, KEY_B, viewed("m-1", "u1")).await;

        assert!(!in_a.duplicate, "{name}");
        assert!(!in_b.duplicate, "{name}");
        assert!(again_in_b.duplicate, "{name}");
        let stored = stored_events(&running.bus, 2).await;
        let ids: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [format!("{}:m-1", running.tenant_a), format!("{}:m-1", running.tenant_b)],
            "{name}"
        );
    }
}

#[tokio::test]
async fn order_id_sent_twice_is_counted_once() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let first = track(&mut running, KEY_A, order_completed("m-1", "o-1")).await;
        let second = track(&mut running, KEY_A, order_completed("m-2", "o-1")).await;
        let retry_of_second = track(&mut running, KEY_A, order_completed("m-2", "o-1")).await;
        let in_b = track(&mut running, KEY_B, order_completed("m-3", "o-1")).await;
        let batch = running
            .ingestion
            .batch(authorized(
                BatchRequest {
                    events: vec![order_completed("m-4", "o-2"), order_completed("m-5", "o-2")],
                },
                KEY_A,
            ))
            .await
            .unwrap()
            .into_inner();

        assert!(!first.duplicate, "{name}");
        assert!(second.duplicate, "{name}: same order under another message id");
        assert!(retry_of_second.duplicate, "{name}");
        assert!(!in_b.duplicate, "{name}: order ids are scoped per tenant");
        assert_eq!(batch.accepted, 2, "{name}");
        assert!(!batch.results[0].duplicate, "{name}");
        assert!(batch.results[1].duplicate, "{name}");
        let stored = stored_events(&running.bus, 3).await;
        let ids: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
        let (a, b) = (&running.tenant_a, &running.tenant_b);
        assert_eq!(
            ids,
            [format!("{a}:m-1"), format!("{b}:m-3"), format!("{a}:m-4")],
            "{name}"
        );
        assert_eq!(counter("rtim_ingestion_duplicate_orders_total", a), 2, "{name}");
        assert_eq!(counter("rtim_ingestion_duplicate_orders_total", b), 0, "{name}");
    }
}

#[tokio::test]
async fn conflicting_duplicate_is_counted() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        let tenant = running.tenant_a.clone();
        track(&mut running, KEY_A, viewed("m-1", "u1")).await;
        let conflicting = track(&mut running, KEY_A, viewed("m-1", "u2")).await;
        let exact_retry = track(&mut running, KEY_A, viewed("m-1", "u1")).await;

        assert!(conflicting.duplicate, "{name}");
        assert!(exact_retry.duplicate, "{name}");
        assert_eq!(
            counter("rtim_ingestion_duplicate_conflicts_total", &tenant),
            1,
            "{name}"
        );
        let stored = stored_events(&running.bus, 1).await;
        assert_eq!(stored.len(), 1, "{name}");
        let event = stored[0].1.event.as_ref().unwrap();
        assert_eq!(event.user_id, "u1", "{name}: the first content is kept");
    }
}

#[tokio::test]
async fn concurrent_requests_publish_once() {
    for backend in backends() {
        let running = start(&backend, Options::default()).await;
        let name = running.name;
        let calls = (0..16).map(|_| {
            let mut client = running.ingestion.clone();
            async move {
                client
                    .track(authorized(
                        TrackRequest {
                            event: Some(viewed("m-1", "u1")),
                        },
                        KEY_A,
                    ))
                    .await
                    .unwrap()
                    .into_inner()
            }
        });
        let responses = futures::future::join_all(calls).await;

        let fresh = responses.iter().filter(|response| !response.duplicate).count();
        assert_eq!(
            fresh, 1,
            "{name}: one request stores the event, the others are duplicates"
        );
        assert_eq!(stored_events(&running.bus, 1).await.len(), 1, "{name}");
    }
}

/// Another replica's pending claim, written straight into the cache.
async fn hold_claim(running: &harness::Running, value: &str, lease: Duration) {
    let key = format!("ingestion:dedupe:{}:m-1", running.tenant_a);
    running.cache.set(&key, value.as_bytes(), lease).await.unwrap();
}

#[tokio::test]
async fn pending_claim_of_another_replica_is_awaited() {
    for backend in backends() {
        let mut running = start(&backend, Options::default()).await;
        let name = running.name;
        hold_claim(&running, "pending:0", Duration::from_millis(600)).await;

        let started = Instant::now();
        let response = track(&mut running, KEY_A, viewed("m-1", "u1")).await;

        assert!(
            !response.duplicate,
            "{name}: the claim expired unsettled, so this request stores the event"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "{name}: {:?}",
            started.elapsed()
        );
        assert_eq!(stored_events(&running.bus, 1).await.len(), 1, "{name}");
    }
}

#[tokio::test]
async fn claim_stored_by_another_replica_is_duplicate() {
    for backend in backends() {
        let running = start(&backend, Options::default()).await;
        let name = running.name;
        hold_claim(&running, "pending:0", Duration::from_secs(30)).await;

        let settle = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            hold_claim(&running, "stored:0", Duration::from_secs(30)).await;
        };
        let mut client = running.ingestion.clone();
        let request = client.track(authorized(
            TrackRequest {
                event: Some(viewed("m-1", "u1")),
            },
            KEY_A,
        ));
        let (response, ()) = tokio::join!(request, settle);

        assert!(response.unwrap().into_inner().duplicate, "{name}");
        assert!(stored_events(&running.bus, 0).await.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn failed_publish_releases_claim() {
    for backend in backends() {
        // A tenant that cannot be a subject token makes every publish fail.
        let options = Options {
            tenant_a: Some("bad.tenant".to_owned()),
            ..Options::default()
        };
        let mut running = start(&backend, options).await;
        let name = running.name;
        for attempt in 0..2 {
            let status = running
                .ingestion
                .track(authorized(
                    TrackRequest {
                        event: Some(viewed("m-1", "u1")),
                    },
                    KEY_A,
                ))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::FailedPrecondition, "{name}: attempt {attempt}");
        }
        let claim = running.cache.get("ingestion:dedupe:bad.tenant:m-1").await.unwrap();
        assert_eq!(claim, None, "{name}: the claim was released");
    }
}

#[tokio::test]
async fn unavailable_cache_falls_back_to_stream_window() {
    for backend in backends() {
        // Nothing listens on port 1, so every cache call fails at once.
        let options = Options {
            cache_url: Some("redis://127.0.0.1:1".to_owned()),
            ..Options::default()
        };
        let mut running = start(&backend, options).await;
        let name = running.name;
        let first = track(&mut running, KEY_A, viewed("m-1", "u1")).await;
        let retry = track(&mut running, KEY_A, viewed("m-1", "u1")).await;

        assert!(!first.duplicate, "{name}");
        assert!(retry.duplicate, "{name}: the stream's window still drops it");
        assert_eq!(stored_events(&running.bus, 1).await.len(), 1, "{name}");
        assert_eq!(
            counter("rtim_ingestion_dedupe_unavailable_total", &running.tenant_a),
            2,
            "{name}"
        );
    }
}

#[tokio::test]
async fn publish_failure_on_jetstream_lets_retry_store() {
    let Ok(url) = std::env::var("RTIM_TEST_NATS_URL") else {
        eprintln!("skipping: RTIM_TEST_NATS_URL is not set");
        return;
    };
    let backend = backends().pop().unwrap();
    let mut running = start(&backend, Options::default()).await;
    let stream = format!("{}_EVENTS", running.bus.config().subject_prefix.to_uppercase());
    let jetstream = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    jetstream.delete_stream(&stream).await.unwrap();

    let status = running
        .ingestion
        .track(authorized(
            TrackRequest {
                event: Some(viewed("m-1", "u1")),
            },
            KEY_A,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);

    // Binding a consumer creates the stream again.
    running
        .bus
        .consumer("recreate", &running.bus.all_events_filter())
        .await
        .unwrap();
    let started = Instant::now();
    let retry = track(&mut running, KEY_A, viewed("m-1", "u1")).await;
    assert!(!retry.duplicate);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the failed attempt released its claim, so the retry did not wait for the lease: {:?}",
        started.elapsed()
    );
    let stored = stored_events(&running.bus, 1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, format!("{}:m-1", running.tenant_a));
}
