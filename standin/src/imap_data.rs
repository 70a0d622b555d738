//! FETCH items and their rendering, SEARCH keys, sequence-set selection and mailbox
//! name patterns for the stand-in's IMAP role.

use crate::imap_parse::{
    header_fields, header_value, imap_date, quote, split_message, SeqSet, Tok,
};
use crate::mailstore::{Mailbox, Message};

/// Indexes (0-based) of the messages a sequence or UID set names.
pub(crate) fn select_set(mb: &Mailbox, s: &str, uid: bool) -> Option<Vec<usize>> {
    if uid {
        let max = mb.messages.last().map(|m| m.uid).unwrap_or(0);
        let set = SeqSet::parse(s, max)?;
        Some(
            mb.messages
                .iter()
                .enumerate()
                .filter(|(_, m)| set.contains(m.uid))
                .map(|(i, _)| i)
                .collect(),
        )
    } else {
        let set = SeqSet::parse(s, mb.messages.len() as u32)?;
        Some(
            (0..mb.messages.len())
                .filter(|i| set.contains(*i as u32 + 1))
                .collect(),
        )
    }
}

/// `(CHANGEDSINCE n)` after the FETCH items.
pub(crate) fn changed_since(t: Option<&Tok>) -> Option<u64> {
    let Some(Tok::List(l)) = t else { return None };
    match l.as_slice() {
        [Tok::Atom(k), Tok::Atom(v)] if k.eq_ignore_ascii_case("CHANGEDSINCE") => v.parse().ok(),
        _ => None,
    }
}

pub(crate) fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some(b'%') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != b'/')
                .any(|i| go(&p[1..], &n[i..])),
            Some(&c) => n.first() == Some(&c) && go(&p[1..], &n[1..]),
        }
    }
    if pattern.eq_ignore_ascii_case("INBOX") {
        return name == "INBOX";
    }
    go(pattern.as_bytes(), name.as_bytes())
}

pub(crate) fn flags_str(m: &Message) -> String {
    m.flags.iter().cloned().collect::<Vec<_>>().join(" ")
}

/// One FETCH data item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Item {
    Uid,
    Flags,
    Size,
    InternalDate,
    Envelope,
    BodyStructure,
    ModSeq,
    /// BODY[section]<partial>, BODY.PEEK[...], RFC822, RFC822.HEADER, RFC822.TEXT.
    Section {
        peek: bool,
        /// As echoed in the response, e.g. `BODY[HEADER]` or `RFC822`.
        name: String,
        section: String,
        partial: Option<(usize, usize)>,
    },
}

pub(crate) fn fetch_items(t: &Tok) -> Result<Vec<Item>, String> {
    let atoms: Vec<String> = match t {
        Tok::Atom(a) => match a.to_ascii_uppercase().as_str() {
            "ALL" => vec![
                "FLAGS".into(),
                "INTERNALDATE".into(),
                "RFC822.SIZE".into(),
                "ENVELOPE".into(),
            ],
            "FAST" => vec!["FLAGS".into(), "INTERNALDATE".into(), "RFC822.SIZE".into()],
            "FULL" => vec![
                "FLAGS".into(),
                "INTERNALDATE".into(),
                "RFC822.SIZE".into(),
                "ENVELOPE".into(),
                "BODY".into(),
            ],
            _ => vec![a.clone()],
        },
        Tok::List(l) => l.iter().filter_map(Tok::text).collect(),
        Tok::Str(_) => return Err("bad FETCH items".into()),
    };
    atoms.iter().map(|a| parse_item(a)).collect()
}

pub(crate) fn parse_item(a: &str) -> Result<Item, String> {
    let up = a.to_ascii_uppercase();
    let sect = |peek: bool, name: &str, section: &str| Item::Section {
        peek,
        name: name.to_string(),
        section: section.to_string(),
        partial: None,
    };
    Ok(match up.as_str() {
        "UID" => Item::Uid,
        "FLAGS" => Item::Flags,
        "RFC822.SIZE" => Item::Size,
        "INTERNALDATE" => Item::InternalDate,
        "ENVELOPE" => Item::Envelope,
        "BODYSTRUCTURE" | "BODY" => Item::BodyStructure,
        "MODSEQ" => Item::ModSeq,
        "RFC822" => sect(false, "RFC822", ""),
        "RFC822.HEADER" => sect(true, "RFC822.HEADER", "HEADER"),
        "RFC822.TEXT" => sect(false, "RFC822.TEXT", "TEXT"),
        _ => {
            let (peek, rest) = if let Some(r) = up.strip_prefix("BODY.PEEK[") {
                (true, r)
            } else if let Some(r) = up.strip_prefix("BINARY.PEEK[") {
                (true, r)
            } else if let Some(r) = up.strip_prefix("BODY[") {
                (false, r)
            } else if let Some(r) = up.strip_prefix("BINARY[") {
                (false, r)
            } else {
                return Err(format!("unknown FETCH item {a}"));
            };
            let close = rest.rfind(']').ok_or("missing ]")?;
            let section = rest[..close].to_string();
            let tail = &rest[close + 1..];
            let partial = match tail.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
                Some(p) => {
                    let (s, l) = p.split_once('.').ok_or("bad partial")?;
                    Some((
                        s.parse().map_err(|_| "bad partial")?,
                        l.parse().map_err(|_| "bad partial")?,
                    ))
                }
                None if tail.is_empty() => None,
                None => return Err(format!("bad FETCH item {a}")),
            };
            Item::Section {
                peek,
                name: format!("BODY[{section}]"),
                section,
                partial,
            }
        }
    })
}

pub(crate) fn section_bytes(raw: &[u8], section: &str) -> Vec<u8> {
    let (header, text) = split_message(raw);
    let s = section.trim();
    if s.is_empty() {
        return raw.to_vec();
    }
    if s == "HEADER" {
        return header.to_vec();
    }
    if s == "TEXT" || s == "1" {
        return text.to_vec();
    }
    let (not, list) = if let Some(l) = s.strip_prefix("HEADER.FIELDS.NOT") {
        (true, l)
    } else if let Some(l) = s.strip_prefix("HEADER.FIELDS") {
        (false, l)
    } else {
        return Vec::new();
    };
    let wanted: Vec<String> = list
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .split_whitespace()
        .map(|x| x.trim_matches('"').to_ascii_lowercase())
        .collect();
    let mut out = Vec::new();
    for (name, field) in header_fields(header) {
        if wanted.contains(&name.to_ascii_lowercase()) != not {
            out.extend_from_slice(&field);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub(crate) fn nstring(v: Option<String>) -> Vec<u8> {
    match v {
        Some(s) => quote(s.as_bytes()),
        None => b"NIL".to_vec(),
    }
}

pub(crate) fn render_fetch(
    seq: usize,
    m: &Message,
    items: &[Item],
    uid: bool,
    seen_set: bool,
) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    let mut has_uid = false;
    let mut has_flags = false;
    for it in items {
        match it {
            Item::Uid => {
                has_uid = true;
                parts.push(format!("UID {}", m.uid).into_bytes());
            }
            Item::Flags => {
                has_flags = true;
                parts.push(format!("FLAGS ({})", flags_str(m)).into_bytes());
            }
            Item::Size => parts.push(format!("RFC822.SIZE {}", m.raw.len()).into_bytes()),
            Item::InternalDate => {
                parts.push(format!("INTERNALDATE \"{}\"", imap_date(m.internal_date)).into_bytes())
            }
            Item::ModSeq => parts.push(format!("MODSEQ ({})", m.modseq).into_bytes()),
            Item::Envelope => {
                let mut e = b"ENVELOPE (".to_vec();
                e.extend(nstring(header_value(&m.raw, "Date")));
                e.push(b' ');
                e.extend(nstring(header_value(&m.raw, "Subject")));
                e.extend_from_slice(b" NIL NIL NIL NIL NIL NIL ");
                e.extend(nstring(header_value(&m.raw, "In-Reply-To")));
                e.push(b' ');
                e.extend(nstring(header_value(&m.raw, "Message-ID")));
                e.push(b')');
                parts.push(e);
            }
            Item::BodyStructure => {
                let (_, text) = split_message(&m.raw);
                let lines = text.iter().filter(|&&b| b == b'\n').count();
                parts.push(
                    format!(
                        "BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"8BIT\" {} {lines})",
                        text.len()
                    )
                    .into_bytes(),
                );
            }
            Item::Section {
                name,
                section,
                partial,
                ..
            } => {
                let mut data = section_bytes(&m.raw, section);
                let mut label = name.clone();
                if let Some((start, len)) = partial {
                    let s = (*start).min(data.len());
                    let e = s.saturating_add(*len).min(data.len());
                    data = data[s..e].to_vec();
                    label.push_str(&format!("<{start}>"));
                }
                let mut p = format!("{label} {{{}}}\r\n", data.len()).into_bytes();
                p.extend(data);
                parts.push(p);
            }
        }
    }
    if uid && !has_uid {
        parts.insert(0, format!("UID {}", m.uid).into_bytes());
    }
    if seen_set && !has_flags {
        parts.push(format!("FLAGS ({})", flags_str(m)).into_bytes());
    }
    let mut out = format!("* {seq} FETCH (").into_bytes();
    out.extend(parts.join(&b' '));
    out.extend_from_slice(b")\r\n");
    out
}

/// A SEARCH key.
pub(crate) enum Key {
    All,
    Set(SeqSet, bool),
    Flag(String, bool),
    Not(Box<Key>),
    Or(Box<Key>, Box<Key>),
    And(Vec<Key>),
    Header(String, String),
    Text(String),
    Larger(usize),
    Smaller(usize),
    ModSeq(u64),
}

impl Key {
    pub(crate) fn matches(&self, seq: usize, m: &Message) -> bool {
        let lower = |b: &[u8]| String::from_utf8_lossy(b).to_ascii_lowercase();
        match self {
            Key::All => true,
            Key::Set(s, uid) => s.contains(if *uid { m.uid } else { seq as u32 }),
            Key::Flag(f, on) => m.has_flag(f) == *on,
            Key::Not(k) => !k.matches(seq, m),
            Key::Or(a, b) => a.matches(seq, m) || b.matches(seq, m),
            Key::And(ks) => ks.iter().all(|k| k.matches(seq, m)),
            Key::Header(h, v) => header_value(&m.raw, h)
                .is_some_and(|x| x.to_ascii_lowercase().contains(&v.to_ascii_lowercase())),
            Key::Text(t) => lower(&m.raw).contains(&t.to_ascii_lowercase()),
            Key::Larger(n) => m.raw.len() > *n,
            Key::Smaller(n) => m.raw.len() < *n,
            Key::ModSeq(n) => m.modseq >= *n,
        }
    }
}

pub(crate) fn parse_key<'a>(
    it: &mut std::iter::Peekable<impl Iterator<Item = &'a Tok>>,
    mb: &Mailbox,
) -> Result<Key, String> {
    let t = it.next().ok_or("missing search key")?;
    let arg = |it: &mut std::iter::Peekable<_>| -> Result<String, String> {
        it.next()
            .and_then(|t: &Tok| t.text())
            .ok_or_else(|| "missing search argument".to_string())
    };
    let atom = match t {
        Tok::List(l) => {
            let mut inner = l.iter().peekable();
            let mut ks = Vec::new();
            while inner.peek().is_some() {
                ks.push(parse_key(&mut inner, mb)?);
            }
            return Ok(Key::And(ks));
        }
        Tok::Str(_) => return Err("unexpected string in SEARCH".into()),
        Tok::Atom(a) => a.to_ascii_uppercase(),
    };
    let flag = |f: &str, on: bool| Ok(Key::Flag(f.to_string(), on));
    match atom.as_str() {
        "ALL" => Ok(Key::All),
        "SEEN" => flag("\\Seen", true),
        "UNSEEN" | "NEW" => flag("\\Seen", false),
        "DELETED" => flag("\\Deleted", true),
        "UNDELETED" => flag("\\Deleted", false),
        "FLAGGED" => flag("\\Flagged", true),
        "UNFLAGGED" => flag("\\Flagged", false),
        "ANSWERED" => flag("\\Answered", true),
        "UNANSWERED" => flag("\\Answered", false),
        "DRAFT" => flag("\\Draft", true),
        "UNDRAFT" => flag("\\Draft", false),
        "RECENT" => flag("\\Recent", true),
        "OLD" => Ok(Key::All),
        "KEYWORD" => Ok(Key::Flag(arg(it)?, true)),
        "UNKEYWORD" => Ok(Key::Flag(arg(it)?, false)),
        "NOT" => Ok(Key::Not(Box::new(parse_key(it, mb)?))),
        "OR" => {
            let a = parse_key(it, mb)?;
            let b = parse_key(it, mb)?;
            Ok(Key::Or(Box::new(a), Box::new(b)))
        }
        "UID" => {
            let s = arg(it)?;
            let max = mb.messages.last().map(|m| m.uid).unwrap_or(0);
            Ok(Key::Set(SeqSet::parse(&s, max).ok_or("bad UID set")?, true))
        }
        "HEADER" => {
            let h = arg(it)?;
            Ok(Key::Header(h, arg(it)?))
        }
        "SUBJECT" | "FROM" | "TO" | "CC" | "BCC" => Ok(Key::Header(atom.clone(), arg(it)?)),
        "BODY" | "TEXT" => Ok(Key::Text(arg(it)?)),
        "LARGER" => Ok(Key::Larger(arg(it)?.parse().map_err(|_| "bad number")?)),
        "SMALLER" => Ok(Key::Smaller(arg(it)?.parse().map_err(|_| "bad number")?)),
        "MODSEQ" => Ok(Key::ModSeq(arg(it)?.parse().map_err(|_| "bad number")?)),
        "SINCE" | "BEFORE" | "ON" | "SENTSINCE" | "SENTBEFORE" | "SENTON" | "YOUNGER" | "OLDER" => {
            arg(it)?;
            Ok(Key::All) // dates are not modelled: every message matches
        }
        s if SeqSet::looks_like(s) => Ok(Key::Set(
            SeqSet::parse(s, mb.messages.len() as u32).ok_or("bad sequence set")?,
            false,
        )),
        other => Err(format!("unsupported search key {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_globs() {
        assert_eq!(parse_item("uid").unwrap(), Item::Uid);
        let Item::Section {
            peek,
            section,
            partial,
            ..
        } = parse_item("BODY.PEEK[HEADER.FIELDS (From)]<0.5>").unwrap()
        else {
            panic!()
        };
        assert!(peek);
        assert_eq!(section, "HEADER.FIELDS (FROM)");
        assert_eq!(partial, Some((0, 5)));
        assert!(parse_item("BODY[").is_err());
        assert!(parse_item("BODY[]<x>").is_err());
        assert!(glob("*", "Sent Messages"));
        assert!(glob("S%", "Sent Messages"));
        assert!(!glob("%", "a/b"));
        assert!(glob("inbox", "INBOX"));
        let raw = b"From: a\r\nTo: b\r\nSubject: s\r\n\r\nbody\r\n";
        assert_eq!(
            section_bytes(raw, "HEADER.FIELDS (SUBJECT)"),
            b"Subject: s\r\n\r\n"
        );
        assert_eq!(section_bytes(raw, "TEXT"), b"body\r\n");
    }
}
