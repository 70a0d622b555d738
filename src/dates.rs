//! Dates in UTC with the `time` crate: RFC 3339 timestamps for webhooks and status, and the
//! day boundaries that bound certificate validity.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcDateTime};

/// RFC 3339 in UTC with second precision: `2025-01-31T08:15:00Z`. Times before 1970 show
/// as 1970, times past the year 9999 as its last second.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let at = i64::try_from(secs)
        .ok()
        .and_then(|s| UtcDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(UtcDateTime::MAX)
        .truncate_to_second();
    // Formatting a year within 0..=9999 into a String cannot fail.
    at.format(&Rfc3339).unwrap_or_default()
}

/// Midnight UTC starting the day `days` days from today (negative: before today).
pub fn midnight_in_days(days: i64) -> OffsetDateTime {
    UtcDateTime::now()
        .truncate_to_day()
        .saturating_add(Duration::days(days))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let at = |s: u64| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        // Second precision: fractions are cut, not rounded.
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_999);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(at(400_000_000_000), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn midnights() {
        let today = midnight_in_days(0);
        assert_eq!(today.time(), time::Time::MIDNIGHT);
        assert_eq!(today.offset(), time::UtcOffset::UTC);
        let now = OffsetDateTime::now_utc();
        assert!(today <= now && now - today < time::Duration::days(1));
        assert_eq!(midnight_in_days(-1), today - time::Duration::days(1));
        assert_eq!(
            (midnight_in_days(3650) - today).whole_days(),
            3650,
            "whole days, whatever the leap years"
        );
    }
}
