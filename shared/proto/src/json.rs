//! Conversions between `google.protobuf.Struct`/`Value`/`Timestamp` and JSON.

use chrono::{DateTime, SecondsFormat, Utc};
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Timestamp, Value};

/// Converts a JSON object into a `Struct`.
pub fn json_to_struct(object: serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: object
            .into_iter()
            .map(|(key, value)| (key, json_to_value(value)))
            .collect(),
    }
}

pub fn json_to_value(value: serde_json::Value) -> Value {
    let kind = match value {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(value) => Kind::BoolValue(value),
        serde_json::Value::Number(number) => Kind::NumberValue(number.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(text) => Kind::StringValue(text),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(object) => Kind::StructValue(json_to_struct(object)),
    };
    Value { kind: Some(kind) }
}

/// Converts a `Struct` into a JSON object; a missing struct becomes `{}`.
pub fn struct_to_json(value: Option<&Struct>) -> serde_json::Value {
    let object = value
        .map(|value| {
            value
                .fields
                .iter()
                .map(|(key, value)| (key.clone(), value_to_json(value)))
                .collect()
        })
        .unwrap_or_default();
    serde_json::Value::Object(object)
}

pub fn value_to_json(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(value)) => serde_json::Value::Bool(*value),
        Some(Kind::NumberValue(number)) => number_to_json(*number),
        Some(Kind::StringValue(text)) => serde_json::Value::String(text.clone()),
        Some(Kind::ListValue(list)) => serde_json::Value::Array(list.values.iter().map(value_to_json).collect()),
        Some(Kind::StructValue(object)) => struct_to_json(Some(object)),
    }
}

/// Converts whole numbers to JSON integers, as the client most likely sent
/// them, and other numbers to JSON floats.
fn number_to_json(number: f64) -> serde_json::Value {
    if number.fract() == 0.0 && number.abs() < 9.0e15 {
        serde_json::Value::from(number as i64)
    } else {
        serde_json::Number::from_f64(number)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)
    }
}

/// Looks up a top-level field of a struct.
pub fn field<'a>(value: Option<&'a Struct>, name: &str) -> Option<&'a Value> {
    value.and_then(|value| value.fields.get(name))
}

/// Reads a struct field as text: strings as they are, numbers without a trailing `.0`.
pub fn field_text(value: Option<&Struct>, name: &str) -> Option<String> {
    match field(value, name)?.kind.as_ref()? {
        Kind::StringValue(text) => Some(text.clone()),
        Kind::NumberValue(number) => Some(number_to_json(*number).to_string()),
        Kind::BoolValue(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// Reads a struct field as a number. Numeric strings are accepted.
pub fn field_number(value: Option<&Struct>, name: &str) -> Option<f64> {
    match field(value, name)?.kind.as_ref()? {
        Kind::NumberValue(number) => Some(*number),
        Kind::StringValue(text) => text.trim().parse().ok(),
        _ => None,
    }
}

/// Converts a timestamp to UTC; `None` when it is out of range.
pub fn timestamp_to_datetime(timestamp: &Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(timestamp.nanos).ok()?;
    DateTime::from_timestamp(timestamp.seconds, nanos)
}

pub fn datetime_to_timestamp(time: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: time.timestamp(),
        nanos: time.timestamp_subsec_nanos() as i32,
    }
}

/// RFC 3339 text with millisecond precision, as Segment writes timestamps.
pub fn timestamp_to_rfc3339(timestamp: &Timestamp) -> Option<String> {
    timestamp_to_datetime(timestamp).map(|time| time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Deepest nesting of objects and lists accepted in an event's properties,
/// traits, context and integrations. Protobuf decoders (prost and upb) stop
/// at 100 levels of nested messages. Each JSON level costs up to three of
/// them (map entry, `Value`, `Struct`), and the deepest message that carries
/// an event, a dead-letter listing, adds five more, so 24 levels (at most 77
/// protobuf levels) decode in every client.
pub const MAX_STRUCT_DEPTH: usize = 24;

/// Returns the nesting depth of a JSON value: 0 for a scalar, 1 for an object
/// or a list of scalars, one more for each level inside.
pub fn json_depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(object) => 1 + object.values().map(json_depth).max().unwrap_or(0),
        serde_json::Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_round_trips_through_struct() {
        let original = json!({"price": 35.79, "qty": 2, "tags": ["a", null], "nested": {"ok": true}});
        let serde_json::Value::Object(object) = original.clone() else {
            unreachable!()
        };
        let back = struct_to_json(Some(&json_to_struct(object)));
        assert_eq!(back, original);
    }

    #[test]
    fn field_helpers_read_numbers_and_text() {
        let serde_json::Value::Object(object) = json!({"id": 1307067, "price": "12.5", "brand": "lenovo"}) else {
            unreachable!()
        };
        let value = json_to_struct(object);
        assert_eq!(field_text(Some(&value), "id").as_deref(), Some("1307067"));
        assert_eq!(field_number(Some(&value), "price"), Some(12.5));
        assert_eq!(field_text(Some(&value), "brand").as_deref(), Some("lenovo"));
        assert_eq!(field_text(Some(&value), "missing"), None);
    }
}
