//! The iCalendar text of the bridge's own calendars: yearly all-day events from a contact's
//! birthday and anniversary, and the one event that says the account needs attention.

use sha2::{Digest, Sha256};

use crate::dav::vcard::{self, Line};

/// One calendar object: its file name under the collection, its text, its ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub ics: String,
    pub etag: String,
}

impl Object {
    fn new(name: String, ics: String) -> Object {
        let etag = format!("\"{}\"", hex(ics.as_bytes(), 16));
        Object { name, ics, etag }
    }
}

/// The first `len` hex digits of the SHA-256 of `data`.
pub fn hex(data: &[u8], len: usize) -> String {
    let digest = Sha256::digest(data);
    let mut s: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(len);
    s
}

/// The start year of a date whose year is unknown: a leap year, so February 29 is a date.
const YEARLESS_START: u16 = 1972;

/// A calendar date from a vCard, the year left out when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    pub year: Option<u16>,
    pub month: u8,
    pub day: u8,
}

/// Read a vCard date value: `1985-03-14`, `19850314`, a date-time (its date part), `--03-14`
/// or `--0314`; `omit_year` is Apple's `X-APPLE-OMIT-YEAR` parameter (that year means none).
pub fn parse_day(value: &str, omit_year: Option<&str>) -> Option<Day> {
    let v = value.trim();
    let date = v.split('T').next().unwrap_or(v);
    let (year, md) = if let Some(md) = date.strip_prefix("--") {
        (None, md.replace('-', ""))
    } else {
        let digits = date.replace('-', "");
        if digits.len() != 8 {
            return None;
        }
        let (y, md) = digits.split_at(4);
        let year = if omit_year.is_some_and(|o| o.trim() == y) {
            None
        } else {
            Some(y.parse::<u16>().ok()?)
        };
        (year, md.to_string())
    };
    if md.len() != 4 || !md.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let month: u8 = md[..2].parse().ok()?;
    let day: u8 = md[2..].parse().ok()?;
    let max = match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if day == 0 || day > max || year == Some(0) {
        return None;
    }
    let leap = |y: u16| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    if month == 2 && day == 29 && year.is_some_and(|y| !leap(y)) {
        return None;
    }
    Some(Day { year, month, day })
}

/// What an event of a contact marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Birthday,
    Anniversary,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Birthday => "birthday",
            Kind::Anniversary => "anniversary",
        }
    }
}

/// What the birthdays calendar needs of one contact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    /// The vCard's UID (or, without one, its href): what makes the event's UID stable.
    pub key: String,
    pub name: String,
    pub birthday: Option<Day>,
    pub anniversary: Option<Day>,
}

/// The content lines of a vCard, parsed (see [`crate::dav::vcard`]).
fn lines(text: &str) -> Vec<Line<'_>> {
    vcard::lines(text)
        .into_iter()
        .filter_map(vcard::parse)
        .collect()
}

/// A vCard text value without its escapes (`\,` `\;` `\n` `\\`).
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push(' '),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out.trim().to_string()
}

/// The contact a vCard describes (`href` stands in for a missing UID); `None` for a text
/// that is not a vCard.
pub fn contact(text: &str, href: &str) -> Option<Contact> {
    if !text
        .trim_start()
        .to_ascii_uppercase()
        .starts_with("BEGIN:VCARD")
    {
        return None;
    }
    let all = lines(text);
    let mut c = Contact {
        key: href.to_string(),
        ..Contact::default()
    };
    let (mut fn_name, mut n_name, mut org) = (None, None, None);
    // Apple's labelled dates: `itemN.X-ABDATE` with `itemN.X-ABLabel:_$!<Anniversary>!$_`.
    let anniversary_groups: Vec<&str> = all
        .iter()
        .filter(|l| l.name == "X-ABLABEL" && l.value.contains("_$!<Anniversary>!$_"))
        .filter_map(|l| l.group.as_deref())
        .collect();
    for l in &all {
        let day = || parse_day(&l.value, l.param("X-APPLE-OMIT-YEAR"));
        match l.name.as_str() {
            "UID" if !l.value.trim().is_empty() => c.key = l.value.trim().to_string(),
            "FN" => fn_name = Some(unescape(&l.value)),
            "N" => {
                let parts: Vec<String> = l.value.split(';').map(unescape).collect();
                let given = parts.get(1).cloned().unwrap_or_default();
                let family = parts.first().cloned().unwrap_or_default();
                n_name = Some(format!("{given} {family}").trim().to_string());
            }
            "ORG" => org = l.value.split(';').next().map(unescape),
            "BDAY" if c.birthday.is_none() => c.birthday = day(),
            "ANNIVERSARY" | "X-ANNIVERSARY" if c.anniversary.is_none() => c.anniversary = day(),
            "X-ABDATE"
                if c.anniversary.is_none()
                    && l.group.as_deref().is_some_and(|g| {
                        anniversary_groups.iter().any(|a| a.eq_ignore_ascii_case(g))
                    }) =>
            {
                c.anniversary = day()
            }
            _ => {}
        }
    }
    c.name = [fn_name, n_name, org]
        .into_iter()
        .flatten()
        .find(|n| !n.is_empty())
        .unwrap_or_else(|| "Unnamed contact".to_string());
    Some(c)
}

/// The events of one contact (a birthday, an anniversary), one object each.
pub fn contact_events(c: &Contact) -> Vec<Object> {
    let id = hex(c.key.as_bytes(), 20);
    [
        (Kind::Birthday, c.birthday),
        (Kind::Anniversary, c.anniversary),
    ]
    .into_iter()
    .filter_map(|(kind, day)| {
        let day = day?;
        let summary = format!("{}'s {}", c.name, kind.as_str());
        let uid = format!("{id}-{}@icloud-bridge", kind.as_str());
        let rule = if day.month == 2 && day.day == 29 {
            // Observed on the last day of February in other years.
            "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=-1"
        } else {
            "FREQ=YEARLY"
        };
        let start = format!(
            "{:04}{:02}{:02}",
            day.year.unwrap_or(YEARLESS_START),
            day.month,
            day.day
        );
        let mut body = vec![
            format!("UID:{uid}"),
            "DTSTAMP:20000101T000000Z".to_string(),
            format!("DTSTART;VALUE=DATE:{start}"),
            "DURATION:P1D".to_string(),
            format!("RRULE:{rule}"),
            format!("SUMMARY:{}", text(&summary)),
            "TRANSP:TRANSPARENT".to_string(),
            format!(
                "CATEGORIES:{}",
                if kind == Kind::Birthday {
                    "Birthday"
                } else {
                    "Anniversary"
                }
            ),
        ];
        if let Some(y) = day.year {
            body.push(format!("X-ICLOUD-BRIDGE-YEAR:{y}"));
        }
        Some(Object::new(
            format!("{id}-{}.ics", kind.as_str()),
            calendar("Birthdays", &body),
        ))
    })
    .collect()
}

/// The event of the notify calendar for `date` (`YYYYMMDD`): `summary` short, `sentence`
/// the account's reason, `url` where to fix it.
pub fn attention_event(
    account: &str,
    date: &str,
    summary: &str,
    sentence: &str,
    url: &str,
) -> Object {
    let id = hex(account.as_bytes(), 20);
    let body = vec![
        format!("UID:{id}-attention@icloud-bridge"),
        format!("DTSTAMP:{date}T000000Z"),
        format!("DTSTART;VALUE=DATE:{date}"),
        "DURATION:P1D".to_string(),
        format!("SUMMARY:{}", text(summary)),
        format!("DESCRIPTION:{}", text(&format!("{sentence}\n\nFix: {url}"))),
        format!("URL:{url}"),
        "TRANSP:TRANSPARENT".to_string(),
    ];
    Object::new(
        format!("{id}-attention.ics"),
        calendar("icloud-bridge", &body),
    )
}

/// A VCALENDAR around one VEVENT with these content lines (folded, CRLF).
fn calendar(product: &str, event: &[String]) -> String {
    let mut out = String::new();
    let head = [
        "BEGIN:VCALENDAR".to_string(),
        "VERSION:2.0".to_string(),
        format!("PRODID:-//icloud-bridge//{product}//EN"),
        "CALSCALE:GREGORIAN".to_string(),
        "BEGIN:VEVENT".to_string(),
    ];
    let tail = ["END:VEVENT".to_string(), "END:VCALENDAR".to_string()];
    for l in head.iter().chain(event).chain(&tail) {
        out.push_str(&vcard::fold(l, "\r\n"));
    }
    out
}

/// `objects` as one VCALENDAR (a GET of the whole collection).
pub fn whole(objects: &[Object]) -> String {
    let mut out = String::from(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//icloud-bridge//EN\r\nCALSCALE:GREGORIAN\r\n",
    );
    for o in objects {
        if let (Some(s), Some(e)) = (o.ics.find("BEGIN:VEVENT"), o.ics.rfind("END:VEVENT")) {
            out.push_str(&o.ics[s..e]);
            out.push_str("END:VEVENT\r\n");
        }
    }
    out.push_str("END:VCALENDAR\r\n");
    out
}

/// An iCalendar TEXT value with its escapes.
fn text(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace(';', "\\;")
        .replace(',', "\\,")
        .replace("\r\n", "\\n")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_every_form() {
        let d = |y, m, d| {
            Some(Day {
                year: y,
                month: m,
                day: d,
            })
        };
        assert_eq!(parse_day("1985-03-14", None), d(Some(1985), 3, 14));
        assert_eq!(parse_day("19850314", None), d(Some(1985), 3, 14));
        assert_eq!(
            parse_day("1985-03-14T00:00:00Z", None),
            d(Some(1985), 3, 14)
        );
        assert_eq!(parse_day("1604-03-14", Some("1604")), d(None, 3, 14));
        assert_eq!(parse_day("--03-14", None), d(None, 3, 14));
        assert_eq!(parse_day("--0229", None), d(None, 2, 29));
        assert_eq!(parse_day("1985-02-29", None), None);
        assert_eq!(parse_day("1985-13-01", None), None);
        assert_eq!(parse_day("soon", None), None);
    }

    #[test]
    fn a_contact_gives_a_yearly_birthday_and_an_anniversary() {
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:abc\r\nN:Doe;Jane;;;\r\nFN:Jane Doe\r\nBDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14\r\nitem1.X-ABDATE;type=pref:2010-06-\r\n 01\r\nitem1.X-ABLabel:_$!<Anniversary>!$_\r\nitem2.X-ABDATE:2011-01-01\r\nitem2.X-ABLabel:_$!<Other>!$_\r\nEND:VCARD\r\n";
        let c = contact(card, "/x.vcf").unwrap();
        assert_eq!(c.key, "abc");
        assert_eq!(c.name, "Jane Doe");
        let ev = contact_events(&c);
        assert_eq!(ev.len(), 2);
        assert!(ev[0].name.ends_with("-birthday.ics"));
        assert!(ev[0].ics.contains("SUMMARY:Jane Doe's birthday\r\n"));
        assert!(ev[0].ics.contains("DTSTART;VALUE=DATE:19720314\r\n"));
        assert!(ev[0].ics.contains("RRULE:FREQ=YEARLY\r\n"));
        assert!(!ev[0].ics.contains("X-ICLOUD-BRIDGE-YEAR"));
        assert!(ev[1].ics.contains("DTSTART;VALUE=DATE:20100601\r\n"));
        assert!(ev[1].ics.contains("SUMMARY:Jane Doe's anniversary\r\n"));
        // Stable: the same card gives the same objects.
        assert_eq!(contact_events(&contact(card, "/y.vcf").unwrap()), ev);
    }

    #[test]
    fn leap_days_names_and_long_lines() {
        let card = "BEGIN:VCARD\nN:Smith;Ann\\, Jr.;;;\nBDAY:--02-29\nEND:VCARD\n";
        let c = contact(card, "/dav/a/contacts/card/s.vcf").unwrap();
        assert_eq!(c.name, "Ann, Jr. Smith");
        let ev = contact_events(&c);
        assert!(ev[0].ics.contains("SUMMARY:Ann\\, Jr. Smith's birthday"));
        assert!(ev[0].ics.contains("BYMONTH=2;BYMONTHDAY=-1"));
        let long = "é".repeat(100);
        let o = attention_event("alice", "20240501", "s", &long, "http://x/status");
        assert!(o.ics.lines().all(|l| l.len() <= 75), "{}", o.ics);
        assert!(o.ics.contains("URL:http://x/status\r\n"));
        assert!(whole(&[o]).matches("BEGIN:VEVENT").count() == 1);
        assert_eq!(contact("not a card", "/x"), None);
    }
}
