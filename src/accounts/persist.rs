//! `data_dir/state.json`: what discovery learned and each account's state and notification
//! bookkeeping, saved on every change that matters and read back at start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::accounts::AccountSnapshot;
use crate::files::write_atomic;
use crate::upstream::service::{Service, ServiceState};

/// Saves `state.json` when called (see [`crate::accounts::Accounts::saver`]).
pub type Saver = Arc<dyn Fn() + Send + Sync>;

/// The file, and the one place it is read and written.
pub(crate) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub(crate) fn new(path: PathBuf) -> StateFile {
        StateFile { path }
    }

    /// Persist what discovery learned (so discovery can be answered while iCloud refuses)
    /// and each account's state and notification bookkeeping:
    /// `{"accounts": {"<name>": {"learned": {...}, "accepted_before": ..., "services": {...},
    /// "notified_state": ..., ...}}}`.
    pub(crate) fn save(&self, accounts: &AccountSnapshot) {
        let mut map = serde_json::Map::new();
        for (name, acc) in accounts.iter() {
            let mut entry = match serde_json::to_value(acc.persisted()) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            if let Some(l) = acc.learned() {
                if let Ok(v) = serde_json::to_value(&*l) {
                    entry.insert("learned".into(), v);
                }
            }
            map.insert(name.clone(), serde_json::Value::Object(entry));
        }
        let text = serde_json::json!({ "accounts": map }).to_string();
        if let Err(e) = write_atomic(&self.path, text.as_bytes()) {
            tracing::warn!(error = %e, "cannot save state.json");
        }
    }

    /// The `credential_id` a running bridge last saved for `account` (how `reconnect` sees
    /// that the server took up a new password).
    pub(crate) fn credential_id(&self, account: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let v = serde_json::from_str::<serde_json::Value>(&text).ok()?;
        let id = v.get("accounts")?.get(account)?.get("credential_id")?;
        id.as_str().map(str::to_string)
    }

    /// Take back what a previous run saved (an unreadable file: start fresh).
    pub(crate) fn load(&self, accounts: &AccountSnapshot) {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            tracing::warn!("state.json is unreadable; starting fresh");
            return;
        };
        for (name, acc) in accounts.iter() {
            let Some(entry) = v.get("accounts").and_then(|a| a.get(name)) else {
                continue;
            };
            if let Some(l) = entry
                .get("learned")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
            {
                acc.set_learned(l);
            }
            // Absent in files from older versions: every field defaults.
            match serde_json::from_value::<Persisted>(entry.clone()) {
                Ok(p) => acc.restore(&p),
                Err(e) => {
                    tracing::warn!(account = %name, error = %e, "state.json: ignoring the saved account state")
                }
            }
        }
    }
}

/// The per-account part of `state.json` next to `learned`. Times are unix seconds. Every
/// field is optional so that older files (only `learned`) still load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    /// Identifies the credential `accepted_before` belongs to: a truncated SHA-256 of the
    /// Apple ID and password, never the password.
    pub credential_id: Option<String>,
    pub accepted_before: bool,
    pub services: BTreeMap<Service, PersistedService>,
    pub notified_state: Option<ServiceState>,
    pub credential_age_reminded: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersistedService {
    pub state: ServiceState,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub last_success: Option<u64>,
    #[serde(default)]
    pub last_failure: Option<u64>,
    #[serde(default)]
    pub last_upstream_status: Option<u16>,
}

pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn from_unix(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}
