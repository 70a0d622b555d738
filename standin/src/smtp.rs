//! The SMTP submission role (spec C10, smtp.mail.me.com:587) on its own loopback port:
//! greeting, EHLO, STARTTLS with the stand-in's certificate, AUTH PLAIN/LOGIN against the
//! account's app-specific passwords and Mail flag (after TLS only), then MAIL/RCPT/DATA into an
//! in-memory outbox per account. Switches: `smtp.auth_fail_reply`, `smtp.transient`,
//! `smtp.drop`, `smtp.foreign_sender`. Lines and messages are size-limited; bad input gets an
//! SMTP error, never a panic.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::accounts::{lock, write, Account, OUTBOX_CAP};
use crate::config::Service;
use crate::state::{LoggedRequest, Shared};

/// The host name in the greeting and EHLO answer.
pub const HOST: &str = "smtp.icloud.test";
/// Largest message accepted (advertised as `SIZE`).
pub const MAX_MESSAGE_BYTES: usize = 32 * 1024 * 1024;
/// Longest command line (RFC 4954 allows 12288 octets for AUTH lines).
const MAX_COMMAND_LINE: usize = 16 * 1024;
/// Longest line inside DATA (RFC 5321 says 1000; the stand-in is lenient).
const MAX_DATA_LINE: usize = 64 * 1024;
const MAX_RECIPIENTS: usize = 100;
/// Errors in a row before the stand-in gives up on a client.
const MAX_ERRORS: usize = 20;
const IDLE: Duration = Duration::from_secs(300);

/// One message accepted by the SMTP role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SentMessage {
    /// The address in `MAIL FROM:<…>` (empty for the null sender).
    pub mail_from: String,
    /// The addresses in `RCPT TO:<…>`, in order.
    pub rcpt_to: Vec<String>,
    /// The message as sent, dot-unstuffed, without the final `.` line.
    pub data: Vec<u8>,
}

/// Bind the SMTP role on `addr` and spawn its accept loop on the stand-in's runtime.
pub fn bind(shared: &Arc<Shared>, addr: SocketAddr) -> io::Result<SocketAddr> {
    crate::server::bind_tcp(shared, addr, |shared, stream| async move {
        if let Err(e) = serve(&shared, stream).await {
            tracing::debug!(error = %e, "stand-in smtp: connection ended");
        }
    })
}

/// How a session phase ended.
enum End {
    Close,
    StartTls,
}

async fn serve(shared: &Arc<Shared>, stream: TcpStream) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut conn = BufReader::new(stream);
    send(&mut conn, &format!("220 {HOST} ESMTP")).await?;
    if let End::Close = session(shared, &mut conn, false).await? {
        return Ok(());
    }
    // RFC 3207: anything the client sent after STARTTLS, before the handshake, is dropped.
    let tcp = conn.into_inner();
    let tls = tokio::time::timeout(Duration::from_secs(30), shared.tls.acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let mut conn = BufReader::new(tls);
    session(shared, &mut conn, true).await?;
    Ok(())
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    line: &str,
) -> io::Result<()> {
    let w = conn.get_mut();
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

/// One line read with a length limit.
pub(crate) enum Line {
    /// The line with its ending.
    Full,
    /// Longer than allowed; consumed up to its end and discarded.
    TooLong,
    /// The connection closed (a partial last line is dropped).
    Eof,
}

/// Read one `\n`-terminated line into `out` (cleared first), at most `max` bytes.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
    out: &mut Vec<u8>,
) -> io::Result<Line> {
    out.clear();
    let mut too_long = false;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(Line::Eof);
        }
        let (take, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        if !too_long && out.len() + take <= max {
            out.extend_from_slice(&buf[..take]);
        } else {
            too_long = true;
            out.clear();
        }
        r.consume(take);
        if done {
            return Ok(if too_long { Line::TooLong } else { Line::Full });
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// `<addr>` (with optional parameters after it) from the text after `FROM:` / `TO:`.
fn angle_addr(rest: &str) -> Option<(String, &str)> {
    let rest = rest.trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    let addr = inner[..end].trim();
    if addr.contains(['<', ' ', '\t']) {
        return None;
    }
    Some((addr.to_string(), inner[end + 1..].trim()))
}

/// The value of `SIZE=` among ESMTP parameters.
fn size_param(params: &str) -> Option<u64> {
    params.split_ascii_whitespace().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.eq_ignore_ascii_case("SIZE").then(|| v.parse().ok())?
    })
}

struct Session {
    tls: bool,
    greeted: bool,
    account: Option<Arc<Account>>,
    mail_from: Option<String>,
    rcpt: Vec<String>,
    errors: usize,
}

impl Session {
    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt.clear();
    }
}

fn log(shared: &Shared, verb: &str, args: &str, status: u16) {
    if !shared.switches().log_enabled {
        return;
    }
    shared.push_log(LoggedRequest {
        method: verb.to_string(),
        host: HOST.to_string(),
        path: args.to_string(),
        headers: Vec::new(),
        body: Vec::new(),
        status,
        role: "smtp".to_string(),
    });
}

fn code_of(reply: &str) -> u16 {
    reply.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// One phase of a session (before TLS, or after it).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    conn: &mut BufReader<S>,
    tls: bool,
) -> io::Result<End> {
    let mut s = Session {
        tls,
        greeted: false,
        account: None,
        mail_from: None,
        rcpt: Vec::new(),
        errors: 0,
    };
    let mut line = Vec::with_capacity(512);
    loop {
        let got =
            match tokio::time::timeout(IDLE, read_line(conn, MAX_COMMAND_LINE, &mut line)).await {
                Ok(r) => r?,
                Err(_) => {
                    send(conn, "421 4.4.2 Idle timeout, closing connection").await?;
                    return Ok(End::Close);
                }
            };
        match got {
            Line::Eof => return Ok(End::Close),
            Line::TooLong => {
                s.errors += 1;
                send(conn, "500 5.5.2 Line too long").await?;
                if s.errors >= MAX_ERRORS {
                    send(conn, "421 4.7.0 Too many errors, closing connection").await?;
                    return Ok(End::Close);
                }
                continue;
            }
            Line::Full => {}
        }
        let text = String::from_utf8_lossy(trim_eol(&line)).into_owned();
        let (verb, args) = match text.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (text.trim().to_ascii_uppercase(), String::new()),
        };
        let step = command(shared, conn, &mut s, &verb, &args).await?;
        let code = code_of(&step.reply);
        let logged_args = if verb == "AUTH" {
            args.split(' ').next().unwrap_or("").to_string()
        } else {
            args.clone()
        };
        log(shared, &verb, &logged_args, code);
        if !step.reply.is_empty() {
            send(conn, &step.reply).await?;
        }
        if code >= 500 {
            s.errors += 1;
        } else {
            s.errors = 0;
        }
        if let Some(end) = step.end {
            return Ok(end);
        }
        if s.errors >= MAX_ERRORS {
            send(conn, "421 4.7.0 Too many errors, closing connection").await?;
            return Ok(End::Close);
        }
    }
}

/// What one command produced.
struct Step {
    /// The reply (possibly multi-line, joined by CRLF), or empty for none.
    reply: String,
    end: Option<End>,
}

fn reply(r: impl Into<String>) -> Step {
    Step {
        reply: r.into(),
        end: None,
    }
}

fn ehlo_lines(tls: bool) -> String {
    let mut caps = vec![
        HOST.to_string(),
        "PIPELINING".to_string(),
        format!("SIZE {MAX_MESSAGE_BYTES}"),
    ];
    if tls {
        caps.push("8BITMIME".into());
        caps.push("AUTH PLAIN LOGIN".into());
    } else {
        caps.push("STARTTLS".into());
    }
    let n = caps.len();
    caps.iter()
        .enumerate()
        .map(|(i, c)| format!("250{}{c}", if i + 1 == n { ' ' } else { '-' }))
        .collect::<Vec<_>>()
        .join("\r\n")
}

async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    conn: &mut BufReader<S>,
    s: &mut Session,
    verb: &str,
    args: &str,
) -> io::Result<Step> {
    let sw = shared.switches();
    Ok(match verb {
        "EHLO" | "HELO" => {
            if sw.smtp_drop {
                return Ok(Step {
                    reply: String::new(),
                    end: Some(End::Close),
                });
            }
            if args.is_empty() {
                return Ok(reply("501 5.5.4 Syntax: EHLO hostname"));
            }
            s.greeted = true;
            s.reset();
            if verb == "HELO" {
                reply(format!("250 {HOST}"))
            } else {
                reply(ehlo_lines(s.tls))
            }
        }
        "STARTTLS" => {
            if s.tls {
                reply("503 5.5.1 TLS already active")
            } else if !args.is_empty() {
                reply("501 5.5.4 Syntax: STARTTLS")
            } else {
                Step {
                    reply: "220 2.0.0 Ready to start TLS".into(),
                    end: Some(End::StartTls),
                }
            }
        }
        "AUTH" => auth(shared, conn, s, args).await?,
        "MAIL" => {
            if !s.greeted {
                return Ok(reply("503 5.5.1 Error: send HELO/EHLO first"));
            }
            let Some(acc) = s.account.clone() else {
                return Ok(reply("530 5.7.0 Authentication required"));
            };
            if s.mail_from.is_some() {
                return Ok(reply("503 5.5.1 Error: nested MAIL command"));
            }
            let Some((addr, params)) = args
                .get(..5)
                .filter(|p| p.eq_ignore_ascii_case("FROM:"))
                .and_then(|_| angle_addr(&args[5..]))
            else {
                return Ok(reply("501 5.5.4 Syntax: MAIL FROM:<address>"));
            };
            if size_param(params).is_some_and(|n| n > MAX_MESSAGE_BYTES as u64) {
                return Ok(reply(
                    "552 5.3.4 Message size exceeds fixed maximum message size",
                ));
            }
            if !addr.is_empty() && !acc.owns_address(&addr) {
                if let Some(code) = sw.smtp_foreign_sender {
                    return Ok(reply(format!(
                        "{code} 5.7.1 Sender address rejected: not owned by the authenticated account"
                    )));
                }
            }
            s.mail_from = Some(addr);
            reply("250 2.1.0 Ok")
        }
        "RCPT" => {
            if s.mail_from.is_none() {
                return Ok(reply("503 5.5.1 Error: need MAIL command"));
            }
            let Some((addr, _)) = args
                .get(..3)
                .filter(|p| p.eq_ignore_ascii_case("TO:"))
                .and_then(|_| angle_addr(&args[3..]))
                .filter(|(a, _)| !a.is_empty())
            else {
                return Ok(reply("501 5.5.4 Syntax: RCPT TO:<address>"));
            };
            if s.rcpt.len() >= MAX_RECIPIENTS {
                return Ok(reply("452 4.5.3 Too many recipients"));
            }
            s.rcpt.push(addr);
            reply("250 2.1.5 Ok")
        }
        "DATA" => {
            if !args.is_empty() {
                return Ok(reply("501 5.5.4 Syntax: DATA"));
            }
            let (Some(acc), Some(from)) = (s.account.clone(), s.mail_from.clone()) else {
                return Ok(reply("503 5.5.1 Error: need MAIL command"));
            };
            if s.rcpt.is_empty() {
                return Ok(reply("503 5.5.1 Error: need RCPT command"));
            }
            send(conn, "354 End data with <CR><LF>.<CR><LF>").await?;
            let outcome = data(conn, &shared.smtp_data_bytes).await?;
            let to = std::mem::take(&mut s.rcpt);
            s.reset();
            match outcome {
                Data::Ok(data) => {
                    let mut out = lock(&acc.outbox);
                    if out.len() >= OUTBOX_CAP {
                        out.pop_front();
                    }
                    out.push_back(SentMessage {
                        mail_from: from,
                        rcpt_to: to,
                        data,
                    });
                    reply(format!("250 2.0.0 Ok: queued as {}", crate::random_hex(10)))
                }
                Data::TooBig => reply("552 5.3.4 Message size exceeds fixed maximum message size"),
                Data::LineTooLong => reply("500 5.5.2 Line too long in message data"),
                Data::Closed => Step {
                    reply: String::new(),
                    end: Some(End::Close),
                },
            }
        }
        "RSET" => {
            s.reset();
            reply("250 2.0.0 Ok")
        }
        "NOOP" => reply("250 2.0.0 Ok"),
        "VRFY" => reply("252 2.0.0 Cannot VRFY user"),
        "QUIT" => Step {
            reply: "221 2.0.0 Bye".into(),
            end: Some(End::Close),
        },
        _ => reply("500 5.5.2 Error: command not recognized"),
    })
}

enum Data {
    Ok(Vec<u8>),
    TooBig,
    LineTooLong,
    Closed,
}

/// Read DATA up to the `.` line, undoing dot-stuffing, into the message (never beyond the
/// size limit: the rest is read and dropped).
async fn data<R: AsyncBufRead + Unpin>(
    conn: &mut R,
    counter: &std::sync::atomic::AtomicU64,
) -> io::Result<Data> {
    let mut msg = Vec::new();
    let mut too_big = false;
    let mut too_long = false;
    let mut line = Vec::with_capacity(1024);
    loop {
        let got = match tokio::time::timeout(IDLE, read_line(conn, MAX_DATA_LINE, &mut line)).await
        {
            Ok(r) => r?,
            Err(_) => return Ok(Data::Closed),
        };
        match got {
            Line::Eof => return Ok(Data::Closed),
            Line::TooLong => {
                too_long = true;
                continue;
            }
            Line::Full => {}
        }
        if line == b".\r\n" || line == b".\n" {
            break;
        }
        counter.fetch_add(line.len() as u64, std::sync::atomic::Ordering::Relaxed);
        let content = line.strip_prefix(b".").unwrap_or(&line);
        if msg.len() + content.len() > MAX_MESSAGE_BYTES {
            too_big = true;
            msg = Vec::new();
        }
        if !too_big && !too_long {
            msg.extend_from_slice(content);
        }
    }
    Ok(if too_big {
        Data::TooBig
    } else if too_long {
        Data::LineTooLong
    } else {
        Data::Ok(msg)
    })
}

/// Read one SASL response line after a `334` challenge; `None` when cancelled (`*`).
async fn sasl_line<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut BufReader<S>,
    challenge: &str,
) -> io::Result<Option<String>> {
    send(conn, &format!("334 {challenge}")).await?;
    let mut line = Vec::new();
    match tokio::time::timeout(IDLE, read_line(conn, MAX_COMMAND_LINE, &mut line)).await {
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
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Arc<Shared>,
    conn: &mut BufReader<S>,
    s: &mut Session,
    args: &str,
) -> io::Result<Step> {
    if !s.tls {
        return Ok(reply("530 5.7.0 Must issue a STARTTLS command first"));
    }
    if !s.greeted {
        return Ok(reply("503 5.5.1 Error: send HELO/EHLO first"));
    }
    if s.account.is_some() {
        return Ok(reply("503 5.5.1 Error: already authenticated"));
    }
    if s.mail_from.is_some() {
        return Ok(reply("503 5.5.1 Error: MAIL transaction in progress"));
    }
    let mut parts = args.split_ascii_whitespace();
    let mech = parts.next().unwrap_or("").to_ascii_uppercase();
    let initial = parts.next().map(str::to_string);
    let cancelled = || reply("501 5.7.0 Authentication cancelled");
    let undecodable = || reply("501 5.5.2 Cannot decode response");
    let (user, pass) = match mech.as_str() {
        "PLAIN" => {
            let resp = match initial {
                Some(r) => r,
                None => match sasl_line(conn, "").await? {
                    Some(r) => r,
                    None => return Ok(cancelled()),
                },
            };
            let Some(raw) = b64(&resp) else {
                return Ok(undecodable());
            };
            let fields: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            let [_authz, user, pass] = fields.as_slice() else {
                return Ok(undecodable());
            };
            (
                String::from_utf8_lossy(user).into_owned(),
                String::from_utf8_lossy(pass).into_owned(),
            )
        }
        "LOGIN" => {
            let user = match initial {
                Some(r) => r,
                None => match sasl_line(conn, "VXNlcm5hbWU6").await? {
                    Some(r) => r,
                    None => return Ok(cancelled()),
                },
            };
            let Some(user) = b64(&user) else {
                return Ok(undecodable());
            };
            let Some(pass) = sasl_line(conn, "UGFzc3dvcmQ6").await? else {
                return Ok(cancelled());
            };
            let Some(pass) = b64(&pass) else {
                return Ok(undecodable());
            };
            (
                String::from_utf8_lossy(&user).into_owned(),
                String::from_utf8_lossy(&pass).into_owned(),
            )
        }
        "" => return Ok(reply("501 5.5.4 Syntax: AUTH mechanism")),
        _ => return Ok(reply("504 5.5.4 Unrecognized authentication type")),
    };
    let sw = shared.switches();
    match sw.smtp_transient {
        Some(421) => {
            return Ok(Step {
                reply: "421 4.7.0 Service temporarily unavailable, closing transmission channel"
                    .into(),
                end: Some(End::Close),
            })
        }
        Some(code) => {
            return Ok(reply(format!(
                "{code} 4.7.0 Temporary authentication failure"
            )))
        }
        None => {}
    }
    let ok = shared
        .accounts
        .by_smtp_login(&user)
        .filter(|acc| lock(&acc.auth).check(Service::Mail, &pass).is_ok());
    Ok(match ok {
        Some(acc) => {
            s.account = Some(acc);
            reply("235 2.7.0 Authentication successful")
        }
        None => reply(sw.smtp_auth_fail_reply.clone()),
    })
}

/// Messages the account sent, oldest first.
pub(crate) fn sent(acc: &Account) -> Vec<SentMessage> {
    lock(&acc.outbox).iter().cloned().collect()
}

/// Record the bound address for `Standin::smtp_url`.
pub(crate) fn set_addr(shared: &Shared, addr: SocketAddr) {
    write(&shared.listeners).smtp = Some(addr);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_limited_and_resynchronise() {
        let input: &[u8] = b"short\r\nthis one is far too long\r\nok\n";
        let mut r = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        assert!(matches!(
            read_line(&mut r, 10, &mut out).await.unwrap(),
            Line::Full
        ));
        assert_eq!(out, b"short\r\n");
        assert!(matches!(
            read_line(&mut r, 10, &mut out).await.unwrap(),
            Line::TooLong
        ));
        assert!(matches!(
            read_line(&mut r, 10, &mut out).await.unwrap(),
            Line::Full
        ));
        assert_eq!(out, b"ok\n");
        assert!(matches!(
            read_line(&mut r, 10, &mut out).await.unwrap(),
            Line::Eof
        ));
    }

    #[test]
    fn parses_addresses_and_size() {
        assert_eq!(
            angle_addr(" <a@b.c> SIZE=10"),
            Some(("a@b.c".to_string(), "SIZE=10"))
        );
        assert_eq!(angle_addr("<>"), Some((String::new(), "")));
        assert_eq!(angle_addr("a@b.c"), None);
        assert_eq!(angle_addr("<a b>"), None);
        assert_eq!(size_param("BODY=8BITMIME size=123"), Some(123));
        assert_eq!(size_param("SIZE=x"), None);
    }
}
