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
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hmac::Mac;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::accounts::{Account, StateEvent};
use crate::app::App;
use crate::config::{url_origin, NotifyConfig};
use crate::dates::rfc3339;
use crate::metrics::Metrics;
use crate::secret::Secret;
use crate::upstream::service::ServiceState;

/// Where to fix an auth problem.
pub const APPLE_ID_URL: &str = "https://account.apple.com/account/manage";
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
    /// Its reason (this run only): a new password rejected in turn is told again.
    notified_reason: Option<String>,
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
            notified_reason: None,
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
            notified_reason: None,
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
        ServiceState::AuthRejected | ServiceState::Unconfigured => {
            t.state != told || (t.notified_reason.is_some() && t.notified_reason != t.reason)
        }
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
    t.notified_reason = t.reason.clone();
    t.pending = None;
    Notice {
        account: account.to_string(),
        state: t.state,
        previous,
        reason: t.reason.clone(),
        at: t.at,
    }
}

/// Everything the notifier task needs; built from the App, or by hand in tests.
pub struct Notifier {
    /// The accounts now (the setup page can add one while the bridge runs).
    pub accounts: Arc<dyn Fn() -> Arc<BTreeMap<String, Arc<Account>>> + Send + Sync>,
    pub config: NotifyConfig,
    /// The status page, for `status_url` (and `fix_url` of network trouble).
    pub status_url: String,
    pub sink: Option<Arc<dyn Deliver>>,
    pub backoff: Backoff,
    pub metrics: Arc<Metrics>,
    /// Writes `state.json` (blocking I/O: run off the async threads).
    pub save: Arc<dyn Fn() + Send + Sync>,
}

/// Start the notifier for `app` (once; later calls do nothing and return `None`).
pub fn spawn(app: &Arc<App>, token: &CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let rx = app.accounts.take_events()?;
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
    let saver = app.accounts.saver();
    let n = Notifier {
        accounts: {
            let app = app.clone();
            Arc::new(move || app.accounts.snapshot())
        },
        config: app.config.notify.clone(),
        status_url: format!("{}/status", app.config.public_base()),
        sink,
        backoff: BACKOFF,
        metrics: app.metrics.clone(),
        save: saver,
    };
    Some(tokio::spawn(n.run(rx, token.clone())))
}

impl Notifier {
    fn fix_url(&self, state: ServiceState) -> &str {
        match state {
            ServiceState::AuthRejected | ServiceState::Unconfigured => APPLE_ID_URL,
            _ => &self.status_url,
        }
    }

    fn apple_id(&self, account: &str) -> String {
        (self.accounts)()
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
        for (name, acc) in (self.accounts)().iter() {
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
        if let Some(acc) = (self.accounts)().get(&n.account) {
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
        for (name, acc) in (self.accounts)().iter() {
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
                "The app-specific password for {} was stored {age_days} days ago (notify.warn_after_days = {days}). Apple documents no expiry; this is only the reminder you asked for. To replace it, make a new app-specific password at account.apple.com, then run `icloud-bridge reconnect` or use the status page.",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::credential::{Credential, CredentialSource};
    use crate::config::{AccountConfig, UpstreamKind};
    use crate::upstream::error::{Unreachable, UpstreamError};
    use crate::upstream::service::Service;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A sink that records bodies and fails its first `fail_first` attempts.
    #[derive(Default)]
    struct Recorder {
        fail_first: AtomicUsize,
        attempts: AtomicUsize,
        bodies: Mutex<Vec<serde_json::Value>>,
    }

    impl Recorder {
        fn bodies(&self) -> Vec<serde_json::Value> {
            self.bodies.lock().unwrap().clone()
        }
        fn states(&self) -> Vec<String> {
            self.bodies()
                .iter()
                .map(|b| b["state"].as_str().unwrap_or("").to_string())
                .collect()
        }
    }

    impl Deliver for Recorder {
        fn attempt(&self, body: Bytes) -> BoxFuture<'static, Result<(), String>> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let fail = self
                .fail_first
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if !fail {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                self.bodies.lock().unwrap().push(v);
            }
            Box::pin(async move {
                if fail {
                    Err("HTTP 500".into())
                } else {
                    Ok(())
                }
            })
        }
        fn describe(&self) -> String {
            "test://sink".into()
        }
    }

    fn account(set_at: SystemTime) -> Arc<Account> {
        let acc = Account::new(
            AccountConfig {
                name: "alice".into(),
                apple_id: "alice@icloud.com".into(),
                password_file: None,
                password_command: None,
            },
            UpstreamKind::Icloud,
            Duration::from_secs(900),
            4,
        );
        acc.set_credential(Some(Credential {
            secret: Secret::new("abcd-efgh-ijkl-mnop".into()),
            source: CredentialSource::Vault,
            set_at: Some(set_at),
        }));
        Arc::new(acc)
    }

    struct Rig {
        acc: Arc<Account>,
        sink: Arc<Recorder>,
        metrics: Arc<Metrics>,
        saves: Arc<AtomicUsize>,
        token: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    fn rig_with(acc: Arc<Account>, min_secs: u64, warn_after_days: Option<u64>) -> Rig {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        acc.set_events(tx);
        let sink = Arc::new(Recorder::default());
        let metrics = Arc::new(Metrics::default());
        let saves = Arc::new(AtomicUsize::new(0));
        let s = saves.clone();
        let mut accounts = BTreeMap::new();
        accounts.insert("alice".to_string(), acc.clone());
        let n = Notifier {
            accounts: {
                let accounts = Arc::new(accounts);
                Arc::new(move || accounts.clone())
            },
            config: NotifyConfig {
                webhook: None,
                min_secs,
                warn_after_days,
                secret: None,
                calendar: false,
            },
            status_url: "http://127.0.0.1:8008/status".into(),
            sink: Some(sink.clone()),
            backoff: BACKOFF,
            metrics: metrics.clone(),
            save: Arc::new(move || {
                s.fetch_add(1, Ordering::SeqCst);
            }),
        };
        let token = CancellationToken::new();
        let task = tokio::spawn(n.run(rx, token.clone()));
        Rig {
            acc,
            sink,
            metrics,
            saves,
            token,
            task,
        }
    }

    fn rig(min_secs: u64) -> Rig {
        rig_with(account(SystemTime::now()), min_secs, None)
    }

    fn down() -> UpstreamError {
        UpstreamError::Unreachable {
            kind: Unreachable::Connect,
            detail: "connection failed".into(),
        }
    }

    fn all_ok(acc: &Account) {
        acc.record_success(Service::Caldav, 207);
        acc.record_success(Service::Carddav, 207);
    }

    async fn wait(secs: u64) {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_blip_sends_nothing_not_even_its_recovery() {
        let r = rig(300);
        all_ok(&r.acc);
        wait(1).await;
        r.acc.record_failure(Service::Caldav, &down(), None);
        wait(299).await;
        all_ok(&r.acc);
        wait(3600).await;
        assert!(r.sink.bodies().is_empty(), "{:?}", r.sink.bodies());
        assert_eq!(r.sink.attempts.load(Ordering::SeqCst), 0);
        r.token.cancel();
        let _ = r.task.await;
    }

    #[tokio::test(start_paused = true)]
    async fn unreachable_is_sent_after_min_secs_and_so_is_the_recovery() {
        let r = rig(300);
        all_ok(&r.acc);
        wait(1).await;
        for _ in 0..50 {
            r.acc.record_failure(Service::Caldav, &down(), None);
        }
        wait(299).await;
        assert!(r.sink.bodies().is_empty());
        wait(2).await;
        assert_eq!(r.sink.states(), ["unreachable"]);
        let b = &r.sink.bodies()[0];
        assert_eq!(b["previous_state"], "ok");
        assert_eq!(b["fix_url"], "http://127.0.0.1:8008/status");
        assert_eq!(b["apple_id"], "alice@icloud.com");
        assert!(b["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(r.acc.notified(), Some(ServiceState::Unreachable));
        all_ok(&r.acc);
        wait(1).await;
        assert_eq!(r.sink.states(), ["unreachable", "ok"]);
        assert_eq!(r.sink.bodies()[1]["previous_state"], "unreachable");
        r.token.cancel();
        let _ = r.task.await;
    }

    #[tokio::test(start_paused = true)]
    async fn auth_rejected_is_sent_at_once_and_once() {
        let r = rig(300);
        all_ok(&r.acc);
        wait(1).await;
        for _ in 0..200 {
            let _ = r.acc.record_auth_rejected(Service::Caldav);
            let _ = r.acc.gate(Service::Caldav);
        }
        wait(1).await;
        assert_eq!(r.sink.states(), ["auth_rejected"]);
        let b = &r.sink.bodies()[0];
        assert_eq!(b["fix_url"], APPLE_ID_URL);
        assert!(b["reason"].as_str().unwrap().contains("no longer accepts"));
        wait(3600).await;
        assert_eq!(r.sink.bodies().len(), 1);
        r.token.cancel();
        let _ = r.task.await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_state_supersedes_a_pending_retry() {
        let r = rig(300);
        all_ok(&r.acc);
        wait(1).await;
        r.sink.fail_first.store(2, Ordering::SeqCst);
        let _ = r.acc.record_auth_rejected(Service::Caldav);
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        // The rejection's first try failed; before its retry the password works again.
        assert_eq!(r.sink.attempts.load(Ordering::SeqCst), 1);
        all_ok(&r.acc);
        wait(600).await;
        assert_eq!(r.sink.states(), ["ok"]);
        assert_eq!(r.sink.bodies()[0]["previous_state"], "auth_rejected");
        assert_eq!(r.sink.attempts.load(Ordering::SeqCst), 3);
        r.token.cancel();
        let _ = r.task.await;
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_with_jitter_and_give_up_after_eight_tries() {
        let sink = Arc::new(Recorder::default());
        let metrics = Arc::new(Metrics::default());
        sink.fail_first.store(3, Ordering::SeqCst);
        let t0 = Instant::now();
        let ok = deliver_with_retry(
            sink.clone(),
            Bytes::from_static(b"{\"state\":\"ok\"}"),
            BACKOFF,
            metrics.clone(),
            "t".into(),
        )
        .await;
        let took = t0.elapsed();
        assert!(ok);
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 4);
        // 1 + 2 + 4 s, each jittered to 50-100 %.
        assert!(
            took >= Duration::from_millis(3500) && took <= Duration::from_secs(7),
            "{took:?}"
        );
        sink.fail_first.store(usize::MAX, Ordering::SeqCst);
        let t0 = Instant::now();
        let ok = deliver_with_retry(
            sink.clone(),
            Bytes::from_static(b"{}"),
            BACKOFF,
            metrics.clone(),
            "t".into(),
        )
        .await;
        assert!(!ok);
        assert_eq!(sink.attempts.load(Ordering::SeqCst), 4 + 8);
        // 1+2+4+...+64 s = 127 s at most.
        assert!(
            t0.elapsed() <= Duration::from_secs(127),
            "{:?}",
            t0.elapsed()
        );
        let g = metrics.inner_webhooks();
        assert_eq!(g, [1, 3 + 7, 1]);
        for n in 0..20 {
            let d = BACKOFF.delay(n);
            assert!(d <= BACKOFF.max && d >= BACKOFF.first / 2, "{n}: {d:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn saves_are_debounced_off_the_request_path() {
        let r = rig(300);
        wait(5).await;
        let base = r.saves.load(Ordering::SeqCst);
        for _ in 0..20 {
            all_ok(&r.acc);
            r.acc.record_failure(Service::Caldav, &down(), None);
        }
        // Nothing is written synchronously by the state changes themselves.
        assert_eq!(r.saves.load(Ordering::SeqCst), base);
        wait(2).await;
        let mut n = 0;
        for _ in 0..200 {
            n = r.saves.load(Ordering::SeqCst);
            if n > base {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            tokio::task::yield_now().await;
        }
        assert_eq!(n, base + 1, "one save for a burst of changes");
        r.token.cancel();
        let _ = r.task.await;
        assert_eq!(
            r.saves.load(Ordering::SeqCst),
            base + 2,
            "and one at shutdown"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_credential_age_reminder_is_sent_once_per_credential() {
        let old = SystemTime::now() - Duration::from_secs(40 * 86400);
        let acc = account(old);
        let r = rig_with(acc.clone(), 300, Some(30));
        wait(1).await;
        let b = r.sink.bodies();
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(b[0]["event"], "credential_age");
        assert_eq!(b[0]["age_days"], 40);
        wait(3 * 86400).await;
        assert_eq!(r.sink.bodies().len(), 1);
        r.token.cancel();
        let _ = r.task.await;
        // Remembered (this is what state.json keeps): a restart reminds no more.
        assert!(acc.persisted().credential_age_reminded.is_some());
        let again = account(old);
        again.restore(&acc.persisted());
        let r = rig_with(again, 300, Some(30));
        wait(1).await;
        assert!(r.sink.bodies().is_empty());
        // A young credential is not reminded of.
        let r2 = rig_with(account(SystemTime::now()), 300, Some(30));
        wait(1).await;
        assert!(r2.sink.bodies().is_empty());
        assert_eq!(r.metrics.inner_webhooks(), [0, 0, 0]);
    }

    #[test]
    fn signature_is_hmac_sha256_hex() {
        assert_eq!(
            signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn tracker_rules() {
        let now = Instant::now();
        let t0 = SystemTime::now();
        let mut t = Tracker::new(Duration::from_secs(300));
        assert!(t
            .start("a", ServiceState::Unknown, None, None, now)
            .is_none());
        // Unknown -> ok at start: nothing to tell.
        assert!(t
            .observe("a", ServiceState::Unknown, ServiceState::Ok, None, t0, now)
            .is_none());
        let n = t.observe(
            "a",
            ServiceState::Ok,
            ServiceState::RateLimited,
            Some("slow".into()),
            t0,
            now,
        );
        assert!(n.is_none());
        assert_eq!(t.next_deadline(), Some(now + Duration::from_secs(300)));
        assert!(t.due(now + Duration::from_secs(299)).is_empty());
        let d = t.due(now + Duration::from_secs(300));
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].state, d[0].previous),
            (ServiceState::RateLimited, ServiceState::Ok)
        );
        assert_eq!(t.next_deadline(), None);
        // Already told: coming back to the same state after `unknown` says nothing.
        assert!(t
            .observe(
                "a",
                ServiceState::RateLimited,
                ServiceState::Unknown,
                None,
                t0,
                now
            )
            .is_none());
        assert!(t
            .observe(
                "a",
                ServiceState::Unknown,
                ServiceState::RateLimited,
                None,
                t0,
                now
            )
            .is_none());
        assert_eq!(t.next_deadline(), None);
        // A restart that had told auth_rejected does not tell it again.
        let mut t = Tracker::new(Duration::from_secs(300));
        assert!(t
            .start(
                "a",
                ServiceState::AuthRejected,
                None,
                Some(ServiceState::AuthRejected),
                now
            )
            .is_none());
        let n = t
            .observe(
                "a",
                ServiceState::AuthRejected,
                ServiceState::Ok,
                None,
                t0,
                now,
            )
            .unwrap();
        assert_eq!(
            (n.state, n.previous),
            (ServiceState::Ok, ServiceState::AuthRejected)
        );
    }
}
