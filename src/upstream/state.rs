//! Per-account runtime state: the credential in use, what Apple last said about it (per
//! service), the probe limit after a rejection, and what discovery learned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{AccountConfig, UpstreamKind};
use crate::upstream::credential::{looks_like_app_password, Credential};
use crate::upstream::discover::Learned;
use crate::upstream::error::{AuthReason, UpstreamError};

/// One of the upstream services an account uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Caldav,
    Carddav,
    Imap,
    Smtp,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Caldav => "caldav",
            Service::Carddav => "carddav",
            Service::Imap => "imap",
            Service::Smtp => "smtp",
        }
    }
}

/// The state shown on the status page, in `/status.json` and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    // Ordered from best to worst so that the account's state is the max.
    Ok,
    Unknown,
    RateLimited,
    Unreachable,
    AuthRejected,
    Unconfigured,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Ok => "ok",
            ServiceState::Unknown => "unknown",
            ServiceState::RateLimited => "rate_limited",
            ServiceState::Unreachable => "unreachable",
            ServiceState::AuthRejected => "auth_rejected",
            ServiceState::Unconfigured => "unconfigured",
        }
    }
}

/// What the bridge knows about one service of one account.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub state: ServiceState,
    pub reason: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub last_success: Option<SystemTime>,
    #[serde(serialize_with = "ser_time")]
    pub last_failure: Option<SystemTime>,
    pub last_upstream_status: Option<u16>,
}

impl Default for ServiceStatus {
    fn default() -> Self {
        ServiceStatus {
            state: ServiceState::Unknown,
            reason: None,
            last_success: None,
            last_failure: None,
            last_upstream_status: None,
        }
    }
}

fn ser_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&httpdate::fmt_http_date(*t)),
        None => s.serialize_none(),
    }
}

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
}

/// An account at run time.
pub struct Account {
    pub config: AccountConfig,
    pub kind: UpstreamKind,
    probe_every: Duration,
    inner: Mutex<Inner>,
    /// Upstream requests in flight for this account.
    pub limiter: tokio::sync::Semaphore,
    /// Serialises discovery so concurrent first requests share one.
    pub learn_lock: tokio::sync::Mutex<()>,
    /// Held by the one request that checks a suspect credential (see [`Account::admit`]).
    probe_lock: Arc<tokio::sync::Mutex<()>>,
    /// After a 503/429 from Apple: no upstream request until then (and the status Apple
    /// sent); with the number of such answers in a row, for the backoff without Retry-After.
    hold: Mutex<Option<(Instant, u16, u32)>>,
}

/// Permission to send one request upstream: the `Authorization` header, and, when this
/// request is the one checking a suspect credential, the guard that makes others wait for it.
pub struct Admitted {
    pub authorization: http::HeaderValue,
    _probe: Option<tokio::sync::OwnedMutexGuard<()>>,
}

enum Gate {
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
            }),
            limiter: tokio::sync::Semaphore::new(max_concurrent),
            learn_lock: tokio::sync::Mutex::new(()),
            probe_lock: Arc::new(tokio::sync::Mutex::new(())),
            hold: Mutex::new(None),
        }
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
        let mut g = self.lock();
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
            Gate::Go(authorization) => Ok(Admitted {
                authorization,
                _probe: None,
            }),
            Gate::Suspect(_) => {
                let guard = self.probe_lock.clone().lock_owned().await;
                // Whoever held the lock has answered; look again.
                match self.gate(service)? {
                    Gate::Go(authorization) => Ok(Admitted {
                        authorization,
                        _probe: None,
                    }),
                    Gate::Suspect(authorization) => Ok(Admitted {
                        authorization,
                        _probe: Some(guard),
                    }),
                }
            }
        }
    }

    fn gate(&self, service: Service) -> Result<Gate, UpstreamError> {
        let mut g = self.lock();
        let Some(cred) = g.credential.as_ref() else {
            let e = UpstreamError::Unconfigured {
                account: self.config.name.clone(),
            };
            set_status(&mut g, service, &e, None);
            return Err(e);
        };
        if self.kind == UpstreamKind::Icloud && !looks_like_app_password(cred.secret.expose()) {
            let e = UpstreamError::AuthRejected {
                reason: AuthReason::NotAppPassword,
                apple_id: self.config.apple_id.clone(),
            };
            set_status(&mut g, service, &e, None);
            return Err(e);
        }
        let Some(header) = g.auth_header.clone() else {
            let e = UpstreamError::Unconfigured {
                account: self.config.name.clone(),
            };
            set_status(&mut g, service, &e, None);
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
        let mut g = self.lock();
        g.accepted_before = true;
        g.rejected.remove(&service);
        g.confirmed.insert(service);
        let s = g.services.entry(service).or_default();
        s.state = ServiceState::Ok;
        s.reason = None;
        s.last_success = Some(SystemTime::now());
        s.last_upstream_status = Some(status);
    }

    /// Apple answered 401: decide locally why, remember it, and return the error.
    pub fn record_auth_rejected(&self, service: Service) -> UpstreamError {
        let mut g = self.lock();
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
        set_status(&mut g, service, &e, Some(401));
        e
    }

    /// Any other failure (unreachable, rate limited, bad response).
    pub fn record_failure(&self, service: Service, err: &UpstreamError, status: Option<u16>) {
        let mut g = self.lock();
        set_status(&mut g, service, err, status);
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
            retry_after: Duration::from_secs(left.as_secs().clamp(60, 3600)),
        })
    }

    /// Apple answered 503/429: hold every request for `retry_after` (Apple's, clamped) or,
    /// without one, for a backoff that doubles from 5 s to 60 s; both with up to 10 % jitter.
    pub fn hold_off(&self, status: u16, retry_after: Option<Duration>) -> Duration {
        let mut g = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        let streak = g.map(|(_, _, n)| n).unwrap_or(0).saturating_add(1);
        let base = retry_after
            .unwrap_or_else(|| Duration::from_secs((5u64 << (streak - 1).min(4)).min(60)));
        let jitter = base.mul_f64(rand::random::<f64>() * 0.1);
        let wait = base + jitter;
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
