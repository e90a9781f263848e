//! The JetStream baseline: the event envelopes that ingestion would publish,
//! sent straight to a throwaway stream with the same headers. Batches are
//! pipelined as the bus adapter does it: send every message, then await the
//! acks. The baseline opens as many connections as the scenario uses.

use std::time::Duration;

use anyhow::Context as _;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use chrono::Utc;
use prost::Message;
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::json::datetime_to_timestamp;
use std::sync::Arc;

use crate::dataset::Dataset;
use crate::driver::{Call, Workload};

/// Tenant written in the envelopes; only their size matters here.
const TENANT: &str = "demo";

/// A stream of its own, on a subject prefix no service uses, deleted by
/// [`ThrowawayStream::delete`].
pub struct ThrowawayStream {
    contexts: Vec<jetstream::Context>,
    name: String,
    subject: String,
}

impl ThrowawayStream {
    /// Connects `connections` clients to `url` and creates the stream.
    pub async fn create(url: &str, connections: usize) -> anyhow::Result<Self> {
        let mut contexts = Vec::with_capacity(connections);
        for _ in 0..connections.max(1) {
            let client = async_nats::ConnectOptions::new()
                .name("rtim-bench")
                .connect(url)
                .await
                .with_context(|| format!("cannot connect to NATS at {url}"))?;
            let context = jetstream::ContextBuilder::new()
                .timeout(Duration::from_secs(10))
                .build(client);
            contexts.push(context);
        }
        let prefix = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let name = format!("{}_EVENTS", prefix.to_uppercase());
        contexts[0]
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{prefix}.events.>")],
                duplicate_window: rtim_bus::DUPLICATE_WINDOW,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create the JetStream stream {name}"))?;
        Ok(Self {
            contexts,
            name,
            subject: format!("{prefix}.events.{TENANT}.track"),
        })
    }

    /// Batches of `batch_size` events from `dataset`.
    pub fn workload(&self, dataset: Arc<Dataset>, batch_size: usize) -> JetStreamWorkload {
        JetStreamWorkload {
            contexts: self.contexts.clone(),
            subject: self.subject.clone(),
            dataset,
            batch_size,
        }
    }

    /// Deletes the stream and everything published to it.
    pub async fn delete(self) -> anyhow::Result<()> {
        self.contexts[0]
            .delete_stream(&self.name)
            .await
            .with_context(|| format!("cannot delete the JetStream stream {}", self.name))?;
        Ok(())
    }
}

pub struct JetStreamWorkload {
    contexts: Vec<jetstream::Context>,
    subject: String,
    dataset: Arc<Dataset>,
    batch_size: usize,
}

impl JetStreamWorkload {
    /// Encoded envelopes of batch `index`, as ingestion builds them: a new
    /// message id and the receive time set.
    fn envelopes(&self, index: u64) -> Vec<(String, Bytes)> {
        let received_at = datetime_to_timestamp(Utc::now());
        self.dataset
            .batch(index, self.batch_size)
            .into_iter()
            .map(|mut event| {
                event.received_at = Some(received_at);
                let message_id = format!("{TENANT}:{}", event.message_id);
                let envelope = EventEnvelope {
                    tenant_id: TENANT.to_owned(),
                    event: Some(event),
                };
                (message_id, Bytes::from(envelope.encode_to_vec()))
            })
            .collect()
    }

    /// Size of one encoded batch, in bytes.
    pub fn batch_bytes(&self) -> usize {
        self.envelopes(0).iter().map(|(_, payload)| payload.len()).sum()
    }
}

impl Workload for JetStreamWorkload {
    fn call(&self, index: u64) -> Call {
        let context = self.contexts[(index % self.contexts.len() as u64) as usize].clone();
        let subject = self.subject.clone();
        let envelopes = self.envelopes(index);
        Box::pin(async move {
            let count = envelopes.len() as u64;
            let mut pending = Vec::with_capacity(envelopes.len());
            for (message_id, payload) in envelopes {
                let mut headers = HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id.as_str());
                headers.insert(rtim_bus::TENANT_HEADER, TENANT);
                headers.insert("Content-Type", "application/x-protobuf");
                let message = jetstream::message::PublishMessage::build()
                    .payload(payload)
                    .headers(headers);
                let sent = context
                    .send_publish(subject.clone(), message)
                    .await
                    .map_err(|error| format!("publish failed: {error}"))?;
                pending.push(sent);
            }
            for sent in pending {
                let ack = sent.await.map_err(|error| format!("ack failed: {error}"))?;
                if ack.duplicate {
                    return Err("stored as a duplicate".to_owned());
                }
            }
            Ok(count)
        })
    }
}
