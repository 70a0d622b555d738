//! Finding 5: one address cannot take every connection slot (HTTP, HTTPS, IMAP and SMTP share
//! one allowance per address), and connections that do not send a whole request head (or,
//! for IMAP and SMTP, log in) in time are closed by a total deadline that single bytes do not
//! move. The attacker plays from 127.0.0.2; the victim device is 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use crate::support::*;

pub const ATTACKER: &str = "127.0.0.2";

/// A TCP connection to `to` from the loopback address `src`.
pub async fn connect_from(src: &str, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

/// An HTTP client whose connections come from `src`.
pub fn client_from(src: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(src.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Read until the peer closes (EOF or reset) or `within` passes: what was read, and whether
/// the connection was closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Err(_) => return (String::from_utf8_lossy(&buf).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).into_owned(), true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn wait_held(env: &Env, src: &str, n: usize) {
    let ip: IpAddr = src.parse().unwrap();
    wait_until(
        Duration::from_secs(5),
        &format!("the bridge holds {n} connections from {src}"),
        || async { env.bridge.app.conns.held(ip) == n },
    )
    .await;
}

#[tokio::test]
async fn an_idle_flood_from_one_address_is_refused_while_other_devices_are_served() {
    let env = start_with(Options {
        tweak: Box::new(|c| c.limits.max_connections_per_ip = 16),
        ..Default::default()
    })
    .await;
    let addr = env.bridge.addr;
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(connect_from(ATTACKER, addr).await);
    }
    wait_held(&env, ATTACKER, 16).await;
    // Every further connection from that address is refused at once: a request gets a
    // 503 saying why, a silent connection is closed (after the bridge waited a moment for a
    // request to answer: the silent ones wait side by side).
    let mut silent = Vec::new();
    for i in 0..40 {
        let mut s = connect_from(ATTACKER, addr).await;
        if i % 10 == 9 {
            silent.push(tokio::spawn(async move {
                let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
                (i, closed)
            }));
            continue;
        }
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
            .await
            .unwrap();
        let (text, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "connection {i} over the limit was not refused");
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("\r\nRetry-After: "), "{text}");
    }
    for t in silent {
        let (i, closed) = t.await.unwrap();
        assert!(
            closed,
            "silent connection {i} over the limit was not closed"
        );
    }
    // A client library sees an ordinary 503.
    let r = client_from(ATTACKER)
        .get(env.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    // The victim on another address logs in, works, and /healthz answers.
    let (status, body) = env.propfind("/", "0", PROPFIND_PRINCIPAL).await;
    assert_eq!(status, 207, "{body}");
    let r = env.http.get(env.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Slots come back when the attacker lets go.
    drop(held);
    wait_held(&env, ATTACKER, 0).await;
    let r = client_from(ATTACKER)
        .get(env.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(env.bridge.app.conns.refused() >= 40);
    // The operator can see it.
    let metrics = env.page("/metrics").await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("icloud_bridge_refused_total{what=\"connection\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no refused-connection count in /metrics:\n{metrics}"));
    assert!(refused >= 40, "{refused}");
    env.stop().await;
}

/// How long until the bridge closes `s` while `trickle` (if any) is sent one byte at a time
/// every 300 ms; `None` if still open after 10 s.
async fn closed_after(s: TcpStream, trickle: Vec<u8>) -> Option<Duration> {
    let start = Instant::now();
    let (mut r, mut w) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink).await;
    });
    let writer = tokio::spawn(async move {
        for b in trickle.iter().cycle() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if w.write_all(&[*b]).await.is_err() {
                break;
            }
        }
        // Keep the write half open (no FIN) when there is nothing to trickle.
        std::future::pending::<()>().await;
    });
    let closed = tokio::time::timeout(Duration::from_secs(10), reader).await;
    writer.abort();
    closed.ok().map(|_| start.elapsed())
}

#[tokio::test]
async fn request_heads_have_a_total_deadline_that_bytes_do_not_move() {
    let env = start_with(Options {
        tweak: Box::new(|c| c.limits.header_timeout_secs = 2),
        ..Default::default()
    })
    .await;
    let addr = env.bridge.addr;
    // A slowloris: a request head sent one byte every 300 ms, never finished.
    let mut slow = connect_from(ATTACKER, addr).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n")
        .await
        .unwrap();
    // A connection that says nothing at all, one that stops inside the HTTP/2 preface
    // (protocol sniffing), and an HTTP/2 connection that never sends a request.
    let silent = connect_from(ATTACKER, addr).await;
    let mut sniffing = connect_from(ATTACKER, addr).await;
    sniffing
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r")
        .await
        .unwrap();
    let mut h2 = connect_from(ATTACKER, addr).await;
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    // A keep-alive connection left idle after one answered request.
    let mut kept = connect_from(ATTACKER, addr).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");

    let cases = [
        (
            "slowloris",
            slow,
            b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".as_slice(),
        ),
        ("silent", silent, b"".as_slice()),
        ("HTTP/2 preface cut short", sniffing, b"".as_slice()),
        ("HTTP/2 without a request", h2, b"".as_slice()),
        ("idle keep-alive", kept, b"".as_slice()),
    ];
    let waits: Vec<_> = cases
        .into_iter()
        .map(|(name, s, trickle)| (name, tokio::spawn(closed_after(s, trickle.to_vec()))))
        .collect();
    // Meanwhile the victim is served.
    let r = env.http.get(env.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for (name, wait) in waits {
        let took = wait.await.unwrap();
        let took = took.unwrap_or_else(|| panic!("{name}: still open after 10 s"));
        assert!(took >= Duration::from_millis(1500), "{name}: closed early");
    }
    env.stop().await;
}

/// Read one CRLF line.
async fn line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> String {
    let mut l = String::new();
    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut l))
        .await
        .expect("a line within 5 s")
        .unwrap();
    l.trim_end().to_string()
}

/// Send `cmd` every 300 ms (each answered, so no idle timeout applies) until the server
/// closes; every line read, or `None` if still open after 10 s.
async fn chatter_until_closed(s: TcpStream, cmd: &'static str) -> Option<Vec<String>> {
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    let writer = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if w.write_all(cmd.as_bytes()).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
    });
    let mut lines = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let mut l = String::new();
            match r.read_line(&mut l).await {
                Ok(0) | Err(_) => break,
                Ok(_) => lines.push(l.trim_end().to_string()),
            }
        }
    })
    .await;
    writer.abort();
    read.ok().map(|_| lines)
}

#[tokio::test]
async fn imap_and_smtp_sessions_must_log_in_within_a_total_deadline() {
    let env = start_with(Options {
        imap: true,
        smtp: true,
        tweak: Box::new(|c| c.limits.login_timeout_secs = 2),
        ..Default::default()
    })
    .await;
    // A client that logs in in time keeps its session past the deadline: it connects first,
    // so its deadline has passed by the time the attackers' sessions are closed.
    let victim_connected = Instant::now();
    let mut c = imap_login_as_victim(&env).await;
    let mut imap = BufReader::new(connect_from(ATTACKER, env.imap_addr()).await);
    assert!(line(&mut imap).await.starts_with("* OK"));
    let mut smtp = BufReader::new(connect_from(ATTACKER, env.smtp_addr()).await);
    assert!(line(&mut smtp).await.starts_with("220 "));
    let started = Instant::now();
    let imap = tokio::spawn(chatter_until_closed(imap.into_inner(), "a NOOP\r\n"));
    let smtp = tokio::spawn(chatter_until_closed(smtp.into_inner(), "NOOP\r\n"));
    let imap = imap
        .await
        .unwrap()
        .expect("IMAP session still open after 10 s");
    let smtp = smtp
        .await
        .unwrap()
        .expect("SMTP session still open after 10 s");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(imap.iter().any(|l| l == "a OK NOOP completed"), "{imap:?}");
    assert!(
        imap.last().is_some_and(|l| l.starts_with("* BYE ")),
        "{imap:?}"
    );
    assert!(smtp.iter().any(|l| l.starts_with("250 ")), "{smtp:?}");
    assert!(
        smtp.last().is_some_and(|l| l.starts_with("421 4.4.2 ")),
        "{smtp:?}"
    );
    tokio::time::sleep_until((victim_connected + Duration::from_millis(2100)).into()).await;
    c.get_mut().write_all(b"b NOOP\r\n").await.unwrap();
    loop {
        let l = line(&mut c).await;
        if l.starts_with("b ") {
            assert!(l.starts_with("b OK"), "{l}");
            break;
        }
    }
    env.stop().await;
}

/// The victim device (127.0.0.1) logs in over IMAP: the session, logged in.
async fn imap_login_as_victim(env: &Env) -> BufReader<TcpStream> {
    let mut c = BufReader::new(connect_from("127.0.0.1", env.imap_addr()).await);
    assert!(line(&mut c).await.starts_with("* OK"));
    c.get_mut()
        .write_all(format!("a LOGIN {} \"{}\"\r\n", env.user, env.pass).as_bytes())
        .await
        .unwrap();
    loop {
        let l = line(&mut c).await;
        if l.starts_with("a ") {
            assert!(l.starts_with("a OK"), "{l}");
            return c;
        }
    }
}

#[tokio::test]
async fn one_address_has_one_allowance_over_every_front_end() {
    let env = start_with(Options {
        imap: true,
        smtp: true,
        tweak: Box::new(|c| c.limits.max_connections_per_ip = 3),
        ..Default::default()
    })
    .await;
    // The attacker fills its allowance with one connection to each front end.
    let _http = connect_from(ATTACKER, env.bridge.addr).await;
    let mut imap = BufReader::new(connect_from(ATTACKER, env.imap_addr()).await);
    assert!(line(&mut imap).await.starts_with("* OK"));
    let mut smtp = BufReader::new(connect_from(ATTACKER, env.smtp_addr()).await);
    assert!(line(&mut smtp).await.starts_with("220 "));
    wait_held(&env, ATTACKER, 3).await;
    // Any more, on any front end, are refused at once (read side by side).
    let refused = |addr| async move {
        let mut more = connect_from(ATTACKER, addr).await;
        read_until_closed(&mut more, Duration::from_secs(5)).await
    };
    let (imap, imaps, smtp, http) = tokio::join!(
        refused(env.imap_addr()),
        refused(env.imaps_addr()),
        refused(env.smtp_addr()),
        refused(env.bridge.addr),
    );
    let (text, closed) = imap;
    assert!(closed && text.starts_with("* BYE "), "{closed} {text:?}");
    let (text, closed) = imaps;
    assert!(closed && text.is_empty(), "{closed} {text:?}");
    let (text, closed) = smtp;
    assert!(closed && text.starts_with("421 "), "{closed} {text:?}");
    let (text, closed) = http;
    assert!(
        closed && text.starts_with("HTTP/1.1 503 "),
        "{closed} {text:?}"
    );
    // Another device is served on every front end.
    let _c = imap_login_as_victim(&env).await;
    let mut s = BufReader::new(connect_from("127.0.0.1", env.smtp_addr()).await);
    assert!(line(&mut s).await.starts_with("220 "));
    let r = env.http.get(env.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    env.stop().await;
}
