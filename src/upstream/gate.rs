//! What the upstream clients ask of an account before and after each request to iCloud: may
//! the credential go now (and which `Authorization`), is Apple's hold still on, and what did
//! Apple answer. The account layer ([`crate::accounts::Account`]) keeps the state behind it;
//! the clients here stay free of it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::sync::{OwnedMutexGuard, Semaphore};

use crate::secret::Secret;

use crate::upstream::discover::Learned;
use crate::upstream::error::UpstreamError;
use crate::upstream::service::Service;

/// Permission to send one request upstream: the `Authorization` header, and, when this
/// request is the one checking a suspect credential, the guard that makes others wait for it.
pub struct Admitted {
    pub authorization: http::HeaderValue,
    _probe: Option<OwnedMutexGuard<()>>,
}

impl Admitted {
    pub fn new(authorization: http::HeaderValue, probe: Option<OwnedMutexGuard<()>>) -> Admitted {
        Admitted {
            authorization,
            _probe: probe,
        }
    }

    /// The password in the `Authorization: Basic` header (`apple_id:password`), for the
    /// protocols that send it themselves (IMAP LOGIN, SMTP AUTH): exactly the credential this
    /// attempt was admitted with.
    pub fn password(&self, apple_id: &str) -> Option<Secret> {
        let v = self.authorization.to_str().ok()?;
        let raw = B64.decode(v.strip_prefix("Basic ")?.trim()).ok()?;
        let s = String::from_utf8(raw).ok()?;
        s.strip_prefix(apple_id)?
            .strip_prefix(':')
            .map(|p| Secret::new(p.to_string()))
    }
}

/// The account's side of every upstream exchange.
pub trait Gate: Send + Sync {
    /// The account's local name (for logs).
    fn name(&self) -> &str;
    /// The Apple ID the credential belongs to.
    fn apple_id(&self) -> &str;
    /// Apple asked for a pause (503/429) that has not ended: the error to answer with.
    fn held(&self) -> Option<UpstreamError>;
    /// May a request go to Apple for `service` now? See [`crate::accounts::Account::admit`].
    fn admit(
        &self,
        service: Service,
    ) -> impl Future<Output = Result<Admitted, UpstreamError>> + Send;
    /// Upstream requests in flight for this account.
    fn limiter(&self) -> &Semaphore;
    /// What discovery learned (its origins are trusted too).
    fn learned(&self) -> Option<Arc<Learned>>;
    /// Apple answered `status` (not 401/429/503): the credential works.
    fn record_success(&self, service: Service, status: u16);
    /// Apple answered 401: the error clients get.
    fn record_auth_rejected(&self, service: Service) -> UpstreamError;
    /// Anything else that went wrong.
    fn record_failure(&self, service: Service, err: &UpstreamError, status: Option<u16>);
    /// Apple answered 503/429 (with `Retry-After` if given): hold requests; how long.
    fn hold_off(&self, status: u16, retry_after: Option<Duration>) -> Duration;
    /// A request went through: any hold is over.
    fn clear_hold(&self);
}

/// An account shared between tasks is the same gate.
impl<G: Gate> Gate for Arc<G> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn apple_id(&self) -> &str {
        (**self).apple_id()
    }
    fn held(&self) -> Option<UpstreamError> {
        (**self).held()
    }
    fn admit(
        &self,
        service: Service,
    ) -> impl Future<Output = Result<Admitted, UpstreamError>> + Send {
        (**self).admit(service)
    }
    fn limiter(&self) -> &Semaphore {
        (**self).limiter()
    }
    fn learned(&self) -> Option<Arc<Learned>> {
        (**self).learned()
    }
    fn record_success(&self, service: Service, status: u16) {
        (**self).record_success(service, status)
    }
    fn record_auth_rejected(&self, service: Service) -> UpstreamError {
        (**self).record_auth_rejected(service)
    }
    fn record_failure(&self, service: Service, err: &UpstreamError, status: Option<u16>) {
        (**self).record_failure(service, err, status)
    }
    fn hold_off(&self, status: u16, retry_after: Option<Duration>) -> Duration {
        (**self).hold_off(status, retry_after)
    }
    fn clear_hold(&self) {
        (**self).clear_hold()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_comes_from_the_basic_header() {
        let h = http::HeaderValue::from_str(&format!("Basic {}", B64.encode("a@icloud.com:pw:x")))
            .unwrap();
        let admitted = Admitted::new(h, None);
        assert_eq!(admitted.password("a@icloud.com").unwrap().expose(), "pw:x");
        assert!(admitted.password("b@icloud.com").is_none());
    }
}
