//! Finding 4: no request leaves the account's home upstream, whatever the spelling of the
//! path: raw backslashes (which URL parsers turn into `/`), `%5C`, `%2e%2e`, encoded slashes,
//! in the request target and in `Destination`; and `_up` is never a `Destination`.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

/// Send one request exactly as written (reqwest would normalise the path first) and return
/// the status code.
async fn raw(env: &Env, method: &str, target: &str, extra: &str) -> u16 {
    let addr = env.bridge.addr;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", env.user, env.pass),
    );
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {auth}\r\nContent-Length: 0\r\n{extra}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// Every upstream request since the log was cleared stayed under the account's homes (or
/// its principal, for discovery).
fn all_upstream_under_the_account(env: &Env) {
    let dsid = icloud_bridge::standin::DEMO_DSID;
    for r in env.control().request_log() {
        assert!(
            r.path.starts_with(&format!("/{dsid}/")),
            "{} {} reached upstream",
            r.method,
            r.path
        );
        assert!(
            !r.path.contains("..") && !r.path.contains('\\') && !r.path.contains("%5"),
            "{} {} reached upstream",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn backslashes_and_dot_segments_in_the_target_are_refused_before_upstream() {
    let env = start().await;
    let (s, _) = env
        .propfind(
            "/dav/alice/calendars/",
            "1",
            r#"<?xml version="1.0"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#,
        )
        .await;
    assert_eq!(s, 207);
    env.control().clear_request_log();
    for target in [
        r"/dav/alice/calendars/..\..\bob\cal\x.ics",
        r"/dav/alice/calendars/home\..\..\..\x.ics",
        "/dav/alice/calendars/..%5C..%5Cbob%5Ccal%5Cx.ics",
        "/dav/alice/calendars/..%5c..%5cbob/x.ics",
        "/dav/alice/calendars/%2e%2e/%2E%2E/bob/x.ics",
        "/dav/alice/calendars/.%2e/principal/",
        "/dav/alice/contacts/..%2f..%2fbob/x.vcf",
    ] {
        for method in ["GET", "PUT", "DELETE", "PROPFIND"] {
            let s = raw(&env, method, target, "").await;
            assert!(s == 400 || s == 403, "{method} {target}: {s}");
        }
    }
    all_upstream_under_the_account(&env);
    env.stop().await;
}

#[tokio::test]
async fn destination_may_not_leave_the_home_nor_name_an_up_link() {
    let env = start().await;
    assert_eq!(
        env.put_event(
            "/dav/alice/calendars/home/movable.ics",
            "movable",
            "Move me"
        )
        .await,
        201
    );
    env.control().clear_request_log();
    let base = &env.base;
    for dest in [
        format!(r"{base}/dav/alice/calendars/..\..\bob\cal\x.ics"),
        r"/dav/alice/calendars/..\..\bob\cal\x.ics".to_string(),
        format!("{base}/dav/alice/calendars/..%5C..%5Cbob/x.ics"),
        format!("{base}/dav/alice/calendars/home/%2e%2e/%2e%2e/bob/x.ics"),
        format!("{base}/dav/alice/calendars/../../bob/calendars/x.ics"),
        format!("{base}/dav/alice/_up/aHR0cDovLzEyNy4wLjAuMTo5L3g"),
        format!("{base}/dav/alice/principal/"),
        format!("{base}/dav/bob/calendars/home/x.ics"),
        "http://elsewhere.example/x.ics".to_string(),
    ] {
        for method in ["MOVE", "COPY"] {
            let s = raw(
                &env,
                method,
                "/dav/alice/calendars/home/movable.ics",
                &format!("Destination: {dest}\r\n"),
            )
            .await;
            assert!(s == 400 || s == 403, "{method} to {dest}: {s}");
        }
    }
    assert!(
        env.control()
            .request_log()
            .iter()
            .all(|r| r.method != "MOVE" && r.method != "COPY"),
        "a MOVE or COPY went upstream"
    );
    // A proper MOVE inside the home still works.
    let s = raw(
        &env,
        "MOVE",
        "/dav/alice/calendars/home/movable.ics",
        &format!("Destination: {base}/dav/alice/calendars/home/moved.ics\r\n"),
    )
    .await;
    assert!(s == 201 || s == 204, "{s}");
    all_upstream_under_the_account(&env);
    env.stop().await;
}
