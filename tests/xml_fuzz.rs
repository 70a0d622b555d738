//! Property tests for the href rewriter on real iCloud-shaped documents (the corpus in
//! `tests/corpus/xml/`, captured from the stand-in) and random mutations of them: any input
//! either rewrites to well-formed XML or fails cleanly, never panics, and the streaming
//! rewriter agrees with the whole-buffer one. Failing cases proptest finds are kept in
//! `tests/xml_fuzz.proptest-regressions` and replayed first.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use icloud_bridge::xml::rewrite::{rewrite_stream, rewrite_to_vec, HrefMap};
use proptest::prelude::*;
use quick_xml::events::Event;

/// Maps the stand-in's dsid paths and any absolute URL to bridge paths, like the real maps.
struct ToBridge;

impl HrefMap for ToBridge {
    fn href(&self, href: &str) -> Option<String> {
        let path = match href.find("://") {
            Some(i) => {
                let after = &href[i + 3..];
                &after[after.find('/').unwrap_or(after.len())..]
            }
            None => href,
        };
        if path == "/" {
            return Some("/dav/alice/".into());
        }
        path.strip_prefix("/1234567890/")
            .map(|rest| format!("/dav/alice/{rest}"))
    }
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/xml");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "xml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "corpus missing in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// Well-formed: parses to the end with matching end tags and exactly one root element.
fn assert_well_formed(out: &[u8]) -> Result<(), String> {
    let mut r = quick_xml::Reader::from_reader(out);
    r.config_mut().check_end_names = true;
    let mut depth = 0usize;
    let mut roots = 0;
    loop {
        match r.read_event() {
            Ok(Event::Start(_)) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
            }
            Ok(Event::Empty(_)) if depth == 0 => roots += 1,
            Ok(Event::End(_)) => depth = depth.checked_sub(1).ok_or("unbalanced end tag")?,
            Ok(Event::Text(t)) if depth == 0 => {
                if !t.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err("text outside the root".into());
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("output does not parse: {e}")),
        }
    }
    if depth != 0 || roots != 1 {
        return Err(format!("depth {depth}, {roots} roots"));
    }
    Ok(())
}

fn stream_rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, String> {
    let chunks: Vec<Result<Bytes, std::io::Error>> = input
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut s = Box::pin(rewrite_stream(
            futures_util::stream::iter(chunks),
            Arc::new(ToBridge),
        ));
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(out)
    })
}

#[test]
fn the_corpus_rewrites_to_well_formed_xml_without_upstream_paths() {
    for (name, doc) in corpus() {
        let out = rewrite_to_vec(&doc, &ToBridge).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_well_formed(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        let text = String::from_utf8(out.clone()).unwrap();
        // Every href is mapped (URLs inside calendar and vCard data are the proxy's business).
        for href in text.split("<d:href>").skip(1) {
            let href = href.split("</d:href>").next().unwrap_or("");
            assert!(
                href.starts_with("/dav/alice/"),
                "{name}: unmapped href {href}"
            );
        }
        for chunk in [1, 7, 64, 4096] {
            assert_eq!(
                stream_rewrite(&doc, chunk).unwrap(),
                out,
                "{name}, chunk {chunk}"
            );
        }
    }
}

/// One edit of a document: the kinds of damage a lying or broken upstream produces.
#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Flip(usize, u8),
    Insert(usize, &'static str),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let nasty = prop::sample::select(vec![
        "<",
        ">",
        "&",
        "\"",
        "'",
        "</",
        "/>",
        "<![CDATA[",
        "]]>",
        "&amp;",
        "&#0;",
        "&bogus;",
        "<x:y>",
        "xmlns=\"\"",
        "xmlns:d=\"DAV:\"",
        "<?pi?>",
        "<!--",
        "-->",
        "\u{0}",
        "\u{feff}",
        "<href>http://127.0.0.1:1/1234567890/x</href>",
        "<response>",
        "</response>",
        "é",
    ]);
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), nasty).prop_map(|(i, s)| Edit::Insert(i, s)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 1usize..128).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(doc: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut d = doc.to_vec();
    for e in edits {
        if d.is_empty() {
            break;
        }
        let at = |i: usize| i % (d.len() + 1);
        match e {
            Edit::Truncate(i) => d.truncate(at(*i)),
            Edit::Flip(i, b) => {
                let i = i % d.len();
                d[i] = *b;
            }
            Edit::Insert(i, s) => {
                let i = at(*i);
                d.splice(i..i, s.bytes());
            }
            Edit::Delete(i, n) => {
                let i = at(*i);
                let j = (i + n).min(d.len());
                d.drain(i..j);
            }
            Edit::Duplicate(i, n) => {
                let i = at(*i);
                let j = (i + n).min(d.len());
                let copy = d[i..j].to_vec();
                d.splice(j..j, copy);
            }
        }
    }
    d
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn damaged_documents_rewrite_to_well_formed_xml_or_fail_cleanly(
        which in 0usize..64,
        edits in prop::collection::vec(edit(), 1..4),
        chunk in 1usize..300,
    ) {
        let docs = corpus();
        let (name, doc) = &docs[which % docs.len()];
        let input = apply(doc, &edits);
        let whole = rewrite_to_vec(&input, &ToBridge);
        if let Ok(out) = &whole {
            prop_assert!(assert_well_formed(out).is_ok(), "{name}: {:?}\n{}", assert_well_formed(out), String::from_utf8_lossy(out));
        }
        // The stream agrees: the same bytes when it succeeds, an error when it does not.
        match (&whole, stream_rewrite(&input, chunk)) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, &b),
            (Err(_), Err(_)) => {}
            (a, b) => prop_assert!(false, "{name}: whole {:?} vs stream {:?}", a.as_ref().map(|v| v.len()), b.map(|v| v.len())),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(out) = rewrite_to_vec(&input, &ToBridge) {
            prop_assert!(assert_well_formed(&out).is_ok());
        }
    }
}
