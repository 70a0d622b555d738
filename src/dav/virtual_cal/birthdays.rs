//! The Birthdays calendar: built from the account's contacts, asked through the proxy's own
//! pipeline (so the response cache answers repeated builds and serves stale copies while
//! iCloud fails), rebuilt only when an address book's CTag moves, and served from what was
//! last built while iCloud refuses.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::accounts::Account;
use crate::body::full;
use crate::cache::multiget;
use crate::dav::error::DavError;
use crate::dav::virtual_cal::{ics, Calendar};
use crate::dav::Dav;
use crate::upstream::discover::text_of;
use crate::upstream::error::UpstreamError;
use crate::upstream::service::Service;
use crate::xml::names::{CALSERVER, CARDDAV, KNOWN_DECLS};

const LIST_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:resourcetype/><cs:getctag/></d:prop></d:propfind>"#;
const QUERY_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><card:addressbook-query xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><card:address-data/></d:prop></card:addressbook-query>"#;

/// What was last built, per account.
#[derive(Default)]
pub struct Built(Mutex<HashMap<String, Arc<tokio::sync::Mutex<State>>>>);

/// One account's birthdays: per address book (its path under the contacts home) the CTag
/// it was built at and its events; the calendar made of them and when.
#[derive(Default)]
struct State {
    books: HashMap<String, (String, Vec<ics::Object>)>,
    last: Option<(Calendar, Instant)>,
}

impl Built {
    fn of(&self, account: &str) -> Arc<tokio::sync::Mutex<State>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(account.to_string())
            .or_default()
            .clone()
    }
}

/// The Birthdays calendar now: the last build while younger than `cache.fresh_secs`, else
/// built again (from cached answers where the cache has them); while iCloud refuses, the
/// last build marked stale.
pub async fn current(
    dav: &Dav,
    account: &Arc<Account>,
    public_origin: &str,
) -> Result<Calendar, DavError> {
    let state = dav.calendars.built.of(account.name());
    let mut state = state.lock().await;
    let fresh = std::time::Duration::from_secs(dav.calendars.fresh_secs);
    if let Some((cal, at)) = &state.last {
        if cal.stale.is_none() && at.elapsed() < fresh {
            return Ok(cal.clone());
        }
    }
    match build(dav, account, public_origin, &mut state).await {
        Ok(cal) => {
            state.last = Some((cal.clone(), Instant::now()));
            Ok(cal)
        }
        Err(DavError::Upstream(e)) if e.serve_stale() => match &state.last {
            Some((cal, _)) => {
                let mut cal = cal.clone();
                cal.stale = Some(e.state().as_str().to_string());
                Ok(cal)
            }
            None => Err(DavError::Upstream(e)),
        },
        Err(e) => Err(e),
    }
}

/// The calendar from the address books upstream lists now; a book whose CTag is the one
/// it was built at keeps its events without being asked for its cards.
async fn build(
    dav: &Dav,
    account: &Arc<Account>,
    public_origin: &str,
    state: &mut State,
) -> Result<Calendar, DavError> {
    let (listing, mut stale) = ask(dav, account, "PROPFIND", "", LIST_BODY, public_origin).await?;
    let prefix = format!("/dav/{}/contacts/", account.name());
    let mut books = HashMap::new();
    for (href, piece) in multiget::split_response(&listing).unwrap_or_default() {
        if !piece.windows(19).any(|w| w == b"<card:addressbook/>") {
            continue;
        }
        let Some(rest) = href.strip_prefix(&prefix) else {
            continue;
        };
        let ctag = text_of(&wrap(&piece), CALSERVER.as_bytes(), b"getctag").unwrap_or_default();
        let reuse = state
            .books
            .get(rest)
            .filter(|(c, _)| !ctag.is_empty() && *c == ctag && stale.is_none());
        let events = match reuse {
            Some((_, events)) => events.clone(),
            None => {
                let (answer, s) =
                    ask(dav, account, "REPORT", rest, QUERY_BODY, public_origin).await?;
                stale = stale.or(s);
                events_of(&answer)
            }
        };
        books.insert(rest.to_string(), (ctag, events));
    }
    let mut cal = Calendar::new(books.values().flat_map(|(_, e)| e.clone()).collect());
    if stale.is_none() {
        state.books = books;
    }
    cal.stale = stale;
    Ok(cal)
}

/// The events of every card in an addressbook-query answer.
fn events_of(answer: &[u8]) -> Vec<ics::Object> {
    multiget::split_response(answer)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(href, piece)| {
            let card = text_of(&wrap(&piece), CARDDAV.as_bytes(), b"address-data")?;
            ics::contact(&card, &href)
        })
        .flat_map(|c| ics::contact_events(&c))
        .collect()
}

/// A `<d:response>` piece as a document of its own (its prefixes declared).
fn wrap(piece: &[u8]) -> Vec<u8> {
    let mut doc = format!("<d:multistatus{KNOWN_DECLS}>").into_bytes();
    doc.extend_from_slice(piece);
    doc.extend_from_slice(b"</d:multistatus>");
    doc
}

type Asked<'a> =
    Pin<Box<dyn Future<Output = Result<(Bytes, Option<String>), DavError>> + Send + 'a>>;

/// One request to the contacts home through the proxy (`rest` under it, Depth 1): the 207
/// body and the stale mark the cache put on it, if any.
fn ask<'a>(
    dav: &'a Dav,
    account: &'a Arc<Account>,
    method: &'static str,
    rest: &'a str,
    body: &'static str,
    public_origin: &'a str,
) -> Asked<'a> {
    Box::pin(async move {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("/dav/{}/contacts/{rest}", account.name()))
            .header("depth", "1")
            .header("content-type", "application/xml; charset=utf-8")
            // Birthdays need no photos: none are fetched for this answer.
            .extension(crate::dav::photos::NoPhotos)
            .body(full(body))
            .map_err(|_| DavError::Internal("build a request for the contacts"))?;
        let resp =
            crate::dav::proxy::forward(dav, account, Service::Carddav, rest, req, public_origin)
                .await?;
        if resp.status() != http::StatusCode::MULTI_STATUS {
            return Err(DavError::Upstream(UpstreamError::BadResponse {
                detail: format!(
                    "it answered {} when the bridge listed the contacts for the Birthdays calendar",
                    resp.status().as_u16()
                ),
            }));
        }
        let stale = resp
            .headers()
            .get("x-icloud-bridge-stale")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                DavError::Upstream(UpstreamError::BadResponse {
                    detail: format!("its list of contacts was cut off ({e})"),
                })
            })?
            .to_bytes();
        Ok((bytes, stale))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_from_an_addressbook_query_answer() {
        let answer = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><d:multistatus{KNOWN_DECLS}>\
<d:response><d:href>/dav/alice/contacts/card/b.vcf</d:href><d:propstat><d:prop><d:getetag>\"1\"</d:getetag>\
<card:address-data>BEGIN:VCARD&#13;\nFN:Bob &amp; Co&#13;\nBDAY:--03-14&#13;\nEND:VCARD&#13;\n</card:address-data>\
</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response>\
<d:response><d:href>/dav/alice/contacts/card/n.vcf</d:href><d:propstat><d:prop>\
<card:address-data>BEGIN:VCARD\nFN:No date\nEND:VCARD\n</card:address-data>\
</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"
        );
        let ev = events_of(answer.as_bytes());
        assert_eq!(ev.len(), 1);
        assert!(
            ev[0].ics.contains("SUMMARY:Bob & Co's birthday"),
            "{}",
            ev[0].ics
        );
    }
}
