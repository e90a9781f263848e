//! Event validation. Each check names the field it rejects, with the value
//! where it is short enough to echo back.

use prost_types::Timestamp;
use rtim_proto::events::v1::{Event, EventType};
use rtim_runtime::errors::FieldViolation;

/// Longest id (message, user, anonymous, session, group) accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest event or page name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;

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

    #[test]
    fn nul_in_user_id_is_rejected() {
        let event = Event {
            user_id: "a\0b".to_owned(),
            ..track()
        };
        assert_eq!(check(&event, "").unwrap_err().violations[0].field, "user_id");
    }
}
