//! HTTPS on `server.tls_listen` end to end: clients that trust only the bridge's local CA
//! (`certs_dir/ca.pem`) reach the DAV tree over h2 and HTTP/1.1, plain HTTP on the TLS port
//! fails without harming the listener, and shutdown stops both listeners.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use icloud_bridge::config::Config;
use icloud_bridge::server::listener;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tls_options() -> Options {
    Options {
        tweak: Box::new(|cfg| cfg.server.tls_listen = Some("127.0.0.1:0".parse().unwrap())),
        ..Default::default()
    }
}

fn ca_path(env: &Env) -> std::path::PathBuf {
    env.dir.path().join("certs").join("ca.pem")
}

/// A client that trusts only the bridge's CA and finds `localhost` at `addr`.
fn https_client(env: &Env, addr: SocketAddr, http1_only: bool) -> reqwest::Client {
    let pem = std::fs::read(ca_path(env)).expect("init/serve wrote ca.pem");
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none());
    if http1_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn propfind(
    client: &reqwest::Client,
    env: &Env,
    url: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .request(reqwest::Method::from_bytes(b"PROPFIND").unwrap(), url)
        .basic_auth(&env.user, Some(&env.pass))
        .header("Depth", "0")
        .header("Content-Type", "application/xml; charset=utf-8")
        .body(body.to_string())
        .send()
        .await
}

#[tokio::test]
async fn dav_over_https_with_only_the_local_ca_trusted() {
    let env = start_with(tls_options()).await;
    let tls = env.bridge.tls_addr.expect("tls_listen is bound");
    assert_ne!(tls.port(), 0);
    assert_ne!(tls, env.bridge.addr);
    #[cfg(unix)]
    for key in ["ca-key.pem", "server-key.pem"] {
        use std::os::unix::fs::PermissionsExt;
        let p = env.dir.path().join("certs").join(key);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    let base = format!("https://localhost:{}", tls.port());

    // h2 by ALPN.
    let h2 = https_client(&env, tls, false);
    let r = propfind(
        &h2,
        &env,
        &format!("{base}/dav/alice/principal/"),
        PROPFIND_HOMES,
    )
    .await
    .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 207);
    let body = r.text().await.unwrap();
    assert!(body.contains("/dav/alice/calendars/"), "{body}");
    env.assert_no_leak("principal over https", &body);
    // Discovery on the bare URL, as DAVx5 and Thunderbird start.
    let r = propfind(&h2, &env, &format!("{base}/"), PROPFIND_PRINCIPAL)
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 207);
    assert!(r.text().await.unwrap().contains("/dav/alice/principal/"));

    // HTTP/1.1 by ALPN, by address (an IP SAN) instead of name.
    let h1 = https_client(&env, tls, true);
    let r = propfind(
        &h1,
        &env,
        &format!("https://127.0.0.1:{}/dav/alice/principal/", tls.port()),
        PROPFIND_HOMES,
    )
    .await
    .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status().as_u16(), 207);

    // Local authentication applies as on plain HTTP.
    let r = h2
        .request(
            reqwest::Method::from_bytes(b"PROPFIND").unwrap(),
            format!("{base}/dav/alice/principal/"),
        )
        .basic_auth(&env.user, Some("wrong"))
        .header("Depth", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // A client that trusts only the public roots refuses the bridge's certificate.
    let public = reqwest::Client::builder()
        .resolve("localhost", tls)
        .build()
        .unwrap();
    let err = public
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");

    // The status page read over HTTPS shows https addresses; read over HTTP it offers them.
    let page = h2
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!("{base}/dav/alice/calendars/")),
        "{page}"
    );
    assert!(page.contains("href=\"/ca.pem\""), "{page}");
    let page = env.page("/status").await;
    assert!(
        page.contains(&format!("https://127.0.0.1:{}/", tls.port())),
        "{page}"
    );
    let st = env.status_json().await;
    assert_eq!(
        st["accounts"][0]["caldav_https_url"],
        format!("https://127.0.0.1:{}/dav/alice/calendars/", tls.port())
    );

    // The CA is public: served without a login, as the file.
    let r = env.http.get(env.url("/ca.pem")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-pem-file");
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        std::fs::read(ca_path(&env)).unwrap()
    );
    env.stop().await;
}

#[tokio::test]
async fn plain_http_on_the_tls_port_fails_and_the_listener_keeps_serving() {
    let env = start_with(tls_options()).await;
    let tls = env.bridge.tls_addr.unwrap();
    let client = https_client(&env, tls, false);
    let base = format!("https://localhost:{}", tls.port());

    // A silent client holds a connection open without a handshake: nobody waits for it.
    let silent = tokio::net::TcpStream::connect(tls).await.unwrap();

    // Plain HTTP to the TLS port: a 400 that says to use https, then the connection closes.
    let mut tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
        .await
        .expect("the bridge closes a plain-HTTP connection on the TLS port")
        .ok();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400 "), "{got}");
    assert!(got.contains("https://"), "{got}");
    let r = env
        .http
        .get(format!("http://{tls}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Garbage that is neither: the connection just closes.
    let mut tcp = tokio::net::TcpStream::connect(tls).await.unwrap();
    tcp.write_all(&[0u8; 64]).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got))
        .await
        .expect("the bridge closes a garbage connection on the TLS port")
        .ok();
    assert!(!got.starts_with(b"HTTP/"));

    // Both listeners still serve.
    for _ in 0..3 {
        let r = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(env.page("/healthz").await, "ok\n");

    // An idle keep-alive HTTPS connection and the silent one do not hold up shutdown.
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let http_addr = env.bridge.addr;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(8), env.stop())
        .await
        .expect("the bridge stops");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    for addr in [tls, http_addr] {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts after shutdown"
        );
    }
}

#[tokio::test]
async fn tls_listen_errors_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = Config::defaults();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.data_dir = dir.path().to_path_buf();
    cfg.server.certs_dir = dir.path().join("certs");
    cfg.server.tls_listen = Some(taken.local_addr().unwrap());
    let err = listener::start(cfg.clone())
        .await
        .err()
        .expect("port taken")
        .to_string();
    assert!(err.contains("server.tls_listen"), "{err}");
    // A broken CA file: named, and nothing starts.
    cfg.server.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/ca.pem"), "not a certificate").unwrap();
    let err = listener::start(cfg)
        .await
        .err()
        .expect("broken ca.pem")
        .to_string();
    assert!(
        err.contains("server.tls_listen") && err.contains("ca.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn the_paste_form_works_over_https_with_h2() {
    let admin = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let out = admin.clone();
    let env = start_with(Options {
        tweak: Box::new(move |cfg| {
            cfg.server.tls_listen = Some("127.0.0.1:0".parse().unwrap());
            *out.lock().unwrap() =
                icloud_bridge::auth::logins::LoginStore::open(&cfg.server.data_dir)
                    .unwrap()
                    .add("admin", "alice", true, None)
                    .unwrap();
        }),
        ..Default::default()
    })
    .await;
    let admin_pw = admin.lock().unwrap().clone();
    let tls = env.bridge.tls_addr.unwrap();
    let client = https_client(&env, tls, false);
    let base = format!("https://localhost:{}", tls.port());
    // Browsers speak h2 over TLS: no Host header, the host is in :authority.
    let r = client
        .get(format!("{base}/admin/reconnect?account=alice"))
        .basic_auth("admin", Some(&admin_pw))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await.unwrap();
    let marker = "name=\"csrf\" value=\"";
    let i = html.find(marker).expect("csrf field") + marker.len();
    let csrf = html[i..i + html[i..].find('"').unwrap()].to_string();
    let fresh = env
        .control()
        .generate_asp(icloud_bridge::standin::DEMO_APPLE_ID, "https")
        .unwrap();
    let r = client
        .post(format!("{base}/admin/reconnect"))
        .basic_auth("admin", Some(&admin_pw))
        .header("Origin", base.clone())
        .form(&[
            ("account", "alice"),
            ("csrf", csrf.as_str()),
            ("password", fresh.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status().as_u16(), 303, "{}", r.text().await.unwrap());
    // Another site's origin is still refused.
    let r = client
        .post(format!("{base}/admin/reconnect"))
        .basic_auth("admin", Some(&admin_pw))
        .header("Origin", "https://evil.example")
        .form(&[("account", "alice"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    env.stop().await;
}
