//! Normalisation: what ingestion fills in or corrects on a valid event before
//! it is stored. The client's own timestamp is always kept in
//! `original_timestamp`; `timestamp` is the corrected time that consumers use.

use chrono::{DateTime, TimeDelta, Utc};
use rtim_proto::events::v1::{Event, TimestampCorrection};
use rtim_proto::json::{datetime_to_timestamp, timestamp_to_datetime};
use rtim_runtime::errors::FieldViolation;

use crate::validate::{self, Rejection};

/// Fills in the message id when it is empty, stamps `received_at`, keeps the
/// client's timestamp in `original_timestamp` and sets `timestamp` and
/// `timestamp_correction` as [`correct_timestamp`] decides. Fields that only
/// ingestion sets are overwritten whatever the client sent in them.
///
/// The event must have passed [`validate::check`]. It is left unchanged when
/// the correction is rejected.
pub fn normalise(
    event: &mut Event,
    received_at: DateTime<Utc>,
    max_future: TimeDelta,
    prefix: &str,
) -> Result<(), Rejection> {
    // Validation has rejected out-of-range timestamps, so `None` here means absent.
    let client_time = event.timestamp.as_ref().and_then(timestamp_to_datetime);
    let sent_at = event.sent_at.as_ref().and_then(timestamp_to_datetime);
    let (time, correction) = correct_timestamp(client_time, sent_at, received_at, max_future).map_err(|skew| {
        Rejection::invalid(vec![FieldViolation::new(
            format!("{prefix}sent_at"),
            format!(
                "sent_at is {} s after timestamp, and removing that skew from the receive time gives a time before year 1",
                skew.num_seconds()
            ),
        )])
    })?;

    if event.message_id.is_empty() {
        event.message_id = uuid::Uuid::new_v4().to_string();
    }
    event.original_timestamp = event.timestamp.take();
    event.timestamp = Some(datetime_to_timestamp(time));
    event.timestamp_correction = correction as i32;
    event.received_at = Some(datetime_to_timestamp(received_at));
    Ok(())
}

/// Largest difference between `sent_at` and `received_at` that counts as no
/// skew. Below it the difference is mostly transport delay, which varies from
/// batch to batch: correcting by it would reorder events that a client
/// recorded a millisecond apart and sent in two batches.
pub const SKEW_TOLERANCE: TimeDelta = TimeDelta::seconds(1);

/// Returns the timestamp to store and how it was obtained from the client's
/// timestamp:
///
/// - missing: `received_at`, MISSING;
/// - with `sent_at`: `received_at - (sent_at - timestamp)`, SKEW, or the
///   client's timestamp and NONE when `sent_at` is within [`SKEW_TOLERANCE`]
///   of `received_at`;
/// - without `sent_at`: the client's timestamp, NONE;
///
/// and then, when that time lies more than `max_future` after `received_at`,
/// or after the last time a protobuf `Timestamp` can represent (year 9999),
/// `received_at` and FUTURE.
///
/// Fails with the skew `sent_at - timestamp` when the corrected time falls
/// before year 1, which only a broken client clock produces.
pub fn correct_timestamp(
    timestamp: Option<DateTime<Utc>>,
    sent_at: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
    max_future: TimeDelta,
) -> Result<(DateTime<Utc>, TimestampCorrection), TimeDelta> {
    let Some(client_time) = timestamp else {
        return Ok((received_at, TimestampCorrection::Missing));
    };
    let (time, correction) = match sent_at {
        Some(sent_at) if (sent_at - received_at).abs() < SKEW_TOLERANCE => (client_time, TimestampCorrection::None),
        Some(sent_at) => {
            let skew = sent_at - client_time;
            let time = received_at
                .checked_sub_signed(skew)
                .filter(|time| time.timestamp() >= validate::MIN_TIMESTAMP_SECONDS)
                .ok_or(skew)?;
            (time, TimestampCorrection::Skew)
        }
        None => (client_time, TimestampCorrection::None),
    };
    if time - received_at > max_future || time.timestamp() > validate::MAX_TIMESTAMP_SECONDS {
        return Ok((received_at, TimestampCorrection::Future));
    }
    Ok((time, correction))
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    const DAY: TimeDelta = TimeDelta::hours(24);

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn skew_is_removed() {
        let corrected = correct_timestamp(
            Some(at("2026-03-01T10:00:00Z")),
            Some(at("2026-03-01T10:00:05Z")),
            at("2026-03-01T09:59:58.250Z"),
            DAY,
        );
        assert_eq!(
            corrected,
            Ok((at("2026-03-01T09:59:53.250Z"), TimestampCorrection::Skew))
        );
    }

    #[test]
    fn skew_keeps_nanoseconds() {
        let corrected = correct_timestamp(
            Some(at("2026-03-01T10:00:00.000000001Z")),
            Some(at("2026-03-01T10:00:00.5Z")),
            at("2026-03-01T10:00:03Z"),
            DAY,
        );
        assert_eq!(
            corrected,
            Ok((at("2026-03-01T10:00:02.500000001Z"), TimestampCorrection::Skew))
        );
    }

    #[test]
    fn transport_delay_is_not_skew() {
        // Sent 300 ms before it arrived: within the tolerance, so the client's time stays.
        let corrected = correct_timestamp(
            Some(at("2026-03-01T09:59:59.700Z")),
            Some(at("2026-03-01T10:00:00.200Z")),
            at("2026-03-01T10:00:00.500Z"),
            DAY,
        );
        assert_eq!(
            corrected,
            Ok((at("2026-03-01T09:59:59.700Z"), TimestampCorrection::None))
        );
    }

    #[test]
    fn unskewed_sent_at_keeps_timestamp() {
        let corrected = correct_timestamp(
            Some(at("2026-03-01T09:00:00Z")),
            Some(at("2026-03-01T10:00:00Z")),
            at("2026-03-01T10:00:00Z"),
            DAY,
        );
        assert_eq!(corrected, Ok((at("2026-03-01T09:00:00Z"), TimestampCorrection::None)));
    }

    #[test]
    fn timestamp_without_sent_at_is_kept() {
        let corrected = correct_timestamp(Some(at("2026-02-27T08:30:00Z")), None, at("2026-03-01T10:00:00Z"), DAY);
        assert_eq!(corrected, Ok((at("2026-02-27T08:30:00Z"), TimestampCorrection::None)));
    }

    #[test]
    fn missing_timestamp_is_receive_time() {
        let corrected = correct_timestamp(None, Some(at("2026-03-01T10:00:00Z")), at("2026-03-01T10:00:01Z"), DAY);
        assert_eq!(
            corrected,
            Ok((at("2026-03-01T10:00:01Z"), TimestampCorrection::Missing))
        );
    }

    #[test]
    fn future_timestamp_is_receive_time() {
        let received_at = at("2026-03-01T10:00:00Z");
        let corrected = correct_timestamp(Some(at("2026-03-02T10:00:00.001Z")), None, received_at, DAY);
        assert_eq!(corrected, Ok((received_at, TimestampCorrection::Future)));
    }

    #[test]
    fn timestamp_exactly_at_limit_is_kept() {
        let corrected = correct_timestamp(Some(at("2026-03-02T10:00:00Z")), None, at("2026-03-01T10:00:00Z"), DAY);
        assert_eq!(corrected, Ok((at("2026-03-02T10:00:00Z"), TimestampCorrection::None)));
    }

    #[test]
    fn future_is_judged_after_skew_correction() {
        // The client clock runs two days fast: the skew correction brings the
        // time back, so the event keeps its corrected time.
        let corrected = correct_timestamp(
            Some(at("2026-03-03T09:59:00Z")),
            Some(at("2026-03-03T10:00:00Z")),
            at("2026-03-01T10:00:00Z"),
            DAY,
        );
        assert_eq!(corrected, Ok((at("2026-03-01T09:59:00Z"), TimestampCorrection::Skew)));

        // sent_at before timestamp moves the corrected time later than received_at.
        let received_at = at("2026-03-01T10:00:00Z");
        let corrected = correct_timestamp(
            Some(at("2026-03-01T10:00:00Z")),
            Some(at("2026-02-27T10:00:00Z")),
            received_at,
            DAY,
        );
        assert_eq!(corrected, Ok((received_at, TimestampCorrection::Future)));
    }

    #[test]
    fn correction_before_year_one_fails() {
        let corrected = correct_timestamp(
            Some(at("0001-01-01T00:00:00Z")),
            Some(at("9999-12-31T00:00:00Z")),
            at("2026-03-01T10:00:00Z"),
            DAY,
        );
        assert_eq!(corrected, Err(at("9999-12-31T00:00:00Z") - at("0001-01-01T00:00:00Z")));
    }

    #[test]
    fn normalise_sets_ingestion_fields() {
        let client_time = Timestamp {
            seconds: 1_772_359_200,
            nanos: 0,
        };
        let mut event = Event {
            timestamp: Some(client_time),
            sent_at: Some(Timestamp {
                seconds: 1_772_359_205,
                nanos: 0,
            }),
            received_at: Some(Timestamp { seconds: 1, nanos: 0 }),
            timestamp_correction: TimestampCorrection::Future as i32,
            ..Event::default()
        };
        let received_at = DateTime::from_timestamp(1_772_359_203, 0).unwrap();
        normalise(&mut event, received_at, DAY, "").unwrap();

        assert_eq!(event.message_id.len(), 36, "a UUID is assigned");
        assert_eq!(event.original_timestamp, Some(client_time));
        assert_eq!(
            event.timestamp,
            Some(Timestamp {
                seconds: 1_772_359_198,
                nanos: 0
            })
        );
        assert_eq!(event.timestamp_correction(), TimestampCorrection::Skew);
        assert_eq!(
            event.received_at,
            Some(Timestamp {
                seconds: 1_772_359_203,
                nanos: 0
            })
        );
    }

    #[test]
    fn normalise_keeps_message_id() {
        let mut event = Event {
            message_id: "m-1".to_owned(),
            ..Event::default()
        };
        normalise(&mut event, DateTime::from_timestamp(1_772_359_203, 0).unwrap(), DAY, "").unwrap();
        assert_eq!(event.message_id, "m-1");
        assert_eq!(event.original_timestamp, None);
        assert_eq!(event.timestamp_correction(), TimestampCorrection::Missing);
    }

    #[test]
    fn rejected_correction_leaves_event_unchanged() {
        let mut event = Event {
            timestamp: Some(Timestamp {
                seconds: validate::MIN_TIMESTAMP_SECONDS,
                nanos: 0,
            }),
            sent_at: Some(Timestamp {
                seconds: validate::MAX_TIMESTAMP_SECONDS,
                nanos: 0,
            }),
            ..Event::default()
        };
        let before = event.clone();
        let rejection = normalise(
            &mut event,
            DateTime::from_timestamp(1_772_359_203, 0).unwrap(),
            DAY,
            "events[4].",
        )
        .unwrap_err();
        assert_eq!(rejection.reason, "INVALID_FIELD");
        assert_eq!(rejection.violations[0].field, "events[4].sent_at");
        assert_eq!(event, before);
    }
}
