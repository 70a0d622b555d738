//! The HTTP router: the operator's pages (status, setup, forms, metrics, CA), then local
//! login, then the DAV tree. One request in, one response out, never an error.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use tracing::Instrument;

use crate::app::App;
use crate::auth::{self, AuthOutcome};
use crate::body::RequestBody;
use crate::body::{full, text, Body};
use crate::dav;
use crate::dav::paths::{self, Local};
use crate::server::{admin, status};

/// Request extension: the request came in over TLS (`tls_listen`).
#[derive(Debug, Clone, Copy)]
pub struct ViaTls;

/// How the client reached us (`http://host:port`, or `https://` over `tls_listen`), for
/// absolute URLs in bodies.
fn public_origin(app: &App, req: &Request<RequestBody>) -> String {
    let scheme = if req.extensions().get::<ViaTls>().is_some() {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '"', '<', '>', '@']));
    match host {
        Some(h) => format!("{scheme}://{h}"),
        None if scheme == "https" => app
            .https_base(None)
            .unwrap_or_else(|| app.config.public_base()),
        None => app.config.public_base(),
    }
}

/// The local CA's certificate (`GET /ca.pem`), for devices to trust; 404 without one.
async fn ca_pem(app: &App) -> Response<Body> {
    let path = app.config.server.certs_dir.join(crate::tls::CA_FILE);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let mut r = Response::new(full(bytes));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            );
            r.headers_mut().insert(
                http::header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"icloud-bridge-ca.pem\""),
            );
            r
        }
        Err(_) => text(
            StatusCode::NOT_FOUND,
            "this bridge has no local CA (certs_dir has no ca.pem)\n",
        ),
    }
}

/// The base URL shown on the operator's pages: `public_url` if configured, else how the
/// reader reached us.
fn page_base(app: &App, req: &Request<RequestBody>) -> String {
    if app.config.server.public_url.is_some() {
        app.config.public_base()
    } else {
        public_origin(app, req)
    }
}

/// The success note after a reconnect (`/status?reconnected=NAME`), for a known account only.
fn status_note(app: &App, req: &Request<RequestBody>) -> Option<String> {
    let q = req.uri().query()?;
    let name = url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "reconnected")
        .map(|(_, v)| v.into_owned())?;
    let acc = app.accounts.get(&name)?;
    Some(format!(
        "The new app-specific password for {} was accepted by iCloud, stored, and is in use now.",
        acc.name()
    ))
}

/// h2 (what browsers speak over TLS) names the host in `:authority` and sends no `Host`;
/// the same-origin check and absolute URLs read `Host`, so set it from the authority.
fn host_from_authority<B>(req: &mut Request<B>) {
    if req.headers().contains_key(http::header::HOST) {
        return;
    }
    let Some(a) = req.uri().authority() else {
        return;
    };
    let host = match a.port_u16() {
        Some(p) => format!("{}:{p}", a.host()),
        None => a.host().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&host) {
        req.headers_mut().insert(http::header::HOST, v);
    }
}

/// The HTTP service: one request in, one response out, never an error.
///
/// Generic over the request body, so that the whole pipeline can be driven in-process (a
/// test hands it a `Full<Bytes>`); the body is boxed once here.
pub fn service<B>(
    app: Arc<App>,
    remote: SocketAddr,
    req: Request<B>,
) -> impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send
where
    B: http_body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    use http_body_util::BodyExt;
    let req = req.map(|b| b.map_err(|e| Box::new(e) as crate::body::BoxError).boxed());
    serve(app, remote, req)
}

async fn serve(
    app: Arc<App>,
    remote: SocketAddr,
    mut req: Request<RequestBody>,
) -> Result<Response<Body>, Infallible> {
    host_from_authority(&mut req);
    let method = req.method().clone();
    let started = Instant::now();
    // The path only: a query may carry the setup token.
    // A span per request when debug logging is on. Only then: instrumenting moves the
    // request's whole future, and a cache hit should not pay for a span nobody reads.
    let resp = if tracing::enabled!(tracing::Level::DEBUG) {
        let span = tracing::debug_span!("request", method = %method, path = %req.uri().path());
        Box::pin(dispatch(&app, remote, req)).instrument(span).await
    } else {
        dispatch(&app, remote, req).await
    };
    app.metrics
        .record_request(method.as_str(), resp.status().as_u16(), started.elapsed());
    Ok(resp)
}

async fn dispatch(app: &Arc<App>, remote: SocketAddr, req: Request<RequestBody>) -> Response<Body> {
    match page(app, remote, req).await {
        Ok(resp) => resp,
        Err(req) => dav_tree(app, remote, req).await,
    }
}

/// The operator's pages (status, JSON, health, CA, metrics, forms), or the request back when
/// it is not for one. Pages answer only to the bridge's own names (DNS rebinding).
async fn page(
    app: &Arc<App>,
    remote: SocketAddr,
    req: Request<RequestBody>,
) -> Result<Response<Body>, Request<RequestBody>> {
    let is_get = req.method() == Method::GET || req.method() == Method::HEAD;
    let path = req.uri().path();
    let public = is_get
        && matches!(
            path,
            "/" | "/status" | "/status.json" | "/ca.pem" | "/metrics" | "/healthz"
        );
    let form = path == "/setup" || path.starts_with("/admin/");
    if !public && !form {
        return Err(req);
    }
    if path != "/healthz" {
        let host = req
            .headers()
            .get(http::header::HOST)
            .map(|h| h.to_str().unwrap_or(""));
        if !app.own_names.allows(host) {
            return Ok(text(
                StatusCode::MISDIRECTED_REQUEST,
                "This bridge's pages answer only to its own names and addresses. If this is how you reach it, set [server] public_url to this address.\n",
            ));
        }
    }
    if public {
        // Public pages: no login needed.
        return Ok(match path {
            "/status.json" => status::json(app),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/ca.pem" => ca_pem(app).await,
            "/metrics" => app.metrics.render(&crate::metrics::Scrape {
                connections_refused: app.conns.refused(),
                bodies_refused: app.dav.bodies.refused(),
                accounts: app.accounts.snapshot(),
                cache: &app.dav.cache,
                upstream: &app.upstream.stats,
                push: app.push.as_deref().map(|p| crate::metrics::PushScrape {
                    deliveries: p.stats.snapshot(),
                    subscriptions: p.store.collections(crate::push::now()).len() as u64,
                    registrations: p.subscriptions().values().map(|v| v.len() as u64).sum(),
                }),
            }),
            _ => status_html(app, &req),
        });
    }
    // The operator's forms check their own logins, tokens and origins.
    Ok(match path {
        "/admin/reconnect" => Box::pin(admin::reconnect(app, remote, req)).await,
        "/setup" => {
            let base = page_base(app, &req);
            Box::pin(admin::setup(app, req, &base)).await
        }
        _ => return Err(req),
    })
}

/// The status page, with the HTTPS address to offer when read over plain HTTP.
fn status_html(app: &App, req: &Request<RequestBody>) -> Response<Body> {
    let note = status_note(app, req);
    let base = page_base(app, req);
    let https = if base.starts_with("https://") {
        None
    } else {
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok());
        app.https_base(host)
    };
    status::html(app, &base, https.as_deref(), note.as_deref())
}

/// Discovery that needs no login (well-known redirects, OPTIONS), then the device's login,
/// then the DAV tree of its account.
async fn dav_tree(app: &Arc<App>, remote: SocketAddr, req: Request<RequestBody>) -> Response<Body> {
    let method = req.method().clone();
    let local = paths::parse(req.uri().path());
    if let Local::WellKnown(_) = local {
        if method != Method::OPTIONS && method.as_str() != "PROPFIND" {
            let mut r = text(StatusCode::MOVED_PERMANENTLY, "see /\n");
            r.headers_mut()
                .insert(http::header::LOCATION, HeaderValue::from_static("/"));
            return r;
        }
    }
    if method == Method::OPTIONS {
        match local {
            Local::Root | Local::WellKnown(_) | Local::DavRoot(_) | Local::Principal(_) => {
                return dav::discovery::options(false)
            }
            Local::Home { rest: "", .. } => return dav::discovery::options(true),
            _ => {}
        }
    }
    let login = match app.auth.authenticate(remote.ip(), req.headers()).await {
        AuthOutcome::Ok(login) => login,
        AuthOutcome::Challenge => return auth::challenge(false),
        AuthOutcome::Wrong => return auth::challenge(true),
    };
    let Some(account) = app.accounts.get(&login.account) else {
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "login {} belongs to account {}, which is not in the configuration\n",
                login.name, login.account
            ),
        );
    };
    let origin = public_origin(app, &req);
    if let Some(push) = &app.push {
        return crate::push::dav::serve(push, &app.dav, &account, &login.name, req, &origin).await;
    }
    dav::handle(&app.dav, &account, req, &origin).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_authority_becomes_the_host_header() {
        let mut req = Request::builder()
            .uri("https://[::1]:8443/status")
            .body(())
            .unwrap();
        host_from_authority(&mut req);
        assert_eq!(req.headers()[http::header::HOST], "[::1]:8443");
        // An explicit Host wins; no authority, no Host.
        let mut req = Request::builder()
            .uri("https://a.example/")
            .header("host", "b.example")
            .body(())
            .unwrap();
        host_from_authority(&mut req);
        assert_eq!(req.headers()[http::header::HOST], "b.example");
        let mut req = Request::builder().uri("/x").body(()).unwrap();
        host_from_authority(&mut req);
        assert!(req.headers().get(http::header::HOST).is_none());
    }
}
