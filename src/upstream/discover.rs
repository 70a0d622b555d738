//! Learning an account's upstream layout the way iCloud wants it found: PROPFIND the front
//! host for `current-user-principal`, then the principal for the home sets (absolute URLs on
//! partition hosts for iCloud; relative paths on most other servers).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::upstream::client::{Purpose, Upstream, UpstreamRequest};
use crate::upstream::error::UpstreamError;
use crate::upstream::gate::Gate;
use crate::upstream::response::BodyError;
use crate::upstream::service::Service;
use crate::xml::guard::{Items, Scope};

const DAV: &[u8] = b"DAV:";
/// Largest Depth 0 PROPFIND answer read (a principal's or a home's is a few kilobytes).
const DISCOVERY_MAX_BYTES: usize = 1024 * 1024;
const CALDAV: &[u8] = b"urn:ietf:params:xml:ns:caldav";
const CARDDAV: &[u8] = b"urn:ietf:params:xml:ns:carddav";

/// What discovery learned about one account upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    pub cal_principal: Url,
    pub cal_home: Url,
    pub card_principal: Url,
    pub card_home: Url,
    pub displayname: Option<String>,
    /// `calendar-user-address-set` hrefs (mailto:...).
    pub addresses: Vec<String>,
}

impl Learned {
    /// The home-set URL of a DAV service.
    pub fn home(&self, service: Service) -> &Url {
        match service {
            Service::Carddav => &self.card_home,
            _ => &self.cal_home,
        }
    }
}

const PRINCIPAL_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>"#;
const CAL_HOME_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><c:calendar-home-set/><c:calendar-user-address-set/><d:displayname/></d:prop></d:propfind>"#;
const CARD_HOME_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:prop><a:addressbook-home-set/></d:prop></d:propfind>"#;

/// PROPFIND Depth 0 with `body`; the final URL and the 207 body (anything else is an error).
pub async fn propfind0<G: Gate>(
    upstream: &Upstream,
    account: &G,
    service: Service,
    url: Url,
    body: &'static str,
    purpose: Purpose,
) -> Result<(Url, Bytes), UpstreamError> {
    let mut headers = HeaderMap::new();
    headers.insert("depth", HeaderValue::from_static("0"));
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    let method = Method::from_bytes(b"PROPFIND").map_err(|_| UpstreamError::BadResponse {
        detail: "PROPFIND".into(),
    })?;
    let resp = upstream
        .send(
            account,
            service,
            UpstreamRequest {
                method,
                url,
                headers,
                body: Bytes::from_static(body.as_bytes()),
                purpose,
            },
        )
        .await?;
    let final_url = resp.url().clone();
    let status = resp.status().as_u16();
    let bytes =
        resp.bytes_up_to(DISCOVERY_MAX_BYTES)
            .await
            .map_err(|e| UpstreamError::BadResponse {
                detail: match e {
                    BodyError::TooLarge(_) => format!("the discovery answer was {e}"),
                    _ => "the discovery answer was cut off".into(),
                },
            })?;
    if status != 207 {
        return Err(UpstreamError::BadResponse {
            detail: format!("discovery PROPFIND answered {status}, expected 207"),
        });
    }
    Ok((final_url, bytes))
}

/// Find the principal of `service`: PROPFIND on the front URL, then `/.well-known/...`.
async fn principal<G: Gate>(
    upstream: &Upstream,
    account: &G,
    service: Service,
) -> Result<Url, UpstreamError> {
    let front = upstream.front(service).clone();
    let mut candidates = vec![front.clone()];
    let wk = match service {
        Service::Carddav => "/.well-known/carddav",
        _ => "/.well-known/caldav",
    };
    if let Ok(u) = front.join(wk) {
        candidates.push(u);
    }
    let mut last = None;
    for url in candidates {
        match propfind0(
            upstream,
            account,
            service,
            url,
            PRINCIPAL_BODY,
            Purpose::Discovery,
        )
        .await
        {
            Ok((base, body)) => {
                if let Some(h) = first_href_under(&body, DAV, b"current-user-principal") {
                    if let Ok(u) = base.join(&h) {
                        return learnable(upstream, service, u, "principal");
                    }
                }
                last = Some(UpstreamError::BadResponse {
                    detail: "the server named no current-user-principal".into(),
                });
            }
            Err(e @ UpstreamError::BadResponse { .. }) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(UpstreamError::BadResponse {
        detail: "discovery failed".into(),
    }))
}

/// Learn principal and home sets for both DAV services.
pub async fn learn<G: Gate>(upstream: &Upstream, account: &G) -> Result<Learned, UpstreamError> {
    let cal_principal = principal(upstream, account, Service::Caldav).await?;
    let (base, body) = propfind0(
        upstream,
        account,
        Service::Caldav,
        cal_principal.clone(),
        CAL_HOME_BODY,
        Purpose::Discovery,
    )
    .await?;
    let cal_home = first_href_under(&body, CALDAV, b"calendar-home-set")
        .and_then(|h| base.join(&h).ok())
        .ok_or_else(|| UpstreamError::BadResponse {
            detail: "the principal named no calendar-home-set".into(),
        })?;
    let cal_home = learnable(upstream, Service::Caldav, cal_home, "calendar home")?;
    let addresses = hrefs_under(&body, CALDAV, b"calendar-user-address-set");
    let displayname = text_of(&body, DAV, b"displayname").filter(|s| !s.trim().is_empty());

    let card_principal = principal(upstream, account, Service::Carddav).await?;
    let (base, body) = propfind0(
        upstream,
        account,
        Service::Carddav,
        card_principal.clone(),
        CARD_HOME_BODY,
        Purpose::Discovery,
    )
    .await?;
    let card_home = first_href_under(&body, CARDDAV, b"addressbook-home-set")
        .and_then(|h| base.join(&h).ok())
        .ok_or_else(|| UpstreamError::BadResponse {
            detail: "the principal named no addressbook-home-set".into(),
        })?;
    let card_home = learnable(upstream, Service::Carddav, card_home, "address-book home")?;
    Ok(Learned {
        cal_principal,
        cal_home: with_slash(cal_home),
        card_principal,
        card_home: with_slash(card_home),
        displayname,
        addresses,
    })
}

/// A URL an upstream answer named, if the credential may follow it there (see
/// [`Upstream::learnable`]): a home on plain http behind an https upstream is refused.
fn learnable(
    upstream: &Upstream,
    service: Service,
    url: Url,
    what: &str,
) -> Result<Url, UpstreamError> {
    if upstream.learnable(service, &url) {
        Ok(url)
    } else {
        tracing::warn!(
            service = service.as_str(),
            scheme = url.scheme(),
            "discovery named a {what} the password may not be sent to"
        );
        Err(UpstreamError::BadResponse {
            detail: format!(
                "it named a {what} over {}, where the bridge does not send the password",
                url.scheme()
            ),
        })
    }
}

/// Ask Apple whether the credential still works, with a PROPFIND of the learned principal
/// (or the front URL before anything is learned): its answer, like any DAV answer, judges
/// the password. Used when something that does not judge (a photo) was refused.
pub async fn probe<G: Gate>(
    upstream: &Upstream,
    account: &G,
    service: Service,
) -> Result<(), UpstreamError> {
    let url = match account.learned() {
        Some(l) if service == Service::Carddav => l.card_principal.clone(),
        Some(l) => l.cal_principal.clone(),
        None => upstream.front(service).clone(),
    };
    propfind0(
        upstream,
        account,
        service,
        url,
        PRINCIPAL_BODY,
        Purpose::Dav,
    )
    .await
    .map(|_| ())
}

fn with_slash(mut u: Url) -> Url {
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u
}

/// All `DAV:href` texts found inside elements named (`ns`, `local`).
pub fn hrefs_under(xml: &[u8], ns: &[u8], local: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    walk(xml, |path, text| {
        let inside = path.iter().any(|(n, l)| n == ns && l == local);
        let in_href = path.last().map(|(n, l)| n == DAV && l == b"href") == Some(true);
        if inside && in_href {
            out.push(text.trim().to_string());
        }
    });
    out
}

/// The first `DAV:href` inside (`ns`, `local`), if any.
pub fn first_href_under(xml: &[u8], ns: &[u8], local: &[u8]) -> Option<String> {
    hrefs_under(xml, ns, local)
        .into_iter()
        .find(|h| !h.is_empty())
}

/// The text of the first element (`ns`, `local`).
pub fn text_of(xml: &[u8], ns: &[u8], local: &[u8]) -> Option<String> {
    let mut found = None;
    walk(xml, |path, text| {
        if found.is_none() && path.last().map(|(n, l)| n == ns && l == local) == Some(true) {
            found = Some(text.to_string());
        }
    });
    found
}

/// Walk an XML document, calling `f(element path, text)` for each element's complete
/// text content (entity references resolved). Malformed input simply ends the walk.
fn walk(xml: &[u8], mut f: impl FnMut(&[(Vec<u8>, Vec<u8>)], &str)) {
    let mut reader = NsReader::from_reader(xml);
    let mut path: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut text = String::new();
    // Bounded like every XML reader of the bridge (a hostile answer ends the walk).
    let mut scope = Scope::new(Items::unbounded());
    loop {
        let pos = reader.buffer_position();
        match reader.read_resolved_event() {
            Ok((_, Event::Empty(e))) => {
                if scope.open(&e, pos).is_err() {
                    break;
                }
                scope.close();
            }
            Ok((ns, Event::Start(e))) => {
                if scope.open(&e, pos).is_err() {
                    break;
                }
                let ns = match ns {
                    ResolveResult::Bound(n) => n.as_ref().to_vec(),
                    _ => Vec::new(),
                };
                path.push((ns, e.local_name().as_ref().to_vec()));
                text.clear();
            }
            Ok((_, Event::Text(t))) => {
                if let Ok(s) = t.xml_content() {
                    text.push_str(&s);
                }
            }
            Ok((_, Event::CData(t))) => {
                text.push_str(&String::from_utf8_lossy(&t));
            }
            Ok((_, Event::GeneralRef(r))) => {
                if let Ok(name) = r.decode() {
                    if let Ok(s) = quick_xml::escape::unescape(&format!("&{name};")) {
                        text.push_str(&s);
                    }
                }
            }
            Ok((_, Event::End(_))) => {
                scope.close();
                f(&path, &text);
                text.clear();
                path.pop();
            }
            Ok((_, Event::Eof)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ICLOUD: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<multistatus xmlns="DAV:">
 <response xmlns="DAV:">
  <href>/1234567890/principal/</href>
  <propstat>
   <prop>
    <calendar-home-set xmlns="urn:ietf:params:xml:ns:caldav"><href xmlns="DAV:">https://p42-caldav.icloud.com:443/1234567890/calendars/</href></calendar-home-set>
    <calendar-user-address-set xmlns="urn:ietf:params:xml:ns:caldav"><href preferred="1" xmlns="DAV:">mailto:alice@icloud.com</href><href xmlns="DAV:">/1234567890/principal/</href></calendar-user-address-set>
    <displayname xmlns="DAV:">Alice &amp; Co</displayname>
   </prop>
   <status>HTTP/1.1 200 OK</status>
  </propstat>
 </response>
</multistatus>"#;

    #[test]
    fn finds_icloud_home_set_in_default_namespace_style() {
        assert_eq!(
            first_href_under(ICLOUD.as_bytes(), CALDAV, b"calendar-home-set").as_deref(),
            Some("https://p42-caldav.icloud.com:443/1234567890/calendars/")
        );
        assert_eq!(
            hrefs_under(ICLOUD.as_bytes(), CALDAV, b"calendar-user-address-set"),
            vec!["mailto:alice@icloud.com", "/1234567890/principal/"]
        );
        assert_eq!(
            text_of(ICLOUD.as_bytes(), DAV, b"displayname").as_deref(),
            Some("Alice & Co")
        );
    }

    #[test]
    fn finds_prefixed_style_too() {
        let x = r#"<D:multistatus xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:response><D:href>/test/</D:href><D:propstat><D:prop><D:current-user-principal><D:href>/test/</D:href></D:current-user-principal></D:prop></D:propstat></D:response></D:multistatus>"#;
        assert_eq!(
            first_href_under(x.as_bytes(), DAV, b"current-user-principal").as_deref(),
            Some("/test/")
        );
    }

    #[test]
    fn malformed_input_finds_nothing_without_panicking() {
        assert_eq!(
            first_href_under(b"<a><b>", DAV, b"current-user-principal"),
            None
        );
        assert_eq!(first_href_under(b"", DAV, b"x"), None);
    }
}
