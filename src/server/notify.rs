//! Telling the operator (design: "When Apple says no"): one log line per change of an
//! account's state, a webhook POST per notified change (`auth_rejected` at once,
//! `unreachable`/`rate_limited` only after lasting `notify.min_secs`, recovery to `ok` after a
//! notified problem), retried with backoff in its own task, the optional credential-age
//! reminder, and the debounced save of `state.json`.
//!
//! Events come from [`Account`] on an unbounded channel (set up in `App::new`), so a request
//! never waits for any of this.
//!
//! Webhook body (`time` is RFC 3339 in UTC, e.g. `2025-01-31T08:15:00Z`):
//! `{"event":"state","account","apple_id","state","previous_state","reason","fix_url","status_url","time"}`
//! and, for the reminder,
//! `{"event":"credential_age","account","apple_id","age_days","credential_set_at","reason","fix_url","status_url","time"}`.
//! With `notify.secret`, the header `X-Icloud-Bridge-Signature: sha256=<hex HMAC-SHA256 of
//! the body>` is added.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hmac::Mac;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::config::{url_origin, NotifyConfig};
use crate::server::app::App;
use crate::server::metrics::Metrics;
use crate::upstream::credential::Secret;
use crate::upstream::state::{Account, ServiceState, StateEvent};

/// Where to fix an auth problem.
pub const APPLE_ID_URL: &str = "https://appleid.apple.com/account/manage";
/// The signature header sent when `notify.secret` is set.
pub const SIGNATURE_HEADER: &str = "X-Icloud-Bridge-Signature";
/// Changes are written to `state.json` at most this long after they happen.
const SAVE_DELAY: Duration = Duration::from_secs(1);
/// How often the credential's age is looked at (and once at start).
const AGE_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Retry schedule for one webhook delivery.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    pub tries: u32,
}

/// 1 s doubling up to 5 min, each delay jittered to 50–100 %; 8 tries (about 2 minutes).
pub const BACKOFF: Backoff = Backoff {
    first: Duration::from_secs(1),
    max: Duration::from_secs(300),
    tries: 8,
};

impl Backoff {
    /// The delay after failed attempt number `n` (0-based), with jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let full = self
            .first
            .saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let half = full / 2;
        half + half.mul_f64(rand::random::<f64>())
    }
}

/// One delivery attempt of a JSON body; `Err` carries a short reason without the URL.
pub trait Deliver: Send + Sync + 'static {
    fn attempt(&self, body: Bytes) -> BoxFuture<'static, Result<(), String>>;
    /// What may be logged about the destination.
    fn describe(&self) -> String;
}

/// The configured webhook: reqwest with its own timeout, optional HMAC signature.
pub struct Webhook {
    client: reqwest::Client,
    url: Url,
    secret: Option<Secret>,
}

impl Webhook {
    pub fn new(url: Url, secret: Option<Secret>) -> Result<Webhook, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("icloud-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| "cannot build the webhook client".to_string())?;
        Ok(Webhook {
            client,
            url,
            secret,
        })
    }
}

/// `sha256=<hex HMAC-SHA256 of body>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this branch is never taken.
        Err(_) => return String::new(),
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl Deliver for Webhook {
    fn attempt(&self, body: Bytes) -> BoxFuture<'static, Result<(), String>> {
        let mut req = self
            .client
            .post(self.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json");
        if let Some(s) = &self.secret {
            req = req.header(SIGNATURE_HEADER, signature(s.expose(), &body));
        }
        let req = req.body(body);
        Box::pin(async move {
            // Never format the reqwest error: it names the URL, which may hold a token.
            match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => Err("timed out".into()),
                Err(e) if e.is_connect() => Err("connection failed".into()),
                Err(_) => Err("request failed".into()),
            }
        })
    }

    fn describe(&self) -> String {
        url_origin(&self.url)
    }
}

/// Deliver `body`, retrying per `backoff`; true when it arrived.
pub async fn deliver_with_retry(
    sink: Arc<dyn Deliver>,
    body: Bytes,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    what: String,
) -> bool {
    let mut n = 0;
    loop {
        match sink.attempt(body.clone()).await {
            Ok(()) => {
                metrics.record_webhook("ok");
                tracing::debug!(webhook = %sink.describe(), %what, "webhook delivered");
                return true;
            }
            Err(e) if n + 1 >= backoff.tries => {
                metrics.record_webhook("failed");
                tracing::warn!(webhook = %sink.describe(), %what, error = %e, tries = backoff.tries, "giving up on the webhook delivery");
                return false;
            }
            Err(e) => {
                metrics.record_webhook("retry");
                tracing::debug!(webhook = %sink.describe(), %what, error = %e, "webhook delivery failed; will retry");
                tokio::time::sleep(backoff.delay(n)).await;
                n += 1;
            }
        }
    }
}

/// A change the operator is told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub account: String,
    pub state: ServiceState,
    pub previous: ServiceState,
    pub reason: Option<String>,
    pub at: SystemTime,
}

#[derive(Debug)]
struct Track {
    state: ServiceState,
    /// The state before `state` began.
    before: ServiceState,
    reason: Option<String>,
    /// When `state` began (in this process).
    at: SystemTime,
    /// The last state notified.
    notified: Option<ServiceState>,
    /// When `state` becomes worth notifying (unreachable / rate_limited).
    pending: Option<Instant>,
}

/// The notification rules, without I/O: fed account-level changes, says what to notify.
#[derive(Debug)]
pub struct Tracker {
    min: Duration,
    tracks: HashMap<String, Track>,
}

impl Tracker {
    pub fn new(min: Duration) -> Tracker {
        Tracker {
            min,
            tracks: HashMap::new(),
        }
    }

    /// Start tracking an account in `state`, having last notified `notified`. Returns a
    /// notice if that state is due at once.
    pub fn start(
        &mut self,
        account: &str,
        state: ServiceState,
        reason: Option<String>,
        notified: Option<ServiceState>,
        now: Instant,
    ) -> Option<Notice> {
        let mut t = Track {
            state,
            before: notified.unwrap_or(ServiceState::Ok),
            reason,
            at: SystemTime::now(),
            notified,
            pending: None,
        };
        let n = decide(self.min, account, &mut t, now);
        self.tracks.insert(account.to_string(), t);
        n
    }

    /// The account's state is now `new` (a reason-only change updates the reason).
    pub fn observe(
        &mut self,
        account: &str,
        old: ServiceState,
        new: ServiceState,
        reason: Option<String>,
        at: SystemTime,
        now: Instant,
    ) -> Option<Notice> {
        let min = self.min;
        let t = self.tracks.entry(account.to_string()).or_insert(Track {
            state: old,
            before: old,
            reason: None,
            at,
            notified: None,
            pending: None,
        });
        if t.state == new {
            t.reason = reason;
            return None;
        }
        t.before = t.state;
        t.state = new;
        t.reason = reason;
        t.at = at;
        t.pending = None;
        decide(min, account, t, now)
    }

    /// Notices whose `min_secs` has passed by `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Notice> {
        let mut out = Vec::new();
        let mut names: Vec<&String> = self.tracks.keys().collect();
        names.sort();
        let names: Vec<String> = names.into_iter().cloned().collect();
        for name in names {
            if let Some(t) = self.tracks.get_mut(&name) {
                if t.pending.is_some_and(|p| p <= now) {
                    t.pending = None;
                    if Some(t.state) != t.notified {
                        out.push(notice(&name, t));
                    }
                }
            }
        }
        out
    }

    /// The next time [`Tracker::due`] may return something.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tracks.values().filter_map(|t| t.pending).min()
    }
}

/// The rules: what `t`'s new state means for the operator now (or later, via `pending`).
fn decide(min: Duration, account: &str, t: &mut Track, now: Instant) -> Option<Notice> {
    let told = t.notified.unwrap_or(ServiceState::Ok);
    let notify_now = match t.state {
        ServiceState::AuthRejected | ServiceState::Unconfigured => t.state != told,
        ServiceState::Unreachable | ServiceState::RateLimited => {
            if t.state == told {
                false
            } else if min.is_zero() {
                true
            } else {
                t.pending = Some(now + min);
                false
            }
        }
        ServiceState::Ok => told != ServiceState::Ok,
        ServiceState::Unknown => false,
    };
    notify_now.then(|| notice(account, t))
}

fn notice(account: &str, t: &mut Track) -> Notice {
    let previous = t.notified.unwrap_or(t.before);
    t.notified = Some(t.state);
    t.pending = None;
    Notice {
        account: account.to_string(),
        state: t.state,
        previous,
        reason: t.reason.clone(),
        at: t.at,
    }
}

/// RFC 3339 in UTC with second precision: `2025-01-31T08:15:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Everything the notifier task needs; built from the App, or by hand in tests.
pub struct Notifier {
    pub accounts: Arc<BTreeMap<String, Arc<Account>>>,
    pub config: NotifyConfig,
    /// The status page, for `status_url` (and `fix_url` of network trouble).
    pub status_url: String,
    pub sink: Option<Arc<dyn Deliver>>,
    pub backoff: Backoff,
    pub metrics: Arc<Metrics>,
    /// Writes `state.json` (blocking I/O: run off the async threads).
    pub save: Arc<dyn Fn() + Send + Sync>,
}

/// Start the notifier for `app` (once; later calls do nothing).
pub fn spawn(app: &Arc<App>, token: &CancellationToken) {
    let Some(rx) = app.take_events() else {
        return;
    };
    let sink: Option<Arc<dyn Deliver>> = match &app.config.notify.webhook {
        Some(url) => match Webhook::new(url.clone(), app.config.notify.secret.clone()) {
            Ok(w) => {
                tracing::info!(webhook = %w.describe(), "state changes will be posted to the webhook");
                Some(Arc::new(w))
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook notifications are off");
                None
            }
        },
        None => None,
    };
    let saver = app.state_saver();
    let n = Notifier {
        accounts: app.accounts.clone(),
        config: app.config.notify.clone(),
        status_url: format!("{}/status", app.config.public_base()),
        sink,
        backoff: BACKOFF,
        metrics: app.metrics.clone(),
        save: Arc::new(saver),
    };
    tokio::spawn(n.run(rx, token.clone()));
}

impl Notifier {
    fn fix_url(&self, state: ServiceState) -> &str {
        match state {
            ServiceState::AuthRejected | ServiceState::Unconfigured => APPLE_ID_URL,
            _ => &self.status_url,
        }
    }

    fn apple_id(&self, account: &str) -> String {
        self.accounts
            .get(account)
            .map(|a| a.apple_id().to_string())
            .unwrap_or_default()
    }

    fn state_body(&self, n: &Notice) -> Bytes {
        let reason = n.reason.clone().or_else(|| {
            (n.state == ServiceState::Ok).then(|| "iCloud answers normally again.".to_string())
        });
        Bytes::from(
            serde_json::json!({
                "event": "state",
                "account": n.account,
                "apple_id": self.apple_id(&n.account),
                "state": n.state.as_str(),
                "previous_state": n.previous.as_str(),
                "reason": reason,
                "fix_url": self.fix_url(n.state),
                "status_url": self.status_url,
                "time": rfc3339(n.at),
            })
            .to_string(),
        )
    }

    fn run_save(&self) {
        let save = self.save.clone();
        // Blocking file I/O (fsync) stays off the async threads.
        tokio::task::spawn_blocking(move || save());
    }

    /// The task: until `token` is cancelled, or every sender is gone.
    pub async fn run(self, mut rx: UnboundedReceiver<StateEvent>, token: CancellationToken) {
        let mut tracker = Tracker::new(Duration::from_secs(self.config.min_secs));
        let mut deliveries: HashMap<String, AbortHandle> = HashMap::new();
        let mut save_at: Option<Instant> = None;
        let now = Instant::now();
        let mut first = Vec::new();
        for (name, acc) in self.accounts.iter() {
            let (state, reason) = acc.overall();
            first.extend(tracker.start(name, state, reason, acc.notified(), now));
        }
        for n in first {
            self.send_notice(&n, &mut deliveries);
            save_at.get_or_insert(Instant::now() + SAVE_DELAY);
        }
        let mut age_tick = tokio::time::interval(AGE_CHECK_EVERY);
        age_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = tracker.next_deadline();
            tokio::select! {
                _ = token.cancelled() => break,
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    save_at.get_or_insert(Instant::now() + SAVE_DELAY);
                    if ev.service.is_some() {
                        continue;
                    }
                    if ev.old != ev.new {
                        self.metrics.record_state_change(&ev.account, ev.new.as_str());
                        log_change(&ev);
                    }
                    if let Some(n) = tracker.observe(&ev.account, ev.old, ev.new, ev.reason, ev.at, Instant::now()) {
                        self.send_notice(&n, &mut deliveries);
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    for n in tracker.due(Instant::now()) {
                        self.send_notice(&n, &mut deliveries);
                        save_at.get_or_insert(Instant::now() + SAVE_DELAY);
                    }
                }
                _ = sleep_until_opt(save_at) => {
                    save_at = None;
                    self.run_save();
                }
                _ = age_tick.tick() => {
                    if self.check_ages(&mut deliveries) {
                        save_at.get_or_insert(Instant::now() + SAVE_DELAY);
                    }
                }
            }
        }
        // Keep what is pending on disk; deliveries in flight end with the runtime.
        let save = self.save.clone();
        let _ = tokio::task::spawn_blocking(move || save()).await;
    }

    fn send_notice(&self, n: &Notice, deliveries: &mut HashMap<String, AbortHandle>) {
        if let Some(acc) = self.accounts.get(&n.account) {
            acc.set_notified(n.state);
        }
        let Some(sink) = &self.sink else {
            return;
        };
        let body = self.state_body(n);
        let what = format!("{} {}", n.account, n.state.as_str());
        let task = tokio::spawn(deliver_with_retry(
            sink.clone(),
            body,
            self.backoff,
            self.metrics.clone(),
            what,
        ));
        // A newer state of the same account replaces a delivery still retrying.
        if let Some(old) = deliveries.insert(n.account.clone(), task.abort_handle()) {
            old.abort();
        }
    }

    /// The optional reminder of the credential's age: at most once per credential. True when
    /// something was reminded (bookkeeping to save).
    fn check_ages(&self, deliveries: &mut HashMap<String, AbortHandle>) -> bool {
        let Some(days) = self.config.warn_after_days else {
            return false;
        };
        let mut any = false;
        for (name, acc) in self.accounts.iter() {
            let Some(set_at) = acc.credential_set_at() else {
                continue;
            };
            let age_days = SystemTime::now()
                .duration_since(set_at)
                .map(|d| d.as_secs() / 86400)
                .unwrap_or(0);
            if age_days < days || acc.age_reminded(set_at) {
                continue;
            }
            acc.set_age_reminded(set_at);
            any = true;
            let reason = format!(
                "The app-specific password for {} was stored {age_days} days ago (notify.warn_after_days = {days}). Apple documents no expiry; this is only the reminder you asked for. To replace it, make a new app-specific password at appleid.apple.com, then run `icloud-bridge reconnect` or use the status page.",
                acc.apple_id()
            );
            tracing::warn!(account = %name, age_days, "the app-specific password is older than notify.warn_after_days");
            if let Some(sink) = &self.sink {
                let body = Bytes::from(
                    serde_json::json!({
                        "event": "credential_age",
                        "account": name,
                        "apple_id": acc.apple_id(),
                        "age_days": age_days,
                        "credential_set_at": rfc3339(set_at),
                        "reason": reason,
                        "fix_url": APPLE_ID_URL,
                        "status_url": self.status_url,
                        "time": rfc3339(SystemTime::now()),
                    })
                    .to_string(),
                );
                let task = tokio::spawn(deliver_with_retry(
                    sink.clone(),
                    body,
                    self.backoff,
                    self.metrics.clone(),
                    format!("{name} credential_age"),
                ));
                if let Some(old) = deliveries.insert(format!("{name}\0age"), task.abort_handle()) {
                    old.abort();
                }
            }
        }
        any
    }
}

/// One line per change of an account's state: `warn` for a problem, `info` otherwise.
fn log_change(ev: &StateEvent) {
    let reason = ev.reason.as_deref().unwrap_or("");
    if ev.new.is_bad() {
        tracing::warn!(account = %ev.account, state = ev.new.as_str(), previous = ev.old.as_str(), %reason, "account state changed");
    } else {
        tracing::info!(account = %ev.account, state = ev.new.as_str(), previous = ev.old.as_str(), "account state changed");
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
