//! Upstream faults injected by the stand-in's switches: rate limits are honoured (no retry
//! storm), safe requests get one retry after a 5xx or a broken connection, writes never get
//! retried, garbage XML becomes a clean 502, and no fault loses a write or panics.

mod support;

use support::*;

const LIST: &str =
    r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;

const SECS: std::time::Duration = std::time::Duration::from_secs(5);

/// Upstream requests (method, path) in the stand-in's log for paths containing `part`.
fn upstream(env: &Env, method: &str, part: &str) -> usize {
    env.control()
        .request_log()
        .iter()
        .filter(|r| r.method == method && r.path.contains(part))
        .count()
}

async fn learned(opts: Options) -> Env {
    let env = start_with(Options {
        fresh_secs: 0,
        ..opts
    })
    .await;
    let (s, _) = env.propfind("/dav/alice/calendars/", "1", LIST).await;
    assert_eq!(s, 207);
    env.control().clear_request_log();
    env
}

#[tokio::test]
async fn after_a_503_with_retry_after_nothing_is_sent_until_it_passes() {
    let env = learned(Options::default()).await;
    let c = env.control();
    c.set_switch("rate.retry_after", "120").unwrap();
    c.set_switch("rate.window_ms", "600000").unwrap();
    c.set_switch("rate.limit_after", "0").unwrap();
    let r = env
        .req("PROPFIND", "/dav/alice/calendars/home/")
        .header("Depth", "1")
        .body(LIST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "120");
    c.clear_request_log();
    // 30 more requests of every kind: none reaches Apple, all say when to come back.
    for i in 0..30 {
        let r = match i % 3 {
            0 => env.req("GET", "/dav/alice/calendars/home/x.ics"),
            1 => env
                .req("PUT", &format!("/dav/alice/calendars/home/w{i}.ics"))
                .body(event(&format!("w{i}"), "x", true)),
            _ => env
                .req("PROPFIND", "/dav/alice/contacts/card/")
                .header("Depth", "1")
                .body(LIST),
        }
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 503);
        let ra: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((60..=3600).contains(&ra), "{ra}");
    }
    assert!(
        c.request_log().is_empty(),
        "{} upstream requests while held",
        c.request_log().len()
    );
    let st: serde_json::Value = env.status_json().await;
    assert_eq!(st["accounts"][0]["state"], "rate_limited", "{st}");
    env.stop().await;
}

#[tokio::test]
async fn a_503_without_retry_after_backs_off_for_seconds_then_recovers() {
    let env = learned(Options::default()).await;
    let c = env.control();
    c.set_switch("rate.window_ms", "600000").unwrap();
    c.set_switch("rate.limit_after", "0").unwrap();
    let (s, _) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
    assert_eq!(s, 503);
    let limited = std::time::Instant::now();
    c.set_switch("rate.limit_after", "none").unwrap();
    c.clear_request_log();
    // The first backoff is 5 s (no jitter: the bridge is the account's only client): until
    // then every request is answered by the bridge alone; right after it, iCloud is asked.
    let asked = wait_for(
        std::time::Duration::from_secs(7),
        "the bridge asks iCloud again",
        || async {
            let sent = limited.elapsed();
            let (s, _) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
            if s == 503 {
                assert!(c.request_log().is_empty(), "asked iCloud while held");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                return None;
            }
            assert_eq!(s, 207);
            Some(sent)
        },
    )
    .await;
    assert!(
        asked >= std::time::Duration::from_millis(4900)
            && asked < std::time::Duration::from_millis(5500),
        "the first request answered by iCloud was sent {asked:?} after the 503"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_500_is_retried_once_for_reads_and_never_for_writes() {
    let env = learned(Options::default()).await;
    let c = env.control();
    c.set_switch("flaky.5xx_status", "500").unwrap();
    c.set_switch("flaky.5xx", "1").unwrap();
    let (s, body) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
    assert_eq!(s, 502, "{body}");
    assert_eq!(upstream(&env, "PROPFIND", "/calendars/home/"), 2);
    let r = env
        .req("PUT", "/dav/alice/calendars/home/once.ics")
        .body(event("once", "x", true))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert_eq!(upstream(&env, "PUT", "once.ics"), 1, "a write was retried");
    // Once upstream answers again, so do reads.
    c.set_switch("flaky.5xx", "0").unwrap();
    let (s, _) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
    assert_eq!(s, 207);
    env.stop().await;
}

#[tokio::test]
async fn a_broken_connection_is_retried_for_reads() {
    let env = learned(Options::default()).await;
    let c = env.control();
    c.set_switch("flaky.reset", "1").unwrap();
    let r = env
        .req(
            "GET",
            "/dav/alice/calendars/home/1761bf8c-6363-11eb-8fe4-74e5f9bfd8c1.ics",
        )
        .send()
        .await;
    // Either a clean error status or an aborted body; never a complete-looking success.
    if let Ok(r) = r {
        let status = r.status();
        let body = r.bytes().await;
        assert!(
            status.is_server_error() || body.is_err(),
            "a broken upstream answer was passed on as {status}"
        );
    }
    c.set_switch("flaky.reset", "0").unwrap();
    let r = env
        .req(
            "GET",
            "/dav/alice/calendars/home/1761bf8c-6363-11eb-8fe4-74e5f9bfd8c1.ics",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("BEGIN:VCALENDAR"));
    env.stop().await;
}

#[tokio::test]
async fn garbage_xml_from_upstream_is_a_clean_502() {
    let env = learned(Options::default()).await;
    env.control().set_switch("flaky.garbage", "1").unwrap();
    for path in ["/dav/alice/calendars/home/", "/dav/alice/contacts/card/"] {
        let (s, body) = env.propfind(path, "1", LIST).await;
        assert_eq!(s, 502, "{body}");
        assert!(
            body.contains("DAV:error") || body.contains("d:error"),
            "{body}"
        );
        env.assert_no_leak("502 body", &body);
    }
    // The same for a REPORT, and the bridge is fine afterwards.
    let (s, _) = env
        .report(
            "/dav/alice/calendars/home/",
            "1",
            r#"<?xml version="1.0"?><c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/></d:prop><c:filter><c:comp-filter name="VCALENDAR"/></c:filter></c:calendar-query>"#,
        )
        .await;
    assert_eq!(s, 502);
    env.control().set_switch("flaky.garbage", "0").unwrap();
    let (s, _) = env.propfind("/dav/alice/calendars/home/", "1", LIST).await;
    assert_eq!(s, 207);
    env.stop().await;
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_takes_no_new_ones() {
    let env = learned(Options::default()).await;
    let c = env.control();
    // iCloud keeps the request until the test lets it go.
    c.set_switch("hold.path", "/calendars/home/").unwrap();
    let slow = env
        .req("PROPFIND", "/dav/alice/calendars/home/")
        .header("Depth", "1")
        .body(LIST)
        .send();
    let slow = tokio::spawn(slow);
    wait_until(SECS, "the PROPFIND is held upstream", || async {
        c.held() == 1
    })
    .await;
    let started = std::time::Instant::now();
    env.bridge.token().cancel();
    // The listener closes while the request is still in flight: new connections are refused.
    let addr = env.bridge.addr;
    wait_until(SECS, "the bridge's listener is closed", || refuses(addr)).await;
    let fresh = reqwest::Client::new()
        .get(env.url("/healthz"))
        .timeout(std::time::Duration::from_secs(2))
        .send()
        .await;
    assert!(fresh.is_err(), "a new request was served after shutdown");
    assert!(!slow.is_finished(), "the request in flight was cut off");
    c.set_switch("hold.path", "none").unwrap();
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 207, "the request in flight was cut off");
    assert!(r.text().await.unwrap().contains("multistatus"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    env.stop().await;
}

#[tokio::test]
async fn oversized_headers_get_431_and_the_bridge_carries_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = learned(Options::default()).await;
    let addr = env.base.trim_start_matches("http://").to_string();
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let big = "x".repeat(300 * 1024);
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = vec![0u8; 256];
    let n = s.read(&mut out).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&out[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 431"), "{head:?}");
    assert_eq!(env.page("/healthz").await, "ok\n");
    env.stop().await;
}

#[tokio::test]
async fn clients_waiting_for_a_hanging_request_share_its_timeout() {
    let env = learned(Options {
        timeout_secs: 1,
        ..Options::default()
    })
    .await;
    let c = env.control();
    c.set_switch("flaky.timeout", "1").unwrap();
    c.set_switch("flaky.timeout_delay_ms", "4000").unwrap();
    let started = std::time::Instant::now();
    let reqs = (0..10).map(|_| env.propfind("/dav/alice/calendars/home/", "1", LIST));
    let results = futures_util::future::join_all(reqs).await;
    assert!(
        results.iter().all(|(s, _)| *s == 504),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    // One timeout for all of them, not one after another (that would take 10 s).
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    env.stop().await;
}

#[tokio::test]
async fn clients_waiting_for_a_hanging_discovery_share_its_timeout() {
    let mut standin = icloud_bridge::standin::StandinConfig::demo();
    standin.switches.flaky_timeout = 1.0;
    standin.switches.flaky_timeout_delay_ms = Some(4000);
    let env = start_with(Options {
        standin,
        timeout_secs: 1,
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    // Ten different requests (so the cache does not coalesce them): all wait for discovery.
    let paths: Vec<String> = (0..10)
        .map(|i| format!("/dav/alice/calendars/c{i}/"))
        .collect();
    let reqs = paths.iter().map(|p| env.propfind(p, "1", LIST));
    let results = futures_util::future::join_all(reqs).await;
    assert!(
        results.iter().all(|(s, _)| *s == 504),
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    env.stop().await;
}

#[tokio::test]
async fn a_client_too_slow_with_its_body_gets_408_and_nothing_is_forwarded() {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = learned(Options {
        tweak: Box::new(|c| c.limits.body_timeout_secs = 1),
        ..Options::default()
    })
    .await;
    let addr = env.base.trim_start_matches("http://").to_string();
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", env.user, env.pass));
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /dav/alice/calendars/home/slow.ics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Type: text/calendar\r\nContent-Length: 500\r\n\r\nBEGIN:VCALENDAR\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let mut out = vec![0u8; 512];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut out))
        .await
        .expect("the bridge answers a slow client")
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(upstream(&env, "PUT", "slow.ics"), 0);
    env.stop().await;
}
