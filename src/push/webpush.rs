//! Web Push message encryption (RFC 8291, `aes128gcm` of RFC 8188) and VAPID (RFC 8292):
//! what the bridge needs to send a push message that only the subscribing device can read,
//! signed so that the push service knows it comes from this bridge. Built on `ring`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use ring::{aead, agreement, hmac};

/// The record size written into the header (one record holds every message the bridge sends).
const RECORD_SIZE: u32 = 4096;
/// An uncompressed P-256 point: 0x04, x, y.
pub const PUBLIC_KEY_LEN: usize = 65;
/// The auth secret a user agent makes (RFC 8291 section 3.2).
pub const AUTH_LEN: usize = 16;
const SALT_LEN: usize = 16;
const TAG_LEN: usize = 16;
/// How long a VAPID token is valid (RFC 8292 allows at most 24 hours).
const VAPID_VALID_SECS: u64 = 12 * 3600;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("the subscription's public key is not an uncompressed P-256 point")]
    BadPublicKey,
    #[error("the subscription's auth secret is not 16 bytes")]
    BadAuth,
    #[error("the message is too long for one record")]
    TooLong,
    #[error("the key could not be used")]
    Key,
}

/// What a subscription gives the bridge for encryption: the user agent's public key
/// (`p256dh`) and its auth secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    pub public: [u8; PUBLIC_KEY_LEN],
    pub auth: [u8; AUTH_LEN],
}

impl Receiver {
    /// From the base64url forms a push-register carries (padding and the standard alphabet
    /// tolerated); checks that the key is a point on the curve.
    pub fn from_b64(public: &str, auth: &str) -> Result<Receiver, CryptoError> {
        let public = decode_b64(public).ok_or(CryptoError::BadPublicKey)?;
        let auth = decode_b64(auth).ok_or(CryptoError::BadAuth)?;
        let public: [u8; PUBLIC_KEY_LEN] =
            public.try_into().map_err(|_| CryptoError::BadPublicKey)?;
        let auth: [u8; AUTH_LEN] = auth.try_into().map_err(|_| CryptoError::BadAuth)?;
        if public[0] != 4 || !on_curve(&public) {
            return Err(CryptoError::BadPublicKey);
        }
        Ok(Receiver { public, auth })
    }
}

/// Whether `point` is a valid P-256 public key (ring checks it when it verifies).
fn on_curve(point: &[u8; PUBLIC_KEY_LEN]) -> bool {
    let rng = SystemRandom::new();
    let Ok(mine) = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng) else {
        return false;
    };
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, point);
    agreement::agree_ephemeral(mine, &peer, |_| ()).is_ok()
}

/// base64url without padding (what Web Push uses everywhere).
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode base64url or standard base64, with or without padding.
pub fn decode_b64(s: &str) -> Option<Vec<u8>> {
    let s: String = s
        .trim()
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    URL_SAFE_NO_PAD.decode(s.as_bytes()).ok()
}

fn hmac256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// The content-encryption key and nonce of RFC 8291 section 3.4 (HKDF written out: every
/// output here is at most one SHA-256 block).
fn derive(
    ecdh_secret: &[u8],
    receiver: &Receiver,
    sender_public: &[u8],
    salt: &[u8; SALT_LEN],
) -> ([u8; 16], [u8; 12]) {
    let prk_key = hmac256(&receiver.auth, &[ecdh_secret]);
    let ikm = hmac256(
        &prk_key,
        &[b"WebPush: info\0", &receiver.public, sender_public, &[1]],
    );
    let prk = hmac256(salt, &[&ikm]);
    let cek = hmac256(&prk, &[b"Content-Encoding: aes128gcm\0", &[1]]);
    let nonce = hmac256(&prk, &[b"Content-Encoding: nonce\0", &[1]]);
    let mut k = [0u8; 16];
    k.copy_from_slice(&cek[..16]);
    let mut n = [0u8; 12];
    n.copy_from_slice(&nonce[..12]);
    (k, n)
}

/// Encrypt `plaintext` for `receiver` with a fresh ephemeral key and salt: the whole
/// `aes128gcm` body to POST.
pub fn encrypt(plaintext: &[u8], receiver: &Receiver) -> Result<Vec<u8>, CryptoError> {
    let rng = SystemRandom::new();
    let mine = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
        .map_err(|_| CryptoError::Key)?;
    let public = mine.compute_public_key().map_err(|_| CryptoError::Key)?;
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SecureRandom::fill(&rng, &mut salt).map_err(|_| CryptoError::Key)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &receiver.public);
    let secret = agreement::agree_ephemeral(mine, &peer, |s| s.to_vec())
        .map_err(|_| CryptoError::BadPublicKey)?;
    encrypt_with(plaintext, receiver, &secret, public.as_ref(), &salt)
}

/// [`encrypt`] with the ECDH secret, the sender's public key and the salt given (the seam
/// for RFC 8291's worked example).
pub fn encrypt_with(
    plaintext: &[u8],
    receiver: &Receiver,
    ecdh_secret: &[u8],
    sender_public: &[u8],
    salt: &[u8; SALT_LEN],
) -> Result<Vec<u8>, CryptoError> {
    if plaintext.len() + 1 + TAG_LEN > RECORD_SIZE as usize {
        return Err(CryptoError::TooLong);
    }
    let id_len = u8::try_from(sender_public.len()).map_err(|_| CryptoError::Key)?;
    let (cek, nonce) = derive(ecdh_secret, receiver, sender_public, salt);
    let key = aead::UnboundKey::new(&aead::AES_128_GCM, &cek).map_err(|_| CryptoError::Key)?;
    let key = aead::LessSafeKey::new(key);
    let mut record = Vec::with_capacity(plaintext.len() + 1 + TAG_LEN);
    record.extend_from_slice(plaintext);
    // The padding delimiter of the last (only) record.
    record.push(2);
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::empty(),
        &mut record,
    )
    .map_err(|_| CryptoError::Key)?;
    let mut out = Vec::with_capacity(SALT_LEN + 5 + sender_public.len() + record.len());
    out.extend_from_slice(salt);
    out.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    out.push(id_len);
    out.extend_from_slice(sender_public);
    out.extend_from_slice(&record);
    Ok(out)
}

/// The user agent's side, for tests and tools: the plaintext of an `aes128gcm` body, given
/// a function that makes the ECDH secret with the sender's public key (the key id).
pub fn decrypt(
    body: &[u8],
    receiver: &Receiver,
    ecdh: impl FnOnce(&[u8]) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let salt: [u8; SALT_LEN] = body.get(..SALT_LEN)?.try_into().ok()?;
    let id_len = usize::from(*body.get(SALT_LEN + 4)?);
    let sender_public = body.get(SALT_LEN + 5..SALT_LEN + 5 + id_len)?;
    let mut record = body.get(SALT_LEN + 5 + id_len..)?.to_vec();
    let secret = ecdh(sender_public)?;
    let (cek, nonce) = derive(&secret, receiver, sender_public, &salt);
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek).ok()?);
    let plain = key
        .open_in_place(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::empty(),
            &mut record,
        )
        .ok()?;
    let end = plain.iter().rposition(|b| *b != 0)?;
    (plain[end] == 2).then(|| plain[..end].to_vec())
}

/// The bridge's VAPID key pair (ES256), kept in `data_dir`.
pub struct Vapid {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public", &self.public_b64())
            .finish_non_exhaustive()
    }
}

impl Vapid {
    /// A new key pair, and its PKCS#8 form to store.
    pub fn generate() -> Result<(Vapid, Vec<u8>), CryptoError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| CryptoError::Key)?;
        let bytes = pkcs8.as_ref().to_vec();
        Ok((Vapid::from_pkcs8(&bytes)?, bytes))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Vapid, CryptoError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| CryptoError::Key)?;
        Ok(Vapid { pair, rng })
    }

    /// The public key, uncompressed, base64url: the `vapid-public-key` property and `k=`.
    pub fn public_b64(&self) -> String {
        b64(self.pair.public_key().as_ref())
    }

    /// The `Authorization` header for a push to `endpoint` (RFC 8292: `vapid t=<JWT>, k=<key>`),
    /// the token valid from `now` (Unix seconds) for 12 hours.
    pub fn authorization(
        &self,
        endpoint: &url::Url,
        subject: &str,
        now: u64,
    ) -> Result<String, CryptoError> {
        let audience = endpoint.origin().ascii_serialization();
        let header = b64(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": audience,
            "exp": now + VAPID_VALID_SECS,
            "sub": subject,
        });
        let claims = b64(claims.to_string().as_bytes());
        let signing_input = format!("{header}.{claims}");
        let sig = self
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| CryptoError::Key)?;
        Ok(format!(
            "vapid t={signing_input}.{}, k={}",
            b64(sig.as_ref()),
            self.public_b64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Vec<u8> {
        decode_b64(s).unwrap()
    }

    /// RFC 8291 Appendix A: fixed keys, auth secret and salt give exactly the RFC's bytes.
    #[test]
    fn rfc8291_appendix_a() {
        let receiver = Receiver::from_b64(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
            "BTBZMqHH6r4Tts7J_aSIgg",
        )
        .unwrap();
        let sender_public = d("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8");
        let ecdh = d("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs");
        let salt: [u8; 16] = d("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let (cek, nonce) = derive(&ecdh, &receiver, &sender_public, &salt);
        assert_eq!(b64(&cek), "oIhVW04MRdy2XN9CiKLxTg");
        assert_eq!(b64(&nonce), "4h_95klXJ5E_qnoN");
        let body = encrypt_with(
            b"When I grow up, I want to be a watermelon",
            &receiver,
            &ecdh,
            &sender_public,
            &salt,
        )
        .unwrap();
        assert_eq!(
            b64(&body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
        // And the user agent's side reads it back.
        let plain = decrypt(&body, &receiver, |_| Some(ecdh.clone())).unwrap();
        assert_eq!(plain, b"When I grow up, I want to be a watermelon");
    }

    /// With ring's own ephemeral key: the receiver (p256, the RFC's user agent key) reads it.
    #[test]
    fn a_fresh_message_decrypts_with_the_receivers_private_key() {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let secret =
            p256::SecretKey::from_slice(&d("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94")).unwrap();
        let public = secret.public_key().to_encoded_point(false);
        let receiver =
            Receiver::from_b64(&b64(public.as_bytes()), "BTBZMqHH6r4Tts7J_aSIgg").unwrap();
        let body = encrypt(b"<push-message/>", &receiver).unwrap();
        let plain = decrypt(&body, &receiver, |sender| {
            let sender = p256::PublicKey::from_sec1_bytes(sender).ok()?;
            let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), sender.as_affine());
            Some(shared.raw_secret_bytes().to_vec())
        })
        .unwrap();
        assert_eq!(plain, b"<push-message/>");
        // Two messages never share a salt or a key.
        assert_ne!(
            body[..86],
            encrypt(b"<push-message/>", &receiver).unwrap()[..86]
        );
    }

    #[test]
    fn bad_subscription_keys_are_refused() {
        assert_eq!(
            Receiver::from_b64("BCVx", "BTBZMqHH6r4Tts7J_aSIgg"),
            Err(CryptoError::BadPublicKey)
        );
        // 65 bytes starting with 4, but not a point on the curve.
        let mut p = [7u8; 65];
        p[0] = 4;
        assert_eq!(
            Receiver::from_b64(&b64(&p), "BTBZMqHH6r4Tts7J_aSIgg"),
            Err(CryptoError::BadPublicKey)
        );
        assert_eq!(
            Receiver::from_b64(
                "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
                "short"
            ),
            Err(CryptoError::BadAuth)
        );
        // Standard base64 with padding is read too.
        assert!(Receiver::from_b64(
            "BCVxsr7N/eNgVRqvHtD0zTZsEc6+VV+JvLexhqUzORcxaOzi6+AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4=",
            "BTBZMqHH6r4Tts7J/aSIgg=="
        )
        .is_ok());
    }

    /// The VAPID token is an ES256 JWT for the push service's origin that verifies with the
    /// public key in `k=`.
    #[test]
    fn vapid_authorization_verifies() {
        let (vapid, pkcs8) = Vapid::generate().unwrap();
        let again = Vapid::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(vapid.public_b64(), again.public_b64());
        let url = url::Url::parse("https://push.example:8443/sub/abc?x=1").unwrap();
        let h = vapid
            .authorization(&url, "mailto:ops@example.org", 1_700_000_000)
            .unwrap();
        let rest = h.strip_prefix("vapid t=").unwrap();
        let (jwt, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, vapid.public_b64());
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&d(parts[1])).unwrap();
        assert_eq!(claims["aud"], "https://push.example:8443");
        assert_eq!(claims["exp"], 1_700_000_000u64 + 12 * 3600);
        assert_eq!(claims["sub"], "mailto:ops@example.org");
        let header: serde_json::Value = serde_json::from_slice(&d(parts[0])).unwrap();
        assert_eq!(header["alg"], "ES256");
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            d(k),
        );
        let input = format!("{}.{}", parts[0], parts[1]);
        key.verify(input.as_bytes(), &d(parts[2])).unwrap();
        assert!(!format!("{vapid:?}").contains(&b64(&pkcs8)));
    }
}
