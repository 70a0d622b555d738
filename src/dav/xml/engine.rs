//! The event-by-event core of the href rewriter, shared by the in-memory and streaming drivers.

use quick_xml::events::{BytesDecl, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::error::XmlError;
use super::escape::{is_ncname, push_raw_attr};
use super::names::{self, CALDAV, CARDDAV, DAV};
use super::rewrite::HrefMap;
use super::MAX_DEPTH;

mod text;

/// The declaration every output document starts with.
pub(super) const OUTPUT_DECL: &[u8] = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>";
/// Longest href text accepted (bytes); longer is [`XmlError::TooLarge`].
const HREF_LIMIT: usize = 64 * 1024;
/// Longest calendar-data / address-data text handed to [`HrefMap::body_text`]; longer text is
/// passed through unmapped instead of being buffered.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Whether the driver should keep reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    Done,
}

/// Which mapped element's text is being collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    Href,
    Body,
}

/// How an element or attribute name is prefixed in the output.
enum Prefix {
    None,
    Fixed(&'static str),
    /// Generated `x{index}`; `fresh` means it must be declared on this element.
    Generated { index: usize, fresh: bool },
}

/// Rewriter state; output accumulates in `out`, which the driver drains.
pub(super) struct Engine {
    pub(super) out: Vec<u8>,
    /// Start offsets into `names` of each open element's output qname.
    open: Vec<usize>,
    names: Vec<u8>,
    /// Generated prefix bindings in scope: (start, end) in `gen_ns`, depth declared at.
    generated: Vec<(usize, usize, usize)>,
    gen_ns: Vec<u8>,
    /// Something other than whitespace (declaration, comment, PI, root) has been seen.
    prolog_used: bool,
    root_seen: bool,
    root_done: bool,
    /// Output bytes of the current run while it is whitespace-only (literal whitespace, CDATA
    /// whitespace, whitespace character references), kept until we know whether it matters.
    pending_ws: Vec<u8>,
    /// The current text run has non-whitespace content and is being written through.
    significant: bool,
    /// The last markup was a start tag, so the current run is the element's whole content.
    leaf: bool,
    capture: Capture,
    cap_text: String,
    /// A CR arrived as `&#13;` in the captured text; write CRs back as references.
    cap_cr_ref: bool,
}

fn malformed(position: u64, message: impl Into<String>) -> XmlError {
    XmlError::malformed(position, message)
}

fn utf8(raw: &[u8], position: u64) -> Result<&str, XmlError> {
    std::str::from_utf8(raw).map_err(|_| malformed(position, "text is not valid UTF-8"))
}

fn resolved<'r>(res: ResolveResult<'r>, position: u64) -> Result<Option<&'r [u8]>, XmlError> {
    match res {
        ResolveResult::Unbound => Ok(None),
        ResolveResult::Bound(ns) if ns.0.is_empty() => Ok(None),
        ResolveResult::Bound(ns) => Ok(Some(ns.0)),
        ResolveResult::Unknown(p) => Err(malformed(
            position,
            format!("undefined namespace prefix '{}'", String::from_utf8_lossy(&p)),
        )),
    }
}

impl Engine {
    pub(super) fn new(capacity: usize) -> Self {
        Engine {
            out: Vec::with_capacity(capacity),
            open: Vec::new(),
            names: Vec::new(),
            generated: Vec::new(),
            gen_ns: Vec::new(),
            prolog_used: false,
            root_seen: false,
            root_done: false,
            pending_ws: Vec::new(),
            significant: false,
            leaf: false,
            capture: Capture::None,
            cap_text: String::new(),
            cap_cr_ref: false,
        }
    }

    /// Processes one event. `reader` must be the reader that produced it (for name resolution).
    pub(super) fn handle<R>(
        &mut self,
        reader: &NsReader<R>,
        event: Event<'_>,
        map: &dyn HrefMap,
    ) -> Result<Flow, XmlError> {
        let pos = reader.buffer_position();
        match event {
            Event::Start(e) => self.start(reader, &e, false, pos)?,
            Event::Empty(e) => self.start(reader, &e, true, pos)?,
            Event::End(_) => self.end(map, pos)?,
            Event::Text(t) => self.text(&t, pos)?,
            Event::CData(c) => self.cdata(&c, pos)?,
            Event::GeneralRef(r) => self.general_ref(&r, pos)?,
            Event::Decl(d) => self.decl(&d, pos)?,
            Event::DocType(_) => {
                return Err(malformed(pos, "DOCTYPE declarations are not allowed"));
            }
            Event::Comment(_) | Event::PI(_) => self.prolog_used = true,
            Event::Eof => {
                self.eof(pos)?;
                return Ok(Flow::Done);
            }
        }
        Ok(Flow::Continue)
    }

    fn decl(&mut self, d: &BytesDecl<'_>, pos: u64) -> Result<(), XmlError> {
        if self.prolog_used || self.root_seen {
            return Err(malformed(pos, "XML declaration is only allowed at the start of the document"));
        }
        self.prolog_used = true;
        if let Some(enc) = d.encoding() {
            let enc = enc.map_err(|e| malformed(pos, e.to_string()))?;
            let enc = enc.to_ascii_lowercase();
            if !matches!(enc.as_slice(), b"utf-8" | b"utf8" | b"us-ascii" | b"ascii") {
                return Err(malformed(
                    pos,
                    format!("unsupported encoding '{}' (only UTF-8 is accepted)", String::from_utf8_lossy(&enc)),
                ));
            }
        }
        Ok(())
    }

    /// The output prefix for namespace `ns` of a name on an element at `depth`.
    fn prefix(&mut self, ns: Option<&[u8]>, depth: usize) -> Prefix {
        let Some(ns) = ns else { return Prefix::None };
        if let Some(p) = names::known_prefix(ns) {
            return Prefix::Fixed(p);
        }
        if ns == names::XML.as_bytes() {
            return Prefix::Fixed("xml");
        }
        let found = self
            .generated
            .iter()
            .rposition(|&(s, e, _)| &self.gen_ns[s..e] == ns);
        if let Some(index) = found {
            return Prefix::Generated { index, fresh: false };
        }
        let start = self.gen_ns.len();
        self.gen_ns.extend_from_slice(ns);
        self.generated.push((start, self.gen_ns.len(), depth));
        Prefix::Generated {
            index: self.generated.len() - 1,
            fresh: true,
        }
    }

    /// Writes `prefix:local` into `names` (element) or `out` (attribute), returning whether a
    /// fresh generated prefix needs declaring.
    fn push_qname(buf: &mut Vec<u8>, prefix: &Prefix, local: &[u8]) -> Option<usize> {
        let fresh = match *prefix {
            Prefix::None => None,
            Prefix::Fixed(p) => {
                buf.extend_from_slice(p.as_bytes());
                buf.push(b':');
                None
            }
            Prefix::Generated { index, fresh } => {
                buf.push(b'x');
                buf.extend_from_slice(index.to_string().as_bytes());
                buf.push(b':');
                fresh.then_some(index)
            }
        };
        buf.extend_from_slice(local);
        fresh
    }

    fn declare(&mut self, index: usize, pos: u64) -> Result<(), XmlError> {
        let Some(&(s, e, _)) = self.generated.get(index) else {
            return Ok(());
        };
        self.out.extend_from_slice(b" xmlns:x");
        self.out.extend_from_slice(index.to_string().as_bytes());
        self.out.extend_from_slice(b"=\"");
        push_raw_attr(&mut self.out, &self.gen_ns[s..e]).map_err(|m| malformed(pos, m))?;
        self.out.push(b'"');
        Ok(())
    }

    fn start<R>(
        &mut self,
        reader: &NsReader<R>,
        e: &BytesStart<'_>,
        empty: bool,
        pos: u64,
    ) -> Result<(), XmlError> {
        if self.root_done {
            return Err(malformed(pos, "content after the end of the root element (more than one root?)"));
        }
        let depth = self.open.len() + 1;
        if depth > MAX_DEPTH {
            return Err(XmlError::TooDeep {
                position: pos,
                limit: MAX_DEPTH,
            });
        }
        if self.capture != Capture::None {
            self.abort_capture();
        }
        self.pending_ws.clear();
        self.significant = false;

        let (res, local) = reader.resolve_element(e.name());
        let ns = resolved(res, pos)?;
        let local = local.into_inner();
        if !is_ncname(local) {
            return Err(malformed(
                pos,
                format!("invalid element name '{}'", String::from_utf8_lossy(local)),
            ));
        }
        if !self.root_seen {
            self.root_seen = true;
            self.prolog_used = true;
            self.out.extend_from_slice(OUTPUT_DECL);
        }
        let prefix = self.prefix(ns, depth);
        let name_start = self.names.len();
        let fresh = Self::push_qname(&mut self.names, &prefix, local);
        self.out.push(b'<');
        self.out.extend_from_slice(&self.names[name_start..]);
        if depth == 1 {
            self.out.extend_from_slice(names::KNOWN_DECLS.as_bytes());
        }
        if let Some(index) = fresh {
            self.declare(index, pos)?;
        }
        self.attributes(reader, e, depth, pos)?;

        if empty {
            self.out.extend_from_slice(b"/>");
            self.names.truncate(name_start);
            self.pop_generated(depth);
            self.leaf = false;
            if depth == 1 {
                self.root_done = true;
            }
        } else {
            self.out.push(b'>');
            self.open.push(name_start);
            self.leaf = true;
            let is = |uri: &str, name: &[u8]| ns == Some(uri.as_bytes()) && local == name;
            if is(DAV, b"href") {
                self.capture = Capture::Href;
            } else if is(CALDAV, b"calendar-data") || is(CARDDAV, b"address-data") {
                self.capture = Capture::Body;
            }
        }
        Ok(())
    }

    fn attributes<R>(
        &mut self,
        reader: &NsReader<R>,
        e: &BytesStart<'_>,
        depth: usize,
        pos: u64,
    ) -> Result<(), XmlError> {
        if !e.attributes_raw().contains(&b'=') {
            return Ok(());
        }
        let mut seen: Vec<(Option<&[u8]>, &[u8])> = Vec::new();
        // Raw-name duplicate checks are skipped: expanded names are checked below, and
        // duplicate namespace declarations are dropped from the output anyway.
        for attr in e.attributes().with_checks(false) {
            let attr = attr.map_err(|err| malformed(pos, err.to_string()))?;
            if attr.key.as_namespace_binding().is_some() {
                continue;
            }
            let (res, local) = reader.resolve_attribute(attr.key);
            let ns = resolved(res, pos)?;
            let local = local.into_inner();
            if !is_ncname(local) {
                return Err(malformed(
                    pos,
                    format!("invalid attribute name '{}'", String::from_utf8_lossy(local)),
                ));
            }
            if seen.contains(&(ns, local)) {
                return Err(malformed(
                    pos,
                    format!("duplicate attribute '{}'", String::from_utf8_lossy(local)),
                ));
            }
            seen.push((ns, local));
            let prefix = self.prefix(ns, depth);
            if let Prefix::Generated { index, fresh: true } = prefix {
                self.declare(index, pos)?;
            }
            self.out.push(b' ');
            Self::push_qname(&mut self.out, &prefix, local);
            self.out.extend_from_slice(b"=\"");
            push_raw_attr(&mut self.out, &attr.value).map_err(|m| malformed(pos, m))?;
            self.out.push(b'"');
        }
        Ok(())
    }

    fn pop_generated(&mut self, depth: usize) {
        while let Some(&(s, _, d)) = self.generated.last() {
            if d < depth {
                break;
            }
            self.generated.pop();
            self.gen_ns.truncate(s);
        }
    }

    fn end(&mut self, map: &dyn HrefMap, pos: u64) -> Result<(), XmlError> {
        let depth = self.open.len();
        let Some(name_start) = self.open.pop() else {
            return Err(malformed(pos, "end tag without a matching start tag"));
        };
        match self.capture {
            Capture::Href => self.finish_href(map),
            Capture::Body => self.finish_body(map),
            Capture::None => {
                if self.leaf && !self.significant {
                    self.out.extend_from_slice(&self.pending_ws);
                }
            }
        }
        self.pending_ws.clear();
        self.significant = false;
        self.leaf = false;
        self.out.extend_from_slice(b"</");
        self.out.extend_from_slice(&self.names[name_start..]);
        self.out.push(b'>');
        self.names.truncate(name_start);
        self.pop_generated(depth);
        if self.open.is_empty() {
            self.root_done = true;
        }
        Ok(())
    }

    fn eof(&mut self, pos: u64) -> Result<(), XmlError> {
        if let Some(&start) = self.open.last() {
            let name = String::from_utf8_lossy(&self.names[start..]).into_owned();
            return Err(malformed(
                pos,
                format!(
                    "unexpected end of document inside <{name}> ({} element(s) not closed)",
                    self.open.len()
                ),
            ));
        }
        if !self.root_seen {
            return Err(malformed(pos, "empty document: no root element"));
        }
        Ok(())
    }
}
