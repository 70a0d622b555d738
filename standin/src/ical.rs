//! Minimal iCalendar/vCard content-line handling: unfolding, an index of components for
//! validation and time-range queries, and the transforms iCloud applies to served data.

use crate::recur::{self, Rule};

/// One unfolded content line: `group.NAME;params:value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub group: Option<String>,
    /// Upper-cased property name.
    pub name: String,
    /// The raw parameter text after the name (without the leading `;`).
    pub params: String,
    pub value: String,
}

/// Unfold a text body into logical lines (CRLF or LF, continuation lines start with SP/TAB).
pub fn unfold(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(cont) = raw.strip_prefix([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push_str(cont);
                continue;
            }
        }
        if !raw.is_empty() {
            out.push(raw.to_string());
        }
    }
    out
}

/// Split one logical line into its parts.
pub fn parse_line(line: &str) -> Option<Line> {
    let mut in_quote = false;
    let mut colon = None;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ':' if !in_quote => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let colon = colon?;
    let head = &line[..colon];
    let value = line[colon + 1..].to_string();
    let (name_part, params) = match head.find(';') {
        Some(i) => (&head[..i], head[i + 1..].to_string()),
        None => (head, String::new()),
    };
    let (group, name) = match name_part.rsplit_once('.') {
        Some((g, n)) => (Some(g.to_string()), n),
        None => (None, name_part),
    };
    if name.is_empty() {
        return None;
    }
    Some(Line {
        group,
        name: name.to_ascii_uppercase(),
        params,
        value,
    })
}

/// The index kept for every calendar object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IcalMeta {
    /// True when the text is BEGIN:VCALENDAR … END:VCALENDAR.
    pub well_formed: bool,
    pub comps: Vec<CompMeta>,
}

/// One top-level component inside VCALENDAR (VTIMEZONE excluded).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CompMeta {
    pub kind: String,
    pub uid: Option<String>,
    pub summary: Option<String>,
    pub start: Option<i64>,
    pub start_is_date: bool,
    pub end: Option<i64>,
    pub duration: Option<i64>,
    pub due: Option<i64>,
    pub rrule: Option<Rule>,
    pub recurrence_id: Option<i64>,
    pub exdates: Vec<i64>,
}

impl IcalMeta {
    /// The distinct component kinds present.
    pub fn kinds(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.comps.iter().map(|c| c.kind.as_str()).collect();
        k.sort_unstable();
        k.dedup();
        k
    }

    pub fn uid(&self) -> Option<&str> {
        self.comps.iter().find_map(|c| c.uid.as_deref())
    }

    /// Does any component of `kind` overlap [rs, re)? (None bounds are open.)
    pub fn matches_range(&self, kind: &str, rs: Option<i64>, re: Option<i64>) -> bool {
        let rs = rs.unwrap_or(i64::MIN / 4);
        let re = re.unwrap_or(i64::MAX / 4);
        let overridden: Vec<i64> = self
            .comps
            .iter()
            .filter(|c| c.kind == kind)
            .filter_map(|c| c.recurrence_id)
            .collect();
        self.comps
            .iter()
            .filter(|c| c.kind.eq_ignore_ascii_case(kind))
            .any(|c| comp_overlaps(c, &overridden, rs, re))
    }
}

fn comp_overlaps(c: &CompMeta, overridden: &[i64], rs: i64, re: i64) -> bool {
    let Some(start) = c.start else {
        // VTODO without DTSTART: use DUE, else it matches any range (RFC 4791 §9.9).
        return match c.due {
            Some(d) => d >= rs && d <= re,
            None => true,
        };
    };
    let len = match (c.end, c.duration, c.due) {
        (Some(e), _, _) => e - start,
        (None, Some(d), _) => d,
        (None, None, Some(due)) => due - start,
        _ if c.start_is_date => 86400,
        _ => 0,
    };
    match (&c.rrule, c.recurrence_id) {
        (Some(rule), None) => {
            let mut skip = c.exdates.clone();
            skip.extend_from_slice(overridden);
            recur::any_instance_overlaps(start, len, rule, &skip, rs, re)
        }
        _ => recur::overlaps(start, start + len, rs, re),
    }
}

/// Date-times with a TZID are read as UTC; only the value matters here.
fn param_value_date(_params: &str, value: &str) -> Option<(i64, bool)> {
    recur::parse_datetime(value)
}

/// Build the index of a calendar text.
pub fn index(text: &str) -> IcalMeta {
    let lines = unfold(text);
    let mut meta = IcalMeta::default();
    let first = lines.first().map(|l| l.trim().to_ascii_uppercase());
    let last = lines.last().map(|l| l.trim().to_ascii_uppercase());
    meta.well_formed =
        first.as_deref() == Some("BEGIN:VCALENDAR") && last.as_deref() == Some("END:VCALENDAR");
    let mut depth = 0usize;
    let mut cur: Option<CompMeta> = None;
    for raw in &lines {
        let Some(l) = parse_line(raw) else { continue };
        match l.name.as_str() {
            "BEGIN" => {
                depth += 1;
                let kind = l.value.trim().to_ascii_uppercase();
                if depth == 2 && kind != "VTIMEZONE" {
                    cur = Some(CompMeta {
                        kind,
                        ..CompMeta::default()
                    });
                }
            }
            "END" => {
                if depth == 2 {
                    if let Some(c) = cur.take() {
                        meta.comps.push(c);
                    }
                }
                depth = depth.saturating_sub(1);
            }
            _ if depth == 2 => {
                let Some(c) = cur.as_mut() else { continue };
                match l.name.as_str() {
                    "UID" => c.uid = Some(l.value.trim().to_string()),
                    "SUMMARY" => c.summary = Some(l.value.clone()),
                    "DTSTART" => {
                        if let Some((t, d)) = param_value_date(&l.params, &l.value) {
                            c.start = Some(t);
                            c.start_is_date = d;
                        }
                    }
                    "DTEND" => c.end = param_value_date(&l.params, &l.value).map(|x| x.0),
                    "DUE" => c.due = param_value_date(&l.params, &l.value).map(|x| x.0),
                    "DURATION" => c.duration = recur::parse_duration(&l.value),
                    "RRULE" => c.rrule = recur::parse_rrule(&l.value),
                    "RECURRENCE-ID" => {
                        c.recurrence_id = param_value_date(&l.params, &l.value).map(|x| x.0)
                    }
                    "EXDATE" => c.exdates.extend(
                        l.value
                            .split(',')
                            .filter_map(|v| recur::parse_datetime(v).map(|x| x.0)),
                    ),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    meta
}

/// True when a VEVENT line list has the named property (used by the DTEND rule).
pub fn vevent_lacks_end(text: &str, duration_counts: bool) -> bool {
    let mut depth = 0usize;
    let mut in_event = false;
    let mut has_end = false;
    for raw in unfold(text) {
        let Some(l) = parse_line(&raw) else { continue };
        match l.name.as_str() {
            "BEGIN" => {
                depth += 1;
                if depth == 2 && l.value.trim().eq_ignore_ascii_case("VEVENT") {
                    in_event = true;
                    has_end = false;
                }
            }
            "END" => {
                if depth == 2 && in_event {
                    if !has_end {
                        return true;
                    }
                    in_event = false;
                }
                depth = depth.saturating_sub(1);
            }
            "DTEND" if in_event && depth == 2 => has_end = true,
            "DURATION" if in_event && depth == 2 && duration_counts => has_end = true,
            _ => {}
        }
    }
    false
}

/// Convert bare LF line ends to CRLF.
pub fn normalize_crlf(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    for (i, part) in text.split('\n').enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(part.strip_suffix('\r').unwrap_or(part));
    }
    out
}

/// Insert `line` before each `END:<kind>` at component depth 2 unless `marker` is present.
fn insert_before_end(text: &str, kind: &str, marker: &str, add: &[&str]) -> String {
    let mut out = String::with_capacity(text.len() + 128);
    let mut has_marker = false;
    let end_line = format!("END:{kind}");
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare.to_ascii_uppercase().starts_with(marker) {
            has_marker = true;
        }
        if bare.eq_ignore_ascii_case(&end_line) {
            if !has_marker {
                for a in add {
                    out.push_str(a);
                    out.push_str("\r\n");
                }
            }
            has_marker = false;
        }
        out.push_str(line);
    }
    out
}

/// Add Apple's creator x-props to each VEVENT (C6 `apple_x_props`).
pub fn add_apple_x_props(text: &str) -> String {
    insert_before_end(
        text,
        "VEVENT",
        "X-APPLE-CREATOR-IDENTITY",
        &[
            "X-APPLE-CREATOR-IDENTITY:com.apple.mobilecal",
            "X-APPLE-CREATOR-TEAM-IDENTITY:0000000000",
        ],
    )
}

/// Emit every DTSTAMP line twice (C6 `duplicate_dtstamp`).
pub fn duplicate_dtstamp(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        out.push_str(line);
        if line.to_ascii_uppercase().starts_with("DTSTAMP") {
            if !line.ends_with('\n') {
                out.push_str("\r\n");
            }
            out.push_str(line);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EV: &str = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260110T100000Z\r\nDURATION:PT1H\r\nSUMMARY:long\r\n  line\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn indexes_and_unfolds() {
        let m = index(EV);
        assert!(m.well_formed);
        assert_eq!(m.kinds(), vec!["VEVENT"]);
        assert_eq!(m.comps[0].summary.as_deref(), Some("long line"));
        assert_eq!(m.comps[0].duration, Some(3600));
        assert!(!vevent_lacks_end(EV, true));
        assert!(vevent_lacks_end(EV, false));
    }

    #[test]
    fn transforms() {
        let x = add_apple_x_props(EV);
        assert!(x.contains("X-APPLE-CREATOR-IDENTITY:com.apple.mobilecal\r\nX-APPLE-CREATOR-TEAM-IDENTITY:0000000000\r\nEND:VEVENT"));
        assert_eq!(add_apple_x_props(&x), x);
        assert_eq!(duplicate_dtstamp(EV).matches("DTSTAMP").count(), 2);
        assert_eq!(normalize_crlf("a\nb\r\nc"), "a\r\nb\r\nc");
    }

    #[test]
    fn parses_groups_and_quoted_params() {
        let l = parse_line("item1.X-ABLabel;X=\"a:b\":_$!<Other>!$_").unwrap();
        assert_eq!(l.group.as_deref(), Some("item1"));
        assert_eq!(l.name, "X-ABLABEL");
        assert_eq!(l.value, "_$!<Other>!$_");
    }
}
