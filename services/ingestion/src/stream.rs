//! The Stream RPC: events in, one response per request out, with flow
//! control.
//!
//! A session task reads requests and publishes their events in small groups,
//! several groups at a time. At most `ingestion.stream_window` events are in
//! flight: read from the client and not yet acknowledged. When the window is
//! full the task stops reading, so the request stream's HTTP/2 flow-control
//! window fills and the client's sends wait. The same happens when the client
//! reads its responses slowly: sending a response waits for room in a small
//! buffer, and no request is read meanwhile. For one stream the server
//! therefore keeps at most the window's events, one request waiting for
//! room, [`RESPONSE_BUFFER`] responses and the transport's buffers.

use std::future::Future;
use std::pin::Pin;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, Stream, StreamExt};
use rtim_proto::ingestion::v1::{StreamRequest, StreamResponse};
use rtim_runtime::auth::TenantId;
use rtim_runtime::errors;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::decode::classify_stream_error;
use crate::service::{Ingestion, event_results};

/// The response stream of the Stream RPC.
pub type ResponseStream = ReceiverStream<Result<StreamResponse, Status>>;

/// Events published together in one pipeline. A group starts as soon as the
/// requests already received fill it or no more are waiting, so a lone event
/// is not held back, while several groups in flight keep the event stream
/// busy under load.
const GROUP_EVENTS: usize = 64;
/// Responses held for a client that reads slowly before the session stops
/// reading requests.
const RESPONSE_BUFFER: usize = 16;

/// Starts a session for one Stream call and returns its responses.
pub(crate) fn serve<S>(ingestion: Ingestion, tenant: TenantId, inbound: S) -> ResponseStream
where
    S: Stream<Item = Result<StreamRequest, Status>> + Unpin + Send + 'static,
{
    let (responses, receiver) = mpsc::channel(RESPONSE_BUFFER);
    let session = Session {
        window: ingestion.config().stream_window,
        ingestion,
        tenant,
        responses,
        in_flight: 0,
        group: Vec::new(),
        group_events: 0,
        groups: FuturesOrdered::new(),
    };
    tokio::spawn(session.run(inbound));
    ReceiverStream::new(receiver)
}

/// The responses to one group of requests.
struct Answered {
    events: usize,
    responses: Vec<StreamResponse>,
}

type GroupFuture = Pin<Box<dyn Future<Output = Answered> + Send>>;

struct Session {
    ingestion: Ingestion,
    tenant: TenantId,
    responses: mpsc::Sender<Result<StreamResponse, Status>>,
    window: usize,
    /// Events read and not yet acknowledged, including those in `group`.
    in_flight: usize,
    /// Requests admitted to the window and not yet published.
    group: Vec<StreamRequest>,
    group_events: usize,
    /// Groups being published, acknowledged in the order they were read.
    groups: FuturesOrdered<GroupFuture>,
}

/// State of reading the request stream.
enum Reading {
    Open,
    /// The client closed its side: acknowledge what was read, then end with OK.
    Closed,
    /// Acknowledge what was read, then end with this status.
    Ending(Status),
}

impl Session {
    async fn run<S>(mut self, mut inbound: S)
    where
        S: Stream<Item = Result<StreamRequest, Status>> + Unpin,
    {
        tracing::debug!(tenant.id = %self.tenant, "event stream opened");
        let mut reading = Reading::Open;
        // A request that was read while the window had no room for it.
        let mut waiting: Option<StreamRequest> = None;
        loop {
            if let Some(request) = waiting.take() {
                waiting = self.admit(request);
            }
            while waiting.is_none() && matches!(reading, Reading::Open) {
                let Some(item) = inbound.next().now_or_never() else {
                    break;
                };
                waiting = self.receive(item, &mut reading);
            }
            self.launch_group();
            if !matches!(reading, Reading::Open) && waiting.is_none() && self.groups.is_empty() {
                break;
            }

            let can_read = waiting.is_none() && matches!(reading, Reading::Open);
            tokio::select! {
                biased;
                Some(answered) = self.groups.next(), if !self.groups.is_empty() => {
                    if !self.send(answered).await {
                        tracing::debug!(tenant.id = %self.tenant, "event stream closed by the client");
                        return;
                    }
                }
                item = inbound.next(), if can_read => waiting = self.receive(item, &mut reading),
                () = self.ingestion.shutdown().cancelled(), if matches!(reading, Reading::Open) => {
                    reading = Reading::Ending(Status::unavailable(
                        "ingestion is shutting down; open a new stream and resend what was not acknowledged",
                    ));
                }
            }
        }

        if let Reading::Ending(status) = reading {
            tracing::debug!(tenant.id = %self.tenant, status = ?status.code(), "event stream ended with an error");
            // The client may have disconnected already, and then the status is dropped.
            self.responses.send(Err(status)).await.ok();
        }
        tracing::debug!(tenant.id = %self.tenant, "event stream closed");
    }

    /// Handles one item of the request stream and returns the request when
    /// the window has no room for it yet.
    fn receive(&mut self, item: Option<Result<StreamRequest, Status>>, reading: &mut Reading) -> Option<StreamRequest> {
        let request = match item {
            Some(Ok(request)) => request,
            Some(Err(status)) => {
                *reading = Reading::Ending(classify_stream_error(status));
                return None;
            }
            None => {
                *reading = Reading::Closed;
                return None;
            }
        };
        if request.events.is_empty() {
            *reading = Reading::Ending(errors::invalid_field(
                "events",
                format!("request {} holds no events; send at least one", request.sequence),
            ));
            return None;
        }
        if request.events.len() > self.window {
            *reading = Reading::Ending(errors::invalid_field(
                "events",
                format!(
                    "request {} holds {} events, more than the stream window of {} (ingestion.stream_window)",
                    request.sequence,
                    request.events.len(),
                    self.window
                ),
            ));
            return None;
        }
        self.admit(request)
    }

    /// Adds the request to the current group when the window has room for
    /// its events; otherwise returns it.
    fn admit(&mut self, request: StreamRequest) -> Option<StreamRequest> {
        let events = request.events.len();
        if self.in_flight + events > self.window {
            return Some(request);
        }
        self.in_flight += events;
        self.group_events += events;
        self.group.push(request);
        if self.group_events >= GROUP_EVENTS {
            self.launch_group();
        }
        None
    }

    /// Starts publishing the current group, if it contains any request.
    fn launch_group(&mut self) {
        if self.group.is_empty() {
            return;
        }
        let requests = std::mem::take(&mut self.group);
        let events = std::mem::take(&mut self.group_events);
        let ingestion = self.ingestion.clone();
        let tenant = self.tenant.clone();
        self.groups.push_back(Box::pin(async move {
            let responses = store_group(&ingestion, &tenant, requests).await;
            Answered { events, responses }
        }));
    }

    /// Sends the responses of one group, waiting while the client's buffer is
    /// full; returns false when the client has gone.
    async fn send(&mut self, answered: Answered) -> bool {
        self.in_flight -= answered.events;
        for response in answered.responses {
            if self.responses.send(Ok(response)).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Stores the events of several requests in one pipeline and returns one
/// response per request.
async fn store_group(ingestion: &Ingestion, tenant: &TenantId, requests: Vec<StreamRequest>) -> Vec<StreamResponse> {
    let mut sizes = Vec::with_capacity(requests.len());
    let mut events = Vec::new();
    let mut prefixes = Vec::new();
    for request in requests {
        sizes.push((request.sequence, request.events.len()));
        prefixes.extend((0..request.events.len()).map(|index| format!("events[{index}].")));
        events.extend(request.events);
    }

    let mut outcomes = ingestion
        .store(tenant, events, |index| prefixes[index].clone())
        .await
        .into_iter();
    sizes
        .into_iter()
        .map(|(sequence, size)| StreamResponse {
            sequence,
            results: event_results(outcomes.by_ref().take(size).collect()),
        })
        .collect()
}
