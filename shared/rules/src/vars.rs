//! The JSON shapes that rules see as `profile` and `event`.

use prost_types::value::Kind;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::{struct_to_json, timestamp_to_rfc3339};
use rtim_proto::profile::v1::Profile;
use serde_json::json;

/// `profile` as rules see it: every field of the profile message, with
/// timestamps as RFC 3339 text and absent maps as `{}`.
pub fn profile(profile: &Profile) -> serde_json::Value {
    json!({
        "profile_id": profile.profile_id,
        "user_id": profile.user_id,
        "anonymous_ids": profile.anonymous_ids,
        "event_counts": profile.event_counts,
        "first_seen": profile.first_seen.as_ref().and_then(timestamp_to_rfc3339),
        "last_seen": profile.last_seen.as_ref().and_then(timestamp_to_rfc3339),
        "recently_viewed": profile.recently_viewed,
        "category_affinity": profile.category_affinity,
        "brand_affinity": profile.brand_affinity,
        "cart_value": profile.cart_value,
        "traits": struct_to_json(profile.traits.as_ref()),
        "total_spent": profile.total_spent,
        "order_count": profile.order_count,
    })
}

/// `event` as rules see it: Segment's field names, `type` in lower case.
pub fn event(event: &Event) -> serde_json::Value {
    let kind = match event.r#type() {
        EventType::Unspecified => "",
        EventType::Track => "track",
        EventType::Identify => "identify",
        EventType::Page => "page",
        EventType::Screen => "screen",
        EventType::Alias => "alias",
        EventType::Group => "group",
    };
    json!({
        "message_id": event.message_id,
        "type": kind,
        "user_id": event.user_id,
        "anonymous_id": event.anonymous_id,
        "event": event.event,
        "name": event.name,
        "properties": struct_to_cel_json(event.properties.as_ref()),
        "traits": struct_to_cel_json(event.traits.as_ref()),
        "context": struct_to_cel_json(event.context.as_ref()),
        "timestamp": event.timestamp.as_ref().and_then(timestamp_to_rfc3339),
        "session_id": event.session_id,
    })
}

/// Converts a `Struct` to JSON with every number a double, as CEL maps
/// protobuf and JSON numbers. So `math.floor(event.properties.price)` works
/// for a price of 120 as well as 120.5.
fn struct_to_cel_json(value: Option<&prost_types::Struct>) -> serde_json::Value {
    let fields = value
        .map(|value| {
            value
                .fields
                .iter()
                .map(|(key, value)| (key.clone(), value_to_cel_json(value)))
                .collect()
        })
        .unwrap_or_default();
    serde_json::Value::Object(fields)
}

fn value_to_cel_json(value: &prost_types::Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(flag)) => serde_json::Value::Bool(*flag),
        Some(Kind::NumberValue(number)) => serde_json::Number::from_f64(*number)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Some(Kind::StringValue(text)) => serde_json::Value::String(text.clone()),
        Some(Kind::ListValue(list)) => serde_json::Value::Array(list.values.iter().map(value_to_cel_json).collect()),
        Some(Kind::StructValue(object)) => struct_to_cel_json(Some(object)),
    }
}

#[cfg(test)]
mod tests {
    use rtim_proto::json::json_to_struct;
    use serde_json::json;

    use super::*;
    use crate::Rule;

    #[test]
    fn floor_works_on_whole_price() {
        let serde_json::Value::Object(properties) = json!({"price": 120}) else {
            unreachable!()
        };
        let event = Event {
            properties: Some(json_to_struct(properties)),
            ..Event::default()
        };
        let rule = Rule::compile("math.floor(event.properties.price)", &["event"]).unwrap();
        assert_eq!(rule.eval_integer(&[("event", &super::event(&event))]).unwrap(), 120);
    }
}
