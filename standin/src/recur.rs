//! Date-time arithmetic and recurrence-aware time-range matching for calendar-query.

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// (year, month, day) for days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An RFC 1123 date (`Tue, 06 Jan 2026 10:00:00 GMT`) for seconds since the epoch.
pub fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let wd = DAYS[days.rem_euclid(7) as usize];
    let mon = MONTHS[((m - 1).clamp(0, 11)) as usize];
    format!(
        "{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
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
    let day = days_from_civil(y, m, d) * 86400;
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

fn add_months(t: i64, months: i64) -> Option<i64> {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m - 1) + months;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    // Skip instances that do not exist (e.g. the 31st in a 30-day month).
    let back = civil_from_days(days_from_civil(ny, nm, d));
    if back != (ny, nm, d) {
        return None;
    }
    Some(days_from_civil(ny, nm, d) * 86400 + secs)
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
    fn civil_roundtrip_and_http_date() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2026, 3, 14)), (2026, 3, 14));
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn parses_times_and_durations() {
        let (t, d) = parse_datetime("20260110T100000Z").unwrap();
        assert!(!d);
        assert_eq!(t, days_from_civil(2026, 1, 10) * 86400 + 36000);
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
