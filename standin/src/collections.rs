//! MKCALENDAR, MKCOL, PROPPATCH and DELETE on calendar collections (C6).

use crate::accounts::{write, Account};
use crate::body::Body;
use crate::config::CalendarSpec;
use crate::ctx::Ctx;
use crate::paths::collection_href;
use crate::respond::{self, Resp};
use crate::store::CollKind;
use crate::xml_in::{Elem, CALDAV, DAV, ICAL};
use crate::xml_out::{empty, Ms};
use std::time::{Duration, Instant};

/// Properties from the `<set><prop>` blocks of a MKCALENDAR/MKCOL body.
fn set_props(el: Option<&Elem>) -> Vec<&Elem> {
    let Some(el) = el else { return Vec::new() };
    el.children_named(DAV, "set")
        .filter_map(|s| s.child(DAV, "prop"))
        .flat_map(|p| p.children.iter())
        .collect()
}

fn id_acceptable(ctx: &Ctx, id: &str) -> bool {
    if id.is_empty() || id.len() < ctx.sw.min_calendar_id_len {
        return false;
    }
    !(ctx.sw.reject_non_ascii_ids && id.chars().any(|c| !c.is_ascii() || c.is_whitespace()))
}

/// MKCALENDAR (or an extended MKCOL when `mkcol_creates_calendar` is on).
pub fn mkcalendar(ctx: &Ctx, acc: &Account, coll: &str, is_mkcol: bool) -> Resp {
    let Some(id) = coll.strip_prefix("calendars/") else {
        return respond::status(403);
    };
    if is_mkcol && !ctx.sw.mkcol_creates_calendar {
        return respond::status(403);
    }
    if !id_acceptable(ctx, id) {
        return respond::status(403);
    }
    let el = match ctx.xml() {
        Ok(e) => e,
        Err(r) => return r,
    };
    let props = set_props(el.as_ref());
    let mut spec = CalendarSpec::new(id, id, "VEVENT");
    for p in props {
        match (p.ns.as_str(), p.name.as_str()) {
            (CALDAV, "supported-calendar-component-set") => {
                let comps: Vec<&Elem> = p.children_named(CALDAV, "comp").collect();
                if comps.len() > 1 {
                    return respond::component_set_exceeded();
                }
                if let Some(n) = comps.first().and_then(|c| c.attr("name")) {
                    spec.component = n.to_ascii_uppercase();
                }
            }
            (DAV, "displayname") => spec.display_name = p.text.clone(),
            (ICAL, "calendar-color") => spec.color = Some(p.text.trim().to_string()),
            (ICAL, "calendar-order") => spec.order = p.text.trim().parse().ok(),
            _ => {}
        }
    }
    let mut data = write(&acc.data);
    if data.collections.contains_key(coll) {
        return respond::status(405);
    }
    data.add_calendar(&spec);
    if ctx.sw.sticky_deleted_calendar {
        let window = Duration::from_secs(ctx.sw.sticky_window_secs);
        if let Some((when, old)) = data.graveyard.remove(coll) {
            if when.elapsed() <= window {
                if let Some(col) = data.collections.get_mut(coll) {
                    col.objects = old.objects;
                    col.counter = col.counter.max(old.counter) + 1;
                }
            }
        }
    }
    respond::status(201)
}

/// DELETE of a collection.
pub fn delete(ctx: &Ctx, acc: &Account, coll: &str) -> Resp {
    let mut data = write(&acc.data);
    match data.collections.get(coll).map(|c| &c.kind) {
        None => return respond::status(404),
        Some(CollKind::Calendar { .. }) => {}
        Some(_) => return respond::status(403),
    }
    if let Some(col) = data.collections.remove(coll) {
        data.counter += 1;
        if ctx.sw.sticky_deleted_calendar {
            data.graveyard
                .insert(coll.to_string(), (Instant::now(), col));
        }
    }
    respond::status(204)
}

/// PROPPATCH on a calendar (displayname, calendar-color, calendar-order) or the address book
/// (displayname). Anything else fails with 403 and the rest with 424; nothing is applied then.
pub fn proppatch(ctx: &Ctx, acc: &Account, coll: &str) -> Resp {
    let el = match ctx.xml() {
        Ok(Some(e)) => e,
        Ok(None) => return ctx.bad_request(),
        Err(r) => return r,
    };
    let mut data = write(&acc.data);
    let Some(col) = data.collections.get_mut(coll) else {
        return respond::status(404);
    };
    let is_cal = col.is_calendar();
    let is_book = col.kind == CollKind::AddressBook;
    let mut ok: Vec<(&Elem, bool)> = Vec::new();
    let mut bad: Vec<&Elem> = Vec::new();
    for op in &el.children {
        let remove = op.is(DAV, "remove");
        if !remove && !op.is(DAV, "set") {
            continue;
        }
        for p in op
            .child(DAV, "prop")
            .map(|p| p.children.iter())
            .into_iter()
            .flatten()
        {
            let allowed = match (p.ns.as_str(), p.name.as_str()) {
                (DAV, "displayname") => is_cal || is_book,
                (ICAL, "calendar-color") | (ICAL, "calendar-order") => is_cal,
                _ => false,
            };
            if allowed {
                ok.push((p, remove));
            } else {
                bad.push(p);
            }
        }
    }
    let names = |v: &[&Elem]| -> Vec<String> { v.iter().map(|p| empty(&p.ns, &p.name)).collect() };
    let ok_names: Vec<String> = ok.iter().map(|(p, _)| empty(&p.ns, &p.name)).collect();
    let groups: Vec<(Vec<String>, &str)> = if bad.is_empty() {
        for (p, remove) in &ok {
            let val = (!remove).then(|| p.text.trim().to_string());
            match p.name.as_str() {
                "displayname" => col.display_name = val,
                "calendar-color" => col.color = val,
                _ => col.order = val.and_then(|v| v.parse().ok()),
            }
        }
        col.counter += 1;
        data.counter += 1;
        vec![(ok_names, "HTTP/1.1 200 OK")]
    } else {
        vec![
            (names(&bad), "HTTP/1.1 403 Forbidden"),
            (ok_names, "HTTP/1.1 424 Failed Dependency"),
        ]
    };
    drop(data);
    let mut ms = Ms::new(ctx.sw.xml_whitespace_noise);
    ms.head();
    ms.propstat_response(&collection_href(&acc.dsid, coll), &groups);
    ms.foot();
    respond::multistatus(Body::from_string(ms.buf))
}
