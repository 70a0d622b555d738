//! Every row of the design's "When Apple says no" table, driven through the stand-in's
//! switches: the account state, what a DAV client sees (status, Retry-After, reason phrase,
//! `DAV:error` body, never a 401), `/status.json`, the `/metrics` state gauge and the webhook.

mod support;

use icloud_bridge::standin::{Service as StandinService, DEMO_APPLE_ID};
use support::*;

const PROPFIND_LIST: &str = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:resourcetype/><d:displayname/></d:prop></d:propfind>"#;

/// What a client saw for one request.
struct Seen {
    status: u16,
    reason: String,
    retry_after: Option<String>,
    prompts: bool,
    body: String,
}

async fn seen(env: &Env, path: &str) -> Seen {
    let r = env
        .req("PROPFIND", path)
        .header("Depth", "1")
        .body(PROPFIND_LIST)
        .send()
        .await
        .unwrap();
    let status = r.status();
    Seen {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_string(),
        retry_after: r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        prompts: r.headers().get("www-authenticate").is_some(),
        body: r.text().await.unwrap(),
    }
}

/// The reason phrase as sent on the wire (reqwest only exposes the canonical one).
async fn raw_status_line(env: &Env, path: &str) -> String {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = env.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", env.user, env.pass));
    let req = format!(
        "PROPFIND {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nDepth: 1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PROPFIND_LIST}",
        PROPFIND_LIST.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// The value of the state gauge for (service, state).
async fn gauge(env: &Env, service: &str, state: &str) -> u8 {
    let text = env.page("/metrics").await;
    let key = format!(
        "icloud_bridge_account_state{{account=\"alice\",service=\"{service}\",state=\"{state}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no gauge {key} in\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The row's expectations, checked everywhere at once.
struct Row<'a> {
    status: u16,
    retry_after: Option<&'a str>,
    sentence: &'a str,
    state: &'a str,
    service: &'a str,
}

async fn expect(env: &Env, sink: &Sink, path: &str, row: Row<'_>) {
    let s = seen(env, path).await;
    assert_eq!(s.status, row.status, "{}", s.body);
    assert_eq!(s.retry_after.as_deref(), row.retry_after, "Retry-After");
    assert!(
        !s.prompts,
        "a WWW-Authenticate header would make clients prompt"
    );
    assert!(!s.reason.is_empty());
    assert!(
        s.body.contains("DAV:") && s.body.contains(row.sentence),
        "body lacks {:?}: {}",
        row.sentence,
        s.body
    );
    env.assert_no_leak("error body", &s.body);
    let line = raw_status_line(env, path).await;
    assert!(
        line.starts_with(&format!("HTTP/1.1 {} ", row.status)) && line.len() > 14,
        "status line {line:?}"
    );
    let st = env.status_json().await;
    let acc = &st["accounts"][0];
    assert_eq!(acc["services"][row.service]["state"], row.state, "{st}");
    assert_eq!(acc["state"], row.state, "{st}");
    // Anonymous readers of status.json see the Apple ID masked, in the sentence too.
    let masked = row
        .sentence
        .replace("alice@icloud.com", "a…@icloud.com")
        .replace("nobody@icloud.com", "n…@icloud.com");
    assert!(
        acc["reason"].as_str().unwrap_or("").contains(&masked),
        "status.json reason: {st}"
    );
    assert_eq!(gauge(env, row.service, row.state).await, 1);
    assert_eq!(gauge(env, row.service, "ok").await, 0);
    // The webhook (min_secs = 0 here) is told once, with the sentence and the fix.
    let told = wait_for(
        std::time::Duration::from_secs(10),
        &format!("a webhook tells {}", row.state),
        || async {
            sink.received()
                .iter()
                .map(|r| r.json())
                .find(|j| j["state"] == row.state)
        },
    )
    .await;
    assert_eq!(told["account"], "alice", "{told}");
    assert!(
        told["reason"].as_str().unwrap_or("").contains(&masked)
            || told["reason"].as_str().unwrap_or("").contains(row.sentence),
        "webhook reason: {told}"
    );
    if row.state == "auth_rejected" {
        assert_eq!(
            told["fix_url"], "https://account.apple.com/account/manage",
            "{told}"
        );
    }
    let same = sink
        .received()
        .iter()
        .filter(|r| r.json()["state"] == row.state)
        .count();
    assert_eq!(same, 1, "told {same} times");
}

/// A bridge whose `[notify] webhook` points at a sink that records every call.
async fn boot(opts: Options) -> (Env, Sink) {
    let sink = Sink::start(0).await;
    let url = sink.url("/hook");
    let env = start_with(Options {
        tweak: Box::new(move |c| {
            c.notify.webhook = Some(url.parse().unwrap());
            c.notify.min_secs = 0;
        }),
        ..opts
    })
    .await;
    (env, sink)
}

#[tokio::test]
async fn row_1_a_primary_password_is_refused_before_asking_apple() {
    let (env, sink) = boot(Options {
        app_password: "MySecret-Horse-1".into(),
        ..Options::default()
    })
    .await;
    env.control().clear_request_log();
    expect(
        &env,
        &sink,
        "/dav/alice/calendars/home/",
        Row {
            status: 503,
            retry_after: Some("60"),
            sentence: "looks like the Apple ID password, not an app-specific password",
            state: "auth_rejected",
            service: "caldav",
        },
    )
    .await;
    assert!(env.control().request_log().is_empty(), "Apple was asked");
    let st = env.status_json().await.to_string();
    assert!(!st.contains("MySecret-Horse-1"), "secret in status.json");
    env.stop().await;
}

#[tokio::test]
async fn row_2_a_password_never_accepted_wrong_password() {
    let (env, sink) = boot(Options {
        app_password: "wxyz-wxyz-wxyz-wxyz".into(),
        ..Options::default()
    })
    .await;
    expect(
        &env,
        &sink,
        "/dav/alice/calendars/home/",
        Row {
            status: 503,
            retry_after: Some("60"),
            sentence: "iCloud refused the app-specific password for alice@icloud.com",
            state: "auth_rejected",
            service: "caldav",
        },
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn row_2_b_a_password_never_accepted_wrong_apple_id() {
    let (env, sink) = boot(Options {
        apple_id: "nobody@icloud.com".into(),
        ..Options::default()
    })
    .await;
    expect(
        &env,
        &sink,
        "/dav/alice/calendars/home/",
        Row {
            status: 503,
            retry_after: Some("60"),
            sentence: "iCloud refused the app-specific password for nobody@icloud.com",
            state: "auth_rejected",
            service: "caldav",
        },
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn row_3_a_password_accepted_before_and_revoked_now() {
    let (env, sink) = boot(Options::default()).await;
    // A first success (on another path than the one checked below, which the cache would
    // otherwise answer).
    assert_eq!(seen(&env, "/dav/alice/calendars/").await.status, 207);
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    expect(
        &env,
        &sink,
        "/dav/alice/calendars/home/",
        Row {
            status: 503,
            retry_after: Some("60"),
            sentence: "no longer accepts the app-specific password for alice@icloud.com",
            state: "auth_rejected",
            service: "caldav",
        },
    )
    .await;
    env.stop().await;
}

/// `reconnect` (its library half, as the CLI runs it) returns only once the running bridge
/// uses the new password: the very next request succeeds, with no retry in between.
#[tokio::test]
async fn after_reconnect_returns_the_next_request_succeeds() {
    use icloud_bridge::accounts::reconnect::{test_and_store, wait_for_pickup, Pickup};
    use icloud_bridge::accounts::vault::Vault;
    let (env, _sink) = boot(Options::default()).await;
    assert_eq!(seen(&env, "/dav/alice/calendars/").await.status, 207);
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    let path = "/dav/alice/calendars/home/";
    assert_eq!(seen(&env, path).await.status, 503);
    let new = env.control().generate_asp(DEMO_APPLE_ID, "new").unwrap();
    // The CLI's view: the config file's listen address is where the server answers.
    let mut cfg = env.cfg.clone();
    cfg.server.listen = env.bridge.addr;
    let upstream = icloud_bridge::upstream::client::Upstream::new(&cfg.upstream).unwrap();
    let account = cfg.accounts[0].clone();
    let vault = Vault::open(&cfg.server.data_dir);
    test_and_store(&cfg, &upstream, &vault, &account, &new)
        .await
        .unwrap();
    let within = std::time::Duration::from_secs(5);
    let got = wait_for_pickup(&cfg, &account, &new, within).await;
    assert_eq!(got, Pickup::InUse);
    assert_eq!(seen(&env, path).await.status, 207);
    // With no bridge at the configured address, reconnect says so rather than wait.
    let mut elsewhere = cfg.clone();
    elsewhere.server.listen = "127.0.0.1:9".parse().unwrap();
    let got = wait_for_pickup(&elsewhere, &account, &new, within).await;
    assert!(matches!(got, Pickup::NoServer { .. }), "{got:?}");
    env.stop().await;
}

/// While Apple refuses, a client's sync does not fail where the bridge can answer: a
/// sync-collection with a token hears "nothing changed" (its copy stays, nothing is made up),
/// OPTIONS is answered locally, both marked stale; a write still gets the explanation.
#[tokio::test]
async fn a_sync_while_refused_keeps_the_calendar_usable() {
    let (env, _sink) = boot(Options::default()).await;
    let cal = "/dav/alice/calendars/home/";
    let (s, first) = env
        .report(cal, "1", r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token/><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#)
        .await;
    assert_eq!(s, 207, "{first}");
    let token = first
        .split("sync-token>")
        .nth(1)
        .and_then(|t| t.split('<').next())
        .expect("a sync token")
        .to_string();
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    // A token the cache has never seen (the client synced elsewhere meanwhile).
    let later = format!(
        r#"<d:sync-collection xmlns:d="DAV:"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/><d:getcontenttype/></d:prop></d:sync-collection>"#
    );
    let r = env
        .req("REPORT", cal)
        .header("Depth", "1")
        .body(later)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    assert_eq!(r.headers()["x-icloud-bridge-stale"], "auth_rejected");
    let body = r.text().await.unwrap();
    assert!(
        body.contains(&format!("<d:sync-token>{token}</d:sync-token>")),
        "{body}"
    );
    assert!(!body.contains("<d:response>"), "{body}");
    let r = env.req("OPTIONS", cal).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["dav"]
        .to_str()
        .unwrap()
        .contains("calendar-access"));
    // A write needs iCloud: the row's answer.
    let put = env.put_event(&format!("{cal}new.ics"), "new-1", "x").await;
    assert_eq!(put, 503);
    env.stop().await;
}

#[tokio::test]
async fn row_3_b_one_service_switched_off_leaves_the_other_working() {
    let (env, sink) = boot(Options::default()).await;
    // A first success (on another path than the one checked below, which the cache would
    // otherwise answer).
    assert_eq!(seen(&env, "/dav/alice/calendars/").await.status, 207);
    env.control()
        .set_service(DEMO_APPLE_ID, StandinService::Calendar, false);
    expect(
        &env,
        &sink,
        "/dav/alice/calendars/home/",
        Row {
            status: 503,
            retry_after: Some("60"),
            sentence: "no longer accepts the app-specific password",
            state: "auth_rejected",
            service: "caldav",
        },
    )
    .await;
    // Contacts still work, and say so.
    assert_eq!(seen(&env, "/dav/alice/contacts/card/").await.status, 207);
    let st = env.status_json().await;
    assert_eq!(
        st["accounts"][0]["services"]["carddav"]["state"], "ok",
        "{st}"
    );
    assert_eq!(gauge(&env, "carddav", "ok").await, 1);
    env.stop().await;
}

#[tokio::test]
async fn row_4_a_connection_refused_is_unreachable_502() {
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/");
    drop(dead);
    let (env, sink) = boot(Options {
        upstream_override: Some(url),
        ..Options::default()
    })
    .await;
    expect(
        &env,
        &sink,
        "/dav/alice/calendars/home/",
        Row {
            status: 502,
            retry_after: Some("30"),
            sentence: "iCloud could not be reached",
            state: "unreachable",
            service: "caldav",
        },
    )
    .await;
    let s = seen(&env, "/dav/alice/calendars/home/").await;
    assert!(
        !s.body.contains(&port.to_string()),
        "upstream port leaked: {}",
        s.body
    );
    env.stop().await;
}

#[tokio::test]
async fn row_4_b_a_hanging_upstream_is_unreachable_504() {
    let (env, sink) = boot(Options {
        timeout_secs: 1,
        ..Options::default()
    })
    .await;
    // A first success (on another path than the one checked below, which the cache would
    // otherwise answer).
    assert_eq!(seen(&env, "/dav/alice/calendars/").await.status, 207);
    env.control().set_switch("flaky.timeout", "1").unwrap();
    env.control()
        .set_switch("flaky.timeout_delay_ms", "4000")
        .unwrap();
    expect(
        &env,
        &sink,
        "/dav/alice/calendars/home/",
        Row {
            status: 504,
            retry_after: Some("30"),
            sentence: "iCloud could not be reached",
            state: "unreachable",
            service: "caldav",
        },
    )
    .await;
    env.stop().await;
}

async fn rate_limited(status: &str, retry_after: Option<&str>, expect_ra: &str) {
    let (env, sink) = boot(Options::default()).await;
    // A first success (on another path than the one checked below, which the cache would
    // otherwise answer).
    assert_eq!(seen(&env, "/dav/alice/calendars/").await.status, 207);
    let c = env.control();
    c.set_switch("rate.status", status).unwrap();
    c.set_switch("rate.retry_after", retry_after.unwrap_or("none"))
        .unwrap();
    c.set_switch("rate.window_ms", "600000").unwrap();
    c.set_switch("rate.limit_after", "0").unwrap();
    expect(
        &env,
        &sink,
        "/dav/alice/calendars/home/",
        Row {
            status: 503,
            retry_after: Some(expect_ra),
            sentence: "iCloud is limiting requests",
            state: "rate_limited",
            service: "caldav",
        },
    )
    .await;
    env.stop().await;
}

#[tokio::test]
async fn row_5_a_503_with_retry_after_is_passed_on() {
    rate_limited("503", Some("120"), "120").await;
}

#[tokio::test]
async fn row_5_b_503_without_retry_after_backs_off_5_s_first() {
    rate_limited("503", None, "5").await;
}

#[tokio::test]
async fn row_5_c_429_with_a_short_retry_after_holds_exactly_that() {
    rate_limited("429", Some("2"), "2").await;
}

/// Apple asks for 3 s: requests are held that long, no longer (issue 13), and clients are
/// told the time actually left.
#[tokio::test]
async fn row_5_d_a_write_after_retry_after_3_lands_as_the_hold_ends() {
    let (env, _sink) = boot(Options::default()).await;
    assert_eq!(seen(&env, "/dav/alice/calendars/").await.status, 207);
    let c = env.control();
    c.set_switch("rate.status", "503").unwrap();
    c.set_switch("rate.retry_after", "3").unwrap();
    c.set_switch("rate.window_ms", "600000").unwrap();
    c.set_switch("rate.limit_after", "0").unwrap();
    let put = |uid: &'static str| {
        env.req("PUT", &format!("/dav/alice/calendars/home/{uid}.ics"))
            .header("Content-Type", "text/calendar")
            .body(event(uid, "After the hold", true))
            .send()
    };
    let r = put("held").await.unwrap();
    assert_eq!(r.status(), 503);
    let limited = std::time::Instant::now();
    assert_eq!(r.headers()["retry-after"], "3");
    // Apple stops limiting; a second later the bridge still holds, telling the time left.
    c.set_switch("rate.limit_after", "none").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let r = put("still-held").await.unwrap();
    assert_eq!(r.status(), 503);
    let left: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&left), "{left}");
    // Held until the 3 s are over, no longer: a write lands right after.
    c.clear_request_log();
    let landed = wait_for(
        std::time::Duration::from_secs(5),
        "a write lands after the hold",
        || async {
            let sent = limited.elapsed();
            let s = put("landed").await.unwrap().status().as_u16();
            if s == 503 {
                assert!(c.request_log().is_empty(), "a held write reached iCloud");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            (s == 201).then_some(sent)
        },
    )
    .await;
    assert!(
        landed >= std::time::Duration::from_millis(2900)
            && landed < std::time::Duration::from_millis(3600),
        "the write that landed was sent {landed:?} after the 503"
    );
    env.stop().await;
}
