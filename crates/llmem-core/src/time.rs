//! Timestamps: UTC instants with millisecond precision, written as RFC 3339 text.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::{SystemTime, UNIX_EPOCH};

/// The months' English names, January first.
pub const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// The weekdays' English names, lowercase, Monday first (ISO 8601).
pub const WEEKDAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Milliseconds since the Unix epoch, UTC. Serialises as RFC 3339 (`2023-05-08T13:56:00Z`), and
/// also reads integer milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Now, from the system clock.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2023-05-08T13:56:00Z`, offsets allowed) or a bare date (`2023-05-08`).
    pub fn parse(s: &str) -> crate::Result<Self> {
        use time::format_description::well_known::Rfc3339;
        if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(Timestamp((t.unix_timestamp_nanos() / 1_000_000) as i64));
        }
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        if let Ok(d) = time::Date::parse(s, &fmt) {
            let t = d.midnight().assume_utc();
            return Ok(Timestamp(t.unix_timestamp() * 1000));
        }
        Err(crate::Error::invalid(format!(
            "`{s}` is not a timestamp; write RFC 3339 like `2023-05-08T13:56:00Z` or a date like `2023-05-08`"
        )))
    }

    /// RFC 3339 text in UTC.
    pub fn to_rfc3339(self) -> String {
        use time::format_description::well_known::Rfc3339;
        time::OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000)
            .ok()
            .and_then(|t| t.format(&Rfc3339).ok())
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Ms(i64),
            Text(String),
        }
        match Repr::deserialize(d)? {
            Repr::Ms(ms) => Ok(Timestamp(ms)),
            Repr::Text(s) => Timestamp::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_dates_parse() {
        let t = Timestamp::parse("2023-05-08T13:56:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-05-08T13:56:00Z");
        let d = Timestamp::parse("2023-05-08").unwrap();
        assert!(d < t);
        assert_eq!(Timestamp::parse("2023-05-08T15:56:00+02:00").unwrap(), t);
        assert!(
            Timestamp::parse("8 May")
                .unwrap_err()
                .to_string()
                .contains("RFC 3339")
        );
    }
}
