//! One contract for both bus adapters: the in-process bus always, JetStream
//! when `RTIM_TEST_NATS_URL` is set, each test on its own subject prefix.

use std::time::Duration;

use bytes::Bytes;
use rtim_bus::{Bus, BusConfig, OutgoingMessage};

async fn buses() -> Vec<(&'static str, Bus)> {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let config = BusConfig {
        url: "memory".to_owned(),
        subject_prefix: prefix.clone(),
        max_deliver: 5,
        ack_wait: Duration::from_millis(500),
        publish_timeout: Duration::from_secs(5),
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
