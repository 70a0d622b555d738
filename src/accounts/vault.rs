//! The credential vault in data_dir: atomic, mode 0600.
//!
//! `data_dir/vault.json` holds the app-specific password of each account:
//! `{"accounts": {"<name>": {"password": "...", "set_at": <unix secs>}}}`.
//! Every write goes to a temporary file in the same directory, is synced, renamed over the
//! old file and the directory is synced, so a crash leaves either the old or the new file.
//! Stray temporary files from interrupted writes are ignored, and removed once they are old.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::files::{ensure_private_dir, remove_stale_temps, write_atomic};
use crate::secret::Secret;

const VAULT_FILE: &str = "vault.json";

/// What can go wrong with the vault; never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot {action} the credential vault {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Only the position is reported: serde's messages can quote the offending value.
    #[error("the credential vault {path} is not valid JSON of the expected shape (line {line}, column {column}); fix or remove it, then run `icloud-bridge reconnect`")]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{0:?} is not a valid account name")]
    BadAccount(String),
}

/// The credential vault of one data directory. Cheap: every call reads the file afresh.
#[derive(Debug, Clone)]
pub struct Vault {
    dir: PathBuf,
    path: PathBuf,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VaultFile {
    #[serde(default)]
    accounts: BTreeMap<String, VaultEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VaultEntry {
    password: String,
    set_at: u64,
}

impl Vault {
    /// The vault in `data_dir`; no I/O happens until it is used.
    pub fn open(data_dir: &Path) -> Vault {
        Vault {
            dir: data_dir.to_path_buf(),
            path: data_dir.join(VAULT_FILE),
        }
    }

    /// The stored password of `account` and when it was stored.
    pub fn get(&self, account: &str) -> Result<Option<(Secret, SystemTime)>, VaultError> {
        let file = self.load()?;
        Ok(file.accounts.get(account).map(|e| {
            (
                Secret::new(e.password.clone()),
                UNIX_EPOCH + Duration::from_secs(e.set_at),
            )
        }))
    }

    /// Store (or replace) the password of `account`, stamped with the current time.
    pub fn set(&self, account: &str, password: &Secret) -> Result<(), VaultError> {
        if !crate::config::valid_account_name(account) {
            return Err(VaultError::BadAccount(account.to_string()));
        }
        let mut file = self.load()?;
        let set_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        file.accounts.insert(
            account.to_string(),
            VaultEntry {
                password: password.expose().to_string(),
                set_at,
            },
        );
        self.store(&file)
    }

    /// Forget the password of `account`; `false` if there was none.
    pub fn remove(&self, account: &str) -> Result<bool, VaultError> {
        let mut file = self.load()?;
        if file.accounts.remove(account).is_none() {
            return Ok(false);
        }
        self.store(&file)?;
        Ok(true)
    }

    /// Where the vault lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (length, modification time) of the vault file, `None` if it does not exist: a cheap
    /// value to poll (about once a second) to notice a change made by another process.
    pub fn fingerprint(&self) -> Option<(u64, SystemTime)> {
        let meta = fs::metadata(&self.path).ok()?;
        Some((meta.len(), meta.modified().ok()?))
    }

    fn load(&self) -> Result<VaultFile, VaultError> {
        remove_stale_temps(&self.path);
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VaultFile::default()),
            Err(source) => {
                return Err(VaultError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                })
            }
        };
        if text.trim().is_empty() {
            return Ok(VaultFile::default());
        }
        serde_json::from_str(&text).map_err(|e| VaultError::Corrupt {
            path: self.path.clone(),
            line: e.line(),
            column: e.column(),
        })
    }

    fn store(&self, file: &VaultFile) -> Result<(), VaultError> {
        let mut bytes = serde_json::to_vec_pretty(file).map_err(|e| VaultError::Io {
            action: "encode",
            path: self.path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        bytes.push(b'\n');
        ensure_private_dir(&self.dir).map_err(|source| VaultError::Io {
            action: "create the directory of",
            path: self.path.clone(),
            source,
        })?;
        write_atomic(&self.path, &bytes).map_err(|source| VaultError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::temp_prefix;

    fn secret(s: &str) -> Secret {
        Secret::new(s.to_string())
    }

    #[test]
    fn set_get_remove() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path());
        assert!(v.get("alice").unwrap().is_none());
        assert!(v.fingerprint().is_none());
        v.set("alice", &secret("abcd-efgh-ijkl-mnop")).unwrap();
        let (s, at) = v.get("alice").unwrap().unwrap();
        assert_eq!(s.expose(), "abcd-efgh-ijkl-mnop");
        let age = SystemTime::now().duration_since(at).unwrap();
        assert!(age < Duration::from_secs(5));
        v.set("bob", &secret("bbbb-bbbb-bbbb-bbbb")).unwrap();
        assert!(v.remove("alice").unwrap());
        assert!(!v.remove("alice").unwrap());
        assert!(v.get("alice").unwrap().is_none());
        assert_eq!(
            v.get("bob").unwrap().unwrap().0.expose(),
            "bbbb-bbbb-bbbb-bbbb"
        );
        let text = fs::read_to_string(v.path()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["accounts"]["bob"]["password"], "bbbb-bbbb-bbbb-bbbb");
        assert!(json["accounts"]["bob"]["set_at"].is_u64());
    }

    #[cfg(unix)]
    #[test]
    fn file_is_0600_and_missing_dir_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let v = Vault::open(&data);
        v.set("alice", &secret("abcd-efgh-ijkl-mnop")).unwrap();
        let mode = fs::metadata(v.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(&data).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // Still 0600 after a rewrite.
        v.set("alice", &secret("wxyz-efgh-ijkl-mnop")).unwrap();
        let mode = fs::metadata(v.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn interrupted_write_leaves_old_password() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path());
        v.set("alice", &secret("oldo-oldo-oldo-oldo")).unwrap();
        // A crash after writing the temp file but before the rename.
        let tmp = dir
            .path()
            .join(format!("{}4242.00000000deadbeef", temp_prefix(v.path())));
        fs::write(&tmp, b"{\"accounts\": {\"alice\": {\"password\": \"newn-").unwrap();
        assert_eq!(
            v.get("alice").unwrap().unwrap().0.expose(),
            "oldo-oldo-oldo-oldo"
        );
        // A later write still works and the fresh temp file is left for its age to expire.
        v.set("alice", &secret("newn-newn-newn-newn")).unwrap();
        assert_eq!(
            v.get("alice").unwrap().unwrap().0.expose(),
            "newn-newn-newn-newn"
        );
        // Old leftovers are cleaned on load.
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(old)
            .unwrap();
        v.get("alice").unwrap();
        assert!(!tmp.exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("vault.json")]);
    }

    #[test]
    fn fingerprint_changes_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path());
        v.set("alice", &secret("abcd-efgh-ijkl-mnop")).unwrap();
        let a = v.fingerprint().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        v.set("alice", &secret("abcd-efgh-ijkl-mnoq")).unwrap();
        let b = v.fingerprint().unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn corrupt_file_error_does_not_quote_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vault::open(dir.path());
        fs::write(
            v.path(),
            r#"{"accounts": {"alice": "sekr-etpa-sswo-rdxx"}}"#,
        )
        .unwrap();
        let err = v.get("alice").unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("sekr"), "{shown}");
        assert!(shown.contains("vault.json"), "{shown}");
        // A bad file is not overwritten by a set.
        assert!(v.set("alice", &secret("abcd-efgh-ijkl-mnop")).is_err());
    }
}
