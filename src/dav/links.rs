//! Signed bridge links (`/dav/<account>/_up/<key>`) for upstream URLs the bridge has seen in
//! upstream DAV answers (a contact photo, a managed attachment): the key carries the URL and
//! an HMAC under a key kept in `data_dir`, so a client can neither forge one for a URL of its
//! choosing nor reuse one minted for another account.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use url::Url;

use crate::files::write_atomic;
use crate::start::StartError;

type HmacSha256 = Hmac<Sha256>;

/// The file in `data_dir` that holds the signing key (32 random bytes, hex, mode 0600).
pub const KEY_FILE: &str = "link-key";
/// Bytes of the HMAC kept in a link (128 bits).
const TAG_LEN: usize = 16;

/// Mints and checks `_up` keys. Cheap to clone the MAC from; share behind an `Arc`.
#[derive(Clone)]
pub struct Links {
    mac: HmacSha256,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Links")
    }
}

impl Links {
    /// The signer of `data_dir`, its key made on first use. Links stay valid across
    /// restarts (cached answers and clients keep them), and die with the key file.
    pub fn open(data_dir: &Path) -> Result<Links, StartError> {
        let path = data_dir.join(KEY_FILE);
        let read = || -> Result<Option<Vec<u8>>, StartError> {
            match std::fs::read_to_string(&path) {
                Ok(text) => decode_hex(text.trim())
                    .filter(|k| k.len() >= 16)
                    .map(Some)
                    .ok_or_else(|| StartError::LinkKey { path: path.clone() }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(StartError::File {
                    action: "read",
                    path: path.clone(),
                    source,
                }),
            }
        };
        let key = match read()? {
            Some(k) => k,
            None => {
                let fresh: [u8; 32] = rand::random();
                write_atomic(&path, encode_hex(&fresh).as_bytes()).map_err(|source| {
                    StartError::File {
                        action: "write",
                        path: path.clone(),
                        source,
                    }
                })?;
                // Whoever wrote last won a race; use what is on disk.
                read()?.ok_or_else(|| StartError::File {
                    action: "read back",
                    path: path.clone(),
                    source: std::io::ErrorKind::NotFound.into(),
                })?
            }
        };
        Self::with_key(&key).ok_or(StartError::LinkKey { path })
    }

    /// A signer with a random key that lives as long as the process (tests, tools).
    pub fn ephemeral() -> Links {
        let mut key = hmac::digest::Key::<HmacSha256>::default();
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        Links {
            mac: <HmacSha256 as hmac::digest::KeyInit>::new(&key),
        }
    }

    fn with_key(key: &[u8]) -> Option<Links> {
        if key.len() < 16 {
            return None;
        }
        let mac = <HmacSha256 as Mac>::new_from_slice(key).ok()?;
        Some(Links { mac })
    }

    fn tag(&self, account: &str, url: &[u8]) -> [u8; TAG_LEN] {
        let mut m = self.mac.clone();
        m.update(account.as_bytes());
        m.update(&[0]);
        m.update(url);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&full[..TAG_LEN]);
        out
    }

    /// The opaque key for `url` (exactly as upstream wrote it) in `account`'s tree.
    pub fn mint(&self, account: &str, url: &str) -> String {
        let mut raw = Vec::with_capacity(TAG_LEN + url.len());
        raw.extend_from_slice(&self.tag(account, url.as_bytes()));
        raw.extend_from_slice(url.as_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The URL text a key stands for, if this bridge minted it for `account` (and it is an
    /// http(s) URL); `None` for anything forged, altered or minted for another account.
    pub fn url_text(&self, account: &str, key: &str) -> Option<String> {
        let raw = URL_SAFE_NO_PAD.decode(key).ok()?;
        if raw.len() <= TAG_LEN {
            return None;
        }
        let (tag, url) = raw.split_at(TAG_LEN);
        let mut m = self.mac.clone();
        m.update(account.as_bytes());
        m.update(&[0]);
        m.update(url);
        // Constant-time comparison of the truncated tag.
        m.verify_truncated_left(tag).ok()?;
        let s = String::from_utf8(url.to_vec()).ok()?;
        let u = Url::parse(&s).ok()?;
        matches!(u.scheme(), "http" | "https").then_some(s)
    }

    /// [`Links::url_text`] parsed.
    pub fn url(&self, account: &str, key: &str) -> Option<Url> {
        Url::parse(&self.url_text(account, key)?).ok()
    }
}

fn encode_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_keys_open_only_for_their_account_and_unaltered() {
        let l = Links::ephemeral();
        let url = "https://p42-contacts.icloud.com:443/123/wcs/abc";
        let k = l.mint("alice", url);
        assert!(k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(l.url_text("alice", &k).as_deref(), Some(url));
        assert_eq!(l.url_text("bob", &k), None);
        // Another bridge's key, an unsigned URL, a flipped character: all refused.
        assert_eq!(Links::ephemeral().url_text("alice", &k), None);
        assert_eq!(l.url_text("alice", &URL_SAFE_NO_PAD.encode(url)), None);
        let mut bytes = k.into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            l.url_text("alice", &String::from_utf8(bytes).unwrap()),
            None
        );
        assert_eq!(l.url_text("alice", ""), None);
        // Only http(s) URLs are ever opened.
        let k = l.mint("alice", "file:///etc/passwd");
        assert_eq!(l.url_text("alice", &k), None);
    }

    #[test]
    fn the_key_file_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = Links::open(dir.path()).unwrap();
        let k = a.mint("alice", "https://x.example/p");
        let b = Links::open(dir.path()).unwrap();
        assert_eq!(
            b.url_text("alice", &k).as_deref(),
            Some("https://x.example/p")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.path().join(KEY_FILE), "not hex").unwrap();
        assert!(Links::open(dir.path())
            .unwrap_err()
            .to_string()
            .contains("link key"));
    }
}
