//! The mail front ends: IMAP and SMTP submission ([`smtp`]). IMAP: `imap_listen` (plaintext, STARTTLS) and `imaps_listen` (implicit
//! TLS). Before login the bridge answers the client itself ([`imap`]); after a local login it
//! logs in to iCloud with the stored app-specific password ([`upstream`]) and relays bytes both
//! ways untouched. Started next to the HTTP listener and stopped by the same token.

pub mod imap;
pub mod smtp;
pub mod upstream;

/// TLS is shared with the HTTPS listener; kept under this name for the mail modules.
pub use crate::tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;

/// A client or upstream connection, plaintext or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Most IMAP connections served at once (both listeners together); more are refused at once
/// (as are more than `limits.max_connections_per_ip` from one address, counted over every
/// front end).
pub const MAX_CONNECTIONS: usize = 256;
/// How long open sessions get to end after a shutdown request.
const DRAIN: Duration = Duration::from_secs(5);

/// What every IMAP connection shares.
pub struct Front {
    pub app: Arc<App>,
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// The way to iCloud's IMAP server.
    pub up: upstream::Upstream,
    limit: Arc<tokio::sync::Semaphore>,
}

/// The bound mail listeners.
#[derive(Default)]
pub struct MailListeners {
    /// `imap_listen` as bound (plaintext + STARTTLS).
    pub imap: Option<SocketAddr>,
    /// `imaps_listen` as bound (implicit TLS).
    pub imaps: Option<SocketAddr>,
    pub tasks: Vec<JoinHandle<()>>,
}

/// Bind a mail listener (`key` names the config key in errors).
pub(crate) fn bind(addr: SocketAddr, key: &str) -> Result<(TcpListener, SocketAddr), String> {
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))?;
    let listener = TcpListener::from_std(std_listener)
        .map_err(|e| format!("cannot listen on {addr} ({key}): {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the {key} address: {e}"))?;
    Ok((listener, local))
}

fn front(app: &Arc<App>) -> Result<Front, String> {
    let server_tls = tls::server_config(&app.config.server)?;
    Ok(Front {
        app: app.clone(),
        acceptor: tokio_rustls::TlsAcceptor::from(server_tls),
        up: upstream::Upstream::new(app)?,
        limit: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
    })
}

/// Log in to iCloud's IMAP once with `account`'s stored password (`icloud-bridge check`);
/// needs no server certificate, so it writes nothing to `certs_dir`.
pub async fn check_imap(
    app: &Arc<App>,
    account: &crate::accounts::Account,
) -> Result<(), crate::upstream::error::UpstreamError> {
    let up = upstream::Upstream::new(app).map_err(|detail| {
        crate::upstream::error::UpstreamError::Unreachable {
            kind: crate::upstream::error::Unreachable::Tls,
            detail,
        }
    })?;
    upstream::check(&up, account).await
}

/// Bind `imap_listen` and `imaps_listen` (if set) and start serving; must run inside a
/// tokio runtime.
pub fn start(app: &Arc<App>, token: &CancellationToken) -> Result<MailListeners, String> {
    let server = &app.config.server;
    if server.imap_listen.is_none() && server.imaps_listen.is_none() {
        return Ok(MailListeners::default());
    }
    let front = Arc::new(front(app)?);
    let mut out = MailListeners::default();
    // Test each stored credential against iCloud's IMAP server once at start-up.
    for acc in app.accounts.snapshot().values() {
        if !acc.has_credential() {
            continue;
        }
        let (front, acc, token) = (front.clone(), acc.clone(), token.clone());
        out.tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = upstream::check(&front.up, &acc) => {}
            }
        }));
    }
    for (addr, implicit) in [(server.imap_listen, false), (server.imaps_listen, true)] {
        let Some(addr) = addr else { continue };
        let key = if implicit {
            "server.imaps_listen"
        } else {
            "server.imap_listen"
        };
        let (listener, local) = bind(addr, key)?;
        tracing::info!(addr = %local, tls = if implicit { "implicit" } else { "starttls" }, "IMAP listening");
        if implicit {
            out.imaps = Some(local);
        } else {
            out.imap = Some(local);
        }
        out.tasks.push(tokio::spawn(accept_loop(
            front.clone(),
            listener,
            implicit,
            token.clone(),
        )));
    }
    Ok(out)
}

async fn accept_loop(
    front: Arc<Front>,
    listener: TcpListener,
    implicit: bool,
    token: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, remote) = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "IMAP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Over a limit: refused at once (a BYE where that needs no TLS), never queued.
        let front_name = if implicit { "imaps" } else { "imap" };
        let held = front
            .app
            .conns
            .try_open(remote.ip(), front_name)
            .zip(front.limit.clone().try_acquire_owned().ok());
        let Some(held) = held else {
            if !implicit {
                let _ = stream.try_write(b"* BYE Too many connections from your address; close some or try again later\r\n");
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let token = token.clone();
        tracker.spawn(async move {
            let _held = held;
            imap::serve(front, stream, remote, implicit, token).await;
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("IMAP sessions did not end in time; dropping them");
    }
}
