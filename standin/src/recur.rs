//! Date-time arithmetic and recurrence-aware time-range matching for calendar-query.

use std::time::{Duration, UNIX_EPOCH};

use time::{Date, Month, UtcDateTime};

/// Seconds since 1970-01-01 of midnight UTC starting a proleptic Gregorian date; `None` for
/// a date that does not exist (`20260230`).
pub fn day_start(y: i64, m: i64, d: i64) -> Option<i64> {
    let month = Month::try_from(u8::try_from(m).ok()?).ok()?;
    let date = Date::from_calendar_date(i32::try_from(y).ok()?, month, u8::try_from(d).ok()?);
    Some(UtcDateTime::new(date.ok()?, time::Time::MIDNIGHT).unix_timestamp())
}

/// An RFC 1123 date (`Tue, 06 Jan 2026 10:00:00 GMT`) for seconds since the epoch, within
/// 1970..=9999 (what `httpdate` can show).
pub fn http_date(secs: i64) -> String {
    const LAST: u64 = 253_402_300_799; // 9999-12-31T23:59:59Z
    let secs = u64::try_from(secs).unwrap_or(0).min(LAST);
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parse `YYYYMMDD` or `YYYYMMDDTHHMMSS[Z]` into (epoch seconds, is_date). Local times and
/// TZID-qualified times are treated as UTC: good enough for a stand-in.
pub fn parse_datetime(v: &str) -> Option<(i64, bool)> {
    let v = v.trim();
    if v.len() < 8 || !v.is_char_boundary(8) {
        return None;
    }
    let (y, m, d) = (
        digits(v.get(0..4)?)?,
        digits(v.get(4..6)?)?,
        digits(v.get(6..8)?)?,
    );
    let day = day_start(y, m, d)?;
    if v.len() == 8 {
        return Some((day, true));
    }
    let t = v.get(8..)?.strip_prefix('T')?;
    let t = t.strip_suffix('Z').unwrap_or(t);
    if t.len() < 6 {
        return None;
    }
    let (h, mi, s) = (
        digits(t.get(0..2)?)?,
        digits(t.get(2..4)?)?,
        digits(t.get(4..6)?)?,
    );
    Some((day + h * 3600 + mi * 60 + s, false))
}

/// Parse an RFC 5545 duration (`PT1H`, `-P1D`, `P2W`) into seconds.
pub fn parse_duration(v: &str) -> Option<i64> {
    let v = v.trim();
    let (sign, rest) = match v.as_bytes().first()? {
        b'-' => (-1, &v[1..]),
        b'+' => (1, &v[1..]),
        _ => (1, v),
    };
    let rest = rest.strip_prefix('P')?;
    let mut total = 0i64;
    let mut num = String::new();
    let mut in_time = false;
    for c in rest.chars() {
        match c {
            '0'..='9' => num.push(c),
            'T' => in_time = true,
            'W' | 'D' | 'H' | 'M' | 'S' => {
                let n: i64 = num.parse().ok()?;
                num.clear();
                total += n * match (c, in_time) {
                    ('W', _) => 7 * 86400,
                    ('D', _) => 86400,
                    ('H', _) => 3600,
                    ('M', true) => 60,
                    ('S', _) => 1,
                    _ => return None,
                };
            }
            _ => return None,
        }
    }
    Some(sign * total)
}

/// Recurrence frequency.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freq {
    Secondly,
    Minutely,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

/// The parts of an RRULE the stand-in understands.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub freq: Freq,
    pub interval: i64,
    pub count: Option<u64>,
    pub until: Option<i64>,
    /// Any BYxxx part: instances are then approximated by the whole [start, until) span.
    pub has_by: bool,
}

/// Parse an RRULE value.
pub fn parse_rrule(v: &str) -> Option<Rule> {
    let mut rule = Rule {
        freq: Freq::Daily,
        interval: 1,
        count: None,
        until: None,
        has_by: false,
    };
    let mut have_freq = false;
    for part in v.split(';') {
        let (k, val) = part.split_once('=')?;
        match k.to_ascii_uppercase().as_str() {
            "FREQ" => {
                have_freq = true;
                rule.freq = match val.to_ascii_uppercase().as_str() {
                    "SECONDLY" => Freq::Secondly,
                    "MINUTELY" => Freq::Minutely,
                    "HOURLY" => Freq::Hourly,
                    "DAILY" => Freq::Daily,
                    "WEEKLY" => Freq::Weekly,
                    "MONTHLY" => Freq::Monthly,
                    "YEARLY" => Freq::Yearly,
                    _ => return None,
                }
            }
            "INTERVAL" => rule.interval = val.parse().ok().filter(|i: &i64| *i > 0)?,
            "COUNT" => rule.count = val.parse().ok(),
            "UNTIL" => rule.until = parse_datetime(val).map(|(t, _)| t),
            k if k.starts_with("BY") => rule.has_by = true,
            _ => {}
        }
    }
    have_freq.then_some(rule)
}

/// `t` moved by whole months, keeping the day of the month and the time of day; `None` for
/// an instance that does not exist (the 31st in a 30-day month), `i64::MAX` past the year
/// 9999 (later than any range a query can name).
fn add_months(t: i64, months: i64) -> Option<i64> {
    let at = UtcDateTime::from_unix_timestamp(t).ok()?;
    let total = i64::from(at.year()) * 12 + i64::from(u8::from(at.month())) - 1 + months;
    let Some(year) = i32::try_from(total.div_euclid(12))
        .ok()
        .filter(|y| (Date::MIN.year()..=Date::MAX.year()).contains(y))
    else {
        return Some(i64::MAX);
    };
    let month = Month::try_from(u8::try_from(total.rem_euclid(12) + 1).ok()?).ok()?;
    let date = Date::from_calendar_date(year, month, at.day()).ok()?;
    Some(UtcDateTime::new(date, at.time()).unix_timestamp())
}

/// Does the span [start, end) overlap [range_start, range_end) per RFC 4791 §9.9?
pub fn overlaps(start: i64, end: i64, rs: i64, re: i64) -> bool {
    if end > start {
        start < re && end > rs
    } else {
        start >= rs && start < re
    }
}

const MAX_INSTANCES: u64 = 200_000;

/// Does any instance of a recurring span (first instance [start, start+len)) overlap the range?
/// `skip` lists instance starts replaced by overrides or EXDATEs.
pub fn any_instance_overlaps(
    start: i64,
    len: i64,
    rule: &Rule,
    skip: &[i64],
    rs: i64,
    re: i64,
) -> bool {
    if rule.has_by {
        let last = rule.until.unwrap_or(i64::MAX);
        return start < re && last.saturating_add(len) > rs;
    }
    let step = match rule.freq {
        Freq::Secondly => Some(1),
        Freq::Minutely => Some(60),
        Freq::Hourly => Some(3600),
        Freq::Daily => Some(86400),
        Freq::Weekly => Some(7 * 86400),
        Freq::Monthly | Freq::Yearly => None,
    }
    .map(|s| s * rule.interval);
    let mut k: i64 = 0;
    let mut emitted: u64 = 0;
    // Jump ahead for fixed steps when nothing is counted.
    if let (Some(step), None) = (step, rule.count) {
        if rs - len > start {
            k = ((rs - len - start) / step).max(0);
        }
    }
    loop {
        if emitted >= MAX_INSTANCES {
            return true;
        }
        let t = match step {
            Some(s) => start.saturating_add(k.saturating_mul(s)),
            None => {
                let months = if rule.freq == Freq::Yearly { 12 } else { 1 } * rule.interval * k;
                match add_months(start, months) {
                    Some(t) => t,
                    None => {
                        k += 1;
                        if k > MAX_INSTANCES as i64 {
                            return true;
                        }
                        continue;
                    }
                }
            }
        };
        if let Some(c) = rule.count {
            if emitted >= c {
                return false;
            }
        }
        if rule.until.is_some_and(|u| t > u) || t >= re {
            return false;
        }
        emitted += 1;
        if !skip.contains(&t) && overlaps(t, t + len, rs, re) {
            return true;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_months_and_http_dates() {
        assert_eq!(day_start(1970, 1, 1), Some(0));
        assert_eq!(day_start(2026, 3, 14), Some(1_773_446_400));
        assert_eq!(day_start(1969, 12, 31), Some(-86_400));
        assert_eq!(day_start(2026, 2, 30), None);
        assert_eq!(day_start(2026, 13, 1), None);
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_767_693_600), "Tue, 06 Jan 2026 10:00:00 GMT");
        assert_eq!(http_date(i64::MAX), "Fri, 31 Dec 9999 23:59:59 GMT");
        let jan31 = parse_datetime("20260131T093000Z").unwrap().0;
        assert_eq!(add_months(jan31, 1), None, "no 31 February");
        assert_eq!(
            add_months(jan31, 2),
            parse_datetime("20260331T093000Z").map(|t| t.0)
        );
        assert_eq!(
            add_months(jan31, -13),
            parse_datetime("20241231T093000Z").map(|t| t.0)
        );
        assert_eq!(add_months(jan31, 12 * 8000), Some(i64::MAX));
    }

    #[test]
    fn parses_times_and_durations() {
        let (t, d) = parse_datetime("20260110T100000Z").unwrap();
        assert!(!d);
        assert_eq!(t, day_start(2026, 1, 10).unwrap() + 36000);
        assert!(parse_datetime("20260110").unwrap().1);
        assert_eq!(parse_duration("PT1H30M"), Some(5400));
        assert_eq!(parse_duration("-P1W"), Some(-604800));
    }

    #[test]
    fn recurrence_matches_later_instances_only_within_count() {
        let start = parse_datetime("20260105T073000Z").unwrap().0;
        let rule = parse_rrule("FREQ=WEEKLY;COUNT=3").unwrap();
        let day = 86400;
        // third instance: 2026-01-19
        let rs = parse_datetime("20260119T000000Z").unwrap().0;
        assert!(any_instance_overlaps(start, 1800, &rule, &[], rs, rs + day));
        let rs4 = parse_datetime("20260126T000000Z").unwrap().0;
        assert!(!any_instance_overlaps(
            start,
            1800,
            &rule,
            &[],
            rs4,
            rs4 + day
        ));
        let yearly = parse_rrule("FREQ=YEARLY").unwrap();
        let rs30 = parse_datetime("20300105T000000Z").unwrap().0;
        assert!(any_instance_overlaps(
            start,
            1800,
            &yearly,
            &[],
            rs30,
            rs30 + day
        ));
    }
}
