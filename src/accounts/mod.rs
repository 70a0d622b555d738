//! The accounts the bridge serves, and everything that belongs to one: the credential and its
//! reload from the vault, what Apple last said per service, what discovery learned (and
//! learning it again), `state.json`, and the start-up checks.
//!
//! - [`account`]: one [`Account`] at run time: credential gate, probe limit, rate-limit hold.
//! - [`learn`]: discovery kept per account: learn once for concurrent callers, learn again
//!   when iCloud moves the account.
//! - [`persist`]: the `state.json` file in `data_dir`.
//! - [`credential`], [`vault`], [`reconnect`]: where the app-specific password comes from,
//!   where it is stored, how it is replaced.
//! - [`stored`]: accounts created at run time (`data_dir/accounts.toml`).
//! - [`status`]: per-service status, the account state rule, state events.
//! - [`startup`]: the one check of each account's credential when `serve` starts.

pub mod account;
pub mod credential;
pub mod learn;
pub mod persist;
pub mod reconnect;
pub mod startup;
pub mod status;
pub mod stored;
pub mod vault;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio_util::sync::CancellationToken;

pub use account::Account;
pub use status::StateEvent;

use crate::config::{AccountConfig, Config, UpstreamKind};
use crate::upstream::service::Service;
use vault::Vault;

/// The accounts by name as served at one moment (readers take this cheap snapshot).
pub type AccountSnapshot = Arc<BTreeMap<String, Arc<Account>>>;

/// How every account of this process is built.
#[derive(Clone)]
struct Template {
    kind: UpstreamKind,
    probe_every: Duration,
    max_concurrent: usize,
    served: Vec<Service>,
}

/// Every account served, swappable at run time (the setup page adds one), with the vault
/// its credentials come from and the file its state is saved to.
pub struct Accounts {
    map: RwLock<AccountSnapshot>,
    template: Template,
    vault: Vault,
    state_file: persist::StateFile,
    /// State changes of every account, for the notifier (taken once).
    events: Mutex<Option<UnboundedReceiver<StateEvent>>>,
    events_tx: UnboundedSender<StateEvent>,
}

impl Accounts {
    /// The configured accounts (and those stored by the setup page) with their credentials
    /// resolved and what `state.json` says about them restored.
    pub fn open(config: &Config) -> Arc<Accounts> {
        let data_dir = &config.server.data_dir;
        let template = Template {
            kind: config.upstream.kind,
            probe_every: Duration::from_secs(config.upstream.auth_probe_secs),
            max_concurrent: config.upstream.max_concurrent,
            served: status::served_for(&config.server),
        };
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let map: BTreeMap<String, Arc<Account>> = config
            .accounts
            .iter()
            .map(|a| (a.name.clone(), Arc::new(template.build(a.clone()))))
            .collect();
        let accounts = Arc::new(Accounts {
            map: RwLock::new(Arc::new(map)),
            template,
            vault: Vault::open(data_dir),
            state_file: persist::StateFile::new(data_dir.join("state.json")),
            events: Mutex::new(Some(events_rx)),
            events_tx,
        });
        // The credential first: what state.json says about it applies only if unchanged.
        accounts.reload_credentials();
        accounts.state_file.load(&accounts.snapshot());
        for acc in accounts.snapshot().values() {
            accounts.wire(acc);
        }
        accounts
    }

    /// Events and saving, for an account about to be served.
    fn wire(self: &Arc<Self>, acc: &Account) {
        acc.set_events(self.events_tx.clone());
        acc.set_saver(self.saver());
    }

    /// A snapshot of the accounts served now.
    pub fn snapshot(&self) -> AccountSnapshot {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The account a login belongs to.
    pub fn get(&self, name: &str) -> Option<Arc<Account>> {
        self.snapshot().get(name).cloned()
    }

    /// Serve one more account from now on (no-op if the name is taken); returns the account
    /// now registered under that name.
    pub fn add(self: &Arc<Self>, config: AccountConfig) -> Arc<Account> {
        let mut guard = self.map.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = guard.get(&config.name) {
            return existing.clone();
        }
        let acc = Arc::new(self.template.build(config));
        self.wire(&acc);
        let mut map = BTreeMap::clone(&guard);
        map.insert(acc.name().to_string(), acc.clone());
        *guard = Arc::new(map);
        acc
    }

    /// Where the app-specific passwords are stored.
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    /// The receiving end of every account's state changes (once).
    pub fn take_events(&self) -> Option<UnboundedReceiver<StateEvent>> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Resolve every account's credential again (vault, file, command, env).
    pub fn reload_credentials(&self) {
        let accounts = self.snapshot();
        let single = accounts.len() == 1;
        for acc in accounts.values() {
            match credential::resolve(&acc.config, &self.vault, single) {
                Ok(c) => acc.set_credential(c),
                Err(e) => {
                    tracing::warn!(account = acc.name(), error = %e, "cannot read the app-specific password");
                    acc.set_credential(None);
                }
            }
        }
    }

    /// Save `state.json` now.
    pub fn save(&self) {
        self.state_file.save(&self.snapshot());
    }

    /// A callable that saves `state.json`, for accounts and background tasks. It holds the
    /// registry weakly: a saver outliving the bridge does nothing.
    pub fn saver(self: &Arc<Self>) -> persist::Saver {
        let weak = Arc::downgrade(self);
        Arc::new(move || {
            if let Some(accounts) = weak.upgrade() {
                accounts.save();
            }
        })
    }

    /// Watch the vault (cheaply, twice a second): a password stored by `reconnect` or the
    /// status page is in use at once, without a restart and without losing the cache.
    pub fn watch_vault(self: &Arc<Self>, token: CancellationToken) {
        let accounts = self.clone();
        tokio::spawn(async move {
            let mut last = accounts.vault.fingerprint();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let now = accounts.vault.fingerprint();
                if now != last {
                    last = now;
                    tracing::info!("the stored app-specific password changed; using the new one");
                    let a = accounts.clone();
                    // Saved at once: `reconnect` waits for the new credential's id in state.json.
                    let _ = tokio::task::spawn_blocking(move || {
                        a.reload_credentials();
                        a.save();
                    })
                    .await;
                }
            }
        });
    }
}

impl Template {
    /// An account as this configuration serves it (SMTP counts when `smtp_listen` is set).
    fn build(&self, config: AccountConfig) -> Account {
        Account::new(config, self.kind, self.probe_every, self.max_concurrent)
            .with_served(self.served.clone())
    }
}
