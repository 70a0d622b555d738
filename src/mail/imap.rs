//! One IMAP client connection. Before login the bridge answers CAPABILITY, STARTTLS, LOGIN,
//! AUTHENTICATE PLAIN (SASL-IR or continuation), NOOP and LOGOUT itself, reading commands with
//! `imap-codec`; after a local login it opens the upstream session and relays bytes both ways
//! untouched (IDLE, literals, CONDSTORE... all pass), until either side closes, the session is
//! idle for 30 minutes, or the bridge shuts down. Passwords are never logged.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer};
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::LiteralMode;
use imap_codec::{AuthenticateDataCodec, CommandCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::mail::relay::{Relay, Side};
use crate::mail::Mail;
use crate::net::BoxIo;
use crate::secret::Secret;
use crate::upstream::imap as upstream;

/// Largest command accepted before login (LOGIN with long names fits easily).
const MAX_MESSAGE: u32 = 16 * 1024;
/// How long a client may take per command before login (the whole dialogue before login
/// also has a total deadline, `limits.login_timeout_secs`).
const PRE_AUTH_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// A logged-in session with no traffic either way for this long is closed (RFC 3501's
/// autologout minimum; IDLE clients re-issue IDLE every 29 minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a session ends before relaying.
enum End {
    /// The client went away, timed out or broke the protocol: just close.
    Close,
}

/// What a command before login asks for, owned (the codec's values borrow its buffer).
enum Pre {
    Capability,
    Noop,
    Logout,
    StartTls,
    Login {
        user: String,
        pass: Secret,
    },
    Authenticate {
        plain: bool,
        initial: Option<Vec<u8>>,
    },
    /// Valid IMAP, but not before login.
    Other(&'static str),
}

/// The client side: the connection, and what was read but not yet parsed.
struct Client {
    io: BoxIo,
    /// Bytes read from the client, fed to the codec one at a time so that anything after
    /// the login command stays here, in order, for the upstream.
    pending: VecDeque<u8>,
    frag: Fragmentizer,
    tls: bool,
    remote: SocketAddr,
}

/// Serve one connection until it ends.
pub async fn serve(
    front: &Mail,
    stream: TcpStream,
    remote: SocketAddr,
    implicit_tls: bool,
    token: CancellationToken,
) {
    // One deadline for everything before login (`limits.login_timeout_secs`), TLS
    // included: it does not move with each line the client sends.
    let deadline = tokio::time::Instant::now() + front.login_timeout;
    let io: BoxIo = if implicit_tls {
        let until = deadline.min(tokio::time::Instant::now() + HANDSHAKE_TIMEOUT);
        match tokio::time::timeout_at(until, front.acceptor.accept(stream)).await {
            Ok(Ok(s)) => Box::new(s),
            _ => {
                tracing::debug!(%remote, "IMAPS handshake failed");
                return;
            }
        }
    } else {
        Box::new(stream)
    };
    let mut client = Client {
        io,
        pending: VecDeque::new(),
        frag: Fragmentizer::new(MAX_MESSAGE),
        tls: implicit_tls,
        remote,
    };
    tokio::select! {
        _ = token.cancelled() => {
            let _ = client.io.write_all(b"* BYE icloud-bridge is shutting down\r\n").await;
            let _ = client.io.shutdown().await;
        }
        r = tokio::time::timeout_at(deadline, pre_auth(front, &mut client)) => match r {
            Ok(Ok(up)) => relay(client, up, &token).await,
            Ok(Err(End::Close)) => {
                let _ = client.io.shutdown().await;
            }
            Err(_) => {
                tracing::debug!(%remote, "IMAP client did not log in within limits.login_timeout_secs");
                // A client that reads nothing must not hold the session open either.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    let _ = client
                        .io
                        .write_all(b"* BYE No login in time; closing the connection\r\n")
                        .await;
                    let _ = client.io.shutdown().await;
                })
                .await;
            }
        },
    }
}

/// LOGIN and AUTHENTICATE need TLS, except from loopback (design).
fn login_allowed(tls: bool, remote: std::net::IpAddr) -> bool {
    tls || crate::net::is_loopback(remote)
}

impl Client {
    fn login_allowed(&self) -> bool {
        login_allowed(self.tls, self.remote.ip())
    }

    fn capabilities(&self) -> String {
        let mut c = String::from("IMAP4rev1");
        if !self.tls {
            c.push_str(" STARTTLS");
        }
        if self.login_allowed() {
            c.push_str(" AUTH=PLAIN SASL-IR");
        } else {
            c.push_str(" LOGINDISABLED");
        }
        c
    }

    async fn send(&mut self, text: &str) -> Result<(), End> {
        self.io
            .write_all(text.as_bytes())
            .await
            .map_err(|_| End::Close)?;
        self.io.flush().await.map_err(|_| End::Close)
    }

    /// Read one whole message (a command, or an AUTHENTICATE line), answering synchronising
    /// literals with a continuation.
    async fn next_message(&mut self) -> Result<(), End> {
        loop {
            match self.frag.progress() {
                Some(FragmentInfo::Line {
                    announcement: Some(a),
                    ..
                }) => {
                    if a.mode == LiteralMode::Sync {
                        if a.length > MAX_MESSAGE {
                            let tag = self
                                .frag
                                .decode_tag()
                                .map(|t| t.inner().to_string())
                                .unwrap_or_else(|| "*".into());
                            self.frag.skip_message();
                            self.send(&format!("{tag} BAD Literal too large\r\n"))
                                .await?;
                            continue;
                        }
                        self.send("+ Ready for literal data\r\n").await?;
                    }
                }
                Some(_) => {
                    if self.frag.is_message_complete() {
                        return Ok(());
                    }
                }
                None => match self.pending.pop_front() {
                    Some(b) => self.frag.enqueue_bytes(&[b]),
                    None => {
                        let mut buf = [0u8; 4096];
                        let n = tokio::time::timeout(PRE_AUTH_TIMEOUT, self.io.read(&mut buf))
                            .await
                            .map_err(|_| End::Close)?
                            .map_err(|_| End::Close)?;
                        if n == 0 {
                            return Err(End::Close);
                        }
                        self.pending.extend(&buf[..n]);
                    }
                },
            }
        }
    }

    /// The current message as a command: (tag, what it asks), or the BAD to answer.
    fn decode_command(&self) -> Result<(String, Pre), String> {
        let cmd = match self.frag.decode_message(&CommandCodec::default()) {
            Ok(c) => c,
            Err(_) => {
                let tag = self
                    .frag
                    .decode_tag()
                    .map(|t| t.inner().to_string())
                    .unwrap_or_else(|| "*".into());
                return Err(format!("{tag} BAD Could not parse the command\r\n"));
            }
        };
        let tag = cmd.tag.inner().to_string();
        let pre = match cmd.body {
            CommandBody::Capability => Pre::Capability,
            CommandBody::Noop => Pre::Noop,
            CommandBody::Logout => Pre::Logout,
            CommandBody::StartTLS => Pre::StartTls,
            CommandBody::Login { username, password } => Pre::Login {
                user: String::from_utf8_lossy(username.as_ref()).into_owned(),
                pass: Secret::new(
                    String::from_utf8_lossy(password.declassify().as_ref()).into_owned(),
                ),
            },
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => Pre::Authenticate {
                plain: mechanism == AuthMechanism::Plain,
                initial: initial_response.map(|r| r.declassify().to_vec()),
            },
            other => Pre::Other(other.name()),
        };
        Ok((tag, pre))
    }

    async fn starttls(&mut self, front: &Mail) -> Result<(), End> {
        // Anything the client sent after STARTTLS in plaintext is dropped (RFC 3501 6.2.1).
        self.pending.clear();
        self.frag = Fragmentizer::new(MAX_MESSAGE);
        let io = std::mem::replace(&mut self.io, Box::new(tokio::io::duplex(1).0));
        let tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, front.acceptor.accept(io))
            .await
            .map_err(|_| End::Close)?
            .map_err(|_| End::Close)?;
        self.io = Box::new(tls);
        self.tls = true;
        Ok(())
    }

    /// The SASL PLAIN response of an AUTHENTICATE without an initial response.
    async fn sasl_response(&mut self, tag: &str) -> Result<Option<Vec<u8>>, End> {
        self.send("+ \r\n").await?;
        self.next_message().await?;
        match self.frag.decode_message(&AuthenticateDataCodec::default()) {
            Ok(AuthenticateData::Continue(data)) => Ok(Some(data.declassify().to_vec())),
            Ok(AuthenticateData::Cancel) => {
                self.send(&format!("{tag} BAD Authentication cancelled\r\n"))
                    .await?;
                Ok(None)
            }
            Err(_) => {
                self.send(&format!("{tag} BAD Invalid SASL response\r\n"))
                    .await?;
                Ok(None)
            }
        }
    }

    /// AUTHENTICATE PLAIN: the user and password from the initial response or one asked for;
    /// `None` when the exchange was cancelled or bad (answered already).
    async fn authenticate_plain(
        &mut self,
        tag: &str,
        initial: Option<Vec<u8>>,
    ) -> Result<Option<(String, Secret)>, End> {
        let data = match initial {
            Some(d) => d,
            None => match self.sasl_response(tag).await? {
                Some(d) => d,
                None => return Ok(None),
            },
        };
        if let Some(x) = parse_plain(&data) {
            return Ok(Some(x));
        }
        self.send(&format!("{tag} BAD Invalid SASL PLAIN response\r\n"))
            .await?;
        Ok(None)
    }
}

/// `authzid \0 authcid \0 password`, with an empty authzid or one equal to authcid.
fn parse_plain(data: &[u8]) -> Option<(String, Secret)> {
    let mut parts = data.split(|&b| b == 0);
    let authz = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() || (!authz.is_empty() && authz != user) {
        return None;
    }
    Some((
        String::from_utf8(user.to_vec()).ok()?,
        Secret::new(String::from_utf8(pass.to_vec()).ok()?),
    ))
}

/// The dialogue before login; returns the logged-in upstream session.
async fn pre_auth(front: &Mail, c: &mut Client) -> Result<upstream::Session, End> {
    c.send(&format!(
        "* OK [CAPABILITY {}] icloud-bridge IMAP ready\r\n",
        c.capabilities()
    ))
    .await?;
    loop {
        c.next_message().await?;
        let (tag, pre) = match c.decode_command() {
            Ok(x) => x,
            Err(bad) => {
                c.send(&bad).await?;
                continue;
            }
        };
        let Some((user, pass)) = answer_before_login(front, c, &tag, pre).await? else {
            continue;
        };
        if let Some(up) = local_login(front, c, &tag, &user, &pass).await? {
            return Ok(up);
        }
    }
}

/// Answers one command before login; returns the user and password of a LOGIN or
/// AUTHENTICATE to check, `None` when the command was answered here.
async fn answer_before_login(
    front: &Mail,
    c: &mut Client,
    tag: &str,
    pre: Pre,
) -> Result<Option<(String, Secret)>, End> {
    match pre {
        Pre::Capability => {
            let caps = c.capabilities();
            c.send(&format!(
                "* CAPABILITY {caps}\r\n{tag} OK CAPABILITY completed\r\n"
            ))
            .await?;
        }
        Pre::Noop => c.send(&format!("{tag} OK NOOP completed\r\n")).await?,
        Pre::Logout => {
            c.send(&format!(
                "* BYE Logging out\r\n{tag} OK LOGOUT completed\r\n"
            ))
            .await?;
            return Err(End::Close);
        }
        Pre::StartTls if c.tls => {
            c.send(&format!("{tag} BAD TLS is already active\r\n"))
                .await?;
        }
        Pre::StartTls => {
            c.send(&format!("{tag} OK Begin TLS negotiation now\r\n"))
                .await?;
            c.starttls(front).await?;
        }
        Pre::Other(name) => {
            c.send(&format!("{tag} BAD {name} is not allowed before login\r\n"))
                .await?;
        }
        Pre::Login { .. } | Pre::Authenticate { .. } if !c.login_allowed() => {
            c.send(&format!(
                "{tag} NO [PRIVACYREQUIRED] Use STARTTLS before logging in\r\n"
            ))
            .await?;
        }
        Pre::Login { user, pass } => return Ok(Some((user, pass))),
        Pre::Authenticate { plain: false, .. } => {
            c.send(&format!(
                "{tag} NO Unsupported authentication mechanism\r\n"
            ))
            .await?;
        }
        Pre::Authenticate {
            plain: true,
            initial,
        } => return c.authenticate_plain(tag, initial).await,
    }
    Ok(None)
}

/// Check the local login, then log in upstream. `None`: answered, stay before login.
async fn local_login(
    front: &Mail,
    c: &mut Client,
    tag: &str,
    user: &str,
    pass: &Secret,
) -> Result<Option<upstream::Session>, End> {
    let ip = c.remote.ip();
    let Some(login) = front
        .auth
        .check_login(ip, user, pass.expose(), "imap")
        .await
    else {
        c.send(&format!(
            "{tag} NO [AUTHENTICATIONFAILED] Authentication failed\r\n"
        ))
        .await?;
        return Ok(None);
    };
    let Some(account) = front.accounts.get(&login.account) else {
        c.send(&format!(
            "{tag} NO [UNAVAILABLE] Login {} belongs to account {}, which is not in the configuration\r\n",
            login.name, login.account
        ))
        .await?;
        return Ok(None);
    };
    match upstream::open(&front.imap, &account).await {
        Ok(up) => {
            tracing::info!(login = %login.name, account = account.name(), %ip, "IMAP session started");
            c.send(&format!(
                "{tag} OK [CAPABILITY {}] Logged in\r\n",
                up.capabilities.join(" ")
            ))
            .await?;
            Ok(Some(up))
        }
        Err(e) => {
            c.send(&e.imap_reply(tag)).await?;
            Ok(None)
        }
    }
}

/// Relay bytes both ways, untouched, after handing over what each side already sent; ends
/// at once when the bridge shuts down.
async fn relay(mut client: Client, up: upstream::Session, token: &CancellationToken) {
    let early: Vec<u8> = client.pending.drain(..).collect();
    let relay = Relay {
        name: "IMAP",
        idle: IDLE_TIMEOUT,
        buffer: 64 * 1024,
        stop: Some(token),
    };
    let client = Side {
        io: client.io,
        early,
    };
    let upstream = Side {
        io: up.io,
        early: up.pending,
    };
    if let Err(e) = relay.run(client, upstream).await {
        tracing::debug!(error = %e, "IMAP relay ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_needs_tls_except_on_loopback() {
        assert!(login_allowed(false, "127.0.0.1".parse().unwrap()));
        assert!(login_allowed(false, "::1".parse().unwrap()));
        assert!(!login_allowed(false, "192.168.1.20".parse().unwrap()));
        assert!(login_allowed(true, "192.168.1.20".parse().unwrap()));
    }

    #[test]
    fn sasl_plain() {
        let (u, p) = parse_plain(b"\0phone\0pw").unwrap();
        assert_eq!((u.as_str(), p.expose()), ("phone", "pw"));
        assert!(parse_plain(b"phone\0phone\0pw").is_some());
        assert!(parse_plain(b"other\0phone\0pw").is_none());
        assert!(parse_plain(b"phone\0pw").is_none());
        assert!(parse_plain(b"\0a\0b\0c").is_none());
        assert!(parse_plain(b"").is_none());
    }
}
