//! C12 items 1–2: discovery through every entry point, CardDAV's single book, partitions.

mod common;
use common::*;
use icloud_standin::{DEMO_APPLE_ID, DEMO_DSID};

const PRINCIPAL_PROPS: &str = r#"<?xml version="1.0" encoding="UTF-8"?><propfind xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav" xmlns:A="urn:ietf:params:xml:ns:carddav"><prop><C:calendar-home-set/><A:addressbook-home-set/><displayname/><C:schedule-inbox-URL/><foo xmlns="urn:x"/></prop></propfind>"#;

#[tokio::test]
async fn get_on_root_and_well_known_is_400() {
    let s = start_demo().await;
    let c = client();
    let r = c.get(s.caldav_url()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["connection"], "close");
    assert!(r.text().await.unwrap().is_empty());
    let r = c
        .get(url(&s.caldav_url(), "/.well-known/caldav"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "text/html");
    assert_eq!(r.headers()["connection"], "close");
    let body = r.text().await.unwrap();
    assert!(body.contains("<center><h1>400 Bad Request</h1></center>"));
    assert!(body.contains(&format!(
        "<hr><center>AppleHttpServer/{}</center>",
        s.server_hash()
    )));
    // with the switch off, GET / gets the HTML page too
    s.control()
        .set_switch("empty_400_on_root", "false")
        .unwrap();
    let r = c.get(s.caldav_url()).send().await.unwrap();
    assert!(r.text().await.unwrap().contains("400 Bad Request"));
    s.stop().await;
}

#[tokio::test]
async fn caldav_discovery_root_principal_partition_home_listing() {
    let s = start_demo().await;
    let dav = Dav::alice();
    // PROPFIND / answered in place
    let r = dav.propfind(&s.caldav_url(), "0", PROPFIND_CUP).await;
    assert_eq!(r.status(), 207);
    assert_eq!(r.headers()["x-apple-user-partition"], "42");
    let server = r.headers()["server"].to_str().unwrap().to_string();
    let hash = server.strip_prefix("AppleHttpServer/").unwrap();
    assert!(hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit()));
    for h in [
        "x-apple-request-uuid",
        "strict-transport-security",
        "via",
        "access-control-expose-headers",
        "x-apple-edge-response-time",
    ] {
        assert!(r.headers().contains_key(h), "{h} missing");
    }
    assert!(r.headers()["x-responding-instance"]
        .to_str()
        .unwrap()
        .starts_with("caldavj:3:p"));
    let xml = r.text().await.unwrap();
    assert!(xml.starts_with(r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>"#));
    assert!(xml.contains(r#"<multistatus xmlns="DAV:">"#));
    assert!(!xml.contains("<d:") && !xml.contains("<D:"));
    assert_eq!(response_hrefs(&xml), vec!["/"]);
    assert!(xml.contains(&format!(
        r#"<current-user-principal xmlns="DAV:"><href xmlns="DAV:">/{DEMO_DSID}/principal/</href></current-user-principal>"#
    )));

    // well-known in place: href is the principal
    let r = dav
        .propfind(
            &url(&s.caldav_url(), "/.well-known/caldav"),
            "0",
            PROPFIND_CUP,
        )
        .await;
    assert_eq!(r.status(), 207);
    let xml = r.text().await.unwrap();
    assert_eq!(
        response_hrefs(&xml),
        vec![format!("/{DEMO_DSID}/principal/")]
    );

    // principal: absolute home-set on the partition port; unknown props in a 404 propstat
    let r = dav
        .propfind(
            &url(&s.caldav_url(), &format!("/{DEMO_DSID}/principal/")),
            "0",
            PRINCIPAL_PROPS,
        )
        .await;
    assert_eq!(r.status(), 207);
    let xml = r.text().await.unwrap();
    let part = s.partition_caldav_url(42).unwrap();
    let home = format!("{part}{DEMO_DSID}/calendars/");
    assert!(
        home.starts_with("http://127.0.0.1:")
            && home != format!("{}{DEMO_DSID}/calendars/", s.caldav_url())
    );
    assert!(xml.contains(&format!(
        r#"<calendar-home-set xmlns="urn:ietf:params:xml:ns:caldav"><href xmlns="DAV:">{home}</href></calendar-home-set>"#
    )), "{xml}");
    assert!(xml.contains(r#"<displayname xmlns="DAV:">Alice Example</displayname>"#));
    let notfound = xml.split("HTTP/1.1 200 OK").nth(1).unwrap();
    assert!(notfound.contains(r#"<foo xmlns="urn:x"/>"#));
    assert!(notfound.contains(r#"<addressbook-home-set xmlns="urn:ietf:params:xml:ns:carddav"/>"#));
    assert!(notfound.contains("HTTP/1.1 404 Not Found"));

    // home listing on the partition host
    let r = dav.propfind(&home, "1", "").await;
    assert_eq!(r.status(), 207);
    assert!(r.headers()["x-responding-instance"]
        .to_str()
        .unwrap()
        .starts_with("caldavj:3:p42-caldavj-"));
    let xml = r.text().await.unwrap();
    let hrefs = response_hrefs(&xml);
    for id in [
        "",
        "home/",
        "work/",
        "tasks/",
        "inbox/",
        "outbox/",
        "notification/",
    ] {
        assert!(
            hrefs.contains(&format!("/{DEMO_DSID}/calendars/{id}")),
            "{id} missing: {hrefs:?}"
        );
    }
    assert!(hrefs.contains(&format!(
        "/{DEMO_DSID}/calendars/{}/",
        icloud_standin::DEMO_UUID_CALENDAR
    )));
    assert!(hrefs.contains(&format!(
        "/{DEMO_DSID}/calendars/{}/",
        icloud_standin::DEMO_HEX_CALENDAR
    )));
    assert!(xml.contains("<comp name='VEVENT' xmlns='urn:ietf:params:xml:ns:caldav'/>"));
    assert!(xml.contains("<comp name='VTODO' xmlns='urn:ietf:params:xml:ns:caldav'/>"));
    assert!(xml.contains(r#"<displayname xmlns="DAV:">Reminders</displayname>"#));
    let ctag = between(&xml, "<getctag", "</getctag>").unwrap();
    assert!(ctag.starts_with("HwoQ"), "{ctag}");

    // a calendar's members: percent-encoded hrefs
    let r = dav
        .propfind(
            &format!("{home}home/"),
            "1",
            r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/></prop></propfind>"#,
        )
        .await;
    let xml = r.text().await.unwrap();
    let hrefs = response_hrefs(&xml);
    assert!(
        hrefs.contains(&format!(
            "/{DEMO_DSID}/calendars/home/abc%40example.com.ics"
        )),
        "{hrefs:?}"
    );
    let etag = between(&xml, "<getetag", "</getetag>").unwrap();
    assert!(
        etag.len() == 10
            && etag.starts_with('"')
            && etag[1..9]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "{etag}"
    );

    // OPTIONS advertises calendar-access
    let r = dav
        .req(
            "OPTIONS",
            &url(&s.caldav_url(), &format!("/{DEMO_DSID}/principal/")),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["dav"]
        .to_str()
        .unwrap()
        .contains("calendar-access"));
    s.stop().await;
}

#[tokio::test]
async fn well_known_redirect_301_variant() {
    let s = start_demo().await;
    s.control()
        .set_switch("well_known_mode", "redirect_301")
        .unwrap();
    let dav = Dav::alice();
    let r = dav
        .propfind(
            &url(&s.caldav_url(), "/.well-known/caldav"),
            "0",
            PROPFIND_CUP,
        )
        .await;
    assert_eq!(r.status(), 301);
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(loc, s.caldav_url());
    let r = dav.propfind(&loc, "0", PROPFIND_CUP).await;
    assert_eq!(r.status(), 207);
    s.stop().await;
}

#[tokio::test]
async fn carddav_discovery_reaches_exactly_one_card_book() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let r = dav
        .propfind(
            &url(&s.carddav_url(), "/.well-known/carddav"),
            "0",
            PROPFIND_CUP,
        )
        .await;
    assert_eq!(r.status(), 207);
    let r = dav
        .propfind(
            &url(&s.carddav_url(), &format!("/{DEMO_DSID}/principal/")),
            "0",
            PRINCIPAL_PROPS,
        )
        .await;
    let xml = r.text().await.unwrap();
    let home = format!(
        "{}{DEMO_DSID}/carddavhome/",
        s.partition_carddav_url(42).unwrap()
    );
    assert!(xml.contains(&format!(
        r#"<addressbook-home-set xmlns="urn:ietf:params:xml:ns:carddav"><href xmlns="DAV:">{home}</href></addressbook-home-set>"#
    )), "{xml}");
    // calendar-home-set is not answered on the CardDAV host
    assert!(xml.contains(r#"<calendar-home-set xmlns="urn:ietf:params:xml:ns:caldav"/>"#));
    let r = dav.propfind(&home, "1", r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/><displayname/></prop></propfind>"#).await;
    assert_eq!(r.status(), 207);
    assert!(r.headers()["x-responding-instance"]
        .to_str()
        .unwrap()
        .starts_with("carddavj:"));
    let xml = r.text().await.unwrap();
    assert_eq!(
        xml.matches(r#"<addressbook xmlns="urn:ietf:params:xml:ns:carddav"/>"#)
            .count(),
        1
    );
    assert_eq!(
        response_hrefs(&xml),
        vec![
            format!("/{DEMO_DSID}/carddavhome/"),
            format!("/{DEMO_DSID}/carddavhome/card/")
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn partition_moved_answers_301_to_the_new_host() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let old = s.partition_caldav_url(42).unwrap();
    s.control().move_partition(DEMO_APPLE_ID, 43);
    let new = s.partition_caldav_url(43).unwrap();
    assert_ne!(old, new);
    let path = format!("/{DEMO_DSID}/calendars/");
    let r = dav.propfind(&url(&old, &path), "1", "").await;
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"].to_str().unwrap(), url(&new, &path));
    assert_eq!(r.headers()["x-apple-user-partition"], "43");
    let r = dav.propfind(&url(&new, &path), "1", "").await;
    assert_eq!(r.status(), 207);
    // the principal hands out the new home
    let r = dav
        .propfind(
            &url(&s.caldav_url(), &format!("/{DEMO_DSID}/principal/")),
            "0",
            PRINCIPAL_PROPS,
        )
        .await;
    assert!(r
        .text()
        .await
        .unwrap()
        .contains(&format!("{new}{DEMO_DSID}/calendars/")));
    // the alternative answer of the old host
    s.control()
        .set_switch("partition.moved_response", "401")
        .unwrap();
    let r = dav.propfind(&url(&old, &path), "1", "").await;
    assert_eq!(r.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn partition_unreachable_while_front_keeps_working() {
    let s = start_demo().await;
    let part = s.partition_caldav_url(42).unwrap();
    let path = format!("/{DEMO_DSID}/calendars/");
    s.control()
        .set_switch("partition.unreachable", "true")
        .unwrap();
    // The accept loop closes its socket.
    let secs = std::time::Duration::from_secs(5);
    wait_until(secs, "the partition refuses connections", || refuses(&part)).await;
    let dav = Dav::alice();
    let err = dav
        .req("PROPFIND", &url(&part, &path))
        .header("Depth", "0")
        .send()
        .await;
    assert!(err.is_err(), "partition should refuse connections");
    let r = dav.propfind(&url(&s.caldav_url(), &path), "1", "").await;
    assert_eq!(r.status(), 207);
    s.control()
        .set_switch("partition.unreachable", "false")
        .unwrap();
    wait_until(secs, "the partition accepts connections again", || async {
        !refuses(&part).await
    })
    .await;
    let dav = Dav::alice();
    let r = dav.propfind(&url(&part, &path), "0", "").await;
    assert_eq!(r.status(), 207);
    s.stop().await;
}
