//! In-process bus for embedded mode: an append-only log in memory with
//! durable consumers, message-id deduplication and redelivery after the ack
//! wait, so services behave as they do on JetStream. Nothing survives the
//! process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::dead_letters::{EncodedLetter, RawEntry};
use crate::{BusConfig, BusError, Delivery, DeliveryHandle, Lag, OutgoingMessage, PublishAck, TraceContext, subject};

#[derive(Clone, Debug)]
pub struct MemoryBus {
    config: BusConfig,
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    state: Mutex<State>,
    published: Notify,
}

#[derive(Debug, Default)]
struct State {
    log: Vec<Stored>,
    /// Message id to (sequence, time stored), pruned after the duplicate window.
    recent_ids: HashMap<String, (u64, Instant)>,
    consumers: HashMap<String, ConsumerState>,
    dead_letters: DeadLetterLog,
}

/// The dead-letter stream of the in-process bus, bounded like the JetStream one.
#[derive(Debug, Default)]
struct DeadLetterLog {
    entries: BTreeMap<u64, LetterRecord>,
    last_sequence: u64,
    /// Sum of the payload sizes of `entries`.
    bytes: usize,
}

#[derive(Debug)]
struct LetterRecord {
    subject: String,
    payload: Bytes,
    stored: Instant,
}

impl DeadLetterLog {
    /// Drops entries older than `max_age`, then the oldest while the log is
    /// larger than `max_bytes`, as JetStream's limits with the discard-old policy do.
    fn prune(&mut self, max_age: Duration, max_bytes: i64) {
        let now = Instant::now();
        let max_bytes = usize::try_from(max_bytes).unwrap_or(0);
        while let Some(entry) = self.entries.first_entry() {
            let expired = now.duration_since(entry.get().stored) >= max_age;
            if !expired && self.bytes <= max_bytes {
                break;
            }
            self.bytes -= entry.remove().payload.len();
        }
    }

    fn raw(sequence: u64, record: &LetterRecord) -> RawEntry {
        RawEntry {
            sequence,
            payload: record.payload.clone(),
        }
    }
}

#[derive(Debug)]
struct Stored {
    subject: String,
    message_id: String,
    tenant: String,
    payload: Bytes,
    trace: TraceContext,
}

#[derive(Debug)]
struct ConsumerState {
    filter: String,
    /// Index in the log of the next message never delivered.
    next: usize,
    /// Delivered and not yet acknowledged: sequence to (redelivery time, deliveries).
    pending: BTreeMap<u64, (Instant, i64)>,
}

impl MemoryBus {
    pub fn new(config: BusConfig) -> Self {
        Self {
            config,
            inner: Arc::default(),
        }
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }

    pub(crate) fn publish_many(&self, messages: Vec<OutgoingMessage>) -> Vec<Result<PublishAck, BusError>> {
        let mut state = self.lock();
        let now = Instant::now();
        state
            .recent_ids
            .retain(|_, (_, stored)| now.duration_since(*stored) < self.config.duplicate_window);
        let results = messages
            .into_iter()
            .map(|message| {
                if let Some((sequence, _)) = state.recent_ids.get(&message.message_id) {
                    return Ok(PublishAck {
                        sequence: *sequence,
                        duplicate: true,
                    });
                }
                state.log.push(Stored {
                    subject: message.subject,
                    message_id: message.message_id.clone(),
                    tenant: message.tenant,
                    payload: message.payload,
                    trace: message.trace,
                });
                let sequence = state.log.len() as u64;
                state.recent_ids.insert(message.message_id, (sequence, now));
                Ok(PublishAck {
                    sequence,
                    duplicate: false,
                })
            })
            .collect();
        drop(state);
        self.inner.published.notify_waiters();
        results
    }

    pub(crate) fn publish_dead_letters(&self, letters: Vec<EncodedLetter>) -> Vec<Result<u64, BusError>> {
        let mut state = self.lock();
        let log = &mut state.dead_letters;
        let now = Instant::now();
        let sequences = letters
            .into_iter()
            .map(|letter| {
                log.last_sequence += 1;
                log.bytes += letter.payload.len();
                let record = LetterRecord {
                    subject: letter.subject,
                    payload: letter.payload,
                    stored: now,
                };
                log.entries.insert(log.last_sequence, record);
                Ok(log.last_sequence)
            })
            .collect();
        log.prune(self.config.dead_letter_max_age, self.config.dead_letter_max_bytes);
        sequences
    }

    pub(crate) fn dead_letters(&self, subject: &str, from_sequence: u64, max: usize) -> Vec<RawEntry> {
        let mut state = self.lock();
        let log = &mut state.dead_letters;
        log.prune(self.config.dead_letter_max_age, self.config.dead_letter_max_bytes);
        log.entries
            .range(from_sequence..)
            .filter(|(_, record)| record.subject == subject)
            .take(max)
            .map(|(sequence, record)| DeadLetterLog::raw(*sequence, record))
            .collect()
    }

    pub(crate) fn dead_letter(&self, subject: &str, sequence: u64) -> Option<RawEntry> {
        let mut state = self.lock();
        let log = &mut state.dead_letters;
        log.prune(self.config.dead_letter_max_age, self.config.dead_letter_max_bytes);
        log.entries
            .get(&sequence)
            .filter(|record| record.subject == subject)
            .map(|record| DeadLetterLog::raw(sequence, record))
    }

    pub(crate) fn delete_dead_letter(&self, subject: &str, sequence: u64) -> bool {
        let mut state = self.lock();
        let log = &mut state.dead_letters;
        let owned = log
            .entries
            .get(&sequence)
            .is_some_and(|record| record.subject == subject);
        if owned && let Some(record) = log.entries.remove(&sequence) {
            log.bytes -= record.payload.len();
        }
        owned
    }

    pub(crate) fn consumer(&self, durable: &str, filter: &str) -> MemoryConsumer {
        self.lock()
            .consumers
            .entry(durable.to_owned())
            .or_insert_with(|| ConsumerState {
                filter: filter.to_owned(),
                next: 0,
                pending: BTreeMap::new(),
            });
        MemoryConsumer {
            durable: durable.to_owned(),
            config: self.config.clone(),
            inner: self.inner.clone(),
        }
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves plain data behind, still usable.
    inner.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Clone)]
pub struct MemoryConsumer {
    durable: String,
    config: BusConfig,
    inner: Arc<Inner>,
}

impl MemoryConsumer {
    pub(crate) fn bus(&self) -> MemoryBus {
        MemoryBus {
            config: self.config.clone(),
            inner: self.inner.clone(),
        }
    }

    pub(crate) async fn next_batch(&mut self, max: usize) -> Vec<Delivery> {
        loop {
            // Register interest before looking, so a publish in between is not missed.
            let published = self.inner.published.notified();
            tokio::pin!(published);
            published.as_mut().enable();

            let (batch, next_redelivery) = self.take_ready(max.max(1));
            if !batch.is_empty() {
                return batch;
            }
            match next_redelivery {
                Some(at) => {
                    tokio::select! {
                        () = published => {}
                        () = tokio::time::sleep_until(at.into()) => {}
                    }
                }
                None => published.await,
            }
        }
    }

    fn take_ready(&self, max: usize) -> (Vec<Delivery>, Option<Instant>) {
        let mut state = lock(&self.inner);
        let now = Instant::now();
        let ack_wait = self.config.ack_wait;
        let max_deliver = self.config.max_deliver;
        let State { log, consumers, .. } = &mut *state;
        let consumer = consumers
            .get_mut(&self.durable)
            .expect("a consumer's state is created with it and never removed");

        let mut batch = Vec::new();
        let due: Vec<u64> = consumer
            .pending
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(sequence, _)| *sequence)
            .take(max)
            .collect();
        for sequence in due {
            let (at, delivered) = consumer.pending.get_mut(&sequence).expect("sequence was just listed");
            if *delivered >= max_deliver {
                tracing::warn!(consumer = %self.durable, bus.sequence = sequence, "message reached max deliveries unacknowledged, dropping it");
                metrics::counter!(
                    crate::worker::DEAD_LETTERED_TOTAL,
                    "consumer" => self.durable.clone(),
                    "reason" => "ack_wait",
                )
                .increment(1);
                consumer.pending.remove(&sequence);
                continue;
            }
            *delivered += 1;
            *at = now + ack_wait;
            let delivered = *delivered;
            batch.push(self.delivery(&log[sequence as usize - 1], sequence, delivered));
        }

        while batch.len() < max && consumer.next < log.len() {
            let index = consumer.next;
            consumer.next += 1;
            let stored = &log[index];
            if !subject::matches(&consumer.filter, &stored.subject) {
                continue;
            }
            let sequence = index as u64 + 1;
            consumer.pending.insert(sequence, (now + ack_wait, 1));
            batch.push(self.delivery(stored, sequence, 1));
        }

        let next_redelivery = consumer.pending.values().map(|(at, _)| *at).min();
        (batch, next_redelivery)
    }

    /// Counts the messages matching the filter that were never delivered,
    /// and those delivered and not acknowledged.
    pub(crate) fn lag(&self) -> Lag {
        let state = lock(&self.inner);
        let Some(consumer) = state.consumers.get(&self.durable) else {
            return Lag::default();
        };
        let pending = state.log[consumer.next..]
            .iter()
            .filter(|stored| subject::matches(&consumer.filter, &stored.subject))
            .count();
        Lag {
            pending: pending as u64,
            ack_pending: consumer.pending.len() as u64,
        }
    }

    fn delivery(&self, stored: &Stored, sequence: u64, delivered: i64) -> Delivery {
        Delivery {
            subject: stored.subject.clone(),
            message_id: stored.message_id.clone(),
            tenant: stored.tenant.clone(),
            payload: stored.payload.clone(),
            delivered,
            max_deliver: self.config.max_deliver,
            trace: stored.trace.clone(),
            handle: DeliveryHandle::Memory(AckHandle {
                inner: self.inner.clone(),
                durable: self.durable.clone(),
                sequence,
            }),
        }
    }
}

#[derive(Debug)]
pub(crate) struct AckHandle {
    inner: Arc<Inner>,
    durable: String,
    sequence: u64,
}

impl AckHandle {
    pub(crate) fn ack(&self) {
        let mut state = lock(&self.inner);
        if let Some(consumer) = state.consumers.get_mut(&self.durable) {
            consumer.pending.remove(&self.sequence);
        }
    }

    pub(crate) fn nak(&self, delay: Duration) {
        let mut state = lock(&self.inner);
        if let Some(consumer) = state.consumers.get_mut(&self.durable)
            && let Some((at, _)) = consumer.pending.get_mut(&self.sequence)
        {
            *at = Instant::now() + delay;
        }
        drop(state);
        self.inner.published.notify_waiters();
    }
}
