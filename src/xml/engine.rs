//! The event-by-event core of the href rewriter, shared by the in-memory and streaming drivers.

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesDecl, BytesStart, Event};
use quick_xml::name::{PrefixDeclaration, QName};

use super::error::XmlError;
use super::escape::{is_ncname, push_raw_attr, push_text};
use super::guard::{self, Items};
use super::names::{self, CALDAV_PREFIX, CARDDAV_PREFIX, DAV_PREFIX};
use super::rewrite::HrefMap;
use super::MAX_DEPTH;

mod ns;
mod text;

use ns::{Generated, Ns, Prefix, Scopes};

/// The declaration every output document starts with.
pub(super) const OUTPUT_DECL: &[u8] = b"<?xml version=\"1.0\" encoding=\"utf-8\"?>";
/// Longest href text accepted (bytes); longer is [`XmlError::TooLarge`].
const HREF_LIMIT: usize = 64 * 1024;
/// Longest calendar-data / address-data text handed to [`HrefMap::body_text`]; longer text is
/// passed through unmapped instead of being buffered.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// An attribute: its qualified name and its raw (still escaped) value.
pub(super) type Pair<'a> = (QName<'a>, &'a [u8]);

/// Where an attribute's name and raw value are in a tag's attribute text.
#[derive(Debug, Clone)]
pub(super) struct AttrRange {
    pub(super) key: std::ops::Range<usize>,
    pub(super) value: std::ops::Range<usize>,
}

/// The local names whose elements the engine treats apart (in the right namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Href,
    CalendarData,
    AddressData,
    Response,
    Other,
}

impl Kind {
    fn of(local: &[u8]) -> Kind {
        match local {
            b"href" => Kind::Href,
            b"calendar-data" => Kind::CalendarData,
            b"address-data" => Kind::AddressData,
            b"response" => Kind::Response,
            _ => Kind::Other,
        }
    }
}

/// A start tag checked once, for the scanner to hand on again whenever the same bytes recur
/// (a listing repeats a few tags thousands of times): unprefixed, with unprefixed attributes
/// and at most a default-namespace declaration of a [known](names::KNOWN) namespace.
/// [`Engine::start_compiled`] gives it the checks and output [`Engine::start_parsed`] would.
#[derive(Debug, Clone)]
pub(super) struct Compiled {
    /// `xmlns="…"` on the tag: the namespace and its output prefix.
    decl: Option<(&'static str, &'static str)>,
    /// The ordinary attributes as written out (` name="value"` each).
    attrs: Vec<u8>,
    /// How many attributes the tag has (declaration included).
    count: usize,
    /// Which of the names the engine treats apart it has, namespace aside.
    kind: Kind,
    /// The tag as last written: with this output prefix, its qname and its whole start tag
    /// (`<d:name attrs>`, or `…/>` when empty).
    written: Option<(&'static str, Vec<u8>, Vec<u8>)>,
}

impl Compiled {
    /// The tag named `name` whose attributes are at `ranges` in `raw`, if it is plain enough
    /// for [`Engine::start_compiled`]; anything else keeps taking the full path.
    pub(super) fn of(name: &[u8], raw: &[u8], ranges: &[AttrRange]) -> Option<Compiled> {
        if name.contains(&b':') || !is_ncname(name) || ranges.len() > guard::MAX_ATTRIBUTES {
            return None;
        }
        let mut decl = None;
        let mut attrs = Vec::new();
        let mut keys: Vec<&[u8]> = Vec::new();
        for r in ranges {
            let (key, value) = (&raw[r.key.clone()], &raw[r.value.clone()]);
            if key == b"xmlns" {
                if decl.is_some() {
                    return None;
                }
                decl = Some(names::known(value)?);
                continue;
            }
            if key.contains(&b':') || key.starts_with(b"xmlns") || !is_ncname(key) {
                return None;
            }
            if keys.contains(&key) {
                return None;
            }
            keys.push(key);
            attrs.push(b' ');
            attrs.extend_from_slice(key);
            attrs.extend_from_slice(b"=\"");
            push_raw_attr(&mut attrs, value).ok()?;
            attrs.push(b'"');
        }
        Some(Compiled {
            decl,
            attrs,
            count: ranges.len(),
            kind: Kind::of(name),
            written: None,
        })
    }

    /// The qname and the start tag of the element named `local` under output `prefix`
    /// (kept from the last time; a tag without its own declaration may meet another prefix).
    fn written(&mut self, prefix: &'static str, local: &[u8], empty: bool) -> (&[u8], &[u8]) {
        if self.written.as_ref().is_none_or(|w| w.0 != prefix) {
            let mut qname = Vec::with_capacity(prefix.len() + 1 + local.len());
            qname.extend_from_slice(prefix.as_bytes());
            qname.push(b':');
            qname.extend_from_slice(local);
            let mut start = Vec::with_capacity(qname.len() + self.attrs.len() + 3);
            start.push(b'<');
            start.extend_from_slice(&qname);
            start.extend_from_slice(&self.attrs);
            start.extend_from_slice(if empty { b"/>" } else { b">" });
            self.written = Some((prefix, qname, start));
        }
        match &self.written {
            Some((_, qname, start)) => (qname, start),
            None => (&[], &[]),
        }
    }
}

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

/// Rewriter state; output accumulates in `out`, which the driver drains.
pub(super) struct Engine {
    pub(super) out: Vec<u8>,
    /// Start offsets into `names` of each open element's output qname.
    open: Vec<usize>,
    names: Vec<u8>,
    /// Namespace declarations of the input in scope.
    scopes: Scopes,
    /// Generated output prefixes in scope.
    generated: Generated,
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
    /// The `DAV:response` being written, held back until its first href says whether the
    /// map wants it (see [`HrefMap::keep_response`]).
    resp: Option<Held>,
    /// Elements and attributes seen, against the cap for client bodies.
    items: Items,
}

/// A `DAV:response` whose output starts at `start` in `out`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) start: usize,
    decided: bool,
    drop: bool,
}

fn malformed(position: u64, message: impl Into<String>) -> XmlError {
    XmlError::malformed(position, message)
}

fn utf8(raw: &[u8], position: u64) -> Result<&str, XmlError> {
    std::str::from_utf8(raw).map_err(|_| malformed(position, "text is not valid UTF-8"))
}

/// The namespace of a (possibly prefixed) name; unprefixed attributes have none.
fn resolve<'s>(
    scopes: &'s Scopes,
    name: QName<'_>,
    attribute: bool,
    position: u64,
) -> Result<Option<Ns<'s>>, XmlError> {
    let prefix = name.prefix().map(|p| p.into_inner());
    if attribute && prefix.is_none() {
        return Ok(None);
    }
    scopes.resolve(prefix).map_err(|()| {
        let prefix = String::from_utf8_lossy(prefix.unwrap_or_default());
        malformed(position, format!("undefined namespace prefix '{prefix}'"))
    })
}

/// Which text an element's content is for the map: an href, calendar or address data, or none.
#[inline]
fn mapped_text(ns: Option<Ns<'_>>, local: &[u8]) -> Capture {
    let Some(ns) = ns.and_then(|ns| ns.known) else {
        return Capture::None;
    };
    if ns == DAV_PREFIX && local == b"href" {
        Capture::Href
    } else if (ns == CALDAV_PREFIX && local == b"calendar-data")
        || (ns == CARDDAV_PREFIX && local == b"address-data")
    {
        Capture::Body
    } else {
        Capture::None
    }
}

impl Engine {
    pub(super) fn new(capacity: usize, items: Items) -> Self {
        Engine {
            items,
            out: Vec::with_capacity(capacity),
            open: Vec::new(),
            names: Vec::new(),
            scopes: Scopes::default(),
            generated: Generated::default(),
            prolog_used: false,
            root_seen: false,
            root_done: false,
            pending_ws: Vec::new(),
            significant: false,
            leaf: false,
            capture: Capture::None,
            cap_text: String::new(),
            cap_cr_ref: false,
            resp: None,
        }
    }

    /// How many bytes of `out` may be handed on now (a response whose fate is not yet known,
    /// or that will be dropped, stays behind).
    pub(super) fn flushable(&self) -> usize {
        match self.resp {
            Some(h) if !h.decided || h.drop => h.start,
            _ => self.out.len(),
        }
    }

    /// The first `n` bytes of output were handed on.
    pub(super) fn consumed(&mut self, n: usize) {
        if let Some(h) = self.resp.as_mut() {
            h.start = h.start.saturating_sub(n);
        }
    }

    /// Processes one event that ended at input byte `pos`.
    pub(super) fn handle(
        &mut self,
        event: Event<'_>,
        map: &dyn HrefMap,
        pos: u64,
    ) -> Result<Flow, XmlError> {
        match event {
            Event::Start(e) => self.start(&e, false, pos)?,
            Event::Empty(e) => self.start(&e, true, pos)?,
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
            return Err(malformed(
                pos,
                "XML declaration is only allowed at the start of the document",
            ));
        }
        self.prolog_used = true;
        if let Some(enc) = d.encoding() {
            let enc = enc.map_err(|e| malformed(pos, e.to_string()))?;
            let enc = enc.to_ascii_lowercase();
            if !matches!(enc.as_slice(), b"utf-8" | b"utf8" | b"us-ascii" | b"ascii") {
                return Err(malformed(
                    pos,
                    format!(
                        "unsupported encoding '{}' (only UTF-8 is accepted)",
                        String::from_utf8_lossy(&enc)
                    ),
                ));
            }
        }
        Ok(())
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

    /// Writes the declaration of generated prefix `index`.
    fn declare(
        out: &mut Vec<u8>,
        generated: &Generated,
        index: usize,
        pos: u64,
    ) -> Result<(), XmlError> {
        out.extend_from_slice(b" xmlns:x");
        out.extend_from_slice(index.to_string().as_bytes());
        out.extend_from_slice(b"=\"");
        push_raw_attr(out, generated.namespace(index)).map_err(|m| malformed(pos, m))?;
        out.push(b'"');
        Ok(())
    }

    /// A start tag or empty element: checks it, writes it with its attributes, opens its scope.
    pub(super) fn start(
        &mut self,
        e: &BytesStart<'_>,
        empty: bool,
        pos: u64,
    ) -> Result<(), XmlError> {
        let depth = self.begin_element(pos)?;
        let attrs = self.declarations(e, depth, pos)?;
        let pairs: Vec<Pair<'_>> = attrs.iter().map(|a| (a.key, a.value.as_ref())).collect();
        self.element(e.name(), &pairs, empty, depth, pos)
    }

    /// A start tag whose attributes the scanner already split into (name, raw value) pairs:
    /// the same checks, in the same order, as [`Engine::start`] makes.
    pub(super) fn start_parsed(
        &mut self,
        name: &[u8],
        raw: &[u8],
        attrs: &[AttrRange],
        empty: bool,
        pos: u64,
    ) -> Result<(), XmlError> {
        let depth = self.begin_element(pos)?;
        let mut others: Vec<Pair<'_>> = Vec::new();
        for (i, range) in attrs.iter().enumerate() {
            let key = QName(&raw[range.key.clone()]);
            let value = &raw[range.value.clone()];
            self.count_attribute(i + 1, pos)?;
            if !self.declare_binding(key, value, depth, pos)? {
                others.push((key, value));
            }
        }
        self.element(QName(name), &others, empty, depth, pos)
    }

    /// A start tag [`Compiled`] before, named `name` (its local name: it has no prefix): the
    /// checks, scope and output [`Engine::start_parsed`] would give it, in the same order,
    /// without reading its attributes again. `false`, with nothing done, when its namespace
    /// is not a known one in scope (or the root is still to come): the full path then decides.
    pub(super) fn start_compiled(
        &mut self,
        c: &mut Compiled,
        name: &[u8],
        empty: bool,
        pos: u64,
    ) -> Result<bool, XmlError> {
        if !self.root_seen {
            return Ok(false);
        }
        let prefix = match c.decl {
            Some((_, prefix)) => prefix,
            None => match self.scopes.resolve(None) {
                Ok(Some(Ns {
                    known: Some(prefix),
                    ..
                })) => prefix,
                _ => return Ok(false),
            },
        };
        let depth = self.begin_element(pos)?;
        if c.count > 0 {
            self.items.add(c.count, pos)?;
        }
        if let Some(known) = c.decl {
            self.scopes.declare_known(known, depth);
            guard::check_bindings(self.scopes.len(), pos)?;
        }
        // As `mapped_text` and `element` decide, from the name's kind found once.
        let mapped = match c.kind {
            Kind::Href if prefix == DAV_PREFIX => Capture::Href,
            Kind::CalendarData if prefix == CALDAV_PREFIX => Capture::Body,
            Kind::AddressData if prefix == CARDDAV_PREFIX => Capture::Body,
            _ => Capture::None,
        };
        if c.kind == Kind::Response && depth == 2 && !empty && prefix == DAV_PREFIX {
            self.hold_response();
        }
        // What `write_start_name`, the attributes and `close_empty` / `keep_open` write, in
        // one piece.
        let (qname, start) = c.written(prefix, name, empty);
        self.out.extend_from_slice(start);
        if empty {
            self.pop_scopes(depth);
            self.leaf = false;
        } else {
            self.open.push(self.names.len());
            self.names.extend_from_slice(qname);
            self.leaf = true;
            self.capture = mapped;
        }
        Ok(true)
    }

    /// The rest of a start tag once its namespace declarations are in scope: its name, its
    /// other attributes, and whether it opens a held response or a mapped text.
    fn element(
        &mut self,
        name: QName<'_>,
        attrs: &[Pair<'_>],
        empty: bool,
        depth: usize,
        pos: u64,
    ) -> Result<(), XmlError> {
        let ns = resolve(&self.scopes, name, false, pos)?;
        let local = name.local_name().into_inner();
        if !is_ncname(local) {
            return Err(malformed(
                pos,
                format!("invalid element name '{}'", String::from_utf8_lossy(local)),
            ));
        }
        let mapped = mapped_text(ns, local);
        let holds = depth == 2
            && !empty
            && ns.and_then(|ns| ns.known) == Some(DAV_PREFIX)
            && local == b"response";
        let prefix = self.generated.prefix(ns, depth);
        self.begin_document();
        if holds {
            self.hold_response();
        }
        let name_start = self.write_start_name(&prefix, local, depth, pos)?;
        if !attrs.is_empty() {
            self.attributes(attrs, depth, pos)?;
        }
        if empty {
            self.close_empty(name_start, depth);
        } else {
            self.keep_open(name_start, mapped);
        }
        Ok(())
    }

    /// Checks the single root and the depth limit, ends the text run before a child element
    /// and counts the element; returns the new element's depth.
    #[inline]
    fn begin_element(&mut self, pos: u64) -> Result<usize, XmlError> {
        if self.root_done {
            return Err(malformed(
                pos,
                "content after the end of the root element (more than one root?)",
            ));
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
        self.items.add(1, pos)?;
        Ok(depth)
    }

    /// One pass over the attributes: records namespace declarations in scope at `depth` and
    /// returns the other attributes.
    #[inline]
    fn declarations<'e>(
        &mut self,
        e: &'e BytesStart<'_>,
        depth: usize,
        pos: u64,
    ) -> Result<Vec<Attribute<'e>>, XmlError> {
        let mut attrs: Vec<Attribute<'e>> = Vec::new();
        if !e.attributes_raw().contains(&b'=') {
            return Ok(attrs);
        }
        // Raw-name duplicates are caught by the expanded-name check in `attributes`;
        // duplicate namespace declarations are dropped from the output anyway. quick-xml's
        // own duplicate check compares every pair; ours is linear (see `guard`).
        for (i, attr) in e.attributes().with_checks(false).enumerate() {
            self.count_attribute(i + 1, pos)?;
            let attr = attr.map_err(|err| malformed(pos, err.to_string()))?;
            if !self.declare_binding(attr.key, &attr.value, depth, pos)? {
                attrs.push(attr);
            }
        }
        Ok(attrs)
    }

    /// Counts the `n`th attribute of an element against the per-element and per-document caps.
    #[inline]
    fn count_attribute(&mut self, n: usize, pos: u64) -> Result<(), XmlError> {
        guard::check_attribute_count(n, pos)?;
        self.items.add(1, pos)
    }

    /// Puts `key="value"` in scope at `depth` if it is a namespace declaration (`true`);
    /// `false` for an ordinary attribute.
    #[inline]
    fn declare_binding(
        &mut self,
        key: QName<'_>,
        value: &[u8],
        depth: usize,
        pos: u64,
    ) -> Result<bool, XmlError> {
        let prefix: &[u8] = match key.as_namespace_binding() {
            None => return Ok(false),
            Some(PrefixDeclaration::Default) => b"",
            Some(PrefixDeclaration::Named(p)) => p,
        };
        self.scopes
            .declare(prefix, value, depth)
            .map_err(|m| malformed(pos, m))?;
        guard::check_bindings(self.scopes.len(), pos)?;
        Ok(true)
    }

    /// Before the root's start tag: marks the prolog over and writes the output declaration.
    #[inline]
    fn begin_document(&mut self) {
        if !self.root_seen {
            self.root_seen = true;
            self.prolog_used = true;
            self.out.extend_from_slice(OUTPUT_DECL);
        }
    }

    /// Holds back the `DAV:response` starting here until its first href decides its fate.
    #[inline]
    fn hold_response(&mut self) {
        self.resp = Some(Held {
            start: self.out.len(),
            decided: false,
            drop: false,
        });
    }

    /// Writes `<qname` (with the known declarations on the root and a fresh generated prefix's
    /// declaration); returns where the qname starts in `names`.
    #[inline]
    fn write_start_name(
        &mut self,
        prefix: &Prefix,
        local: &[u8],
        depth: usize,
        pos: u64,
    ) -> Result<usize, XmlError> {
        let name_start = self.names.len();
        let fresh = Self::push_qname(&mut self.names, prefix, local);
        self.out.push(b'<');
        self.out.extend_from_slice(&self.names[name_start..]);
        if depth == 1 {
            self.out.extend_from_slice(names::KNOWN_DECLS.as_bytes());
        }
        if let Some(index) = fresh {
            Self::declare(&mut self.out, &self.generated, index, pos)?;
        }
        Ok(name_start)
    }

    /// Ends an empty element at once: `/>`, and its name and scope are dropped.
    #[inline]
    fn close_empty(&mut self, name_start: usize, depth: usize) {
        self.out.extend_from_slice(b"/>");
        self.names.truncate(name_start);
        self.pop_scopes(depth);
        self.leaf = false;
        if depth == 1 {
            self.root_done = true;
        }
    }

    /// Leaves an element open (`>`), collecting its text if it is a mapped element.
    #[inline]
    fn keep_open(&mut self, name_start: usize, mapped: Capture) {
        self.out.push(b'>');
        self.open.push(name_start);
        self.leaf = true;
        self.capture = mapped;
    }

    fn attributes(&mut self, attrs: &[Pair<'_>], depth: usize, pos: u64) -> Result<(), XmlError> {
        let mut names: Vec<(Option<&[u8]>, &[u8])> = Vec::with_capacity(attrs.len());
        for &(key, _) in attrs {
            let ns = resolve(&self.scopes, key, true, pos)?;
            names.push((ns.map(|ns| ns.uri), key.local_name().into_inner()));
        }
        if let Some((_, local)) = guard::first_duplicate(&names) {
            return Err(malformed(
                pos,
                format!("duplicate attribute '{}'", String::from_utf8_lossy(local)),
            ));
        }
        for &(key, value) in attrs {
            let ns = resolve(&self.scopes, key, true, pos)?;
            let local = key.local_name().into_inner();
            if !is_ncname(local) {
                return Err(malformed(
                    pos,
                    format!(
                        "invalid attribute name '{}'",
                        String::from_utf8_lossy(local)
                    ),
                ));
            }
            let prefix = self.generated.prefix(ns, depth);
            if let Prefix::Generated { index, fresh: true } = prefix {
                Self::declare(&mut self.out, &self.generated, index, pos)?;
            }
            self.out.push(b' ');
            Self::push_qname(&mut self.out, &prefix, local);
            self.out.extend_from_slice(b"=\"");
            push_raw_attr(&mut self.out, value).map_err(|m| malformed(pos, m))?;
            self.out.push(b'"');
        }
        Ok(())
    }

    /// Leaves the scope of an element at `depth`.
    fn pop_scopes(&mut self, depth: usize) {
        self.scopes.pop(depth);
        self.generated.pop(depth);
    }

    pub(super) fn end(&mut self, map: &dyn HrefMap, pos: u64) -> Result<(), XmlError> {
        let depth = self.open.len();
        let Some(name_start) = self.open.pop() else {
            return Err(malformed(pos, "end tag without a matching start tag"));
        };
        match self.capture {
            Capture::Href => {
                // The parent element's output qname (e.g. `d:current-user-principal`) tells
                // the map what the href names.
                let parent_start = self.open.last().copied().unwrap_or(name_start);
                let parent =
                    std::str::from_utf8(&self.names[parent_start..name_start]).unwrap_or("");
                let text = self
                    .cap_text
                    .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
                let mapped = map.href_in(parent, text);
                let href = mapped.as_deref().unwrap_or(text);
                push_text(&mut self.out, href, self.cap_cr_ref);
                // The first href directly inside a response decides whether it is kept.
                if let Some(h) = self.resp.as_mut() {
                    if !h.decided && depth == 3 {
                        h.decided = true;
                        h.drop = !map.keep_response(href);
                    }
                }
                self.cap_text.clear();
                self.end_capture();
            }
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
        self.pop_scopes(depth);
        if depth == 2 {
            if let Some(h) = self.resp.take() {
                if h.drop {
                    self.out.truncate(h.start);
                }
            }
        }
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
