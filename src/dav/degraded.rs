//! Answers the bridge gives itself while iCloud refuses the password or cannot be reached
//! and no stored copy fits the request: `OPTIONS` under the homes, and "nothing changed since
//! your token" to a `sync-collection` REPORT. Clients then keep their calendars and address
//! books enabled (Thunderbird disables a calendar whose sync fails) and sync for real once
//! iCloud answers again; every write still gets the explanation.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};

use crate::body::{full, Body};
use crate::cache::mark_stale;
use crate::upstream::error::UpstreamError;
use crate::xml::escape_text;
use crate::xml::inspect::RequestInfo;

/// A stand-in answer for a read that failed with `e`, if the bridge can give one without
/// iCloud; `info` is what the request body asks (REPORT, PROPFIND).
pub fn answer(
    method: &str,
    info: Option<&RequestInfo>,
    e: &UpstreamError,
) -> Option<Response<Body>> {
    if !e.serve_stale() {
        return None;
    }
    let mut r = match method {
        "OPTIONS" => crate::dav::discovery::options(false),
        "REPORT" => unchanged_since(info?)?,
        _ => return None,
    };
    mark_stale(r.headers_mut(), e.state().as_str());
    Some(r)
}

/// A `sync-collection` answer that lists no change and hands the client's token back: its
/// copy stays as it is, and the next sync asks again from the same point.
fn unchanged_since(info: &RequestInfo) -> Option<Response<Body>> {
    if info.root != ("DAV:".to_string(), "sync-collection".to_string()) {
        return None;
    }
    // An initial sync (no token) needs the whole collection: nothing to stand in for it.
    let token = info.sync_token.as_deref().filter(|t| !t.is_empty())?;
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><d:multistatus xmlns:d=\"DAV:\"><d:sync-token>{}</d:sync-token></d:multistatus>",
        escape_text(token)
    );
    let mut r = Response::new(full(Bytes::from(body)));
    *r.status_mut() = StatusCode::MULTI_STATUS;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::error::{AuthReason, Unreachable};
    use http_body_util::BodyExt;

    fn refused() -> UpstreamError {
        UpstreamError::AuthRejected {
            reason: AuthReason::Revoked,
            apple_id: "alice@icloud.com".into(),
        }
    }

    fn sync(token: &str) -> RequestInfo {
        let body = format!("<d:sync-collection xmlns:d=\"DAV:\"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>");
        crate::xml::inspect(body.as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn a_sync_with_a_token_hears_nothing_changed() {
        let r = answer("REPORT", Some(&sync("http://x/ns/sync/7&amp;")), &refused()).unwrap();
        assert_eq!(r.status(), 207);
        assert_eq!(r.headers()["x-icloud-bridge-stale"], "auth_rejected");
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("<d:sync-token>http://x/ns/sync/7&amp;</d:sync-token>"),
            "{text}"
        );
        assert!(!text.contains("<d:response>"), "{text}");
    }

    #[test]
    fn nothing_is_made_up_where_the_bridge_knows_nothing() {
        // An initial sync, another REPORT, a write, a garbled answer: no stand-in.
        assert!(answer("REPORT", Some(&sync("")), &refused()).is_none());
        let query =
            crate::xml::inspect(b"<c:calendar-query xmlns:c=\"urn:ietf:params:xml:ns:caldav\"/>")
                .unwrap();
        assert!(answer("REPORT", Some(&query), &refused()).is_none());
        assert!(answer("PUT", None, &refused()).is_none());
        let garbled = UpstreamError::BadResponse { detail: "x".into() };
        assert!(answer("OPTIONS", None, &garbled).is_none());
        let down = UpstreamError::Unreachable {
            kind: Unreachable::Connect,
            detail: "refused".into(),
        };
        let r = answer("OPTIONS", None, &down).unwrap();
        assert!(r.headers()["dav"]
            .to_str()
            .unwrap()
            .contains("calendar-access"));
    }
}
