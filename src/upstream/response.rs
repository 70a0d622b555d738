//! An upstream answer as the DAV layer reads it: status, headers, the URL that answered, and
//! a body that fails (instead of waiting for ever) when upstream goes quiet for longer than
//! `timeout_secs` between two pieces.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use url::Url;

/// Why an upstream body stopped before its end. Says nothing of hosts or credentials.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream sent nothing for {0} s")]
    Idle(u64),
    #[error("the upstream connection broke")]
    Broken(#[source] hyper::Error),
}

/// A response from upstream (see [`crate::upstream::client::Upstream::send`]).
#[derive(Debug)]
pub struct Response {
    status: StatusCode,
    headers: HeaderMap,
    url: Url,
    body: UpstreamBody,
}

impl Response {
    pub(crate) fn new(resp: http::Response<Incoming>, url: Url, idle: Duration) -> Response {
        let (parts, body) = resp.into_parts();
        Response {
            status: parts.status,
            headers: parts.headers,
            url,
            body: UpstreamBody {
                inner: body,
                idle,
                timer: None,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The URL that gave this answer (after redirects the client followed).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The body's length, when upstream said it.
    pub fn content_length(&self) -> Option<u64> {
        self.body.size_hint().exact()
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(e),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }

    /// The whole body (callers bound what they ask for by `content_length` or stream).
    pub async fn bytes(self) -> Result<Bytes, BodyError> {
        Ok(self.body.collect().await?.to_bytes())
    }

    /// The body as an `http_body::Body`.
    pub fn into_body(self) -> UpstreamBody {
        self.body
    }

    /// The body as a stream of pieces.
    pub fn bytes_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<Bytes, BodyError>> + Send + Sync + 'static {
        http_body_util::BodyDataStream::new(self.body)
    }
}

/// An upstream body with an idle limit between pieces.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    idle: Duration,
    /// Armed while a piece is awaited.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.timer = None;
                Poll::Ready(r.map(|r| r.map_err(BodyError::Broken)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(BodyError::Idle(idle.as_secs()))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
