//! C12 item 6: data quirks: CDATA, the collection self-entry, ETag bumps and 412, validation
//! refusals, MKCALENDAR, sync-collection, duplicate DTSTAMP, photos.

mod common;
use common::*;
use icloud_standin::*;

fn home_url(s: &Standin, cal: &str) -> String {
    format!(
        "{}{DEMO_DSID}/calendars/{cal}/",
        s.partition_caldav_url(42).unwrap()
    )
}

fn book_url(s: &Standin) -> String {
    format!(
        "{}{DEMO_DSID}/carddavhome/card/",
        s.partition_carddav_url(42).unwrap()
    )
}

const QUERY_ALL: &str = r#"<?xml version="1.0" encoding="UTF-8"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>"#;

fn query_range(start: &str, end: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"><C:time-range start="{start}" end="{end}"/></C:comp-filter></C:comp-filter></C:filter></C:calendar-query>"#
    )
}

fn sync_body(token: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><sync-collection xmlns="DAV:"><sync-token>{token}</sync-token><sync-level>1</sync-level><prop><getetag/></prop></sync-collection>"#
    )
}

#[tokio::test]
async fn calendar_query_cdata_and_collection_self_entry() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let home = home_url(&s, "home");
    let r = dav.report(&home, "1", QUERY_ALL).await;
    assert_eq!(r.status(), 207);
    let xml = r.text().await.unwrap();
    let hrefs = response_hrefs(&xml);
    assert_eq!(hrefs[0], format!("/{DEMO_DSID}/calendars/home/"));
    assert!(hrefs.contains(&format!(
        "/{DEMO_DSID}/calendars/home/abc%40example.com.ics"
    )));
    // the self entry: getetag 200, calendar-data 404
    let first = xml.split("<response xmlns=\"DAV:\">").nth(1).unwrap();
    assert!(first.contains("<getetag xmlns=\"DAV:\">"));
    assert!(first.contains("<calendar-data xmlns=\"urn:ietf:params:xml:ns:caldav\"/>"));
    assert!(first.contains("HTTP/1.1 404 Not Found"));
    assert!(xml.contains("<calendar-data xmlns=\"urn:ietf:params:xml:ns:caldav\"><![CDATA[BEGIN:VCALENDAR\nVERSION:2.0\n"));
    assert!(!xml.contains("\r\n"));

    s.control().update_switches(|sw| {
        sw.cdata_calendar_data = false;
        sw.report_includes_collection = false;
        sw.xml_whitespace_noise = false;
    });
    let xml = dav
        .report(&home, "1", QUERY_ALL)
        .await
        .text()
        .await
        .unwrap();
    assert!(!xml.contains("CDATA"));
    assert!(xml.contains("BEGIN:VCALENDAR"));
    assert_ne!(
        response_hrefs(&xml)[0],
        format!("/{DEMO_DSID}/calendars/home/")
    );

    // time-range: the recurring event's third instance (an override) and nothing else
    let xml = dav
        .report(
            &home,
            "1",
            &query_range("20260119T000000Z", "20260120T000000Z"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        response_hrefs(&xml),
        vec![format!(
            "/{DEMO_DSID}/calendars/home/1761bf8c-6363-11eb-8fe4-74e5f9bfd8c1.ics"
        )]
    );
    let xml = dav
        .report(
            &home,
            "1",
            &query_range("20260110T103000Z", "20260110T120000Z"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        response_hrefs(&xml),
        vec![format!("/{DEMO_DSID}/calendars/home/abc%40example.com.ics")]
    );
    let xml = dav
        .report(
            &home,
            "1",
            &query_range("20300101T000000Z", "20300102T000000Z"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(response_hrefs(&xml).is_empty());

    // a leading-whitespace body is refused
    let r = dav.report(&home, "1", &format!("\n  {QUERY_ALL}")).await;
    assert_eq!(r.status(), 400);
    s.stop().await;
}

#[tokio::test]
async fn multiget_unknown_href_gets_404_entry() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let body = format!(
        r#"<?xml version="1.0"?><C:calendar-multiget xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><D:href>/{DEMO_DSID}/calendars/home/abc%40example.com.ics</D:href><D:href>/{DEMO_DSID}/calendars/home/missing.ics</D:href></C:calendar-multiget>"#
    );
    let xml = dav
        .report(&home_url(&s, "home"), "1", &body)
        .await
        .text()
        .await
        .unwrap();
    let missing = xml
        .split(&format!(
            "<href>/{DEMO_DSID}/calendars/home/missing.ics</href>"
        ))
        .nth(1)
        .unwrap();
    assert!(
        missing
            .trim_start()
            .starts_with("<status>HTTP/1.1 404 Not Found</status>"),
        "{xml}"
    );
    assert!(xml.contains("UID:abc@example.com"));
    s.stop().await;
}

#[tokio::test]
async fn etag_bump_without_edit_then_412() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let obj = format!("{}abc%40example.com.ics", home_url(&s, "home"));
    let r = dav.req("GET", &obj).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/calendar"));
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let body = r.text().await.unwrap();
    let bumped = s
        .control()
        .touch_etag(DEMO_APPLE_ID, "calendars/home", "abc@example.com.ics")
        .unwrap();
    assert_ne!(bumped, etag);
    assert_eq!(
        s.control()
            .get_object(DEMO_APPLE_ID, "calendars/home", "abc@example.com.ics")
            .unwrap()
            .1,
        body
    );
    let r = dav
        .req("PUT", &obj)
        .header("Content-Type", "text/calendar")
        .header("If-Match", &etag)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    let r = dav
        .req("PUT", &obj)
        .header("Content-Type", "text/calendar")
        .header("If-Match", &bumped)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        r.headers().get("etag").is_none(),
        "no ETag on PUT by default"
    );
    let r = dav
        .req("PUT", &obj)
        .header("Content-Type", "text/calendar")
        .header("If-None-Match", "*")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    // probabilistic housekeeping: with p=1 every request bumps
    s.control()
        .set_switch("etag_housekeeping_bump", "1")
        .unwrap();
    let e1 = dav.req("GET", &obj).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    let e2 = dav.req("GET", &obj).send().await.unwrap().headers()["etag"]
        .to_str()
        .unwrap()
        .to_string();
    assert_ne!(e1, e2);
    s.stop().await;
}

#[tokio::test]
async fn put_validation_refusals() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let home = home_url(&s, "home");
    // no DTEND and no DURATION: 404 with an empty body
    let r = dav
        .put(
            &format!("{home}no-end.ics"),
            "text/calendar; charset=utf-8",
            &event("no-end", "20260301T100000Z", None),
        )
        .await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().is_empty());
    // DTEND = DTSTART is fine: 201, no ETag header
    let r = dav
        .put(
            &format!("{home}zero.ics"),
            "text/calendar",
            &event("zero", "20260301T100000Z", Some("20260301T100000Z")),
        )
        .await;
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("etag").is_none());
    // the stored copy gains Apple's x-props
    let (_, stored) = s
        .control()
        .get_object(DEMO_APPLE_ID, "calendars/home", "zero.ics")
        .unwrap();
    assert!(stored.contains("X-APPLE-CREATOR-IDENTITY"));
    // DURATION counts, unless dtend_only
    let dur = EVENT.replace("DTEND:20260201T110000Z", "DURATION:PT1H");
    assert_eq!(
        dav.put(&format!("{home}dur.ics"), "text/calendar", &dur)
            .await
            .status(),
        201
    );
    s.control().set_switch("dtend_rule", "dtend_only").unwrap();
    assert_eq!(
        dav.put(&format!("{home}dur2.ics"), "text/calendar", &dur)
            .await
            .status(),
        404
    );
    // wrong content type
    assert_eq!(
        dav.put(&format!("{home}ct.ics"), "text/plain", EVENT)
            .await
            .status(),
        415
    );
    // VJOURNAL: 500
    let journal = EVENT.replace("VEVENT", "VJOURNAL");
    assert_eq!(
        dav.put(&format!("{home}j.ics"), "text/calendar", &journal)
            .await
            .status(),
        500
    );
    // a VTODO in a VEVENT calendar: 403
    let todo = EVENT.replace("VEVENT", "VTODO");
    assert_eq!(
        dav.put(&format!("{home}t.ics"), "text/calendar", &todo)
            .await
            .status(),
        403
    );
    assert_eq!(
        dav.put(
            &format!("{}t.ics", home_url(&s, "tasks")),
            "text/calendar",
            &todo
        )
        .await
        .status(),
        201
    );
    // put_returns_etag_header
    s.control()
        .set_switch("put_returns_etag_header", "true")
        .unwrap();
    let r = dav
        .put(&format!("{home}e.ics"), "text/calendar", EVENT)
        .await;
    assert_eq!(r.status(), 201);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        s.control()
            .get_object(DEMO_APPLE_ID, "calendars/home", "e.ics")
            .unwrap()
            .0,
        etag
    );

    // vCard without N: 403, empty body; with N: 201
    let book = book_url(&s);
    let no_n = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:No Name\r\nUID:nn\r\nEND:VCARD\r\n";
    let r = dav
        .put(&format!("{book}nn.vcf"), "text/vcard; charset=utf-8", no_n)
        .await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().is_empty());
    let with_n = no_n.replace("FN:No Name", "N:;;;;\r\nFN:No Name");
    assert_eq!(
        dav.put(&format!("{book}nn.vcf"), "text/vcard", &with_n)
            .await
            .status(),
        201
    );
    let r = dav
        .req("GET", &format!("{book}nn.vcf"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "text/plain");
    s.stop().await;
}

#[tokio::test]
async fn mkcalendar_component_rules_and_collection_ops() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let two = r#"<?xml version="1.0" encoding="UTF-8"?><C:mkcalendar xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:set><D:prop><D:displayname>Both</D:displayname><C:supported-calendar-component-set><C:comp name="VEVENT"/><C:comp name="VTODO"/></C:supported-calendar-component-set></D:prop></D:set></C:mkcalendar>"#;
    let r = dav
        .req("MKCALENDAR", &home_url(&s, "both"))
        .body(two)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "text/html");
    let text = r.text().await.unwrap();
    assert!(text.contains(
        "SupportedCalendarComponentSet length exceeded, only one calendar component type supported"
    ));
    let one = two
        .replace(r#"<C:comp name="VTODO"/>"#, "")
        .replace("Both", "Trips");
    let r = dav
        .req("MKCALENDAR", &home_url(&s, "trips"))
        .body(one.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = dav
        .req("MKCALENDAR", &home_url(&s, "trips"))
        .body(one)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = dav
        .req("MKCOL", &home_url(&s, "viamkcol"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = dav
        .req("MKCALENDAR", &home_url(&s, "with%20space"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // PROPPATCH displayname and color
    let patch = r#"<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:I="http://apple.com/ns/ical/"><D:set><D:prop><D:displayname>Travel</D:displayname><I:calendar-color>#FF0000FF</I:calendar-color></D:prop></D:set></D:propertyupdate>"#;
    let r = dav
        .req("PROPPATCH", &home_url(&s, "trips"))
        .body(patch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    assert!(r.text().await.unwrap().contains("HTTP/1.1 200 OK"));
    let xml = dav
        .propfind(&home_url(&s, "trips"), "0", "")
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains(r#"<displayname xmlns="DAV:">Travel</displayname>"#));
    assert!(xml.contains("#FF0000FF"));
    // MOVE an event between calendars
    let put = dav
        .put(
            &format!("{}m.ics", home_url(&s, "home")),
            "text/calendar",
            EVENT,
        )
        .await;
    assert_eq!(put.status(), 201);
    let r = dav
        .req("MOVE", &format!("{}m.ics", home_url(&s, "home")))
        .header("Destination", format!("{}moved.ics", home_url(&s, "trips")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        s.control().list_objects(DEMO_APPLE_ID, "calendars/trips"),
        vec!["moved.ics"]
    );
    assert!(!s
        .control()
        .list_objects(DEMO_APPLE_ID, "calendars/home")
        .contains(&"m.ics".to_string()));
    // DELETE the calendar
    let r = dav
        .req("DELETE", &home_url(&s, "trips"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        dav.propfind(&home_url(&s, "trips"), "0", "").await.status(),
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn sync_collection_changes_deletions_and_invalid_token() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let work = home_url(&s, "work");
    let r = dav.report(&work, "0", &sync_body("")).await;
    assert_eq!(r.status(), 207);
    let xml = r.text().await.unwrap();
    assert!(xml.trim_end().ends_with("</multistatus>"));
    let token = between(&xml, "<sync-token", "</sync-token>")
        .unwrap()
        .to_string();
    assert!(token.starts_with("HwoQ") && !token.contains(':'));
    // the token is the last child of multistatus
    let after_token = xml.split("</sync-token>").nth(1).unwrap();
    assert_eq!(after_token.trim(), "</multistatus>");
    let hrefs = response_hrefs(&xml);
    assert_eq!(hrefs[0], format!("/{DEMO_DSID}/calendars/work/"));
    assert_eq!(hrefs.len(), 3);

    // another device adds one, the client deletes one
    let etag = s.control().put_object(
        DEMO_APPLE_ID,
        "calendars/work",
        "new@device.ics",
        &event("dev", "20260401T100000Z", Some("20260401T110000Z")),
    );
    assert!(etag.starts_with('"'));
    let r = dav
        .req("DELETE", &format!("{work}allday-offsite.ics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let xml = dav
        .report(&work, "0", &sync_body(&token))
        .await
        .text()
        .await
        .unwrap();
    let hrefs = response_hrefs(&xml);
    assert_eq!(
        hrefs,
        vec![
            format!("/{DEMO_DSID}/calendars/work/"),
            format!("/{DEMO_DSID}/calendars/work/new%40device.ics"),
            format!("/{DEMO_DSID}/calendars/work/allday-offsite.ics"),
        ]
    );
    assert!(xml.contains(&etag));
    let deleted = xml.split("allday-offsite.ics</href>").nth(1).unwrap();
    assert!(deleted
        .trim_start()
        .starts_with("<status>HTTP/1.1 404 Not Found</status>"));
    let token2 = between(&xml, "<sync-token", "</sync-token>")
        .unwrap()
        .to_string();
    assert_ne!(token, token2);
    // nothing new since token2
    let xml = dav
        .report(&work, "0", &sync_body(&token2))
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(response_hrefs(&xml).len(), 1);

    // an invalid token: bare 403
    let r = dav.report(&work, "0", &sync_body("HwoQbogus")).await;
    assert_eq!(r.status(), 403);
    assert!(r.bytes().await.unwrap().is_empty());
    // invalidated tokens: 403, then a full resync works
    s.control()
        .invalidate_sync_tokens(DEMO_APPLE_ID, "calendars/work");
    assert_eq!(
        dav.report(&work, "0", &sync_body(&token2)).await.status(),
        403
    );
    assert_eq!(dav.report(&work, "0", &sync_body("")).await.status(), 207);
    s.control()
        .set_switch("invalid_token_style", "rfc6578")
        .unwrap();
    let r = dav.report(&work, "0", &sync_body("nope")).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("<valid-sync-token/>"));
    // CardDAV sync works too
    let r = dav.report(&book_url(&s), "0", &sync_body("")).await;
    assert_eq!(r.status(), 207);
    assert_eq!(response_hrefs(&r.text().await.unwrap()).len(), 5);
    s.stop().await;
}

#[tokio::test]
async fn duplicate_dtstamp_photos_and_addressbook_query() {
    let s = start_demo().await;
    let dav = Dav::alice();
    s.control().set_switch("duplicate_dtstamp", "true").unwrap();
    let ics = dav
        .req(
            "GET",
            &format!("{}abc%40example.com.ics", home_url(&s, "home")),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ics.matches("DTSTAMP:").count(), 2);

    // addressbook-query without a filter returns every card, the group included
    let q = r#"<?xml version="1.0"?><C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:prop><D:getetag/><C:address-data/></D:prop></C:addressbook-query>"#;
    let xml = dav
        .report(&book_url(&s), "1", q)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(response_hrefs(&xml).len(), 5, "self + 4 cards");
    assert!(xml.contains("X-ADDRESSBOOKSERVER-KIND:group"));
    assert!(
        xml.contains("item1.X-ABLabel:_$!&lt;Other&gt;!$_")
            || xml.contains("item1.X-ABLabel:_$!<Other>!$_")
    );
    let fq = r#"<?xml version="1.0"?><C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:prop><D:getetag/></D:prop><C:filter><C:prop-filter name="FN"><C:text-match match-type="contains">carol</C:text-match></C:prop-filter></C:filter></C:addressbook-query>"#;
    let xml = dav
        .report(&book_url(&s), "1", fq)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        response_hrefs(&xml),
        vec![
            format!("/{DEMO_DSID}/carddavhome/card/"),
            format!("/{DEMO_DSID}/carddavhome/card/carol.vcf")
        ]
    );

    // partial address-data is ignored by default, honoured when the switch is off
    let pq = r#"<?xml version="1.0"?><C:addressbook-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:prop><C:address-data><C:prop name="FN"/></C:address-data></D:prop><C:filter><C:prop-filter name="FN"><C:text-match>dave</C:text-match></C:prop-filter></C:filter></C:addressbook-query>"#;
    let xml = dav
        .report(&book_url(&s), "1", pq)
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains("TEL;type=HOME"));
    s.control()
        .set_switch("ignore_partial_props", "false")
        .unwrap();
    let xml = dav
        .report(&book_url(&s), "1", pq)
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains("FN:Dave Smith") && !xml.contains("TEL;") && !xml.contains("N:Smith"));

    // the photo is a URI on the partition card port, fetched with Basic auth
    let (_, bob) = s
        .control()
        .get_object(DEMO_APPLE_ID, "carddavhome/card", "bob.vcf")
        .unwrap();
    let line = bob.lines().find(|l| l.starts_with("PHOTO")).unwrap();
    assert!(line.contains("X-ABCROP-RECTANGLE="));
    let uri = line
        .split_once(":http")
        .map(|(_, u)| format!("http{u}"))
        .unwrap();
    assert!(
        uri.starts_with(&format!(
            "{}{DEMO_DSID}/wcs/",
            s.partition_carddav_url(42).unwrap()
        )),
        "{uri}"
    );
    let r = dav.req("GET", &uri).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.bytes().await.unwrap().as_ref(), DEMO_JPEG);
    assert_eq!(client().get(&uri).send().await.unwrap().status(), 401);
    s.control().set_switch("photo_style", "inline").unwrap();
    let (_, bob) = s
        .control()
        .get_object(DEMO_APPLE_ID, "carddavhome/card", "bob.vcf")
        .unwrap();
    assert!(bob.contains("PHOTO;ENCODING=b;TYPE=JPEG:/9j/"));
    s.stop().await;
}

#[tokio::test]
async fn eventual_consistency_lists_before_it_serves() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let home = home_url(&s, "home");
    let token = {
        let xml = dav
            .report(&home, "0", &sync_body(""))
            .await
            .text()
            .await
            .unwrap();
        between(&xml, "<sync-token", "</sync-token>")
            .unwrap()
            .to_string()
    };
    s.control()
        .set_switch("eventual_consistency_ms", "300")
        .unwrap();
    assert_eq!(
        dav.put(&format!("{home}ec.ics"), "text/calendar", EVENT)
            .await
            .status(),
        201
    );
    let xml = dav
        .report(&home, "0", &sync_body(&token))
        .await
        .text()
        .await
        .unwrap();
    assert!(xml.contains("/ec.ics</href>"));
    assert_eq!(
        dav.req("GET", &format!("{home}ec.ics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    assert_eq!(
        dav.req("GET", &format!("{home}ec.ics"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    s.stop().await;
}
