//! Tests of `rewrite_stream`: same bytes as `rewrite_to_vec` for any chunking, errors last.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;

use super::error::XmlError;
use super::rewrite::{rewrite_stream, rewrite_to_vec, HrefMap, Identity, CHUNK_SIZE};
use super::testutil::{icloud_response, icloud_sample, TestMap};

/// Runs the streaming rewriter over `input` cut into `chunk`-byte pieces.
async fn stream_items(
    input: &[u8],
    chunk: usize,
    map: Arc<dyn HrefMap>,
) -> Vec<Result<Bytes, XmlError>> {
    let pieces: Vec<Result<Bytes, std::io::Error>> = input
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    rewrite_stream(futures_util::stream::iter(pieces), map)
        .collect()
        .await
}

fn big_doc(responses: usize) -> String {
    let mut doc = String::from("<?xml version=\"1.0\"?><multistatus xmlns=\"DAV:\">");
    for i in 0..responses {
        icloud_response(&mut doc, i);
    }
    doc.push_str("</multistatus>");
    doc
}

#[tokio::test]
async fn same_bytes_for_any_chunking() {
    for doc in [icloud_sample(), big_doc(400)] {
        let expected = rewrite_to_vec(doc.as_bytes(), &TestMap).unwrap();
        for chunk in [1, 7, 64 * 1024] {
            let items = stream_items(doc.as_bytes(), chunk, Arc::new(TestMap)).await;
            let mut got = Vec::new();
            for item in items {
                let bytes = item.unwrap();
                assert!(!bytes.is_empty());
                assert!(bytes.len() < CHUNK_SIZE * 2);
                got.extend_from_slice(&bytes);
            }
            assert_eq!(got, expected, "chunk size {chunk}");
        }
    }
}

#[tokio::test]
async fn output_is_chunked() {
    let doc = big_doc(2000);
    let items = stream_items(doc.as_bytes(), 16 * 1024, Arc::new(Identity)).await;
    assert!(items.len() > 10);
    assert!(items.iter().all(|i| i.is_ok()));
}

#[tokio::test]
async fn truncated_input_ends_in_err() {
    let doc = big_doc(400);
    let cut = &doc.as_bytes()[..doc.len() - 40];
    for chunk in [1, 7, 64 * 1024] {
        let items = stream_items(cut, chunk, Arc::new(TestMap)).await;
        let (last, rest) = items.split_last().unwrap();
        assert!(matches!(last, Err(XmlError::Malformed { .. })), "{last:?}");
        assert!(rest.iter().all(|i| i.is_ok()));
        if chunk == 7 {
            assert!(
                !rest.is_empty(),
                "bytes before the error are still delivered"
            );
        }
    }
    for bad in ["", "<a><b></a>", "<a/><b/>", "<!DOCTYPE x><x/>"] {
        let items = stream_items(bad.as_bytes(), 3, Arc::new(Identity)).await;
        assert!(
            matches!(items.last(), Some(Err(XmlError::Malformed { .. }))),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn io_error_ends_in_err() {
    let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"<multistatus xmlns='DAV:'><response>")),
        Err(std::io::Error::other("connection reset")),
    ];
    let items: Vec<_> = rewrite_stream(futures_util::stream::iter(pieces), Arc::new(Identity))
        .collect()
        .await;
    assert!(
        matches!(items.last(), Some(Err(XmlError::Io(_)))),
        "{items:?}"
    );
}

#[test]
fn stream_is_send_and_static() {
    fn assert_send<T: Send + 'static>(_: &T) {}
    let s = rewrite_stream(
        futures_util::stream::iter(Vec::<Result<Bytes, std::io::Error>>::new()),
        Arc::new(Identity),
    );
    assert_send(&s);
}

/// Drops every response whose href ends in an odd event number.
struct DropOdd;

impl HrefMap for DropOdd {
    fn href(&self, _href: &str) -> Option<String> {
        None
    }
    fn keep_response(&self, href: &str) -> bool {
        let n: usize = href
            .trim_end_matches("%40x.ics")
            .rsplit("ev")
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        n % 2 == 0
    }
}

#[tokio::test]
async fn dropped_responses_vanish_whatever_the_chunking() {
    let doc = big_doc(300);
    let expected = rewrite_to_vec(doc.as_bytes(), &DropOdd).unwrap();
    let text = String::from_utf8(expected.clone()).unwrap();
    assert!(
        text.contains("/ev2%40x.ics") && !text.contains("/ev3%40x.ics"),
        "{text}"
    );
    assert_eq!(text.matches("<d:response>").count(), 150);
    assert!(text.ends_with("</d:multistatus>"), "{text}");
    for chunk in [1, 7, 4096, 64 * 1024] {
        let items = stream_items(doc.as_bytes(), chunk, Arc::new(DropOdd)).await;
        let mut got = Vec::new();
        for item in items {
            got.extend_from_slice(&item.unwrap());
        }
        assert_eq!(got, expected, "chunk size {chunk}");
    }
}
