//! The HTTP listener, and the HTTPS one on `server.tls_listen`: accepts connections, serves
//! them with hyper (HTTP/1.1 and h2c; over TLS, h2 or HTTP/1.1 by ALPN), caps concurrent
//! connections (both listeners together), runs background tasks, and shuts down gracefully.
//! The mail listeners ([`crate::mail`]) start and stop with it, on the same token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::server::app::{self, App};

/// Most connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 1024;
/// How long in-flight requests get to finish after a shutdown request.
const DRAIN: Duration = Duration::from_secs(10);
/// How long a client gets to finish the TLS handshake on `tls_listen`.
const TLS_HANDSHAKE: Duration = Duration::from_secs(10);

/// A running bridge.
pub struct Running {
    pub addr: SocketAddr,
    /// The HTTPS listener's address, when `server.tls_listen` is set.
    pub tls_addr: Option<SocketAddr>,
    /// The SMTP submission listener's address, when `server.smtp_listen` is set.
    pub smtp_addr: Option<SocketAddr>,
    /// `imap_listen` as bound (plaintext + STARTTLS), if configured.
    pub imap_addr: Option<SocketAddr>,
    /// `imaps_listen` as bound (implicit TLS), if configured.
    pub imaps_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    token: CancellationToken,
    task: JoinHandle<()>,
    /// The notifier, which saves state.json once more when it stops.
    notifier: Option<JoinHandle<()>>,
    /// Mail listeners (IMAP and SMTP), which drain their sessions after the token is cancelled.
    mail: Vec<JoinHandle<()>>,
}

impl Running {
    /// Ask the server to stop and wait for it (in-flight requests get up to 10 s).
    pub async fn stop(self) {
        self.token.cancel();
        self.wait().await;
    }

    /// Wait until the server stops (after `stop` or a shutdown signal given to `start`).
    pub async fn wait(self) {
        let _ = self.task.await;
        for t in self.mail {
            let _ = t.await;
        }
        if let Some(n) = self.notifier {
            let _ = n.await;
        }
    }

    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }
}

/// Bind `config.server.listen` and start serving.
pub async fn start(config: Config) -> Result<Running, String> {
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let app = Arc::new(App::new(config)?);
    start_with(app, listener)
}

/// Serve `app` on an already bound listener.
pub fn start_with(app: Arc<App>, listener: TcpListener) -> Result<Running, String> {
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the listen address: {e}"))?;
    let token = CancellationToken::new();
    let https = bind_https(&app)?;
    let tls_addr = https.as_ref().map(|h| h.addr);
    let smtp = crate::mail::smtp::spawn(&app, &token)?;
    let mail = crate::mail::start(&app, &token).inspect_err(|_| token.cancel())?;
    let notifier = spawn_background(&app, &token);
    let task = tokio::spawn(accept_loop(app.clone(), listener, https, token.clone()));
    tracing::info!(%addr, "icloud-bridge listening");
    if let Some(tls) = tls_addr {
        tracing::info!(addr = %tls, "icloud-bridge listening for HTTPS");
    }
    if let Some(token) = app.admin.setup_token() {
        let mut shown = addr;
        if shown.ip().is_unspecified() {
            shown.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        tracing::warn!(
            "no client login exists yet: open http://{shown}/setup?token={token} to create the first login (or run `icloud-bridge client add NAME --admin`)"
        );
    }
    Ok(Running {
        addr,
        tls_addr,
        smtp_addr: smtp.as_ref().map(|s| s.addr),
        imap_addr: mail.imap,
        imaps_addr: mail.imaps,
        app,
        token,
        task,
        notifier,
        mail: smtp.into_iter().map(|s| s.task).chain(mail.tasks).collect(),
    })
}

/// The bound `tls_listen` and its TLS configuration.
struct Https {
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
}

/// Bind `server.tls_listen` (if set) with the certificate from `certs_dir`, made there first
/// if none is there.
fn bind_https(app: &Arc<App>) -> Result<Option<Https>, String> {
    let Some(listen) = app.config.server.tls_listen else {
        return Ok(None);
    };
    let config = crate::tls::https_config(&app.config.server)
        .map_err(|e| format!("server.tls_listen: {e}"))?;
    let (listener, addr) = crate::mail::bind(listen, "server.tls_listen")?;
    app.set_tls_addr(addr);
    Ok(Some(Https {
        listener,
        addr,
        acceptor: tokio_rustls::TlsAcceptor::from(config),
    }))
}

/// The next connection on `listener`; never, without one.
async fn accept_on(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// A client that speaks plain HTTP to the TLS port (`http://host:8443/`) gets a readable
/// 400 rather than TLS bytes; the caller then drops the connection.
async fn refuse_plain_http(
    mut stream: tokio::net::TcpStream,
) -> std::io::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut first = [0u8; 1];
    let n = stream.peek(&mut first).await?;
    // A TLS connection starts with a handshake record (0x16); an HTTP request with a method.
    if n == 0 || !first[0].is_ascii_uppercase() {
        return Ok(stream);
    }
    let body = "This port speaks HTTPS: use an https:// address.\n";
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "plain HTTP on the TLS port",
    ))
}

async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    https: Option<Https>,
    token: CancellationToken,
) {
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .max_buf_size(256 * 1024);
    let builder = Arc::new(builder);
    loop {
        let permit = tokio::select! {
            _ = token.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (accepted, tls) = tokio::select! {
            _ = token.cancelled() => break,
            r = listener.accept() => (r, false),
            r = accept_on(https.as_ref().map(|h| &h.listener)) => (r, true),
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, tls, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        match https.as_ref().filter(|_| tls) {
            None => {
                let svc = service_fn(move |req| app::service(app.clone(), remote, req));
                let conn = builder
                    .serve_connection(TokioIo::new(stream), svc)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, %remote, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(h) => {
                // The handshake runs in the connection's own task: a slow or silent client
                // never holds up the accept loop.
                let acceptor = h.acceptor.clone();
                let watcher = graceful.watcher();
                let builder = builder.clone();
                let token = token.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE, async {
                        let stream = refuse_plain_http(stream).await?;
                        acceptor.accept(stream).await
                    });
                    let stream = tokio::select! {
                        _ = token.cancelled() => return,
                        r = handshake => match r {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %remote, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                return;
                            }
                        },
                    };
                    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(app::ViaTls);
                        app::service(app.clone(), remote, req)
                    });
                    let conn = builder
                        .serve_connection(TokioIo::new(stream), svc)
                        .into_owned();
                    if let Err(e) = watcher.watch(conn).await {
                        tracing::debug!(error = %e, %remote, "TLS connection ended with an error");
                    }
                });
            }
        }
    }
    drop(listener);
    drop(https);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections closed"),
        _ = tokio::time::sleep(DRAIN) => tracing::warn!("shutdown deadline reached; dropping open connections"),
    }
}

/// Start-up credential test, the watcher that picks up a new password within 1 s, and the
/// notifier (log lines, webhook, state.json).
fn spawn_background(app: &Arc<App>, token: &CancellationToken) -> Option<JoinHandle<()>> {
    let notifier = crate::server::notify::spawn(app, token);
    // Test each account's credential once at start-up by learning its layout.
    for acc in app.accounts().values() {
        let app = app.clone();
        let acc = acc.clone();
        let token = token.clone();
        tokio::spawn(async move {
            if !acc.has_credential() {
                tracing::warn!(
                    account = acc.name(),
                    "no app-specific password is stored; run `icloud-bridge reconnect`"
                );
                return;
            }
            tokio::select! {
                _ = token.cancelled() => {}
                r = crate::dav::proxy::ensure_learned(&app, &acc) => match r {
                    Ok(_) => tracing::info!(account = acc.name(), "upstream accepted the stored password"),
                    Err(e) => tracing::warn!(account = acc.name(), error = %e, "start-up check failed"),
                },
            }
        });
    }
    // Poll the vault cheaply; a change (reconnect, status page) takes effect at once.
    let app = app.clone();
    let token = token.clone();
    tokio::spawn(async move {
        let mut last = app.vault.fingerprint();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = app.vault.fingerprint();
            if now != last {
                last = now;
                tracing::info!("the stored app-specific password changed; using the new one");
                let a = app.clone();
                let _ = tokio::task::spawn_blocking(move || a.reload_credentials()).await;
            }
        }
    });
    notifier
}
