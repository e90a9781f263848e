//! A profile in memory and how each event changes it. Pure logic, so the
//! rules are unit-tested without a database.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::{field_number, field_text, struct_to_json, timestamp_to_datetime};
use serde::{Deserialize, Serialize};

/// Most recently viewed products kept per profile.
pub const RECENTLY_VIEWED_LEN: usize = 20;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Viewed {
    pub product_id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProfileState {
    pub profile_id: String,
    pub user_id: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub event_counts: BTreeMap<String, i64>,
    /// Most recent first; ties keep the later arrival first.
    pub recently_viewed: Vec<Viewed>,
    pub category_counts: BTreeMap<String, i64>,
    pub brand_counts: BTreeMap<String, i64>,
    pub traits: serde_json::Map<String, serde_json::Value>,
    /// Traits of each group the shopper was placed in, by group id.
    pub groups: BTreeMap<String, serde_json::Map<String, serde_json::Value>>,
    pub cart_value: f64,
    pub total_spent: f64,
    pub order_count: i64,
}

impl ProfileState {
    pub fn new(profile_id: String, at: DateTime<Utc>) -> Self {
        Self {
            profile_id,
            user_id: None,
            first_seen: at,
            last_seen: at,
            event_counts: BTreeMap::new(),
            recently_viewed: Vec::new(),
            category_counts: BTreeMap::new(),
            brand_counts: BTreeMap::new(),
            traits: serde_json::Map::new(),
            groups: BTreeMap::new(),
            cart_value: 0.0,
            total_spent: 0.0,
            order_count: 0,
        }
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &Event) {
        let at = event_time(event);
        self.first_seen = self.first_seen.min(at);
        self.last_seen = self.last_seen.max(at);
        if self.user_id.is_none() && !event.user_id.is_empty() {
            self.user_id = Some(event.user_id.clone());
        }
        *self.event_counts.entry(event_name(event)).or_insert(0) += 1;

        match event.r#type() {
            EventType::Identify => {
                if let serde_json::Value::Object(traits) = struct_to_json(event.traits.as_ref()) {
                    self.traits.extend(traits);
                }
            }
            EventType::Track => self.apply_commerce(event, at),
            EventType::Group => self.apply_group(event),
            _ => {}
        }
    }

    /// Records the group and merges its traits over those of earlier group
    /// calls, as identify calls do for the shopper's own traits.
    fn apply_group(&mut self, event: &Event) {
        if event.group_id.is_empty() {
            return;
        }
        let traits = self.groups.entry(event.group_id.clone()).or_default();
        if let serde_json::Value::Object(update) = struct_to_json(event.traits.as_ref()) {
            traits.extend(update);
        }
    }

    fn apply_commerce(&mut self, event: &Event, at: DateTime<Utc>) {
        let properties = event.properties.as_ref();
        let price = field_number(properties, "price")
            .filter(|price| price.is_finite())
            .unwrap_or(0.0);
        let quantity = field_number(properties, "quantity")
            .filter(|quantity| quantity.is_finite() && *quantity > 0.0)
            .unwrap_or(1.0);
        let is_product_event = matches!(
            event.event.as_str(),
            "Product Viewed" | "Product Added" | "Order Completed"
        );
        if is_product_event {
            if let Some(category) = field_text(properties, "category").filter(|text| !text.is_empty()) {
                *self.category_counts.entry(category).or_insert(0) += 1;
            }
            if let Some(brand) = field_text(properties, "brand").filter(|text| !text.is_empty()) {
                *self.brand_counts.entry(brand).or_insert(0) += 1;
            }
        }

        match event.event.as_str() {
            "Product Viewed" => {
                if let Some(product_id) = field_text(properties, "product_id").filter(|text| !text.is_empty()) {
                    self.record_view(product_id, at.timestamp_millis());
                }
            }
            "Product Added" => self.cart_value += price * quantity,
            "Product Removed" => self.cart_value = (self.cart_value - price * quantity).max(0.0),
            "Order Completed" => {
                let revenue = ["revenue", "total"]
                    .into_iter()
                    .find_map(|name| field_number(properties, name))
                    .filter(|value| value.is_finite())
                    .unwrap_or(price * quantity);
                self.order_count += 1;
                self.total_spent += revenue;
                self.cart_value = 0.0;
            }
            _ => {}
        }
    }

    fn record_view(&mut self, product_id: String, at: i64) {
        if let Some(existing) = self
            .recently_viewed
            .iter()
            .position(|viewed| viewed.product_id == product_id)
        {
            if self.recently_viewed[existing].at > at {
                return;
            }
            self.recently_viewed.remove(existing);
        }
        let position = self
            .recently_viewed
            .iter()
            .position(|viewed| viewed.at <= at)
            .unwrap_or(self.recently_viewed.len());
        self.recently_viewed.insert(position, Viewed { product_id, at });
        self.recently_viewed.truncate(RECENTLY_VIEWED_LEN);
    }

    /// Folds `other` (an anonymous profile being linked) into this one.
    pub fn merge(&mut self, other: ProfileState) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        for (name, count) in other.event_counts {
            *self.event_counts.entry(name).or_insert(0) += count;
        }
        for (category, count) in other.category_counts {
            *self.category_counts.entry(category).or_insert(0) += count;
        }
        for (brand, count) in other.brand_counts {
            *self.brand_counts.entry(brand).or_insert(0) += count;
        }
        for viewed in other.recently_viewed.into_iter().rev() {
            self.record_view(viewed.product_id, viewed.at);
        }
        for (key, value) in other.traits {
            self.traits.entry(key).or_insert(value);
        }
        for (group_id, other_traits) in other.groups {
            let traits = self.groups.entry(group_id).or_default();
            for (key, value) in other_traits {
                traits.entry(key).or_insert(value);
            }
        }
        self.cart_value += other.cart_value;
        self.total_spent += other.total_spent;
        self.order_count += other.order_count;
    }
}

/// Returns the name an event is counted under: the track event name, or a
/// fixed name per call type.
pub fn event_name(event: &Event) -> String {
    match event.r#type() {
        EventType::Track => event.event.clone(),
        EventType::Identify => "Identify".to_owned(),
        EventType::Page => "Page Viewed".to_owned(),
        EventType::Screen => "Screen Viewed".to_owned(),
        EventType::Alias => "Alias".to_owned(),
        EventType::Group => "Group".to_owned(),
        EventType::Unspecified => "Unknown".to_owned(),
    }
}

/// When the event happened: its timestamp, else when it was received, else now.
pub fn event_time(event: &Event) -> DateTime<Utc> {
    event
        .timestamp
        .as_ref()
        .or(event.received_at.as_ref())
        .and_then(timestamp_to_datetime)
        .unwrap_or_else(Utc::now)
}

/// Shares of a count map, summing to 1.
pub fn shares(counts: &BTreeMap<String, i64>) -> std::collections::HashMap<String, f64> {
    let total: i64 = counts.values().sum();
    if total == 0 {
        return Default::default();
    }
    counts
        .iter()
        .map(|(key, count)| (key.clone(), *count as f64 / total as f64))
        .collect()
}

#[cfg(test)]
mod tests {
    use rtim_proto::json::{datetime_to_timestamp, json_to_struct};
    use serde_json::json;

    use super::*;

    fn track(name: &str, at_secs: i64, properties: serde_json::Value) -> Event {
        let serde_json::Value::Object(properties) = properties else {
            panic!("properties must be an object");
        };
        Event {
            r#type: EventType::Track as i32,
            user_id: "u1".to_owned(),
            event: name.to_owned(),
            properties: Some(json_to_struct(properties)),
            timestamp: Some(datetime_to_timestamp(DateTime::from_timestamp(at_secs, 0).unwrap())),
            ..Event::default()
        }
    }

    fn state() -> ProfileState {
        ProfileState::new("p1".to_owned(), DateTime::from_timestamp(1_000, 0).unwrap())
    }

    #[test]
    fn counts_per_event_name() {
        let mut state = state();
        state.apply(&track("Product Viewed", 1_000, json!({"product_id": "a"})));
        state.apply(&track("Product Viewed", 1_001, json!({"product_id": "b"})));
        state.apply(&track(
            "Order Completed",
            1_002,
            json!({"product_id": "b", "price": 10.5}),
        ));
        assert_eq!(state.event_counts["Product Viewed"], 2);
        assert_eq!(state.event_counts["Order Completed"], 1);
        assert_eq!(state.order_count, 1);
        assert_eq!(state.total_spent, 10.5);
    }

    #[test]
    fn recently_viewed_orders_by_time_not_arrival() {
        let mut state = state();
        state.apply(&track("Product Viewed", 1_005, json!({"product_id": "late"})));
        state.apply(&track("Product Viewed", 1_001, json!({"product_id": "early"})));
        state.apply(&track("Product Viewed", 1_005, json!({"product_id": "same-second"})));
        let ids: Vec<_> = state.recently_viewed.iter().map(|v| v.product_id.as_str()).collect();
        assert_eq!(ids, ["same-second", "late", "early"]);
    }

    #[test]
    fn viewing_again_moves_product_to_front() {
        let mut state = state();
        state.apply(&track("Product Viewed", 1_001, json!({"product_id": "a"})));
        state.apply(&track("Product Viewed", 1_002, json!({"product_id": "b"})));
        state.apply(&track("Product Viewed", 1_003, json!({"product_id": "a"})));
        let ids: Vec<_> = state.recently_viewed.iter().map(|v| v.product_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn cart_value_resets_on_order() {
        let mut state = state();
        state.apply(&track("Product Added", 1_001, json!({"price": 100.0})));
        state.apply(&track("Product Added", 1_002, json!({"price": 50.25, "quantity": 2})));
        assert_eq!(state.cart_value, 200.5);
        state.apply(&track("Order Completed", 1_003, json!({"revenue": 200.5})));
        assert_eq!(state.cart_value, 0.0);
    }

    #[test]
    fn first_and_last_seen_tolerate_out_of_order() {
        let mut state = ProfileState::new("p1".to_owned(), DateTime::from_timestamp(2_000, 0).unwrap());
        state.apply(&track("Product Viewed", 3_000, json!({})));
        state.apply(&track("Product Viewed", 1_000, json!({})));
        assert_eq!(state.first_seen.timestamp(), 1_000);
        assert_eq!(state.last_seen.timestamp(), 3_000);
    }

    #[test]
    fn affinity_shares_sum_to_one() {
        let mut state = state();
        state.apply(&track(
            "Product Viewed",
            1_001,
            json!({"category": "phones", "brand": "acme"}),
        ));
        state.apply(&track("Product Viewed", 1_002, json!({"category": "phones"})));
        state.apply(&track("Product Added", 1_003, json!({"category": "tv"})));
        let categories = shares(&state.category_counts);
        assert!((categories["phones"] - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(shares(&state.brand_counts)["acme"], 1.0);
    }

    fn group(group_id: &str, traits: serde_json::Value) -> Event {
        let serde_json::Value::Object(traits) = traits else {
            panic!("traits must be an object");
        };
        Event {
            r#type: EventType::Group as i32,
            user_id: "u1".to_owned(),
            group_id: group_id.to_owned(),
            traits: Some(json_to_struct(traits)),
            ..Event::default()
        }
    }

    #[test]
    fn group_traits_merge_per_group() {
        let mut state = state();
        state.apply(&group("acme", json!({"name": "Acme", "plan": "basic"})));
        state.apply(&group("acme", json!({"plan": "enterprise", "employees": 42})));
        state.apply(&group("globex", json!({})));
        assert_eq!(
            serde_json::Value::Object(state.groups["acme"].clone()),
            json!({"name": "Acme", "plan": "enterprise", "employees": 42}),
            "acme"
        );
        assert!(state.groups["globex"].is_empty(), "group without traits");
        assert_eq!(state.event_counts["Group"], 3, "group calls counted");
    }

    #[test]
    fn screens_count_as_screen_viewed() {
        let mut state = state();
        for name in ["Home", "Cart", ""] {
            state.apply(&Event {
                r#type: EventType::Screen as i32,
                user_id: "u1".to_owned(),
                name: name.to_owned(),
                ..Event::default()
            });
        }
        assert_eq!(state.event_counts, BTreeMap::from([("Screen Viewed".to_owned(), 3)]));
    }

    #[test]
    fn merge_keeps_both_groups() {
        let mut known = state();
        known.apply(&group("acme", json!({"plan": "enterprise"})));
        let mut anonymous = state();
        anonymous.apply(&group("acme", json!({"plan": "basic", "name": "Acme"})));
        anonymous.apply(&group("globex", json!({"name": "Globex"})));
        known.merge(anonymous);
        assert_eq!(
            serde_json::Value::Object(known.groups["acme"].clone()),
            json!({"plan": "enterprise", "name": "Acme"}),
            "the profile's own traits win"
        );
        assert_eq!(known.groups.len(), 2, "groups: {:?}", known.groups);
    }

    #[test]
    fn merge_sums_counts() {
        let mut known = state();
        known.apply(&track("Product Viewed", 1_001, json!({"product_id": "a"})));
        let mut anonymous = ProfileState::new("p2".to_owned(), DateTime::from_timestamp(500, 0).unwrap());
        anonymous.apply(&track("Product Viewed", 1_002, json!({"product_id": "b"})));
        known.merge(anonymous);
        assert_eq!(known.event_counts["Product Viewed"], 2);
        assert_eq!(known.first_seen.timestamp(), 500);
        assert_eq!(known.recently_viewed[0].product_id, "b");
    }
}
