//! Streaming XML: href rewriting between the local tree and upstream, and inspection of
//! client request bodies.
//!
//! - [`rewrite`]: [`rewrite_to_vec`] / [`rewrite_stream`] normalise a DAV document and map its
//!   hrefs through an [`HrefMap`].
//! - [`inspect`](mod@inspect): [`inspect()`](inspect::inspect) reads what a client's request
//!   body asks for.
//! - [`build`]: [`MultistatusBuilder`] and [`error_body`] for the bridge's own responses.
//! - [`names`]: namespace URIs and their output prefixes.

pub mod build;
mod engine;
pub mod error;
pub mod escape;
pub mod guard;
pub mod inspect;
pub mod names;
pub mod rewrite;
mod scan;

#[cfg(test)]
mod bench_tests;
#[cfg(test)]
mod inspect_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod rewrite_tests;
#[cfg(test)]
mod scan_tests;
#[cfg(test)]
mod stream_tests;
#[cfg(test)]
mod testutil;

pub use build::{error_body, MultistatusBuilder};
pub use error::XmlError;
pub use escape::{escape_attr, escape_text};
pub use inspect::{inspect, PropRequest, RequestInfo};
pub use rewrite::{rewrite_stream, rewrite_to_vec, HrefMap, Identity};

/// Deepest element nesting accepted in any document.
/// Request bodies larger than this are parsed on the blocking pool, so that a big (or
/// hostile) one never holds a worker thread that every other client's requests need.
const PARSE_INLINE_UP_TO: usize = 64 * 1024;

/// Run `f` (parsing a request body) where it cannot hold up other clients: inline for a small
/// body, on the blocking pool for a large one. `None` if the blocking task did not finish.
pub async fn off_thread<T: Send + 'static>(
    body: &bytes::Bytes,
    f: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Option<T> {
    if body.len() <= PARSE_INLINE_UP_TO {
        return Some(f(body));
    }
    let body = body.clone();
    tokio::task::spawn_blocking(move || f(&body)).await.ok()
}

pub const MAX_DEPTH: usize = 256;
