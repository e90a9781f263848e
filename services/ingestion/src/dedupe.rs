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
//! concurrent requests with one message id publish once, and neither returns
//! "duplicate" for an event that then fails to be stored.

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
enum Verdict {
    /// Publish it, then [`Dedupe::settle_all`] the claim with the result.
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
struct Claim {
    keys: Vec<(String, String)>,
}

/// State and subject of a claim as stored in the cache: `pending:<subject>`
/// or `stored:<subject>`, where the subject is the content hash for a
/// message id and the message id for an order id.
#[derive(Clone, Debug, PartialEq, Eq)]
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
            let lease_passed = started.elapsed() >= CLAIM_LEASE;
            let plan = plan_round(tenant, round, verdicts, lease_passed, &mut outcomes);

            let published = publisher.publish(tenant, plan.to_publish).await;
            let settled = plan
                .claims
                .into_iter()
                .zip(&published)
                .map(|(claim, (_, stored))| (claim, matches!(stored, Stored::Accepted { .. })))
                .collect();
            self.settle_all(settled).await;
            outcomes.extend(published);

            if !plan.busy.is_empty() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            later.extend(plan.busy);
            later.sort_by_key(|(index, _)| *index);
            waiting = later;
        }
        outcomes
    }

    /// Claims every event, which must carry its message id, and returns one
    /// verdict per event, in order. The events must have distinct message
    /// ids and order ids, because a request would wait on its own claim.
    /// Each step is one cache round trip for all the events.
    async fn claim(&self, tenant: &TenantId, events: &[&Event]) -> Vec<Verdict> {
        match self.claim_round(tenant, events).await {
            Ok(verdicts) => verdicts,
            Err(error) => {
                tracing::warn!(
                    tenant.id = %tenant,
                    events = events.len(),
                    %error,
                    "dedupe cache unavailable, publishing with only the event stream's duplicate window"
                );
                metrics::counter!("rtim_ingestion_dedupe_unavailable_total", "tenant" => tenant.to_string())
                    .increment(events.len() as u64);
                events.iter().map(|_| Verdict::Publish(Claim::default())).collect()
            }
        }
    }

    async fn claim_round(&self, tenant: &TenantId, events: &[&Event]) -> Result<Vec<Verdict>, CacheError> {
        let hashes: Vec<String> = events.iter().map(|event| content_hash(event)).collect();
        let keys: Vec<String> = events
            .iter()
            .map(|event| format!("dedupe:{tenant}:{}", event.message_id))
            .collect();
        let pending = keys
            .iter()
            .zip(&hashes)
            .map(|(key, hash)| (key.clone(), ClaimValue::pending(hash).into_bytes()))
            .collect::<Vec<_>>();
        let held = self.claim_keys(&pending).await?;

        let mut verdicts = Vec::with_capacity(events.len());
        let mut orders = Vec::new();
        for (index, held) in held.into_iter().enumerate() {
            let verdict = match held {
                None => {
                    if let Some(order_id) = order_id(events[index]) {
                        orders.push((index, format!("order:{tenant}:{order_id}")));
                    }
                    Verdict::Publish(Claim {
                        keys: vec![(keys[index].clone(), ClaimValue::stored(&hashes[index]))],
                    })
                }
                Some(held) if held.stored => {
                    if held.subject != hashes[index] {
                        record_conflict(tenant, &events[index].message_id);
                    }
                    Verdict::Duplicate
                }
                Some(_) => Verdict::Busy,
            };
            verdicts.push(verdict);
        }
        if !orders.is_empty() {
            self.claim_orders(tenant, events, orders, &mut verdicts).await?;
        }
        Ok(verdicts)
    }

    /// Claims the order ids of events whose message id this request just
    /// claimed, and turns their verdict into a duplicate or a wait when
    /// another event has the order id.
    async fn claim_orders(
        &self,
        tenant: &TenantId,
        events: &[&Event],
        orders: Vec<(usize, String)>,
        verdicts: &mut [Verdict],
    ) -> Result<(), CacheError> {
        let pending = orders
            .iter()
            .map(|(index, key)| {
                (
                    key.clone(),
                    ClaimValue::pending(&events[*index].message_id).into_bytes(),
                )
            })
            .collect::<Vec<_>>();
        let held = match self.claim_keys(&pending).await {
            Ok(held) => held,
            Err(error) => {
                let claims = orders
                    .iter()
                    .map(|(index, _)| (take_claim(verdicts, *index), false))
                    .collect();
                self.settle_all(claims).await;
                return Err(error);
            }
        };

        let mut settled = Vec::new();
        for ((index, key), held) in orders.into_iter().zip(held) {
            let message_id = &events[index].message_id;
            let mut claim = take_claim(verdicts, index);
            match held {
                None => {
                    claim.keys.push((key, ClaimValue::stored(message_id)));
                    verdicts[index] = Verdict::Publish(claim);
                }
                Some(held) if held.stored => {
                    // Reported as a duplicate, so a retry of this message id is one too.
                    settled.push((claim, true));
                    verdicts[index] = Verdict::Duplicate;
                    if held.subject != *message_id {
                        metrics::counter!("rtim_ingestion_duplicate_orders_total", "tenant" => tenant.to_string())
                            .increment(1);
                        tracing::debug!(tenant.id = %tenant, event.id = %message_id, "order already stored under another message id");
                    }
                }
                Some(_) => {
                    // Hold nothing while waiting, or two requests could wait on each other.
                    settled.push((claim, false));
                    verdicts[index] = Verdict::Busy;
                }
            }
        }
        self.settle_all(settled).await;
        Ok(())
    }

    /// Sets each key to its pending value for the lease when it is absent,
    /// and returns, per key, `None` when this call claimed it, or the claim
    /// already there. A claim released or expired between the two round
    /// trips reads as pending, so the event waits for the next round.
    async fn claim_keys(&self, pending: &[(String, Vec<u8>)]) -> Result<Vec<Option<ClaimValue>>, CacheError> {
        let won = self.cache.set_many_if_absent(pending, CLAIM_LEASE).await?;
        let lost: Vec<String> = pending
            .iter()
            .zip(&won)
            .filter(|(_, won)| !**won)
            .map(|((key, _), _)| key.clone())
            .collect();
        let mut held = self.cache.get_many(&lost).await?.into_iter();
        let gone = ClaimValue {
            stored: false,
            subject: String::new(),
        };
        let claims = won
            .into_iter()
            .map(|won| {
                if won {
                    return None;
                }
                let value = held.next().flatten();
                Some(value.map_or_else(|| gone.clone(), |value| ClaimValue::parse(&value)))
            })
            .collect();
        Ok(claims)
    }

    /// Marks each claim stored for the dedupe window when its flag is set,
    /// or deletes it so that a retry can be stored, in at most two round
    /// trips. A cache failure here is logged, and a claim left pending
    /// expires after the lease.
    ///
    /// NOTE: a publish that outlives the lease settles keys that another
    /// request may have claimed since, because the cache offers no
    /// compare-and-delete. JetStream's duplicate window covers that case.
    async fn settle_all(&self, claims: Vec<(Claim, bool)>) {
        let mut stored = Vec::new();
        let mut released = Vec::new();
        for (claim, is_stored) in claims {
            for (key, value) in claim.keys {
                if is_stored {
                    stored.push((key, value.into_bytes()));
                } else {
                    released.push(key);
                }
            }
        }
        if let Err(error) = self.cache.set_many(&stored, self.window).await {
            tracing::warn!(claims = stored.len(), %error, "marking dedupe claims stored failed, they expire after their lease");
        }
        if let Err(error) = self.cache.delete_many(&released).await {
            tracing::warn!(claims = released.len(), %error, "releasing dedupe claims failed, they expire after their lease");
        }
    }
}

/// Takes the claim out of a `Publish` verdict, leaving `Busy` in its place.
fn take_claim(verdicts: &mut [Verdict], index: usize) -> Claim {
    match std::mem::replace(&mut verdicts[index], Verdict::Busy) {
        Verdict::Publish(claim) => claim,
        other => unreachable!("order ids are claimed only for events whose message id was claimed, got {other:?}"),
    }
}

/// The events of one round, sorted by what happens to them.
struct RoundPlan {
    /// Events to publish, with their claims in the same order.
    to_publish: Tagged,
    claims: Vec<Claim>,
    /// Events whose claim another request has, for the next round.
    busy: Tagged,
}

/// Sorts a round's events by verdict. Duplicates get their outcome in
/// `outcomes` right away. Once `lease_passed`, busy events are published
/// unclaimed.
fn plan_round(
    tenant: &TenantId,
    round: Tagged,
    verdicts: Vec<Verdict>,
    lease_passed: bool,
    outcomes: &mut Vec<(usize, Stored)>,
) -> RoundPlan {
    let mut plan = RoundPlan {
        to_publish: Vec::new(),
        claims: Vec::new(),
        busy: Vec::new(),
    };
    for ((index, event), verdict) in round.into_iter().zip(verdicts) {
        match verdict {
            Verdict::Publish(claim) => {
                plan.claims.push(claim);
                plan.to_publish.push((index, event));
            }
            Verdict::Duplicate => {
                let message_id = event.message_id;
                outcomes.push((
                    index,
                    Stored::Accepted {
                        message_id,
                        duplicate: true,
                    },
                ));
            }
            Verdict::Busy if lease_passed => {
                tracing::warn!(tenant.id = %tenant, event.id = %event.message_id, "dedupe claim still held after its lease, publishing unclaimed");
                plan.claims.push(Claim::default());
                plan.to_publish.push((index, event));
            }
            Verdict::Busy => plan.busy.push((index, event)),
        }
    }
    plan
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
    metrics::counter!("rtim_ingestion_duplicate_conflicts_total", "tenant" => tenant.to_string()).increment(1);
    tracing::warn!(
        tenant.id = %tenant,
        event.id = %message_id,
        "duplicate message id with different content, keeping the stored event"
    );
}

/// Hex SHA-256 of the event as the client sent it: its protobuf encoding
/// without the fields that ingestion sets. `timestamp` is left out because
/// ingestion derives it from `original_timestamp` (the client's) and
/// `sent_at`, and `sent_at` because tracking libraries set it anew on every
/// attempt of the same batch. Struct fields are sorted maps, so the encoding
/// is stable.
pub fn content_hash(event: &Event) -> String {
    let mut canonical = event.clone();
    canonical.received_at = None;
    canonical.timestamp = None;
    canonical.sent_at = None;
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
        let mut resent = sent.clone();
        resent.sent_at = Some(Timestamp {
            seconds: 1_700_000_060,
            nanos: 0,
        });
        assert_eq!(content_hash(&sent), content_hash(&resent), "a retry has a new sent_at");
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
