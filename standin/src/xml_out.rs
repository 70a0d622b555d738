//! iCloud-style XML output: standalone declaration, default `DAV:` namespace re-declared inline,
//! no prefixes, single-quoted `comp` attributes, optional whitespace noise, CDATA data.

use crate::xml_in::PropName;

pub const DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n";

/// Escape text content.
pub fn esc(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            _ => out.push(c),
        }
    }
}

/// Escaped copy.
pub fn escaped(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    esc(s, &mut o);
    o
}

/// `<name xmlns="ns">inner</name>` (inner already XML).
pub fn el(ns: &str, name: &str, inner: &str) -> String {
    format!("<{name} xmlns=\"{ns}\">{inner}</{name}>")
}

/// `<name xmlns="ns">text</name>` with escaping.
pub fn el_text(ns: &str, name: &str, text: &str) -> String {
    el(ns, name, &escaped(text))
}

/// `<name xmlns="ns"/>`.
pub fn empty(ns: &str, name: &str) -> String {
    format!("<{name} xmlns=\"{ns}\"/>")
}

/// `<href xmlns="DAV:">…</href>`.
pub fn href(h: &str) -> String {
    el_text("DAV:", "href", h)
}

/// `<comp name='VEVENT' xmlns='urn:ietf:params:xml:ns:caldav'/>` items.
pub fn comps(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("<comp name='{n}' xmlns='urn:ietf:params:xml:ns:caldav'/>"))
        .collect()
}

/// Write `data` as CDATA with LF line endings (splitting any `]]>`), or escaped text.
pub fn data_text(data: &str, cdata: bool, out: &mut String) {
    if cdata {
        out.push_str("<![CDATA[");
        let lf = data.replace("\r\n", "\n");
        out.push_str(&lf.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]>");
    } else {
        esc(data, out);
    }
}

/// A multistatus being written.
pub struct Ms {
    pub buf: String,
    noise: bool,
    n: usize,
}

impl Ms {
    pub fn new(noise: bool) -> Ms {
        Ms::with_capacity(noise, 1024)
    }

    pub fn with_capacity(noise: bool, cap: usize) -> Ms {
        Ms {
            buf: String::with_capacity(cap),
            noise,
            n: 0,
        }
    }

    /// Whitespace between elements: a newline and indentation, ragged when noisy.
    fn nl(&mut self, indent: usize) {
        self.n = self.n.wrapping_add(1);
        self.buf.push('\n');
        if self.noise {
            if self.n % 5 == 0 {
                self.buf.push_str("\n\n");
            }
            let extra = [0, 3, 1, 6, 2, 0, 4][self.n % 7];
            for _ in 0..indent + extra {
                self.buf.push(' ');
            }
        } else {
            for _ in 0..indent {
                self.buf.push(' ');
            }
        }
    }

    pub fn head(&mut self) {
        self.buf.push_str(DECL);
        self.buf.push_str("<multistatus xmlns=\"DAV:\">");
    }

    pub fn foot(&mut self) {
        self.nl(0);
        self.buf.push_str("</multistatus>\n");
    }

    fn propstat<S: AsRef<str>>(&mut self, props: &[S], status: &str) {
        self.nl(2);
        self.buf.push_str("<propstat>");
        self.nl(3);
        self.buf.push_str("<prop>");
        for p in props {
            self.nl(4);
            self.buf.push_str(p.as_ref());
        }
        self.nl(3);
        self.buf.push_str("</prop>");
        self.nl(3);
        self.buf.push_str("<status>");
        self.buf.push_str(status);
        self.buf.push_str("</status>");
        self.nl(2);
        self.buf.push_str("</propstat>");
    }

    /// A response with a 200 propstat (always written, possibly empty) and, when any
    /// property is missing, a 404 propstat with empty elements.
    pub fn response<S: AsRef<str>>(&mut self, href_path: &str, found: &[S], missing: &[PropName]) {
        self.nl(1);
        self.buf.push_str("<response xmlns=\"DAV:\">");
        self.nl(2);
        self.buf.push_str("<href>");
        esc(href_path, &mut self.buf);
        self.buf.push_str("</href>");
        if !found.is_empty() || missing.is_empty() {
            self.propstat(found, "HTTP/1.1 200 OK");
        }
        if !missing.is_empty() {
            let m: Vec<String> = missing.iter().map(|p| empty(&p.ns, &p.name)).collect();
            self.propstat(&m, "HTTP/1.1 404 Not Found");
        }
        self.nl(1);
        self.buf.push_str("</response>");
    }

    /// A response carrying only a status (deleted member, unknown multiget href).
    pub fn status_response(&mut self, href_path: &str, status: &str) {
        self.nl(1);
        self.buf.push_str("<response xmlns=\"DAV:\">");
        self.nl(2);
        self.buf.push_str("<href>");
        esc(href_path, &mut self.buf);
        self.buf.push_str("</href>");
        self.nl(2);
        self.buf.push_str("<status>");
        self.buf.push_str(status);
        self.buf.push_str("</status>");
        self.nl(1);
        self.buf.push_str("</response>");
    }

    /// The closing `<sync-token>` of a sync-collection report.
    pub fn sync_token(&mut self, token: &str) {
        self.nl(1);
        self.buf.push_str("<sync-token>");
        esc(token, &mut self.buf);
        self.buf.push_str("</sync-token>");
    }

    /// Per-property statuses for PROPPATCH.
    pub fn propstat_response(&mut self, href_path: &str, groups: &[(Vec<String>, &str)]) {
        self.nl(1);
        self.buf.push_str("<response xmlns=\"DAV:\">");
        self.nl(2);
        self.buf.push_str("<href>");
        esc(href_path, &mut self.buf);
        self.buf.push_str("</href>");
        for (props, status) in groups {
            if !props.is_empty() {
                self.propstat(props, status);
            }
        }
        self.nl(1);
        self.buf.push_str("</response>");
    }

    /// Take the text written so far (for streaming in chunks).
    pub fn take(&mut self) -> String {
        std::mem::take(&mut self.buf)
    }
}

/// `<error xmlns="DAV:"><valid-sync-token/></error>` (RFC 6578 style).
pub fn valid_sync_token_error() -> String {
    format!("{DECL}<error xmlns=\"DAV:\"><valid-sync-token/></error>\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_icloud_style() {
        let mut m = Ms::new(false);
        m.head();
        m.response(
            "/1/calendars/home/a%40b.ics",
            &[el_text("DAV:", "getetag", "\"x\"")],
            &[PropName::new("http://apple.com/ns/ical/", "calendar-color")],
        );
        m.foot();
        let s = m.buf;
        assert!(s.starts_with(DECL));
        assert!(s.contains("<response xmlns=\"DAV:\">"));
        assert!(s.contains("<getetag xmlns=\"DAV:\">\"x\"</getetag>"));
        assert!(s.contains("<calendar-color xmlns=\"http://apple.com/ns/ical/\"/>"));
        assert!(s.contains("HTTP/1.1 404 Not Found"));
        let mut d = String::new();
        data_text("A\r\n]]>\r\n", true, &mut d);
        assert_eq!(d, "<![CDATA[A\n]]]]><![CDATA[>\n]]>");
        assert!(comps(&["VEVENT"]).contains("name='VEVENT'"));
    }
}
