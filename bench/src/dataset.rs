//! The shopper events that scenarios take payloads, shopper ids and product
//! ids from, such as the rows of a REES46 file mapped by `rtim replay`.

use std::collections::HashSet;

use prost_types::value::Kind;
use rtim_proto::events::v1::Event;
use rtim_proto::json::field_text;

/// Events in file order, with their distinct user ids and product ids.
#[derive(Clone, Debug)]
pub struct Dataset {
    events: Vec<Event>,
    users: Vec<String>,
    products: Vec<String>,
}

impl Dataset {
    /// Collects the distinct user ids and `properties.product_id` values of
    /// `events`. Fails when there are no events, users or products.
    pub fn new(events: Vec<Event>) -> anyhow::Result<Self> {
        let users = distinct(events.iter().map(|event| event.user_id.clone()));
        let products = distinct(
            events
                .iter()
                .filter_map(|event| field_text(event.properties.as_ref(), "product_id")),
        );
        anyhow::ensure!(!events.is_empty(), "the data file contains no usable events");
        anyhow::ensure!(!users.is_empty(), "no event of the data file has a user id");
        anyhow::ensure!(!products.is_empty(), "no event of the data file has a product id");
        Ok(Self {
            events,
            users,
            products,
        })
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    pub fn product_count(&self) -> usize {
        self.products.len()
    }

    /// Returns the event at `index`, wrapping around at the end of the file.
    pub fn event(&self, index: u64) -> &Event {
        &self.events[(index % self.events.len() as u64) as usize]
    }

    /// Batch number `index`: the next `size` events of the file, wrapping
    /// around, each with a new message id so that no run repeats an earlier
    /// one and nothing is dropped as a duplicate.
    pub fn batch(&self, index: u64, size: usize) -> Vec<Event> {
        let first = index * size as u64;
        (first..first + size as u64)
            .map(|position| {
                let mut event = Event {
                    message_id: uuid::Uuid::new_v4().to_string(),
                    ..self.event(position).clone()
                };
                // Each batch stands for new traffic, so its orders are new
                // too: ingestion stores a repeated order id only once.
                if let Some(order_id) = event
                    .properties
                    .as_mut()
                    .and_then(|properties| properties.fields.get_mut("order_id"))
                {
                    order_id.kind = Some(Kind::StringValue(uuid::Uuid::new_v4().to_string()));
                }
                event
            })
            .collect()
    }

    /// Returns the user id for request `index`: evenly spread over the
    /// distinct users, and the same for the same index in every run.
    pub fn user(&self, index: u64) -> &str {
        &self.users[pick(index, self.users.len())]
    }

    /// Returns the product id for request `index`, like [`Dataset::user`].
    pub fn product(&self, index: u64) -> &str {
        &self.products[pick(index, self.products.len())]
    }
}

fn distinct(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = HashSet::new();
    values
        .filter(|value| !value.is_empty() && seen.insert(value.clone()))
        .collect()
}

/// Maps `index` to a position in `0..len` through the SplitMix64 finaliser,
/// so consecutive requests go to unrelated shoppers.
fn pick(index: u64, len: usize) -> usize {
    let mut mixed = index.wrapping_add(0x9e37_79b9_7f4a_7c15);
    mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    mixed ^= mixed >> 31;
    (mixed % len as u64) as usize
}

#[cfg(test)]
pub(crate) mod tests {
    use rtim_proto::events::v1::EventType;
    use rtim_proto::json::json_to_struct;
    use serde_json::json;

    use super::*;

    /// `count` Product Viewed events over 7 users and 11 products.
    pub(crate) fn sample(count: usize) -> Dataset {
        let events = (0..count)
            .map(|index| {
                let serde_json::Value::Object(properties) = json!({
                    "product_id": format!("p{}", index % 11),
                    "category": "electronics.smartphone",
                    "price": 99.5,
                }) else {
                    unreachable!("the literal is an object");
                };
                Event {
                    message_id: format!("m{index}"),
                    r#type: EventType::Track as i32,
                    user_id: format!("u{}", index % 7),
                    event: "Product Viewed".to_owned(),
                    properties: Some(json_to_struct(properties)),
                    ..Event::default()
                }
            })
            .collect();
        Dataset::new(events).unwrap()
    }

    #[test]
    fn distinct_users_and_products() {
        let dataset = sample(100);
        assert_eq!(dataset.user_count(), 7, "users");
        assert_eq!(dataset.product_count(), 11, "products");
        assert_eq!(dataset.event(100).message_id, "m0", "events wrap around");
    }

    #[test]
    fn batches_have_fresh_ids() {
        let dataset = sample(10);
        let first = dataset.batch(0, 4);
        let again = dataset.batch(0, 4);
        let wrapped = dataset.batch(2, 4);
        assert_eq!(first.len(), 4, "batch size");
        assert_eq!(first[1].user_id, dataset.events()[1].user_id, "rows in file order");
        assert_eq!(wrapped[2].user_id, dataset.events()[0].user_id, "wraps around the file");
        assert_ne!(first[0].message_id, again[0].message_id, "new message id per batch");
        assert_ne!(first[0].message_id, dataset.events()[0].message_id, "file ids replaced");
    }

    #[test]
    fn batches_have_fresh_order_ids() {
        let mut events = sample(2).events().to_vec();
        let serde_json::Value::Object(properties) = json!({"order_id": "s1-7", "price": 10.0}) else {
            unreachable!("the literal is an object");
        };
        events[0].event = "Order Completed".to_owned();
        events[0].properties = Some(json_to_struct(properties));
        let dataset = Dataset::new(events).unwrap();
        let order_id = |event: &Event| field_text(event.properties.as_ref(), "order_id");

        let first = dataset.batch(0, 2);
        let again = dataset.batch(0, 2);

        assert_ne!(order_id(&first[0]), Some("s1-7".to_owned()), "file order id replaced");
        assert_ne!(order_id(&first[0]), order_id(&again[0]), "new order id per batch");
        assert_eq!(order_id(&first[1]), None, "events without an order id keep none");
    }

    #[test]
    fn picks_cover_every_user() {
        let dataset = sample(100);
        let picked: HashSet<&str> = (0..200).map(|index| dataset.user(index)).collect();
        assert_eq!(picked.len(), 7, "every user is drawn within 200 requests");
        assert_eq!(dataset.user(42), dataset.user(42), "same index, same user");
    }

    #[test]
    fn empty_is_rejected() {
        let error = Dataset::new(Vec::new()).unwrap_err();
        assert!(error.to_string().contains("no usable events"), "message: {error}");
    }
}
