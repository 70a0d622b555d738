//! The DAV side of the bridge: routing, local discovery, href mapping, proxying and
//! explanation of iCloud's refusals.

pub mod degraded;
pub mod discovery;
pub mod error;
pub mod explain;
pub mod links;
pub mod names;
pub mod paths;
pub mod photos;
pub mod proxy;
pub mod task_lists;
pub mod vcard;
pub mod virtual_cal;

/// What the DAV tree needs, built once by the composition root ([`crate::app::App`]).
pub struct Dav {
    pub upstream: crate::upstream::client::Upstream,
    pub cache: crate::cache::Cache,
    /// Signs and opens the `_up` links for photos and attachments.
    pub links: Arc<links::Links>,
    /// Contact photos inlined into vCards (`[carddav] photos`).
    pub photos: Arc<photos::PhotoStore>,
    /// Request bodies held in memory at once.
    pub bodies: crate::limits::BodyBudget,
    pub limits: crate::config::LimitsConfig,
    /// Whether the bridge serves several accounts (address books are then named after them).
    pub several_accounts: bool,
    /// The bridge's own read-only calendars (Birthdays, the notify calendar).
    pub calendars: virtual_cal::VirtualCalendars,
    /// Per account, the task lists (VTODO-only calendars) the latest home listing showed.
    task_lists: std::sync::Mutex<std::collections::HashMap<String, Vec<task_lists::TaskList>>>,
}

impl Dav {
    pub fn new(
        upstream: crate::upstream::client::Upstream,
        cache: crate::cache::Cache,
        links: Arc<links::Links>,
        photos: photos::PhotoStore,
        bodies: crate::limits::BodyBudget,
        limits: crate::config::LimitsConfig,
    ) -> Dav {
        Dav {
            upstream,
            cache,
            links,
            photos: Arc::new(photos),
            bodies,
            limits,
            several_accounts: false,
            calendars: Default::default(),
            task_lists: Default::default(),
        }
    }

    /// Name address books after their accounts (`Contacts (alice)`).
    pub fn with_several_accounts(mut self, several: bool) -> Dav {
        self.several_accounts = several;
        self
    }

    /// With the bridge's own calendars configured (by default: Birthdays only).
    pub fn with_calendars(mut self, calendars: virtual_cal::VirtualCalendars) -> Dav {
        self.calendars = calendars;
        self
    }

    /// What the latest calendar-home listing of `account` showed of task lists.
    pub fn note_task_lists(&self, account: &str, lists: Vec<task_lists::TaskList>) {
        self.task_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.to_string(), lists);
    }

    /// The task lists last seen for `account` (none before a client listed its calendars).
    pub fn task_lists(&self, account: &str) -> Vec<task_lists::TaskList> {
        self.task_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .cloned()
            .unwrap_or_default()
    }
}

use std::sync::Arc;

use http::{Method, Request, Response};

use crate::accounts::Account;
use crate::body::Body;
use crate::body::RequestBody;
use crate::dav::discovery::Resource;
use crate::dav::error::DavError;
use crate::dav::paths::Local;
use crate::upstream::client::{Purpose, UpstreamRequest};
use crate::upstream::error::UpstreamError;
use crate::upstream::service::Service;
use crate::xml::inspect::{inspect, PropRequest};

/// Route an authenticated DAV request. `public_origin` is how the client reaches us.
pub async fn handle(
    dav: &Dav,
    account: &Arc<Account>,
    req: Request<RequestBody>,
    public_origin: &str,
) -> Response<Body> {
    match route(dav, account, req, public_origin).await {
        Ok(r) => r,
        Err(e) => {
            log_error(account.name(), &e);
            e.into_response()
        }
    }
}

/// The one place a DAV error that becomes a response is logged: the bridge's own failures
/// and iCloud's as warnings (each carries its sentence, never a secret), a client's mistakes
/// at debug level (a device can make those at will).
fn log_error(account: &str, e: &DavError) {
    let status = e.status().as_u16();
    match e {
        DavError::Internal(_) | DavError::Upstream(_) | DavError::Refused { .. }
            if status >= 500 =>
        {
            tracing::warn!(account, status, error = %e, "answered with an error")
        }
        _ => tracing::debug!(account, status, error = %e, "answered with an error"),
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
    dav: &Dav,
    account: &Arc<Account>,
    req: Request<RequestBody>,
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
        return Box::pin(local_resource(dav, account, resource, path, req)).await;
    }
    match local {
        Local::Home {
            account: a,
            service,
            rest,
        } => {
            check_account(account, a)?;
            if let Some((which, sub)) = dav.calendars.which(service, rest) {
                return virtual_cal::handle(dav, account, which, sub, req, public_origin).await;
            }
            if req.method() == Method::OPTIONS && rest.is_empty() {
                return Ok(discovery::options(true));
            }
            proxy::forward(dav, account, service, rest, req, public_origin).await
        }
        Local::Upstream { account: a, key } => {
            check_account(account, a)?;
            Box::pin(fetch_upstream_url(dav, account, key, req)).await
        }
        _ => Err(DavError::NotFound(format!(
            "{path} is not part of the bridge; calendars are under /dav/{0}/calendars/ and contacts under /dav/{0}/contacts/",
            account.name()
        ))),
    }
}

async fn local_resource(
    dav: &Dav,
    account: &Arc<Account>,
    resource: Resource,
    path: &str,
    req: Request<RequestBody>,
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
            let (body, _reserved) = proxy::read_body(dav, &parts, body).await?;
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
    dav: &Dav,
    account: &Arc<Account>,
    key: &str,
    req: Request<RequestBody>,
) -> Result<Response<Body>, DavError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(DavError::MethodNotAllowed(req.method().to_string()));
    }
    let url = dav
        .links
        .url(account.name(), key)
        .filter(|u| dav.upstream.trusted(account, u))
        .ok_or_else(|| DavError::NotFound("unknown upstream resource".into()))?;
    // The service whose hosts serve this URL (contact photos live on the contacts hosts).
    let on = |u: &url::Url| {
        u.host_str() == url.host_str() && u.port_or_known_default() == url.port_or_known_default()
    };
    let contacts = on(dav.upstream.front(Service::Carddav))
        || account
            .learned()
            .is_some_and(|l| on(&l.card_home) || on(&l.card_principal));
    let service = if contacts {
        Service::Carddav
    } else {
        Service::Caldav
    };
    let resp = dav
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
        return Err(asset_refused(dav, account, service).await);
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
pub(crate) async fn asset_refused(dav: &Dav, account: &Arc<Account>, service: Service) -> DavError {
    if account.take_asset_probe() {
        match crate::upstream::discover::probe(&dav.upstream, account, service).await {
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
