//! Request paths (spec C4) and host-relative, percent-encoded hrefs.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Characters left as they are in href segments; everything else (`@`, space, …) is encoded.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encode one path segment.
pub fn enc(seg: &str) -> String {
    utf8_percent_encode(seg, SEGMENT).to_string()
}

/// Percent-decode one segment.
pub fn dec(seg: &str) -> String {
    percent_decode_str(seg).decode_utf8_lossy().into_owned()
}

/// What a path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Root,
    WellKnown,
    /// `/principal/` (what `principal_href_bug` hands out).
    BarePrincipal,
    Principal(String),
    CalHome(String),
    CardHome(String),
    /// `coll` is `calendars/<id>` or `carddavhome/<id>` (decoded id).
    Collection {
        dsid: String,
        coll: String,
    },
    Object {
        dsid: String,
        coll: String,
        name: String,
    },
    Photo {
        dsid: String,
        hash: String,
    },
    Unknown,
}

impl Target {
    pub fn dsid(&self) -> Option<&str> {
        match self {
            Target::Principal(d) | Target::CalHome(d) | Target::CardHome(d) => Some(d),
            Target::Collection { dsid, .. }
            | Target::Object { dsid, .. }
            | Target::Photo { dsid, .. } => Some(dsid),
            _ => None,
        }
    }
}

/// Parse a raw request path.
pub fn parse(raw: &str) -> Target {
    let path = raw.split('?').next().unwrap_or("");
    if path == "/" || path.is_empty() {
        return Target::Root;
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.eq_ignore_ascii_case("/.well-known/caldav")
        || trimmed.eq_ignore_ascii_case("/.well-known/carddav")
    {
        return Target::WellKnown;
    }
    if trimmed == "/principal" {
        return Target::BarePrincipal;
    }
    let segs: Vec<String> = trimmed
        .trim_start_matches('/')
        .split('/')
        .map(dec)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["contacts", d, "ck", "card", h] => Target::Photo {
            dsid: d.to_string(),
            hash: h.to_string(),
        },
        [d, rest @ ..] if !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) => {
            let d = d.to_string();
            match rest {
                ["principal"] => Target::Principal(d),
                ["calendars"] => Target::CalHome(d),
                ["carddavhome"] => Target::CardHome(d),
                ["wcs", h] => Target::Photo {
                    dsid: d,
                    hash: h.to_string(),
                },
                [home @ ("calendars" | "carddavhome"), id] => Target::Collection {
                    dsid: d,
                    coll: format!("{home}/{id}"),
                },
                [home @ ("calendars" | "carddavhome"), id, name] => Target::Object {
                    dsid: d,
                    coll: format!("{home}/{id}"),
                    name: name.to_string(),
                },
                _ => Target::Unknown,
            }
        }
        _ => Target::Unknown,
    }
}

/// `/<dsid>/calendars/<id>/` for a collection key.
pub fn collection_href(dsid: &str, coll: &str) -> String {
    let (home, id) = coll.split_once('/').unwrap_or((coll, ""));
    format!("/{dsid}/{home}/{}/", enc(id))
}

/// `/<dsid>/calendars/<id>/<name>`.
pub fn object_href(dsid: &str, coll: &str, name: &str) -> String {
    let mut h = collection_href(dsid, coll);
    h.push_str(&enc(name));
    h
}

/// Path part of a Destination header (absolute URL or path).
pub fn destination_path(dest: &str) -> String {
    let d = dest.trim();
    match d.split_once("://") {
        Some((_, rest)) => match rest.find('/') {
            Some(i) => rest[i..].to_string(),
            None => "/".to_string(),
        },
        None => d.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_encodes() {
        assert_eq!(parse("/"), Target::Root);
        assert_eq!(parse("/.well-known/caldav"), Target::WellKnown);
        assert_eq!(parse("/123/principal/"), Target::Principal("123".into()));
        assert_eq!(
            parse("/123/calendars/home/abc%40example.com.ics"),
            Target::Object {
                dsid: "123".into(),
                coll: "calendars/home".into(),
                name: "abc@example.com.ics".into()
            }
        );
        assert_eq!(
            object_href("123", "calendars/home", "abc@example.com.ics"),
            "/123/calendars/home/abc%40example.com.ics"
        );
        assert_eq!(parse("/home"), Target::Unknown);
        assert_eq!(destination_path("http://h:1/a/b"), "/a/b");
    }
}
