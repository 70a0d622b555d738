//! The cache policy: which requests may be answered from the cache, and how a client's
//! conditional request is answered from a stored entry.

use http::{HeaderMap, HeaderValue, Response};

use crate::body::{empty, Body};
use crate::cache::Entry;

/// Conditional request headers: such requests go to upstream (except a revalidation).
const CONDITIONAL: &[&str] = &[
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
];

/// What the cache may do for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A write: what it touches is invalidated before and after it reaches upstream.
    Write,
    /// Not cacheable (the cache is off, another method, a condition other than
    /// `If-None-Match`): straight to upstream.
    Bypass,
    /// A client checking its copy with `If-None-Match` alone: 304 from a fresh entry with the
    /// same ETag, otherwise upstream (its answer depends on the condition: not stored).
    Revalidate,
    /// Answer from the cache when fresh; otherwise one upstream request for all identical
    /// ones, stored, and served stale while iCloud fails.
    Lookup,
}

impl Policy {
    pub fn of(cache_enabled: bool, method: &str, headers: &HeaderMap) -> Policy {
        if !matches!(method, "GET" | "HEAD" | "OPTIONS" | "PROPFIND" | "REPORT") {
            return Policy::Write;
        }
        let conditions = CONDITIONAL
            .iter()
            .filter(|h| headers.contains_key(**h))
            .count();
        let revalidating =
            method == "GET" && conditions == 1 && headers.contains_key(http::header::IF_NONE_MATCH);
        if !cache_enabled || !matches!(method, "GET" | "PROPFIND" | "REPORT") {
            Policy::Bypass
        } else if revalidating {
            Policy::Revalidate
        } else if conditions > 0 {
            Policy::Bypass
        } else {
            Policy::Lookup
        }
    }
}

/// `304 Not Modified` if the client's `If-None-Match` names the cached entry's ETag.
pub fn not_modified(e: &Entry, headers: &HeaderMap) -> Option<Response<Body>> {
    let etag = e.headers.get(http::header::ETAG)?.to_str().ok()?;
    let wanted = headers.get(http::header::IF_NONE_MATCH)?.to_str().ok()?;
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    let hit = wanted.trim() == "*" || wanted.split(',').any(|t| bare(t) == bare(etag));
    if !hit {
        return None;
    }
    let mut r = Response::new(empty());
    *r.status_mut() = http::StatusCode::NOT_MODIFIED;
    r.headers_mut()
        .insert(http::header::ETAG, HeaderValue::from_str(etag).ok()?);
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_policy_of_each_kind_of_request() {
        let none = headers(&[]);
        assert_eq!(Policy::of(true, "GET", &none), Policy::Lookup);
        assert_eq!(Policy::of(true, "REPORT", &none), Policy::Lookup);
        assert_eq!(Policy::of(false, "GET", &none), Policy::Bypass);
        assert_eq!(Policy::of(true, "OPTIONS", &none), Policy::Bypass);
        assert_eq!(Policy::of(true, "PUT", &none), Policy::Write);
        assert_eq!(Policy::of(false, "DELETE", &none), Policy::Write);
        let inm = headers(&[("if-none-match", "\"1\"")]);
        assert_eq!(Policy::of(true, "GET", &inm), Policy::Revalidate);
        assert_eq!(Policy::of(true, "PROPFIND", &inm), Policy::Bypass);
        let two = headers(&[("if-none-match", "\"1\""), ("if-modified-since", "x")]);
        assert_eq!(Policy::of(true, "GET", &two), Policy::Bypass);
    }
}
