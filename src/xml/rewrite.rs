//! Href rewriting of whole DAV documents, in memory or streaming, with normalised output.
//!
//! Output rules (both entry points): `<?xml version="1.0" encoding="utf-8"?>`, the six
//! [known namespaces](super::names::KNOWN) declared on the root with their preferred prefixes,
//! other namespaces under generated prefixes `x0`, `x1`… declared where first needed, no default
//! namespace, double-quoted attributes, whitespace-only text between elements dropped, CDATA
//! turned into escaped text, comments and processing instructions dropped, DOCTYPE rejected.
//! `DAV:href` text goes through [`HrefMap::href`], `CALDAV:calendar-data` and
//! `CARDDAV:address-data` text through [`HrefMap::body_text`].

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use futures_util::StreamExt;
use quick_xml::Reader;

use super::engine::{Engine, Flow};
use super::error::XmlError;
use super::guard::Items;
use super::scan::{Scanner, Step};

/// Output is handed to the stream in chunks of about this size.
pub const CHUNK_SIZE: usize = 32 * 1024;
/// Input read between two chances for other tasks to run, when little output comes of it.
const YIELD_EVERY: u64 = 256 * 1024;

/// How hrefs (and bodies) are translated while rewriting.
pub trait HrefMap: Send + Sync {
    /// Map the (XML-unescaped, whitespace-trimmed) text of a DAV:href element.
    /// `None` = leave unchanged.
    fn href(&self, href: &str) -> Option<String>;

    /// Map an href found inside `parent` (the parent element's normalised qname, such as
    /// `d:current-user-principal` or `cal:calendar-home-set`). Default: [`HrefMap::href`].
    fn href_in(&self, _parent: &str, href: &str) -> Option<String> {
        self.href(href)
    }

    /// Whether a `DAV:response` whose first href is `href` (already mapped) belongs in the
    /// output. Default: keep everything.
    fn keep_response(&self, _href: &str) -> bool {
        true
    }

    /// Rewrite the text of CALDAV:calendar-data / CARDDAV:address-data (e.g. upstream photo
    /// URLs inside a vCard). `None` = unchanged. Default: `None`.
    fn body_text(&self, _text: &str) -> Option<String> {
        None
    }
}

/// Leaves everything unchanged (normalisation only).
#[derive(Debug, Clone, Copy, Default)]
pub struct Identity;

impl HrefMap for Identity {
    fn href(&self, _href: &str) -> Option<String> {
        None
    }
}

impl<F> HrefMap for F
where
    F: Fn(&str) -> Option<String> + Send + Sync,
{
    fn href(&self, href: &str) -> Option<String> {
        self(href)
    }
}

/// Rewrite a whole document in memory (client request bodies, tests), with at most
/// [`MAX_REQUEST_ITEMS`](super::guard::MAX_REQUEST_ITEMS) elements and attributes.
pub fn rewrite_to_vec(input: &[u8], map: &dyn HrefMap) -> Result<Vec<u8>, XmlError> {
    let mut reader = Reader::from_reader(input);
    let mut engine = Engine::new(
        input.len() + input.len() / 4 + 256,
        Items::capped(super::guard::MAX_REQUEST_ITEMS),
    );
    loop {
        let event = reader
            .read_event()
            .map_err(|e| XmlError::from_quick(e, reader.error_position()))?;
        if engine.handle(event, map, reader.buffer_position())? == Flow::Done {
            return Ok(engine.out);
        }
    }
}

/// Streaming rewrite: bytes in, bytes out, bounded memory. Output comes in chunks of about
/// [`CHUNK_SIZE`]. If the input is malformed, truncated or fails, the stream yields the bytes
/// produced so far and then one `Err` as its last item (only the `Err` when nothing was
/// handed on yet, so the caller can still answer with a clean error); a stream that ends without `Err` carried
/// a complete document.
///
/// Feed an upstream body with `resp.bytes_stream().map_err(std::io::Error::other)`.
pub fn rewrite_stream<S, E>(
    input: S,
    map: Arc<dyn HrefMap>,
) -> impl Stream<Item = Result<Bytes, XmlError>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<std::io::Error>,
{
    let inner = Inner {
        input,
        pending: BytesMut::with_capacity(64 * 1024),
        base: 0,
        eof: false,
        scanner: Scanner::default(),
        engine: Engine::new(CHUNK_SIZE + CHUNK_SIZE / 2, Items::unbounded()),
        map,
        emitted: false,
    };
    futures_util::stream::unfold(State::Running(Box::new(inner)), |state| async move {
        match state {
            State::Done => None,
            State::Failed(err) => Some((Err(err), State::Done)),
            State::Running(mut inner) => match inner.fill().await {
                Ok(Flow::Continue) => {
                    let chunk = inner.take();
                    inner.emitted = true;
                    Some((Ok(chunk), State::Running(inner)))
                }
                Ok(Flow::Done) => {
                    let chunk = inner.take();
                    (!chunk.is_empty()).then_some((Ok(chunk), State::Done))
                }
                Err(err) => {
                    let chunk = inner.take();
                    // Nothing handed on yet: the error alone, so the caller can still answer
                    // with a clean error instead of the start of a document.
                    if chunk.is_empty() || !inner.emitted {
                        Some((Err(err), State::Done))
                    } else {
                        Some((Ok(chunk), State::Failed(err)))
                    }
                }
            },
        }
    })
}

enum State<S> {
    Running(Box<Inner<S>>),
    Failed(XmlError),
    Done,
}

struct Inner<S> {
    input: S,
    /// Input not yet used (the start of an unfinished token, or what follows a full chunk of
    /// output); its first byte is input byte `base`.
    pending: BytesMut,
    base: u64,
    /// The input has ended.
    eof: bool,
    scanner: Scanner,
    engine: Engine,
    map: Arc<dyn HrefMap>,
    /// Some output was handed on already.
    emitted: bool,
}

impl<S, E> Inner<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<std::io::Error>,
{
    /// Scans input until at least a chunk of output is ready or the document ends. Input
    /// that makes little output (dropped responses, whitespace, comments) does not keep the
    /// worker thread: every [`YIELD_EVERY`] bytes read, the task lets others run.
    async fn fill(&mut self) -> Result<Flow, XmlError> {
        let mut since_yield = 0u64;
        loop {
            let (used, step) = self.scanner.scan(
                &mut self.engine,
                &*self.map,
                &self.pending,
                self.base,
                self.eof,
                CHUNK_SIZE,
            )?;
            self.pending.advance(used);
            self.base += used as u64;
            since_yield += used as u64;
            match step {
                Step::Done => return Ok(Flow::Done),
                Step::Output => return Ok(Flow::Continue),
                Step::NeedMore => {}
            }
            if since_yield >= YIELD_EVERY {
                tokio::task::yield_now().await;
                since_yield = 0;
            }
            match self.input.next().await {
                None => self.eof = true,
                Some(Err(e)) => return Err(XmlError::Io(e.into())),
                Some(Ok(chunk)) => self.pending.extend_from_slice(&chunk),
            }
        }
    }
}

impl<S> Inner<S> {
    fn take(&mut self) -> Bytes {
        let n = self.engine.flushable();
        if n == self.engine.out.len() {
            let fresh = Vec::with_capacity(CHUNK_SIZE + CHUNK_SIZE / 2);
            return Bytes::from(std::mem::replace(&mut self.engine.out, fresh));
        }
        // Hand on what is settled; keep the held-back response.
        let rest = self.engine.out.split_off(n);
        let chunk = std::mem::replace(&mut self.engine.out, rest);
        self.engine.consumed(n);
        Bytes::from(chunk)
    }
}
