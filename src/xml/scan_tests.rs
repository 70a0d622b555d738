//! The streaming rewriter's own tokenizer ([`super::scan`]) against quick-xml's reader (the
//! full path, [`rewrite_to_vec`]): the same bytes out, or the same error, on every document of
//! the corpus, whole and damaged, however the input is cut into chunks.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::prop_tests::random_doc;
use super::rewrite::{rewrite_stream, rewrite_to_vec, HrefMap, Identity};
use super::testutil::{dense_listing, icloud_response, icloud_sample, TestMap};

/// What the streaming path makes of `input` in `chunk`-byte pieces: all its bytes, or the
/// error it ended with.
async fn fast(input: &[u8], chunk: usize, map: Arc<dyn HrefMap>) -> Result<Vec<u8>, String> {
    let pieces: Vec<Result<Bytes, std::io::Error>> = input
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let mut stream = std::pin::pin!(rewrite_stream(futures_util::stream::iter(pieces), map));
    let mut out = Vec::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => out.extend_from_slice(&bytes),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(out)
}

fn full(input: &[u8], map: &dyn HrefMap) -> Result<Vec<u8>, String> {
    rewrite_to_vec(input, map).map_err(|e| e.to_string())
}

/// Both paths agree on `input` for each chunking.
async fn agree(input: &[u8], map: Arc<dyn HrefMap>, chunks: &[usize], what: &str) {
    let want = full(input, &*map);
    for &chunk in chunks {
        let got = fast(input, chunk, map.clone()).await;
        if got != want {
            let show = |r: &Result<Vec<u8>, String>| match r {
                Ok(b) => format!("Ok({})", String::from_utf8_lossy(b)),
                Err(e) => format!("Err({e})"),
            };
            panic!(
                "{what}, chunks of {chunk}: fast path {}\nfull path {}\ninput {}",
                show(&got),
                show(&want),
                String::from_utf8_lossy(input)
            );
        }
    }
}

/// The corpus: iCloud-shaped answers, the stand-in's dense listing, and random documents.
fn corpus() -> Vec<(String, String)> {
    let mut docs = vec![
        ("icloud sample".to_string(), icloud_sample()),
        ("dense listing".to_string(), dense_listing(40)),
    ];
    let mut many = String::from("<?xml version=\"1.0\"?><multistatus xmlns=\"DAV:\">");
    for i in 0..30 {
        icloud_response(&mut many, i);
    }
    many.push_str("</multistatus>");
    docs.push(("icloud responses".to_string(), many));
    for seed in 0..150 {
        docs.push((format!("random doc {seed}"), random_doc(seed)));
    }
    docs
}

#[tokio::test]
async fn same_bytes_as_the_full_path_on_the_corpus() {
    for (what, doc) in corpus() {
        agree(
            doc.as_bytes(),
            Arc::new(TestMap),
            &[1, 3, 16, 100, 4096, usize::MAX],
            &what,
        )
        .await;
        agree(doc.as_bytes(), Arc::new(Identity), &[7, usize::MAX], &what).await;
    }
}

#[tokio::test]
async fn same_errors_as_the_full_path_on_damaged_documents() {
    let mut rng = StdRng::seed_from_u64(7);
    let noise: &[&[u8]] = &[
        b"<",
        b">",
        b"&",
        b";",
        b"\"",
        b"'",
        b"/",
        b"</",
        b"/>",
        b"<!--",
        b"-->",
        b"<![CDATA[",
        b"]]>",
        b"<?",
        b"?>",
        b"<!DOCTYPE a>",
        b"&amp;",
        b"&#xD;",
        b"&bogus;",
        b"\xff",
        b"\xc3",
        b"\xEF\xBB\xBF",
        b" ",
        b"x:",
        b"=",
        b"\0",
    ];
    for (what, doc) in corpus().into_iter().take(60) {
        let doc = doc.into_bytes();
        // Cuts anywhere.
        for _ in 0..20 {
            let cut = rng.gen_range(0..doc.len());
            agree(&doc[..cut], Arc::new(TestMap), &[1, 13, usize::MAX], &what).await;
        }
        // Insertions, deletions and swapped bytes.
        for _ in 0..30 {
            let mut d = doc.clone();
            let at = rng.gen_range(0..d.len());
            match rng.gen_range(0..3) {
                0 => {
                    let n = noise[rng.gen_range(0..noise.len())];
                    d.splice(at..at, n.iter().copied());
                }
                1 => {
                    let end = (at + rng.gen_range(1..8)).min(d.len());
                    d.drain(at..end);
                }
                _ => d[at] = rng.gen(),
            }
            agree(&d, Arc::new(TestMap), &[1, 13, usize::MAX], &what).await;
        }
    }
}

#[tokio::test]
async fn same_answers_on_the_hostile_cases() {
    let cases: &[&str] = &[
        "",
        "   \n",
        "\u{feff}<?xml version=\"1.0\" encoding=\"UTF-8\"?><!-- hi --><?pi x?><a><!--c--><?p?></a>\n",
        "<a><b></b>",
        "<a><b></a></b>",
        "<a></b>",
        "</a>",
        "<a></a ></a>",
        "<a></a\n>",
        "<x:a/>",
        "<a y:k='1'/>",
        "<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>",
        "<a/><b/>",
        "<a/>junk",
        "junk<a/>",
        "<a>&nbsp;</a>",
        "<a>&#0;</a>",
        "<a>& b</a>",
        "<a>&amp</a>",
        "<a>x &amp y &lt; z</a>",
        "<a b='1' b='2'/>",
        "<a k='<'/>",
        "<a k='>' j=\">'\"/>",
        "<a k=1/>",
        "<a b>x</a>",
        "<a b = \"1\"\n\t c\t=\r\n'2' >x</a>",
        "<a =\"1\"/>",
        "<a b=\"1/>",
        "<a xmlns:p='urn:p' p:k='1' k='2' xmlns='DAV:'><p:b p:k=\"&amp;&lt;\"/></a>",
        "<a xmlns:p='urn:p' xmlns:q='urn:p' p:k='1' q:k='2'/>",
        "<a b='\u{e9}\u{1F600}' \u{e9}='1'/>",
        "<a k='1'j='2'/>",
        "<a",
        "<a>text",
        "<>",
        "< a/>",
        "<a/ >",
        "<1a/>",
        "<a:b:c xmlns:a='u'/>",
        "<a xmlns:xml='urn:x'/>",
        "<a><![CDATA[x]]></a>",
        "<a><![CDATA[x</a>",
        "<a><!-- x </a>",
        "<a><!-- x -- y --></a>",
        "<?xml version='1.0' encoding='ISO-8859-1'?><a/>",
        "<!-- c --><?xml version='1.0'?><a/>",
        "<a>\u{feff}x</a>",
        "<href xmlns='DAV:'> /1234567890/calendars/home/x.ics </href>",
    ];
    for input in cases {
        agree(
            input.as_bytes(),
            Arc::new(TestMap),
            &[1, 2, 5, usize::MAX],
            input,
        )
        .await;
    }
    agree(
        b"<a>\xff</a>",
        Arc::new(TestMap),
        &[1, usize::MAX],
        "invalid UTF-8",
    )
    .await;
    agree(
        b"<a\xff/>",
        Arc::new(TestMap),
        &[1, usize::MAX],
        "invalid UTF-8 name",
    )
    .await;
}

/// Repeated names mean what the bindings in scope say at each place: a prefix rebound, a
/// default namespace changed, a prefix gone out of scope. (A memo of resolved names keyed on
/// the bytes alone passes the corpus and fails here.)
#[tokio::test]
async fn repeated_names_follow_the_bindings_in_scope() {
    let cases: &[&str] = &[
        "<d:multistatus xmlns:d=\"DAV:\"><d:response><d:href>/1234567890/calendars/home/a.ics</d:href></d:response>\
         <d:response><d:x xmlns:d=\"urn:other\"><d:href>/1234567890/calendars/home/y.ics</d:href></d:x>\
         <d:href>/1234567890/calendars/home/b.ics</d:href></d:response></d:multistatus>",
        "<multistatus xmlns=\"DAV:\"><response><href>/1234567890/calendars/home/a.ics</href></response>\
         <response><propstat xmlns=\"urn:other\"><href>/1234567890/calendars/home/y.ics</href></propstat>\
         <href>/1234567890/calendars/home/c.ics</href></response></multistatus>",
        "<a xmlns:p=\"DAV:\"><b xmlns:p=\"urn:x\"><p:href>/1234567890/calendars/home/q.ics</p:href></b>\
         <b xmlns:p=\"DAV:\"><p:href>/1234567890/calendars/home/q.ics</p:href></b><p:href>/1234567890/calendars/home/r.ics</p:href></a>",
        "<a><p:b xmlns:p=\"DAV:\"/><p:b/></a>",
    ];
    for input in cases {
        agree(
            input.as_bytes(),
            Arc::new(TestMap),
            &[1, 3, 7, usize::MAX],
            input,
        )
        .await;
    }
    // The href under the rebound prefix is not DAV's, so it is not mapped; the others are.
    let out = fast(cases[0].as_bytes(), usize::MAX, Arc::new(TestMap))
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("<x0:href>/1234567890/calendars/home/y.ics</x0:href>"),
        "{out}"
    );
    assert!(
        out.contains("<d:href>/dav/alice/calendars/home/a.ics</d:href>"),
        "{out}"
    );
    assert!(
        out.contains("<d:href>/dav/alice/calendars/home/b.ics</d:href>"),
        "{out}"
    );
    // Out of its element, the prefix is unbound again.
    let err = fast(cases[3].as_bytes(), usize::MAX, Arc::new(TestMap))
        .await
        .unwrap_err();
    assert!(err.contains("p"), "{err}");
}

/// Drops the responses whose first href says `drop`.
struct Dropping;

impl HrefMap for Dropping {
    fn href(&self, href: &str) -> Option<String> {
        TestMap.href(href)
    }

    fn keep_response(&self, href: &str) -> bool {
        !href.contains("drop")
    }
}

/// A tag whose bytes recur is handed on from what was made of it the first time
/// (`Engine::start_compiled`): it must still follow the namespace in scope each time, be held
/// as a response only where one may be, write its attributes as the full path does, and fail
/// where the full path fails.
#[tokio::test]
async fn tags_seen_again_keep_their_meaning_in_each_place() {
    let deep_declarations = format!(
        "<a xmlns=\"DAV:\">{}{}</a>",
        "<b xmlns=\"DAV:\">".repeat(200),
        "</b>".repeat(200)
    );
    let cases: Vec<String> = vec![
        // `<response>` and `<href>` again under CalDAV's default namespace, then DAV's.
        "<multistatus xmlns=\"DAV:\"><response><href>/1234567890/calendars/a.ics</href></response>\
         <x xmlns=\"urn:ietf:params:xml:ns:caldav\"><response><href>/1234567890/calendars/b.ics</href></response></x>\
         <response><href>/1234567890/calendars/drop.ics</href></response>\
         <response><href>/1234567890/calendars/c.ics</href></response></multistatus>"
            .into(),
        // The same tag under an unknown default namespace, and under none.
        "<r xmlns:d=\"DAV:\"><d:p xmlns=\"DAV:\"><href>/1234567890/calendars/d.ics</href></d:p>\
         <d:p xmlns=\"urn:x\"><href>/1234567890/calendars/e.ics</href></d:p>\
         <d:p xmlns=\"\"><href>/1234567890/calendars/f.ics</href></d:p>\
         <d:p xmlns=\"DAV:\"><href>/1234567890/calendars/g.ics</href></d:p></r>"
            .into(),
        // Attributes: quotes and references, written the same way twice.
        "<multistatus xmlns=\"DAV:\"><p><comp name='VEVENT' xmlns='urn:ietf:params:xml:ns:caldav'/>\
         <comp name='VEVENT' xmlns='urn:ietf:params:xml:ns:caldav'/><e a='x\"y' b=\"&amp;&#65;\"/>\
         <e a='x\"y' b=\"&amp;&#65;\"/></p><response xmlns=\"DAV:\"><href>/1234567890/calendars/drop/</href>\
         <e a='x\"y' b=\"&amp;&#65;\"/></response><response xmlns=\"DAV:\"><href>/1234567890/calendars/h/</href>\
         </response></multistatus>"
            .into(),
        // Errors the second time round: a duplicate attribute, a tag after the root.
        "<m xmlns=\"DAV:\"><e a=\"1\"/><e a=\"1\" a=\"2\"/></m>".into(),
        "<m xmlns=\"DAV:\"><e/></m><e/>".into(),
        // More declarations in scope than allowed, each made by the same tag.
        deep_declarations,
    ];
    for input in &cases {
        for map in [Arc::new(Dropping) as Arc<dyn HrefMap>, Arc::new(Identity)] {
            agree(input.as_bytes(), map, &[1, 5, 64, usize::MAX], input).await;
        }
    }
    let out = fast(cases[0].as_bytes(), usize::MAX, Arc::new(Dropping))
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains(
            "<cal:response><cal:href>/1234567890/calendars/b.ics</cal:href></cal:response>"
        ),
        "{out}"
    );
    assert!(!out.contains("drop"), "{out}");
    assert!(
        out.ends_with(
            "<d:response><d:href>/dav/alice/calendars/c.ics</d:href></d:response></d:multistatus>"
        ),
        "{out}"
    );
    let out = fast(cases[1].as_bytes(), usize::MAX, Arc::new(Dropping))
        .await
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("<x0:href xmlns:x0=\"urn:x\">/1234567890/calendars/e.ics</x0:href>"),
        "{out}"
    );
    assert!(
        out.contains("<href>/1234567890/calendars/f.ics</href>"),
        "{out}"
    );
    assert!(
        out.contains("<d:href>/dav/alice/calendars/g.ics</d:href>"),
        "{out}"
    );
    let err = fast(cases[5].as_bytes(), usize::MAX, Arc::new(Identity))
        .await
        .unwrap_err();
    assert!(err.contains("too many namespace declarations"), "{err}");
}
