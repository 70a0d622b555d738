//! Multigets answered object by object: every `DAV:response` of a rewritten multiget answer is
//! kept under its href (and what was asked of it), so a later multiget of the same objects, in
//! any order or grouping, is assembled from the cache without asking iCloud. Same freshness
//! and invalidation as the rest of the cache (the collection's generation is in the key).

use bytes::Bytes;
use quick_xml::events::Event;
use sha2::{Digest, Sha256};

use crate::xml::names::KNOWN_DECLS;

/// The start of every multistatus the rewriter writes; fragments are only valid under it.
fn header() -> String {
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><d:multistatus{KNOWN_DECLS}>")
}

const FOOTER: &str = "</d:multistatus>";
const OPEN: &str = "<d:response>";
const CLOSE: &str = "</d:response>";

/// A multiget request: which hrefs, and a digest of everything else it asks.
pub struct Multiget {
    pub hrefs: Vec<String>,
    pub signature: [u8; 32],
}

/// Read a `calendar-multiget` / `addressbook-multiget` body; `None` for anything else.
pub fn parse_request(body: &[u8]) -> Option<Multiget> {
    let mut r = quick_xml::Reader::from_reader(body);
    let mut hash = Sha256::new();
    let mut hrefs = Vec::new();
    let mut in_href = false;
    let mut root_seen = false;
    let mut href_text = String::new();
    loop {
        match r.read_event().ok()? {
            Event::Start(e) => {
                let local = e.local_name();
                if !root_seen {
                    root_seen = true;
                    if !matches!(
                        local.as_ref(),
                        b"calendar-multiget" | b"addressbook-multiget"
                    ) {
                        return None;
                    }
                }
                if local.as_ref() == b"href" {
                    in_href = true;
                    href_text.clear();
                    continue;
                }
                hash.update(b"<");
                Digest::update(&mut hash, &*e as &[u8]);
            }
            Event::End(e) => {
                if in_href && e.local_name().as_ref() == b"href" {
                    in_href = false;
                    hrefs.push(href_text.trim().to_string());
                    continue;
                }
                hash.update(b"</");
                Digest::update(&mut hash, &*e as &[u8]);
            }
            Event::Empty(e) => {
                if !root_seen {
                    return None;
                }
                hash.update(b"<");
                Digest::update(&mut hash, &*e as &[u8]);
                hash.update(b"/>");
            }
            Event::Text(t) => {
                if in_href {
                    href_text.push_str(&t.decode().ok()?);
                } else if !t.iter().all(u8::is_ascii_whitespace) {
                    Digest::update(&mut hash, &*t as &[u8]);
                }
            }
            Event::GeneralRef(g) if in_href => {
                let name = g.decode().ok()?;
                let ch = quick_xml::escape::unescape(&format!("&{name};"))
                    .ok()?
                    .into_owned();
                href_text.push_str(&ch);
            }
            Event::GeneralRef(g) => {
                Digest::update(&mut hash, b"&");
                Digest::update(&mut hash, &*g as &[u8]);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    (!hrefs.is_empty()).then(|| Multiget {
        hrefs,
        signature: hash.finalize().into(),
    })
}

/// Percent-decoded form of an href path, so `a%40b.ics` and `a@b.ics` meet.
pub fn normal(href: &str) -> String {
    percent_encoding::percent_decode_str(href)
        .decode_utf8_lossy()
        .into_owned()
}

/// Split a rewritten multistatus into (href, `<d:response>…</d:response>`) pieces; `None`
/// when it is not in the rewriter's standard shape (then nothing is kept).
pub fn split_response(body: &[u8]) -> Option<Vec<(String, Bytes)>> {
    let text = std::str::from_utf8(body).ok()?;
    let head = header();
    let rest = text.strip_prefix(head.as_str())?;
    let rest = rest.strip_suffix(FOOTER)?;
    let mut out = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let after_open = s.strip_prefix(OPEN)?;
        let end = after_open.find(CLOSE)?;
        let inner = &after_open[..end];
        // A response nested in a response cannot happen in a multistatus; refuse if it does.
        if inner.contains(OPEN) {
            return None;
        }
        let h0 = inner.strip_prefix("<d:href>")?;
        let h1 = h0.find("</d:href>")?;
        let href = quick_xml::escape::unescape(&h0[..h1]).ok()?.into_owned();
        let whole = &s[..OPEN.len() + end + CLOSE.len()];
        out.push((normal(&href), Bytes::copy_from_slice(whole.as_bytes())));
        s = &s[OPEN.len() + end + CLOSE.len()..];
    }
    Some(out)
}

/// The ETag a rewritten `DAV:response` gives its object (a 200 `getetag`), if any.
pub fn etag_of(piece: &str) -> Option<String> {
    const ETAG_OPEN: &str = "<d:getetag>";
    let start = piece.find(ETAG_OPEN)? + ETAG_OPEN.len();
    let len = piece[start..].find("</d:getetag>")?;
    let etag = quick_xml::escape::unescape(&piece[start..start + len]).ok()?;
    let etag = etag.trim();
    (!etag.is_empty()).then(|| etag.to_string())
}

/// (href, ETag) of every object a rewritten multistatus lists with its ETag: a PROPFIND
/// listing, a sync-collection or calendar-query answer, a multiget answer. Empty when the
/// body is not in the rewriter's standard shape.
pub fn listed_etags(body: &[u8]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(mut s) = std::str::from_utf8(body)
        .ok()
        .and_then(|t| t.strip_prefix(header().as_str()))
    else {
        return out;
    };
    while let Some(i) = s.find(OPEN) {
        let after = &s[i + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else { break };
        let inner = &after[..end];
        s = &after[end + CLOSE.len()..];
        let href = inner
            .strip_prefix("<d:href>")
            .and_then(|h| Some(&h[..h.find("</d:href>")?]))
            .and_then(|h| quick_xml::escape::unescape(h).ok());
        if let (Some(href), Some(etag)) = (href, etag_of(inner)) {
            out.push((normal(&href), etag));
        }
    }
    out
}

/// A multistatus made of `pieces`, in order.
pub fn assemble(pieces: &[Bytes]) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(pieces.len() + 2);
    out.push(Bytes::from(header()));
    out.extend(pieces.iter().cloned());
    out.push(Bytes::from_static(FOOTER.as_bytes()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_the_same_props_share_a_signature_whatever_the_hrefs() {
        let a = br#"<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><D:href>/dav/a/calendars/h/1.ics</D:href><D:href>/dav/a/calendars/h/a%40b.ics</D:href></C:calendar-multiget>"#;
        let b = br#"<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop>
            <D:href>/dav/a/calendars/h/2.ics</D:href></C:calendar-multiget>"#;
        let c = br#"<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop><D:href>/dav/a/calendars/h/2.ics</D:href></C:calendar-multiget>"#;
        let (a, b, c) = (
            parse_request(a).unwrap(),
            parse_request(b).unwrap(),
            parse_request(c).unwrap(),
        );
        assert_eq!(
            a.hrefs,
            ["/dav/a/calendars/h/1.ics", "/dav/a/calendars/h/a%40b.ics"]
        );
        assert_eq!(a.signature, b.signature);
        assert_ne!(a.signature, c.signature);
        assert!(parse_request(br#"<D:propfind xmlns:D="DAV:"><D:prop/></D:propfind>"#).is_none());
        assert!(parse_request(b"<not xml").is_none());
    }

    #[test]
    fn listings_name_etags_even_with_a_sync_token_after_the_responses() {
        let body = format!(
            "{}<d:response><d:href>/dav/a/calendars/h/x%20y.ics</d:href><d:propstat><d:prop><d:getcontenttype>text/calendar</d:getcontenttype><d:getetag>&quot;e&amp;1&quot;</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><d:displayname/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response><d:response><d:href>/dav/a/calendars/h/gone.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response><d:response><d:href>/dav/a/calendars/h/</d:href><d:propstat><d:prop><d:getetag/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response><d:sync-token>t1</d:sync-token>{FOOTER}",
            header()
        );
        assert_eq!(
            listed_etags(body.as_bytes()),
            vec![(
                "/dav/a/calendars/h/x y.ics".to_string(),
                "\"e&1\"".to_string()
            )]
        );
        // Not the rewriter's shape (another prefix for DAV:): nothing is believed.
        assert!(listed_etags(
            br#"<m:multistatus xmlns:m="DAV:" xmlns:d="urn:x"><m:response><d:href>/a</d:href><d:getetag>"1"</d:getetag></m:response></m:multistatus>"#
        )
        .is_empty());
    }

    #[test]
    fn a_rewritten_answer_splits_into_pieces_that_reassemble_to_it() {
        let body = format!(
            "{}<d:response><d:href>/dav/a/calendars/h/1.ics</d:href><d:propstat><d:prop><d:getetag>\"1\"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response><d:response><d:href>/dav/a/calendars/h/a%40b&amp;c.ics</d:href><d:status>HTTP/1.1 404 Not Found</d:status></d:response>{FOOTER}",
            header()
        );
        let pieces = split_response(body.as_bytes()).unwrap();
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].0, "/dav/a/calendars/h/1.ics");
        assert_eq!(pieces[1].0, "/dav/a/calendars/h/a@b&c.ics");
        let parts: Vec<Bytes> = pieces.iter().map(|p| p.1.clone()).collect();
        assert_eq!(assemble(&parts).concat(), body.as_bytes());
        // Listed ETags: the 200 getetag, none for the 404 response.
        assert_eq!(
            listed_etags(body.as_bytes()),
            vec![("/dav/a/calendars/h/1.ics".to_string(), "\"1\"".to_string())]
        );
        // Anything not in the standard shape is not split.
        assert!(split_response(b"<d:multistatus/>").is_none());
        assert!(
            split_response(format!("{}<d:response><d:href>x</d:href>", header()).as_bytes())
                .is_none()
        );
    }
}
