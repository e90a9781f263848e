//! The consumer loop every service runs over the raw event stream: take a
//! batch, decode it, hand it to the service's handler (which commits it in
//! one transaction), and acknowledge only after the handler succeeded. An
//! event that still fails on its last delivery, or a message that does not
//! decode, goes to the dead-letter stream and is then acknowledged.
//!
//! Each batch runs in a consumer span whose parent is the publisher's span
//! when the whole batch comes from one trace, and which links to each
//! publisher otherwise. The loop keeps the `rtim_consumer_*` metrics,
//! labelled by consumer name.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

use metrics::{Counter, Gauge, Histogram};
use prost::Message;
use rtim_proto::bus::v1::{DeadLetter, EventEnvelope};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::dead_letters::{CONSUMER_FAILED, UNDECODABLE};
use crate::{Bus, Consumer, Delivery, LagProbe, TraceContext};

/// Events a consumer applied and acknowledged.
pub const PROCESSED_TOTAL: &str = "rtim_consumer_processed_total";
/// Events whose handler failed on a delivery that is not the last; they come again.
pub const FAILED_TOTAL: &str = "rtim_consumer_failed_total";
/// Deliveries after the first of the same message.
pub const REDELIVERED_TOTAL: &str = "rtim_consumer_redelivered_total";
/// Messages given up on, labelled by `reason`. The reasons are `undecodable`,
/// `max_deliver` (the handler failed on the last delivery) and `ack_wait`
/// (the last delivery was never acknowledged, counted by the in-process bus only).
pub const DEAD_LETTERED_TOTAL: &str = "rtim_consumer_dead_lettered_total";
/// Messages matching the consumer's filter that it has not received yet.
pub const PENDING_MESSAGES: &str = "rtim_consumer_pending_messages";
/// Messages received and not yet acknowledged.
pub const ACK_PENDING_MESSAGES: &str = "rtim_consumer_ack_pending_messages";
/// Time to apply and acknowledge one batch.
pub const BATCH_DURATION_SECONDS: &str = "rtim_consumer_batch_duration_seconds";

/// How often the lag gauges are read from the bus. Each read from JetStream
/// is a request to the server, so it happens every few seconds rather than
/// per batch.
const LAG_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Most links a batch span records; the SDK's default span limit.
const MAX_LINKS: usize = 128;

/// One decoded event from the stream.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub tenant: String,
    /// Message id of the event, unique per tenant; handlers key idempotency on it.
    pub message_id: String,
    pub envelope: EventEnvelope,
}

/// Applies events to a service's state.
pub trait BatchHandler: Send + Sync + 'static {
    /// Applies `batch` atomically. Must be idempotent per (tenant, message id):
    /// after a crash between commit and acknowledgement the same events come again.
    fn handle(&self, batch: &[Incoming]) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Settings of a consumer loop.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Durable consumer name, such as "profile".
    pub name: String,
    pub max_batch: usize,
    /// Delay before a failed message is delivered again.
    pub retry_delay: Duration,
}

/// Metric handles of one consumer, registered once so that the hot path
/// neither formats labels nor looks the series up.
struct ConsumerMetrics {
    processed: Counter,
    failed: Counter,
    redelivered: Counter,
    undecodable: Counter,
    exhausted: Counter,
    batch_duration: Histogram,
}

impl ConsumerMetrics {
    /// Registers every series at zero, so that dashboards and alerts see
    /// them before the first failure.
    fn register(name: &str) -> Self {
        let consumer = name.to_owned();
        let dead_lettered = |reason: &'static str| metrics::counter!(DEAD_LETTERED_TOTAL, "consumer" => consumer.clone(), "reason" => reason);
        Self {
            processed: metrics::counter!(PROCESSED_TOTAL, "consumer" => consumer.clone()),
            failed: metrics::counter!(FAILED_TOTAL, "consumer" => consumer.clone()),
            redelivered: metrics::counter!(REDELIVERED_TOTAL, "consumer" => consumer.clone()),
            undecodable: dead_lettered("undecodable"),
            exhausted: dead_lettered("max_deliver"),
            batch_duration: metrics::histogram!(BATCH_DURATION_SECONDS, "consumer" => consumer.clone()),
        }
    }
}

/// The settings, handler and metric handles that each step of the loop uses.
struct Worker<'a, H> {
    options: &'a WorkerOptions,
    handler: &'a H,
    /// The bus the consumer reads from, which also carries the dead-letter stream.
    bus: Bus,
    metrics: ConsumerMetrics,
}

/// Runs until `shutdown` is cancelled; the batch in hand is finished first.
pub async fn run<H: BatchHandler>(
    options: WorkerOptions,
    mut consumer: Consumer,
    handler: H,
    shutdown: CancellationToken,
) {
    tracing::info!(consumer = %options.name, "consumer started");
    let worker = Worker {
        options: &options,
        handler: &handler,
        bus: consumer.bus(),
        metrics: ConsumerMetrics::register(&options.name),
    };
    let stop_lag = shutdown.child_token();
    let lag = tokio::spawn(refresh_lag(
        options.name.clone(),
        consumer.lag_probe(),
        stop_lag.clone(),
    ));
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = consumer.next_batch(options.max_batch) => batch,
        };
        match batch {
            Ok(batch) => worker.process(batch).await,
            Err(error) => {
                tracing::warn!(consumer = %options.name, %error, "receiving from the bus failed, retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    stop_lag.cancel();
    if let Err(error) = lag.await {
        tracing::warn!(consumer = %options.name, %error, "lag refresh task failed");
    }
    tracing::info!(consumer = %options.name, "consumer stopped");
}

impl<H: BatchHandler> Worker<'_, H> {
    async fn process(&self, batch: Vec<Delivery>) {
        let span = process_span(
            &self.options.name,
            batch.iter().map(|delivery| &delivery.trace),
            batch.len(),
        );
        self.process_batch(batch).instrument(span).await;
    }

    async fn process_batch(&self, batch: Vec<Delivery>) {
        let started = Instant::now();
        let mut decoded = Vec::with_capacity(batch.len());
        let mut deliveries = Vec::with_capacity(batch.len());
        for delivery in batch {
            if delivery.delivered > 1 {
                self.metrics.redelivered.increment(1);
            }
            match EventEnvelope::decode(delivery.payload.as_ref()) {
                Ok(envelope) => {
                    decoded.push(Incoming {
                        tenant: delivery.tenant.clone(),
                        message_id: delivery.message_id.clone(),
                        envelope,
                    });
                    deliveries.push(delivery);
                }
                Err(error) => {
                    // Redelivery cannot make the bytes decode, so the message goes
                    // to the dead-letter stream on its first delivery.
                    let letter = DeadLetter {
                        tenant_id: delivery.tenant.clone(),
                        reason: UNDECODABLE.to_owned(),
                        create_time: Some(SystemTime::now().into()),
                        payload: delivery.payload.to_vec(),
                        consumer: self.options.name.clone(),
                        error: error.to_string(),
                        delivery_count: delivery.delivered,
                        ..DeadLetter::default()
                    };
                    self.dead_letter(&delivery, letter, &self.metrics.undecodable).await;
                }
            }
        }
        if decoded.is_empty() {
            return;
        }

        match self.handler.handle(&decoded).await {
            Ok(()) => {
                self.metrics.processed.increment(decoded.len() as u64);
                for delivery in &deliveries {
                    self.settle(delivery.ack().await);
                }
            }
            Err(error) if decoded.len() > 1 => {
                // Retry one event at a time so one bad event does not hold back the others.
                tracing::warn!(consumer = %self.options.name, error = %describe(&error), batch.size = decoded.len(), "batch failed, retrying events one by one");
                for (incoming, delivery) in decoded.iter().zip(&deliveries) {
                    let span = process_span(&self.options.name, std::iter::once(&delivery.trace), 1);
                    self.process_one(incoming, delivery).instrument(span).await;
                }
            }
            Err(error) => self.fail(&decoded[0], &deliveries[0], &error).await,
        }
        self.metrics.batch_duration.record(started.elapsed().as_secs_f64());
    }

    async fn process_one(&self, incoming: &Incoming, delivery: &Delivery) {
        match self.handler.handle(std::slice::from_ref(incoming)).await {
            Ok(()) => {
                self.metrics.processed.increment(1);
                self.settle(delivery.ack().await);
            }
            Err(error) => self.fail(incoming, delivery, &error).await,
        }
    }

    /// Dead-letters the event on its last delivery, or requests redelivery.
    ///
    /// NOTE: when the ack wait of the last delivery runs out before the
    /// handler settles it (a handler that hangs, a crashed replica), the bus
    /// drops the message and it is not dead-lettered.
    async fn fail(&self, incoming: &Incoming, delivery: &Delivery, error: &anyhow::Error) {
        let options = self.options;
        if delivery.delivered >= delivery.max_deliver {
            let letter = DeadLetter {
                tenant_id: incoming.tenant.clone(),
                reason: CONSUMER_FAILED.to_owned(),
                create_time: Some(SystemTime::now().into()),
                event: incoming.envelope.event.clone(),
                consumer: options.name.clone(),
                error: describe(error),
                delivery_count: delivery.delivered,
                ..DeadLetter::default()
            };
            self.dead_letter(delivery, letter, &self.metrics.exhausted).await;
            return;
        }
        tracing::warn!(
            consumer = %options.name,
            event.id = %incoming.message_id,
            tenant.id = %incoming.tenant,
            delivery.attempt = delivery.delivered,
            error = %describe(error),
            "event failed, it will be delivered again"
        );
        self.metrics.failed.increment(1);
        self.settle(delivery.nak(options.retry_delay).await);
    }

    /// Stores `letter` on the dead-letter stream, then acknowledges the
    /// delivery and counts it in `given_up`. When the dead-letter stream does
    /// not take it, the delivery comes again if it has deliveries left. On
    /// the last one it is terminated, and the error log line is the only
    /// trace of the event.
    async fn dead_letter(&self, delivery: &Delivery, letter: DeadLetter, given_up: &Counter) {
        let options = self.options;
        let stored = self
            .bus
            .publish_dead_letters(std::slice::from_ref(&letter))
            .await
            .pop()
            .expect("publish_dead_letters returns one result per letter");
        match stored {
            Ok(sequence) => {
                tracing::error!(
                    consumer = %options.name,
                    event.id = %delivery.message_id,
                    tenant.id = %letter.tenant_id,
                    delivery.attempt = delivery.delivered,
                    dead_letter.reason = %letter.reason,
                    dead_letter.id = sequence,
                    error = %letter.error,
                    "consumer gave up on a message, moved it to the dead-letter stream"
                );
                given_up.increment(1);
                self.settle(delivery.ack().await);
            }
            Err(publish_error) if delivery.delivered < delivery.max_deliver => {
                tracing::warn!(
                    consumer = %options.name,
                    event.id = %delivery.message_id,
                    tenant.id = %letter.tenant_id,
                    delivery.attempt = delivery.delivered,
                    dead_letter.error = %publish_error,
                    "dead-letter stream did not take a message, it will be delivered again"
                );
                self.metrics.failed.increment(1);
                self.settle(delivery.nak(options.retry_delay).await);
            }
            Err(publish_error) => {
                tracing::error!(
                    consumer = %options.name,
                    event.id = %delivery.message_id,
                    tenant.id = %letter.tenant_id,
                    delivery.attempt = delivery.delivered,
                    dead_letter.reason = %letter.reason,
                    error = %letter.error,
                    dead_letter.error = %publish_error,
                    "consumer gave up on a message and the dead-letter stream did not take it, dropping it"
                );
                given_up.increment(1);
                self.settle(delivery.term().await);
            }
        }
    }

    fn settle(&self, result: Result<(), crate::BusError>) {
        if let Err(error) = result {
            // The message comes again after the ack wait and the handler skips it as already applied.
            tracing::warn!(consumer = %self.options.name, %error, "acknowledgement failed");
        }
    }
}

/// Builds the consumer span of a batch. The publisher's span becomes the
/// parent when every message carries the same trace context, as one event or
/// the events of one ingestion call do. A batch that mixes several traces
/// links to each of them instead, as the OpenTelemetry messaging conventions
/// describe for batch processing.
fn process_span<'a>(consumer: &str, traces: impl Iterator<Item = &'a TraceContext>, size: usize) -> tracing::Span {
    let span = tracing::info_span!(
        "bus.process",
        otel.kind = "consumer",
        messaging.operation.type = "process",
        messaging.consumer.group.name = consumer,
        messaging.batch.message_count = size,
    );
    if span.is_disabled() {
        return span;
    }
    let mut distinct: Vec<&TraceContext> = Vec::new();
    for trace in traces.filter(|trace| !trace.is_empty()) {
        if distinct.len() < MAX_LINKS && !distinct.contains(&trace) {
            distinct.push(trace);
        }
    }
    match distinct.as_slice() {
        [] => {}
        [only] => {
            if let Err(error) = span.set_parent(only.extract()) {
                tracing::debug!(%error, "cannot set the publisher as parent of the consumer span");
            }
        }
        many => {
            for trace in many {
                span.add_link(trace.span_context());
            }
        }
    }
    span
}

/// Reads the consumer's backlog into the lag gauges every
/// [`LAG_REFRESH_INTERVAL`] until `stop` is cancelled.
async fn refresh_lag(consumer: String, probe: LagProbe, stop: CancellationToken) {
    let pending: Gauge = metrics::gauge!(PENDING_MESSAGES, "consumer" => consumer.clone());
    let ack_pending: Gauge = metrics::gauge!(ACK_PENDING_MESSAGES, "consumer" => consumer.clone());
    let mut interval = tokio::time::interval(LAG_REFRESH_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        match probe.lag().await {
            Ok(lag) => {
                pending.set(lag.pending as f64);
                ack_pending.set(lag.ack_pending as f64);
                failing = false;
            }
            // Logged once per run of failures, since the refresh repeats every few seconds.
            Err(error) if !failing => {
                tracing::warn!(consumer = %consumer, %error, "reading consumer lag failed, keeping the last value");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Joins an error and its causes, skipping a cause whose text is already in
/// the message.
fn describe(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}
