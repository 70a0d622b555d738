//! SMTP submission front end on `server.smtp_listen`: the bridge answers the greeting, EHLO,
//! STARTTLS (the certificate in `certs_dir`, see [`crate::tls`]) and AUTH
//! PLAIN/LOGIN against the local logins itself. After a local login it logs in to iCloud's
//! SMTP (`upstream.smtp`: `smtp://` = STARTTLS, `smtps://` = implicit TLS) with the Apple ID
//! and the stored app-specific password, and then relays the rest of the session as bytes in
//! both directions, so messages stream through and are never held whole.
//!
//! When Apple says no (design: "When Apple says no"): a wrong *local* password gets `535`;
//! iCloud rejecting the stored password (`535` upstream) marks the account `auth_rejected` and
//! the client gets `454 4.7.0 <sentence>`; connection trouble, timeouts, drops and any `4xx`
//! are transient (`421` with the sentence), never read as a bad password. AUTH lines and
//! passwords are never logged.

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::mail::relay::{Relay, Side};
use crate::mail::Mail;
use crate::net::{read_line, trim_eol, write_line as send, BoxIo, Conn, Line};

/// Longest command line (RFC 4954 allows 12288 octets for AUTH).
const MAX_COMMAND_LINE: usize = 16 * 1024;
/// Idle limits: between commands before login (RFC 5321 4.5.3.2: 5 min; the whole dialogue
/// before login also has a total deadline, `limits.login_timeout_secs`), and on a relayed
/// session with no bytes either way (10 min, the DATA termination limit).
const COMMAND_IDLE: Duration = Duration::from_secs(300);
const RELAY_IDLE: Duration = Duration::from_secs(600);
/// TLS handshake with a client.
const HANDSHAKE: Duration = Duration::from_secs(30);
/// Errors in a row before a client is disconnected.
const MAX_ERRORS: usize = 20;
/// The name in the greeting and the EHLO answer.
const NAME: &str = "icloud-bridge";

const WRONG_LOCAL: &str = "535 5.7.8 Authentication credentials invalid: use your icloud-bridge login (from `icloud-bridge client add`), not the Apple ID";

/// The client's EHLO name if it is a plausible domain or address literal, for our own EHLO
/// upstream; `localhost` otherwise.
fn ehlo_name(arg: &str) -> String {
    let ok = !arg.is_empty()
        && arg.len() <= 255
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    if ok {
        arg.to_string()
    } else {
        "localhost".to_string()
    }
}

struct State {
    tls: bool,
    loopback: bool,
    greeted: bool,
    ehlo: String,
    errors: usize,
}

impl State {
    fn ehlo_reply(&self, verb: &str) -> String {
        if verb == "HELO" {
            return format!("250 {NAME}");
        }
        let mut caps = vec![
            format!("{NAME} ESMTP"),
            "PIPELINING".to_string(),
            "SIZE".to_string(),
            "8BITMIME".to_string(),
        ];
        if !self.tls {
            caps.push("STARTTLS".into());
        }
        if self.tls || self.loopback {
            caps.push("AUTH PLAIN LOGIN".into());
        }
        let n = caps.len();
        caps.iter()
            .enumerate()
            .map(|(i, c)| format!("250{}{c}", if i + 1 == n { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\r\n")
    }
}

/// What to do after a command.
enum Next {
    Reply(String),
    StartTls,
    /// Logged in upstream: relay from now on.
    Relay(Box<Conn>),
    /// Send this reply, then close.
    Close(String),
}

/// Serve one SMTP connection until it ends; a relayed session runs on through the drain
/// after shutdown (it may be in the middle of a message).
pub(crate) async fn session(
    ctx: &Mail,
    tcp: TcpStream,
    remote: SocketAddr,
    token: &CancellationToken,
) -> io::Result<()> {
    // One deadline for everything before login (`limits.login_timeout_secs`), STARTTLS
    // included: it does not move with each line the client sends.
    let deadline = tokio::time::Instant::now() + ctx.login_timeout;
    let _ = tcp.set_nodelay(true);
    // The same rule as IMAP's: a client on this machine (its address is loopback) may log in
    // without TLS; anyone else needs STARTTLS first.
    let loopback = crate::net::is_loopback(remote.ip());
    let mut conn: Conn = BufReader::new(Box::new(tcp) as BoxIo);
    match tokio::time::timeout_at(deadline, pre_login(ctx, &mut conn, loopback, remote, token))
        .await
    {
        Ok(Ok(Some(upstream))) => relay(conn, *upstream).await,
        Ok(Ok(None)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            tracing::debug!(%remote, "smtp: no login within limits.login_timeout_secs");
            // A client that reads nothing must not hold the session open either.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                send(&mut conn, "421 4.4.2 No login in time, closing connection"),
            )
            .await;
            Ok(())
        }
    }
}

/// The dialogue before login: the logged-in upstream connection to relay to, or `None`
/// when the session ended.
async fn pre_login(
    ctx: &Mail,
    conn: &mut Conn,
    loopback: bool,
    remote: SocketAddr,
    token: &CancellationToken,
) -> io::Result<Option<Box<Conn>>> {
    send(conn, &format!("220 {NAME} ESMTP ready")).await?;
    let mut st = State {
        tls: false,
        loopback,
        greeted: false,
        ehlo: "localhost".into(),
        errors: 0,
    };
    let mut line = Vec::with_capacity(512);
    loop {
        let Some(got) = next_line(conn, &mut line, token).await? else {
            return Ok(None);
        };
        let next = match got {
            Line::Eof => return Ok(None),
            Line::TooLong => Next::Reply("500 5.5.2 Line too long".into()),
            Line::Full => run_line(ctx, conn, &mut st, remote, &line).await?,
        };
        if let ControlFlow::Break(upstream) = follow(ctx, conn, &mut st, next).await? {
            return Ok(upstream);
        }
    }
}

/// Reads the next command line into `line`; `None` when the session ends first (shutdown or
/// idle client, answered with a 421).
async fn next_line(
    conn: &mut Conn,
    line: &mut Vec<u8>,
    token: &CancellationToken,
) -> io::Result<Option<Line>> {
    let got = tokio::select! {
        _ = token.cancelled() => None,
        r = tokio::time::timeout(COMMAND_IDLE, read_line(conn, MAX_COMMAND_LINE, line)) => Some(r),
    };
    match got {
        None => {
            send(conn, "421 4.3.2 icloud-bridge is shutting down").await?;
            Ok(None)
        }
        Some(Err(_)) => {
            send(conn, "421 4.4.2 Idle timeout, closing connection").await?;
            Ok(None)
        }
        Some(Ok(r)) => r.map(Some),
    }
}

/// Splits a command line into its verb (upper case) and arguments, and runs the command.
async fn run_line(
    ctx: &Mail,
    conn: &mut Conn,
    st: &mut State,
    remote: SocketAddr,
    line: &[u8],
) -> io::Result<Next> {
    let text = String::from_utf8_lossy(trim_eol(line)).into_owned();
    let (verb, args) = match text.split_once(' ') {
        Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
        None => (text.trim().to_ascii_uppercase(), String::new()),
    };
    // The verb only: AUTH arguments are secrets.
    tracing::debug!(%remote, verb = %verb.chars().take(16).collect::<String>(), "smtp command");
    command(ctx, conn, st, remote, &verb, &args).await
}

/// Acts on a command's outcome: replies (closing after too many errors), switches to TLS, or
/// breaks with the logged-in upstream (`None`: the session ends).
async fn follow(
    ctx: &Mail,
    conn: &mut Conn,
    st: &mut State,
    next: Next,
) -> io::Result<ControlFlow<Option<Box<Conn>>>> {
    match next {
        Next::Reply(r) => {
            if r.starts_with('5') {
                st.errors += 1;
            } else {
                st.errors = 0;
            }
            send(conn, &r).await?;
            if st.errors >= MAX_ERRORS {
                send(conn, "421 4.7.0 Too many errors, closing connection").await?;
                return Ok(ControlFlow::Break(None));
            }
        }
        Next::Close(r) => {
            send(conn, &r).await?;
            return Ok(ControlFlow::Break(None));
        }
        Next::StartTls => {
            send(conn, "220 2.0.0 Ready to start TLS").await?;
            start_tls(ctx, conn).await?;
            st.tls = true;
            st.greeted = false;
        }
        Next::Relay(upstream) => {
            send(conn, "235 2.7.0 Authentication successful").await?;
            return Ok(ControlFlow::Break(Some(upstream)));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Replaces the plaintext connection with the TLS one after the handshake.
async fn start_tls(ctx: &Mail, conn: &mut Conn) -> io::Result<()> {
    // RFC 3207: whatever the client pipelined after STARTTLS is discarded.
    let placeholder: BoxIo = Box::new(tokio::io::duplex(1).0);
    let inner = std::mem::replace(conn, BufReader::new(placeholder)).into_inner();
    let tls = tokio::time::timeout(HANDSHAKE, ctx.acceptor.accept(inner))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake"))??;
    *conn = BufReader::new(Box::new(tls));
    Ok(())
}

async fn command(
    ctx: &Mail,
    conn: &mut Conn,
    st: &mut State,
    remote: SocketAddr,
    verb: &str,
    args: &str,
) -> io::Result<Next> {
    let reply = |s: &str| Next::Reply(s.to_string());
    Ok(match verb {
        "EHLO" | "HELO" => {
            if args.is_empty() {
                return Ok(reply("501 5.5.4 Syntax: EHLO hostname"));
            }
            st.greeted = true;
            st.ehlo = ehlo_name(args.split_ascii_whitespace().next().unwrap_or(""));
            Next::Reply(st.ehlo_reply(verb))
        }
        "STARTTLS" if st.tls => reply("503 5.5.1 TLS already active"),
        "STARTTLS" if !args.is_empty() => reply("501 5.5.4 Syntax: STARTTLS"),
        "STARTTLS" => Next::StartTls,
        "AUTH" if !st.tls && !st.loopback => reply("530 5.7.0 Must issue a STARTTLS command first"),
        "AUTH" if !st.greeted => reply("503 5.5.1 Send EHLO first"),
        "AUTH" => {
            let (user, pass) = match sasl(conn, args).await? {
                Sasl::Creds(u, p) => (u, p),
                Sasl::Reply(r) => return Ok(reply(r)),
            };
            let Some(login) = ctx
                .auth
                .check_login(remote.ip(), &user, &pass, "smtp")
                .await
            else {
                return Ok(reply(WRONG_LOCAL));
            };
            drop(pass);
            let Some(acc) = ctx.accounts.get(&login.account) else {
                return Ok(Next::Reply(format!(
                    "454 4.7.0 Login {} belongs to account {}, which is not in the configuration",
                    login.name, login.account
                )));
            };
            match crate::upstream::smtp::login(&ctx.smtp, &acc, &st.ehlo).await {
                Ok(up) => {
                    tracing::info!(%remote, login = %login.name, account = acc.name(), "smtp: relaying to iCloud");
                    Next::Relay(Box::new(up))
                }
                Err(e) => {
                    tracing::info!(%remote, login = %login.name, account = acc.name(), error = %e, "smtp: iCloud login not possible");
                    if e.smtp_closes() {
                        Next::Close(e.smtp_reply())
                    } else {
                        Next::Reply(e.smtp_reply())
                    }
                }
            }
        }
        "MAIL" | "RCPT" | "DATA" | "BDAT" | "VRFY" | "EXPN" => {
            reply("530 5.7.0 Authentication required")
        }
        "RSET" | "NOOP" => reply("250 2.0.0 OK"),
        "HELP" => reply("214 2.0.0 icloud-bridge: log in with AUTH, then send as usual"),
        "QUIT" => Next::Close("221 2.0.0 Bye".into()),
        _ => reply("500 5.5.2 Command not recognized"),
    })
}

/// The outcome of a SASL exchange.
enum Sasl {
    Creds(String, String),
    /// The reply for a cancelled or malformed exchange.
    Reply(&'static str),
}

/// Send a `334` challenge and read the response line; `None` when cancelled or cut.
async fn sasl_line(conn: &mut Conn, challenge: &str) -> io::Result<Option<String>> {
    send(conn, &format!("334 {challenge}")).await?;
    let mut line = Vec::new();
    match tokio::time::timeout(COMMAND_IDLE, read_line(conn, MAX_COMMAND_LINE, &mut line)).await {
        Ok(Ok(Line::Full)) => {}
        Ok(Ok(_)) | Err(_) => return Ok(None),
        Ok(Err(e)) => return Err(e),
    }
    let text = String::from_utf8_lossy(trim_eol(&line)).trim().to_string();
    Ok((text != "*").then_some(text))
}

fn b64(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    B64.decode(text).ok()
}

/// AUTH PLAIN (with or without an initial response) or AUTH LOGIN.
async fn sasl(conn: &mut Conn, args: &str) -> io::Result<Sasl> {
    const CANCELLED: &str = "501 5.7.0 Authentication cancelled";
    const UNDECODABLE: &str = "501 5.5.2 Cannot decode the response";
    let mut parts = args.split_ascii_whitespace();
    let mech = parts.next().unwrap_or("").to_ascii_uppercase();
    let initial = parts.next().map(str::to_string);
    let utf8 = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    Ok(match mech.as_str() {
        "PLAIN" => {
            let resp = match initial {
                Some(r) => r,
                None => match sasl_line(conn, "").await? {
                    Some(r) => r,
                    None => return Ok(Sasl::Reply(CANCELLED)),
                },
            };
            let Some(raw) = b64(&resp) else {
                return Ok(Sasl::Reply(UNDECODABLE));
            };
            let fields: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            let [_authz, user, pass] = fields.as_slice() else {
                return Ok(Sasl::Reply(UNDECODABLE));
            };
            Sasl::Creds(utf8(user), utf8(pass))
        }
        "LOGIN" => {
            let user = match initial {
                Some(r) => r,
                None => match sasl_line(conn, "VXNlcm5hbWU6").await? {
                    Some(r) => r,
                    None => return Ok(Sasl::Reply(CANCELLED)),
                },
            };
            let Some(user) = b64(&user) else {
                return Ok(Sasl::Reply(UNDECODABLE));
            };
            let Some(pass) = sasl_line(conn, "UGFzc3dvcmQ6").await? else {
                return Ok(Sasl::Reply(CANCELLED));
            };
            let Some(pass) = b64(&pass) else {
                return Ok(Sasl::Reply(UNDECODABLE));
            };
            Sasl::Creds(utf8(&user), utf8(&pass))
        }
        "" => Sasl::Reply("501 5.5.4 Syntax: AUTH mechanism"),
        _ => Sasl::Reply("504 5.5.4 Unrecognized authentication type (use PLAIN or LOGIN)"),
    })
}

/// Relay the rest of the session: what the client pipelined behind AUTH goes upstream first.
async fn relay(client: Conn, upstream: Conn) -> io::Result<()> {
    let client = Side {
        early: client.buffer().to_vec(),
        io: client.into_inner(),
    };
    let upstream = Side {
        early: upstream.buffer().to_vec(),
        io: upstream.into_inner(),
    };
    Relay {
        name: "SMTP",
        idle: RELAY_IDLE,
        buffer: 16 * 1024,
        stop: None,
    }
    .run(client, upstream)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_names_are_sanitised() {
        assert_eq!(ehlo_name("mail.example.org"), "mail.example.org");
        assert_eq!(ehlo_name("[127.0.0.1]"), "[127.0.0.1]");
        assert_eq!(ehlo_name("bad\rname"), "localhost");
        assert_eq!(ehlo_name(""), "localhost");
    }
}
