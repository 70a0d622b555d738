//! Replacing an account's app-specific password, shared by `icloud-bridge reconnect`, the
//! status page's paste form and the setup page: normalise, check the format (iCloud only),
//! test it by real discovery on a scratch account (the live one is not disturbed), store it.

use std::time::Duration;

use crate::accounts::account::credential_id;
use crate::accounts::credential::{
    looks_like_app_password, normalise, Credential, CredentialSource, Secret,
};
use crate::accounts::persist::StateFile;
use crate::accounts::vault::{Vault, VaultError};
use crate::accounts::Account;
use crate::config::{AccountConfig, Config, UpstreamKind};
use crate::upstream::client::Upstream;
use crate::upstream::discover::{self, Learned};
use crate::upstream::error::{auth_sentence, AuthReason, UpstreamError};

/// Why a new password was not stored; each a sentence for a person. Never holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum ReconnectError {
    #[error("no password was given; paste the app-specific password made at account.apple.com")]
    Empty,
    #[error("{}", auth_sentence(AuthReason::NotAppPassword, .apple_id))]
    NotAppPassword { apple_id: String },
    #[error("the new password was not stored: {0}")]
    Upstream(UpstreamError),
    #[error("the new password was accepted by iCloud but could not be stored: {0}")]
    Store(VaultError),
}

/// Normalise `raw`, check its format (iCloud upstreams), test it against the upstream with a
/// scratch account built from `account`, and on success write it to `vault`. Returns what
/// discovery learned, so a caller may hand it to the live account.
pub async fn test_and_store(
    config: &Config,
    upstream: &Upstream,
    vault: &Vault,
    account: &AccountConfig,
    raw: &str,
) -> Result<Learned, ReconnectError> {
    let pw = normalise(raw);
    if pw.is_empty() {
        return Err(ReconnectError::Empty);
    }
    if config.upstream.kind == UpstreamKind::Icloud && !looks_like_app_password(&pw) {
        return Err(ReconnectError::NotAppPassword {
            apple_id: account.apple_id.clone(),
        });
    }
    let secret = Secret::new(pw);
    let scratch = Account::new(
        account.clone(),
        config.upstream.kind,
        Duration::from_secs(config.upstream.auth_probe_secs),
        config.upstream.max_concurrent,
    );
    scratch.set_credential(Some(Credential {
        secret: secret.clone(),
        source: CredentialSource::Vault,
        set_at: None,
    }));
    let learned = discover::learn(upstream, &scratch)
        .await
        .map_err(ReconnectError::Upstream)?;
    vault
        .set(&account.name, &secret)
        .map_err(ReconnectError::Store)?;
    tracing::info!(account = %account.name, "a new app-specific password was tested and stored");
    Ok(learned)
}

/// Whether a running bridge took up a newly stored password.
#[derive(Debug, PartialEq, Eq)]
pub enum Pickup {
    /// The server uses it: the next request goes to iCloud with it.
    InUse,
    /// No bridge answers at the configured listen address; one started later reads the vault.
    NoServer { url: String },
    /// A bridge answers but did not take the password up in time (another `data_dir`?).
    NotPickedUp { url: String },
}

/// After `reconnect` stored `raw` for `account`: wait (at most `within`) until the running
/// bridge has loaded it, as `state.json` in the data directory shows.
pub async fn wait_for_pickup(
    config: &Config,
    account: &AccountConfig,
    raw: &str,
    within: Duration,
) -> Pickup {
    let url = format!("http://{}/healthz", config.server.listen);
    let alive = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()
            .ok()?;
        client.get(&url).send().await.ok()
    };
    let base = url.trim_end_matches("healthz").to_string();
    if alive.await.is_none() {
        return Pickup::NoServer { url: base };
    }
    let want = credential_id(&account.apple_id, normalise(raw).as_str());
    let state = StateFile::new(config.server.data_dir.join("state.json"));
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if state.credential_id(&account.name).as_deref() == Some(want.as_str()) {
            return Pickup::InUse;
        }
        if tokio::time::Instant::now() >= deadline {
            return Pickup::NotPickedUp { url: base };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
