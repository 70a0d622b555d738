//! Task lists seen in calendar-home listings: collections whose only component is VTODO.
//! Since iOS 13 Apple's Reminders app keeps reminders outside CalDAV, so such a list is an
//! older one the Reminders app no longer shows; the status page says so, since users read
//! it as a sync bug.

use quick_xml::events::Event;

use crate::cache::multiget;

/// One task list, by its local href (display names can be personal, and the status page
/// that shows these needs no login).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskList {
    pub href: String,
}

/// The task lists in a rewritten home listing, or `None` when the listing does not say which
/// components its collections take (the client did not ask for
/// `supported-calendar-component-set`, or the body is not the rewriter's XML).
pub fn find(body: &[u8]) -> Option<Vec<TaskList>> {
    let mut r = quick_xml::Reader::from_reader(body);
    let mut buf = Vec::new();
    let mut found = Vec::new();
    let mut told = false;
    // Per response: href, components, whether a 200 propstat said which.
    let mut href = String::new();
    let mut comps: Vec<String> = Vec::new();
    let mut has_set = false;
    // Per propstat: the set seen, its components, whether its status is 200.
    let mut ps_set = false;
    let mut ps_comps: Vec<String> = Vec::new();
    let mut ps_status = String::new();
    let mut text_of: Option<&'static str> = None;
    loop {
        match r.read_event_into(&mut buf).ok()? {
            Event::Start(e) => match e.name().as_ref() {
                b"d:response" => {
                    href.clear();
                    comps.clear();
                    has_set = false;
                }
                b"d:propstat" => {
                    ps_set = false;
                    ps_comps.clear();
                    ps_status.clear();
                }
                b"d:href" => text_of = Some("href"),
                b"d:status" => text_of = Some("status"),
                b"cal:supported-calendar-component-set" => ps_set = true,
                b"cal:comp" => ps_comps.extend(comp_name(&e)),
                _ => {}
            },
            Event::Empty(e) => match e.name().as_ref() {
                b"cal:comp" => ps_comps.extend(comp_name(&e)),
                b"cal:supported-calendar-component-set" => ps_set = true,
                _ => {}
            },
            Event::Text(t) => {
                let s = t.decode().ok()?;
                match text_of {
                    Some("href") => href.push_str(&s),
                    Some("status") => ps_status.push_str(&s),
                    _ => {}
                }
            }
            Event::GeneralRef(g) => {
                let c = crate::xml::escape::resolve_ref(&g)?;
                if text_of == Some("href") {
                    href.push(c);
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"d:href" | b"d:status" => text_of = None,
                b"d:propstat" if ps_set && ps_status.split_whitespace().nth(1) == Some("200") => {
                    has_set = true;
                    comps.append(&mut ps_comps);
                }
                b"d:response" => {
                    told |= has_set;
                    if has_set && !comps.is_empty() && comps.iter().all(|c| c == "VTODO") {
                        found.push(TaskList {
                            href: multiget::normal(href.trim()),
                        });
                    }
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    told.then_some(found)
}

fn comp_name(e: &quick_xml::events::BytesStart<'_>) -> Option<String> {
    e.attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.as_ref() == b"name")
        .and_then(|a| a.unescape_value().ok())
        .map(|v| v.trim().to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(responses: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><d:multistatus{}>{responses}</d:multistatus>",
            crate::xml::names::KNOWN_DECLS
        )
    }

    fn collection(href: &str, name: &str, comps: &[&str]) -> String {
        let c: String = comps
            .iter()
            .map(|c| format!("<cal:comp name=\"{c}\"/>"))
            .collect();
        format!(
            "<d:response><d:href>{href}</d:href><d:propstat><d:prop><d:displayname>{name}</d:displayname><cal:supported-calendar-component-set>{c}</cal:supported-calendar-component-set></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"
        )
    }

    #[test]
    fn vtodo_only_collections_are_task_lists() {
        let body = listing(&format!(
            "<d:response><d:href>/dav/a/calendars/</d:href><d:propstat><d:prop><d:displayname/></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>{}{}{}{}",
            collection("/dav/a/calendars/home/", "Home", &["VEVENT"]),
            collection("/dav/a/calendars/tasks&amp;more/", "Reminders", &["VTODO"]),
            collection("/dav/a/calendars/mixed/", "Mixed", &["VEVENT", "VTODO"]),
            collection("/dav/a/calendars/x%20y/", "", &["vtodo"]),
        ));
        assert_eq!(
            find(body.as_bytes()),
            Some(vec![
                TaskList {
                    href: "/dav/a/calendars/tasks&more/".into()
                },
                TaskList {
                    href: "/dav/a/calendars/x y/".into()
                },
            ])
        );
    }

    #[test]
    fn a_listing_that_does_not_say_tells_nothing() {
        let body = listing(
            "<d:response><d:href>/dav/a/calendars/tasks/</d:href><d:propstat><d:prop><d:getetag>\"1\"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>",
        );
        assert_eq!(find(body.as_bytes()), None);
        // Asked for but unknown (404 propstat, as for the home itself): tells nothing either.
        let body = listing(
            "<d:response><d:href>/dav/a/calendars/</d:href><d:propstat><d:prop><cal:supported-calendar-component-set/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>",
        );
        assert_eq!(find(body.as_bytes()), None);
        // Asked for, no task list: an empty answer (the old ones are gone).
        let body = listing(&collection("/dav/a/calendars/home/", "Home", &["VEVENT"]));
        assert_eq!(find(body.as_bytes()), Some(vec![]));
        assert_eq!(find(b"<not xml"), None);
    }
}
