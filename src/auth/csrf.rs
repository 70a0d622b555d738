//! Protection of the operator's forms: CSRF tokens (HMAC-SHA256 under a per-process random
//! key over login, account and a 30-minute time bucket) and the same-origin check.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use http::HeaderMap;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use url::Url;

type HmacSha256 = Hmac<Sha256>;

/// Length of a time bucket; a token is valid for one to two buckets.
const BUCKET_SECS: u64 = 30 * 60;

/// Issues and checks form tokens. A restart invalidates every token.
pub struct Csrf {
    key: [u8; 32],
}

impl Default for Csrf {
    fn default() -> Self {
        Self::new()
    }
}

fn bucket_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        / BUCKET_SECS
}

impl Csrf {
    pub fn new() -> Csrf {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Csrf { key }
    }

    fn mac(&self, login: &str, account: &str, bucket: u64) -> Option<HmacSha256> {
        let mut m = HmacSha256::new_from_slice(&self.key).ok()?;
        m.update(b"icloud-bridge form\0");
        m.update(login.as_bytes());
        m.update(b"\0");
        m.update(account.as_bytes());
        m.update(b"\0");
        m.update(&bucket.to_be_bytes());
        Some(m)
    }

    /// The token to embed in a form shown to `login` for `account`.
    pub fn token(&self, login: &str, account: &str) -> String {
        self.mac(login, account, bucket_now())
            .map(|m| hex(&m.finalize().into_bytes()))
            .unwrap_or_default()
    }

    /// Whether `token` was issued to `login` for `account` within the last one or two buckets.
    pub fn verify(&self, login: &str, account: &str, token: &str) -> bool {
        let Some(bytes) = unhex(token) else {
            return false;
        };
        let now = bucket_now();
        [now, now.saturating_sub(1)].iter().any(|b| {
            self.mac(login, account, *b)
                .is_some_and(|m| m.verify_slice(&bytes).is_ok())
        })
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// A random token of 128 bits in hex (for the one-time setup URL).
pub fn random_token() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex(&b)
}

/// The request comes from a page of this server: `Origin` (or, without it, `Referer`) names
/// the same host and port as `Host`. Missing both, or `Origin: null`, is refused.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty())
    else {
        return false;
    };
    let source = headers
        .get(http::header::ORIGIN)
        .or_else(|| headers.get(http::header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source.and_then(|s| Url::parse(s).ok()) else {
        return false;
    };
    if !matches!(source.scheme(), "http" | "https") {
        return false;
    }
    let Ok(own) = Url::parse(&format!("{}://{host}/", source.scheme())) else {
        return false;
    };
    if own.path() != "/" || own.query().is_some() || !own.username().is_empty() {
        return false;
    }
    own.host_str().map(str::to_ascii_lowercase) == source.host_str().map(str::to_ascii_lowercase)
        && own.port_or_known_default() == source.port_or_known_default()
}

/// State of the operator's forms, one per process.
pub struct AdminState {
    pub csrf: Csrf,
    /// The one-time setup token, while no login exists.
    setup_token: Mutex<Option<String>>,
    /// One setup attempt at a time.
    pub(crate) setup_lock: tokio::sync::Mutex<()>,
}

impl AdminState {
    /// `offer_setup`: no login exists, so a setup token is made.
    pub fn new(offer_setup: bool) -> AdminState {
        AdminState {
            csrf: Csrf::new(),
            setup_token: Mutex::new(offer_setup.then(random_token)),
            setup_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The setup token, if the setup page is still offered.
    pub fn setup_token(&self) -> Option<String> {
        self.setup_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn end_setup(&self) {
        *self
            .setup_token
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub(crate) fn setup_token_matches(&self, given: &str) -> bool {
        self.setup_token()
            .is_some_and(|t| bool::from(t.as_bytes().ct_eq(given.as_bytes())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn tokens_bind_login_and_account() {
        let c = Csrf::new();
        let t = c.token("admin", "alice");
        assert!(c.verify("admin", "alice", &t));
        assert!(!c.verify("other", "alice", &t));
        assert!(!c.verify("admin", "bob", &t));
        assert!(!c.verify("admin", "alice", ""));
        assert!(!c.verify("admin", "alice", &"0".repeat(64)));
        assert!(!Csrf::new().verify("admin", "alice", &t));
    }

    #[test]
    fn same_origin_rules() {
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8008"),
            ("origin", "http://127.0.0.1:8008")
        ])));
        assert!(same_origin(&h(&[
            ("host", "Bridge.lan"),
            ("origin", "http://bridge.lan")
        ])));
        assert!(same_origin(&h(&[
            ("host", "bridge.lan:80"),
            ("origin", "http://bridge.lan")
        ])));
        assert!(same_origin(&h(&[
            ("host", "127.0.0.1:8008"),
            ("referer", "http://127.0.0.1:8008/admin/reconnect?account=a")
        ])));
        assert!(!same_origin(&h(&[("host", "127.0.0.1:8008")])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8008"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8008"),
            ("origin", "http://evil.example")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8008"),
            ("origin", "http://127.0.0.1:9999")
        ])));
        // Origin wins over a matching Referer.
        assert!(!same_origin(&h(&[
            ("host", "127.0.0.1:8008"),
            ("origin", "http://evil.example"),
            ("referer", "http://127.0.0.1:8008/")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "a@evil.example"),
            ("origin", "http://evil.example")
        ])));
    }
}
