//! A small, hand-written IMAP command reader for the stand-in: lines with literals (`{n}` and
//! `{n+}`), tokens (atoms, quoted strings, literals, parenthesised lists), sequence sets and
//! message sections. Every error is a value; nothing here panics on bad input.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest command line (without literals) accepted.
pub const MAX_LINE: u64 = 64 * 1024;
/// Largest literal accepted (APPEND of a big message).
pub const MAX_LITERAL: u64 = 64 * 1024 * 1024;

/// One piece of a command as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Text(Vec<u8>),
    Literal(Vec<u8>),
}

/// Why a command could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The connection closed (or failed).
    Closed,
    /// The line or a literal was too long; the connection must close.
    TooLong,
}

/// Read one line (up to `MAX_LINE` bytes), without its CRLF. `None` at end of stream.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE)
        .read_until(b'\n', &mut buf)
        .await
        .map_err(|_| ReadError::Closed)?;
    if n == 0 {
        return Err(ReadError::Closed);
    }
    if buf.last() != Some(&b'\n') {
        return Err(if n as u64 >= MAX_LINE {
            ReadError::TooLong
        } else {
            ReadError::Closed
        });
    }
    buf.pop();
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(buf)
}

/// `{n}` or `{n+}` at the end of a line: (length, synchronising).
pub fn literal_suffix(line: &[u8]) -> Option<(u64, bool, usize)> {
    if line.last() != Some(&b'}') {
        return None;
    }
    let open = line.iter().rposition(|&b| b == b'{')?;
    let inner = &line[open + 1..line.len() - 1];
    let (digits, sync) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync, open))
}

/// Read one whole command, answering `+ Ready for literal data` to synchronising literals.
pub async fn read_command<R, W>(r: &mut R, w: &mut W) -> Result<Vec<Seg>, ReadError>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut segs = Vec::new();
    loop {
        let mut line = read_line(r).await?;
        match literal_suffix(&line) {
            Some((n, sync, open)) => {
                if n > MAX_LITERAL {
                    return Err(ReadError::TooLong);
                }
                line.truncate(open);
                segs.push(Seg::Text(line));
                if sync {
                    w.write_all(b"+ Ready for literal data\r\n")
                        .await
                        .map_err(|_| ReadError::Closed)?;
                    w.flush().await.map_err(|_| ReadError::Closed)?;
                }
                let mut data = vec![0u8; n as usize];
                r.read_exact(&mut data)
                    .await
                    .map_err(|_| ReadError::Closed)?;
                segs.push(Seg::Literal(data));
            }
            None => {
                segs.push(Seg::Text(line));
                return Ok(segs);
            }
        }
    }
}

/// A token of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Atom(String),
    /// A quoted string or a literal.
    Str(Vec<u8>),
    List(Vec<Tok>),
}

impl Tok {
    /// An astring's value (atom or string).
    pub fn text(&self) -> Option<String> {
        match self {
            Tok::Atom(a) => Some(a.clone()),
            Tok::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Tok::List(_) => None,
        }
    }

    pub fn atom_upper(&self) -> Option<String> {
        match self {
            Tok::Atom(a) => Some(a.to_ascii_uppercase()),
            _ => None,
        }
    }
}

/// Split a command into tokens.
pub fn tokenize(segs: &[Seg]) -> Result<Vec<Tok>, String> {
    let mut stack: Vec<Vec<Tok>> = vec![Vec::new()];
    for seg in segs {
        match seg {
            Seg::Literal(data) => push(&mut stack, Tok::Str(data.clone()))?,
            Seg::Text(text) => tokenize_text(text, &mut stack)?,
        }
    }
    if stack.len() != 1 {
        return Err("unbalanced parentheses".into());
    }
    Ok(stack.pop().unwrap_or_default())
}

fn push(stack: &mut [Vec<Tok>], t: Tok) -> Result<(), String> {
    match stack.last_mut() {
        Some(top) => {
            top.push(t);
            Ok(())
        }
        None => Err("parse error".into()),
    }
}

fn tokenize_text(text: &[u8], stack: &mut Vec<Vec<Tok>>) -> Result<(), String> {
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b' ' => i += 1,
            b'(' => {
                stack.push(Vec::new());
                i += 1;
            }
            b')' => {
                if stack.len() < 2 {
                    return Err("unbalanced parentheses".into());
                }
                let list = stack.pop().unwrap_or_default();
                push(stack, Tok::List(list))?;
                i += 1;
            }
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match text.get(i) {
                        None => return Err("unterminated quoted string".into()),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match text.get(i + 1) {
                                Some(&c) => s.push(c),
                                None => return Err("bad escape".into()),
                            }
                            i += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                push(stack, Tok::Str(s))?;
            }
            _ => {
                let start = i;
                let mut depth = 0usize;
                while i < text.len() {
                    let c = text[i];
                    if depth == 0 && matches!(c, b' ' | b'(' | b')' | b'"') {
                        break;
                    }
                    if c == b'[' {
                        depth += 1;
                    } else if c == b']' {
                        depth = depth.saturating_sub(1);
                    }
                    i += 1;
                }
                if depth != 0 {
                    return Err("unbalanced brackets".into());
                }
                let atom = String::from_utf8_lossy(&text[start..i]).into_owned();
                push(stack, Tok::Atom(atom))?;
            }
        }
    }
    Ok(())
}

/// A sequence set, as inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqSet(pub Vec<(u32, u32)>);

impl SeqSet {
    /// Parse `1:3,5,7:*`; `*` stands for `max` (0 in an empty mailbox).
    pub fn parse(s: &str, max: u32) -> Option<SeqSet> {
        let num = |p: &str| -> Option<u32> {
            if p == "*" {
                Some(max)
            } else {
                p.parse().ok()
            }
        };
        let mut v = Vec::new();
        for part in s.split(',') {
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            v.push((a.min(b), a.max(b)));
        }
        Some(SeqSet(v))
    }

    pub fn contains(&self, n: u32) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&n))
    }

    /// Whether `s` looks like a sequence set at all.
    pub fn looks_like(s: &str) -> bool {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b':' | b',' | b'*'))
    }
}

/// Quote a string for a response (a literal when it cannot be quoted).
pub fn quote(s: &[u8]) -> Vec<u8> {
    if s.iter()
        .any(|&b| b == b'\r' || b == b'\n' || b == 0 || b >= 0x80)
    {
        let mut v = format!("{{{}}}\r\n", s.len()).into_bytes();
        v.extend_from_slice(s);
        return v;
    }
    let mut v = vec![b'"'];
    for &b in s {
        if b == b'"' || b == b'\\' {
            v.push(b'\\');
        }
        v.push(b);
    }
    v.push(b'"');
    v
}

/// Split a message into (header including the blank line, text).
pub fn split_message(raw: &[u8]) -> (&[u8], &[u8]) {
    if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        return raw.split_at(i + 4);
    }
    if let Some(i) = raw.windows(2).position(|w| w == b"\n\n") {
        return raw.split_at(i + 2);
    }
    (raw, &[])
}

/// The header fields (unfolded name, raw field bytes including continuation lines).
pub fn header_fields(header: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = out.last_mut() {
                last.1.extend_from_slice(line);
            }
            continue;
        }
        let name = line
            .iter()
            .position(|&b| b == b':')
            .map(|i| String::from_utf8_lossy(&line[..i]).trim().to_string())
            .unwrap_or_default();
        out.push((name, line.to_vec()));
    }
    out
}

/// The unfolded value of the first header field `name`.
pub fn header_value(raw: &[u8], name: &str) -> Option<String> {
    let (h, _) = split_message(raw);
    header_fields(h)
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, f)| {
            let s = String::from_utf8_lossy(&f).into_owned();
            let v = s.split_once(':').map(|x| x.1).unwrap_or("");
            v.split_whitespace().collect::<Vec<_>>().join(" ")
        })
}

/// `dd-Mon-yyyy hh:mm:ss +0000` for seconds since the epoch.
pub fn imap_date(secs: u64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[day]-[month repr:short]-[year] [hour]:[minute]:[second] +0000"
    );
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::UtcDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::UtcDateTime::MAX)
        .format(FORMAT)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_with_brackets_literals_and_lists() {
        let segs = vec![
            Seg::Text(
                b"a1 UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10> \"q\\\"x\" "
                    .to_vec(),
            ),
            Seg::Literal(b"lit\r\n".to_vec()),
            Seg::Text(b")".to_vec()),
        ];
        let t = tokenize(&segs).unwrap();
        assert_eq!(t[0], Tok::Atom("a1".into()));
        let Tok::List(items) = &t[4] else { panic!() };
        assert_eq!(
            items[1],
            Tok::Atom("BODY.PEEK[HEADER.FIELDS (FROM TO)]<0.10>".into())
        );
        assert_eq!(items[2], Tok::Str(b"q\"x".to_vec()));
        assert_eq!(items[3], Tok::Str(b"lit\r\n".to_vec()));
        for bad in [&b"a (b"[..], b"a b)", b"a \"b", b"a B[x", b")))((("] {
            assert!(tokenize(&[Seg::Text(bad.to_vec())]).is_err());
        }
    }

    #[test]
    fn literal_suffixes_and_sets() {
        assert_eq!(literal_suffix(b"a APPEND x {12}"), Some((12, true, 11)));
        assert_eq!(literal_suffix(b"a APPEND x {12+}"), Some((12, false, 11)));
        assert_eq!(literal_suffix(b"a {x}"), None);
        assert_eq!(literal_suffix(b"a {}"), None);
        let s = SeqSet::parse("1:3,7:*", 9).unwrap();
        assert!(s.contains(2) && s.contains(9) && !s.contains(5));
        assert!(SeqSet::parse("1:x", 3).is_none());
        assert_eq!(SeqSet::parse("5:*", 2).unwrap().0, vec![(2, 5)]);
    }

    #[test]
    fn dates_and_headers() {
        assert_eq!(imap_date(0), "01-Jan-1970 00:00:00 +0000");
        assert_eq!(imap_date(1_796_032_800), "30-Nov-2026 10:00:00 +0000");
        let raw = b"Subject: a\r\n b\r\nFrom: x\r\n\r\nbody";
        assert_eq!(header_value(raw, "subject").as_deref(), Some("a b"));
        assert_eq!(split_message(raw).1, b"body");
    }
}
