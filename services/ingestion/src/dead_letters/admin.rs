//! `DeadLetterService`: lists the caller's tenant's entries of the
//! dead-letter stream and replays them through ingestion.

use rtim_bus::{Bus, DeadLetterEntry};
use rtim_proto::events::v1::Event;
use rtim_proto::ingestion::v1 as pb;
use rtim_proto::ingestion::v1::ReplayOutcome;
use rtim_proto::ingestion::v1::dead_letter_service_server::DeadLetterService;
use rtim_runtime::auth::{self, Scope, TenantId};
use rtim_runtime::errors;
use tonic::{Request, Response, Status};

use crate::service::{Ingestion, Stored};

/// Page size when a request leaves it at 0.
const DEFAULT_PAGE_SIZE: usize = 50;
/// Largest page and largest list of ids; a larger page size is cut to it.
const MAX_PAGE_SIZE: usize = 500;
/// Entries one call reads at most while a reason filter skips entries, so
/// that a rare reason in a long stream costs a bounded call and a page token.
const SCAN_BUDGET: usize = 2000;

/// The `DeadLetterService` implementation.
#[derive(Clone, Debug)]
pub struct DeadLetterAdmin {
    bus: Bus,
    /// Ingestion without dead-lettering, which replays go through.
    ingestion: Ingestion,
}

impl DeadLetterAdmin {
    pub fn new(bus: Bus, ingestion: &Ingestion) -> Self {
        Self {
            bus,
            ingestion: ingestion.for_replay(),
        }
    }
}

/// Start and size of a listing.
#[derive(Clone, Copy, Debug)]
struct Page {
    size: usize,
    from_sequence: u64,
}

impl Page {
    fn parse(page_size: i32, page_token: &str) -> Result<Page, Status> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => {
                return Err(errors::invalid_field(
                    "page_size",
                    format!("must be 0 or more, got {size}"),
                ));
            }
            size => (size as usize).min(MAX_PAGE_SIZE),
        };
        let from_sequence = if page_token.is_empty() {
            1
        } else {
            page_token.parse::<u64>().map_err(|_| {
                errors::invalid_field(
                    "page_token",
                    format!("invalid page token '{page_token}'; pass next_page_token of the previous response"),
                )
            })?
        };
        Ok(Page { size, from_sequence })
    }
}

/// Entries found by a scan and the sequence the next scan starts from.
struct Scan {
    entries: Vec<DeadLetterEntry>,
    next: Option<u64>,
}

/// An entry asked for by id, found or not.
enum Lookup {
    Found(Box<DeadLetterEntry>),
    Missing { id: String, detail: String },
}

impl DeadLetterAdmin {
    /// Reads entries of `tenant` with `reason` (any when empty) from the page
    /// start until the page is full, the stream ends or the scan budget is spent.
    async fn scan(&self, tenant: &TenantId, reason: &str, page: Page) -> Result<Scan, Status> {
        let mut entries = Vec::new();
        let mut next = page.from_sequence;
        let mut scanned = 0;
        loop {
            // One entry beyond the page shows whether another page follows.
            let chunk = (page.size + 1).min(SCAN_BUDGET - scanned);
            let read = self
                .bus
                .dead_letters(tenant.as_str(), next, chunk)
                .await
                .map_err(|error| errors::unavailable("dead-letter stream", error))?;
            let ended = read.len() < chunk;
            for entry in read {
                scanned += 1;
                next = entry.sequence + 1;
                if !reason.is_empty() && entry.letter.reason != reason {
                    continue;
                }
                if entries.len() == page.size {
                    return Ok(Scan {
                        entries,
                        next: Some(entry.sequence),
                    });
                }
                entries.push(entry);
            }
            if ended {
                return Ok(Scan { entries, next: None });
            }
            if scanned >= SCAN_BUDGET {
                return Ok(Scan {
                    entries,
                    next: Some(next),
                });
            }
        }
    }

    async fn lookup(&self, tenant: &TenantId, ids: &[String]) -> Result<Vec<Lookup>, Status> {
        let mut lookups = Vec::with_capacity(ids.len());
        for id in ids {
            let Ok(sequence) = id.parse::<u64>() else {
                lookups.push(Lookup::Missing {
                    id: id.clone(),
                    detail: format!("'{id}' is not a dead-letter id; ids are decimal numbers"),
                });
                continue;
            };
            let entry = self
                .bus
                .dead_letter(tenant.as_str(), sequence)
                .await
                .map_err(|error| errors::unavailable("dead-letter stream", error))?;
            lookups.push(match entry {
                Some(entry) => Lookup::Found(Box::new(entry)),
                None => Lookup::Missing {
                    id: id.clone(),
                    detail: format!("no dead letter '{id}' for this tenant"),
                },
            });
        }
        Ok(lookups)
    }

    /// Replays every entry found and returns one result per lookup, in order.
    async fn replay(&self, tenant: &TenantId, lookups: Vec<Lookup>) -> Vec<pb::ReplayResult> {
        let mut results = Vec::with_capacity(lookups.len());
        let mut sequences = Vec::with_capacity(lookups.len());
        let mut rejected = Vec::new();
        let mut redelivered = Vec::new();
        for lookup in lookups {
            let slot = results.len();
            let entry = match lookup {
                Lookup::Found(entry) => *entry,
                Lookup::Missing { id, detail } => {
                    results.push(replay_result(id, ReplayOutcome::NotFound, detail));
                    sequences.push(None);
                    continue;
                }
            };
            let mut result = replay_result(entry.sequence.to_string(), ReplayOutcome::Unspecified, String::new());
            match entry.letter.event {
                None => {
                    result.set_outcome(ReplayOutcome::NotReplayable);
                    result.detail = "the entry contains no event that could be decoded".to_owned();
                }
                Some(event) => {
                    result.message_id = event.message_id.clone();
                    if entry.letter.consumer.is_empty() {
                        rejected.push((slot, event));
                    } else {
                        redelivered.push((slot, event));
                    }
                }
            }
            results.push(result);
            sequences.push(Some(entry.sequence));
        }

        self.store_again(tenant, rejected, &mut results).await;
        self.redeliver(tenant, redelivered, &mut results).await;
        self.delete_settled(tenant, &results, &sequences).await;
        results
    }

    /// Sends events that ingestion rejected through the normal path again.
    async fn store_again(&self, tenant: &TenantId, events: Vec<(usize, Event)>, results: &mut [pb::ReplayResult]) {
        let (slots, events): (Vec<usize>, Vec<Event>) = events.into_iter().unzip();
        let outcomes = self.ingestion.store(tenant, events, |_| "event.".to_owned()).await;
        for (slot, outcome) in slots.into_iter().zip(outcomes) {
            let result = &mut results[slot];
            match outcome {
                Stored::Accepted { duplicate, .. } if duplicate => result.set_outcome(ReplayOutcome::Duplicate),
                Stored::Accepted { .. } => result.set_outcome(ReplayOutcome::Stored),
                Stored::Rejected(rejection) => {
                    result.set_outcome(ReplayOutcome::Invalid);
                    result.reason = rejection.reason.to_owned();
                    result.violations = rejection
                        .violations
                        .into_iter()
                        .map(|violation| pb::FieldViolation {
                            field: violation.field,
                            description: violation.description,
                        })
                        .collect();
                }
                Stored::Failed(error) => {
                    tracing::warn!(tenant.id = %tenant, event.id = %result.message_id, %error, "replayed event not stored");
                    result.set_outcome(ReplayOutcome::Unavailable);
                    result.detail = "the event stream did not store the event; replay again later".to_owned();
                }
            }
        }
    }

    /// Publishes events that a consumer gave up on to the event stream again
    /// under their original message id. Consumers apply each message id
    /// once, so only the ones that never applied the event act on it.
    async fn redeliver(&self, tenant: &TenantId, events: Vec<(usize, Event)>, results: &mut [pb::ReplayResult]) {
        let mut slots = Vec::new();
        let mut messages = Vec::new();
        for (slot, event) in events {
            match self.ingestion.outgoing(tenant, event) {
                Ok(message) => {
                    slots.push(slot);
                    messages.push(message);
                }
                Err(error) => {
                    results[slot].set_outcome(ReplayOutcome::NotReplayable);
                    results[slot].detail = error.to_string();
                }
            }
        }
        let window = self.bus.config().duplicate_window;
        let acks = self.bus.publish_many(messages).await;
        for (slot, ack) in slots.into_iter().zip(acks) {
            let result = &mut results[slot];
            match ack {
                Ok(ack) if ack.duplicate => {
                    result.set_outcome(ReplayOutcome::Unavailable);
                    result.detail = format!(
                        "the event stream still remembers this message id within its duplicate window of {}s and dropped the copy; replay again after it",
                        window.as_secs()
                    );
                }
                Ok(_) => result.set_outcome(ReplayOutcome::Stored),
                Err(error) => {
                    tracing::warn!(tenant.id = %tenant, event.id = %result.message_id, %error, "redelivered event not stored");
                    result.set_outcome(ReplayOutcome::Unavailable);
                    result.detail = "the event stream did not store the event; replay again later".to_owned();
                }
            }
        }
    }

    /// Deletes the entries whose event is now stored. An entry that stays
    /// after a failed delete is harmless: replaying it again finds its
    /// message id stored and reports a duplicate.
    async fn delete_settled(&self, tenant: &TenantId, results: &[pb::ReplayResult], sequences: &[Option<u64>]) {
        for (result, sequence) in results.iter().zip(sequences) {
            let settled = matches!(result.outcome(), ReplayOutcome::Stored | ReplayOutcome::Duplicate);
            let Some(sequence) = sequence.filter(|_| settled) else {
                continue;
            };
            if let Err(error) = self.bus.delete_dead_letter(tenant.as_str(), sequence).await {
                tracing::warn!(tenant.id = %tenant, dead_letter.id = sequence, %error, "deleting a replayed dead letter failed");
            }
        }
    }
}

fn replay_result(id: String, outcome: ReplayOutcome, detail: String) -> pb::ReplayResult {
    pb::ReplayResult {
        id,
        outcome: outcome as i32,
        detail,
        ..pb::ReplayResult::default()
    }
}

fn to_api(entry: DeadLetterEntry) -> pb::DeadLetter {
    let letter = entry.letter;
    pb::DeadLetter {
        id: entry.sequence.to_string(),
        reason: letter.reason,
        violations: letter
            .violations
            .into_iter()
            .map(|violation| pb::FieldViolation {
                field: violation.field,
                description: violation.description,
            })
            .collect(),
        create_time: letter.create_time,
        event: letter.event,
        consumer: letter.consumer,
        error: letter.error,
        delivery_count: letter.delivery_count,
    }
}

#[tonic::async_trait]
impl DeadLetterService for DeadLetterAdmin {
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        let request = request.into_inner();
        let page = Page::parse(request.page_size, &request.page_token)?;
        let scan = self.scan(&tenant, &request.reason, page).await?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: scan.entries.into_iter().map(to_api).collect(),
            next_page_token: scan.next.map(|next| next.to_string()).unwrap_or_default(),
        }))
    }

    async fn replay_dead_letters(
        &self,
        request: Request<pb::ReplayDeadLettersRequest>,
    ) -> Result<Response<pb::ReplayDeadLettersResponse>, Status> {
        let tenant = auth::caller(&request)?.require(Scope::Admin)?.clone();
        let request = request.into_inner();
        if request.ids.len() > MAX_PAGE_SIZE {
            return Err(errors::invalid_field(
                "ids",
                format!("at most {MAX_PAGE_SIZE} ids per call, got {}", request.ids.len()),
            ));
        }

        let (lookups, next) = if request.ids.is_empty() {
            let page = Page::parse(request.page_size, &request.page_token)?;
            let scan = self.scan(&tenant, &request.reason, page).await?;
            let lookups = scan.entries.into_iter().map(|entry| Lookup::Found(Box::new(entry)));
            (lookups.collect(), scan.next)
        } else {
            (self.lookup(&tenant, &request.ids).await?, None)
        };
        let results = self.replay(&tenant, lookups).await;

        let stored = results
            .iter()
            .filter(|result| result.outcome() == ReplayOutcome::Stored)
            .count();
        tracing::info!(tenant.id = %tenant, entries = results.len(), stored, "dead letters replayed");
        Ok(Response::new(pb::ReplayDeadLettersResponse {
            results,
            next_page_token: next.map(|next| next.to_string()).unwrap_or_default(),
            stored: stored as i32,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_defaults_and_caps() {
        let page = Page::parse(0, "").unwrap();
        assert_eq!((page.size, page.from_sequence), (50, 1));
        let page = Page::parse(10_000, "42").unwrap();
        assert_eq!((page.size, page.from_sequence), (500, 42));
    }

    #[test]
    fn bad_page_arguments_name_the_field() {
        let status = Page::parse(-1, "").unwrap_err();
        assert_eq!(errors::field_violations(&status)[0].field, "page_size");
        let status = Page::parse(10, "abc").unwrap_err();
        assert_eq!(errors::field_violations(&status)[0].field, "page_token");
    }
}
