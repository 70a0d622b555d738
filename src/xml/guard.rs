//! Limits that keep every XML reader of the bridge linear in its input: attributes per element
//! (each checked for duplicates in constant time), namespace declarations in scope (every
//! prefix lookup scans them), and, for client request bodies, the markup items of a document.
//! A DAV document needs a handful of each; a hostile one gets a clear error long before it
//! could hold a worker thread.

use std::collections::HashSet;

use super::error::XmlError;

/// Attributes (namespace declarations included) on one element. DAV elements carry one or
/// two (`name`, `xmlns`); Apple's redeclare a namespace or two per element. 256 is far above
/// anything a client or iCloud writes and keeps the per-element work small.
pub const MAX_ATTRIBUTES: usize = 256;
/// Namespace declarations in scope at once (every prefix lookup scans them). Real documents
/// have under ten; nested redeclarations of the same few namespaces stay far below this.
pub const MAX_BINDINGS: usize = 128;
/// Markup items (elements plus attributes) in one client request body. Clients send
/// multigets in batches of tens to hundreds of hrefs (two items each); 100,000 leaves room
/// for 50,000 in one body while a body built to make work is refused after a fraction of it.
pub const MAX_REQUEST_ITEMS: u64 = 100_000;
/// Above this many attributes on an element, duplicates are found with a hash set instead of
/// comparing pairs.
const PAIRWISE_UP_TO: usize = 8;

/// The refusal for a document over one of the limits.
pub fn too_much(position: u64, what: &'static str, limit: u64) -> XmlError {
    XmlError::TooMuchMarkup {
        position,
        what,
        limit,
    }
}

/// Counts markup items against an optional cap.
#[derive(Debug, Default)]
pub struct Items {
    seen: u64,
    cap: Option<u64>,
}

impl Items {
    /// No cap (upstream answers: linear anyway, and bounded by their size and time).
    pub fn unbounded() -> Items {
        Items::default()
    }

    /// At most `cap` items (client request bodies).
    pub fn capped(cap: u64) -> Items {
        Items {
            seen: 0,
            cap: Some(cap),
        }
    }

    /// Count `n` more items seen at `position`.
    pub fn add(&mut self, n: usize, position: u64) -> Result<(), XmlError> {
        self.seen = self.seen.saturating_add(n as u64);
        match self.cap {
            Some(cap) if self.seen > cap => {
                Err(too_much(position, "too many elements and attributes", cap))
            }
            _ => Ok(()),
        }
    }
}

/// Refuse an element with more than [`MAX_ATTRIBUTES`] attributes.
pub fn check_attribute_count(n: usize, position: u64) -> Result<(), XmlError> {
    if n > MAX_ATTRIBUTES {
        Err(too_much(
            position,
            "too many attributes on one element",
            MAX_ATTRIBUTES as u64,
        ))
    } else {
        Ok(())
    }
}

/// Refuse a document with more than [`MAX_BINDINGS`] namespace declarations in scope.
pub fn check_bindings(in_scope: usize, position: u64) -> Result<(), XmlError> {
    if in_scope > MAX_BINDINGS {
        Err(too_much(
            position,
            "too many namespace declarations in scope",
            MAX_BINDINGS as u64,
        ))
    } else {
        Ok(())
    }
}

/// Whether `keys` (at most [`MAX_ATTRIBUTES`], each an expanded or raw name) has a
/// duplicate: pairwise for the usual few, a hash set beyond.
pub fn first_duplicate<K: Eq + std::hash::Hash + Copy>(keys: &[K]) -> Option<K> {
    if keys.len() <= PAIRWISE_UP_TO {
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].contains(k) {
                return Some(*k);
            }
        }
        return None;
    }
    let mut seen = HashSet::with_capacity(keys.len());
    keys.iter().find(|k| !seen.insert(**k)).copied()
}

/// Count an element and its attributes against the limits; the number of namespace
/// declarations among them. Duplicates are found in linear time (quick-xml's own check
/// compares every pair).
pub fn element(
    e: &quick_xml::events::BytesStart<'_>,
    pos: u64,
    items: &mut Items,
) -> Result<usize, XmlError> {
    items.add(1, pos)?;
    if !e.attributes_raw().contains(&b'=') {
        return Ok(0);
    }
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut declared = 0;
    for attr in e.attributes().with_checks(false) {
        let attr = attr.map_err(|err| XmlError::malformed(pos, err.to_string()))?;
        check_attribute_count(keys.len() + 1, pos)?;
        items.add(1, pos)?;
        if attr.key.as_namespace_binding().is_some() {
            declared += 1;
        }
        keys.push(attr.key.into_inner());
    }
    if let Some(k) = first_duplicate(&keys) {
        return Err(XmlError::malformed(
            pos,
            format!("duplicate attribute '{}'", String::from_utf8_lossy(k)),
        ));
    }
    Ok(declared)
}

/// Namespace declarations in scope for a reader that resolves names itself (quick-xml's
/// `NsReader`): call [`Scope::open`] for every start tag and [`Scope::close`] for every end.
#[derive(Debug, Default)]
pub struct Scope {
    per_element: Vec<usize>,
    in_scope: usize,
    items: Items,
}

impl Scope {
    /// For a document with at most `items` elements and attributes (`None`: unbounded).
    pub fn new(items: Items) -> Scope {
        Scope {
            per_element: Vec::new(),
            in_scope: 0,
            items,
        }
    }

    /// A start tag (or an empty element, then also call [`Scope::close`]).
    pub fn open(
        &mut self,
        e: &quick_xml::events::BytesStart<'_>,
        pos: u64,
    ) -> Result<(), XmlError> {
        let declared = element(e, pos, &mut self.items)?;
        self.in_scope += declared;
        self.per_element.push(declared);
        check_bindings(self.in_scope, pos)
    }

    /// An end tag.
    pub fn close(&mut self) {
        self.in_scope = self
            .in_scope
            .saturating_sub(self.per_element.pop().unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_found_both_ways() {
        assert_eq!(first_duplicate::<u32>(&[]), None);
        assert_eq!(first_duplicate(&[1, 2, 3]), None);
        assert_eq!(first_duplicate(&[1, 2, 1]), Some(1));
        let many: Vec<u32> = (0..200).collect();
        assert_eq!(first_duplicate(&many), None);
        let mut dup = many.clone();
        dup.push(150);
        assert_eq!(first_duplicate(&dup), Some(150));
    }

    #[test]
    fn caps_refuse_with_a_sentence() {
        assert!(check_attribute_count(MAX_ATTRIBUTES, 0).is_ok());
        let e = check_attribute_count(MAX_ATTRIBUTES + 1, 7).unwrap_err();
        assert!(e.to_string().contains("too many attributes"), "{e}");
        assert!(check_bindings(MAX_BINDINGS + 1, 0).is_err());
        let mut items = Items::capped(3);
        items.add(3, 0).unwrap();
        assert!(items
            .add(1, 9)
            .unwrap_err()
            .to_string()
            .contains("at byte 9"));
        let mut free = Items::unbounded();
        free.add(usize::MAX, 0).unwrap();
    }
}
