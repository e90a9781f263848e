//! The event bus: NATS JetStream in the mesh, an in-process log in embedded
//! mode, behind one [`Bus`] type so services do not know which one runs.
//!
//! Subjects are `<prefix>.<domain>.<tenant>.<kind>`, for example
//! `rtim.events.acme.track`. Every message carries a message id that the
//! stream uses to drop duplicates within its window, and the tenant.
//! Consumers are durable and pull-based: a delivery stays pending until it is
//! acknowledged and is redelivered after the ack wait.

pub mod dead_letters;
mod memory;
mod nats;
pub mod subject;
pub mod trace;
pub mod worker;

use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument as _;

pub use dead_letters::DeadLetterEntry;
pub use memory::MemoryBus;
pub use nats::NatsBus;
pub use trace::TraceContext;

/// Header holding the tenant of a message.
pub const TENANT_HEADER: &str = "Rtim-Tenant";
/// Default of [`BusConfig::duplicate_window`], JetStream's own default.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
pub struct BusConfig {
    /// `nats://HOST:PORT` or `memory`.
    pub url: String,
    pub subject_prefix: String,
    /// Deliveries of one message before the consumer gives up on it.
    pub max_deliver: i64,
    pub ack_wait: Duration,
    /// How long a publish, or a JetStream set-up request, waits for the
    /// server. The in-process bus stores synchronously and ignores it.
    pub publish_timeout: Duration,
    /// How long the event stream remembers message ids to drop duplicates.
    /// JetStream applies it when it creates the stream only.
    pub duplicate_window: Duration,
    /// How long the dead-letter stream keeps an entry.
    pub dead_letter_max_age: Duration,
    /// Size in bytes beyond which the dead-letter stream drops its oldest
    /// entries. JetStream reserves this much file storage for the stream.
    pub dead_letter_max_bytes: i64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "memory".to_owned(),
            subject_prefix: "rtim".to_owned(),
            max_deliver: 20,
            ack_wait: Duration::from_secs(30),
            publish_timeout: Duration::from_secs(5),
            duplicate_window: DUPLICATE_WINDOW,
            dead_letter_max_age: Duration::from_secs(14 * 24 * 3600),
            dead_letter_max_bytes: 1024 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cannot set up stream or consumer '{name}': {message}")]
    Setup { name: String, message: String },
    #[error("publishing to {subject} failed: {message}")]
    Publish { subject: String, message: String },
    #[error("receiving from consumer '{consumer}' failed: {message}")]
    Receive { consumer: String, message: String },
    #[error("reading stream {stream} failed: {message}")]
    Read { stream: String, message: String },
    #[error("acknowledging a message failed: {0}")]
    Ack(String),
    #[error("invalid subject token '{0}': tokens may not be empty or contain '.', '*', '>' or whitespace")]
    InvalidToken(String),
}

impl BusError {
    /// True when the bus could not store or reach the stream, so a retry may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            BusError::Connect { .. } | BusError::Publish { .. } | BusError::Read { .. }
        )
    }
}

/// A message to publish.
#[derive(Clone, Debug)]
pub struct OutgoingMessage {
    pub subject: String,
    /// Deduplication key; the stream stores one message per id within its window.
    pub message_id: String,
    pub tenant: String,
    pub payload: Bytes,
    /// Trace context of the publisher. When empty, [`Bus::publish_many`]
    /// fills in the context of its own span.
    pub trace: TraceContext,
}

/// The stream's confirmation that it stored a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishAck {
    pub sequence: u64,
    /// True when the stream already held a message with the same id.
    pub duplicate: bool,
}

/// A message received by a consumer. Call [`Delivery::ack`] once its effect
/// is committed.
#[derive(Debug)]
pub struct Delivery {
    pub subject: String,
    pub message_id: String,
    pub tenant: String,
    pub payload: Bytes,
    /// Delivery attempt, starting at 1.
    pub delivered: i64,
    /// Attempts the bus makes before it gives up on the message.
    pub max_deliver: i64,
    /// Trace context of the publisher, empty when it sent none.
    pub trace: TraceContext,
    handle: DeliveryHandle,
}

#[derive(Debug)]
enum DeliveryHandle {
    Nats(Box<async_nats::jetstream::Message>),
    Memory(memory::AckHandle),
}

impl Delivery {
    pub async fn ack(&self) -> Result<(), BusError> {
        match &self.handle {
            DeliveryHandle::Nats(message) => nats::ack(message).await,
            DeliveryHandle::Memory(handle) => {
                handle.ack();
                Ok(())
            }
        }
    }

    /// Asks for redelivery after `delay`.
    pub async fn nak(&self, delay: Duration) -> Result<(), BusError> {
        match &self.handle {
            DeliveryHandle::Nats(message) => nats::nak(message, delay).await,
            DeliveryHandle::Memory(handle) => {
                handle.nak(delay);
                Ok(())
            }
        }
    }

    /// Stops redelivery for good, for a message that can never be processed.
    pub async fn term(&self) -> Result<(), BusError> {
        match &self.handle {
            DeliveryHandle::Nats(message) => nats::term(message).await,
            DeliveryHandle::Memory(handle) => {
                handle.ack();
                Ok(())
            }
        }
    }
}

/// The event bus.
#[derive(Clone, Debug)]
pub enum Bus {
    Nats(Box<NatsBus>),
    Memory(MemoryBus),
}

impl Bus {
    /// Connects to JetStream, or builds an in-process bus for `memory`.
    pub async fn connect(config: &BusConfig) -> Result<Bus, BusError> {
        if config.url == "memory" {
            Ok(Bus::Memory(MemoryBus::new(config.clone())))
        } else {
            Ok(Bus::Nats(Box::new(NatsBus::connect(config.clone()).await?)))
        }
    }

    pub fn config(&self) -> &BusConfig {
        match self {
            Bus::Nats(bus) => bus.config(),
            Bus::Memory(bus) => bus.config(),
        }
    }

    /// Subject of raw events of one tenant and kind.
    pub fn events_subject(&self, tenant: &str, kind: &str) -> Result<String, BusError> {
        subject::build(&self.config().subject_prefix, "events", tenant, kind)
    }

    /// Filter matching every raw event of every tenant.
    pub fn all_events_filter(&self) -> String {
        format!("{}.events.*.*", self.config().subject_prefix)
    }

    /// Publishes one message and waits until the stream has stored it.
    pub async fn publish(&self, message: OutgoingMessage) -> Result<PublishAck, BusError> {
        self.publish_many(vec![message])
            .await
            .pop()
            .expect("publish_many returns one result per message")
    }

    /// Publishes messages in a pipeline and returns one result per message,
    /// in order, each known only once the stream stored it or failed.
    ///
    /// Runs the call in a producer span. Messages without a trace context
    /// get that span's context, one shared copy for the whole call.
    pub async fn publish_many(&self, mut messages: Vec<OutgoingMessage>) -> Vec<Result<PublishAck, BusError>> {
        let span = tracing::info_span!(
            "bus.publish",
            otel.kind = "producer",
            messaging.system = self.system(),
            messaging.operation.type = "send",
            messaging.batch.message_count = messages.len(),
        );
        if messages.iter().any(|message| message.trace.is_empty()) {
            let trace = TraceContext::of_span(&span);
            for message in messages.iter_mut().filter(|message| message.trace.is_empty()) {
                message.trace = trace.clone();
            }
        }
        async {
            match self {
                Bus::Nats(bus) => bus.publish_many(messages).await,
                Bus::Memory(bus) => bus.publish_many(messages),
            }
        }
        .instrument(span)
        .await
    }

    /// Returns the `messaging.system` name of the adapter, for spans.
    fn system(&self) -> &'static str {
        match self {
            Bus::Nats(_) => "nats",
            Bus::Memory(_) => "memory",
        }
    }

    /// Creates or binds the durable consumer `durable` over the subjects
    /// matching `filter`.
    pub async fn consumer(&self, durable: &str, filter: &str) -> Result<Consumer, BusError> {
        match self {
            Bus::Nats(bus) => Ok(Consumer::Nats(Box::new(bus.consumer(durable, filter).await?))),
            Bus::Memory(bus) => Ok(Consumer::Memory(bus.consumer(durable, filter))),
        }
    }
}

/// A durable pull consumer.
pub enum Consumer {
    Nats(Box<nats::NatsConsumer>),
    Memory(memory::MemoryConsumer),
}

impl Consumer {
    /// Returns a handle that reads the consumer's backlog, usable while the
    /// consumer itself is busy receiving.
    pub fn lag_probe(&self) -> LagProbe {
        match self {
            Consumer::Nats(consumer) => LagProbe::Nats(Box::new(consumer.info_handle())),
            Consumer::Memory(consumer) => LagProbe::Memory(consumer.clone()),
        }
    }

    /// Returns the bus this consumer reads from.
    pub fn bus(&self) -> Bus {
        match self {
            Consumer::Nats(consumer) => Bus::Nats(Box::new(consumer.bus.clone())),
            Consumer::Memory(consumer) => Bus::Memory(consumer.bus()),
        }
    }

    /// Waits for at least one delivery, then returns it with whatever else is
    /// ready right away, up to `max`. Batching only what is ready keeps the
    /// latency of a lone event low while a backlog is taken in large bites.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        match self {
            Consumer::Nats(consumer) => consumer.next_batch(max).await,
            Consumer::Memory(consumer) => Ok(consumer.next_batch(max).await),
        }
    }
}

/// How far a durable consumer is behind its stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Messages matching the consumer's filter that it has not been delivered yet.
    pub pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: u64,
}

/// Reads the backlog of one durable consumer.
pub enum LagProbe {
    Nats(Box<async_nats::jetstream::consumer::PullConsumer>),
    Memory(memory::MemoryConsumer),
}

impl LagProbe {
    /// Asks JetStream for the consumer's info, or counts the in-process queue.
    pub async fn lag(&self) -> Result<Lag, BusError> {
        match self {
            LagProbe::Nats(consumer) => nats::lag(consumer).await,
            LagProbe::Memory(consumer) => Ok(consumer.lag()),
        }
    }
}
