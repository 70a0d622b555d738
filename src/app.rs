//! The composition root: builds every shared part of the bridge once (accounts, local
//! logins, upstream client, cache, limits, metrics) and hands them to the front ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::accounts::Accounts;
use crate::auth::csrf::AdminState;
use crate::auth::logins::LoginStore;
use crate::config::Config;
use crate::limits::{BodyBudget, ConnLimit};
use crate::metrics::Metrics;
use crate::start::StartError;
use crate::upstream::client::Upstream;

/// Everything a request handler needs, shared by all connections.
pub struct App {
    pub config: Config,
    /// The accounts served, their credentials and state.
    pub accounts: Arc<Accounts>,
    /// Local logins and the throttle of wrong ones.
    pub auth: Arc<crate::auth::LocalAuth>,
    /// Connections per address, every front end together.
    pub conns: Arc<ConnLimit>,
    pub upstream: Upstream,
    /// The DAV tree: cache, links, body budget.
    pub dav: crate::dav::Dav,
    pub metrics: Arc<Metrics>,
    /// The names the operator's pages answer to (see [`crate::auth::host_check`]).
    pub own_names: crate::auth::host_check::OwnNames,
    pub started: Instant,
    /// CSRF key and the one-time setup token of the operator's forms.
    pub admin: AdminState,
    /// WebDAV-Push (`[push] enabled`).
    pub push: Option<Arc<crate::push::Push>>,
    /// `tls_listen` as bound (set once by the listener).
    tls_addr: std::sync::OnceLock<SocketAddr>,
}

impl App {
    pub fn new(config: Config) -> Result<App, StartError> {
        crate::files::ensure_private_dir(&config.server.data_dir).map_err(|source| {
            StartError::File {
                action: "create data_dir",
                path: config.server.data_dir.clone(),
                source,
            }
        })?;
        warn_if_open(&config.server.data_dir);
        let upstream = Upstream::new(&config.upstream)?;
        let logins = LoginStore::open(&config.server.data_dir).map_err(|e| StartError::Logins {
            detail: e.to_string(),
        })?;
        let links = Arc::new(crate::dav::links::Links::open(&config.server.data_dir)?);
        let admin = AdminState::new(logins.is_empty());
        let push = if config.push.enabled {
            Some(Arc::new(crate::push::Push::open(
                &config.push,
                config.cache.fresh_secs,
                &config.server.data_dir,
            )?))
        } else {
            None
        };
        let mut config = config;
        crate::accounts::stored::merge(&mut config);
        Ok(App {
            accounts: Accounts::open(&config),
            auth: Arc::new(crate::auth::LocalAuth::new(logins)),
            conns: Arc::new(ConnLimit::new(config.limits.max_connections_per_ip)),
            dav: crate::dav::Dav::new(
                upstream.clone(),
                crate::cache::Cache::new(&config.cache),
                links,
                crate::dav::photos::PhotoStore::new(&config.carddav, config.cache.max_bytes),
                BodyBudget::new(
                    config.limits.max_body_bytes_in_flight,
                    config.limits.max_body_bytes,
                ),
                config.limits.clone(),
            )
            .with_several_accounts(config.accounts.len() > 1)
            .with_calendars(crate::dav::virtual_cal::VirtualCalendars::new(&config)),
            upstream,
            metrics: Arc::new(Metrics::default()),
            own_names: crate::auth::host_check::OwnNames::new(&config.server),
            started: Instant::now(),
            admin,
            push,
            config,
            tls_addr: std::sync::OnceLock::new(),
        })
    }

    /// Record where `tls_listen` was bound (the first call wins).
    pub fn set_tls_addr(&self, addr: SocketAddr) {
        let _ = self.tls_addr.set(addr);
    }

    /// The HTTPS listener's address, once bound.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr.get().copied()
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
