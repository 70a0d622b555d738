//! Test helpers: a canonical event form for comparing documents, maps and sample documents.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::escape::resolve_ref;
use super::rewrite::HrefMap;

/// Prefix swap iCloud → local, as the bridge would do it.
pub struct TestMap;

impl HrefMap for TestMap {
    fn href(&self, href: &str) -> Option<String> {
        const SWAPS: [(&str, &str); 2] = [
            (
                "https://p42-caldav.icloud.com:443/1234567890/calendars/",
                "/dav/alice/calendars/",
            ),
            ("/1234567890/calendars/", "/dav/alice/calendars/"),
        ];
        SWAPS
            .iter()
            .find_map(|(from, to)| href.strip_prefix(from).map(|rest| format!("{to}{rest}")))
    }

    fn body_text(&self, text: &str) -> Option<String> {
        const PHOTO: &str = "https://p42-contacts.icloud.com/";
        text.contains(PHOTO)
            .then(|| text.replace(PHOTO, "http://127.0.0.1:8080/photo/"))
    }
}

fn ns_of(res: ResolveResult<'_>) -> String {
    match res {
        ResolveResult::Bound(ns) => String::from_utf8(ns.0.to_vec()).unwrap(),
        ResolveResult::Unbound => String::new(),
        ResolveResult::Unknown(p) => panic!("unknown prefix {}", String::from_utf8_lossy(&p)),
    }
}

/// Decodes a raw attribute value (references only; no whitespace normalisation).
fn decode_raw(raw: &[u8]) -> String {
    let s = std::str::from_utf8(raw).unwrap();
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';').unwrap() + i;
        out.push(resolve_ref(&rest.as_bytes()[i + 1..end]).unwrap());
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Parses `doc` (panicking if it is not namespace-well-formed) into a canonical token list:
/// `<{ns}local attrs…>`, `</>`, `"text"` for merged non-whitespace text runs. DAV:href text is
/// trimmed and passed through `map`; calendar/address data through `map.body_text`.
pub fn canonical(doc: &[u8], map: &dyn HrefMap) -> Vec<String> {
    let mut reader = NsReader::from_reader(doc);
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut stack: Vec<(String, String)> = Vec::new();
    loop {
        let event = reader.read_event().unwrap();
        match &event {
            Event::Text(_) | Event::CData(_) | Event::GeneralRef(_) | Event::Comment(_) => {}
            _ => {
                let parent = stack.last().cloned().unwrap_or_default();
                let mut t = std::mem::take(&mut text);
                if parent == ("DAV:".to_string(), "href".to_string()) {
                    t = t.trim().to_string();
                    t = map.href(&t).unwrap_or(t);
                } else if parent.1 == "calendar-data" || parent.1 == "address-data" {
                    t = map.body_text(&t).unwrap_or(t);
                }
                if !t.trim_matches(|c| " \t\r\n".contains(c)).is_empty() {
                    tokens.push(format!("{t:?}"));
                }
            }
        }
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let (res, local) = reader.resolve_element(e.name());
                let ns = ns_of(res);
                let local = String::from_utf8(local.into_inner().to_vec()).unwrap();
                let mut attrs: Vec<String> = e
                    .attributes()
                    .map(|a| a.unwrap())
                    .filter(|a| a.key.as_namespace_binding().is_none())
                    .map(|a| {
                        let (res, l) = reader.resolve_attribute(a.key);
                        let l = String::from_utf8_lossy(l.into_inner()).into_owned();
                        format!("{{{}}}{l}={:?}", ns_of(res), decode_raw(&a.value))
                    })
                    .collect();
                attrs.sort();
                tokens.push(format!("<{{{ns}}}{local} {}>", attrs.join(" ")));
                if empty {
                    tokens.push("</>".into());
                } else {
                    stack.push((ns, local));
                }
            }
            Event::End(_) => {
                stack.pop();
                tokens.push("</>".into());
            }
            Event::Text(t) => text.push_str(std::str::from_utf8(&t).unwrap()),
            Event::CData(t) => text.push_str(std::str::from_utf8(&t).unwrap()),
            Event::GeneralRef(r) => text.push(resolve_ref(&r).unwrap()),
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty(), "unclosed elements");
    tokens
}

/// Calendar data with CRLF line ends, `&`, `<`, `]]` and non-ASCII, as it should come out.
pub const CAL_DATA: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nBEGIN:VEVENT\r\nUID:a&b<c>d\r\n\
SUMMARY:Grüße aus 東京 ]] > ]]> & <tag> &amp;\r\nDESCRIPTION:x\\, y\r\n\
END:VEVENT\r\nEND:VCALENDAR\r\n";

/// `CAL_DATA` as CDATA sections (the `]]>` is split across two sections, as servers do).
pub fn cal_data_cdata() -> String {
    format!("<![CDATA[{}]]>", CAL_DATA.replace("]]>", "]]]]><![CDATA[>"))
}

/// One iCloud-style `<response>` (default namespace, inline redeclarations, single quotes).
pub fn icloud_response(out: &mut String, i: usize) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "\n   <response xmlns=\"DAV:\"><href>/1234567890/calendars/home/ev{i}%40x.ics</href>\n  \
<propstat><prop><getetag xmlns=\"DAV:\">\"kkkgopik{i}\"</getetag>\n   \
<calendar-home-set xmlns=\"urn:ietf:params:xml:ns:caldav\"><href xmlns=\"DAV:\">\
https://p42-caldav.icloud.com:443/1234567890/calendars/</href></calendar-home-set>\n   \
<supported-calendar-component-set xmlns=\"urn:ietf:params:xml:ns:caldav\">\
<comp name='VEVENT' xmlns='urn:ietf:params:xml:ns:caldav'/></supported-calendar-component-set>\n   \
<calendar-data xmlns=\"urn:ietf:params:xml:ns:caldav\"><![CDATA[BEGIN:VCALENDAR\r\n\
VERSION:2.0\r\nPRODID:-//Apple Inc.//iCloud 2.0//EN\r\nBEGIN:VEVENT\r\nUID:{i}-abc\r\n\
DTSTART:20240101T100000Z\r\nSUMMARY:Meeting {i} & more\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n\
]]></calendar-data></prop><status>HTTP/1.1 200 OK</status></propstat></response>"
    );
}

/// The iCloud example from the brief, with `CAL_DATA` as the first response's calendar data.
pub fn icloud_sample() -> String {
    let mut doc = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n\
<multistatus xmlns=\"DAV:\">\n\n   <response xmlns=\"DAV:\"><href>/1234567890/calendars/home/</href>\n  \
<propstat><prop><getetag xmlns=\"DAV:\">\"kkkgopik\"</getetag>\n   \
<displayname>Zuhause – Fußball</displayname>\n   \
<calendar-home-set xmlns=\"urn:ietf:params:xml:ns:caldav\"><href xmlns=\"DAV:\">\n    \
https://p42-caldav.icloud.com:443/1234567890/calendars/\n  </href></calendar-home-set>\n   \
<supported-calendar-component-set xmlns=\"urn:ietf:params:xml:ns:caldav\">\
<comp name='VEVENT' xmlns='urn:ietf:params:xml:ns:caldav'/></supported-calendar-component-set>\n   \
<calendar-color xmlns=\"http://apple.com/ns/ical/\" symbolic-color=\"red\">#FF2968</calendar-color>\n   \
<calendar-data xmlns=\"urn:ietf:params:xml:ns:caldav\">",
    );
    doc.push_str(&cal_data_cdata());
    doc.push_str("</calendar-data></prop><status>HTTP/1.1 200 OK</status></propstat></response>");
    icloud_response(&mut doc, 7);
    doc.push_str("\n <sync-token>HwoQEgw...==</sync-token>\n</multistatus>\n");
    doc
}

/// A PROPFIND Depth 1 listing as the stand-in (and iCloud) writes it: element-dense, with
/// inline namespace re-declarations and whitespace noise, no calendar data.
pub fn dense_listing(items: usize) -> String {
    use std::fmt::Write;
    let mut doc = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<multistatus xmlns=\"DAV:\">\n",
    );
    for i in 0..items {
        let _ = write!(
            doc,
            "    <response xmlns=\"DAV:\">\n   <href>/1234567890/calendars/bench/ev-{i:06}.ics</href>\n        <propstat>\n     <prop>\n\n\n    <getetag xmlns=\"DAV:\">\"9wis{i:04}\"</getetag>\n        <resourcetype xmlns=\"DAV:\"/>\n   </prop>\n      <status>HTTP/1.1 200 OK</status>\n   </propstat>\n\n\n        <propstat>\n     <prop>\n    <getcontenttype xmlns=\"DAV:\"/>\n       </prop>\n   <status>HTTP/1.1 404 Not Found</status>\n\n\n     </propstat>\n  </response>\n"
        );
    }
    doc.push_str("</multistatus>\n");
    doc
}
