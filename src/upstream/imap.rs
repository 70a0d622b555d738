//! The IMAP client that logs in to iCloud: connect (`imaps://` implicit TLS, or `imap://`
//! plaintext for tests), read the greeting, LOGIN with the Apple ID and the stored
//! app-specific password, learn the capabilities after login, and classify every failure
//! through the account's [`Gate`]: `NO` (AUTHENTICATIONFAILED) is a rejected password,
//! everything else (`BAD [UNAVAILABLE]`, timeouts, dropped connections) is transient.

use std::sync::Arc;
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::response::{Data, Response, Status, StatusKind};
use imap_codec::ResponseCodec;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use url::Url;

use crate::config::{ImapUser, UpstreamConfig};
use crate::net::{BoxIo, Conn};
use crate::secret::Secret;
use crate::start::StartError;
use crate::upstream::client::{LoginResult, UpstreamStats};
use crate::upstream::error::{Unreachable, UpstreamError};
use crate::upstream::gate::Gate;
use crate::upstream::service::Service;

/// Longest response line read while logging in.
const MAX_LINE: usize = 64 * 1024;

/// What reaching iCloud's IMAP server takes, built from `[upstream]`.
pub struct ImapClient {
    connector: tokio_rustls::TlsConnector,
    url: Url,
    user: ImapUser,
    timeout: Duration,
    /// Where logins are counted (`/metrics`).
    stats: Option<Arc<UpstreamStats>>,
}

impl ImapClient {
    /// The TLS client trusts the webpki roots plus `upstream.ca_file`.
    pub fn new(config: &UpstreamConfig) -> Result<ImapClient, StartError> {
        let client_tls =
            crate::tls::client_config(config.ca_file.as_deref()).map_err(|detail| {
                StartError::Client {
                    what: "IMAP",
                    detail,
                }
            })?;
        Ok(ImapClient {
            connector: tokio_rustls::TlsConnector::from(client_tls),
            url: config.imap.clone(),
            user: config.imap_user,
            timeout: Duration::from_secs(config.timeout_secs),
            stats: None,
        })
    }

    /// Count every login in `stats`.
    pub fn with_stats(self, stats: Arc<UpstreamStats>) -> ImapClient {
        ImapClient {
            stats: Some(stats),
            ..self
        }
    }
}

/// A logged-in upstream session, ready to relay.
pub struct Session {
    pub io: BoxIo,
    /// Bytes already read from upstream and not yet given to the client.
    pub pending: Vec<u8>,
    /// iCloud's capabilities after login, minus what the bridge does not offer.
    pub capabilities: Vec<String>,
}

/// How logging in failed.
#[derive(Debug)]
enum Failure {
    /// iCloud said NO to the credential.
    Rejected,
    Transient(UpstreamError),
}

fn unreachable(kind: Unreachable, detail: &str) -> Failure {
    Failure::Transient(UpstreamError::Unreachable {
        kind,
        detail: detail.to_string(),
    })
}

/// Log in to iCloud's IMAP server for `account`, updating its state. Held and rejected
/// accounts are answered at once without contacting Apple.
pub async fn open<G: Gate>(up: &ImapClient, account: &G) -> Result<Session, UpstreamError> {
    if let Some(e) = account.held() {
        return Err(e);
    }
    // The probe guard (if any) is held until iCloud has answered.
    let admitted = account.admit(Service::Imap).await?;
    let secret =
        admitted
            .password(account.apple_id())
            .ok_or_else(|| UpstreamError::Unconfigured {
                account: account.name().to_string(),
            })?;
    let user = match up.user {
        ImapUser::Address => account.apple_id(),
        ImapUser::LocalPart => account
            .apple_id()
            .split('@')
            .next()
            .unwrap_or(account.apple_id()),
    };
    let result = tokio::time::timeout(up.timeout, login(up, user, &secret))
        .await
        .unwrap_or_else(|_| Err(unreachable(Unreachable::Timeout, "no answer in time")));
    drop(secret);
    if let Some(stats) = &up.stats {
        stats.record_login(
            Service::Imap,
            match &result {
                Ok(_) => LoginResult::Ok,
                Err(Failure::Rejected) => LoginResult::Rejected,
                Err(Failure::Transient(_)) => LoginResult::Unavailable,
            },
        );
    }
    let outcome = match result {
        Ok(s) => {
            account.record_success(Service::Imap, 200);
            tracing::info!(
                account = account.name(),
                "iCloud IMAP accepted the stored password"
            );
            Ok(s)
        }
        Err(Failure::Rejected) => {
            let e = account.record_auth_rejected(Service::Imap);
            tracing::warn!(
                account = account.name(),
                "iCloud IMAP rejected the stored password"
            );
            Err(e)
        }
        Err(Failure::Transient(e)) => {
            tracing::warn!(account = account.name(), error = %e, "iCloud IMAP login failed");
            account.record_failure(Service::Imap, &e, None);
            Err(e)
        }
    };
    drop(admitted);
    outcome
}

/// Log in once and out again: the test of the stored credential (at start-up and by
/// `icloud-bridge check`); the outcome is recorded in the account's state.
pub async fn check<G: Gate>(up: &ImapClient, account: &G) -> Result<(), UpstreamError> {
    let mut s = open(up, account).await?;
    let _ = s.io.write_all(b"ib3 LOGOUT\r\n").await;
    let _ = s.io.shutdown().await;
    Ok(())
}

async fn connect(up: &ImapClient) -> Result<BoxIo, Failure> {
    let url = &up.url;
    let tls = url.scheme() == "imaps";
    let host = url
        .host_str()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_string();
    let port = url.port().unwrap_or(if tls { 993 } else { 143 });
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| {
            tracing::debug!(%host, port, error = %e, "IMAP upstream connect failed");
            unreachable(Unreachable::Connect, "connection failed")
        })?;
    let _ = tcp.set_nodelay(true);
    if !tls {
        return Ok(Box::new(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(host.clone())
        .map_err(|_| unreachable(Unreachable::Tls, "bad server name"))?;
    let stream = up.connector.connect(name, tcp).await.map_err(|e| {
        tracing::debug!(%host, error = %e, "IMAP upstream TLS handshake failed");
        unreachable(Unreachable::Tls, "TLS handshake failed")
    })?;
    Ok(Box::new(stream))
}

async fn read_line(r: &mut Conn) -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    match crate::net::read_line(r, MAX_LINE, &mut buf).await {
        Ok(crate::net::Line::Full) => Ok(buf),
        Ok(crate::net::Line::TooLong) => Err(unreachable(
            Unreachable::Protocol,
            "the IMAP server sent an over-long line",
        )),
        Ok(crate::net::Line::Eof) => Err(unreachable(
            Unreachable::Protocol,
            "the IMAP server closed the connection",
        )),
        Err(_) => Err(unreachable(Unreachable::Protocol, "the connection broke")),
    }
}

/// `"..."` with `\` and `"` escaped; `None` when the value cannot be sent as a quoted string.
fn quoted(s: &str) -> Option<String> {
    if s.is_empty()
        || s.bytes()
            .any(|b| b == b'\r' || b == b'\n' || b == 0 || b >= 0x80)
    {
        return None;
    }
    Some(format!(
        "\"{}\"",
        s.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// A tagged completion, as far as the login needs it.
#[derive(Debug, PartialEq, Eq)]
struct Tagged {
    kind: Kind,
    /// The response code's name, upper-case (`AUTHENTICATIONFAILED`, `UNAVAILABLE`).
    code: Option<String>,
    text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    No,
    Bad,
}

/// What one upstream line says.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Tagged(String, Tagged),
    Capability(Vec<String>),
    Bye,
    Other,
}

/// Decode a response line with the IMAP codec; lines it cannot decode (servers differ) are
/// read by their first words.
fn parse_line(line: &[u8]) -> Line {
    if let Ok((_, resp)) = ResponseCodec::default().decode(line) {
        return match resp {
            Response::Status(Status::Tagged(t)) => {
                let kind = match t.body.kind {
                    StatusKind::Ok => Kind::Ok,
                    StatusKind::No => Kind::No,
                    StatusKind::Bad => Kind::Bad,
                };
                let code = t.body.code.as_ref().map(|_| code_name(line));
                Line::Tagged(
                    t.tag.inner().to_string(),
                    Tagged {
                        kind,
                        code,
                        text: t.body.text.to_string(),
                    },
                )
            }
            Response::Status(Status::Bye(_)) => Line::Bye,
            // The codec checked the line; the words are passed on as the server spelled them.
            Response::Data(Data::Capability(_)) => fallback(line),
            _ => Line::Other,
        };
    }
    fallback(line)
}

/// The code's name from the raw line (`[NAME args] text`), which is what the wire says.
fn code_name(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    text.split_once('[')
        .and_then(|(_, rest)| rest.split([' ', ']']).next())
        .unwrap_or("")
        .to_ascii_uppercase()
}

fn fallback(line: &[u8]) -> Line {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    let mut words = text.splitn(3, ' ');
    let (first, second, rest) = (
        words.next().unwrap_or(""),
        words.next().unwrap_or("").to_ascii_uppercase(),
        words.next().unwrap_or(""),
    );
    if first == "*" {
        return match second.as_str() {
            "CAPABILITY" => Line::Capability(rest.split_whitespace().map(str::to_string).collect()),
            "BYE" => Line::Bye,
            _ => Line::Other,
        };
    }
    let kind = match second.as_str() {
        "OK" => Kind::Ok,
        "NO" => Kind::No,
        "BAD" => Kind::Bad,
        _ => return Line::Other,
    };
    let (code, text) = match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((c, t)) => (
            Some(c.split(' ').next().unwrap_or("").to_ascii_uppercase()),
            t.trim().to_string(),
        ),
        None => (None, rest.to_string()),
    };
    Line::Tagged(first.to_string(), Tagged { kind, code, text })
}

/// Read until the completion of `tag`, collecting CAPABILITY data.
async fn until_tagged(r: &mut Conn, tag: &str, caps: &mut Vec<String>) -> Result<Tagged, Failure> {
    loop {
        let line = read_line(r).await?;
        match parse_line(&line) {
            Line::Tagged(t, done) if t == tag => return Ok(done),
            Line::Capability(c) => *caps = c,
            Line::Bye => {
                return Err(unreachable(
                    Unreachable::Protocol,
                    "the IMAP server closed the connection",
                ))
            }
            _ => {}
        }
    }
}

/// Whether a NO to LOGIN means the credential was refused (anything but a code that says
/// the server is busy or broken).
fn is_rejection(t: &Tagged) -> bool {
    t.kind == Kind::No
        && !matches!(
            t.code.as_deref(),
            Some("UNAVAILABLE" | "SERVERBUG" | "LIMIT" | "INUSE" | "CONTACTADMIN" | "OVERQUOTA")
        )
}

async fn login(up: &ImapClient, user: &str, secret: &Secret) -> Result<Session, Failure> {
    let io = connect(up).await?;
    let mut r = BufReader::new(io);
    let greeting = read_line(&mut r).await?;
    let g = String::from_utf8_lossy(&greeting).to_ascii_uppercase();
    if !g.starts_with("* OK") {
        return Err(unreachable(
            Unreachable::Protocol,
            "the IMAP server did not greet",
        ));
    }
    let (Some(u), Some(p)) = (quoted(user), quoted(secret.expose())) else {
        return Err(Failure::Transient(UpstreamError::BadResponse {
            detail: "the Apple ID or password cannot be sent to IMAP as typed".into(),
        }));
    };
    // Never logged: the command holds the password.
    let cmd = format!("ib1 LOGIN {u} {p}\r\n");
    r.get_mut()
        .write_all(cmd.as_bytes())
        .await
        .map_err(|_| unreachable(Unreachable::Protocol, "the connection broke"))?;
    let mut caps = Vec::new();
    let done = until_tagged(&mut r, "ib1", &mut caps).await?;
    match done.kind {
        Kind::Ok => {}
        _ if is_rejection(&done) => return Err(Failure::Rejected),
        Kind::Bad if done.code.as_deref() != Some("UNAVAILABLE") => {
            return Err(Failure::Transient(UpstreamError::BadResponse {
                detail: format!("the IMAP server refused the login command ({})", done.text),
            }))
        }
        _ => {
            return Err(unreachable(
                Unreachable::Protocol,
                "the IMAP server is temporarily unavailable",
            ))
        }
    }
    // The capabilities after login (iCloud's OK carries none).
    r.get_mut()
        .write_all(b"ib2 CAPABILITY\r\n")
        .await
        .map_err(|_| unreachable(Unreachable::Protocol, "the connection broke"))?;
    until_tagged(&mut r, "ib2", &mut caps).await?;
    let pending = r.buffer().to_vec();
    Ok(Session {
        io: r.into_inner(),
        pending,
        capabilities: filter_capabilities(&caps),
    })
}

/// iCloud's capabilities without what the bridge does not offer: login mechanisms and the
/// pre-login ones (the client is logged in to the bridge, not to iCloud).
pub fn filter_capabilities(caps: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in caps {
        let up = c.to_ascii_uppercase();
        if up.starts_with("AUTH=")
            || matches!(
                up.as_str(),
                "SASL-IR" | "STARTTLS" | "LOGINDISABLED" | "LOGIN-REFERRALS"
            )
            || out.iter().any(|x| x.eq_ignore_ascii_case(c))
        {
            continue;
        }
        out.push(c.clone());
    }
    if !out.iter().any(|c| c.eq_ignore_ascii_case("IMAP4rev1")) {
        out.insert(0, "IMAP4rev1".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_lines_are_classified() {
        let l = parse_line(b"ib1 NO [AUTHENTICATIONFAILED] Authentication Failed\r\n");
        let Line::Tagged(tag, t) = l else {
            panic!("{l:?}")
        };
        assert_eq!(tag, "ib1");
        assert_eq!(t.code.as_deref(), Some("AUTHENTICATIONFAILED"));
        assert!(is_rejection(&t));
        let Line::Tagged(_, t) =
            parse_line(b"ib1 BAD [UNAVAILABLE] Service temporarily unavailable\r\n")
        else {
            panic!()
        };
        assert_eq!(
            (t.kind, t.code.as_deref()),
            (Kind::Bad, Some("UNAVAILABLE"))
        );
        assert!(!is_rejection(&t));
        let Line::Tagged(_, t) = parse_line(b"ib1 NO [UNAVAILABLE] try later\r\n") else {
            panic!()
        };
        assert!(!is_rejection(&t));
        let Line::Tagged(_, t) = parse_line(b"ib1 NO Login failed\r\n") else {
            panic!()
        };
        assert!(is_rejection(&t));
        let Line::Tagged(_, t) = parse_line(b"ib1 OK user alice logged in\r\n") else {
            panic!()
        };
        assert_eq!(t.kind, Kind::Ok);
        // Lines the codec refuses still classify.
        assert!(matches!(
            parse_line(b"ib1 NO [X Authentication\r\n"),
            Line::Tagged(_, _)
        ));
        assert_eq!(parse_line(b"garbage"), Line::Other);
        assert_eq!(parse_line(b""), Line::Other);
        assert_eq!(parse_line(b"* BYE bye\r\n"), Line::Bye);
    }

    #[test]
    fn capabilities_lose_login_mechanisms() {
        let Line::Capability(c) = parse_line(
            b"* CAPABILITY XAPPLEPUSHSERVICE IMAP4 IMAP4rev1 SASL-IR AUTH=ATOKEN AUTH=PLAIN IDLE CONDSTORE \r\n",
        ) else {
            panic!()
        };
        let f = filter_capabilities(&c);
        assert_eq!(
            f,
            vec![
                "XAPPLEPUSHSERVICE",
                "IMAP4",
                "IMAP4rev1",
                "IDLE",
                "CONDSTORE"
            ]
        );
        assert_eq!(filter_capabilities(&[]), vec!["IMAP4rev1"]);
    }

    proptest::proptest! {
        #[test]
        fn any_upstream_line_is_classified_without_panicking(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_line(&bytes);
            let mut l = b"ib1 ".to_vec();
            l.extend(&bytes);
            let _ = parse_line(&l);
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quoted("a\"b\\c").as_deref(), Some("\"a\\\"b\\\\c\""));
        assert_eq!(quoted("a\r\nb"), None);
        assert_eq!(quoted(""), None);
    }
}
