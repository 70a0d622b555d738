//! Builders for the XML the bridge writes itself (multistatus, DAV:error), in the same
//! normalised style as the rewriter's output.

use std::fmt::Write;

use super::escape::is_ncname;
pub use super::escape::{escape_attr, escape_text};
use super::names::{self, BRIDGE, BRIDGE_PREFIX, DAV};

const DECL: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>";

/// Writes `<prefix:local` (plus an inline declaration for namespaces outside
/// [`names::KNOWN`]) and returns the qualified name for the end tag, or `None` (nothing
/// written) if `local` is not a valid XML name.
fn open(out: &mut String, ns: &str, local: &str) -> Option<String> {
    if !is_ncname(local.as_bytes()) {
        tracing::warn!(ns, local, "skipping property with an invalid XML name");
        return None;
    }
    let qname = match names::known_prefix(ns.as_bytes()) {
        Some(prefix) => format!("{prefix}:{local}"),
        None if ns.is_empty() => local.to_string(),
        None => {
            let prefix = if ns == BRIDGE { BRIDGE_PREFIX } else { "x0" };
            let qname = format!("{prefix}:{local}");
            let _ = write!(out, "<{qname} xmlns:{prefix}=\"{}\"", escape_attr(ns));
            return Some(qname);
        }
    };
    out.push('<');
    out.push_str(&qname);
    Some(qname)
}

/// Writes one element with pre-built inner XML (`""` gives an empty element).
fn element(out: &mut String, ns: &str, local: &str, inner: &str) {
    let Some(qname) = open(out, ns, local) else {
        return;
    };
    if inner.is_empty() {
        out.push_str("/>");
    } else {
        let _ = write!(out, ">{inner}</{qname}>");
    }
}

/// A `DAV:multistatus` document built response by response.
#[derive(Debug, Clone)]
pub struct MultistatusBuilder {
    out: String,
}

impl Default for MultistatusBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl MultistatusBuilder {
    /// Starts a multistatus with the six known namespaces declared on the root.
    pub fn new() -> Self {
        let mut out = String::with_capacity(1024);
        out.push_str(DECL);
        out.push_str("<d:multistatus");
        out.push_str(names::KNOWN_DECLS);
        out.push('>');
        MultistatusBuilder { out }
    }

    /// One `<response>`: `href` (already a path; escaped here), found props as
    /// `(ns, local, inner_xml)` where `inner_xml` is pre-built XML using the standard prefixes
    /// (e.g. `"<d:href>/dav/alice/</d:href>"`) or empty for an empty element, and missing props
    /// `(ns, local)` that go into a `404` propstat. With neither, an empty `200` propstat is
    /// written so the response stays valid.
    pub fn response(
        &mut self,
        href: &str,
        found: &[(&str, &str, String)],
        missing: &[(&str, &str)],
    ) {
        let out = &mut self.out;
        let _ = write!(out, "<d:response><d:href>{}</d:href>", escape_text(href));
        if !found.is_empty() || missing.is_empty() {
            out.push_str("<d:propstat><d:prop>");
            for (ns, local, inner) in found {
                element(out, ns, local, inner);
            }
            out.push_str("</d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>");
        }
        if !missing.is_empty() {
            out.push_str("<d:propstat><d:prop>");
            for (ns, local) in missing {
                element(out, ns, local, "");
            }
            out.push_str("</d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat>");
        }
        out.push_str("</d:response>");
    }

    /// A `<response>` with only a status, e.g. a multiget href that does not exist
    /// (`404 Not Found`) or a sync-collection removal.
    pub fn response_status(&mut self, href: &str, status: http::StatusCode) {
        let _ = write!(
            self.out,
            "<d:response><d:href>{}</d:href><d:status>HTTP/1.1 {} {}</d:status></d:response>",
            escape_text(href),
            status.as_u16(),
            escape_text(status.canonical_reason().unwrap_or("")),
        );
    }

    /// The `DAV:sync-token` of a sync-collection report (call after the last response).
    pub fn sync_token(&mut self, token: &str) {
        let _ = write!(
            self.out,
            "<d:sync-token>{}</d:sync-token>",
            escape_text(token)
        );
    }

    /// Closes the document.
    pub fn finish(mut self) -> String {
        self.out.push_str("</d:multistatus>");
        self.out
    }
}

/// A `DAV:error` body (RFC 4918 §16): the precondition element `(ns, local)` and a human
/// sentence in an `ib:message` element of the bridge's namespace ([`BRIDGE`]), which clients
/// that don't know it ignore.
pub fn error_body(condition: Option<(&str, &str)>, message: &str) -> String {
    let mut out = String::with_capacity(256 + message.len());
    out.push_str(DECL);
    out.push_str("<d:error xmlns:d=\"DAV:\"");
    if let Some((ns, _)) = condition {
        if let Some(prefix) = names::known_prefix(ns.as_bytes()).filter(|_| ns != DAV) {
            let _ = write!(out, " xmlns:{prefix}=\"{ns}\"");
        }
    }
    out.push('>');
    if let Some((ns, local)) = condition {
        element(&mut out, ns, local, "");
    }
    let _ = write!(
        out,
        "<{BRIDGE_PREFIX}:message xmlns:{BRIDGE_PREFIX}=\"{BRIDGE}\">{}</{BRIDGE_PREFIX}:message></d:error>",
        escape_text(message)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::super::inspect::inspect;
    use super::super::names::{CALDAV, CALSERVER};
    use super::super::rewrite::{rewrite_to_vec, Identity};
    use super::*;

    #[test]
    fn multistatus() {
        let mut b = MultistatusBuilder::new();
        b.response(
            "/dav/alice/a&b <c>/",
            &[
                (
                    DAV,
                    "current-user-principal",
                    "<d:href>/dav/alice/</d:href>".into(),
                ),
                (DAV, "resourcetype", String::new()),
                ("urn:other", "thing", "x &amp; y".into()),
            ],
            &[(CALSERVER, "getctag"), ("", "plain"), ("DAV:", "bad name")],
        );
        b.response("/dav/alice/empty/", &[], &[]);
        b.response_status("/dav/alice/gone.ics", http::StatusCode::NOT_FOUND);
        b.sync_token("http://bridge/sync/1");
        let xml = b.finish();
        assert!(xml.contains("<d:response><d:href>/dav/alice/a&amp;b &lt;c&gt;/</d:href><d:propstat><d:prop>\
<d:current-user-principal><d:href>/dav/alice/</d:href></d:current-user-principal><d:resourcetype/>\
<x0:thing xmlns:x0=\"urn:other\">x &amp; y</x0:thing></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>\
<d:propstat><d:prop><cs:getctag/><plain/></d:prop><d:status>HTTP/1.1 404 Not Found</d:status></d:propstat></d:response>"), "{xml}");
        assert!(
            xml.contains("<d:status>HTTP/1.1 404 Not Found</d:status></d:response><d:sync-token>")
        );
        // Well-formed, and already in normalised form.
        let again = rewrite_to_vec(xml.as_bytes(), &Identity).unwrap();
        assert_eq!(String::from_utf8(again).unwrap(), xml);
        assert_eq!(inspect(xml.as_bytes()).unwrap().hrefs.len(), 4);
    }

    #[test]
    fn error_bodies() {
        let body = error_body(
            Some((CALDAV, "valid-calendar-object-resource")),
            "iCloud refused the event: <UID> & more",
        );
        assert_eq!(
            body,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><d:error xmlns:d=\"DAV:\" \
xmlns:cal=\"urn:ietf:params:xml:ns:caldav\"><cal:valid-calendar-object-resource/>\
<ib:message xmlns:ib=\"urn:icloud-bridge\">iCloud refused the event: &lt;UID&gt; &amp; more</ib:message></d:error>"
        );
        let body = error_body(None, "nope");
        assert!(body.ends_with("<d:error xmlns:d=\"DAV:\"><ib:message xmlns:ib=\"urn:icloud-bridge\">nope</ib:message></d:error>"));
        let body = error_body(Some((DAV, "need-privileges")), "x");
        assert!(body.contains("<d:error xmlns:d=\"DAV:\"><d:need-privileges/>"));
        let body = error_body(Some(("urn:z", "weird")), "x");
        assert!(body.contains("<x0:weird xmlns:x0=\"urn:z\"/>"));
        for b in [body, error_body(None, "y")] {
            assert_eq!(
                inspect(b.as_bytes()).unwrap().root,
                (DAV.to_string(), "error".to_string())
            );
        }
    }
}
