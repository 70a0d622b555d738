//! The bridge's local URL tree and the mapping of hrefs between it and upstream, both ways.
//!
//! Local tree: `/dav/<account>/principal/`, `/dav/<account>/calendars/...` (the upstream
//! calendar home), `/dav/<account>/contacts/...` (the upstream address-book home) and
//! `/dav/<account>/_up/<origin key>/...` (any other upstream URL, e.g. a contact photo).

use std::sync::Arc;

use url::Url;

use crate::dav::links::Links;
use crate::upstream::discover::Learned;
use crate::upstream::service::Service;
use crate::xml::rewrite::HrefMap;

/// What a request path names in the local tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local<'a> {
    /// `/`
    Root,
    /// `/.well-known/caldav` or `/.well-known/carddav`
    WellKnown(Service),
    /// `/dav/` or `/dav/<account>/`
    DavRoot(Option<&'a str>),
    /// `/dav/<account>/principal/`
    Principal(&'a str),
    /// `/dav/<account>/calendars/<rest>` or `/dav/<account>/contacts/<rest>`; `rest` is the
    /// raw (still percent-encoded) remainder, "" for the home itself.
    Home {
        account: &'a str,
        service: Service,
        rest: &'a str,
    },
    /// `/dav/<account>/_up/<key>`: another upstream URL (a contact photo, an attachment),
    /// the whole URL encoded in the opaque key.
    Upstream {
        account: &'a str,
        key: &'a str,
    },
    Unknown,
}

/// The local path segment of a home.
pub fn home_segment(service: Service) -> &'static str {
    match service {
        Service::Carddav => "contacts",
        _ => "calendars",
    }
}

/// Parse a request path (without query).
pub fn parse(path: &str) -> Local<'_> {
    match path {
        "/" | "" => return Local::Root,
        "/.well-known/caldav" | "/.well-known/caldav/" => return Local::WellKnown(Service::Caldav),
        "/.well-known/carddav" | "/.well-known/carddav/" => {
            return Local::WellKnown(Service::Carddav)
        }
        "/dav" | "/dav/" => return Local::DavRoot(None),
        _ => {}
    }
    let Some(after) = path.strip_prefix("/dav/") else {
        return Local::Unknown;
    };
    let (account, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i + 1..]),
        None => (after, ""),
    };
    if account.is_empty() {
        return Local::Unknown;
    }
    if rest.is_empty() {
        return Local::DavRoot(Some(account));
    }
    let (seg, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    match seg {
        "principal" if tail.is_empty() => Local::Principal(account),
        "calendars" => Local::Home {
            account,
            service: Service::Caldav,
            rest: tail,
        },
        "contacts" => Local::Home {
            account,
            service: Service::Carddav,
            rest: tail,
        },
        "_up" if !tail.is_empty() && is_key(tail.trim_end_matches('/')) => Local::Upstream {
            account,
            key: tail.trim_end_matches('/'),
        },
        _ => Local::Unknown,
    }
}

/// Why a raw (still percent-encoded) path remainder under a home is refused, if it is:
/// `.` or `..` segments in any spelling (URL parsers resolve `%2e%2e` too), backslashes raw
/// or encoded (parsers treat `\\` as `/`), encoded slashes and control characters. Anything
/// that passes stays inside the home; [`home_url`] checks that again after normalisation.
pub fn refuse_rest(rest: &str) -> Option<&'static str> {
    for seg in rest.split('/') {
        if seg.contains('\\') {
            return Some("a backslash");
        }
        let decoded: std::borrow::Cow<'_, [u8]> = if seg.contains('%') {
            percent_encoding::percent_decode_str(seg)
                .collect::<Vec<u8>>()
                .into()
        } else {
            seg.as_bytes().into()
        };
        if &*decoded == b"." || &*decoded == b".." {
            return Some("a '.' or '..' segment");
        }
        if decoded.contains(&b'\\') {
            return Some("a backslash");
        }
        if decoded.contains(&b'/') {
            return Some("an encoded '/'");
        }
        if decoded.iter().any(|b| *b < 0x20 || *b == 0x7f) {
            return Some("a control character");
        }
    }
    None
}

/// The upstream URL of `rest` under `home` (and `query`), or `None` if the path is refused
/// by [`refuse_rest`] or, once the URL is normalised, is not under `home` on its origin.
pub fn home_url(home: &Url, rest: &str, query: Option<&str>) -> Option<Url> {
    if refuse_rest(rest).is_some() {
        return None;
    }
    // Parts that read the same alone as inside a whole URL: no `?` or `#` (which would start a
    // query or a fragment there), no tab or newline (which a URL parser drops) and no space
    // or control character at the end (which it trims).
    let plain = |s: &str, stops: &[char]| {
        !s.contains(stops)
            && !s.contains(['\t', '\n', '\r'])
            && s.as_bytes().last().is_none_or(|&b| b > b' ')
    };
    let u = if plain(rest, &['?', '#'])
        && query.is_none_or(|q| plain(q, &['#']))
        && plain(home.as_str(), &['?', '#'])
    {
        // The usual case (every request's target): the home's scheme, host and port stay as
        // they were parsed, and only the path and query are read. A whole URL's parse would
        // read the host again, IDNA mapping included, on every request. Same result
        // (`home_urls_match_a_whole_parse`).
        let mut u = home.clone();
        let mut path = String::with_capacity(home.path().len() + rest.len());
        path.push_str(home.path());
        path.push_str(rest);
        u.set_path(&path);
        u.set_query(query);
        u
    } else {
        let text = match query {
            Some(q) => format!("{home}{rest}?{q}"),
            None => format!("{home}{rest}"),
        };
        Url::parse(&text).ok()?
    };
    (same_origin(&u, home) && u.path().starts_with(home.path())).then_some(u)
}

/// Do two http(s) URLs have the same origin (scheme, host, port)? [`Url::origin`] without
/// its copies of the host, for the checks every request makes.
pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The raw path of an href or header value that is an absolute http(s) URL or a path
/// (nothing resolved or decoded); `None` for other schemes.
pub fn raw_path(s: &str) -> Option<&str> {
    let s = s.trim();
    let lower_starts = |p: &str| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p);
    let after = if lower_starts("http://") {
        &s[7..]
    } else if lower_starts("https://") {
        &s[8..]
    } else if s.starts_with('/') {
        return Some(s.split(['?', '#']).next().unwrap_or(s));
    } else {
        return None;
    };
    let path = match after.find(['/', '?', '#']) {
        Some(i) if after[i..].starts_with('/') => &after[i..],
        _ => "/",
    };
    Some(path.split(['?', '#']).next().unwrap_or(path))
}

fn is_key(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Decides which absolute URLs are upstream ones (and may carry the credential).
pub trait UpstreamHosts: Send + Sync {
    fn is_upstream(&self, url: &Url) -> bool;
}

/// Maps upstream hrefs (in responses) to the local tree.
pub struct ToLocal {
    pub account: String,
    pub learned: Arc<Learned>,
    /// The service the request went to; its home wins when homes overlap (Radicale).
    pub service: Service,
    /// The upstream URL the request went to (relative hrefs resolve against it).
    pub base: Url,
    /// How clients reach the bridge, e.g. `http://127.0.0.1:8008` (for absolute URLs in bodies).
    pub public_origin: String,
    pub hosts: Arc<dyn UpstreamHosts>,
    /// For REPORTs: the local path of the collection asked. iCloud lists the collection
    /// itself among the results, which clients take for an unsolicited item; it is dropped.
    pub report_collection: Option<String>,
    /// Set once `public_origin` is written into a body (an absolute bridge URL for a contact
    /// photo or an attachment): such an answer is only good for clients using that origin.
    pub origin_used: Arc<std::sync::atomic::AtomicBool>,
    /// Signs the `_up` links minted for upstream URLs of other kinds.
    pub links: Arc<Links>,
    /// Translate Apple's vCard dialect (iCloud's contacts; see [`crate::dav::vcard`]).
    pub apple_cards: bool,
    /// Contact photos fetched for this answer, to inline (set before the body is rewritten).
    pub photos: std::sync::OnceLock<crate::dav::photos::Found>,
}

impl ToLocal {
    fn map_url(&self, abs: &Url) -> Option<String> {
        if !matches!(abs.scheme(), "http" | "https") || !self.hosts.is_upstream(abs) {
            return None;
        }
        Some(self.map_path(abs.path(), abs.query(), || abs.as_str().to_string()))
    }

    /// Map an upstream path (on an upstream host) into the local tree.
    fn map_path(&self, path: &str, query: Option<&str>, full: impl FnOnce() -> String) -> String {
        let a = &self.account;
        // Built with push_str, not format!: this runs for every href of every listing.
        let local = |segment: &str, rest: &str| {
            // "/dav/" + account + "/" + segment + "/" + rest ["?" + query]: sized exactly, so
            // the string never grows (it did, one byte short, for every href).
            let mut s = String::with_capacity(
                7 + a.len() + segment.len() + rest.len() + query.map_or(0, |q| q.len() + 1),
            );
            s.push_str("/dav/");
            s.push_str(a);
            s.push('/');
            s.push_str(segment);
            s.push('/');
            s.push_str(rest);
            if let Some(q) = query {
                s.push('?');
                s.push_str(q);
            }
            s
        };
        let other = match self.service {
            Service::Carddav => Service::Caldav,
            _ => Service::Carddav,
        };
        for svc in [self.service, other] {
            let home = self.learned.home(svc).path();
            if let Some(rest) = path.strip_prefix(home) {
                return local(home_segment(svc), rest);
            }
            // The home itself without its trailing slash.
            if home.len() > 1 && path == &home[..home.len() - 1] {
                return local(home_segment(svc), "");
            }
        }
        if path == self.learned.cal_principal.path() || path == self.learned.card_principal.path() {
            return format!("/dav/{a}/principal/");
        }
        if path == "/" {
            return format!("/dav/{a}/");
        }
        format!("/dav/{a}/_up/{}", self.links.mint(a, &full()))
    }
}

/// A host-relative path that needs no URL resolution (no dot segments, query or fragment).
fn plain_path(href: &str) -> bool {
    let b = href.as_bytes();
    if b.first() != Some(&b'/') || b.get(1) == Some(&b'/') {
        return false;
    }
    let dots = |segment: &[u8]| segment == b"." || segment == b"..";
    // One pass over the bytes: no query, fragment or backslash, no `.` or `..` segment.
    let mut segment = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'?' | b'#' | b'\\' => return false,
            b'/' => {
                if dots(&b[segment..i]) {
                    return false;
                }
                segment = i + 1;
            }
            _ => {}
        }
    }
    !dots(&b[segment..])
}

impl HrefMap for ToLocal {
    fn href(&self, href: &str) -> Option<String> {
        let href = href.trim();
        // Fast path: most hrefs are plain paths on the host the request went to.
        let mapped = if plain_path(href) {
            self.map_path(href, None, || {
                self.base
                    .join(href)
                    .map(|u| u.to_string())
                    .unwrap_or_else(|_| href.to_string())
            })
        } else {
            let abs = self.base.join(href).ok()?;
            self.map_url(&abs)?
        };
        (mapped != href).then_some(mapped)
    }

    fn keep_response(&self, href: &str) -> bool {
        match &self.report_collection {
            Some(c) => href.trim_end_matches('/') != c.trim_end_matches('/'),
            None => true,
        }
    }

    /// Some servers (Radicale) use one URL for the principal and both homes; the element an
    /// href sits in says which one it names.
    fn href_in(&self, parent: &str, href: &str) -> Option<String> {
        let a = &self.account;
        let same = |u: &Url| {
            self.base
                .join(href.trim())
                .map(|abs| abs.path() == u.path() && self.hosts.is_upstream(&abs))
                .unwrap_or(false)
        };
        match parent {
            "d:current-user-principal"
            | "d:principal-URL"
            | "d:owner"
            | "cal:calendar-user-address-set"
                if same(&self.learned.cal_principal) || same(&self.learned.card_principal) =>
            {
                Some(format!("/dav/{a}/principal/"))
            }
            "cal:calendar-home-set" if same(&self.learned.cal_home) => {
                Some(format!("/dav/{a}/calendars/"))
            }
            "card:addressbook-home-set" if same(&self.learned.card_home) => {
                Some(format!("/dav/{a}/contacts/"))
            }
            _ => self.href(href),
        }
    }

    fn body_text(&self, text: &str) -> Option<String> {
        // Each step works on the previous one's text; the last change made is the answer.
        let mut changed: Option<String> = None;
        if self.apple_cards {
            changed = crate::dav::vcard::to_client(text);
        }
        if let Some(found) = self.photos.get() {
            let t = changed.as_deref().unwrap_or(text);
            if let Some(inlined) = found.inline(&self.links, &self.account, t) {
                changed = Some(inlined);
            }
        }
        let t = changed.as_deref().unwrap_or(text);
        let urls = rewrite_urls_in_text(t, |url| {
            let u = Url::parse(url).ok()?;
            if !self.hosts.is_upstream(&u) {
                return None;
            }
            self.origin_used
                .store(true, std::sync::atomic::Ordering::Relaxed);
            Some(format!(
                "{}/dav/{}/_up/{}",
                self.public_origin,
                self.account,
                self.links.mint(&self.account, url)
            ))
        });
        urls.or(changed)
    }
}

/// Maps local hrefs (in client requests) to upstream paths.
#[derive(Clone)]
pub struct ToUpstream {
    pub account: String,
    pub learned: Arc<Learned>,
    /// The upstream URL the request goes to; hrefs on the same origin are sent as paths.
    pub target: Url,
    /// Opens the `_up` links this bridge minted.
    pub links: Arc<Links>,
    /// Write vCards in Apple's dialect (iCloud's contacts; see [`crate::dav::vcard`]).
    pub apple_cards: bool,
    /// Gives inlined photos their iCloud reference back (see [`crate::dav::photos`]).
    pub photos: Option<Arc<crate::dav::photos::PhotoStore>>,
}

impl ToUpstream {
    /// The upstream URL for a raw local path (only paths under this account).
    pub fn url_for_path(&self, path: &str) -> Option<Url> {
        match parse(path) {
            home @ Local::Home { .. } => self.under_home(&home),
            Local::Principal(account) if account == self.account => {
                Some(self.learned.cal_principal.clone())
            }
            Local::Upstream { account, key } if account == self.account => {
                self.links.url(account, key)
            }
            _ => None,
        }
    }

    /// The upstream URL for a `Destination` header of MOVE or COPY: only a path under one of
    /// this account's homes (never the principal or an `_up` link), checked raw, before any
    /// URL normalisation could resolve backslashes or dot segments.
    pub fn destination(&self, value: &str) -> Option<Url> {
        self.under_home(&parse(raw_path(value)?))
    }

    /// The upstream URL of a path under one of this account's homes; `None` for anything
    /// else.
    fn under_home(&self, local: &Local<'_>) -> Option<Url> {
        match local {
            Local::Home {
                account,
                service,
                rest,
            } if *account == self.account => home_url(self.learned.home(*service), rest, None),
            _ => None,
        }
    }
}

impl HrefMap for ToUpstream {
    fn href(&self, href: &str) -> Option<String> {
        let h = href.trim();
        // Clients may send absolute URLs of the bridge; only the path matters, taken raw so
        // that nothing is resolved before the checks of `url_for_path`.
        let path = raw_path(h)?;
        let query = h
            .split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or(q).to_string());
        let url = self.url_for_path(path)?;
        let q = query.map(|q| format!("?{q}")).unwrap_or_default();
        if same_origin(&url, &self.target) {
            Some(format!("{}{q}", url.path()))
        } else {
            Some(format!("{}{q}", url.as_str()))
        }
    }

    fn body_text(&self, text: &str) -> Option<String> {
        to_upstream_text(
            text,
            &self.account,
            &self.links,
            self.photos.as_deref(),
            self.apple_cards,
        )
    }
}

/// An object body (or calendar/address data) as upstream gets it: bridge URLs back to the
/// upstream URLs they stand for, and vCards in Apple's dialect when `apple_cards`.
pub fn to_upstream_text(
    text: &str,
    account: &str,
    links: &Links,
    photos: Option<&crate::dav::photos::PhotoStore>,
    apple_cards: bool,
) -> Option<String> {
    let mut changed = unmap_bridge_urls(text, account, links);
    if let Some(p) = photos {
        let t = changed.as_deref().unwrap_or(text);
        let restored = crate::dav::vcard::restore_photos(t, |mark, bytes| {
            p.original(links, account, mark, bytes)
        });
        if restored.is_some() {
            changed = restored;
        }
    }
    if apple_cards {
        let t = changed.as_deref().unwrap_or(text);
        if let Some(cards) = crate::dav::vcard::to_upstream(t) {
            changed = Some(cards);
        }
    }
    changed
}

/// Replace bridge `_up` URLs in an object body (vCard PHOTO, ATTACH) with the upstream
/// URL they stand for, so that what is written back is what iCloud served.
pub fn unmap_bridge_urls(text: &str, account: &str, links: &Links) -> Option<String> {
    let marker = format!("/dav/{account}/_up/");
    if !text.contains(&marker) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find(&marker) {
        // The URL starts at the scheme before the marker, with no break in between.
        let before = &rest[..i];
        let start = before
            .rfind("http://")
            .into_iter()
            .chain(before.rfind("https://"))
            .max();
        let after = &rest[i + marker.len()..];
        let key_end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .unwrap_or(after.len());
        match (start, links.url_text(account, &after[..key_end])) {
            (Some(s), Some(url)) if !before[s..].contains(is_url_end) => {
                out.push_str(&before[..s]);
                out.push_str(&url);
                rest = &after[key_end..];
                changed = true;
            }
            _ => {
                out.push_str(&rest[..i + marker.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Characters that end a URL in iCalendar/vCard text.
fn is_url_end(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '<' | '>' | '\\' | ',')
}

/// Find `http://` / `https://` URLs in object text (unfolding continuation lines inside a
/// URL) and replace those `f` maps. A replaced URL is written unfolded.
fn rewrite_urls_in_text(text: &str, f: impl Fn(&str) -> Option<String>) -> Option<String> {
    if !text.contains("http") {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 64);
    let mut changed = false;
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let is_url = rest.starts_with("https://") || rest.starts_with("http://");
        if !is_url {
            let first = rest.chars().next().map(char::len_utf8).unwrap_or(1);
            let next = rest[first..]
                .find("http")
                .map(|n| n + first)
                .unwrap_or(rest.len());
            out.push_str(&rest[..next]);
            i += next;
            continue;
        }
        // Scan to the end of the URL, stepping over line folds (CRLF or LF + space/tab).
        let mut url = String::new();
        let mut j = 0;
        let bytes = rest.as_bytes();
        while j < rest.len() {
            let fold = if rest[j..].starts_with("\r\n ") || rest[j..].starts_with("\r\n\t") {
                3
            } else if rest[j..].starts_with("\n ") || rest[j..].starts_with("\n\t") {
                2
            } else {
                0
            };
            if fold > 0 {
                j += fold;
                continue;
            }
            let c = rest[j..].chars().next().unwrap_or(' ');
            if is_url_end(c) || (bytes[j] == b';' && url.is_empty()) {
                break;
            }
            url.push(c);
            j += c.len_utf8();
        }
        match f(&url) {
            Some(rep) => {
                out.push_str(&rep);
                changed = true;
            }
            None => out.push_str(&rest[..j]),
        }
        i += j.max(1);
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    struct Hosts;
    impl UpstreamHosts for Hosts {
        fn is_upstream(&self, url: &Url) -> bool {
            url.host_str().map(|h| h.ends_with("icloud.com")) == Some(true)
        }
    }

    fn learned() -> Arc<Learned> {
        Arc::new(Learned {
            cal_principal: Url::parse("https://caldav.icloud.com/1234567890/principal/").unwrap(),
            cal_home: Url::parse("https://p42-caldav.icloud.com:443/1234567890/calendars/")
                .unwrap(),
            card_principal: Url::parse("https://contacts.icloud.com/1234567890/principal/")
                .unwrap(),
            card_home: Url::parse("https://p42-contacts.icloud.com:443/1234567890/carddavhome/")
                .unwrap(),
            displayname: None,
            addresses: vec![],
        })
    }

    /// One signer for every map in a test, as in the bridge.
    fn links() -> Arc<Links> {
        static L: std::sync::OnceLock<Arc<Links>> = std::sync::OnceLock::new();
        L.get_or_init(|| Arc::new(Links::ephemeral())).clone()
    }

    fn to_local(service: Service) -> ToLocal {
        ToLocal {
            account: "alice".into(),
            learned: learned(),
            service,
            base: Url::parse("https://p42-caldav.icloud.com/1234567890/calendars/").unwrap(),
            public_origin: "http://127.0.0.1:8008".into(),
            hosts: Arc::new(Hosts),
            report_collection: None,
            origin_used: Default::default(),
            links: links(),
            apple_cards: service == Service::Carddav,
            photos: Default::default(),
        }
    }

    #[test]
    fn parses_the_local_tree() {
        assert_eq!(parse("/"), Local::Root);
        assert_eq!(
            parse("/.well-known/caldav"),
            Local::WellKnown(Service::Caldav)
        );
        assert_eq!(parse("/dav/alice/"), Local::DavRoot(Some("alice")));
        assert_eq!(parse("/dav/alice/principal/"), Local::Principal("alice"));
        assert_eq!(
            parse("/dav/alice/calendars/home/a%40b.ics"),
            Local::Home {
                account: "alice",
                service: Service::Caldav,
                rest: "home/a%40b.ics"
            }
        );
        assert_eq!(
            parse("/dav/alice/contacts/"),
            Local::Home {
                account: "alice",
                service: Service::Carddav,
                rest: ""
            }
        );
        assert_eq!(parse("/elsewhere"), Local::Unknown);
    }

    #[test]
    fn dotdot_backslashes_and_encoded_slashes_are_refused_in_any_spelling() {
        for bad in [
            "../principal/",
            "home/%2e%2e/x",
            "home/%2E./x",
            "home/./x",
            "..\\..\\bob\\cal\\x.ics",
            "home/..%5c..%5Cbob/x.ics",
            "home/a%2fb.ics",
            "home/a%00.ics",
        ] {
            assert!(refuse_rest(bad).is_some(), "{bad}");
        }
        assert_eq!(refuse_rest("home/a..b.ics"), None);
        assert_eq!(refuse_rest("home/abc%40example.com.ics"), None);
        assert_eq!(refuse_rest(""), None);
    }

    #[test]
    fn home_urls_stay_under_the_home() {
        let home = Url::parse("http://127.0.0.1:5232/alice/").unwrap();
        assert_eq!(
            home_url(&home, "cal/x.ics", None).unwrap().as_str(),
            "http://127.0.0.1:5232/alice/cal/x.ics"
        );
        assert_eq!(
            home_url(&home, "", Some("a=b")).unwrap().as_str(),
            "http://127.0.0.1:5232/alice/?a=b"
        );
        assert_eq!(home_url(&home, "..\\..\\bob\\cal\\x.ics", None), None);
        assert_eq!(home_url(&home, "%2e%2e/bob/", None), None);
    }

    proptest::proptest! {
        /// The fast path of [`home_url`] gives what parsing the whole URL gives.
        #[test]
        fn home_urls_match_a_whole_parse(
            rest in "([a-zA-Z0-9._~!$&'()*+,;=:@ %-]|%[0-9a-fA-F]{2}|é|/|\\.\\.|\\?|#|\t|\x01){0,24}",
            query in proptest::option::of("[a-z0-9=&%/ ?é\t#-]{0,12}"),
            home in proptest::sample::select(vec![
                "http://127.0.0.1:5232/alice/",
                "https://p42-caldav.icloud.com:443/1234567890/calendars/",
                "https://bücher.example/dav/home%20x/",
            ]),
        ) {
            let home = Url::parse(home).unwrap();
            let whole = || {
                if refuse_rest(&rest).is_some() {
                    return None;
                }
                let text = match &query {
                    Some(q) => format!("{home}{rest}?{q}"),
                    None => format!("{home}{rest}"),
                };
                let u = Url::parse(&text).ok()?;
                (same_origin(&u, &home) && u.path().starts_with(home.path())).then_some(u)
            };
            let fast = home_url(&home, &rest, query.as_deref()).map(String::from);
            proptest::prop_assert_eq!(fast, whole().map(String::from));
        }
    }

    #[test]
    fn raw_paths_are_taken_before_any_resolution() {
        assert_eq!(
            raw_path("http://h:1/dav/alice/calendars/..\\x?q#f"),
            Some("/dav/alice/calendars/..\\x")
        );
        assert_eq!(raw_path("HTTPS://h"), Some("/"));
        assert_eq!(raw_path("/a/b?c"), Some("/a/b"));
        assert_eq!(raw_path("mailto:a@b"), None);
        assert_eq!(raw_path("x.ics"), None);
    }

    #[test]
    fn upstream_hrefs_become_local_paths_with_encoding_kept() {
        let m = to_local(Service::Caldav);
        assert_eq!(
            m.href("/1234567890/calendars/home/abc%40example.com.ics")
                .as_deref(),
            Some("/dav/alice/calendars/home/abc%40example.com.ics")
        );
        assert_eq!(
            m.href("https://p42-caldav.icloud.com:443/1234567890/calendars/")
                .as_deref(),
            Some("/dav/alice/calendars/")
        );
        assert_eq!(
            m.href("/1234567890/principal/").as_deref(),
            Some("/dav/alice/principal/")
        );
        assert_eq!(m.href("mailto:alice@icloud.com"), None);
        assert_eq!(m.href("https://example.org/x"), None);
        let other = m.href("/1234567890/wcs/abc").unwrap();
        assert!(other.starts_with("/dav/alice/_up/"), "{other}");
        assert!(
            !other.contains("icloud") && !other.contains("1234567890"),
            "{other}"
        );
        assert!(matches!(
            parse(&other),
            Local::Upstream {
                account: "alice",
                ..
            }
        ));
    }

    /// Listings map thousands of hrefs: each local path is built in a string of exactly its
    /// size (a string that had to grow shows a larger capacity).
    #[test]
    fn local_paths_are_built_without_growing() {
        let m = to_local(Service::Caldav);
        for (path, query) in [
            ("/1234567890/calendars/home/ev-000001.ics", None),
            ("/1234567890/calendars/", None),
            ("/1234567890/calendars", None),
            ("/1234567890/carddavhome/card/x.vcf", None),
            ("/1234567890/calendars/home/", Some("a=b")),
        ] {
            let s = m.map_path(path, query, String::new);
            assert_eq!(s.capacity(), s.len(), "{s}");
            assert!(s.starts_with("/dav/alice/"), "{s}");
        }
    }

    #[test]
    fn local_hrefs_go_back_upstream() {
        let m = ToUpstream {
            account: "alice".into(),
            learned: learned(),
            target: Url::parse("https://p42-caldav.icloud.com/1234567890/calendars/home/").unwrap(),
            links: links(),
            apple_cards: false,
            photos: None,
        };
        assert_eq!(
            m.href("/dav/alice/calendars/home/abc%40example.com.ics")
                .as_deref(),
            Some("/1234567890/calendars/home/abc%40example.com.ics")
        );
        assert_eq!(m.href("/dav/bob/calendars/home/x.ics"), None);
        assert_eq!(m.href("/dav/alice/calendars/../principal/"), None);
        assert_eq!(m.href("/dav/alice/calendars/..\\..\\bob\\x.ics"), None);
        // `_up` keys open only when this bridge signed them for this account.
        let key = links().mint(
            "alice",
            "https://p42-contacts.icloud.com:443/1234567890/wcs/a",
        );
        assert_eq!(
            m.href(&format!("/dav/alice/_up/{key}")).as_deref(),
            Some("https://p42-contacts.icloud.com/1234567890/wcs/a")
        );
        let forged = URL_SAFE_NO_PAD.encode("https://p42-contacts.icloud.com:8443/x");
        assert_eq!(m.href(&format!("/dav/alice/_up/{forged}")), None);
        // A Destination is a path under a home, nothing else.
        assert!(m
            .destination("http://127.0.0.1:8008/dav/alice/calendars/home/y.ics")
            .is_some());
        assert_eq!(m.destination(&format!("/dav/alice/_up/{key}")), None);
        assert_eq!(m.destination("/dav/alice/principal/"), None);
        assert_eq!(
            m.destination("/dav/alice/calendars/..\\..\\bob\\x.ics"),
            None
        );
        assert_eq!(m.destination("/dav/bob/calendars/home/x.ics"), None);
    }

    #[test]
    fn photo_urls_round_trip_through_bodies() {
        let m = to_local(Service::Carddav);
        let card = "BEGIN:VCARD\r\nPHOTO;VALUE=uri:https://p42-contacts.icloud.com:443/1234567890/wcs/abc\r\nURL:https://example.org/\r\nEND:VCARD\r\n";
        let local = m.body_text(card).unwrap();
        assert!(!local.contains("icloud.com"), "{local}");
        assert!(!local.contains("1234567890"), "{local}");
        assert!(
            local.contains("http://127.0.0.1:8008/dav/alice/_up/"),
            "{local}"
        );
        assert!(local.contains("URL:https://example.org/"), "{local}");
        let back = unmap_bridge_urls(&local, "alice", &links()).unwrap();
        assert_eq!(back, card);
    }

    #[test]
    fn shared_principal_and_home_urls_map_by_element() {
        let shared = Url::parse("http://127.0.0.1:5232/test/").unwrap();
        let m = ToLocal {
            account: "test".into(),
            learned: Arc::new(Learned {
                cal_principal: shared.clone(),
                cal_home: shared.clone(),
                card_principal: shared.clone(),
                card_home: shared.clone(),
                displayname: None,
                addresses: vec![],
            }),
            service: Service::Caldav,
            base: shared.clone(),
            public_origin: "http://127.0.0.1:8008".into(),
            hosts: Arc::new(AnyHost),
            report_collection: None,
            origin_used: Default::default(),
            links: links(),
            apple_cards: false,
            photos: Default::default(),
        };
        assert_eq!(
            m.href_in("d:current-user-principal", "/test/").as_deref(),
            Some("/dav/test/principal/")
        );
        assert_eq!(
            m.href_in("card:addressbook-home-set", "/test/").as_deref(),
            Some("/dav/test/contacts/")
        );
        assert_eq!(
            m.href_in("d:response", "/test/").as_deref(),
            Some("/dav/test/calendars/")
        );
        assert_eq!(
            m.href_in("d:response", "/test/calendar/x.ics").as_deref(),
            Some("/dav/test/calendars/calendar/x.ics")
        );
    }

    struct AnyHost;
    impl UpstreamHosts for AnyHost {
        fn is_upstream(&self, _: &Url) -> bool {
            true
        }
    }

    #[test]
    fn folded_photo_urls_are_found_whole() {
        let m = to_local(Service::Carddav);
        let card = "PHOTO;VALUE=uri:https://p42-contacts.icloud.com:443/12345\r\n 67890/wcs/abc\r\nEND:VCARD\r\n";
        let local = m.body_text(card).unwrap();
        assert!(!local.contains("67890"), "{local}");
        let back = unmap_bridge_urls(&local, "alice", &links()).unwrap();
        assert_eq!(
            back,
            "PHOTO;VALUE=uri:https://p42-contacts.icloud.com:443/1234567890/wcs/abc\r\nEND:VCARD\r\n"
        );
    }

    #[test]
    fn text_without_upstream_urls_is_untouched() {
        let m = to_local(Service::Caldav);
        assert_eq!(
            m.body_text("DESCRIPTION:see https://example.org/x, ok\r\n"),
            None
        );
        assert_eq!(m.body_text("Zoë ünïcode http"), None);
    }

    #[test]
    fn plain_paths_are_recognised_in_one_pass() {
        let old = |href: &str| {
            href.starts_with('/')
                && !href.starts_with("//")
                && !href.contains(['?', '#', '\\'])
                && !href.contains("/./")
                && !href.contains("/../")
                && !href.ends_with("/.")
                && !href.ends_with("/..")
        };
        for href in [
            "/",
            "//",
            "/a",
            "/a/",
            "/a/b.ics",
            "/./",
            "/.",
            "/..",
            "/../x",
            "/a/./b",
            "/a/../b",
            "/a/.",
            "/a/..",
            "/a/.b",
            "/a/..b/",
            "/a/b..",
            "a/b",
            "",
            "/a?x",
            "/a#x",
            "/a\\b",
            "/.../",
            "/a//b",
            "/a/%2e%2e/",
        ] {
            assert_eq!(plain_path(href), old(href), "{href:?}");
        }
    }
}
