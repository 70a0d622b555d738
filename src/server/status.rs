//! The operator's view: `/` and `/status` (HTML) and `/status.json`, from the same data.
//! Anonymous readers see the Apple ID masked.

use std::time::SystemTime;

use http::{HeaderValue, Response};
use serde::Serialize;

use crate::dav::respond::{full, Body};
use crate::dav::xml::build::escape_text;
use crate::server::app::App;
use crate::upstream::state::{ServiceState, ServiceStatus};

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
}

#[derive(Serialize)]
pub struct Status {
    pub version: &'static str,
    pub uptime_secs: u64,
    pub accounts: Vec<AccountStatus>,
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

fn fmt_time(t: Option<SystemTime>) -> Option<String> {
    t.map(httpdate::fmt_http_date)
}

pub fn collect(app: &App) -> Status {
    let base = app.config.public_base();
    let accounts = app
        .accounts
        .values()
        .map(|acc| {
            let services = acc.served();
            let statuses: Vec<ServiceStatus> = services.iter().map(|s| acc.status(*s)).collect();
            let (state, reason) = acc.overall();
            let mut map = serde_json::Map::new();
            for (svc, st) in services.iter().zip(&statuses) {
                map.insert(
                    svc.as_str().to_string(),
                    serde_json::to_value(st).unwrap_or(serde_json::Value::Null),
                );
            }
            let last_success = statuses.iter().filter_map(|s| s.last_success).max();
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
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: app.started.elapsed().as_secs(),
        accounts,
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

pub fn html(app: &App) -> Response<Body> {
    let st = collect(app);
    let base = app.config.public_base();
    let mut rows = String::new();
    for a in &st.accounts {
        rows.push_str(&format!(
            "<section><h2>{name} <small>{apple}</small></h2><p class=\"state {state}\">{state}</p>{reason}<dl><dt>Last contact with iCloud</dt><dd>{last}</dd><dt>App-specific password set</dt><dd>{set}</dd><dt>CalDAV URL</dt><dd><code>{cal}</code></dd><dt>CardDAV URL</dt><dd><code>{card}</code></dd></dl></section>",
            name = escape_text(&a.name),
            apple = escape_text(&a.apple_id),
            state = serde_json::to_value(a.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            reason = a.reason.as_ref().map(|r| format!("<p class=\"reason\">{}</p>", escape_text(r))).unwrap_or_default(),
            last = escape_text(a.last_success.as_deref().unwrap_or("never")),
            set = escape_text(a.credential_set_at.as_deref().unwrap_or("unknown")),
            cal = escape_text(&a.caldav_url),
            card = escape_text(&a.carddav_url),
        ));
    }
    if st.accounts.is_empty() {
        rows.push_str("<p>No account is configured yet. Add an <code>[[account]]</code> to the config file, or run <code>icloud-bridge init</code>.</p>");
    }
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>icloud-bridge</title><style>body{{font-family:system-ui,sans-serif;max-width:46rem;margin:1rem auto;padding:0 1rem;line-height:1.4}}.state{{display:inline-block;padding:.1rem .6rem;border-radius:.3rem;background:#eee;font-weight:bold}}.ok{{background:#c8f0c8}}.auth_rejected,.unconfigured{{background:#f6c6c6}}.unreachable,.rate_limited{{background:#f6e6b0}}code{{word-break:break-all}}dt{{font-weight:bold;margin-top:.4rem}}</style></head><body><h1>icloud-bridge</h1><p>Point Thunderbird or DAVx5 at <code>{base}/</code> with a bridge login.</p>{rows}</body></html>",
        base = escape_text(&base),
    );
    let mut r = Response::new(full(page));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}
