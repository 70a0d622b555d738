//! Push registrations, kept in `data_dir/push.json` (0600, replaced atomically) so they
//! survive restarts. Each belongs to one account and one device login: a device sees and
//! removes only its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A collection the bridge serves: `/dav/<account>/<home>/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Coll {
    pub account: String,
    /// `calendars` or `contacts`.
    pub home: String,
    /// The collection's path segment (as clients send it).
    pub name: String,
}

impl Coll {
    /// The local path clients use.
    pub fn path(&self) -> String {
        format!("/dav/{}/{}/{}/", self.account, self.home, self.name)
    }
}

/// One registered subscription (a Web Push resource) on one collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The registration URL's last segment (random).
    pub id: String,
    pub coll: Coll,
    /// The device login that registered it.
    pub login: String,
    pub push_resource: String,
    /// The user agent's public key (`p256dh`, base64url) and auth secret.
    pub p256dh: String,
    pub auth: String,
    pub content_update: bool,
    pub property_update: bool,
    /// Unix seconds.
    pub expires: u64,
    pub created: u64,
    #[serde(default)]
    pub last_delivery: Option<u64>,
    /// `ok`, `gone`, `failed`, ... of the last delivery.
    #[serde(default)]
    pub last_result: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    registrations: Vec<Registration>,
}

/// The registrations, in memory and on disk.
pub struct Store {
    path: PathBuf,
    regs: Mutex<HashMap<String, Registration>>,
    /// Deliveries noted since the last save.
    dirty: std::sync::atomic::AtomicBool,
    /// One save at a time, so that an older copy never replaces a newer one.
    saving: Mutex<()>,
}

/// What `upsert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Updated,
}

impl Store {
    /// Open `data_dir/push.json` (a missing file is an empty store; an unreadable one is
    /// logged and started empty: clients register again within a day).
    pub fn open(data_dir: &Path) -> Store {
        let path = data_dir.join("push.json");
        crate::files::remove_stale_temps(&path);
        let regs = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(f) => f.registrations,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "push registrations cannot be read; starting without them");
                    Vec::new()
                }
            },
            Err(_) => Vec::new(),
        };
        Store {
            path,
            regs: Mutex::new(regs.into_iter().map(|r| (r.id.clone(), r)).collect()),
            dirty: Default::default(),
            saving: Mutex::new(()),
        }
    }

    /// The directory the file is in (`data_dir`).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Registration>> {
        self.regs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Save when deliveries were noted since the last save.
    pub fn save_if_dirty(&self) {
        if self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.save();
        }
    }

    /// Write the file (sorted, so that it only changes when something did).
    pub fn save(&self) {
        let _one = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let mut registrations: Vec<Registration> = self.lock().values().cloned().collect();
        registrations.sort_by(|a, b| a.id.cmp(&b.id));
        let bytes = match serde_json::to_vec_pretty(&File { registrations }) {
            Ok(b) => b,
            Err(_) => return,
        };
        if let Err(e) = crate::files::write_atomic(&self.path, &bytes) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot save push registrations");
        }
    }

    /// Register or update: a push resource is registered once per collection (the draft's
    /// rule), so the same one again is the same registration with new keys, expiry and owner
    /// (whoever knows a push resource is its device). `None` when a new one would take the
    /// login past `max_per_login`.
    pub fn upsert(
        &self,
        mut reg: Registration,
        max_per_login: usize,
    ) -> Option<(Registration, Upserted)> {
        let out = {
            let mut regs = self.lock();
            let existing = regs
                .values()
                .find(|r| r.coll == reg.coll && r.push_resource == reg.push_resource)
                .cloned();
            match existing {
                Some(old) => {
                    reg.id = old.id.clone();
                    reg.created = old.created;
                    reg.last_delivery = old.last_delivery;
                    reg.last_result = old.last_result.clone();
                    regs.insert(reg.id.clone(), reg.clone());
                    (reg, Upserted::Updated)
                }
                None => {
                    let held = regs
                        .values()
                        .filter(|r| r.login == reg.login && r.coll.account == reg.coll.account)
                        .count();
                    if held >= max_per_login {
                        return None;
                    }
                    regs.insert(reg.id.clone(), reg.clone());
                    (reg, Upserted::Created)
                }
            }
        };
        self.save();
        Some(out)
    }

    /// Remove `id` if it belongs to `account` and `login`; whether it did.
    pub fn remove_own(&self, id: &str, account: &str, login: &str) -> bool {
        let removed = {
            let mut regs = self.lock();
            match regs.get(id) {
                Some(r) if r.coll.account == account && r.login == login => {
                    regs.remove(id);
                    true
                }
                _ => false,
            }
        };
        if removed {
            self.save();
        }
        removed
    }

    /// Remove `id` (the push service said it is gone).
    pub fn remove(&self, id: &str) -> Option<Registration> {
        let r = self.lock().remove(id);
        if r.is_some() {
            self.save();
        }
        r
    }

    pub fn get(&self, id: &str) -> Option<Registration> {
        self.lock().get(id).cloned()
    }

    /// The live (unexpired at `now`) registrations of `coll`.
    pub fn of(&self, coll: &Coll, now: u64) -> Vec<Registration> {
        self.lock()
            .values()
            .filter(|r| &r.coll == coll && r.expires > now)
            .cloned()
            .collect()
    }

    /// Whether `coll` has a live registration.
    pub fn watched(&self, coll: &Coll, now: u64) -> bool {
        self.lock()
            .values()
            .any(|r| &r.coll == coll && r.expires > now)
    }

    /// Every collection with at least one live registration.
    pub fn collections(&self, now: u64) -> Vec<Coll> {
        let mut v: Vec<Coll> = self
            .lock()
            .values()
            .filter(|r| r.expires > now)
            .map(|r| r.coll.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Every registration (for the status page), sorted by account, login, collection.
    pub fn all(&self) -> Vec<Registration> {
        let mut v: Vec<Registration> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| {
            (&a.coll.account, &a.login, &a.coll.home, &a.coll.name).cmp(&(
                &b.coll.account,
                &b.login,
                &b.coll.home,
                &b.coll.name,
            ))
        });
        v
    }

    /// Drop registrations that expired before `now`; whether any were.
    pub fn purge_expired(&self, now: u64) -> bool {
        let purged = {
            let mut regs = self.lock();
            let before = regs.len();
            regs.retain(|_, r| r.expires > now);
            regs.len() != before
        };
        if purged {
            self.save();
        }
        purged
    }

    /// Keep only the registrations `keep` accepts (e.g. of logins that still exist); how
    /// many went.
    pub fn retain(&self, keep: impl Fn(&Registration) -> bool) -> usize {
        let gone = {
            let mut regs = self.lock();
            let before = regs.len();
            regs.retain(|_, r| keep(r));
            before - regs.len()
        };
        if gone > 0 {
            self.save();
        }
        gone
    }

    /// Note a delivery's outcome (kept in memory; saved with the next change).
    pub fn note_delivery(&self, id: &str, at: u64, result: &str) {
        if let Some(r) = self.lock().get_mut(id) {
            r.last_delivery = Some(at);
            r.last_result = Some(result.to_string());
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, login: &str, resource: &str) -> Registration {
        Registration {
            id: id.into(),
            coll: Coll {
                account: "alice".into(),
                home: "calendars".into(),
                name: "home".into(),
            },
            login: login.into(),
            push_resource: resource.into(),
            p256dh: "k".into(),
            auth: "a".into(),
            content_update: true,
            property_update: false,
            expires: 100,
            created: 1,
            last_delivery: None,
            last_result: None,
        }
    }

    #[test]
    fn registrations_survive_a_restart_and_belong_to_their_login() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path());
        assert_eq!(
            s.upsert(reg("a", "phone", "https://p/1"), 10).unwrap().1,
            Upserted::Created
        );
        // The same push resource again: the same registration, updated.
        let (r, how) = s.upsert(reg("b", "phone", "https://p/1"), 10).unwrap();
        assert_eq!((r.id.as_str(), how), ("a", Upserted::Updated));
        s.upsert(reg("c", "laptop", "https://p/2"), 10).unwrap();
        // Another login with the same push resource takes the registration over.
        let (r, how) = s.upsert(reg("e", "laptop", "https://p/1"), 10).unwrap();
        assert_eq!(
            (r.id.as_str(), r.login.as_str(), how),
            ("a", "laptop", Upserted::Updated)
        );
        assert!(!s.remove_own("a", "alice", "phone"));
        s.upsert(reg("a", "phone", "https://p/1"), 10).unwrap();
        assert!(s.upsert(reg("d", "phone", "https://p/3"), 1).is_none());
        let s = Store::open(dir.path());
        assert_eq!(s.all().len(), 2);
        assert!(!s.remove_own("c", "alice", "phone"), "not phone's");
        assert!(s.remove_own("c", "alice", "laptop"));
        assert_eq!(s.of(&reg("x", "", "").coll, 50).len(), 1);
        assert!(s.of(&reg("x", "", "").coll, 100).is_empty(), "expired");
        assert!(s.purge_expired(100));
        assert!(Store::open(dir.path()).all().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("push.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
