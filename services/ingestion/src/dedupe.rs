//! Deduplication over a long window, across replicas: before an event is
//! published, ingestion claims `dedupe:<tenant>:<message_id>` in the cache
//! (Redis in the mesh) and, for a track event named "Order Completed" with
//! `properties.order_id`, `order:<tenant>:<order_id>` too. JetStream's own
//! `Nats-Msg-Id` window (two minutes) stays as a second line.
//!
//! A claim is first `pending` for [`CLAIM_LEASE`], and becomes `stored` for
//! the dedupe window once the stream has stored the event. A failed publish
//! deletes the claim so that a retry is stored. A request that finds a
//! pending claim neither publishes nor replies. It waits until the claim is
//! stored (then it returns duplicate) or gone (then it claims). That way two
//! concurrent requests with one message id publish once, and neither is told
//! "duplicate" about an event that then fails to be stored.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use prost::Message;
use prost_types::value::Kind;
use rtim_cache::{Cache, CacheError};
use rtim_proto::events::v1::{Event, EventType};
use rtim_runtime::auth::TenantId;
use sha2::{Digest, Sha256};

use crate::service::Stored;

/// How long a pending claim lives. It must outlast a publish, which
/// JetStream acknowledges or times out within 5 s, so that a slow publish
/// keeps its claim. It must stay under JetStream's duplicate window, which
/// catches the rare publish that outlives its lease. A replica that dies
/// while holding a claim delays a retry of that event by at most this long.
pub const CLAIM_LEASE: Duration = Duration::from_secs(30);

/// Claims in flight at once for one request, below the Redis pool size.
const CLAIM_CONCURRENCY: usize = 8;

/// First and last pause between two looks at claims that another request has.
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Track event name whose `properties.order_id` is deduplicated as well.
pub const ORDER_COMPLETED: &str = "Order Completed";

/// Claims message ids and order ids in the cache.
#[derive(Clone, Debug)]
pub struct Dedupe {
    cache: Cache,
    window: Duration,
}

/// Stores events on the event stream.
pub(crate) trait Publisher: Sync {
    /// Publishes events, each tagged with its position in the request, and
    /// returns one outcome per event in the same order.
    fn publish(
        &self,
        tenant: &TenantId,
        events: Vec<(usize, Event)>,
    ) -> impl Future<Output = Vec<(usize, Stored)>> + Send;
}

/// What to do with one valid event.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Publish it, then [`Dedupe::settle`] the claim with the result.
    Publish(Claim),
    /// An event with the same message id, or the same order id, is stored,
    /// so the reply is `duplicate = true` and nothing is published.
    Duplicate,
    /// Another request has a pending claim on the message id or order id,
    /// so this one claims again once that one settled.
    Busy,
}

/// Keys claimed for one event, each with the value it takes once the event
/// is stored. Empty when the cache was unavailable and the event goes out
/// with only JetStream's window to catch a duplicate.
#[derive(Debug, Default)]
pub(crate) struct Claim {
    keys: Vec<(String, String)>,
}

/// State and subject of a claim as stored in the cache: `pending:<subject>`
/// or `stored:<subject>`, where the subject is the content hash for a
/// message id and the message id for an order id.
#[derive(Debug, PartialEq, Eq)]
struct ClaimValue {
    stored: bool,
    subject: String,
}

impl ClaimValue {
    fn pending(subject: &str) -> String {
        format!("pending:{subject}")
    }

    fn stored(subject: &str) -> String {
        format!("stored:{subject}")
    }

    /// Parses a stored value. An unknown form is read as stored with an
    /// unknown subject, so that it never lets a duplicate through.
    fn parse(bytes: &[u8]) -> ClaimValue {
        let text = String::from_utf8_lossy(bytes);
        match text.split_once(':') {
            Some(("pending", subject)) => ClaimValue {
                stored: false,
                subject: subject.to_owned(),
            },
            Some(("stored", subject)) => ClaimValue {
                stored: true,
                subject: subject.to_owned(),
            },
            _ => ClaimValue {
                stored: true,
                subject: String::new(),
            },
        }
    }
}

/// Outcome of one attempt to claim a key.
enum Attempt {
    Won,
    Held(ClaimValue),
}

impl Dedupe {
    /// Claims keys in `cache` (which the caller scopes to ingestion) for `window`.
    pub fn new(cache: Cache, window: Duration) -> Self {
        Self { cache, window }
    }

    /// Publishes each event, tagged with its position in the request, unless
    /// its message id or order id is already stored, and returns one outcome
    /// per event, in no particular order.
    ///
    /// Events go in rounds. A round contains each message id and order id
    /// once, so a request never waits on its own claim. Events whose claim
    /// another request has wait for the next round and keep no claim
    /// meanwhile. After [`CLAIM_LEASE`] of waiting, which only a stuck cache
    /// causes because claims expire by then, the rest go out unclaimed.
    pub(crate) async fn publish_once(
        &self,
        tenant: &TenantId,
        events: Vec<(usize, Event)>,
        publisher: &impl Publisher,
    ) -> Vec<(usize, Stored)> {
        let started = Instant::now();
        let mut pause = FIRST_PAUSE;
        let mut outcomes = Vec::with_capacity(events.len());
        let mut waiting = events;
        while !waiting.is_empty() {
            let (round, mut later) = split_round(waiting);
            let events: Vec<&Event> = round.iter().map(|(_, event)| event).collect();
            let verdicts = self.claim(tenant, &events).await;

            let mut claims = Vec::new();
            let mut to_publish = Vec::new();
            let mut busy = false;
            for ((index, event), verdict) in round.into_iter().zip(verdicts) {
                match verdict {
                    Verdict::Publish(claim) => {
                        claims.push(claim);
                        to_publish.push((index, event));
                    }
                    Verdict::Duplicate => outcomes.push((
                        index,
                        Stored::Accepted {
                            message_id: event.message_id,
                            duplicate: true,
                        },
                    )),
                    Verdict::Busy if started.elapsed() >= CLAIM_LEASE => {
                        tracing::warn!(tenant.id = %tenant, event.id = %event.message_id, "dedupe claim still held after its lease, publishing unclaimed");
                        claims.push(Claim::default());
                        to_publish.push((index, event));
                    }
                    Verdict::Busy => {
                        busy = true;
                        later.push((index, event));
                    }
                }
            }

            let published = publisher.publish(tenant, to_publish).await;
            let settled = claims
                .into_iter()
                .zip(&published)
                .map(|(claim, (_, stored))| (claim, matches!(stored, Stored::Accepted { .. })))
                .collect();
            self.settle_all(settled).await;
            outcomes.extend(published);

            if busy {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            later.sort_by_key(|(index, _)| *index);
            waiting = later;
        }
        outcomes
    }

    /// Claims every event, which must carry its message id, and returns one
    /// verdict per event, in order. The events must have distinct message
    /// ids and order ids, because a request would wait on its own claim.
    pub(crate) async fn claim(&self, tenant: &TenantId, events: &[&Event]) -> Vec<Verdict> {
        let mut attempts: Vec<Result<Verdict, CacheError>> = Vec::with_capacity(events.len());
        for chunk in events.chunks(CLAIM_CONCURRENCY) {
            let claims = chunk.iter().map(|event| self.claim_one(tenant, event));
            attempts.extend(futures::future::join_all(claims).await);
        }

        let failures = attempts.iter().filter(|attempt| attempt.is_err()).count();
        if let Some(Err(error)) = attempts.iter().find(|attempt| attempt.is_err()) {
            tracing::warn!(
                tenant.id = %tenant,
                events = failures,
                %error,
                "dedupe cache unavailable, publishing with only the event stream's duplicate window"
            );
            metrics::counter!("ingestion_dedupe_unavailable_total", "tenant" => tenant.to_string())
                .increment(failures as u64);
        }
        attempts
            .into_iter()
            .map(|attempt| attempt.unwrap_or_else(|_| Verdict::Publish(Claim::default())))
            .collect()
    }

    async fn claim_one(&self, tenant: &TenantId, event: &Event) -> Result<Verdict, CacheError> {
        let hash = content_hash(event);
        let message_key = format!("dedupe:{tenant}:{}", event.message_id);
        match self.try_claim(&message_key, &ClaimValue::pending(&hash)).await? {
            Attempt::Won => {}
            Attempt::Held(held) if !held.stored => return Ok(Verdict::Busy),
            Attempt::Held(held) => {
                if held.subject != hash {
                    record_conflict(tenant, &event.message_id);
                }
                return Ok(Verdict::Duplicate);
            }
        }
        let mut claim = Claim {
            keys: vec![(message_key.clone(), ClaimValue::stored(&hash))],
        };
        let Some(order_id) = order_id(event) else {
            return Ok(Verdict::Publish(claim));
        };

        let order_key = format!("order:{tenant}:{order_id}");
        let attempt = self
            .try_claim(&order_key, &ClaimValue::pending(&event.message_id))
            .await;
        match attempt {
            Ok(Attempt::Won) => {}
            Ok(Attempt::Held(held)) if held.stored => {
                // Answered as a duplicate, so a retry of this message id is one too.
                self.settle(claim, true).await;
                if held.subject != event.message_id {
                    metrics::counter!("ingestion_duplicate_orders_total", "tenant" => tenant.to_string()).increment(1);
                    tracing::debug!(tenant.id = %tenant, event.id = %event.message_id, order.id = %order_id, "order already stored under another message id");
                }
                return Ok(Verdict::Duplicate);
            }
            Ok(Attempt::Held(_)) => {
                // Hold nothing while waiting, or two requests could wait on each other.
                self.settle(claim, false).await;
                return Ok(Verdict::Busy);
            }
            Err(error) => {
                self.settle(claim, false).await;
                return Err(error);
            }
        }
        claim.keys.push((order_key, ClaimValue::stored(&event.message_id)));
        Ok(Verdict::Publish(claim))
    }

    /// Sets `key` to `value` for the lease when it is absent, or returns the claim already there.
    async fn try_claim(&self, key: &str, value: &str) -> Result<Attempt, CacheError> {
        // A claim released or expired between the two calls is tried again.
        for _ in 0..3 {
            if self.cache.set_if_absent(key, value.as_bytes(), CLAIM_LEASE).await? {
                return Ok(Attempt::Won);
            }
            if let Some(held) = self.cache.get(key).await? {
                return Ok(Attempt::Held(ClaimValue::parse(&held)));
            }
        }
        Ok(Attempt::Held(ClaimValue {
            stored: false,
            subject: String::new(),
        }))
    }

    /// Marks the claim stored for the dedupe window when `stored`, or
    /// deletes it so that a retry can be stored. A cache failure here is
    /// logged, and a claim left pending expires after the lease.
    ///
    /// NOTE: a publish that outlives the lease settles keys that another
    /// request may have claimed since, because the cache offers no
    /// compare-and-delete. JetStream's duplicate window covers that case.
    pub(crate) async fn settle(&self, claim: Claim, stored: bool) {
        for (key, value) in claim.keys {
            let result = if stored {
                self.cache.set(&key, value.as_bytes(), self.window).await
            } else {
                self.cache.delete(&key).await
            };
            if let Err(error) = result {
                tracing::warn!(cache.key = %key, stored, %error, "settling a dedupe claim failed, it expires after its lease");
            }
        }
    }

    /// Settles many claims, a few at a time.
    pub(crate) async fn settle_all(&self, claims: Vec<(Claim, bool)>) {
        let mut claims = claims.into_iter().peekable();
        while claims.peek().is_some() {
            let chunk = claims
                .by_ref()
                .take(CLAIM_CONCURRENCY)
                .map(|(claim, stored)| self.settle(claim, stored));
            futures::future::join_all(chunk).await;
        }
    }
}

/// Events, each with its position in the request.
type Tagged = Vec<(usize, Event)>;

/// Splits events into a first round that contains each message id and
/// order id once, and the rest.
fn split_round(events: Tagged) -> (Tagged, Tagged) {
    let mut keys = HashSet::new();
    let mut round = Vec::new();
    let mut later = Vec::new();
    for (index, event) in events {
        let message_key = format!("m:{}", event.message_id);
        let order_key = order_id(&event).map(|order_id| format!("o:{order_id}"));
        let seen = keys.contains(&message_key) || order_key.as_ref().is_some_and(|key| keys.contains(key));
        if seen {
            later.push((index, event));
            continue;
        }
        keys.insert(message_key);
        keys.extend(order_key);
        round.push((index, event));
    }
    (round, later)
}

fn record_conflict(tenant: &TenantId, message_id: &str) {
    metrics::counter!("ingestion_duplicate_conflicts_total", "tenant" => tenant.to_string()).increment(1);
    tracing::warn!(
        tenant.id = %tenant,
        event.id = %message_id,
        "duplicate message id with different content, keeping the stored event"
    );
}

/// Hex SHA-256 of the event as the client sent it: its protobuf encoding
/// without the fields that ingestion sets. `timestamp` is left out because
/// ingestion derives it from `original_timestamp` (the client's) and
/// `sent_at`. Struct fields are sorted maps, so the encoding is stable.
pub fn content_hash(event: &Event) -> String {
    let mut canonical = event.clone();
    canonical.received_at = None;
    canonical.timestamp = None;
    canonical.timestamp_correction = 0;
    hex::encode(Sha256::digest(canonical.encode_to_vec()))
}

/// Returns the order id of a track "Order Completed" event: a non-empty
/// string, or a finite number written without a fraction when it has none.
pub fn order_id(event: &Event) -> Option<String> {
    if event.r#type() != EventType::Track || event.event != ORDER_COMPLETED {
        return None;
    }
    let value = event.properties.as_ref()?.fields.get("order_id")?;
    match value.kind.as_ref()? {
        Kind::StringValue(text) if !text.is_empty() => Some(text.clone()),
        Kind::NumberValue(number) if number.is_finite() && number.fract() == 0.0 && number.abs() < 9.0e15 => {
            Some(format!("{}", *number as i64))
        }
        Kind::NumberValue(number) if number.is_finite() => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::{Struct, Timestamp, Value};

    fn order(order_id: Kind) -> Event {
        Event {
            r#type: EventType::Track as i32,
            message_id: "m-1".to_owned(),
            user_id: "u1".to_owned(),
            event: ORDER_COMPLETED.to_owned(),
            properties: Some(Struct {
                fields: [("order_id".to_owned(), Value { kind: Some(order_id) })].into(),
            }),
            ..Event::default()
        }
    }

    #[test]
    fn order_id_reads_strings_and_whole_numbers() {
        assert_eq!(
            order_id(&order(Kind::StringValue("o-7".into()))).as_deref(),
            Some("o-7")
        );
        assert_eq!(order_id(&order(Kind::NumberValue(1042.0))).as_deref(), Some("1042"));
        assert_eq!(order_id(&order(Kind::NumberValue(10.5))).as_deref(), Some("10.5"));
        assert_eq!(order_id(&order(Kind::StringValue(String::new()))), None);
        assert_eq!(order_id(&order(Kind::BoolValue(true))), None);
    }

    #[test]
    fn order_id_needs_order_completed_track() {
        let mut event = order(Kind::StringValue("o-7".into()));
        event.event = "Order Updated".to_owned();
        assert_eq!(order_id(&event), None);
        let mut event = order(Kind::StringValue("o-7".into()));
        event.r#type = EventType::Page as i32;
        assert_eq!(order_id(&event), None);
    }

    #[test]
    fn content_hash_ignores_fields_ingestion_sets() {
        let sent = order(Kind::StringValue("o-7".into()));
        let mut received = sent.clone();
        received.received_at = Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        received.timestamp = Some(Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        received.timestamp_correction = 4;
        assert_eq!(content_hash(&sent), content_hash(&received));
        assert_eq!(content_hash(&sent).len(), 64);

        let mut changed = sent.clone();
        changed.user_id = "u2".to_owned();
        assert_ne!(content_hash(&sent), content_hash(&changed));
        let mut moved = sent.clone();
        moved.original_timestamp = Some(Timestamp { seconds: 5, nanos: 0 });
        assert_ne!(content_hash(&sent), content_hash(&moved));
    }

    #[test]
    fn claim_value_round_trips() {
        assert_eq!(
            ClaimValue::parse(ClaimValue::pending("abc").as_bytes()),
            ClaimValue {
                stored: false,
                subject: "abc".to_owned()
            }
        );
        assert_eq!(
            ClaimValue::parse(ClaimValue::stored("m:1").as_bytes()),
            ClaimValue {
                stored: true,
                subject: "m:1".to_owned()
            }
        );
        assert!(ClaimValue::parse(b"garbage").stored);
    }
}
