//! NATS JetStream adapter. One stream per domain stores the messages
//! (`<PREFIX>_EVENTS` for `<prefix>.events.>`), and `<PREFIX>_DEADLETTER`
//! the dead letters. Consumers are durable pull consumers with explicit
//! acknowledgement.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::{FutureExt, StreamExt};
use tokio::sync::OnceCell;

use crate::dead_letters::{EncodedLetter, RawEntry};
use crate::{
    BusConfig, BusError, Delivery, DeliveryHandle, Lag, OutgoingMessage, PublishAck, TENANT_HEADER, TraceContext,
};

#[derive(Clone, Debug)]
pub struct NatsBus {
    config: BusConfig,
    client: async_nats::Client,
    context: jetstream::Context,
    /// Created on first use, so that a service that never dead-letters
    /// anything does not create the stream.
    dead_letter_stream: Arc<OnceCell<stream::Stream>>,
}

impl NatsBus {
    pub(crate) async fn connect(config: BusConfig) -> Result<Self, BusError> {
        let client = async_nats::ConnectOptions::new()
            .name("rtim")
            .retry_on_initial_connect()
            .connect(config.url.as_str())
            .await
            .map_err(|error| BusError::Connect {
                url: config.url.clone(),
                message: error.to_string(),
            })?;
        // async-nats reconnects on its own after a lost connection, without a
        // limit on attempts and with a backoff of at most 4 s (0.52 defaults).
        let context = jetstream::ContextBuilder::new()
            .timeout(config.publish_timeout)
            .build(client.clone());
        let bus = Self {
            config,
            client,
            context,
            dead_letter_stream: Arc::default(),
        };
        bus.ensure_stream("events").await?;
        Ok(bus)
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    fn stream_name(&self, domain: &str) -> String {
        format!("{}_{}", self.config.subject_prefix, domain)
            .to_uppercase()
            .replace(['.', '-'], "_")
    }

    async fn ensure_stream(&self, domain: &str) -> Result<stream::Stream, BusError> {
        let name = self.stream_name(domain);
        self.context
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{}.{domain}.>", self.config.subject_prefix)],
                duplicate_window: self.config.duplicate_window,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|error| BusError::Setup {
                name,
                message: error.to_string(),
            })
    }

    pub(crate) async fn publish_many(&self, messages: Vec<OutgoingMessage>) -> Vec<Result<PublishAck, BusError>> {
        // While the client reconnects, it queues requests and writes them once
        // it is connected again, which can be after their acks timed out and
        // the caller learned that nothing was stored. Failing at once returns
        // without waiting for the timeout and leaves such late writes to the
        // few publishes that race with a disconnect.
        if self.client.connection_state() == async_nats::connection::State::Disconnected {
            return messages
                .into_iter()
                .map(|message| {
                    Err(BusError::Publish {
                        subject: message.subject,
                        message: "not connected to NATS, reconnecting".to_owned(),
                    })
                })
                .collect();
        }

        // Send everything first and await the acks afterwards: one round trip
        // for the whole batch instead of one per message.
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, message.message_id.as_str());
            headers.insert(TENANT_HEADER, message.tenant.as_str());
            headers.insert("Content-Type", "application/x-protobuf");
            for (name, value) in message.trace.headers() {
                headers.insert(name, value);
            }
            let publish = jetstream::message::PublishMessage::build()
                .payload(message.payload)
                .headers(headers);
            let sent = self.context.send_publish(message.subject.clone(), publish).await;
            pending.push((message.subject, sent));
        }

        let mut results = Vec::with_capacity(pending.len());
        for (subject, sent) in pending {
            let result = match sent {
                Ok(ack) => ack.await.map(|ack| PublishAck {
                    sequence: ack.sequence,
                    duplicate: ack.duplicate,
                }),
                Err(error) => Err(error),
            };
            results.push(result.map_err(|error| BusError::Publish {
                subject,
                message: error.to_string(),
            }));
        }
        results
    }

    async fn dead_letter_stream(&self) -> Result<stream::Stream, BusError> {
        let stream = self
            .dead_letter_stream
            .get_or_try_init(|| async {
                let name = self.stream_name("deadletter");
                self.context
                    .get_or_create_stream(stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("{}.deadletter.*", self.config.subject_prefix)],
                        max_age: self.config.dead_letter_max_age,
                        max_bytes: self.config.dead_letter_max_bytes,
                        discard: stream::DiscardPolicy::Old,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(|error| BusError::Setup {
                        name,
                        message: error.to_string(),
                    })
            })
            .await?;
        Ok(stream.clone())
    }

    pub(crate) async fn publish_dead_letters(&self, letters: Vec<EncodedLetter>) -> Vec<Result<u64, BusError>> {
        if let Err(error) = self.dead_letter_stream().await {
            let message = error.to_string();
            return letters
                .into_iter()
                .map(|letter| {
                    Err(BusError::Publish {
                        subject: letter.subject,
                        message: message.clone(),
                    })
                })
                .collect();
        }
        let mut pending = Vec::with_capacity(letters.len());
        for letter in letters {
            let mut headers = HeaderMap::new();
            headers.insert(TENANT_HEADER, letter.tenant.as_str());
            headers.insert("Content-Type", "application/x-protobuf");
            let publish = jetstream::message::PublishMessage::build()
                .payload(letter.payload)
                .headers(headers);
            let sent = self.context.send_publish(letter.subject.clone(), publish).await;
            pending.push((letter.subject, sent));
        }

        let mut results = Vec::with_capacity(pending.len());
        for (subject, sent) in pending {
            let result = match sent {
                Ok(ack) => ack.await.map(|ack| ack.sequence),
                Err(error) => Err(error),
            };
            results.push(result.map_err(|error| BusError::Publish {
                subject,
                message: error.to_string(),
            }));
        }
        results
    }

    /// Reads one entry per request with "first message on the subject at or
    /// after a sequence", which needs no consumer and serves an admin call
    /// of a few hundred entries well enough.
    pub(crate) async fn dead_letters(
        &self,
        subject: &str,
        from_sequence: u64,
        max: usize,
    ) -> Result<Vec<RawEntry>, BusError> {
        let stream = self.dead_letter_stream().await?;
        let mut entries = Vec::new();
        let mut next = from_sequence.max(1);
        while entries.len() < max {
            match stream.get_first_raw_message_by_subject(subject, next).await {
                Ok(message) => {
                    next = message.sequence + 1;
                    entries.push(RawEntry {
                        sequence: message.sequence,
                        payload: message.payload,
                    });
                }
                Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => break,
                Err(error) => return Err(read_error(&stream, &error)),
            }
        }
        Ok(entries)
    }

    pub(crate) async fn dead_letter(&self, subject: &str, sequence: u64) -> Result<Option<RawEntry>, BusError> {
        let stream = self.dead_letter_stream().await?;
        match stream.get_raw_message(sequence).await {
            Ok(message) if message.subject.as_str() == subject => Ok(Some(RawEntry {
                sequence,
                payload: message.payload,
            })),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(read_error(&stream, &error)),
        }
    }

    pub(crate) async fn delete_dead_letter(&self, subject: &str, sequence: u64) -> Result<bool, BusError> {
        if self.dead_letter(subject, sequence).await?.is_none() {
            return Ok(false);
        }
        let stream = self.dead_letter_stream().await?;
        // A concurrent delete between the read and this call makes the
        // server return an error rather than false, so read again.
        match stream.delete_message(sequence).await {
            Ok(deleted) => Ok(deleted),
            Err(error) => match self.dead_letter(subject, sequence).await? {
                None => Ok(false),
                Some(_) => Err(read_error(&stream, &error)),
            },
        }
    }

    pub(crate) async fn consumer(&self, durable: &str, filter: &str) -> Result<NatsConsumer, BusError> {
        let domain = filter.split('.').nth(1).unwrap_or("events");
        let stream = self.ensure_stream(domain).await?;
        let setup_error = |error: &dyn std::fmt::Display| BusError::Setup {
            name: durable.to_owned(),
            message: error.to_string(),
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                durable,
                consumer::pull::Config {
                    durable_name: Some(durable.to_owned()),
                    filter_subject: filter.to_owned(),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: self.config.ack_wait,
                    max_deliver: self.config.max_deliver,
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| setup_error(&error))?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(500)
            .messages()
            .await
            .map_err(|error| setup_error(&error))?;
        Ok(NatsConsumer {
            bus: self.clone(),
            durable: durable.to_owned(),
            max_deliver: self.config.max_deliver,
            consumer,
            messages,
        })
    }
}

pub struct NatsConsumer {
    pub(crate) bus: NatsBus,
    durable: String,
    max_deliver: i64,
    /// Kept beside the message stream to read the consumer's info.
    consumer: consumer::PullConsumer,
    messages: consumer::pull::Stream,
}

impl NatsConsumer {
    pub(crate) fn info_handle(&self) -> consumer::PullConsumer {
        self.consumer.clone()
    }

    pub(crate) async fn next_batch(&mut self, max: usize) -> Result<Vec<Delivery>, BusError> {
        let mut batch = Vec::new();
        let first = self.messages.next().await;
        self.push(&mut batch, first)?;
        while batch.len() < max {
            match self.messages.next().now_or_never() {
                Some(next) => self.push(&mut batch, next)?,
                None => break,
            }
        }
        Ok(batch)
    }

    fn push(
        &self,
        batch: &mut Vec<Delivery>,
        next: Option<Result<jetstream::Message, consumer::pull::MessagesError>>,
    ) -> Result<(), BusError> {
        let receive_error = |message: String| BusError::Receive {
            consumer: self.durable.clone(),
            message,
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(error)) => return Err(receive_error(error.to_string())),
            None => return Err(receive_error("message stream ended".to_owned())),
        };
        let header = |name: &str| {
            message
                .headers
                .as_ref()
                .and_then(|headers| headers.get(name))
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        let trace = match &message.headers {
            Some(headers) => TraceContext::from_headers(|name| headers.get(name).map(|value| value.as_str())),
            None => TraceContext::default(),
        };
        batch.push(Delivery {
            subject: message.subject.to_string(),
            message_id: header(async_nats::header::NATS_MESSAGE_ID.as_ref()),
            tenant: header(TENANT_HEADER),
            payload: message.payload.clone(),
            delivered,
            max_deliver: self.max_deliver,
            trace,
            handle: DeliveryHandle::Nats(Box::new(message)),
        });
        Ok(())
    }
}

/// Reads the consumer's pending counts from JetStream.
pub(crate) async fn lag(consumer: &consumer::PullConsumer) -> Result<Lag, BusError> {
    let info = consumer.get_info().await.map_err(|error| BusError::Receive {
        consumer: consumer.cached_info().name.clone(),
        message: format!("cannot read consumer info: {error}"),
    })?;
    Ok(Lag {
        pending: info.num_pending,
        ack_pending: info.num_ack_pending as u64,
    })
}

fn read_error(stream: &stream::Stream, error: &dyn std::fmt::Display) -> BusError {
    BusError::Read {
        stream: stream.cached_info().config.name.clone(),
        message: error.to_string(),
    }
}

pub(crate) async fn ack(message: &jetstream::Message) -> Result<(), BusError> {
    message.ack().await.map_err(|error| BusError::Ack(error.to_string()))
}

pub(crate) async fn nak(message: &jetstream::Message, delay: Duration) -> Result<(), BusError> {
    message
        .ack_with(AckKind::Nak(Some(delay)))
        .await
        .map_err(|error| BusError::Ack(error.to_string()))
}

pub(crate) async fn term(message: &jetstream::Message) -> Result<(), BusError> {
    message
        .ack_with(AckKind::Term)
        .await
        .map_err(|error| BusError::Ack(error.to_string()))
}
