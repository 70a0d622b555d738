//! Discovery answered locally: the root, `/.well-known/*`, `/dav/`, the principal, and
//! OPTIONS on them and on the home sets. Built only from what the bridge already knows, so
//! clients can log in (and read the explanation) while iCloud refuses.

use http::{HeaderValue, Response, StatusCode};

use crate::accounts::Account;
use crate::body::{empty, full, Body};
use crate::xml::build::{escape_text, MultistatusBuilder};
use crate::xml::inspect::PropRequest;
use crate::xml::names::{CALDAV, CARDDAV, DAV};

/// The DAV compliance classes DAVx5 looks for before it accepts a principal.
pub const DAV_CLASSES: &str =
    "1, 2, 3, access-control, calendar-access, addressbook, extended-mkcol";
const ALLOW_LOCAL: &str = "OPTIONS, GET, HEAD, PROPFIND, REPORT";
const ALLOW_HOME: &str =
    "OPTIONS, GET, HEAD, PROPFIND, PROPPATCH, REPORT, MKCALENDAR, MKCOL, DELETE, PUT, MOVE, COPY";

/// OPTIONS answered by the bridge itself.
pub fn options(home: bool) -> Response<Body> {
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert("dav", HeaderValue::from_static(DAV_CLASSES));
    h.insert(
        http::header::ALLOW,
        HeaderValue::from_static(if home { ALLOW_HOME } else { ALLOW_LOCAL }),
    );
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// Which local resource a PROPFIND names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `/`, `/.well-known/*`, `/dav/`, `/dav/<account>/`: a plain collection that points at
    /// the principal.
    Root,
    Principal,
}

/// PROPFIND on a local discovery resource: a 207 with what was asked for.
pub fn propfind(
    account: &Account,
    resource: Resource,
    href: &str,
    props: &PropRequest,
    depth1: bool,
) -> Response<Body> {
    let mut ms = MultistatusBuilder::new();
    add_response(&mut ms, account, resource, href, props);
    if depth1 && resource == Resource::Root && href == format!("/dav/{}/", account.name()) {
        let p = format!("/dav/{}/principal/", account.name());
        add_response(&mut ms, account, Resource::Principal, &p, props);
    }
    multistatus(ms.finish())
}

pub fn multistatus(body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::MULTI_STATUS;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    r
}

fn add_response(
    ms: &mut MultistatusBuilder,
    account: &Account,
    resource: Resource,
    href: &str,
    props: &PropRequest,
) {
    let wanted: Vec<(String, String)> = match props {
        PropRequest::Props(p) => p.clone(),
        PropRequest::PropName | PropRequest::AllProp | PropRequest::None => default_props(),
    };
    let mut found: Vec<(&str, &str, String)> = Vec::new();
    let mut missing: Vec<(&str, &str)> = Vec::new();
    for (ns, local) in &wanted {
        match value(account, resource, ns, local) {
            Some(v) => found.push((ns.as_str(), local.as_str(), v)),
            None => missing.push((ns.as_str(), local.as_str())),
        }
    }
    ms.response(href, &found, &missing);
}

fn default_props() -> Vec<(String, String)> {
    [
        (DAV, "resourcetype"),
        (DAV, "displayname"),
        (DAV, "current-user-principal"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect()
}

fn href(path: &str) -> String {
    format!("<d:href>{}</d:href>", escape_text(path))
}

/// The value of one property, as an XML fragment using the standard prefixes.
fn value(account: &Account, resource: Resource, ns: &str, local: &str) -> Option<String> {
    let a = account.name();
    let principal = format!("/dav/{a}/principal/");
    let v = match (ns, local) {
        (DAV, "resourcetype") => match resource {
            Resource::Root => "<d:collection/>".to_string(),
            Resource::Principal => "<d:collection/><d:principal/>".to_string(),
        },
        (DAV, "current-user-principal") => href(&principal),
        (DAV, "principal-URL") if resource == Resource::Principal => href(&principal),
        (DAV, "owner") if resource == Resource::Principal => href(&principal),
        (DAV, "principal-collection-set") => href(&format!("/dav/{a}/")),
        (DAV, "displayname") => {
            let name = account
                .learned()
                .and_then(|l| l.displayname.clone())
                .unwrap_or_else(|| a.to_string());
            escape_text(&name).into_owned()
        }
        (DAV, "current-user-privilege-set") => {
            "<d:privilege><d:read/></d:privilege><d:privilege><d:read-current-user-privilege-set/></d:privilege>".to_string()
        }
        (DAV, "supported-report-set") => String::new(),
        (CALDAV, "calendar-home-set") => href(&format!("/dav/{a}/calendars/")),
        (CARDDAV, "addressbook-home-set") => href(&format!("/dav/{a}/contacts/")),
        (CALDAV, "calendar-user-address-set") if resource == Resource::Principal => {
            let mut addrs: Vec<String> = account
                .learned()
                .map(|l| {
                    l.addresses
                        .iter()
                        .filter(|h| h.starts_with("mailto:"))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if addrs.is_empty() {
                addrs.push(format!("mailto:{}", account.apple_id()));
            }
            addrs.iter().map(|h| href(h)).collect()
        }
        (CALDAV, "calendar-user-type") if resource == Resource::Principal => {
            "INDIVIDUAL".to_string()
        }
        _ => return None,
    };
    Some(v)
}
