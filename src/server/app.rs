//! The shared application state and the HTTP service: public pages, local authentication,
//! then the DAV router.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::Config;
use crate::dav;
use crate::dav::paths::{self, Local};
use crate::dav::respond::{full, Body};
use crate::server::auth::{self, AuthOutcome};
use crate::server::logins::LoginStore;
use crate::server::metrics::Metrics;
use crate::server::status;
use crate::server::throttle::FailureThrottle;
use crate::upstream::client::Upstream;
use crate::upstream::credential;
use crate::upstream::state::{Account, Persisted, StateEvent};
use crate::upstream::vault::{write_atomic, Vault};

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub config: Config,
    pub accounts: Arc<BTreeMap<String, Arc<Account>>>,
    pub logins: LoginStore,
    pub throttle: FailureThrottle,
    pub upstream: Upstream,
    pub vault: Vault,
    pub metrics: Arc<Metrics>,
    pub started: Instant,
    /// State changes of every account, for the notifier (taken once by `notify::spawn`).
    events: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<StateEvent>>>,
}

impl App {
    pub fn new(config: Config) -> Result<App, String> {
        std::fs::create_dir_all(&config.server.data_dir).map_err(|e| {
            format!(
                "cannot create data_dir {}: {e}",
                config.server.data_dir.display()
            )
        })?;
        let upstream = Upstream::new(&config.upstream)?;
        let logins = LoginStore::open(&config.server.data_dir).map_err(|e| e.to_string())?;
        let vault = Vault::open(&config.server.data_dir);
        let mut accounts = BTreeMap::new();
        for a in &config.accounts {
            let acc = Account::new(
                a.clone(),
                config.upstream.kind,
                std::time::Duration::from_secs(config.upstream.auth_probe_secs),
                config.upstream.max_concurrent,
            );
            accounts.insert(a.name.clone(), Arc::new(acc));
        }
        let app = App {
            accounts: Arc::new(accounts),
            logins,
            throttle: FailureThrottle::new(),
            upstream,
            vault,
            metrics: Arc::new(Metrics::default()),
            started: Instant::now(),
            config,
            events: Mutex::new(None),
        };
        // The credential first: what state.json says about it applies only if unchanged.
        app.reload_credentials();
        app.load_state();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for acc in app.accounts.values() {
            acc.set_events(tx.clone());
        }
        *app.events.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
        Ok(app)
    }

    /// The receiving end of every account's state changes (once).
    pub fn take_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<StateEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Resolve every account's credential again (vault, file, command, env).
    pub fn reload_credentials(&self) {
        let single = self.accounts.len() == 1;
        for acc in self.accounts.values() {
            match credential::resolve(&acc.config, &self.vault, single) {
                Ok(c) => acc.set_credential(c),
                Err(e) => {
                    tracing::warn!(account = acc.name(), error = %e, "cannot read the app-specific password");
                    acc.set_credential(None);
                }
            }
        }
    }

    fn state_path(&self) -> PathBuf {
        self.config.server.data_dir.join("state.json")
    }

    /// Persist what discovery learned (so discovery can be answered while iCloud refuses) and
    /// each account's state and notification bookkeeping.
    pub fn save_state(&self) {
        (self.state_saver())()
    }

    /// A callable that persists state, for background tasks.
    pub fn state_saver(&self) -> impl Fn() + Send + Sync + 'static {
        let path = self.state_path();
        let accounts = self.accounts.clone();
        move || {
            // {"accounts": {"<name>": {"learned": {...}, "accepted_before": ..., "services":
            // {...}, "notified_state": ..., ...}}}: `learned` as before, the rest beside it.
            let mut map = serde_json::Map::new();
            for (name, acc) in accounts.iter() {
                let mut entry = match serde_json::to_value(acc.persisted()) {
                    Ok(serde_json::Value::Object(m)) => m,
                    _ => serde_json::Map::new(),
                };
                if let Some(l) = acc.learned() {
                    if let Ok(v) = serde_json::to_value(&*l) {
                        entry.insert("learned".into(), v);
                    }
                }
                map.insert(name.clone(), serde_json::Value::Object(entry));
            }
            let text = serde_json::json!({ "accounts": map }).to_string();
            if let Err(e) = write_atomic(&path, text.as_bytes()) {
                tracing::warn!(error = %e, "cannot save state.json");
            }
        }
    }

    fn load_state(&self) {
        let Ok(text) = std::fs::read_to_string(self.state_path()) else {
            return;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            tracing::warn!("state.json is unreadable; starting fresh");
            return;
        };
        for (name, acc) in self.accounts.iter() {
            let Some(entry) = v.get("accounts").and_then(|a| a.get(name)) else {
                continue;
            };
            if let Some(l) = entry
                .get("learned")
                .and_then(|l| serde_json::from_value(l.clone()).ok())
            {
                acc.set_learned(l);
            }
            // Absent in files from older versions: every field defaults.
            match serde_json::from_value::<Persisted>(entry.clone()) {
                Ok(p) => acc.restore(&p),
                Err(e) => {
                    tracing::warn!(account = %name, error = %e, "state.json: ignoring the saved account state")
                }
            }
        }
    }

    /// The account a login belongs to.
    pub fn account(&self, name: &str) -> Option<&Arc<Account>> {
        self.accounts.get(name)
    }
}

/// How the client reached us (`http://host:port`), for absolute URLs in bodies.
fn public_origin(app: &App, req: &Request<Incoming>) -> String {
    match req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ', '"', '<', '>']))
    {
        Some(h) => format!("http://{h}"),
        None => app.config.public_base(),
    }
}

/// The HTTP service: one request in, one response out, never an error.
pub async fn service(
    app: Arc<App>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let started = Instant::now();
    let resp = dispatch(&app, remote, req).await;
    app.metrics
        .record_request(method.as_str(), resp.status().as_u16(), started.elapsed());
    Ok(resp)
}

async fn dispatch(app: &Arc<App>, remote: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let is_get = method == Method::GET || method == Method::HEAD;
    // Public pages: no login needed.
    match (path.as_str(), is_get) {
        ("/" | "/status", true) => return status::html(app),
        ("/status.json", true) => return status::json(app),
        ("/healthz", true) => return text(StatusCode::OK, "ok\n"),
        ("/metrics", true) => return app.metrics.render(app),
        _ => {}
    }
    let local = paths::parse(&path);
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
    let login = match auth::authenticate(app, remote.ip(), req.headers()).await {
        AuthOutcome::Ok(login) => login,
        AuthOutcome::Challenge => return auth::challenge(false),
        AuthOutcome::Wrong => return auth::challenge(true),
    };
    let Some(account) = app.account(&login.account).cloned() else {
        return text(
            StatusCode::FORBIDDEN,
            &format!(
                "login {} belongs to account {}, which is not in the configuration\n",
                login.name, login.account
            ),
        );
    };
    let origin = public_origin(app, &req);
    dav::handle(app, &account, req, &origin).await
}

/// A small plain-text response.
pub fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
