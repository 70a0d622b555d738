//! GET/HEAD/PUT/DELETE/MOVE/COPY on calendar objects and cards, and photo blobs (C6, C7).

use crate::accounts::{read, write, Account};
use crate::body::Body;
use crate::ctx::Ctx;
use crate::ical;
use crate::paths::{self, Target};
use crate::respond::{self, Resp};
use crate::store::{CollKind, WriteOpts};
use crate::switches::DtendRule;
use crate::vcard;
use crate::xml_in::PropRequest;
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use rand::Rng;
use std::time::{Duration, Instant};

fn strip_weak(t: &str) -> &str {
    t.trim().strip_prefix("W/").unwrap_or(t.trim())
}

/// True when If-Match / If-None-Match fail against the current ETag.
pub fn precondition_failed(ctx: &Ctx, current: Option<&str>) -> bool {
    if let Some(im) = ctx.header("if-match") {
        match current {
            None => return true,
            Some(cur) => {
                if im.trim() != "*" && !im.split(',').any(|t| strip_weak(t) == cur) {
                    return true;
                }
            }
        }
    }
    if let (Some(inm), Some(cur)) = (ctx.header("if-none-match"), current) {
        if inm.trim() == "*" || inm.split(',').any(|t| strip_weak(t) == cur) {
            return true;
        }
    }
    false
}

fn set_etag(r: &mut Resp, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        r.headers_mut().insert(ETAG, v);
    }
}

/// GET or HEAD on an object.
pub fn get(ctx: &Ctx, acc: &Account, coll: &str, name: &str, head: bool) -> Resp {
    let data = read(&acc.data);
    let Some(col) = data.collections.get(coll) else {
        return respond::status(404);
    };
    let Some(obj) = col.objects.get(name).filter(|o| o.visible()) else {
        return respond::status(404);
    };
    let is_card = col.kind == CollKind::AddressBook;
    let s = crate::objprops::snap(String::new(), obj, &data.photos);
    drop(data);
    let render = ctx.obj_render(acc, PropRequest::AllProp, is_card);
    let served = render.served(&s).into_owned();
    let ct = if is_card {
        ctx.sw.vcard_content_type.clone()
    } else {
        "text/calendar; charset=utf-8".to_string()
    };
    let len = served.len();
    let body = if head {
        Body::empty()
    } else {
        Body::from_string(served)
    };
    let mut r = respond::with_body(200, &ct, body);
    if head {
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    if ctx.sw.get_returns_etag_header {
        set_etag(&mut r, &s.etag);
    }
    r
}

/// GET on `/{d}/wcs/{hash}` (or the gateway form): the photo bytes.
pub fn photo(ctx: &Ctx, acc: &Account, hash: &str) -> Resp {
    if ctx.role.is_cal() {
        return respond::status(404);
    }
    match read(&acc.data).photos.get(hash) {
        Some(b) => respond::with_body(200, "image/jpeg", Body::from_bytes(b.clone())),
        None => respond::status(404),
    }
}

fn content_type_ok(ctx: &Ctx, is_card: bool) -> bool {
    let ct = ctx
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if is_card {
        ["text/vcard", "text/x-vcard", "text/directory"]
            .iter()
            .any(|t| ct.starts_with(t))
    } else {
        ct.starts_with("text/calendar")
    }
}

/// Validate a body for `coll`; `Err` carries the iCloud-style refusal.
fn validate(ctx: &Ctx, is_card: bool, comp: Option<&str>, text: &str) -> Result<(), Resp> {
    if is_card {
        if !vcard::is_vcard(text) {
            return Err(ctx.bad_request());
        }
        if ctx.sw.require_n && !vcard::has_n(text) {
            return Err(respond::status(403));
        }
        if ctx.sw.random_put_403_rate > 0.0
            && rand::thread_rng().gen_bool(ctx.sw.random_put_403_rate.clamp(0.0, 1.0))
        {
            return Err(respond::status(403));
        }
        return Ok(());
    }
    let meta = ical::index(text);
    if !meta.well_formed || meta.comps.is_empty() {
        return Err(ctx.bad_request());
    }
    let kinds = meta.kinds();
    if ctx.sw.vjournal_500 && kinds.contains(&"VJOURNAL") {
        return Err(respond::status(500));
    }
    let duration_counts = ctx.sw.dtend_rule == DtendRule::DtendOrDuration;
    if ctx.sw.require_dtend && ical::vevent_lacks_end(text, duration_counts) {
        return Err(respond::status(404));
    }
    if let (true, Some(comp)) = (ctx.sw.single_component_type, comp) {
        if kinds.iter().any(|k| *k != comp && *k != "VFREEBUSY") {
            return Err(respond::status(403));
        }
    }
    Ok(())
}

fn uid_elsewhere(data: &crate::store::AccountData, coll: &str, uid: &str) -> bool {
    data.collections
        .iter()
        .filter(|(k, c)| k.as_str() != coll && c.is_calendar())
        .flat_map(|(_, c)| c.objects.values())
        .any(|o| o.meta.as_ref().and_then(|m| m.uid()) == Some(uid))
}

/// PUT an object.
pub fn put(ctx: &Ctx, acc: &Account, coll: &str, name: &str) -> Resp {
    let is_card = coll.starts_with("carddavhome/");
    if !content_type_ok(ctx, is_card) {
        return respond::status(415);
    }
    let Ok(text) = std::str::from_utf8(&ctx.req.body) else {
        return ctx.bad_request();
    };
    let comp = {
        let data = read(&acc.data);
        match data.collections.get(coll).map(|c| &c.kind) {
            None => return respond::status(409),
            Some(CollKind::Calendar { comp }) => Some(comp.clone()),
            Some(CollKind::AddressBook) => None,
            Some(_) => return respond::status(403),
        }
    };
    if let Err(r) = validate(ctx, is_card, comp.as_deref(), text) {
        return r;
    }
    let stored = if is_card {
        text.to_string()
    } else {
        let t = ical::normalize_crlf(text);
        if ctx.sw.apple_x_props {
            ical::add_apple_x_props(&t)
        } else {
            t
        }
    };
    let mut data = write(&acc.data);
    let current = data
        .collections
        .get(coll)
        .and_then(|c| c.objects.get(name))
        .map(|o| o.etag.clone());
    if precondition_failed(ctx, current.as_deref()) {
        return respond::status(412);
    }
    if ctx.sw.uid_in_other_calendar && !is_card {
        if let Some(uid) = ical::index(&stored).uid() {
            if uid_elsewhere(&data, coll, uid) {
                return respond::status(403);
            }
        }
    }
    let visible_at = (ctx.sw.eventual_consistency_ms > 0)
        .then(|| Instant::now() + Duration::from_millis(ctx.sw.eventual_consistency_ms));
    let Some((etag, created)) = data.write(
        coll,
        name,
        stored,
        WriteOpts {
            visible_at,
            photo: None,
        },
    ) else {
        return respond::status(409);
    };
    drop(data);
    let mut r = respond::status(if created { 201 } else { 204 });
    if ctx.sw.put_returns_etag_header {
        set_etag(&mut r, &etag);
    }
    r
}

/// DELETE an object.
pub fn delete(ctx: &Ctx, acc: &Account, coll: &str, name: &str) -> Resp {
    let mut data = write(&acc.data);
    let current = data
        .collections
        .get(coll)
        .and_then(|c| c.objects.get(name))
        .map(|o| o.etag.clone());
    let Some(cur) = current else {
        return respond::status(404);
    };
    if precondition_failed(ctx, Some(&cur)) {
        return respond::status(412);
    }
    data.delete(coll, name);
    respond::status(204)
}

/// MOVE or COPY an object within the account.
pub fn move_or_copy(ctx: &Ctx, acc: &Account, coll: &str, name: &str, is_move: bool) -> Resp {
    let Some(dest) = ctx.header("destination") else {
        return ctx.bad_request();
    };
    let (dcoll, dname) = match paths::parse(&paths::destination_path(dest)) {
        Target::Object { dsid, coll, name } if dsid == acc.dsid => (coll, name),
        Target::Object { .. } => return respond::status(403),
        _ => return respond::status(403),
    };
    let overwrite = ctx.header("overwrite").map(str::trim) != Some("F");
    let mut data = write(&acc.data);
    let Some(src) = data.collections.get(coll).and_then(|c| c.objects.get(name)) else {
        return respond::status(404);
    };
    if precondition_failed(ctx, Some(&src.etag.clone())) {
        return respond::status(412);
    }
    let body = String::from_utf8_lossy(&src.body).into_owned();
    let photo = src.photo.clone();
    let Some(dcol) = data.collections.get(&dcoll) else {
        return respond::status(409);
    };
    let same_family = (dcol.kind == CollKind::AddressBook) == coll.starts_with("carddavhome/");
    if !same_family {
        return respond::status(403);
    }
    if let (CollKind::Calendar { comp }, true) = (&dcol.kind, ctx.sw.single_component_type) {
        let kinds: Vec<String> = ical::index(&body)
            .kinds()
            .iter()
            .map(|s| s.to_string())
            .collect();
        if kinds.iter().any(|k| k != comp) {
            return respond::status(403);
        }
    }
    let exists = dcol.objects.contains_key(&dname);
    if exists && !overwrite {
        return respond::status(412);
    }
    if dcoll == coll && dname == name {
        return respond::status(403);
    }
    if data
        .write(
            &dcoll,
            &dname,
            body,
            WriteOpts {
                visible_at: None,
                photo,
            },
        )
        .is_none()
    {
        return respond::status(409);
    }
    if is_move {
        data.delete(coll, name);
    }
    respond::status(if exists { 204 } else { 201 })
}

/// The status for a non-object method on an object path.
pub fn wrong_method() -> Resp {
    let mut r = respond::status(405);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}
