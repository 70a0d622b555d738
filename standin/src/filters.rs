//! calendar-query and addressbook-query filter evaluation (simple, iCloud-flavoured).

use crate::ical::{unfold, IcalMeta};
use crate::recur::parse_datetime;
use crate::switches::Switches;
use crate::vcard;
use crate::xml_in::{Elem, CALDAV, CARDDAV};

/// A parsed calendar-query filter.
#[derive(Clone, Debug, Default)]
pub struct CalFilter {
    /// The top comp-filter named VCALENDAR (or no filter at all).
    pub top_ok: bool,
    pub inner: Vec<CompTest>,
}

/// One inner comp-filter.
#[derive(Clone, Debug)]
pub struct CompTest {
    pub name: String,
    pub not_defined: bool,
    pub range: Option<(Option<i64>, Option<i64>)>,
    /// (property name, needle, negate)
    pub props: Vec<(String, Option<String>, bool)>,
}

impl CalFilter {
    pub fn parse(filter: Option<&Elem>) -> CalFilter {
        let Some(f) = filter else {
            return CalFilter {
                top_ok: true,
                inner: Vec::new(),
            };
        };
        let Some(top) = f.child(CALDAV, "comp-filter") else {
            return CalFilter {
                top_ok: true,
                inner: Vec::new(),
            };
        };
        let top_ok = top
            .attr("name")
            .is_some_and(|n| n.eq_ignore_ascii_case("VCALENDAR"));
        let inner = top
            .children_named(CALDAV, "comp-filter")
            .map(|c| CompTest {
                name: c.attr("name").unwrap_or("").to_ascii_uppercase(),
                not_defined: c.child(CALDAV, "is-not-defined").is_some(),
                range: c.child(CALDAV, "time-range").map(|t| {
                    (
                        t.attr("start").and_then(parse_datetime).map(|x| x.0),
                        t.attr("end").and_then(parse_datetime).map(|x| x.0),
                    )
                }),
                props: c
                    .children_named(CALDAV, "prop-filter")
                    .map(|p| {
                        let tm = p.child(CALDAV, "text-match");
                        (
                            p.attr("name").unwrap_or("").to_ascii_uppercase(),
                            tm.map(|t| t.text.clone()),
                            tm.and_then(|t| t.attr("negate-condition")) == Some("yes"),
                        )
                    })
                    .collect(),
            })
            .collect();
        CalFilter { top_ok, inner }
    }

    /// Kinds the query asks for (VEVENT, VTODO, …).
    pub fn kinds(&self) -> Vec<&str> {
        self.inner.iter().map(|c| c.name.as_str()).collect()
    }

    pub fn matches(&self, meta: &IcalMeta, body: &[u8]) -> bool {
        if !self.top_ok {
            return false;
        }
        self.inner.iter().all(|t| {
            let present = meta.comps.iter().any(|c| c.kind == t.name);
            if t.not_defined {
                return !present;
            }
            if !present {
                return false;
            }
            if let Some((s, e)) = t.range {
                if !meta.matches_range(&t.name, s, e) {
                    return false;
                }
            }
            t.props.iter().all(|(name, needle, negate)| {
                let text = String::from_utf8_lossy(body);
                let values = vcard::prop_values(&text, name, false);
                let hit = match needle {
                    Some(n) => {
                        let n = n.to_lowercase();
                        values.iter().any(|v| v.to_lowercase().contains(&n))
                    }
                    None => !values.is_empty(),
                };
                hit != *negate
            })
        })
    }
}

fn text_match(value: &str, tm: &Elem) -> bool {
    let needle = tm.text.as_str();
    let octet = tm.attr("collation") == Some("i;octet");
    let (v, n) = if octet {
        (value.to_string(), needle.to_string())
    } else {
        (value.to_lowercase(), needle.to_lowercase())
    };
    let hit = match tm.attr("match-type").unwrap_or("contains") {
        "equals" => v == n,
        "starts-with" => v.starts_with(&n),
        "ends-with" => v.ends_with(&n),
        _ => v.contains(&n),
    };
    let negate = tm.attr("negate-condition") == Some("yes");
    hit != negate
}

fn prop_filter_matches(card: &str, pf: &Elem, sw: &Switches) -> bool {
    let name = pf.attr("name").unwrap_or("");
    let values = vcard::prop_values(card, name, sw.case_sensitive_prop_names);
    if pf.child(CARDDAV, "is-not-defined").is_some() {
        return values.is_empty();
    }
    if values.is_empty() {
        return false;
    }
    let mut tests: Vec<bool> = Vec::new();
    for tm in pf.children_named(CARDDAV, "text-match") {
        tests.push(values.iter().any(|v| text_match(v, tm)));
    }
    if !sw.ignore_param_filter {
        for pm in pf.children_named(CARDDAV, "param-filter") {
            let pname = pm.attr("name").unwrap_or("").to_ascii_uppercase();
            let hit = unfold(card).iter().any(|l| {
                let head = l.split(':').next().unwrap_or("").to_ascii_uppercase();
                head.split(';').skip(1).any(|p| p.starts_with(&pname))
            });
            tests.push(hit);
        }
    }
    if tests.is_empty() {
        return true;
    }
    if pf.attr("test") == Some("allof") && !sw.allof_as_anyof {
        tests.iter().all(|t| *t)
    } else {
        tests.iter().any(|t| *t)
    }
}

/// Does a card match an addressbook-query `<filter>`? No filter (or an empty one) matches all.
pub fn card_matches(card: &[u8], filter: Option<&Elem>, sw: &Switches) -> bool {
    let Some(f) = filter else { return true };
    let pfs: Vec<&Elem> = f.children_named(CARDDAV, "prop-filter").collect();
    if pfs.is_empty() {
        return true;
    }
    let text = String::from_utf8_lossy(card);
    let mut results = pfs.iter().map(|pf| prop_filter_matches(&text, pf, sw));
    if f.attr("test") == Some("allof") && !sw.allof_as_anyof {
        results.all(|r| r)
    } else {
        results.any(|r| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml_in::parse;

    #[test]
    fn calendar_time_range() {
        let body = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:a\r\nDTSTART:20260110T100000Z\r\nDTEND:20260110T110000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let meta = crate::ical::index(body);
        let q = |s: &str, e: &str| {
            let x = format!("<C:filter xmlns:C=\"urn:ietf:params:xml:ns:caldav\"><C:comp-filter name=\"VCALENDAR\"><C:comp-filter name=\"VEVENT\"><C:time-range start=\"{s}\" end=\"{e}\"/></C:comp-filter></C:comp-filter></C:filter>");
            let el = parse(x.as_bytes()).unwrap();
            CalFilter::parse(Some(&el)).matches(&meta, body.as_bytes())
        };
        assert!(q("20260110T000000Z", "20260111T000000Z"));
        assert!(!q("20260111T000000Z", "20260112T000000Z"));
    }

    #[test]
    fn card_text_match() {
        let sw = Switches::default();
        let card = b"BEGIN:VCARD\r\nN:Doe;Jane;;;\r\nFN:Jane Doe\r\nEND:VCARD\r\n";
        let f = parse(b"<C:filter xmlns:C=\"urn:ietf:params:xml:ns:carddav\"><C:prop-filter name=\"FN\"><C:text-match match-type=\"contains\">jane</C:text-match></C:prop-filter></C:filter>").unwrap();
        assert!(card_matches(card, Some(&f), &sw));
        let f2 = parse(b"<C:filter xmlns:C=\"urn:ietf:params:xml:ns:carddav\"><C:prop-filter name=\"fn\"><C:text-match>jane</C:text-match></C:prop-filter></C:filter>").unwrap();
        assert!(!card_matches(card, Some(&f2), &sw));
        assert!(card_matches(card, None, &sw));
    }
}
