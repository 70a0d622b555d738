//! C12 item 5 and C11: rate limits, random 5xx, hangs/delays, resets, latency, the request log;
//! plus large listings (streamed) and keep-alive.

mod common;
use common::*;
use icloud_standin::*;
use std::time::{Duration, Instant};

#[tokio::test]
async fn rate_limit_503_without_then_with_retry_after_and_429() {
    let s = start_demo().await;
    let dav = Dav::alice();
    let ctl = s.control();
    ctl.set_switch("rate.limit_after", "2").unwrap();
    assert_eq!(
        dav.propfind(&s.caldav_url(), "0", PROPFIND_CUP)
            .await
            .status(),
        207
    );
    assert_eq!(
        dav.propfind(&s.caldav_url(), "0", PROPFIND_CUP)
            .await
            .status(),
        207
    );
    let r = dav.propfind(&s.caldav_url(), "0", PROPFIND_CUP).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_none());
    assert!(r.headers()["server"]
        .to_str()
        .unwrap()
        .starts_with("AppleHttpServer/"));
    assert!(r.bytes().await.unwrap().is_empty());
    ctl.set_switch("rate.retry_after", "30").unwrap();
    let r = dav.propfind(&s.caldav_url(), "0", PROPFIND_CUP).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");
    ctl.set_switch("rate.status", "429").unwrap();
    assert_eq!(
        dav.propfind(&s.caldav_url(), "0", PROPFIND_CUP)
            .await
            .status(),
        429
    );
    // everything limited right away
    ctl.set_switch("rate.limit_after", "0").unwrap();
    ctl.set_switch("rate.window_ms", "1").unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        dav.propfind(&s.caldav_url(), "0", PROPFIND_CUP)
            .await
            .status(),
        429
    );
    ctl.set_switch("rate.limit_after", "none").unwrap();
    assert_eq!(
        dav.propfind(&s.caldav_url(), "0", PROPFIND_CUP)
            .await
            .status(),
        207
    );
    s.stop().await;
}

#[tokio::test]
async fn flaky_5xx_timeouts_resets_and_latency() {
    let s = start_demo().await;
    let ctl = s.control();
    let dav = Dav::alice();
    let obj = format!(
        "{}{DEMO_DSID}/calendars/home/abc%40example.com.ics",
        s.partition_caldav_url(42).unwrap()
    );

    ctl.set_switch("flaky.5xx", "1").unwrap();
    for _ in 0..5 {
        let st = dav.req("GET", &obj).send().await.unwrap().status().as_u16();
        assert!([500, 502, 503].contains(&st), "{st}");
    }
    ctl.set_switch("flaky.5xx", "0").unwrap();

    // delayed answer
    ctl.update_switches(|sw| {
        sw.flaky_timeout = 1.0;
        sw.flaky_timeout_delay_ms = Some(200);
    });
    let t = Instant::now();
    assert_eq!(dav.req("GET", &obj).send().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    // hang: the client gives up
    ctl.set_switch("flaky.timeout_delay_ms", "none").unwrap();
    let err = dav
        .req("GET", &obj)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(err.is_err());
    ctl.set_switch("flaky.timeout", "0").unwrap();

    // reset mid-response
    ctl.set_switch("flaky.reset", "1").unwrap();
    let outcome = match dav.req("GET", &obj).send().await {
        Ok(r) => r.bytes().await.map(|b| b.len()),
        Err(e) => Err(e),
    };
    assert!(outcome.is_err(), "body should break off: {outcome:?}");
    ctl.set_switch("flaky.reset", "0").unwrap();

    // latency on every response
    ctl.set_switch("latency_ms", "120").unwrap();
    let t = Instant::now();
    assert_eq!(dav.req("GET", &obj).send().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(120));
    s.stop().await;
}

#[tokio::test]
async fn request_log_records_everything() {
    let s = start_demo().await;
    let ctl = s.control();
    ctl.clear_request_log();
    let dav = Dav::alice();
    let home = format!(
        "{}{DEMO_DSID}/calendars/home/",
        s.partition_caldav_url(42).unwrap()
    );
    dav.put(
        &format!("{home}log.ics"),
        "text/calendar",
        &event("log", "20260101T100000Z", None),
    )
    .await;
    let _ = client().get(s.caldav_url()).send().await.unwrap();
    let log = ctl.request_log();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].method, "PUT");
    assert_eq!(log[0].path, format!("/{DEMO_DSID}/calendars/home/log.ics"));
    assert_eq!(log[0].status, 404);
    assert!(String::from_utf8_lossy(&log[0].body).contains("UID:log"));
    assert!(log[0]
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "text/calendar"));
    assert_eq!(
        log[0].host,
        s.partition_caldav_url(42)
            .unwrap()
            .trim_start_matches("http://")
            .trim_end_matches('/')
    );
    assert_eq!(log[0].role, "part-cal/42");
    assert_eq!(log[1].status, 400);
    s.stop().await;
}

#[tokio::test]
async fn big_calendar_listing_streams_and_keeps_alive() {
    let s = Standin::start(StandinConfig::empty()).await.unwrap();
    let ctl = s.control();
    for i in 0..3000 {
        let body = event(
            &format!("ev-{i}"),
            "20260301T100000Z",
            Some("20260301T110000Z"),
        );
        ctl.put_object(
            DEMO_APPLE_ID,
            "calendars/work",
            &format!("ev-{i}.ics"),
            &body,
        );
    }
    let dav = Dav::alice();
    let work = format!(
        "{}{DEMO_DSID}/calendars/work/",
        s.partition_caldav_url(42).unwrap()
    );
    let t = Instant::now();
    let r = dav.propfind(&work, "1", r#"<?xml version="1.0"?><propfind xmlns="DAV:"><prop><getetag/><getcontenttype/></prop></propfind>"#).await;
    assert_eq!(r.status(), 207);
    let xml = r.text().await.unwrap();
    assert_eq!(response_hrefs(&xml).len(), 3001);
    assert!(xml.trim_end().ends_with("</multistatus>"));
    let q = r#"<?xml version="1.0"?><C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><D:prop><D:getetag/><C:calendar-data/></D:prop><C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter></C:calendar-query>"#;
    let xml = dav.report(&work, "1", q).await.text().await.unwrap();
    assert_eq!(xml.matches("BEGIN:VCALENDAR").count(), 3000);
    // many GETs over one kept-alive connection
    for i in 0..200 {
        let r = dav
            .req("GET", &format!("{work}ev-{i}.ics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert!(t.elapsed() < Duration::from_secs(20));
    s.stop().await;
}
