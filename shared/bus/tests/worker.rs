//! The consumer loop's metrics: processed, failed, redelivered and
//! dead-lettered events, counted on the in-process bus with a handler that
//! fails on one event.

use std::time::Duration;

use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusBuilder;
use prost::Message as _;
use rtim_bus::worker::{self, BatchHandler, Incoming, WorkerOptions};
use rtim_bus::{Bus, BusConfig, OutgoingMessage, TraceContext};
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::Event;
use tokio_util::sync::CancellationToken;

/// Fails every batch that contains the event `bad`.
struct FailOnBad;

impl BatchHandler for FailOnBad {
    async fn handle(&self, batch: &[Incoming]) -> anyhow::Result<()> {
        let bad = batch.iter().any(|incoming| {
            incoming
                .envelope
                .event
                .as_ref()
                .is_some_and(|event| event.message_id == "bad")
        });
        anyhow::ensure!(!bad, "event 'bad' is rejected by this handler");
        Ok(())
    }
}

fn message(bus: &Bus, id: &str, payload: Bytes) -> OutgoingMessage {
    OutgoingMessage {
        subject: bus.events_subject("acme", "track").unwrap(),
        message_id: format!("acme:{id}"),
        tenant: "acme".to_owned(),
        payload,
        trace: TraceContext::default(),
    }
}

fn event(id: &str) -> Bytes {
    let envelope = EventEnvelope {
        tenant_id: "acme".to_owned(),
        event: Some(Event {
            message_id: id.to_owned(),
            ..Event::default()
        }),
    };
    Bytes::from(envelope.encode_to_vec())
}

/// Returns the value of the sample line that starts with `series`.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_counts_outcomes() {
    // Buckets make the exporter render histograms as such, as the services' recorder does.
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.01, 0.1, 1.0])
        .unwrap()
        .install_recorder()
        .expect("first recorder of this test binary");
    let bus = Bus::connect(&BusConfig {
        max_deliver: 2,
        ..BusConfig::default()
    })
    .await
    .unwrap();
    // A varint that never ends does not decode as protobuf.
    let undecodable = Bytes::from_static(&[0xff; 11]);
    bus.publish_many(vec![
        message(&bus, "good", event("good")),
        message(&bus, "bad", event("bad")),
        message(&bus, "garbage", undecodable),
    ])
    .await;

    let shutdown = CancellationToken::new();
    let consumer = bus.consumer("counting", &bus.all_events_filter()).await.unwrap();
    let options = WorkerOptions {
        name: "counting".to_owned(),
        max_batch: 10,
        retry_delay: Duration::from_millis(10),
    };
    let task = tokio::spawn(worker::run(options, consumer, FailOnBad, shutdown.clone()));

    let series = |name: &str, labels: &str| format!("{name}{{consumer=\"counting\"{labels}}}");
    let dead_lettered = series(worker::DEAD_LETTERED_TOTAL, ",reason=\"max_deliver\"");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = recorder.render();
        if value(&text, &dead_lettered) == Some(1.0) || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    shutdown.cancel();
    task.await.unwrap();

    assert_eq!(
        value(&text, &series(worker::PROCESSED_TOTAL, "")),
        Some(1.0),
        "good event\n{text}"
    );
    assert_eq!(
        value(&text, &series(worker::FAILED_TOTAL, "")),
        Some(1.0),
        "bad event, first delivery\n{text}"
    );
    assert_eq!(
        value(&text, &series(worker::REDELIVERED_TOTAL, "")),
        Some(1.0),
        "bad event again\n{text}"
    );
    assert_eq!(
        value(&text, &dead_lettered),
        Some(1.0),
        "bad event on its last delivery\n{text}"
    );
    assert_eq!(
        value(&text, &series(worker::DEAD_LETTERED_TOTAL, ",reason=\"undecodable\"")),
        Some(1.0),
        "garbage\n{text}"
    );
    assert!(
        text.contains(&format!("# TYPE {} histogram", worker::BATCH_DURATION_SECONDS)),
        "batch duration\n{text}"
    );
    assert!(
        value(&text, &series(worker::PENDING_MESSAGES, "")).is_some(),
        "lag gauge\n{text}"
    );
}
