//! Finding 8: request bodies held at once have a global budget
//! (`limits.max_body_bytes_in_flight`, of which one address may hold a quarter or one largest
//! body); a body that does not fit gets 503 with `Retry-After` before it is read, while the
//! bodies within the budget are served. (How much memory a burst costs, and that it is given
//! back, is measured by `bench/attack/bodies.py`.)

use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connections::connect_from;
use crate::support::*;

const MIB: usize = 1024 * 1024;

/// A PROPFIND body of exactly `len` bytes (the principal query, padded with whitespace).
fn body(len: usize) -> Vec<u8> {
    let mut b = PROPFIND_PRINCIPAL.as_bytes().to_vec();
    b.resize(len, b' ');
    b
}

/// The head of a PROPFIND on `/` with a declared length (`None`: chunked).
fn head(env: &Env, len: Option<usize>) -> String {
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", env.user, env.pass));
    let framing = match len {
        Some(n) => format!("Content-Length: {n}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    format!("PROPFIND / HTTP/1.1\r\nHost: bridge\r\nAuthorization: Basic {auth}\r\nDepth: 0\r\nContent-Type: application/xml\r\n{framing}\r\n\r\n")
}

/// The response head (status line and headers) within 5 s, or `None`.
async fn response_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; 1024];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

#[tokio::test]
async fn bodies_past_the_budget_get_503_before_they_are_read_while_the_others_are_served() {
    let env = start_with(Options {
        max_body_bytes: MIB,
        tweak: Box::new(|c| c.limits.max_body_bytes_in_flight = 4 * MIB),
        ..Default::default()
    })
    .await;
    let bodies = &env.bridge.app.dav.bodies;
    let full = body(MIB);
    // Four devices each send half of a 1 MiB body and pause: the budget is full.
    let mut held = Vec::new();
    for i in 2..6 {
        let mut s = connect_from(&format!("127.0.0.{i}"), env.bridge.addr).await;
        s.write_all(head(&env, Some(MIB)).as_bytes()).await.unwrap();
        s.write_all(&full[..MIB / 2]).await.unwrap();
        held.push(s);
    }
    wait_until(
        Duration::from_secs(20),
        "the four half-sent bodies reserve the whole budget",
        || async { bodies.used() >= 4 * MIB },
    )
    .await;
    // More bodies, from a fifth device and from one of the four: refused at once, by
    // their declared length, before a byte of them is sent.
    for src in ["127.0.0.6", "127.0.0.2"] {
        let mut s = connect_from(src, env.bridge.addr).await;
        s.write_all(head(&env, Some(MIB)).as_bytes()).await.unwrap();
        let head = response_head(&mut s)
            .await
            .unwrap_or_else(|| panic!("no answer to {src} before its body"));
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.to_ascii_lowercase().contains("\r\nretry-after: 5\r\n"),
            "{head}"
        );
    }
    // A chunked body is refused as soon as it outgrows what is left.
    let mut s = connect_from("127.0.0.7", env.bridge.addr).await;
    s.write_all(head(&env, None).as_bytes()).await.unwrap();
    s.write_all(format!("{:x}\r\n", 64 * 1024).as_bytes())
        .await
        .unwrap();
    s.write_all(&full[..64 * 1024]).await.unwrap();
    s.write_all(b"\r\n").await.unwrap();
    let head503 = response_head(&mut s)
        .await
        .expect("an answer to the chunked body");
    assert!(head503.starts_with("HTTP/1.1 503 "), "{head503}");
    // Requests without a body are served meanwhile.
    let r = env.http.get(env.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .req("PROPFIND", "/")
        .header("Depth", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 207);
    // The bodies within the budget are served, and give their share back.
    for s in &mut held {
        s.write_all(&full[MIB / 2..]).await.unwrap();
    }
    for s in &mut held {
        let head = response_head(s).await.expect("an answer to a held body");
        assert!(head.starts_with("HTTP/1.1 207 "), "{head}");
    }
    wait_until(
        Duration::from_secs(5),
        "the served bodies give their budget back",
        || async { bodies.used() == 0 },
    )
    .await;
    let (status, text) = env
        .propfind("/", "0", std::str::from_utf8(&full).unwrap())
        .await;
    assert_eq!(status, 207, "{text}");
    assert!(bodies.refused() >= 3);
    env.stop().await;
}
