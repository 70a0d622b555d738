//! C10 / C12 item 8: the SMTP submission role. STARTTLS required before AUTH, 535 on bad
//! credentials (every cause alike), the transient and drop switches, the outbox byte for byte.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use icloud_standin::*;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A line-oriented SMTP client that can switch to TLS.
struct Client {
    conn: BufReader<Box<dyn Io>>,
}

fn tls_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

impl Client {
    async fn connect(s: &Standin) -> (Client, String) {
        let addr = s.smtp_url().trim_start_matches("smtp://").to_string();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = Client {
            conn: BufReader::new(Box::new(tcp)),
        };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// One whole (possibly multi-line) reply; empty at EOF.
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
        assert!(c.cmd("STARTTLS").await.starts_with("220 "));
        let tcp = c.conn.into_inner();
        let tls = tokio_rustls::TlsConnector::from(tls_config(ca_pem))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        Client {
            conn: BufReader::new(Box::new(tls)),
        }
    }

    /// Greeting, EHLO, STARTTLS, EHLO.
    async fn secured(s: &Standin) -> Client {
        let (mut c, _) = Client::connect(s).await;
        assert!(c.cmd("EHLO test").await.starts_with("250"));
        let mut c = c.starttls(&s.ca_pem()).await;
        assert!(c.cmd("EHLO test").await.starts_with("250"));
        c
    }
}

fn plain(user: &str, pass: &str) -> String {
    B64.encode(format!("\0{user}\0{pass}"))
}

#[tokio::test]
async fn ehlo_offers_auth_only_after_starttls() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    assert!(s.smtp_url().starts_with("smtp://127.0.0.1:"));
    let (mut c, greeting) = Client::connect(&s).await;
    assert!(
        greeting.starts_with("220 ") && greeting.contains("ESMTP"),
        "{greeting}"
    );
    let ehlo = c.cmd("EHLO client.example").await;
    for cap in ["STARTTLS", "SIZE", "PIPELINING"] {
        assert!(ehlo.contains(cap), "{ehlo}");
    }
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            plain(DEMO_APPLE_ID, DEMO_APP_PASSWORD)
        ))
        .await;
    assert!(r.starts_with("530 "), "{r}");
    assert!(c
        .cmd("MAIL FROM:<alice@icloud.com>")
        .await
        .starts_with("530"));
    let mut c = c.starttls(&s.ca_pem()).await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(ehlo.contains("8BITMIME"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(c.cmd("STARTTLS").await.starts_with("503"));
    assert!(c.cmd("QUIT").await.starts_with("221"));
    s.stop().await;
}

#[tokio::test]
async fn implicit_tls_on_the_starttls_port_fails_the_handshake() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let addr = s.smtp_url().trim_start_matches("smtp://").to_string();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let r = tokio_rustls::TlsConnector::from(tls_config(&s.ca_pem()))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await;
    assert!(r.is_err());
    s.stop().await;
}

#[tokio::test]
async fn a_message_arrives_in_the_outbox_byte_for_byte() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let mut c = Client::secured(&s).await;
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            plain(DEMO_APPLE_ID, DEMO_APP_PASSWORD)
        ))
        .await;
    assert_eq!(r, "235 2.7.0 Authentication successful\r\n");
    assert!(c
        .cmd("MAIL FROM:<alice@icloud.com> BODY=8BITMIME")
        .await
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("250"));
    assert!(c
        .cmd("RCPT TO:<carol@example.org>")
        .await
        .starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    // Dot-stuffed lines come back unstuffed; 8-bit and bare-LF bytes pass through.
    c.raw(b"Subject: hi\r\n\r\n..leading dot\r\n...two\r\nb\xc3\xa4r\r\n.\r\n")
        .await;
    let r = c.reply().await;
    assert!(r.starts_with("250 "), "{r}");
    let sent = s.control().sent_messages(DEMO_APPLE_ID);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].mail_from, "alice@icloud.com");
    assert_eq!(
        sent[0].rcpt_to,
        vec!["bob@example.org", "carol@example.org"]
    );
    assert_eq!(
        sent[0].data,
        b"Subject: hi\r\n\r\n.leading dot\r\n..two\r\nb\xc3\xa4r\r\n".to_vec()
    );
    // RSET forgets the envelope; a second message goes through the same session.
    assert!(c
        .cmd("MAIL FROM:<alice@icloud.com>")
        .await
        .starts_with("250"));
    assert!(c.cmd("RSET").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("503"));
    assert!(c.cmd("NOOP").await.starts_with("250"));
    // Pipelined.
    c.raw(b"MAIL FROM:<>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\n")
        .await;
    for want in ["250", "250", "354"] {
        let r = c.reply().await;
        assert!(r.starts_with(want), "{r}");
    }
    c.raw(b"x\r\n.\r\n").await;
    assert!(c.reply().await.starts_with("250"));
    assert_eq!(s.control().sent_messages(DEMO_APPLE_ID).len(), 2);
    // Over HTTP too.
    let base = s.serve_control().await.unwrap();
    let list = reqwest::get(format!("{base}sent-messages"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.starts_with("0 from=<alice@icloud.com> to=<bob@example.org>,<carol@example.org>"),
        "{list}"
    );
    let raw = reqwest::get(format!("{base}sent-message?index=0"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(raw.to_vec(), sent[0].data);
    s.control().clear_sent_messages(DEMO_APPLE_ID);
    assert!(s.control().sent_messages(DEMO_APPLE_ID).is_empty());
    s.stop().await;
}

#[tokio::test]
async fn auth_login_works_and_every_bad_credential_gets_the_same_535() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let ctl = s.control();
    let mut c = Client::secured(&s).await;
    assert!(c.cmd("AUTH LOGIN").await.starts_with("334 VXNlcm5hbWU6"));
    assert!(c
        .cmd(&B64.encode(DEMO_APPLE_ID))
        .await
        .starts_with("334 UGFzc3dvcmQ6"));
    assert!(c
        .cmd(&B64.encode(DEMO_APP_PASSWORD))
        .await
        .starts_with("235"));
    assert!(c.cmd("AUTH LOGIN").await.starts_with("503"));

    async fn try_plain(s: &Standin, user: &str, pass: &str) -> String {
        let mut c = Client::secured(s).await;
        c.cmd(&format!("AUTH PLAIN {}", plain(user, pass))).await
    }
    let want = "535 5.7.8 Authentication credentials invalid\r\n";
    assert_eq!(
        try_plain(&s, DEMO_APPLE_ID, "wxyz-wxyz-wxyz-wxyz").await,
        want
    );
    assert_eq!(
        try_plain(&s, DEMO_APPLE_ID, DEMO_PRIMARY_PASSWORD).await,
        want
    );
    assert_eq!(
        try_plain(&s, DEMO_APPLE_ID, DEMO_REVOKED_APP_PASSWORD).await,
        want
    );
    assert_eq!(
        try_plain(&s, "nobody@icloud.com", DEMO_APP_PASSWORD).await,
        want
    );
    ctl.set_service(DEMO_APPLE_ID, Service::Mail, false);
    assert_eq!(try_plain(&s, DEMO_APPLE_ID, DEMO_APP_PASSWORD).await, want);
    ctl.set_service(DEMO_APPLE_ID, Service::Mail, true);
    ctl.set_two_factor(DEMO_APPLE_ID, false);
    assert_eq!(try_plain(&s, DEMO_APPLE_ID, DEMO_APP_PASSWORD).await, want);
    ctl.set_two_factor(DEMO_APPLE_ID, true);
    // Calendar off does not matter for mail; ADP does not either.
    ctl.set_service(DEMO_APPLE_ID, Service::Calendar, false);
    ctl.set_adp(DEMO_APPLE_ID, true);
    assert!(try_plain(&s, DEMO_APPLE_ID, DEMO_APP_PASSWORD)
        .await
        .starts_with("235"));
    ctl.revoke_all_asps(DEMO_APPLE_ID);
    assert_eq!(try_plain(&s, DEMO_APPLE_ID, DEMO_APP_PASSWORD).await, want);
    ctl.set_switch("smtp.auth_fail_reply", "535 5.7.0 Nope")
        .unwrap();
    assert_eq!(
        try_plain(&s, DEMO_APPLE_ID, DEMO_APP_PASSWORD).await,
        "535 5.7.0 Nope\r\n"
    );
    // SASL cancel and garbage.
    let mut c = Client::secured(&s).await;
    assert!(c.cmd("AUTH PLAIN").await.starts_with("334"));
    assert!(c.cmd("*").await.starts_with("501"));
    assert!(c.cmd("AUTH PLAIN !!!notbase64").await.starts_with("501"));
    assert!(c
        .cmd(&format!("AUTH PLAIN {}", B64.encode("no-nuls")))
        .await
        .starts_with("501"));
    assert!(c.cmd("AUTH CRAM-MD5").await.starts_with("504"));
    // The request log has the AUTH attempts without their secrets.
    let log = ctl.request_log();
    let auths: Vec<_> = log
        .iter()
        .filter(|r| r.role == "smtp" && r.method == "AUTH")
        .collect();
    assert!(auths.len() >= 10, "{auths:?}");
    assert!(auths
        .iter()
        .all(|r| r.path == "PLAIN" || r.path == "LOGIN" || r.path == "CRAM-MD5"));
    s.stop().await;
}

#[tokio::test]
async fn transient_and_drop_switches() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let ctl = s.control();
    ctl.set_switch("smtp.transient", "454").unwrap();
    let mut c = Client::secured(&s).await;
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            plain(DEMO_APPLE_ID, DEMO_APP_PASSWORD)
        ))
        .await;
    assert!(r.starts_with("454 4.7.0"), "{r}");
    assert!(
        c.cmd("NOOP").await.starts_with("250"),
        "454 keeps the session"
    );

    ctl.set_switch("smtp.transient", "421").unwrap();
    let mut c = Client::secured(&s).await;
    let r = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            plain(DEMO_APPLE_ID, DEMO_APP_PASSWORD)
        ))
        .await;
    assert!(r.starts_with("421 "), "{r}");
    assert_eq!(c.reply().await, "", "421 closes the connection");
    ctl.set_switch("smtp.transient", "none").unwrap();

    ctl.set_switch("smtp.drop", "true").unwrap();
    let (mut c, _) = Client::connect(&s).await;
    assert_eq!(c.cmd("EHLO test").await, "");
    ctl.set_switch("smtp.drop", "false").unwrap();
    let _ = Client::secured(&s).await;
    s.stop().await;
}

#[tokio::test]
async fn foreign_senders_and_bad_input() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let mut c = Client::secured(&s).await;
    assert!(c
        .cmd("MAIL FROM:<alice@icloud.com>")
        .await
        .starts_with("530"));
    c.cmd(&format!(
        "AUTH PLAIN {}",
        plain(DEMO_APPLE_ID, DEMO_APP_PASSWORD)
    ))
    .await;
    let r = c.cmd("MAIL FROM:<mallory@example.org>").await;
    assert!(r.starts_with("553 "), "{r}");
    s.control()
        .set_switch("smtp.foreign_sender", "550")
        .unwrap();
    assert!(c
        .cmd("MAIL FROM:<mallory@example.org>")
        .await
        .starts_with("550"));
    s.control()
        .set_switch("smtp.foreign_sender", "none")
        .unwrap();
    assert!(c
        .cmd("MAIL FROM:<mallory@example.org>")
        .await
        .starts_with("250"));
    assert!(c.cmd("RSET").await.starts_with("250"));
    // Syntax errors, an over-long line, binary junk, an oversized SIZE= and DATA too early.
    assert!(c.cmd("MAIL FROM:alice@icloud.com").await.starts_with("501"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("503"));
    assert!(c.cmd("DATA").await.starts_with("503"));
    let long = format!("NOOP {}", "x".repeat(100_000));
    assert!(c.cmd(&long).await.starts_with("500"));
    c.raw(b"\xff\xfe\x00\x01\r\n").await;
    assert!(c.reply().await.starts_with("500"));
    let r = c
        .cmd("MAIL FROM:<alice@icloud.com> SIZE=999999999999")
        .await;
    assert!(r.starts_with("552"), "{r}");
    assert!(c.cmd("NOOP").await.starts_with("250"), "still serving");
    // A client that disconnects mid-DATA leaves nothing in the outbox.
    assert!(c
        .cmd("MAIL FROM:<alice@icloud.com>")
        .await
        .starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.org>").await.starts_with("250"));
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.raw(b"Subject: cut\r\n\r\nhalf").await;
    drop(c);
    // Too many errors in a row end the session.
    let mut c = Client::secured(&s).await;
    let mut last = String::new();
    for _ in 0..25 {
        last = c.cmd("BOGUS").await;
        if last.is_empty() || last.contains("421") {
            break;
        }
    }
    assert!(last.contains("421"), "{last}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(s.control().sent_messages(DEMO_APPLE_ID).is_empty());
    s.stop().await;
}
