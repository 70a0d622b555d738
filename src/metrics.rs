//! Prometheus text metrics (`prometheus-client`, text format 0.0.4): requests by method and
//! status, request latency, state changes and webhook deliveries, recorded here; refused
//! connections and bodies, account state, the cache and the upstream client, read at each
//! scrape.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::accounts::AccountSnapshot;
use crate::body::{full, Body};
use crate::upstream::service::ServiceState;

/// Every metric's name starts with `icloud_bridge_`.
const PREFIX: &str = "icloud_bridge";
const BUCKETS_SECS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
const WEBHOOK_RESULTS: [&str; 3] = ["ok", "retry", "failed"];
/// Methods counted by name; others are folded into `OTHER` so clients cannot grow the table.
const KNOWN_METHODS: &[&str] = &[
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateChangeLabels {
    account: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabels {
    what: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountStateLabels {
    account: String,
    service: &'static str,
    state: &'static str,
}

/// What this process counts; rendered on `/metrics` with what other parts keep.
#[derive(Debug)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Histogram,
    /// (account, new state) -> changes of the account's state.
    state_changes: Family<StateChangeLabels, Counter>,
    webhooks: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let webhooks = Family::default();
        // All three results show from the start, at 0.
        for result in WEBHOOK_RESULTS {
            webhooks.get_or_create_owned(&ResultLabels { result });
        }
        Metrics {
            requests: Family::default(),
            latency: Histogram::new(BUCKETS_SECS),
            state_changes: Family::default(),
            webhooks,
        }
    }
}

impl Metrics {
    pub fn record_request(&self, method: &str, status: u16, took: Duration) {
        let method = KNOWN_METHODS
            .iter()
            .find(|k| **k == method)
            .copied()
            .unwrap_or("OTHER");
        self.requests
            .get_or_create(&RequestLabels { method, status })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// The account's state changed to `state`.
    pub fn record_state_change(&self, account: &str, state: &'static str) {
        self.state_changes
            .get_or_create(&StateChangeLabels {
                account: account.to_string(),
                state,
            })
            .inc();
    }

    /// One webhook delivery attempt: `ok`, `retry` (failed, will retry) or `failed` (gave up).
    pub fn record_webhook(&self, result: &str) {
        if let Some(result) = WEBHOOK_RESULTS.iter().find(|r| **r == result) {
            self.webhooks.get_or_create(&ResultLabels { result }).inc();
        }
    }

    #[cfg(test)]
    pub(crate) fn inner_webhooks(&self) -> [u64; 3] {
        WEBHOOK_RESULTS.map(|result| self.webhooks.get_or_create(&ResultLabels { result }).get())
    }

    /// This process's counters, in the order they are shown.
    fn register(&self, reg: &mut Registry) {
        reg.register(
            "requests",
            "Client requests by method and status",
            self.requests.clone(),
        );
        reg.register_with_unit(
            "request_duration",
            "Time to answer a client request (headers)",
            Unit::Seconds,
            self.latency.clone(),
        );
        reg.register(
            "state_changes",
            "Changes of an account's state, by the new state",
            self.state_changes.clone(),
        );
        reg.register(
            "webhook_deliveries",
            "Webhook delivery attempts: ok, retry (failed, retried later), failed (gave up)",
            self.webhooks.clone(),
        );
    }

    /// The `/metrics` answer: this process's counters, then the values read at this scrape.
    pub fn render(&self, now: &Scrape<'_>) -> Response<Body> {
        let mut reg = Registry::with_prefix(PREFIX);
        self.register(&mut reg);
        register_read(&mut reg, now);
        now.upstream.register(&mut reg);
        let mut out = String::new();
        let mut r = match prometheus_text::encode(&mut out, &reg) {
            Ok(()) => Response::new(full(out)),
            Err(_) => {
                tracing::error!("cannot render /metrics");
                let mut r = Response::new(full("cannot render the metrics\n"));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                r
            }
        };
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus_text::CONTENT_TYPE),
        );
        r
    }
}

/// What other parts keep, read at each scrape (the router gathers it).
pub struct Scrape<'a> {
    pub connections_refused: u64,
    pub bodies_refused: u64,
    pub accounts: AccountSnapshot,
    pub cache: &'a crate::cache::Cache,
    pub upstream: &'a crate::upstream::client::UpstreamStats,
    /// WebDAV-Push, when enabled.
    pub push: Option<PushScrape>,
}

/// WebDAV-Push's counts at a scrape.
pub struct PushScrape {
    /// (result, count): delivered, gone, retry, failed.
    pub deliveries: Vec<(&'static str, u64)>,
    /// Collections with at least one live registration.
    pub subscriptions: u64,
    /// Live registrations.
    pub registrations: u64,
}

/// The values other parts keep, as they are now: refusals, account state, the cache.
fn register_read(reg: &mut Registry, now: &Scrape<'_>) {
    let refused = Family::<WhatLabels, Counter>::default();
    for (what, n) in [
        ("connection", now.connections_refused),
        ("body", now.bodies_refused),
    ] {
        refused.get_or_create(&WhatLabels { what }).inc_by(n);
    }
    reg.register(
        "refused",
        "Connections refused over a per-address or total limit, and request bodies refused over the body budget",
        refused,
    );
    let state = Family::<AccountStateLabels, Gauge>::default();
    for (name, acc) in now.accounts.iter() {
        for &svc in acc.served() {
            let now = acc.status(svc).state;
            for s in ServiceState::ALL {
                let labels = AccountStateLabels {
                    account: name.to_string(),
                    service: svc.as_str(),
                    state: s.as_str(),
                };
                state.get_or_create(&labels).set(i64::from(s == now));
            }
        }
    }
    reg.register(
        "account_state",
        "1 for the current state of each account and service",
        state,
    );
    if let Some(push) = &now.push {
        let deliveries = Family::<ResultLabels, Counter>::default();
        for (result, n) in &push.deliveries {
            deliveries
                .get_or_create(&ResultLabels { result })
                .inc_by(*n);
        }
        reg.register(
            "push_deliveries",
            "WebDAV-Push messages sent to push services, by result (delivered, gone, retry, failed)",
            deliveries,
        );
        reg.register(
            "push_registrations",
            "Live WebDAV-Push registrations",
            ConstGauge::new(push.registrations as i64),
        );
        reg.register(
            "push_collections",
            "Collections with at least one live WebDAV-Push registration (each checked once per push.poll_secs)",
            ConstGauge::new(push.subscriptions as i64),
        );
    }
    let st = &now.cache.stats;
    for (name, help, v) in [
        ("cache_hits", "Requests answered from the cache", &st.hits),
        (
            "cache_misses",
            "Cacheable requests that went to upstream",
            &st.misses,
        ),
        (
            "cache_stale_served",
            "Stale answers served while iCloud failed",
            &st.stale_served,
        ),
        (
            "cache_coalesced",
            "Requests that waited for an identical one instead of asking upstream",
            &st.coalesced,
        ),
        (
            "cache_evictions",
            "Entries evicted to stay within cache.max_bytes",
            &st.evictions,
        ),
        (
            "cache_invalidations",
            "Writes that invalidated cached collections",
            &st.invalidations,
        ),
    ] {
        reg.register(name, help, ConstCounter::new(v.load(Relaxed)));
    }
    let (entries, bytes) = now.cache.size();
    reg.register(
        "cache_bytes",
        "Bytes held by the cache",
        ConstGauge::new(bytes),
    );
    reg.register(
        "cache_entries",
        "Entries held by the cache",
        ConstGauge::new(entries),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        let mut reg = Registry::with_prefix(PREFIX);
        m.register(&mut reg);
        let mut out = String::new();
        prometheus_text::encode(&mut out, &reg).unwrap();
        out
    }

    #[test]
    fn names_types_and_values_as_before() {
        let m = Metrics::default();
        m.record_request("PROPFIND", 207, Duration::from_millis(3));
        m.record_request("PROPFIND", 207, Duration::from_millis(30));
        m.record_request("BREW", 418, Duration::from_secs(7));
        m.record_webhook("retry");
        m.record_webhook("made-up");
        m.record_state_change("alice", "auth_rejected");
        let t = text(&m);
        for line in [
            "# HELP icloud_bridge_requests_total Client requests by method and status.",
            "# TYPE icloud_bridge_requests_total counter",
            "icloud_bridge_requests_total{method=\"PROPFIND\",status=\"207\"} 2",
            "icloud_bridge_requests_total{method=\"OTHER\",status=\"418\"} 1",
            "# TYPE icloud_bridge_request_duration_seconds histogram",
            "icloud_bridge_request_duration_seconds_bucket{le=\"0.001\"} 0",
            "icloud_bridge_request_duration_seconds_bucket{le=\"0.005\"} 1",
            "icloud_bridge_request_duration_seconds_bucket{le=\"0.05\"} 2",
            "icloud_bridge_request_duration_seconds_bucket{le=\"5\"} 2",
            "icloud_bridge_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "icloud_bridge_request_duration_seconds_count 3",
            "# HELP icloud_bridge_state_changes_total Changes of an account's state, by the new state.",
            "icloud_bridge_state_changes_total{account=\"alice\",state=\"auth_rejected\"} 1",
            "icloud_bridge_webhook_deliveries_total{result=\"ok\"} 0",
            "icloud_bridge_webhook_deliveries_total{result=\"retry\"} 1",
            "icloud_bridge_webhook_deliveries_total{result=\"failed\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing from\n{t}");
        }
        let sum: f64 = t
            .lines()
            .find_map(|l| l.strip_prefix("icloud_bridge_request_duration_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 7.033).abs() < 1e-9, "{sum}");
        assert_eq!(m.inner_webhooks(), [0, 1, 0]);
        assert!(!t.contains("# EOF"), "Prometheus text, not OpenMetrics");
    }
}
