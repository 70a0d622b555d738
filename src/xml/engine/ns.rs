//! Input-side namespace scopes (the `xmlns` declarations in force) and output-side generated
//! prefixes (`x0`, `x1`… for namespaces without a preferred prefix).

use crate::xml::names::{self, XML};

const XMLNS: &[u8] = b"http://www.w3.org/2000/xmlns/";

/// One input binding: `buf[start..start + prefix_len]` is the prefix (empty = default
/// namespace), the following `ns_len` bytes the namespace (none are stored for a
/// [known](names::KNOWN) namespace, which is `known`'s); declared on an element at `depth`.
struct Binding {
    start: usize,
    prefix_len: usize,
    ns_len: usize,
    depth: usize,
    /// The namespace and its output prefix when it is a [known](names::KNOWN) one.
    known: Option<(&'static str, &'static str)>,
}

/// A resolved namespace: its (raw) URI, and its fixed output prefix if it has one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ns<'s> {
    pub(super) uri: &'s [u8],
    pub(super) known: Option<&'static str>,
}

/// The namespace bindings declared in the input, innermost last.
#[derive(Default)]
pub(super) struct Scopes {
    buf: Vec<u8>,
    bindings: Vec<Binding>,
}

impl Scopes {
    /// Records `xmlns:prefix="ns"` (`prefix` empty for `xmlns="ns"`) on an element at `depth`.
    pub(super) fn declare(&mut self, prefix: &[u8], ns: &[u8], depth: usize) -> Result<(), String> {
        let show = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if prefix == b"xml" {
            return if ns == XML.as_bytes() {
                Ok(())
            } else {
                Err(format!(
                    "the prefix 'xml' cannot be bound to '{}'",
                    show(ns)
                ))
            };
        }
        if prefix == b"xmlns" {
            return Err("the prefix 'xmlns' cannot be declared".into());
        }
        if ns == XML.as_bytes() || ns == XMLNS {
            return Err(format!("the namespace '{}' is reserved", show(ns)));
        }
        if !prefix.is_empty() && ns.is_empty() {
            return Err(format!(
                "prefix '{}' bound to an empty namespace",
                show(prefix)
            ));
        }
        // iCloud declares a known namespace on nearly every element: it is not copied.
        let known = names::known(ns);
        let start = self.buf.len();
        if !prefix.is_empty() {
            self.buf.extend_from_slice(prefix);
        }
        if known.is_none() {
            self.buf.extend_from_slice(ns);
        }
        self.bindings.push(Binding {
            start,
            prefix_len: prefix.len(),
            ns_len: if known.is_none() { ns.len() } else { 0 },
            depth,
            known,
        });
        Ok(())
    }

    /// Records `xmlns="ns"` of a [known](names::KNOWN) namespace (which passes every check
    /// [`Scopes::declare`] makes) on an element at `depth`.
    pub(super) fn declare_known(&mut self, known: (&'static str, &'static str), depth: usize) {
        self.bindings.push(Binding {
            start: self.buf.len(),
            prefix_len: 0,
            ns_len: 0,
            depth,
            known: Some(known),
        });
    }

    /// Namespace of an element name with this prefix (`None` prefix: the default namespace).
    /// `Ok(None)` = no namespace; `Err(())` = undeclared prefix.
    #[inline]
    pub(super) fn resolve(&self, prefix: Option<&[u8]>) -> Result<Option<Ns<'_>>, ()> {
        let prefix = prefix.unwrap_or(b"");
        if prefix == b"xml" {
            return Ok(Some(Ns {
                uri: XML.as_bytes(),
                known: Some("xml"),
            }));
        }
        // Lengths first: most names are unprefixed or share a short prefix, and a call to
        // memcmp per binding is most of the cost otherwise.
        for b in self.bindings.iter().rev() {
            if b.prefix_len == prefix.len()
                && (prefix.is_empty() || &self.buf[b.start..b.start + b.prefix_len] == prefix)
            {
                if let Some((uri, prefix)) = b.known {
                    return Ok(Some(Ns {
                        uri: uri.as_bytes(),
                        known: Some(prefix),
                    }));
                }
                let uri = &self.buf[b.start + b.prefix_len..b.start + b.prefix_len + b.ns_len];
                return Ok((!uri.is_empty()).then_some(Ns { uri, known: None }));
            }
        }
        if prefix.is_empty() {
            Ok(None)
        } else {
            Err(())
        }
    }

    /// How many bindings are in scope.
    pub(super) fn len(&self) -> usize {
        self.bindings.len()
    }

    /// Drops the bindings of elements at `depth` and deeper.
    pub(super) fn pop(&mut self, depth: usize) {
        while let Some(b) = self.bindings.last() {
            if b.depth < depth {
                break;
            }
            self.buf.truncate(b.start);
            self.bindings.pop();
        }
    }
}

/// How an element or attribute name is prefixed in the output.
pub(super) enum Prefix {
    None,
    Fixed(&'static str),
    /// Generated `x{index}`; `fresh` means it must be declared on this element.
    Generated {
        index: usize,
        fresh: bool,
    },
}

/// Output-side generated prefixes in scope: `(start, end)` of the namespace in `ns`, and the
/// depth of the element that declares it. Prefix `x{i}` is entry `i`, so names stay unique.
#[derive(Default)]
pub(super) struct Generated {
    entries: Vec<(usize, usize, usize)>,
    ns: Vec<u8>,
}

impl Generated {
    /// The output prefix for namespace `ns` used on an element at `depth`.
    pub(super) fn prefix(&mut self, ns: Option<Ns<'_>>, depth: usize) -> Prefix {
        let Some(ns) = ns else { return Prefix::None };
        if let Some(p) = ns.known {
            return Prefix::Fixed(p);
        }
        let ns = ns.uri;
        let found = self
            .entries
            .iter()
            .rposition(|&(s, e, _)| &self.ns[s..e] == ns);
        if let Some(index) = found {
            return Prefix::Generated {
                index,
                fresh: false,
            };
        }
        let start = self.ns.len();
        self.ns.extend_from_slice(ns);
        self.entries.push((start, self.ns.len(), depth));
        Prefix::Generated {
            index: self.entries.len() - 1,
            fresh: true,
        }
    }

    /// The (raw, still escaped) namespace of generated prefix `index`.
    pub(super) fn namespace(&self, index: usize) -> &[u8] {
        self.entries
            .get(index)
            .map_or(&[][..], |&(s, e, _)| &self.ns[s..e])
    }

    /// Drops prefixes declared on elements at `depth` and deeper.
    pub(super) fn pop(&mut self, depth: usize) {
        while let Some(&(s, _, d)) = self.entries.last() {
            if d < depth {
                break;
            }
            self.entries.pop();
            self.ns.truncate(s);
        }
    }
}
