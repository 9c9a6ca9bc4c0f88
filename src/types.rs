//! Small value types shared by every layer: durations as settings, labels and JSON write them.
//! A leaf: it imports nothing of quayside's.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The shortest duration any setting takes.
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// The longest duration any setting takes: longer ones are typos or overflow attempts, and
/// nothing quayside times should wait a day.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `500ms`, `5s`, `2m`, `1h` (humantime's syntax, so `1h30m` too), or a plain number of
/// seconds; from 1 ms to 24 h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // A plain number of seconds; one too long for u64 is simply out of range.
        s.parse::<u64>().map_or(Duration::MAX, Duration::from_secs)
    } else {
        match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(humantime::DurationError::NumberOverflow) => Duration::MAX,
            Err(_) => {
                return Err(format!(
                    "must be a duration like 500ms, 5s or 2m, got {s:?}"
                ));
            }
        }
    };
    check_duration(d, s)
}

/// `d` if it is within [`MIN_DURATION`]..=[`MAX_DURATION`]; else an error quoting `shown`.
pub fn check_duration(d: Duration, shown: &str) -> Result<Duration, String> {
    if (MIN_DURATION..=MAX_DURATION).contains(&d) {
        Ok(d)
    } else {
        Err(format!("must be from 1ms to 24h, got {shown:?}"))
    }
}

/// A duration written as `500ms`, `5s`, `2m` (or a number of seconds) in JSON and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl utoipa::PartialSchema for Dur {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .description(Some("500ms, 5s, 2m, 1h30m: from 1ms to 24h"))
                    .examples(["5s"]),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_DURATION.as_secs()))
                    .description(Some("seconds")),
            )
            .into()
    }
}

impl utoipa::ToSchema for Dur {}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(s) => check_duration(Duration::from_secs(s), &s.to_string()),
            Raw::Text(t) => parse_duration(&t),
        }
        .map(Dur)
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ms").is_err());
        assert_eq!(parse_duration("24h").unwrap(), MAX_DURATION);
        assert_eq!(parse_duration("1ms").unwrap(), MIN_DURATION);
        // Out of range, and the multiplications that used to wrap.
        for bad in [
            "25h",
            "86400001ms",
            "5124095576030432h",
            "307445734561825861m",
            "99999999999999999999999s",
        ] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("from 1ms to 24h"), "{bad}: {e}");
        }
    }
}
