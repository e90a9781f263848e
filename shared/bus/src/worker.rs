//! The consumer loop every service runs over the raw event stream: take a
//! batch, decode it, hand it to the service's handler (which commits it in
//! one transaction), and acknowledge only after the handler succeeded.

use std::future::Future;
use std::time::Duration;

use prost::Message;
use rtim_proto::bus::v1::EventEnvelope;
use tokio_util::sync::CancellationToken;

use crate::{Consumer, Delivery};

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
    loop {
        let batch = tokio::select! {
            () = shutdown.cancelled() => break,
            batch = consumer.next_batch(options.max_batch) => batch,
        };
        match batch {
            Ok(batch) => process(&options, &handler, batch).await,
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

async fn process<H: BatchHandler>(options: &WorkerOptions, handler: &H, batch: Vec<Delivery>) {
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
                // NOTE: undecodable messages are dropped with a log line; there is no dead-letter stream yet.
                tracing::error!(consumer = %options.name, event.id = %delivery.message_id, %error, "undecodable message, dropping it");
                count(options, "dropped", 1);
                settle(options, delivery.term().await);
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
                process_one(options, handler, incoming, delivery).await;
            }
        }
        Err(error) => fail(options, &decoded[0], &deliveries[0], &error).await,
    }
}

async fn process_one<H: BatchHandler>(options: &WorkerOptions, handler: &H, incoming: &Incoming, delivery: &Delivery) {
    match handler.handle(std::slice::from_ref(incoming)).await {
        Ok(()) => {
            count(options, "processed", 1);
            settle(options, delivery.ack().await);
        }
        Err(error) => fail(options, incoming, delivery, &error).await,
    }
}

async fn fail(options: &WorkerOptions, incoming: &Incoming, delivery: &Delivery, error: &anyhow::Error) {
    if delivery.delivered >= delivery.max_deliver {
        // NOTE: the event is dropped with this log line; there is no dead-letter stream yet.
        tracing::error!(
            consumer = %options.name,
            event.id = %incoming.message_id,
            tenant.id = %incoming.tenant,
            delivery.attempt = delivery.delivered,
            error = %describe(error),
            "event failed on its last delivery and is dropped"
        );
        count(options, "dropped", 1);
        settle(options, delivery.term().await);
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
