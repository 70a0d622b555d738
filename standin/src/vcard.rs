//! vCard handling: validation (the `N` rule), photo extraction into `/wcs/` blobs, the served
//! PHOTO line, and property lookup for addressbook-query.

use crate::ical::{parse_line, unfold};
use base64::Engine;

/// True when the text is BEGIN:VCARD … END:VCARD.
pub fn is_vcard(text: &str) -> bool {
    let lines = unfold(text);
    let first = lines.first().map(|l| l.trim().to_ascii_uppercase());
    let last = lines.last().map(|l| l.trim().to_ascii_uppercase());
    first.as_deref() == Some("BEGIN:VCARD") && last.as_deref() == Some("END:VCARD")
}

/// True when the card has an `N` property (in any group).
pub fn has_n(text: &str) -> bool {
    unfold(text)
        .iter()
        .filter_map(|l| parse_line(l))
        .any(|l| l.name == "N")
}

/// A photo found in an incoming card.
#[derive(Clone, Debug, PartialEq)]
pub enum PhotoRef {
    /// Inline bytes, to be stored as a new `/wcs/` blob.
    Inline(Vec<u8>),
    /// A URI pointing at one of our own blobs.
    Hash(String),
}

fn own_blob_hash(uri: &str) -> Option<String> {
    let tail = uri
        .rsplit_once("/wcs/")
        .or_else(|| uri.rsplit_once("/ck/card/"))?
        .1;
    let hash: String = tail
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    (!hash.is_empty()).then_some(hash)
}

/// Remove a PHOTO that is inline data or one of our own URIs; return the rest and the photo.
/// Cards without such a PHOTO are returned unchanged.
pub fn extract_photo(text: &str) -> (String, Option<PhotoRef>) {
    let lines = unfold(text);
    let mut found = None;
    let mut idx = None;
    for (i, raw) in lines.iter().enumerate() {
        let Some(l) = parse_line(raw) else { continue };
        if l.name != "PHOTO" {
            continue;
        }
        let params = l.params.to_ascii_uppercase();
        let value = l.value.trim();
        if let Some(h) = own_blob_hash(value) {
            found = Some(PhotoRef::Hash(h));
        } else if params.contains("ENCODING=B") || params.contains("VALUE=BINARY") {
            let cleaned: String = value.chars().filter(|c| !c.is_whitespace()).collect();
            if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(cleaned) {
                found = Some(PhotoRef::Inline(bytes));
            }
        } else if let Some(data) = value.strip_prefix("data:") {
            if let Some((_, b64)) = data.split_once("base64,") {
                if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
                    found = Some(PhotoRef::Inline(bytes));
                }
            }
        }
        if found.is_some() {
            idx = Some(i);
            break;
        }
    }
    let Some(idx) = idx else {
        return (text.to_string(), None);
    };
    let mut out = String::with_capacity(text.len());
    for (i, l) in lines.iter().enumerate() {
        if i != idx {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    (out, found)
}

/// Insert `line` before the final END:VCARD.
pub fn insert_before_end(text: &str, line: &str) -> String {
    let upper = text.to_ascii_uppercase();
    match upper.rfind("END:VCARD") {
        Some(pos) => {
            let mut out = String::with_capacity(text.len() + line.len() + 2);
            out.push_str(&text[..pos]);
            out.push_str(line);
            out.push_str("\r\n");
            out.push_str(&text[pos..]);
            out
        }
        None => text.to_string(),
    }
}

/// The values of property `name` (compared case-sensitively or not).
pub fn prop_values(text: &str, name: &str, case_sensitive: bool) -> Vec<String> {
    unfold(text)
        .iter()
        .filter_map(|raw| {
            // parse_line upper-cases the name; re-read the original for case-sensitive matching
            let l = parse_line(raw)?;
            let head = raw.split([';', ':']).next().unwrap_or("");
            let orig = head.rsplit_once('.').map(|x| x.1).unwrap_or(head);
            let hit = if case_sensitive {
                orig == name
            } else {
                l.name.eq_ignore_ascii_case(name)
            };
            hit.then_some(l.value)
        })
        .collect()
}

/// Stable short hash for photo blobs (FNV-1a, 64-bit, hex).
pub fn blob_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}{:08x}", bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_inline_and_own_uri_photos() {
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:A;B;;;\r\nPHOTO;ENCODING=b;TYPE=JPEG:/9j/\r\n 4A==\r\nEND:VCARD\r\n";
        let (rest, p) = extract_photo(card);
        assert_eq!(p, Some(PhotoRef::Inline(vec![0xff, 0xd8, 0xff, 0xe0])));
        assert!(!rest.contains("PHOTO"));
        let uri = "BEGIN:VCARD\r\nPHOTO;VALUE=uri:http://127.0.0.1:1/1/wcs/abc123\r\nEND:VCARD\r\n";
        assert_eq!(extract_photo(uri).1, Some(PhotoRef::Hash("abc123".into())));
        assert!(has_n(card));
        assert!(!has_n(uri));
        assert!(insert_before_end(&rest, "X:1").contains("X:1\r\nEND:VCARD"));
    }

    #[test]
    fn prop_name_case_sensitivity() {
        let card = "BEGIN:VCARD\r\nitem1.EMAIL:a@b\r\nfn:x\r\nEND:VCARD\r\n";
        assert_eq!(prop_values(card, "EMAIL", true), vec!["a@b"]);
        assert!(prop_values(card, "FN", true).is_empty());
        assert_eq!(prop_values(card, "FN", false), vec!["x"]);
    }
}
