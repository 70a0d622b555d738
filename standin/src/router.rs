//! Request routing (C4): the unauthenticated 400s, well-known handling, authentication, then
//! dispatch by method and path.

use crate::accounts::{write, Account};
use crate::auth::{self, Refusal};
use crate::collections;
use crate::ctx::Ctx;
use crate::objects;
use crate::paths::{self, Target};
use crate::propfind::propfind;
use crate::report::report;
use crate::respond::{self, Resp};
use crate::state::Role;
use crate::switches::{OptionsDavHeader, WellKnownMode};
use http::HeaderValue;
use rand::Rng;

/// What to do with a request.
pub enum Outcome {
    Respond(Resp),
    /// Close the connection without answering.
    Close,
}

const KNOWN_METHODS: &[&str] = &[
    "OPTIONS",
    "GET",
    "HEAD",
    "PUT",
    "DELETE",
    "PROPFIND",
    "PROPPATCH",
    "REPORT",
    "MKCALENDAR",
    "MKCOL",
    "MOVE",
    "COPY",
];

const DAV_FULL: &str = "1, 2, 3, access-control, calendar-access, calendar-schedule, calendar-auto-schedule, calendarserver-sharing, addressbook, extended-mkcol";
const ALLOW: &str =
    "OPTIONS, GET, HEAD, DELETE, PROPFIND, PUT, PROPPATCH, COPY, MOVE, REPORT, MKCALENDAR, MKCOL";

fn options(ctx: &Ctx) -> Resp {
    let mut r = respond::status(200);
    let h = r.headers_mut();
    h.insert(http::header::ALLOW, HeaderValue::from_static(ALLOW));
    match ctx.sw.options_dav_header {
        OptionsDavHeader::Full => {
            h.insert("dav", HeaderValue::from_static(DAV_FULL));
        }
        OptionsDavHeader::Minimal => {
            h.insert("dav", HeaderValue::from_static("1, 2, 3"));
        }
        OptionsDavHeader::Absent => {}
    }
    r
}

/// With probability `etag_housekeeping_bump`, give an object in the addressed collection a
/// new ETag without a content change (C6).
fn housekeeping(ctx: &Ctx, acc: &Account, target: &Target) {
    let p = ctx.sw.etag_housekeeping_bump;
    if p <= 0.0 || !rand::thread_rng().gen_bool(p.clamp(0.0, 1.0)) {
        return;
    }
    let mut data = write(&acc.data);
    let (coll, name) = match target {
        Target::Object { coll, name, .. } => (coll.clone(), Some(name.clone())),
        Target::Collection { coll, .. } => (coll.clone(), None),
        _ => return,
    };
    let name = name.or_else(|| {
        let col = data.collections.get(&coll)?;
        let n = col.objects.len();
        if n == 0 {
            return None;
        }
        col.objects
            .keys()
            .nth(rand::thread_rng().gen_range(0..n))
            .cloned()
    });
    if let Some(name) = name {
        data.touch(&coll, &name);
    }
}

/// True when the path belongs to the other DAV service (calendars on a CardDAV host, …).
fn wrong_service(role: Role, t: &Target) -> bool {
    let cal_path = match t {
        Target::CalHome(_) => true,
        Target::CardHome(_) | Target::Photo { .. } => false,
        Target::Collection { coll, .. } | Target::Object { coll, .. } => {
            coll.starts_with("calendars/")
        }
        _ => return false,
    };
    cal_path != role.is_cal()
}

/// Route one request.
pub fn route(ctx: &Ctx) -> Outcome {
    let m = ctx.req.method.as_str();
    if !KNOWN_METHODS.contains(&m) {
        return Outcome::Respond(ctx.bad_request());
    }
    if let (Some(part), Some(to)) = (
        &ctx.sw.hostile_redirect_path,
        &ctx.sw.hostile_redirect_location,
    ) {
        if ctx.req.path.contains(part.as_str()) {
            return Outcome::Respond(respond::redirect(302, to));
        }
    }
    if let Some(part) = &ctx.sw.hostile_bomb_path {
        if ctx.req.path.contains(part.as_str()) {
            let mut xml = String::from(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><multistatus xmlns=\"DAV:\"><response",
            );
            for i in 0..ctx.sw.hostile_bomb_attributes {
                xml.push_str(&format!(" a{i}=\"x\""));
            }
            xml.push_str(
                "><href>/</href><status>HTTP/1.1 200 OK</status></response></multistatus>",
            );
            return Outcome::Respond(respond::multistatus(crate::body::Body::from_string(xml)));
        }
    }
    if let Some(part) = &ctx.sw.hostile_unauthorized_path {
        if ctx.req.path.contains(part.as_str()) {
            return Outcome::Respond(respond::unauthorized(ctx.sw));
        }
    }
    let target = paths::parse(&ctx.req.path);
    let is_get = m == "GET" || m == "HEAD";
    match (&target, is_get) {
        (Target::Root, true) if ctx.sw.empty_400_on_root => {
            return Outcome::Respond(respond::empty_bad_request())
        }
        (Target::Root | Target::WellKnown, true) => return Outcome::Respond(ctx.bad_request()),
        _ => {}
    }
    if m == "PROPFIND" && target == Target::WellKnown {
        let code = match ctx.sw.well_known_mode {
            WellKnownMode::InPlace => None,
            WellKnownMode::Redirect301 => Some(301),
            WellKnownMode::Redirect302 => Some(302),
        };
        if let Some(code) = code {
            let base = ctx.shared.role_base(ctx.role).unwrap_or_default();
            return Outcome::Respond(respond::redirect(code, &format!("{base}/")));
        }
    }
    let acc = match auth::authenticate(
        ctx.shared,
        ctx.sw,
        ctx.role,
        &ctx.req.headers,
        &ctx.req.path,
    ) {
        Ok(a) => a,
        Err(Refusal::Respond(r)) => return Outcome::Respond(r),
        Err(Refusal::Close) => return Outcome::Close,
    };
    if target.dsid().is_some_and(|d| d != acc.dsid) {
        return Outcome::Respond(respond::status(403));
    }
    let front = ctx.role.partition().is_none();
    let account_path = target.dsid().is_some() && !matches!(target, Target::Principal(_));
    if (front && account_path && !ctx.sw.front_serves_account_paths)
        || wrong_service(ctx.role, &target)
    {
        return Outcome::Respond(respond::status(404));
    }
    if target == Target::Unknown && (!front || !ctx.sw.unknown_path_answers_principal) {
        return Outcome::Respond(respond::status(404));
    }
    housekeeping(ctx, &acc, &target);
    Outcome::Respond(dispatch(ctx, &acc, m, &target))
}

fn dispatch(ctx: &Ctx, acc: &Account, m: &str, target: &Target) -> Resp {
    use Target as T;
    match (m, target) {
        ("OPTIONS", _) => options(ctx),
        ("PROPFIND", _) => propfind(ctx, acc, target),
        ("REPORT", _) => report(ctx, acc, target),
        ("GET" | "HEAD", T::Object { coll, name, .. }) => {
            objects::get(ctx, acc, coll, name, m == "HEAD")
        }
        ("GET" | "HEAD", T::Photo { hash, .. }) => objects::photo(ctx, acc, hash),
        ("GET" | "HEAD", T::Unknown) => respond::status(404),
        ("GET" | "HEAD", _) => respond::status(403),
        ("PUT", T::Object { coll, name, .. }) => objects::put(ctx, acc, coll, name),
        ("DELETE", T::Object { coll, name, .. }) => objects::delete(ctx, acc, coll, name),
        ("DELETE", T::Collection { coll, .. }) => collections::delete(ctx, acc, coll),
        ("MKCALENDAR", T::Collection { coll, .. }) => {
            collections::mkcalendar(ctx, acc, coll, false)
        }
        ("MKCOL", T::Collection { coll, .. }) => collections::mkcalendar(ctx, acc, coll, true),
        ("PROPPATCH", T::Collection { coll, .. }) => collections::proppatch(ctx, acc, coll),
        ("MOVE" | "COPY", T::Object { coll, name, .. }) => {
            objects::move_or_copy(ctx, acc, coll, name, m == "MOVE")
        }
        ("MKCALENDAR" | "MKCOL" | "PROPPATCH", T::Object { .. }) => objects::wrong_method(),
        _ => respond::status(403),
    }
}
