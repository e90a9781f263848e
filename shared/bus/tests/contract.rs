//! One contract for both bus adapters: the in-process bus always, JetStream
//! when `RTIM_TEST_NATS_URL` is set, each test on its own subject prefix.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use rtim_bus::worker::{self, BatchHandler, Incoming, WorkerOptions};
use rtim_bus::{Bus, BusConfig, BusError, OutgoingMessage};
use rtim_proto::bus::v1::DeadLetter;
use tokio_util::sync::CancellationToken;

async fn buses() -> Vec<(&'static str, Bus)> {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let config = BusConfig {
        url: "memory".to_owned(),
        subject_prefix: prefix.clone(),
        max_deliver: 5,
        ack_wait: Duration::from_millis(500),
        publish_timeout: Duration::from_secs(5),
        // JetStream reserves the whole size on disk for every stream a test creates.
        dead_letter_max_bytes: 1024 * 1024,
        ..BusConfig::default()
    };
    let mut buses = vec![("memory", Bus::connect(&config).await.unwrap())];
    if let Ok(url) = std::env::var("RTIM_TEST_NATS_URL") {
        let config = BusConfig { url, ..config };
        buses.push(("nats", Bus::connect(&config).await.unwrap()));
    }
    buses
}

fn message(bus: &Bus, tenant: &str, id: &str) -> OutgoingMessage {
    OutgoingMessage {
        subject: bus.events_subject(tenant, "track").unwrap(),
        message_id: format!("{tenant}:{id}"),
        tenant: tenant.to_owned(),
        payload: Bytes::from(id.to_owned()),
        trace: rtim_bus::TraceContext::default(),
    }
}

async fn next(consumer: &mut rtim_bus::Consumer, max: usize) -> Vec<rtim_bus::Delivery> {
    tokio::time::timeout(Duration::from_secs(10), consumer.next_batch(max))
        .await
        .expect("a delivery within 10 s")
        .unwrap()
}

#[tokio::test]
async fn published_messages_arrive_in_order() {
    for (name, bus) in buses().await {
        let acks = bus
            .publish_many(vec![message(&bus, "acme", "1"), message(&bus, "acme", "2")])
            .await;
        assert!(acks.iter().all(|ack| ack.is_ok()), "{name}: {acks:?}");
        let mut consumer = bus.consumer("reader", &bus.all_events_filter()).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            for delivery in next(&mut consumer, 10).await {
                assert_eq!(delivery.tenant, "acme", "{name}");
                seen.push(String::from_utf8(delivery.payload.to_vec()).unwrap());
                delivery.ack().await.unwrap();
            }
        }
        assert_eq!(seen, ["1", "2"], "{name}");
    }
}

#[tokio::test]
async fn duplicate_message_id_is_stored_once() {
    for (name, bus) in buses().await {
        let first = bus.publish(message(&bus, "acme", "same")).await.unwrap();
        let second = bus.publish(message(&bus, "acme", "same")).await.unwrap();
        assert!(!first.duplicate, "{name}");
        assert!(second.duplicate, "{name}");
        assert_eq!(first.sequence, second.sequence, "{name}");
    }
}

#[tokio::test]
async fn unacknowledged_message_is_redelivered() {
    for (name, bus) in buses().await {
        bus.publish(message(&bus, "acme", "again")).await.unwrap();
        let mut consumer = bus.consumer("redeliver", &bus.all_events_filter()).await.unwrap();
        let first = next(&mut consumer, 1).await;
        assert_eq!(first[0].delivered, 1, "{name}");
        drop(first);
        let second = next(&mut consumer, 1).await;
        assert_eq!(second[0].message_id, "acme:again", "{name}");
        assert_eq!(second[0].delivered, 2, "{name}");
        second[0].ack().await.unwrap();
    }
}

#[tokio::test]
async fn durable_consumer_resumes_after_acked() {
    for (name, bus) in buses().await {
        bus.publish(message(&bus, "acme", "a")).await.unwrap();
        {
            let mut consumer = bus.consumer("resume", &bus.all_events_filter()).await.unwrap();
            for delivery in next(&mut consumer, 10).await {
                delivery.ack().await.unwrap();
            }
        }
        bus.publish(message(&bus, "acme", "b")).await.unwrap();
        let mut consumer = bus.consumer("resume", &bus.all_events_filter()).await.unwrap();
        let batch = next(&mut consumer, 10).await;
        assert_eq!(batch.len(), 1, "{name}");
        assert_eq!(batch[0].message_id, "acme:b", "{name}");
        batch[0].ack().await.unwrap();
    }
}

#[tokio::test]
async fn invalid_tenant_token_is_rejected() {
    for (name, bus) in buses().await {
        let error = bus.events_subject("a.b", "track").unwrap_err();
        assert!(error.to_string().contains("'a.b'"), "{name}: {error}");
    }
}

#[tokio::test]
async fn trace_context_travels_with_message() {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let trace = rtim_bus::TraceContext::from_headers(|name| (name == "traceparent").then_some(traceparent));
    for (name, bus) in buses().await {
        let mut traced = message(&bus, "acme", "traced");
        traced.trace = trace.clone();
        bus.publish_many(vec![traced, message(&bus, "acme", "untraced")]).await;
        let mut consumer = bus.consumer("trace", &bus.all_events_filter()).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            for delivery in next(&mut consumer, 10).await {
                seen.push((delivery.message_id.clone(), delivery.trace.clone()));
                delivery.ack().await.unwrap();
            }
        }
        assert_eq!(seen[0].0, "acme:traced", "{name}");
        assert_eq!(
            seen[0].1.traceparent(),
            Some(traceparent),
            "{name}: traceparent delivered"
        );
        // No subscriber in this test, so the bus has no span context to add.
        assert!(seen[1].1.is_empty(), "{name}: no context invented");
    }
}

/// Polls the consumer's lag until `done` holds, for up to 10 s.
async fn lag_until(probe: &rtim_bus::LagProbe, done: impl Fn(rtim_bus::Lag) -> bool) -> rtim_bus::Lag {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lag = probe.lag().await.unwrap();
        if done(lag) || std::time::Instant::now() > deadline {
            return lag;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn letter(tenant: &str, reason: &str) -> DeadLetter {
    DeadLetter {
        tenant_id: tenant.to_owned(),
        reason: reason.to_owned(),
        error: format!("{tenant} {reason}"),
        ..DeadLetter::default()
    }
}

#[tokio::test]
async fn dead_letters_are_kept_per_tenant() {
    for (name, bus) in buses().await {
        let letters = [
            letter("acme", "MISSING_IDENTITY"),
            letter("globex", "INVALID_FIELD"),
            letter("acme", "CONSUMER_FAILED"),
        ];
        let sequences: Vec<u64> = bus
            .publish_dead_letters(&letters)
            .await
            .into_iter()
            .map(|result| result.unwrap())
            .collect();
        assert!(
            sequences[0] < sequences[1] && sequences[1] < sequences[2],
            "{name}: {sequences:?}"
        );

        let acme = bus.dead_letters("acme", 1, 10).await.unwrap();
        let reasons: Vec<&str> = acme.iter().map(|entry| entry.letter.reason.as_str()).collect();
        assert_eq!(reasons, ["MISSING_IDENTITY", "CONSUMER_FAILED"], "{name}");
        assert_eq!(acme[0].sequence, sequences[0], "{name}");
        assert_eq!(acme[1].letter, letters[2], "{name}");
        assert_eq!(bus.dead_letters("globex", 1, 10).await.unwrap().len(), 1, "{name}");
        assert!(bus.dead_letters("initech", 1, 10).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn dead_letters_page_from_a_sequence() {
    for (name, bus) in buses().await {
        let letters: Vec<DeadLetter> = (0..5).map(|i| letter("acme", &format!("R{i}"))).collect();
        let sequences: Vec<u64> = bus
            .publish_dead_letters(&letters)
            .await
            .into_iter()
            .map(|result| result.unwrap())
            .collect();
        let page = bus.dead_letters("acme", sequences[1], 2).await.unwrap();
        let reasons: Vec<&str> = page.iter().map(|entry| entry.letter.reason.as_str()).collect();
        assert_eq!(reasons, ["R1", "R2"], "{name}");
        let rest = bus.dead_letters("acme", sequences[3], 10).await.unwrap();
        assert_eq!(rest.len(), 2, "{name}: fewer than asked means the end");
    }
}

#[tokio::test]
async fn dead_letter_access_per_tenant() {
    for (name, bus) in buses().await {
        let sequence = bus
            .publish_dead_letters(&[letter("acme", "INVALID_FIELD")])
            .await
            .pop()
            .unwrap()
            .unwrap();
        assert_eq!(bus.dead_letter("globex", sequence).await.unwrap(), None, "{name}");
        assert!(!bus.delete_dead_letter("globex", sequence).await.unwrap(), "{name}");
        let entry = bus
            .dead_letter("acme", sequence)
            .await
            .unwrap()
            .expect("acme reads its entry");
        assert_eq!(entry.letter.reason, "INVALID_FIELD", "{name}");

        assert!(bus.delete_dead_letter("acme", sequence).await.unwrap(), "{name}");
        assert!(!bus.delete_dead_letter("acme", sequence).await.unwrap(), "{name}");
        assert_eq!(bus.dead_letter("acme", sequence).await.unwrap(), None, "{name}");
        assert!(bus.dead_letters("acme", 1, 10).await.unwrap().is_empty(), "{name}");
    }
}

#[tokio::test]
async fn dead_letter_with_invalid_tenant_is_rejected() {
    for (name, bus) in buses().await {
        let result = bus
            .publish_dead_letters(&[letter("a.b", "INVALID_FIELD")])
            .await
            .pop()
            .unwrap();
        assert!(matches!(result, Err(BusError::InvalidToken(_))), "{name}: {result:?}");
    }
}

#[tokio::test]
async fn memory_dead_letters_drop_oldest_beyond_max_bytes() {
    let one = letter("acme", "R0").encoded_len() as i64;
    let bus = Bus::connect(&BusConfig {
        subject_prefix: format!("t{}", uuid::Uuid::new_v4().simple()),
        dead_letter_max_bytes: 2 * one,
        ..BusConfig::default()
    })
    .await
    .unwrap();
    let letters: Vec<DeadLetter> = (0..3).map(|i| letter("acme", &format!("R{i}"))).collect();
    for result in bus.publish_dead_letters(&letters).await {
        result.unwrap();
    }
    let kept = bus.dead_letters("acme", 1, 10).await.unwrap();
    let reasons: Vec<&str> = kept.iter().map(|entry| entry.letter.reason.as_str()).collect();
    assert_eq!(reasons, ["R1", "R2"]);
}

struct Failing {
    calls: Arc<AtomicUsize>,
}

impl BatchHandler for Failing {
    async fn handle(&self, _batch: &[Incoming]) -> anyhow::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        anyhow::bail!("handler always fails")
    }
}

async fn wait_for_dead_letters(bus: &Bus, tenant: &str, expected: usize) -> Vec<rtim_bus::DeadLetterEntry> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let entries = bus.dead_letters(tenant, 1, 100).await.unwrap();
        if entries.len() >= expected || tokio::time::Instant::now() > deadline {
            return entries;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lag_counts_undelivered_and_unacknowledged() {
    for (name, bus) in buses().await {
        let mut consumer = bus.consumer("lag", &bus.all_events_filter()).await.unwrap();
        let probe = consumer.lag_probe();
        assert_eq!(
            probe.lag().await.unwrap(),
            rtim_bus::Lag::default(),
            "{name}: empty stream"
        );

        let messages = (1..=3).map(|id| message(&bus, "acme", &id.to_string())).collect();
        bus.publish_many(messages).await;
        // JetStream may hand messages to the client's pull before they are
        // asked for, which moves them from pending to ack pending.
        let lag = lag_until(&probe, |lag| lag.pending + lag.ack_pending == 3).await;
        assert_eq!(lag.pending + lag.ack_pending, 3, "{name}: {lag:?}");

        let mut received = Vec::new();
        while received.len() < 3 {
            received.extend(next(&mut consumer, 10).await);
        }
        let lag = lag_until(&probe, |lag| {
            lag == rtim_bus::Lag {
                pending: 0,
                ack_pending: 3,
            }
        })
        .await;
        assert_eq!(
            lag,
            rtim_bus::Lag {
                pending: 0,
                ack_pending: 3
            },
            "{name}: received, not acknowledged"
        );

        for delivery in received {
            delivery.ack().await.unwrap();
        }
        let lag = lag_until(&probe, |lag| lag == rtim_bus::Lag::default()).await;
        assert_eq!(lag, rtim_bus::Lag::default(), "{name}: all acknowledged");
    }
}

#[tokio::test]
async fn worker_dead_letters_undecodable_message() {
    for (name, bus) in buses().await {
        let mut garbage = message(&bus, "acme", "garbage");
        garbage.payload = Bytes::from_static(&[0xff, 0xff, 0xff]);
        bus.publish(garbage).await.unwrap();
        let consumer = bus.consumer("undecodable", &bus.all_events_filter()).await.unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        let options = WorkerOptions {
            name: "undecodable".to_owned(),
            max_batch: 10,
            retry_delay: Duration::from_millis(20),
        };
        let handler = Failing { calls: calls.clone() };
        let worker = tokio::spawn(worker::run(options, consumer, handler, shutdown.clone()));

        let entries = wait_for_dead_letters(&bus, "acme", 1).await;
        shutdown.cancel();
        worker.await.unwrap();
        assert_eq!(entries.len(), 1, "{name}");
        let letter = &entries[0].letter;
        assert_eq!(letter.reason, "UNDECODABLE", "{name}");
        assert_eq!(letter.consumer, "undecodable", "{name}");
        assert_eq!(letter.payload, [0xff, 0xff, 0xff], "{name}");
        assert_eq!(letter.delivery_count, 1, "{name}");
        assert_eq!(calls.load(Ordering::SeqCst), 0, "{name}: the handler never sees it");
    }
}
