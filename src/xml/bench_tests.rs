//! Throughput and memory measurement of the rewriter on a ~100 MB iCloud-style multistatus.
//!
//! Run: `cargo test --release --lib xml::bench_tests -- --ignored --nocapture`
//! (`XML_BENCH_MB=…` changes the size).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;

use super::rewrite::{rewrite_stream, rewrite_to_vec};
use super::testutil::{dense_listing, icloud_response, TestMap};

const HEAD: &str =
    "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<multistatus xmlns=\"DAV:\">\n";
const TAIL: &str = "\n <sync-token>HwoQEgw...==</sync-token>\n</multistatus>\n";

fn target_bytes() -> usize {
    let mb = std::env::var("XML_BENCH_MB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100);
    mb * 1_000_000
}

/// Kilobytes from a `/proc/self/status` line such as `VmHWM:   1234 kB`.
fn proc_kb(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) used by this thread so far, from `/proc/thread-self/stat`
/// (assumes the usual 100 clock ticks per second); 0 where unavailable.
fn thread_cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Wall-clock and CPU-time throughput of `f` over `bytes` input bytes.
fn measure<T>(label: &str, bytes: usize, f: impl FnOnce() -> T) -> T {
    let cpu = thread_cpu_secs();
    let started = Instant::now();
    let result = f();
    let wall = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_secs() - cpu;
    let mb = bytes as f64 / 1e6;
    println!(
        "xml-rewrite {label}: {mb:.1} MB in {wall:.2}s wall = {:.1} MB/s; {cpu:.2}s CPU = {:.1} MB/s per core",
        mb / wall,
        if cpu > 0.0 { mb / cpu } else { f64::NAN }
    );
    result
}

/// Produces the document lazily in ~64 KiB pieces, never holding all of it.
fn lazy_doc(
    target: usize,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Unpin {
    let state = (0usize, 0usize, false); // (next response, bytes so far, tail sent)
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut i, mut total, done)| async move {
            if done {
                return None;
            }
            let mut piece = String::with_capacity(70 * 1024);
            if i == 0 {
                piece.push_str(HEAD);
            }
            while piece.len() < 64 * 1024 && total + piece.len() < target {
                icloud_response(&mut piece, i);
                i += 1;
            }
            total += piece.len();
            let finished = total >= target;
            if finished {
                piece.push_str(TAIL);
            }
            Some((Ok(Bytes::from(piece)), (i, total, finished)))
        },
    ))
}

async fn drain(
    stream: impl futures_util::Stream<Item = Result<Bytes, super::error::XmlError>>,
) -> (usize, u64) {
    let rss_before = proc_kb("VmRSS:").unwrap_or(0);
    let mut peak = rss_before;
    let mut out_bytes = 0;
    let mut stream = std::pin::pin!(stream);
    let mut chunks = 0usize;
    while let Some(chunk) = stream.next().await {
        out_bytes += chunk.unwrap().len();
        chunks += 1;
        if chunks % 256 == 0 {
            peak = peak.max(proc_kb("VmRSS:").unwrap_or(0));
        }
    }
    (out_bytes, peak.saturating_sub(rss_before))
}

#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn xml_rewrite_throughput() {
    let target = target_bytes();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    // 1. Streaming a lazily generated body (generation included): memory must stay flat.
    let (_, growth_kb) = measure(
        "rewrite_stream, lazy input incl. generation",
        target,
        || rt.block_on(drain(rewrite_stream(lazy_doc(target), Arc::new(TestMap)))),
    );
    let growth_mb = growth_kb as f64 / 1024.0;
    println!("xml-rewrite rewrite_stream RSS growth: {growth_mb:.1} MB");
    assert!(growth_mb < 32.0, "memory grew by {growth_mb:.1} MB");

    // 2. The same document in memory.
    let mut doc = String::with_capacity(target + 4096);
    doc.push_str(HEAD);
    let mut i = 0;
    while doc.len() < target {
        icloud_response(&mut doc, i);
        i += 1;
    }
    doc.push_str(TAIL);
    let doc = Bytes::from(doc);
    println!("xml-rewrite input: {} bytes, {i} responses", doc.len());

    for _ in 0..2 {
        let out = measure("rewrite_to_vec", doc.len(), || {
            rewrite_to_vec(&doc, &TestMap).unwrap()
        });
        assert!(out.len() > doc.len() / 2);
    }
    for _ in 0..2 {
        let pieces: Vec<Result<Bytes, std::io::Error>> = (0..doc.len())
            .step_by(16 * 1024)
            .map(|at| Ok(doc.slice(at..(at + 16 * 1024).min(doc.len()))))
            .collect();
        let input = futures_util::stream::iter(pieces);
        let (out_bytes, _) = measure("rewrite_stream, 16 KiB input chunks", doc.len(), || {
            rt.block_on(drain(rewrite_stream(input, Arc::new(TestMap))))
        });
        assert!(out_bytes > doc.len() / 2);
    }
}

/// The stand-in's element-dense PROPFIND listing (no calendar data), through the full path
/// (quick-xml's reader, in memory) and the streaming path (the bridge's, 16 KiB input chunks).
#[test]
#[ignore = "benchmark: run with --release --ignored --nocapture"]
fn dense_listing_throughput() {
    let doc = Bytes::from(dense_listing(1000));
    // XML_BENCH_REPS=…: documents per measurement (200).
    let reps = std::env::var("XML_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(200);
    let total = doc.len() * reps;
    // XML_BENCH_STREAM_ONLY=1: the streaming path alone (for profiles).
    let stream_only = std::env::var_os("XML_BENCH_STREAM_ONLY").is_some();
    let out = if stream_only {
        rewrite_to_vec(&doc, &TestMap).map(|v| v.len()).unwrap_or(0) * reps
    } else {
        measure("dense listing, rewrite_to_vec (full path)", total, || {
            (0..reps)
                .map(|_| rewrite_to_vec(&doc, &TestMap).map(|v| v.len()).unwrap_or(0))
                .sum::<usize>()
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let streamed = measure(
        "dense listing, rewrite_stream, 16 KiB chunks",
        total,
        || {
            rt.block_on(async {
                let mut sum = 0;
                for _ in 0..reps {
                    let pieces: Vec<Result<Bytes, std::io::Error>> = (0..doc.len())
                        .step_by(16 * 1024)
                        .map(|at| Ok(doc.slice(at..(at + 16 * 1024).min(doc.len()))))
                        .collect();
                    let input = futures_util::stream::iter(pieces);
                    sum += drain(rewrite_stream(input, Arc::new(TestMap))).await.0;
                }
                sum
            })
        },
    );
    assert_eq!(out, streamed);
    println!(
        "xml-rewrite dense listing: {} bytes in, {} out per document",
        doc.len(),
        out / reps
    );
}
