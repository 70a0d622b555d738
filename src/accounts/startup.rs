//! The one check of each account's stored credential when `serve` starts (and what `check`
//! prints): DAV by learning the account's layout.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::accounts::{Account, Accounts};
use crate::upstream::client::Upstream;
use crate::upstream::error::UpstreamError;

/// Test each account's credential once, in the background, by learning its DAV layout.
pub fn spawn_dav_checks(accounts: &Accounts, upstream: &Upstream, token: &CancellationToken) {
    for acc in accounts.snapshot().values() {
        let (acc, upstream, token) = (acc.clone(), upstream.clone(), token.clone());
        tokio::spawn(async move {
            if !acc.has_credential() {
                tracing::warn!(
                    account = acc.name(),
                    "no app-specific password is stored; run `icloud-bridge reconnect`"
                );
                return;
            }
            tokio::select! {
                _ = token.cancelled() => {}
                r = check_dav(&upstream, &acc) => match r {
                    Ok(()) => tracing::info!(account = acc.name(), "upstream accepted the stored password"),
                    Err(e) => tracing::warn!(account = acc.name(), error = %e, "start-up check failed"),
                },
            }
        });
    }
}

/// CalDAV and CardDAV accept the credential when discovery of both succeeds.
pub async fn check_dav(upstream: &Upstream, acc: &Arc<Account>) -> Result<(), UpstreamError> {
    acc.ensure_learned(upstream).await.map(|_| ())
}
