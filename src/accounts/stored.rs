//! Accounts created at run time (by the setup page) live in `data_dir/accounts.toml` and are
//! merged with the configured `[[account]]`s at load; a configured account wins a name clash.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{valid_account_name, AccountConfig, Config};
use crate::files::{ensure_private_dir, write_atomic};

const FILE: &str = "accounts.toml";

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    account: Vec<Entry>,
}

#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    apple_id: String,
}

fn read(data_dir: &Path) -> File {
    let path = data_dir.join(FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return File::default();
    };
    match toml::from_str(&text) {
        Ok(f) => f,
        Err(_) => {
            tracing::warn!(path = %path.display(), "the stored accounts file is unreadable; ignoring it");
            File::default()
        }
    }
}

/// A plausible Apple ID: `local@domain`, no spaces or control characters, at most 254 bytes.
pub fn valid_apple_id(s: &str) -> bool {
    s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.contains('@'))
}

/// Add the stored accounts of `config.server.data_dir` to `config.accounts` (idempotent).
pub fn merge(config: &mut Config) {
    for e in read(&config.server.data_dir).account {
        if !valid_account_name(&e.name) || !valid_apple_id(&e.apple_id) {
            tracing::warn!(
                name = %e.name,
                "ignoring an invalid entry of the stored accounts file"
            );
            continue;
        }
        if config.account(&e.name).is_none() {
            config.accounts.push(AccountConfig {
                name: e.name,
                apple_id: e.apple_id,
                password_file: None,
                password_command: None,
            });
        }
    }
}

/// Remember `name`/`apple_id` in `data_dir/accounts.toml` (atomically, mode 0600).
pub fn add(data_dir: &Path, name: &str, apple_id: &str) -> std::io::Result<()> {
    let mut file = read(data_dir);
    file.account.retain(|e| e.name != name);
    file.account.push(Entry {
        name: name.to_string(),
        apple_id: apple_id.to_string(),
    });
    let text = toml::to_string(&file).map_err(|e| std::io::Error::other(e.to_string()))?;
    let text = format!(
        "# Accounts created by the setup page; merged with the config file's [[account]]s.\n{text}"
    );
    ensure_private_dir(data_dir)?;
    write_atomic(&data_dir.join(FILE), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_accounts_round_trip_and_configured_wins() {
        let dir = tempfile::tempdir().unwrap();
        add(dir.path(), "alice", "alice@icloud.com").unwrap();
        add(dir.path(), "bob", "bob@icloud.com").unwrap();
        let mut cfg = Config::defaults();
        cfg.server.data_dir = dir.path().to_path_buf();
        cfg.accounts.push(AccountConfig {
            name: "bob".into(),
            apple_id: "robert@icloud.com".into(),
            password_file: None,
            password_command: None,
        });
        merge(&mut cfg);
        merge(&mut cfg);
        let names: Vec<_> = cfg
            .accounts
            .iter()
            .map(|a| (a.name.as_str(), a.apple_id.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![("bob", "robert@icloud.com"), ("alice", "alice@icloud.com")]
        );
    }

    #[test]
    fn apple_id_shape() {
        assert!(valid_apple_id("a@icloud.com"));
        for s in ["", "a", "@icloud.com", "a@b", "a b@icloud.com", "a@b@c.com"] {
            assert!(!valid_apple_id(s), "{s}");
        }
    }
}
