//! Field paths of the ingestion service's violations mapped back to the keys
//! of the tracking body the client sent. The service names `Event` fields
//! under `event.` for a single call and `events[k].` for the k-th event it
//! received in a batch, and calls the whole list `events`. Single calls that
//! the gateway sends as a batch of one event get `events[0].`. The client sent
//! Segment's keys, at the top level of a single call and under `batch[i].`
//! in a batch, where `i` counts the events the gateway rejected itself too.

use rtim_runtime::errors::FieldViolation;
use serde_json::Value;

/// Segment's keys of the `Event` fields whose names differ from them: the
/// camelCase key first, then the snake_case key that the gateway accepts too.
const RENAMED: [(&str, [&str; 2]); 6] = [
    ("message_id", ["messageId", "message_id"]),
    ("user_id", ["userId", "user_id"]),
    ("anonymous_id", ["anonymousId", "anonymous_id"]),
    ("previous_id", ["previousId", "previous_id"]),
    ("group_id", ["groupId", "group_id"]),
    ("sent_at", ["sentAt", "sent_at"]),
];

/// Renames the violations of a single call (`/v1/track`, `/v1/identify`,
/// `/v1/page`), whose body is the event.
pub fn single_violations(violations: Vec<FieldViolation>, body: &Value) -> Vec<FieldViolation> {
    rename(violations, |field| single_field(field, body))
}

/// Renames the violations of a batch call that the service rejected as a
/// whole. `sent[k]` is the batch position of the k-th event sent.
pub fn batch_violations(violations: Vec<FieldViolation>, items: &[Value], sent: &[usize]) -> Vec<FieldViolation> {
    rename(violations, |field| batch_field(field, items, sent))
}

/// Maps a path of a single call: `event.user_id` or `events[0].user_id`
/// becomes `userId`, or `user_id` when the body used that key.
pub fn single_field(field: &str, body: &Value) -> String {
    let relative = field
        .strip_prefix("event.")
        .or_else(|| field.strip_prefix("events[0]."))
        .unwrap_or(field);
    event_key(relative, Some(body))
}

/// Maps a path of a batch call: `events` becomes `batch`, and
/// `events[k].user_id` becomes `batch[i].userId` with `i = sent[k]`.
pub fn batch_field(field: &str, items: &[Value], sent: &[usize]) -> String {
    if field == "events" {
        return "batch".to_owned();
    }
    match split_event_index(field) {
        Some((position, relative)) => match sent.get(position) {
            Some(&index) => item_field(index, relative, items.get(index)),
            None => field.to_owned(),
        },
        None => field.to_owned(),
    }
}

/// Maps a path of one event of a batch, the item at batch position `index`.
/// The service may or may not prefix it with `events[k].`.
pub fn batch_item_field(index: usize, field: &str, item: Option<&Value>) -> String {
    let relative = split_event_index(field).map_or(field, |(_, relative)| relative);
    item_field(index, relative, item)
}

fn item_field(index: usize, relative: &str, item: Option<&Value>) -> String {
    if relative.is_empty() {
        format!("batch[{index}]")
    } else {
        format!("batch[{index}].{}", event_key(relative, item))
    }
}

fn rename(violations: Vec<FieldViolation>, map: impl Fn(&str) -> String) -> Vec<FieldViolation> {
    violations
        .into_iter()
        .map(|violation| FieldViolation::new(map(&violation.field), violation.description))
        .collect()
}

/// Splits `events[3].user_id` into `(3, "user_id")` and `events[3]` into `(3, "")`.
fn split_event_index(field: &str) -> Option<(usize, &str)> {
    let rest = field.strip_prefix("events[")?;
    let (number, rest) = rest.split_once(']')?;
    let position = number.parse().ok()?;
    Some((position, rest.strip_prefix('.').unwrap_or(rest)))
}

/// Maps a path relative to an `Event` to the key in `object`. Only the first
/// segment is renamed, so `properties.price` stays as it is.
fn event_key(relative: &str, object: Option<&Value>) -> String {
    let split = relative.find(['.', '[']).unwrap_or(relative.len());
    let (head, tail) = relative.split_at(split);
    if head == "session_id" {
        return format!("{}{tail}", session_key(object));
    }
    if head == "timestamp" {
        let original = ["originalTimestamp", "original_timestamp"]
            .into_iter()
            .find(|key| object.is_some_and(|object| present(object, key)));
        if let Some(key) = original {
            return format!("{key}{tail}");
        }
    }
    let key = match RENAMED.iter().find(|(name, _)| *name == head) {
        Some((_, [camel, snake])) => {
            let sent_snake = object.is_some_and(|object| present(object, snake) && !present(object, camel));
            if sent_snake {
                (*snake).to_owned()
            } else {
                (*camel).to_owned()
            }
        }
        None => camel_case(head),
    };
    format!("{key}{tail}")
}

/// Returns the key that the gateway read the session id from:
/// `context.session_id` when the item has it, else `context.sessionId`.
fn session_key(object: Option<&Value>) -> &'static str {
    let context = object.and_then(|object| object.get("context"));
    if context.is_some_and(|context| present(context, "session_id")) {
        "context.session_id"
    } else {
        "context.sessionId"
    }
}

fn present(object: &Value, key: &str) -> bool {
    object.get(key).is_some_and(|value| !value.is_null())
}

/// `received_at` becomes `receivedAt`; a name without underscores is kept.
fn camel_case(name: &str) -> String {
    let mut words = name.split('_');
    let mut camel = words.next().unwrap_or_default().to_owned();
    for word in words {
        let mut characters = word.chars();
        if let Some(first) = characters.next() {
            camel.extend(first.to_uppercase());
            camel.push_str(characters.as_str());
        }
    }
    camel
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn single_uses_client_spelling() {
        let camel = json!({"userId": "a\u{0}b", "event": "x"});
        assert_eq!(single_field("event.user_id", &camel), "userId", "camelCase key");
        let snake = json!({"user_id": "a\u{0}b", "event": "x"});
        assert_eq!(single_field("event.user_id", &snake), "user_id", "snake_case key");
        let missing = json!({"event": "x"});
        assert_eq!(single_field("event.user_id", &missing), "userId", "absent key");
        assert_eq!(single_field("event.event", &missing), "event", "event name");
        assert_eq!(single_field("event.timestamp", &missing), "timestamp", "timestamp");
        assert_eq!(
            single_field("event.properties.price", &missing),
            "properties.price",
            "nested key"
        );
        assert_eq!(
            single_field("event.received_at", &missing),
            "receivedAt",
            "unknown field"
        );
    }

    #[test]
    fn single_sent_as_batch() {
        let body = json!({"userId": "a\u{0}b", "groupId": "g1"});
        assert_eq!(single_field("events[0].user_id", &body), "userId", "batch of one");
        let body = json!({"userId": "u1", "originalTimestamp": "2026-12-04T10:00:00Z"});
        assert_eq!(
            single_field("event.timestamp", &body),
            "originalTimestamp",
            "client time key"
        );
    }

    #[test]
    fn session_id_is_in_context() {
        let snake = json!({"context": {"session_id": "s\u{0}"}});
        assert_eq!(single_field("event.session_id", &snake), "context.session_id");
        let camel = json!({"context": {"sessionId": "s\u{0}"}});
        assert_eq!(single_field("event.session_id", &camel), "context.sessionId");
    }

    #[test]
    fn batch_positions_restored() {
        let items = vec![
            json!("not an event"),
            json!({"type": "track", "userId": "u1"}),
            json!({"type": "track", "message_id": "m2"}),
        ];
        let sent = [1, 2];
        assert_eq!(batch_field("events", &items, &sent), "batch", "whole list");
        assert_eq!(
            batch_field("events[1].user_id", &items, &sent),
            "batch[2].userId",
            "second event sent"
        );
        assert_eq!(
            batch_field("events[1].message_id", &items, &sent),
            "batch[2].message_id",
            "snake_case key"
        );
        assert_eq!(batch_field("events[0]", &items, &sent), "batch[1]", "whole event");
        assert_eq!(
            batch_field("events[9].user_id", &items, &sent),
            "events[9].user_id",
            "unknown position"
        );
    }

    #[test]
    fn batch_item_prefix_once() {
        let item = json!({"type": "track", "userId": "u\u{0}"});
        assert_eq!(
            batch_item_field(2, "events[2].user_id", Some(&item)),
            "batch[2].userId",
            "prefixed by the service"
        );
        assert_eq!(
            batch_item_field(4, "user_id", Some(&item)),
            "batch[4].userId",
            "relative to the event"
        );
    }

    #[test]
    fn violations_keep_descriptions() {
        let violations = vec![FieldViolation::new("event.anonymous_id", "too long")];
        let body = json!({"anonymous_id": "a"});
        let renamed = single_violations(violations, &body);
        assert_eq!(renamed, [FieldViolation::new("anonymous_id", "too long")]);
    }
}
