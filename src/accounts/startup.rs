//! The one check of each account's stored credential, per service, when `serve` starts and
//! in `icloud-bridge check`: DAV by learning the account's layout, IMAP and SMTP by logging
//! in to iCloud's mail servers once and out again.

use std::future::Future;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::accounts::{Account, Accounts};
use crate::upstream::client::Upstream;
use crate::upstream::error::UpstreamError;
use crate::upstream::imap::ImapClient;
use crate::upstream::smtp::SmtpClient;

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

/// IMAP accepts the credential when a LOGIN succeeds (then LOGOUT); the outcome is recorded
/// in the account's state.
pub async fn check_imap(imap: &ImapClient, acc: &Arc<Account>) -> Result<(), UpstreamError> {
    crate::upstream::imap::check(imap, acc).await
}

/// SMTP accepts the credential when AUTH succeeds (then QUIT); the outcome is recorded in the
/// account's state.
pub async fn check_smtp(smtp: &SmtpClient, acc: &Arc<Account>) -> Result<(), UpstreamError> {
    crate::upstream::smtp::check(smtp, acc).await
}

/// Test each stored credential against iCloud's IMAP and SMTP servers (those given) once,
/// in the background; each task ends early when `token` is cancelled.
pub fn spawn_mail_checks(
    accounts: &Accounts,
    imap: Option<Arc<ImapClient>>,
    smtp: Option<Arc<SmtpClient>>,
    token: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for acc in accounts.snapshot().values() {
        if !acc.has_credential() {
            continue;
        }
        if let Some(imap) = imap.clone() {
            let acc = acc.clone();
            // `open` logs what iCloud said.
            tasks.push(until_cancelled(token, async move {
                let _ = check_imap(&imap, &acc).await;
            }));
        }
        if let Some(smtp) = smtp.clone() {
            let acc = acc.clone();
            tasks.push(until_cancelled(token, async move {
                match check_smtp(&smtp, &acc).await {
                    Ok(()) => tracing::info!(
                        account = acc.name(),
                        "iCloud SMTP accepted the stored password"
                    ),
                    Err(e) => {
                        tracing::warn!(account = acc.name(), error = %e, "SMTP start-up check failed")
                    }
                }
            }));
        }
    }
    tasks
}

fn until_cancelled<F>(token: &CancellationToken, check: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let token = token.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = token.cancelled() => {}
            _ = check => {}
        }
    })
}
