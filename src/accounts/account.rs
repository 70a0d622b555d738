//! Per-account runtime state: the credential in use, what Apple last said about it (per
//! service), the probe limit after a rejection, and what discovery learned. Every change of
//! a service's or the account's (state, reason) is reported as a [`StateEvent`] on the
//! channel given to [`Account::set_events`], without ever blocking the caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use sha2::Digest;
use tokio::sync::mpsc::UnboundedSender;

use crate::accounts::credential::{looks_like_app_password, Credential};
use crate::accounts::persist::{from_unix, unix_secs, Persisted, PersistedService, Saver};
use crate::accounts::status::{account_state, ServiceStatus, StateEvent, SERVED};
use crate::config::{AccountConfig, UpstreamKind};
use crate::upstream::discover::Learned;
use crate::upstream::error::{AuthReason, UpstreamError};
use crate::upstream::gate::Admitted;
use crate::upstream::service::{Service, ServiceState};

struct Inner {
    credential: Option<Credential>,
    /// `Authorization: Basic ...` for the credential, built once.
    auth_header: Option<http::HeaderValue>,
    /// Apple accepted the current credential at least once.
    accepted_before: bool,
    /// Per service: when Apple rejected the credential, and when we last asked again.
    rejected: HashMap<Service, (AuthReason, Instant)>,
    /// Services that Apple answered with the current credential since its last rejection.
    confirmed: std::collections::HashSet<Service>,
    services: HashMap<Service, ServiceStatus>,
    learned: Option<Arc<Learned>>,
    /// The last account state the operator was told about (webhook/log), kept across restarts.
    notified: Option<ServiceState>,
    /// `credential_set_at` (unix seconds) of the credential whose age was already reminded.
    age_reminded: Option<u64>,
}

type Snapshot = (
    (ServiceState, Option<String>),
    Vec<(Service, ServiceState, Option<String>)>,
);

/// An account at run time.
pub struct Account {
    pub config: AccountConfig,
    pub kind: UpstreamKind,
    probe_every: Duration,
    inner: Mutex<Inner>,
    /// Upstream requests in flight for this account.
    pub limiter: tokio::sync::Semaphore,
    /// Serialises discovery so concurrent first requests share one (see
    /// [`crate::accounts::learn`]). Holds the last failure of discovery for a moment, so
    /// requests that waited for it get the same answer instead of each trying in turn.
    pub(super) learn_lock: tokio::sync::Mutex<Option<(Instant, UpstreamError)>>,
    /// Held by the one request that checks a suspect credential (see [`Account::admit`]).
    probe_lock: Arc<tokio::sync::Mutex<()>>,
    /// After a 503/429 from Apple: no upstream request until then (and the status Apple
    /// sent); with the number of such answers in a row, for the backoff without Retry-After.
    hold: Mutex<Option<(Instant, u16, u32)>>,
    /// Where state changes go (set once when the account is registered).
    events: OnceLock<UnboundedSender<StateEvent>>,
    /// Saves `state.json` (set once when the account is registered).
    saver: OnceLock<Saver>,
    served: Vec<Service>,
    /// When a refused photo or attachment last made the bridge ask Apple about the password
    /// (at most once per `auth_probe_secs`, however many such links a client follows).
    asset_probe: Mutex<Option<Instant>>,
}

pub(crate) enum Gate {
    Go(http::HeaderValue),
    /// Apple rejected the credential on another service and this one has not answered
    /// since: one request checks, the others wait for its answer.
    Suspect(http::HeaderValue),
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("name", &self.config.name)
            .finish()
    }
}

impl Account {
    pub fn new(
        config: AccountConfig,
        kind: UpstreamKind,
        probe_every: Duration,
        max_concurrent: usize,
    ) -> Account {
        Account {
            config,
            kind,
            probe_every,
            inner: Mutex::new(Inner {
                credential: None,
                auth_header: None,
                accepted_before: false,
                rejected: HashMap::new(),
                confirmed: Default::default(),
                services: HashMap::new(),
                learned: None,
                notified: None,
                age_reminded: None,
            }),
            limiter: tokio::sync::Semaphore::new(max_concurrent),
            learn_lock: tokio::sync::Mutex::new(None),
            probe_lock: Arc::new(tokio::sync::Mutex::new(())),
            hold: Mutex::new(None),
            events: OnceLock::new(),
            saver: OnceLock::new(),
            served: SERVED.to_vec(),
            asset_probe: Mutex::new(None),
        }
    }

    /// May a refused photo or attachment trigger a check of the password now? True at most
    /// once per `auth_probe_secs`.
    pub fn take_asset_probe(&self) -> bool {
        let mut g = self.asset_probe.lock().unwrap_or_else(|e| e.into_inner());
        match *g {
            Some(at) if at.elapsed() < self.probe_every => false,
            _ => {
                *g = Some(Instant::now());
                true
            }
        }
    }

    /// Report every later change of (state, reason) on `tx`. Only the first call counts.
    pub fn set_events(&self, tx: UnboundedSender<StateEvent>) {
        let _ = self.events.set(tx);
    }

    /// Save `state.json` through `saver` from now on. Only the first call counts.
    pub fn set_saver(&self, saver: Saver) {
        let _ = self.saver.set(saver);
    }

    /// Save `state.json` (what discovery learned, states, notification bookkeeping); a no-op
    /// for an account not registered (a scratch account testing a new password).
    pub fn save_state(&self) {
        if let Some(save) = self.saver.get() {
            save();
        }
    }

    /// Serve these services (the account's state is the worst of them).
    pub fn with_served(mut self, served: Vec<Service>) -> Account {
        self.served = served;
        self
    }

    /// The services whose state makes up the account's state.
    pub fn served(&self) -> &[Service] {
        &self.served
    }

    /// The account's state and reason (see [`account_state`]).
    pub fn overall(&self) -> (ServiceState, Option<String>) {
        let g = self.lock();
        self.overall_of(&g)
    }

    fn overall_of(&self, g: &Inner) -> (ServiceState, Option<String>) {
        let default = ServiceStatus::default();
        let statuses: Vec<&ServiceStatus> = self
            .served
            .iter()
            .map(|s| g.services.get(s).unwrap_or(&default))
            .collect();
        account_state(&self.config.name, g.credential.is_some(), &statuses)
    }

    fn snapshot(&self, g: &Inner) -> Snapshot {
        let services = g
            .services
            .iter()
            .map(|(k, v)| (*k, v.state, v.reason.clone()))
            .collect();
        (self.overall_of(g), services)
    }

    /// Run `f` on the state under the lock and report what it changed. Sending on an
    /// unbounded channel never blocks.
    fn change<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.lock();
        let Some(tx) = self.events.get() else {
            return f(&mut g);
        };
        let before = self.snapshot(&g);
        let r = f(&mut g);
        let after = self.snapshot(&g);
        drop(g);
        if before == after {
            return r;
        }
        let now = SystemTime::now();
        let send = |service, old, new, reason| {
            let _ = tx.send(StateEvent {
                account: self.config.name.clone(),
                service,
                old,
                new,
                reason,
                at: now,
            });
        };
        for (svc, state, reason) in &after.1 {
            let old = before
                .1
                .iter()
                .find(|(s, _, _)| s == svc)
                .map(|(_, st, r)| (*st, r.clone()))
                .unwrap_or((ServiceState::Unknown, None));
            if old != (*state, reason.clone()) {
                send(Some(*svc), old.0, *state, reason.clone());
            }
        }
        if before.0 != after.0 {
            send(None, (before.0).0, (after.0).0, (after.0).1.clone());
        }
        r
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means another request panicked; the data is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn apple_id(&self) -> &str {
        &self.config.apple_id
    }

    /// Install a (new) credential; forgets every rejection of the old one.
    pub fn set_credential(&self, credential: Option<Credential>) {
        self.change(|g| self.set_credential_in(g, credential))
    }

    fn set_credential_in(&self, g: &mut Inner, credential: Option<Credential>) {
        let changed = match (&g.credential, &credential) {
            (Some(a), Some(b)) => a.secret.expose() != b.secret.expose(),
            (None, None) => false,
            _ => true,
        };
        if changed {
            g.accepted_before = false;
            g.rejected.clear();
            g.confirmed.clear();
            for s in g.services.values_mut() {
                if matches!(
                    s.state,
                    ServiceState::AuthRejected | ServiceState::Unconfigured
                ) {
                    s.state = ServiceState::Unknown;
                    s.reason = None;
                }
            }
        }
        g.auth_header = credential.as_ref().and_then(|c| {
            use base64::Engine;
            let token = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                self.config.apple_id,
                c.secret.expose()
            ));
            let mut v = http::HeaderValue::from_str(&format!("Basic {token}")).ok()?;
            v.set_sensitive(true);
            Some(v)
        });
        g.credential = credential;
    }

    pub fn credential_set_at(&self) -> Option<SystemTime> {
        self.lock().credential.as_ref().and_then(|c| c.set_at)
    }

    pub fn has_credential(&self) -> bool {
        self.lock().credential.is_some()
    }

    /// May a request go to Apple for `service`? Returns the `Authorization` header, or the
    /// error a client gets without asking Apple. After a rejection of this service, one
    /// request every `auth_probe_secs` is let through as the probe; after a rejection of
    /// another service, concurrent requests share one check instead of all sending a
    /// credential that is probably dead.
    pub async fn admit(&self, service: Service) -> Result<Admitted, UpstreamError> {
        match self.gate(service)? {
            Gate::Go(authorization) => Ok(Admitted::new(authorization, None)),
            Gate::Suspect(_) => {
                let guard = self.probe_lock.clone().lock_owned().await;
                // Whoever held the lock has answered; look again.
                match self.gate(service)? {
                    Gate::Go(authorization) => Ok(Admitted::new(authorization, None)),
                    Gate::Suspect(authorization) => Ok(Admitted::new(authorization, Some(guard))),
                }
            }
        }
    }

    pub(crate) fn gate(&self, service: Service) -> Result<Gate, UpstreamError> {
        self.change(|g| self.gate_in(g, service))
    }

    fn gate_in(&self, g: &mut Inner, service: Service) -> Result<Gate, UpstreamError> {
        let Some(cred) = g.credential.as_ref() else {
            let e = UpstreamError::Unconfigured {
                account: self.config.name.clone(),
            };
            set_status(g, service, &e, None);
            return Err(e);
        };
        if self.kind == UpstreamKind::Icloud && !looks_like_app_password(cred.secret.expose()) {
            let e = UpstreamError::AuthRejected {
                reason: AuthReason::NotAppPassword,
                apple_id: self.config.apple_id.clone(),
            };
            set_status(g, service, &e, None);
            return Err(e);
        }
        let Some(header) = g.auth_header.clone() else {
            let e = UpstreamError::Unconfigured {
                account: self.config.name.clone(),
            };
            set_status(g, service, &e, None);
            return Err(e);
        };
        if let Some((reason, last_probe)) = g.rejected.get(&service).copied() {
            if last_probe.elapsed() < self.probe_every {
                return Err(UpstreamError::AuthRejected {
                    reason,
                    apple_id: self.config.apple_id.clone(),
                });
            }
            // This request is the probe; others wait for the next window.
            g.rejected.insert(service, (reason, Instant::now()));
            return Ok(Gate::Go(header));
        }
        if !g.rejected.is_empty() && !g.confirmed.contains(&service) {
            return Ok(Gate::Suspect(header));
        }
        Ok(Gate::Go(header))
    }

    /// Apple answered `status` (not 401/429/503) for `service`: the credential works.
    pub fn record_success(&self, service: Service, status: u16) {
        self.change(|g| {
            g.accepted_before = true;
            g.rejected.remove(&service);
            g.confirmed.insert(service);
            let s = g.services.entry(service).or_default();
            s.state = ServiceState::Ok;
            s.reason = None;
            s.last_success = Some(SystemTime::now());
            s.last_upstream_status = Some(status);
        })
    }

    /// Apple answered 401: decide locally why, remember it, and return the error.
    pub fn record_auth_rejected(&self, service: Service) -> UpstreamError {
        self.change(|g| {
            let reason = if g.accepted_before {
                AuthReason::Revoked
            } else {
                AuthReason::NeverAccepted
            };
            g.rejected.insert(service, (reason, Instant::now()));
            // A revoked password is dead for every service: each must check again.
            g.confirmed.clear();
            let e = UpstreamError::AuthRejected {
                reason,
                apple_id: self.config.apple_id.clone(),
            };
            set_status(g, service, &e, Some(401));
            e
        })
    }

    /// Any other failure (unreachable, rate limited, bad response).
    pub fn record_failure(&self, service: Service, err: &UpstreamError, status: Option<u16>) {
        self.change(|g| set_status(g, service, err, status))
    }

    pub fn status(&self, service: Service) -> ServiceStatus {
        self.lock()
            .services
            .get(&service)
            .cloned()
            .unwrap_or_default()
    }

    /// While Apple asked us to wait: the error to give without asking again.
    pub fn held(&self) -> Option<UpstreamError> {
        let g = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        let (until, status, _) = (*g)?;
        let left = until.checked_duration_since(Instant::now())?;
        Some(UpstreamError::RateLimited {
            status,
            retry_after: crate::upstream::error::retry_secs(left),
        })
    }

    /// Apple answered 503/429: hold every request for exactly what Apple's `Retry-After`
    /// asked (bounded to 1 s–1 h by the caller) or, without one, for a backoff that doubles
    /// from 5 s to 60 s with each such answer in a row. The one bridge is the only client of
    /// the account, so there is nothing to spread out with jitter.
    pub fn hold_off(&self, status: u16, retry_after: Option<Duration>) -> Duration {
        let mut g = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        let streak = g.map(|(_, _, n)| n).unwrap_or(0).saturating_add(1);
        let wait = retry_after
            .unwrap_or_else(|| Duration::from_secs((5u64 << (streak - 1).min(4)).min(60)));
        *g = Some((Instant::now() + wait, status, streak));
        wait
    }

    /// A normal answer from Apple ends any hold.
    pub fn clear_hold(&self) {
        let mut g = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        *g = None;
    }

    pub fn learned(&self) -> Option<Arc<Learned>> {
        self.lock().learned.clone()
    }

    pub fn set_learned(&self, learned: Learned) {
        self.lock().learned = Some(Arc::new(learned));
    }

    /// The last account state the operator was told about (`None`: nothing yet).
    pub fn notified(&self) -> Option<ServiceState> {
        self.lock().notified
    }

    pub fn set_notified(&self, state: ServiceState) {
        self.lock().notified = Some(state);
    }

    /// Whether the age of the credential set at `set_at` was already reminded.
    pub fn age_reminded(&self, set_at: SystemTime) -> bool {
        self.lock().age_reminded == Some(unix_secs(set_at))
    }

    pub fn set_age_reminded(&self, set_at: SystemTime) {
        self.lock().age_reminded = Some(unix_secs(set_at));
    }

    /// What `state.json` keeps of this account (besides what discovery learned).
    pub fn persisted(&self) -> Persisted {
        let g = self.lock();
        Persisted {
            credential_id: g
                .credential
                .as_ref()
                .map(|c| credential_id(&self.config.apple_id, c.secret.expose())),
            accepted_before: g.accepted_before,
            services: g
                .services
                .iter()
                .map(|(k, v)| {
                    (
                        *k,
                        PersistedService {
                            state: v.state,
                            reason: v.reason.clone(),
                            last_success: v.last_success.map(unix_secs),
                            last_failure: v.last_failure.map(unix_secs),
                            last_upstream_status: v.last_upstream_status,
                        },
                    )
                })
                .collect(),
            notified_state: g.notified,
            credential_age_reminded: g.age_reminded,
        }
    }

    /// Take back what a previous run saved. Call after the credential is installed and
    /// before events are wired: what belongs to the credential (`accepted_before`, a
    /// rejection) is kept only if the credential is still the same one.
    pub fn restore(&self, p: &Persisted) {
        let mut g = self.lock();
        let same = match (&g.credential, &p.credential_id) {
            (Some(c), Some(id)) => credential_id(&self.config.apple_id, c.secret.expose()) == *id,
            _ => false,
        };
        if same {
            g.accepted_before = p.accepted_before;
        }
        for (svc, ps) in &p.services {
            let credential_bound = matches!(
                ps.state,
                ServiceState::AuthRejected | ServiceState::Unconfigured
            );
            let (state, reason) = if credential_bound && !same {
                (ServiceState::Unknown, None)
            } else {
                (ps.state, ps.reason.clone())
            };
            g.services.insert(
                *svc,
                ServiceStatus {
                    state,
                    reason,
                    last_success: ps.last_success.map(from_unix),
                    last_failure: ps.last_failure.map(from_unix),
                    last_upstream_status: ps.last_upstream_status,
                },
            );
        }
        g.notified = p.notified_state;
        g.age_reminded = p.credential_age_reminded;
    }
}

/// 64 bits of SHA-256 over a domain tag, the Apple ID and the password: enough to tell
/// credentials apart, far too little to recover a password from.
pub(crate) fn credential_id(apple_id: &str, secret: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"icloud-bridge credential id\0");
    h.update(apple_id.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn set_status(g: &mut Inner, service: Service, err: &UpstreamError, status: Option<u16>) {
    let s = g.services.entry(service).or_default();
    s.state = err.state();
    s.reason = Some(err.to_string());
    s.last_failure = Some(SystemTime::now());
    if status.is_some() {
        s.last_upstream_status = status;
    }
}

/// The upstream clients' view of an account (see [`crate::upstream::gate`]).
impl crate::upstream::gate::Gate for Account {
    fn name(&self) -> &str {
        Account::name(self)
    }
    fn apple_id(&self) -> &str {
        Account::apple_id(self)
    }
    fn held(&self) -> Option<UpstreamError> {
        Account::held(self)
    }
    async fn admit(&self, service: Service) -> Result<Admitted, UpstreamError> {
        Account::admit(self, service).await
    }
    fn limiter(&self) -> &tokio::sync::Semaphore {
        &self.limiter
    }
    fn learned(&self) -> Option<Arc<Learned>> {
        Account::learned(self)
    }
    fn record_success(&self, service: Service, status: u16) {
        Account::record_success(self, service, status)
    }
    fn record_auth_rejected(&self, service: Service) -> UpstreamError {
        Account::record_auth_rejected(self, service)
    }
    fn record_failure(&self, service: Service, err: &UpstreamError, status: Option<u16>) {
        Account::record_failure(self, service, err, status)
    }
    fn hold_off(&self, status: u16, retry_after: Option<Duration>) -> Duration {
        Account::hold_off(self, status, retry_after)
    }
    fn clear_hold(&self) {
        Account::clear_hold(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::credential::CredentialSource;
    use crate::secret::Secret;
    use crate::upstream::error::Unreachable;
    use std::time::UNIX_EPOCH;

    fn account(name: &str) -> Account {
        Account::new(
            AccountConfig {
                name: name.into(),
                apple_id: format!("{name}@icloud.com"),
                password_file: None,
                password_command: None,
            },
            UpstreamKind::Icloud,
            Duration::from_secs(900),
            4,
        )
    }

    fn cred(pw: &str) -> Option<Credential> {
        Some(Credential {
            secret: Secret::new(pw.into()),
            source: CredentialSource::Vault,
            set_at: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        })
    }

    fn down() -> UpstreamError {
        UpstreamError::Unreachable {
            kind: Unreachable::Connect,
            detail: "connection failed".into(),
        }
    }

    fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<StateEvent>) -> Vec<StateEvent> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push(e);
        }
        v
    }

    #[test]
    fn only_real_changes_send_events_and_the_account_state_is_the_worst() {
        let acc = account("alice");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        acc.set_events(tx);
        acc.set_credential(cred("abcd-efgh-ijkl-mnop"));
        let ev = drain(&mut rx);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(
            (ev[0].service, ev[0].old, ev[0].new),
            (None, ServiceState::Unconfigured, ServiceState::Unknown)
        );
        acc.record_success(Service::Caldav, 207);
        acc.record_success(Service::Carddav, 207);
        let ev = drain(&mut rx);
        let account_level: Vec<_> = ev.iter().filter(|e| e.service.is_none()).collect();
        assert_eq!(account_level.len(), 1, "{ev:?}");
        assert_eq!(account_level[0].new, ServiceState::Ok);
        assert_eq!(ev.len(), 3, "{ev:?}");
        // 200 identical successes and 200 identical rejections: one change.
        for _ in 0..200 {
            acc.record_success(Service::Caldav, 207);
        }
        assert!(drain(&mut rx).is_empty());
        for _ in 0..200 {
            let _ = acc.record_auth_rejected(Service::Caldav);
            let _ = acc.gate(Service::Caldav);
        }
        let ev = drain(&mut rx);
        assert_eq!(ev.len(), 2, "{ev:?}");
        let a = ev.iter().find(|e| e.service.is_none()).unwrap();
        assert_eq!(
            (a.old, a.new),
            (ServiceState::Ok, ServiceState::AuthRejected)
        );
        assert!(a.reason.as_deref().unwrap().contains("no longer accepts"));
        assert_eq!(acc.overall().0, ServiceState::AuthRejected);
        // A network failure of the other service is less bad: the account stays rejected,
        // but the service's own change is reported.
        acc.record_failure(Service::Carddav, &down(), None);
        let ev = drain(&mut rx);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].service, Some(Service::Carddav));
        // A new credential clears the rejection.
        acc.set_credential(cred("bcde-efgh-ijkl-mnop"));
        let ev = drain(&mut rx);
        let a = ev.iter().find(|e| e.service.is_none()).unwrap();
        assert_eq!(
            (a.old, a.new),
            (ServiceState::AuthRejected, ServiceState::Unreachable)
        );
        acc.set_credential(None);
        assert_eq!(acc.overall().0, ServiceState::Unconfigured);
        assert!(acc.overall().1.unwrap().contains("reconnect"));
    }

    #[test]
    fn the_account_state_rule() {
        let ok = ServiceStatus {
            state: ServiceState::Ok,
            ..Default::default()
        };
        let unknown = ServiceStatus::default();
        let down = ServiceStatus {
            state: ServiceState::Unreachable,
            reason: Some("down".into()),
            ..Default::default()
        };
        assert_eq!(
            account_state("a", true, &[&unknown, &unknown]).0,
            ServiceState::Unknown
        );
        assert_eq!(account_state("a", true, &[&ok, &ok]).0, ServiceState::Ok);
        assert_eq!(
            account_state("a", true, &[&ok, &down]),
            (ServiceState::Unreachable, Some("down".into()))
        );
        assert_eq!(
            account_state("a", false, &[&ok, &ok]).0,
            ServiceState::Unconfigured
        );
    }

    #[test]
    fn persisted_state_comes_back_only_for_the_same_credential() {
        let acc = account("alice");
        acc.set_credential(cred("abcd-efgh-ijkl-mnop"));
        acc.record_success(Service::Caldav, 207);
        let _ = acc.record_auth_rejected(Service::Carddav);
        acc.set_notified(ServiceState::AuthRejected);
        let p = acc.persisted();
        let text = serde_json::to_string(&p).unwrap();
        assert!(!text.contains("abcd-efgh"), "{text}");
        let back: Persisted = serde_json::from_str(&text).unwrap();
        assert_eq!(back, p);

        let same = account("alice");
        same.set_credential(cred("abcd-efgh-ijkl-mnop"));
        same.restore(&back);
        assert_eq!(
            same.status(Service::Carddav).state,
            ServiceState::AuthRejected
        );
        assert_eq!(same.notified(), Some(ServiceState::AuthRejected));
        let e = same.record_auth_rejected(Service::Caldav);
        assert!(e.to_string().contains("no longer accepts"), "{e}");

        let other = account("alice");
        other.set_credential(cred("zzzz-efgh-ijkl-mnop"));
        other.restore(&back);
        assert_eq!(other.status(Service::Carddav).state, ServiceState::Unknown);
        assert_eq!(other.status(Service::Caldav).state, ServiceState::Ok);
        let e = other.record_auth_rejected(Service::Caldav);
        assert!(e.to_string().contains("refused"), "{e}");

        // Files from before (only `learned`) still load.
        let old: Persisted = serde_json::from_str(r#"{"learned":{"x":1}}"#).unwrap();
        assert_eq!(old, Persisted::default());
    }
}
