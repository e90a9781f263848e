//! Event validation. Each check names the field it rejects, with the value
//! where it is short enough to echo back, and the whole event is checked so
//! that one response lists every problem.
//!
//! Invalid UTF-8 never reaches these checks: prost rejects it while decoding
//! a request, and [`crate::decode`] turns that failure into INVALID_ARGUMENT.

use prost::Message;
use prost_types::value::Kind;
use prost_types::{Struct, Timestamp, Value};
use rtim_proto::events::v1::{Event, EventType};
use rtim_runtime::errors::FieldViolation;

/// Maximum length of an id (message, user, anonymous, session, group), in bytes.
pub const MAX_ID_LEN: usize = 256;
/// Maximum length of an event or page name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Maximum nesting of objects and lists in properties, traits, context and
/// integrations.
pub const MAX_DEPTH: usize = rtim_proto::json::MAX_STRUCT_DEPTH;
/// Default of `ingestion.max_event_bytes`.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 32 * 1024;
/// Earliest and latest seconds a protobuf `Timestamp` may hold: years 1 to 9999.
pub const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// The rejection reasons, stable for clients that branch on them.
pub mod reason {
    /// Neither user_id nor anonymous_id, and nothing else wrong.
    pub const MISSING_IDENTITY: &str = "MISSING_IDENTITY";
    /// Any other invalid or missing field; the violations name them.
    pub const INVALID_FIELD: &str = "INVALID_FIELD";
    /// The encoded event exceeds `ingestion.max_event_bytes`.
    pub const EVENT_TOO_LARGE: &str = "EVENT_TOO_LARGE";
}

/// Type that Segment's E-commerce Spec v2 gives a reserved property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Number,
    /// Ids: the spec types them as strings, and shops often send numbers.
    StringOrNumber,
    String,
    ListOfObjects,
}

/// Reserved properties whose type is checked on Track events, at the top of
/// `properties` and in each object of `properties.products`, following the
/// types in Segment's E-commerce Spec v2. `null` passes for each of them,
/// because Segment's libraries send `null` for an unset optional value.
/// `position` is left out: the spec types it as a number for products and as
/// a string for promotions.
const RESERVED_PROPERTIES: &[(&str, Expected)] = &[
    ("revenue", Expected::Number),
    ("price", Expected::Number),
    ("quantity", Expected::Number),
    ("total", Expected::Number),
    ("subtotal", Expected::Number),
    ("value", Expected::Number),
    ("shipping", Expected::Number),
    ("tax", Expected::Number),
    ("discount", Expected::Number),
    ("order_id", Expected::StringOrNumber),
    ("product_id", Expected::StringOrNumber),
    ("checkout_id", Expected::StringOrNumber),
    ("currency", Expected::String),
    ("products", Expected::ListOfObjects),
];

/// Limits that come from the settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded event, in bytes (`ingestion.max_event_bytes`).
    pub max_event_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
        }
    }
}

/// Why an event was rejected: a machine-readable reason and the violations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub reason: &'static str,
    pub violations: Vec<FieldViolation>,
}

impl Rejection {
    /// Creates a rejection with reason `INVALID_FIELD`.
    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        Self {
            reason: reason::INVALID_FIELD,
            violations,
        }
    }
}

/// Checks one event with the default [`Limits`]; `prefix` is prepended to
/// field paths (`events[3].`).
pub fn check(event: &Event, prefix: &str) -> Result<(), Rejection> {
    check_with(event, prefix, &Limits::default())
}

/// Checks one event; `prefix` is prepended to field paths (`events[3].`).
///
/// An event over the size limit is rejected for its size alone, without the
/// other checks, so that a large payload costs no walk through its fields.
pub fn check_with(event: &Event, prefix: &str, limits: &Limits) -> Result<(), Rejection> {
    let size = event.encoded_len();
    if size > limits.max_event_bytes {
        let whole = prefix
            .strip_suffix('.')
            .filter(|path| !path.is_empty())
            .unwrap_or("event");
        return Err(Rejection {
            reason: reason::EVENT_TOO_LARGE,
            violations: vec![FieldViolation::new(
                whole,
                format!(
                    "event is {size} bytes encoded, over the limit of {} bytes (ingestion.max_event_bytes)",
                    limits.max_event_bytes
                ),
            )],
        });
    }

    let mut violations = Vec::new();
    let field = |name: &str| format!("{prefix}{name}");
    let missing_identity = check_required(&mut violations, event, &field);
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
    for (name, value) in [
        ("properties", &event.properties),
        ("traits", &event.traits),
        ("context", &event.context),
        ("integrations", &event.integrations),
    ] {
        if let Some(value) = value {
            check_struct(&mut violations, &field(name), value, 1);
        }
    }
    if event.r#type() == EventType::Track
        && let Some(properties) = &event.properties
    {
        check_reserved(&mut violations, &field("properties"), properties);
    }
    check_timestamp(&mut violations, &field("timestamp"), event.timestamp.as_ref());
    check_timestamp(&mut violations, &field("sent_at"), event.sent_at.as_ref());

    match violations.len() {
        0 => Ok(()),
        1 if missing_identity => Err(Rejection {
            reason: reason::MISSING_IDENTITY,
            violations,
        }),
        _ => Err(Rejection::invalid(violations)),
    }
}

/// Checks the fields each call type requires and returns whether the
/// identity (user_id, or anonymous_id where it may stand in) is missing.
fn check_required(violations: &mut Vec<FieldViolation>, event: &Event, field: &impl Fn(&str) -> String) -> bool {
    let event_type = event.r#type();
    let mut missing_identity = false;
    if event_type == EventType::Unspecified {
        violations.push(FieldViolation::new(
            field("type"),
            format!("event type is required, got {}", event.r#type),
        ));
    }
    if event_type == EventType::Alias {
        // An alias links previous_id to a known user, so an anonymous id cannot stand in.
        if event.user_id.is_empty() {
            missing_identity = true;
            violations.push(FieldViolation::new(field("user_id"), "alias events need user_id"));
        }
    } else if event.user_id.is_empty() && event.anonymous_id.is_empty() {
        missing_identity = true;
        violations.push(FieldViolation::new(
            field("user_id"),
            "either user_id or anonymous_id is required",
        ));
    }

    match event_type {
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
    missing_identity
}

/// Ids and names may hold no control character at all, as the read paths'
/// id check requires, so that every stored id can be looked up again.
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

/// Returns the first C0 control character other than tab, LF and CR. NUL
/// cannot be stored in PostgreSQL text, and the others have no place in
/// tracking data, while the three allowed ones occur in free text.
fn forbidden_control(text: &str) -> Option<char> {
    text.chars().find(|&c| c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
}

fn control_violation(path: &str, part: &str, control: char) -> FieldViolation {
    let name = if control == '\0' { " (NUL)" } else { "" };
    FieldViolation::new(
        path,
        format!("{part} contains the control character U+{:04X}{name}", control as u32),
    )
}

/// Rejects what JSON cannot carry or PostgreSQL cannot store: control
/// characters in keys and strings, non-finite numbers, and nesting deeper
/// than [`MAX_DEPTH`].
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
        if let Some(control) = forbidden_control(key) {
            violations.push(control_violation(&field, "key", control));
        }
        check_value(violations, &field, value, depth);
    }
}

fn check_value(violations: &mut Vec<FieldViolation>, path: &str, value: &Value, depth: usize) {
    match &value.kind {
        Some(Kind::StringValue(text)) => {
            if let Some(control) = forbidden_control(text) {
                violations.push(control_violation(path, "value", control));
            }
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

/// Checks the types of [`RESERVED_PROPERTIES`] in `properties` and in each
/// object of its `products` list.
fn check_reserved(violations: &mut Vec<FieldViolation>, path: &str, properties: &Struct) {
    check_reserved_fields(violations, path, properties);
    let Some(Kind::ListValue(products)) = properties.fields.get("products").and_then(|value| value.kind.as_ref())
    else {
        return;
    };
    for (index, product) in products.values.iter().enumerate() {
        if let Some(Kind::StructValue(product)) = &product.kind {
            check_reserved_fields(violations, &format!("{path}.products[{index}]"), product);
        }
    }
}

fn check_reserved_fields(violations: &mut Vec<FieldViolation>, path: &str, fields: &Struct) {
    for &(name, expected) in RESERVED_PROPERTIES {
        let Some(kind) = fields.fields.get(name).and_then(|value| value.kind.as_ref()) else {
            continue;
        };
        let matches = match (expected, kind) {
            (_, Kind::NullValue(_)) => true,
            (Expected::Number, Kind::NumberValue(_)) => true,
            (Expected::StringOrNumber, Kind::StringValue(_) | Kind::NumberValue(_)) => true,
            (Expected::String, Kind::StringValue(_)) => true,
            (Expected::ListOfObjects, Kind::ListValue(list)) => list
                .values
                .iter()
                .all(|item| matches!(item.kind, Some(Kind::StructValue(_)))),
            _ => false,
        };
        if !matches {
            let expected_type = match expected {
                Expected::Number => "a number",
                Expected::StringOrNumber => "a string or a number",
                Expected::String => "a string",
                Expected::ListOfObjects => "a list of objects",
            };
            violations.push(FieldViolation::new(
                format!("{path}.{name}"),
                format!("must be {expected_type}, got {}", kind_name(kind)),
            ));
        }
    }
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::NullValue(_) => "null",
        Kind::NumberValue(_) => "a number",
        Kind::StringValue(_) => "a string",
        Kind::BoolValue(_) => "a boolean",
        Kind::StructValue(_) => "an object",
        Kind::ListValue(list)
            if list
                .values
                .iter()
                .all(|item| matches!(item.kind, Some(Kind::StructValue(_)))) =>
        {
            "a list"
        }
        Kind::ListValue(_) => "a list with items that are not objects",
    }
}

/// Accepts timestamps between years 1 and 9999 with nanos in range, as the
/// protobuf `Timestamp` contract requires.
fn check_timestamp(violations: &mut Vec<FieldViolation>, field: &str, timestamp: Option<&Timestamp>) {
    let Some(timestamp) = timestamp else {
        return;
    };
    if !(0..1_000_000_000).contains(&timestamp.nanos) {
        violations.push(FieldViolation::new(
            field,
            format!("nanos must be in 0..=999999999, got {}", timestamp.nanos),
        ));
    } else if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&timestamp.seconds) {
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
        for _ in 0..MAX_DEPTH {
            nested = serde_json::json!({ "a": nested });
        }
        assert!(
            check(&with_properties(nested.clone()), "").is_ok(),
            "{MAX_DEPTH} levels pass"
        );

        let nested = serde_json::json!({ "a": nested });
        let rejection = check(&with_properties(nested), "").unwrap_err();
        assert_eq!(rejection.violations[0].description, "nesting deeper than 24 levels");
    }

    #[test]
    fn nul_in_user_id_is_rejected() {
        let event = Event {
            user_id: "a\0b".to_owned(),
            ..track()
        };
        assert_eq!(check(&event, "").unwrap_err().violations[0].field, "user_id");
    }

    fn of_type(event_type: EventType) -> Event {
        Event {
            r#type: event_type as i32,
            ..Event::default()
        }
    }

    #[test]
    fn page_and_screen_need_only_identity() {
        for event_type in [EventType::Page, EventType::Screen, EventType::Identify] {
            let event = Event {
                anonymous_id: "a1".to_owned(),
                ..of_type(event_type)
            };
            assert_eq!(check(&event, ""), Ok(()), "{event_type:?}");
        }
    }

    #[test]
    fn identify_without_identity_is_missing_identity() {
        let rejection = check(&of_type(EventType::Identify), "").unwrap_err();
        assert_eq!(rejection.reason, "MISSING_IDENTITY");
        assert_eq!(
            rejection.violations,
            [FieldViolation::new(
                "user_id",
                "either user_id or anonymous_id is required"
            )]
        );
    }

    #[test]
    fn alias_needs_user_id_not_anonymous_id() {
        let event = Event {
            anonymous_id: "a1".to_owned(),
            previous_id: "a0".to_owned(),
            ..of_type(EventType::Alias)
        };
        let rejection = check(&event, "event.").unwrap_err();
        assert_eq!(rejection.reason, "MISSING_IDENTITY");
        assert_eq!(
            rejection.violations,
            [FieldViolation::new("event.user_id", "alias events need user_id")]
        );
    }

    #[test]
    fn alias_needs_previous_id() {
        let event = Event {
            user_id: "u1".to_owned(),
            ..of_type(EventType::Alias)
        };
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(rejection.reason, "INVALID_FIELD");
        assert_eq!(
            rejection.violations,
            [FieldViolation::new("previous_id", "alias events need previous_id")]
        );
        let complete = Event {
            previous_id: "a0".to_owned(),
            ..event
        };
        assert_eq!(check(&complete, ""), Ok(()));
    }

    #[test]
    fn group_needs_group_id() {
        let event = Event {
            user_id: "u1".to_owned(),
            ..of_type(EventType::Group)
        };
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(
            rejection.violations,
            [FieldViolation::new("group_id", "group events need group_id")]
        );
    }

    #[test]
    fn oversized_event_names_limit_and_size() {
        // 2 bytes of type, 4 of user_id, 16 of event and 1 + 3 + 33000 of name.
        let event = Event {
            name: "x".repeat(33_000),
            ..track()
        };
        let rejection = check(&event, "events[7].").unwrap_err();
        assert_eq!(rejection.reason, "EVENT_TOO_LARGE");
        assert_eq!(
            rejection.violations,
            [FieldViolation::new(
                "events[7]",
                "event is 33026 bytes encoded, over the limit of 32768 bytes (ingestion.max_event_bytes)"
            )]
        );
    }

    #[test]
    fn size_limit_comes_from_limits() {
        let limits = Limits { max_event_bytes: 22 };
        assert_eq!(check_with(&track(), "", &limits), Ok(()));
        let limits = Limits { max_event_bytes: 21 };
        let rejection = check_with(&track(), "", &limits).unwrap_err();
        assert_eq!(rejection.violations[0].field, "event");
        assert_eq!(
            rejection.violations[0].description,
            "event is 22 bytes encoded, over the limit of 21 bytes (ingestion.max_event_bytes)"
        );
    }

    #[test]
    fn c0_controls_are_rejected_with_path() {
        let event = with_properties(serde_json::json!({
            "note": "line one\nline two\ttabbed\r\n",
            "products": [{"name": "ok"}, {"name": "bell\u{7}"}],
        }));
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(rejection.reason, "INVALID_FIELD");
        assert_eq!(
            rejection.violations,
            [FieldViolation::new(
                "properties.products[1].name",
                "value contains the control character U+0007"
            )]
        );
    }

    #[test]
    fn nul_is_named_in_traits_context_and_integrations() {
        let object = |json: serde_json::Value| {
            let serde_json::Value::Object(object) = json else {
                panic!("an object is expected");
            };
            Some(rtim_proto::json::json_to_struct(object))
        };
        let event = Event {
            traits: object(serde_json::json!({"email": "a\u{0}@example.com"})),
            context: object(serde_json::json!({"page": {"title": "x\u{1b}[31m"}})),
            integrations: object(serde_json::json!({"All": true, "Bad\u{1}Key": false})),
            ..track()
        };
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(
            rejection.violations,
            [
                FieldViolation::new("traits.email", "value contains the control character U+0000 (NUL)"),
                FieldViolation::new("context.page.title", "value contains the control character U+001B"),
                FieldViolation::new("integrations.Bad\u{1}Key", "key contains the control character U+0001"),
            ]
        );
    }

    #[test]
    fn tab_in_id_is_rejected() {
        let event = Event {
            anonymous_id: "a\t1".to_owned(),
            ..track()
        };
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(rejection.violations[0].field, "anonymous_id");
    }

    #[test]
    fn reserved_properties_need_their_types() {
        let event = with_properties(serde_json::json!({
            "order_id": 50_314,
            "revenue": "25.00",
            "currency": null,
            "value": 3,
            "products": [
                {"product_id": "507f1f77", "price": 18.5, "quantity": 1},
                {"product_id": true, "price": "19", "quantity": null},
            ],
        }));
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(rejection.reason, "INVALID_FIELD");
        assert_eq!(
            rejection.violations,
            [
                FieldViolation::new("properties.revenue", "must be a number, got a string"),
                FieldViolation::new("properties.products[1].price", "must be a number, got a string"),
                FieldViolation::new(
                    "properties.products[1].product_id",
                    "must be a string or a number, got a boolean"
                ),
            ]
        );
    }

    #[test]
    fn products_must_be_list_of_objects() {
        let rejection = check(&with_properties(serde_json::json!({"products": {"sku": "a"}})), "").unwrap_err();
        assert_eq!(
            rejection.violations,
            [FieldViolation::new(
                "properties.products",
                "must be a list of objects, got an object"
            )]
        );
        let rejection = check(&with_properties(serde_json::json!({"products": ["a"]})), "").unwrap_err();
        assert_eq!(
            rejection.violations,
            [FieldViolation::new(
                "properties.products",
                "must be a list of objects, got a list with items that are not objects"
            )]
        );
    }

    #[test]
    fn reserved_types_apply_to_track_only() {
        let mut event = with_properties(serde_json::json!({"revenue": "a lot", "currency": 978}));
        event.r#type = EventType::Page as i32;
        assert_eq!(check(&event, ""), Ok(()));
        event.r#type = EventType::Track as i32;
        assert_eq!(check(&event, "").unwrap_err().violations.len(), 2);
    }

    #[test]
    fn every_problem_is_listed() {
        let event = Event {
            r#type: EventType::Track as i32,
            event: String::new(),
            sent_at: Some(Timestamp { seconds: 0, nanos: -5 }),
            ..Event::default()
        };
        let rejection = check(&event, "").unwrap_err();
        assert_eq!(rejection.reason, "INVALID_FIELD");
        let fields: Vec<&str> = rejection.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["user_id", "event", "sent_at"]);
    }
}
