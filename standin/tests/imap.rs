//! The IMAP role (C9, C12 item 7): greeting and capabilities before and after login, the
//! identical NO for every credential problem, the switches, and the mail commands.

use icloud_standin::*;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

struct Client {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Client {
    async fn connect(s: &Standin) -> (Client, String) {
        let addr = s.imap_url().trim_start_matches("imap://").to_string();
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let g = c.line().await.unwrap();
        (c, g)
    }

    /// One response line with any literals inlined; `None` at EOF.
    async fn line(&mut self) -> Option<String> {
        let mut out = Vec::new();
        loop {
            let mut l = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(5), self.r.read_until(b'\n', &mut l))
                .await
                .expect("no answer within 5 s")
                .unwrap();
            if n == 0 {
                return if out.is_empty() {
                    None
                } else {
                    Some(String::from_utf8_lossy(&out).into_owned())
                };
            }
            let text = String::from_utf8_lossy(&l).trim_end().to_string();
            out.extend_from_slice(text.as_bytes());
            let lit = text
                .strip_suffix('}')
                .and_then(|t| t.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok());
            match lit {
                Some(n) => {
                    let mut buf = vec![0; n];
                    self.r.read_exact(&mut buf).await.unwrap();
                    out.extend_from_slice(b"\n");
                    out.extend_from_slice(&buf);
                }
                None => return Some(String::from_utf8_lossy(&out).into_owned()),
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.w.write_all(text.as_bytes()).await.unwrap();
    }

    /// Send `tag text` and read up to the tagged line; (untagged lines, tagged line).
    async fn cmd(&mut self, tag: &str, text: &str) -> (Vec<String>, String) {
        self.send(&format!("{tag} {text}\r\n")).await;
        self.until(tag).await
    }

    async fn until(&mut self, tag: &str) -> (Vec<String>, String) {
        let mut v = Vec::new();
        loop {
            let l = self.line().await.expect("connection closed");
            if l.starts_with(&format!("{tag} ")) {
                return (v, l);
            }
            v.push(l);
        }
    }

    async fn login(&mut self) {
        let (_, t) = self
            .cmd("l1", &format!("LOGIN {DEMO_APPLE_ID} {DEMO_APP_PASSWORD}"))
            .await;
        assert_eq!(t, format!("l1 OK user {DEMO_APPLE_ID} logged in"));
    }
}

fn plain(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"))
}

const FAIL: &str = "NO [AUTHENTICATIONFAILED] Authentication Failed";

#[tokio::test]
async fn greeting_and_capabilities_before_and_after_login() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    assert!(s.imap_url().starts_with("imap://127.0.0.1:"));
    let (mut c, g) = Client::connect(&s).await;
    assert_eq!(
        g,
        "* OK [CAPABILITY XAPPLEPUSHSERVICE IMAP4 IMAP4rev1 SASL-IR AUTH=ATOKEN AUTH=PLAIN AUTH=ATOKEN2 AUTH=XOAUTH2] (2606B15-0579518368c0) p00-iscream-55668b59f7-6f7mg"
    );
    let (u, t) = c.cmd("a", "CAPABILITY").await;
    assert_eq!(t, "a OK Completed");
    assert!(
        !u[0].contains("IDLE") && !u[0].contains("CONDSTORE"),
        "{u:?}"
    );
    c.login().await;
    let (u, _) = c.cmd("b", "CAPABILITY").await;
    for cap in [
        "IDLE",
        "CONDSTORE",
        "QRESYNC",
        "UIDPLUS",
        "X-APPLE-REMOTE-LINKS",
    ] {
        assert!(u[0].split(' ').any(|x| x == cap), "{cap} in {u:?}");
    }
    let (u, t) = c.cmd("c", "LOGOUT").await;
    assert!(u[0].starts_with("* BYE"));
    assert!(t.starts_with("c OK"));
    assert!(c.line().await.is_none());

    s.control()
        .set_switch("imap.greeting_style", "2016")
        .unwrap();
    s.control()
        .set_switch("capability_trailing_space", "true")
        .unwrap();
    let (mut c, g) = Client::connect(&s).await;
    assert!(g.contains("iSCREAM ready to rumble"), "{g}");
    c.send("a CAPABILITY\r\n").await;
    let mut raw = String::new();
    c.r.read_line(&mut raw).await.unwrap();
    assert!(raw.ends_with("AUTH=PLAIN \r\n"), "{raw:?}");
    let (_, t) = c.until("a").await;
    assert_eq!(t, "a OK !!");
    s.stop().await;
}

#[tokio::test]
async fn every_credential_problem_gives_the_identical_no() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let ctl = s.control();
    let (mut c, _) = Client::connect(&s).await;
    let cases = [
        (DEMO_APPLE_ID, "wrong-pass-word-xxxx"),
        (DEMO_APPLE_ID, DEMO_PRIMARY_PASSWORD),
        (DEMO_APPLE_ID, DEMO_REVOKED_APP_PASSWORD),
        ("nobody@icloud.com", DEMO_APP_PASSWORD),
    ];
    for (i, (u, p)) in cases.iter().enumerate() {
        let tag = format!("t{i}");
        let (_, t) = c.cmd(&tag, &format!("LOGIN {u} \"{p}\"")).await;
        assert_eq!(t, format!("{tag} {FAIL}"));
        let (_, t) = c
            .cmd(&tag, &format!("AUTHENTICATE PLAIN {}", plain(u, p)))
            .await;
        assert_eq!(t, format!("{tag} {FAIL}"));
    }
    // Mail switched off, then no 2FA: the same NO.
    ctl.set_service(DEMO_APPLE_ID, Service::Mail, false);
    let (_, t) = c
        .cmd("m", &format!("LOGIN {DEMO_APPLE_ID} {DEMO_APP_PASSWORD}"))
        .await;
    assert_eq!(t, format!("m {FAIL}"));
    ctl.set_service(DEMO_APPLE_ID, Service::Mail, true);
    // Empty password: BAD.
    let (_, t) = c.cmd("e", &format!("LOGIN {DEMO_APPLE_ID} \"\"")).await;
    assert_eq!(t, "e BAD tag LOGIN username password");
    // Lower-case text, then the 2016 disconnect.
    ctl.set_switch("imap.fail_text_case", "failed").unwrap();
    let (_, t) = c.cmd("f", "LOGIN x y").await;
    assert_eq!(t, "f NO [AUTHENTICATIONFAILED] Authentication failed");
    ctl.set_switch("imap.close_after_auth_failure", "true")
        .unwrap();
    let (_, t) = c.cmd("g", "LOGIN x y").await;
    assert!(t.starts_with("g NO [AUTHENTICATIONFAILED]"));
    assert!(c.line().await.is_none(), "closed after the NO");
    // The log records the attempts, never a password.
    let log = ctl.request_log();
    let imap: Vec<_> = log.iter().filter(|r| r.role == "imap").collect();
    assert!(imap.len() >= 9, "{imap:?}");
    assert!(imap.iter().all(|r| r.body.is_empty()));
    s.stop().await;
}

#[tokio::test]
async fn user_name_forms_and_authenticate_plain() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let ctl = s.control();
    let (mut c, _) = Client::connect(&s).await;
    let (_, t) = c
        .cmd("a", &format!("LOGIN alice {DEMO_APP_PASSWORD}"))
        .await;
    assert_eq!(t, "a OK user alice logged in");
    ctl.set_switch("imap.accept_local_part", "false").unwrap();
    let (mut c, _) = Client::connect(&s).await;
    let (_, t) = c
        .cmd("a", &format!("LOGIN alice {DEMO_APP_PASSWORD}"))
        .await;
    assert_eq!(t, format!("a {FAIL}"));
    // SASL-IR and the continuation form.
    let (_, t) = c
        .cmd(
            "b",
            &format!(
                "AUTHENTICATE PLAIN {}",
                plain(DEMO_APPLE_ID, DEMO_APP_PASSWORD)
            ),
        )
        .await;
    assert!(t.starts_with("b OK"), "{t}");
    let (mut c, _) = Client::connect(&s).await;
    c.send("c AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await.unwrap(), "+");
    c.send(&format!("{}\r\n", plain(DEMO_APPLE_ID, DEMO_APP_PASSWORD)))
        .await;
    let (_, t) = c.until("c").await;
    assert!(t.starts_with("c OK"), "{t}");
    // authenticate_plain_rejected: PLAIN fails, LOGIN works.
    ctl.set_switch("imap.authenticate_plain_rejected", "true")
        .unwrap();
    let (mut c, _) = Client::connect(&s).await;
    let (_, t) = c
        .cmd(
            "d",
            &format!(
                "AUTHENTICATE PLAIN {}",
                plain(DEMO_APPLE_ID, DEMO_APP_PASSWORD)
            ),
        )
        .await;
    assert_eq!(t, format!("d {FAIL}"));
    c.login().await;
    s.stop().await;
}

#[tokio::test]
async fn transient_and_dropped_logins() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let ctl = s.control();
    ctl.set_switch("imap.login_unavailable", "true").unwrap();
    let (mut c, _) = Client::connect(&s).await;
    let (_, t) = c
        .cmd("a", &format!("LOGIN {DEMO_APPLE_ID} {DEMO_APP_PASSWORD}"))
        .await;
    assert_eq!(t, "a BAD [UNAVAILABLE] Service temporarily unavailable");
    ctl.set_switch("imap.login_unavailable", "false").unwrap();
    ctl.set_switch("imap.drop_on_login", "true").unwrap();
    c.send(&format!("b LOGIN {DEMO_APPLE_ID} {DEMO_APP_PASSWORD}\r\n"))
        .await;
    assert!(c.line().await.is_none(), "dropped");
    s.stop().await;
}

#[tokio::test]
async fn mail_commands_list_select_fetch_store_search_append_expunge() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let ctl = s.control();
    let (mut c, _) = Client::connect(&s).await;
    // Commands before login are refused.
    let (_, t) = c.cmd("z", "SELECT INBOX").await;
    assert!(t.starts_with("z BAD"), "{t}");
    c.login().await;
    let (u, t) = c.cmd("a", "LIST \"\" \"*\"").await;
    assert!(t.starts_with("a OK"));
    for (name, _) in MAIL_FOLDERS {
        assert!(
            u.iter().any(|l| l.ends_with(&format!("\"{name}\""))),
            "{name}: {u:?}"
        );
    }
    assert!(u
        .iter()
        .any(|l| l.contains("\\Trash") && l.contains("Deleted Messages")));
    let (u, _) = c.cmd("b", "STATUS INBOX (MESSAGES UIDNEXT UNSEEN)").await;
    assert_eq!(
        u,
        vec!["* STATUS \"INBOX\" (MESSAGES 2 UIDNEXT 3 UNSEEN 1)"]
    );
    let (u, t) = c.cmd("c", "SELECT INBOX (CONDSTORE)").await;
    assert!(u.contains(&"* 2 EXISTS".to_string()), "{u:?}");
    assert!(t.starts_with("c OK [READ-WRITE]"), "{t}");
    let (u, _) = c.cmd("d", "UID FETCH 1:* (UID FLAGS RFC822.SIZE)").await;
    assert_eq!(u.len(), 2);
    assert!(
        u[0].starts_with("* 1 FETCH (UID 1 FLAGS (\\Seen) RFC822.SIZE "),
        "{u:?}"
    );
    let (u, _) = c
        .cmd("e", "FETCH 2 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await;
    assert!(u[0].contains("Subject: Dinner on Friday?"), "{u:?}");
    // APPEND with a synchronising literal, then a non-synchronising one.
    let msg = "From: a@example.org\r\nSubject: appended\r\n\r\nhello\r\n";
    c.send(&format!("f APPEND INBOX (\\Flagged) {{{}}}\r\n", msg.len()))
        .await;
    assert!(c.line().await.unwrap().starts_with('+'));
    c.send(&format!("{msg}\r\n")).await;
    let (u, t) = c.until("f").await;
    assert!(t.starts_with("f OK [APPENDUID "), "{t}");
    assert!(t.contains(" 3] "), "{t}");
    assert!(u.contains(&"* 3 EXISTS".to_string()), "{u:?}");
    c.send(&format!("g APPEND Drafts {{{}+}}\r\n{msg}\r\n", msg.len()))
        .await;
    let (_, t) = c.until("g").await;
    assert!(t.starts_with("g OK"), "{t}");
    assert_eq!(ctl.mailbox_messages(DEMO_APPLE_ID, "Drafts").len(), 1);
    // BODY[] (not peek) sets \Seen.
    let (u, _) = c.cmd("h", "UID FETCH 3 (BODY[])").await;
    assert!(u[0].contains("hello") && u[0].contains("\\Seen"), "{u:?}");
    let (u, _) = c.cmd("i", "SEARCH UNSEEN").await;
    assert_eq!(u, vec!["* SEARCH 2"]);
    let (u, _) = c.cmd("j", "UID SEARCH UID 2:*").await;
    assert_eq!(u, vec!["* SEARCH 2 3"]);
    let (u, _) = c.cmd("k", "STORE 1 +FLAGS (\\Deleted)").await;
    assert!(
        u[0].starts_with("* 1 FETCH (FLAGS (\\Deleted \\Seen)"),
        "{u:?}"
    );
    let (u, _) = c.cmd("l", "UID STORE 3 +FLAGS.SILENT (\\Deleted)").await;
    assert!(u.is_empty(), "{u:?}");
    let (u, t) = c.cmd("m", "UID EXPUNGE 3").await;
    assert_eq!(u, vec!["* 3 EXPUNGE"]);
    assert!(t.starts_with("m OK"));
    let (u, _) = c.cmd("n", "EXPUNGE").await;
    assert_eq!(u, vec!["* 1 EXPUNGE"]);
    let inbox = ctl.mailbox_messages(DEMO_APPLE_ID, "INBOX");
    assert_eq!(inbox.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![2]);
    let (_, t) = c.cmd("o", "CLOSE").await;
    assert!(t.starts_with("o OK"));
    // Malformed input never kills the server.
    for bad in [
        "p FETCH",
        "q UID FETCH x:y (FLAGS)",
        "r LIST (",
        "s STORE 1 ~FLAGS x",
        "\"",
        "t SEARCH FOO",
    ] {
        c.send(&format!("{bad}\r\n")).await;
        let l = c.line().await.unwrap();
        assert!(l.contains("BAD"), "{bad}: {l}");
    }
    let (_, t) = c.cmd("u", "NOOP").await;
    assert!(t.starts_with("u OK"));
    s.stop().await;
}

#[tokio::test]
async fn idle_reports_a_delivered_message() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let ctl = s.control();
    let (mut c, _) = Client::connect(&s).await;
    c.login().await;
    c.cmd("a", "SELECT INBOX").await;
    c.send("b IDLE\r\n").await;
    assert!(c.line().await.unwrap().starts_with('+'));
    let uid = ctl
        .deliver(DEMO_APPLE_ID, "INBOX", b"Subject: new\r\n\r\nhi\r\n")
        .unwrap();
    assert_eq!(uid, 3);
    assert_eq!(c.line().await.unwrap(), "* 3 EXISTS");
    c.send("DONE\r\n").await;
    let (_, t) = c.until("b").await;
    assert!(t.starts_with("b OK"), "{t}");
    assert!(ctl.deliver(DEMO_APPLE_ID, "Nope", b"x").is_none());
    s.stop().await;
}

#[tokio::test]
async fn control_http_delivers_and_lists() {
    let s = Standin::start(StandinConfig::demo()).await.unwrap();
    let base = s.serve_control().await.unwrap();
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}deliver?mailbox=Junk"))
        .body("Subject: spam\r\n\r\nbuy\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), "1");
    let t = http
        .get(format!("{base}mailbox?mailbox=Junk"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(t.starts_with("1 () ") && t.contains("spam"), "{t}");
    s.stop().await;
}
