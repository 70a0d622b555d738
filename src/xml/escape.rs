//! Escaping and small lexical checks used when writing normalised XML.

use std::borrow::Cow;

/// Escapes `&`, `<` and `>` for use as element text.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    escape_with(s, |b| matches!(b, b'&' | b'<' | b'>'))
}

/// Escapes `&`, `<`, `>` and `"` for use inside a double-quoted attribute value.
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    escape_with(s, |b| matches!(b, b'&' | b'<' | b'>' | b'"'))
}

fn escape_with(s: &str, special: impl Fn(u8) -> bool) -> Cow<'_, str> {
    if !s.bytes().any(&special) {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len() + 16);
    push_escaped(&mut out, s.as_bytes(), special);
    // Only ASCII bytes were replaced by ASCII sequences, so the result is still UTF-8.
    Cow::Owned(String::from_utf8(out).unwrap_or_default())
}

fn entity(b: u8) -> &'static [u8] {
    match b {
        b'&' => b"&amp;",
        b'<' => b"&lt;",
        b'>' => b"&gt;",
        b'"' => b"&quot;",
        b'\r' => b"&#13;",
        _ => b"",
    }
}

/// Byte classes for fast scanning: bit 0 = text special (`&<>`), bit 1 = CR,
/// bit 2 = attribute special (`"`).
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'&' as usize] = 1;
    t[b'<' as usize] = 1;
    t[b'>' as usize] = 1;
    t[b'\r' as usize] = 2;
    t[b'"' as usize] = 4;
    t
};

#[inline]
fn push_escaped(out: &mut Vec<u8>, mut s: &[u8], special: impl Fn(u8) -> bool) {
    while let Some(i) = s.iter().position(|&b| special(b)) {
        out.extend_from_slice(&s[..i]);
        out.extend_from_slice(entity(s[i]));
        s = &s[i + 1..];
    }
    out.extend_from_slice(s);
}

/// Appends decoded text, escaping `&`, `<`, `>` and, if `escape_cr`, carriage returns as
/// `&#13;` (so that a CR that arrived as a character reference survives the reader's end-of-line
/// normalisation).
pub(crate) fn push_text(out: &mut Vec<u8>, s: &str, escape_cr: bool) {
    let mask = if escape_cr { 3 } else { 1 };
    push_escaped(out, s.as_bytes(), |b| CLASS[b as usize] & mask != 0);
}

/// Appends raw text from a quick-xml `Text` event (which never contains `&` or `<`); only `>` is
/// escaped so that a stray `]]>` cannot appear in the output.
#[inline]
pub(crate) fn push_raw_text(out: &mut Vec<u8>, raw: &[u8]) {
    push_escaped(out, raw, |b| b == b'>');
}

/// Appends a raw attribute value (as found between the quotes of the input) for output between
/// double quotes: `"` becomes `&quot;`, references are validated and copied unchanged, literal
/// whitespace is kept so a reader's attribute-value normalisation gives the same result.
pub(crate) fn push_raw_attr(out: &mut Vec<u8>, raw: &[u8]) -> Result<(), String> {
    if std::str::from_utf8(raw).is_err() {
        return Err("attribute value is not valid UTF-8".into());
    }
    let mut s = raw;
    while let Some(i) = s.iter().position(|&b| matches!(b, b'"' | b'<' | b'&')) {
        out.extend_from_slice(&s[..i]);
        match s[i] {
            b'"' => {
                out.extend_from_slice(b"&quot;");
                s = &s[i + 1..];
            }
            b'<' => return Err("'<' is not allowed in an attribute value".into()),
            _ => {
                let rest = &s[i + 1..];
                let end = rest
                    .iter()
                    .position(|&b| b == b';')
                    .ok_or_else(|| "unterminated reference in attribute value".to_string())?;
                let name = &rest[..end];
                if resolve_ref(name).is_none() {
                    return Err(format!(
                        "undefined entity '&{};' in attribute value",
                        String::from_utf8_lossy(name)
                    ));
                }
                out.push(b'&');
                out.extend_from_slice(name);
                out.push(b';');
                s = &rest[end + 1..];
            }
        }
    }
    out.extend_from_slice(s);
    Ok(())
}

/// Resolves the name of a general reference (`amp`, `#60`, `#x3C`) to its character; `None` for
/// undefined entities and characters XML forbids.
pub(crate) fn resolve_ref(name: &[u8]) -> Option<char> {
    match name {
        b"amp" => Some('&'),
        b"lt" => Some('<'),
        b"gt" => Some('>'),
        b"quot" => Some('"'),
        b"apos" => Some('\''),
        [b'#', b'x', hex @ ..] => parse_code(hex, 16),
        [b'#', dec @ ..] => parse_code(dec, 10),
        _ => None,
    }
}

fn parse_code(digits: &[u8], radix: u32) -> Option<char> {
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    let code = u32::from_str_radix(text, radix).ok()?;
    let c = char::from_u32(code)?;
    let allowed =
        matches!(code, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF);
    allowed.then_some(c)
}

/// True if every byte is XML whitespace (space, tab, CR, LF); true for the empty slice.
#[inline]
pub(crate) fn is_ws(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

/// Name character classes: 1 = ASCII name character, 2 = non-ASCII (UTF-8 checked separately).
const NAME: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.' {
            1
        } else if c >= 0x80 {
            2
        } else {
            0
        };
        b += 1;
    }
    t
};

/// A conservative check that `name` is an XML NCName (no prefix): ASCII letters, digits, `-`,
/// `_`, `.` and any non-ASCII UTF-8; it must not start with a digit, `-` or `.`.
pub(crate) fn is_ncname(name: &[u8]) -> bool {
    let Some(&first) = name.first() else {
        return false;
    };
    if first.is_ascii_digit() || first == b'-' || first == b'.' {
        return false;
    }
    let mut classes = 0u8;
    for &b in name {
        let class = NAME[b as usize];
        if class == 0 {
            return false;
        }
        classes |= class;
    }
    classes & 2 == 0 || std::str::from_utf8(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert!(matches!(escape_text("plain"), Cow::Borrowed("plain")));
        assert_eq!(escape_text("a<b & c>d\""), "a&lt;b &amp; c&gt;d\"");
        assert_eq!(
            escape_attr("say \"hi\" & <go>"),
            "say &quot;hi&quot; &amp; &lt;go&gt;"
        );
        let mut out = Vec::new();
        push_text(&mut out, "a\r\nb&", true);
        assert_eq!(out, b"a&#13;\nb&amp;");
        out.clear();
        push_text(&mut out, "a\r\n", false);
        assert_eq!(out, b"a\r\n");
        out.clear();
        push_raw_text(&mut out, b"x]]>y");
        assert_eq!(out, b"x]]&gt;y");
    }

    #[test]
    fn attrs() {
        let mut out = Vec::new();
        push_raw_attr(&mut out, b"say \"x\" &amp; &#x41;").unwrap();
        assert_eq!(out, b"say &quot;x&quot; &amp; &#x41;");
        assert!(push_raw_attr(&mut Vec::new(), b"a<b").is_err());
        assert!(push_raw_attr(&mut Vec::new(), b"a &nbsp; b").is_err());
        assert!(push_raw_attr(&mut Vec::new(), b"a & b").is_err());
        assert!(push_raw_attr(&mut Vec::new(), b"&#0;").is_err());
    }

    #[test]
    fn refs_and_names() {
        assert_eq!(resolve_ref(b"amp"), Some('&'));
        assert_eq!(resolve_ref(b"#13"), Some('\r'));
        assert_eq!(resolve_ref(b"#x1F600"), Some('😀'));
        assert_eq!(resolve_ref(b"#x0"), None);
        assert_eq!(resolve_ref(b"#xD800"), None);
        assert_eq!(resolve_ref(b"#"), None);
        assert_eq!(resolve_ref(b"nbsp"), None);
        assert!(is_ncname(b"calendar-data"));
        assert!(is_ncname("émoji".as_bytes()));
        assert!(!is_ncname(b"1abc"));
        assert!(!is_ncname(b"a\"b"));
        assert!(!is_ncname(b""));
        assert!(is_ws(b" \r\n\t"));
        assert!(!is_ws(b" x"));
    }
}
