//! `IngestionService`: validation, normalisation and publishing.

use bytes::Bytes;
use chrono::Utc;
use prost::Message;
use rtim_bus::{Bus, BusError, OutgoingMessage, PublishAck};
use rtim_proto::bus::v1::EventEnvelope;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::ingestion::v1 as pb;
use rtim_proto::ingestion::v1::ingestion_service_server::IngestionService;
use rtim_proto::json::datetime_to_timestamp;
use rtim_runtime::auth::{self, Scope, TenantId};
use rtim_runtime::errors;
use tonic::{Request, Response, Status};

use crate::dead_letters::DeadLetters;
use crate::dedupe::{Dedupe, Publisher};
use crate::validate::{self, Rejection};

#[derive(Clone, Debug)]
pub struct Ingestion {
    bus: Bus,
    max_batch_events: usize,
    /// Without it, only the event stream's duplicate window drops retries.
    dedupe: Option<Dedupe>,
    dead_letters: Option<DeadLetters>,
}

/// The outcome of storing one event.
pub(crate) enum Stored {
    Accepted { message_id: String, duplicate: bool },
    Rejected(Rejection),
    Failed(BusError),
}

impl Ingestion {
    pub fn new(bus: Bus, max_batch_events: usize) -> Self {
        Self {
            bus,
            max_batch_events,
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

    /// Fills in the message id and timestamps the client may leave out.
    fn normalise(mut event: Event) -> Event {
        let now = datetime_to_timestamp(Utc::now());
        if event.message_id.is_empty() {
            event.message_id = uuid::Uuid::new_v4().to_string();
        }
        event.original_timestamp = event.timestamp;
        if event.timestamp.is_none() {
            event.timestamp = Some(now);
        }
        event.received_at = Some(now);
        event
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
            traceparent: None,
        })
    }

    /// Validates and stores events; returns one outcome per event, in order.
    pub(crate) async fn store(
        &self,
        tenant: &TenantId,
        events: Vec<Event>,
        prefix: impl Fn(usize) -> String,
    ) -> Vec<Stored> {
        let mut outcomes: Vec<Option<Stored>> = Vec::with_capacity(events.len());
        let mut valid = Vec::new();
        let mut rejected = Vec::new();
        for (index, event) in events.into_iter().enumerate() {
            match validate::check(&event, &prefix(index)) {
                Ok(()) => {
                    valid.push((index, Self::normalise(event)));
                    outcomes.push(None);
                }
                Err(rejection) => {
                    outcomes.push(Some(Stored::Rejected(rejection.clone())));
                    rejected.push((event, rejection));
                }
            }
        }
        if let Some(dead_letters) = &self.dead_letters {
            dead_letters.keep(tenant, rejected).await;
        }

        let published = match &self.dedupe {
            Some(dedupe) => dedupe.publish_once(tenant, valid, self).await,
            None => self.publish_events(tenant, valid).await,
        };
        for (index, stored) in published {
            outcomes[index] = Some(stored);
        }
        outcomes
            .into_iter()
            .map(|outcome| outcome.expect("every slot is filled by validation or by its publish result"))
            .collect()
    }

    /// Publishes events, each tagged with its position in the request, and
    /// returns one outcome per event in the same order.
    async fn publish_events(&self, tenant: &TenantId, events: Vec<(usize, Event)>) -> Vec<(usize, Stored)> {
        let mut outcomes = Vec::with_capacity(events.len());
        let mut pending = Vec::new();
        for (index, event) in events {
            let message_id = event.message_id.clone();
            match self.outgoing(tenant, event) {
                Ok(message) => {
                    pending.push((outcomes.len(), message_id, message));
                    outcomes.push((index, None));
                }
                Err(error) => outcomes.push((index, Some(Stored::Failed(error)))),
            }
        }

        let (slots, messages): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .map(|(slot, message_id, message)| ((slot, message_id), message))
            .unzip();
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
                Err(errors::invalid_argument(&rejection.violations))
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

fn unstored(error: BusError) -> Status {
    count("failed", 1);
    match error {
        BusError::InvalidToken(_) => Status::failed_precondition(error.to_string()),
        other => errors::unavailable("event stream", other),
    }
}

fn count(outcome: &'static str, n: usize) {
    metrics::counter!("ingestion_events_total", "outcome" => outcome).increment(n as u64);
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

    async fn batch(&self, request: Request<pb::BatchRequest>) -> Result<Response<pb::BatchResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Write)?.clone();
        let events = request.into_inner().events;
        if events.is_empty() {
            return Err(errors::invalid_field("events", "a batch needs at least one event"));
        }
        if events.len() > self.max_batch_events {
            return Err(errors::invalid_field(
                "events",
                format!(
                    "a batch holds at most {} events, got {}",
                    self.max_batch_events,
                    events.len()
                ),
            ));
        }

        let outcomes = self.store(&tenant, events, |index| format!("events[{index}].")).await;
        if !outcomes.is_empty() && outcomes.iter().all(|outcome| matches!(outcome, Stored::Failed(_))) {
            let Some(Stored::Failed(error)) = outcomes.into_iter().next() else {
                unreachable!("checked above that every outcome failed");
            };
            return Err(unstored(error));
        }
        Ok(Response::new(batch_response(outcomes)))
    }
}

fn batch_response(outcomes: Vec<Stored>) -> pb::BatchResponse {
    let mut response = pb::BatchResponse::default();
    for (index, outcome) in outcomes.into_iter().enumerate() {
        let mut result = pb::EventResult {
            index: index as i32,
            ..pb::EventResult::default()
        };
        match outcome {
            Stored::Accepted { message_id, duplicate } => {
                result.message_id = message_id;
                result.accepted = true;
                result.duplicate = duplicate;
                response.accepted += 1;
            }
            Stored::Rejected(rejection) => {
                result.reason = rejection.reason.to_owned();
                result.violations = rejection
                    .violations
                    .into_iter()
                    .map(|violation| pb::FieldViolation {
                        field: violation.field,
                        description: violation.description,
                    })
                    .collect();
                response.rejected += 1;
            }
            Stored::Failed(error) => {
                tracing::warn!(%error, "event not stored");
                result.reason = "STREAM_UNAVAILABLE".to_owned();
                response.rejected += 1;
            }
        }
        response.results.push(result);
    }
    count("accepted", response.accepted as usize);
    count("rejected", response.rejected as usize);
    response
}
