//! SMTP submission through the bridge, against the stand-in's SMTP role: Python's smtplib
//! sends a message that arrives byte for byte; a raw client checks EHLO/STARTTLS/AUTH; every
//! failure mapping (wrong local password, revoked app-specific password, transient trouble);
//! a 10 MB message streams through; no secret reaches the logs.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use icloud_bridge::standin::DEMO_APPLE_ID;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A CA and a server certificate for 127.0.0.1 in `certs_dir` layout; returns the CA PEM.
fn write_certs(dir: &std::path::Path) -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa,
        KeyPair,
    };
    let dn = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL takes a leaf whose issuer equals its subject as self-signed.
    ca.distinguished_name = dn("bridge test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    params.distinguished_name = dn("localhost");
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server-key.pem"), key.serialize_pem()).unwrap();
    ca.pem()
}

/// The bridge with SMTP on, its STARTTLS certificate signed by a CA the test trusts.
async fn start_smtp() -> (Env, String) {
    let certs = tempfile::tempdir().unwrap().keep();
    let ca = write_certs(&certs);
    let env = start_with(Options {
        smtp: true,
        tweak: Box::new(move |cfg| cfg.server.certs_dir = certs),
        ..Default::default()
    })
    .await;
    (env, ca)
}

/// Wait until `/status.json` shows `services.smtp.state == want`.
async fn wait_smtp_state(env: &Env, want: &str) -> serde_json::Value {
    wait_for(
        Duration::from_secs(5),
        &format!("status.json shows smtp {want}"),
        || async {
            let s = env.status_json().await;
            (s["accounts"][0]["services"]["smtp"]["state"] == want).then_some(s)
        },
    )
    .await
}

struct Client {
    conn: BufReader<Box<dyn Io>>,
}

impl Client {
    async fn connect(env: &Env) -> (Client, String) {
        let tcp = TcpStream::connect(env.smtp_addr()).await.unwrap();
        let mut c = Client {
            conn: BufReader::new(Box::new(tcp)),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// One whole reply; empty at EOF.
    async fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            if self.conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                return all;
            }
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return all;
            }
        }
    }

    async fn raw(&mut self, bytes: &[u8]) {
        self.conn.get_mut().write_all(bytes).await.unwrap();
        self.conn.get_mut().flush().await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.raw(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    async fn starttls(self, ca_pem: &str) -> Client {
        let mut c = self;
        let r = c.cmd("STARTTLS").await;
        assert!(r.starts_with("220 "), "{r}");
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(
                ServerName::try_from("127.0.0.1").unwrap(),
                c.conn.into_inner(),
            )
            .await
            .unwrap();
        Client {
            conn: BufReader::new(Box::new(tls)),
        }
    }

    async fn auth_plain(&mut self, user: &str, pass: &str) -> String {
        self.cmd(&format!(
            "AUTH PLAIN {}",
            B64.encode(format!("\0{user}\0{pass}"))
        ))
        .await
    }

    /// Connected, greeted (EHLO) and logged in on loopback without TLS.
    async fn logged_in(env: &Env) -> Client {
        let (mut c, _) = Client::connect(env).await;
        assert!(c.cmd("EHLO test.example").await.starts_with("250"));
        let r = c.auth_plain(&env.user, &env.pass).await;
        assert_eq!(r, "235 2.7.0 Authentication successful\r\n");
        c
    }
}

/// AUTH attempts the stand-in's SMTP role has seen.
fn upstream_auths(env: &Env) -> usize {
    env.control()
        .request_log()
        .iter()
        .filter(|r| r.role == "smtp" && r.method == "AUTH")
        .count()
}

#[tokio::test]
async fn smtplib_sends_a_message_that_arrives_byte_for_byte() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 not found; skipping the smtplib test");
        return;
    }
    let (env, ca) = start_smtp().await;
    let ca_path = env.dir.path().join("bridge-ca.pem");
    std::fs::write(&ca_path, &ca).unwrap();
    // Headers and body with CRLF endings, lines that need dot-stuffing, 8-bit text.
    let message = "From: Alice <alice@icloud.com>\r\nTo: bob@example.org, carol@example.org\r\nSubject: through the bridge\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nHello B\u{f6}b,\r\n.a line that starts with a dot\r\n..two dots\r\n.\r\nlast line\r\n";
    let msg_path = env.dir.path().join("message.eml");
    std::fs::write(&msg_path, message).unwrap();
    let script = r#"
import smtplib, ssl, sys
host, port, user, password, cafile, path = sys.argv[1:7]
ctx = ssl.create_default_context(cafile=cafile)
with open(path, "rb") as f:
    msg = f.read()
s = smtplib.SMTP(host, int(port), timeout=30)
s.ehlo()
s.starttls(context=ctx)
s.ehlo()
s.login(user, password)
refused = s.sendmail("alice@icloud.com", ["bob@example.org", "carol@example.org"], msg)
assert not refused, refused
s.quit()
print("sent")
"#;
    let addr = env.smtp_addr();
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(&env.user)
        .arg(&env.pass)
        .arg(&ca_path)
        .arg(&msg_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "smtplib failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let sent = env.control().sent_messages(DEMO_APPLE_ID);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].mail_from, "alice@icloud.com");
    assert_eq!(
        sent[0].rcpt_to,
        vec!["bob@example.org", "carol@example.org"]
    );
    assert_eq!(
        String::from_utf8_lossy(&sent[0].data),
        message,
        "the message arrives as sent"
    );
    let s = wait_smtp_state(&env, "ok").await;
    assert_eq!(s["accounts"][0]["state"], "ok", "{s}");
    env.stop().await;
}

#[tokio::test]
async fn ehlo_starttls_and_auth_replies() {
    let (env, ca) = start_smtp().await;
    let (mut c, greeting) = Client::connect(&env).await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(!greeting.contains("127.0.0.1:"), "{greeting}");
    // Before EHLO, AUTH is refused; mail commands need a login.
    assert!(c.cmd("AUTH PLAIN AGEAYg==").await.starts_with("503"));
    assert!(c
        .cmd("MAIL FROM:<alice@icloud.com>")
        .await
        .starts_with("530"));
    let ehlo = c.cmd("EHLO test.example").await;
    for cap in ["STARTTLS", "PIPELINING", "8BITMIME", "AUTH PLAIN LOGIN"] {
        assert!(ehlo.contains(cap), "loopback offers {cap}: {ehlo}");
    }
    assert!(c.cmd("NOOP").await.starts_with("250"));
    assert!(c.cmd("AUTH CRAM-MD5").await.starts_with("504"));
    assert!(c.cmd("BOGUS").await.starts_with("500"));
    let long = format!("NOOP {}", "x".repeat(100_000));
    assert!(c.cmd(&long).await.starts_with("500"));
    // STARTTLS, then AUTH LOGIN over TLS; the session is relayed after 235.
    let mut c = c.starttls(&ca).await;
    let ehlo = c.cmd("EHLO test.example").await;
    assert!(
        !ehlo.contains("STARTTLS") && ehlo.contains("AUTH PLAIN LOGIN"),
        "{ehlo}"
    );
    assert!(c.cmd("STARTTLS").await.starts_with("503"));
    assert!(c.cmd("AUTH LOGIN").await.starts_with("334 VXNlcm5hbWU6"));
    assert!(c
        .cmd(&B64.encode(&env.user))
        .await
        .starts_with("334 UGFzc3dvcmQ6"));
    assert_eq!(
        c.cmd(&B64.encode(&env.pass)).await,
        "235 2.7.0 Authentication successful\r\n"
    );
    // Now iCloud answers: a foreign sender is its business.
    let r = c.cmd("MAIL FROM:<mallory@example.org>").await;
    assert!(r.starts_with("553"), "{r}");
    assert!(c.cmd("RSET").await.starts_with("250"));
    // Pipelined envelope and a dot-stuffed body.
    c.raw(b"MAIL FROM:<alice@icloud.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        .await;
    for want in ["250", "250", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{r}");
    }
    c.raw(b"Subject: raw\r\n\r\n..hidden dot\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    assert_eq!(c.reply().await, "", "closed after QUIT");
    let sent = env.control().sent_messages(DEMO_APPLE_ID);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].data,
        b"Subject: raw\r\n\r\n.hidden dot\r\n".to_vec()
    );

    // AUTH pipelined right behind AUTH PLAIN (RFC 4954 allows it) reaches iCloud too.
    let (mut c, _) = Client::connect(&env).await;
    assert!(c.cmd("EHLO test.example").await.starts_with("250"));
    let auth = B64.encode(format!("\0{}\0{}", env.user, env.pass));
    c.raw(format!("AUTH PLAIN {auth}\r\nMAIL FROM:<alice@icloud.com>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n").as_bytes())
        .await;
    for want in ["235", "250", "250", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{r}");
    }
    c.raw(b"x\r\n.\r\nQUIT\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    assert!(c.reply().await.starts_with("221"));
    assert_eq!(env.control().sent_messages(DEMO_APPLE_ID).len(), 2);
    env.stop().await;
}

#[tokio::test]
async fn auth_needs_tls_on_an_address_that_is_not_loopback() {
    // A local non-loopback address, if the machine has one.
    let ip = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect("192.0.2.1:9").map(|_| s))
        .and_then(|s| s.local_addr())
        .map(|a| a.ip());
    let ip = match ip {
        Ok(ip) if !ip.is_loopback() && !ip.is_unspecified() => ip,
        _ => {
            eprintln!("no non-loopback address; skipping");
            return;
        }
    };
    let certs = tempfile::tempdir().unwrap().keep();
    let ca = write_certs(&certs);
    let env = start_with(Options {
        smtp: true,
        tweak: Box::new(move |cfg| {
            cfg.server.certs_dir = certs;
            cfg.server.smtp_listen = Some(std::net::SocketAddr::new(ip, 0));
            // Plain SMTP on a LAN address starts only when asked for.
            cfg.server.allow_plaintext_lan = true;
        }),
        ..Default::default()
    })
    .await;
    let (mut c, _) = Client::connect(&env).await;
    let ehlo = c.cmd("EHLO test.example").await;
    assert!(
        ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"),
        "{ehlo}"
    );
    let r = c.auth_plain(&env.user, &env.pass).await;
    assert!(r.starts_with("530 "), "{r}");
    // The test certificate names 127.0.0.1, so only the refusal is checked past this point.
    let _ = ca;
    env.stop().await;
}

#[tokio::test]
async fn a_wrong_local_password_gets_535_and_never_reaches_icloud() {
    let (env, _) = start_smtp().await;
    wait_smtp_state(&env, "ok").await;
    let before = upstream_auths(&env);
    let (mut c, _) = Client::connect(&env).await;
    c.cmd("EHLO test.example").await;
    let r = c.auth_plain(&env.user, "not-the-password").await;
    assert!(r.starts_with("535 5.7.8 "), "{r}");
    let r = c.auth_plain("nobody", &env.pass).await;
    assert!(r.starts_with("535 5.7.8 "), "{r}");
    // The Apple ID and app-specific password are not a bridge login either.
    let r = c
        .auth_plain(DEMO_APPLE_ID, icloud_bridge::standin::DEMO_APP_PASSWORD)
        .await;
    assert!(r.starts_with("535 5.7.8 "), "{r}");
    // The session goes on: the right password works.
    assert!(c.auth_plain(&env.user, &env.pass).await.starts_with("235"));
    assert_eq!(upstream_auths(&env), before + 1);
    assert!(c.cmd("QUIT").await.starts_with("221"));
    let s = env.status_json().await;
    assert_eq!(s["accounts"][0]["services"]["smtp"]["state"], "ok", "{s}");
    env.stop().await;
}

#[tokio::test]
async fn a_revoked_app_password_gets_454_with_the_sentence_and_auth_rejected() {
    let (env, _) = start_smtp().await;
    wait_smtp_state(&env, "ok").await;
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    let (mut c, _) = Client::connect(&env).await;
    c.cmd("EHLO test.example").await;
    let r = c.auth_plain(&env.user, &env.pass).await;
    assert!(
        r.starts_with(
            "454 4.7.0 iCloud no longer accepts the app-specific password for alice@icloud.com"
        ),
        "{r}"
    );
    assert!(r.contains("icloud-bridge reconnect"), "{r}");
    let s = wait_smtp_state(&env, "auth_rejected").await;
    assert_eq!(s["accounts"][0]["state"], "auth_rejected", "{s}");
    // The session stays usable; asking again does not send the dead password to Apple.
    let before = upstream_auths(&env);
    let r = c.auth_plain(&env.user, &env.pass).await;
    assert!(r.starts_with("454 4.7.0 "), "{r}");
    let (mut c2, _) = Client::connect(&env).await;
    c2.cmd("EHLO test.example").await;
    assert!(c2
        .auth_plain(&env.user, &env.pass)
        .await
        .starts_with("454 4.7.0 "));
    assert_eq!(upstream_auths(&env), before, "no retry storm");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    // The operator sees the start-up login and the refused one, and no more.
    let m = env.page("/metrics").await;
    for line in [
        "icloud_bridge_upstream_logins_total{service=\"smtp\",result=\"ok\"} 1",
        "icloud_bridge_upstream_logins_total{service=\"smtp\",result=\"rejected\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }
    env.stop().await;
}

#[tokio::test]
async fn transient_trouble_is_temporary_and_never_a_bad_password() {
    let (env, _) = start_smtp().await;
    wait_smtp_state(&env, "ok").await;
    let ctl = env.control();
    for (switch, value) in [
        ("smtp.transient", "454"),
        ("smtp.transient", "421"),
        ("smtp.drop", "true"),
    ] {
        ctl.set_switch(switch, value).unwrap();
        let (mut c, _) = Client::connect(&env).await;
        c.cmd("EHLO test.example").await;
        let r = c.auth_plain(&env.user, &env.pass).await;
        assert!(
            r.starts_with("421 4.4.0 iCloud could not be reached"),
            "{switch}={value}: {r}"
        );
        assert_eq!(c.reply().await, "", "421 closes the connection");
        let s = wait_smtp_state(&env, "unreachable").await;
        assert_ne!(s["accounts"][0]["state"], "auth_rejected", "{s}");
        ctl.set_switch("smtp.transient", "none").unwrap();
        ctl.set_switch("smtp.drop", "false").unwrap();
        // Next time it works (no probe limit after a transient failure).
        let mut c = Client::logged_in(&env).await;
        assert!(c.cmd("QUIT").await.starts_with("221"));
        wait_smtp_state(&env, "ok").await;
    }
    env.stop().await;
}

#[tokio::test]
async fn ten_megabytes_stream_through() {
    let (env, _) = start_smtp().await;
    let mut c = Client::logged_in(&env).await;
    assert!(c
        .cmd("MAIL FROM:<alice@icloud.com>")
        .await
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    let before = env.control().smtp_data_bytes();
    // 10 MiB in 76-character lines, some starting with a dot.
    let mut body = Vec::with_capacity(10 * 1024 * 1024 + 100);
    body.extend_from_slice(b"Subject: big\r\n\r\n");
    let mut i = 0u64;
    while body.len() < 10 * 1024 * 1024 {
        let line = if i % 1000 == 0 {
            format!(".{:075}\r\n", i)
        } else {
            format!("{:076}\r\n", i)
        };
        body.extend_from_slice(line.as_bytes());
        i += 1;
    }
    let mut stuffed = Vec::with_capacity(body.len() + 20_000);
    for line in body.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    c.raw(&stuffed).await;
    // Before the final dot, iCloud already has (nearly) all of it: the bridge streams.
    wait_until(
        Duration::from_secs(10),
        "all but the last 64 KiB reach iCloud before the end of DATA",
        || async { env.control().smtp_data_bytes() - before >= body.len() as u64 - 64 * 1024 },
    )
    .await;
    c.raw(b".\r\n").await;
    let r = c.reply().await;
    assert!(r.starts_with("250"), "{r}");
    let sent = env.control().sent_messages(DEMO_APPLE_ID);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].data == body, "the 10 MB message arrives intact");
    assert!(c.cmd("QUIT").await.starts_with("221"));
    env.stop().await;
}

#[tokio::test]
async fn no_secret_in_the_logs() {
    let logs = LogCapture::start();
    let (env, ca) = start_smtp().await;
    wait_smtp_state(&env, "ok").await;
    // Success over TLS with PLAIN, a wrong local password, AUTH LOGIN, then a revoked ASP.
    let (mut c, _) = Client::connect(&env).await;
    c.cmd("EHLO test.example").await;
    let mut c = c.starttls(&ca).await;
    c.cmd("EHLO test.example").await;
    assert!(c
        .auth_plain(&env.user, "wrong-pass-1")
        .await
        .starts_with("535"));
    assert!(c.auth_plain(&env.user, &env.pass).await.starts_with("235"));
    c.cmd("QUIT").await;
    let (mut c, _) = Client::connect(&env).await;
    c.cmd("EHLO test.example").await;
    c.cmd("AUTH LOGIN").await;
    c.cmd(&B64.encode(&env.user)).await;
    assert!(c.cmd(&B64.encode(&env.pass)).await.starts_with("235"));
    c.cmd("QUIT").await;
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    let (mut c, _) = Client::connect(&env).await;
    c.cmd("EHLO test.example").await;
    assert!(c.auth_plain(&env.user, &env.pass).await.starts_with("454"));
    let text = logs.text();
    assert!(text.contains("smtp: relaying to iCloud"), "{text}");
    let asp = icloud_bridge::standin::DEMO_APP_PASSWORD;
    let secrets = [
        env.pass.clone(),
        "wrong-pass-1".to_string(),
        asp.to_string(),
        B64.encode(format!("\0{}\0{}", env.user, env.pass)),
        B64.encode(&env.pass),
        B64.encode(format!("\0{DEMO_APPLE_ID}\0{asp}")),
    ];
    for s in secrets {
        assert!(!text.contains(&s), "a secret is in the logs: {s}");
    }
    env.stop().await;
}

#[tokio::test]
async fn implicit_tls_on_a_starttls_port_and_a_silent_server_are_unreachable() {
    // smtps:// pointed at the STARTTLS port: the handshake fails (as with smtp.mail.me.com).
    let env = start_with(Options {
        smtp: true,
        tweak: Box::new(|cfg| cfg.upstream.smtp.set_scheme("smtps").unwrap()),
        ..Default::default()
    })
    .await;
    let (mut c, _) = Client::connect(&env).await;
    c.cmd("EHLO test.example").await;
    let r = c.auth_plain(&env.user, &env.pass).await;
    assert!(
        r.starts_with("421 4.4.0 iCloud could not be reached (TLS"),
        "{r}"
    );
    let s = wait_smtp_state(&env, "unreachable").await;
    assert_ne!(s["accounts"][0]["state"], "auth_rejected");
    env.stop().await;

    // A server that accepts and never speaks: a timeout, 421 4.4.1.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("smtp://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut keep = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            keep.push(s);
        }
    });
    let env = start_with(Options {
        smtp: true,
        timeout_secs: 1,
        tweak: Box::new(move |cfg| cfg.upstream.smtp = url.parse().unwrap()),
        ..Default::default()
    })
    .await;
    let (mut c, _) = Client::connect(&env).await;
    c.cmd("EHLO test.example").await;
    let r = c.auth_plain(&env.user, &env.pass).await;
    assert!(r.starts_with("421 4.4.1 "), "{r}");
    wait_smtp_state(&env, "unreachable").await;
    env.stop().await;
    held.abort();
}

#[tokio::test]
async fn shutdown_tells_waiting_clients_421() {
    let (env, _) = start_smtp().await;
    let (mut c, _) = Client::connect(&env).await;
    c.cmd("EHLO test.example").await;
    let token = env.bridge.token();
    token.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), c.reply())
        .await
        .unwrap();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    assert_eq!(c.reply().await, "");
    let started = std::time::Instant::now();
    env.stop().await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn check_tests_smtp_when_it_is_served() {
    let (env, _) = start_smtp().await;
    let ca = env.cfg.upstream.ca_file.clone().unwrap();
    // A separate data dir for the CLI, with the same stored password.
    let data = tempfile::tempdir().unwrap();
    icloud_bridge::accounts::vault::Vault::open(data.path())
        .set(
            "alice",
            &icloud_bridge::secret::Secret::new(icloud_bridge::standin::DEMO_APP_PASSWORD.into()),
        )
        .unwrap();
    let cfg = data.path().join("c.toml");
    let write = |smtp: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nsmtp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n\n[[account]]\nname = \"alice\"\napple_id = \"{DEMO_APPLE_ID}\"\n\n[upstream]\ncaldav = {:?}\ncarddav = {:?}\nsmtp = {:?}\nca_file = {:?}\ntimeout_secs = 5\n",
                data.path(),
                env.standin.caldav_url(),
                env.standin.carddav_url(),
                smtp,
                ca,
            ),
        )
        .unwrap();
    };
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_icloud-bridge"))
            .args(["--config", cfg.to_str().unwrap(), "check"])
            .output()
    };
    write(&env.standin.smtp_url());
    let out = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("alice smtp ok"), "{stdout}");
    env.control().set_switch("smtp.transient", "454").unwrap();
    let out = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success());
    assert!(
        stdout.contains("alice smtp unreachable: iCloud could not be reached"),
        "{stdout}"
    );
    env.stop().await;
}
