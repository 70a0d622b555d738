//! Names people recognise: iCloud's address book has no display name of its own (clients
//! then show its internal path segment, `card`), so a listing of the contacts home (or of
//! the address book itself) gives it one: "Contacts", with the account's name where the
//! bridge serves several.

use quick_xml::events::{BytesText, Event};
use quick_xml::{Reader, Writer};

/// Listings larger than this are passed on unnamed (a home listing is a few KiB).
pub const MAX_LISTING: usize = 1 << 20;

/// The display name given to an address book that has none: `Contacts`, or
/// `Contacts (<account>)` when the bridge serves several accounts.
pub fn contacts_label(account: &str, several_accounts: bool) -> String {
    if several_accounts {
        format!("Contacts ({account})")
    } else {
        "Contacts".to_string()
    }
}

/// `xml` (a multistatus the bridge rewrote) with `label` as the display name of every
/// collection directly under `/dav/<account>/contacts/` whose display name is missing from
/// its 200 properties' text, empty, or just its path segment. `None` when nothing changes
/// (or the XML cannot be read: it is passed on as it was).
pub fn name_address_books(xml: &[u8], account: &str, label: &str) -> Option<Vec<u8>> {
    let home = format!("/dav/{account}/contacts/");
    let mut reader = Reader::from_reader(xml);
    let mut writer = Writer::new(Vec::with_capacity(xml.len() + 64));
    let mut href: Option<String> = None;
    let mut in_href = false;
    // The prefix (`d:`) of an empty displayname left out, to be given in a 200 propstat.
    let mut give_name: Option<String> = None;
    let mut changed = false;
    loop {
        let event = reader.read_event().ok()?;
        let book = href.as_deref().is_some_and(|h| is_book(h, &home));
        match &event {
            Event::Eof => break,
            Event::Start(e) if e.local_name().as_ref() == b"response" => {
                href = None;
                give_name = None;
            }
            Event::Start(e) if e.local_name().as_ref() == b"href" => in_href = true,
            Event::Start(e) if e.local_name().as_ref() == b"displayname" && book => {
                writer.write_event(event.borrow()).ok()?;
                let (text, end) = read_name(&mut reader)?;
                let segment = href.as_deref().map(|h| segment(h, &home)).unwrap_or("");
                let unnamed = text.trim().is_empty() || text.trim() == segment;
                let out = if unnamed { label } else { text.as_str() };
                changed |= unnamed;
                writer.write_event(Event::Text(BytesText::new(out))).ok()?;
                writer.write_event(end).ok()?;
                continue;
            }
            Event::Empty(e) if e.local_name().as_ref() == b"displayname" && book => {
                // Asked for and not given (a 404 propstat): given below, in a 200 one.
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                let prefix = name.strip_suffix("displayname").unwrap_or("").to_string();
                give_name = Some(prefix);
                changed = true;
                continue;
            }
            Event::End(e) if e.local_name().as_ref() == b"response" => {
                if let Some(p) = give_name.take() {
                    let text = crate::xml::escape_text(label);
                    let propstat = format!(
                        "<{p}propstat><{p}prop><{p}displayname>{text}</{p}displayname></{p}prop><{p}status>HTTP/1.1 200 OK</{p}status></{p}propstat>"
                    );
                    writer.get_mut().extend_from_slice(propstat.as_bytes());
                }
            }
            Event::Text(t) if in_href => {
                href = t.decode().ok().map(|s| s.trim().to_string());
            }
            Event::End(_) => in_href = false,
            _ => {}
        }
        writer.write_event(event).ok()?;
    }
    changed.then(|| writer.into_inner())
}

/// Read the text of a `displayname` up to its end tag: (text, the end event).
fn read_name<'a>(reader: &mut Reader<&'a [u8]>) -> Option<(String, Event<'a>)> {
    let mut text = String::new();
    loop {
        match reader.read_event().ok()? {
            Event::Text(t) => text.push_str(&t.decode().ok()?),
            Event::GeneralRef(r) => {
                let name = r.decode().ok()?;
                let c = match name.as_ref() {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                };
                text.push_str(c);
            }
            Event::CData(c) => text.push_str(&String::from_utf8_lossy(&c)),
            end @ Event::End(_) => return Some((text, end)),
            Event::Eof => return None,
            _ => {}
        }
    }
}

/// Whether `href` is a collection directly under the contacts home.
fn is_book(href: &str, home: &str) -> bool {
    let seg = segment(href, home);
    !seg.is_empty() && !seg.contains('/')
}

/// `card` of `/dav/alice/contacts/card/`.
fn segment<'h>(href: &'h str, home: &str) -> &'h str {
    let path = match href.find("://") {
        Some(i) => href[i + 3..]
            .find('/')
            .map(|j| &href[i + 3 + j..])
            .unwrap_or(""),
        None => href,
    };
    path.strip_prefix(home)
        .map(|r| r.strip_suffix('/').unwrap_or(r))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(name_prop: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="utf-8"?><d:multistatus xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:response><d:href>/dav/alice/contacts/</d:href><d:propstat><d:prop><d:displayname>Alice Example</d:displayname><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response><d:response><d:href>/dav/alice/contacts/card/</d:href><d:propstat><d:prop>{name_prop}<d:resourcetype><d:collection/><card:addressbook/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#
        )
    }

    fn named(xml: &str, label: &str) -> String {
        String::from_utf8(name_address_books(xml.as_bytes(), "alice", label).unwrap()).unwrap()
    }

    #[test]
    fn an_address_book_called_by_its_path_gets_a_name() {
        for prop in [
            "<d:displayname>card</d:displayname>",
            "<d:displayname></d:displayname>",
        ] {
            let out = named(&listing(prop), "Contacts");
            assert!(
                out.contains("<d:href>/dav/alice/contacts/card/</d:href><d:propstat><d:prop><d:displayname>Contacts</d:displayname>"),
                "{prop}: {out}"
            );
            // The home keeps its own name.
            assert!(
                out.contains("<d:displayname>Alice Example</d:displayname>"),
                "{out}"
            );
        }
        let out = named(
            &listing("<d:displayname>card</d:displayname>"),
            &contacts_label("alice", true),
        );
        assert!(
            out.contains("<d:displayname>Contacts (alice)</d:displayname>"),
            "{out}"
        );
    }

    #[test]
    fn a_display_name_upstream_did_not_give_is_given_in_a_200_propstat() {
        let xml = r#"<d:multistatus xmlns:d="DAV:"><d:response><d:href>/dav/alice/contacts/card/</d:href><d:propstat><d:prop><d:getctag/></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><d:displayname/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response></d:multistatus>"#;
        let out = named(xml, "Contacts");
        assert!(out.contains("<d:prop></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat><d:propstat><d:prop><d:displayname>Contacts</d:displayname></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>"), "{out}");
    }

    #[test]
    fn a_real_name_is_kept_and_other_answers_pass_unchanged() {
        let xml = listing("<d:displayname>Family &amp; friends</d:displayname>");
        assert_eq!(
            name_address_books(xml.as_bytes(), "alice", "Contacts"),
            None
        );
        let garbage = b"<d:multistatus xmlns:d=\"DAV:\"><d:response>";
        assert_eq!(name_address_books(garbage, "alice", "Contacts"), None);
        let no_name = listing("");
        assert_eq!(
            name_address_books(no_name.as_bytes(), "alice", "Contacts"),
            None
        );
    }
}
