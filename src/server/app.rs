//! The shared application state and the HTTP service: public pages, local authentication,
//! then the DAV router.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::config::Config;
use crate::dav;
use crate::dav::paths::{self, Local};
use crate::dav::respond::{full, Body};
use crate::dav::task_lists::TaskList;
use crate::server::admin::{self, AdminState};
use crate::server::auth::{self, AuthOutcome};
use crate::server::limits::{BodyBudget, ConnLimit};
use crate::server::logins::LoginStore;
use crate::server::metrics::Metrics;
use crate::server::status;
use crate::server::throttle::FailureThrottle;
use crate::upstream::client::Upstream;
use crate::upstream::credential;
use crate::upstream::state::{Account, Persisted, StateEvent};
use crate::upstream::vault::{write_atomic, Vault};

/// The accounts by name, swappable at run time (readers take a cheap snapshot).
pub type AccountSnapshot = Arc<BTreeMap<String, Arc<Account>>>;

#[derive(Clone, Default)]
struct AccountMap(Arc<RwLock<AccountSnapshot>>);

impl AccountMap {
    fn snapshot(&self) -> AccountSnapshot {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub config: Config,
    /// The accounts served; swapped whole when the setup page adds one.
    accounts: AccountMap,
    pub logins: LoginStore,
    pub throttle: FailureThrottle,
    /// Connections per address, every front end together.
    pub conns: ConnLimit,
    /// Request bodies held in memory at once.
    pub bodies: BodyBudget,
    pub upstream: Upstream,
    pub vault: Vault,
    pub metrics: Arc<Metrics>,
    pub cache: crate::cache::Cache,
    /// Signs and opens the `_up` links for photos and attachments.
    pub links: Arc<crate::dav::links::Links>,
    /// The names the operator's pages answer to (see [`crate::server::host_check`]).
    pub own_names: crate::server::host_check::OwnNames,
    pub started: Instant,
    /// CSRF key and the one-time setup token of the operator's forms.
    pub admin: AdminState,
    /// State changes of every account, for the notifier (taken once by `notify::spawn`).
    events: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<StateEvent>>>,
    /// The sending end, for accounts added at run time.
    events_tx: tokio::sync::mpsc::UnboundedSender<StateEvent>,
    /// `tls_listen` as bound (set once by the listener).
    tls_addr: std::sync::OnceLock<SocketAddr>,
    /// Per account, the task lists (VTODO-only calendars) the latest home listing showed.
    task_lists: Mutex<std::collections::HashMap<String, Vec<TaskList>>>,
}

/// Request extension: the request came in over TLS (`tls_listen`).
#[derive(Debug, Clone, Copy)]
pub struct ViaTls;

impl App {
    pub fn new(config: Config) -> Result<App, String> {
        crate::upstream::vault::ensure_private_dir(&config.server.data_dir).map_err(|e| {
            format!(
                "cannot create data_dir {}: {e}",
                config.server.data_dir.display()
            )
        })?;
        warn_if_open(&config.server.data_dir);
        let upstream = Upstream::new(&config.upstream)?;
        let logins = LoginStore::open(&config.server.data_dir).map_err(|e| e.to_string())?;
        let vault = Vault::open(&config.server.data_dir);
        let links = Arc::new(crate::dav::links::Links::open(&config.server.data_dir)?);
        let admin = AdminState::new(logins.is_empty());
        let mut config = config;
        crate::server::stored_accounts::merge(&mut config);
        let mut accounts = BTreeMap::new();
        for a in &config.accounts {
            let acc = new_account(&config, a.clone());
            accounts.insert(a.name.clone(), Arc::new(acc));
        }
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let app = App {
            accounts: AccountMap(Arc::new(RwLock::new(Arc::new(accounts)))),
            logins,
            throttle: FailureThrottle::new(),
            conns: ConnLimit::new(config.limits.max_connections_per_ip),
            bodies: BodyBudget::new(
                config.limits.max_body_bytes_in_flight,
                config.limits.max_body_bytes,
            ),
            upstream,
            vault,
            metrics: Arc::new(Metrics::default()),
            cache: crate::cache::Cache::new(&config.cache),
            links,
            own_names: crate::server::host_check::OwnNames::new(&config.server),
            started: Instant::now(),
            admin,
            config,
            events: Mutex::new(Some(events_rx)),
            events_tx,
            tls_addr: std::sync::OnceLock::new(),
            task_lists: Mutex::new(std::collections::HashMap::new()),
        };
        // The credential first: what state.json says about it applies only if unchanged.
        app.reload_credentials();
        app.load_state();
        for acc in app.accounts().values() {
            acc.set_events(app.events_tx.clone());
        }
        Ok(app)
    }

    /// The receiving end of every account's state changes (once).
    pub fn take_events(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<StateEvent>> {
        self.events.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Resolve every account's credential again (vault, file, command, env).
    pub fn reload_credentials(&self) {
        let accounts = self.accounts();
        let single = accounts.len() == 1;
        for acc in accounts.values() {
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
            for (name, acc) in accounts.snapshot().iter() {
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
        for (name, acc) in self.accounts().iter() {
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

    /// Record where `tls_listen` was bound (the first call wins).
    pub fn set_tls_addr(&self, addr: SocketAddr) {
        let _ = self.tls_addr.set(addr);
    }

    /// What the latest calendar-home listing of `account` showed of task lists.
    pub fn note_task_lists(&self, account: &str, lists: Vec<TaskList>) {
        self.task_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.to_string(), lists);
    }

    /// The task lists last seen for `account` (none before a client listed its calendars).
    pub fn task_lists(&self, account: &str) -> Vec<TaskList> {
        self.task_lists
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(account)
            .cloned()
            .unwrap_or_default()
    }

    /// The HTTPS listener's address, once bound.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr.get().copied()
    }

    /// The account a login belongs to.
    pub fn account(&self, name: &str) -> Option<Arc<Account>> {
        self.accounts().get(name).cloned()
    }

    /// A snapshot of the accounts served now.
    pub fn accounts(&self) -> AccountSnapshot {
        self.accounts.snapshot()
    }

    /// Serve one more account from now on (no-op if the name is taken); returns the account
    /// now registered under that name.
    pub fn add_account(&self, config: crate::config::AccountConfig) -> Arc<Account> {
        let mut guard = self
            .accounts
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = guard.get(&config.name) {
            return existing.clone();
        }
        let acc = Arc::new(new_account(&self.config, config));
        acc.set_events(self.events_tx.clone());
        let mut map = BTreeMap::clone(&guard);
        map.insert(acc.name().to_string(), acc.clone());
        *guard = Arc::new(map);
        acc
    }
}

/// data_dir holds the vault, the logins' hashes and the link key: say so when other users
/// of the machine may read it (a mode the operator chose is left as it is).
fn warn_if_open(dir: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    data_dir = %dir.display(),
                    mode = format!("{mode:o}"),
                    "data_dir is open to other users of this machine; it holds the app-specific password: run `chmod 700` on it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// An account as this configuration serves it (SMTP counts when `smtp_listen` is set).
fn new_account(config: &Config, account: crate::config::AccountConfig) -> Account {
    Account::new(
        account,
        config.upstream.kind,
        std::time::Duration::from_secs(config.upstream.auth_probe_secs),
        config.upstream.max_concurrent,
    )
    .with_served(crate::upstream::state::served_for(&config.server))
}

/// How the client reached us (`http://host:port`, or `https://` over `tls_listen`), for
/// absolute URLs in bodies.
fn public_origin(app: &App, req: &Request<Incoming>) -> String {
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

impl App {
    /// The base URL of the HTTPS listener (`https://host:port`), if `tls_listen` is bound and
    /// `public_url` is not already https. `host` is how the reader named this machine (a
    /// `Host` header, port included or not); without one, the listen addresses decide.
    pub fn https_base(&self, host: Option<&str>) -> Option<String> {
        let tls = self.tls_addr()?;
        if self
            .config
            .server
            .public_url
            .as_ref()
            .is_some_and(|u| u.scheme() == "https")
        {
            return None;
        }
        let from_header = host
            .and_then(|h| url::Url::parse(&format!("http://{h}/")).ok())
            .and_then(|u| u.host_str().map(str::to_string));
        let name = from_header.unwrap_or_else(|| {
            let ip = [tls.ip(), self.config.server.listen.ip()]
                .into_iter()
                .find(|ip| !ip.is_unspecified());
            match ip {
                Some(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
                Some(ip) => ip.to_string(),
                None => "localhost".to_string(),
            }
        });
        Some(format!("https://{name}:{}", tls.port()))
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
fn page_base(app: &App, req: &Request<Incoming>) -> String {
    if app.config.server.public_url.is_some() {
        app.config.public_base()
    } else {
        public_origin(app, req)
    }
}

/// The success note after a reconnect (`/status?reconnected=NAME`), for a known account only.
fn status_note(app: &App, req: &Request<Incoming>) -> Option<String> {
    let q = req.uri().query()?;
    let name = url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == "reconnected")
        .map(|(_, v)| v.into_owned())?;
    let acc = app.account(&name)?;
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
pub async fn service(
    app: Arc<App>,
    remote: SocketAddr,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    host_from_authority(&mut req);
    let method = req.method().clone();
    let started = Instant::now();
    let resp = dispatch(&app, remote, req).await;
    app.metrics
        .record_request(method.as_str(), resp.status().as_u16(), started.elapsed());
    Ok(resp)
}

async fn dispatch(app: &Arc<App>, remote: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    // A clone of the URI shares its bytes: the path is borrowed, not copied.
    let uri = req.uri().clone();
    let path = uri.path();
    let method = req.method().clone();
    let is_get = method == Method::GET || method == Method::HEAD;
    let page = matches!(
        (path, is_get),
        (
            "/" | "/status" | "/status.json" | "/ca.pem" | "/metrics",
            true
        )
    ) || path == "/setup"
        || path.starts_with("/admin/");
    if page {
        let host = req
            .headers()
            .get(http::header::HOST)
            .map(|h| h.to_str().unwrap_or(""));
        if !app.own_names.allows(host) {
            return text(
                StatusCode::MISDIRECTED_REQUEST,
                "This bridge's pages answer only to its own names and addresses. If this is how you reach it, set [server] public_url to this address.\n",
            );
        }
    }
    // Public pages: no login needed.
    match (path, is_get) {
        ("/" | "/status", true) => {
            let note = status_note(app, &req);
            let base = page_base(app, &req);
            let https = if base.starts_with("https://") {
                None
            } else {
                let host = req
                    .headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok());
                app.https_base(host)
            };
            return status::html(app, &base, https.as_deref(), note.as_deref());
        }
        ("/status.json", true) => return status::json(app),
        ("/healthz", true) => return text(StatusCode::OK, "ok\n"),
        ("/ca.pem", true) => return ca_pem(app).await,
        ("/metrics", true) => return app.metrics.render(app),
        _ => {}
    }
    // The operator's forms check their own logins, tokens and origins.
    match path {
        "/admin/reconnect" => return admin::reconnect(app, remote, req).await,
        "/setup" => {
            let base = page_base(app, &req);
            return admin::setup(app, req, &base).await;
        }
        _ => {}
    }
    let local = paths::parse(path);
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
    let Some(account) = app.account(&login.account) else {
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
