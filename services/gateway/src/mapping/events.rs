//! Segment-style tracking payloads to `rtim.events.v1.Event`. Field names
//! follow Segment's HTTP tracking API (camelCase); the snake_case forms
//! `user_id`, `anonymous_id`, `message_id` and the like are accepted too.
//!
//! The client's time of the event becomes `Event.timestamp`, and ingestion
//! keeps it as `original_timestamp` when it corrects clock skew. The server
//! sets `receivedAt`, so a `receivedAt` in the body is ignored.

use prost_types::{Struct, Timestamp};
use rtim_proto::events::v1::{Event, EventType, TimestampCorrection};
use rtim_proto::json::json_to_struct;
use rtim_runtime::errors::FieldViolation;
use serde_json::{Map, Value};

use super::fields::{Fields, kind_of, preview};

/// Reason reported for a batch item that is not a JSON object.
pub const NOT_AN_OBJECT: &str = "NOT_AN_OBJECT";
/// Reason reported for a batch item with an invalid field.
pub const INVALID_FIELD: &str = "INVALID_FIELD";
/// Reason reported for a batch item over `gateway.max_event_bytes`.
pub const EVENT_TOO_LARGE: &str = "EVENT_TOO_LARGE";

/// Keys of the client's time when it is not sent as `timestamp`.
const ORIGINAL_TIMESTAMP: [&str; 2] = ["originalTimestamp", "original_timestamp"];

const TYPES: &str = "track, identify, page, screen, alias, group";

/// The gateway's rejection of one batch item, which it did not send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub message_id: Option<String>,
    pub reason: &'static str,
    pub violations: Vec<FieldViolation>,
}

/// Maps the body of a single call (`/v1/track`, `/v1/screen` and the others).
pub fn single(body: &Value, kind: EventType) -> Result<Event, Vec<FieldViolation>> {
    let object = body
        .as_object()
        .ok_or_else(|| vec![FieldViolation::new("body", "must be a JSON object")])?;
    map_event(object, kind, "", &BatchDefaults::default())
}

/// Maps the body of `/v1/batch` to one result per item, in order. An item
/// whose compact JSON encoding exceeds `max_event_bytes` is rejected alone.
/// Fails as a whole only when the envelope is wrong: `batch` missing, not an
/// array or empty, or an invalid top-level `context` or `sentAt`.
pub fn batch(body: &Value, max_event_bytes: usize) -> Result<Vec<Result<Event, Rejection>>, Vec<FieldViolation>> {
    let object = body
        .as_object()
        .ok_or_else(|| vec![FieldViolation::new("body", "must be a JSON object")])?;
    let items = match object.get("batch") {
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => return Err(vec![FieldViolation::new("batch", "must contain at least one event")]),
        Some(other) => {
            let description = format!("must be an array of events, got {}", kind_of(other));
            return Err(vec![FieldViolation::new("batch", description)]);
        }
        None => {
            return Err(vec![FieldViolation::new(
                "batch",
                "missing: expected an array of events",
            )]);
        }
    };
    let defaults = BatchDefaults::read(object)?;
    let results = items
        .iter()
        .enumerate()
        .map(|(index, item)| batch_item(index, item, &defaults, max_event_bytes))
        .collect();
    Ok(results)
}

/// Returns the message id that a batch item was sent with, so that its
/// result carries it even when the event is rejected. Numbers are written
/// as text, as they are when the event is mapped.
pub fn message_id(item: &Value) -> Option<String> {
    ["messageId", "message_id"]
        .iter()
        .find_map(|name| match item.get(*name)? {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            _ => None,
        })
}

/// Returns the key in the body's `writeKey` field, where Segment's libraries may send it.
pub fn write_key(body: &Value) -> Option<&str> {
    body.get("writeKey").or_else(|| body.get("write_key"))?.as_str()
}

/// Envelope fields of a batch that apply to every item lacking them.
#[derive(Debug, Default)]
struct BatchDefaults {
    context: Map<String, Value>,
    sent_at: Option<Timestamp>,
}

impl BatchDefaults {
    fn read(envelope: &Map<String, Value>) -> Result<Self, Vec<FieldViolation>> {
        let mut fields = Fields::new(envelope, "");
        let defaults = Self {
            context: fields.object("context").unwrap_or_default(),
            sent_at: fields.timestamp(&["sentAt", "sent_at"]),
        };
        fields.finish(defaults)
    }
}

fn batch_item(
    index: usize,
    item: &Value,
    defaults: &BatchDefaults,
    max_event_bytes: usize,
) -> Result<Event, Rejection> {
    if let Err(error) = crate::body::check_event_size(item, max_event_bytes) {
        return Err(Rejection {
            message_id: message_id(item),
            reason: EVENT_TOO_LARGE,
            violations: vec![FieldViolation::new(format!("batch[{index}]"), error.to_string())],
        });
    }
    let Some(object) = item.as_object() else {
        let description = format!("must be a JSON object, got {}", kind_of(item));
        return Err(Rejection {
            message_id: None,
            reason: NOT_AN_OBJECT,
            violations: vec![FieldViolation::new(format!("batch[{index}]"), description)],
        });
    };
    let prefix = format!("batch[{index}].");
    let kind = event_type(object, &prefix);
    let mapped = map_event(
        object,
        kind.clone().unwrap_or(EventType::Unspecified),
        &prefix,
        defaults,
    );
    let violations = match (kind, mapped) {
        (Ok(_), Ok(event)) => return Ok(event),
        (Err(type_violation), Ok(_)) => vec![type_violation],
        (Ok(_), Err(violations)) => violations,
        (Err(type_violation), Err(violations)) => std::iter::once(type_violation).chain(violations).collect(),
    };
    Err(Rejection {
        message_id: message_id(item),
        reason: INVALID_FIELD,
        violations,
    })
}

fn event_type(object: &Map<String, Value>, prefix: &str) -> Result<EventType, FieldViolation> {
    let field = format!("{prefix}type");
    let name = match object.get("type") {
        None | Some(Value::Null) => {
            return Err(FieldViolation::new(field, format!("missing: expected one of {TYPES}")));
        }
        Some(Value::String(name)) => name,
        Some(other) => {
            return Err(FieldViolation::new(
                field,
                format!("must be a string, got {}", kind_of(other)),
            ));
        }
    };
    let kind = match name.to_ascii_lowercase().as_str() {
        "track" => EventType::Track,
        "identify" => EventType::Identify,
        "page" => EventType::Page,
        "screen" => EventType::Screen,
        "alias" => EventType::Alias,
        "group" => EventType::Group,
        _ => {
            let description = format!("unknown type '{}': expected one of {TYPES}", preview(name));
            return Err(FieldViolation::new(field, description));
        }
    };
    Ok(kind)
}

fn map_event(
    object: &Map<String, Value>,
    kind: EventType,
    prefix: &str,
    defaults: &BatchDefaults,
) -> Result<Event, Vec<FieldViolation>> {
    let mut fields = Fields::new(object, prefix);
    let mut context = fields.object("context").unwrap_or_default();
    for (key, value) in &defaults.context {
        context.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let event = Event {
        message_id: fields.text(&["messageId", "message_id"]),
        r#type: kind.into(),
        user_id: fields.text(&["userId", "user_id"]),
        anonymous_id: fields.text(&["anonymousId", "anonymous_id"]),
        event: fields.text(&["event"]),
        name: fields.text(&["name"]),
        properties: fields.object("properties").map(json_to_struct),
        traits: traits(&mut fields, kind, &context).map(json_to_struct),
        timestamp: client_time(&mut fields),
        sent_at: fields.timestamp(&["sentAt", "sent_at"]).or(defaults.sent_at),
        received_at: None,
        session_id: fields.session_id(&context),
        previous_id: fields.text(&["previousId", "previous_id"]),
        group_id: fields.text(&["groupId", "group_id"]),
        context: context_struct(context),
        integrations: fields.object("integrations").map(json_to_struct),
        original_timestamp: None,
        timestamp_correction: TimestampCorrection::Unspecified.into(),
    };
    fields.finish(event)
}

/// Returns the traits of an event. RudderStack's libraries send the traits
/// of an identify call as `context.traits` rather than at the top level,
/// so an identify call without `traits` takes them from there.
fn traits(fields: &mut Fields<'_>, kind: EventType, context: &Map<String, Value>) -> Option<Map<String, Value>> {
    let traits = fields.object("traits");
    if traits.is_some() || kind != EventType::Identify {
        return traits;
    }
    context.get("traits").and_then(Value::as_object).cloned()
}

/// Returns the client's time of the event. Segment's libraries send it as
/// `timestamp`. Where `originalTimestamp` is present it wins, because there
/// `timestamp` is Segment's skew-corrected time (as in Segment's exports),
/// and correcting that again against `sentAt` would shift it twice.
fn client_time(fields: &mut Fields<'_>) -> Option<Timestamp> {
    if fields.find(&ORIGINAL_TIMESTAMP).is_some() {
        fields.timestamp(&ORIGINAL_TIMESTAMP)
    } else {
        fields.timestamp(&["timestamp"])
    }
}

fn context_struct(context: Map<String, Value>) -> Option<Struct> {
    (!context.is_empty()).then(|| json_to_struct(context))
}

#[cfg(test)]
mod tests {
    use rtim_proto::json::{field_number, field_text};
    use serde_json::json;

    use super::*;

    /// The default `gateway.max_event_bytes`.
    const LIMIT: usize = 32 * 1024;

    #[test]
    fn camel_case_fields() {
        let body = json!({
            "userId": "u1",
            "anonymousId": "a1",
            "messageId": "m1",
            "event": "Product Viewed",
            "properties": {"product_id": "p1", "price": 35.5},
            "context": {"sessionId": "s1", "ip": "203.0.113.7"},
            "timestamp": "2026-12-04T10:00:00Z",
            "sentAt": "2026-12-04T10:00:01Z",
        });
        let event = single(&body, EventType::Track).expect("valid event");
        assert_eq!(event.user_id, "u1", "user id");
        assert_eq!(event.anonymous_id, "a1", "anonymous id");
        assert_eq!(event.message_id, "m1", "message id");
        assert_eq!(event.event, "Product Viewed", "event name");
        assert_eq!(event.r#type, EventType::Track as i32, "type");
        assert_eq!(event.session_id, "s1", "session id");
        assert_eq!(field_number(event.properties.as_ref(), "price"), Some(35.5), "price");
        assert_eq!(
            event.timestamp.map(|time| time.seconds),
            Some(1_796_378_400),
            "timestamp"
        );
        assert_eq!(event.sent_at.map(|time| time.seconds), Some(1_796_378_401), "sent at");
        assert_eq!(
            field_text(event.context.as_ref(), "ip").as_deref(),
            Some("203.0.113.7"),
            "context"
        );
    }

    #[test]
    fn snake_case_fields() {
        let body = json!({
            "user_id": "u1",
            "anonymous_id": "a1",
            "message_id": "m1",
            "name": "Home",
            "context": {"session_id": 42},
        });
        let event = single(&body, EventType::Page).expect("valid event");
        assert_eq!(event.user_id, "u1", "user id");
        assert_eq!(event.anonymous_id, "a1", "anonymous id");
        assert_eq!(event.message_id, "m1", "message id");
        assert_eq!(event.name, "Home", "page name");
        assert_eq!(event.session_id, "42", "numeric session id");
    }

    #[test]
    fn numeric_user_id_is_text() {
        let event = single(&json!({"userId": 1307067}), EventType::Identify).expect("valid event");
        assert_eq!(event.user_id, "1307067");
    }

    #[test]
    fn malformed_timestamp_named() {
        let body = json!({"userId": "u1", "event": "x", "timestamp": "yesterday"});
        let violations = single(&body, EventType::Track).unwrap_err();
        assert_eq!(violations.len(), 1, "violations: {violations:?}");
        assert_eq!(violations[0].field, "timestamp", "field");
        assert!(
            violations[0].description.contains("'yesterday'"),
            "{}",
            violations[0].description
        );
    }

    #[test]
    fn wrong_shapes_rejected() {
        let body = json!({"userId": {"id": 1}, "properties": [1], "timestamp": 17});
        let violations = single(&body, EventType::Track).unwrap_err();
        let fields: Vec<_> = violations.iter().map(|violation| violation.field.as_str()).collect();
        assert_eq!(fields, ["userId", "properties", "timestamp"]);
    }

    #[test]
    fn body_must_be_object() {
        let violations = single(&json!([1, 2]), EventType::Track).unwrap_err();
        assert_eq!(violations[0].field, "body");
    }

    #[test]
    fn batch_one_bad_item() {
        let body = json!({"batch": [
            {"type": "track", "userId": "u1", "event": "Product Viewed"},
            {"type": "track", "userId": "u1", "event": "x", "messageId": "m2", "timestamp": "soon"},
            "not an event",
            {"type": "page", "anonymousId": "a1", "name": "Home"},
        ]});
        let results = batch(&body, LIMIT).expect("valid envelope");
        assert_eq!(results.len(), 4, "one result per item");
        assert!(results[0].is_ok(), "item 0: {:?}", results[0]);
        assert!(results[3].is_ok(), "item 3: {:?}", results[3]);

        let rejection = results[1].clone().unwrap_err();
        assert_eq!(rejection.message_id.as_deref(), Some("m2"), "message id kept");
        assert_eq!(rejection.reason, INVALID_FIELD, "reason");
        assert_eq!(rejection.violations[0].field, "batch[1].timestamp", "field path");
        assert!(rejection.violations[0].description.contains("'soon'"), "value named");

        let rejection = results[2].clone().unwrap_err();
        assert_eq!(rejection.reason, NOT_AN_OBJECT, "reason");
        assert_eq!(rejection.violations[0].field, "batch[2]", "field path");
    }

    #[test]
    fn batch_too_deep_item_rejected_alone() {
        let mut deep = json!(1);
        for _ in 0..rtim_proto::json::MAX_STRUCT_DEPTH {
            deep = json!({ "a": deep });
        }
        let too_deep = json!({ "a": deep.clone() });
        let body = json!({"batch": [
            {"type": "track", "userId": "u1", "event": "Product Viewed", "properties": deep},
            {"type": "track", "userId": "u1", "event": "x", "messageId": "m2", "properties": too_deep},
        ]});

        let results = batch(&body, LIMIT).expect("valid envelope");

        assert!(results[0].is_ok(), "24 levels are accepted: {:?}", results[0]);
        let rejection = results[1].clone().unwrap_err();
        assert_eq!(rejection.message_id.as_deref(), Some("m2"), "message id kept");
        assert_eq!(rejection.violations[0].field, "batch[1].properties", "field path");
        assert_eq!(rejection.violations[0].description, "nesting deeper than 24 levels");
    }

    #[test]
    fn batch_item_types() {
        let body = json!({"batch": [
            {"type": "screen", "userId": "u1", "name": "Cart"},
            {"type": "alias", "userId": "u1", "previousId": "a1"},
            {"type": "group", "userId": "u1", "groupId": "g1"},
            {"type": "purchase", "userId": "u1"},
            {"userId": "u1"},
        ]});
        let results = batch(&body, LIMIT).expect("valid envelope");
        let kinds: Vec<_> = results
            .iter()
            .take(3)
            .map(|result| result.as_ref().map(|event| event.r#type))
            .collect();
        let expected = [EventType::Screen, EventType::Alias, EventType::Group].map(|kind| Ok(kind as i32));
        assert_eq!(kinds, expected, "types");
        assert_eq!(
            results[1].as_ref().map(|event| event.previous_id.as_str()),
            Ok("a1"),
            "previous id"
        );
        assert_eq!(
            results[2].as_ref().map(|event| event.group_id.as_str()),
            Ok("g1"),
            "group id"
        );
        let unknown = results[3].clone().unwrap_err();
        assert!(
            unknown.violations[0].description.contains("'purchase'"),
            "unknown type named"
        );
        let missing = results[4].clone().unwrap_err();
        assert_eq!(missing.violations[0].field, "batch[4].type", "missing type");
    }

    #[test]
    fn batch_envelope_defaults() {
        let body = json!({
            "batch": [
                {"type": "track", "userId": "u1", "event": "x", "context": {"sessionId": "s1"}},
                {"type": "track", "userId": "u1", "event": "x", "sentAt": "2026-12-04T10:00:05Z"},
            ],
            "context": {"library": {"name": "analytics-python"}, "sessionId": "s0"},
            "sentAt": "2026-12-04T10:00:01Z",
        });
        let results = batch(&body, LIMIT).expect("valid envelope");
        let first = results[0].as_ref().expect("valid item");
        let second = results[1].as_ref().expect("valid item");
        assert_eq!(first.session_id, "s1", "item context wins");
        assert_eq!(second.session_id, "s0", "envelope context applies");
        assert_eq!(
            first.sent_at.map(|time| time.seconds),
            Some(1_796_378_401),
            "envelope sentAt"
        );
        assert_eq!(
            second.sent_at.map(|time| time.seconds),
            Some(1_796_378_405),
            "item sentAt wins"
        );
        assert!(
            first
                .context
                .as_ref()
                .is_some_and(|context| context.fields.contains_key("library"))
        );
    }

    #[test]
    fn batch_envelope_errors() {
        let cases = [
            (json!({}), "batch"),
            (json!({"batch": []}), "batch"),
            (json!({"batch": {"type": "track"}}), "batch"),
            (json!({"batch": [{}], "sentAt": "later"}), "sentAt"),
        ];
        for (body, field) in cases {
            let violations = batch(&body, LIMIT).unwrap_err();
            assert_eq!(violations[0].field, field, "body {body}");
        }
    }

    #[test]
    fn original_timestamp_is_client_time() {
        let body = json!({"userId": "u1", "event": "x", "originalTimestamp": "2026-12-04T10:00:00Z"});
        let event = single(&body, EventType::Track).expect("valid event");
        assert_eq!(
            event.timestamp.map(|time| time.seconds),
            Some(1_796_378_400),
            "original only"
        );

        let body = json!({
            "userId": "u1",
            "event": "x",
            "timestamp": "2026-12-04T10:00:05Z",
            "originalTimestamp": "2026-12-04T10:00:00Z",
        });
        let event = single(&body, EventType::Track).expect("valid event");
        assert_eq!(
            event.timestamp.map(|time| time.seconds),
            Some(1_796_378_400),
            "original wins"
        );
        assert_eq!(event.original_timestamp, None, "left to ingestion");

        let body =
            json!({"userId": "u1", "event": "x", "originalTimestamp": "later", "timestamp": "2026-12-04T10:00:05Z"});
        let violations = single(&body, EventType::Track).unwrap_err();
        assert_eq!(violations[0].field, "originalTimestamp", "invalid original named");
    }

    #[test]
    fn received_at_ignored_integrations_kept() {
        let body = json!({
            "userId": "u1",
            "event": "x",
            "receivedAt": "2026-12-04T10:00:00Z",
            "integrations": {"All": true, "Mixpanel": false},
        });
        let event = single(&body, EventType::Track).expect("valid event");
        assert_eq!(event.received_at, None, "received at");
        let integrations = rtim_proto::json::struct_to_json(event.integrations.as_ref());
        assert_eq!(integrations, json!({"All": true, "Mixpanel": false}), "integrations");
    }

    #[test]
    fn identify_traits_from_context() {
        let body = json!({"userId": "u1", "context": {"traits": {"plan": "gold"}}});
        let event = single(&body, EventType::Identify).expect("valid event");
        assert_eq!(
            field_text(event.traits.as_ref(), "plan").as_deref(),
            Some("gold"),
            "identify"
        );

        let body = json!({"userId": "u1", "traits": {"plan": "silver"}, "context": {"traits": {"plan": "gold"}}});
        let event = single(&body, EventType::Identify).expect("valid event");
        assert_eq!(
            field_text(event.traits.as_ref(), "plan").as_deref(),
            Some("silver"),
            "top level wins"
        );

        let body = json!({"userId": "u1", "event": "x", "context": {"traits": {"plan": "gold"}}});
        let event = single(&body, EventType::Track).expect("valid event");
        assert_eq!(event.traits, None, "track keeps context traits in context");
    }

    #[test]
    fn batch_oversized_item_alone() {
        let padding = "x".repeat(LIMIT);
        let body = json!({"batch": [
            {"type": "track", "userId": "u1", "event": "x", "messageId": "big", "properties": {"padding": padding}},
            {"type": "track", "userId": "u1", "event": "x", "messageId": "small"},
        ]});
        let results = batch(&body, LIMIT).expect("valid envelope");
        let rejection = results[0].clone().unwrap_err();
        assert_eq!(rejection.reason, EVENT_TOO_LARGE, "reason");
        assert_eq!(rejection.message_id.as_deref(), Some("big"), "message id");
        assert_eq!(rejection.violations[0].field, "batch[0]", "field");
        let size = crate::body::encoded_len(&body["batch"][0]);
        assert_eq!(
            rejection.violations[0].description,
            format!("event is {size} bytes, over the limit of 32768 bytes (gateway.max_event_bytes)"),
            "description"
        );
        assert!(results[1].is_ok(), "small item: {:?}", results[1]);
    }

    #[test]
    fn write_key_read_from_body() {
        assert_eq!(write_key(&json!({"writeKey": "k1"})), Some("k1"));
        assert_eq!(write_key(&json!({"write_key": "k2"})), Some("k2"));
        assert_eq!(write_key(&json!({"batch": []})), None);
    }
}
