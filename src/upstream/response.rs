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
    #[error("upstream sent more than {0} bytes")]
    TooLarge(usize),
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

    /// The whole body, refused as [`BodyError::TooLarge`] once it passes `limit` bytes: a
    /// broken or lying upstream cannot make the bridge hold more than it asked for.
    pub async fn bytes_up_to(mut self, limit: usize) -> Result<Bytes, BodyError> {
        if self.content_length().is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge(limit));
        }
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        let mut all = Vec::new();
        let mut piece = first;
        loop {
            if all.len() + piece.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            match self.chunk().await? {
                // Mostly the body comes in one piece, which is handed on without a copy.
                None if all.is_empty() => return Ok(piece),
                None => {
                    all.extend_from_slice(&piece);
                    return Ok(Bytes::from(all));
                }
                Some(next) => {
                    all.extend_from_slice(&piece);
                    piece = next;
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A response read from a raw server that writes `wire` and then holds the connection.
    async fn from_wire(wire: &'static [u8], idle: Duration) -> Response {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            s.write_all(wire).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/x")
            .header("host", "up")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let url = Url::parse(&format!("http://{addr}/x")).unwrap();
        Response::new(resp, url, idle)
    }

    #[tokio::test]
    async fn a_whole_body_is_read_with_its_length_and_url() {
        let mut r = from_wire(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: \"1\"\r\n\r\nhello",
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.content_length(), Some(5));
        assert_eq!(r.headers()["etag"], "\"1\"");
        assert_eq!(r.url().path(), "/x");
        assert_eq!(r.chunk().await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert!(r.chunk().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_body_is_read_whole_up_to_the_limit_and_refused_past_it() {
        let chunked: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        let r = from_wire(chunked, Duration::from_secs(5)).await;
        assert_eq!(r.bytes_up_to(6).await.unwrap(), &b"abcdef"[..]);
        // No length given: refused when the pieces pass the limit.
        let r = from_wire(chunked, Duration::from_secs(5)).await;
        let err = r.bytes_up_to(5).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge(5)), "{err:?}");
        assert_eq!(err.to_string(), "upstream sent more than 5 bytes");
        // A declared length past the limit: refused before reading.
        let r = from_wire(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            Duration::from_secs(5),
        )
        .await;
        assert!(matches!(
            r.bytes_up_to(9).await,
            Err(BodyError::TooLarge(9))
        ));
        let r = from_wire(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            Duration::from_secs(5),
        )
        .await;
        assert!(r.bytes_up_to(9).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_fails_after_the_idle_limit() {
        let r = from_wire(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
            Duration::from_secs(1),
        )
        .await;
        let started = std::time::Instant::now();
        let err = r.bytes_up_to(100).await.unwrap_err();
        assert!(matches!(err, BodyError::Idle(1)), "{err:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(err.to_string(), "upstream sent nothing for 1 s");
    }
}
