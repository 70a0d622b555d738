//! Contact photos for `[carddav] photos = "inline"`: fetched with the stored password (as
//! assets, whose answers never judge the password), kept in a bounded cache, put into the
//! vCards clients get, and mapped back to iCloud's reference when a card is written back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use url::Url;

use crate::accounts::Account;
use crate::config::{CardDavConfig, Photos};
use crate::dav::links::Links;
use crate::dav::vcard::Inlined;
use crate::dav::Dav;
use crate::upstream::client::{Purpose, UpstreamRequest};
use crate::upstream::service::Service;

/// Photos fetched for one answer at most (more stay links).
const MAX_PER_ANSWER: usize = 1000;
/// Photo bytes (as base64) one answer carries at most: a large address book's first sync
/// must not hold every photo in memory at once; the photos past it stay links.
const MAX_BYTES_PER_ANSWER: usize = 32 << 20;
/// Photos fetched at once for one answer.
const FETCH_AT_ONCE: usize = 4;
/// How long a fetched photo is kept (iCloud gives a changed photo a new URL).
const KEEP_PHOTO_FOR: Duration = Duration::from_secs(3600);
/// How long the bridge remembers where an inlined photo came from, for clients that drop
/// the mark when they write a card back.
const KEEP_ORIGIN_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// Request extension: the bridge's own request (the Birthdays calendar's contact listing)
/// needs no photos, so none are fetched for its answer.
#[derive(Clone, Copy, Debug)]
pub struct NoPhotos;

/// One fetched photo, ready to inline.
pub struct Photo {
    base64: String,
    mime: &'static str,
    /// The first 8 bytes of the SHA-256 of the image, hex.
    hash: String,
}

/// The fetched photos and what the bridge remembers of them.
pub struct PhotoStore {
    inline: bool,
    max_photo_bytes: usize,
    /// Fetched photos; concurrent answers naming one photo share its one fetch.
    fetched: moka::future::Cache<(String, String), Arc<Photo>>,
    /// (account, image hash) -> the PHOTO line iCloud served.
    origins: moka::sync::Cache<(String, String), Arc<str>>,
}

impl PhotoStore {
    /// `cache_bytes`: the response cache's size; photos may take a quarter of that again.
    pub fn new(config: &CardDavConfig, cache_bytes: u64) -> PhotoStore {
        PhotoStore {
            inline: config.photos == Photos::Inline,
            max_photo_bytes: config.max_photo_bytes,
            fetched: moka::future::Cache::builder()
                .max_capacity((cache_bytes / 4).max(1 << 20))
                .weigher(|k: &(String, String), v: &Arc<Photo>| {
                    u32::try_from(k.1.len() + v.base64.len() + 64).unwrap_or(u32::MAX)
                })
                .time_to_live(KEEP_PHOTO_FOR)
                .build(),
            origins: moka::sync::Cache::builder()
                .max_capacity(20_000)
                .time_to_live(KEEP_ORIGIN_FOR)
                .build(),
        }
    }

    /// Whether photos are inlined (`carddav.photos = "inline"`).
    pub fn inline(&self) -> bool {
        self.inline
    }

    /// The photo to put in place of `url` (PHOTO parameters `params`), with its mark: the
    /// image hash and a signed copy of the original line, so that a card written back gets
    /// the reference again (see [`PhotoStore::original`]).
    pub fn inlined(
        &self,
        links: &Links,
        account: &str,
        photo: &Photo,
        url: &str,
        params: &str,
    ) -> Inlined {
        let line = format!("PHOTO{params}:{url}");
        self.origins.insert(
            (account.to_string(), photo.hash.clone()),
            Arc::from(line.as_str()),
        );
        Inlined {
            base64: photo.base64.clone(),
            mime: photo.mime.to_string(),
            mark: format!("{}.{}", photo.hash, links.seal(account, &line)),
        }
    }

    /// The PHOTO line iCloud served for an image a client writes back inline, if it is
    /// still the image the bridge inlined: by its mark, or (a client that dropped the mark)
    /// by the image alone.
    pub fn original(
        &self,
        links: &Links,
        account: &str,
        mark: &str,
        bytes: &[u8],
    ) -> Option<String> {
        let hash = hash_of(bytes);
        if let Some((h, key)) = mark.split_once('.') {
            if h == hash {
                if let Some(line) = links.unseal(account, key) {
                    if line.starts_with("PHOTO") {
                        return Some(line);
                    }
                }
            }
        }
        self.origins
            .get(&(account.to_string(), hash))
            .map(|l| l.to_string())
    }
}

fn hash_of(bytes: &[u8]) -> String {
    Sha256::digest(bytes)[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The image type of `bytes`, from the answer's Content-Type or the bytes themselves.
fn image_type(content_type: Option<&str>, bytes: &[u8]) -> Option<&'static str> {
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    for (name, mime) in [
        ("jpeg", "image/jpeg"),
        ("png", "image/png"),
        ("gif", "image/gif"),
    ] {
        if ct.starts_with("image/") && ct.contains(name) {
            return Some(mime);
        }
    }
    match bytes {
        [0xff, 0xd8, 0xff, ..] => Some("image/jpeg"),
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        _ => None,
    }
}

/// The photos fetched for one answer, put into its vCards by the rewriter (see
/// [`crate::dav::paths::ToLocal`]).
pub struct Found {
    pub photos: HashMap<String, Arc<Photo>>,
    pub store: Arc<PhotoStore>,
}

impl Found {
    /// `text` (a vCard) with the photos of this answer inlined.
    pub fn inline(&self, links: &Links, account: &str, text: &str) -> Option<String> {
        if self.photos.is_empty() {
            return None;
        }
        crate::dav::vcard::inline_photos(text, |url, params| {
            let p = self.photos.get(url)?;
            Some(self.store.inlined(links, account, p, url, params))
        })
    }
}

/// The URLs of PHOTO properties given by URI in an upstream answer as it came (a vCard or
/// a multistatus with address data, XML-escaped and folded).
pub fn photo_urls_in(raw: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let upper = raw.to_ascii_uppercase();
    let mut from = 0;
    while let Some(i) = upper[from..].find("PHOTO") {
        let start = from + i;
        from = start + 5;
        // The logical line: up to a line end not followed by a fold.
        let mut end = start;
        let b = raw.as_bytes();
        while end < b.len() {
            if b[end] == b'\n' && !matches!(b.get(end + 1), Some(b' ' | b'\t')) {
                break;
            }
            if b[end] == b'<' {
                break;
            }
            end += 1;
        }
        let line = raw[start..end]
            .replace("&#13;", "\r")
            .replace("&#xD;", "\r")
            .replace("&#xd;", "\r")
            .replace("\r\n ", "")
            .replace("\r\n\t", "")
            .replace("\n ", "")
            .replace("\n\t", "");
        let Some(u) = line.find("https://").or_else(|| line.find("http://")) else {
            continue;
        };
        let url: String = line[u..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '<' | '&' | '"'))
            .collect();
        if !out.contains(&url) {
            out.push(url);
        }
        if out.len() >= MAX_PER_ANSWER {
            break;
        }
    }
    out
}

/// The photos named in an upstream answer, fetched (or taken from the store) for `account`;
/// those that cannot be had are left out (they stay links).
pub async fn fetch_all(
    dav: &Dav,
    account: &Arc<Account>,
    raw: &str,
) -> HashMap<String, Arc<Photo>> {
    let wanted: Vec<Url> = photo_urls_in(raw)
        .into_iter()
        .filter_map(|u| Url::parse(&u).ok())
        .filter(|u| dav.upstream.trusted(account, u))
        .collect();
    let fetched = futures_util::stream::iter(wanted)
        .map(|url| async move {
            let photo = fetch(dav, account, &url).await;
            photo.map(|p| (url.to_string(), p))
        })
        .buffer_unordered(FETCH_AT_ONCE)
        .filter_map(|r| async move { r });
    within(fetched, MAX_BYTES_PER_ANSWER).await
}

/// The photos of `fetched` up to `budget` bytes (as base64) in all; fetching stops there and
/// the photos past it stay links.
async fn within(
    fetched: impl futures_util::Stream<Item = (String, Arc<Photo>)>,
    budget: usize,
) -> HashMap<String, Arc<Photo>> {
    let mut fetched = std::pin::pin!(fetched);
    let mut found = HashMap::new();
    let mut held = 0usize;
    while let Some((url, photo)) = fetched.next().await {
        held += photo.base64.len();
        if held > budget {
            tracing::debug!("an answer's photos passed {budget} bytes; the rest stay links");
            break;
        }
        found.insert(url, photo);
    }
    found
}

/// One photo, from the store or from upstream.
async fn fetch(dav: &Dav, account: &Arc<Account>, url: &Url) -> Option<Arc<Photo>> {
    let key = (account.name().to_string(), url.to_string());
    // One fetch per photo however many answers want it at once; a failure is not kept.
    let once = async { fetch_from_upstream(dav, account, url).await.ok_or(()) };
    dav.photos.fetched.try_get_with(key, once).await.ok()
}

/// One photo from upstream: a 200 with an image of at most `max_photo_bytes`.
async fn fetch_from_upstream(dav: &Dav, account: &Arc<Account>, url: &Url) -> Option<Arc<Photo>> {
    let max = dav.photos.max_photo_bytes;
    let request = UpstreamRequest {
        method: http::Method::GET,
        url: url.clone(),
        headers: http::HeaderMap::new(),
        body: Bytes::new(),
        purpose: Purpose::Asset,
    };
    let mut resp = dav
        .upstream
        .send(account, Service::Carddav, request)
        .await
        .ok()?;
    if resp.status() == http::StatusCode::UNAUTHORIZED {
        // Says nothing alone; at most one principal probe decides (see `asset_refused`).
        let _ = crate::dav::asset_refused(dav, account, Service::Carddav).await;
        return None;
    }
    if resp.status() != http::StatusCode::OK
        || resp.content_length().is_some_and(|l| l > max as u64)
    {
        return None;
    }
    let content_type = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if bytes.len() + chunk.len() > max {
            return None;
        }
        bytes.extend_from_slice(&chunk);
    }
    Some(Arc::new(Photo {
        mime: image_type(content_type.as_deref(), &bytes)?,
        base64: base64::engine::general_purpose::STANDARD.encode(&bytes),
        hash: hash_of(&bytes),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn photo_urls_are_found_in_cards_and_in_escaped_folded_xml() {
        let card = "BEGIN:VCARD\r\nPHOTO;VALUE=uri;X-ABCROP-RECTANGLE=ABClipRect_1&0&0&1&1&h:https://p1-con\r\n tacts.icloud.com:443/1/wcs/h\r\nEND:VCARD\r\n";
        assert_eq!(
            photo_urls_in(card),
            vec!["https://p1-contacts.icloud.com:443/1/wcs/h"]
        );
        let xml = "<d:response><c:address-data>BEGIN:VCARD&#13;\nPHOTO;VALUE=uri;X-ABCROP-RECTANGLE=ABClipRect_1&amp;0:https://p1-con&#13;\n tacts.icloud.com:443/1/wcs/h&#13;\nEND:VCARD&#13;\n</c:address-data></d:response><d:response><c:address-data>BEGIN:VCARD\nPHOTO;ENCODING=b;TYPE=JPEG:/9j/\nEND:VCARD\n</c:address-data>";
        assert_eq!(
            photo_urls_in(xml),
            vec!["https://p1-contacts.icloud.com:443/1/wcs/h"]
        );
    }

    #[test]
    fn the_original_line_comes_back_only_for_the_same_image() {
        let links = Links::ephemeral();
        let store = PhotoStore::new(
            &CardDavConfig {
                photos: Photos::Inline,
                max_photo_bytes: 1 << 20,
                birthdays: true,
            },
            1 << 20,
        );
        let bytes = [0xff, 0xd8, 0xff, 0xe0, 1, 2, 3];
        let photo = Photo {
            base64: base64::engine::general_purpose::STANDARD.encode(bytes),
            mime: "image/jpeg",
            hash: hash_of(&bytes),
        };
        let url = "https://p1-contacts.icloud.com:443/1/wcs/h";
        let i = store.inlined(&links, "alice", &photo, url, ";VALUE=uri");
        let line = format!("PHOTO;VALUE=uri:{url}");
        assert_eq!(
            store.original(&links, "alice", &i.mark, &bytes),
            Some(line.clone())
        );
        // After a restart (nothing remembered), the mark alone brings it back.
        let fresh = PhotoStore::new(
            &CardDavConfig {
                photos: Photos::Inline,
                max_photo_bytes: 1 << 20,
                birthdays: true,
            },
            1 << 20,
        );
        assert_eq!(
            fresh.original(&links, "alice", &i.mark, &bytes),
            Some(line.clone())
        );
        assert_eq!(fresh.original(&links, "alice", "", &bytes), None);
        // The mark does not show where iCloud keeps the photo.
        let sealed = i.mark.split_once('.').unwrap().1;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sealed)
            .unwrap();
        assert!(!String::from_utf8_lossy(&raw).contains("icloud.com"));
        // Without the mark (a client that dropped it): by the image.
        assert_eq!(store.original(&links, "alice", "", &bytes), Some(line));
        // Another image, or another account's mark: no reference.
        assert_eq!(store.original(&links, "alice", &i.mark, &[1, 2, 3]), None);
        assert_eq!(store.original(&links, "bob", &i.mark, &bytes), None);
    }

    #[tokio::test]
    async fn one_answer_holds_photos_up_to_its_budget() {
        let photo = |n: usize| {
            Arc::new(Photo {
                base64: "A".repeat(n),
                mime: "image/jpeg",
                hash: String::new(),
            })
        };
        let all = (0..10).map(|i| (format!("https://h/{i}"), photo(100)));
        let got = within(futures_util::stream::iter(all), 350).await;
        assert_eq!(got.len(), 3);
        let all = (0..10).map(|i| (format!("https://h/{i}"), photo(100)));
        assert_eq!(
            within(futures_util::stream::iter(all), 10_000).await.len(),
            10
        );
    }
}
