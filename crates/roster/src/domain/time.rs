//! The times roster takes from a request: years 0001 to 9999, in UTC. PostgreSQL stores times from
//! 4713 BC to 294276 AD, but SQLite keeps a time as text, which orders by time only while its year
//! has four digits (`+10000-01-01` sorts before `2026-01-01`, so an account expiring then would
//! expire at once), and chrono reads years far beyond both. Every time a request gives — a body
//! field, a query parameter, a SCIM filter or cursor — is read through here, so that both backends
//! store and compare it alike.

use chrono::{DateTime, Datelike, FixedOffset, Utc};
use serde::de::{self, Deserializer, Visitor};

/// The first and last year of a time roster takes (UTC).
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// A time outside [`YEARS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is outside the times roster stores: give a time in the years 0001 to 9999 (UTC)")]
pub struct OutOfRange(String);

/// The time, if roster stores it.
pub fn check(at: DateTime<Utc>) -> Result<DateTime<Utc>, OutOfRange> {
    if YEARS.contains(&at.year()) {
        Ok(at)
    } else {
        Err(OutOfRange(at.to_rfc3339()))
    }
}

/// Reads an RFC 3339 time that roster stores.
pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(text).map_err(|e| {
        format!("{text:?} is not a time (RFC 3339, such as \"2026-01-31T12:00:00Z\"): {e}")
    })?;
    check(at.with_timezone(&Utc)).map_err(|_| OutOfRange(text.to_owned()).to_string())
}

/// Deserializes an optional time that roster stores:
/// `#[serde(default, deserialize_with = "time::optional")]`. The check runs inside the
/// deserializer, so that a refusal names the field (axum reports the path of the error).
pub fn optional<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    deserializer.deserialize_option(OptionalTime)
}

/// Deserializes a time of a partial update, where absent leaves the value alone (`None`) and null
/// clears it (`Some(None)`): `#[serde(default, deserialize_with = "time::clearable")]`.
pub fn clearable<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<DateTime<Utc>>>, D::Error> {
    optional(deserializer).map(Some)
}

struct OptionalTime;

impl<'de> Visitor<'de> for OptionalTime {
    type Value = Option<DateTime<Utc>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an RFC 3339 time or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(Time).map(Some)
    }
}

struct Time;

impl Visitor<'_> for Time {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an RFC 3339 time")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        // Read as chrono reads a time, then bounded.
        let at = text
            .parse::<DateTime<FixedOffset>>()
            .map_err(|e| E::custom(format!("{text:?} is not an RFC 3339 time: {e}")))?;
        check(at.with_timezone(&Utc)).map_err(|_| E::custom(OutOfRange(text.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(default, deserialize_with = "optional")]
        at: Option<DateTime<Utc>>,
        #[serde(default, deserialize_with = "clearable")]
        until: Option<Option<DateTime<Utc>>>,
    }

    fn body(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn years_one_to_9999_are_taken() {
        for text in [
            "0001-01-01T00:00:00Z",
            "2026-01-31T12:00:00+02:00",
            "9999-12-31T23:59:59.999999Z",
        ] {
            assert!(parse(text).is_ok(), "{text}");
        }
        for text in [
            "-262143-01-01T00:00:00Z",
            "+10000-01-01T00:00:00Z",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:30:00+01:00",
            "9999-12-31T23:59:59-01:00",
            "not a time",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn fields_are_checked_and_absent_null_and_set_differ() {
        let b = body(r#"{}"#).unwrap();
        assert_eq!((b.at, b.until), (None, None));
        let b = body(r#"{"until": null}"#).unwrap();
        assert_eq!(b.until, Some(None));
        let b = body(r#"{"at": "2026-01-01T00:00:00Z", "until": "2027-01-01T00:00:00Z"}"#).unwrap();
        assert!(b.at.is_some() && b.until.is_some_and(|u| u.is_some()));
        let refused = body(r#"{"at": "+10000-01-01T00:00:00Z"}"#).unwrap_err();
        assert!(
            refused.contains("outside the times roster stores"),
            "{refused}"
        );
        assert!(body(r#"{"until": "-262143-01-01T00:00:00Z"}"#).is_err());
    }
}
