//! `ingest`: batches of 100 events from the data file, each with new
//! message ids, timed until ingestion returns, which it does only after
//! JetStream has acknowledged every event. The batches go through the
//! ingestion `Batch` RPC, through the ingestion `Stream` RPC (one stream per
//! connection, requests matched to responses by sequence), or through the
//! gateway's `POST /v1/batch` as Segment JSON.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prost::Message;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use rtim_proto::ingestion::v1::{BatchRequest, EventOutcome, StreamRequest, StreamResponse};
use rtim_proto::json::{struct_to_json, timestamp_to_rfc3339};
use serde_json::{Map, Value, json};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::{BATCH_SIZE, Baseline, Bench, Target};
use crate::args::IngestPath;
use crate::dataset::Dataset;
use crate::driver::{Call, Workload};
use crate::grpc::{Credential, label};

/// Largest response ingestion may send for a batch, in bytes.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

struct Ingest {
    clients: Vec<IngestionServiceClient<Channel>>,
    credential: Credential,
    dataset: Arc<Dataset>,
}

impl Workload for Ingest {
    fn call(&self, index: u64) -> Call {
        let mut client = self.clients[(index % self.clients.len() as u64) as usize].clone();
        let request = self.credential.request(BatchRequest {
            events: self.dataset.batch(index, BATCH_SIZE),
        });
        Box::pin(async move {
            let response = client
                .batch(request)
                .await
                .map_err(|status| label(&status))?
                .into_inner();
            if let Some(rejected) = response.results.iter().find(|result| !result.accepted) {
                return Err(format!("event rejected: {}", rejected.reason));
            }
            if response.results.iter().any(|result| result.duplicate) {
                return Err("event stored as a duplicate".to_owned());
            }
            Ok(response.accepted as u64)
        })
    }
}

/// Builds the ingest scenario for `path`.
pub fn target(bench: &Bench, path: IngestPath) -> anyhow::Result<Target> {
    match path {
        IngestPath::Grpc => grpc_target(bench),
        IngestPath::Stream => stream_target(bench),
        IngestPath::Rest => rest_target(bench),
    }
}

fn grpc_target(bench: &Bench) -> anyhow::Result<Target> {
    let clients = bench
        .channels(&bench.endpoints.ingestion)?
        .into_iter()
        .map(|channel| IngestionServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
        .collect();
    let request_bytes = BatchRequest {
        events: bench.dataset.batch(0, BATCH_SIZE),
    }
    .encoded_len();
    Ok(Target {
        name: "ingest",
        workload: Arc::new(Ingest {
            clients,
            credential: bench.credential.clone(),
            dataset: bench.dataset.clone(),
        }),
        request_bytes,
        baseline: Baseline::JetStream,
        counts_events: true,
    })
}

/// Responses awaited on one stream, by request sequence.
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<StreamResponse>>>>;

/// One `Stream` RPC: requests go in through `requests`, and a task hands each
/// response to the call waiting for its sequence.
struct Lane {
    requests: mpsc::Sender<StreamRequest>,
    waiting: Waiting,
}

impl Lane {
    /// Opens the stream in a task of its own. Calls made before it is open
    /// wait in the channel.
    fn open(mut client: IngestionServiceClient<Channel>, credential: &Credential, depth: usize) -> Self {
        let (requests, outgoing) = mpsc::channel(depth.max(1));
        let waiting: Waiting = Arc::default();
        let request = credential.request(ReceiverStream::new(outgoing));
        let dispatch = waiting.clone();
        tokio::spawn(async move {
            let mut responses = match client.stream(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    eprintln!("the ingest stream could not open: {}", label(&status));
                    return;
                }
            };
            loop {
                match responses.message().await {
                    Ok(Some(response)) => {
                        let waiter = lock(&dispatch).remove(&response.sequence);
                        if let Some(waiter) = waiter {
                            // A call that timed out no longer waits for its response.
                            let _ = waiter.send(response);
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        eprintln!("the ingest stream ended: {}", label(&status));
                        break;
                    }
                }
            }
            // Dropping the senders fails every call still waiting.
            lock(&dispatch).clear();
        });
        Self { requests, waiting }
    }
}

fn lock(waiting: &Waiting) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<StreamResponse>>> {
    // The map holds only senders, which stay usable after a panic elsewhere.
    waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct StreamIngest {
    lanes: Vec<Lane>,
    dataset: Arc<Dataset>,
}

impl Workload for StreamIngest {
    fn call(&self, index: u64) -> Call {
        let lane = &self.lanes[(index % self.lanes.len() as u64) as usize];
        let request = StreamRequest {
            sequence: index,
            events: self.dataset.batch(index, BATCH_SIZE),
        };
        let (done, response) = oneshot::channel();
        lock(&lane.waiting).insert(index, done);
        let requests = lane.requests.clone();
        Box::pin(async move {
            requests
                .send(request)
                .await
                .map_err(|_| "the ingest stream is closed".to_owned())?;
            let response = response.await.map_err(|_| "the ingest stream ended".to_owned())?;
            let mut accepted = 0;
            for result in &response.results {
                match result.outcome() {
                    EventOutcome::Accepted => accepted += 1,
                    EventOutcome::Duplicate => return Err("event stored as a duplicate".to_owned()),
                    _ => return Err(format!("event not stored: {}", result.reason)),
                }
            }
            Ok(accepted)
        })
    }
}

fn stream_target(bench: &Bench) -> anyhow::Result<Target> {
    let in_flight = bench.common.concurrency as usize;
    let lanes = bench
        .channels(&bench.endpoints.ingestion)?
        .into_iter()
        .map(|channel| {
            let client = IngestionServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
            Lane::open(client, &bench.credential, in_flight)
        })
        .collect();
    let request_bytes = StreamRequest {
        sequence: 0,
        events: bench.dataset.batch(0, BATCH_SIZE),
    }
    .encoded_len();
    Ok(Target {
        name: "ingest (Stream)",
        workload: Arc::new(StreamIngest {
            lanes,
            dataset: bench.dataset.clone(),
        }),
        request_bytes,
        baseline: Baseline::JetStream,
        counts_events: true,
    })
}

/// Posts batches to the gateway as Segment JSON, with the API key as the
/// user name of HTTP Basic auth, as Segment's libraries send it.
struct RestIngest {
    client: reqwest::Client,
    url: String,
    api_key: String,
    dataset: Arc<Dataset>,
}

impl Workload for RestIngest {
    fn call(&self, index: u64) -> Call {
        let events = self.dataset.batch(index, BATCH_SIZE);
        let body = segment_batch(&events);
        let request = self
            .client
            .post(&self.url)
            .basic_auth(&self.api_key, Some(""))
            .json(&body);
        Box::pin(async move {
            let response = request.send().await.map_err(|error| format!("HTTP: {error}"))?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(80).collect();
                return Err(format!("HTTP {}: {text}", status.as_u16()));
            }
            let reply: Value = response
                .json()
                .await
                .map_err(|error| format!("unreadable reply: {error}"))?;
            let accepted = reply.get("accepted").and_then(Value::as_u64).unwrap_or(0);
            if accepted != events.len() as u64 {
                return Err(format!("{accepted} of {} events accepted", events.len()));
            }
            Ok(accepted)
        })
    }
}

fn rest_target(bench: &Bench) -> anyhow::Result<Target> {
    let connections = bench.common.connections as usize;
    let client = reqwest::Client::builder()
        .timeout(bench.common.timeout)
        .pool_max_idle_per_host(connections.max(bench.common.concurrency as usize))
        .tcp_nodelay(true)
        .build()?;
    let request_bytes = serde_json::to_vec(&segment_batch(&bench.dataset.batch(0, BATCH_SIZE)))?.len();
    Ok(Target {
        name: "ingest (REST)",
        workload: Arc::new(RestIngest {
            client,
            url: format!("{}/v1/batch", bench.endpoints.gateway.trim_end_matches('/')),
            api_key: bench.api_key.clone(),
            dataset: bench.dataset.clone(),
        }),
        request_bytes,
        baseline: Baseline::JetStream,
        counts_events: true,
    })
}

/// Builds the body of `POST /v1/batch` from events, with Segment's field names.
pub fn segment_batch(events: &[Event]) -> Value {
    let batch: Vec<Value> = events.iter().map(segment_event).collect();
    json!({ "batch": batch })
}

fn segment_event(event: &Event) -> Value {
    let kind = match event.r#type() {
        EventType::Identify => "identify",
        EventType::Page => "page",
        EventType::Screen => "screen",
        EventType::Alias => "alias",
        EventType::Group => "group",
        EventType::Track | EventType::Unspecified => "track",
    };

    let mut object = Map::new();
    object.insert("type".to_owned(), json!(kind));
    object.insert("messageId".to_owned(), json!(event.message_id));
    for (name, value) in [
        ("userId", &event.user_id),
        ("anonymousId", &event.anonymous_id),
        ("event", &event.event),
        ("name", &event.name),
    ] {
        if !value.is_empty() {
            object.insert(name.to_owned(), json!(value));
        }
    }

    for (name, value) in [("properties", &event.properties), ("traits", &event.traits)] {
        if value.is_some() {
            object.insert(name.to_owned(), struct_to_json(value.as_ref()));
        }
    }
    // The gateway reads the session from the context, as Segment's libraries put it there.
    let mut context = match struct_to_json(event.context.as_ref()) {
        Value::Object(context) => context,
        _ => Map::new(),
    };
    if !event.session_id.is_empty() {
        context.insert("session_id".to_owned(), json!(event.session_id));
    }
    if !context.is_empty() {
        object.insert("context".to_owned(), Value::Object(context));
    }

    if let Some(timestamp) = event.timestamp.as_ref().and_then(timestamp_to_rfc3339) {
        object.insert("timestamp".to_owned(), json!(timestamp));
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use rtim_proto::json::{datetime_to_timestamp, json_to_struct};

    use super::*;

    #[test]
    fn segment_event_fields() {
        let Value::Object(properties) = json!({"product_id": "1004856", "price": 130.76}) else {
            unreachable!("the literal is an object");
        };
        let at = chrono::DateTime::parse_from_rfc3339("2019-10-01T00:00:05Z")
            .unwrap()
            .to_utc();
        let event = Event {
            message_id: "m-1".to_owned(),
            r#type: EventType::Track.into(),
            user_id: "541312140".to_owned(),
            event: "Product Viewed".to_owned(),
            properties: Some(json_to_struct(properties)),
            timestamp: Some(datetime_to_timestamp(at)),
            session_id: "s-9".to_owned(),
            ..Event::default()
        };

        let body = segment_batch(std::slice::from_ref(&event));

        assert_eq!(
            body,
            json!({"batch": [{
                "type": "track",
                "messageId": "m-1",
                "userId": "541312140",
                "event": "Product Viewed",
                "properties": {"product_id": "1004856", "price": 130.76},
                "context": {"session_id": "s-9"},
                "timestamp": "2019-10-01T00:00:05.000Z",
            }]})
        );
    }
}
