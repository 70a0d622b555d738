//! Namespace URIs the bridge knows about and the prefixes it writes them with.

/// WebDAV (RFC 4918).
pub const DAV: &str = "DAV:";
/// CalDAV (RFC 4791).
pub const CALDAV: &str = "urn:ietf:params:xml:ns:caldav";
/// CardDAV (RFC 6352).
pub const CARDDAV: &str = "urn:ietf:params:xml:ns:carddav";
/// Apple calendarserver extensions (getctag, push, sharing…).
pub const CALSERVER: &str = "http://calendarserver.org/ns/";
/// Apple iCal properties (calendar-color, calendar-order…).
pub const APPLE_ICAL: &str = "http://apple.com/ns/ical/";
/// me.com properties used by iCloud.
pub const ME: &str = "http://me.com/_namespace/";
/// The bridge's own namespace (human-readable error messages).
pub const BRIDGE: &str = "urn:icloud-bridge";
/// The reserved `xml:` namespace (xml:lang, xml:space); never declared.
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";

/// Preferred output prefix for [`DAV`].
pub const DAV_PREFIX: &str = "d";
/// Preferred output prefix for [`CALDAV`].
pub const CALDAV_PREFIX: &str = "cal";
/// Preferred output prefix for [`CARDDAV`].
pub const CARDDAV_PREFIX: &str = "card";
/// Preferred output prefix for [`CALSERVER`].
pub const CALSERVER_PREFIX: &str = "cs";
/// Preferred output prefix for [`APPLE_ICAL`].
pub const APPLE_ICAL_PREFIX: &str = "ical";
/// Preferred output prefix for [`ME`].
pub const ME_PREFIX: &str = "me";
/// Prefix for [`BRIDGE`] (declared where used, not on the root).
pub const BRIDGE_PREFIX: &str = "ib";

/// The six well-known namespaces, `(uri, prefix)`, in the order they are declared on an
/// output root element.
pub const KNOWN: [(&str, &str); 6] = [
    (DAV, DAV_PREFIX),
    (CALDAV, CALDAV_PREFIX),
    (CARDDAV, CARDDAV_PREFIX),
    (CALSERVER, CALSERVER_PREFIX),
    (APPLE_ICAL, APPLE_ICAL_PREFIX),
    (ME, ME_PREFIX),
];

/// The `xmlns:…` declarations of all [`KNOWN`] namespaces, each preceded by a space, ready to be
/// written into a root start tag.
pub const KNOWN_DECLS: &str = concat!(
    " xmlns:d=\"DAV:\"",
    " xmlns:cal=\"urn:ietf:params:xml:ns:caldav\"",
    " xmlns:card=\"urn:ietf:params:xml:ns:carddav\"",
    " xmlns:cs=\"http://calendarserver.org/ns/\"",
    " xmlns:ical=\"http://apple.com/ns/ical/\"",
    " xmlns:me=\"http://me.com/_namespace/\"",
);

/// Preferred prefix of a well-known namespace (as raw bytes), if it is one of [`KNOWN`].
#[inline]
pub fn known_prefix(ns: &[u8]) -> Option<&'static str> {
    known(ns).map(|(_, prefix)| prefix)
}

/// The [`KNOWN`] entry `(uri, prefix)` of a namespace (as raw bytes), if it is one.
#[inline]
pub fn known(ns: &[u8]) -> Option<(&'static str, &'static str)> {
    KNOWN.iter().find(|(uri, _)| uri.as_bytes() == ns).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_prefixes() {
        assert_eq!(known_prefix(b"DAV:"), Some("d"));
        assert_eq!(known_prefix(CALDAV.as_bytes()), Some("cal"));
        assert_eq!(known_prefix(ME.as_bytes()), Some("me"));
        assert_eq!(known_prefix(b"dav:"), None);
        assert_eq!(known_prefix(b""), None);
    }

    #[test]
    fn decls_match_table() {
        let built: String = KNOWN
            .iter()
            .map(|(uri, p)| format!(" xmlns:{p}=\"{uri}\""))
            .collect();
        assert_eq!(built, KNOWN_DECLS);
    }
}
