//! Segment JSON lines: one tracking call per line, with the camelCase fields
//! of Segment's HTTP tracking API and of its data exports (`type`,
//! `messageId`, `userId`, `anonymousId`, `event`, `name`, `properties`,
//! `traits`, `context`, `integrations`, `timestamp`, `sentAt`,
//! `originalTimestamp`, `receivedAt`, `previousId`, `groupId`). The snake_case
//! forms that the gateway accepts are read too.
//!
//! A given `messageId` is kept. A line without one gets an id derived from
//! the file name and line number, so a second replay stores nothing twice.
//!
//! The event time is `timestamp`, which Segment's exports hold already
//! corrected for clock skew. Without it, the time is `originalTimestamp`
//! corrected as Segment does (`receivedAt - (sentAt - originalTimestamp)`)
//! when `sentAt` and `receivedAt` are present, else `originalTimestamp` as
//! it is, else `receivedAt`. `sentAt` is not forwarded: ingestion would
//! correct the time against its own receive time, the time of the replay.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use prost_types::Timestamp;
use rtim_gateway::mapping::parse_timestamp;
use rtim_proto::events::v1::{Event, EventType};
use rtim_proto::json::{datetime_to_timestamp, json_to_struct, timestamp_to_datetime};
use serde_json::{Map, Value};

use super::source::{self, BadRow, Location, ProgressUnit, Row, Source, preview};

const TYPES: &str = "track, identify, page, screen, alias or group";

pub struct Reader {
    label: Arc<str>,
    name: String,
    reader: BufReader<File>,
    buffer: Vec<u8>,
    line: u64,
    position: u64,
    size: u64,
    failed: bool,
}

impl Reader {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|metadata| metadata.len()).unwrap_or(0);
        Ok(Self {
            label: source::label(path),
            name: source::file_name(path),
            reader: BufReader::new(file),
            buffer: Vec::new(),
            line: 0,
            position: 0,
            size,
            failed: false,
        })
    }

    /// Reads the next line that is not blank, as text or as the reason it is
    /// not UTF-8. Returns `None` at the end of the file.
    fn next_line(&mut self) -> Option<Result<String, BadRow>> {
        loop {
            self.buffer.clear();
            match self.reader.read_until(b'\n', &mut self.buffer) {
                Ok(0) => return None,
                Ok(read) => {
                    self.line += 1;
                    self.position += read as u64;
                }
                Err(error) => {
                    self.line += 1;
                    self.failed = true;
                    return Some(Err(BadRow::new("UNREADABLE_LINE", "line", error.to_string())));
                }
            }
            let text = match std::str::from_utf8(&self.buffer) {
                Ok(text) => text,
                Err(error) => {
                    let detail = format!("invalid UTF-8 at byte {} of the line", error.valid_up_to() + 1);
                    return Some(Err(BadRow::new("INVALID_UTF8", "line", detail)));
                }
            };
            // Some editors start a UTF-8 file with a byte order mark.
            let text = text.trim_start_matches('\u{feff}').trim();
            if !text.is_empty() {
                return Some(Ok(text.to_owned()));
            }
        }
    }
}

impl Source for Reader {
    fn next_row(&mut self) -> Option<Row> {
        if self.failed {
            return None;
        }
        let text = self.next_line()?;
        let event = text.and_then(|text| map_line(&text, &self.name, self.line));
        Some(Row {
            location: Location::new(&self.label, self.line),
            event,
        })
    }

    fn progress(&self) -> (u64, u64) {
        (self.position, self.size)
    }

    fn unit(&self) -> ProgressUnit {
        ProgressUnit::Bytes
    }
}

/// Maps one line of the file named `file_name` to an event.
pub fn map_line(text: &str, file_name: &str, line: u64) -> Result<Event, BadRow> {
    let value: Value = serde_json::from_str(text).map_err(|error| invalid_json(&error))?;
    let Value::Object(object) = value else {
        let detail = format!("expected a JSON object, got {}", kind_of(&value));
        return Err(BadRow::new("NOT_AN_OBJECT", "line", detail));
    };
    let fields = Fields(&object);
    let kind = fields.event_type()?;
    let mut message_id = fields.text(&["messageId", "message_id"])?;
    if message_id.is_empty() {
        message_id = source::message_id(&["segment", file_name, &line.to_string()]);
    }
    let context = fields.object("context")?;
    let session_id = match &context {
        Some(context) => Fields(context)
            .text(&["sessionId", "session_id"])
            .map_err(|bad| BadRow {
                field: format!("context.{}", bad.field),
                ..bad
            })?,
        None => String::new(),
    };
    Ok(Event {
        message_id,
        r#type: kind as i32,
        user_id: fields.text(&["userId", "user_id"])?,
        anonymous_id: fields.text(&["anonymousId", "anonymous_id"])?,
        event: fields.string("event")?,
        name: fields.string("name")?,
        properties: fields.object("properties")?.map(json_to_struct),
        traits: fields.object("traits")?.map(json_to_struct),
        context: context.map(json_to_struct),
        integrations: fields.object("integrations")?.map(json_to_struct),
        timestamp: fields.event_time()?,
        session_id,
        previous_id: fields.text(&["previousId", "previous_id"])?,
        group_id: fields.text(&["groupId", "group_id"])?,
        ..Event::default()
    })
}

/// The fields of one line, read with errors that name the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// Returns the first of `names` that is present and not null.
    fn find(&self, names: &[&'static str]) -> Option<(&'static str, &Value)> {
        names.iter().find_map(|name| {
            self.0
                .get(*name)
                .filter(|value| !value.is_null())
                .map(|value| (*name, value))
        })
    }

    fn event_type(&self) -> Result<EventType, BadRow> {
        let Some((_, value)) = self.find(&["type"]) else {
            return Err(BadRow::new(
                "INVALID_FIELD",
                "type",
                format!("missing: expected {TYPES}"),
            ));
        };
        let Value::String(name) = value else {
            return Err(wrong_kind("type", "a string", value));
        };
        match name.to_ascii_lowercase().as_str() {
            "track" => Ok(EventType::Track),
            "identify" => Ok(EventType::Identify),
            "page" => Ok(EventType::Page),
            "screen" => Ok(EventType::Screen),
            "alias" => Ok(EventType::Alias),
            "group" => Ok(EventType::Group),
            _ => {
                let detail = format!("unknown type {}: expected {TYPES}", preview(name));
                Err(BadRow::new("INVALID_FIELD", "type", detail))
            }
        }
    }

    /// Reads an id: a string, or a number written as text as Segment's API accepts it.
    fn text(&self, names: &[&'static str]) -> Result<String, BadRow> {
        match self.find(names) {
            None => Ok(String::new()),
            Some((_, Value::String(text))) => Ok(text.clone()),
            Some((_, Value::Number(number))) => Ok(number.to_string()),
            Some((name, other)) => Err(wrong_kind(name, "a string", other)),
        }
    }

    fn string(&self, name: &'static str) -> Result<String, BadRow> {
        match self.find(&[name]) {
            None => Ok(String::new()),
            Some((_, Value::String(text))) => Ok(text.clone()),
            Some((name, other)) => Err(wrong_kind(name, "a string", other)),
        }
    }

    fn object(&self, name: &'static str) -> Result<Option<Map<String, Value>>, BadRow> {
        match self.find(&[name]) {
            None => Ok(None),
            Some((_, Value::Object(object))) => Ok(Some(object.clone())),
            Some((name, other)) => Err(wrong_kind(name, "a JSON object", other)),
        }
    }

    fn time(&self, names: &[&'static str]) -> Result<Option<DateTime<Utc>>, BadRow> {
        let Some((name, value)) = self.find(names) else {
            return Ok(None);
        };
        let time = value
            .as_str()
            .and_then(parse_timestamp)
            .as_ref()
            .and_then(timestamp_to_datetime);
        match time {
            Some(time) => Ok(Some(time)),
            None => {
                let value_text = value.as_str().map_or_else(|| kind_of(value).to_owned(), preview);
                let detail = format!("{value_text} is not an ISO 8601 timestamp such as 2026-12-04T10:00:00.000Z");
                Err(BadRow::new("INVALID_FIELD", name, detail))
            }
        }
    }

    /// Returns the time the event happened, by the rules in the module documentation.
    fn event_time(&self) -> Result<Option<Timestamp>, BadRow> {
        let timestamp = self.time(&["timestamp"])?;
        let original = self.time(&["originalTimestamp", "original_timestamp"])?;
        let sent_at = self.time(&["sentAt", "sent_at"])?;
        let received_at = self.time(&["receivedAt", "received_at"])?;
        let time = match (timestamp, original, sent_at, received_at) {
            (Some(timestamp), ..) => Some(timestamp),
            (None, Some(original), Some(sent_at), Some(received_at)) => {
                received_at.checked_sub_signed(sent_at - original).or(Some(original))
            }
            (None, Some(original), ..) => Some(original),
            (None, None, _, received_at) => received_at,
        };
        Ok(time.map(datetime_to_timestamp))
    }
}

fn wrong_kind(field: &str, expected: &str, value: &Value) -> BadRow {
    BadRow::new(
        "INVALID_FIELD",
        field,
        format!("must be {expected}, got {}", kind_of(value)),
    )
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Describes a JSON syntax error by its column, since the line is known.
fn invalid_json(error: &serde_json::Error) -> BadRow {
    let message = error.to_string();
    let message = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(text, _)| text);
    BadRow::new(
        "INVALID_JSON",
        "line",
        format!("invalid JSON at column {}: {message}", error.column()),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rtim_proto::json::{struct_to_json, timestamp_to_rfc3339};
    use serde_json::json;

    use super::*;

    fn map(line: Value) -> Result<Event, BadRow> {
        map_line(&line.to_string(), "events.jsonl", 3)
    }

    fn time(event: &Event) -> Option<String> {
        event.timestamp.as_ref().and_then(timestamp_to_rfc3339)
    }

    #[test]
    fn track_fields_map_one_to_one() {
        let event = map(json!({
            "type": "track",
            "messageId": "m-1",
            "userId": "u-1",
            "anonymousId": "a-1",
            "event": "Order Completed",
            "properties": {"order_id": "o-1", "revenue": 84.5},
            "context": {"sessionId": "s-1", "ip": "203.0.113.9"},
            "integrations": {"All": false, "Mixpanel": true},
            "timestamp": "2026-11-20T09:10:00.250Z",
            "sentAt": "2026-11-20T09:10:03.000Z",
            "version": 2,
        }))
        .unwrap();

        assert_eq!(event.r#type, EventType::Track as i32, "type");
        assert_eq!(event.message_id, "m-1", "messageId kept");
        assert_eq!(event.user_id, "u-1", "userId");
        assert_eq!(event.anonymous_id, "a-1", "anonymousId");
        assert_eq!(event.event, "Order Completed", "event");
        assert_eq!(
            struct_to_json(event.properties.as_ref()),
            json!({"order_id": "o-1", "revenue": 84.5}),
            "properties"
        );
        assert_eq!(
            struct_to_json(event.context.as_ref()),
            json!({"sessionId": "s-1", "ip": "203.0.113.9"}),
            "context"
        );
        assert_eq!(event.session_id, "s-1", "session from the context");

        assert_eq!(
            struct_to_json(event.integrations.as_ref()),
            json!({"All": false, "Mixpanel": true}),
            "integrations kept"
        );
        assert_eq!(time(&event).as_deref(), Some("2026-11-20T09:10:00.250Z"), "timestamp");
        assert_eq!(event.sent_at, None, "sentAt is not forwarded");
    }

    #[test]
    fn other_calls_keep_their_fields() {
        let identify = map(json!({"type": "identify", "userId": 1307, "traits": {"plan": "member"}})).unwrap();
        assert_eq!(identify.r#type, EventType::Identify as i32);
        assert_eq!(identify.user_id, "1307", "numeric userId as text");
        assert_eq!(struct_to_json(identify.traits.as_ref()), json!({"plan": "member"}));

        let page =
            map(json!({"type": "page", "anonymous_id": "a-1", "name": "Home", "properties": {"path": "/"}})).unwrap();
        assert_eq!(page.r#type, EventType::Page as i32);
        assert_eq!(page.anonymous_id, "a-1", "snake_case accepted");
        assert_eq!(page.name, "Home");

        let screen = map(json!({"type": "Screen", "anonymousId": "d-77", "name": "Cart"})).unwrap();
        assert_eq!(screen.r#type, EventType::Screen as i32, "type is case-insensitive");
        assert_eq!(screen.name, "Cart");

        let alias = map(json!({"type": "alias", "userId": "u-2", "previousId": "d-77"})).unwrap();
        assert_eq!(alias.r#type, EventType::Alias as i32);
        assert_eq!(alias.previous_id, "d-77");

        let group =
            map(json!({"type": "group", "userId": "u-2", "groupId": 42, "traits": {"name": "Northwind"}})).unwrap();
        assert_eq!(group.r#type, EventType::Group as i32);
        assert_eq!(group.group_id, "42");
        assert_eq!(struct_to_json(group.traits.as_ref()), json!({"name": "Northwind"}));
    }

    #[test]
    fn missing_message_id_derives_from_line() {
        let line = json!({"type": "track", "userId": "u-1", "event": "Product Viewed"});
        let event = map(line.clone()).unwrap();
        assert_eq!(event.message_id, source::message_id(&["segment", "events.jsonl", "3"]));
        let empty = map(json!({"type": "track", "userId": "u-1", "event": "x", "messageId": ""})).unwrap();
        assert_eq!(
            empty.message_id, event.message_id,
            "an empty messageId counts as missing"
        );
        let other_line = map_line(&line.to_string(), "events.jsonl", 4).unwrap();
        assert_ne!(other_line.message_id, event.message_id, "each line has its own id");
    }

    #[test]
    fn event_time_rules() {
        let cases = [
            (
                json!({"timestamp": "2026-11-20T09:00:00.000Z", "originalTimestamp": "2026-11-20T08:00:00.000Z"}),
                Some("2026-11-20T09:00:00.000Z"),
                "timestamp wins",
            ),
            (
                json!({
                    "originalTimestamp": "2026-11-21T18:30:20.000Z",
                    "sentAt": "2026-11-21T18:30:25.000Z",
                    "receivedAt": "2026-11-21T18:30:07.000Z",
                }),
                Some("2026-11-21T18:30:02.000Z"),
                "skew corrected: receivedAt - (sentAt - originalTimestamp)",
            ),
            (
                json!({"originalTimestamp": "2026-11-21T18:30:20.000Z", "sentAt": "2026-11-21T18:30:25.000Z"}),
                Some("2026-11-21T18:30:20.000Z"),
                "without receivedAt nothing to correct against",
            ),
            (
                json!({"receivedAt": "2026-11-21T18:30:07.125+01:00"}),
                Some("2026-11-21T17:30:07.125Z"),
                "receivedAt alone, offset applied",
            ),
            (json!({"sentAt": "2026-11-21T18:30:25.000Z"}), None, "no event time"),
        ];
        for (times, expected, case) in cases {
            let mut line = json!({"type": "track", "userId": "u-1", "event": "x"});
            line.as_object_mut().unwrap().extend(times.as_object().unwrap().clone());
            let event = map(line).unwrap();
            assert_eq!(time(&event).as_deref(), expected, "{case}");
            assert_eq!(event.sent_at, None, "{case}: sentAt is not forwarded");
        }
    }

    #[test]
    fn bad_lines_name_the_field() {
        let cases = [
            (r#"{"type": "track", "userId": "#, "INVALID_JSON", "line"),
            (r#"[1, 2]"#, "NOT_AN_OBJECT", "line"),
            (r#"{"userId": "u-1"}"#, "INVALID_FIELD", "type"),
            (r#"{"type": "purchase", "userId": "u-1"}"#, "INVALID_FIELD", "type"),
            (r#"{"type": 7, "userId": "u-1"}"#, "INVALID_FIELD", "type"),
            (r#"{"type": "track", "userId": {"id": 1}}"#, "INVALID_FIELD", "userId"),
            (
                r#"{"type": "track", "userId": "u", "event": 5}"#,
                "INVALID_FIELD",
                "event",
            ),
            (
                r#"{"type": "track", "userId": "u", "properties": [1]}"#,
                "INVALID_FIELD",
                "properties",
            ),
            (
                r#"{"type": "track", "userId": "u", "timestamp": "soon"}"#,
                "INVALID_FIELD",
                "timestamp",
            ),
            (
                r#"{"type": "track", "userId": "u", "sentAt": 5}"#,
                "INVALID_FIELD",
                "sentAt",
            ),
            (
                r#"{"type": "track", "userId": "u", "context": {"sessionId": true}}"#,
                "INVALID_FIELD",
                "context.sessionId",
            ),
        ];
        for (line, reason, field) in cases {
            let bad = map_line(line, "events.jsonl", 1).unwrap_err();
            assert_eq!((bad.reason, bad.field.as_str()), (reason, field), "{line}: {bad}");
        }
    }

    #[test]
    fn invalid_json_names_column() {
        let bad = map_line(r#"{"type": "track",, "userId": "u"}"#, "events.jsonl", 1).unwrap_err();
        // The second comma, the 18th character, is where the key should start.
        assert_eq!(bad.detail, "invalid JSON at column 18: key must be a string");
    }

    #[test]
    fn reader_counts_lines_and_skips_blank_ones() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let valid = r#"{"type": "track", "userId": "u-1", "event": "Product Viewed"}"#;
        write!(file, "\u{feff}{valid}\n\n   \n{valid}\r\n").unwrap();
        file.write_all(b"{\"type\": \"\xff\"}\n").unwrap();
        write!(file, "{valid}").unwrap();
        let mut reader = Reader::open(file.path()).unwrap();
        let rows: Vec<Row> = std::iter::from_fn(|| reader.next_row()).collect();
        let lines: Vec<u64> = rows.iter().map(|row| row.location.line).collect();
        assert_eq!(lines, [1, 4, 5, 6], "blank lines 2 and 3 are skipped");
        assert!(rows[0].event.is_ok(), "byte order mark ignored: {:?}", rows[0].event);
        assert!(rows[1].event.is_ok(), "CRLF line end: {:?}", rows[1].event);
        let bad = rows[2].event.as_ref().unwrap_err();
        assert_eq!(bad.reason, "INVALID_UTF8");
        assert_eq!(bad.detail, "invalid UTF-8 at byte 11 of the line");
        assert!(rows[3].event.is_ok(), "last line without a newline");
        let size = std::fs::metadata(file.path()).unwrap().len();
        assert_eq!(reader.progress(), (size, size), "progress reaches the file size");
    }
}
