//! Object snapshots (taken under the account lock, rendered after it is released), their
//! properties, and the served form of calendar and vCard data.

use crate::ical;
use crate::recur::http_date;
use crate::store::{Collection, Obj};
use crate::switches::{PhotoStyle, Switches};
use crate::vcard;
use crate::xml_in::{PropName, PropRequest, CALDAV, CARDDAV, DAV};
use crate::xml_out::{data_text, el, el_text, empty};
use base64::Engine;
use bytes::Bytes;
use std::borrow::Cow;

/// A copy of what rendering needs from one object.
#[derive(Clone, Debug)]
pub struct ObjSnap {
    /// Encoded href.
    pub href: String,
    pub etag: String,
    pub body: Bytes,
    pub modified: i64,
    /// (hash, bytes) of the card's photo.
    pub photo: Option<(String, Bytes)>,
}

/// Snapshot one object; `photos` resolves card photo blobs.
pub fn snap(href: String, obj: &Obj, photos: &std::collections::HashMap<String, Bytes>) -> ObjSnap {
    ObjSnap {
        href,
        etag: obj.etag.clone(),
        body: obj.body.clone(),
        modified: obj.modified,
        photo: obj
            .photo
            .as_ref()
            .map(|h| (h.clone(), photos.get(h).cloned().unwrap_or_default())),
    }
}

/// Everything needed to render object properties and data, owned (moves into stream bodies).
#[derive(Clone, Debug)]
pub struct ObjRender {
    pub req: PropRequest,
    pub is_card: bool,
    pub cdata: bool,
    pub duplicate_dtstamp: bool,
    pub card_getcontenttype: bool,
    pub photo_style: PhotoStyle,
    /// `http://127.0.0.1:<part-card>` for photo URIs.
    pub card_base: String,
    pub dsid: String,
    /// Partial address-data (`<address-data><prop name=…/>`), honoured only when
    /// `ignore_partial_props` is off.
    pub partial: Option<Vec<String>>,
}

impl ObjRender {
    pub fn new(
        sw: &Switches,
        req: PropRequest,
        is_card: bool,
        card_base: String,
        dsid: &str,
    ) -> Self {
        ObjRender {
            req,
            is_card,
            cdata: sw.cdata_calendar_data,
            duplicate_dtstamp: sw.duplicate_dtstamp,
            card_getcontenttype: sw.card_getcontenttype,
            photo_style: sw.photo_style,
            card_base,
            dsid: dsid.to_string(),
            partial: None,
        }
    }

    /// The body as served (duplicate DTSTAMP, the PHOTO line).
    pub fn served<'a>(&self, s: &'a ObjSnap) -> Cow<'a, str> {
        let text = String::from_utf8_lossy(&s.body);
        if let (true, Some(keep)) = (self.is_card, &self.partial) {
            return Cow::Owned(partial_card(&text, keep));
        }
        if self.is_card {
            let Some((hash, bytes)) = &s.photo else {
                return text;
            };
            let line = match self.photo_style {
                PhotoStyle::UriWcs => format!(
                    "PHOTO;VALUE=uri;X-ABCROP-RECTANGLE=ABClipRect_1&0&0&100&100&{hash}:{}/{}/wcs/{hash}",
                    self.card_base, self.dsid
                ),
                PhotoStyle::UriGateway => format!(
                    "PHOTO;VALUE=uri;TYPE=JPEG;X-ABCROP-RECTANGLE=ABClipRect_1&0&0&100&100&{hash}:{}/contacts/{}/ck/card/{hash}",
                    self.card_base, self.dsid
                ),
                PhotoStyle::Inline => format!(
                    "PHOTO;ENCODING=b;TYPE=JPEG:{}",
                    base64::engine::general_purpose::STANDARD.encode(bytes)
                ),
            };
            return Cow::Owned(vcard::insert_before_end(&text, &line));
        }
        if self.duplicate_dtstamp {
            return Cow::Owned(ical::duplicate_dtstamp(&text));
        }
        text
    }

    fn content_type(&self) -> Option<&'static str> {
        if self.is_card {
            self.card_getcontenttype
                .then_some("text/vcard; charset=utf-8")
        } else {
            Some("text/calendar; charset=utf-8")
        }
    }

    fn prop(&self, s: &ObjSnap, p: &PropName) -> Option<String> {
        Some(match (p.ns.as_str(), p.name.as_str()) {
            (DAV, "getetag") => el_text(DAV, "getetag", &s.etag),
            (DAV, "getcontenttype") => el_text(DAV, "getcontenttype", self.content_type()?),
            (DAV, "getcontentlength") => {
                el_text(DAV, "getcontentlength", &s.body.len().to_string())
            }
            (DAV, "getlastmodified") => el_text(DAV, "getlastmodified", &http_date(s.modified)),
            (DAV, "resourcetype") => empty(DAV, "resourcetype"),
            (DAV, "current-user-principal") => el(
                DAV,
                "current-user-principal",
                &crate::xml_out::href(&format!("/{}/principal/", self.dsid)),
            ),
            (CALDAV, "calendar-data") if !self.is_card => self.data(CALDAV, "calendar-data", s),
            (CARDDAV, "address-data") if self.is_card => self.data(CARDDAV, "address-data", s),
            _ => return None,
        })
    }

    fn data(&self, ns: &str, name: &str, s: &ObjSnap) -> String {
        let served = self.served(s);
        let mut out = String::with_capacity(served.len() + 96);
        out.push('<');
        out.push_str(name);
        out.push_str(" xmlns=\"");
        out.push_str(ns);
        out.push_str("\">");
        data_text(&served, self.cdata, &mut out);
        out.push_str("</");
        out.push_str(name);
        out.push('>');
        out
    }

    /// (found, missing) for one object.
    pub fn split(&self, s: &ObjSnap) -> (Vec<String>, Vec<PropName>) {
        let defaults = crate::props::names(&[
            (DAV, "getetag"),
            (DAV, "getcontenttype"),
            (DAV, "getcontentlength"),
            (DAV, "getlastmodified"),
            (DAV, "resourcetype"),
        ]);
        crate::props::split(&self.req, &defaults, |p| self.prop(s, p))
    }
}

/// Keep only BEGIN/END/VERSION/UID and the named properties of a card.
fn partial_card(text: &str, keep: &[String]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in ical::unfold(text) {
        let Some(l) = ical::parse_line(&line) else {
            continue;
        };
        let always = ["BEGIN", "END", "VERSION", "UID"].contains(&l.name.as_str());
        if always || keep.iter().any(|k| k.eq_ignore_ascii_case(&l.name)) {
            out.push_str(&line);
            out.push_str("\r\n");
        }
    }
    out
}

/// Snapshot every object of a collection, in name order (bodies are shared, not copied).
pub fn snap_all(
    dsid: &str,
    coll_key: &str,
    col: &Collection,
    photos: &std::collections::HashMap<String, Bytes>,
) -> Vec<ObjSnap> {
    let base = crate::paths::collection_href(dsid, coll_key);
    col.objects
        .iter()
        .map(|(name, obj)| {
            let mut h = String::with_capacity(base.len() + name.len() + 8);
            h.push_str(&base);
            h.push_str(&crate::paths::enc(name));
            snap(h, obj, photos)
        })
        .collect()
}
