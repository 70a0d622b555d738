//! Listeners: one accept loop per HTTP role (front-cal, front-card, part-cal/part-card per
//! partition), hyper HTTP/1.1 connections with keep-alive, and the per-request pipeline
//! (faults, routing, latency, noise headers, request log). IMAP and SMTP listeners will live
//! next to these as separate accept loops (a later task).

use crate::accounts::{lock, write};
use crate::auth;
use crate::body::Body;
use crate::ctx::{Ctx, Req};
use crate::faults::{self, Fault};
use crate::respond;
use crate::router::{self, Outcome};
use crate::state::{LoggedRequest, Role, Shared};
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

async fn wait_true(mut rx: watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Bind `role` on `addr` synchronously and spawn its accept loop on the stand-in's runtime.
pub fn bind_role(shared: &Arc<Shared>, role: Role, addr: SocketAddr) -> io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let _guard = shared.runtime.enter();
    let listener = TcpListener::from_std(std_listener)?;
    let task = shared
        .runtime
        .spawn(accept_loop(shared.clone(), role, Some(listener), local));
    lock(&shared.tasks).push(task);
    Ok(local)
}

/// Bind a plain TCP role (IMAP, SMTP) on `addr` and spawn its accept loop on the stand-in's
/// runtime: `serve` runs once per connection, and every connection ends when the stand-in
/// stops. Returns the bound address.
pub fn bind_tcp<F, Fut>(shared: &Arc<Shared>, addr: SocketAddr, serve: F) -> io::Result<SocketAddr>
where
    F: Fn(Arc<Shared>, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let local = std_listener.local_addr()?;
    let _guard = shared.runtime.enter();
    let listener = TcpListener::from_std(std_listener)?;
    let task = shared
        .runtime
        .spawn(tcp_accept_loop(shared.clone(), listener, Arc::new(serve)));
    lock(&shared.tasks).push(task);
    Ok(local)
}

async fn tcp_accept_loop<F, Fut>(shared: Arc<Shared>, listener: TcpListener, serve: Arc<F>)
where
    F: Fn(Arc<Shared>, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        tokio::select! {
            r = listener.accept() => {
                if let Ok((stream, _)) = r {
                    let session = serve(shared.clone(), stream);
                    let mut stop = shared.shutdown.subscribe();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = session => {}
                            _ = stop.wait_for(|v| *v) => {}
                        }
                    });
                }
            }
            r = shutdown.changed() => if r.is_err() { return },
        }
    }
}

/// Make sure partition `p` has its two listeners; returns (cal, card).
pub fn ensure_partition(shared: &Arc<Shared>, p: u32) -> io::Result<(SocketAddr, SocketAddr)> {
    if let Some(a) = shared.partition_addrs(p) {
        return Ok(a);
    }
    let any: SocketAddr = SocketAddr::from((shared.bind_ip, 0));
    let cal = bind_role(shared, Role::PartCal(p), any)?;
    let card = bind_role(shared, Role::PartCard(p), any)?;
    write(&shared.listeners).partitions.insert(p, (cal, card));
    Ok((cal, card))
}

async fn accept_loop(
    shared: Arc<Shared>,
    role: Role,
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut unreachable = shared.unreachable.subscribe();
    let is_part = role.partition().is_some();
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if is_part && *unreachable.borrow_and_update() {
            listener = None; // closing the socket makes new connections fail
            tokio::select! {
                r = unreachable.changed() => if r.is_err() { return },
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let Some(l) = listener.as_ref() else {
            match TcpListener::bind(addr).await {
                Ok(l) => listener = Some(l),
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "stand-in: re-binding partition listener");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            continue;
        };
        tokio::select! {
            r = l.accept() => {
                if let Ok((stream, _)) = r {
                    tokio::spawn(serve_conn(shared.clone(), role, stream));
                }
            }
            r = unreachable.changed(), if is_part => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_conn(shared: Arc<Shared>, role: Role, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(stream);
    let sh = shared.clone();
    let svc = service_fn(move |req| handle(sh.clone(), role, req));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::select! {
        _ = conn => {}
        _ = wait_true(shared.shutdown.subscribe()) => {}
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "stand-in: connection dropped",
    )
}

fn log(shared: &Shared, role: Role, req: &Req, status: u16) {
    let headers = req
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let host = req
        .headers
        .get(http::header::HOST)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    shared.push_log(LoggedRequest {
        method: req.method.as_str().to_string(),
        host,
        path: req.path.clone(),
        headers,
        body: req.body.to_vec(),
        status,
        role: role.label(),
    });
}

/// Counts a request as held while it lives.
struct Held<'a>(&'a Shared);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0
            .held
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Hold a request for `path` while the `hold.path` switch matches it; false when the
/// stand-in stopped meanwhile.
async fn hold(shared: &Shared, path: &str) -> bool {
    let matches = |sw: &crate::switches::Switches| {
        sw.hold_path
            .as_deref()
            .is_some_and(|p| !p.is_empty() && path.contains(p))
    };
    // Subscribed before looking, so a change between the look and the wait is not missed.
    let mut changes = shared.switch_changes.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    if !matches(&shared.switches()) {
        return true;
    }
    shared
        .held
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _held = Held(shared);
    loop {
        if *shutdown.borrow_and_update() {
            return false;
        }
        if !matches(&shared.switches()) {
            return true;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return false },
            r = shutdown.changed() => if r.is_err() { return false },
        }
    }
}

/// Turn a response into one whose body stops half-way (or drop it when there is no body).
fn break_response(r: Response<Body>) -> Option<Response<Body>> {
    let (mut parts, body) = r.into_parts();
    let bytes = body.into_bytes();
    if bytes.len() < 2 {
        return None;
    }
    parts
        .headers
        .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let half = bytes.slice(..bytes.len() / 2);
    Some(Response::from_parts(parts, Body::Broken(Some(half))))
}

async fn handle(
    shared: Arc<Shared>,
    role: Role,
    req: Request<Incoming>,
) -> Result<Response<Body>, io::Error> {
    let start = Instant::now();
    let sw = shared.switches();
    let (parts, incoming) = req.into_parts();
    let body = incoming
        .collect()
        .await
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
        .to_bytes();
    let req = Req {
        method: parts.method,
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into()),
        headers: parts.headers,
        body,
    };
    if role.partition().is_some() && sw.partition_unreachable {
        return Err(closed());
    }
    let sw = match &sw.hold_path {
        Some(_) if !hold(&shared, &req.path).await => return Err(closed()),
        Some(_) => shared.switches(),
        None => sw,
    };
    let user_partition = auth::named_account(&shared, &req.headers).map(|a| a.partition());
    let ctx = Ctx {
        shared: &shared,
        sw: &sw,
        role,
        req: &req,
    };
    let mut reset = false;
    let outcome = match faults::pre(&shared, &sw) {
        Some(Fault::Respond(r)) => Outcome::Respond(r),
        Some(Fault::Hang) => {
            if sw.log_enabled {
                log(&shared, role, &req, 0);
            }
            wait_true(shared.shutdown.subscribe()).await;
            return Err(closed());
        }
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            router::route(&ctx)
        }
        Some(Fault::Reset) => {
            reset = true;
            router::route(&ctx)
        }
        None => router::route(&ctx),
    };
    if sw.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sw.latency_ms)).await;
    }
    let mut resp = match outcome {
        Outcome::Respond(r) => r,
        Outcome::Close => {
            if sw.log_enabled {
                log(&shared, role, &req, 0);
            }
            return Err(closed());
        }
    };
    respond::add_common(
        &mut resp,
        &shared,
        role,
        user_partition,
        start.elapsed().as_millis(),
    );
    if sw.log_enabled {
        log(&shared, role, &req, resp.status().as_u16());
    }
    if reset {
        return break_response(resp).ok_or_else(closed);
    }
    Ok(resp)
}
