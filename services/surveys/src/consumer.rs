//! The event consumer: counts events per shopper and event name. Each batch
//! is applied in one transaction, and each event is claimed in the inbox
//! first, so a redelivered event is not counted twice.

use std::collections::HashMap;

use anyhow::Context;
use rtim_bus::worker::{BatchHandler, Incoming};
use rtim_proto::events::v1::{Event, EventType};
use rtim_runtime::auth::TenantId;
use sea_orm::{DatabaseConnection, TransactionTrait};

use crate::store;

/// Returns the shopper key and the event name that an event is counted
/// under, or `None` for events that are not counted: alias and group calls,
/// and events without a shopper id or name.
pub fn counted_as(event: &Event) -> Option<(String, String)> {
    let shopper_key = [&event.user_id, &event.anonymous_id]
        .into_iter()
        .find(|id| !id.is_empty())?
        .clone();
    // The same names as the profile's event counts, so targeting reads alike.
    let name = match event.r#type() {
        EventType::Track | EventType::Unspecified => event.event.clone(),
        EventType::Page => "Page Viewed".to_owned(),
        EventType::Screen => "Screen Viewed".to_owned(),
        EventType::Identify => "Identify".to_owned(),
        EventType::Alias | EventType::Group => return None,
    };
    if name.is_empty() {
        return None;
    }
    Some((shopper_key, name))
}

/// Applies event batches to the database.
#[derive(Clone, Debug)]
pub struct EventHandler {
    db: DatabaseConnection,
}

impl EventHandler {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }
}

impl BatchHandler for EventHandler {
    async fn handle(&self, batch: &[Incoming]) -> anyhow::Result<()> {
        let transaction = self.db.begin().await.context("starting a transaction")?;
        let mut counts: HashMap<TenantId, HashMap<(String, String), i64>> = HashMap::new();
        for incoming in batch {
            let Some(event) = incoming.envelope.event.as_ref() else {
                continue;
            };
            let Some(key) = counted_as(event) else {
                continue;
            };
            let tenant = TenantId(incoming.tenant.clone());
            let event_id = if event.message_id.is_empty() {
                &incoming.message_id
            } else {
                &event.message_id
            };
            let claimed = rtim_store::inbox::claim(&transaction, tenant.as_str(), event_id)
                .await
                .context("claiming the event in the inbox")?;
            if !claimed {
                tracing::debug!(tenant.id = %tenant, event.id = %event_id, "event already applied, skipping it");
                continue;
            }
            *counts.entry(tenant).or_default().entry(key).or_default() += 1;
        }
        for (tenant, counts) in counts {
            let counts: Vec<((String, String), i64)> = counts.into_iter().collect();
            store::add_shopper_events(&transaction, &tenant, &counts)
                .await
                .context("writing shopper event counts")?;
        }
        transaction.commit().await.context("committing the batch")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventType, name: &str) -> Event {
        Event {
            r#type: kind.into(),
            user_id: "u1".to_owned(),
            anonymous_id: "anon".to_owned(),
            event: name.to_owned(),
            ..Event::default()
        }
    }

    #[test]
    fn names_follow_profile_counts() {
        let counted = |kind, name| counted_as(&event(kind, name)).map(|(_, name)| name);
        assert_eq!(
            counted(EventType::Track, "Product Viewed").as_deref(),
            Some("Product Viewed")
        );
        assert_eq!(counted(EventType::Page, "").as_deref(), Some("Page Viewed"));
        assert_eq!(counted(EventType::Screen, "").as_deref(), Some("Screen Viewed"));
        assert_eq!(counted(EventType::Identify, "").as_deref(), Some("Identify"));
        assert_eq!(counted(EventType::Alias, ""), None, "alias calls are not counted");
        assert_eq!(counted(EventType::Track, ""), None, "a track call needs a name");
    }

    #[test]
    fn shopper_key_prefers_user_id() {
        let mut anonymous = event(EventType::Track, "Product Viewed");
        assert_eq!(counted_as(&anonymous).map(|(key, _)| key).as_deref(), Some("u1"));
        anonymous.user_id.clear();
        assert_eq!(counted_as(&anonymous).map(|(key, _)| key).as_deref(), Some("anon"));
        anonymous.anonymous_id.clear();
        assert_eq!(counted_as(&anonymous), None, "an event without shopper is not counted");
    }
}
