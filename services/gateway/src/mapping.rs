//! Conversions between the gateway's JSON and the services' protobuf messages.
//!
//! - [`events`]: Segment-style tracking payloads to `rtim.events.v1.Event`.
//! - [`fields`]: typed reads of JSON fields, with violations named by the
//!   client's keys, and the id rules.
//! - [`paths`]: the ingestion service's field paths mapped back to the keys
//!   of the tracking body.
//! - [`requests`]: the JSON bodies and query strings of the other endpoints.
//! - [`replies`]: service responses to the JSON that the endpoints return.

pub mod events;
pub mod fields;
pub mod paths;
pub mod replies;
pub mod requests;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use prost_types::Timestamp;
use rtim_proto::json::{datetime_to_timestamp, timestamp_to_rfc3339};

/// Parses an RFC 3339 / ISO 8601 timestamp. A date and time without an
/// offset, or a date alone, is taken as UTC.
pub fn parse_timestamp(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    let time = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|time| time.with_timezone(&Utc))
        .ok()
        .or_else(|| parse_naive(text))?;
    Some(datetime_to_timestamp(time))
}

fn parse_naive(text: &str) -> Option<DateTime<Utc>> {
    let time = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .or_else(|| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?.and_hms_opt(0, 0, 0))?;
    Some(time.and_utc())
}

/// RFC 3339 text with millisecond precision, `None` for a missing timestamp.
pub fn format_timestamp(timestamp: Option<&Timestamp>) -> Option<String> {
    timestamp.and_then(timestamp_to_rfc3339)
}

/// `None` for the empty string, which proto3 uses for an unset field.
pub fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(text: &str) -> Option<i64> {
        parse_timestamp(text).map(|timestamp| timestamp.seconds)
    }

    #[test]
    fn timestamp_forms() {
        let expected = Some(1_796_378_400); // 2026-12-04T10:00:00Z
        assert_eq!(seconds("2026-12-04T10:00:00Z"), expected, "RFC 3339 with Z");
        assert_eq!(seconds("2026-12-04T11:00:00+01:00"), expected, "RFC 3339 with offset");
        assert_eq!(seconds("2026-12-04T11:00:00+0100"), expected, "offset without colon");
        assert_eq!(seconds("2026-12-04T10:00:00"), expected, "no offset is UTC");
        assert_eq!(seconds("2026-12-04"), Some(1_796_342_400), "date alone");
    }

    #[test]
    fn timestamp_fraction_kept() {
        let timestamp = parse_timestamp("2026-12-04T10:00:00.250Z").expect("valid timestamp");
        assert_eq!(timestamp.nanos, 250_000_000);
        let text = format_timestamp(Some(&timestamp));
        assert_eq!(text.as_deref(), Some("2026-12-04T10:00:00.250Z"));
    }

    #[test]
    fn malformed_timestamps() {
        for text in [
            "yesterday",
            "2026-13-04T10:00:00Z",
            "04/12/2026",
            "",
            "2026-12-04T25:00:00Z",
        ] {
            assert_eq!(parse_timestamp(text), None, "accepted '{text}'");
        }
    }
}
