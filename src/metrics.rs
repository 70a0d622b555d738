//! Prometheus text metrics: requests by method and status, request latency, account state,
//! state changes and webhook deliveries.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderValue, Response};

use crate::app::App;
use crate::body::{full, Body};
use crate::upstream::service::ServiceState;

const BUCKETS_MS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0];

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency_buckets: Vec<u64>,
    latency_sum_ms: f64,
    latency_count: u64,
    /// (account, new state) -> changes of the account's state.
    state_changes: BTreeMap<(String, &'static str), u64>,
    /// ok, retry, failed.
    webhooks: [u64; 3],
}

const WEBHOOK_RESULTS: [&str; 3] = ["ok", "retry", "failed"];

/// Counters kept in memory; rendered on `/metrics`.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn record_request(&self, method: &str, status: u16, took: Duration) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Unknown methods are folded together so clients cannot grow the table.
        const KNOWN: &[&str] = &[
            "GET",
            "HEAD",
            "PUT",
            "DELETE",
            "OPTIONS",
            "PROPFIND",
            "PROPPATCH",
            "REPORT",
            "MKCALENDAR",
            "MKCOL",
            "MOVE",
            "COPY",
            "POST",
        ];
        let m: &'static str = KNOWN
            .iter()
            .find(|k| **k == method)
            .copied()
            .unwrap_or("OTHER");
        *g.requests.entry((m, status)).or_default() += 1;
        if g.latency_buckets.is_empty() {
            g.latency_buckets = vec![0; BUCKETS_MS.len()];
        }
        let ms = took.as_secs_f64() * 1000.0;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                g.latency_buckets[i] += 1;
            }
        }
        g.latency_sum_ms += ms;
        g.latency_count += 1;
    }

    /// The account's state changed to `state`.
    pub fn record_state_change(&self, account: &str, state: &'static str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        *g.state_changes
            .entry((account.to_string(), state))
            .or_default() += 1;
    }

    /// One webhook delivery attempt: `ok`, `retry` (failed, will retry) or `failed` (gave up).
    pub fn record_webhook(&self, result: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = WEBHOOK_RESULTS.iter().position(|r| *r == result) {
            g.webhooks[i] += 1;
        }
    }

    #[cfg(test)]
    pub(crate) fn inner_webhooks(&self) -> [u64; 3] {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .webhooks
    }

    pub fn render(&self, app: &App) -> Response<Body> {
        let mut out = String::new();
        {
            let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            out.push_str("# HELP icloud_bridge_requests_total Client requests by method and status.\n# TYPE icloud_bridge_requests_total counter\n");
            for ((m, s), n) in &g.requests {
                let _ = writeln!(
                    out,
                    "icloud_bridge_requests_total{{method=\"{m}\",status=\"{s}\"}} {n}"
                );
            }
            out.push_str("# HELP icloud_bridge_request_duration_seconds Time to answer a client request (headers).\n# TYPE icloud_bridge_request_duration_seconds histogram\n");
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                let n = g.latency_buckets.get(i).copied().unwrap_or(0);
                let _ = writeln!(
                    out,
                    "icloud_bridge_request_duration_seconds_bucket{{le=\"{}\"}} {n}",
                    b / 1000.0
                );
            }
            let _ = writeln!(
                out,
                "icloud_bridge_request_duration_seconds_bucket{{le=\"+Inf\"}} {}\nicloud_bridge_request_duration_seconds_sum {}\nicloud_bridge_request_duration_seconds_count {}",
                g.latency_count,
                g.latency_sum_ms / 1000.0,
                g.latency_count
            );
            out.push_str("# HELP icloud_bridge_state_changes_total Changes of an account's state, by the new state.\n# TYPE icloud_bridge_state_changes_total counter\n");
            for ((a, s), n) in &g.state_changes {
                let _ = writeln!(
                    out,
                    "icloud_bridge_state_changes_total{{account=\"{a}\",state=\"{s}\"}} {n}"
                );
            }
            out.push_str("# HELP icloud_bridge_webhook_deliveries_total Webhook delivery attempts: ok, retry (failed, retried later), failed (gave up).\n# TYPE icloud_bridge_webhook_deliveries_total counter\n");
            for (r, n) in WEBHOOK_RESULTS.iter().zip(g.webhooks) {
                let _ = writeln!(
                    out,
                    "icloud_bridge_webhook_deliveries_total{{result=\"{r}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP icloud_bridge_refused_total Connections refused over a per-address or total limit, and request bodies refused over the body budget.\n# TYPE icloud_bridge_refused_total counter\n");
        let _ = writeln!(
            out,
            "icloud_bridge_refused_total{{what=\"connection\"}} {}\nicloud_bridge_refused_total{{what=\"body\"}} {}",
            app.conns.refused(),
            app.dav.bodies.refused()
        );
        out.push_str("# HELP icloud_bridge_account_state 1 for the current state of each account and service.\n# TYPE icloud_bridge_account_state gauge\n");
        for (name, acc) in app.accounts.snapshot().iter() {
            for &svc in acc.served() {
                let st = acc.status(svc).state;
                for s in ServiceState::ALL {
                    let _ = writeln!(
                        out,
                        "icloud_bridge_account_state{{account=\"{name}\",service=\"{}\",state=\"{}\"}} {}",
                        svc.as_str(),
                        s.as_str(),
                        u8::from(s == st)
                    );
                }
            }
        }
        render_cache(&mut out, app);
        app.upstream.stats.render(&mut out);
        let mut r = Response::new(full(out));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        r
    }
}

/// The cache's counters and size.
fn render_cache(out: &mut String, app: &App) {
    use std::sync::atomic::Ordering::Relaxed;
    let st = &app.dav.cache.stats;
    let (entries, bytes) = app.dav.cache.size();
    for (name, help, v) in [
        (
            "icloud_bridge_cache_hits_total",
            "Requests answered from the cache.",
            st.hits.load(Relaxed),
        ),
        (
            "icloud_bridge_cache_misses_total",
            "Cacheable requests that went to upstream.",
            st.misses.load(Relaxed),
        ),
        (
            "icloud_bridge_cache_stale_served_total",
            "Stale answers served while iCloud failed.",
            st.stale_served.load(Relaxed),
        ),
        (
            "icloud_bridge_cache_coalesced_total",
            "Requests that waited for an identical one instead of asking upstream.",
            st.coalesced.load(Relaxed),
        ),
        (
            "icloud_bridge_cache_evictions_total",
            "Entries evicted to stay within cache.max_bytes.",
            st.evictions.load(Relaxed),
        ),
        (
            "icloud_bridge_cache_invalidations_total",
            "Writes that invalidated cached collections.",
            st.invalidations.load(Relaxed),
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP icloud_bridge_cache_bytes Bytes held by the cache.\n# TYPE icloud_bridge_cache_bytes gauge\nicloud_bridge_cache_bytes {bytes}\n# HELP icloud_bridge_cache_entries Entries held by the cache.\n# TYPE icloud_bridge_cache_entries gauge\nicloud_bridge_cache_entries {entries}"
    );
}
