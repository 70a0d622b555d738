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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::mail::tls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;

use crate::accounts::Account;
use crate::app::App;
use crate::config::Config;
use crate::upstream::client::{LoginResult, UpstreamStats};
use crate::upstream::error::{Unreachable, UpstreamError};
use crate::upstream::gate::Admitted;
use crate::upstream::service::Service;

/// Most SMTP sessions at once; more get `421` at once (as do more than
/// `limits.max_connections_per_ip` from one address, counted over every front end).
const MAX_CONNECTIONS: usize = 256;
/// Longest command line (RFC 4954 allows 12288 octets for AUTH).
const MAX_COMMAND_LINE: usize = 16 * 1024;
/// Longest reply line accepted from upstream, and most lines in one reply.
const MAX_REPLY_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 64;
/// Idle limits: between commands before login (RFC 5321 4.5.3.2: 5 min; the whole dialogue
/// before login also has a total deadline, `limits.login_timeout_secs`), and on a relayed
/// session with no bytes either way (10 min, the DATA termination limit).
const COMMAND_IDLE: Duration = Duration::from_secs(300);
const RELAY_IDLE: Duration = Duration::from_secs(600);
/// TLS handshake with a client.
const HANDSHAKE: Duration = Duration::from_secs(30);
/// How long relayed sessions get to finish after a shutdown request.
const DRAIN: Duration = Duration::from_secs(10);
/// Errors in a row before a client is disconnected.
const MAX_ERRORS: usize = 20;
/// The name in the greeting and the EHLO answer.
const NAME: &str = "icloud-bridge";

const WRONG_LOCAL: &str = "535 5.7.8 Authentication credentials invalid: use your icloud-bridge login (from `icloud-bridge client add`), not the Apple ID";

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connection (plain or TLS) with its read buffer.
type Conn = BufReader<Box<dyn Io>>;

/// The running SMTP listener.
pub struct SmtpListener {
    pub addr: SocketAddr,
    /// Ends after the token is cancelled and the sessions have drained.
    pub task: JoinHandle<()>,
}

struct Ctx {
    app: Arc<App>,
    acceptor: TlsAcceptor,
    up: Upstream,
    limit: Arc<Semaphore>,
}

/// How to reach iCloud's SMTP.
struct Upstream {
    connector: TlsConnector,
    url: Url,
    timeout: Duration,
    /// Where logins are counted (`/metrics`); none for `check`.
    stats: Option<Arc<UpstreamStats>>,
}

impl Upstream {
    fn new(config: &Config) -> Result<Upstream, String> {
        Ok(Upstream {
            connector: TlsConnector::from(tls::client_config(config.upstream.ca_file.as_deref())?),
            url: config.upstream.smtp.clone(),
            timeout: Duration::from_secs(config.upstream.timeout_secs),
            stats: None,
        })
    }
}

/// Log in to iCloud's SMTP once with the account's stored password, then log out (for
/// `icloud-bridge check`); the outcome is recorded in the account's state.
pub async fn check(config: &Config, acc: &Account) -> Result<(), UpstreamError> {
    let up = Upstream::new(config).map_err(|detail| UpstreamError::Unreachable {
        kind: Unreachable::Tls,
        detail,
    })?;
    login_and_quit(&up, acc).await
}

/// Log in to iCloud's SMTP with the stored password and leave again.
async fn login_and_quit(up: &Upstream, acc: &Account) -> Result<(), UpstreamError> {
    let mut conn = upstream_login(up, acc, "localhost").await?;
    let _ = send(&mut conn, "QUIT").await;
    Ok(())
}

/// Bind `server.smtp_listen` (if set), test each account's credential against iCloud's SMTP
/// once, and serve until `token` is cancelled.
pub fn spawn(app: &Arc<App>, token: &CancellationToken) -> Result<Option<SmtpListener>, String> {
    let Some(listen) = app.config.server.smtp_listen else {
        return Ok(None);
    };
    let (listener, addr) = crate::mail::bind(listen, "server.smtp_listen")?;
    let ctx = Arc::new(Ctx {
        app: app.clone(),
        acceptor: TlsAcceptor::from(tls::server_config(&app.config.server)?),
        up: Upstream {
            stats: Some(app.upstream.stats.clone()),
            ..Upstream::new(&app.config)?
        },
        limit: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    });
    for acc in app.accounts.snapshot().values() {
        if !acc.has_credential() {
            continue;
        }
        let (ctx, acc, token) = (ctx.clone(), acc.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = startup_check(&ctx, &acc) => {}
            }
        });
    }
    let task = tokio::spawn(accept_loop(ctx, listener, token.clone()));
    tracing::info!(%addr, "SMTP submission listening");
    Ok(Some(SmtpListener { addr, task }))
}

async fn startup_check(ctx: &Ctx, acc: &Account) {
    match login_and_quit(&ctx.up, acc).await {
        Ok(()) => {
            tracing::info!(
                account = acc.name(),
                "iCloud SMTP accepted the stored password"
            );
        }
        Err(e) => {
            tracing::warn!(account = acc.name(), error = %e, "SMTP start-up check failed")
        }
    }
}

async fn accept_loop(ctx: Arc<Ctx>, listener: TcpListener, token: CancellationToken) {
    let tracker = TaskTracker::new();
    let hard = CancellationToken::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "smtp: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Over a limit: refused at once, never queued.
        let held = ctx
            .app
            .conns
            .try_open(remote.ip(), "smtp")
            .zip(ctx.limit.clone().try_acquire_owned().ok());
        let Some(held) = held else {
            let _ = stream.try_write(
                b"421 4.7.0 Too many connections from your address; try again later\r\n",
            );
            continue;
        };
        let (ctx, token, hard) = (ctx.clone(), token.clone(), hard.clone());
        tracker.spawn(async move {
            let _held = held;
            tokio::select! {
                r = session(&ctx, stream, remote, &token) => {
                    if let Err(e) = r {
                        tracing::debug!(%remote, error = %e, "smtp: session ended with an error");
                    }
                }
                _ = hard.cancelled() => {}
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("smtp: shutdown deadline reached; dropping open sessions");
        hard.cancel();
        tracker.wait().await;
    }
}

async fn send(conn: &mut Conn, line: &str) -> io::Result<()> {
    let w = conn.get_mut();
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

/// One line read with a length limit.
enum Line {
    Full,
    /// Longer than allowed; consumed up to its end and discarded.
    TooLong,
    /// The connection closed (a partial last line is dropped).
    Eof,
}

/// Read one `\n`-terminated line into `out` (cleared first), at most `max` bytes.
async fn read_line<R: AsyncBufRead + Unpin>(
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

async fn session(
    ctx: &Ctx,
    tcp: TcpStream,
    remote: SocketAddr,
    token: &CancellationToken,
) -> io::Result<()> {
    // One deadline for everything before login (`limits.login_timeout_secs`), STARTTLS
    // included: it does not move with each line the client sends.
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(ctx.app.config.limits.login_timeout_secs);
    let _ = tcp.set_nodelay(true);
    // The same rule as IMAP's: a client on this machine (its address is loopback) may log in
    // without TLS; anyone else needs STARTTLS first.
    let loopback = crate::net::is_loopback(remote.ip());
    let mut conn: Conn = BufReader::new(Box::new(tcp));
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
    ctx: &Ctx,
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
        let got = tokio::select! {
            _ = token.cancelled() => None,
            r = tokio::time::timeout(COMMAND_IDLE, read_line(conn, MAX_COMMAND_LINE, &mut line)) => Some(r),
        };
        let got = match got {
            None => {
                send(conn, "421 4.3.2 icloud-bridge is shutting down").await?;
                return Ok(None);
            }
            Some(Err(_)) => {
                send(conn, "421 4.4.2 Idle timeout, closing connection").await?;
                return Ok(None);
            }
            Some(Ok(r)) => r?,
        };
        let next = match got {
            Line::Eof => return Ok(None),
            Line::TooLong => Next::Reply("500 5.5.2 Line too long".into()),
            Line::Full => {
                let text = String::from_utf8_lossy(trim_eol(&line)).into_owned();
                let (verb, args) = match text.split_once(' ') {
                    Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                    None => (text.trim().to_ascii_uppercase(), String::new()),
                };
                // The verb only: AUTH arguments are secrets.
                tracing::debug!(%remote, verb = %verb.chars().take(16).collect::<String>(), "smtp command");
                command(ctx, conn, &mut st, remote, &verb, &args).await?
            }
        };
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
                    return Ok(None);
                }
            }
            Next::Close(r) => {
                send(conn, &r).await?;
                return Ok(None);
            }
            Next::StartTls => {
                send(conn, "220 2.0.0 Ready to start TLS").await?;
                // RFC 3207: whatever the client pipelined after STARTTLS is discarded.
                let placeholder: Box<dyn Io> = Box::new(tokio::io::duplex(1).0);
                let inner = std::mem::replace(conn, BufReader::new(placeholder)).into_inner();
                let tls = tokio::time::timeout(HANDSHAKE, ctx.acceptor.accept(inner))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake"))??;
                *conn = BufReader::new(Box::new(tls));
                st.tls = true;
                st.greeted = false;
            }
            Next::Relay(upstream) => {
                send(conn, "235 2.7.0 Authentication successful").await?;
                return Ok(Some(upstream));
            }
        }
    }
}

async fn command(
    ctx: &Ctx,
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
                .app
                .auth
                .check_login(remote.ip(), &user, &pass, "smtp")
                .await
            else {
                return Ok(reply(WRONG_LOCAL));
            };
            drop(pass);
            let Some(acc) = ctx.app.accounts.get(&login.account) else {
                return Ok(Next::Reply(format!(
                    "454 4.7.0 Login {} belongs to account {}, which is not in the configuration",
                    login.name, login.account
                )));
            };
            match upstream_login(&ctx.up, &acc, &st.ehlo).await {
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

// ----- upstream -----

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

/// The stored password, taken from the admission's Basic header (`apple_id:password`), so
/// that it is exactly the credential this attempt was admitted with.
fn password_of(admitted: &Admitted, apple_id: &str) -> Option<String> {
    let v = admitted.authorization.to_str().ok()?;
    let raw = B64.decode(v.strip_prefix("Basic ")?.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    s.strip_prefix(apple_id)?
        .strip_prefix(':')
        .map(str::to_string)
}

/// Log in to iCloud's SMTP for `acc`, recording what Apple said. Returns the upstream
/// connection right after its `235`.
async fn upstream_login(up: &Upstream, acc: &Account, ehlo: &str) -> Result<Conn, UpstreamError> {
    if let Some(e) = acc.held() {
        return Err(e);
    }
    let admitted = acc.admit(Service::Smtp).await?;
    let Some(password) = password_of(&admitted, acc.apple_id()) else {
        return Err(UpstreamError::Unconfigured {
            account: acc.name().to_string(),
        });
    };
    let dialogue = handshake(up, acc.apple_id(), &password, ehlo);
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

async fn start_tls(up: &Upstream, io: Box<dyn Io>) -> Result<Conn, Hs> {
    let name = tls::server_name(&up.url).map_err(Hs::Tls)?;
    let tls = up.connector.connect(name, io).await.map_err(Hs::Tls)?;
    Ok(BufReader::new(Box::new(tls)))
}

/// The upstream dialogue up to AUTH's answer: (code, last line's text, the connection).
async fn handshake(
    up: &Upstream,
    apple_id: &str,
    password: &str,
    ehlo: &str,
) -> Result<(u16, String, Conn), Hs> {
    let implicit = up.url.scheme() == "smtps";
    let tcp = connect(&up.url).await?;
    let mut conn = if implicit {
        start_tls(up, Box::new(tcp)).await?
    } else {
        BufReader::new(Box::new(tcp) as Box<dyn Io>)
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

// ----- relay -----

fn now_ms(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Copy `r` to `w` until EOF (then shut `w` down) or an error, noting activity.
async fn pump<R, W>(mut r: R, mut w: W, seen: Arc<AtomicU64>, start: Instant)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
            return;
        }
        seen.store(now_ms(start), Ordering::Relaxed);
    }
    let _ = w.shutdown().await;
}

/// Relay bytes both ways until either side closes or nothing moves for [`RELAY_IDLE`].
async fn relay(client: Conn, upstream: Conn) -> io::Result<()> {
    // Commands the client pipelined behind AUTH go upstream first.
    let pending_c = client.buffer().to_vec();
    let pending_u = upstream.buffer().to_vec();
    let (cr, mut cw) = tokio::io::split(client.into_inner());
    let (ur, mut uw) = tokio::io::split(upstream.into_inner());
    if !pending_u.is_empty() {
        cw.write_all(&pending_u).await?;
        cw.flush().await?;
    }
    if !pending_c.is_empty() {
        uw.write_all(&pending_c).await?;
        uw.flush().await?;
    }
    let start = Instant::now();
    let seen = Arc::new(AtomicU64::new(0));
    let c2u = pump(cr, uw, seen.clone(), start);
    let u2c = pump(ur, cw, seen.clone(), start);
    let idle = async {
        loop {
            let last = Duration::from_millis(seen.load(Ordering::Relaxed));
            let since = start.elapsed().saturating_sub(last);
            if since >= RELAY_IDLE {
                return;
            }
            tokio::time::sleep(RELAY_IDLE - since).await;
        }
    };
    tokio::pin!(c2u, u2c, idle);
    tokio::select! {
        // iCloud closed (after QUIT, or a 421) and the client's side is shut down: nothing
        // the client sends now could go anywhere.
        _ = &mut u2c => {}
        // The client closed: iCloud may still answer what it sent last.
        _ = &mut c2u => { let _ = tokio::time::timeout(Duration::from_secs(30), &mut u2c).await; }
        _ = &mut idle => tracing::debug!("smtp: relayed session idle; closing"),
    }
    Ok(())
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
        assert!(matches!(
            read_line(&mut r, 10, &mut out).await.unwrap(),
            Line::Eof
        ));
    }

    #[test]
    fn ehlo_names_are_sanitised() {
        assert_eq!(ehlo_name("mail.example.org"), "mail.example.org");
        assert_eq!(ehlo_name("[127.0.0.1]"), "[127.0.0.1]");
        assert_eq!(ehlo_name("bad\rname"), "localhost");
        assert_eq!(ehlo_name(""), "localhost");
    }
}
