//! The DAV methods of the bridge's own calendars: OPTIONS, PROPFIND, REPORT
//! (calendar-query, calendar-multiget, sync-collection), GET and HEAD; every write is refused
//! with `403` and `DAV:need-privileges`.

use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};

use crate::accounts::Account;
use crate::body::{empty, full, Body, RequestBody};
use crate::dav::discovery::{multistatus, DAV_CLASSES};
use crate::dav::error::DavError;
use crate::dav::proxy::{parse_body, read_body};
use crate::dav::virtual_cal::{collection_path, current, ics::Object, Calendar, Which};
use crate::dav::Dav;
use crate::xml::build::{escape_text, MultistatusBuilder};
use crate::xml::inspect::{inspect, PropRequest, RequestInfo};
use crate::xml::names::{APPLE_ICAL, CALDAV, CALSERVER, DAV};

/// The start of every sync token of these calendars (the rest is the calendar's tag).
pub const TOKEN_PREFIX: &str = "urn:icloud-bridge:sync:";
const ALLOW: &str = "OPTIONS, GET, HEAD, PROPFIND, REPORT";
const ICS_TYPE: &str = "text/calendar; charset=utf-8";

/// Answer one request under a bridge calendar (`sub`: "" for the collection, else an
/// object's name).
pub async fn handle(
    dav: &Dav,
    account: &Arc<Account>,
    which: Which,
    sub: &str,
    req: Request<RequestBody>,
    public_origin: &str,
) -> Result<Response<Body>, DavError> {
    let method = req.method().as_str().to_string();
    match method.as_str() {
        "OPTIONS" => return Ok(options()),
        "GET" | "HEAD" | "PROPFIND" | "REPORT" => {}
        _ => return Err(read_only(which)),
    }
    let (parts, body) = req.into_parts();
    let (body, _reserved) = read_body(dav, &parts, body).await?;
    let cal = current(dav, account, which, public_origin).await?;
    let at = At {
        account: account.name(),
        which,
        cal: &cal,
        base: collection_path(account.name(), which),
    };
    let object = match sub {
        "" => None,
        name => Some(
            at.object(name)
                .ok_or_else(|| DavError::NotFound(format!("{} has no {name}", at.base)))?,
        ),
    };
    let mut resp = match method.as_str() {
        "PROPFIND" => {
            let props = props_asked(&body).await?;
            let depth0 = parts
                .headers
                .get("depth")
                .is_some_and(|d| d.as_bytes().trim_ascii() == b"0");
            let mut ms = MultistatusBuilder::new();
            match object {
                Some(o) => at.add_object(&mut ms, o, &props),
                None => {
                    at.add_collection(&mut ms, &props);
                    if !depth0 {
                        for o in &cal.objects {
                            at.add_object(&mut ms, o, &props);
                        }
                    }
                }
            }
            multistatus(ms.finish())
        }
        "REPORT" => {
            let info = parse_body(&body, inspect).await?.map_err(|e| {
                DavError::BadRequest(format!("the request body is not well-formed XML: {e}"))
            })?;
            at.report(&info, &body, object)?
        }
        _ => at.get(object, &parts.headers, method == "HEAD"),
    };
    if let Some(why) = &cal.stale {
        if let Ok(v) = HeaderValue::from_str(why) {
            resp.headers_mut().insert("x-icloud-bridge-stale", v);
        }
    }
    Ok(resp)
}

fn options() -> Response<Body> {
    let mut r = Response::new(empty());
    let h = r.headers_mut();
    h.insert("dav", HeaderValue::from_static(DAV_CLASSES));
    h.insert(http::header::ALLOW, HeaderValue::from_static(ALLOW));
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// The answer to any write: 403 with `DAV:need-privileges` and a reason phrase that says why.
fn read_only(which: Which) -> DavError {
    DavError::Refused {
        status: StatusCode::FORBIDDEN,
        condition: Some((DAV, "need-privileges")),
        message: which.read_only().to_string(),
        short: "Read-only calendar",
    }
}

/// The properties a PROPFIND body asks for (none: all).
async fn props_asked(body: &bytes::Bytes) -> Result<PropRequest, DavError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(PropRequest::AllProp);
    }
    let info = parse_body(body, inspect).await?.map_err(|e| {
        DavError::BadRequest(format!("the request body is not well-formed XML: {e}"))
    })?;
    Ok(info.props)
}

/// One calendar as one request sees it.
struct At<'a> {
    account: &'a str,
    which: Which,
    cal: &'a Calendar,
    /// The collection's local path.
    base: String,
}

const COLLECTION_DEFAULT: &[(&str, &str)] = &[
    (DAV, "resourcetype"),
    (DAV, "displayname"),
    (CALSERVER, "getctag"),
    (DAV, "sync-token"),
    (CALDAV, "supported-calendar-component-set"),
    (DAV, "current-user-privilege-set"),
];
const OBJECT_DEFAULT: &[(&str, &str)] = &[
    (DAV, "getetag"),
    (DAV, "getcontenttype"),
    (DAV, "resourcetype"),
];

/// The properties to answer: those asked, or the defaults.
fn wanted(props: &PropRequest, default: &[(&str, &str)]) -> Vec<(String, String)> {
    match props {
        PropRequest::Props(p) => p.clone(),
        _ => default
            .iter()
            .map(|(n, l)| (n.to_string(), l.to_string()))
            .collect(),
    }
}

fn href(path: &str) -> String {
    format!("<d:href>{}</d:href>", escape_text(path))
}

impl At<'_> {
    fn object(&self, name: &str) -> Option<&Object> {
        self.cal.objects.iter().find(|o| o.name == name)
    }

    /// The object an href names (a path or an absolute URL of this collection).
    fn object_at(&self, h: &str) -> Option<&Object> {
        let path = crate::dav::paths::raw_path(h)?;
        self.object(path.strip_prefix(self.base.as_str())?)
    }

    fn respond(
        ms: &mut MultistatusBuilder,
        path: &str,
        props: &PropRequest,
        default: &[(&str, &str)],
        value: impl Fn(&str, &str) -> Option<String>,
    ) {
        let wanted = wanted(props, default);
        let mut found: Vec<(&str, &str, String)> = Vec::new();
        let mut missing: Vec<(&str, &str)> = Vec::new();
        for (ns, local) in &wanted {
            match value(ns, local) {
                Some(v) if *props != PropRequest::PropName => {
                    found.push((ns.as_str(), local.as_str(), v))
                }
                Some(_) => found.push((ns.as_str(), local.as_str(), String::new())),
                None => missing.push((ns.as_str(), local.as_str())),
            }
        }
        ms.response(path, &found, &missing);
    }

    fn add_collection(&self, ms: &mut MultistatusBuilder, props: &PropRequest) {
        add_collection(ms, self.account, self.which, self.cal, props);
    }

    fn add_object(&self, ms: &mut MultistatusBuilder, o: &Object, props: &PropRequest) {
        let path = format!("{}{}", self.base, o.name);
        Self::respond(ms, &path, props, OBJECT_DEFAULT, |ns, local| {
            Some(match (ns, local) {
                (DAV, "getetag") => escape_text(&o.etag).into_owned(),
                (DAV, "getcontenttype") => format!("{ICS_TYPE}; component=vevent"),
                (DAV, "resourcetype") => String::new(),
                (DAV, "getcontentlength") => o.ics.len().to_string(),
                (CALDAV, "calendar-data") => escape_text(&o.ics).into_owned(),
                (DAV, "current-user-privilege-set") => {
                    "<d:privilege><d:read/></d:privilege>".to_string()
                }
                _ => return None,
            })
        });
    }

    fn report(
        &self,
        info: &RequestInfo,
        body: &[u8],
        object: Option<&Object>,
    ) -> Result<Response<Body>, DavError> {
        let props = match &info.props {
            PropRequest::None => PropRequest::Props(vec![(DAV.into(), "getetag".into())]),
            p => p.clone(),
        };
        let mut ms = MultistatusBuilder::new();
        match (info.root.0.as_str(), info.root.1.as_str()) {
            (CALDAV, "calendar-query") => {
                // Loosely: a query for other components than events gets none; every event
                // matches otherwise (time ranges included).
                let text = String::from_utf8_lossy(body).to_ascii_uppercase();
                let others = (text.contains("VTODO") || text.contains("VJOURNAL"))
                    && !text.contains("VEVENT");
                if !others {
                    let all: Vec<&Object> = match object {
                        Some(o) => vec![o],
                        None => self.cal.objects.iter().collect(),
                    };
                    for o in all {
                        self.add_object(&mut ms, o, &props);
                    }
                }
            }
            (CALDAV, "calendar-multiget") => {
                for h in &info.hrefs {
                    match self.object_at(h) {
                        Some(o) => self.add_object(&mut ms, o, &props),
                        None => ms.response_status(h, StatusCode::NOT_FOUND),
                    }
                }
            }
            (DAV, "sync-collection") => {
                let now = self.cal.sync_token();
                match info.sync_token.as_deref() {
                    None | Some("") => {
                        for o in &self.cal.objects {
                            self.add_object(&mut ms, o, &props);
                        }
                    }
                    Some(t) if t == now => {}
                    Some(_) => {
                        return Err(DavError::Refused {
                            status: StatusCode::FORBIDDEN,
                            condition: Some((DAV, "valid-sync-token")),
                            message: "This calendar changed since that sync token; sync it again from the start.".into(),
                            short: "Sync token no longer valid",
                        })
                    }
                }
                ms.sync_token(&now);
            }
            (ns, local) => {
                return Err(DavError::Refused {
                    status: StatusCode::FORBIDDEN,
                    condition: Some((DAV, "supported-report")),
                    message: format!("This calendar does not answer the REPORT {{{ns}}}{local}; it answers calendar-query, calendar-multiget and sync-collection."),
                    short: "Report not supported",
                })
            }
        }
        Ok(multistatus(ms.finish()))
    }

    /// GET or HEAD: one object, or the whole calendar for the collection; `304` when the
    /// client's `If-None-Match` names its ETag.
    fn get(
        &self,
        object: Option<&Object>,
        headers: &http::HeaderMap,
        head: bool,
    ) -> Response<Body> {
        let (text, etag) = match object {
            Some(o) => (o.ics.clone(), o.etag.clone()),
            None => (
                super::ics::whole(&self.cal.objects),
                format!("\"{}\"", self.cal.tag),
            ),
        };
        let unchanged = headers
            .get(http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().trim_start_matches("W/") == etag)
            });
        let mut r = if unchanged {
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            let len = text.len();
            let mut r = Response::new(if head { empty() } else { full(text) });
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(ICS_TYPE),
            );
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
            r
        };
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(http::header::ETAG, v);
        }
        r
    }
}

/// The collection's `<d:response>` (also in the calendar-home listing); a calendar with an
/// empty tag (none built yet) leaves out its tags.
pub fn add_collection(
    ms: &mut MultistatusBuilder,
    account: &str,
    which: Which,
    cal: &Calendar,
    props: &PropRequest,
) {
    let principal = format!("/dav/{account}/principal/");
    let base = collection_path(account, which);
    let tagged = !cal.tag.is_empty();
    At::respond(ms, &base, props, COLLECTION_DEFAULT, |ns, local| {
        Some(match (ns, local) {
            (DAV, "resourcetype") => "<d:collection/><cal:calendar/>".to_string(),
            (DAV, "displayname") => which.displayname().to_string(),
            (CALSERVER, "getctag") if tagged => escape_text(&cal.tag).into_owned(),
            (DAV, "sync-token") if tagged => escape_text(&cal.sync_token()).into_owned(),
            (CALDAV, "supported-calendar-component-set") => {
                "<cal:comp name=\"VEVENT\"/>".to_string()
            }
            (DAV, "current-user-privilege-set") => {
                "<d:privilege><d:read/></d:privilege>".to_string()
            }
            (DAV, "supported-report-set") => [
                "<cal:calendar-query/>",
                "<cal:calendar-multiget/>",
                "<d:sync-collection/>",
            ]
            .iter()
            .map(|r| format!("<d:supported-report><d:report>{r}</d:report></d:supported-report>"))
            .collect(),
            (DAV, "owner") | (DAV, "current-user-principal") => href(&principal),
            (APPLE_ICAL, "calendar-color") => which.color().to_string(),
            (DAV, "getcontenttype") => ICS_TYPE.to_string(),
            _ => return None,
        })
    });
}
