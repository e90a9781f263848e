//! Rejected events go to the dead-letter stream with the tenant, the reason,
//! the violations, the time and the event as received, so that nothing
//! ingestion refuses is lost. [`admin`] lists and replays them.
//!
//! Only per-event rejections are kept. A request rejected whole (an empty or
//! oversized batch, a message over the size limit, bytes that do not decode)
//! reaches the client as one error and contains no event to keep.

pub mod admin;

use std::time::SystemTime;

use rtim_bus::Bus;
use rtim_proto::bus::v1::{DeadLetter, FieldViolation};
use rtim_proto::events::v1::Event;
use rtim_runtime::auth::TenantId;

use crate::validate::Rejection;

/// Writes rejected events to the dead-letter stream.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    bus: Bus,
}

impl DeadLetters {
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }

    /// Stores one dead letter per rejected event. A failure is logged and
    /// counted but not returned: the client already gets the rejection with
    /// its reason, so the event is refused rather than lost.
    pub(crate) async fn keep(&self, tenant: &TenantId, rejected: Vec<(Event, Rejection)>) {
        if rejected.is_empty() {
            return;
        }
        let letters: Vec<DeadLetter> = rejected
            .into_iter()
            .map(|(event, rejection)| rejected_letter(tenant, event, rejection))
            .collect();
        let results = self.bus.publish_dead_letters(&letters).await;
        for (letter, result) in letters.iter().zip(results) {
            let outcome = match result {
                Ok(_) => "stored",
                Err(error) => {
                    tracing::warn!(
                        tenant.id = %tenant,
                        event.id = %letter.event.as_ref().map(|event| event.message_id.as_str()).unwrap_or_default(),
                        dead_letter.reason = %letter.reason,
                        %error,
                        "rejected event not kept in the dead-letter stream"
                    );
                    "failed"
                }
            };
            metrics::counter!("rtim_ingestion_dead_letters_total", "reason" => letter.reason.clone(), "outcome" => outcome)
                .increment(1);
        }
    }
}

/// Builds the dead letter of a rejected event. An event without a message
/// id gets one here, so that replaying the entry twice stores it once.
fn rejected_letter(tenant: &TenantId, mut event: Event, rejection: Rejection) -> DeadLetter {
    if event.message_id.is_empty() {
        event.message_id = uuid::Uuid::new_v4().to_string();
    }
    DeadLetter {
        tenant_id: tenant.to_string(),
        reason: rejection.reason.to_owned(),
        violations: rejection
            .violations
            .into_iter()
            .map(|violation| FieldViolation {
                field: violation.field,
                description: violation.description,
            })
            .collect(),
        create_time: Some(SystemTime::now().into()),
        event: Some(event),
        ..DeadLetter::default()
    }
}
