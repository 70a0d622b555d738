//! The HTTP listener, and the HTTPS one on `server.tls_listen`: accepts connections, serves
//! them with hyper (HTTP/1.1 and h2c; over TLS, h2 or HTTP/1.1 by ALPN), caps concurrent
//! connections (per address over every front end, and in total), closes connections that
//! do not send a whole request head in time or stay idle, runs background tasks, and shuts
//! down gracefully.
//! The mail listeners ([`crate::mail`]) start and stop with it, on the same token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::app::App;
use crate::body::Body;
use crate::config::Config;
use crate::limits::ClientAddr;
use crate::server::router;
use crate::start::StartError;

/// Most connections served at once (both listeners together); more are refused at once.
const MAX_CONNECTIONS: usize = 1024;
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
    /// Ask the server to stop and wait for it (in-flight requests get up to [`crate::frontend::DRAIN`]).
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
pub async fn start(config: Config) -> Result<Running, StartError> {
    if let Some((key, addr)) = config.server.plaintext_on_lan() {
        return Err(StartError::PlaintextOnLan { key, addr });
    }
    let listen = config.server.listen;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Listen {
            key: "server.listen".into(),
            addr: listen,
            source,
        })?;
    let app = Arc::new(App::new(config)?);
    start_with(app, listener)
}

/// Serve `app` on an already bound listener.
pub fn start_with(app: Arc<App>, listener: TcpListener) -> Result<Running, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        key: "server.listen".into(),
        addr: app.config.server.listen,
        source,
    })?;
    let token = CancellationToken::new();
    let https = bind_https(&app)?;
    let tls_addr = https.as_ref().map(|h| h.addr);
    let mail = start_mail(&app, &token).inspect_err(|_| token.cancel())?;
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
        smtp_addr: mail.smtp,
        imap_addr: mail.imap,
        imaps_addr: mail.imaps,
        app,
        token,
        task,
        notifier,
        mail: mail.tasks,
    })
}

/// Start the mail front ends (those configured) with what they need of `app`.
fn start_mail(
    app: &Arc<App>,
    token: &CancellationToken,
) -> Result<crate::mail::MailListeners, StartError> {
    if !crate::mail::wanted(&app.config) {
        return Ok(crate::mail::MailListeners::default());
    }
    let mail = crate::mail::Mail::new(
        &app.config,
        app.accounts.clone(),
        app.auth.clone(),
        app.conns.clone(),
        app.upstream.stats.clone(),
    )?;
    crate::mail::start(Arc::new(mail), &app.config, token)
}

/// The bound `tls_listen` and its TLS configuration.
struct Https {
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
}

/// Bind `server.tls_listen` (if set) with the certificate from `certs_dir`, made there first
/// if none is there.
fn bind_https(app: &Arc<App>) -> Result<Option<Https>, StartError> {
    let Some(listen) = app.config.server.tls_listen else {
        return Ok(None);
    };
    let config = crate::tls::https_config(&app.config.server)
        .map_err(|e| StartError::Tls(format!("server.tls_listen: {e}")))?;
    let (listener, addr) = crate::frontend::bind(listen, "server.tls_listen")?;
    app.set_tls_addr(addr);
    Ok(Some(Https {
        listener,
        addr,
        acceptor: tokio_rustls::TlsAcceptor::from(config),
    }))
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

/// What a connection over a limit gets on the plain HTTP port, after its request head (or
/// [`REFUSAL_READ`]), before it is closed; on the TLS port it is closed without a word.
const REFUSED: &str = "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 10\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 97\r\nConnection: close\r\n\r\nThis address holds as many connections to the bridge as it may; close some or try again shortly.\n";

/// Refused connections answered with a readable 503 at once (more are just closed): a
/// client that gets a 503 for its request retries later instead of reporting a broken
/// connection.
const REFUSAL_LANE: usize = 64;
/// How long a refused client gets to send its request head before the 503 goes out anyway.
const REFUSAL_READ: Duration = Duration::from_secs(1);
/// Most bytes of a refused client's request head read (and thrown away).
const REFUSAL_HEAD_MAX: usize = 16 * 1024;

/// Deadlines of one HTTP connection (see [`Activity::watch`]).
#[derive(Clone, Copy)]
struct Deadlines {
    /// When the first request's headers must have arrived (TLS handshake included).
    first: tokio::time::Instant,
    /// How long the connection may stay without a request in flight.
    idle: Duration,
}

/// HTTP and HTTPS on the shared skeleton ([`crate::frontend`]); the tag says which port.
struct HttpFront {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    /// The TLS side of `tls_listen`, when set.
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// Refusals answered with a readable 503 at once (see [`REFUSAL_LANE`]).
    lane: Arc<tokio::sync::Semaphore>,
    header_timeout: Duration,
}

/// Accept on `listener` (and `tls_listen`) until `token` is cancelled, then drain.
async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    https: Option<Https>,
    token: CancellationToken,
) {
    let header_timeout = Duration::from_secs(app.config.limits.header_timeout_secs);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Total per request head (hyper sets the deadline once per head, not per byte) and
        // for an idle keep-alive connection; `Deadlines` also covers the first request's
        // protocol sniffing and HTTP/2, which this timer does not see.
        .header_read_timeout(header_timeout)
        .max_buf_size(256 * 1024);
    let mut listeners = vec![(listener, false)];
    let mut acceptor = None;
    if let Some(h) = https {
        listeners.push((h.listener, true));
        acceptor = Some(h.acceptor);
    }
    let conns = app.conns.clone();
    let front = HttpFront {
        app,
        builder,
        acceptor,
        lane: Arc::new(tokio::sync::Semaphore::new(REFUSAL_LANE)),
        header_timeout,
    };
    crate::frontend::run(Arc::new(front), listeners, conns, MAX_CONNECTIONS, token).await;
    tracing::info!("HTTP connections closed");
}

impl crate::frontend::Protocol for HttpFront {
    type Tag = bool;

    fn name(&self, tls: bool) -> &'static str {
        if tls {
            "https"
        } else {
            "http"
        }
    }

    fn refuse(&self, stream: tokio::net::TcpStream, tls: bool, tracker: &TaskTracker) {
        refuse(stream, tls, &self.lane, tracker);
    }

    async fn serve(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        remote: SocketAddr,
        tls: bool,
        token: CancellationToken,
    ) {
        let deadlines = Deadlines {
            first: tokio::time::Instant::now() + self.header_timeout,
            idle: self.header_timeout,
        };
        let app = self.app.clone();
        let Some(acceptor) = self.acceptor.as_ref().filter(|_| tls) else {
            // Every request's span and log line sits inside its connection's (HTTP/1: the
            // requests run inside the connection's future).
            let span = tracing::debug_span!("conn", peer = %remote, tls = false);
            serve_http(&self.builder, stream, app, remote, false, deadlines, &token)
                .instrument(span)
                .await;
            return;
        };
        // The handshake runs in the connection's own task: a slow or silent client never
        // holds up the accept loop.
        let handshake = tokio::time::timeout_at(
            deadlines
                .first
                .min(tokio::time::Instant::now() + TLS_HANDSHAKE),
            async {
                let stream = refuse_plain_http(stream).await?;
                acceptor.accept(stream).await
            },
        );
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
        let span = tracing::debug_span!("conn", peer = %remote, tls = true);
        serve_http(&self.builder, stream, app, remote, true, deadlines, &token)
            .instrument(span)
            .await;
    }
}

/// Refuse a connection over a limit: on the plain port, while fewer than [`REFUSAL_LANE`]
/// refusals are under way, read its request head (at most [`REFUSAL_HEAD_MAX`] bytes, for at
/// most [`REFUSAL_READ`]) so that the client reads the 503 as the answer to its request,
/// then close it gracefully (within another [`REFUSAL_READ`]); otherwise, and on the TLS
/// port, close it at once. Nothing waits for a slot.
fn refuse(
    stream: tokio::net::TcpStream,
    tls: bool,
    lane: &Arc<tokio::sync::Semaphore>,
    tracker: &TaskTracker,
) {
    if tls {
        return;
    }
    let Ok(permit) = lane.clone().try_acquire_owned() else {
        return;
    };
    tracker.spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        let _ = tokio::time::timeout(REFUSAL_READ, read_head(&mut stream)).await;
        let _ = tokio::time::timeout(REFUSAL_READ, async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream.write_all(REFUSED.as_bytes()).await?;
            stream.shutdown().await?;
            // Take in what the client still sends (a body) until it closes: closing with
            // unread data would reset the connection and lose the answer.
            let mut sink = [0u8; 2048];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        })
        .await;
    });
}

/// Read (and throw away) a request head: up to the blank line, the end of the stream, or
/// [`REFUSAL_HEAD_MAX`] bytes.
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 2048];
    // The last bytes of the previous read, so that a blank line split between reads counts.
    let mut tail: Vec<u8> = Vec::with_capacity(buf.len() + 3);
    let mut seen = 0;
    while seen < REFUSAL_HEAD_MAX {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        seen += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        let keep = tail.len().saturating_sub(3);
        tail.drain(..keep);
    }
    Ok(())
}

/// Serve one HTTP connection until it ends, the client misses a deadline, or the bridge
/// shuts down (gracefully; the skeleton drops what is left after its drain).
async fn serve_http<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    app: Arc<App>,
    remote: SocketAddr,
    tls: bool,
    deadlines: Deadlines,
    token: &CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::default());
    let svc = {
        let activity = activity.clone();
        service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            if tls {
                req.extensions_mut().insert(router::ViaTls);
            }
            req.extensions_mut().insert(ClientAddr(remote.ip()));
            let busy = activity.begin();
            let app = app.clone();
            async move {
                let resp = router::service(app, remote, req).await?;
                Ok::<_, std::convert::Infallible>(resp.map(|b| Tracked { inner: b, busy }.boxed()))
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    let watch = activity.watch(deadlines);
    let mut watch = std::pin::pin!(watch);
    let mut closing = false;
    // After an idle connection was asked to close: how long it may take.
    let grace = tokio::time::sleep(Duration::ZERO);
    let mut grace = std::pin::pin!(grace);
    let mut graced = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, %remote, tls, "connection ended with an error");
                }
                return;
            }
            _ = token.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            why = &mut watch, if !closing => match why {
                Idle::NoRequest => {
                    tracing::debug!(%remote, tls, "no request headers within limits.header_timeout_secs; closing");
                    return;
                }
                Idle::Idle => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                    grace.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
                    graced = true;
                }
            },
            _ = &mut grace, if graced => return,
        }
    }
}

/// Why a connection is closed for want of requests.
enum Idle {
    /// The first request's headers did not arrive in time.
    NoRequest,
    /// No request in flight for the idle time.
    Idle,
}

/// The requests of one connection: how many began, how many are in flight (until their
/// response body is done), and when the last one ended.
struct Activity {
    origin: std::time::Instant,
    began: AtomicU64,
    in_flight: AtomicUsize,
    /// Milliseconds since `origin` when the last request ended.
    last_end: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            origin: std::time::Instant::now(),
            began: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            last_end: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Busy {
        self.began.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Resolves when the connection should close: no complete request head by
    /// `d.first`, or no request in flight for `d.idle` since the last one ended. Neither
    /// deadline moves with single bytes, only with whole requests.
    async fn watch(&self, d: Deadlines) -> Idle {
        loop {
            let now = tokio::time::Instant::now();
            if self.began.load(Ordering::SeqCst) == 0 {
                if now >= d.first {
                    return Idle::NoRequest;
                }
                tokio::time::sleep_until(d.first).await;
                continue;
            }
            if self.in_flight.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(d.idle).await;
                continue;
            }
            let ended = self.origin + Duration::from_millis(self.last_end.load(Ordering::SeqCst));
            let until = tokio::time::Instant::from_std(ended) + d.idle;
            if now >= until {
                return Idle::Idle;
            }
            tokio::time::sleep_until(until).await;
        }
    }
}

/// One request in flight; dropped when its response body is done or abandoned.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_end
            .store(a.origin.elapsed().as_millis() as u64, Ordering::SeqCst);
        a.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Tracked {
    inner: Body,
    #[allow(dead_code)]
    busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Start-up credential test, the watcher that picks up a new password within 1 s, and the
/// notifier (log lines, webhook, state.json).
fn spawn_background(app: &Arc<App>, token: &CancellationToken) -> Option<JoinHandle<()>> {
    let notifier = crate::server::notify::spawn(app, token);
    crate::accounts::startup::spawn_dav_checks(&app.accounts, &app.upstream, token);
    // Failed logins are logged summarised: what a minute collected is written here.
    {
        let app = app.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => app.auth.throttle.flush_logs(),
                }
            }
        });
    }
    app.accounts.watch_vault(token.clone());
    if let Some(push) = &app.push {
        let app2 = app.clone();
        let observe: crate::push::worker::Observe = Arc::new(move |coll| {
            let app = app2.clone();
            Box::pin(async move {
                let account = app.accounts.get(&coll.account).ok_or(())?;
                let origin = app.config.public_base();
                crate::push::worker::observe(&app.dav, &account, &coll, &origin).await
            })
        });
        let app3 = app.clone();
        let logins: crate::push::worker::Logins = Arc::new(move || {
            let list = app3.auth.logins.list().ok()?;
            Some(list.into_iter().map(|l| (l.name, l.account)).collect())
        });
        crate::push::worker::spawn(push.clone(), observe, logins, token.clone());
    }
    notifier
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_well_formed() {
        let (head, body) = REFUSED.split_once("\r\n\r\n").unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, body.len());
        assert!(head.starts_with("HTTP/1.1 503 ") && head.contains("\r\nRetry-After: "));
    }
}
