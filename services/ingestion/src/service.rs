//! `IngestionService`: validation, normalisation and publishing.
//!
//! Every call goes through [`Ingestion::store`]: validate, normalise, keep
//! the rejected events in the dead-letter stream, drop retried message ids
//! and order ids, then publish, with each event's outcome reported
//! separately so that one bad event never sinks the others.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use prost::Message;
use rtim_bus::{Bus, BusError, OutgoingMessage, PublishAck, TraceContext};
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::ingestion::v1 as pb;
use rtim_proto::ingestion::v1::ingestion_service_server::IngestionService;
use rtim_runtime::auth::{self, Scope, TenantId};
use rtim_runtime::errors;
use rtim_runtime::settings::IngestionSettings;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};

use crate::dead_letters::DeadLetters;
use crate::dedupe::{Dedupe, Publisher};
use crate::normalise::normalise;
use crate::validate::{self, Limits, Rejection};

/// Machine-readable reason of an event that the event stream did not store.
pub const STREAM_UNAVAILABLE: &str = "STREAM_UNAVAILABLE";
/// Domain of the `ErrorInfo` details that ingestion returns.
const ERROR_DOMAIN: &str = "rtim.ingestion";
/// Delay suggested to clients in `RetryInfo` when the stream is unavailable.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct Ingestion {
    bus: Bus,
    config: Config,
    shutdown: CancellationToken,
    /// Without it, only the event stream's duplicate window drops retries.
    dedupe: Option<Dedupe>,
    dead_letters: Option<DeadLetters>,
}

/// The ingestion settings in the form the request path uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    pub max_batch_events: usize,
    pub limits: Limits,
    pub max_future: TimeDelta,
    pub stream_window: usize,
}

impl Config {
    fn new(settings: &IngestionSettings) -> Self {
        Self {
            max_batch_events: settings.max_batch_events,
            limits: Limits {
                max_event_bytes: settings.max_event_bytes,
            },
            max_future: TimeDelta::from_std(settings.max_future).unwrap_or(TimeDelta::MAX),
            stream_window: settings.stream_window,
        }
    }
}

/// The outcome of storing one event.
pub(crate) enum Stored {
    Accepted { message_id: String, duplicate: bool },
    Rejected(Rejection),
    Failed(BusError),
}

/// An event that validation or normalisation rejected, with its position in
/// the request.
struct Rejected {
    index: usize,
    event: Event,
    rejection: Rejection,
}

impl Ingestion {
    pub fn new(bus: Bus, settings: &IngestionSettings) -> Self {
        Self {
            bus,
            config: Config::new(settings),
            shutdown: CancellationToken::new(),
            dedupe: None,
            dead_letters: None,
        }
    }

    /// Drops retried message ids and order ids over the dedupe window.
    pub fn with_dedupe(mut self, dedupe: Dedupe) -> Self {
        self.dedupe = Some(dedupe);
        self
    }

    /// Keeps every rejected event in the dead-letter stream.
    pub fn with_dead_letters(mut self) -> Self {
        self.dead_letters = Some(DeadLetters::new(self.bus.clone()));
        self
    }

    /// Returns this ingestion without dead-lettering, for replays: an entry
    /// that is still invalid stays where it is instead of being copied.
    pub(crate) fn for_replay(&self) -> Self {
        Self {
            dead_letters: None,
            ..self.clone()
        }
    }

    /// Ends open Stream calls when `shutdown` is cancelled, after they
    /// acknowledge what they already read.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Validates, normalises and publishes events; returns one outcome per
    /// event, in order. `prefix` gives the field path prefix of each event
    /// (`events[3].`).
    pub(crate) async fn store(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
        prefix: impl Fn(usize) -> String,
    ) -> Vec<Stored> {
        let received_at = Utc::now();
        let mut outcomes: Vec<Option<Stored>> = std::iter::repeat_with(|| None).take(events.len()).collect();
        let mut valid = Vec::with_capacity(events.len());
        let mut rejected = Vec::new();
        for (index, mut event) in events.into_iter().enumerate() {
            match self.prepare(&mut event, &prefix(index), received_at) {
                Ok(()) => valid.push((index, event)),
                Err(rejection) => rejected.push(Rejected {
                    index,
                    event,
                    rejection,
                }),
            }
        }

        self.reject(tenant, rejected, &mut outcomes).await;
        let published = match &self.dedupe {
            Some(dedupe) => dedupe.publish_once(tenant, valid, self).await,
            None => self.publish_events(tenant, valid).await,
        };
        for (index, stored) in published {
            outcomes[index] = Some(stored);
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every slot is filled by a rejection or by its publish result"))
            .collect()
    }

    /// Validates and normalises one event.
    fn prepare(&self, event: &mut Event, prefix: &str, received_at: DateTime<Utc>) -> Result<(), Rejection> {
        validate::check_with(event, prefix, &self.config.limits)?;
        normalise(event, received_at, self.config.max_future, prefix)
    }

    /// Records the outcome of every rejected event and keeps the events in the
    /// dead-letter stream. All rejections of a call pass through here.
    async fn reject(&self, tenant: &TenantId, rejected: Vec<Rejected>, outcomes: &mut [Option<Stored>]) {
        let mut kept = Vec::with_capacity(rejected.len());
        for Rejected {
            index,
            event,
            rejection,
        } in rejected
        {
            tracing::debug!(
                tenant.id = %tenant,
                event.id = %event.message_id,
                reason = rejection.reason,
                "event rejected"
            );
            outcomes[index] = Some(Stored::Rejected(rejection.clone()));
            kept.push((event, rejection));
        }
        if let Some(dead_letters) = &self.dead_letters {
            dead_letters.keep(tenant, kept).await;
        }
    }

    /// Publishes events, each tagged with its position in the request, in one
    /// pipeline, and returns one outcome per event in the same order.
    async fn publish_events(&self, tenant: &TenantId, events: Vec<(usize, Event)>) -> Vec<(usize, Stored)> {
        let mut outcomes: Vec<(usize, Option<Stored>)> = Vec::with_capacity(events.len());
        let mut slots = Vec::with_capacity(events.len());
        let mut messages = Vec::with_capacity(events.len());
        for (index, event) in events {
            let message_id = event.message_id.clone();
            match self.outgoing(tenant, event) {
                Ok(message) => {
                    slots.push((outcomes.len(), message_id));
                    outcomes.push((index, None));
                    messages.push(message);
                }
                Err(error) => outcomes.push((index, Some(Stored::Failed(error)))),
            }
        }
        let acks = self.bus.publish_many(messages).await;
        for ((slot, message_id), ack) in slots.into_iter().zip(acks) {
            outcomes[slot].1 = Some(match ack {
                Ok(PublishAck { duplicate, .. }) => Stored::Accepted { message_id, duplicate },
                Err(error) => Stored::Failed(error),
            });
        }
        outcomes
            .into_iter()
            .map(|(index, outcome)| (index, outcome.expect("every slot is filled by its publish result")))
            .collect()
    }

    pub(crate) fn outgoing(&self, tenant: &TenantId, event: Event) -> Result<OutgoingMessage, BusError> {
        let kind = kind(event.r#type());
        let subject = self.bus.events_subject(tenant.as_str(), kind)?;
        let message_id = format!("{tenant}:{}", event.message_id);
        let envelope = EventEnvelope {
            tenant_id: tenant.to_string(),
            event: Some(event),
        };
        Ok(OutgoingMessage {
            subject,
            message_id,
            tenant: tenant.to_string(),
            payload: Bytes::from(envelope.encode_to_vec()),
            // Left empty: the bus fills in its publish span, a child of this
            // request's span, once for every event of the call.
            trace: TraceContext::default(),
        })
    }

    async fn single(&self, request: Request<Event>, kind: EventType) -> Result<(String, bool), Status> {
        let tenant = auth::caller(&request)?.require(Scope::Write)?.clone();
        let mut event = request.into_inner();
        event.r#type = kind as i32;
        let outcome = self.store(&tenant, vec![event], |_| "event.".to_owned()).await;
        match outcome.into_iter().next() {
            Some(Stored::Accepted { message_id, duplicate }) => {
                count("accepted", 1);
                Ok((message_id, duplicate))
            }
            Some(Stored::Rejected(rejection)) => {
                count("rejected", 1);
                Err(rejected_status(&rejection))
            }
            Some(Stored::Failed(error)) => Err(unstored(error)),
            None => Err(errors::internal("ingest", "no outcome for a single event")),
        }
    }
}

impl Publisher for Ingestion {
    fn publish(
        &self,
        tenant: &TenantId,
        events: Vec<(usize, Event)>,
    ) -> impl Future<Output = Vec<(usize, Stored)>> + Send {
        self.publish_events(tenant, events)
    }
}

/// INVALID_ARGUMENT with the violations as `BadRequest` and the reason as
/// `ErrorInfo`.
fn rejected_status(rejection: &Rejection) -> Status {
    let message = errors::invalid_argument(&rejection.violations).message().to_owned();
    let mut details = ErrorDetails::with_error_info(rejection.reason, ERROR_DOMAIN, []);
    for violation in &rejection.violations {
        details.add_bad_request_violation(violation.field.clone(), violation.description.clone());
    }
    Status::with_error_details(Code::InvalidArgument, message, details)
}

/// The status of a call none of whose events were stored: UNAVAILABLE with a
/// retry delay when the event stream could not store them.
fn unstored(error: BusError) -> Status {
    count("failed", 1);
    if !error.is_unavailable() {
        return Status::failed_precondition(error.to_string());
    }
    tracing::warn!(error = %error, "event stream unavailable");
    let mut details = ErrorDetails::with_error_info(STREAM_UNAVAILABLE, ERROR_DOMAIN, []);
    details.set_retry_info(Some(RETRY_DELAY));
    Status::with_error_details(
        Code::Unavailable,
        "event stream is unavailable, nothing was stored; retry later with the same message ids",
        details,
    )
}

fn count(outcome: &'static str, n: usize) {
    metrics::counter!("rtim_ingestion_events_total", "outcome" => outcome).increment(n as u64);
}

/// Last token of the subject for each event type.
fn kind(event_type: EventType) -> &'static str {
    match event_type {
        EventType::Unspecified => "unspecified",
        EventType::Track => "track",
        EventType::Identify => "identify",
        EventType::Page => "page",
        EventType::Screen => "screen",
        EventType::Alias => "alias",
        EventType::Group => "group",
    }
}

fn event_of<T>(request: Request<T>, take: impl FnOnce(T) -> Option<Event>) -> Result<Request<Event>, Status> {
    let (metadata, extensions, message) = request.into_parts();
    let event = take(message).ok_or_else(|| errors::invalid_field("event", "event is required"))?;
    Ok(Request::from_parts(metadata, extensions, event))
}

#[tonic::async_trait]
impl IngestionService for Ingestion {
    async fn track(&self, request: Request<pb::TrackRequest>) -> Result<Response<pb::TrackResponse>, Status> {
        let (message_id, duplicate) = self.single(event_of(request, |r| r.event)?, EventType::Track).await?;
        Ok(Response::new(pb::TrackResponse { message_id, duplicate }))
    }

    async fn identify(&self, request: Request<pb::IdentifyRequest>) -> Result<Response<pb::IdentifyResponse>, Status> {
        let (message_id, duplicate) = self
            .single(event_of(request, |r| r.event)?, EventType::Identify)
            .await?;
        Ok(Response::new(pb::IdentifyResponse { message_id, duplicate }))
    }

    async fn page(&self, request: Request<pb::PageRequest>) -> Result<Response<pb::PageResponse>, Status> {
        let (message_id, duplicate) = self.single(event_of(request, |r| r.event)?, EventType::Page).await?;
        Ok(Response::new(pb::PageResponse { message_id, duplicate }))
    }

    async fn screen(&self, request: Request<pb::ScreenRequest>) -> Result<Response<pb::ScreenResponse>, Status> {
        let (message_id, duplicate) = self.single(event_of(request, |r| r.event)?, EventType::Screen).await?;
        Ok(Response::new(pb::ScreenResponse { message_id, duplicate }))
    }

    async fn alias(&self, request: Request<pb::AliasRequest>) -> Result<Response<pb::AliasResponse>, Status> {
        let (message_id, duplicate) = self.single(event_of(request, |r| r.event)?, EventType::Alias).await?;
        Ok(Response::new(pb::AliasResponse { message_id, duplicate }))
    }

    async fn group(&self, request: Request<pb::GroupRequest>) -> Result<Response<pb::GroupResponse>, Status> {
        let (message_id, duplicate) = self.single(event_of(request, |r| r.event)?, EventType::Group).await?;
        Ok(Response::new(pb::GroupResponse { message_id, duplicate }))
    }

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Write)?.clone();
        let events = request.into_inner().events;
        if events.is_empty() {
            return Err(errors::invalid_field("events", "a batch needs at least one event"));
        }
        if events.len() > self.config.max_batch_events {
            return Err(errors::invalid_field(
                "events",
                format!(
                    "a batch holds at most {} events, got {}",
                    self.config.max_batch_events,
                    events.len()
                ),
            ));
        }

        let outcomes = self.store(&tenant, events, |index| format!("events[{index}].")).await;
        if outcomes.iter().all(|outcome| matches!(outcome, Stored::Failed(_))) {
            let Some(Stored::Failed(error)) = outcomes.into_iter().next() else {
                unreachable!("a batch has at least one event and every outcome failed");
            };
            return Err(unstored(error));
        }
        let mut response = pb::BatchResponse {
            results: event_results(outcomes),
            ..pb::BatchResponse::default()
        };
        for result in &response.results {
            if result.accepted {
                response.accepted += 1;
            } else {
                response.rejected += 1;
            }
        }
        Ok(Response::new(response))
    }

    type StreamStream = crate::stream::ResponseStream;

    async fn stream(
        &self,
        request: Request<Streaming<pb::StreamRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Write)?.clone();
        Ok(Response::new(crate::stream::serve(
            self.clone(),
            tenant,
            request.into_inner(),
        )))
    }
}

/// Converts outcomes into per-event results, indexed by position, and counts
/// them.
pub(crate) fn event_results(outcomes: Vec<Stored>) -> Vec<pb::EventResult> {
    let mut counts = [0usize; 3];
    let results = outcomes
        .into_iter()
        .enumerate()
        .map(|(index, outcome)| {
            let mut result = pb::EventResult {
                index: index as i32,
                ..pb::EventResult::default()
            };
            match outcome {
                Stored::Accepted { message_id, duplicate } => {
                    counts[0] += 1;
                    result.message_id = message_id;
                    result.accepted = true;
                    result.duplicate = duplicate;
                    result.set_outcome(if duplicate {
                        pb::EventOutcome::Duplicate
                    } else {
                        pb::EventOutcome::Accepted
                    });
                }
                Stored::Rejected(rejection) => {
                    counts[1] += 1;
                    result.reason = rejection.reason.to_owned();
                    result.violations = rejection
                        .violations
                        .into_iter()
                        .map(|violation| pb::FieldViolation {
                            field: violation.field,
                            description: violation.description,
                        })
                        .collect();
                    result.set_outcome(pb::EventOutcome::Rejected);
                }
                Stored::Failed(error) => {
                    counts[2] += 1;
                    if counts[2] == 1 {
                        tracing::warn!(%error, "event stream did not store events of a call");
                    }
                    result.reason = STREAM_UNAVAILABLE.to_owned();
                    result.set_outcome(pb::EventOutcome::Unavailable);
                }
            }
            result
        })
        .collect();
    count("accepted", counts[0]);
    count("rejected", counts[1]);
    count("failed", counts[2]);
    results
}
