//! WebDAV-Push (draft-bitfire-webdav-push) for the calendars and address books the bridge
//! serves: DAVx5 and other clients register a Web Push subscription on a collection, and
//! the bridge pushes a message when a write through it succeeds or when its own check of
//! the collection (one per `[push] poll_secs`, through the cache) sees a new CTag or
//! sync-token from iCloud.
//!
//! - [`webpush`]: RFC 8291 encryption and RFC 8292 VAPID.
//! - [`store`]: registrations in `data_dir/push.json`.
//! - [`send`]: the allow-list and the delivery client (no Apple credential, ever).
//! - [`dav`]: the DAV side (OPTIONS, properties, `push-register`, registration URLs).
//! - [`worker`]: coalescing, the poller (what each collection last looked like kept in
//!   `data_dir/push-seen.json`), deliveries with rate limit and retries.

pub mod dav;
pub mod send;
pub mod store;
pub mod webpush;
pub mod worker;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::PushConfig;
use crate::start::StartError;
use store::{Coll, Store};
use webpush::Vapid;

/// The WebDAV-Push XML namespace.
pub const NS: &str = "https://bitfire.at/webdav-push";
/// Registrations one device login may hold on one account.
pub const MAX_PER_LOGIN: usize = 1000;
/// Expiry granted without a request, and the bounds of a requested one.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 86400);
pub const MIN_EXPIRY: Duration = Duration::from_secs(3 * 86400);
pub const MAX_EXPIRY: Duration = Duration::from_secs(30 * 86400);

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Deliveries by outcome, for `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub delivered: AtomicU64,
    pub gone: AtomicU64,
    pub retry: AtomicU64,
    pub failed: AtomicU64,
}

impl Stats {
    pub fn count(&self, label: &str) {
        let c = match label {
            "delivered" => &self.delivered,
            "gone" => &self.gone,
            "retry" => &self.retry,
            _ => &self.failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// (result, count) for each result.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("delivered", self.delivered.load(Ordering::Relaxed)),
            ("gone", self.gone.load(Ordering::Relaxed)),
            ("retry", self.retry.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }
}

/// The keys kept in `data_dir/push-keys.json`: the VAPID key pair and the key that makes
/// topics opaque.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    vapid_pkcs8: String,
    topic_key: String,
}

/// Everything WebDAV-Push keeps, built once by the composition root.
pub struct Push {
    pub config: PushConfig,
    /// `poll_secs`, longer than `cache.fresh_secs` (see [`Push::open`]).
    pub poll: Duration,
    pub vapid: Vapid,
    topic_key: ring::hmac::Key,
    pub store: Store,
    pub client: reqwest::Client,
    pub stats: Stats,
    pub(crate) worker: worker::State,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Push {
    /// Load (or make, once) the keys and the registrations in `data_dir`.
    pub fn open(config: &PushConfig, fresh_secs: u64, data_dir: &Path) -> Result<Push, StartError> {
        let (vapid, topic_key) = load_keys(data_dir)?;
        // A check within fresh_secs of the last one is answered by the cache, so a period
        // no longer than fresh_secs would see iCloud only every other time.
        let poll_secs = config.poll_secs.max(fresh_secs + 1);
        if poll_secs != config.poll_secs {
            tracing::info!(
                poll_secs,
                "push.poll_secs is not above cache.fresh_secs; collections are checked every {poll_secs} s"
            );
        }
        let client = send::client(&config.allow).map_err(|e| StartError::Client {
            what: "push delivery",
            detail: e.to_string(),
        })?;
        Ok(Push {
            config: config.clone(),
            poll: Duration::from_secs(poll_secs),
            vapid,
            topic_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &topic_key),
            store: Store::open(data_dir),
            client,
            stats: Stats::default(),
            worker: worker::State::default(),
        })
    }

    /// The collection's push topic: stable, unique, and telling nothing about it (an HMAC of
    /// its local path under a key kept in `data_dir`).
    pub fn topic(&self, coll: &Coll) -> String {
        let tag = ring::hmac::sign(
            &self.topic_key,
            format!("{}\0{}\0{}", coll.account, coll.home, coll.name).as_bytes(),
        );
        webpush::b64(&tag.as_ref()[..16])
    }

    /// Live registrations per account, for the status page.
    pub fn subscriptions(&self) -> HashMap<String, Vec<store::Registration>> {
        let now = now();
        let mut out: HashMap<String, Vec<store::Registration>> = HashMap::new();
        for r in self.store.all().into_iter().filter(|r| r.expires > now) {
            out.entry(r.coll.account.clone()).or_default().push(r);
        }
        out
    }
}

fn load_keys(data_dir: &Path) -> Result<(Vapid, Vec<u8>), StartError> {
    let path = data_dir.join("push-keys.json");
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = || {
        StartError::File {
        action: "read the push keys in",
        path: path.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a key file the bridge wrote; remove it to make new keys (devices then register again)",
        ),
    }
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let f: KeyFile = serde_json::from_slice(&bytes).map_err(|_| bad())?;
            let pkcs8 = b64.decode(f.vapid_pkcs8).map_err(|_| bad())?;
            let topic = b64.decode(f.topic_key).map_err(|_| bad())?;
            let vapid = Vapid::from_pkcs8(&pkcs8).map_err(|_| bad())?;
            if topic.len() < 32 {
                return Err(bad());
            }
            Ok((vapid, topic))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (vapid, pkcs8) = Vapid::generate().map_err(|_| bad())?;
            let topic: [u8; 32] = rand::random();
            let f = KeyFile {
                vapid_pkcs8: b64.encode(pkcs8),
                topic_key: b64.encode(topic),
            };
            let bytes = serde_json::to_vec_pretty(&f).map_err(|_| bad())?;
            crate::files::write_atomic(&path, &bytes).map_err(|source| StartError::File {
                action: "write",
                path: path.clone(),
                source,
            })?;
            tracing::info!("made the WebDAV-Push VAPID key pair in data_dir");
            Ok((vapid, topic.to_vec()))
        }
        Err(source) => Err(StartError::File {
            action: "read",
            path,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_made_once_and_topics_are_stable_and_opaque() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::Config::defaults().push;
        let a = Push::open(&cfg, 30, dir.path()).unwrap();
        let b = Push::open(&cfg, 30, dir.path()).unwrap();
        assert_eq!(a.vapid.public_b64(), b.vapid.public_b64());
        let c = Coll {
            account: "alice".into(),
            home: "calendars".into(),
            name: "home".into(),
        };
        assert_eq!(a.topic(&c), b.topic(&c));
        assert_eq!(a.topic(&c).len(), 22);
        assert!(!a.topic(&c).contains("home") && !a.topic(&c).contains("alice"));
        let mut d = c.clone();
        d.name = "work".into();
        assert_ne!(a.topic(&c), a.topic(&d));
        assert_eq!(a.poll, Duration::from_secs(60));
        assert_eq!(
            Push::open(&cfg, 60, dir.path()).unwrap().poll,
            Duration::from_secs(61)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("push-keys.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join("push-keys.json"), "junk").unwrap();
        assert!(Push::open(&cfg, 30, dir.path()).is_err());
    }
}
