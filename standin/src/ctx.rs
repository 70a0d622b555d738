//! The per-request context handed to handlers, and multistatus bodies that stream large listings.

use crate::accounts::{read, Account};
use crate::body::Body;
use crate::objprops::{ObjRender, ObjSnap};
use crate::props::PropCtx;
use crate::respond::{self, Resp};
use crate::state::{Role, Shared};
use crate::switches::Switches;
use crate::xml_in::{self, Elem};
use crate::xml_out::Ms;
use bytes::Bytes;
use http::{HeaderMap, Method};

/// The parts of a request the handlers need.
pub struct Req {
    pub method: Method,
    /// Path and query as sent.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Handler context.
pub struct Ctx<'a> {
    pub shared: &'a Shared,
    pub sw: &'a Switches,
    pub role: Role,
    pub req: &'a Req,
}

impl<'a> Ctx<'a> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.req.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Depth header: 0, 1 (infinity is treated as 1); `default` when absent.
    pub fn depth(&self, default: u8) -> u8 {
        match self.header("depth").map(str::trim) {
            Some("0") => 0,
            Some(_) => 1,
            None => default,
        }
    }

    pub fn bad_request(&self) -> Resp {
        respond::bad_request(&self.shared.server_hash)
    }

    /// Parse the XML body. `Ok(None)` for an empty body; 400 for leading whitespace (when the
    /// switch is on) or malformed XML.
    pub fn xml(&self) -> Result<Option<Elem>, Resp> {
        let b = &self.req.body;
        if b.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        if self.sw.reject_leading_whitespace_body && b.first().is_some_and(u8::is_ascii_whitespace)
        {
            return Err(self.bad_request());
        }
        xml_in::parse(b).map(Some).ok_or_else(|| self.bad_request())
    }

    pub fn prop_ctx<'b>(&self, acc: &'b Account) -> PropCtx<'b>
    where
        'a: 'b,
    {
        let partition = acc.partition();
        let home_token = read(&acc.data).home_token();
        PropCtx {
            sw: self.sw,
            dsid: &acc.dsid,
            apple_id: &acc.apple_id,
            display_name: &acc.display_name,
            is_cal_host: self.role.is_cal(),
            cal_home_url: self.shared.cal_home_url(partition, &acc.dsid),
            card_home_url: self.shared.card_home_url(partition, &acc.dsid),
            home_token,
        }
    }

    pub fn obj_render(&self, acc: &Account, req: xml_in::PropRequest, is_card: bool) -> ObjRender {
        ObjRender::new(
            self.sw,
            req,
            is_card,
            self.shared.card_base(acc.partition()),
            &acc.dsid,
        )
    }
}

/// One entry of a listing or report.
pub enum Item {
    Obj(ObjSnap),
    /// href + status line (deleted member, unknown multiget href).
    Status(String, &'static str),
}

const CHUNK: usize = 64 * 1024;
const INLINE_ITEMS: usize = 256;

fn render_item(ms: &mut Ms, r: &ObjRender, it: &Item) {
    match it {
        Item::Obj(s) => {
            let (found, missing) = r.split(s);
            ms.response(&s.href, &found, &missing);
        }
        Item::Status(h, st) => ms.status_response(h, st),
    }
}

/// A 207 whose body is `prefix`, the items, then `suffix`; large listings are generated lazily
/// in 64 KiB chunks after every lock has been released.
pub fn stream_items(
    noise: bool,
    prefix: String,
    items: Vec<Item>,
    render: ObjRender,
    suffix: String,
) -> Resp {
    if items.len() <= INLINE_ITEMS {
        let mut ms = Ms::with_capacity(noise, prefix.len() + suffix.len() + items.len() * 512);
        ms.buf.push_str(&prefix);
        for it in &items {
            render_item(&mut ms, &render, it);
        }
        ms.buf.push_str(&suffix);
        return respond::multistatus(Body::from_string(ms.buf));
    }
    let mut iter = items.into_iter();
    let mut prefix = Some(prefix);
    let mut suffix = Some(suffix);
    let mut ms = Ms::with_capacity(noise, CHUNK + 16 * 1024);
    let gen = move || {
        if let Some(p) = prefix.take() {
            ms.buf.push_str(&p);
        }
        while ms.buf.len() < CHUNK {
            match iter.next() {
                Some(it) => render_item(&mut ms, &render, &it),
                None => {
                    if let Some(s) = suffix.take() {
                        ms.buf.push_str(&s);
                    }
                    break;
                }
            }
        }
        (!ms.buf.is_empty()).then(|| Bytes::from(ms.take()))
    };
    respond::multistatus(Body::Stream(Box::new(gen)))
}

/// Text of the closing part of a multistatus (optional sync-token, then `</multistatus>`).
pub fn ms_suffix(noise: bool, sync_token: Option<&str>) -> String {
    let mut ms = Ms::new(noise);
    if let Some(t) = sync_token {
        ms.sync_token(t);
    }
    ms.foot();
    ms.buf
}
