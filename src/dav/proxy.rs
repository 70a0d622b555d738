//! Forwarding a client request under a home set to upstream: the proxy phases of one
//! request (read and check the body, rewrite it, send, explain refusals, rewrite the answer
//! back as a stream).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use url::Url;

use crate::accounts::Account;
use crate::body::RequestBody;
use crate::body::{empty, full, stream_body, Body, BoxError, OriginUsed};
use crate::cache::serve::{Ask, OnListing};
use crate::dav::error::DavError;
use crate::dav::explain::{explain, Asked};
use crate::dav::paths::{
    home_url, raw_path, refuse_rest, same_origin, to_upstream_text, ToLocal, ToUpstream,
    UpstreamHosts,
};
use crate::dav::Dav;
use crate::limits::{BodyReservation, ClientAddr};
use crate::upstream::client::{Purpose, Upstream, UpstreamRequest};
use crate::upstream::discover::{self, Learned};
use crate::upstream::error::UpstreamError;
use crate::upstream::response::{BodyError, Response as UpstreamResponse};
use crate::upstream::service::Service;
use crate::xml::inspect::{inspect, RequestInfo};
use crate::xml::rewrite::{rewrite_stream, rewrite_to_vec, HrefMap};

/// Request headers a client may pass upstream (everything else is dropped).
const REQUEST_HEADERS: &[&str] = &[
    "depth",
    "content-type",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "overwrite",
    "prefer",
    "brief",
    "accept",
];

/// Upstream response headers passed to clients (Location/Content-Location are rewritten).
const RESPONSE_HEADERS: &[&str] = &[
    "dav",
    "etag",
    "content-type",
    "last-modified",
    "allow",
    "retry-after",
];

/// Which absolute URLs belong to this account's upstream (computed once per request).
pub struct AccountHosts {
    pub upstream: Upstream,
    pub account: Arc<Account>,
}

impl UpstreamHosts for AccountHosts {
    fn is_upstream(&self, url: &Url) -> bool {
        self.upstream.trusted(&self.account, url)
    }
}

/// Seconds a client is asked to wait when the body budget is full.
const BODY_BUDGET_RETRY_SECS: u64 = 5;

/// Read a request body into one buffer, up to `limits.max_body_bytes` (more: 413) within
/// `limits.body_timeout_secs` (slower: 408), holding its share of the global body budget
/// (`limits.max_body_bytes_in_flight`, of which one address may hold a quarter or one
/// largest body) until the returned reservation is dropped. A
/// declared `Content-Length` is reserved before anything is read; a body of unknown length
/// as its buffer grows. When the budget is full the client gets 503 with `Retry-After`,
/// before its body is read (or as soon as a chunked one outgrows what is left).
///
/// One buffer sized up front (or grown by doubling) rather than a list of small chunks:
/// large buffers come straight from the system and go back to it when freed, so memory
/// falls back after a burst of large bodies.
pub async fn read_body(
    dav: &Dav,
    head: &http::request::Parts,
    mut body: RequestBody,
) -> Result<(Bytes, BodyReservation), DavError> {
    use hyper::body::Body as _;
    let limit = dav.limits.max_body_bytes;
    let busy = || {
        let mib = dav.bodies.limit().div_ceil(1024 * 1024);
        DavError::Busy {
            message: format!(
                "The bridge is already receiving as much request data as it holds at once ({mib} MiB, limits.max_body_bytes_in_flight); try again in a few seconds."
            ),
            retry_after: BODY_BUDGET_RETRY_SECS,
        }
    };
    let client = head.extensions.get::<ClientAddr>().map(|c| c.0);
    // A client that waits for `100 Continue` sends nothing more after a refusal; any other
    // is still sending, and reads the refusal only if its body is taken in meanwhile.
    let waits_for_continue = head
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // Most reads (GET, a bare PROPFIND) have no body: no timer, no buffer.
    if body.is_end_stream() {
        let none = dav.bodies.try_reserve(client, 0).ok_or_else(busy)?;
        return Ok((Bytes::new(), none));
    }
    let hint = body.size_hint();
    if !usize::try_from(hint.lower()).is_ok_and(|n| n <= limit) {
        return Err(DavError::TooLarge { limit });
    }
    let declared = hint.exact().and_then(|n| usize::try_from(n).ok());
    let Some(mut reserved) = dav.bodies.try_reserve(client, declared.unwrap_or(0)) else {
        if !waits_for_continue {
            discard_rest(body, limit);
        }
        return Err(busy());
    };
    let within = std::time::Duration::from_secs(dav.limits.body_timeout_secs);
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| {
                DavError::BadRequest("the request body could not be read completely".into())
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let len = buf.len() + data.len();
            if len > limit {
                return Err(DavError::TooLarge { limit });
            }
            if len > buf.capacity() {
                let cap = len.max(buf.capacity().saturating_mul(2).min(limit));
                let more = cap.saturating_sub(reserved.bytes());
                if !dav.bodies.try_grow(&mut reserved, more) {
                    return Err(busy());
                }
                buf.reserve_exact(cap - buf.len());
            }
            buf.extend_from_slice(&data);
        }
        Ok(buf)
    };
    match tokio::time::timeout(within, read).await {
        Ok(Ok(buf)) => Ok((Bytes::from(buf), reserved)),
        Ok(Err(e @ DavError::Busy { .. })) => {
            drop(reserved);
            discard_rest(body, limit);
            Err(e)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DavError::Timeout(format!(
            "the request body did not arrive within {} s",
            within.as_secs()
        ))),
    }
}

/// How long a refused body is still taken in (and thrown away).
const DISCARD_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// After a body is refused for want of budget, take in and throw away what the client is
/// still sending (at most `limit` bytes, for [`DISCARD_FOR`]) while the 503 goes out: a
/// connection closed with unread data is reset, and the client would see the reset instead
/// of the answer. Nothing is kept: each piece is dropped as it arrives.
fn discard_rest(mut body: RequestBody, limit: usize) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DISCARD_FOR, async {
            let mut seen = 0usize;
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    seen = seen.saturating_add(data.len());
                    if seen > limit {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

/// Run `f` (parsing a request body) where it cannot hold up other clients (see
/// [`crate::xml::off_thread`]).
pub async fn parse_body<T: Send + 'static>(
    body: &Bytes,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T, DavError> {
    crate::xml::off_thread(body, f)
        .await
        .ok_or(DavError::Internal("read the request body"))
}

fn is_blank(b: &[u8]) -> bool {
    b.iter().all(|c| c.is_ascii_whitespace())
}

/// Forward one request under `/dav/<account>/{calendars,contacts}/<rest>`: the cache phase
/// (fresh answers, identical misses sharing one upstream request, stale answers while
/// iCloud fails, invalidation by writes), then the upstream phase.
pub async fn forward(
    dav: &Dav,
    account: &Arc<Account>,
    service: Service,
    rest: &str,
    req: http::Request<RequestBody>,
    public_origin: &str,
) -> Result<Response<Body>, DavError> {
    if let Some(why) = refuse_rest(rest) {
        return Err(DavError::BadRequest(format!(
            "the path may not contain {why}"
        )));
    }
    let (parts, body) = req.into_parts();
    // The reservation is held until the request is answered.
    let (body, _reserved) = read_body(dav, &parts, body).await?;
    let f = Forward {
        dav,
        account,
        service,
        rest,
        home: crate::dav::paths::home_segment(service),
        parts,
        body,
        public_origin,
    };
    let ask = Ask {
        account: account.name(),
        home: f.home,
        rest,
        query: f.parts.uri.query(),
        method: f.parts.method.as_str(),
        headers: &f.parts.headers,
        body: &f.body,
        public_origin,
        destination: write_targets(account.name(), &f.parts.headers),
    };
    // A listing of the calendar home says which calendars only hold tasks (see task_lists).
    let home_listing = f.parts.method.as_str() == "PROPFIND"
        && service == Service::Caldav
        && rest.is_empty()
        && f.parts.headers.get("depth").map(|d| d.as_bytes()) == Some(b"1");
    let note = |listing: &[u8]| {
        if let Some(lists) = crate::dav::task_lists::find(listing) {
            dav.note_task_lists(account.name(), lists);
        }
    };
    let on_listing: OnListing = if home_listing { Some(&note) } else { None };
    let answer = match dav.cache.serve(ask, on_listing, || f.upstream()).await {
        Err(DavError::Upstream(e)) => match f.degraded(&e).await {
            Some(r) => Ok(r),
            None => Err(DavError::Upstream(e)),
        },
        r => r,
    };
    if home_listing {
        // The bridge's own calendars are listed with iCloud's.
        let listed = crate::dav::virtual_cal::home::listed;
        return Box::pin(listed(dav, account, &f.body, public_origin, answer)).await;
    }
    answer
}

/// One request on its way through the DAV pipeline: who asks, for what, with which body.
struct Forward<'a> {
    dav: &'a Dav,
    account: &'a Arc<Account>,
    service: Service,
    /// The path under the home (`work/x.ics`).
    rest: &'a str,
    /// `calendars` or `contacts`.
    home: &'static str,
    parts: http::request::Parts,
    body: Bytes,
    /// How the client reaches us, for absolute URLs in bodies.
    public_origin: &'a str,
}

/// (home, rest) of the local Destination of a MOVE or COPY, if it is this account's.
fn write_targets(account: &str, headers: &HeaderMap) -> Option<(&'static str, String)> {
    let d = headers.get("destination")?.to_str().ok()?;
    let path = raw_path(d)?;
    let prefix = format!("/dav/{account}/");
    let after = path.strip_prefix(&prefix)?;
    let (home, rest) = after.split_once('/')?;
    let home = match home {
        "calendars" => "calendars",
        "contacts" => "contacts",
        _ => return None,
    };
    Some((home, rest.to_string()))
}

/// An upstream answer's bytes on their way to the rewriter.
type UpstreamBytes =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Sync>>;

/// How one try of the upstream phase ended.
enum Attempt {
    Done(Response<Body>),
    /// Upstream redirected to an origin the credential may not go to; the layout the try
    /// used.
    Moved(Arc<Learned>),
}

/// The request as it goes upstream, and what the bridge read of the client's body.
struct Outgoing {
    request: UpstreamRequest,
    /// What a PROPFIND/REPORT/... body asks for (for explaining refusals).
    info: Option<RequestInfo>,
}

impl Forward<'_> {
    /// The upstream phase: rewrite the request, send it, explain refusals, rewrite the
    /// answer. When upstream moves the account to a host discovery has not learned (a
    /// partition move), the credential does not follow the redirect: the layout is learned
    /// again from the configured upstream, and the request is sent once more to the new home.
    ///
    /// The tries are boxed: the state of a request to iCloud is large, and every future that
    /// may go upstream (a cache hit's too) would otherwise carry and copy it.
    async fn upstream(&self) -> Result<Response<Body>, DavError> {
        match Box::pin(self.attempt()).await? {
            Attempt::Done(r) => Ok(r),
            Attempt::Moved(before) => {
                Box::pin(self.account.relearn_now(&self.dav.upstream, &before)).await?;
                match Box::pin(self.attempt()).await? {
                    Attempt::Done(r) => Ok(r),
                    Attempt::Moved(_) => Err(DavError::Upstream(UpstreamError::BadResponse {
                        detail: "it moves this account to a host that discovery does not name"
                            .into(),
                    })),
                }
            }
        }
    }

    /// One try: request out, answer explained or rewritten back.
    async fn attempt(&self) -> Result<Attempt, DavError> {
        let learned = self.account.ensure_learned(&self.dav.upstream).await?;
        let out = self.outgoing(&learned).await?;
        let target = out.request.url.clone();
        let resp = self
            .dav
            .upstream
            .send(self.account, self.service, out.request)
            .await?;
        if self.moved_away(&resp) {
            return Ok(Attempt::Moved(learned));
        }
        if !same_origin(resp.url(), &target) {
            self.account.relearn_later(&self.dav.upstream);
        }
        let up_ct = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let asked = Asked {
            method: self.parts.method.as_str(),
            body: &self.body,
            info: out.info.as_ref(),
        };
        if let Some(e) = explain(&asked, resp.status().as_u16(), up_ct.contains("html")) {
            return Err(e);
        }
        let origin_used = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let to_local = self.to_local(&learned, resp.url(), origin_used.clone());
        let (mut head, etag_seen) = response_head(&resp, to_local.as_ref());
        // iCloud answers PUT without an ETag: learn it so clients need not ask again.
        if self.parts.method == Method::PUT && resp.status().is_success() && !etag_seen {
            if let Some(etag) = read_back_etag(self.dav, self.account, self.service, &target).await
            {
                head = head.header("etag", etag);
            }
        }
        let (head, body) = self.response_body(resp, head, to_local, &up_ct).await?;
        let mut response = head
            .body(body)
            .map_err(|_| DavError::Internal("build the response"))?;
        dedupe_content_type(response.headers_mut());
        response.extensions_mut().insert(OriginUsed(origin_used));
        Ok(Attempt::Done(response))
    }

    /// The client's request as upstream gets it: the target under the learned home, the
    /// body with its hrefs (and signed bridge links) mapped back, the allowed headers, and
    /// `Destination` only inside this account's homes.
    async fn outgoing(&self, learned: &Arc<Learned>) -> Result<Outgoing, DavError> {
        let target = home_url(
            learned.home(self.service),
            self.rest,
            self.parts.uri.query(),
        )
        .ok_or_else(|| {
            DavError::BadRequest("the request path does not name anything under this home".into())
        })?;
        let to_up = ToUpstream {
            account: self.account.name().to_string(),
            learned: learned.clone(),
            target: target.clone(),
            links: self.dav.links.clone(),
            apple_cards: self.apple_cards(),
            photos: Some(self.dav.photos.clone()),
        };
        let (body, info) = self.outgoing_body(&to_up).await?;
        let headers = self.outgoing_headers(&to_up, !body.is_empty() && info.is_some())?;
        Ok(Outgoing {
            request: UpstreamRequest {
                method: self.parts.method.clone(),
                url: target,
                headers,
                body,
                purpose: Purpose::Dav,
            },
            info,
        })
    }

    /// The body as upstream gets it: XML with its hrefs mapped back (and what it asks for),
    /// an object with bridge links, inlined photos and vCard dialect mapped back, or as is.
    async fn outgoing_body(
        &self,
        to_up: &ToUpstream,
    ) -> Result<(Bytes, Option<RequestInfo>), DavError> {
        let (method, body) = (self.parts.method.as_str(), &self.body);
        let xml_method = matches!(
            method,
            "PROPFIND" | "REPORT" | "PROPPATCH" | "MKCALENDAR" | "MKCOL"
        );
        if xml_method && !is_blank(body) {
            let map = to_up.clone();
            let (info, rewritten) = parse_body(body, move |b| {
                let i = inspect(b)?;
                Ok::<_, crate::xml::XmlError>((i, rewrite_to_vec(b, &map)?))
            })
            .await?
            .map_err(|e| {
                DavError::BadRequest(format!("the request body is not well-formed XML: {e}"))
            })?;
            return Ok((Bytes::from(rewritten), Some(info)));
        }
        if method == "REPORT" {
            return Err(DavError::BadRequest("a REPORT needs an XML body".into()));
        }
        let text = (method == "PUT")
            .then(|| std::str::from_utf8(body).ok())
            .flatten()
            .and_then(|t| {
                to_upstream_text(
                    t,
                    self.account.name(),
                    &self.dav.links,
                    Some(&self.dav.photos),
                    self.apple_cards(),
                )
            });
        Ok((text.map(Bytes::from).unwrap_or_else(|| body.clone()), None))
    }

    /// The allowed request headers, a Content-Type for an XML body, and `Destination`
    /// only inside this account's homes.
    fn outgoing_headers(&self, to_up: &ToUpstream, xml_body: bool) -> Result<HeaderMap, DavError> {
        let parts = &self.parts;
        let mut headers = HeaderMap::new();
        for name in REQUEST_HEADERS {
            for v in parts.headers.get_all(*name) {
                headers.append(HeaderName::from_static(name), v.clone());
            }
        }
        if xml_body {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=utf-8"),
            );
        }
        if let Some(dest) = parts.headers.get("destination") {
            let d = dest
                .to_str()
                .ok()
                .and_then(|d| to_up.destination(d))
                .ok_or_else(|| {
                    DavError::Forbidden(
                        "Destination must be a path under this account's calendars or contacts"
                            .into(),
                    )
                })?;
            let v = HeaderValue::from_str(d.as_str())
                .map_err(|_| DavError::BadRequest("invalid Destination".into()))?;
            headers.insert("destination", v);
        }
        Ok(headers)
    }

    /// Whether vCards here are in Apple's dialect: iCloud's contacts (see `dav::vcard`).
    fn apple_cards(&self) -> bool {
        self.service == Service::Carddav
            && self.dav.upstream.config.kind == crate::config::UpstreamKind::Icloud
    }

    /// What the bridge answers itself for a read iCloud failed and no stored copy fits (see
    /// `dav::degraded`).
    async fn degraded(&self, e: &UpstreamError) -> Option<Response<Body>> {
        let method = self.parts.method.as_str();
        let info = match method {
            "REPORT" => parse_body(&self.body, inspect).await.ok()?.ok(),
            _ => None,
        };
        crate::dav::degraded::answer(method, info.as_ref(), e)
    }

    /// Whether this answer may list address books that need a name (see `dav::names`).
    fn names_address_books(&self) -> bool {
        self.service == Service::Carddav
            && self.parts.method.as_str() == "PROPFIND"
            && self.rest.trim_end_matches('/').split('/').count() <= 1
    }

    /// The rewritten listing read whole (it is small) with its address books named; a
    /// listing too large to hold passes on as it is.
    async fn named<S, E>(&self, first: Bytes, mut stream: S) -> Result<Body, DavError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin + Send + Sync + 'static,
        E: std::error::Error + Send + Sync + 'static,
    {
        let cut = |e: E| {
            DavError::Upstream(UpstreamError::BadResponse {
                detail: format!("its XML could not be read ({e})"),
            })
        };
        let mut whole = first.to_vec();
        while let Some(chunk) = stream.next().await {
            whole.extend_from_slice(&chunk.map_err(cut)?);
            if whole.len() > crate::dav::names::MAX_LISTING {
                let head =
                    futures_util::stream::once(async move { Ok(Frame::data(Bytes::from(whole))) });
                let rest = stream.map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError));
                return Ok(BodyExt::boxed(StreamBody::new(head.chain(rest))));
            }
        }
        let label =
            crate::dav::names::contacts_label(self.account.name(), self.dav.several_accounts);
        let named = crate::dav::names::name_address_books(&whole, self.account.name(), &label);
        Ok(full(Bytes::from(named.unwrap_or(whole))))
    }

    /// Whether contact photos in this answer are put into its vCards (`carddav.photos`).
    fn inlines_photos(&self) -> bool {
        self.service == Service::Carddav
            && self.dav.photos.inline()
            && matches!(self.parts.method.as_str(), "GET" | "REPORT")
            && self
                .parts
                .extensions
                .get::<crate::dav::photos::NoPhotos>()
                .is_none()
    }

    /// Fetch the photos `raw` (an upstream answer) names, for `to_local` to inline.
    async fn fetch_photos(&self, raw: &[u8], to_local: &ToLocal) {
        let text = String::from_utf8_lossy(raw);
        let photos = crate::dav::photos::fetch_all(self.dav, self.account, &text).await;
        if photos.is_empty() {
            return;
        }
        let _ = to_local.photos.set(crate::dav::photos::Found {
            photos,
            store: self.dav.photos.clone(),
        });
    }

    /// The upstream answer as a stream for the rewriter; when photos are inlined, an answer
    /// up to `limits.max_body_bytes` is read first and its photos fetched (a larger one
    /// streams on with links).
    async fn with_photos(
        &self,
        mut resp: UpstreamResponse,
        to_local: &ToLocal,
    ) -> Result<UpstreamBytes, DavError> {
        if !self.inlines_photos() {
            return Ok(Box::pin(resp.bytes_stream().map_err(std::io::Error::other)));
        }
        let cut = |e: BodyError| {
            DavError::Upstream(UpstreamError::BadResponse {
                detail: format!("its answer was cut off ({e})"),
            })
        };
        let mut chunks: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        while let Some(c) = resp.chunk().await.map_err(cut)? {
            len += c.len();
            chunks.push(c);
            if len > self.dav.limits.max_body_bytes {
                let head = futures_util::stream::iter(chunks.into_iter().map(Ok));
                let rest = resp.bytes_stream().map_err(std::io::Error::other);
                return Ok(Box::pin(head.chain(rest)));
            }
        }
        let whole = Bytes::from(chunks.concat());
        self.fetch_photos(&whole, to_local).await;
        Ok(Box::pin(futures_util::stream::once(
            async move { Ok(whole) },
        )))
    }

    /// Did upstream redirect to an origin the credential may not go to (a partition move)?
    fn moved_away(&self, resp: &UpstreamResponse) -> bool {
        if !resp.status().is_redirection() {
            return false;
        }
        let to = resp
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| resp.url().join(l).ok());
        let moved = to.is_some_and(|t| !self.dav.upstream.trusted(self.account, &t));
        if moved {
            tracing::info!(
                account = self.account.name(),
                service = self.service.as_str(),
                "upstream moved the account to a host discovery has not named; learning the layout again"
            );
        }
        moved
    }

    /// How hrefs and links in this answer (from `base`) become the client's.
    fn to_local(
        &self,
        learned: &Arc<Learned>,
        base: &Url,
        origin_used: Arc<std::sync::atomic::AtomicBool>,
    ) -> Arc<ToLocal> {
        let account = self.account;
        Arc::new(ToLocal {
            account: account.name().to_string(),
            learned: learned.clone(),
            service: self.service,
            base: base.clone(),
            public_origin: self.public_origin.to_string(),
            hosts: Arc::new(AccountHosts {
                upstream: self.dav.upstream.clone(),
                account: account.clone(),
            }),
            links: self.dav.links.clone(),
            apple_cards: self.apple_cards(),
            photos: Default::default(),
            report_collection: (self.parts.method.as_str() == "REPORT")
                .then(|| format!("/dav/{}/{}/{}", account.name(), self.home, self.rest)),
            origin_used,
        })
    }

    /// The answer's body for the client: empty, XML rewritten as it streams (the first
    /// chunk read before answering, so garbage from upstream becomes a clean 502), an object
    /// with its links mapped (when small enough to hold), or upstream's bytes as they come.
    async fn response_body(
        &self,
        resp: UpstreamResponse,
        mut head: http::response::Builder,
        to_local: Arc<ToLocal>,
        up_ct: &str,
    ) -> Result<(http::response::Builder, Body), DavError> {
        let status = resp.status().as_u16();
        if self.parts.method == Method::HEAD || status == 204 || status == 304 {
            return Ok((head, empty()));
        }
        if status == 207 || up_ct.contains("xml") {
            head = head.header(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/xml; charset=utf-8"),
            );
            let upstream_stream = self.with_photos(resp, &to_local).await?;
            let to_local: Arc<dyn HrefMap> = to_local;
            let mut stream = Box::pin(rewrite_stream(upstream_stream, to_local));
            let first = match stream.next().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    return Err(DavError::Upstream(UpstreamError::BadResponse {
                        detail: format!("its XML could not be read ({e})"),
                    }))
                }
                None => Bytes::new(),
            };
            if self.names_address_books() {
                return Ok((head, self.named(first, stream).await?));
            }
            let rest = stream.map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError));
            let all = futures_util::stream::once(async move { Ok(Frame::data(first)) }).chain(rest);
            return Ok((head, BodyExt::boxed(StreamBody::new(all))));
        }
        let small = resp
            .content_length()
            .is_some_and(|l| l as usize <= self.dav.limits.max_body_bytes);
        if is_object(up_ct, self.rest) && small {
            let limit = self.dav.limits.max_body_bytes;
            let bytes = resp.bytes_up_to(limit).await.map_err(|_| {
                DavError::Upstream(UpstreamError::BadResponse {
                    detail: "the object body was cut off".into(),
                })
            })?;
            if self.inlines_photos() {
                self.fetch_photos(&bytes, &to_local).await;
            }
            let bytes = match std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| to_local.body_text(t))
            {
                Some(t) => Bytes::from(t),
                None => bytes,
            };
            if self.rest.ends_with(".vcf") && up_ct.starts_with("text/plain") {
                head = head.header(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/vcard; charset=utf-8"),
                );
            }
            head = head.header(http::header::CONTENT_LENGTH, bytes.len());
            return Ok((head, full(bytes)));
        }
        if let Some(len) = resp.content_length() {
            head = head.header(http::header::CONTENT_LENGTH, len);
        }
        Ok((head, stream_body(resp)))
    }
}

/// The answer's status and the headers a client may see: the allow-list, and `Location` /
/// `Content-Location` mapped to the client's URLs (an absolute URL we cannot map never
/// leaks). Says whether upstream sent an ETag.
fn response_head(resp: &UpstreamResponse, to_local: &ToLocal) -> (http::response::Builder, bool) {
    let mut out = Response::builder().status(resp.status().as_u16());
    let mut etag_seen = false;
    for name in RESPONSE_HEADERS {
        for v in resp.headers().get_all(*name) {
            if *name == "etag" {
                etag_seen = true;
            }
            out = out.header(*name, v.clone());
        }
    }
    for name in ["location", "content-location"] {
        if let Some(v) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
            match to_local.href(v) {
                Some(mapped) => out = out.header(name, mapped),
                None if !v.contains("://") => out = out.header(name, v),
                None => {}
            }
        }
    }
    (out, etag_seen)
}

/// Keep only the last Content-Type (the bridge's own when it set one).
fn dedupe_content_type(h: &mut HeaderMap) {
    let all: Vec<HeaderValue> = h
        .get_all(http::header::CONTENT_TYPE)
        .iter()
        .cloned()
        .collect();
    if all.len() > 1 {
        if let Some(last) = all.last() {
            h.insert(http::header::CONTENT_TYPE, last.clone());
        }
    }
}

fn is_object(ct: &str, rest: &str) -> bool {
    ct.starts_with("text/calendar")
        || ct.starts_with("text/vcard")
        || ct.starts_with("text/x-vcard")
        || rest.ends_with(".vcf")
        || rest.ends_with(".ics")
}

/// Ask upstream for the ETag of what was just written (PROPFIND Depth 0 getetag).
async fn read_back_etag(
    dav: &Dav,
    account: &Account,
    service: Service,
    target: &Url,
) -> Option<String> {
    const GETETAG: &str = r#"<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/></d:prop></d:propfind>"#;
    let (_, bytes) = discover::propfind0(
        &dav.upstream,
        account,
        service,
        target.clone(),
        GETETAG,
        Purpose::Dav,
    )
    .await
    .ok()?;
    discover::text_of(&bytes, b"DAV:", b"getetag")
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}
