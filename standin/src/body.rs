//! The response body: whole bytes, a lazily generated chunk stream, or a body that breaks off
//! mid-way (the `flaky.reset` fault).

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// A generator of body chunks; `None` ends the body.
pub type ChunkGen = Box<dyn FnMut() -> Option<Bytes> + Send>;

/// A response body.
pub enum Body {
    Full(Option<Bytes>),
    Stream(ChunkGen),
    /// Send these bytes, then fail (the connection is closed mid-response).
    Broken(Option<Bytes>),
}

impl Body {
    pub fn empty() -> Body {
        Body::Full(None)
    }

    pub fn from_string(s: String) -> Body {
        Body::Full(Some(Bytes::from(s)))
    }

    pub fn from_bytes(b: Bytes) -> Body {
        Body::Full(Some(b))
    }

    /// Collect a body into bytes (streams are drained); used for the reset fault.
    pub fn into_bytes(self) -> Bytes {
        match self {
            Body::Full(b) | Body::Broken(b) => b.unwrap_or_default(),
            Body::Stream(mut g) => {
                let mut v = Vec::new();
                while let Some(c) = g() {
                    v.extend_from_slice(&c);
                }
                Bytes::from(v)
            }
        }
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(g) => Poll::Ready(g().map(|b| Ok(Frame::data(b)))),
            Body::Broken(b) => match b.take() {
                Some(b) if !b.is_empty() => Poll::Ready(Some(Ok(Frame::data(b)))),
                _ => Poll::Ready(Some(Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "stand-in: connection reset mid-response",
                )))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
