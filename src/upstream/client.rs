//! The upstream HTTP client: sends one request to iCloud with the stored credential,
//! classifies what comes back, follows partition moves and falls back to the front host
//! when a partition host stops answering.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use url::Url;

use crate::config::UpstreamConfig;
use crate::start::StartError;
use crate::upstream::error::{parse_retry_after, retry_secs, Unreachable, UpstreamError};
use crate::upstream::gate::Gate;
use crate::upstream::response::Response;
use crate::upstream::service::Service;

/// The pooled HTTP/1.1 and HTTP/2 client (rustls; plain http only where configured).
type Pool = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

/// Why no answer came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendError {
    /// No response headers within `timeout_secs`.
    Timeout,
    /// Connecting failed: nothing was sent.
    Connect,
    /// The TLS handshake failed (a certificate, a protocol): nothing was sent.
    Tls,
    /// The connection broke after the request went out, or the URL is not one hyper takes.
    Broken,
}

impl SendError {
    fn of(e: &hyper_util::client::legacy::Error) -> SendError {
        if !e.is_connect() {
            return SendError::Broken;
        }
        // The connector's error chain names a certificate or TLS problem; nothing else
        // tells the two apart.
        let text = format!("{e:?}").to_ascii_lowercase();
        if text.contains("certificate") || text.contains("tls") {
            SendError::Tls
        } else {
            SendError::Connect
        }
    }

    fn nothing_sent(self) -> bool {
        matches!(self, SendError::Connect | SendError::Tls)
    }
}

/// What the bridge calls itself upstream.
const USER_AGENT: &str = concat!("icloud-bridge/", env!("CARGO_PKG_VERSION"));

/// How many redirects to trusted upstream hosts are followed for one request.
const MAX_REDIRECTS: usize = 3;

/// Latency buckets of upstream requests, in seconds.
const UPSTREAM_BUCKETS_SECS: [f64; 9] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// How a login to iCloud's mail servers ended, for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub enum LoginResult {
    Ok,
    /// Apple refused the password.
    Rejected,
    /// No answer, a drop, a temporary refusal.
    Unavailable,
}

impl LoginResult {
    fn as_str(self) -> &'static str {
        match self {
            LoginResult::Ok => "ok",
            LoginResult::Rejected => "rejected",
            LoginResult::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    service: &'static str,
    /// 0: no answer.
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    service: &'static str,
    result: &'static str,
}

/// Upstream requests by service and status, and their latency, for `/metrics`.
#[derive(Debug)]
pub struct UpstreamStats {
    requests: Family<StatusLabels, Counter>,
    /// Mail logins (IMAP, SMTP) at iCloud, by service and result.
    logins: Family<LoginLabels, Counter>,
    latency: Histogram,
}

impl Default for UpstreamStats {
    fn default() -> Self {
        UpstreamStats {
            requests: Family::default(),
            logins: Family::default(),
            latency: Histogram::new(UPSTREAM_BUCKETS_SECS),
        }
    }
}

impl UpstreamStats {
    fn record(&self, service: Service, status: u16, took: Duration) {
        self.requests
            .get_or_create(&StatusLabels {
                service: service.as_str(),
                status,
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    /// A login to iCloud's IMAP or SMTP server and how it ended.
    pub fn record_login(&self, service: Service, result: LoginResult) {
        self.logins
            .get_or_create(&LoginLabels {
                service: service.as_str(),
                result: result.as_str(),
            })
            .inc();
    }

    /// Add the counters and the histogram to a `/metrics` registry.
    pub fn register(&self, reg: &mut Registry) {
        reg.register(
            "upstream_requests",
            "Requests sent upstream, by service and status (0: no answer)",
            self.requests.clone(),
        );
        reg.register(
            "upstream_logins",
            "Logins to iCloud's mail servers, by service and result",
            self.logins.clone(),
        );
        reg.register_with_unit(
            "upstream_duration",
            "Time to upstream response headers",
            Unit::Seconds,
            self.latency.clone(),
        );
    }
}

/// What one request has used of its extra tries.
#[derive(Default)]
struct Tries {
    /// Safe methods get one more try after a broken connection or a 5xx (not 503).
    safe: bool,
    retried: bool,
    redirects: usize,
    /// Already moved from a failing partition host to the front host.
    tried_front: bool,
}

/// After one exchange: the answer, or another exchange (at once, or after a short pause).
// A short-lived local between two steps of `send`; boxing the answer would cost an
// allocation per request.
#[allow(clippy::large_enum_variant)]
enum Next {
    Done(Result<Response, UpstreamError>),
    Again,
    Retry,
}

/// The shared HTTP client towards iCloud (or a generic DAV server).
#[derive(Debug, Clone)]
pub struct Upstream {
    http: Pool,
    /// How long upstream may take to answer, and to send each piece of a body.
    timeout: Duration,
    pub stats: std::sync::Arc<UpstreamStats>,
    pub config: std::sync::Arc<UpstreamConfig>,
    /// Partition hosts that failed recently (origin -> when), skipped for `HOST_DOWN_FOR`.
    down: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>,
}

/// How long a partition host that stopped answering is skipped in favour of the front host.
const HOST_DOWN_FOR: Duration = Duration::from_secs(60);

/// One request towards upstream. The body is small (bounded by the client body limit).
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub purpose: Purpose,
}

/// What a request to upstream is for: it decides where the credential may go and whether
/// the answer judges the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Purpose {
    /// A client's DAV request (or the bridge's own, e.g. an ETag read-back): only to trusted
    /// origins; Apple's answer judges the password.
    #[default]
    Dav,
    /// Learning the layout: also to a principal that a configured upstream's answer named
    /// (https, or http when that upstream is http).
    Discovery,
    /// A contact photo or attachment behind an `_up` link: only to trusted origins, and
    /// whatever it answers (a 401 included) says nothing about the password or the state.
    Asset,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Result<Upstream, StartError> {
        if let Some(ca) = &config.ca_file {
            std::fs::metadata(ca).map_err(|source| StartError::File {
                action: "read upstream.ca_file",
                path: ca.clone(),
                source,
            })?;
        }
        // The detail names upstream.ca_file and the file when the trouble is there.
        let tls = crate::tls::client_config(config.ca_file.as_deref()).map_err(|detail| {
            StartError::Client {
                what: "upstream HTTP",
                detail,
            }
        })?;
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_secs(config.timeout_secs.min(10))));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(50))
                .pool_max_idle_per_host(64)
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .build(connector);
        Ok(Upstream {
            http,
            timeout: Duration::from_secs(config.timeout_secs),
            stats: Default::default(),
            config: std::sync::Arc::new(config.clone()),
            down: Default::default(),
        })
    }

    /// The configured front URL of a DAV service.
    pub fn front(&self, service: Service) -> &Url {
        match service {
            Service::Carddav => &self.config.carddav,
            _ => &self.config.caldav,
        }
    }

    /// May the credential be sent to this URL? Only to the exact origins (scheme, host,
    /// port) of the configured DAV upstreams and `asset_origins`, and of the principals and
    /// homes that discovery learned from them; a learned origin over plain `http://` only
    /// when the configured upstream of that service is `http://` itself.
    pub fn trusted<G: Gate + ?Sized>(&self, account: &G, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return false;
        }
        let same = |other: &Url| crate::dav::paths::same_origin(url, other);
        let c = &self.config;
        if same(&c.caldav) || same(&c.carddav) || c.asset_origins.iter().any(same) {
            return true;
        }
        let Some(l) = account.learned() else {
            return false;
        };
        let plain_ok = |front: &Url| url.scheme() == "https" || front.scheme() == "http";
        (plain_ok(&c.caldav) && (same(&l.cal_home) || same(&l.cal_principal)))
            || (plain_ok(&c.carddav) && (same(&l.card_home) || same(&l.card_principal)))
    }

    /// May discovery use a URL an upstream answer named (a principal or home on a partition
    /// host)? Over `http://` only when the configured upstream of `service` is `http://`.
    pub fn learnable(&self, service: Service, url: &Url) -> bool {
        match url.scheme() {
            "https" => url.host_str().is_some(),
            "http" => url.host_str().is_some() && self.front(service).scheme() == "http",
            _ => false,
        }
    }

    /// Send `req` for `account`'s `service`. Apple's 401, 429 and 503 become errors (and
    /// account state); any other status is returned for the caller to interpret.
    pub async fn send<G: Gate + ?Sized>(
        &self,
        account: &G,
        service: Service,
        mut req: UpstreamRequest,
    ) -> Result<Response, UpstreamError> {
        self.permitted(account, service, &req)?;
        let admitted = account.admit(service).await?;
        let _permit =
            account
                .limiter()
                .acquire()
                .await
                .map_err(|_| UpstreamError::Unreachable {
                    kind: Unreachable::Protocol,
                    detail: "the bridge is shutting down".into(),
                })?;
        let mut tries = Tries {
            safe: matches!(
                req.method.as_str(),
                "GET" | "HEAD" | "OPTIONS" | "PROPFIND" | "REPORT"
            ),
            ..Tries::default()
        };
        if self.is_down(&req.url) {
            if let Some(front_url) = self.on_front(service, &req.url) {
                tries.tried_front = true;
                req.url = front_url;
            }
        }
        loop {
            let sent = Instant::now();
            let result = self.exchange(&req, &admitted.authorization).await;
            self.stats.record(
                service,
                result.as_ref().map(|r| r.status().as_u16()).unwrap_or(0),
                sent.elapsed(),
            );
            let next = match result {
                Err(e) => self.after_failure(account, service, &mut req, &mut tries, e),
                Ok(resp) => self.judge(account, service, &mut req, &mut tries, resp),
            };
            match next {
                Next::Done(r) => return r,
                Next::Retry => retry_pause().await,
                Next::Again => {}
            }
        }
    }

    /// One request and its answer's head, within `timeout`.
    async fn exchange(
        &self,
        req: &UpstreamRequest,
        authorization: &HeaderValue,
    ) -> Result<Response, SendError> {
        let uri: http::Uri = req.url.as_str().parse().map_err(|_| SendError::Broken)?;
        let mut out = http::Request::new(http_body_util::Full::new(req.body.clone()));
        *out.method_mut() = req.method.clone();
        *out.uri_mut() = uri;
        let h = out.headers_mut();
        h.reserve(req.headers.len() + 3);
        for (name, value) in &req.headers {
            h.append(name, value.clone());
        }
        h.insert(http::header::AUTHORIZATION, authorization.clone());
        h.entry(http::header::USER_AGENT)
            .or_insert(HeaderValue::from_static(USER_AGENT));
        // What the bridge sent through reqwest, which adds it to every request.
        h.entry(http::header::ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        match tokio::time::timeout(self.timeout, self.http.request(out)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(e)) => {
                let kind = SendError::of(&e);
                // The upstream host stays in the log; clients never see it.
                tracing::debug!(
                    host = req.url.host_str().unwrap_or("?"),
                    ?kind,
                    "upstream transport error"
                );
                Err(kind)
            }
            Ok(Ok(resp)) => Ok(Response::new(resp, req.url.clone(), self.timeout)),
        }
    }

    /// Before anything is sent: Apple's hold, and whether the password may go to this URL.
    fn permitted<G: Gate + ?Sized>(
        &self,
        account: &G,
        service: Service,
        req: &UpstreamRequest,
    ) -> Result<(), UpstreamError> {
        if let Some(e) = account.held() {
            return Err(e);
        }
        let allowed = self.trusted(account, &req.url)
            || (req.purpose == Purpose::Discovery && self.learnable(service, &req.url));
        if allowed {
            return Ok(());
        }
        tracing::warn!(
            account = account.name(),
            service = service.as_str(),
            "refused to send the password to an origin that is neither configured nor learned"
        );
        Err(UpstreamError::BadResponse {
            detail: "it named a host the bridge does not send the password to".into(),
        })
    }

    /// No answer at all. A partition host that stops answering: the front host serves the
    /// same account paths, so retry there when nothing was sent (connect failed) or the
    /// method is safe, and skip the partition host for a while; a safe request gets one
    /// more try.
    fn after_failure<G: Gate + ?Sized>(
        &self,
        account: &G,
        service: Service,
        req: &mut UpstreamRequest,
        tries: &mut Tries,
        e: SendError,
    ) -> Next {
        let asset = req.purpose == Purpose::Asset;
        let timeout = e == SendError::Timeout;
        if !asset && !tries.tried_front && !timeout && (e.nothing_sent() || tries.safe) {
            if let Some(front_url) = self.on_front(service, &req.url) {
                tracing::warn!(
                    account = account.name(),
                    service = service.as_str(),
                    "partition host failed; using the front host"
                );
                self.mark_down(&req.url);
                tries.tried_front = true;
                req.url = front_url;
                return Next::Again;
            }
        }
        if tries.safe && !tries.retried && !timeout {
            tries.retried = true;
            return Next::Retry;
        }
        let err = classify_error(e);
        if !asset {
            account.record_failure(service, &err, None);
        }
        Next::Done(Err(err))
    }

    /// What Apple's answer means: 401 and 429/503 become errors and account state, a 5xx
    /// gets one more try when safe, redirects are followed within trusted origins only.
    fn judge<G: Gate + ?Sized>(
        &self,
        account: &G,
        service: Service,
        req: &mut UpstreamRequest,
        tries: &mut Tries,
        resp: Response,
    ) -> Next {
        let status = resp.status();
        let redirect = matches!(
            status,
            StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT
        );
        match status {
            // A photo or attachment answers for itself only (see `Purpose::Asset`).
            _ if req.purpose == Purpose::Asset && !redirect => Next::Done(Ok(resp)),
            StatusCode::UNAUTHORIZED => {
                let err = account.record_auth_rejected(service);
                tracing::warn!(
                    account = account.name(),
                    service = service.as_str(),
                    "iCloud rejected the app-specific password (401)"
                );
                Next::Done(Err(err))
            }
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                Next::Done(Err(self.hold(account, service, &resp)))
            }
            StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::GATEWAY_TIMEOUT
                if tries.safe && !tries.retried =>
            {
                tries.retried = true;
                Next::Retry
            }
            _ if redirect && tries.redirects < MAX_REDIRECTS => {
                let target = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| req.url.join(l).ok());
                match target {
                    Some(t) if self.trusted(account, &t) && t != req.url => {
                        tracing::info!(
                            account = account.name(),
                            service = service.as_str(),
                            "upstream moved the resource to another host; following"
                        );
                        tries.redirects += 1;
                        req.url = t;
                        Next::Again
                    }
                    _ => {
                        if req.purpose != Purpose::Asset {
                            account.record_success(service, status.as_u16());
                        }
                        Next::Done(Ok(resp))
                    }
                }
            }
            _ => {
                account.clear_hold();
                account.record_success(service, status.as_u16());
                Next::Done(Ok(resp))
            }
        }
    }

    /// Apple answered 429/503: hold every upstream request of the account exactly as long
    /// as its `Retry-After` asks (see [`Gate::hold_off`]).
    fn hold<G: Gate + ?Sized>(
        &self,
        account: &G,
        service: Service,
        resp: &Response,
    ) -> UpstreamError {
        let status = resp.status().as_u16();
        let ra = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok());
        let wait = account.hold_off(status, parse_retry_after(ra));
        let err = UpstreamError::RateLimited {
            status,
            retry_after: retry_secs(wait),
        };
        tracing::warn!(
            account = account.name(),
            service = service.as_str(),
            status,
            hold_secs = wait.as_secs(),
            "iCloud is limiting requests; holding upstream requests"
        );
        account.record_failure(service, &err, Some(status));
        err
    }

    fn mark_down(&self, url: &Url) {
        let mut g = self.down.lock().unwrap_or_else(|e| e.into_inner());
        g.insert(url.origin().ascii_serialization(), Instant::now());
    }

    fn is_down(&self, url: &Url) -> bool {
        let mut g = self.down.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_empty() {
            return false;
        }
        let key = url.origin().ascii_serialization();
        match g.get(&key) {
            Some(t) if t.elapsed() < HOST_DOWN_FOR => true,
            Some(_) => {
                g.remove(&key);
                false
            }
            None => false,
        }
    }

    /// The same path on the service's front host, if `url` is on another host.
    fn on_front(&self, service: Service, url: &Url) -> Option<Url> {
        let front = self.front(service);
        if front.host_str() == url.host_str()
            && front.port_or_known_default() == url.port_or_known_default()
        {
            return None;
        }
        let mut u = front.clone();
        u.set_path(url.path());
        u.set_query(url.query());
        Some(u)
    }
}

/// A short, jittered pause before the one retry of a safe request (100–400 ms).
async fn retry_pause() {
    let ms = 100 + rand::random::<u64>() % 300;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Map a transport error to the unreachable kinds of the design's table.
fn classify_error(e: SendError) -> UpstreamError {
    let (kind, detail) = match e {
        SendError::Timeout => (Unreachable::Timeout, "no answer in time"),
        SendError::Connect => (Unreachable::Connect, "connection failed"),
        SendError::Tls => (Unreachable::Tls, "TLS handshake failed"),
        SendError::Broken => (Unreachable::Protocol, "the connection broke"),
    };
    UpstreamError::Unreachable {
        kind,
        detail: detail.to_string(),
    }
}
