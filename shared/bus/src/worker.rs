//! The consumer loop every service runs over the raw event stream: take a
//! batch, decode it, hand it to the service's handler (which commits it in
//! one transaction), and acknowledge only after the handler succeeded. An
//! event that still fails on its last delivery, or a message that does not
//! decode, goes to the dead-letter stream and is then acknowledged.

use std::future::Future;
use std::time::{Duration, SystemTime};

use prost::Message;
use rtim_proto::bus::v1::{DeadLetter, EventEnvelope};
use tokio_util::sync::CancellationToken;

use crate::dead_letters::{CONSUMER_FAILED, UNDECODABLE};
use crate::{Bus, Consumer, Delivery};

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

/// Runs until `shutdown` is cancelled; the batch in hand is finished first.
pub async fn run<H: BatchHandler>(
    options: WorkerOptions,
    mut consumer: Consumer,
    handler: H,
    shutdown: CancellationToken,
) {
    tracing::info!(consumer = %options.name, "consumer started");
    let bus = consumer.bus();
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = consumer.next_batch(options.max_batch) => batch,
        };
        match batch {
            Ok(batch) => process(&options, &bus, &handler, batch).await,
            Err(error) => {
                tracing::warn!(consumer = %options.name, %error, "receiving from the bus failed, retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    tracing::info!(consumer = %options.name, "consumer stopped");
}

async fn process<H: BatchHandler>(options: &WorkerOptions, bus: &Bus, handler: &H, batch: Vec<Delivery>) {
    let mut decoded = Vec::with_capacity(batch.len());
    let mut deliveries = Vec::with_capacity(batch.len());
    for delivery in batch {
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
                    consumer: options.name.clone(),
                    error: error.to_string(),
                    delivery_count: delivery.delivered,
                    ..DeadLetter::default()
                };
                dead_letter(options, bus, &delivery, letter).await;
            }
        }
    }
    if decoded.is_empty() {
        return;
    }

    match handler.handle(&decoded).await {
        Ok(()) => {
            count(options, "processed", decoded.len());
            for delivery in &deliveries {
                settle(options, delivery.ack().await);
            }
        }
        Err(error) if decoded.len() > 1 => {
            // Retry one event at a time so one bad event does not hold back the others.
            tracing::warn!(consumer = %options.name, error = %describe(&error), batch.size = decoded.len(), "batch failed, retrying events one by one");
            for (incoming, delivery) in decoded.iter().zip(&deliveries) {
                process_one(options, bus, handler, incoming, delivery).await;
            }
        }
        Err(error) => fail(options, bus, &decoded[0], &deliveries[0], &error).await,
    }
}

async fn process_one<H: BatchHandler>(
    options: &WorkerOptions,
    bus: &Bus,
    handler: &H,
    incoming: &Incoming,
    delivery: &Delivery,
) {
    match handler.handle(std::slice::from_ref(incoming)).await {
        Ok(()) => {
            count(options, "processed", 1);
            settle(options, delivery.ack().await);
        }
        Err(error) => fail(options, bus, incoming, delivery, &error).await,
    }
}

/// Dead-letters the event on its last delivery, or requests redelivery.
///
/// NOTE: when the ack wait of the last delivery runs out before the handler
/// settles it (a handler that hangs, a crashed replica), the bus drops the
/// message and it is not dead-lettered.
async fn fail(options: &WorkerOptions, bus: &Bus, incoming: &Incoming, delivery: &Delivery, error: &anyhow::Error) {
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
        dead_letter(options, bus, delivery, letter).await;
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
    count(options, "failed", 1);
    settle(options, delivery.nak(options.retry_delay).await);
}

/// Stores `letter` on the dead-letter stream, then acknowledges the
/// delivery. When the dead-letter stream does not take it, the delivery
/// comes again if it has deliveries left. On the last one it is terminated,
/// and the error log line is the only trace of the event.
async fn dead_letter(options: &WorkerOptions, bus: &Bus, delivery: &Delivery, letter: DeadLetter) {
    let stored = bus
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
            count(options, "dead_lettered", 1);
            settle(options, delivery.ack().await);
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
            count(options, "failed", 1);
            settle(options, delivery.nak(options.retry_delay).await);
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
            count(options, "dropped", 1);
            settle(options, delivery.term().await);
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

fn count(options: &WorkerOptions, outcome: &'static str, n: usize) {
    metrics::counter!("consumer_messages_total", "consumer" => options.name.clone(), "outcome" => outcome)
        .increment(n as u64);
}

fn settle(options: &WorkerOptions, result: Result<(), crate::BusError>) {
    if let Err(error) = result {
        // The message comes again after the ack wait and the handler skips it as already applied.
        tracing::warn!(consumer = %options.name, %error, "acknowledgement failed");
    }
}
