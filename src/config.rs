//! Typed configuration: the TOML file parsed once with serde, validated, and resolved
//! (relative paths against the config file's directory, env overrides applied).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use crate::secret::Secret;

/// Everything that can be wrong with a configuration, each in one sentence.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub accounts: Vec<AccountConfig>,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    /// How contacts reach clients (`[carddav]`).
    pub carddav: CardDavConfig,
    pub notify: NotifyConfig,
    /// Limits on what clients may send.
    pub limits: LimitsConfig,
    /// WebDAV-Push (`[push]`).
    pub push: PushConfig,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tls_listen: Option<SocketAddr>,
    pub imap_listen: Option<SocketAddr>,
    pub imaps_listen: Option<SocketAddr>,
    pub smtp_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub certs_dir: PathBuf,
    /// Public base URL shown on the status page and used in absolute links
    /// (defaults to `http://<listen>`).
    pub public_url: Option<Url>,
    /// Plain HTTP, IMAP and SMTP listeners may use a non-loopback address
    /// (`server.allow_plaintext_lan`): every device login then crosses the network in clear.
    pub allow_plaintext_lan: bool,
}

impl ServerConfig {
    /// The first plaintext listener (HTTP, IMAP with STARTTLS, SMTP with STARTTLS) on an
    /// address other devices can reach, unless `allow_plaintext_lan` says that is wanted:
    /// (its config key, its address).
    pub fn plaintext_on_lan(&self) -> Option<(&'static str, SocketAddr)> {
        if self.allow_plaintext_lan {
            return None;
        }
        [
            ("server.listen", Some(self.listen)),
            ("server.imap_listen", self.imap_listen),
            ("server.smtp_listen", self.smtp_listen),
        ]
        .into_iter()
        .find_map(|(key, addr)| {
            addr.filter(|a| !crate::net::is_loopback(a.ip()))
                .map(|a| (key, a))
        })
    }
}

#[derive(Clone)]
pub struct AccountConfig {
    pub name: String,
    pub apple_id: String,
    pub password_file: Option<PathBuf>,
    pub password_command: Option<String>,
}

impl fmt::Debug for AccountConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountConfig")
            .field("name", &self.name)
            .field("apple_id", &self.apple_id)
            .field("password_file", &self.password_file)
            .field(
                "password_command",
                &self.password_command.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

/// Which kind of server sits upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    /// iCloud (or its stand-in): app-specific password rules, partition hosts.
    #[default]
    Icloud,
    /// Any standards-following DAV server (Radicale, Nextcloud, ...).
    Generic,
}

/// Which form of the Apple ID the bridge logs in to iCloud's IMAP server with (reference B4:
/// Apple's old guidance is the local part, recent reports say the full address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ImapUser {
    /// `alice@icloud.com` (the default).
    #[default]
    Address,
    /// `alice`.
    LocalPart,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub kind: UpstreamKind,
    pub caldav: Url,
    pub carddav: Url,
    pub imap: Url,
    /// The IMAP user-name form (`upstream.imap_user`).
    pub imap_user: ImapUser,
    pub smtp: Url,
    pub ca_file: Option<PathBuf>,
    pub timeout_secs: u64,
    pub auth_probe_secs: u64,
    pub max_concurrent: usize,
    /// Further origins (scheme, host, port) that upstream DAV answers name for contact
    /// photos and attachments (`upstream.asset_origins`); the credential goes there only
    /// to fetch such links.
    pub asset_origins: Vec<Url>,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub max_bytes: u64,
    pub fresh_secs: u64,
}

/// `[carddav]`: how contacts reach clients.
#[derive(Debug, Clone)]
pub struct CardDavConfig {
    /// `inline` (the default): contact photos iCloud keeps by URL are fetched with the stored
    /// password and put into the vCards clients get, so that no client meets a second login
    /// for an image; `link`: they stay bridge URLs behind the device login.
    pub photos: Photos,
    /// Photos larger than this stay links (`carddav.max_photo_bytes`, default 1 MiB).
    pub max_photo_bytes: usize,
    /// Serve a read-only Birthdays calendar per account, made from the contacts' birthdays
    /// and anniversaries (`carddav.birthdays`, default true).
    pub birthdays: bool,
}

/// `carddav.photos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Photos {
    Inline,
    Link,
}

/// `[notify]`: telling the operator about changes of an account's state.
#[derive(Clone)]
pub struct NotifyConfig {
    /// POSTed on every notified change (may hold a token in its path: never logged whole).
    pub webhook: Option<Url>,
    /// How long `unreachable` / `rate_limited` must last before they are notified.
    pub min_secs: u64,
    /// Remind once per credential when it is older than this many days.
    pub warn_after_days: Option<u64>,
    /// Key for the `X-Icloud-Bridge-Signature: sha256=<hex HMAC-SHA256 of the body>` header.
    pub secret: Option<Secret>,
    /// Serve a read-only calendar "icloud-bridge" per account that holds an all-day event
    /// for today while the account needs attention (`notify.calendar`, default false).
    pub calendar: bool,
}

impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("webhook", &self.webhook.as_ref().map(url_origin))
            .field("min_secs", &self.min_secs)
            .field("warn_after_days", &self.warn_after_days)
            .field("secret", &self.secret.as_ref().map(|_| "<set>"))
            .field("calendar", &self.calendar)
            .finish()
    }
}

/// `[push]`: WebDAV-Push for DAVx5 and other clients (see `crate::push`).
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// Offer WebDAV-Push on calendars and address books (`push.enabled`, default true).
    pub enabled: bool,
    /// The push services the bridge may POST to (`push.allow`); nothing else is contacted.
    pub allow: Vec<PushAllow>,
    /// How often collections with subscribers are checked upstream (`push.poll_secs`,
    /// default 60; always longer than `cache.fresh_secs`, so that each check reaches iCloud).
    pub poll_secs: u64,
    /// The VAPID `sub` claim: how a push service can reach the operator.
    pub subject: String,
}

/// The push services allowed by default: the browsers' Web Push services and ntfy.sh
/// (UnifiedPush's usual distributor). A LAN service must be listed by the operator.
pub const DEFAULT_PUSH_ALLOW: &[&str] = &[
    "ntfy.sh",
    "*.push.services.mozilla.com",
    "fcm.googleapis.com",
    "*.notify.windows.com",
    "web.push.apple.com",
];
pub const DEFAULT_PUSH_SUBJECT: &str = "mailto:postmaster@localhost";

/// One `push.allow` entry: `host`, `*.domain` (any host below it) or an IP address, with an
/// optional `:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAllow {
    /// Lower case; for a wildcard the domain after `*.`.
    pub host: String,
    pub wildcard: bool,
    pub port: Option<u16>,
}

impl PushAllow {
    pub fn parse(s: &str) -> Option<PushAllow> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() || s.contains(['/', '@', '?', '#', ' ']) {
            return None;
        }
        let (wildcard, rest) = match s.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, s.as_str()),
        };
        // `[v6]:port`, `[v6]`, `host:port`, `host`, or a bare IPv6 address.
        let (host, port) = if let Some(r) = rest.strip_prefix('[') {
            let (h, after) = r.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?.parse().ok()?),
            };
            (h.to_string(), port)
        } else if rest.parse::<std::net::Ipv6Addr>().is_ok() {
            (rest.to_string(), None)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse().ok()?)),
                None => (rest.to_string(), None),
            }
        };
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let name_ok = !host.is_empty()
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if (wildcard && (is_ip || !host.contains('.'))) || !(is_ip || name_ok) {
            return None;
        }
        Some(PushAllow {
            host,
            wildcard,
            port,
        })
    }

    /// Whether a push resource on `host` (lower case, IPv6 without brackets) and `port`
    /// matches this entry.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        let host_ok = if self.wildcard {
            host.strip_suffix(&self.host)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
        } else {
            host == self.host
        };
        host_ok && self.port.is_none_or(|p| p == port)
    }
}

/// `scheme://host[:port]` of a URL: what may be logged of a webhook whose path or query
/// can carry a token.
pub fn url_origin(u: &Url) -> String {
    match (u.host_str(), u.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
        (Some(h), None) => format!("{}://{h}", u.scheme()),
        _ => format!("{}://", u.scheme()),
    }
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Largest request body accepted from a client (bytes); larger gets 413.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request body; slower gets 408.
    pub body_timeout_secs: u64,
    /// Connections one address may hold at once, over every front end together (an IPv6
    /// /64 four times that together, IPv4-mapped as IPv4); more are refused at once.
    pub max_connections_per_ip: usize,
    /// Total time a client gets for a request's headers, counted from the connection's
    /// start or the end of its previous request (not restarted by each byte); also how long
    /// an idle keep-alive connection stays open.
    pub header_timeout_secs: u64,
    /// Total time an IMAP or SMTP client gets from connecting until it has logged in.
    pub login_timeout_secs: u64,
    /// Request bodies held in memory at once, all clients together (bytes; one address may
    /// hold a quarter of it, or one `max_body_bytes` if more); a body that does not fit
    /// gets 503 with `Retry-After` before it is read.
    pub max_body_bytes_in_flight: usize,
}

/// Default `limits.max_connections_per_ip`: a household's phones, tablets and laptops each
/// keep a few connections per account and protocol (DAV clients 4-6, mail apps a few IMAP
/// sessions plus SMTP), so 64 leaves room for a busy device while one hostile address holds
/// a small share of the 1024 HTTP slots.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Smallest default `limits.max_body_bytes_in_flight` (64 MiB): client bodies are small in
/// practice (a PROPFIND or REPORT is a few KiB, an event or vCard rarely over 1 MiB), so
/// this admits every honest client at once while a flood of 10 MiB bodies costs at most
/// this much memory. It is at least twice `max_body_bytes` when that is raised.
pub const MIN_DEFAULT_BODIES_IN_FLIGHT: usize = 64 * 1024 * 1024;

// ----- raw serde shapes -----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    account: Vec<RawAccount>,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    carddav: RawCardDav,
    #[serde(default)]
    notify: RawNotify,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    push: RawPush,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    tls_listen: Option<String>,
    imap_listen: Option<String>,
    imaps_listen: Option<String>,
    smtp_listen: Option<String>,
    data_dir: Option<PathBuf>,
    certs_dir: Option<PathBuf>,
    public_url: Option<String>,
    allow_plaintext_lan: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: String,
    apple_id: String,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    kind: Option<UpstreamKind>,
    caldav: Option<String>,
    carddav: Option<String>,
    imap: Option<String>,
    imap_user: Option<ImapUser>,
    smtp: Option<String>,
    ca_file: Option<PathBuf>,
    timeout_secs: Option<u64>,
    auth_probe_secs: Option<u64>,
    max_concurrent: Option<usize>,
    asset_origins: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCache {
    max_bytes: Option<u64>,
    fresh_secs: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCardDav {
    photos: Option<Photos>,
    max_photo_bytes: Option<u64>,
    birthdays: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    webhook: Option<String>,
    min_secs: Option<u64>,
    warn_after_days: Option<u64>,
    secret: Option<String>,
    calendar: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPush {
    enabled: Option<bool>,
    allow: Option<Vec<String>>,
    poll_secs: Option<u64>,
    subject: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_body_bytes: Option<usize>,
    body_timeout_secs: Option<u64>,
    max_connections_per_ip: Option<usize>,
    header_timeout_secs: Option<u64>,
    login_timeout_secs: Option<u64>,
    max_body_bytes_in_flight: Option<usize>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8008";
pub const DEFAULT_CALDAV: &str = "https://caldav.icloud.com/";
pub const DEFAULT_CARDDAV: &str = "https://contacts.icloud.com/";
pub const DEFAULT_IMAP: &str = "imaps://imap.mail.me.com:993";
pub const DEFAULT_SMTP: &str = "smtp://smtp.mail.me.com:587";
/// Where iCloud keeps contact photos today (`PHOTO;VALUE=uri:https://gateway.icloud.com/...`).
pub const DEFAULT_ICLOUD_ASSET_ORIGINS: &[&str] = &["https://gateway.icloud.com"];

impl Config {
    /// Built-in defaults: no file at all.
    pub fn defaults() -> Config {
        // The raw defaults always validate; fall back to an explicit panic-free path.
        match Self::from_raw(RawConfig::default(), None) {
            Ok(c) => c,
            Err(e) => unreachable!("built-in defaults are valid: {e}"),
        }
    }

    /// Parse TOML text; `path` names the file in errors and anchors relative paths.
    pub fn from_toml(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path
                .map(Path::to_path_buf)
                .unwrap_or_else(|| "<config>".into()),
            message: describe_toml_error(text, &e),
        })?;
        Self::from_raw(raw, path)
    }

    /// Read and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, Some(path))
    }

    /// Resolve which file to use: explicit path, `$ICLOUD_BRIDGE_CONFIG`,
    /// `config/icloud-bridge.toml` if present, else built-in defaults; then apply the
    /// `ICLOUD_BRIDGE_LISTEN` and `ICLOUD_BRIDGE_DATA_DIR` overrides, and for containers
    /// `ICLOUD_BRIDGE_TLS_LISTEN`, `ICLOUD_BRIDGE_CERTS_DIR` and
    /// `ICLOUD_BRIDGE_ALLOW_PLAINTEXT_LAN` (`true`/`false`).
    pub fn resolve(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let env_path = std::env::var_os("ICLOUD_BRIDGE_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let mut cfg = if let Some(p) = explicit.map(Path::to_path_buf).or(env_path) {
            Self::load(&p)?
        } else {
            let default = Path::new("config/icloud-bridge.toml");
            if default.exists() {
                Self::load(default)?
            } else {
                Self::defaults()
            }
        };
        if let Ok(v) = std::env::var("ICLOUD_BRIDGE_LISTEN") {
            if !v.is_empty() {
                cfg.server.listen = parse_addr("ICLOUD_BRIDGE_LISTEN", &v)?;
            }
        }
        if let Some(v) = std::env::var_os("ICLOUD_BRIDGE_DATA_DIR") {
            if !v.is_empty() {
                cfg.server.data_dir = PathBuf::from(v);
            }
        }
        if let Ok(v) = std::env::var("ICLOUD_BRIDGE_TLS_LISTEN") {
            if !v.is_empty() {
                cfg.server.tls_listen = Some(parse_addr("ICLOUD_BRIDGE_TLS_LISTEN", &v)?);
            }
        }
        if let Some(v) = std::env::var_os("ICLOUD_BRIDGE_CERTS_DIR") {
            if !v.is_empty() {
                cfg.server.certs_dir = PathBuf::from(v);
            }
        }
        if let Ok(v) = std::env::var("ICLOUD_BRIDGE_ALLOW_PLAINTEXT_LAN") {
            cfg.server.allow_plaintext_lan = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" | "" => false,
                _ => {
                    return Err(invalid(
                        "ICLOUD_BRIDGE_ALLOW_PLAINTEXT_LAN",
                        format!("{v:?} is not true or false"),
                    ))
                }
            };
        }
        Ok(cfg)
    }

    fn from_raw(raw: RawConfig, path: Option<&Path>) -> Result<Config, ConfigError> {
        let base = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let rel = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        Ok(Config {
            server: server_config(raw.server, &rel)?,
            accounts: account_configs(raw.account, &rel)?,
            upstream: upstream_config(raw.upstream, &rel)?,
            cache: CacheConfig {
                max_bytes: raw.cache.max_bytes.unwrap_or(64 * 1024 * 1024),
                fresh_secs: raw.cache.fresh_secs.unwrap_or(30),
            },
            carddav: carddav_config(raw.carddav)?,
            notify: notify_config(raw.notify)?,
            limits: limits_config(raw.limits)?,
            push: push_config(raw.push)?,
            source: path.map(Path::to_path_buf),
        })
    }

    /// The account with this name.
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.name == name)
    }

    /// The base URL clients use to reach the HTTP listener.
    pub fn public_base(&self) -> String {
        match &self.server.public_url {
            Some(u) => u.as_str().trim_end_matches('/').to_string(),
            None => format!("http://{}", self.server.listen),
        }
    }
}

/// Account names become URL path segments.
pub fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name != "."
        && name != ".."
}

fn positive(key: &str, v: u64) -> Result<u64, ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(v)
    }
}

fn parse_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim().parse().map_err(|_| {
        invalid(
            key,
            format!("{v:?} is not an address of the form IP:PORT (for example 127.0.0.1:8008)"),
        )
    })
}

fn parse_url(key: &str, v: &str, schemes: &[&str]) -> Result<Url, ConfigError> {
    let u = Url::parse(v.trim())
        .map_err(|e| invalid(key, format!("{v:?} is not a valid URL ({e})")))?;
    if !schemes.contains(&u.scheme()) {
        return Err(invalid(
            key,
            format!(
                "{v:?} has scheme {:?}; expected one of {}",
                u.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    if u.host_str().is_none() {
        return Err(invalid(key, format!("{v:?} has no host")));
    }
    Ok(u)
}

/// An origin (`scheme://host[:port]`, http or https, nothing after the host).
fn parse_origin(key: &str, v: &str) -> Result<Url, ConfigError> {
    let u = parse_url(key, v, &["http", "https"])?;
    if u.path() != "/" || u.query().is_some() || u.fragment().is_some() || !u.username().is_empty()
    {
        return Err(invalid(
            key,
            format!("{v:?} is not an origin: give only scheme://host[:port]"),
        ));
    }
    Ok(u)
}

/// Turn a toml error into one sentence naming the key and line.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            // Name the key of that line when the message does not (type errors); never
            // echo the value, which may be a secret.
            let key = text
                .lines()
                .nth(line - 1)
                .and_then(|l| l.split_once('='))
                .map(|(k, _)| k.trim())
                .filter(|k| {
                    !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                        && !msg.contains(*k)
                });
            match key {
                Some(k) => format!("line {line}, key `{k}`: {msg}"),
                None => format!("line {line}: {msg}"),
            }
        }
        None => msg,
    }
}

/// Resolves a path from the configuration against the config file's directory.
type Rel<'a> = &'a dyn Fn(PathBuf) -> PathBuf;

/// `[server]`.
fn server_config(s: RawServer, rel: Rel<'_>) -> Result<ServerConfig, ConfigError> {
    let opt_addr = |key: &str, v: Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
        v.map(|v| parse_addr(key, &v)).transpose()
    };
    Ok(ServerConfig {
        listen: parse_addr(
            "server.listen",
            s.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        )?,
        tls_listen: opt_addr("server.tls_listen", s.tls_listen)?,
        imap_listen: opt_addr("server.imap_listen", s.imap_listen)?,
        imaps_listen: opt_addr("server.imaps_listen", s.imaps_listen)?,
        smtp_listen: opt_addr("server.smtp_listen", s.smtp_listen)?,
        data_dir: rel(s.data_dir.unwrap_or_else(|| "data".into())),
        certs_dir: rel(s.certs_dir.unwrap_or_else(|| "certs".into())),
        public_url: s
            .public_url
            .map(|u| parse_url("server.public_url", &u, &["http", "https"]))
            .transpose()?,
        allow_plaintext_lan: s.allow_plaintext_lan.unwrap_or(false),
    })
}

/// `[[account]]`: valid, unique names; Apple IDs without spaces; readable password files.
fn account_configs(raw: Vec<RawAccount>, rel: Rel<'_>) -> Result<Vec<AccountConfig>, ConfigError> {
    let mut accounts = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let key = format!("account[{i}]");
        if !valid_account_name(&a.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!(
                    "{:?} is not a valid account name (use 1-64 letters, digits, '-', '_' or '.')",
                    a.name
                ),
            ));
        }
        if accounts.iter().any(|x: &AccountConfig| x.name == a.name) {
            return Err(invalid(
                format!("{key}.name"),
                format!("account name {:?} is used twice", a.name),
            ));
        }
        let apple_id = a.apple_id.trim().to_string();
        if apple_id.is_empty() || apple_id.chars().any(char::is_whitespace) {
            return Err(invalid(
                format!("{key}.apple_id"),
                "must be the Apple ID (an e-mail address) without spaces",
            ));
        }
        let password_file = a.password_file.map(rel);
        if let Some(pf) = &password_file {
            if !pf.is_file() {
                return Err(invalid(
                    format!("{key}.password_file"),
                    format!("{} is not a readable file", pf.display()),
                ));
            }
        }
        accounts.push(AccountConfig {
            name: a.name,
            apple_id,
            password_file,
            password_command: a.password_command.filter(|c| !c.trim().is_empty()),
        });
    }
    Ok(accounts)
}

/// `[upstream]`.
fn upstream_config(u: RawUpstream, rel: Rel<'_>) -> Result<UpstreamConfig, ConfigError> {
    let upstream = UpstreamConfig {
        kind: u.kind.unwrap_or_default(),
        caldav: parse_url(
            "upstream.caldav",
            u.caldav.as_deref().unwrap_or(DEFAULT_CALDAV),
            &["http", "https"],
        )?,
        carddav: parse_url(
            "upstream.carddav",
            u.carddav.as_deref().unwrap_or(DEFAULT_CARDDAV),
            &["http", "https"],
        )?,
        imap: parse_url(
            "upstream.imap",
            u.imap.as_deref().unwrap_or(DEFAULT_IMAP),
            &["imap", "imaps"],
        )?,
        imap_user: u.imap_user.unwrap_or_default(),
        smtp: parse_url(
            "upstream.smtp",
            u.smtp.as_deref().unwrap_or(DEFAULT_SMTP),
            &["smtp", "smtps"],
        )?,
        ca_file: u.ca_file.map(rel),
        timeout_secs: positive("upstream.timeout_secs", u.timeout_secs.unwrap_or(30))?,
        auth_probe_secs: positive("upstream.auth_probe_secs", u.auth_probe_secs.unwrap_or(900))?,
        max_concurrent: positive(
            "upstream.max_concurrent",
            u.max_concurrent.unwrap_or(8) as u64,
        )? as usize,
        asset_origins: match u.asset_origins {
            Some(list) => list
                .iter()
                .map(|o| parse_origin("upstream.asset_origins", o))
                .collect::<Result<_, _>>()?,
            None if u.kind.unwrap_or_default() == UpstreamKind::Icloud => {
                DEFAULT_ICLOUD_ASSET_ORIGINS
                    .iter()
                    .map(|o| parse_origin("upstream.asset_origins", o))
                    .collect::<Result<_, _>>()?
            }
            None => Vec::new(),
        },
    };
    if let Some(ca) = &upstream.ca_file {
        check_ca_file(ca)?;
    }
    Ok(upstream)
}

/// `upstream.ca_file` must be a file holding at least one PEM certificate
/// ([`crate::tls::ca_certificates`]).
fn check_ca_file(ca: &Path) -> Result<(), ConfigError> {
    if !ca.is_file() {
        return Err(invalid(
            "upstream.ca_file",
            format!("{} is not a readable file", ca.display()),
        ));
    }
    crate::tls::ca_certificates(ca)
        .map(drop)
        .map_err(|e| invalid("upstream.ca_file", e))
}

/// `[carddav]`.
fn carddav_config(c: RawCardDav) -> Result<CardDavConfig, ConfigError> {
    Ok(CardDavConfig {
        photos: c.photos.unwrap_or(Photos::Inline),
        max_photo_bytes: usize::try_from(positive(
            "carddav.max_photo_bytes",
            c.max_photo_bytes.unwrap_or(1 << 20),
        )?)
        .unwrap_or(usize::MAX),
        birthdays: c.birthdays.unwrap_or(true),
    })
}

/// `[notify]`.
fn notify_config(n: RawNotify) -> Result<NotifyConfig, ConfigError> {
    Ok(NotifyConfig {
        webhook: n
            .webhook
            .map(|w| parse_url("notify.webhook", &w, &["http", "https"]))
            .transpose()?,
        min_secs: n.min_secs.unwrap_or(300),
        warn_after_days: n
            .warn_after_days
            .map(|d| positive("notify.warn_after_days", d))
            .transpose()?,
        secret: match n.secret {
            Some(s) if s.trim().is_empty() => {
                return Err(invalid(
                    "notify.secret",
                    "must not be empty (leave it out instead)",
                ))
            }
            Some(s) => Some(Secret::new(s)),
            None => None,
        },
        calendar: n.calendar.unwrap_or(false),
    })
}

/// `[push]`.
fn push_config(p: RawPush) -> Result<PushConfig, ConfigError> {
    let allow = match p.allow {
        None => DEFAULT_PUSH_ALLOW
            .iter()
            .map(|a| PushAllow::parse(a))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("push.allow", "the built-in list is invalid"))?,
        Some(list) => list
            .iter()
            .map(|a| {
                PushAllow::parse(a).ok_or_else(|| {
                    invalid(
                        "push.allow",
                        format!("{a:?} is not a host pattern (a host name, an IP address or `*.domain`, optionally with `:port`; no scheme or path)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    let subject = p
        .subject
        .unwrap_or_else(|| DEFAULT_PUSH_SUBJECT.to_string());
    if !(subject.starts_with("mailto:") || subject.starts_with("https://")) || subject.len() < 9 {
        return Err(invalid(
            "push.subject",
            "must be a mailto: or https: URI (the push services' contact for this bridge)",
        ));
    }
    Ok(PushConfig {
        enabled: p.enabled.unwrap_or(true),
        allow,
        poll_secs: positive("push.poll_secs", p.poll_secs.unwrap_or(60))?,
        subject,
    })
}

/// `[limits]`.
fn limits_config(l: RawLimits) -> Result<LimitsConfig, ConfigError> {
    let max_body_bytes = positive(
        "limits.max_body_bytes",
        l.max_body_bytes.unwrap_or(10 * 1024 * 1024) as u64,
    )? as usize;
    let max_body_bytes_in_flight = match l.max_body_bytes_in_flight {
        None => MIN_DEFAULT_BODIES_IN_FLIGHT.max(max_body_bytes.saturating_mul(2)),
        Some(n) if n < max_body_bytes => {
            return Err(invalid(
                "limits.max_body_bytes_in_flight",
                format!("must be at least limits.max_body_bytes ({max_body_bytes}), or no large body could ever be accepted"),
            ))
        }
        Some(n) => n,
    };
    Ok(LimitsConfig {
        max_body_bytes,
        body_timeout_secs: positive(
            "limits.body_timeout_secs",
            l.body_timeout_secs.unwrap_or(60),
        )?,
        max_connections_per_ip: positive(
            "limits.max_connections_per_ip",
            l.max_connections_per_ip
                .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_IP) as u64,
        )? as usize,
        header_timeout_secs: positive(
            "limits.header_timeout_secs",
            l.header_timeout_secs.unwrap_or(30),
        )?,
        login_timeout_secs: positive(
            "limits.login_timeout_secs",
            l.login_timeout_secs.unwrap_or(60),
        )?,
        max_body_bytes_in_flight,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let c = Config::defaults();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8008");
        assert_eq!(c.upstream.caldav.as_str(), DEFAULT_CALDAV);
        assert_eq!(c.upstream.auth_probe_secs, 900);
        assert_eq!(c.upstream.max_concurrent, 8);
        assert_eq!(c.cache.fresh_secs, 30);
        assert!(c.accounts.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = Config::from_toml(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisten_addr = 3\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("listen_addr"), "{err}");
    }

    #[test]
    fn bad_address_names_the_key() {
        let err = Config::from_toml("[server]\nlisten = \"localhost\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("server.listen"), "{err}");
    }

    #[test]
    fn bad_url_scheme_is_refused() {
        let err = Config::from_toml("[upstream]\ncaldav = \"ftp://x/\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("upstream.caldav"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let c = Config::from_toml(
            "[server]\ndata_dir = \"state\"\n",
            Some(Path::new("/etc/ib/icloud-bridge.toml")),
        )
        .unwrap();
        assert_eq!(c.server.data_dir, PathBuf::from("/etc/ib/state"));
    }

    #[test]
    fn ca_file_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let load = |content: &str| {
            let path = dir.path().join("ca.pem");
            std::fs::write(&path, content).unwrap();
            Config::from_toml(&format!("[upstream]\nca_file = {path:?}\n"), None)
        };
        let err = load("not a certificate\n").unwrap_err().to_string();
        assert!(err.contains("upstream.ca_file"), "{err}");
        assert!(err.contains("holds no certificate"), "{err}");
        // A private key alone is no trust root either.
        let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let err = load(&key).unwrap_err().to_string();
        assert!(err.contains("holds no certificate"), "{err}");
        let cert = rcgen::generate_simple_self_signed(vec!["up.test".into()])
            .unwrap()
            .cert
            .pem();
        let c = load(&format!("{key}{cert}")).unwrap();
        assert_eq!(c.upstream.ca_file, Some(dir.path().join("ca.pem")));
        let err = Config::from_toml("[upstream]\nca_file = \"/nonexistent/ca.pem\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a readable file"), "{err}");
    }

    #[test]
    fn missing_password_file_is_named() {
        let err = Config::from_toml(
            "[[account]]\nname = \"a\"\napple_id = \"a@icloud.com\"\npassword_file = \"/nonexistent/x\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("account[0].password_file"), "{err}");
    }

    #[test]
    fn the_example_config_is_valid_and_matches_the_defaults() {
        let text = include_str!("../config/icloud-bridge.example.toml");
        let c = Config::from_toml(text, None).unwrap();
        let d = Config::defaults();
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.upstream.caldav, d.upstream.caldav);
        assert_eq!(c.upstream.timeout_secs, d.upstream.timeout_secs);
        assert_eq!(c.cache.max_bytes, d.cache.max_bytes);
        assert_eq!(c.limits.max_body_bytes, d.limits.max_body_bytes);
        assert_eq!(c.limits.body_timeout_secs, d.limits.body_timeout_secs);
        assert_eq!(
            c.limits.max_connections_per_ip,
            d.limits.max_connections_per_ip
        );
        assert_eq!(c.limits.header_timeout_secs, d.limits.header_timeout_secs);
        assert_eq!(c.limits.login_timeout_secs, d.limits.login_timeout_secs);
        assert_eq!(
            c.limits.max_body_bytes_in_flight,
            d.limits.max_body_bytes_in_flight
        );
        assert_eq!(c.notify.min_secs, d.notify.min_secs);
        assert_eq!(c.notify.min_secs, 300);
        assert!(c.notify.webhook.is_none() && d.notify.webhook.is_none());
        assert_eq!(c.notify.warn_after_days, d.notify.warn_after_days);
        assert!(c.notify.secret.is_none());
        assert_eq!(c.push.allow, d.push.allow);
        assert_eq!(
            (c.push.enabled, c.push.poll_secs, &c.push.subject),
            (d.push.enabled, d.push.poll_secs, &d.push.subject)
        );
        // The commented [notify] block documents every key and is itself valid.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with("[notify]")
                        || [
                            "webhook",
                            "min_secs",
                            "warn_after_days",
                            "secret",
                            "calendar",
                        ]
                        .iter()
                        .any(|k| rest.starts_with(&format!("{k} ="))) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let n = Config::from_toml(&uncommented, None).unwrap();
        assert!(n.notify.webhook.is_some() && n.notify.secret.is_some());
        assert!(n.notify.warn_after_days.is_some());
        assert!(n.notify.calendar && !c.notify.calendar && c.carddav.birthdays);
    }

    #[test]
    fn push_keys_are_validated() {
        let c = Config::from_toml(
            "[push]\nallow = [\"192.168.1.10:8080\", \"*.push.example\"]\npoll_secs = 5\n",
            None,
        )
        .unwrap();
        assert_eq!(c.push.allow.len(), 2);
        assert!(c.push.allow[1].wildcard && c.push.poll_secs == 5 && c.push.enabled);
        for (toml, key) in [
            ("[push]\nallow = [\"https://ntfy.sh/\"]\n", "push.allow"),
            ("[push]\nallow = [\"*\"]\n", "push.allow"),
            ("[push]\npoll_secs = 0\n", "push.poll_secs"),
            ("[push]\nsubject = \"me\"\n", "push.subject"),
        ] {
            let err = Config::from_toml(toml, None).unwrap_err().to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        assert!(Config::from_toml("[push]\nallowed = []\n", None).is_err());
        assert!(
            !Config::from_toml("[push]\nenabled = false\n", None)
                .unwrap()
                .push
                .enabled
        );
    }

    #[test]
    fn notify_keys_are_validated_and_secrets_stay_out_of_debug() {
        let err = Config::from_toml("[notify]\nwebhook = \"ftp://x/topic\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("notify.webhook"), "{err}");
        let err = Config::from_toml("[notify]\nwarn_after_days = 0\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("notify.warn_after_days"), "{err}");
        let err = Config::from_toml("[notify]\nmin_secs = \"x\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("min_secs"), "{err}");
        let err = Config::from_toml("[notify]\nwebhok = \"https://a/\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("webhok"), "{err}");
        let c = Config::from_toml(
            "[notify]\nwebhook = \"https://ntfy.example:8443/tok3n-topic?auth=q\"\nsecret = \"s3cr3t-key\"\nmin_secs = 0\n",
            None,
        )
        .unwrap();
        assert_eq!(c.notify.min_secs, 0);
        let dbg = format!("{c:?}");
        assert!(dbg.contains("https://ntfy.example:8443"), "{dbg}");
        assert!(!dbg.contains("tok3n") && !dbg.contains("s3cr3t"), "{dbg}");
    }

    #[test]
    fn limits_defaults_and_validation() {
        let d = Config::defaults().limits;
        assert_eq!(d.max_connections_per_ip, 64);
        assert_eq!(d.header_timeout_secs, 30);
        assert_eq!(d.login_timeout_secs, 60);
        assert_eq!(d.max_body_bytes_in_flight, 64 * 1024 * 1024);
        // A raised body limit raises the default budget with it.
        let c = Config::from_toml("[limits]\nmax_body_bytes = 52428800\n", None).unwrap();
        assert_eq!(c.limits.max_body_bytes_in_flight, 100 * 1024 * 1024);
        let err = Config::from_toml(
            "[limits]\nmax_body_bytes = 1000\nmax_body_bytes_in_flight = 999\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("limits.max_body_bytes_in_flight"), "{err}");
        for key in [
            "max_connections_per_ip",
            "header_timeout_secs",
            "login_timeout_secs",
        ] {
            let err = Config::from_toml(&format!("[limits]\n{key} = 0\n"), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("limits.{key}")), "{err}");
        }
    }

    #[test]
    fn imap_user_form() {
        assert_eq!(Config::defaults().upstream.imap_user, ImapUser::Address);
        let c = Config::from_toml("[upstream]\nimap_user = \"local_part\"\n", None).unwrap();
        assert_eq!(c.upstream.imap_user, ImapUser::LocalPart);
        let err = Config::from_toml("[upstream]\nimap_user = \"x\"\n", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("imap_user"), "{err}");
    }

    #[test]
    fn duplicate_account_is_refused() {
        let err = Config::from_toml(
            "[[account]]\nname = \"a\"\napple_id = \"a@icloud.com\"\n[[account]]\nname = \"a\"\napple_id = \"b@icloud.com\"\n",
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("used twice"), "{err}");
    }
}
