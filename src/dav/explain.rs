//! iCloud's refusals explained: where iCloud answers a write with a bare status that hides
//! the cause, look at what the client sent and tell it the real reason (with the RFC
//! precondition element it can act on).

use http::StatusCode;

use crate::dav::error::DavError;
use crate::xml::inspect::RequestInfo;
use crate::xml::names::{CALDAV, CARDDAV, DAV};

/// What the client asked, for explaining what upstream answered.
pub struct Asked<'a> {
    pub method: &'a str,
    pub body: &'a [u8],
    pub info: Option<&'a RequestInfo>,
}

/// The explanation for an upstream answer, or None when it can pass through as is.
pub fn explain(asked: &Asked<'_>, status: u16, upstream_html: bool) -> Option<DavError> {
    let text = std::str::from_utf8(asked.body).unwrap_or("");
    match (asked.method, status) {
        ("PUT", 404) if is_ical(text) && event_without_end(text) => Some(refused(
            StatusCode::FORBIDDEN,
            Some((CALDAV, "valid-calendar-object-resource")),
            "iCloud refuses events that have neither DTEND nor DURATION (it answers 404); give the event an end time (DTEND may equal DTSTART) and save it again.",
            "iCloud needs DTEND or DURATION",
        )),
        ("PUT", 500) if is_ical(text) && has_component(text, "VJOURNAL") => Some(refused(
            StatusCode::FORBIDDEN,
            Some((CALDAV, "supported-calendar-component")),
            "iCloud does not store journal entries (VJOURNAL); keep them in another calendar service.",
            "iCloud does not store VJOURNAL",
        )),
        ("PUT", 403) if is_vcard(text) && !vcard_has_n(text) => Some(refused(
            StatusCode::FORBIDDEN,
            Some((CARDDAV, "valid-address-data")),
            "iCloud refuses contacts without an N (structured name) property; add one (N:;;;; is enough) and save again.",
            "iCloud needs an N property",
        )),
        ("PUT", 403) if is_vcard(text) => Some(refused(
            StatusCode::FORBIDDEN,
            Some((CARDDAV, "valid-address-data")),
            "iCloud refused this contact without saying why (it does this for some contacts); the contact was not saved. Try simplifying unusual fields, or save it from an Apple device.",
            "iCloud refused this contact",
        )),
        ("MKCALENDAR" | "MKCOL", 400)
            if asked.info.map(|i| i.components.len() > 1) == Some(true) =>
        {
            Some(refused(
                StatusCode::FORBIDDEN,
                Some((CALDAV, "supported-calendar-component")),
                "iCloud calendars hold one kind of item: create one calendar for events (VEVENT) and another for tasks (VTODO).",
                "iCloud allows one component type per calendar",
            ))
        }
        ("REPORT", 403 | 400 | 409 | 412)
            if asked
                .info
                .map(|i| {
                    i.root.1 == "sync-collection"
                        && i.sync_token.as_deref().map(|t| !t.trim().is_empty()) == Some(true)
                })
                == Some(true) =>
        {
            Some(refused(
                StatusCode::FORBIDDEN,
                Some((DAV, "valid-sync-token")),
                "The sync token is no longer valid upstream; sync again without a token to get everything.",
                "Invalid sync token",
            ))
        }
        (_, 400) if upstream_html => Some(refused(
            StatusCode::BAD_REQUEST,
            None,
            "iCloud rejected the request as malformed (400 Bad Request).",
            "iCloud rejected the request",
        )),
        (_, s) if s >= 500 => Some(refused(
            StatusCode::BAD_GATEWAY,
            None,
            &format!("iCloud failed to handle the request (it answered {s}); try again later."),
            "iCloud failed",
        )),
        _ => None,
    }
}

fn refused(
    status: StatusCode,
    condition: Option<(&'static str, &'static str)>,
    message: &str,
    short: &'static str,
) -> DavError {
    DavError::Refused {
        status,
        condition,
        message: message.to_string(),
        short,
    }
}

fn is_ical(text: &str) -> bool {
    text.contains("BEGIN:VCALENDAR")
}

fn is_vcard(text: &str) -> bool {
    text.contains("BEGIN:VCARD")
}

/// Unfolded content lines (RFC 5545 §3.1 / RFC 6350 §3.2).
fn unfolded(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(cont) = line.strip_prefix([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.push_str(cont);
                continue;
            }
        }
        out.push(line.to_string());
    }
    out
}

/// The property name of a content line, upper-cased, without a vCard group prefix.
fn prop_name(line: &str) -> String {
    let end = line.find([';', ':']).unwrap_or(line.len());
    let name = &line[..end];
    let name = name.rsplit('.').next().unwrap_or(name);
    name.to_ascii_uppercase()
}

fn has_component(text: &str, comp: &str) -> bool {
    unfolded(text).iter().any(|l| {
        prop_name(l) == "BEGIN"
            && l.split_once(':')
                .map(|(_, v)| v.trim().eq_ignore_ascii_case(comp))
                == Some(true)
    })
}

/// True when some VEVENT has neither DTEND nor DURATION at its own level (not counting
/// nested components such as VALARM, which have their own DURATION).
pub fn event_without_end(text: &str) -> bool {
    let mut stack: Vec<String> = Vec::new();
    let mut has_end = false;
    for line in unfolded(text) {
        let name = prop_name(&line);
        let value = line.split_once(':').map(|(_, v)| v.trim()).unwrap_or("");
        match name.as_str() {
            "BEGIN" => {
                stack.push(value.to_ascii_uppercase());
                if value.eq_ignore_ascii_case("VEVENT") {
                    has_end = false;
                }
            }
            "END" => {
                if value.eq_ignore_ascii_case("VEVENT") && !has_end {
                    return true;
                }
                stack.pop();
            }
            "DTEND" | "DURATION" if stack.last().map(String::as_str) == Some("VEVENT") => {
                has_end = true;
            }
            _ => {}
        }
    }
    false
}

pub fn vcard_has_n(text: &str) -> bool {
    unfolded(text).iter().any(|l| prop_name(l) == "N")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_END: &str = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:1\r\nDTSTART:20260101T100000Z\r\nBEGIN:VALARM\r\nTRIGGER:-PT15M\r\nDURATION:PT5M\r\nREPEAT:1\r\nACTION:DISPLAY\r\nEND:VALARM\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";

    #[test]
    fn alarm_duration_does_not_count_as_event_end() {
        assert!(event_without_end(NO_END));
        let with_end = NO_END.replace(
            "DTSTART:20260101T100000Z\r\n",
            "DTSTART:20260101T100000Z\r\nDTEND:20260101T110000Z\r\n",
        );
        assert!(!event_without_end(&with_end));
        let folded = NO_END.replace(
            "DTSTART:20260101T100000Z\r\n",
            "DTSTART:20260101T100000Z\r\nDUR\r\n ATION:PT1H\r\n",
        );
        assert!(!event_without_end(&folded));
    }

    #[test]
    fn vcard_n_is_found_with_groups_and_case() {
        assert!(vcard_has_n("BEGIN:VCARD\r\nn:Doe;John;;;\r\nEND:VCARD\r\n"));
        assert!(vcard_has_n(
            "BEGIN:VCARD\r\nitem1.N:Doe;John;;;\r\nEND:VCARD\r\n"
        ));
        assert!(!vcard_has_n(
            "BEGIN:VCARD\r\nFN:John\r\nNICKNAME:J\r\nEND:VCARD\r\n"
        ));
    }

    #[test]
    fn put_404_without_dtend_is_explained() {
        let asked = Asked {
            method: "PUT",
            body: NO_END.as_bytes(),
            info: None,
        };
        let e = explain(&asked, 404, false).unwrap();
        assert_eq!(e.status(), StatusCode::FORBIDDEN);
        assert!(e.to_string().contains("DTEND"));
        // A 404 for an event that has an end is not ours to explain.
        let ok = NO_END.replace("UID:1\r\n", "UID:1\r\nDTEND:20260101T110000Z\r\n");
        let asked = Asked {
            method: "PUT",
            body: ok.as_bytes(),
            info: None,
        };
        assert!(explain(&asked, 404, false).is_none());
    }
}
