//! The SMTP client that logs in to iCloud (`upstream.smtp`: `smtp://` = STARTTLS, `smtps://` =
//! implicit TLS) with the Apple ID and the stored app-specific password, and hands back the
//! connection right after AUTH's `235`, ready to relay. What Apple says is recorded through
//! the account's [`Gate`]: `535` is a rejected password; connection trouble, timeouts, drops
//! and any `4xx` are transient, never read as a bad password. Passwords are never logged, and
//! a reply that could reach the status page never carries any part of the credential.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

use crate::config::UpstreamConfig;
use crate::net::{read_line, trim_eol, write_line as send, BoxIo, Conn, Line};
use crate::start::StartError;
use crate::upstream::client::{LoginResult, UpstreamStats};
use crate::upstream::error::{Unreachable, UpstreamError};
use crate::upstream::gate::Gate;
use crate::upstream::service::Service;

/// Longest reply line accepted from upstream, and most lines in one reply.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 64;

/// How to reach iCloud's SMTP, built from `[upstream]`.
pub struct SmtpClient {
    connector: TlsConnector,
    url: Url,
    timeout: Duration,
    /// Where logins are counted (`/metrics`); none for `check`.
    stats: Option<Arc<UpstreamStats>>,
}

impl SmtpClient {
    /// The TLS client trusts the webpki roots plus `upstream.ca_file`.
    pub fn new(config: &UpstreamConfig) -> Result<SmtpClient, StartError> {
        let client_tls =
            crate::tls::client_config(config.ca_file.as_deref()).map_err(|detail| {
                StartError::Client {
                    what: "SMTP",
                    detail,
                }
            })?;
        Ok(SmtpClient {
            connector: TlsConnector::from(client_tls),
            url: config.smtp.clone(),
            timeout: Duration::from_secs(config.timeout_secs),
            stats: None,
        })
    }

    /// Count every login in `stats`.
    pub fn with_stats(self, stats: Arc<UpstreamStats>) -> SmtpClient {
        SmtpClient {
            stats: Some(stats),
            ..self
        }
    }
}

/// Log in to iCloud's SMTP once with the account's stored password, then log out: the test
/// of the stored credential (at start-up and by `icloud-bridge check`); the outcome is
/// recorded in the account's state.
pub async fn check<G: Gate>(up: &SmtpClient, acc: &G) -> Result<(), UpstreamError> {
    let mut conn = login(up, acc, "localhost").await?;
    let _ = send(&mut conn, "QUIT").await;
    Ok(())
}

/// What went wrong in the upstream dialogue before AUTH was answered.
enum Hs {
    Connect(io::Error),
    Tls(io::Error),
    /// The connection broke or timed out mid-dialogue.
    Io(io::Error),
    /// An unexpected reply (stage, code, text).
    Reply(&'static str, u16, String),
    /// Not SMTP.
    Garbled(&'static str),
}

impl From<io::Error> for Hs {
    fn from(e: io::Error) -> Hs {
        Hs::Io(e)
    }
}

/// Log in to iCloud's SMTP for `acc`, recording what Apple said. Returns the upstream
/// connection right after its `235`.
/// `ehlo` is the name said in EHLO (the client's own, when plausible).
pub async fn login<G: Gate>(up: &SmtpClient, acc: &G, ehlo: &str) -> Result<Conn, UpstreamError> {
    if let Some(e) = acc.held() {
        return Err(e);
    }
    let admitted = acc.admit(Service::Smtp).await?;
    let Some(password) = admitted.password(acc.apple_id()) else {
        return Err(UpstreamError::Unconfigured {
            account: acc.name().to_string(),
        });
    };
    let dialogue = handshake(up, acc.apple_id(), password.expose(), ehlo);
    let outcome = tokio::time::timeout(up.timeout, dialogue).await;
    drop(password);
    // Record what Apple said while still holding the admission: requests waiting for this
    // probe then see the answer.
    let fail = |e: UpstreamError, status: Option<u16>| {
        acc.record_failure(Service::Smtp, &e, status);
        e
    };
    let result = match outcome {
        Err(_) => Err(fail(
            UpstreamError::Unreachable {
                kind: Unreachable::Timeout,
                detail: format!(
                    "the SMTP server did not finish logging in within {} s",
                    up.timeout.as_secs()
                ),
            },
            None,
        )),
        Ok(Ok((235, _, conn))) => {
            acc.record_success(Service::Smtp, 235);
            Ok(conn)
        }
        Ok(Ok((535, _, _))) => Err(acc.record_auth_rejected(Service::Smtp)),
        Ok(Ok((code, text, _))) if (400..500).contains(&code) => Err(fail(
            UpstreamError::Unreachable {
                kind: Unreachable::Protocol,
                detail: format!("the SMTP server answered AUTH with {code} {text}"),
            },
            Some(code),
        )),
        Ok(Ok((code, text, _))) => Err(fail(
            UpstreamError::BadResponse {
                detail: format!("the SMTP server answered AUTH with {code} {text}"),
            },
            Some(code),
        )),
        Ok(Err(hs)) => Err(fail(classify(hs), None)),
    };
    drop(admitted);
    if let Some(stats) = &up.stats {
        let how = match &result {
            Ok(_) => LoginResult::Ok,
            Err(UpstreamError::AuthRejected { .. }) => LoginResult::Rejected,
            Err(_) => LoginResult::Unavailable,
        };
        stats.record_login(Service::Smtp, how);
    }
    result
}

fn classify(hs: Hs) -> UpstreamError {
    let (kind, detail) = match hs {
        Hs::Connect(e) => (
            Unreachable::Connect,
            format!("cannot connect to the SMTP server: {e}"),
        ),
        Hs::Tls(e) => (
            Unreachable::Tls,
            format!("TLS with the SMTP server failed: {e}"),
        ),
        Hs::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => (
            Unreachable::Protocol,
            "the SMTP server closed the connection".to_string(),
        ),
        Hs::Io(e) => (
            Unreachable::Protocol,
            format!("the connection to the SMTP server broke: {e}"),
        ),
        Hs::Reply(stage, code, text) => (
            Unreachable::Protocol,
            format!("the SMTP server answered {stage} with {code} {text}"),
        ),
        Hs::Garbled(what) => (
            Unreachable::Protocol,
            format!("the SMTP server sent {what}"),
        ),
    };
    UpstreamError::Unreachable { kind, detail }
}

/// Read one reply: (code, text of its last line, every line's text joined by spaces).
async fn read_reply(conn: &mut Conn) -> Result<(u16, String, String), Hs> {
    let mut all = Vec::new();
    let mut line = Vec::with_capacity(256);
    for _ in 0..MAX_REPLY_LINES {
        match read_line(conn, MAX_REPLY_LINE, &mut line).await? {
            Line::Eof => return Err(Hs::Io(io::ErrorKind::UnexpectedEof.into())),
            Line::TooLong => return Err(Hs::Garbled("an over-long reply line")),
            Line::Full => {}
        }
        let l = trim_eol(&line);
        let code = l
            .get(..3)
            .filter(|c| c.iter().all(u8::is_ascii_digit))
            .and_then(|c| std::str::from_utf8(c).ok())
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or(Hs::Garbled("something that is not an SMTP reply"))?;
        let more = l.get(3) == Some(&b'-');
        let text: String = String::from_utf8_lossy(l.get(4..).unwrap_or_default())
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        all.push(text);
        if !more {
            let last = all.last().cloned().unwrap_or_default();
            return Ok((code, last, all.join(" ")));
        }
    }
    Err(Hs::Garbled("a reply with too many lines"))
}

async fn expect(conn: &mut Conn, stage: &'static str, want: u16) -> Result<String, Hs> {
    let (code, last, all) = read_reply(conn).await?;
    if code == want {
        Ok(all)
    } else {
        Err(Hs::Reply(stage, code, last))
    }
}

async fn connect(url: &Url) -> Result<TcpStream, Hs> {
    let implicit = url.scheme() == "smtps";
    let port = url.port().unwrap_or(if implicit { 465 } else { 587 });
    let r = match url.host() {
        Some(url::Host::Ipv4(ip)) => TcpStream::connect((ip, port)).await,
        Some(url::Host::Ipv6(ip)) => TcpStream::connect((ip, port)).await,
        Some(url::Host::Domain(d)) => TcpStream::connect((d, port)).await,
        None => Err(io::Error::new(io::ErrorKind::InvalidInput, "no host")),
    };
    let tcp = r.map_err(Hs::Connect)?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

async fn start_tls(up: &SmtpClient, io: BoxIo) -> Result<Conn, Hs> {
    let name = crate::tls::server_name(&up.url).map_err(Hs::Tls)?;
    let tls = up.connector.connect(name, io).await.map_err(Hs::Tls)?;
    Ok(BufReader::new(Box::new(tls)))
}

/// The upstream dialogue up to AUTH's answer: (code, last line's text, the connection).
async fn handshake(
    up: &SmtpClient,
    apple_id: &str,
    password: &str,
    ehlo: &str,
) -> Result<(u16, String, Conn), Hs> {
    let implicit = up.url.scheme() == "smtps";
    let tcp = connect(&up.url).await?;
    let mut conn = if implicit {
        start_tls(up, Box::new(tcp)).await?
    } else {
        BufReader::new(Box::new(tcp) as BoxIo)
    };
    expect(&mut conn, "the connection", 220).await?;
    send(&mut conn, &format!("EHLO {ehlo}")).await?;
    let mut caps = expect(&mut conn, "EHLO", 250).await?;
    if !implicit {
        send(&mut conn, "STARTTLS").await?;
        expect(&mut conn, "STARTTLS", 220).await?;
        if !conn.buffer().is_empty() {
            return Err(Hs::Garbled("data before the TLS handshake"));
        }
        conn = start_tls(up, conn.into_inner()).await?;
        send(&mut conn, &format!("EHLO {ehlo}")).await?;
        caps = expect(&mut conn, "EHLO", 250).await?;
    }
    let caps = caps.to_ascii_uppercase();
    let login_only = !caps.contains("PLAIN") && caps.contains("LOGIN");
    let token = B64.encode(format!("\0{apple_id}\0{password}"));
    let (code, text) = if login_only {
        send(&mut conn, "AUTH LOGIN").await?;
        expect(&mut conn, "AUTH LOGIN", 334).await?;
        send(&mut conn, &B64.encode(apple_id)).await?;
        expect(&mut conn, "AUTH LOGIN", 334).await?;
        send(&mut conn, &B64.encode(password)).await?;
        let (code, last, _) = read_reply(&mut conn).await?;
        (code, last)
    } else {
        send(&mut conn, &format!("AUTH PLAIN {token}")).await?;
        let (code, last, _) = read_reply(&mut conn).await?;
        (code, last)
    };
    // The reply text may reach the status page: never with anything of the credential.
    let text = [password.to_string(), token, B64.encode(password)]
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text, |t, secret| t.replace(secret.as_str(), "<redacted>"));
    Ok((code, text, conn))
}
