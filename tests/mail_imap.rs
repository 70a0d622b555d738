//! The IMAP front end end to end: a raw client and Python's imaplib through the bridge to the
//! stand-in's IMAP role; STARTTLS and implicit TLS; every failure mapping (wrong local
//! password, revoked app-specific password, transient upstream trouble); no secret in logs.

mod support;

use std::sync::Arc;
use std::time::Duration;

use icloud_bridge::mail::BoxIo;
use icloud_bridge::standin::DEMO_APPLE_ID;
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Client {
    s: BufReader<BoxIo>,
}

impl Client {
    async fn plain(addr: std::net::SocketAddr) -> (Client, String) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Client::over(Box::new(tcp)).await
    }

    async fn over(io: BoxIo) -> (Client, String) {
        let mut c = Client {
            s: BufReader::new(io),
        };
        let g = c.line().await.expect("greeting");
        (c, g)
    }

    /// One response line, literals inlined; `None` at EOF.
    async fn line(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            let mut l = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.s.read_until(b'\n', &mut l))
                .await
                .expect("an answer within 10 s")
                .ok()?;
            if n == 0 {
                return None;
            }
            let text = String::from_utf8_lossy(&l).trim_end().to_string();
            out.extend_from_slice(text.as_bytes());
            let lit = text
                .strip_suffix('}')
                .and_then(|t| t.rsplit_once('{'))
                .and_then(|(_, n)| n.trim_end_matches('+').parse::<usize>().ok());
            match lit {
                Some(n) => {
                    let mut buf = vec![0; n];
                    self.s.read_exact(&mut buf).await.unwrap();
                    out.push(b'\n');
                    out.extend_from_slice(&buf);
                }
                None => return Some(String::from_utf8_lossy(&out).into_owned()),
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.s.get_mut().write_all(text.as_bytes()).await.unwrap();
        self.s.get_mut().flush().await.unwrap();
    }

    async fn until(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut v = Vec::new();
        loop {
            let l = self.line().await.expect("connection closed early");
            if l.starts_with(&format!("{tag} ")) {
                return (v, l);
            }
            v.push(l);
        }
    }

    async fn cmd(&mut self, tag: &str, text: &str) -> (Vec<String>, String) {
        self.send(&format!("{tag} {text}\r\n")).await;
        self.until(tag).await
    }
}

fn imap_env() -> Options {
    Options {
        imap: true,
        ..Options::default()
    }
}

/// Wait until `/status.json` shows `state` for services.imap (the start-up check ran).
async fn wait_imap_state(env: &Env, state: &str) -> serde_json::Value {
    wait_for(
        Duration::from_secs(5),
        &format!("status.json shows imap {state}"),
        || async {
            let st = env.status_json().await;
            (st["accounts"][0]["services"]["imap"]["state"] == state).then_some(st)
        },
    )
    .await
}

/// LOGIN attempts the stand-in saw.
fn upstream_logins(env: &Env) -> usize {
    env.control()
        .request_log()
        .iter()
        .filter(|r| r.role == "imap")
        .count()
}

#[tokio::test]
async fn raw_client_session_through_the_bridge() {
    let logs = LogCapture::start();
    let env = start_with(imap_env()).await;
    wait_imap_state(&env, "ok").await;
    let (mut c, greeting) = Client::plain(env.imap_addr()).await;
    assert_eq!(
        greeting,
        "* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR] icloud-bridge IMAP ready"
    );
    let (u, t) = c.cmd("a0", "CAPABILITY").await;
    assert_eq!(
        u,
        vec!["* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR"]
    );
    assert!(t.starts_with("a0 OK"));
    let (_, t) = c.cmd("a1", "NOOP").await;
    assert!(t.starts_with("a1 OK"));
    let (_, t) = c.cmd("a2", "SELECT INBOX").await;
    assert!(t.starts_with("a2 BAD"), "{t}");
    let (_, t) = c.cmd("a3", "FOO BAR").await;
    assert!(t.starts_with("a3 BAD"), "{t}");
    // LOGIN and the next command in one write: both answered, in order.
    c.send(&format!(
        "a4 LOGIN {} \"{}\"\r\na5 SELECT INBOX\r\n",
        env.user, env.pass
    ))
    .await;
    let (_, t) = c.until("a4").await;
    assert!(t.starts_with("a4 OK [CAPABILITY "), "{t}");
    assert!(t.contains(" IDLE") && t.contains(" CONDSTORE"), "{t}");
    assert!(!t.contains("AUTH=") && !t.contains("SASL-IR"), "{t}");
    let (u, t) = c.until("a5").await;
    assert!(u.contains(&"* 2 EXISTS".to_string()), "{u:?}");
    assert!(t.starts_with("a5 OK [READ-WRITE]"), "{t}");
    let (u, _) = c.cmd("b1", "LIST \"\" \"*\"").await;
    assert_eq!(u.len(), 7, "{u:?}");
    let (u, _) = c
        .cmd(
            "b2",
            "UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
        )
        .await;
    assert!(u[1].contains("Dinner on Friday?"), "{u:?}");
    let msg = "From: phone@example.org\r\nSubject: via the bridge\r\n\r\nhello\r\n";
    c.send(&format!("b3 APPEND INBOX (\\Seen) {{{}}}\r\n", msg.len()))
        .await;
    assert!(c.line().await.unwrap().starts_with('+'));
    c.send(&format!("{msg}\r\n")).await;
    let (_, t) = c.until("b3").await;
    assert!(t.starts_with("b3 OK [APPENDUID"), "{t}");
    let inbox = env.control().mailbox_messages(DEMO_APPLE_ID, "INBOX");
    assert_eq!(inbox.len(), 3);
    assert_eq!(inbox[2].raw, msg.as_bytes());
    let (_, t) = c.cmd("b4", "STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    assert!(t.starts_with("b4 OK"));
    let (u, _) = c.cmd("b5", "EXPUNGE").await;
    assert_eq!(u, vec!["* 1 EXPUNGE"]);
    // IDLE sees a message delivered meanwhile.
    c.send("b6 IDLE\r\n").await;
    assert!(c.line().await.unwrap().starts_with('+'));
    env.control()
        .deliver(DEMO_APPLE_ID, "INBOX", b"Subject: pushed\r\n\r\nnew\r\n")
        .unwrap();
    assert_eq!(c.line().await.unwrap(), "* 3 EXISTS");
    c.send("DONE\r\n").await;
    let (_, t) = c.until("b6").await;
    assert!(t.starts_with("b6 OK"), "{t}");
    let (u, _) = c.cmd("b7", "LOGOUT").await;
    assert!(u[0].starts_with("* BYE"));
    assert!(c.line().await.is_none());
    // AUTHENTICATE PLAIN with SASL-IR, and with a continuation.
    use base64::Engine;
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", env.user, env.pass));
    let (mut c, _) = Client::plain(env.imap_addr()).await;
    let (_, t) = c.cmd("c1", &format!("AUTHENTICATE PLAIN {b64}")).await;
    assert!(t.starts_with("c1 OK [CAPABILITY"), "{t}");
    let (mut c, _) = Client::plain(env.imap_addr()).await;
    c.send("c2 AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await.unwrap(), "+");
    c.send(&format!("{b64}\r\n")).await;
    let (_, t) = c.until("c2").await;
    assert!(t.starts_with("c2 OK [CAPABILITY"), "{t}");
    let (_, t) = c.cmd("c3", "NOOP").await;
    assert!(t.starts_with("c3 OK"), "{t}");
    drop(c);
    env.stop().await;
    let text = logs.text();
    assert!(text.contains("IMAP session started"), "{text}");
    for secret in [env_secret(), b64.as_str()] {
        assert!(!text.contains(secret), "a secret in the logs:\n{text}");
    }
}

/// The stand-in's app-specific password (the one the bridge holds).
fn env_secret() -> &'static str {
    icloud_bridge::standin::DEMO_APP_PASSWORD
}

#[tokio::test]
async fn wrong_local_password_is_authenticationfailed_and_never_reaches_icloud() {
    let logs = LogCapture::start();
    let env = start_with(imap_env()).await;
    wait_imap_state(&env, "ok").await;
    let before = upstream_logins(&env);
    let (mut c, _) = Client::plain(env.imap_addr()).await;
    let (u, t) = c
        .cmd("a", &format!("LOGIN {} wrong-local-secret-123", env.user))
        .await;
    assert!(u.is_empty(), "{u:?}");
    assert_eq!(t, "a NO [AUTHENTICATIONFAILED] Authentication failed");
    let (_, t) = c.cmd("b", "LOGIN nobody also-wrong-456").await;
    assert_eq!(t, "b NO [AUTHENTICATIONFAILED] Authentication failed");
    // Still connected; the right password works afterwards.
    let (_, t) = c
        .cmd("c", &format!("LOGIN {} \"{}\"", env.user, env.pass))
        .await;
    assert!(t.starts_with("c OK"), "{t}");
    assert_eq!(upstream_logins(&env), before + 1);
    let st = env.status_json().await;
    assert_eq!(st["accounts"][0]["services"]["imap"]["state"], "ok");
    env.stop().await;
    let text = logs.text();
    assert!(text.contains("wrong local login"), "{text}");
    for secret in ["wrong-local-secret-123", "also-wrong-456"] {
        assert!(!text.contains(secret), "secret {secret} in the logs");
    }
}

#[tokio::test]
async fn revoked_app_password_gets_the_alert_and_unavailable() {
    let env = start_with(imap_env()).await;
    wait_imap_state(&env, "ok").await;
    env.control().revoke_all_asps(DEMO_APPLE_ID);
    let (mut c, _) = Client::plain(env.imap_addr()).await;
    let (u, t) = c
        .cmd("a", &format!("LOGIN {} \"{}\"", env.user, env.pass))
        .await;
    let sentence = "iCloud no longer accepts the app-specific password for alice@icloud.com, usually because the Apple ID password was changed; make a new app-specific password at account.apple.com, then run `icloud-bridge reconnect` or use the status page.";
    assert_eq!(u, vec![format!("* OK [ALERT] {sentence}")]);
    assert_eq!(t, format!("a NO [UNAVAILABLE] {sentence}"));
    let st = wait_imap_state(&env, "auth_rejected").await;
    assert_eq!(st["accounts"][0]["state"], "auth_rejected", "{st}");
    // Later logins are answered without asking Apple again (probe limit).
    let before = upstream_logins(&env);
    let (u, t) = c
        .cmd("b", &format!("LOGIN {} \"{}\"", env.user, env.pass))
        .await;
    assert!(
        u[0].starts_with("* OK [ALERT] iCloud no longer accepts"),
        "{u:?}"
    );
    assert!(t.starts_with("b NO [UNAVAILABLE]"), "{t}");
    assert_eq!(upstream_logins(&env), before);
    // The operator sees the start-up login and the refused one, and no more.
    let m = env.page("/metrics").await;
    for line in [
        "icloud_bridge_upstream_logins_total{service=\"imap\",result=\"ok\"} 1",
        "icloud_bridge_upstream_logins_total{service=\"imap\",result=\"rejected\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} not in\n{m}");
    }
    env.stop().await;
}

#[tokio::test]
async fn transient_upstream_trouble_is_never_a_bad_password() {
    let env = start_with(imap_env()).await;
    wait_imap_state(&env, "ok").await;
    for (switch, what) in [
        ("imap.login_unavailable", "BAD [UNAVAILABLE]"),
        ("imap.drop_on_login", "dropped connection"),
    ] {
        env.control().set_switch(switch, "true").unwrap();
        let (mut c, _) = Client::plain(env.imap_addr()).await;
        let (u, t) = c
            .cmd("a", &format!("LOGIN {} \"{}\"", env.user, env.pass))
            .await;
        assert!(
            u.len() == 1 && u[0].starts_with("* OK [ALERT] iCloud could not be reached"),
            "{what}: {u:?}"
        );
        assert!(
            t.starts_with("a NO [UNAVAILABLE] iCloud could not be reached"),
            "{what}: {t}"
        );
        let st = env.status_json().await;
        let imap = &st["accounts"][0]["services"]["imap"];
        assert_eq!(imap["state"], "unreachable", "{what}: {st}");
        assert_ne!(st["accounts"][0]["state"], "auth_rejected");
        env.control().set_switch(switch, "false").unwrap();
        // The next login works and the state recovers.
        let (_, t) = c
            .cmd("b", &format!("LOGIN {} \"{}\"", env.user, env.pass))
            .await;
        assert!(t.starts_with("b OK"), "{what}: {t}");
        wait_imap_state(&env, "ok").await;
    }
    env.stop().await;
}

/// A client that trusts only the bridge's local CA (`certs/ca.pem`), as a device would.
fn tls_connector(env: &Env) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject;
    let pem = env.dir.path().join("certs").join("ca.pem");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

#[tokio::test]
async fn starttls_and_implicit_tls_with_the_generated_certificate() {
    let env = start_with(imap_env()).await;
    let key = env.dir.path().join("certs").join("server-key.pem");
    assert!(key.is_file());
    let connector = tls_connector(&env);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // STARTTLS on the plain port.
    let mut tcp = TcpStream::connect(env.imap_addr()).await.unwrap();
    let mut r = BufReader::new(&mut tcp);
    let mut g = String::new();
    r.read_line(&mut g).await.unwrap();
    assert!(g.contains("STARTTLS"), "{g}");
    tcp.write_all(b"s1 STARTTLS\r\n").await.unwrap();
    let mut r = BufReader::new(&mut tcp);
    let mut ok = String::new();
    r.read_line(&mut ok).await.unwrap();
    assert!(ok.starts_with("s1 OK"), "{ok}");
    let tls = connector.connect(name.clone(), tcp).await.unwrap();
    let mut c = Client {
        s: BufReader::new(Box::new(tls)),
    };
    let (u, _) = c.cmd("s2", "CAPABILITY").await;
    assert_eq!(u, vec!["* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR"]);
    let (_, t) = c.cmd("s3", "STARTTLS").await;
    assert!(t.starts_with("s3 BAD"), "{t}");
    let (_, t) = c
        .cmd("s4", &format!("LOGIN {} \"{}\"", env.user, env.pass))
        .await;
    assert!(t.starts_with("s4 OK"), "{t}");
    let (u, _) = c.cmd("s5", "STATUS INBOX (MESSAGES)").await;
    assert_eq!(u, vec!["* STATUS \"INBOX\" (MESSAGES 2)"]);
    // Implicit TLS on the IMAPS port.
    let tcp = TcpStream::connect(env.imaps_addr()).await.unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut c, g) = Client::over(Box::new(tls)).await;
    assert!(!g.contains("STARTTLS"), "{g}");
    let (_, t) = c
        .cmd("i1", &format!("LOGIN {} \"{}\"", env.user, env.pass))
        .await;
    assert!(t.starts_with("i1 OK"), "{t}");
    env.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_sessions() {
    let env = start_with(imap_env()).await;
    let (mut c, _) = Client::plain(env.imap_addr()).await;
    let (mut d, _) = Client::plain(env.imap_addr()).await;
    let (_, t) = d
        .cmd("a", &format!("LOGIN {} \"{}\"", env.user, env.pass))
        .await;
    assert!(t.starts_with("a OK"), "{t}");
    let stopped = tokio::time::timeout(Duration::from_secs(10), env.stop()).await;
    assert!(stopped.is_ok(), "stop took too long");
    assert_eq!(
        c.line().await.as_deref(),
        Some("* BYE icloud-bridge is shutting down")
    );
    assert!(d.line().await.is_none());
}

#[tokio::test]
async fn imaplib_through_the_bridge() {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("python3 is not installed; skipping the imaplib test");
        return;
    }
    let env = start_with(imap_env()).await;
    let script = r#"
import imaplib, sys
host, port, user, pw = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
M = imaplib.IMAP4(host, port)
typ, _ = M.login(user, pw); assert typ == 'OK'
typ, boxes = M.list(); assert typ == 'OK' and len(boxes) == 7, boxes
assert any(b'"Sent Messages"' in b for b in boxes), boxes
typ, data = M.select('INBOX'); assert typ == 'OK' and data == [b'2'], data
typ, data = M.fetch('1:*', '(UID FLAGS RFC822.SIZE)'); assert typ == 'OK' and len(data) == 2, data
typ, data = M.fetch('2', '(RFC822)'); assert b'Dinner on Friday?' in data[0][1], data
typ, data = M.append('INBOX', '(\\Flagged)', None, b'From: py@example.org\r\nSubject: from imaplib\r\n\r\nhi\r\n')
assert typ == 'OK', data
typ, data = M.search(None, 'ALL'); assert data == [b'1 2 3'], data
typ, data = M.uid('SEARCH', 'UID', '2:*'); assert data == [b'2 3'], data
typ, data = M.store('1', '+FLAGS', '\\Deleted'); assert typ == 'OK', data
typ, data = M.expunge(); assert data == [b'1'], data
# IDLE by hand (imaplib has no idle() before 3.14).
tag = M._new_tag()
M.send(tag + b' IDLE\r\n')
assert M.readline().startswith(b'+'), 'no continuation'
print('IDLING', flush=True)
line = M.readline()
assert line == b'* 3 EXISTS\r\n', line
M.send(b'DONE\r\n')
assert M.readline().startswith(tag + b' OK'), 'IDLE not completed'
M.close(); M.logout()
print('DONE', flush=True)
"#;
    let mut child = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg("127.0.0.1")
        .arg(env.imap_addr().port().to_string())
        .arg(&env.user)
        .arg(&env.pass)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), out.next_line())
        .await
        .expect("imaplib reached IDLE in time")
        .unwrap();
    if first.as_deref() == Some("IDLING") {
        env.control()
            .deliver(
                DEMO_APPLE_ID,
                "INBOX",
                b"Subject: while idling\r\n\r\nx\r\n",
            )
            .unwrap();
    }
    let last = tokio::time::timeout(Duration::from_secs(30), out.next_line())
        .await
        .expect("imaplib finished in time")
        .unwrap();
    let status = child.wait().await.unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .await
        .unwrap();
    assert_eq!(first.as_deref(), Some("IDLING"), "stderr: {err}");
    assert!(
        status.success() && last.as_deref() == Some("DONE"),
        "last: {last:?}\nstderr: {err}"
    );
    let inbox = env.control().mailbox_messages(DEMO_APPLE_ID, "INBOX");
    assert_eq!(inbox.len(), 3);
    assert!(String::from_utf8_lossy(&inbox[1].raw).contains("from imaplib"));
    env.stop().await;
}

#[tokio::test]
async fn malformed_input_before_login_is_answered_not_fatal() {
    let env = start_with(imap_env()).await;
    let (mut c, _) = Client::plain(env.imap_addr()).await;
    for bad in [
        "a1 LOGIN",
        "a2 LOGIN \"unterminated",
        "a3 AUTHENTICATE PLAIN !!!notbase64",
        "a4 LOGIN (x) y",
        "\u{1}\u{2}\u{3}",
        "a5 SELECT",
    ] {
        c.send(&format!("{bad}\r\n")).await;
        let l = c.line().await.expect("still connected");
        assert!(l.contains("BAD") || l.contains("NO"), "{bad:?}: {l}");
    }
    // A synchronising literal larger than the limit is refused without a continuation.
    c.send("a6 LOGIN {999999}\r\n").await;
    let l = c.line().await.unwrap();
    assert_eq!(l, "a6 BAD Literal too large");
    // A small literal gets one, and LOGIN with literals works.
    c.send(&format!("a7 LOGIN {{{}}}\r\n", env.user.len()))
        .await;
    assert!(c.line().await.unwrap().starts_with('+'));
    c.send(&format!("{} {{{}}}\r\n", env.user, env.pass.len()))
        .await;
    assert!(c.line().await.unwrap().starts_with('+'));
    c.send(&format!("{}\r\n", env.pass)).await;
    let (_, t) = c.until("a7").await;
    assert!(t.starts_with("a7 OK"), "{t}");
    env.stop().await;
}

#[tokio::test]
async fn check_tests_imap_when_it_is_served() {
    let env = start_with(imap_env()).await;
    // The CLI on a copy of the bridge's config and data: same stored password.
    let cfg = env.dir.path().join("check.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nimap_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\ncerts_dir = {:?}\n\n[[account]]\nname = \"alice\"\napple_id = \"{}\"\n\n[upstream]\ncaldav = {:?}\ncarddav = {:?}\nimap = {:?}\ntimeout_secs = 5\n",
            env.dir.path(),
            env.dir.path().join("check-certs"),
            icloud_bridge::standin::DEMO_APPLE_ID,
            env.standin.caldav_url(),
            env.standin.carddav_url(),
            env.standin.imap_url(),
        ),
    )
    .unwrap();
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_icloud-bridge"))
            .args(["--config", cfg.to_str().unwrap(), "check"])
            .output()
    };
    let out = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("alice imap ok"), "{stdout}");
    // Testing iCloud needs no server certificate: check writes nothing into certs_dir.
    assert!(!env.dir.path().join("check-certs").exists());
    // Mail switched off for the Apple ID: the same NO as a bad password, so check says so.
    env.control().set_service(
        icloud_bridge::standin::DEMO_APPLE_ID,
        icloud_bridge::standin::Service::Mail,
        false,
    );
    let out = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success());
    assert!(stdout.contains("alice imap auth_rejected"), "{stdout}");
    env.stop().await;
}
