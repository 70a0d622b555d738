//! Tests of `inspect` on typical client request bodies.

use super::error::XmlError;
use super::inspect::{inspect, PropRequest};
use super::names::{CALDAV, CALSERVER, DAV};

fn pair(ns: &str, local: &str) -> (String, String) {
    (ns.to_string(), local.to_string())
}

#[test]
fn propfind_props() {
    let body = br#"
  <?xml version="1.0" encoding="utf-8" ?>
<D:propfind xmlns:D="DAV:" xmlns:CS="http://calendarserver.org/ns/">
  <D:prop><D:resourcetype/><D:displayname/><CS:getctag/><x:odd xmlns:x="urn:x"/></D:prop>
</D:propfind>"#;
    let info = inspect(body).unwrap();
    assert_eq!(info.root, pair(DAV, "propfind"));
    assert_eq!(
        info.props,
        PropRequest::Props(vec![
            pair(DAV, "resourcetype"),
            pair(DAV, "displayname"),
            pair(CALSERVER, "getctag"),
            pair("urn:x", "odd"),
        ])
    );
    assert!(info.hrefs.is_empty());
    assert_eq!(info.sync_token, None);
}

#[test]
fn allprop_propname_and_empty_prop() {
    let info =
        inspect(b"<propfind xmlns='DAV:'><allprop/><include><x/></include></propfind>").unwrap();
    assert_eq!(info.props, PropRequest::AllProp);
    let info = inspect(b"<propfind xmlns='DAV:'><propname/></propfind>").unwrap();
    assert_eq!(info.props, PropRequest::PropName);
    let info = inspect(b"<propfind xmlns='DAV:'><prop/></propfind>").unwrap();
    assert_eq!(info.props, PropRequest::Props(vec![]));
    let info = inspect(b"<propfind xmlns='DAV:'/>").unwrap();
    assert_eq!(info.props, PropRequest::None);
}

#[test]
fn multiget_hrefs() {
    let body = r#"<?xml version="1.0"?>
<C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data><C:comp name="VCALENDAR"/></C:calendar-data></D:prop>
  <D:href>
     /dav/alice/calendars/home/a%40b.ics
  </D:href>
  <D:href>/dav/alice/calendars/home/x&amp;y.ics</D:href>
  <D:href/>
</C:calendar-multiget>"#;
    let info = inspect(body.as_bytes()).unwrap();
    assert_eq!(info.root, pair(CALDAV, "calendar-multiget"));
    assert_eq!(
        info.props,
        PropRequest::Props(vec![pair(DAV, "getetag"), pair(CALDAV, "calendar-data")])
    );
    assert_eq!(
        info.hrefs,
        vec![
            "/dav/alice/calendars/home/a%40b.ics",
            "/dav/alice/calendars/home/x&y.ics",
            ""
        ]
    );
    assert!(
        info.components.is_empty(),
        "comp outside a component set is not a component"
    );
}

#[test]
fn sync_collection() {
    let info = inspect(
        b"<d:sync-collection xmlns:d='DAV:'><d:sync-token>http://x/sync/1&amp;2</d:sync-token>\
<d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>",
    )
    .unwrap();
    assert_eq!(info.root, pair(DAV, "sync-collection"));
    assert_eq!(info.sync_token.as_deref(), Some("http://x/sync/1&2"));
    assert_eq!(info.sync_level.as_deref(), Some("1"));
    assert_eq!(info.props, PropRequest::Props(vec![pair(DAV, "getetag")]));
    for body in [
        &b"<sync-collection xmlns='DAV:'><sync-token/><sync-level>1</sync-level></sync-collection>"
            [..],
        b"<sync-collection xmlns='DAV:'><sync-token>  </sync-token></sync-collection>",
    ] {
        assert_eq!(inspect(body).unwrap().sync_token.as_deref(), Some(""));
    }
}

#[test]
fn mkcalendar_components() {
    let body = br#"<C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
<D:set><D:prop><D:displayname>Work</D:displayname>
<C:supported-calendar-component-set><C:comp name="VEVENT"/><C:comp name='VTODO'></C:comp></C:supported-calendar-component-set>
</D:prop></D:set></C:mkcalendar>"#;
    let info = inspect(body).unwrap();
    assert_eq!(info.root, pair(CALDAV, "mkcalendar"));
    assert_eq!(info.components, vec!["VEVENT", "VTODO"]);
    assert_eq!(info.props, PropRequest::None);
}

#[test]
fn empty_and_malformed() {
    assert!(matches!(inspect(b""), Err(XmlError::Empty)));
    assert!(matches!(inspect(b" \r\n\t"), Err(XmlError::Empty)));
    for body in [
        &b"<propfind xmlns='DAV:'><prop>"[..],
        b"<D:propfind><D:prop/></D:propfind>",
        b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",
        b"<a/><b/>",
        b"<a/>trailing",
        b"garbage",
        b"<a><b></a>",
        b"<!-- only a comment -->",
        b"<a>&bogus;</a>",
    ] {
        let result = inspect(body);
        assert!(
            matches!(result, Err(XmlError::Malformed { .. })),
            "{:?}: {result:?}",
            String::from_utf8_lossy(body)
        );
    }
    let deep = "<a>".repeat(300) + &"</a>".repeat(300);
    assert!(matches!(
        inspect(deep.as_bytes()),
        Err(XmlError::TooDeep { .. })
    ));
}
