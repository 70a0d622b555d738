//! Request-body XML: a tiny namespace-resolved DOM built with quick-xml, and helpers.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::NsReader;

pub const DAV: &str = "DAV:";
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
pub const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
pub const CS: &str = "http://calendarserver.org/ns/";
pub const ICAL: &str = "http://apple.com/ns/ical/";

/// A resolved element.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Elem {
    pub ns: String,
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Elem>,
    pub text: String,
}

impl Elem {
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }

    pub fn child(&self, ns: &str, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.is(ns, name))
    }

    pub fn children_named<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Elem> + 'a {
        self.children.iter().filter(move |c| c.is(ns, name))
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn entity(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

fn ns_of(r: &ResolveResult<'_>) -> String {
    match r {
        ResolveResult::Bound(ns) => String::from_utf8_lossy(ns.as_ref()).into_owned(),
        _ => String::new(),
    }
}

/// Parse a body into its root element. `None` for malformed XML or an empty body.
pub fn parse(body: &[u8]) -> Option<Elem> {
    let mut reader = NsReader::from_reader(body);
    let mut stack: Vec<Elem> = Vec::new();
    let mut root: Option<Elem> = None;
    loop {
        let (res, ev) = reader.read_resolved_event().ok()?;
        let ns = ns_of(&res);
        match ev {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return None;
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let mut attrs = Vec::new();
                for a in e.attributes().flatten() {
                    let k = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
                    if a.key.as_ref().starts_with(b"xmlns") {
                        continue;
                    }
                    let v = a.unescape_value().ok()?.into_owned();
                    attrs.push((k, v));
                }
                let el = Elem {
                    ns,
                    name,
                    attrs,
                    ..Elem::default()
                };
                if matches!(ev, Event::Empty(_)) {
                    match stack.last_mut() {
                        Some(p) => p.children.push(el),
                        None => root = Some(el),
                    }
                } else {
                    stack.push(el);
                }
            }
            Event::End(_) => {
                let el = stack.pop()?;
                match stack.last_mut() {
                    Some(p) => p.children.push(el),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml_content().ok()?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t.into_inner()));
                }
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    let c = match r.resolve_char_ref().ok()? {
                        Some(c) => c,
                        None => entity(&r.decode().ok()?)?,
                    };
                    top.text.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !stack.is_empty() {
        return None;
    }
    root
}

/// A requested property name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PropName {
    pub ns: String,
    pub name: String,
}

impl PropName {
    pub fn new(ns: &str, name: &str) -> PropName {
        PropName {
            ns: ns.to_string(),
            name: name.to_string(),
        }
    }

    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.ns == ns && self.name == name
    }
}

/// What a PROPFIND (or REPORT) asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum PropRequest {
    AllProp,
    PropName,
    Props(Vec<PropName>),
}

/// The `<prop>` (or allprop/propname) directly under `el`.
pub fn prop_request(el: &Elem) -> PropRequest {
    if el.child(DAV, "allprop").is_some() {
        return PropRequest::AllProp;
    }
    if el.child(DAV, "propname").is_some() {
        return PropRequest::PropName;
    }
    match el.child(DAV, "prop") {
        Some(p) => PropRequest::Props(
            p.children
                .iter()
                .map(|c| PropName::new(&c.ns, &c.name))
                .collect(),
        ),
        None => PropRequest::AllProp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_and_text() {
        let x = br#"<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><D:x>a &amp; b<![CDATA[<c>]]>&#65;</D:x></D:propfind>"#;
        let r = parse(x).unwrap();
        assert!(r.is(DAV, "propfind"));
        match prop_request(&r) {
            PropRequest::Props(p) => {
                assert_eq!(p.len(), 2);
                assert!(p[1].is(CALDAV, "calendar-data"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.child(DAV, "x").unwrap().text, "a & b<c>A");
        assert!(parse(b"<a><b></a>").is_none());
        assert!(parse(b"").is_none());
    }
}
