//! Inspection of client request bodies (PROPFIND, REPORT, MKCALENDAR, …): what the client asks
//! for, without rewriting anything.

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

use super::error::XmlError;
use super::escape::{is_ws, resolve_ref};
use super::guard::{self, Items, Scope};
use super::names::{CALDAV, DAV};
use super::MAX_DEPTH;

/// Which properties a PROPFIND or REPORT asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PropRequest {
    /// No `DAV:prop`, `DAV:allprop` or `DAV:propname` child of the root element.
    #[default]
    None,
    /// `<allprop/>` (any `<include>` is ignored).
    AllProp,
    /// `<propname/>`.
    PropName,
    /// `<prop>` with these `(namespace, local name)` children, in document order.
    Props(Vec<(String, String)>),
}

/// What a client's request body contains.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    /// Root element as `(namespace, local name)`, e.g. `("DAV:", "propfind")`; the namespace is
    /// `""` for an element in no namespace.
    pub root: (String, String),
    /// The property request (direct `DAV:prop` / `allprop` / `propname` child of the root).
    pub props: PropRequest,
    /// Text of a `DAV:sync-token` child of the root (trimmed; `Some("")` if present but empty).
    pub sync_token: Option<String>,
    /// Text of a `DAV:sync-level` child of the root (trimmed).
    pub sync_level: Option<String>,
    /// `name` attributes of `CALDAV:comp` elements inside a
    /// `CALDAV:supported-calendar-component-set` (MKCALENDAR, extended MKCOL, PROPPATCH).
    pub components: Vec<String>,
    /// All `DAV:href` texts (trimmed, unescaped), in document order.
    pub hrefs: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Href,
    SyncToken,
    SyncLevel,
}

/// Parses a request body held in memory.
///
/// An empty or whitespace-only body gives [`XmlError::Empty`] (for PROPFIND the caller should
/// treat that as `allprop`, RFC 4918 §9.1); anything that is not a single well-formed,
/// namespace-well-formed element gives [`XmlError::Malformed`] (answer `400`). Whitespace and a
/// byte-order mark before `<?xml` are accepted.
pub fn inspect(body: &[u8]) -> Result<RequestInfo, XmlError> {
    let trimmed = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if is_ws(trimmed) {
        return Err(XmlError::Empty);
    }
    let mut reader = NsReader::from_reader(body);
    let mut walk = Walk::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::from_quick(e, reader.error_position()))?;
        let pos = reader.buffer_position();
        match event {
            Event::Start(ref e) => walk.open(&reader, e, pos)?,
            Event::Empty(ref e) => {
                walk.open(&reader, e, pos)?;
                walk.close();
            }
            Event::End(_) => walk.close(),
            Event::Text(t) => walk.text(&t, pos)?,
            Event::CData(t) => walk.cdata(&t, pos)?,
            Event::GeneralRef(r) => walk.reference(&r, pos)?,
            Event::Decl(_) if walk.prolog_used => {
                return Err(XmlError::malformed(pos, "XML declaration not at the start"));
            }
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => walk.prolog_used = true,
            Event::DocType(_) => {
                return Err(XmlError::malformed(
                    pos,
                    "DOCTYPE declarations are not allowed",
                ));
            }
            Event::Eof => return walk.end_of_body(pos),
        }
    }
}

/// The state of one pass over a request body: what was found so far and where we are.
struct Walk {
    info: RequestInfo,
    /// Open elements as `(namespace, local name)`, root first.
    stack: Vec<(String, String)>,
    /// Text being collected: depth of its element, what it is, the text so far.
    capture: Option<(usize, Target, String)>,
    /// Something other than whitespace (declaration, comment, PI, element) has been seen.
    prolog_used: bool,
    root_done: bool,
    /// Namespace declarations per open element (NsReader scans those in scope for every
    /// name), and the document's markup items: both bounded, see `guard`.
    scope: Scope,
}

impl Walk {
    /// A walk at the start of a body, with the request-body cap on markup items.
    fn new() -> Self {
        Walk {
            info: RequestInfo::default(),
            stack: Vec::new(),
            capture: None,
            prolog_used: false,
            root_done: false,
            scope: Scope::new(Items::capped(guard::MAX_REQUEST_ITEMS)),
        }
    }

    /// A start tag (or the start of an empty element): checks depth and the single root,
    /// resolves its name and records what it means.
    #[inline]
    fn open(
        &mut self,
        reader: &NsReader<&[u8]>,
        e: &BytesStart<'_>,
        pos: u64,
    ) -> Result<(), XmlError> {
        if self.root_done {
            return Err(XmlError::malformed(pos, "more than one root element"));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(XmlError::TooDeep {
                position: pos,
                limit: MAX_DEPTH,
            });
        }
        self.scope.open(e, pos)?;
        let (res, local) = reader.resolve_element(e.name());
        let ns = namespace(res, pos)?;
        let local = String::from_utf8(local.into_inner().to_vec())
            .map_err(|_| XmlError::malformed(pos, "element name is not valid UTF-8"))?;
        self.prolog_used = true;
        self.capture = None; // text with child elements is not an href/token
        self.stack.push((ns, local));
        if let Some(target) = element(&mut self.info, &self.stack, e, pos)? {
            self.capture = Some((self.stack.len(), target, String::new()));
        }
        Ok(())
    }

    /// An end tag (or the end of an empty element): stores captured text, leaves the element.
    #[inline]
    fn close(&mut self) {
        finish(&mut self.info, &mut self.capture, self.stack.len());
        self.stack.pop();
        self.scope.close();
        self.root_done = self.stack.is_empty();
    }

    /// Character data: only whitespace outside the root; collected if captured.
    #[inline]
    fn text(&mut self, raw: &[u8], pos: u64) -> Result<(), XmlError> {
        if self.stack.is_empty() && !is_ws(raw) {
            return Err(XmlError::malformed(pos, "text outside the root element"));
        }
        self.collect(raw, pos)
    }

    /// A CDATA section: only inside the root; collected if captured.
    #[inline]
    fn cdata(&mut self, raw: &[u8], pos: u64) -> Result<(), XmlError> {
        if self.stack.is_empty() {
            return Err(XmlError::malformed(pos, "CDATA outside the root element"));
        }
        self.collect(raw, pos)
    }

    /// Appends text to the capture, if one is open.
    #[inline]
    fn collect(&mut self, raw: &[u8], pos: u64) -> Result<(), XmlError> {
        if let Some((_, _, text)) = self.capture.as_mut() {
            text.push_str(utf8(raw, pos)?);
        }
        Ok(())
    }

    /// A character or predefined entity reference: only inside the root; collected if captured.
    #[inline]
    fn reference(&mut self, name: &[u8], pos: u64) -> Result<(), XmlError> {
        let c = resolve_ref(name)
            .filter(|_| !self.stack.is_empty())
            .ok_or_else(|| {
                XmlError::malformed(
                    pos,
                    format!(
                        "undefined or misplaced reference '&{};'",
                        String::from_utf8_lossy(name)
                    ),
                )
            })?;
        if let Some((_, _, text)) = self.capture.as_mut() {
            text.push(c);
        }
        Ok(())
    }

    /// The end of the body: every element closed and a root seen, or malformed.
    fn end_of_body(self, pos: u64) -> Result<RequestInfo, XmlError> {
        if let Some((_, local)) = self.stack.last() {
            return Err(XmlError::malformed(
                pos,
                format!("unexpected end of body inside <{local}>"),
            ));
        }
        if self.info.root.1.is_empty() {
            return Err(XmlError::malformed(pos, "no root element"));
        }
        Ok(self.info)
    }
}

fn utf8(raw: &[u8], pos: u64) -> Result<&str, XmlError> {
    std::str::from_utf8(raw).map_err(|_| XmlError::malformed(pos, "text is not valid UTF-8"))
}

fn namespace(res: ResolveResult<'_>, pos: u64) -> Result<String, XmlError> {
    match res {
        ResolveResult::Unbound => Ok(String::new()),
        ResolveResult::Bound(ns) => String::from_utf8(ns.0.to_vec())
            .map_err(|_| XmlError::malformed(pos, "namespace is not valid UTF-8")),
        ResolveResult::Unknown(p) => Err(XmlError::malformed(
            pos,
            format!(
                "undefined namespace prefix '{}'",
                String::from_utf8_lossy(&p)
            ),
        )),
    }
}

/// Records what a newly opened element (last on `stack`) means; returns the text to capture.
fn element(
    info: &mut RequestInfo,
    stack: &[(String, String)],
    e: &BytesStart<'_>,
    pos: u64,
) -> Result<Option<Target>, XmlError> {
    let Some((ns, local)) = stack.last() else {
        return Ok(None);
    };
    let depth = stack.len();
    if depth == 1 {
        info.root = (ns.clone(), local.clone());
        return Ok(None);
    }
    let is_dav = ns == DAV;
    if depth == 3 && stack[1].0 == DAV && stack[1].1 == "prop" {
        if let PropRequest::Props(props) = &mut info.props {
            props.push((ns.clone(), local.clone()));
        }
    }
    if depth == 2 && is_dav {
        match local.as_str() {
            "prop" => info.props = PropRequest::Props(Vec::new()),
            "allprop" => info.props = PropRequest::AllProp,
            "propname" => info.props = PropRequest::PropName,
            "sync-token" => return Ok(Some(Target::SyncToken)),
            "sync-level" => return Ok(Some(Target::SyncLevel)),
            _ => {}
        }
    }
    if is_dav && local == "href" {
        return Ok(Some(Target::Href));
    }
    let in_comp_set = stack[..depth - 1]
        .iter()
        .any(|(n, l)| n == CALDAV && l == "supported-calendar-component-set");
    if ns == CALDAV && local == "comp" && in_comp_set {
        // Checked for count and duplicates already (`count_attributes`).
        for attr in e.attributes().with_checks(false) {
            let attr = attr.map_err(|err| XmlError::malformed(pos, err.to_string()))?;
            if attr.key.as_ref() == b"name" {
                let value = utf8(&attr.value, pos)?;
                let value = decode_attr(value)
                    .ok_or_else(|| XmlError::malformed(pos, "bad reference in comp name"))?;
                info.components.push(value.trim().to_string());
            }
        }
    }
    Ok(None)
}

/// Resolves references in an attribute value.
fn decode_attr(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let end = rest[i..].find(';')? + i;
        out.push(resolve_ref(&rest.as_bytes()[i + 1..end])?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Ends the element at `depth`, storing captured text if it belonged to it.
fn finish(info: &mut RequestInfo, capture: &mut Option<(usize, Target, String)>, depth: usize) {
    let Some((at, target, text)) = capture.take() else {
        return;
    };
    if at != depth {
        return;
    }
    let text = text
        .trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
        .to_string();
    match target {
        Target::Href => info.hrefs.push(text),
        Target::SyncToken => info.sync_token = Some(text),
        Target::SyncLevel => info.sync_level = Some(text),
    }
}
