//! The mail front ends: IMAP on `imap_listen` (plaintext, STARTTLS) and `imaps_listen`
//! (implicit TLS), and SMTP submission on `smtp_listen` ([`smtp`]). Before login the bridge
//! answers the client itself ([`imap`], [`smtp`]); after a local login it logs in to iCloud
//! with the stored app-specific password ([`crate::upstream::imap`],
//! [`crate::upstream::smtp`]) and relays bytes both ways untouched ([`relay`]). Accepting,
//! the overload policy and the drain are the shared skeleton of [`crate::frontend`]; started
//! next to the HTTP listener and stopped by the same token. What the sessions need of the
//! bridge is [`Mail`], not the whole application.

pub mod imap;
pub mod relay;
pub mod smtp;

/// TLS is shared with the HTTPS listener; kept under this name for the mail modules.
pub use crate::start::StartError;
use crate::tls;

pub use crate::net::{BoxIo, Io};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::Accounts;
use crate::auth::LocalAuth;
use crate::config::Config;
use crate::frontend::{self, Protocol};
use crate::limits::ConnLimit;
use crate::upstream::client::UpstreamStats;
use crate::upstream::imap::ImapClient;
use crate::upstream::smtp::SmtpClient;

/// Most IMAP connections served at once (both listeners together), and most SMTP sessions;
/// more are refused at once (as are more than `limits.max_connections_per_ip` from one
/// address, counted over every front end).
pub const MAX_CONNECTIONS: usize = 256;

/// What every mail session shares: the accounts, the local logins, the connection counts,
/// the server certificate and the two clients that talk to iCloud.
pub struct Mail {
    pub accounts: Arc<Accounts>,
    pub auth: Arc<LocalAuth>,
    /// Connections per address, every front end together.
    pub conns: Arc<ConnLimit>,
    /// `limits.login_timeout_secs`: the whole dialogue before login.
    pub login_timeout: Duration,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The way to iCloud's IMAP server.
    pub imap: Arc<ImapClient>,
    /// The way to iCloud's SMTP server.
    pub smtp: Arc<SmtpClient>,
}

impl Mail {
    /// The server certificate comes from `certs_dir` (made there if missing); logins to
    /// iCloud are counted in `stats`.
    pub fn new(
        config: &Config,
        accounts: Arc<Accounts>,
        auth: Arc<LocalAuth>,
        conns: Arc<ConnLimit>,
        stats: Arc<UpstreamStats>,
    ) -> Result<Mail, StartError> {
        Ok(Mail {
            accounts,
            auth,
            conns,
            login_timeout: Duration::from_secs(config.limits.login_timeout_secs),
            acceptor: tokio_rustls::TlsAcceptor::from(
                tls::server_config(&config.server).map_err(StartError::Tls)?,
            ),
            imap: Arc::new(ImapClient::new(&config.upstream)?.with_stats(stats.clone())),
            smtp: Arc::new(SmtpClient::new(&config.upstream)?.with_stats(stats)),
        })
    }
}

/// The bound mail listeners.
#[derive(Default)]
pub struct MailListeners {
    /// `imap_listen` as bound (plaintext + STARTTLS).
    pub imap: Option<SocketAddr>,
    /// `imaps_listen` as bound (implicit TLS).
    pub imaps: Option<SocketAddr>,
    /// `smtp_listen` as bound.
    pub smtp: Option<SocketAddr>,
    /// The accept loops; each ends after the token is cancelled and its sessions drained.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Does `config` ask for any mail listener?
pub fn wanted(config: &Config) -> bool {
    let s = &config.server;
    s.imap_listen.is_some() || s.imaps_listen.is_some() || s.smtp_listen.is_some()
}

/// Bind `imap_listen`, `imaps_listen` and `smtp_listen` (those set), test each stored
/// credential against the mail servers once, and serve until `token` is cancelled; must run
/// inside a tokio runtime.
pub fn start(
    mail: Arc<Mail>,
    config: &Config,
    token: &CancellationToken,
) -> Result<MailListeners, StartError> {
    let server = &config.server;
    let mut out = MailListeners::default();
    let mut imap = Vec::new();
    for (addr, implicit) in [(server.imap_listen, false), (server.imaps_listen, true)] {
        let Some(addr) = addr else { continue };
        let key = if implicit {
            "server.imaps_listen"
        } else {
            "server.imap_listen"
        };
        let (listener, local) = frontend::bind(addr, key)?;
        tracing::info!(addr = %local, tls = if implicit { "implicit" } else { "starttls" }, "IMAP listening");
        if implicit {
            out.imaps = Some(local);
        } else {
            out.imap = Some(local);
        }
        imap.push((listener, implicit));
    }
    let smtp = match server.smtp_listen {
        Some(addr) => {
            let (listener, local) = frontend::bind(addr, "server.smtp_listen")?;
            tracing::info!(addr = %local, "SMTP submission listening");
            out.smtp = Some(local);
            vec![(listener, ())]
        }
        None => Vec::new(),
    };
    out.tasks
        .extend(crate::accounts::startup::spawn_mail_checks(
            &mail.accounts,
            (!imap.is_empty()).then(|| mail.imap.clone()),
            (!smtp.is_empty()).then(|| mail.smtp.clone()),
            token,
        ));
    if !imap.is_empty() {
        out.tasks.push(tokio::spawn(frontend::run(
            Arc::new(ImapFront(mail.clone())),
            imap,
            mail.conns.clone(),
            MAX_CONNECTIONS,
            token.clone(),
        )));
    }
    if !smtp.is_empty() {
        out.tasks.push(tokio::spawn(frontend::run(
            Arc::new(SmtpFront(mail.clone())),
            smtp,
            mail.conns.clone(),
            MAX_CONNECTIONS,
            token.clone(),
        )));
    }
    Ok(out)
}

/// IMAP on the shared skeleton; the tag says whether TLS is implicit.
struct ImapFront(Arc<Mail>);

impl Protocol for ImapFront {
    type Tag = bool;

    fn name(&self, implicit: bool) -> &'static str {
        if implicit {
            "imaps"
        } else {
            "imap"
        }
    }

    /// A `* BYE` where that needs no TLS; on the TLS port the connection just closes.
    fn refuse(&self, stream: TcpStream, implicit: bool, _: &TaskTracker) {
        if !implicit {
            let _ = stream.try_write(
                b"* BYE Too many connections from your address; close some or try again later\r\n",
            );
        }
    }

    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        implicit: bool,
        token: CancellationToken,
    ) {
        imap::serve(&self.0, stream, remote, implicit, token).await;
    }
}

/// SMTP submission on the shared skeleton.
struct SmtpFront(Arc<Mail>);

impl Protocol for SmtpFront {
    type Tag = ();

    fn name(&self, _: ()) -> &'static str {
        "smtp"
    }

    /// A `421` (RFC 5321 4.3.2: the service is not available), then close.
    fn refuse(&self, stream: TcpStream, _: (), _: &TaskTracker) {
        let _ = stream
            .try_write(b"421 4.7.0 Too many connections from your address; try again later\r\n");
    }

    async fn serve(
        self: Arc<Self>,
        stream: TcpStream,
        remote: SocketAddr,
        _: (),
        token: CancellationToken,
    ) {
        if let Err(e) = smtp::session(&self.0, stream, remote, &token).await {
            tracing::debug!(%remote, error = %e, "smtp: session ended with an error");
        }
    }
}
