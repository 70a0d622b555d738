//! Sealed bridge links (`/dav/<account>/_up/<key>`) for upstream URLs the bridge has seen in
//! upstream DAV answers (a contact photo, a managed attachment), and sealed photo marks: the
//! key carries the URL encrypted and authenticated (ChaCha20-Poly1305, the account as
//! associated data) under a key kept in `data_dir`, so a client can neither read the upstream
//! host from it, nor forge one for a URL of its choosing, nor reuse one minted for another
//! account. The nonce is derived from the account and the text (a synthetic IV), so the same
//! URL always gives the same link (cached answers and clients keep them).

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
/// Bytes of the nonce at the start of a sealed key.
const NONCE_LEN: usize = ring::aead::NONCE_LEN;

/// Seals and opens `_up` keys and photo marks. Share behind an `Arc`.
#[derive(Clone)]
pub struct Links {
    /// Derives each key's nonce from the account and the text.
    nonce_mac: HmacSha256,
    /// The ChaCha20-Poly1305 key.
    seal_key: [u8; 32],
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
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        // 32 bytes always make a key.
        Self::with_key(&key).unwrap_or_else(|| unreachable!("a 32-byte key"))
    }

    fn with_key(key: &[u8]) -> Option<Links> {
        if key.len() < 16 {
            return None;
        }
        // Two keys of their own from the one on disk, one per use.
        let derive = |label: &[u8]| -> Option<[u8; 32]> {
            let mut m = <HmacSha256 as Mac>::new_from_slice(key).ok()?;
            m.update(label);
            Some(m.finalize().into_bytes().into())
        };
        let nonce_key = derive(b"icloud-bridge link nonce")?;
        Some(Links {
            nonce_mac: <HmacSha256 as Mac>::new_from_slice(&nonce_key).ok()?,
            seal_key: derive(b"icloud-bridge link seal")?,
        })
    }

    fn aead(&self) -> Option<ring::aead::LessSafeKey> {
        let unbound =
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &self.seal_key).ok()?;
        Some(ring::aead::LessSafeKey::new(unbound))
    }

    /// The opaque, sealed key for `text` (a URL exactly as upstream wrote it, or a photo's
    /// original line) in `account`'s tree.
    pub fn seal(&self, account: &str, text: &str) -> String {
        let mut m = self.nonce_mac.clone();
        m.update(account.as_bytes());
        m.update(&[0]);
        m.update(text.as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&m.finalize().into_bytes()[..NONCE_LEN]);
        let mut sealed = text.as_bytes().to_vec();
        let ok = self.aead().is_some_and(|k| {
            k.seal_in_place_append_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(account.as_bytes()),
                &mut sealed,
            )
            .is_ok()
        });
        if !ok {
            // Not reachable with a 32-byte key; a key that opens nothing is the safe answer.
            return String::new();
        }
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The text a sealed key stands for, if this bridge sealed it for `account`; `None` for
    /// anything forged, altered or sealed for another account.
    pub fn unseal(&self, account: &str, key: &str) -> Option<String> {
        let raw = URL_SAFE_NO_PAD.decode(key).ok()?;
        if raw.len() <= NONCE_LEN + ring::aead::CHACHA20_POLY1305.tag_len() {
            return None;
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = self
            .aead()?
            .open_in_place(nonce, ring::aead::Aad::from(account.as_bytes()), &mut buf)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }

    /// The `_up` key for `url` (exactly as upstream wrote it) in `account`'s tree.
    pub fn mint(&self, account: &str, url: &str) -> String {
        self.seal(account, url)
    }

    /// The URL text an `_up` key stands for, if this bridge minted it for `account` and it
    /// is an http(s) URL; `None` for anything else.
    pub fn url_text(&self, account: &str, key: &str) -> Option<String> {
        let s = self.unseal(account, key)?;
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
        // Sealed: the upstream host cannot be read from the key; the same URL, the same key.
        let raw = URL_SAFE_NO_PAD.decode(&k).unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("icloud"));
        assert_eq!(l.mint("alice", url), k);
        assert_ne!(l.mint("bob", url), k);
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
