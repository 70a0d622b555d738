//! The DAV side of the bridge: routing, local discovery, href mapping, proxying and
//! explanation of iCloud's refusals.

pub mod discovery;
pub mod error;
pub mod explain;
pub mod links;
pub mod paths;
pub mod proxy;
pub mod task_lists;

use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;

use crate::accounts::Account;
use crate::app::App;
use crate::body::Body;
use crate::dav::discovery::Resource;
use crate::dav::error::DavError;
use crate::dav::paths::Local;
use crate::upstream::client::{Purpose, UpstreamRequest};
use crate::upstream::error::UpstreamError;
use crate::upstream::service::Service;
use crate::xml::inspect::{inspect, PropRequest};

/// Route an authenticated DAV request. `public_origin` is how the client reaches us.
pub async fn handle(
    app: &App,
    account: &Arc<Account>,
    req: Request<Incoming>,
    public_origin: &str,
) -> Response<Body> {
    match route(app, account, req, public_origin).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn check_account(account: &Account, named: &str) -> Result<(), DavError> {
    if account.name() == named {
        Ok(())
    } else {
        Err(DavError::Forbidden(format!(
            "this login belongs to account {:?}, not {named:?}",
            account.name()
        )))
    }
}

async fn route(
    app: &App,
    account: &Arc<Account>,
    req: Request<Incoming>,
    public_origin: &str,
) -> Result<Response<Body>, DavError> {
    let uri = req.uri().clone();
    let path = uri.path();
    let local = paths::parse(path);
    let resource = match &local {
        Local::Root | Local::WellKnown(_) | Local::DavRoot(None) => Some(Resource::Root),
        Local::DavRoot(Some(a)) => {
            check_account(account, a)?;
            Some(Resource::Root)
        }
        Local::Principal(a) => {
            check_account(account, a)?;
            Some(Resource::Principal)
        }
        _ => None,
    };
    if let Some(resource) = resource {
        return local_resource(app, account, resource, path, req).await;
    }
    match local {
        Local::Home {
            account: a,
            service,
            rest,
        } => {
            check_account(account, a)?;
            if req.method() == Method::OPTIONS && rest.is_empty() {
                return Ok(discovery::options(true));
            }
            proxy::forward(app, account, service, rest, req, public_origin).await
        }
        Local::Upstream { account: a, key } => {
            check_account(account, a)?;
            fetch_upstream_url(app, account, key, req).await
        }
        _ => Err(DavError::NotFound(format!(
            "{path} is not part of the bridge; calendars are under /dav/{0}/calendars/ and contacts under /dav/{0}/contacts/",
            account.name()
        ))),
    }
}

async fn local_resource(
    app: &App,
    account: &Arc<Account>,
    resource: Resource,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, DavError> {
    match req.method().as_str() {
        "OPTIONS" => Ok(discovery::options(false)),
        "PROPFIND" => {
            let depth1 = req
                .headers()
                .get("depth")
                .and_then(|v| v.to_str().ok())
                .map(|d| d.trim() == "1")
                .unwrap_or(false);
            let (parts, body) = req.into_parts();
            let (body, _reserved) = proxy::read_body(app, &parts, body).await?;
            let props = if body.iter().all(u8::is_ascii_whitespace) {
                PropRequest::AllProp
            } else {
                proxy::parse_body(&body, inspect)
                    .await?
                    .map_err(|e| {
                        DavError::BadRequest(format!(
                            "the request body is not well-formed XML: {e}"
                        ))
                    })?
                    .props
            };
            Ok(discovery::propfind(account, resource, path, &props, depth1))
        }
        m => Err(DavError::MethodNotAllowed(m.to_string())),
    }
}

/// GET on `/dav/<account>/_up/<key>`: a contact photo or attachment, fetched with the
/// stored credential, only for a link this bridge signed for this account, and only from a
/// trusted upstream origin. Its answer never judges the password (see [`Purpose::Asset`]).
async fn fetch_upstream_url(
    app: &App,
    account: &Arc<Account>,
    key: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, DavError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(DavError::MethodNotAllowed(req.method().to_string()));
    }
    let url = app
        .links
        .url(account.name(), key)
        .filter(|u| app.upstream.trusted(account, u))
        .ok_or_else(|| DavError::NotFound("unknown upstream resource".into()))?;
    // The service whose hosts serve this URL (contact photos live on the contacts hosts).
    let on = |u: &url::Url| {
        u.host_str() == url.host_str() && u.port_or_known_default() == url.port_or_known_default()
    };
    let contacts = on(app.upstream.front(Service::Carddav))
        || account
            .learned()
            .is_some_and(|l| on(&l.card_home) || on(&l.card_principal));
    let service = if contacts {
        Service::Carddav
    } else {
        Service::Caldav
    };
    let resp = app
        .upstream
        .send(
            account,
            service,
            UpstreamRequest {
                method: req.method().clone(),
                url,
                headers: http::HeaderMap::new(),
                body: bytes::Bytes::new(),
                purpose: Purpose::Asset,
            },
        )
        .await?;
    if resp.status() == http::StatusCode::UNAUTHORIZED {
        return Err(asset_refused(app, account, service).await);
    }
    if resp.status().is_redirection() {
        // Followed only within trusted origins (see `Upstream::send`); anywhere else the
        // password does not go, and neither does the client.
        return Err(DavError::Upstream(UpstreamError::BadResponse {
            detail: "it sent this photo or attachment to a host the bridge does not trust".into(),
        }));
    }
    let mut out = Response::builder().status(resp.status().as_u16());
    for name in ["content-type", "etag", "last-modified", "content-length"] {
        if let Some(v) = resp.headers().get(name) {
            out = out.header(name, v.clone());
        }
    }
    out.body(crate::body::stream_body(resp))
        .map_err(|_| DavError::Internal("build the response"))
}

/// Upstream refused a photo or attachment (401). That alone says nothing about the password
/// (a link can name something this Apple ID may not see), so at most once per
/// `auth_probe_secs` the principal is asked, and that DAV answer decides; the client never
/// sees a 401 (it would prompt for a password that is not theirs).
async fn asset_refused(app: &App, account: &Arc<Account>, service: Service) -> DavError {
    if account.take_asset_probe() {
        match crate::upstream::discover::probe(&app.upstream, account, service).await {
            Err(e @ (UpstreamError::AuthRejected { .. } | UpstreamError::Unconfigured { .. })) => {
                return DavError::Upstream(e)
            }
            Err(e) => {
                tracing::debug!(account = account.name(), error = %e, "password check after a refused photo failed")
            }
            Ok(()) => {}
        }
    }
    DavError::Upstream(UpstreamError::BadResponse {
        detail: "it refused this photo or attachment".into(),
    })
}
