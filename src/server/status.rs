//! The operator's view: `/` and `/status` (HTML) and `/status.json`, from the same data.
//! Anonymous readers see the Apple ID masked.

use std::time::SystemTime;

use http::{HeaderValue, Response};
use serde::Serialize;

use crate::accounts::status::ServiceStatus;
use crate::app::App;
use crate::body::{full, Body};
use crate::server::page::{self, AccountView, ServiceRow};
use crate::upstream::service::ServiceState;

#[derive(Serialize)]
pub struct AccountStatus {
    pub name: String,
    pub apple_id: String,
    pub state: ServiceState,
    pub reason: Option<String>,
    pub last_success: Option<String>,
    pub credential_set_at: Option<String>,
    pub services: serde_json::Map<String, serde_json::Value>,
    pub caldav_url: String,
    pub carddav_url: String,
    /// The same over HTTPS, when `tls_listen` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caldav_https_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carddav_https_url: Option<String>,
    /// Calendars that hold only tasks (VTODO), from the latest home listing a client asked
    /// for: since iOS 13 the Reminders app keeps reminders outside CalDAV, so these are older
    /// lists, not the current reminders.
    pub task_lists: Vec<TaskListStatus>,
    /// WebDAV-Push registrations of this account's devices (never their push resources,
    /// which are capabilities).
    pub push_subscriptions: Vec<PushStatus>,
    /// For the HTML page (not part of `/status.json`).
    #[serde(skip)]
    pub view: AccountView,
}

/// One WebDAV-Push registration.
#[derive(Serialize)]
pub struct PushStatus {
    pub device: String,
    pub collection: String,
    pub expires: String,
    pub last_delivery: Option<String>,
    pub last_result: Option<String>,
}

/// A task list by its URL only: the page is public, and display names can be personal.
#[derive(Serialize)]
pub struct TaskListStatus {
    pub url: String,
}

#[derive(Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub accounts: Vec<AccountStatus>,
    pub cache: CacheStatus,
    /// The local CA in `certs_dir` (absent when there is none): what devices compare before
    /// trusting it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaStatus>,
}

/// The local CA's fingerprint and whether it is limited to the bridge's names.
#[derive(Serialize)]
pub struct CaStatus {
    pub sha256: String,
    pub constrained: bool,
}

/// The cache's size and counters.
#[derive(Serialize)]
pub struct CacheStatus {
    pub entries: u64,
    pub bytes: u64,
    pub max_bytes: u64,
    pub hits: u64,
    pub misses: u64,
    pub stale_served: u64,
}

fn cache_status(app: &App) -> CacheStatus {
    use std::sync::atomic::Ordering::Relaxed;
    let (entries, bytes) = app.dav.cache.size();
    let st = &app.dav.cache.stats;
    CacheStatus {
        entries,
        bytes,
        max_bytes: app.config.cache.max_bytes,
        hits: st.hits.load(Relaxed),
        misses: st.misses.load(Relaxed),
        stale_served: st.stale_served.load(Relaxed),
    }
}

/// `a…@icloud.com` for anonymous readers.
pub fn mask(apple_id: &str) -> String {
    match apple_id.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}…@{domain}")
        }
        None => "…".to_string(),
    }
}

/// `text` with every occurrence of `apple_id` masked.
fn mask_in(text: &str, apple_id: &str) -> String {
    if apple_id.is_empty() {
        return text.to_string();
    }
    text.replace(apple_id, &mask(apple_id))
}

fn fmt_time(t: Option<SystemTime>) -> Option<String> {
    t.map(httpdate::fmt_http_date)
}

pub fn collect(app: &App) -> Status {
    let base = app.config.public_base();
    let https = app.https_base(None);
    let mut push = app
        .push
        .as_ref()
        .map(|p| p.subscriptions())
        .unwrap_or_default();
    let at = |secs: u64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let accounts = app
        .accounts
        .snapshot()
        .values()
        .map(|acc| {
            let services = acc.served();
            let statuses: Vec<ServiceStatus> = services.iter().map(|s| acc.status(*s)).collect();
            let (state, reason) = acc.overall();
            // Anonymous readers see the Apple ID masked, in the sentence too.
            let reason = reason.map(|r| mask_in(&r, acc.apple_id()));
            let mut map = serde_json::Map::new();
            for (svc, st) in services.iter().zip(&statuses) {
                let mut v = serde_json::to_value(st).unwrap_or(serde_json::Value::Null);
                if let Some(serde_json::Value::String(r)) = v.get_mut("reason") {
                    *r = mask_in(r, acc.apple_id());
                }
                map.insert(svc.as_str().to_string(), v);
            }
            let last_success = statuses.iter().filter_map(|s| s.last_success).max();
            let task_lists = app.dav.task_lists(acc.name());
            let regs = push.remove(acc.name()).unwrap_or_default();
            let view = AccountView {
                name: acc.name().to_string(),
                apple_id_shown: mask(acc.apple_id()),
                state,
                reason: reason.clone(),
                last_success,
                credential_set_at: acc.credential_set_at(),
                has_credential: acc.has_credential(),
                services: services
                    .iter()
                    .zip(&statuses)
                    .map(|(svc, st)| ServiceRow {
                        name: svc.as_str(),
                        state: st.state,
                        last_success: st.last_success,
                    })
                    .collect(),
                task_lists: task_lists.iter().map(|t| t.href.clone()).collect(),
                push: regs
                    .iter()
                    .map(|r| page::PushRow {
                        login: r.login.clone(),
                        collection: r.coll.path(),
                        expires: at(r.expires),
                        last_delivery: r.last_delivery.map(at),
                        last_result: r.last_result.clone(),
                    })
                    .collect(),
            };
            AccountStatus {
                name: acc.name().to_string(),
                apple_id: mask(acc.apple_id()),
                state,
                reason,
                last_success: fmt_time(last_success),
                credential_set_at: fmt_time(acc.credential_set_at()),
                services: map,
                caldav_url: format!("{base}/dav/{}/calendars/", acc.name()),
                carddav_url: format!("{base}/dav/{}/contacts/", acc.name()),
                caldav_https_url: https
                    .as_ref()
                    .map(|b| format!("{b}/dav/{}/calendars/", acc.name())),
                carddav_https_url: https
                    .as_ref()
                    .map(|b| format!("{b}/dav/{}/contacts/", acc.name())),
                task_lists: task_lists
                    .into_iter()
                    .map(|t| TaskListStatus {
                        url: format!("{base}{}", t.href),
                    })
                    .collect(),
                push_subscriptions: regs
                    .iter()
                    .map(|r| PushStatus {
                        device: r.login.clone(),
                        collection: format!("{base}{}", r.coll.path()),
                        expires: httpdate::fmt_http_date(at(r.expires)),
                        last_delivery: r.last_delivery.map(|t| httpdate::fmt_http_date(at(t))),
                        last_result: r.last_result.clone(),
                    })
                    .collect(),
                view,
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: app.started.elapsed().as_secs(),
        accounts,
        cache: cache_status(app),
        ca: crate::tls::ca_info(&app.config.server.certs_dir).map(|i| CaStatus {
            sha256: i.sha256,
            constrained: i.constrained,
        }),
    }
}

pub fn json(app: &App) -> Response<Body> {
    let body = serde_json::to_string_pretty(&collect(app)).unwrap_or_else(|_| "{}".into());
    let mut r = Response::new(full(body));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The HTML status page; `base` is how the reader reached the bridge, `https` the HTTPS
/// listener's base URL when it is not `base` already, `note` a short message to show on top
/// (e.g. after a successful reconnect).
pub fn html(app: &App, base: &str, https: Option<&str>, note: Option<&str>) -> Response<Body> {
    let st = collect(app);
    let views: Vec<AccountView> = st.accounts.into_iter().map(|a| a.view).collect();
    let setup_pending = app.admin.setup_token().is_some() && app.auth.logins.is_empty();
    let c = st.cache;
    let cache = page::CacheView {
        entries: c.entries,
        bytes: c.bytes,
        max_bytes: c.max_bytes,
        hits: c.hits,
        misses: c.misses,
        stale_served: c.stale_served,
    };
    page::respond(
        http::StatusCode::OK,
        page::status_page(
            &views,
            &page::Bases {
                base,
                https,
                ca: st.ca.map(|c| (c.sha256, c.constrained)),
            },
            note,
            setup_pending,
            &cache,
        ),
    )
}
