//! The rewriter's tokenizer for upstream answers: tags, end tags, text and references are cut
//! straight out of the input buffer and handed to the [`Engine`]; the rare markup
//! (declarations, comments, CDATA, processing instructions, DOCTYPE, anything odd) goes to
//! quick-xml one token at a time. Gives the engine the very events, positions and errors that
//! quick-xml's own reader would (`scan_tests` compares both on the corpus).

use quick_xml::errors::{Error as QuickError, IllFormedError};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use super::engine::{AttrRange, Compiled, Engine};
use super::error::XmlError;
use super::guard;
use super::rewrite::HrefMap;

/// A markup token that quick-xml cannot finish within this many bytes after its start is
/// reported as the error quick-xml gives for it, instead of waiting for more input.
const DELEGATE_LIMIT: usize = 1024 * 1024;
/// Text without markup is handed to the engine in pieces of at least this size, so that one
/// long text run is never held whole.
const TEXT_PIECE: usize = 64 * 1024;

/// What [`Scanner::scan`] stopped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// The buffer ends inside a token: call again with more input.
    NeedMore,
    /// At least `out_limit` bytes of output can be handed on.
    Output,
    /// The document ended (the engine saw its end).
    Done,
}

/// The input at hand: `buf` starts at input byte `base`; `eof` says nothing follows it.
#[derive(Clone, Copy)]
struct Input<'a> {
    buf: &'a [u8],
    base: u64,
    eof: bool,
}

/// Tokenizer state that lives across input chunks.
#[derive(Default)]
pub(super) struct Scanner {
    /// Raw names of the open elements, for the end-tag check (as quick-xml keeps them).
    names: Vec<u8>,
    starts: Vec<usize>,
    /// The byte-order mark check at the start of the document is done.
    started: bool,
    /// Scratch space for a tag's attributes (no allocation per tag).
    ranges: Vec<AttrRange>,
    /// Plain tags read before, by their bytes (see [`Seen`]), [`SEEN_WAYS`] to a set.
    seen: Vec<Seen>,
    /// The way of each set used last.
    recent: Vec<u8>,
}

/// A plain tag already read: its bytes from after `<` to `>` and what [`plain_tag`] made of
/// them (offsets from the same start). A listing repeats a few tags thousands of times;
/// comparing the bytes is cheaper than reading them again, and gives the same answer, since
/// [`plain_tag`] looks at nothing else.
#[derive(Default)]
struct Seen {
    bytes: Vec<u8>,
    name_end: usize,
    empty: bool,
    ranges: Vec<AttrRange>,
    /// The tag checked once for [`Engine::start_compiled`], when it is plain enough.
    compiled: Option<Compiled>,
}

/// Sets of [`Scanner::seen`], picked by a few of a tag's first bytes; each holds
/// [`SEEN_WAYS`] tags, so that two tags of one listing that land in the same set (`href` and
/// `status`, say) do not keep pushing each other out.
const SEEN_SETS: usize = 32;
const SEEN_WAYS: usize = 2;
/// Tags longer than this are not remembered.
const SEEN_MAX: usize = 160;

/// The set of [`Scanner::seen`] for the tag whose bytes start at `from`: bytes 0, 1, 3, 4
/// and 9 tell apart the tags of iCloud's answers (`prop`/`propstat`, `calendar-data`/
/// `calendar-home-set`...) better than the first bytes alone.
fn seen_set(buf: &[u8], from: usize) -> usize {
    let mut key = [0u8; 10];
    match buf.get(from..from + 10) {
        Some(head) => key.copy_from_slice(head),
        None => {
            let head = buf.get(from..).unwrap_or_default();
            key[..head.len()].copy_from_slice(head);
        }
    }
    [0, 1, 3, 4, 9].iter().fold(0usize, |h, &k| {
        h.wrapping_mul(7).wrapping_add(key[k] as usize)
    }) % SEEN_SETS
}

/// The `>` ending a tag whose content starts at `from`, skipping quoted values. Tags are
/// short: a plain loop beats a memchr call per quote.
fn tag_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut quote = 0u8;
    for (k, &b) in buf[from..].iter().enumerate() {
        if quote != 0 {
            if b == quote {
                quote = 0;
            }
        } else if b == b'>' {
            return Some(from + k);
        } else if b == b'"' || b == b'\'' {
            quote = b;
        }
    }
    None
}

fn is_ws(b: u8) -> bool {
    CLASS[b as usize] == WS
}

/// What [`plain_tag`] made of a tag.
enum Plain {
    /// `<name attr="value" …>` or `…/>`: the name ends at `name_end`, `>` is at `close`.
    Tag {
        name_end: usize,
        close: usize,
        empty: bool,
    },
    /// The buffer ends inside the tag.
    Incomplete,
    /// Written some other way: quick-xml's reader and attribute parser decide.
    Irregular,
    /// More attributes than any element may have, seen by the time the tag reached `at`
    /// (refused without waiting for the end of a tag built to be endless).
    TooMany { at: usize },
}

/// Byte classes for the scanner's loops: one table load per byte instead of a chain of
/// comparisons.
const NAME: u8 = 1;
const WS: u8 = 2;
const CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':') {
            t[b] = NAME;
        } else if matches!(c, b' ' | b'\t' | b'\r' | b'\n') {
            t[b] = WS;
        }
        b += 1;
    }
    t
};

fn is_name_byte(b: u8) -> bool {
    CLASS[b as usize] == NAME
}

/// Reads a tag written the plain way in one pass from `from` (just after `<`): an ASCII name,
/// then attributes each after whitespace (a name, `=`, a quoted value, whitespace allowed
/// around `=`), then `>` or `/>`. The attributes' places go to `out`.
fn plain_tag(buf: &[u8], from: usize, out: &mut Vec<AttrRange>) -> Plain {
    let skip_ws = |mut k: usize| {
        while k < buf.len() && is_ws(buf[k]) {
            k += 1;
        }
        k
    };
    let name = |mut k: usize| {
        while k < buf.len() && is_name_byte(buf[k]) {
            k += 1;
        }
        k
    };
    let name_end = name(from);
    if name_end == from {
        return Plain::Irregular;
    }
    let mut k = name_end;
    loop {
        let after_ws = skip_ws(k);
        match buf.get(after_ws) {
            None => return Plain::Incomplete,
            Some(b'>') => {
                return Plain::Tag {
                    name_end,
                    close: after_ws,
                    empty: false,
                }
            }
            Some(b'/') => {
                return match buf.get(after_ws + 1) {
                    None => Plain::Incomplete,
                    Some(b'>') => Plain::Tag {
                        name_end,
                        close: after_ws + 1,
                        empty: true,
                    },
                    Some(_) => Plain::Irregular,
                }
            }
            Some(_) if after_ws == k => return Plain::Irregular,
            Some(_) => {}
        }
        // Most attributes are namespace declarations.
        let key_end = if buf[after_ws..].starts_with(b"xmlns") {
            name(after_ws + 5)
        } else {
            name(after_ws)
        };
        if key_end == after_ws {
            return Plain::Irregular;
        }
        let eq = skip_ws(key_end);
        match buf.get(eq) {
            None => return Plain::Incomplete,
            Some(b'=') => {}
            Some(_) => return Plain::Irregular,
        }
        let q = skip_ws(eq + 1);
        let quote = match buf.get(q) {
            None => return Plain::Incomplete,
            Some(&c @ (b'"' | b'\'')) => c,
            Some(_) => return Plain::Irregular,
        };
        let Some(len) = memchr::memchr(quote, &buf[q + 1..]) else {
            return Plain::Incomplete;
        };
        out.push(AttrRange {
            key: after_ws..key_end,
            value: q + 1..q + 1 + len,
        });
        k = q + 1 + len + 1;
        if out.len() > guard::MAX_ATTRIBUTES {
            return Plain::TooMany { at: k };
        }
    }
}

/// quick-xml's name length: up to the first XML whitespace.
fn name_len(content: &[u8]) -> usize {
    content
        .iter()
        .position(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(content.len())
}

/// The longest prefix of `text` that ends on a UTF-8 character boundary.
fn char_boundary(text: &[u8]) -> usize {
    let mut end = text.len();
    // A continuation byte (10xxxxxx) cannot end a character's encoding; back up to its lead.
    for back in 1..=3.min(text.len()) {
        let b = text[text.len() - back];
        if b & 0xC0 != 0x80 {
            let width = match b {
                0x00..=0x7F => 1,
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            if width > back {
                end = text.len() - back;
            }
            break;
        }
    }
    end
}

impl Scanner {
    /// Feeds the engine every complete token of `buf`, whose first byte is input byte `base`.
    /// Returns how many bytes were used and why it stopped; `eof` says no input follows `buf`.
    pub(super) fn scan(
        &mut self,
        engine: &mut Engine,
        map: &dyn HrefMap,
        buf: &[u8],
        base: u64,
        eof: bool,
        out_limit: usize,
    ) -> Result<(usize, Step), XmlError> {
        let mut i = 0;
        if !self.started {
            if buf.len() < 3 && !eof && b"\xEF\xBB\xBF".starts_with(buf) {
                return Ok((0, Step::NeedMore));
            }
            if buf.starts_with(b"\xEF\xBB\xBF") {
                i = 3;
            }
            self.started = true;
        }
        let input = Input { buf, base, eof };
        loop {
            if engine.flushable() >= out_limit {
                return Ok((i, Step::Output));
            }
            let Some(&first) = buf.get(i) else {
                if !eof {
                    return Ok((i, Step::NeedMore));
                }
                engine.handle(Event::Eof, map, base + i as u64)?;
                return Ok((i, Step::Done));
            };
            let next = match first {
                b'<' => self.markup(engine, map, input, i)?,
                b'&' => Self::reference(engine, input, i)?,
                _ => Self::text(engine, input, i)?,
            };
            match next {
                Some(n) => i = n,
                None => return Ok((i, Step::NeedMore)),
            }
        }
    }

    /// Text from `i` up to the next markup or reference (or a piece of it).
    fn text(engine: &mut Engine, input: Input<'_>, i: usize) -> Result<Option<usize>, XmlError> {
        let Input { buf, base, eof } = input;
        let rest = &buf[i..];
        // Indentation between tags is most of an iCloud listing's text: a run of whitespace
        // up to a tag is found in one pass and skipped when the engine would drop it anyway.
        let ws = rest.iter().position(|&b| !is_ws(b)).unwrap_or(rest.len());
        if let (Some(b'<'), Some(&next)) = (rest.get(ws), rest.get(ws + 1)) {
            let tag = next != b'!' && next != b'?';
            if tag && engine.drops_whitespace_before(next == b'/') {
                return Ok(Some(i + ws));
            }
        }
        let end = match memchr::memchr2(b'<', b'&', &rest[ws..]) {
            Some(k) => i + ws + k,
            None if eof => buf.len(),
            None if rest.len() >= TEXT_PIECE => i + char_boundary(rest),
            None => return Ok(None),
        };
        if end == i {
            return Ok(None);
        }
        let raw = &buf[i..end];
        engine.text(raw, base + end as u64)?;
        Ok(Some(end))
    }

    /// A reference `&name;` at `i`.
    fn reference(
        engine: &mut Engine,
        input: Input<'_>,
        i: usize,
    ) -> Result<Option<usize>, XmlError> {
        let Input { buf, base, eof } = input;
        let unclosed = || {
            XmlError::from_quick(
                QuickError::IllFormed(IllFormedError::UnclosedReference),
                base + i as u64,
            )
        };
        match memchr::memchr3(b';', b'&', b'<', &buf[i + 1..]) {
            Some(k) if buf[i + 1 + k] == b';' => {
                let end = i + 1 + k + 1;
                engine.general_ref(&buf[i + 1..end - 1], base + end as u64)?;
                Ok(Some(end))
            }
            Some(_) => Err(unclosed()),
            None if eof || buf.len() - i > DELEGATE_LIMIT => Err(unclosed()),
            None => Ok(None),
        }
    }

    /// Markup starting with `<` at `i`.
    fn markup(
        &mut self,
        engine: &mut Engine,
        map: &dyn HrefMap,
        input: Input<'_>,
        i: usize,
    ) -> Result<Option<usize>, XmlError> {
        let buf = input.buf;
        match buf.get(i + 1) {
            None => self.delegate(engine, map, input, i),
            Some(b'/') => self.end_tag(engine, map, input, i),
            Some(b'!' | b'?') => self.delegate(engine, map, input, i),
            Some(_) => self.start_tag(engine, map, input, i),
        }
    }

    fn start_tag(
        &mut self,
        engine: &mut Engine,
        map: &dyn HrefMap,
        input: Input<'_>,
        i: usize,
    ) -> Result<Option<usize>, XmlError> {
        let Input { buf, base, eof } = input;
        let from = i + 1;
        self.ranges.clear();
        if self.seen.is_empty() {
            self.seen.resize_with(SEEN_SETS * SEEN_WAYS, Seen::default);
            self.recent.resize(SEEN_SETS, 0);
        }
        let set = seen_set(buf, from);
        // The byte before a remembered tag's `>` rules most other tags of its set out before
        // the whole comparison.
        let known = |seen: &Seen| {
            let n = seen.bytes.len();
            n >= 2
                && buf.get(from + n - 2) == seen.bytes.get(n - 2)
                && buf[from..].starts_with(&seen.bytes)
        };
        let way = (0..SEEN_WAYS).find(|&w| known(&self.seen[set * SEEN_WAYS + w]));
        let hit = way.is_some();
        // A hit is the set's most recent way; a miss takes the place of the least recent one.
        let way = way.unwrap_or((self.recent[set] as usize + 1) % SEEN_WAYS);
        self.recent[set] = way as u8;
        let slot = set * SEEN_WAYS + way;
        let seen = &mut self.seen[slot];
        if let (true, Some(c)) = (hit, &mut seen.compiled) {
            let (name_end, close, empty) = (
                from + seen.name_end,
                from + seen.bytes.len() - 1,
                seen.empty,
            );
            let name = &buf[from..name_end];
            if engine.start_compiled(c, name, empty, base + close as u64 + 1)? {
                if !empty {
                    self.open(name);
                }
                return Ok(Some(close + 1));
            }
        }
        let seen = &mut self.seen[slot];
        let plain = if hit {
            let shift = |r: &std::ops::Range<usize>| r.start + from..r.end + from;
            self.ranges.extend(seen.ranges.iter().map(|r| AttrRange {
                key: shift(&r.key),
                value: shift(&r.value),
            }));
            Plain::Tag {
                name_end: from + seen.name_end,
                close: from + seen.bytes.len() - 1,
                empty: seen.empty,
            }
        } else {
            let plain = plain_tag(buf, from, &mut self.ranges);
            if let Plain::Tag {
                name_end,
                close,
                empty,
            } = plain
            {
                if close + 1 - from <= SEEN_MAX {
                    seen.bytes.clear();
                    seen.bytes.extend_from_slice(&buf[from..=close]);
                    seen.name_end = name_end - from;
                    seen.empty = empty;
                    seen.ranges.clear();
                    let unshift = |r: &std::ops::Range<usize>| r.start - from..r.end - from;
                    seen.ranges.extend(self.ranges.iter().map(|r| AttrRange {
                        key: unshift(&r.key),
                        value: unshift(&r.value),
                    }));
                    seen.compiled = Compiled::of(&buf[from..name_end], buf, &self.ranges);
                }
            }
            plain
        };
        match plain {
            Plain::Tag {
                name_end,
                close,
                empty,
            } => {
                let name = &buf[i + 1..name_end];
                if !empty {
                    self.open(name);
                }
                let at = base + close as u64 + 1;
                engine.start_parsed(name, buf, &self.ranges, empty, at)?;
                return Ok(Some(close + 1));
            }
            Plain::TooMany { at } => {
                return Err(guard::too_much(
                    base + at as u64,
                    "too many attributes on one element",
                    guard::MAX_ATTRIBUTES as u64,
                ))
            }
            Plain::Incomplete if !eof && buf.len() - i <= DELEGATE_LIMIT => return Ok(None),
            Plain::Incomplete | Plain::Irregular => {}
        }
        let Some(close) = tag_end(buf, i + 1) else {
            return self.delegate(engine, map, input, i);
        };
        let content = &buf[i + 1..close];
        let (content, empty) = match content.strip_suffix(b"/") {
            Some(c) => (c, true),
            None => (content, false),
        };
        let n = name_len(content);
        // quick-xml's own attribute parser decides.
        let Ok(text) = std::str::from_utf8(content) else {
            // quick-xml reads names and attributes as bytes; let it.
            return self.delegate(engine, map, input, i);
        };
        if !empty {
            self.open(&content[..n]);
        }
        engine.start(
            &BytesStart::from_content(text, n),
            empty,
            base + close as u64 + 1,
        )?;
        Ok(Some(close + 1))
    }

    /// Remembers the raw name of an element that was opened.
    fn open(&mut self, name: &[u8]) {
        self.starts.push(self.names.len());
        self.names.extend_from_slice(name);
    }

    fn end_tag(
        &mut self,
        engine: &mut Engine,
        map: &dyn HrefMap,
        input: Input<'_>,
        i: usize,
    ) -> Result<Option<usize>, XmlError> {
        let Input { buf, base, .. } = input;
        // `</name>` directly; anything else as quick-xml reads it (it skips quoted runs in
        // end tags too).
        // Mostly the name of the open element, which is compared whole: then it is closed
        // at once.
        let expected = self.starts.last().map_or(&[][..], |&s| &self.names[s..]);
        let close = i + 2 + expected.len();
        if let (Some(&start), Some(b'>')) = (self.starts.last(), buf.get(close)) {
            if buf[i + 2..].starts_with(expected) {
                self.starts.pop();
                self.names.truncate(start);
                engine.end(map, base + close as u64 + 1)?;
                return Ok(Some(close + 1));
            }
        }
        let k = if buf[i + 2..].starts_with(expected) {
            i + 2 + expected.len()
        } else {
            let mut k = i + 2;
            while k < buf.len() && is_name_byte(buf[k]) {
                k += 1;
            }
            k
        };
        let close = if buf.get(k) == Some(&b'>') {
            k
        } else {
            match tag_end(buf, i + 2) {
                Some(close) => close,
                None => return self.delegate(engine, map, input, i),
            }
        };
        let content = &buf[i + 2..close];
        let name = match content
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            Some(last) => &content[..=last],
            None => content,
        };
        let show = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap_or_default();
        let at = base + i as u64;
        let Some(start) = self.starts.pop() else {
            let err = IllFormedError::UnmatchedEndTag(show(name));
            return Err(XmlError::from_quick(QuickError::IllFormed(err), at));
        };
        if &self.names[start..] != name {
            let err = IllFormedError::MismatchedEndTag {
                expected: show(&self.names[start..]),
                found: show(name),
            };
            return Err(XmlError::from_quick(QuickError::IllFormed(err), at));
        }
        self.names.truncate(start);
        engine.end(map, base + close as u64 + 1)?;
        Ok(Some(close + 1))
    }

    /// Lets quick-xml read the one markup token at `i` (a fresh reader is enough: the token
    /// does not depend on what came before, and end tags never come here).
    fn delegate(
        &mut self,
        engine: &mut Engine,
        map: &dyn HrefMap,
        input: Input<'_>,
        i: usize,
    ) -> Result<Option<usize>, XmlError> {
        let Input { buf, base, eof } = input;
        let slice = &buf[i..];
        let mut reader = Reader::from_reader(slice);
        match reader.read_event() {
            Ok(event) => {
                let end = i + reader.buffer_position() as usize;
                if let Event::Start(e) = &event {
                    self.open(e.name().as_ref());
                }
                engine.handle(event, map, base + end as u64)?;
                Ok(Some(end))
            }
            Err(_) if !eof && slice.len() <= DELEGATE_LIMIT => Ok(None),
            Err(e) => Err(XmlError::from_quick(
                e,
                base + i as u64 + reader.error_position(),
            )),
        }
    }
}
