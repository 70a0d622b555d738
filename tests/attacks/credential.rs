//! Findings 1 and 2: the stored password goes only where the configuration says, and only
//! Apple's DAV answers judge it.
//!
//! The stand-in serves every role on 127.0.0.1, each on its own port, like iCloud's hosts on
//! port 443. The attacker's listener ("spy") sits on another port of that same host: a bridge
//! that compared host names only would hand it the Apple ID and app-specific password.

use base64::Engine;
use icloud_bridge::standin::DEMO_APPLE_ID;

use crate::support::*;

const LIST: &str =
    r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;

/// The bridge with `carddav.photos = "link"`: photos stay `_up` links, which these attacks
/// forge and follow.
async fn start_linked() -> Env {
    start_with(Options {
        tweak: Box::new(|c| c.carddav.photos = icloud_bridge::config::Photos::Link),
        ..Default::default()
    })
    .await
}

/// The `_up` photo link in the first contact that has one.
async fn a_photo_link(env: &Env) -> String {
    let (s, listing) = env.propfind("/dav/alice/contacts/card/", "1", LIST).await;
    assert_eq!(s, 207, "{listing}");
    for href in hrefs(&listing).into_iter().filter(|h| h.ends_with(".vcf")) {
        let card = env
            .req("GET", &href)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if let Some(line) = card.lines().find(|l| l.starts_with("PHOTO")) {
            let url = line[line.find("http").expect("photo URL")..].trim();
            assert!(url.contains("/dav/alice/_up/"), "{url}");
            return url.to_string();
        }
    }
    panic!("no contact with a photo link in the demo data");
}

/// GET an absolute bridge URL (a photo link) with the device's login.
async fn fetch(env: &Env, url: &str) -> reqwest::Response {
    env.http
        .get(url)
        .basic_auth(&env.user, Some(&env.pass))
        .send()
        .await
        .unwrap()
}

fn nothing_reached(spy: &Sink) {
    let got = spy.received();
    assert!(
        got.is_empty() && spy.attempts.load(std::sync::atomic::Ordering::SeqCst) == 0,
        "the spy on another port of the upstream host received {} request(s), e.g. {:?}",
        got.len(),
        got.first()
            .map(|r| (&r.path, r.headers.contains_key("authorization")))
    );
}

#[tokio::test]
async fn a_forged_up_key_for_another_port_of_the_upstream_host_gets_nothing() {
    let env = start_linked().await;
    let spy = Sink::start(0).await;
    let target = spy.url("/steal");
    // The old key format (the URL, base64url), a signed key with its URL swapped, and one
    // with a flipped character.
    let unsigned = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&target);
    let photo = a_photo_link(&env).await;
    let key = photo.rsplit('/').next().unwrap().to_string();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&key)
        .unwrap();
    let mut swapped = raw[..16].to_vec();
    swapped.extend_from_slice(target.as_bytes());
    let swapped = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(swapped);
    let mut flipped = key.clone().into_bytes();
    flipped[3] = if flipped[3] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for forged in [unsigned, swapped, flipped] {
        let r = env
            .req("GET", &format!("/dav/alice/_up/{forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "forged key {forged}");
    }
    // The genuine link still works.
    let r = fetch(&env, &photo).await;
    assert_eq!(r.status(), 200);
    nothing_reached(&spy);
    env.stop().await;
}

#[tokio::test]
async fn a_planted_attach_or_url_to_another_port_is_left_as_it_is() {
    let env = start().await;
    let spy = Sink::start(0).await;
    // An invitation someone sent: its ATTACH and URL name the spy, on the upstream's host.
    let attach = spy.url("/invite.pdf");
    let link = spy.url("/details");
    let ics = format!(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//x//x//EN\r\nBEGIN:VEVENT\r\nUID:planted-1\r\nDTSTAMP:20260101T000000Z\r\nDTSTART:20260110T100000Z\r\nDTEND:20260110T110000Z\r\nSUMMARY:Planted\r\nATTACH:{attach}\r\nURL:{link}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    );
    env.control()
        .put_object(DEMO_APPLE_ID, "calendars/home", "planted-1.ics", &ics);
    let body = env
        .req("GET", "/dav/alice/calendars/home/planted-1.ics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains(&format!("ATTACH:{attach}")), "{body}");
    assert!(body.contains(&format!("URL:{link}")), "{body}");
    assert!(!body.contains("/_up/"), "minted a bridge link: {body}");
    // The same through a calendar-query with calendar-data.
    let q = r#"<?xml version="1.0" encoding="utf-8"?><c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><c:calendar-data/></d:prop><c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter></c:calendar-query>"#;
    let (s, listing) = env.report("/dav/alice/calendars/home/", "1", q).await;
    assert_eq!(s, 207);
    assert!(listing.contains(&attach), "{listing}");
    assert!(!listing.contains("/_up/"), "{listing}");
    nothing_reached(&spy);
    env.stop().await;
}

#[tokio::test]
async fn a_redirect_to_another_port_is_not_followed_with_the_password() {
    let env = start_linked().await;
    let spy = Sink::start(0).await;
    let photo = a_photo_link(&env).await;
    // Upstream answers photo and object fetches with a 302 to the spy.
    let c = env.control();
    c.set_switch("hostile.redirect_location", &spy.url("/caught"))
        .unwrap();
    c.set_switch("hostile.redirect_path", "/wcs/").unwrap();
    let r = fetch(&env, &photo).await;
    assert_eq!(r.status(), 502, "a photo sent elsewhere");
    assert!(r.headers().get("location").is_none());
    c.set_switch("hostile.redirect_path", ".ics").unwrap();
    let (s, _) = env
        .xml("PROPFIND", "/dav/alice/calendars/home/", "1", LIST)
        .await;
    assert_eq!(s, 207);
    let r = env
        .req("GET", "/dav/alice/calendars/home/planted-nothing.ics")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "an object sent elsewhere");
    assert_eq!(
        env.put_event(
            "/dav/alice/calendars/home/redirected.ics",
            "redirected",
            "x"
        )
        .await,
        502
    );
    nothing_reached(&spy);
    // Nothing of this counts against the password.
    let st = env.status_json().await;
    assert_eq!(st["accounts"][0]["state"], "ok", "{st}");
    env.stop().await;
}

#[tokio::test]
async fn a_photo_that_answers_401_does_not_mark_the_password_revoked() {
    let env = start_linked().await;
    let photo = a_photo_link(&env).await;
    env.control()
        .set_switch("hostile.unauthorized_path", "/wcs/")
        .unwrap();
    env.control().clear_request_log();
    for _ in 0..5 {
        let r = fetch(&env, &photo).await;
        assert_eq!(r.status(), 502, "never a 401 (it would prompt) nor a 503");
        assert!(r.headers().get("www-authenticate").is_none());
    }
    // At most one check of the password, and Apple's DAV answer to it says all is well.
    let probes = env
        .control()
        .request_log()
        .iter()
        .filter(|r| r.method == "PROPFIND" && r.path.contains("/principal"))
        .count();
    assert!(probes <= 1, "{probes} probes of the principal");
    let st = env.status_json().await;
    assert_eq!(st["accounts"][0]["state"], "ok", "{st}");
    // Writes and uncached reads go on.
    assert_eq!(
        env.put_event(
            "/dav/alice/calendars/home/after-photo.ics",
            "after-photo",
            "still fine"
        )
        .await,
        201
    );
    env.stop().await;
}

#[tokio::test]
async fn a_refused_photo_after_a_real_revocation_tells_the_truth() {
    let env = start_linked().await;
    let photo = a_photo_link(&env).await;
    env.control()
        .revoke_asp(DEMO_APPLE_ID, icloud_bridge::standin::DEMO_APP_PASSWORD);
    let r = fetch(&env, &photo).await;
    // The probe of the principal is what found out, and it says so.
    assert_eq!(r.status(), 503);
    let st = env.status_json().await;
    assert_eq!(st["accounts"][0]["state"], "auth_rejected", "{st}");
    env.stop().await;
}
