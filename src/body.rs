//! The one HTTP body type every layer answers with, and the small response helpers shared by
//! the DAV tree, the pages and the cache.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type used throughout the bridge.
pub type Body = BoxBody<Bytes, BoxError>;

/// A client's request body as every layer behind the listener sees it: whatever the
/// connection (or a test) delivers, boxed once at the router.
pub type RequestBody = BoxBody<Bytes, BoxError>;

/// Response extension: whether a rewritten body names the client's origin (known once the
/// body has been read through), so that the cache keeps it per origin instead of shared.
#[derive(Clone, Default)]
pub struct OriginUsed(pub std::sync::Arc<std::sync::atomic::AtomicBool>);

impl OriginUsed {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A body of one buffer.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// An upstream body passed through as it arrives (an upstream failure aborts it).
pub fn stream_body(resp: crate::upstream::response::Response) -> Body {
    resp.into_body()
        .map_err(|e| Box::new(e) as BoxError)
        .boxed()
}

/// A plain response with a status and no body.
pub fn status_only(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r
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
