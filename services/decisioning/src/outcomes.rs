//! The event consumer: events whose properties carry a `decision_id` are
//! stored as outcomes of that decision, once per event id.

use rtim_bus::worker::{BatchHandler, Incoming};
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::field_text;
use rtim_store::inbox;
use sea_orm::{DatabaseConnection, TransactionTrait};

use crate::store::{self, OutcomeRecord};

pub struct OutcomeRecorder {
    pub db: DatabaseConnection,
}

impl BatchHandler for OutcomeRecorder {
    async fn handle(&self, batch: &[Incoming]) -> anyhow::Result<()> {
        let outcomes: Vec<(&str, OutcomeRecord)> = batch
            .iter()
            .filter_map(|incoming| Some((tenant_of(incoming), outcome_of(incoming)?)))
            .collect();
        if outcomes.is_empty() {
            return Ok(());
        }

        let txn = self.db.begin().await?;
        for (tenant, outcome) in &outcomes {
            if !inbox::claim(&txn, tenant, &outcome.event_id).await? {
                tracing::debug!(tenant.id = %tenant, event.id = %outcome.event_id, "outcome already stored, skipping");
                continue;
            }
            store::insert_outcome(&txn, tenant, outcome).await?;
        }
        txn.commit().await?;
        metrics::counter!("rtim_decisioning_outcomes_total").increment(outcomes.len() as u64);
        Ok(())
    }
}

fn tenant_of(incoming: &Incoming) -> &str {
    if incoming.tenant.is_empty() {
        &incoming.envelope.tenant_id
    } else {
        &incoming.tenant
    }
}

/// Returns the outcome an event records, or `None` when it carries no decision id.
fn outcome_of(incoming: &Incoming) -> Option<OutcomeRecord> {
    let event = incoming.envelope.event.as_ref()?;
    let decision_id = field_text(event.properties.as_ref(), "decision_id").filter(|id| !id.is_empty())?;
    let event_id = if event.message_id.is_empty() {
        incoming.message_id.clone()
    } else {
        event.message_id.clone()
    };
    Some(OutcomeRecord {
        event_id,
        decision_id,
        event: event_name(event),
    })
}

/// Names an event as the profile service counts it: the track event name, or
/// the kind of call for the other types.
fn event_name(event: &Event) -> String {
    match event.r#type() {
        EventType::Track => event.event.clone(),
        EventType::Page => "Page Viewed".to_owned(),
        EventType::Screen => "Screen Viewed".to_owned(),
        EventType::Identify => "Identify".to_owned(),
        EventType::Alias => "Alias".to_owned(),
        EventType::Group => "Group".to_owned(),
        EventType::Unspecified => event.event.clone(),
    }
}

#[cfg(test)]
mod tests {
    use rtim_proto::bus::v1::EventEnvelope;
    use rtim_proto::json::json_to_struct;
    use serde_json::json;

    use super::*;

    fn incoming(properties: serde_json::Value) -> Incoming {
        let serde_json::Value::Object(properties) = properties else {
            panic!("properties must be an object")
        };
        Incoming {
            tenant: "demo".to_owned(),
            message_id: "demo:e-1".to_owned(),
            envelope: EventEnvelope {
                tenant_id: "demo".to_owned(),
                event: Some(Event {
                    message_id: "e-1".to_owned(),
                    r#type: EventType::Track as i32,
                    event: "Offer Clicked".to_owned(),
                    properties: Some(json_to_struct(properties)),
                    ..Event::default()
                }),
            },
        }
    }

    #[test]
    fn event_with_decision_id_is_an_outcome() {
        let outcome = outcome_of(&incoming(json!({"decision_id": "d-1"}))).unwrap();
        assert_eq!(
            outcome,
            OutcomeRecord {
                event_id: "e-1".to_owned(),
                decision_id: "d-1".to_owned(),
                event: "Offer Clicked".to_owned(),
            }
        );
    }

    #[test]
    fn event_without_decision_id_is_skipped() {
        assert_eq!(outcome_of(&incoming(json!({"product_id": "p-1"}))), None, "absent");
        assert_eq!(outcome_of(&incoming(json!({"decision_id": ""}))), None, "empty");
    }
}
