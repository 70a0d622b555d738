//! C12 items 3–4: every credential problem gives the identical 401; the ASP lifecycle.

mod common;
use common::*;
use icloud_standin::*;
use std::collections::BTreeMap;

/// Headers of a response with the per-request values masked.
async fn shape(r: reqwest::Response) -> (u16, BTreeMap<String, Vec<String>>, Vec<u8>) {
    let status = r.status().as_u16();
    let mut h: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in r.headers() {
        let v = match k.as_str() {
            "date" | "x-apple-request-uuid" | "x-apple-edge-response-time" => "*".to_string(),
            _ => v.to_str().unwrap().to_string(),
        };
        h.entry(k.as_str().to_string()).or_default().push(v);
    }
    (status, h, r.bytes().await.unwrap().to_vec())
}

fn bob() -> AccountSpec {
    let mut b = AccountSpec::new("bob@example.com", "98765432", 42);
    b.app_passwords = vec!["bbbb-cccc-dddd-eeee".into()];
    b
}

#[tokio::test]
async fn every_auth_cause_gives_the_identical_401() {
    let s = Standin::start(StandinConfig::demo().with_account(bob()))
        .await
        .unwrap();
    let ctl = s.control();
    let target = url(&s.caldav_url(), &format!("/{DEMO_DSID}/principal/"));
    let probe = |user: &str, pass: &str| {
        let dav = Dav::new(user, pass);
        let t = target.clone();
        async move { shape(dav.propfind(&t, "0", PROPFIND_CUP).await).await }
    };
    // sanity: the right ASP works
    assert_eq!(probe(DEMO_APPLE_ID, DEMO_APP_PASSWORD).await.0, 207);

    let mut known = Vec::new();
    known.push(("wrong", probe(DEMO_APPLE_ID, "wxyz-wxyz-wxyz-wxyz").await));
    known.push(("primary", probe(DEMO_APPLE_ID, DEMO_PRIMARY_PASSWORD).await));
    known.push((
        "revoked",
        probe(DEMO_APPLE_ID, DEMO_REVOKED_APP_PASSWORD).await,
    ));
    known.push((
        "other account's ASP",
        probe(DEMO_APPLE_ID, "bbbb-cccc-dddd-eeee").await,
    ));
    ctl.set_two_factor(DEMO_APPLE_ID, false);
    known.push(("no 2FA", probe(DEMO_APPLE_ID, DEMO_APP_PASSWORD).await));
    ctl.set_two_factor(DEMO_APPLE_ID, true);
    ctl.set_service(DEMO_APPLE_ID, Service::Calendar, false);
    known.push((
        "calendar off",
        probe(DEMO_APPLE_ID, DEMO_APP_PASSWORD).await,
    ));
    // contacts are unaffected by the calendar switch
    let card = Dav::alice()
        .propfind(&s.carddav_url(), "0", PROPFIND_CUP)
        .await;
    assert_eq!(card.status(), 207);
    ctl.set_service(DEMO_APPLE_ID, Service::Calendar, true);
    ctl.set_adp(DEMO_APPLE_ID, true);
    known.push(("adp", probe(DEMO_APPLE_ID, DEMO_APP_PASSWORD).await));
    ctl.set_adp(DEMO_APPLE_ID, false);
    ctl.set_account_state(DEMO_APPLE_ID, AccountState::Locked);
    known.push(("locked", probe(DEMO_APPLE_ID, DEMO_APP_PASSWORD).await));
    ctl.set_account_state(DEMO_APPLE_ID, AccountState::Ok);
    // X-MobileMe-AuthToken is not accepted
    let r = client()
        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), &target)
        .header(
            "Authorization",
            "X-MobileMe-AuthToken MTIzNDU2Nzg5MDp0b2tlbg==",
        )
        .send()
        .await
        .unwrap();
    let token = shape(r).await;

    let (status, headers, body) = &known[0].1;
    assert_eq!(*status, 401);
    assert!(body.is_empty());
    assert_eq!(headers["content-length"], vec!["0"]);
    assert_eq!(
        headers["www-authenticate"],
        vec![
            "Basic realm=\"MMCalDav\"",
            "X-MobileMe-AuthToken realm=\"MMCalDav\""
        ]
    );
    assert_eq!(headers["x-apple-user-partition"], vec!["42"]);
    for (cause, got) in &known {
        assert_eq!(got, &known[0].1, "401 for '{cause}' differs");
    }
    // unknown Apple ID and no usable Basic header: the same 401 minus the partition header
    let mut expected = headers.clone();
    expected.remove("x-apple-user-partition");
    let unknown = probe("nobody@icloud.com", DEMO_APP_PASSWORD).await;
    assert_eq!(unknown.0, 401);
    assert_eq!(unknown.1, expected);
    assert_eq!(token.1, expected);
    let none = shape(
        client()
            .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), &target)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(none.1, expected);

    // the combined style
    ctl.set_switch("www_authenticate_style", "combined")
        .unwrap();
    let (_, h, _) = probe(DEMO_APPLE_ID, "nope").await;
    assert_eq!(
        h["www-authenticate"],
        vec!["X-MobileMe-AuthToken realm=\"MMCalDav\", Basic realm=\"MMCalDav\""]
    );
    s.stop().await;
}

#[tokio::test]
async fn asp_lifecycle() {
    let s = start_demo().await;
    let ctl = s.control();
    let target = url(&s.caldav_url(), "/");
    let status = |pass: String| {
        let t = target.clone();
        async move {
            Dav::new(DEMO_APPLE_ID, &pass)
                .propfind(&t, "0", PROPFIND_CUP)
                .await
                .status()
                .as_u16()
        }
    };
    let fresh = ctl.generate_asp(DEMO_APPLE_ID, "bridge-2").unwrap();
    let groups: Vec<&str> = fresh.split('-').collect();
    assert_eq!(groups.len(), 4);
    assert!(groups
        .iter()
        .all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_lowercase())));
    assert_eq!(status(fresh.clone()).await, 207);
    // revoke one: it stops working, the other keeps working
    assert!(ctl.revoke_asp(DEMO_APPLE_ID, &fresh));
    assert!(!ctl.revoke_asp(DEMO_APPLE_ID, &fresh));
    assert_eq!(status(fresh.clone()).await, 401);
    assert_eq!(status(DEMO_APP_PASSWORD.into()).await, 207);
    // 25 active at most
    let mut made = 0;
    while ctl.generate_asp(DEMO_APPLE_ID, "x").is_ok() {
        made += 1;
        assert!(made <= 25);
    }
    assert_eq!(ctl.active_asps(DEMO_APPLE_ID).len(), 25);
    assert!(ctl.generate_asp(DEMO_APPLE_ID, "26th").is_err());
    // changing the primary password revokes all
    ctl.change_primary_password(DEMO_APPLE_ID, "New-Password-2");
    assert!(ctl.active_asps(DEMO_APPLE_ID).is_empty());
    assert_eq!(status(DEMO_APP_PASSWORD.into()).await, 401);
    assert_eq!(status("New-Password-2".into()).await, 401);
    let again = ctl.generate_asp(DEMO_APPLE_ID, "after-change").unwrap();
    assert_eq!(status(again).await, 207);
    // no 2FA: no ASPs can be made
    ctl.set_two_factor(DEMO_APPLE_ID, false);
    assert!(ctl.generate_asp(DEMO_APPLE_ID, "x").is_err());
    s.stop().await;
}

#[tokio::test]
async fn partition_mismatch_is_401_and_foreign_dsid_403() {
    let mut other = bob();
    other.partition = 7;
    let s = Standin::start(StandinConfig::demo().with_account(other))
        .await
        .unwrap();
    // bob lives on p07: alice's partition host refuses him
    let part42 = s.partition_caldav_url(42).unwrap();
    let bob = Dav::new("bob@example.com", "bbbb-cccc-dddd-eeee");
    let r = bob
        .propfind(&url(&part42, "/98765432/calendars/"), "0", "")
        .await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-apple-user-partition"], "07");
    let r = bob
        .propfind(
            &url(&s.partition_caldav_url(7).unwrap(), "/98765432/calendars/"),
            "0",
            "",
        )
        .await;
    assert_eq!(r.status(), 207);
    // alice asking for bob's calendars
    let r = Dav::alice()
        .propfind(&url(&s.caldav_url(), "/98765432/calendars/"), "0", "")
        .await;
    assert_eq!(r.status(), 403);
    s.stop().await;
}

#[tokio::test]
async fn the_http_control_port_drives_the_same_switches_and_accounts() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let base = s.serve_control().await.unwrap();
    let http = reqwest::Client::new();
    let post = |path: &str| http.post(format!("{base}{path}")).send();
    // A new ASP works; after revoke-all, neither it nor the seeded one does.
    let r = post("generate-asp?label=script").await.unwrap();
    assert_eq!(r.status(), 200);
    let asp = r.text().await.unwrap().trim().to_string();
    assert!(s
        .control()
        .active_asps(DEMO_APPLE_ID)
        .iter()
        .any(|(v, _)| v == &asp));
    let target = url(&s.caldav_url(), &format!("/{DEMO_DSID}/principal/"));
    let ok = Dav::new(DEMO_APPLE_ID, &asp)
        .propfind(&target, "0", PROPFIND_CUP)
        .await;
    assert_eq!(ok.status(), 207);
    assert_eq!(post("revoke-all").await.unwrap().status(), 200);
    let bad = Dav::new(DEMO_APPLE_ID, &asp)
        .propfind(&target, "0", PROPFIND_CUP)
        .await;
    assert_eq!(bad.status(), 401);
    // Switches by name; an unknown one is a 400 naming it.
    let r = post("switch?name=latency_ms&value=7").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.control().switches().latency_ms, 7);
    let r = post("switch?name=no.such&value=1").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no.such"));
    // The request log is readable and clearable.
    let log = http
        .get(format!("{base}request-log"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(log.contains("PROPFIND"), "{log}");
    assert_eq!(post("clear-request-log").await.unwrap().status(), 200);
    assert!(s.control().request_log().is_empty());
    s.stop().await;
}
