//! The bridge's calendars in the calendar-home listing: their `<d:response>` entries go
//! into iCloud's rewritten answer to PROPFIND Depth 1 on `/dav/<account>/calendars/`, just
//! before its closing `</d:multistatus>` (the root declares every known prefix).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Response, StatusCode};
use hyper::body::Frame;

use crate::accounts::Account;
use crate::body::{Body, BoxError};
use crate::dav::error::DavError;
use crate::dav::virtual_cal::{current, Calendar};
use crate::dav::Dav;
use crate::xml::build::MultistatusBuilder;
use crate::xml::inspect::{inspect, PropRequest};
use crate::xml::names::KNOWN_DECLS;

const CLOSE: &[u8] = b"</d:multistatus>";
/// How long a listing of the calendar home waits for a bridge calendar to be built.
const LISTING_WAITS: std::time::Duration = std::time::Duration::from_secs(2);
/// Bytes held back from the stream so that the closing tag (and what may follow it) is
/// still there when the stream ends.
const HOLD: usize = 64;

/// The home listing `result` with the bridge's calendars appended (the props the client's
/// `body` asked for); anything but a 207 passes unchanged.
pub async fn listed(
    dav: &Dav,
    account: &Arc<Account>,
    body: &Bytes,
    public_origin: &str,
    result: Result<Response<Body>, DavError>,
) -> Result<Response<Body>, DavError> {
    let resp = result?;
    let enabled = dav.calendars.enabled();
    if resp.status() != StatusCode::MULTI_STATUS || enabled.is_empty() {
        return Ok(resp);
    }
    let props = match inspect(body) {
        Ok(info) => info.props,
        Err(_) => PropRequest::AllProp,
    };
    let mut ms = MultistatusBuilder::new();
    for which in enabled {
        // Without a calendar to show (iCloud refuses and nothing was built yet, or the first
        // build of a large address book over a slow link takes longer than a listing should
        // wait) the entry is listed without its tags; the calendar itself is built when asked.
        let cal =
            match tokio::time::timeout(LISTING_WAITS, current(dav, account, which, public_origin))
                .await
            {
                Ok(Ok(c)) => c,
                outcome => {
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("not built within {} s", LISTING_WAITS.as_secs()),
                    };
                    tracing::debug!(
                        account = account.name(),
                        why,
                        "bridge calendar listed without its tags"
                    );
                    Calendar {
                        objects: Vec::new(),
                        tag: String::new(),
                        stale: None,
                    }
                }
            };
        super::serve::add_collection(&mut ms, account.name(), which, &cal, &props);
    }
    let doc = ms.finish();
    let head = format!("<?xml version=\"1.0\" encoding=\"utf-8\"?><d:multistatus{KNOWN_DECLS}>");
    let fragment = doc
        .strip_prefix(head.as_str())
        .and_then(|d| d.strip_suffix("</d:multistatus>"))
        .unwrap_or("")
        .to_string();
    let (mut parts, inner) = resp.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    let appended = Appended {
        inner,
        held: BytesMut::new(),
        extra: Some(Bytes::from(fragment)),
    };
    Ok(Response::from_parts(
        parts,
        http_body_util::BodyExt::boxed(appended),
    ))
}

/// A body passed through with `extra` inserted before its last `</d:multistatus>`.
struct Appended {
    inner: Body,
    held: BytesMut,
    /// `None` once the inner body has ended and everything was handed on.
    extra: Option<Bytes>,
}

impl hyper::body::Body for Appended {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(extra) = &this.extra else {
                return Poll::Ready(None);
            };
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.held.extend_from_slice(&data);
                        if this.held.len() > HOLD {
                            let out = this.held.split_to(this.held.len() - HOLD).freeze();
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(other) => return Poll::Ready(Some(Ok(other))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    let held = std::mem::take(&mut this.held);
                    let mut out = BytesMut::with_capacity(held.len() + extra.len());
                    match held.windows(CLOSE.len()).rposition(|w| w == CLOSE) {
                        Some(i) => {
                            out.extend_from_slice(&held[..i]);
                            out.extend_from_slice(extra);
                            out.extend_from_slice(&held[i..]);
                        }
                        None => out.extend_from_slice(&held),
                    }
                    this.extra = None;
                    return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn entries_go_before_the_closing_tag_whatever_the_chunks() {
        let doc = "<?xml version=\"1.0\"?><d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>/a/</d:href></d:response></d:multistatus>\n";
        for size in [1, 7, 40, 200] {
            let chunks: Vec<Result<Frame<Bytes>, BoxError>> = doc
                .as_bytes()
                .chunks(size)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            let inner: Body = BodyExt::boxed(http_body_util::StreamBody::new(
                futures_util::stream::iter(chunks),
            ));
            let body = Appended {
                inner,
                held: BytesMut::new(),
                extra: Some(Bytes::from_static(b"<d:response>X</d:response>")),
            };
            let out = body.collect().await.unwrap().to_bytes();
            assert_eq!(
                String::from_utf8_lossy(&out),
                doc.replace(
                    "</d:multistatus>",
                    "<d:response>X</d:response></d:multistatus>"
                ),
                "chunks of {size}"
            );
        }
    }
}
