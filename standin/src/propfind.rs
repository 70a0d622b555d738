//! PROPFIND on the root, well-known paths, principal, homes, collections and objects (C5).

use crate::accounts::{read, Account};
use crate::ctx::{ms_suffix, stream_items, Ctx, Item};
use crate::objprops::{snap, snap_all};
use crate::paths::{collection_href, Target};
use crate::props::{self, PropCtx};
use crate::respond::{self, Resp};
use crate::store::CollKind;
use crate::xml_in::{prop_request, PropName, PropRequest};
use crate::xml_out::Ms;

fn request(ctx: &Ctx) -> Result<PropRequest, Resp> {
    Ok(match ctx.xml()? {
        Some(el) => prop_request(&el),
        None => PropRequest::AllProp,
    })
}

fn single(
    ctx: &Ctx,
    href: &str,
    req: &PropRequest,
    defaults: &[PropName],
    f: impl Fn(&PropName) -> Option<String>,
) -> Resp {
    let (found, missing) = props::split(req, defaults, f);
    let mut ms = Ms::new(ctx.sw.xml_whitespace_noise);
    ms.head();
    ms.response(href, &found, &missing);
    ms.foot();
    respond::multistatus(crate::body::Body::from_string(ms.buf))
}

/// PROPFIND dispatch for an authenticated account.
pub fn propfind(ctx: &Ctx, acc: &Account, target: &Target) -> Resp {
    let req = match request(ctx) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let pc = ctx.prop_ctx(acc);
    let d = acc.dsid.as_str();
    match target {
        Target::Root => single(ctx, "/", &req, &props::root_defaults(), |p| {
            props::root_prop(&pc, p)
        }),
        Target::WellKnown => single(
            ctx,
            &pc.principal_path(),
            &req,
            &props::root_defaults(),
            |p| props::root_prop(&pc, p),
        ),
        Target::Unknown => single(
            ctx,
            ctx.req.path.split('?').next().unwrap_or("/"),
            &req,
            &props::root_defaults(),
            |p| props::root_prop(&pc, p),
        ),
        Target::Principal(_) | Target::BarePrincipal => {
            let href = if ctx.sw.principal_href_bug {
                "/principal/".to_string()
            } else {
                pc.principal_path()
            };
            let defaults = props::principal_defaults(ctx.role.is_cal());
            single(ctx, &href, &req, &defaults, |p| {
                props::principal_prop(&pc, p)
            })
        }
        Target::CalHome(_) => home(
            ctx,
            acc,
            &pc,
            &req,
            "calendars",
            &format!("/{d}/calendars/"),
        ),
        Target::CardHome(_) => home(
            ctx,
            acc,
            &pc,
            &req,
            "carddavhome",
            &format!("/{d}/carddavhome/"),
        ),
        Target::Collection { coll, .. } => collection(ctx, acc, &pc, &req, coll),
        Target::Object { coll, name, .. } => object(ctx, acc, &req, coll, name),
        Target::Photo { .. } => respond::status(405),
    }
}

fn home(
    ctx: &Ctx,
    acc: &Account,
    pc: &PropCtx,
    req: &PropRequest,
    prefix: &str,
    href: &str,
) -> Resp {
    let is_cal = prefix == "calendars";
    let mut ms = Ms::new(ctx.sw.xml_whitespace_noise);
    ms.head();
    let defaults = props::home_defaults();
    let (found, missing) = props::split(req, &defaults, |p| {
        if is_cal {
            props::cal_home_prop(pc, p)
        } else {
            props::card_home_prop(pc, p)
        }
    });
    ms.response(href, &found, &missing);
    if ctx.depth(1) == 1 {
        let data = read(&acc.data);
        let cdefaults = props::collection_defaults();
        let start = format!("{prefix}/");
        for (key, col) in data.collections.range(start.clone()..) {
            if !key.starts_with(&start) {
                break;
            }
            let (found, missing) =
                props::split(req, &cdefaults, |p| props::collection_prop(pc, col, p));
            ms.response(&collection_href(&acc.dsid, key), &found, &missing);
        }
    }
    ms.foot();
    respond::multistatus(crate::body::Body::from_string(ms.buf))
}

fn collection(ctx: &Ctx, acc: &Account, pc: &PropCtx, req: &PropRequest, coll: &str) -> Resp {
    let noise = ctx.sw.xml_whitespace_noise;
    let data = read(&acc.data);
    let Some(col) = data.collections.get(coll) else {
        return respond::status(404);
    };
    if ctx.role.is_cal() != coll.starts_with("calendars/") {
        return respond::status(404);
    }
    let mut ms = Ms::new(noise);
    ms.head();
    let (found, missing) = props::split(req, &props::collection_defaults(), |p| {
        props::collection_prop(pc, col, p)
    });
    ms.response(&collection_href(&acc.dsid, coll), &found, &missing);
    let prefix = ms.take();
    let is_card = col.kind == CollKind::AddressBook;
    let items: Vec<Item> = if ctx.depth(1) == 1 {
        snap_all(&acc.dsid, coll, col, &data.photos)
            .into_iter()
            .map(Item::Obj)
            .collect()
    } else {
        Vec::new()
    };
    drop(data);
    let render = ctx.obj_render(acc, req.clone(), is_card);
    stream_items(noise, prefix, items, render, ms_suffix(noise, None))
}

fn object(ctx: &Ctx, acc: &Account, req: &PropRequest, coll: &str, name: &str) -> Resp {
    let data = read(&acc.data);
    let Some(col) = data.collections.get(coll) else {
        return respond::status(404);
    };
    let Some(obj) = col.objects.get(name).filter(|o| o.visible()) else {
        return respond::status(404);
    };
    let s = snap(
        crate::paths::object_href(&acc.dsid, coll, name),
        obj,
        &data.photos,
    );
    let is_card = col.kind == CollKind::AddressBook;
    drop(data);
    let render = ctx.obj_render(acc, req.clone(), is_card);
    let noise = ctx.sw.xml_whitespace_noise;
    let mut ms = Ms::new(noise);
    ms.head();
    stream_items(
        noise,
        ms.take(),
        vec![Item::Obj(s)],
        render,
        ms_suffix(noise, None),
    )
}
