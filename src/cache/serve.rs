//! Serving one request through the cache: the policy picks the path (write, bypass,
//! revalidate, lookup), and a lookup answers from a fresh entry, an object a fresh listing
//! vouches for, or multiget pieces; otherwise it fetches once for every identical request,
//! stores the answer (and what it vouches for) or serves a stale copy while iCloud fails.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use crate::body::{Body, BoxError, OriginUsed};
use crate::cache::multiget::{self, Multiget};
use crate::cache::policy::{not_modified, Policy};
use crate::cache::{Cache, Entry, Key, SHARED_ORIGIN};
use crate::upstream::error::UpstreamError;

/// What the cache needs to know of one request under `/dav/<account>/<home>/<rest>`.
pub struct Ask<'a> {
    pub account: &'a str,
    /// `calendars` or `contacts`.
    pub home: &'static str,
    pub rest: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    /// How the client reaches the bridge (answers naming it are kept per origin).
    pub public_origin: &'a str,
    /// A MOVE or COPY's local target (home, rest), invalidated with the source.
    pub destination: Option<(&'static str, String)>,
}

/// The error of a fetch: the cache shares and serves stale only for upstream failures.
pub trait FetchError: From<UpstreamError> {
    fn upstream(&self) -> Option<&UpstreamError>;
}

/// Called with a 207 answer fresh from upstream before it is stored (the DAV layer reads
/// which calendars hold only tasks from a home listing).
pub type OnListing<'a> = Option<&'a (dyn Fn(&[u8]) + Sync)>;

impl Ask<'_> {
    /// The key of this request for `origin`: answers are shared by every origin clients use
    /// ([`SHARED_ORIGIN`]); those that carry an absolute bridge URL are kept per origin.
    fn key(&self, cache: &Cache, origin: &str) -> Key {
        let path_and_query = match self.query {
            Some(q) => std::borrow::Cow::Owned(format!("{}?{q}", self.rest)),
            None => std::borrow::Cow::Borrowed(self.rest),
        };
        cache.key(
            self.account,
            self.home,
            self.method,
            &path_and_query,
            origin,
            self.headers,
            self.body,
        )
    }

    fn invalidate(&self, cache: &Cache) {
        cache.invalidate(self.account, self.home, self.rest);
        if let Some((h, r)) = &self.destination {
            cache.invalidate(self.account, h, r);
        }
    }
}

impl Cache {
    /// Answer `ask` as the cache policy says, calling `fetch` (the trip upstream) at most once.
    pub async fn serve<E, F, Fut>(
        &self,
        ask: Ask<'_>,
        on_listing: OnListing<'_>,
        fetch: F,
    ) -> Result<Response<Body>, E>
    where
        E: FetchError,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Response<Body>, E>>,
    {
        match Policy::of(self.enabled(), ask.method, ask.headers) {
            Policy::Write => {
                // What a write touches is outdated before and after it reaches upstream.
                ask.invalidate(self);
                let r = fetch().await;
                ask.invalidate(self);
                r
            }
            Policy::Bypass => fetch().await,
            Policy::Revalidate => {
                let (shared, own) = (
                    ask.key(self, SHARED_ORIGIN),
                    ask.key(self, ask.public_origin),
                );
                if let Some(e) = self.fresh(&shared).or_else(|| self.fresh(&own)) {
                    if let Some(r) = not_modified(&e, ask.headers) {
                        self.record_hit();
                        return Ok(r);
                    }
                }
                fetch().await
            }
            Policy::Lookup => self.lookup(ask, on_listing, fetch).await,
        }
    }

    /// Answer from the cache, or fetch once for every identical request and store.
    async fn lookup<E, F, Fut>(
        &self,
        ask: Ask<'_>,
        on_listing: OnListing<'_>,
        fetch: F,
    ) -> Result<Response<Body>, E>
    where
        E: FetchError,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Response<Body>, E>>,
    {
        // The shared key first: most hits are there, and the own key costs a second hash.
        let shared = ask.key(self, SHARED_ORIGIN);
        if let Some(e) = self.fresh(&shared) {
            self.record_hit();
            return Ok(e.response(None));
        }
        let own = ask.key(self, ask.public_origin);
        if let Some(r) = self.held(&ask, &shared, &own) {
            self.record_hit();
            return Ok(r);
        }
        // A multiget of objects the cache knows (from earlier multigets, in any grouping).
        let multiget = match ask.method {
            "REPORT" => crate::xml::off_thread(ask.body, multiget::parse_request)
                .await
                .flatten(),
            _ => None,
        };
        if let Some(pieces) = multiget
            .as_ref()
            .and_then(|mg| self.pieces(ask.account, ask.public_origin, mg))
        {
            self.record_hit();
            return Ok(assembled(&pieces));
        }
        let mut flight = self.single_flight(&shared).await;
        if let Some(e) = self.fresh(&shared).or_else(|| self.fresh(&own)) {
            self.record_hit();
            return Ok(e.response(None));
        }
        // The identical request we waited for just failed: same answer, no second attempt.
        let result = match flight.recent_failure() {
            Some(e) => Err(E::from(e)),
            None => {
                self.record_miss();
                let r = fetch().await;
                match r.as_ref().err().and_then(FetchError::upstream) {
                    Some(e) => flight.failed(e),
                    None => flight.succeeded(),
                }
                r
            }
        };
        let stored = Stored {
            keys: (shared, own),
            multiget: multiget.as_ref(),
            on_listing,
        };
        Box::pin(self.finish(&ask, result, stored)).await
    }

    /// A fresh answer under the client's own origin, or a GET of an object fetched before
    /// `fresh_secs` ago that a fresh listing shows unchanged.
    fn held(&self, ask: &Ask<'_>, shared: &Key, own: &Key) -> Option<Response<Body>> {
        if let Some(e) = self.fresh(own) {
            return Some(e.response(None));
        }
        if ask.method != "GET" || ask.query.is_some() {
            return None;
        }
        let validated = |k| self.validated_object(k, ask.account, ask.home, ask.rest);
        validated(shared).or_else(|| validated(own))
    }

    /// After the fetch: store a whole 200/207 answer (and what it vouches for), or serve a
    /// stale one while iCloud fails.
    async fn finish<E: FetchError>(
        &self,
        ask: &Ask<'_>,
        result: Result<Response<Body>, E>,
        stored: Stored<'_>,
    ) -> Result<Response<Body>, E> {
        match result {
            Ok(resp) if matches!(resp.status().as_u16(), 200 | 207) => {
                self.store(ask, resp, stored).await
            }
            Ok(resp) => Ok(resp),
            Err(e) => {
                let Some(why) = e.upstream().filter(|u| u.serve_stale()) else {
                    return Err(e);
                };
                let (shared, own) = &stored.keys;
                match self.any(shared).or_else(|| self.any(own)) {
                    Some(stale) => {
                        self.stats.stale_served.fetch_add(1, Ordering::Relaxed);
                        Ok(stale.response(Some(why.state().as_str())))
                    }
                    None => Err(e),
                }
            }
        }
    }

    /// Keep a whole answer (under the shared key unless its body names the client's origin)
    /// and hand it on; one too large for the cache streams on unstored.
    async fn store<E: FetchError>(
        &self,
        ask: &Ask<'_>,
        resp: Response<Body>,
        stored: Stored<'_>,
    ) -> Result<Response<Body>, E> {
        let (head, body) = resp.into_parts();
        let buffered = buffer_up_to(body, self.max_entry()).await;
        // Read once the body is through the rewriter; unknown counts as used.
        let origin_used = head
            .extensions
            .get::<OriginUsed>()
            .is_none_or(OriginUsed::get);
        let (shared, own) = stored.keys;
        let (key, origin) = if origin_used {
            (own, ask.public_origin)
        } else {
            (shared, SHARED_ORIGIN)
        };
        let chunks = match buffered {
            Ok(Buffered::Whole(chunks)) => chunks,
            Ok(Buffered::TooBig(body)) => return Ok(Response::from_parts(head, body)),
            Err(e) => {
                return Err(E::from(UpstreamError::BadResponse {
                    detail: format!("its answer was cut off ({e})"),
                }))
            }
        };
        let now = Instant::now();
        // Kept in one piece: a hit is then one buffer handed to the socket, not a stream of
        // the rewriter's chunks (one copy per miss, none per hit).
        let whole = match chunks.as_slice() {
            [one] => one.clone(),
            _ => Bytes::from(chunks.concat()),
        };
        if head.status == StatusCode::MULTI_STATUS {
            // What iCloud just listed vouches for stored bodies at those ETags.
            self.store_listed(ask.account, &whole, now);
            if let Some(note) = stored.on_listing {
                note(&whole);
            }
            if let Some(mg) = stored.multiget {
                if let Some(pieces) = multiget::split_response(&whole) {
                    self.store_pieces(ask.account, origin, mg.signature, pieces);
                }
            }
        }
        let entry = Entry {
            status: head.status,
            headers: head.headers,
            body: vec![whole],
            stored: now,
        };
        let resp = entry.response(None);
        self.insert(key, entry);
        Ok(resp)
    }
}

/// What a fetched answer is stored under, and what else it feeds.
struct Stored<'a> {
    keys: (Key, Key),
    multiget: Option<&'a Multiget>,
    on_listing: OnListing<'a>,
}

/// A multistatus made of stored multiget pieces.
fn assembled(pieces: &[Bytes]) -> Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    let entry = Entry {
        status: StatusCode::MULTI_STATUS,
        headers,
        body: multiget::assemble(pieces),
        stored: Instant::now(),
    };
    entry.response(None)
}

enum Buffered {
    Whole(Vec<Bytes>),
    /// Longer than the limit: the part read so far followed by the rest, as a stream.
    TooBig(Body),
}

/// Read `body` whole (as its chunks) if it is at most `limit` bytes; otherwise hand it back
/// as a stream that starts with what was read.
async fn buffer_up_to(mut body: Body, limit: usize) -> Result<Buffered, BoxError> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            len += data.len();
            chunks.push(data);
            if len > limit {
                let head = futures_util::stream::iter(
                    chunks
                        .into_iter()
                        .map(|c| Ok::<_, BoxError>(Frame::data(c))),
                );
                let rest = http_body_util::BodyStream::new(body);
                return Ok(Buffered::TooBig(BodyExt::boxed(StreamBody::new(
                    head.chain(rest),
                ))));
            }
        }
    }
    Ok(Buffered::Whole(chunks))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::full;
    use crate::config::CacheConfig;
    use crate::upstream::error::Unreachable;
    use std::sync::atomic::AtomicUsize;

    #[derive(Debug)]
    struct Failed(UpstreamError);

    impl From<UpstreamError> for Failed {
        fn from(e: UpstreamError) -> Failed {
            Failed(e)
        }
    }

    impl FetchError for Failed {
        fn upstream(&self) -> Option<&UpstreamError> {
            Some(&self.0)
        }
    }

    fn cache(fresh_secs: u64) -> Cache {
        Cache::new(&CacheConfig {
            max_bytes: 1 << 20,
            fresh_secs,
        })
    }

    fn ask<'a>(method: &'a str, rest: &'a str, headers: &'a HeaderMap, body: &'a Bytes) -> Ask<'a> {
        Ask {
            account: "alice",
            home: "calendars",
            rest,
            query: None,
            method,
            headers,
            body,
            public_origin: "http://127.0.0.1:8008",
            destination: None,
        }
    }

    /// Serve `method rest` through `cache`, counting trips upstream in `trips`; upstream
    /// answers `answer` (a body) or fails.
    async fn through(
        cache: &Cache,
        method: &str,
        rest: &str,
        trips: &AtomicUsize,
        answer: Option<&'static str>,
    ) -> Result<Response<Body>, Failed> {
        let (headers, body) = (HeaderMap::new(), Bytes::new());
        cache
            .serve(ask(method, rest, &headers, &body), None, || async {
                trips.fetch_add(1, Ordering::SeqCst);
                // A trip takes time: identical requests arrive meanwhile.
                tokio::task::yield_now().await;
                match answer {
                    Some(b) => Ok(Response::new(full(b))),
                    None => Err(Failed(UpstreamError::Unreachable {
                        kind: Unreachable::Connect,
                        detail: "connection refused".into(),
                    })),
                }
            })
            .await
    }

    async fn text(r: Response<Body>) -> String {
        let b = r.into_body().collect().await.map(|c| c.to_bytes());
        String::from_utf8_lossy(&b.unwrap_or_default()).into_owned()
    }

    #[tokio::test]
    async fn a_fresh_answer_is_served_without_a_second_trip() {
        let (c, trips) = (cache(30), AtomicUsize::new(0));
        let a = through(&c, "GET", "work/a.ics", &trips, Some("A")).await;
        let b = through(&c, "GET", "work/a.ics", &trips, Some("B")).await;
        assert_eq!(text(a.unwrap()).await, "A");
        assert_eq!(text(b.unwrap()).await, "A");
        assert_eq!(trips.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_write_outdates_what_it_touches() {
        let (c, trips) = (cache(30), AtomicUsize::new(0));
        through(&c, "GET", "work/a.ics", &trips, Some("A"))
            .await
            .unwrap();
        through(&c, "PUT", "work/a.ics", &trips, Some(""))
            .await
            .unwrap();
        let after = through(&c, "GET", "work/a.ics", &trips, Some("A2")).await;
        assert_eq!(text(after.unwrap()).await, "A2");
        assert_eq!(trips.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failing_upstream_gets_the_stale_copy_marked() {
        let (c, trips) = (cache(0), AtomicUsize::new(0));
        through(&c, "GET", "work/a.ics", &trips, Some("A"))
            .await
            .unwrap();
        let stale = through(&c, "GET", "work/a.ics", &trips, None)
            .await
            .unwrap();
        assert_eq!(
            stale
                .headers()
                .get("x-icloud-bridge-stale")
                .map(|v| v.as_bytes()),
            Some(&b"unreachable"[..])
        );
        assert_eq!(text(stale).await, "A");
        // Nothing stored for another path: the failure itself.
        let none = through(&c, "GET", "work/b.ics", &trips, None).await;
        assert!(none.is_err());
        assert_eq!(trips.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn identical_misses_share_one_trip() {
        let (c, trips) = (cache(30), AtomicUsize::new(0));
        let one = || through(&c, "PROPFIND", "work/", &trips, Some("<x/>"));
        let (a, b, d) = tokio::join!(one(), one(), one());
        for r in [a, b, d] {
            assert_eq!(text(r.unwrap()).await, "<x/>");
        }
        assert_eq!(trips.load(Ordering::SeqCst), 1);
        assert_eq!(c.stats.coalesced.load(Ordering::SeqCst), 2);
    }
}
