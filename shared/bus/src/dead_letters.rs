//! The dead-letter stream: events that ingestion rejected or that a consumer
//! gave up on, kept with the reason so that an operator can list them and
//! replay them after a fix. On JetStream it is the stream `<PREFIX>_DEADLETTER`
//! over the subjects `<prefix>.deadletter.<tenant>`; in embedded mode it is an
//! in-memory log. Both drop entries older than `dead_letter_max_age` and the
//! oldest entries beyond `dead_letter_max_bytes`.

use bytes::Bytes;
use prost::Message;
use rtim_proto::bus::v1::DeadLetter;

use crate::{Bus, BusError, subject};

/// Reason of an event that a consumer gave up on after its last delivery.
pub const CONSUMER_FAILED: &str = "CONSUMER_FAILED";
/// Reason of a message that does not decode as an event envelope or a dead letter.
pub const UNDECODABLE: &str = "UNDECODABLE";

/// One entry of the dead-letter stream.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetterEntry {
    /// Position in the dead-letter stream; increases with every entry.
    pub sequence: u64,
    pub letter: DeadLetter,
}

/// A dead letter encoded for one adapter, with the subject of its tenant.
#[derive(Debug)]
pub(crate) struct EncodedLetter {
    pub subject: String,
    pub tenant: String,
    pub payload: Bytes,
}

/// A stored entry before decoding.
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub sequence: u64,
    pub payload: Bytes,
}

impl Bus {
    /// Subject of one tenant's dead letters.
    pub fn dead_letter_subject(&self, tenant: &str) -> Result<String, BusError> {
        subject::check_token(tenant)?;
        Ok(format!("{}.deadletter.{tenant}", self.config().subject_prefix))
    }

    /// Stores dead letters, each under the subject of its `tenant_id`, and
    /// returns one result per letter, in order: its sequence once stored.
    pub async fn publish_dead_letters(&self, letters: &[DeadLetter]) -> Vec<Result<u64, BusError>> {
        let mut results: Vec<Option<Result<u64, BusError>>> = Vec::with_capacity(letters.len());
        let mut slots = Vec::new();
        let mut encoded = Vec::new();
        for (index, letter) in letters.iter().enumerate() {
            match self.dead_letter_subject(&letter.tenant_id) {
                Ok(subject) => {
                    slots.push(index);
                    encoded.push(EncodedLetter {
                        subject,
                        tenant: letter.tenant_id.clone(),
                        payload: Bytes::from(letter.encode_to_vec()),
                    });
                    results.push(None);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }

        let stored = match self {
            Bus::Nats(bus) => bus.publish_dead_letters(encoded).await,
            Bus::Memory(bus) => bus.publish_dead_letters(encoded),
        };
        for (index, result) in slots.into_iter().zip(stored) {
            results[index] = Some(result);
        }
        results
            .into_iter()
            .map(|result| result.expect("every slot is filled by its subject error or its publish result"))
            .collect()
    }

    /// Returns up to `max` entries of `tenant` at or after `from_sequence`,
    /// oldest first. Fewer than `max` means the stream has no more.
    pub async fn dead_letters(
        &self,
        tenant: &str,
        from_sequence: u64,
        max: usize,
    ) -> Result<Vec<DeadLetterEntry>, BusError> {
        let subject = self.dead_letter_subject(tenant)?;
        let raw = match self {
            Bus::Nats(bus) => bus.dead_letters(&subject, from_sequence, max).await?,
            Bus::Memory(bus) => bus.dead_letters(&subject, from_sequence, max),
        };
        Ok(raw.into_iter().map(|entry| decode(tenant, entry)).collect())
    }

    /// Returns the entry at `sequence` when it belongs to `tenant`.
    pub async fn dead_letter(&self, tenant: &str, sequence: u64) -> Result<Option<DeadLetterEntry>, BusError> {
        let subject = self.dead_letter_subject(tenant)?;
        let raw = match self {
            Bus::Nats(bus) => bus.dead_letter(&subject, sequence).await?,
            Bus::Memory(bus) => bus.dead_letter(&subject, sequence),
        };
        Ok(raw.map(|entry| decode(tenant, entry)))
    }

    /// Deletes the entry at `sequence` when it belongs to `tenant`; returns
    /// whether there was one.
    pub async fn delete_dead_letter(&self, tenant: &str, sequence: u64) -> Result<bool, BusError> {
        let subject = self.dead_letter_subject(tenant)?;
        match self {
            Bus::Nats(bus) => bus.delete_dead_letter(&subject, sequence).await,
            Bus::Memory(bus) => Ok(bus.delete_dead_letter(&subject, sequence)),
        }
    }
}

/// Decodes a stored entry. One that is not a dead letter, which only a
/// foreign publisher on the subject can produce, is kept visible as
/// [`UNDECODABLE`] with its bytes.
fn decode(tenant: &str, entry: RawEntry) -> DeadLetterEntry {
    let letter = DeadLetter::decode(entry.payload.as_ref()).unwrap_or_else(|_| DeadLetter {
        tenant_id: tenant.to_owned(),
        reason: UNDECODABLE.to_owned(),
        payload: entry.payload.to_vec(),
        ..DeadLetter::default()
    });
    DeadLetterEntry {
        sequence: entry.sequence,
        letter,
    }
}
