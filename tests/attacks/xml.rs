//! Finding 3: XML that would take quadratic work (tens of thousands of attributes on one
//! element, namespace declarations piled up in scope, a million tiny elements) is refused in
//! linear time, off the worker threads, while every other client keeps being served; the same
//! from upstream becomes a clean 502.

use std::time::{Duration, Instant};

use crate::connections::{client_from, ATTACKER};
use crate::support::*;

const NINE_MB: usize = 9 * 1024 * 1024;

/// One `prop` element carrying attributes until the body is about 9 MB.
fn one_element_bomb(root: &str) -> String {
    let mut s = format!(r#"<?xml version="1.0"?><d:{root} xmlns:d="DAV:"><d:prop"#);
    let mut i = 0u64;
    while s.len() < NINE_MB {
        s.push_str(&format!(r#" a{i}="x""#));
        i += 1;
    }
    s.push_str(&format!("><d:getetag/></d:prop></d:{root}>"));
    s
}

/// Many elements, each with 250 attributes (just under the per-element cap).
fn many_elements_bomb() -> String {
    let attrs: String = (0..250).map(|i| format!(r#" a{i}="x""#)).collect();
    let mut s = String::from(r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop>"#);
    while s.len() < NINE_MB {
        s.push_str(&format!("<d:getetag{attrs}/>"));
    }
    s.push_str("</d:prop></d:propfind>");
    s
}

/// Namespace declarations nested 200 deep, then elements that resolve against all of them.
fn namespace_bomb() -> String {
    let mut s = String::from(r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop>"#);
    for i in 0..200 {
        let decls: String = (0..50)
            .map(|j| format!(r#" xmlns:p{i}x{j}="urn:x:{j}""#))
            .collect();
        s.push_str(&format!("<d:x{decls}>"));
    }
    while s.len() < NINE_MB {
        s.push_str("<d:getetag/>");
    }
    for _ in 0..200 {
        s.push_str("</d:x>");
    }
    s.push_str("</d:prop></d:propfind>");
    s
}

/// A second device keeps working (PROPFIND through the bridge, /healthz) until `stop`.
async fn victim(env: &Env, stop: &std::sync::atomic::AtomicBool) -> (usize, Duration) {
    let list = r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;
    let mut n = 0;
    let mut slowest = Duration::ZERO;
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let t = Instant::now();
        let (s, body) = env.propfind("/dav/alice/calendars/", "1", list).await;
        assert_eq!(s, 207, "the victim's PROPFIND failed: {body}");
        let r = env.http.get(env.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(t.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (n, slowest)
}

#[tokio::test]
async fn attribute_and_namespace_bombs_are_refused_fast_while_others_are_served() {
    let env = start().await;
    let attacker = client_from(ATTACKER);
    let stop = std::sync::atomic::AtomicBool::new(false);
    let bombs = [
        (
            "PROPFIND",
            "/dav/alice/calendars/home/",
            one_element_bomb("propfind"),
        ),
        ("PROPFIND", "/", one_element_bomb("propfind")),
        (
            "REPORT",
            "/dav/alice/calendars/home/",
            one_element_bomb("calendar-multiget"),
        ),
        (
            "PROPFIND",
            "/dav/alice/calendars/home/",
            many_elements_bomb(),
        ),
        ("PROPFIND", "/dav/alice/contacts/", namespace_bomb()),
    ];
    let attack = async {
        for (method, path, body) in &bombs {
            let t = Instant::now();
            let r = attacker
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    env.url(path),
                )
                .basic_auth(&env.user, Some(&env.pass))
                .header("Depth", "1")
                .header("Content-Type", "application/xml")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let took = t.elapsed();
            let status = r.status();
            let text = r.text().await.unwrap();
            assert_eq!(status, 400, "{method} {path}: {text}");
            assert!(
                text.contains("too many") || text.contains("(at most"),
                "{method} {path}: {text}"
            );
            assert!(
                took < Duration::from_secs(1),
                "{method} {path} took {took:?} to refuse"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let ((), (served, slowest)) = tokio::join!(attack, victim(&env, &stop));
    assert!(served >= 1, "the victim made no request during the attack");
    assert!(
        slowest < Duration::from_secs(2),
        "a victim's request took {slowest:?}"
    );
    // Nothing of it went upstream.
    assert!(env
        .control()
        .request_log()
        .iter()
        .all(|r| r.body.len() < 1024 * 1024));
    env.stop().await;
}

#[tokio::test]
async fn an_attribute_bomb_from_upstream_is_a_clean_502() {
    let env = start().await;
    let c = env.control();
    c.set_switch("hostile.bomb_attributes", "400000").unwrap();
    c.set_switch("hostile.bomb_path", "/calendars/home/")
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let attack = async {
        for _ in 0..3 {
            let t = Instant::now();
            let (s, body) = env
                .propfind(
                    "/dav/alice/calendars/home/",
                    "1",
                    r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#,
                )
                .await;
            assert_eq!(s, 502, "{body}");
            assert!(body.contains("too many attributes"), "{body}");
            assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    };
    let ((), (served, _)) = tokio::join!(attack, victim(&env, &stop));
    assert!(served >= 1);
    env.stop().await;
}
