//! The event consumer. Each batch is applied in one transaction, and each
//! event is claimed in the inbox first, so a redelivered event changes nothing.
//!
//! - `Product Viewed`: popularity +1, the shopper's view, and when the event
//!   has a session, the co-visits of the item with the session's other items.
//! - `Product Added`: popularity +3.
//! - `Order Completed`: popularity +5 for each ordered product, and the
//!   shopper's purchase of each.

use std::collections::HashMap;

use anyhow::Context;
use chrono::{DateTime, Utc};
use prost_types::value::Kind as ValueKind;
use rtim_bus::worker::{BatchHandler, Incoming};
use rtim_proto::events::v1::Event;
use rtim_proto::json::{field, field_text, timestamp_to_datetime};
use rtim_runtime::auth::TenantId;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};

use crate::entity::shopper_item::Kind;
use crate::store::{self, ShopperItemKey};

/// Popularity added by one view.
pub const VIEW_WEIGHT: i64 = 1;
/// Popularity added by one add to cart.
pub const ADD_WEIGHT: i64 = 3;
/// Popularity added by one order of the product.
pub const ORDER_WEIGHT: i64 = 5;

/// The change an event makes, read from its name and properties.
#[derive(Clone, Debug, PartialEq)]
pub enum Interaction {
    Viewed {
        product_id: String,
        session_id: Option<String>,
    },
    Added {
        product_id: String,
    },
    /// The distinct products of an order.
    Ordered {
        product_ids: Vec<String>,
    },
}

/// An event reduced to what this service uses.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsed {
    /// `user_id`, or `anonymous_id` when there is no user id.
    pub shopper_key: Option<String>,
    /// When the event happened: its timestamp, else the time ingestion received it.
    pub at: DateTime<Utc>,
    pub interaction: Interaction,
}

/// Reads the interaction of an event. Returns `None` for events that change
/// nothing here, such as other event names or a product view without a product id.
pub fn parse(event: &Event) -> Option<Parsed> {
    let properties = event.properties.as_ref();
    let product_id = || field_text(properties, "product_id").filter(|id| !id.is_empty());
    let interaction = match event.event.as_str() {
        "Product Viewed" => Interaction::Viewed {
            product_id: product_id()?,
            session_id: Some(event.session_id.clone()).filter(|id| !id.is_empty()),
        },
        "Product Added" => Interaction::Added {
            product_id: product_id()?,
        },
        "Order Completed" => {
            let product_ids = ordered_products(event);
            if product_ids.is_empty() {
                return None;
            }
            Interaction::Ordered { product_ids }
        }
        _ => return None,
    };
    let shopper_key = [&event.user_id, &event.anonymous_id]
        .into_iter()
        .find(|id| !id.is_empty())
        .cloned();
    let at = [&event.timestamp, &event.received_at]
        .into_iter()
        .flatten()
        .find_map(timestamp_to_datetime)
        .unwrap_or_else(Utc::now);
    Some(Parsed {
        shopper_key,
        at,
        interaction,
    })
}

/// Collects the distinct product ids of an order, `product_id` and each
/// `products[].product_id`, in order of appearance.
fn ordered_products(event: &Event) -> Vec<String> {
    let properties = event.properties.as_ref();
    let mut ids: Vec<String> = field_text(properties, "product_id").into_iter().collect();
    if let Some(ValueKind::ListValue(products)) = field(properties, "products").and_then(|value| value.kind.as_ref()) {
        for product in &products.values {
            if let Some(ValueKind::StructValue(product)) = &product.kind {
                ids.extend(field_text(Some(product), "product_id"));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| !id.is_empty() && seen.insert(id.clone()));
    ids
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
        let mut changes = Changes::default();
        for incoming in batch {
            let Some(event) = incoming.envelope.event.as_ref() else {
                continue;
            };
            // Events that change nothing here are not claimed, which keeps them out of the inbox.
            let Some(parsed) = parse(event) else {
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
            changes
                .apply(&transaction, tenant, parsed)
                .await
                .with_context(|| format!("applying event {event_id}"))?;
        }
        changes
            .flush(&transaction)
            .await
            .context("writing popularity and shopper history")?;
        transaction.commit().await.context("committing the batch")?;
        Ok(())
    }
}

/// Popularity deltas and shopper interactions of a batch, summed per row so
/// that each row is written once per batch.
#[derive(Debug, Default)]
struct Changes {
    popularity: HashMap<TenantId, HashMap<String, i64>>,
    shopper_items: HashMap<TenantId, HashMap<ShopperItemKey, DateTime<Utc>>>,
}

impl Changes {
    /// Collects the counters of one event. Session co-visits are written at
    /// once, because whether an item is new in a session depends on the
    /// events before it.
    async fn apply<C: ConnectionTrait>(&mut self, db: &C, tenant: TenantId, parsed: Parsed) -> Result<(), DbErr> {
        match parsed.interaction {
            Interaction::Viewed { product_id, session_id } => {
                if let Some(session_id) = session_id {
                    store::record_session_view(db, &tenant, &session_id, &product_id, parsed.at).await?;
                }
                self.add_popularity(&tenant, &product_id, VIEW_WEIGHT);
                self.touch(
                    &tenant,
                    parsed.shopper_key.as_deref(),
                    &product_id,
                    Kind::Viewed,
                    parsed.at,
                );
            }
            Interaction::Added { product_id } => self.add_popularity(&tenant, &product_id, ADD_WEIGHT),
            Interaction::Ordered { product_ids } => {
                for product_id in &product_ids {
                    self.add_popularity(&tenant, product_id, ORDER_WEIGHT);
                    self.touch(
                        &tenant,
                        parsed.shopper_key.as_deref(),
                        product_id,
                        Kind::Bought,
                        parsed.at,
                    );
                }
            }
        }
        Ok(())
    }

    fn add_popularity(&mut self, tenant: &TenantId, item_id: &str, delta: i64) {
        let items = self.popularity.entry(tenant.clone()).or_default();
        *items.entry(item_id.to_owned()).or_default() += delta;
    }

    fn touch(&mut self, tenant: &TenantId, shopper_key: Option<&str>, item_id: &str, kind: Kind, at: DateTime<Utc>) {
        let Some(shopper_key) = shopper_key else {
            return;
        };
        let key = ShopperItemKey {
            shopper_key: shopper_key.to_owned(),
            item_id: item_id.to_owned(),
            kind,
        };
        let latest = self
            .shopper_items
            .entry(tenant.clone())
            .or_default()
            .entry(key)
            .or_insert(at);
        *latest = (*latest).max(at);
    }

    async fn flush<C: ConnectionTrait>(self, db: &C) -> Result<(), DbErr> {
        for (tenant, items) in self.popularity {
            let deltas: Vec<(String, i64)> = items.into_iter().collect();
            store::add_popularity(db, &tenant, &deltas).await?;
        }
        for (tenant, rows) in self.shopper_items {
            let rows: Vec<(ShopperItemKey, DateTime<Utc>)> = rows.into_iter().collect();
            store::touch_shopper_items(db, &tenant, &rows).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;
    use rtim_proto::json::json_to_struct;
    use serde_json::json;

    use super::*;

    fn event(name: &str, properties: serde_json::Value) -> Event {
        let serde_json::Value::Object(properties) = properties else {
            unreachable!("test properties are objects")
        };
        Event {
            message_id: "m1".to_owned(),
            anonymous_id: "anon-1".to_owned(),
            event: name.to_owned(),
            properties: Some(json_to_struct(properties)),
            timestamp: Some(Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Event::default()
        }
    }

    #[test]
    fn view_with_session() {
        let mut viewed = event("Product Viewed", json!({"product_id": 1307067, "price": 35.79}));
        viewed.session_id = "s1".to_owned();
        let parsed = parse(&viewed).expect("a product view is an interaction");
        assert_eq!(
            parsed.interaction,
            Interaction::Viewed {
                product_id: "1307067".to_owned(),
                session_id: Some("s1".to_owned())
            },
            "numeric product ids are read as text"
        );
        assert_eq!(
            parsed.shopper_key.as_deref(),
            Some("anon-1"),
            "anonymous id keys a shopper without user id"
        );
        assert_eq!(parsed.at.timestamp(), 1_700_000_000, "the event timestamp is kept");
    }

    #[test]
    fn order_lists_distinct_products() {
        let mut order = event(
            "Order Completed",
            json!({"order_id": "o1", "product_id": "a", "products": [{"product_id": "a"}, {"product_id": "b"}]}),
        );
        order.user_id = "u1".to_owned();
        let parsed = parse(&order).expect("an order is an interaction");
        assert_eq!(
            parsed.interaction,
            Interaction::Ordered {
                product_ids: vec!["a".to_owned(), "b".to_owned()]
            },
            "product a is counted once"
        );
        assert_eq!(
            parsed.shopper_key.as_deref(),
            Some("u1"),
            "user id wins over anonymous id"
        );
    }

    #[test]
    fn unrelated_events_are_ignored() {
        assert_eq!(
            parse(&event("Checkout Started", json!({}))),
            None,
            "other names change nothing"
        );
        assert_eq!(
            parse(&event("Product Viewed", json!({"price": 1}))),
            None,
            "a view needs a product id"
        );
        assert_eq!(
            parse(&event("Order Completed", json!({"order_id": "o1"}))),
            None,
            "an order needs products"
        );
    }
}
