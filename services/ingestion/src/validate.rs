//! Event validation. Each check names the field it rejects, with the value
//! where it is short enough to echo back.

use prost_types::value::Kind;
use prost_types::{Struct, Timestamp, Value};
use rtim_proto::events::v1::{Event, EventType};
use rtim_runtime::errors::FieldViolation;

/// Maximum length of an id (message, user, anonymous, session, group), in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Maximum length of an event or page name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Maximum nesting of objects and lists in properties, traits and context.
pub const MAX_DEPTH: usize = 32;

/// Why an event was rejected: a machine-readable reason and the violations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub violations: Vec<FieldViolation>,
}

/// Checks one event; `prefix` is prepended to field paths (`events[3].`).
pub fn check(event: &Event, prefix: &str) -> Result<(), Rejection> {
    let mut violations = Vec::new();
    let mut reason = "INVALID_FIELD";
    let field = |name: &str| format!("{prefix}{name}");

    if event.r#type() == EventType::Unspecified {
        violations.push(FieldViolation::new(
            field("type"),
            format!("event type is required, got {}", event.r#type),
        ));
    }
    if event.user_id.is_empty() && event.anonymous_id.is_empty() {
        reason = "MISSING_IDENTITY";
        violations.push(FieldViolation::new(
            field("user_id"),
            "either user_id or anonymous_id is required",
        ));
    }
    for (name, value) in [
        ("message_id", &event.message_id),
        ("user_id", &event.user_id),
        ("anonymous_id", &event.anonymous_id),
        ("session_id", &event.session_id),
        ("previous_id", &event.previous_id),
        ("group_id", &event.group_id),
    ] {
        check_text(&mut violations, &field(name), value, MAX_ID_LEN);
    }
    check_text(&mut violations, &field("event"), &event.event, MAX_NAME_LEN);
    check_text(&mut violations, &field("name"), &event.name, MAX_NAME_LEN);

    match event.r#type() {
        EventType::Track if event.event.trim().is_empty() => {
            violations.push(FieldViolation::new(field("event"), "track events need an event name"));
        }
        EventType::Alias if event.previous_id.is_empty() => {
            violations.push(FieldViolation::new(
                field("previous_id"),
                "alias events need previous_id",
            ));
        }
        EventType::Group if event.group_id.is_empty() => {
            violations.push(FieldViolation::new(field("group_id"), "group events need group_id"));
        }
        _ => {}
    }
    for (name, value) in [
        ("properties", &event.properties),
        ("traits", &event.traits),
        ("context", &event.context),
    ] {
        if let Some(value) = value {
            check_struct(&mut violations, &field(name), value, 1);
        }
    }
    check_timestamp(&mut violations, &field("timestamp"), event.timestamp.as_ref());
    check_timestamp(&mut violations, &field("sent_at"), event.sent_at.as_ref());

    if violations.is_empty() {
        Ok(())
    } else {
        if violations.len() > 1 && reason == "MISSING_IDENTITY" {
            reason = "INVALID_FIELD";
        }
        Err(Rejection { reason, violations })
    }
}

fn check_text(violations: &mut Vec<FieldViolation>, field: &str, value: &str, max_len: usize) {
    if value.len() > max_len {
        violations.push(FieldViolation::new(
            field,
            format!("must be at most {max_len} bytes, got {}", value.len()),
        ));
    } else if value.chars().any(char::is_control) {
        violations.push(FieldViolation::new(
            field,
            format!("contains a control character: {value:?}"),
        ));
    }
}

/// Rejects what JSON cannot carry or PostgreSQL cannot store: NUL in keys
/// and strings, non-finite numbers, and nesting deeper than [`MAX_DEPTH`].
fn check_struct(violations: &mut Vec<FieldViolation>, path: &str, value: &Struct, depth: usize) {
    if depth > MAX_DEPTH {
        violations.push(FieldViolation::new(
            path,
            format!("nesting deeper than {MAX_DEPTH} levels"),
        ));
        return;
    }
    for (key, value) in &value.fields {
        let field = format!("{path}.{key}");
        if key.contains('\0') {
            violations.push(FieldViolation::new(&field, "key contains a NUL character"));
        }
        check_value(violations, &field, value, depth);
    }
}

fn check_value(violations: &mut Vec<FieldViolation>, path: &str, value: &Value, depth: usize) {
    match &value.kind {
        Some(Kind::StringValue(text)) if text.contains('\0') => {
            violations.push(FieldViolation::new(path, "contains a NUL character"));
        }
        Some(Kind::NumberValue(number)) if !number.is_finite() => {
            violations.push(FieldViolation::new(
                path,
                format!("must be a finite number, got {number}"),
            ));
        }
        Some(Kind::StructValue(inner)) => check_struct(violations, path, inner, depth + 1),
        Some(Kind::ListValue(list)) => {
            if depth + 1 > MAX_DEPTH {
                violations.push(FieldViolation::new(
                    path,
                    format!("nesting deeper than {MAX_DEPTH} levels"),
                ));
                return;
            }
            for (index, item) in list.values.iter().enumerate() {
                check_value(violations, &format!("{path}[{index}]"), item, depth + 1);
            }
        }
        _ => {}
    }
}

/// Accepts timestamps between years 1 and 9999 with nanos in range, as the
/// protobuf `Timestamp` contract requires.
fn check_timestamp(violations: &mut Vec<FieldViolation>, field: &str, timestamp: Option<&Timestamp>) {
    const MIN_SECONDS: i64 = -62_135_596_800;
    const MAX_SECONDS: i64 = 253_402_300_799;
    let Some(timestamp) = timestamp else {
        return;
    };
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        violations.push(FieldViolation::new(
            field,
            format!("nanos must be in 0..=999999999, got {}", timestamp.nanos),
        ));
    } else if !(MIN_SECONDS..=MAX_SECONDS).contains(&timestamp.seconds) {
        violations.push(FieldViolation::new(
            field,
            format!("seconds must be within years 1 to 9999, got {}", timestamp.seconds),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track() -> Event {
        Event {
            r#type: EventType::Track as i32,
            user_id: "u1".to_owned(),
            event: "Product Viewed".to_owned(),
            ..Event::default()
        }
    }

    #[test]
    fn valid_track_passes() {
        assert_eq!(check(&track(), ""), Ok(()));
    }

    #[test]
    fn missing_identity_names_user_id() {
        let event = Event {
            user_id: String::new(),
            ..track()
        };
        let rejection = check(&event, "events[2].").unwrap_err();
        assert_eq!(rejection.reason, "MISSING_IDENTITY");
        assert_eq!(rejection.violations[0].field, "events[2].user_id");
    }

    #[test]
    fn bad_nanos_names_timestamp() {
        let event = Event {
            timestamp: Some(Timestamp { seconds: 1, nanos: -1 }),
            ..track()
        };
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(rejection.violations[0].field, "timestamp");
        assert!(rejection.violations[0].description.contains("-1"));
    }

    #[test]
    fn track_without_name_is_rejected() {
        let event = Event {
            event: " ".to_owned(),
            ..track()
        };
        assert_eq!(check(&event, "").unwrap_err().violations[0].field, "event");
    }

    fn with_properties(properties: serde_json::Value) -> Event {
        let serde_json::Value::Object(properties) = properties else {
            panic!("properties must be an object");
        };
        Event {
            properties: Some(rtim_proto::json::json_to_struct(properties)),
            ..track()
        }
    }

    #[test]
    fn nul_in_property_is_rejected() {
        let rejection = check(&with_properties(serde_json::json!({"product_id": "a\0b"})), "").unwrap_err();
        assert_eq!(rejection.violations[0].field, "properties.product_id");
    }

    #[test]
    fn nul_in_nested_key_is_rejected() {
        let event = with_properties(serde_json::json!({"products": [{"k\0": 1}]}));
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(rejection.violations[0].field, "properties.products[0].k\u{0}");
    }

    #[test]
    fn non_finite_price_is_rejected() {
        let mut event = with_properties(serde_json::json!({"price": 1.0}));
        if let Some(properties) = event.properties.as_mut() {
            properties.fields.get_mut("price").unwrap().kind = Some(Kind::NumberValue(f64::NAN));
        }
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(rejection.violations[0].field, "properties.price");
        assert!(rejection.violations[0].description.contains("NaN"));
    }

    #[test]
    fn deep_nesting_is_rejected() {
        let mut nested = serde_json::json!(1);
        for _ in 0..40 {
            nested = serde_json::json!({ "a": nested });
        }
        let rejection = check(&with_properties(nested), "").unwrap_err();
        assert!(rejection.violations[0].description.contains("nesting deeper than 32"));
    }

    #[test]
    fn nul_in_user_id_is_rejected() {
        let event = Event {
            user_id: "a\0b".to_owned(),
            ..track()
        };
        assert_eq!(check(&event, "").unwrap_err().violations[0].field, "user_id");
    }
}
