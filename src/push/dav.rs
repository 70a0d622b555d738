//! The DAV side of WebDAV-Push, around the DAV tree: `webdav-push` in OPTIONS, the
//! `transports`, `topic` and `supported-triggers` properties in PROPFIND answers, `POST` of
//! a `push-register` on a collection, `DELETE` of a registration URL, and the note of every
//! successful write for the worker. Everything else goes to [`crate::dav::handle`] as it is.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use crate::accounts::Account;
use crate::body::{empty, full, Body, RequestBody};
use crate::dav::paths::{self, Local};
use crate::dav::Dav;
use crate::push::store::{Coll, Registration, Upserted};
use crate::push::worker::{Change, Exclude};
use crate::push::{Push, NS};
use crate::upstream::service::Service;
use crate::xml::names::{CALDAV, CARDDAV, DAV};

/// A push-register is a few hundred bytes; more is refused.
const MAX_REGISTER_BYTES: usize = 16 * 1024;
/// Answers larger than this get no push properties (a home listing is a few KiB).
const MAX_LISTING: usize = 1 << 20;
/// Deepest element nesting read in a push-register.
const MAX_DEPTH: usize = 16;

/// The segment under `/dav/<account>/` that holds registration URLs.
const REG_SEGMENT: &str = "_push";

/// Serve one authenticated request of `login` on `account`'s DAV tree, with WebDAV-Push.
pub async fn serve(
    push: &Arc<Push>,
    dav: &Dav,
    account: &Arc<Account>,
    login: &str,
    req: Request<RequestBody>,
    public_origin: &str,
) -> Response<Body> {
    let path = req.uri().path();
    if let Some(id) = registration_id(path, account.name()) {
        return registration(push, account, login, id, req.method());
    }
    // Reads (GET, HEAD, REPORT) neither change nor list anything push adds to: straight on,
    // without working out which collection they name.
    let m = req.method().as_str();
    if !(m == "OPTIONS" || m == "PROPFIND" || is_write(m)) {
        return crate::dav::handle(dav, account, req, public_origin).await;
    }
    let Some(target) = Target::of(dav, account, path) else {
        return crate::dav::handle(dav, account, req, public_origin).await;
    };
    let method = req.method().clone();
    match method.as_str() {
        "POST" if target.is_collection() => {
            Box::pin(post(push, dav, account, login, target, req, public_origin)).await
        }
        "OPTIONS" if target.is_collection() => {
            let mut resp = crate::dav::handle(dav, account, req, public_origin).await;
            if resp.status().is_success() {
                advertise(&mut resp);
            }
            resp
        }
        "PROPFIND" => {
            let depth = req
                .headers()
                .get("depth")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("infinity")
                .trim()
                .to_string();
            let wanted = (target.is_home() && (depth == "0" || depth == "1"))
                || (target.is_collection() && depth == "0");
            let resp = crate::dav::handle(dav, account, req, public_origin).await;
            if wanted && resp.status() == StatusCode::MULTI_STATUS {
                return with_properties(push, account.name(), resp).await;
            }
            resp
        }
        m if is_write(m) => {
            let exclude = dont_notify(push, account.name(), login, req.headers());
            let dest = req
                .headers()
                .get("destination")
                .and_then(|d| d.to_str().ok())
                .and_then(crate::dav::paths::raw_path)
                .and_then(|p| Target::of(dav, account, p));
            let resp = crate::dav::handle(dav, account, req, public_origin).await;
            if resp.status().is_success() {
                let property = m == "PROPPATCH" && target.is_collection();
                for t in std::iter::once(target).chain(dest) {
                    if let Some(coll) = t.coll {
                        push.changed(Change {
                            coll,
                            property,
                            exclude: exclude.clone(),
                            token: None,
                        });
                    }
                }
            }
            resp
        }
        _ => crate::dav::handle(dav, account, req, public_origin).await,
    }
}

fn is_write(method: &str) -> bool {
    matches!(
        method,
        "PUT" | "DELETE" | "PROPPATCH" | "MOVE" | "COPY" | "POST" | "MKCOL" | "MKCALENDAR" | "ACL"
    )
}

/// What a request under a home names, for push purposes.
#[derive(Debug, Clone)]
struct Target {
    /// The collection it is in or is (`None` for the home itself).
    coll: Option<Coll>,
    /// Whether it names the collection itself (not a member).
    itself: bool,
}

impl Target {
    /// Under one of `account`'s homes, outside the bridge's own calendars.
    fn of(dav: &Dav, account: &Account, path: &str) -> Option<Target> {
        let Local::Home {
            account: a,
            service,
            rest,
        } = paths::parse(path)
        else {
            return None;
        };
        if a != account.name() || dav.calendars.which(service, rest).is_some() {
            return None;
        }
        let (seg, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if seg.is_empty() {
            return Some(Target {
                coll: None,
                itself: false,
            });
        }
        Some(Target {
            coll: Some(Coll {
                account: a.to_string(),
                home: paths::home_segment(service).to_string(),
                name: seg.to_string(),
            }),
            itself: tail.is_empty(),
        })
    }

    fn is_home(&self) -> bool {
        self.coll.is_none()
    }

    fn is_collection(&self) -> bool {
        self.coll.is_some() && self.itself
    }
}

/// `/dav/<account>/_push/<id>` → `id`.
fn registration_id<'a>(path: &'a str, account: &str) -> Option<&'a str> {
    let rest = path.strip_prefix("/dav/")?.strip_prefix(account)?;
    let id = rest
        .strip_prefix('/')?
        .strip_prefix(REG_SEGMENT)?
        .strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The registration URL of `id`, as clients get it in `Location`.
fn registration_url(public_origin: &str, account: &str, id: &str) -> String {
    format!("{public_origin}/dav/{account}/{REG_SEGMENT}/{id}")
}

/// DELETE of a registration URL: only the login that made it may remove it; anyone else
/// (and an unknown or expired one) gets 404.
fn registration(
    push: &Push,
    account: &Account,
    login: &str,
    id: &str,
    method: &Method,
) -> Response<Body> {
    if method != Method::DELETE {
        let mut r = status(StatusCode::METHOD_NOT_ALLOWED);
        r.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static("DELETE"));
        return r;
    }
    let live = push
        .store
        .get(id)
        .is_some_and(|r| r.expires > crate::push::now());
    if live && push.store.remove_own(id, account.name(), login) {
        tracing::info!(
            account = account.name(),
            login,
            "push registration removed by its device"
        );
        status(StatusCode::NO_CONTENT)
    } else {
        crate::body::text(StatusCode::NOT_FOUND, "no such push registration\n")
    }
}

fn status(s: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = s;
    r
}

/// Add `webdav-push` to an OPTIONS answer's `DAV` header.
fn advertise(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    let classes = h
        .get_all("dav")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let v = if classes.is_empty() {
        format!("{}, webdav-push", crate::dav::discovery::DAV_CLASSES)
    } else if classes.split(',').any(|c| c.trim() == "webdav-push") {
        return;
    } else {
        format!("{classes}, webdav-push")
    };
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert("dav", v);
    }
}

/// `Push-Dont-Notify`: `*`, or quoted registration URLs of this login's own registrations
/// (others, and anything invalid, are ignored).
fn dont_notify(push: &Push, account: &str, login: &str, headers: &http::HeaderMap) -> Exclude {
    let mut ids = HashSet::new();
    for v in headers.get_all("push-dont-notify") {
        let Ok(v) = v.to_str() else { continue };
        for item in v.split(',') {
            let item = item.trim();
            if item == "*" {
                return Exclude::Everybody;
            }
            let Some(url) = item.strip_prefix('"').and_then(|i| i.strip_suffix('"')) else {
                continue;
            };
            let Some(path) = paths::raw_path(url) else {
                continue;
            };
            if let Some(id) = registration_id(path, account) {
                if push
                    .store
                    .get(id)
                    .is_some_and(|r| r.login == login && r.coll.account == account)
                {
                    ids.insert(id.to_string());
                }
            }
        }
    }
    if ids.is_empty() {
        Exclude::Nobody
    } else {
        Exclude::Ids(ids)
    }
}

/// A 403 with one of the draft's preconditions and the bridge's sentence, written as every
/// other `DAV:error` of the bridge is ([`crate::dav::error::DavError::into_response`]).
fn precondition(condition: &'static str, message: &str) -> Response<Body> {
    crate::dav::error::DavError::Refused {
        status: StatusCode::FORBIDDEN,
        condition: Some((NS, condition)),
        message: message.to_string(),
        short: "Forbidden",
    }
    .into_response()
}

/// POST on a collection: a `push-register` is the bridge's; anything else goes on to iCloud.
async fn post(
    push: &Arc<Push>,
    dav: &Dav,
    account: &Arc<Account>,
    login: &str,
    target: Target,
    req: Request<RequestBody>,
    public_origin: &str,
) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let (bytes, reserved) = match crate::dav::proxy::read_body(dav, &parts, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if !is_push_register(&bytes) {
        drop(reserved);
        let req = Request::from_parts(parts, full(bytes));
        let resp = crate::dav::handle(dav, account, req, public_origin).await;
        if let (true, Some(coll)) = (resp.status().is_success(), target.coll) {
            push.changed(Change {
                coll,
                property: false,
                exclude: Exclude::Nobody,
                token: None,
            });
        }
        return resp;
    }
    let Some(coll) = target.coll else {
        return precondition(
            "push-not-available",
            "push is offered on calendars and address books",
        );
    };
    if bytes.len() > MAX_REGISTER_BYTES {
        return crate::dav::error::DavError::TooLarge {
            limit: MAX_REGISTER_BYTES,
        }
        .into_response();
    }
    let request = match parse_register(&bytes) {
        Ok(r) => r,
        Err(RegisterError::Malformed(why)) => {
            return crate::body::text(
                StatusCode::BAD_REQUEST,
                &format!("the push-register body is not well-formed: {why}\n"),
            )
        }
        Err(RegisterError::Invalid(why)) => return precondition("invalid-subscription", &why),
        Err(RegisterError::NoTrigger) => {
            return precondition(
                "no-supported-trigger",
                "the bridge supports content-update (depth 1) and property-update (depth 0)",
            )
        }
    };
    register(push, dav, account, login, coll, request, public_origin).await
}

async fn register(
    push: &Arc<Push>,
    dav: &Dav,
    account: &Arc<Account>,
    login: &str,
    coll: Coll,
    request: RegisterRequest,
    public_origin: &str,
) -> Response<Body> {
    if let Err(e) = crate::push::send::check_resource(&request.push_resource, &push.config.allow) {
        return precondition("invalid-subscription", &e.to_string());
    }
    if let Err(e) = crate::push::webpush::Receiver::from_b64(&request.p256dh, &request.auth) {
        return precondition("invalid-subscription", &e.to_string());
    }
    // The collection must be one the bridge can watch (a calendar or an address book with a
    // CTag or sync-token); its state now is the baseline the poller compares with.
    match crate::push::worker::observe(dav, account, &coll, public_origin).await {
        Ok(Some(seen)) => push.note_baseline(&coll, seen),
        Ok(None) => return precondition(
            "push-not-available",
            "this collection has no CTag or sync-token, so the bridge cannot tell when it changes",
        ),
        // iCloud did not answer now: register anyway; the poller sets the baseline.
        Err(()) => {}
    }
    let now = crate::push::now();
    let expires = granted_expiry(request.expires.as_deref(), now);
    let reg = Registration {
        id: crate::push::webpush::b64(&rand::random::<[u8; 16]>()),
        coll,
        login: login.to_string(),
        push_resource: request.push_resource,
        p256dh: request.p256dh,
        auth: request.auth,
        content_update: request.content_update,
        property_update: request.property_update,
        expires,
        created: now,
        last_delivery: None,
        last_result: None,
    };
    let Some((reg, how)) = push.store.upsert(reg, crate::push::MAX_PER_LOGIN) else {
        return precondition(
            "push-not-available",
            "this login holds as many push registrations as the bridge keeps for one device",
        );
    };
    tracing::info!(
        account = account.name(),
        login,
        collection = %reg.coll.path(),
        created = how == Upserted::Created,
        "push registration"
    );
    let mut r = status(if how == Upserted::Created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    });
    let location = registration_url(public_origin, account.name(), &reg.id);
    let expires = httpdate::fmt_http_date(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(reg.expires),
    );
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(http::header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&expires) {
        h.insert(http::header::EXPIRES, v);
    }
    h.insert(http::header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// The expiry granted for a requested one: between 3 and 30 days from now; 7 days when
/// none (or an unreadable one) is asked for.
pub fn granted_expiry(requested: Option<&str>, now: u64) -> u64 {
    let asked = requested
        .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let min = now + crate::push::MIN_EXPIRY.as_secs();
    let max = now + crate::push::MAX_EXPIRY.as_secs();
    match asked {
        Some(t) => t.clamp(min, max),
        None => now + crate::push::DEFAULT_EXPIRY.as_secs(),
    }
}

/// What a push-register asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RegisterRequest {
    pub push_resource: String,
    pub p256dh: String,
    pub auth: String,
    pub content_update: bool,
    pub property_update: bool,
    pub expires: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RegisterError {
    Malformed(String),
    Invalid(String),
    NoTrigger,
}

/// Whether the body's root element is `push-register` in the WebDAV-Push namespace.
fn is_push_register(body: &[u8]) -> bool {
    let mut reader = NsReader::from_reader(body);
    loop {
        match reader.read_resolved_event() {
            Ok((ns, Event::Start(e) | Event::Empty(e))) => {
                return matches!(ns, ResolveResult::Bound(n) if n.as_ref() == NS.as_bytes())
                    && e.local_name().as_ref() == b"push-register";
            }
            Ok((_, Event::Eof)) | Err(_) => return false,
            Ok(_) => {}
        }
    }
}

/// Read a push-register (draft section "Subscription Registration", Web Push transport).
/// A request without `trigger` (DAVx5 sends none) asks for content updates (depth 1) and
/// property updates (depth 0), what the bridge supports.
pub fn parse_register(body: &[u8]) -> Result<RegisterRequest, RegisterError> {
    let mut reader = NsReader::from_reader(body);
    // (namespace is WebDAV-Push or DAV:, local name) of each open element.
    let mut path: Vec<(u8, Vec<u8>)> = Vec::new();
    let mut out = RegisterRequest::default();
    let mut text = String::new();
    let mut trigger_seen = false;
    let mut subscriptions = 0;
    let mut key_type_ok = true;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| RegisterError::Malformed(e.to_string()))?;
        let tag = match ns {
            ResolveResult::Bound(n) if n.as_ref() == NS.as_bytes() => b'P',
            ResolveResult::Bound(n) if n.as_ref() == DAV.as_bytes() => b'D',
            _ => b'?',
        };
        match event {
            Event::Start(_) | Event::Empty(_) if path.len() >= MAX_DEPTH => {
                return Err(RegisterError::Malformed("nested too deeply".into()));
            }
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = e.local_name().as_ref().to_vec();
                opened(
                    &path,
                    tag,
                    &local,
                    &mut out,
                    &mut trigger_seen,
                    &mut subscriptions,
                );
                // An empty element has no content: nothing stays open.
                if matches!(event, Event::Start(_)) {
                    if tag == b'P' && local == b"subscription-public-key" {
                        key_type_ok = e
                            .try_get_attribute("type")
                            .ok()
                            .flatten()
                            .is_none_or(|a| a.value.as_ref() == b"p256dh");
                    }
                    path.push((tag, local));
                    text.clear();
                }
            }
            Event::Text(t) => {
                let s = t
                    .xml_content()
                    .map_err(|e| RegisterError::Malformed(e.to_string()))?;
                text.push_str(&s);
            }
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t)),
            Event::GeneralRef(r) => {
                let name = r
                    .decode()
                    .map_err(|e| RegisterError::Malformed(e.to_string()))?;
                let entity = format!("&{name};");
                let s = quick_xml::escape::unescape(&entity)
                    .map_err(|e| RegisterError::Malformed(e.to_string()))?;
                text.push_str(&s);
            }
            Event::End(_) => {
                let Some((t, local)) = path.pop() else {
                    return Err(RegisterError::Malformed("unbalanced".into()));
                };
                let value = text.trim().to_string();
                let parent = path.last().map(|(t, l)| (*t, l.as_slice()));
                match (t, local.as_slice(), parent) {
                    (b'P', b"push-resource", Some((b'P', b"web-push-subscription"))) => {
                        out.push_resource = value
                    }
                    (b'P', b"subscription-public-key", Some((b'P', b"web-push-subscription"))) => {
                        out.p256dh = value
                    }
                    (b'P', b"auth-secret", Some((b'P', b"web-push-subscription"))) => {
                        out.auth = value
                    }
                    (b'P', b"content-encoding", Some((b'P', b"web-push-subscription")))
                        if !value.eq_ignore_ascii_case("aes128gcm") =>
                    {
                        return Err(RegisterError::Invalid(format!(
                            "content-encoding {value:?} is not supported (only aes128gcm)"
                        )))
                    }
                    (b'P', b"expires", Some((b'P', b"push-register"))) => out.expires = Some(value),
                    _ => {}
                }
                text.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !path.is_empty() {
        return Err(RegisterError::Malformed("the document ends early".into()));
    }
    if subscriptions != 1 || out.push_resource.is_empty() {
        return Err(RegisterError::Invalid(
            "a push-register needs exactly one web-push-subscription with a push-resource".into(),
        ));
    }
    if out.p256dh.is_empty() || out.auth.is_empty() || !key_type_ok {
        return Err(RegisterError::Invalid(
            "messages are always encrypted (RFC 8291): the subscription needs a p256dh subscription-public-key and an auth-secret".into(),
        ));
    }
    if !trigger_seen {
        out.content_update = true;
        out.property_update = true;
    } else if !out.content_update && !out.property_update {
        return Err(RegisterError::NoTrigger);
    }
    Ok(out)
}

/// An element opened under `path`: count subscriptions, note triggers.
fn opened(
    path: &[(u8, Vec<u8>)],
    tag: u8,
    local: &[u8],
    out: &mut RegisterRequest,
    trigger_seen: &mut bool,
    subscriptions: &mut usize,
) {
    let parent = path.last().map(|(t, l)| (*t, l.as_slice()));
    match (tag, local, parent) {
        (b'P', b"web-push-subscription", Some((b'P', b"subscription"))) => *subscriptions += 1,
        (b'P', b"trigger", Some((b'P', b"push-register"))) => *trigger_seen = true,
        (b'P', b"content-update", Some((b'P', b"trigger"))) => out.content_update = true,
        (b'P', b"property-update", Some((b'P', b"trigger"))) => out.property_update = true,
        _ => {}
    }
}

/// The push properties of a collection, as elements with the `P:` prefix.
fn property_value(push: &Push, coll: &Coll, local: &[u8]) -> Option<String> {
    Some(match local {
        b"transports" => format!(
            "<P:transports><P:web-push><P:vapid-public-key type=\"p256ecdsa\">{}</P:vapid-public-key></P:web-push></P:transports>",
            push.vapid.public_b64()
        ),
        b"topic" => format!("<P:topic>{}</P:topic>", push.topic(coll)),
        b"supported-triggers" => "<P:supported-triggers><P:content-update><depth>1</depth></P:content-update><P:property-update><depth>0</depth></P:property-update></P:supported-triggers>".to_string(),
        _ => return None,
    })
}

/// A PROPFIND answer with the push properties it lists as missing given (for calendars and
/// address books); an answer too large to hold passes on as it is.
async fn with_properties(push: &Push, account: &str, resp: Response<Body>) -> Response<Body> {
    let (mut parts, mut body) = resp.into_parts();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            // Cut off upstream: the client's answer is aborted as it would have been.
            let rest = futures_util::stream::iter(vec![
                Ok::<_, crate::body::BoxError>(hyper::body::Frame::data(Bytes::from(buf))),
                Err("the listing was cut off".into()),
            ]);
            return Response::from_parts(parts, http_body_util::StreamBody::new(rest).boxed());
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        if buf.len() > MAX_LISTING {
            // Too large to hold: passed on as it comes, without push properties.
            let head = futures_util::stream::iter(vec![Ok::<_, crate::body::BoxError>(
                hyper::body::Frame::data(Bytes::from(buf)),
            )]);
            let rest = http_body_util::BodyStream::new(body);
            let all = futures_util::StreamExt::chain(head, rest);
            return Response::from_parts(parts, http_body_util::StreamBody::new(all).boxed());
        }
    }
    let bytes = Bytes::from(buf);
    // Most listings ask for no push property: no XML pass for them.
    if !bytes.windows(NS.len()).any(|w| w == NS.as_bytes()) {
        return Response::from_parts(parts, full(bytes));
    }
    let out = match add_properties(&bytes, account, |coll, local| {
        property_value(push, coll, local)
    }) {
        Some(v) => Bytes::from(v),
        None => bytes,
    };
    parts.headers.remove(http::header::CONTENT_LENGTH);
    Response::from_parts(parts, full(out))
}

/// One event of a buffered `response`, with what the bridge needs to know of it.
struct Item<'a> {
    event: Event<'a>,
    /// In the WebDAV-Push namespace.
    push: bool,
    /// A CalDAV `calendar` or CardDAV `addressbook` element (a resourcetype's).
    cal_or_book: bool,
}

/// `xml` (a multistatus) with the push properties that responses for calendars and address
/// books (`/dav/<account>/<home>/<name>/`) list as missing given in a 200 propstat. `None`
/// when nothing changes or the XML cannot be read.
pub fn add_properties(
    xml: &[u8],
    account: &str,
    value: impl Fn(&Coll, &[u8]) -> Option<String>,
) -> Option<Vec<u8>> {
    let mut reader = NsReader::from_reader(xml);
    let mut out: Vec<u8> = Vec::with_capacity(xml.len() + 1024);
    let mut writer = quick_xml::Writer::new(&mut out);
    let mut in_response: Option<Vec<Item<'_>>> = None;
    let mut changed = false;
    loop {
        let (ns, event) = reader.read_resolved_event().ok()?;
        let is =
            |want: &str| matches!(&ns, ResolveResult::Bound(n) if n.as_ref() == want.as_bytes());
        let local: Option<Vec<u8>> = match &event {
            Event::Start(e) | Event::Empty(e) => Some(e.local_name().as_ref().to_vec()),
            Event::End(e) => Some(e.local_name().as_ref().to_vec()),
            _ => None,
        };
        let item = |event: Event<'_>| Item {
            push: is(NS),
            cal_or_book: (is(CALDAV) && local.as_deref() == Some(b"calendar"))
                || (is(CARDDAV) && local.as_deref() == Some(b"addressbook")),
            event: event.into_owned(),
        };
        let is_response = is(DAV) && local.as_deref() == Some(b"response");
        match (&event, in_response.as_mut()) {
            (Event::Eof, _) => break,
            (Event::Start(_), None) if is_response => in_response = Some(vec![item(event)]),
            (Event::End(_), Some(items)) if is_response => {
                items.push(item(event));
                let items = in_response.take()?;
                changed |= write_response(&mut writer, items, account, &value)?;
            }
            (_, Some(items)) => items.push(item(event)),
            (_, None) => writer.write_event(event).ok()?,
        }
    }
    changed.then_some(out)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    End,
    Empty,
    Other,
}

fn kind_of(e: &Event<'_>) -> (Kind, Option<Vec<u8>>) {
    match e {
        Event::Start(s) => (Kind::Start, Some(s.local_name().as_ref().to_vec())),
        Event::Empty(s) => (Kind::Empty, Some(s.local_name().as_ref().to_vec())),
        Event::End(s) => (Kind::End, Some(s.local_name().as_ref().to_vec())),
        _ => (Kind::Other, None),
    }
}

/// What a buffered `response` says: its href, the push properties it lists (children of a
/// `prop`), and whether its resourcetype is given and names a calendar or address book.
/// Depths: `response` 1, `href`/`propstat` 2, `prop` 3, a property 4.
fn survey(items: &[Item<'_>]) -> Option<(String, Vec<Vec<u8>>, bool, bool)> {
    let mut href = String::new();
    let mut depth = 0usize;
    let mut in_href = false;
    let mut resourcetype = false;
    let mut cal_or_book = false;
    let mut listed = Vec::new();
    for it in items {
        let (kind, local) = kind_of(&it.event);
        if kind == Kind::Start {
            depth += 1;
        }
        let local = local.unwrap_or_default();
        let prop_level = (kind == Kind::Start && depth == 4) || (kind == Kind::Empty && depth == 3);
        if matches!(kind, Kind::Start | Kind::Empty) {
            resourcetype |= local == b"resourcetype";
            cal_or_book |= it.cal_or_book;
            if it.push && prop_level {
                listed.push(local.clone());
            }
        }
        match (&it.event, kind) {
            (_, Kind::Start) if depth == 2 && local == b"href" && href.is_empty() => in_href = true,
            (Event::Text(t), _) if in_href => href.push_str(&t.xml_content().ok()?),
            (_, Kind::End) => {
                in_href = false;
                depth = depth.saturating_sub(1);
            }
            _ => {}
        }
    }
    Some((href, listed, resourcetype, cal_or_book))
}

/// Write one buffered `response`, with the push properties given when it is for a calendar
/// or an address book; whether it changed.
fn write_response<W: std::io::Write>(
    writer: &mut quick_xml::Writer<W>,
    items: Vec<Item<'_>>,
    account: &str,
    value: &impl Fn(&Coll, &[u8]) -> Option<String>,
) -> Option<bool> {
    let (href, listed, resourcetype, cal_or_book) = survey(&items)?;
    let wanted: Vec<(Vec<u8>, String)> = match collection_of(href.trim(), account) {
        Some(c) if !resourcetype || cal_or_book => listed
            .iter()
            .filter_map(|l| value(&c, l).map(|v| (l.clone(), v)))
            .collect(),
        _ => Vec::new(),
    };
    if wanted.is_empty() {
        for it in items {
            writer.write_event(it.event).ok()?;
        }
        return Some(false);
    }
    let given: HashSet<&[u8]> = wanted.iter().map(|(l, _)| l.as_slice()).collect();
    let mut depth = 0usize;
    // The depth of a given property being left out.
    let mut skip: Option<usize> = None;
    // Each propstat goes through a buffer, dropped when nothing is left in it.
    let mut propstat: Option<(Vec<u8>, usize)> = None;
    let last = items.len().saturating_sub(1);
    for (i, it) in items.into_iter().enumerate() {
        if i == last {
            // `</response>`: the given properties in a propstat of their own.
            let mut block = format!("<propstat xmlns=\"DAV:\" xmlns:P=\"{NS}\"><prop>");
            for (_, v) in &wanted {
                block.push_str(v);
            }
            block.push_str("</prop><status>HTTP/1.1 200 OK</status></propstat>");
            writer.get_mut().write_all(block.as_bytes()).ok()?;
            writer.write_event(it.event).ok()?;
            break;
        }
        let (kind, local) = kind_of(&it.event);
        let local = local.unwrap_or_default();
        if kind == Kind::Start {
            depth += 1;
        }
        if let Some(d) = skip {
            if kind == Kind::End {
                if depth == d {
                    skip = None;
                }
                depth -= 1;
            }
            continue;
        }
        let prop_level = (kind == Kind::Start && depth == 4) || (kind == Kind::Empty && depth == 3);
        if it.push && prop_level && given.contains(local.as_slice()) {
            if kind == Kind::Start {
                skip = Some(depth);
            }
            continue;
        }
        if kind == Kind::Start && depth == 2 && local == b"propstat" {
            propstat = Some((Vec::new(), 0));
        }
        match propstat.as_mut() {
            Some((buf, kept)) => {
                if prop_level {
                    *kept += 1;
                }
                quick_xml::Writer::new(&mut *buf)
                    .write_event(it.event)
                    .ok()?;
            }
            None => writer.write_event(it.event).ok()?,
        }
        if kind == Kind::End {
            if depth == 2 && local == b"propstat" {
                if let Some((buf, kept)) = propstat.take() {
                    if kept > 0 {
                        writer.get_mut().write_all(&buf).ok()?;
                    }
                }
            }
            depth = depth.saturating_sub(1);
        }
    }
    Some(true)
}

/// `/dav/<account>/<home>/<name>/` (an href, absolute or a path) → the collection.
fn collection_of(href: &str, account: &str) -> Option<Coll> {
    let path = paths::raw_path(href).unwrap_or(href);
    let rest = path
        .strip_prefix("/dav/")?
        .strip_prefix(account)?
        .strip_prefix('/')?;
    let (home, rest) = rest.split_once('/')?;
    if !matches!(home, "calendars" | "contacts") {
        return None;
    }
    let name = rest.strip_suffix('/').unwrap_or(rest);
    if name.is_empty() || name.contains('/') || name.starts_with('_') {
        return None;
    }
    Some(Coll {
        account: account.to_string(),
        home: home.to_string(),
        name: name.to_string(),
    })
}

/// Which service a collection's home is.
pub fn service_of(coll: &Coll) -> Service {
    if coll.home == "contacts" {
        Service::Carddav
    } else {
        Service::Caldav
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAVX5_REGISTER: &str = r#"<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><push-register xmlns="https://bitfire.at/webdav-push"><subscription><web-push-subscription><push-resource>https://ntfy.sh/upAbC?up=1&amp;x=2</push-resource><subscription-public-key type="p256dh">BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4</subscription-public-key><auth-secret>BTBZMqHH6r4Tts7J_aSIgg</auth-secret></web-push-subscription></subscription><expires>Wed, 20 Dec 2023 10:03:31 GMT</expires></push-register>"#;

    #[test]
    fn davx5s_register_reads_with_default_triggers() {
        assert!(is_push_register(DAVX5_REGISTER.as_bytes()));
        let r = parse_register(DAVX5_REGISTER.as_bytes()).unwrap();
        assert_eq!(r.push_resource, "https://ntfy.sh/upAbC?up=1&x=2");
        assert!(r.p256dh.starts_with("BCVx") && r.auth == "BTBZMqHH6r4Tts7J_aSIgg");
        assert!(r.content_update && r.property_update);
        assert_eq!(r.expires.as_deref(), Some("Wed, 20 Dec 2023 10:03:31 GMT"));
    }

    #[test]
    fn the_drafts_example_and_bad_registers() {
        let draft = r#"<push-register xmlns="https://bitfire.at/webdav-push" xmlns:D="DAV:"><subscription><web-push-subscription><push-resource>https://up.example.net/yohd4yai5Phiz1wi</push-resource><content-encoding>aes128gcm</content-encoding><subscription-public-key type="p256dh">BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4</subscription-public-key><auth-secret>BTBZMqHH6r4Tts7J_aSIgg</auth-secret></web-push-subscription></subscription><trigger><content-update><D:depth>infinity</D:depth></content-update></trigger><expires>Wed, 20 Dec 2023 10:03:31 GMT</expires></push-register>"#;
        let r = parse_register(draft.as_bytes()).unwrap();
        assert!(r.content_update && !r.property_update);
        let no_keys = draft.replace("<auth-secret>BTBZMqHH6r4Tts7J_aSIgg</auth-secret>", "");
        assert!(matches!(
            parse_register(no_keys.as_bytes()),
            Err(RegisterError::Invalid(_))
        ));
        let other_enc = draft.replace(">aes128gcm<", ">aesgcm<");
        assert!(matches!(
            parse_register(other_enc.as_bytes()),
            Err(RegisterError::Invalid(_))
        ));
        let no_trigger = draft.replace(
            "<content-update><D:depth>infinity</D:depth></content-update>",
            "<something-else/>",
        );
        assert_eq!(
            parse_register(no_trigger.as_bytes()),
            Err(RegisterError::NoTrigger)
        );
        let two = draft.replace("</subscription>", "<web-push-subscription><push-resource>https://x/</push-resource></web-push-subscription></subscription>");
        assert!(matches!(
            parse_register(two.as_bytes()),
            Err(RegisterError::Invalid(_))
        ));
        assert!(matches!(
            parse_register(b"<push-register xmlns='https://bitfire.at/webdav-push'><subscription>"),
            Err(RegisterError::Malformed(_))
        ));
        let deep = format!("<push-register xmlns='{NS}'>{}", "<a>".repeat(40));
        assert!(matches!(
            parse_register(deep.as_bytes()),
            Err(RegisterError::Malformed(_))
        ));
        assert!(!is_push_register(
            b"<C:schedule xmlns:C='urn:ietf:params:xml:ns:caldav'/>"
        ));
        assert!(!is_push_register(b"BEGIN:VCALENDAR"));
    }

    #[test]
    fn expiry_is_at_least_three_days_and_at_most_thirty() {
        let now = 1_700_000_000;
        assert_eq!(granted_expiry(None, now), now + 7 * 86400);
        assert_eq!(
            granted_expiry(Some("Wed, 20 Dec 2000 10:03:31 GMT"), now),
            now + 3 * 86400
        );
        assert_eq!(
            granted_expiry(Some("Wed, 20 Dec 2090 10:03:31 GMT"), now),
            now + 30 * 86400
        );
        let in10 = httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(now + 10 * 86400),
        );
        assert_eq!(granted_expiry(Some(&in10), now), now + 10 * 86400);
    }

    #[test]
    fn listings_get_the_push_properties_of_calendars_and_books_only() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<d:multistatus xmlns:d="DAV:" xmlns:cal="urn:ietf:params:xml:ns:caldav" xmlns:x1="https://bitfire.at/webdav-push"><d:response><d:href>/dav/alice/calendars/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><x1:transports/><x1:topic/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response><d:response><d:href>/dav/alice/calendars/home/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><cal:calendar/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><x1:transports/><x1:topic/><x1:other/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response><d:response><d:href>/dav/alice/calendars/work/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><cal:calendar/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><x1:transports/><x1:topic/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response><d:response><d:href>/dav/alice/calendars/inbox/</d:href><d:propstat><d:prop><d:resourcetype><d:collection/><cal:schedule-inbox/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat><d:propstat><d:prop><x1:topic/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response></d:multistatus>"#;
        let out = add_properties(xml.as_bytes(), "alice", |c, l| {
            (l != b"other").then(|| {
                format!(
                    "<P:{}>{}</P:{}>",
                    String::from_utf8_lossy(l),
                    c.name,
                    String::from_utf8_lossy(l)
                )
            })
        })
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        // The home and the inbox keep their 404s; calendars get a 200 propstat.
        let parts: Vec<&str> = out.split("<d:response>").collect();
        assert!(parts[1].contains("<x1:transports/>") && !parts[1].contains("<P:"));
        assert!(
            parts[2].contains("<P:topic>home</P:topic>") && parts[2].contains("<P:transports>home")
        );
        assert!(
            parts[2].contains("<x1:other/>"),
            "unknown push properties stay 404: {}",
            parts[2]
        );
        assert!(!parts[2].contains("<x1:topic/>"));
        assert!(parts[3].contains("<P:topic>work</P:topic>"));
        assert!(
            !parts[3].contains("404"),
            "the emptied 404 propstat is gone: {}",
            parts[3]
        );
        assert!(parts[4].contains("<x1:topic/>") && !parts[4].contains("<P:topic>"));
        // Still well-formed, and the 200 propstat's names resolve.
        let mut r = NsReader::from_reader(out.as_bytes());
        let mut topics = 0;
        loop {
            match r.read_resolved_event().unwrap() {
                (ResolveResult::Bound(n), Event::Start(e))
                    if n.as_ref() == NS.as_bytes() && e.local_name().as_ref() == b"topic" =>
                {
                    topics += 1
                }
                (_, Event::Eof) => break,
                _ => {}
            }
        }
        assert_eq!(topics, 2);
        // Nothing to give: unchanged.
        assert!(add_properties(b"<d:multistatus xmlns:d='DAV:'/>", "alice", |_, _| None).is_none());
    }

    #[test]
    fn registration_urls_and_collections() {
        assert_eq!(
            registration_id("/dav/alice/_push/abc", "alice"),
            Some("abc")
        );
        assert_eq!(registration_id("/dav/alice/_push/abc", "bob"), None);
        assert_eq!(registration_id("/dav/alice/_push/", "alice"), None);
        assert_eq!(registration_id("/dav/alicex/_push/a", "alice"), None);
        assert_eq!(
            collection_of("/dav/alice/calendars/home/", "alice")
                .unwrap()
                .name,
            "home"
        );
        assert_eq!(
            collection_of("http://h:1/dav/alice/contacts/card/", "alice")
                .unwrap()
                .home,
            "contacts"
        );
        assert!(collection_of("/dav/alice/calendars/", "alice").is_none());
        assert!(collection_of("/dav/alice/calendars/home/x.ics", "alice").is_none());
        assert!(collection_of("/dav/alice/calendars/_birthdays/", "alice").is_none());
    }
}
