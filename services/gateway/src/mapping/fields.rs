//! Reading the fields of a JSON body. Each reader collects a violation that
//! names the field by the key the client sent (`userId` or `user_id`),
//! under the path of the object that contains it (`batch[2].`, `answers[0].`).

use prost_types::Timestamp;
use rtim_proto::json::{MAX_STRUCT_DEPTH, json_depth};
use rtim_runtime::errors::FieldViolation;
use serde_json::{Map, Value};

use super::parse_timestamp;

/// Maximum length of an id, in bytes: the ingestion service's limit, so that
/// every id a shopper was tracked with can be read back.
pub const MAX_ID_LEN: usize = 256;

/// Reads the fields of one JSON object and collects a violation, with the
/// field's full path, for each field of the wrong shape.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    prefix: &'a str,
    violations: Vec<FieldViolation>,
}

impl<'a> Fields<'a> {
    pub fn new(object: &'a Map<String, Value>, prefix: &'a str) -> Self {
        Self {
            object,
            prefix,
            violations: Vec::new(),
        }
    }

    /// Returns the first of `names` that is present and not null.
    pub fn find(&self, names: &[&'static str]) -> Option<(&'static str, &'a Value)> {
        names.iter().find_map(|name| {
            self.object
                .get(*name)
                .filter(|value| !value.is_null())
                .map(|value| (*name, value))
        })
    }

    pub fn reject(&mut self, name: &str, description: String) {
        self.violations
            .push(FieldViolation::new(format!("{}{name}", self.prefix), description));
    }

    /// Reads a string field. Numbers are accepted and written as text.
    pub fn text(&mut self, names: &[&'static str]) -> String {
        match self.find(names) {
            None => String::new(),
            Some((_, Value::String(text))) => text.clone(),
            Some((_, Value::Number(number))) => number.to_string(),
            Some((name, other)) => {
                self.reject(name, format!("must be a string, got {}", kind_of(other)));
                String::new()
            }
        }
    }

    pub fn object(&mut self, name: &'static str) -> Option<Map<String, Value>> {
        match self.find(&[name])? {
            (_, value @ Value::Object(_)) if json_depth(value) > MAX_STRUCT_DEPTH => {
                // Checked here because a deeper event would fail to decode in
                // ingestion and take the whole batch down with it.
                self.reject(name, format!("nesting deeper than {MAX_STRUCT_DEPTH} levels"));
                None
            }
            (_, Value::Object(object)) => Some(object.clone()),
            (_, other) => {
                self.reject(name, format!("must be a JSON object, got {}", kind_of(other)));
                None
            }
        }
    }

    pub fn timestamp(&mut self, names: &[&'static str]) -> Option<Timestamp> {
        let (name, value) = self.find(names)?;
        let parsed = value.as_str().and_then(parse_timestamp);
        if parsed.is_none() {
            let shown = match value {
                Value::String(text) => format!("'{}'", preview(text)),
                other => kind_of(other).to_owned(),
            };
            let description = format!("{shown} is not an RFC 3339 / ISO 8601 timestamp such as 2026-12-04T10:00:00Z");
            self.reject(name, description);
        }
        parsed
    }

    /// `context.session_id`, or Segment's camelCase `context.sessionId`.
    pub fn session_id(&mut self, context: &Map<String, Value>) -> String {
        let found = ["session_id", "sessionId"].iter().find_map(|name| {
            context
                .get(*name)
                .filter(|value| !value.is_null())
                .map(|value| (*name, value))
        });
        match found {
            None => String::new(),
            Some((_, Value::String(text))) => text.clone(),
            Some((_, Value::Number(number))) => number.to_string(),
            Some((name, other)) => {
                self.reject(
                    &format!("context.{name}"),
                    format!("must be a string, got {}", kind_of(other)),
                );
                String::new()
            }
        }
    }

    /// Reads a string field. Other JSON types are rejected.
    pub fn string(&mut self, names: &[&'static str]) -> String {
        match self.find(names) {
            None => String::new(),
            Some((_, Value::String(text))) => text.clone(),
            Some((name, other)) => {
                self.reject(name, format!("must be a string, got {}", kind_of(other)));
                String::new()
            }
        }
    }

    /// Reads a string field that is an id: see [`check_id`].
    pub fn id(&mut self, names: &[&'static str]) -> String {
        match self.find(names) {
            None => String::new(),
            Some((name, Value::String(id))) => {
                if let Err(description) = check_id(id) {
                    self.reject(name, description);
                }
                id.clone()
            }
            Some((name, other)) => {
                self.reject(name, format!("must be a string, got {}", kind_of(other)));
                String::new()
            }
        }
    }

    /// Reads free text, such as a survey answer: a string that may contain
    /// tabs and line breaks but no other control character.
    pub fn free_text(&mut self, name: &'static str) -> Option<String> {
        let text = match self.find(&[name])? {
            (_, Value::String(text)) => text,
            (_, other) => {
                self.reject(name, format!("must be a string, got {}", kind_of(other)));
                return None;
            }
        };
        let control = text
            .char_indices()
            .find(|(_, character)| character.is_control() && !matches!(character, '\t' | '\n' | '\r'));
        if let Some((position, character)) = control {
            self.reject(name, control_character(position, character));
        }
        Some(text.clone())
    }

    /// Reads an array field.
    pub fn array(&mut self, name: &'static str) -> Option<&'a Vec<Value>> {
        match self.find(&[name])? {
            (_, Value::Array(items)) => Some(items),
            (_, other) => {
                self.reject(name, format!("must be an array, got {}", kind_of(other)));
                None
            }
        }
    }

    /// Reads an integer field within `min..=max`. Fractions, strings and
    /// values out of range are rejected with `expected`, which describes
    /// the accepted values.
    pub fn integer(&mut self, name: &'static str, min: i32, max: i32, expected: &str) -> Option<i32> {
        let (_, value) = self.find(&[name])?;
        let integer = value
            .as_i64()
            .filter(|integer| (i64::from(min)..=i64::from(max)).contains(integer))
            .and_then(|integer| i32::try_from(integer).ok());
        if integer.is_none() {
            self.reject(name, format!("{expected}, got {}", show(value)));
        }
        integer
    }

    pub fn finish<T>(self, value: T) -> Result<T, Vec<FieldViolation>> {
        if self.violations.is_empty() {
            Ok(value)
        } else {
            Err(self.violations)
        }
    }
}

pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// At most 64 characters of client text, so a violation stays readable.
pub fn preview(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    if text.chars().count() <= MAX_CHARS {
        text.to_owned()
    } else {
        let head: String = text.chars().take(MAX_CHARS).collect();
        format!("{head}...")
    }
}

/// Checks an id: at most [`MAX_ID_LEN`] bytes and no control character,
/// because PostgreSQL rejects NUL in text and the services store ids as text.
/// Returns the violation's description.
pub fn check_id(id: &str) -> Result<(), String> {
    if id.len() > MAX_ID_LEN {
        return Err(format!("must be at most {MAX_ID_LEN} bytes, got {}", id.len()));
    }
    match id.char_indices().find(|(_, character)| character.is_control()) {
        Some((position, character)) => Err(control_character(position, character)),
        None => Ok(()),
    }
}

fn control_character(position: usize, character: char) -> String {
    format!(
        "must not contain control characters, found U+{:04X} at byte {position}",
        u32::from(character)
    )
}

/// Formats a client value for a violation: a string quoted and shortened
/// (`"a"`), a number as written (`1.5`), any other type by name (`an array`).
pub fn show(value: &Value) -> String {
    match value {
        Value::String(text) => format!("{:?}", preview(text)),
        Value::Number(number) => preview(&number.to_string()),
        other => kind_of(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn violations(body: &Value, read: impl FnOnce(&mut Fields<'_>)) -> Vec<(String, String)> {
        let object = body.as_object().expect("test body is an object");
        let mut fields = Fields::new(object, "");
        read(&mut fields);
        match fields.finish(()) {
            Ok(()) => Vec::new(),
            Err(violations) => violations
                .into_iter()
                .map(|violation| (violation.field, violation.description))
                .collect(),
        }
    }

    #[test]
    fn id_named_by_client_key() {
        let body = json!({"userId": "a\u{0}b"});
        let found = violations(&body, |fields| {
            fields.id(&["user_id", "userId"]);
        });
        let expected = (
            "userId".to_owned(),
            "must not contain control characters, found U+0000 at byte 1".to_owned(),
        );
        assert_eq!(found, [expected]);
    }

    #[test]
    fn id_length_limit() {
        let at_limit = json!({"user_id": "u".repeat(MAX_ID_LEN)});
        assert!(
            violations(&at_limit, |fields| {
                fields.id(&["user_id"]);
            })
            .is_empty()
        );
        let over = json!({"user_id": "u".repeat(MAX_ID_LEN + 1)});
        let found = violations(&over, |fields| {
            fields.id(&["user_id"]);
        });
        assert_eq!(found[0].1, "must be at most 256 bytes, got 257", "description");
    }

    #[test]
    fn id_must_be_string() {
        let body = json!({"placement": 7});
        let found = violations(&body, |fields| {
            fields.id(&["placement"]);
        });
        assert_eq!(
            found,
            [("placement".to_owned(), "must be a string, got a number".to_owned())]
        );
    }

    #[test]
    fn integer_rejects_other_types() {
        let expected = "must be an integer from 0 to 10";
        let cases = [
            (json!("a"), "must be an integer from 0 to 10, got \"a\""),
            (json!(1.5), "must be an integer from 0 to 10, got 1.5"),
            (
                json!(99_999_999_999_i64),
                "must be an integer from 0 to 10, got 99999999999",
            ),
            (json!(11), "must be an integer from 0 to 10, got 11"),
            (json!([1]), "must be an integer from 0 to 10, got an array"),
        ];
        for (value, description) in cases {
            let body = json!({ "score": value });
            let found = violations(&body, |fields| {
                fields.integer("score", 0, 10, expected);
            });
            assert_eq!(found, [("score".to_owned(), description.to_owned())], "value {value}");
        }
        let body = json!({"score": 10});
        let object = body.as_object().expect("object");
        let mut fields = Fields::new(object, "");
        assert_eq!(fields.integer("score", 0, 10, expected), Some(10), "in range");
    }

    #[test]
    fn free_text_keeps_line_breaks() {
        let body = json!({"text": "fast\r\ndelivery\t!"});
        assert!(
            violations(&body, |fields| {
                fields.free_text("text");
            })
            .is_empty()
        );
        let body = json!({"text": "fast\u{0}"});
        let found = violations(&body, |fields| {
            fields.free_text("text");
        });
        assert_eq!(found[0].0, "text", "field");
    }
}
