//! Tests of `rewrite_to_vec`: normalisation, mapping, namespaces and malformed input.

use super::error::XmlError;
use super::rewrite::{rewrite_to_vec, Identity};
use super::testutil::{cal_data_cdata, canonical, icloud_sample, TestMap, CAL_DATA};

fn rw(input: &str) -> String {
    String::from_utf8(rewrite_to_vec(input.as_bytes(), &Identity).unwrap()).unwrap()
}

/// Output without the declaration and the root's standard namespace declarations.
fn bare(out: &str) -> String {
    out.strip_prefix("<?xml version=\"1.0\" encoding=\"utf-8\"?>")
        .unwrap()
        .replacen(ROOT_DECLS, "", 1)
}

fn rwb(input: &str) -> String {
    bare(&rw(input))
}

fn err(input: &str) -> String {
    match rewrite_to_vec(input.as_bytes(), &Identity) {
        Ok(out) => panic!(
            "expected error for {input:?}, got {}",
            String::from_utf8_lossy(&out)
        ),
        Err(XmlError::Malformed { message, .. }) => message,
        Err(other) => other.to_string(),
    }
}

const ROOT_DECLS: &str = " xmlns:d=\"DAV:\" xmlns:cal=\"urn:ietf:params:xml:ns:caldav\" \
xmlns:card=\"urn:ietf:params:xml:ns:carddav\" xmlns:cs=\"http://calendarserver.org/ns/\" \
xmlns:ical=\"http://apple.com/ns/ical/\" xmlns:me=\"http://me.com/_namespace/\"";

#[test]
fn icloud_sample_is_mapped_and_round_trips() {
    let input = icloud_sample();
    let out = rewrite_to_vec(input.as_bytes(), &TestMap).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.starts_with(&format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><d:multistatus{ROOT_DECLS}><d:response><d:href>"
    )));
    assert!(!text.contains("icloud.com"), "{text}");
    assert!(!text.contains("xmlns=\""));
    assert!(!text.contains("CDATA"));
    assert!(!text.contains('\''));
    assert!(text.contains("<d:href>/dav/alice/calendars/home/</d:href>"));
    assert!(text.contains("<d:href>/dav/alice/calendars/</d:href>"));
    assert!(text.contains("<d:href>/dav/alice/calendars/home/ev7%40x.ics</d:href>"));
    assert!(text.contains("<cal:comp name=\"VEVENT\"/>"));
    assert!(
        text.contains("<ical:calendar-color symbolic-color=\"red\">#FF2968</ical:calendar-color>")
    );
    assert!(text.contains("<d:displayname>Zuhause – Fußball</d:displayname>"));
    assert!(text.contains("<d:getetag>\"kkkgopik\"</d:getetag>"));
    assert!(text.ends_with("<d:sync-token>HwoQEgw...==</d:sync-token></d:multistatus>"));
    // Same document content, hrefs mapped.
    assert_eq!(
        canonical(&out, &Identity),
        canonical(input.as_bytes(), &TestMap)
    );
    // The calendar data survives byte for byte (CRLF, `]]>`, `&`, `<`, non-ASCII).
    let tokens = canonical(&out, &Identity);
    assert!(tokens.contains(&format!("{CAL_DATA:?}")), "{tokens:?}");
    // Idempotent.
    assert_eq!(rewrite_to_vec(&out, &Identity).unwrap(), out);
}

#[test]
fn radicale_prefixed_input() {
    let input = "<?xml version='1.0' encoding='utf-8'?>\n<D:multistatus xmlns:D=\"DAV:\" \
xmlns:C=\"urn:ietf:params:xml:ns:caldav\" xmlns:CS=\"http://calendarserver.org/ns/\">\
<D:response><D:href>/1234567890/calendars/home/a.ics</D:href><D:propstat><D:prop>\
<D:getetag>\"1\"</D:getetag><CS:getctag>c1</CS:getctag><C:calendar-data>"
        .to_string()
        + &cal_data_cdata()
        + "</C:calendar-data></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>\
</D:response></D:multistatus>";
    let out = rewrite_to_vec(input.as_bytes(), &TestMap).unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(text.contains("<d:href>/dav/alice/calendars/home/a.ics</d:href>"));
    assert!(text.contains("<cs:getctag>c1</cs:getctag>"));
    assert!(text.contains("<cal:calendar-data>BEGIN:VCALENDAR\r\n"));
    assert_eq!(
        canonical(&out, &Identity),
        canonical(input.as_bytes(), &TestMap)
    );
}

#[test]
fn unknown_namespaces_and_redeclared_prefixes() {
    let input = r#"<D:multistatus xmlns:D="DAV:"><D:prop xmlns:A="urn:a"><A:x xmlns:A="urn:b" A:k='v'><A:y/></A:x><A:z/><q xmlns="urn:b"/><n xmlns=""/></D:prop></D:multistatus>"#;
    let out = rw(input);
    assert_eq!(
        out,
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><d:multistatus{ROOT_DECLS}><d:prop>\
<x0:x xmlns:x0=\"urn:b\" x0:k=\"v\"><x0:y/></x0:x><x0:z xmlns:x0=\"urn:a\"/>\
<x0:q xmlns:x0=\"urn:b\"/><n/></d:prop></d:multistatus>"
        )
    );
    assert_eq!(
        canonical(out.as_bytes(), &Identity),
        canonical(input.as_bytes(), &Identity)
    );
}

#[test]
fn nested_generated_prefixes_are_scoped() {
    let input = r#"<r xmlns="urn:r"><a xmlns="urn:a"><b xmlns="urn:b"><c xmlns="urn:a"/></b></a><a2 xmlns="urn:b"/></r>"#;
    let out = rw(input);
    assert_eq!(
        bare(&out),
        "<x0:r xmlns:x0=\"urn:r\"><x1:a xmlns:x1=\"urn:a\"><x2:b xmlns:x2=\"urn:b\"><x1:c/></x2:b></x1:a>\
<x1:a2 xmlns:x1=\"urn:b\"/></x0:r>"
    );
    assert_eq!(
        canonical(out.as_bytes(), &Identity),
        canonical(input.as_bytes(), &Identity)
    );
}

#[test]
fn attributes_requoted_and_prefixed() {
    let input = r#"<d:a xmlns:d="DAV:" xmlns:p="urn:p" one='say "hi" &amp; &#x41;' p:two="x" xml:lang="de"/>"#;
    let out = rw(input);
    assert_eq!(
        bare(&out),
        "<d:a one=\"say &quot;hi&quot; &amp; &#x41;\" xmlns:x0=\"urn:p\" x0:two=\"x\" xml:lang=\"de\"/>"
    );
    assert_eq!(
        canonical(out.as_bytes(), &Identity),
        canonical(input.as_bytes(), &Identity)
    );
}

#[test]
fn whitespace_rules() {
    let out = rwb("<a>\n  <b> </b>\n  <c>  x  </c> <d>\t</d>\r\n<e>t <f/> u <g/> </e></a>");
    assert_eq!(
        out,
        "<a><b> </b><c>  x  </c><d>\t</d><e>t <f/> u <g/></e></a>"
    );
    // Whitespace that arrived as CDATA or references counts as whitespace too.
    let out = rwb("<a><![CDATA[ ]]><b/>&#32;<c>&#13;</c></a>");
    assert_eq!(out, "<a><b/><c>&#13;</c></a>");
}

#[test]
fn hrefs_trimmed_escaped_and_untouched_otherwise() {
    let out = rwb("<d:href xmlns:d='DAV:'>\n  /a%40b/c&amp;d?x=&lt;1&gt;  \n</d:href>");
    assert_eq!(out, "<d:href>/a%40b/c&amp;d?x=&lt;1&gt;</d:href>");
    let seen = std::sync::Mutex::new(Vec::new());
    let map = |h: &str| {
        seen.lock().unwrap().push(h.to_string());
        Some(format!("{h}&<"))
    };
    let out = rewrite_to_vec(b"<href xmlns='DAV:'> /x&amp;y </href>", &map).unwrap();
    assert_eq!(
        bare(&String::from_utf8(out).unwrap()),
        "<d:href>/x&amp;y&amp;&lt;</d:href>"
    );
    assert_eq!(*seen.lock().unwrap(), vec!["/x&y".to_string()]);
}

#[test]
fn body_text_mapping_and_cr_references() {
    let input = "<C:address-data xmlns:C='urn:ietf:params:xml:ns:carddav'>BEGIN:VCARD&#13;\n\
PHOTO;VALUE=uri:https://p42-contacts.icloud.com/x.jpg&#13;\nEND:VCARD&#13;\n</C:address-data>";
    let out = String::from_utf8(rewrite_to_vec(input.as_bytes(), &TestMap).unwrap()).unwrap();
    assert_eq!(
        bare(&out),
        "<card:address-data>BEGIN:VCARD&#13;\nPHOTO;VALUE=uri:http://127.0.0.1:8080/photo/x.jpg&#13;\nEND:VCARD&#13;\n</card:address-data>"
    );
}

#[test]
fn calendar_data_with_children_in_requests() {
    let input = r#"<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><C:calendar-data> <C:comp name="VCALENDAR"><C:prop name="VERSION"/></C:comp></C:calendar-data></D:prop><C:filter><C:comp-filter name="VCALENDAR"/></C:filter></C:calendar-query>"#;
    let out = rw(input);
    assert!(out.contains("<d:prop><cal:calendar-data><cal:comp name=\"VCALENDAR\"><cal:prop name=\"VERSION\"/></cal:comp></cal:calendar-data></d:prop>"), "{out}");
    assert_eq!(
        canonical(out.as_bytes(), &Identity),
        canonical(input.as_bytes(), &Identity)
    );
}

#[test]
fn prolog_handling() {
    assert_eq!(rwb("  \r\n<?xml version='1.0'?><a/>"), "<a/>");
    assert_eq!(
        rwb("\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?><!-- hi --><?pi x?><a><!--c--><?p?></a>\n"),
        "<a></a>"
    );
    assert!(err("<?xml version='1.0' encoding='ISO-8859-1'?><a/>").contains("encoding"));
    assert!(err("<!-- c --><?xml version='1.0'?><a/>").contains("declaration"));
}

#[test]
fn malformed_inputs_are_errors() {
    let cases: &[(&str, &str)] = &[
        ("", "empty"),
        ("   \n", "empty"),
        ("<a><b></b>", "end of document"),
        (
            "<d:multistatus xmlns:d='DAV:'><d:response>",
            "end of document",
        ),
        ("<a><b></a></b>", ""),
        ("<a></b>", ""),
        ("<x:a/>", "prefix"),
        ("<a><y:b/></a>", "prefix"),
        ("<a y:k='1'/>", "prefix"),
        ("<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>", "DOCTYPE"),
        ("<a/><b/>", "root"),
        ("<a/>junk", "after the root"),
        ("junk<a/>", "before the root"),
        ("<a>&nbsp;</a>", "entity"),
        ("<a>&#0;</a>", "reference"),
        ("<a b='1' b='2'/>", ""),
        ("<a xmlns:p='u' xmlns:q='u' p:k='1' q:k='2'/>", "duplicate"),
        ("<a k='<'/>", ""),
        ("<a", ""),
        ("<a>text", "end of document"),
        ("</a>", ""),
        ("not xml at all", ""),
        ("<1a/>", "name"),
        ("<a xmlns:xml='urn:x'/>", "'xml'"),
        ("<a xmlns:xmlns='urn:x'/>", "'xmlns'"),
        ("<a xmlns:p=''/>", "empty namespace"),
        ("<a xmlns:p='http://www.w3.org/2000/xmlns/'/>", "reserved"),
        (
            "<p:a xmlns:p='urn:p'><p:b xmlns:p=''/></p:a>",
            "empty namespace",
        ),
    ];
    for (input, needle) in cases {
        let message = err(input);
        assert!(message.contains(needle), "{input:?}: {message}");
    }
    let invalid_utf8 = rewrite_to_vec(b"<a>\xff</a>", &Identity);
    assert!(matches!(invalid_utf8, Err(XmlError::Malformed { .. })));
}

#[test]
fn default_namespace_undeclared_and_xml_prefix() {
    let input =
        "<a xmlns='urn:a'><b xmlns=''><c/></b><d xmlns:xml='http://www.w3.org/XML/1998/namespace' \
xml:space='preserve'/></a>";
    assert_eq!(
        rwb(input),
        "<x0:a xmlns:x0=\"urn:a\"><b><c/></b><x0:d xml:space=\"preserve\"/></x0:a>"
    );
}

#[test]
fn depth_limit() {
    let deep = "<a>".repeat(super::MAX_DEPTH + 1) + &"</a>".repeat(super::MAX_DEPTH + 1);
    assert!(matches!(
        rewrite_to_vec(deep.as_bytes(), &Identity),
        Err(XmlError::TooDeep { .. })
    ));
    let ok = "<a>".repeat(super::MAX_DEPTH) + &"</a>".repeat(super::MAX_DEPTH);
    assert!(rewrite_to_vec(ok.as_bytes(), &Identity).is_ok());
    let huge = format!("<href xmlns='DAV:'>{}</href>", "a".repeat(100_000));
    assert!(matches!(
        rewrite_to_vec(huge.as_bytes(), &Identity),
        Err(XmlError::TooLarge { .. })
    ));
}

fn with_attributes(n: usize, dup: bool) -> String {
    let mut attrs: String = (0..n).map(|i| format!(" a{i}=\"x\"")).collect();
    if dup {
        attrs.push_str(" a0=\"y\"");
    }
    format!("<d:prop xmlns:d=\"DAV:\"{attrs}/>")
}

#[test]
fn attributes_are_capped_and_checked_for_duplicates_in_linear_time() {
    use super::guard::{MAX_ATTRIBUTES, MAX_BINDINGS, MAX_REQUEST_ITEMS};
    // The namespace declaration counts as an attribute.
    let ok = with_attributes(MAX_ATTRIBUTES - 1, false);
    assert!(rewrite_to_vec(ok.as_bytes(), &Identity).is_ok());
    let over = with_attributes(MAX_ATTRIBUTES, false);
    assert!(matches!(
        rewrite_to_vec(over.as_bytes(), &Identity),
        Err(XmlError::TooMuchMarkup { .. })
    ));
    // A duplicate among many (the hash-set path) and among few (pairwise).
    for n in [3, 100] {
        let dup = with_attributes(n, true);
        let err = rewrite_to_vec(dup.as_bytes(), &Identity).unwrap_err();
        assert!(
            err.to_string().contains("duplicate attribute 'a0'"),
            "{err}"
        );
    }
    // Prefixed attributes are compared by expanded name.
    let same = r#"<a xmlns:p="urn:x" xmlns:q="urn:x" p:b="1" q:b="2"/>"#;
    assert!(rewrite_to_vec(same.as_bytes(), &Identity).is_err());
    // Namespace declarations in scope are bounded.
    let mut deep = String::new();
    for i in 0..=MAX_BINDINGS {
        deep.push_str(&format!("<a xmlns:p{i}=\"urn:{i}\">"));
    }
    deep.push_str(&"</a>".repeat(MAX_BINDINGS + 1));
    assert!(matches!(
        rewrite_to_vec(deep.as_bytes(), &Identity),
        Err(XmlError::TooMuchMarkup { .. })
    ));
    // And so are the items of a request body.
    let many = format!("<a>{}</a>", "<b/>".repeat(MAX_REQUEST_ITEMS as usize));
    assert!(matches!(
        rewrite_to_vec(many.as_bytes(), &Identity),
        Err(XmlError::TooMuchMarkup { .. })
    ));
    assert!(super::inspect::inspect(many.as_bytes()).is_err());
    assert!(super::inspect::inspect(over.as_bytes()).is_err());
    assert!(super::inspect::inspect(deep.as_bytes()).is_err());
    assert!(super::inspect::inspect(with_attributes(100, true).as_bytes()).is_err());
    assert!(super::inspect::inspect(ok.as_bytes()).is_ok());
}
