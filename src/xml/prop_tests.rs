//! Seeded random-document tests: output re-parses to the same content and rewriting is
//! idempotent.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::rewrite::{rewrite_to_vec, Identity};
use super::testutil::canonical;

const NAMESPACES: [Option<&str>; 6] = [
    None,
    Some("DAV:"),
    Some("urn:ietf:params:xml:ns:caldav"),
    Some("urn:x"),
    Some("urn:y"),
    Some("http://example.com/a?b=1&amp;c=2"),
];
const PREFIXES: [&str; 4] = ["a", "b", "D", "C"];
const LOCALS: [&str; 6] = ["href", "prop", "calendar-data", "x", "response", "k"];
const TEXTS: [&str; 10] = [
    "plain",
    " ",
    "\r\n  ",
    "a &amp; b &lt; c &gt; d",
    "quote \" apos ' ]]&gt; ]]",
    "Grüße 東京 😀",
    "&#13;\n",
    "&#x41;&#66;",
    "/cal%40x/ev.ics",
    "\t",
];

struct Gen {
    rng: StdRng,
    out: String,
}

impl Gen {
    /// Writes one element. `scope` holds in-scope prefix bindings, `default` the default ns.
    fn element(&mut self, depth: usize, scope: &mut Vec<(String, &'static str)>, default: &str) {
        let ns = NAMESPACES[self.rng.gen_range(0..NAMESPACES.len())];
        let local = LOCALS[self.rng.gen_range(0..LOCALS.len())];
        let mut decls = String::new();
        let mut new_default = default.to_string();
        let scope_len = scope.len();
        let qname = match ns {
            None => {
                if !default.is_empty() {
                    decls.push_str(" xmlns=\"\"");
                    new_default.clear();
                }
                local.to_string()
            }
            Some(uri) => {
                let reuse = scope.iter().rev().find(|(p, u)| {
                    *u == uri && scope.iter().rev().find(|(q, _)| q == p).map(|b| b.1) == Some(uri)
                });
                match (reuse, self.rng.gen_range(0..3)) {
                    (Some((p, _)), 0) => format!("{p}:{local}"),
                    (_, 1) => {
                        decls.push_str(&format!(" xmlns='{uri}'"));
                        new_default = uri.to_string();
                        local.to_string()
                    }
                    _ => {
                        let p = PREFIXES[self.rng.gen_range(0..PREFIXES.len())];
                        decls.push_str(&format!(" xmlns:{p}=\"{uri}\""));
                        scope.push((p.to_string(), uri));
                        format!("{p}:{local}")
                    }
                }
            }
        };
        let mut attrs = String::new();
        if self.rng.gen_bool(0.3) {
            let v = TEXTS[self.rng.gen_range(0..TEXTS.len())].replace('\'', "&apos;");
            attrs.push_str(&format!(" name='{v}'"));
        }
        if self.rng.gen_bool(0.2) {
            decls.push_str(" xmlns:zz=\"urn:attr\"");
            attrs.push_str(" zz:name=\"1\"");
        }
        self.out.push_str(&format!("<{qname}{decls}{attrs}"));
        if depth > 6 || self.rng.gen_bool(0.2) {
            self.out.push_str("/>");
        } else {
            self.out.push('>');
            for _ in 0..self.rng.gen_range(0..5) {
                match self.rng.gen_range(0..6) {
                    0 | 1 => self.element(depth + 1, scope, &new_default),
                    2 => self.out.push_str(TEXTS[self.rng.gen_range(0..TEXTS.len())]),
                    3 => self.out.push_str("<![CDATA[x < y & ]] > \r\n]]>"),
                    4 => self.out.push_str("<!-- note -->"),
                    _ => self.out.push_str("\n  "),
                }
            }
            self.out.push_str(&format!("</{qname}>"));
        }
        scope.truncate(scope_len);
    }
}

/// A random document: namespaces declared every way, attributes, text with references,
/// CDATA, comments and whitespace.
pub(super) fn random_doc(seed: u64) -> String {
    let mut generator = Gen {
        rng: StdRng::seed_from_u64(seed),
        out: String::from("<?xml version='1.0' encoding='UTF-8'?>\n"),
    };
    generator.element(0, &mut Vec::new(), "");
    generator.out
}

#[test]
fn random_documents_round_trip_and_are_idempotent() {
    for seed in 0..400u64 {
        let input = random_doc(seed);
        let out = rewrite_to_vec(input.as_bytes(), &Identity)
            .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{input}"));
        assert_eq!(
            canonical(&out, &Identity),
            canonical(input.as_bytes(), &Identity),
            "seed {seed}\n{input}\n{}",
            String::from_utf8_lossy(&out)
        );
        let again = rewrite_to_vec(&out, &Identity).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&out),
            "seed {seed} not idempotent"
        );
        assert!(!String::from_utf8_lossy(&out).contains("xmlns=\""));
    }
}

#[test]
fn truncations_never_succeed_or_panic() {
    let mut generator = Gen {
        rng: StdRng::seed_from_u64(99),
        out: String::new(),
    };
    generator.element(0, &mut Vec::new(), "");
    let input = generator.out.into_bytes();
    for cut in 0..input.len() {
        let prefix = &input[..cut];
        // Truncated documents must fail, except cuts that leave only a complete root (none here,
        // the root's end tag is at the very end) — so all must be errors.
        assert!(rewrite_to_vec(prefix, &Identity).is_err(), "cut at {cut}");
    }
}
