//! Discovery kept per account: what the principal and home sets of iCloud said, learned once
//! for every concurrent caller, learned again when iCloud moves the account to another
//! partition, and saved to `state.json` so that discovery can be answered while iCloud
//! refuses. How discovery walks iCloud is [`crate::upstream::discover`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounts::Account;
use crate::upstream::client::Upstream;
use crate::upstream::discover::{self, Learned};
use crate::upstream::error::UpstreamError;

/// How long a discovery failure is the answer for requests that waited for it.
const SHARED_FAILURE: Duration = Duration::from_secs(2);

impl Account {
    /// What discovery learned, learning it first if nothing is known yet (one discovery for
    /// concurrent callers).
    pub async fn ensure_learned(&self, upstream: &Upstream) -> Result<Arc<Learned>, UpstreamError> {
        if let Some(l) = self.learned() {
            return Ok(l);
        }
        let mut g = self.learn_lock.lock().await;
        if let Some(l) = self.learned() {
            return Ok(l);
        }
        // Discovery failed just now for the request we waited for: the same answer for us.
        if let Some((at, e)) = g.as_ref() {
            if at.elapsed() < SHARED_FAILURE {
                return Err(e.clone());
            }
        }
        let learned = match discover::learn(upstream, self).await {
            Ok(l) => l,
            Err(e) => {
                *g = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        *g = None;
        self.set_learned(learned);
        self.save_state();
        self.learned().ok_or(UpstreamError::BadResponse {
            detail: "discovery result was lost".into(),
        })
    }

    /// Learn the layout again now, unless another request already did since `before` was
    /// learned (concurrent requests that all met the move share one discovery).
    pub async fn relearn_now(
        &self,
        upstream: &Upstream,
        before: &Arc<Learned>,
    ) -> Result<(), UpstreamError> {
        let _g = self.learn_lock.lock().await;
        if self.learned().is_some_and(|now| !Arc::ptr_eq(&now, before)) {
            return Ok(());
        }
        let learned = discover::learn(upstream, self).await?;
        self.set_learned(learned);
        self.save_state();
        Ok(())
    }

    /// The upstream moved us to another host: learn the layout again in the background.
    pub fn relearn_later(self: &Arc<Self>, upstream: &Upstream) {
        let upstream = upstream.clone();
        let account = self.clone();
        tokio::spawn(async move {
            let _g = account.learn_lock.lock().await;
            match discover::learn(&upstream, &account).await {
                Ok(l) => {
                    account.set_learned(l);
                    account.save_state();
                }
                Err(e) => {
                    tracing::warn!(account = account.name(), error = %e, "re-discovery failed")
                }
            }
        });
    }
}
