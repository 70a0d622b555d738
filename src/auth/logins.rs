//! Local client logins: argon2id hashes under data_dir.
//!
//! `data_dir/logins.json` (mode 0600, replaced atomically) holds one entry per device login:
//! name, bound account, admin flag, creation time and an argon2id PHC hash. Plain passwords
//! are never stored. A successful verification is remembered in memory (a moka cache) for
//! at most 10 minutes, keyed by an HMAC of (name, password) under a per-process random key,
//! so clients that authenticate every request do not pay for argon2 each time; concurrent
//! checks of one pair take turns on its memo entry, so they verify once; at most two
//! argon2 runs happen at once. Changes made by another process (`client add/remove` while
//! the server runs) are noticed within about a second.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use hmac::digest::Key;
use hmac::{Hmac, Mac};
use moka::ops::compute::{CompResult, Op};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::files::{ensure_private_dir, remove_stale_temps, write_atomic};

type HmacSha256 = Hmac<Sha256>;

const LOGINS_FILE: &str = "logins.json";
/// argon2id parameters (OWASP): 19 MiB, two passes, one lane.
const ARGON2_M_KIB: u32 = 19 * 1024;
const ARGON2_T: u32 = 2;
const ARGON2_P: u32 = 1;
/// How long a verified (name, password) pair is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(10 * 60);
/// Most remembered successes (the least recently used are forgotten first).
const CACHE_MAX: u64 = 10_000;
/// How often, at most, logins.json is checked for changes by another process.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);
/// argon2 runs in flight at once.
const MAX_CONCURRENT_ARGON2: usize = 2;
/// Shortest password a user may choose.
pub const MIN_PASSWORD_LEN: usize = 8;
/// Longer passwords cannot be set; checking one costs one argon2 run on its first this many
/// bytes against a dummy hash, for known and unknown names alike.
const MAX_PASSWORD_LEN: usize = 1024;

/// A local login as others see it (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Login {
    pub name: String,
    pub account: String,
    pub admin: bool,
}

/// What waits for an argon2 run to end (see [`LoginStore::verify_holding`]): told the
/// outcome on the blocking pool when the run ends, then dropped.
pub trait Hold: Send + 'static {
    /// `ok`: the password matched; `known_name`: a login of that name exists.
    fn ended(self, ok: bool, known_name: bool);
}

impl Hold for () {
    fn ended(self, _ok: bool, _known_name: bool) {}
}

/// The outcome of [`LoginStore::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    Ok(Login),
    WrongPassword,
    UnknownUser,
}

/// What can go wrong managing logins; never contains a password or hash.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("cannot {action} the logins file {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Only the position is reported: serde's messages can quote the offending value.
    #[error("the logins file {path} is not valid JSON of the expected shape (line {line}, column {column}); fix or remove it")]
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error("{0:?} is not a valid login name (use 1-64 letters, digits, '-', '_' or '.')")]
    InvalidName(String),
    #[error("{0:?} is not a valid account name (use 1-64 letters, digits, '-', '_' or '.')")]
    InvalidAccount(String),
    #[error("a login named {0:?} already exists")]
    Duplicate(String),
    #[error("the password is too short: use at least {MIN_PASSWORD_LEN} characters")]
    PasswordTooShort,
    #[error("the password is too long: use at most {MAX_PASSWORD_LEN} bytes")]
    PasswordTooLong,
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LoginsFile {
    #[serde(default)]
    logins: Vec<StoredLogin>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct StoredLogin {
    name: String,
    account: String,
    #[serde(default)]
    admin: bool,
    created_at: u64,
    /// argon2id PHC string.
    hash: String,
}

impl StoredLogin {
    fn login(&self) -> Login {
        Login {
            name: self.name.clone(),
            account: self.account.clone(),
            admin: self.admin,
        }
    }
}

/// (length, mtime, inode) of logins.json; `None` if absent.
type Fingerprint = Option<(u64, SystemTime, u64)>;

struct State {
    logins: Vec<StoredLogin>,
    fingerprint: Fingerprint,
    checked: Instant,
    /// The file could not be read at the last reload: nobody may log in, and the store does
    /// not count as empty (that would offer the first-run setup to anyone).
    broken: bool,
}

/// A remembered success: valid while the login of that name keeps that hash.
struct Remembered {
    name: String,
    hash: String,
}

impl Remembered {
    fn matches(&self, name: &str, hash: &str) -> bool {
        self.name == name && self.hash == hash
    }
}

/// The local logins of one data directory. `Send + Sync`; share it with an `Arc`.
pub struct LoginStore {
    path: PathBuf,
    dir: PathBuf,
    state: Mutex<State>,
    /// Serialises this process's read-modify-write cycles of the file.
    write_lock: Mutex<()>,
    /// Remembered successes, for [`CACHE_TTL`]. Checks of one (login, password) take turns
    /// on its entry: concurrent first requests of a client wait for the first one's argon2
    /// run instead of each running their own.
    memo: moka::future::Cache<[u8; 32], Arc<Remembered>>,
    /// The HMAC for remembered verifications, keyed with a random key at start (cloned per
    /// use: the key's pads are hashed once, not per request).
    hmac: HmacSha256,
    argon2_slots: Arc<Semaphore>,
    argon2_runs: Arc<AtomicU64>,
    cache_hits: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    peak_in_flight: Arc<AtomicUsize>,
}

impl fmt::Debug for LoginStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_bytes(buf: &mut [u8]) -> Result<(), LoginError> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| LoginError::Random(e.to_string()))
}

fn argon2id() -> Result<Argon2<'static>, LoginError> {
    let params = Params::new(ARGON2_M_KIB, ARGON2_T, ARGON2_P, None)
        .map_err(|e| LoginError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// An argon2id PHC string of `password` with a random salt.
fn hash_password(password: &str) -> Result<String, LoginError> {
    let mut salt = [0u8; 16];
    random_bytes(&mut salt)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| LoginError::Hash(e.to_string()))?;
    let hash = argon2id()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| LoginError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// A random password: four groups of five base32 characters (100 bits).
fn generate_password() -> Result<String, LoginError> {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut bytes = [0u8; 20];
    random_bytes(&mut bytes)?;
    let mut out = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[usize::from(b & 31)]));
    }
    Ok(out)
}

/// A hash that no password matches in practice, verified for unknown names so that they
/// take as long as known ones.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            let mut pw = [0u8; 32];
            random_bytes(&mut pw).ok()?;
            hash_password(&base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                pw,
            ))
            .ok()
        })
        .as_deref()
}

fn file_fingerprint(path: &Path) -> Fingerprint {
    let meta = std::fs::metadata(path).ok()?;
    #[cfg(unix)]
    let ino = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let ino = 0;
    Some((meta.len(), meta.modified().ok()?, ino))
}

impl LoginStore {
    /// The logins of `data_dir`. A missing file means no logins yet; an unreadable or
    /// malformed one is an error.
    pub fn open(data_dir: &Path) -> Result<LoginStore, LoginError> {
        Self::open_with_ttl(data_dir, CACHE_TTL)
    }

    /// [`open`](Self::open), remembering successes for `ttl`.
    fn open_with_ttl(data_dir: &Path, ttl: Duration) -> Result<LoginStore, LoginError> {
        let path = data_dir.join(LOGINS_FILE);
        let fingerprint = file_fingerprint(&path);
        let logins = read_file(&path)?.logins;
        let mut hmac_key = Key::<HmacSha256>::default();
        random_bytes(&mut hmac_key)?;
        let hmac = <HmacSha256 as hmac::digest::KeyInit>::new(&hmac_key);
        Ok(LoginStore {
            dir: data_dir.to_path_buf(),
            path,
            state: Mutex::new(State {
                logins,
                fingerprint,
                checked: Instant::now(),
                broken: false,
            }),
            write_lock: Mutex::new(()),
            memo: moka::future::Cache::builder()
                .max_capacity(CACHE_MAX)
                .time_to_live(ttl)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .support_invalidation_closures()
                .build(),
            hmac,
            argon2_slots: Arc::new(Semaphore::new(MAX_CONCURRENT_ARGON2)),
            argon2_runs: Arc::new(AtomicU64::new(0)),
            cache_hits: AtomicU64::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            peak_in_flight: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Where the logins live.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Create a login bound to `account` and return its plain password (generated when
    /// `password` is `None`). Blocking (one argon2 hash): use `spawn_blocking` in async code.
    pub fn add(
        &self,
        name: &str,
        account: &str,
        admin: bool,
        password: Option<&str>,
    ) -> Result<String, LoginError> {
        if !crate::config::valid_account_name(name) {
            return Err(LoginError::InvalidName(name.to_string()));
        }
        if !crate::config::valid_account_name(account) {
            return Err(LoginError::InvalidAccount(account.to_string()));
        }
        let password = match password {
            Some(p) if p.chars().count() < MIN_PASSWORD_LEN => {
                return Err(LoginError::PasswordTooShort)
            }
            Some(p) if p.len() > MAX_PASSWORD_LEN => return Err(LoginError::PasswordTooLong),
            Some(p) => p.to_string(),
            None => generate_password()?,
        };
        // Cheap early refusal before the slow hash; checked again under the lock.
        if read_file(&self.path)?.logins.iter().any(|l| l.name == name) {
            return Err(LoginError::Duplicate(name.to_string()));
        }
        let hash = hash_password(&password)?;
        let entry = StoredLogin {
            name: name.to_string(),
            account: account.to_string(),
            admin,
            created_at: now_secs(),
            hash,
        };
        self.modify(|logins| {
            if logins.iter().any(|l| l.name == name) {
                return Err(LoginError::Duplicate(name.to_string()));
            }
            logins.push(entry);
            logins.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(())
        })?;
        Ok(password)
    }

    /// Delete a login; `false` if there was none. Its remembered successes are forgotten.
    pub fn remove(&self, name: &str) -> Result<bool, LoginError> {
        let mut found = false;
        self.modify(|logins| {
            let before = logins.len();
            logins.retain(|l| l.name != name);
            found = logins.len() != before;
            Ok(())
        })?;
        Ok(found)
    }

    /// All logins, sorted by name, as currently on disk.
    pub fn list(&self) -> Result<Vec<Login>, LoginError> {
        let fingerprint = file_fingerprint(&self.path);
        let file = read_file(&self.path)?;
        let mut st = lock(&self.state);
        st.fingerprint = fingerprint;
        st.checked = Instant::now();
        self.apply(&mut st, file.logins);
        Ok(st.logins.iter().map(StoredLogin::login).collect())
    }

    /// No login exists (the first-run setup may be offered). A logins file that cannot be
    /// read does not count as empty.
    pub fn is_empty(&self) -> bool {
        let st = self.refresh();
        !st.broken && st.logins.is_empty()
    }

    /// The login of a (name, password) pair that succeeded within the last 10 minutes: no
    /// argon2, no waiting. `None` says nothing about the password.
    pub async fn remembered(&self, name: &str, password: &str) -> Option<Login> {
        if password.len() > MAX_PASSWORD_LEN {
            return None;
        }
        let memo = self.memo.get(&self.cache_key(name, password)).await?;
        let st = self.refresh();
        let l = st.logins.iter().find(|l| l.name == name)?;
        if !memo.matches(name, &l.hash) {
            return None;
        }
        self.cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(l.login())
    }

    /// Check Basic credentials. Runs argon2 on the blocking pool (at most two at once)
    /// unless this pair succeeded within the last 10 minutes.
    pub async fn verify(&self, name: &str, password: &str) -> Verify {
        self.verify_holding(name, password, ()).await
    }

    /// [`verify`](Self::verify), keeping `hold` until the argon2 run (if any) ends, even if
    /// the caller goes away, and telling it the outcome first: the failure throttle's turn
    /// is passed here, so that an address that hangs up cannot start a second run before
    /// its first one ends, and a failure is counted before the next turn begins.
    ///
    /// Every check that is not answered from memory costs exactly one argon2 run, whatever
    /// the name and the password's length: unknown names and passwords over
    /// [`MAX_PASSWORD_LEN`] bytes (which no login can have) are checked against a dummy
    /// hash, so neither can be told apart from a wrong password by timing.
    pub async fn verify_holding<H: Hold>(&self, name: &str, password: &str, hold: H) -> Verify {
        if let Some(login) = self.remembered(name, password).await {
            return Verify::Ok(login);
        }
        let found = {
            let st = self.refresh();
            st.logins
                .iter()
                .find(|l| l.name == name)
                .map(|l| (l.login(), l.hash.clone()))
        };
        if password.len() > MAX_PASSWORD_LEN {
            // The same work as any other check, on a bounded input (no argon2 run on
            // megabytes).
            let head = password.as_bytes()[..MAX_PASSWORD_LEN].to_vec();
            self.run_argon2(None, head, found.is_some(), hold).await;
            return match found {
                Some(_) => Verify::WrongPassword,
                None => Verify::UnknownUser,
            };
        }
        let Some((login, hash)) = found else {
            // Take as long as a real check, so names cannot be probed by timing.
            self.run_argon2(None, password.as_bytes().to_vec(), false, hold)
                .await;
            return Verify::UnknownUser;
        };
        // In turn with other checks of this pair: one that succeeded meanwhile is used,
        // a failure leaves the next its own argon2 run (and its own failure count).
        let key = self.cache_key(name, password);
        let outcome = self
            .memo
            .entry(key)
            .and_compute_with(|current| async {
                if current.is_some_and(|c| c.value().matches(name, &hash)) {
                    return Op::Nop;
                }
                let pw = password.as_bytes().to_vec();
                if self.run_argon2(Some(hash.clone()), pw, true, hold).await {
                    Op::Put(Arc::new(Remembered {
                        name: name.to_string(),
                        hash,
                    }))
                } else {
                    Op::Remove
                }
            })
            .await;
        match outcome {
            CompResult::Unchanged(_) => {
                self.cache_hits.fetch_add(1, Ordering::Relaxed);
                Verify::Ok(login)
            }
            CompResult::Inserted(_) | CompResult::ReplacedWith(_) => Verify::Ok(login),
            CompResult::Removed(_) | CompResult::StillNone(_) => Verify::WrongPassword,
        }
    }

    /// How many argon2 verifications this store has run (for metrics and tests).
    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(Ordering::Relaxed)
    }

    /// How many verifications were answered from the success cache.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// Apply `change` to the logins on disk and write them back atomically.
    fn modify(
        &self,
        change: impl FnOnce(&mut Vec<StoredLogin>) -> Result<(), LoginError>,
    ) -> Result<(), LoginError> {
        let _guard = lock(&self.write_lock);
        let mut file = read_file(&self.path)?;
        change(&mut file.logins)?;
        let mut bytes = serde_json::to_vec_pretty(&file).map_err(|e| LoginError::Io {
            action: "encode",
            path: self.path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        bytes.push(b'\n');
        ensure_private_dir(&self.dir).map_err(|source| LoginError::Io {
            action: "create the directory of",
            path: self.path.clone(),
            source,
        })?;
        write_atomic(&self.path, &bytes).map_err(|source| LoginError::Io {
            action: "write",
            path: self.path.clone(),
            source,
        })?;
        let mut st = lock(&self.state);
        st.fingerprint = file_fingerprint(&self.path);
        st.checked = Instant::now();
        self.apply(&mut st, file.logins);
        Ok(())
    }

    /// The current state, reloaded from disk if the file changed (checked at most once per
    /// [`RELOAD_INTERVAL`]). A file that cannot be read leaves no valid login.
    fn refresh(&self) -> MutexGuard<'_, State> {
        let mut st = lock(&self.state);
        if st.checked.elapsed() < RELOAD_INTERVAL {
            return st;
        }
        st.checked = Instant::now();
        let fingerprint = file_fingerprint(&self.path);
        if fingerprint == st.fingerprint {
            return st;
        }
        st.fingerprint = fingerprint;
        match read_file(&self.path) {
            Ok(file) => {
                tracing::info!(
                    count = file.logins.len(),
                    "client logins changed on disk; reloaded"
                );
                self.apply(&mut st, file.logins);
            }
            Err(e) => {
                // Reported once per change of the file, not at every check.
                tracing::error!("{e}; no client can log in until it is fixed");
                st.logins.clear();
                st.broken = true;
                self.prune_cache(&st.logins);
            }
        }
        st
    }

    fn apply(&self, st: &mut State, logins: Vec<StoredLogin>) {
        let changed = st.logins != logins;
        st.logins = logins;
        st.broken = false;
        if changed {
            self.prune_cache(&st.logins);
        }
    }

    /// Forget remembered successes of logins that no longer exist or whose hash changed.
    fn prune_cache(&self, logins: &[StoredLogin]) {
        let current: HashMap<String, String> = logins
            .iter()
            .map(|l| (l.name.clone(), l.hash.clone()))
            .collect();
        let stale = move |_: &[u8; 32], r: &Arc<Remembered>| {
            current.get(&r.name).is_none_or(|h| *h != r.hash)
        };
        if let Err(e) = self.memo.invalidate_entries_if(stale) {
            // Never expected (the cache is built to accept it); a hit is checked against
            // the current hash anyway.
            tracing::warn!("cannot forget remembered logins: {e}");
        }
    }

    fn cache_key(&self, name: &str, password: &str) -> [u8; 32] {
        let mut mac = self.hmac.clone();
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(password.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// Verify `password` against the PHC string `hash` on the blocking pool, holding one of
    /// the argon2 slots (slots are given first come first served) and `hold` until the
    /// computation ends (even if the caller goes away).
    /// `None` verifies against a dummy hash (unknown names), made on first use.
    async fn run_argon2<H: Hold>(
        &self,
        hash: Option<String>,
        password: Vec<u8>,
        known_name: bool,
        hold: H,
    ) -> bool {
        let Ok(permit) = Arc::clone(&self.argon2_slots).acquire_owned().await else {
            return false;
        };
        let runs = Arc::clone(&self.argon2_runs);
        let in_flight = Arc::clone(&self.in_flight);
        let peak = Arc::clone(&self.peak_in_flight);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let hash: &str = match hash.as_deref() {
                Some(h) => h,
                None => match dummy_hash() {
                    Some(d) => d,
                    None => {
                        hold.ended(false, known_name);
                        return false;
                    }
                },
            };
            runs.fetch_add(1, Ordering::Relaxed);
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let ok = match PasswordHash::new(hash) {
                Ok(parsed) => Argon2::default()
                    .verify_password(&password, &parsed)
                    .is_ok(),
                Err(e) => {
                    tracing::error!("a stored login hash is not a valid PHC string: {e}");
                    false
                }
            };
            in_flight.fetch_sub(1, Ordering::SeqCst);
            hold.ended(ok, known_name);
            ok
        });
        match task.await {
            Ok(ok) => ok,
            Err(e) => {
                tracing::error!("password verification task failed: {e}");
                false
            }
        }
    }

    /// The most argon2 runs that were in flight at once since start (for tests).
    pub fn peak_argon2_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::SeqCst)
    }
}

fn read_file(path: &Path) -> Result<LoginsFile, LoginError> {
    remove_stale_temps(path);
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LoginsFile::default()),
        Err(source) => {
            return Err(LoginError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if text.trim().is_empty() {
        return Ok(LoginsFile::default());
    }
    let mut file: LoginsFile = serde_json::from_str(&text).map_err(|e| LoginError::Corrupt {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
    })?;
    file.logins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LoginStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = LoginStore::open(&dir.path().join("data")).unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn add_verify_remove() {
        let (_dir, s) = store();
        assert!(s.is_empty());
        let pw = s.add("phone", "alice", false, None).unwrap();
        assert_eq!(pw.len(), 23);
        assert!(pw.split('-').all(|g| g.len() == 5
            && g.bytes()
                .all(|b| b"abcdefghijklmnopqrstuvwxyz234567".contains(&b))));
        let chosen = s
            .add("laptop", "alice", true, Some("a chosen pass"))
            .unwrap();
        assert_eq!(chosen, "a chosen pass");
        assert!(!s.is_empty());
        assert_eq!(
            s.list().unwrap(),
            vec![
                Login {
                    name: "laptop".into(),
                    account: "alice".into(),
                    admin: true
                },
                Login {
                    name: "phone".into(),
                    account: "alice".into(),
                    admin: false
                },
            ]
        );
        match s.verify("phone", &pw).await {
            Verify::Ok(l) => assert_eq!(l.name, "phone"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.verify("laptop", "a chosen pass").await,
            Verify::Ok(Login { admin: true, .. })
        ));
        assert_eq!(s.verify("phone", "wrong").await, Verify::WrongPassword);
        assert_eq!(s.verify("laptop", &pw).await, Verify::WrongPassword);
        assert_eq!(s.verify("tablet", &pw).await, Verify::UnknownUser);

        assert!(s.remove("phone").unwrap());
        assert!(!s.remove("phone").unwrap());
        assert_eq!(s.verify("phone", &pw).await, Verify::UnknownUser);
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn add_refuses_bad_input() {
        let (_dir, s) = store();
        s.add("phone", "alice", false, Some("12345678")).unwrap();
        assert!(matches!(
            s.add("phone", "alice", false, None),
            Err(LoginError::Duplicate(_))
        ));
        for bad in ["", "a b", "a/b", "..", "x:y", &"n".repeat(65)] {
            assert!(
                matches!(
                    s.add(bad, "alice", false, None),
                    Err(LoginError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            s.add("tab", "", false, None),
            Err(LoginError::InvalidAccount(_))
        ));
        let err = s.add("tab", "alice", false, Some("short77")).unwrap_err();
        assert!(matches!(err, LoginError::PasswordTooShort));
        assert!(!format!("{err} {err:?}").contains("short77"));
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn second_verify_uses_the_cache() {
        let (_dir, s) = store();
        let pw = s.add("phone", "alice", false, None).unwrap();
        assert!(matches!(s.verify("phone", &pw).await, Verify::Ok(_)));
        assert_eq!(s.argon2_runs(), 1);
        let start = Instant::now();
        for _ in 0..20 {
            assert!(matches!(s.verify("phone", &pw).await, Verify::Ok(_)));
        }
        assert!(start.elapsed() < Duration::from_millis(200));
        assert_eq!(s.argon2_runs(), 1);
        assert_eq!(s.cache_hits(), 20);
        // Wrong passwords are never cached, and never served from the cache.
        assert_eq!(s.verify("phone", "wrong pw").await, Verify::WrongPassword);
        assert_eq!(s.verify("phone", "wrong pw").await, Verify::WrongPassword);
        assert_eq!(s.argon2_runs(), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_requests_share_one_verification() {
        let (_dir, s) = store();
        let pw = s.add("phone", "alice", false, None).unwrap();
        let s = Arc::new(s);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let s = s.clone();
                let pw = pw.clone();
                tokio::spawn(async move { s.verify("phone", &pw).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Verify::Ok(_)));
        }
        assert_eq!(s.argon2_runs(), 1);
        assert_eq!(s.cache_hits(), 19);
        s.memo.run_pending_tasks().await;
        assert_eq!(s.memo.entry_count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_wrong_passwords_each_pay_their_own_run() {
        let (_dir, s) = store();
        s.add("phone", "alice", false, Some("password1")).unwrap();
        let s = Arc::new(s);
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.verify("phone", "wrong pw").await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Verify::WrongPassword);
        }
        // A failure is never shared: each check ran argon2 (and told its own hold).
        assert_eq!(s.argon2_runs(), 4);
        s.memo.run_pending_tasks().await;
        assert_eq!(s.memo.entry_count(), 0);
    }

    #[tokio::test]
    async fn remembered_successes_expire() {
        let dir = tempfile::tempdir().unwrap();
        let s = LoginStore::open_with_ttl(dir.path(), Duration::from_millis(300)).unwrap();
        s.add("phone", "alice", false, Some("password1")).unwrap();
        assert!(matches!(
            s.verify("phone", "password1").await,
            Verify::Ok(_)
        ));
        assert!(s.remembered("phone", "password1").await.is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(s.remembered("phone", "password1").await.is_none());
        assert!(matches!(
            s.verify("phone", "password1").await,
            Verify::Ok(_)
        ));
        assert_eq!(s.argon2_runs(), 2);
    }

    #[tokio::test]
    async fn removal_forgets_only_that_logins_successes() {
        let (_dir, s) = store();
        s.add("phone", "alice", false, Some("password1")).unwrap();
        s.add("laptop", "alice", false, Some("password2")).unwrap();
        for (n, p) in [("phone", "password1"), ("laptop", "password2")] {
            assert!(matches!(s.verify(n, p).await, Verify::Ok(_)));
        }
        assert!(s.remove("phone").unwrap());
        assert!(!s.memo.contains_key(&s.cache_key("phone", "password1")));
        assert!(s.memo.contains_key(&s.cache_key("laptop", "password2")));
        assert!(s.remembered("laptop", "password2").await.is_some());
        assert_eq!(s.argon2_runs(), 2);
    }

    #[tokio::test]
    async fn removal_by_another_process_is_noticed() {
        let (dir, server) = store();
        let cli = LoginStore::open(&dir.path().join("data")).unwrap();
        let pw = cli.add("phone", "alice", false, None).unwrap();
        // The server notices the addition.
        let deadline = Instant::now() + Duration::from_millis(2500);
        loop {
            if matches!(server.verify("phone", &pw).await, Verify::Ok(_)) {
                break;
            }
            assert!(Instant::now() < deadline, "addition not noticed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Now cached; removal by the CLI must still win within about a second.
        assert!(matches!(server.verify("phone", &pw).await, Verify::Ok(_)));
        assert!(cli.remove("phone").unwrap());
        let removed = Instant::now();
        loop {
            match server.verify("phone", &pw).await {
                Verify::UnknownUser => break,
                Verify::Ok(_) => {}
                other => panic!("{other:?}"),
            }
            assert!(
                removed.elapsed() < Duration::from_millis(1100),
                "removal not noticed within 1.1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(server.is_empty());
    }

    #[tokio::test]
    async fn changed_password_forgets_cached_success() {
        let (dir, server) = store();
        let cli = LoginStore::open(&dir.path().join("data")).unwrap();
        let old = server.add("phone", "alice", false, None).unwrap();
        assert!(matches!(server.verify("phone", &old).await, Verify::Ok(_)));
        cli.remove("phone").unwrap();
        cli.add("phone", "alice", false, Some("a brand new one"))
            .unwrap();
        tokio::time::sleep(RELOAD_INTERVAL + Duration::from_millis(50)).await;
        assert_eq!(server.verify("phone", &old).await, Verify::WrongPassword);
        assert!(matches!(
            server.verify("phone", "a brand new one").await,
            Verify::Ok(_)
        ));
    }

    #[tokio::test]
    async fn file_holds_argon2id_hashes_only() {
        let (dir, s) = store();
        let pw = s.add("phone", "alice", true, None).unwrap();
        s.add("laptop", "bob", false, Some("Correct-Horse-1"))
            .unwrap();
        let path = dir.path().join("data").join("logins.json");
        assert_eq!(s.path(), path);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&pw));
        assert!(!text.contains("Correct-Horse-1"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let logins = json["logins"].as_array().unwrap();
        assert_eq!(logins.len(), 2);
        for l in logins {
            let hash = l["hash"].as_str().unwrap();
            assert!(
                hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
                "{hash}"
            );
            assert!(PasswordHash::new(hash).is_ok());
            assert!(l["created_at"].as_u64().unwrap() > 1_600_000_000);
            assert!(l["name"].is_string() && l["account"].is_string());
            assert!(l["admin"].is_boolean());
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        // A fresh store (another process) reads the same logins.
        let other = LoginStore::open(&dir.path().join("data")).unwrap();
        assert!(matches!(other.verify("phone", &pw).await, Verify::Ok(_)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn at_most_two_argon2_runs_at_once() {
        let (_dir, s) = store();
        s.add("phone", "alice", false, Some("password1")).unwrap();
        let s = Arc::new(s);
        let mut tasks = Vec::new();
        for i in 0..6 {
            let s = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                s.verify("phone", &format!("wrong-{i}")).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Verify::WrongPassword);
        }
        assert_eq!(s.argon2_runs(), 6);
        assert!(s.peak_argon2_in_flight() <= 2);
        assert!(s.peak_argon2_in_flight() >= 1);
    }

    #[tokio::test]
    async fn unknown_names_and_long_passwords_cost_one_argon2_run_each() {
        let (_dir, s) = store();
        s.add("phone", "alice", false, Some("password1")).unwrap();
        let long = "x".repeat(2048);
        for (name, pw, want) in [
            ("phone", long.as_str(), Verify::WrongPassword),
            ("nobody", long.as_str(), Verify::UnknownUser),
            ("phone", "wrong pw", Verify::WrongPassword),
            ("nobody", "wrong pw", Verify::UnknownUser),
        ] {
            let before = s.argon2_runs();
            assert_eq!(s.verify(name, pw).await, want, "{name}");
            assert_eq!(
                s.argon2_runs(),
                before + 1,
                "{name} with {} bytes",
                pw.len()
            );
        }
        assert!(s.remembered("phone", "password1").await.is_none());
        assert!(matches!(
            s.verify("phone", "password1").await,
            Verify::Ok(_)
        ));
        let runs = s.argon2_runs();
        assert_eq!(
            s.remembered("phone", "password1").await.unwrap().name,
            "phone"
        );
        assert!(s.remembered("phone", &long).await.is_none());
        assert_eq!(s.argon2_runs(), runs);
    }

    #[test]
    fn corrupt_file_is_an_error_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logins.json");
        std::fs::write(&path, r#"{"logins": "hunter2-secret"}"#).unwrap();
        let err = LoginStore::open(dir.path()).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("logins.json"), "{shown}");
    }

    #[tokio::test]
    async fn broken_file_at_runtime_locks_nobody_in_and_is_not_empty() {
        let (dir, s) = store();
        let pw = s.add("phone", "alice", false, None).unwrap();
        assert!(matches!(s.verify("phone", &pw).await, Verify::Ok(_)));
        std::fs::write(dir.path().join("data").join("logins.json"), "{ nope").unwrap();
        tokio::time::sleep(RELOAD_INTERVAL + Duration::from_millis(50)).await;
        assert_eq!(s.verify("phone", &pw).await, Verify::UnknownUser);
        assert!(!s.is_empty());
        assert!(s.list().is_err());
    }

    #[test]
    fn errors_never_show_secrets() {
        let errs = [
            LoginError::PasswordTooShort,
            LoginError::PasswordTooLong,
            LoginError::Duplicate("phone".into()),
            LoginError::Hash("bad".into()),
        ];
        for e in errs {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("$argon2"), "{shown}");
        }
        let (_dir, s) = store();
        assert!(!format!("{s:?}").contains("hmac"));
    }
}
