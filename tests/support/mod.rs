//! Test support: an iCloud stand-in and a real bridge on ephemeral loopback ports, and a
//! small DAV client helper.
#![allow(dead_code)]

use icloud_bridge::accounts::vault::Vault;
use icloud_bridge::auth::logins::LoginStore;
use icloud_bridge::config::{AccountConfig, Config, UpstreamKind};
use icloud_bridge::secret::Secret;
use icloud_bridge::server::listener::{self, Running};
use icloud_bridge::standin::{Control, Standin, StandinConfig, DEMO_APPLE_ID, DEMO_APP_PASSWORD};
use reqwest::{Method, RequestBuilder};

pub struct Env {
    pub standin: Standin,
    pub bridge: Running,
    pub base: String,
    pub user: String,
    pub pass: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    /// The bridge's configuration, for `restart`.
    pub cfg: Config,
}

pub struct Options {
    pub standin: StandinConfig,
    pub app_password: String,
    pub max_body_bytes: usize,
    pub auth_probe_secs: u64,
    /// The Apple ID the bridge is configured with (default: the stand-in's demo account).
    pub apple_id: String,
    /// Use this upstream URL for both services instead of the stand-in's front hosts.
    pub upstream_override: Option<String>,
    pub timeout_secs: u64,
    pub fresh_secs: u64,
    /// Serve SMTP submission on 127.0.0.1:0, upstream the stand-in's SMTP role (trusting its
    /// CA through `upstream.ca_file`).
    pub smtp: bool,
    /// Serve IMAP (`imap_listen` and `imaps_listen` on 127.0.0.1:0) against the stand-in's
    /// IMAP role.
    pub imap: bool,
    /// Last changes to the bridge's configuration (e.g. `[notify]`).
    pub tweak: Box<dyn FnOnce(&mut Config)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            standin: StandinConfig::demo(),
            app_password: DEMO_APP_PASSWORD.to_string(),
            max_body_bytes: 10 * 1024 * 1024,
            auth_probe_secs: 900,
            apple_id: DEMO_APPLE_ID.to_string(),
            upstream_override: None,
            timeout_secs: 5,
            fresh_secs: 30,
            smtp: false,
            imap: false,
            tweak: Box::new(|_| {}),
        }
    }
}

pub async fn start() -> Env {
    start_with(Options::default()).await
}

pub async fn start_with(opts: Options) -> Env {
    let standin = Standin::start(opts.standin).await.expect("stand-in starts");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::defaults();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.server.data_dir = dir.path().to_path_buf();
    cfg.server.certs_dir = dir.path().join("certs");
    if opts.imap {
        cfg.server.imap_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.server.imaps_listen = Some("127.0.0.1:0".parse().unwrap());
        cfg.upstream.imap = standin.imap_url().parse().unwrap();
    }
    cfg.upstream.kind = UpstreamKind::Icloud;
    let (cal, card) = match &opts.upstream_override {
        Some(u) => (u.clone(), u.clone()),
        None => (standin.caldav_url(), standin.carddav_url()),
    };
    cfg.upstream.caldav = cal.parse().unwrap();
    cfg.upstream.carddav = card.parse().unwrap();
    cfg.upstream.timeout_secs = opts.timeout_secs;
    cfg.cache.fresh_secs = opts.fresh_secs;
    cfg.limits.max_body_bytes = opts.max_body_bytes;
    cfg.upstream.auth_probe_secs = opts.auth_probe_secs;
    if opts.smtp {
        cfg.server.certs_dir = dir.path().join("certs");
        let ca = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca, standin.ca_pem()).unwrap();
        cfg.upstream.ca_file = Some(ca);
        cfg.upstream.smtp = standin.smtp_url().parse().unwrap();
        cfg.server.smtp_listen = Some("127.0.0.1:0".parse().unwrap());
    }
    cfg.accounts = vec![AccountConfig {
        name: "alice".into(),
        apple_id: opts.apple_id.clone(),
        password_file: None,
        password_command: None,
    }];
    Vault::open(dir.path())
        .set("alice", &Secret::new(opts.app_password))
        .unwrap();
    let pass = LoginStore::open(dir.path())
        .unwrap()
        .add("phone", "alice", false, None)
        .unwrap();
    (opts.tweak)(&mut cfg);
    let bridge = listener::start(cfg.clone()).await.expect("bridge starts");
    let base = format!("http://{}", bridge.addr);
    Env {
        standin,
        bridge,
        base,
        user: "phone".into(),
        pass,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        dir,
        cfg,
    }
}

impl Env {
    pub fn control(&self) -> Control {
        self.standin.control()
    }

    /// A second device, `laptop`, with its own login on the same account; its password.
    pub fn second_login(&self) -> String {
        self.bridge
            .app
            .auth
            .logins
            .add("laptop", "alice", false, None)
            .unwrap()
    }

    /// The bridge's SMTP submission address (with `Options::smtp`).
    pub fn smtp_addr(&self) -> std::net::SocketAddr {
        self.bridge.smtp_addr.expect("the bridge serves SMTP")
    }

    /// The bridge's IMAP address (plaintext + STARTTLS); needs `Options::imap`.
    pub fn imap_addr(&self) -> std::net::SocketAddr {
        self.bridge.imap_addr.expect("imap_listen is set")
    }

    /// The bridge's IMAPS address (implicit TLS); needs `Options::imap`.
    pub fn imaps_addr(&self) -> std::net::SocketAddr {
        self.bridge.imaps_addr.expect("imaps_listen is set")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn req(&self, method: &str, path: &str) -> RequestBuilder {
        self.http
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                self.url(path),
            )
            .basic_auth(&self.user, Some(&self.pass))
    }

    /// A DAV request with an XML body and a Depth header; (status, body text).
    /// GET a public page (no login) as text.
    pub async fn page(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The bridge's `state.json` in its data directory, parsed (`None` before it is written).
    pub fn state_json(&self) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join("state.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// `/status.json`, parsed.
    pub async fn status_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.page("/status.json").await).unwrap()
    }

    pub async fn xml(&self, method: &str, path: &str, depth: &str, body: &str) -> (u16, String) {
        let r = self
            .req(method, path)
            .header("Depth", depth)
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    }

    /// PUT a VEVENT (with an end) under `path`; the status.
    pub async fn put_event(&self, path: &str, uid: &str, summary: &str) -> u16 {
        self.req("PUT", path)
            .header("Content-Type", "text/calendar")
            .body(event(uid, summary, true))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    pub async fn propfind(&self, path: &str, depth: &str, body: &str) -> (u16, String) {
        self.xml("PROPFIND", path, depth, body).await
    }

    pub async fn report(&self, path: &str, depth: &str, body: &str) -> (u16, String) {
        self.xml("REPORT", path, depth, body).await
    }

    /// Every upstream port of the stand-in, as `:port` strings, for leak checks.
    pub fn upstream_markers(&self) -> Vec<String> {
        let mut v = Vec::new();
        for u in [self.standin.caldav_url(), self.standin.carddav_url()]
            .into_iter()
            .chain(self.standin.partition_caldav_url(42))
            .chain(self.standin.partition_carddav_url(42))
        {
            let url = url::Url::parse(&u).unwrap();
            v.push(format!("127.0.0.1:{}", url.port().unwrap()));
        }
        v.push("1234567890".into());
        v.push("p42".into());
        v
    }

    pub fn assert_no_leak(&self, what: &str, text: &str) {
        for m in self.upstream_markers() {
            assert!(!text.contains(&m), "{what} leaks {m}:\n{text}");
        }
    }

    pub async fn stop(self) {
        self.bridge.stop().await;
        self.standin.stop().await;
    }

    /// Stop the bridge and start it again on the same data directory (the stand-in stays).
    pub async fn restart(self) -> Env {
        self.restart_with(|_, _| {}).await
    }

    /// [`Env::restart`], calling `while_stopped` with the data directory and the stand-in
    /// while the bridge is down.
    pub async fn restart_with(self, while_stopped: impl FnOnce(&std::path::Path, &Standin)) -> Env {
        let Env {
            standin,
            bridge,
            user,
            pass,
            http,
            dir,
            cfg,
            ..
        } = self;
        bridge.stop().await;
        while_stopped(dir.path(), &standin);
        let bridge = listener::start(cfg.clone()).await.expect("bridge restarts");
        Env {
            base: format!("http://{}", bridge.addr),
            standin,
            bridge,
            user,
            pass,
            http,
            dir,
            cfg,
        }
    }
}

/// What the webhook sink received in one request.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Header names in lower case.
    pub headers: std::collections::HashMap<String, String>,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("webhook body is JSON")
    }
}

/// A webhook receiver on 127.0.0.1 (a real HTTP/1.1 server, hyper): records requests,
/// answers 500 to the first `fail_first`.
pub struct Sink {
    pub addr: std::net::SocketAddr,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub attempts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// How many requests were recorded (waiters look again on every change).
    recorded: tokio::sync::watch::Sender<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start(fail_first: usize) -> Sink {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let received = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let recorded = tokio::sync::watch::Sender::new(0usize);
        let (rec, att, count) = (received.clone(), attempts.clone(), recorded.clone());
        let (addr, task) = http_server(move |parts, body| {
            let (rec, att, count) = (rec.clone(), att.clone(), count.clone());
            async move {
                if att.fetch_add(1, Ordering::SeqCst) < fail_first {
                    return http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                rec.lock().unwrap().push(Received {
                    method: parts.method.to_string(),
                    path: parts
                        .uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    headers: headers_by_name(&parts.headers),
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                count.send_modify(|n| *n += 1);
                http::StatusCode::OK
            }
        })
        .await;
        Sink {
            addr,
            received,
            attempts,
            recorded,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Wait (up to `secs`) until at least `n` requests were recorded; return all.
    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let mut rx = self.recorded.subscribe();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(secs),
            rx.wait_for(|count| *count >= n),
        )
        .await;
        self.received()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP/1 server on a fresh loopback port that answers every request with the status
/// `answer` gives for it (head and whole body) and an empty body, until the returned task is
/// aborted: the one loop the tests' webhook sink and push service share.
pub async fn http_server<F, Fut>(answer: F) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(http::request::Parts, bytes::Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = http::StatusCode> + Send + 'static,
{
    use http_body_util::{BodyExt, Empty};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let answer = answer.clone();
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let answer = answer.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let mut resp = http::Response::new(Empty::<bytes::Bytes>::new());
                        *resp.status_mut() = answer(parts, body).await;
                        Ok::<_, hyper::Error>(resp)
                    }
                });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// A request's headers by name (of repeated ones, the last), as strings.
pub fn headers_by_name(headers: &http::HeaderMap) -> std::collections::HashMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// How often [`wait_until`] and [`wait_for`] look.
const POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Wait until `check` gives a value, looking every few milliseconds; panics naming `what`
/// (what did not happen) when `within` has passed. For conditions the test can observe:
/// the stand-in's request log and switches, the bridge's `/status.json` or `/metrics`, a
/// file, a port.
pub async fn wait_for<T, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = std::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_for`] a condition.
pub async fn wait_until<F, Fut>(within: std::time::Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    wait_for(within, what, || {
        let f = check();
        async move { f.await.then_some(()) }
    })
    .await
}

/// Whether nothing listens on `addr` any more (a connection is refused).
pub async fn refuses(addr: std::net::SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_err()
}

/// Log lines written on this thread while the guard lives (the bridge's tasks run here too
/// under `#[tokio::test]`'s current-thread runtime).
/// Captures the log lines emitted on the test's own thread (a `#[tokio::test]` runs the
/// bridge's tasks there) at trace level. One global subscriber routes each line to the
/// capture of the thread that emitted it: a per-thread default subscriber would race with
/// tracing's per-callsite interest cache when tests run in parallel.
pub struct LogCapture {
    buf: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<std::sync::Arc<std::sync::Mutex<Vec<u8>>>>> =
        const { std::cell::RefCell::new(None) };
}

struct RoutingWriter;

impl std::io::Write for RoutingWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(buf) = c.borrow().as_ref() {
                buf.lock().unwrap().extend_from_slice(b);
            }
        });
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn start() -> LogCapture {
        static INIT: std::sync::Once = std::sync::Once::new();
        INIT.call_once(|| {
            let sub = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing::Level::TRACE)
                .with_writer(|| RoutingWriter)
                .finish();
            tracing::subscriber::set_global_default(sub).expect("one global subscriber");
        });
        let buf = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        CAPTURE.with(|c| *c.borrow_mut() = Some(buf.clone()));
        LogCapture { buf }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).to_string()
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        CAPTURE.with(|c| *c.borrow_mut() = None);
    }
}

pub const PROPFIND_PRINCIPAL: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/><d:resourcetype/></d:prop></d:propfind>"#;

pub const PROPFIND_HOMES: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:a="urn:ietf:params:xml:ns:carddav"><d:prop><c:calendar-home-set/><a:addressbook-home-set/><d:displayname/><c:calendar-user-address-set/></d:prop></d:propfind>"#;

pub const PROPFIND_LIST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav" xmlns:cs="http://calendarserver.org/ns/"><d:prop><d:resourcetype/><d:displayname/><cs:getctag/><d:sync-token/><c:supported-calendar-component-set/></d:prop></d:propfind>"#;

pub fn event(uid: &str, summary: &str, with_end: bool) -> String {
    let end = if with_end {
        "DTEND:20261201T110000Z\r\n"
    } else {
        ""
    };
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VEVENT\r\nUID:{uid}\r\nDTSTAMP:20261124T000000Z\r\nDTSTART:20261201T100000Z\r\n{end}SUMMARY:{summary}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
}

pub fn todo(uid: &str, summary: &str) -> String {
    format!("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\nBEGIN:VTODO\r\nUID:{uid}\r\nDTSTAMP:20261124T000000Z\r\nSUMMARY:{summary}\r\nEND:VTODO\r\nEND:VCALENDAR\r\n")
}

pub fn vcard(uid: &str, name: &str, with_n: bool) -> String {
    let n = if with_n {
        format!("N:{name};;;;\r\n")
    } else {
        String::new()
    };
    format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\n{n}EMAIL:{uid}@example.org\r\nEND:VCARD\r\n")
}

/// Every `<d:href>` value in a multistatus (normalised output uses the `d:` prefix).
pub fn hrefs(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<d:href>") {
        let after = &rest[i + 8..];
        let end = after.find("</d:href>").unwrap_or(after.len());
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out
}
