//! REPORTs: calendar-query, calendar-multiget, addressbook-query, addressbook-multiget and
//! sync-collection, with the collection's own entry first (C6, C7).

use crate::accounts::{read, Account};
use crate::body::Body;
use crate::ctx::{ms_suffix, stream_items, Ctx, Item};
use crate::filters::{card_matches, CalFilter};
use crate::objprops::snap;
use crate::paths::{self, collection_href, object_href, Target};
use crate::respond::{self, Resp};
use crate::store::{CollKind, Collection};
use crate::switches::InvalidTokenStyle;
use crate::xml_in::{prop_request, Elem, PropName, PropRequest, CALDAV, CARDDAV, DAV};
use crate::xml_out::{el_text, valid_sync_token_error, Ms};

const NOT_FOUND: &str = "HTTP/1.1 404 Not Found";

/// The collection's own entry: getetag when asked for (or always, for sync), the rest 404.
fn self_entry(ms: &mut Ms, href: &str, col: &Collection, req: &PropRequest, force_etag: bool) {
    let asked: Vec<PropName> = match req {
        PropRequest::Props(p) => p.clone(),
        _ => Vec::new(),
    };
    let wants_etag = force_etag || asked.iter().any(|p| p.is(DAV, "getetag"));
    let found: Vec<String> = if wants_etag {
        vec![el_text(DAV, "getetag", &col.etag())]
    } else {
        Vec::new()
    };
    let missing: Vec<PropName> = if force_etag {
        Vec::new()
    } else {
        asked
            .into_iter()
            .filter(|p| !p.is(DAV, "getetag"))
            .collect()
    };
    ms.response(href, &found, &missing);
}

/// REPORT dispatch.
pub fn report(ctx: &Ctx, acc: &Account, target: &Target) -> Resp {
    let el = match ctx.xml() {
        Ok(Some(e)) => e,
        Ok(None) => return ctx.bad_request(),
        Err(r) => return r,
    };
    let Target::Collection { coll, .. } = target else {
        return respond::status(403);
    };
    let data = read(&acc.data);
    let Some(col) = data.collections.get(coll.as_str()) else {
        return respond::status(404);
    };
    let is_card = col.kind == CollKind::AddressBook;
    let is_cal = col.is_calendar();
    let req = prop_request(&el);
    let noise = ctx.sw.xml_whitespace_noise;
    let href = collection_href(&acc.dsid, coll);
    let mut ms = Ms::new(noise);
    ms.head();
    let mut sync_token = None;
    let items: Vec<Item> = match (el.ns.as_str(), el.name.as_str()) {
        (CALDAV, "calendar-query") if !is_card => {
            let filter = CalFilter::parse(el.child(CALDAV, "filter"));
            if ctx.sw.require_vevent_comp_filter && filter.inner.is_empty() {
                return respond::status(500);
            }
            if ctx.sw.vtodo_query_500 && filter.kinds().contains(&"VTODO") {
                return respond::status(500);
            }
            if ctx.sw.report_includes_collection {
                self_entry(&mut ms, &href, col, &req, false);
            }
            if !is_cal {
                Vec::new()
            } else {
                col.objects
                    .iter()
                    .filter(|(_, o)| o.visible())
                    .filter(|(_, o)| o.meta.as_ref().is_some_and(|m| filter.matches(m, &o.body)))
                    .map(|(n, o)| Item::Obj(snap(object_href(&acc.dsid, coll, n), o, &data.photos)))
                    .collect()
            }
        }
        (CARDDAV, "addressbook-query") if is_card => {
            if ctx.sw.report_includes_collection {
                self_entry(&mut ms, &href, col, &req, false);
            }
            let filter = el.child(CARDDAV, "filter");
            let mut v: Vec<Item> = col
                .objects
                .iter()
                .filter(|(_, o)| o.visible() && card_matches(&o.body, filter, ctx.sw))
                .map(|(n, o)| Item::Obj(snap(object_href(&acc.dsid, coll, n), o, &data.photos)))
                .collect();
            if !ctx.sw.ignore_limit {
                let limit = el
                    .child(CARDDAV, "limit")
                    .and_then(|l| l.child(CARDDAV, "nresults"))
                    .and_then(|n| n.text.trim().parse::<usize>().ok());
                if let Some(l) = limit {
                    v.truncate(l);
                }
            }
            v
        }
        (CALDAV, "calendar-multiget") | (CARDDAV, "addressbook-multiget")
            if (el.ns == CARDDAV) == is_card =>
        {
            if ctx.sw.report_includes_collection {
                self_entry(&mut ms, &href, col, &req, false);
            }
            multiget(&el, acc, &data)
        }
        (DAV, "sync-collection") if is_cal || is_card => {
            match sync(ctx, &el, acc, coll, col, &data.photos, &mut ms, &href) {
                Ok((items, tok)) => {
                    sync_token = Some(tok);
                    items
                }
                Err(r) => return r,
            }
        }
        _ => return respond::status(403),
    };
    drop(data);
    let prefix = ms.take();
    let mut render = ctx.obj_render(acc, req, is_card);
    if is_card && !ctx.sw.ignore_partial_props {
        let names: Vec<String> = el
            .child(DAV, "prop")
            .and_then(|p| p.child(CARDDAV, "address-data"))
            .map(|a| {
                a.children_named(CARDDAV, "prop")
                    .filter_map(|p| p.attr("name").map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if !names.is_empty() {
            render.partial = Some(names);
        }
    }
    stream_items(
        noise,
        prefix,
        items,
        render,
        ms_suffix(noise, sync_token.as_deref()),
    )
}

fn multiget(el: &Elem, acc: &Account, data: &crate::store::AccountData) -> Vec<Item> {
    el.children_named(DAV, "href")
        .map(|h| {
            let raw = h.text.trim();
            let path = paths::destination_path(raw);
            let found = match paths::parse(&path) {
                Target::Object { dsid, coll, name } if dsid == acc.dsid => data
                    .collections
                    .get(&coll)
                    .and_then(|c| c.objects.get(&name))
                    .filter(|o| o.visible())
                    .map(|o| snap(object_href(&dsid, &coll, &name), o, &data.photos)),
                _ => None,
            };
            match found {
                Some(s) => Item::Obj(s),
                None => Item::Status(path, NOT_FOUND),
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn sync(
    ctx: &Ctx,
    el: &Elem,
    acc: &Account,
    coll: &str,
    col: &Collection,
    photos: &std::collections::HashMap<String, bytes::Bytes>,
    ms: &mut Ms,
    href: &str,
) -> Result<(Vec<Item>, String), Resp> {
    let token = el
        .child(DAV, "sync-token")
        .map(|t| t.text.trim().to_string())
        .unwrap_or_default();
    let since = if token.is_empty() {
        None
    } else {
        match col.parse_token(&token) {
            Some(c) => Some(c),
            None => {
                return Err(match ctx.sw.invalid_token_style {
                    InvalidTokenStyle::Bare403 => respond::status(403),
                    InvalidTokenStyle::Rfc6578 => respond::with_body(
                        403,
                        "text/xml; charset=UTF-8",
                        Body::from_string(valid_sync_token_error()),
                    ),
                })
            }
        }
    };
    if ctx.sw.report_includes_collection {
        self_entry(ms, href, col, &PropRequest::AllProp, true);
    }
    let mut items: Vec<Item> = col
        .objects
        .iter()
        .filter(|(_, o)| since.is_none_or(|s| o.changed > s))
        .map(|(n, o)| Item::Obj(snap(object_href(&acc.dsid, coll, n), o, photos)))
        .collect();
    if let Some(s) = since {
        let mut gone: Vec<(&String, &u64)> =
            col.tombstones.iter().filter(|(_, c)| **c > s).collect();
        gone.sort();
        items.extend(
            gone.into_iter()
                .map(|(n, _)| Item::Status(object_href(&acc.dsid, coll, n), NOT_FOUND)),
        );
    }
    Ok((items, col.sync_token()))
}
