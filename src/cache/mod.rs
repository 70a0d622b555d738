//! The response cache: rewritten answers to safe DAV requests (GET, PROPFIND, REPORT), per
//! account, bounded by `cache.max_bytes`, fresh for `cache.fresh_secs`, kept longer as stale
//! copies for when iCloud is unreachable or refusing; identical concurrent misses share one
//! upstream request, and every write through the bridge invalidates what it touches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use sha2::{Digest, Sha256};

pub mod multiget;
pub mod policy;
pub mod serve;

use crate::body::{full, Body, BoxError};
use crate::config::CacheConfig;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

/// How long entries are kept at most (as stale copies after `fresh_secs`).
const KEEP_FOR: Duration = Duration::from_secs(24 * 3600);

/// The origin in the keys of answers good for every client whatever origin it uses (most
/// answers: only bodies with an absolute bridge URL, for a photo or an attachment, are kept
/// under the origin they were made for).
pub const SHARED_ORIGIN: &str = "";

/// Request headers that change the answer and so belong in the key.
const VARY: &[&str] = &["depth", "prefer", "brief", "accept"];

/// What identifies one cacheable request: a SHA-256 over the account, the method, the local
/// path and query, the origin the client used (it can appear in rewritten bodies), the
/// headers that change the answer, the request body, and the generation of the collection
/// the path is in (bumped by writes). Built without allocating.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Key([u8; 32]);

/// Length-prefixed, so that no two different field lists hash the same bytes.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// The identity of one collection's generation counter.
fn generation_id(account: &str, home: &str, collection: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    for f in [account, home, collection] {
        field(&mut h, f.as_bytes());
    }
    let d = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    id
}

/// One stored answer, already rewritten for the client.
#[derive(Debug)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body: one piece for a stored answer, the pieces of a multiget assembled from them.
    pub body: Vec<Bytes>,
    pub stored: Instant,
}

impl Entry {
    /// Length of the body in bytes.
    pub fn len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The body in one piece (tests, small bodies).
    pub fn concat(&self) -> Bytes {
        match self.body.as_slice() {
            [one] => one.clone(),
            chunks => Bytes::from(chunks.concat()),
        }
    }

    fn weight(&self) -> u32 {
        let h: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 16)
            .sum();
        u32::try_from(self.len() + self.body.len() * 32 + h + 256).unwrap_or(u32::MAX)
    }

    /// The response for a client; `stale` marks an answer given while iCloud is failing.
    pub fn response(&self, stale: Option<&str>) -> Response<Body> {
        let body = match self.body.as_slice() {
            [] => full(Bytes::new()),
            [one] => full(one.clone()),
            chunks => {
                let frames: Vec<Result<Frame<Bytes>, BoxError>> =
                    chunks.iter().map(|c| Ok(Frame::data(c.clone()))).collect();
                BodyExt::boxed(StreamBody::new(futures_util::stream::iter(frames)))
            }
        };
        let mut r = Response::new(body);
        *r.status_mut() = self.status;
        *r.headers_mut() = self.headers.clone();
        let h = r.headers_mut();
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(self.len()));
        h.insert(
            http::header::AGE,
            HeaderValue::from(self.stored.elapsed().as_secs()),
        );
        if let Some(why) = stale {
            mark_stale(h, why);
        }
        r
    }
}

/// Mark an answer given while iCloud is failing (`why`: the account state, e.g.
/// `auth_rejected`): `X-Icloud-Bridge-Stale` and a `Warning: 110`.
pub fn mark_stale(h: &mut HeaderMap, why: &str) {
    h.insert(
        "x-icloud-bridge-stale",
        HeaderValue::from_str(why).unwrap_or(HeaderValue::from_static("stale")),
    );
    h.insert(
        http::header::WARNING,
        HeaderValue::from_static("110 icloud-bridge \"Response is Stale\""),
    );
}

/// Counters for `/metrics` and the status page.
#[derive(Default, Debug)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stale_served: AtomicU64,
    pub coalesced: AtomicU64,
    pub evictions: AtomicU64,
    pub invalidations: AtomicU64,
}

/// The cache shared by all accounts (keys carry the account, so none sees another's data).
pub struct Cache {
    entries: moka::sync::Cache<Key, Arc<Entry>>,
    fresh: Duration,
    max_entry: usize,
    /// Generation per (account, home, collection), bumped by writes.
    generations: Mutex<HashMap<[u8; 16], u64>>,
    /// One lock per key being fetched, so identical misses share one upstream request.
    inflight: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<FlightOutcome>>>>,
    pub stats: Arc<CacheStats>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The collection a local path under a home belongs to: `cal/x.ics` -> `cal/`, `cal/` ->
/// `cal/`, `` (the home) -> ``.
fn collection_of(rest: &str) -> &str {
    match rest.find('/') {
        Some(i) => &rest[..=i],
        None => "",
    }
}

impl Cache {
    pub fn new(config: &CacheConfig) -> Cache {
        let stats = Arc::new(CacheStats::default());
        let evictions = stats.clone();
        let entries = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_k: &Key, v: &Arc<Entry>| v.weight())
            .time_to_live(KEEP_FOR)
            .eviction_listener(move |_k, _v, cause| {
                if cause == moka::notification::RemovalCause::Size {
                    evictions.evictions.fetch_add(1, Ordering::Relaxed);
                }
            })
            .build();
        Cache {
            entries,
            fresh: Duration::from_secs(config.fresh_secs),
            // No single answer may take more than an eighth of the cache (4 MiB at most, so
            // that buffering an answer to cache it stays small next to a streamed one).
            max_entry: usize::try_from(config.max_bytes / 8)
                .unwrap_or(usize::MAX)
                .min(4 << 20),
            generations: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            stats,
        }
    }

    /// Whether answers are cached at all (`cache.max_bytes = 0` turns it off).
    pub fn enabled(&self) -> bool {
        self.max_entry > 0
    }

    /// The largest body stored.
    pub fn max_entry(&self) -> usize {
        self.max_entry
    }

    fn generation(&self, account: &str, home: &str, collection: &str) -> u64 {
        lock(&self.generations)
            .get(&generation_id(account, home, collection))
            .copied()
            .unwrap_or(0)
    }

    /// The key for a safe request under `/dav/<account>/<home>/<rest>`.
    #[allow(clippy::too_many_arguments)]
    pub fn key(
        &self,
        account: &str,
        home: &str,
        method: &str,
        rest_and_query: &str,
        origin: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Key {
        let path_only = rest_and_query.split('?').next().unwrap_or("");
        let generation = self.generation(account, home, collection_of(path_only));
        let mut h = Sha256::new();
        for f in [
            b"request" as &[u8],
            account.as_bytes(),
            method.as_bytes(),
            home.as_bytes(),
        ] {
            field(&mut h, f);
        }
        field(&mut h, rest_and_query.as_bytes());
        field(&mut h, origin.as_bytes());
        for name in VARY {
            match headers.get(*name) {
                Some(v) => {
                    h.update([1u8]);
                    field(&mut h, v.as_bytes());
                }
                None => h.update([0u8]),
            }
        }
        field(&mut h, body);
        h.update(generation.to_le_bytes());
        Key(h.finalize().into())
    }

    /// The generation of the collection a local href (`/dav/<account>/<home>/<rest>`, as
    /// [`multiget::normal`] gives it) is in; `None` for an href outside the account's homes.
    fn href_generation(&self, account: &str, href: &str) -> Option<u64> {
        let after = href
            .strip_prefix("/dav/")?
            .strip_prefix(account)?
            .strip_prefix('/')?;
        let (home, rest) = after.split_once('/')?;
        if !matches!(home, "calendars" | "contacts") {
            return None;
        }
        Some(self.generation(account, home, collection_of(rest)))
    }

    /// A key about one object (`/dav/<account>/<home>/<rest>`): `tag` says what is kept under
    /// it, `more` what else it depends on; the collection's generation is always part of it.
    fn object_key(&self, tag: &[u8], account: &str, href: &str, more: &[&[u8]]) -> Option<Key> {
        let generation = self.href_generation(account, href)?;
        let mut h = Sha256::new();
        for f in [tag, account.as_bytes(), href.as_bytes()]
            .iter()
            .chain(more)
        {
            field(&mut h, f);
        }
        h.update(generation.to_le_bytes());
        Some(Key(h.finalize().into()))
    }

    /// The key of one `DAV:response` of a multiget answer: the object's local href, the
    /// origin it was made for, and what was asked of it.
    fn piece_key(
        &self,
        account: &str,
        origin: &str,
        href: &str,
        signature: [u8; 32],
    ) -> Option<Key> {
        self.object_key(b"piece", account, href, &[origin.as_bytes(), &signature])
    }

    /// The key under which the latest listing's word on one object's ETag is kept.
    fn listed_key(&self, account: &str, href: &str) -> Option<Key> {
        self.object_key(b"listed", account, href, &[])
    }

    /// Remember the ETags a multistatus fresh from iCloud lists (PROPFIND listings,
    /// sync-collection, calendar-query and multiget answers): until `fresh_secs` after
    /// `seen`, a stored object body with the same ETag is as good as a fresh one.
    pub fn store_listed(&self, account: &str, body: &[u8], seen: Instant) {
        for (href, etag) in multiget::listed_etags(body) {
            let (Some(k), Ok(v)) = (
                self.listed_key(account, &href),
                HeaderValue::from_str(&etag),
            ) else {
                continue;
            };
            let mut headers = HeaderMap::new();
            headers.insert(http::header::ETAG, v);
            self.insert(
                k,
                Entry {
                    status: StatusCode::OK,
                    headers,
                    body: Vec::new(),
                    stored: seen,
                },
            );
        }
    }

    /// When a listing fresh from iCloud (within `fresh_secs`) gave `href` this ETag, if one did.
    fn listed_fresh(&self, account: &str, href: &str, etag: &[u8]) -> Option<Instant> {
        let listed = self.fresh(&self.listed_key(account, href)?)?;
        (listed.headers.get(http::header::ETAG)?.as_bytes() == etag).then_some(listed.stored)
    }

    /// A stored GET answer for `/dav/<account>/<home>/<rest>` that is past `fresh_secs` but
    /// still current: a listing fresh from iCloud names the object at the answer's ETag. The
    /// answer, with `Age` counted from that listing.
    pub fn validated_object(
        &self,
        key: &Key,
        account: &str,
        home: &str,
        rest: &str,
    ) -> Option<Response<Body>> {
        let e = self.entries.get(key)?;
        let etag = e.headers.get(http::header::ETAG)?;
        let href = multiget::normal(&format!("/dav/{account}/{home}/{rest}"));
        let listed = self.listed_fresh(account, &href, etag.as_bytes())?;
        let mut r = e.response(None);
        r.headers_mut().insert(
            http::header::AGE,
            HeaderValue::from(listed.elapsed().as_secs()),
        );
        Some(r)
    }

    /// Keep the pieces of a multiget answer (already split by href).
    pub fn store_pieces(
        &self,
        account: &str,
        origin: &str,
        signature: [u8; 32],
        pieces: Vec<(String, Bytes)>,
    ) {
        let now = Instant::now();
        for (href, piece) in pieces {
            if let Some(k) = self.piece_key(account, origin, &href, signature) {
                self.insert(
                    k,
                    Entry {
                        status: StatusCode::MULTI_STATUS,
                        headers: HeaderMap::new(),
                        body: vec![piece],
                        stored: now,
                    },
                );
            }
        }
    }

    /// Every asked object's piece (shared, or made for `origin`), in the order asked: fresh,
    /// or older at the ETag a fresh listing names; `None` if any is missing.
    pub fn pieces(
        &self,
        account: &str,
        origin: &str,
        request: &multiget::Multiget,
    ) -> Option<Vec<Bytes>> {
        request
            .hrefs
            .iter()
            .map(|h| {
                let href = multiget::normal(h);
                let key = |o| self.piece_key(account, o, &href, request.signature);
                let keys = [key(SHARED_ORIGIN)?, key(origin)?];
                if let Some(e) = keys.iter().find_map(|k| self.fresh(k)) {
                    return Some(e.concat());
                }
                let piece = keys.iter().find_map(|k| self.entries.get(k))?.concat();
                let etag = multiget::etag_of(std::str::from_utf8(&piece).ok()?)?;
                self.listed_fresh(account, &href, etag.as_bytes())
                    .map(|_| piece)
            })
            .collect()
    }

    /// A fresh entry, if any.
    pub fn fresh(&self, key: &Key) -> Option<Arc<Entry>> {
        let e = self.entries.get(key)?;
        (e.stored.elapsed() < self.fresh).then_some(e)
    }

    /// Any entry, however old (for degraded mode).
    pub fn any(&self, key: &Key) -> Option<Arc<Entry>> {
        self.entries.get(key)
    }

    pub fn insert(&self, key: Key, entry: Entry) {
        if entry.len() <= self.max_entry {
            self.entries.insert(key, Arc::new(entry));
        }
    }

    /// Wait for any identical request in flight; the guard makes later ones wait for us.
    pub async fn single_flight(&self, key: &Key) -> Flight<'_> {
        let m = lock(&self.inflight).entry(key.clone()).or_default().clone();
        let waited = m.try_lock().is_err();
        if waited {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        let guard = m.clone().lock_owned().await;
        Flight {
            cache: self,
            key: key.clone(),
            mutex: m,
            guard: Some(guard),
        }
    }

    /// A write to `/dav/<account>/<home>/<rest>` happened (or is about to): everything cached
    /// for its collection and for the home listing is outdated.
    pub fn invalidate(&self, account: &str, home: &str, rest: &str) {
        let path_only = rest.split('?').next().unwrap_or("");
        let mut g = lock(&self.generations);
        for collection in [collection_of(path_only), ""] {
            *g.entry(generation_id(account, home, collection))
                .or_insert(0) += 1;
        }
        self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    /// (entries, bytes) for the status page and metrics.
    pub fn size(&self) -> (u64, u64) {
        self.entries.run_pending_tasks();
        (self.entries.entry_count(), self.entries.weighted_size())
    }

    pub fn record_hit(&self) {
        self.stats.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_miss(&self) {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
    }
}

/// How the last fetch of a key under its flight lock ended, if it failed.
#[derive(Default)]
pub struct FlightOutcome {
    failed: Option<(Instant, crate::upstream::error::UpstreamError)>,
}

/// How long a failed fetch answers for identical requests that were waiting for it, so that
/// a hanging or refusing iCloud costs one timeout, not one per waiting client.
const SHARE_FAILURE_FOR: Duration = Duration::from_secs(2);

/// Held while one request fetches a key; dropping it lets the next waiter look again.
pub struct Flight<'a> {
    cache: &'a Cache,
    key: Key,
    mutex: Arc<tokio::sync::Mutex<FlightOutcome>>,
    guard: Option<tokio::sync::OwnedMutexGuard<FlightOutcome>>,
}

impl Flight<'_> {
    /// The failure of the request this one waited for, if it just failed.
    pub fn recent_failure(&self) -> Option<crate::upstream::error::UpstreamError> {
        let g = self.guard.as_ref()?;
        match &g.failed {
            Some((at, e)) if at.elapsed() < SHARE_FAILURE_FOR => Some(e.clone()),
            _ => None,
        }
    }

    /// This fetch failed: waiting identical requests get the same answer.
    pub fn failed(&mut self, e: &crate::upstream::error::UpstreamError) {
        if let Some(g) = self.guard.as_mut() {
            g.failed = Some((Instant::now(), e.clone()));
        }
    }

    /// This fetch worked: forget any earlier failure.
    pub fn succeeded(&mut self) {
        if let Some(g) = self.guard.as_mut() {
            g.failed = None;
        }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut g = lock(&self.cache.inflight);
        // Forget the lock once nobody else holds or waits for it.
        if Arc::strong_count(&self.mutex) <= 2 {
            if let Some(m) = g.get(&self.key) {
                if Arc::ptr_eq(m, &self.mutex) {
                    g.remove(&self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(fresh: u64) -> Cache {
        Cache::new(&CacheConfig {
            max_bytes: 1 << 20,
            fresh_secs: fresh,
        })
    }

    fn entry(body: &str) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: vec![Bytes::from(body.to_string())],
            stored: Instant::now(),
        }
    }

    fn key(c: &Cache, account: &str, path: &str) -> Key {
        c.key(
            account,
            "calendars",
            "GET",
            path,
            "http://h",
            &HeaderMap::new(),
            b"",
        )
    }

    #[test]
    fn accounts_never_share_entries() {
        let c = cache(30);
        c.insert(key(&c, "alice", "home/a.ics"), entry("alice's"));
        assert!(c.fresh(&key(&c, "bob", "home/a.ics")).is_none());
        assert_eq!(
            &c.fresh(&key(&c, "alice", "home/a.ics")).unwrap().concat()[..],
            b"alice's"
        );
    }

    #[test]
    fn a_write_invalidates_its_collection_and_the_home_but_not_other_collections() {
        let c = cache(30);
        for p in ["home/a.ics", "home/", "", "work/b.ics"] {
            c.insert(key(&c, "alice", p), entry(p));
        }
        c.invalidate("alice", "calendars", "home/new.ics");
        assert!(c.fresh(&key(&c, "alice", "home/a.ics")).is_none());
        assert!(c.fresh(&key(&c, "alice", "home/")).is_none());
        assert!(c.fresh(&key(&c, "alice", "")).is_none());
        assert!(c.fresh(&key(&c, "alice", "work/b.ics")).is_some());
    }

    #[test]
    fn entries_go_stale_after_fresh_secs_but_stay_for_degraded_mode() {
        let c = cache(0);
        let k = key(&c, "alice", "home/a.ics");
        c.insert(k.clone(), entry("x"));
        assert!(c.fresh(&k).is_none());
        assert!(c.any(&k).is_some());
        let r = c.any(&k).unwrap().response(Some("unreachable"));
        assert_eq!(r.headers()["x-icloud-bridge-stale"], "unreachable");
        assert!(r.headers().contains_key("warning"));
    }

    #[test]
    fn bodies_differ_in_the_key_and_oversized_entries_are_not_kept() {
        let c = cache(30);
        let a = c.key(
            "alice",
            "calendars",
            "REPORT",
            "home/",
            "o",
            &HeaderMap::new(),
            b"<a/>",
        );
        let b = c.key(
            "alice",
            "calendars",
            "REPORT",
            "home/",
            "o",
            &HeaderMap::new(),
            b"<b/>",
        );
        assert_ne!(a, b);
        let big = "x".repeat(c.max_entry() + 1);
        c.insert(a.clone(), entry(&big));
        assert!(c.any(&a).is_none());
    }

    // Paused time: the sleep below returns only once every other task is idle, so the
    // waiter has surely reached the single flight and waits there.
    #[tokio::test(start_paused = true)]
    async fn identical_misses_wait_for_the_first() {
        let c = Arc::new(cache(30));
        let k = key(&c, "alice", "home/a.ics");
        let first = c.single_flight(&k).await;
        let c2 = c.clone();
        let k2 = k.clone();
        let waiter = tokio::spawn(async move {
            let _f = c2.single_flight(&k2).await;
            c2.fresh(&k2).map(|e| e.concat())
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        c.insert(k.clone(), entry("filled"));
        drop(first);
        assert_eq!(&waiter.await.unwrap().unwrap()[..], b"filled");
        assert_eq!(c.stats.coalesced.load(Ordering::Relaxed), 1);
        assert!(lock(&c.inflight).is_empty());
    }
}
