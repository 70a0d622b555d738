//! Apple's vCard dialect and the standard one clients read, both ways: birthdays and other
//! dates without a year (`X-APPLE-OMIT-YEAR=1604`) and contact groups
//! (`X-ADDRESSBOOKSERVER-KIND` / `-MEMBER` against `KIND` / `MEMBER`). Only the lines that
//! change are rewritten; every other line keeps its bytes (and its folding).

/// Date properties Apple marks with `X-APPLE-OMIT-YEAR` when the year is unknown.
const DATES: &[&str] = &["BDAY", "ANNIVERSARY", "X-ANNIVERSARY", "X-ABDATE"];

/// The year Apple writes into a date whose year was left out.
const OMITTED_YEAR: &str = "1604";

/// One content line: its raw text (folds and line end included) and its parts, unfolded.
pub(crate) struct Line<'a> {
    raw: &'a str,
    /// `item1.` style group, without the dot.
    pub(crate) group: Option<String>,
    /// Upper case.
    pub(crate) name: String,
    /// Parameters as written (`;TYPE=x;VALUE=date`), unfolded.
    params: String,
    pub(crate) value: String,
}

/// Split `text` into logical content lines (a line plus its continuation lines).
pub(crate) fn lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\n' {
            let next = bytes.get(i + 1);
            if !matches!(next, Some(b' ') | Some(b'\t')) {
                out.push(&text[start..=i]);
                start = i + 1;
            }
        }
        i += 1;
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out
}

fn unfold(raw: &str) -> String {
    raw.replace("\r\n ", "")
        .replace("\r\n\t", "")
        .replace("\n ", "")
        .replace("\n\t", "")
        .trim_end_matches(['\r', '\n'])
        .to_string()
}

/// Parse one logical line; `None` for a line that is not `name[;params]:value`.
pub(crate) fn parse(raw: &str) -> Option<Line<'_>> {
    let text = unfold(raw);
    // The name ends at the first ';' or ':'; a ':' inside a quoted parameter does not end
    // the parameters.
    let name_end = text.find([';', ':'])?;
    let mut quoted = false;
    let mut colon = None;
    for (i, c) in text.char_indices().skip(name_end) {
        match c {
            '"' => quoted = !quoted,
            ':' if !quoted => {
                colon = Some(i);
                break;
            }
            _ => {}
        }
    }
    let colon = colon?;
    let full_name = &text[..name_end];
    let (group, name) = match full_name.rsplit_once('.') {
        Some((g, n)) => (Some(g.to_string()), n),
        None => (None, full_name),
    };
    Some(Line {
        raw,
        group,
        name: name.to_ascii_uppercase(),
        params: text[name_end..colon].to_string(),
        value: text[colon + 1..].to_string(),
    })
}

impl Line<'_> {
    /// The parameters without those named `drop` (case-insensitive).
    fn params_without(&self, drop: &[&str]) -> String {
        self.params
            .split(';')
            .filter(|p| !p.is_empty())
            .filter(|p| {
                let n = p.split('=').next().unwrap_or("");
                !drop.iter().any(|d| n.eq_ignore_ascii_case(d))
            })
            .map(|p| format!(";{p}"))
            .collect()
    }

    /// The value of parameter `name` (case-insensitive), without quotes.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params.split(';').find_map(|p| {
            let (n, v) = p.split_once('=')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim_matches('"'))
        })
    }

    /// The line ending this line was written with.
    fn eol(&self) -> &'static str {
        if self.raw.ends_with("\r\n") {
            "\r\n"
        } else if self.raw.ends_with('\n') {
            "\n"
        } else {
            ""
        }
    }

    fn write(&self, name: &str, params: &str, value: &str) -> String {
        let group = self
            .group
            .as_deref()
            .map(|g| format!("{g}."))
            .unwrap_or_default();
        fold(&format!("{group}{name}{params}:{value}"), self.eol())
    }
}

/// Fold a content line at 75 octets (RFC 6350 3.2), never inside a UTF-8 character.
pub(crate) fn fold(line: &str, eol: &str) -> String {
    if line.len() <= 75 || eol.is_empty() {
        return format!("{line}{eol}");
    }
    let mut out = String::with_capacity(line.len() + line.len() / 74 * 3 + 2);
    let mut width = 0;
    for c in line.chars() {
        let n = c.len_utf8();
        if width + n > 75 {
            out.push_str(eol);
            out.push(' ');
            width = 1;
        }
        out.push(c);
        width += n;
    }
    out.push_str(eol);
    out
}

/// `(month, day)` of a date value `YYYY-MM-DD` or `YYYYMMDD` in `year`.
fn month_day_in(value: &str, year: &str) -> Option<(String, String)> {
    let v = value.trim();
    let rest = v.strip_prefix(year)?;
    let digits: String = rest.chars().filter(|c| *c != '-').collect();
    let date = digits.get(..4)?;
    let tail = digits.get(4..).unwrap_or("");
    // A date, or a date with a time part (`T...`) that carries no more date digits.
    if !date.bytes().all(|b| b.is_ascii_digit()) || !(tail.is_empty() || tail.starts_with('T')) {
        return None;
    }
    Some((date[..2].to_string(), date[2..].to_string()))
}

/// `(month, day)` of a yearless date `--MMDD` or `--MM-DD`.
fn yearless(value: &str) -> Option<(String, String)> {
    let digits: String = value
        .trim()
        .strip_prefix("--")?
        .chars()
        .filter(|c| *c != '-')
        .collect();
    (digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| (digits[..2].to_string(), digits[2..].to_string()))
}

fn is_vcard(text: &str) -> bool {
    text.get(..text.len().min(64))
        .is_some_and(|head| head.to_ascii_uppercase().contains("BEGIN:VCARD"))
}

/// A served vCard as clients read it: yearless dates as `--MM-DD`, Apple's group cards as
/// `KIND:group` with `MEMBER` lines. `None` when nothing changes.
pub fn to_client(text: &str) -> Option<String> {
    if !is_vcard(text) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 32);
    let mut changed = false;
    for raw in lines(text) {
        let rewritten = parse(raw).and_then(|l| line_to_client(&l));
        match rewritten {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(raw),
        }
    }
    changed.then_some(out)
}

fn line_to_client(l: &Line<'_>) -> Option<String> {
    match l.name.as_str() {
        n if DATES.contains(&n) => {
            let year = l.param("X-APPLE-OMIT-YEAR")?;
            let (m, d) = month_day_in(&l.value, year)?;
            let params = l.params_without(&["X-APPLE-OMIT-YEAR"]);
            Some(l.write(&l.name, &params, &format!("--{m}-{d}")))
        }
        "X-ADDRESSBOOKSERVER-KIND" => Some(l.write("KIND", &l.params, &l.value)),
        "X-ADDRESSBOOKSERVER-MEMBER" => Some(l.write("MEMBER", &l.params, &l.value)),
        _ => None,
    }
}

/// A vCard a client writes, as iCloud keeps it: yearless dates in Apple's omitted-year form,
/// standard groups as Apple's group card. `None` when nothing changes.
pub fn to_upstream(text: &str) -> Option<String> {
    if !is_vcard(text) {
        return None;
    }
    let parsed: Vec<(&str, Option<Line<'_>>)> =
        lines(text).into_iter().map(|r| (r, parse(r))).collect();
    let is_group = parsed.iter().any(|(_, l)| {
        l.as_ref().is_some_and(|l| {
            matches!(l.name.as_str(), "KIND" | "X-ADDRESSBOOKSERVER-KIND")
                && l.value.trim().eq_ignore_ascii_case("group")
        })
    });
    let mut out = String::with_capacity(text.len() + 32);
    let mut changed = false;
    let mut members_seen: Vec<String> = Vec::new();
    let mut kind_written = false;
    for (raw, l) in &parsed {
        let Some(l) = l else {
            out.push_str(raw);
            continue;
        };
        let member = matches!(l.name.as_str(), "MEMBER" | "X-ADDRESSBOOKSERVER-MEMBER");
        let kind = matches!(l.name.as_str(), "KIND" | "X-ADDRESSBOOKSERVER-KIND");
        if is_group && (member || kind) {
            // One Apple line per member (a client may keep Apple's lines beside its own).
            let key = l.value.trim().to_ascii_lowercase();
            let seen = if member {
                members_seen.contains(&key)
            } else {
                kind_written
            };
            let new = if seen {
                String::new()
            } else if member {
                members_seen.push(key);
                l.write("X-ADDRESSBOOKSERVER-MEMBER", &l.params, l.value.trim())
            } else {
                kind_written = true;
                l.write("X-ADDRESSBOOKSERVER-KIND", &l.params, "group")
            };
            changed |= new != *raw;
            out.push_str(&new);
            continue;
        }
        match line_to_upstream(l) {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(raw),
        }
    }
    changed.then_some(out)
}

fn line_to_upstream(l: &Line<'_>) -> Option<String> {
    if !DATES.contains(&l.name.as_str()) || l.param("X-APPLE-OMIT-YEAR").is_some() {
        return None;
    }
    let (m, d) = yearless(&l.value)?;
    // `VALUE=text` (a vCard 4 client's yearless date as text) has no place in a dated line.
    let params = l.params_without(&["VALUE"]);
    Some(l.write(
        &l.name,
        &format!(";X-APPLE-OMIT-YEAR={OMITTED_YEAR}{params}"),
        &format!("{OMITTED_YEAR}-{m}-{d}"),
    ))
}

/// The property that tells the bridge, on write-back, which iCloud photo an inlined photo
/// came from (an opaque, signed token; see `dav::photos`).
pub const PHOTO_MARK: &str = "X-ICLOUD-BRIDGE-PHOTO";

/// An inlined photo: its bytes as base64, its media type, and the mark for write-back.
pub struct Inlined {
    pub base64: String,
    pub mime: String,
    pub mark: String,
}

/// The URL of each PHOTO given by URI in `text` (for fetching before [`inline_photos`]).
pub fn photo_urls(text: &str) -> Vec<String> {
    if !is_vcard(text) {
        return Vec::new();
    }
    lines(text)
        .into_iter()
        .filter_map(parse)
        .filter(|l| l.name == "PHOTO")
        .filter_map(|l| photo_uri(&l).map(str::to_string))
        .collect()
}

/// The URL of a PHOTO line given by URI (vCard 3 `VALUE=uri`, or a plain http(s) value).
fn photo_uri<'l>(l: &'l Line<'_>) -> Option<&'l str> {
    let v = l.value.trim();
    (v.starts_with("https://") || v.starts_with("http://")).then_some(v)
}

/// Put photos given by URI into the card itself: `f(url, params)` gives the photo (or
/// `None` to keep the URI). vCard 4 cards get a `data:` URI, others `ENCODING=b`; a mark
/// line follows each so that a card written back gets its reference again.
pub fn inline_photos(text: &str, f: impl Fn(&str, &str) -> Option<Inlined>) -> Option<String> {
    if !is_vcard(text) || !text.to_ascii_uppercase().contains("PHOTO") {
        return None;
    }
    let v4 = lines(text)
        .into_iter()
        .filter_map(parse)
        .any(|l| l.name == "VERSION" && l.value.trim() == "4.0");
    let mut out = String::with_capacity(text.len() + 4096);
    let mut changed = false;
    for raw in lines(text) {
        let inlined = parse(raw).and_then(|l| {
            let url = photo_uri(&l).filter(|_| l.name == "PHOTO")?;
            let photo = f(url, &l.params)?;
            // What the original line said besides where the photo is (crop, type).
            let keep = l.params_without(&["VALUE", "ENCODING", "TYPE", "MEDIATYPE"]);
            let line = if v4 {
                l.write(
                    "PHOTO",
                    &keep,
                    &format!("data:{};base64,{}", photo.mime, photo.base64),
                )
            } else {
                let ty = photo.mime.trim_start_matches("image/").to_ascii_uppercase();
                l.write(
                    "PHOTO",
                    &format!(";ENCODING=b;TYPE={ty}{keep}"),
                    &photo.base64,
                )
            };
            Some(line + &l.write(PHOTO_MARK, "", &photo.mark))
        });
        match inlined {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(raw),
        }
    }
    changed.then_some(out)
}

/// The reverse of [`inline_photos`] for a card a client writes: a PHOTO given inline is
/// replaced by `f(mark, bytes)` (the original PHOTO line, if the photo is still the one
/// inlined; `mark` is empty when the client dropped it), and mark lines are removed.
pub fn restore_photos(text: &str, f: impl Fn(&str, &[u8]) -> Option<String>) -> Option<String> {
    let upper = text.to_ascii_uppercase();
    if !is_vcard(text) || !upper.contains("PHOTO") {
        return None;
    }
    let parsed: Vec<(&str, Option<Line<'_>>)> =
        lines(text).into_iter().map(|r| (r, parse(r))).collect();
    let mark = parsed
        .iter()
        .filter_map(|(_, l)| l.as_ref())
        .find(|l| l.name == PHOTO_MARK)
        .map(|l| l.value.trim().to_string())
        .unwrap_or_default();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for (raw, l) in &parsed {
        let Some(l) = l else {
            out.push_str(raw);
            continue;
        };
        if l.name == PHOTO_MARK {
            changed = true;
            continue;
        }
        let restored = (l.name == "PHOTO")
            .then(|| inline_bytes(l))
            .flatten()
            .and_then(|bytes| f(&mark, &bytes));
        match restored {
            Some(line) => {
                out.push_str(&fold(&line, l.eol()));
                changed = true;
            }
            None => out.push_str(raw),
        }
    }
    changed.then_some(out)
}

/// The bytes of a PHOTO given inline (`ENCODING=b` / `VALUE=binary`, or a `data:` URI).
fn inline_bytes(l: &Line<'_>) -> Option<Vec<u8>> {
    use base64::Engine;
    let params = l.params.to_ascii_uppercase();
    let v = l.value.trim();
    let b64 = if let Some(data) = v.strip_prefix("data:") {
        data.split_once("base64,")?.1
    } else if params.contains("ENCODING=B") || params.contains("VALUE=BINARY") {
        v
    } else {
        return None;
    };
    let clean: String = b64.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPLE: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;Jane;;;\r\nFN:Jane Doe\r\nBDAY;X-APPLE-OMIT-YEAR=1604;VALUE=date:1604-03-14\r\nitem1.X-ABDATE;X-APPLE-OMIT-YEAR=1604:16040620\r\nitem1.X-ABLabel:_$!<Anniversary>!$_\r\nUID:jane\r\nEND:VCARD\r\n";

    #[test]
    fn yearless_dates_reach_clients_without_1604() {
        let out = to_client(APPLE).unwrap();
        assert!(out.contains("\r\nBDAY;VALUE=date:--03-14\r\n"), "{out}");
        assert!(out.contains("\r\nitem1.X-ABDATE:--06-20\r\n"), "{out}");
        assert!(!out.contains("1604"), "{out}");
        // Every other line is untouched.
        assert!(out.contains("\r\nitem1.X-ABLabel:_$!<Anniversary>!$_\r\n"));
        assert_eq!(out.lines().count(), APPLE.lines().count());
    }

    #[test]
    fn yearless_dates_go_back_in_apples_form() {
        let client = to_client(APPLE).unwrap();
        let back = to_upstream(&client).unwrap();
        assert!(
            back.contains("\r\nBDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14\r\n"),
            "{back}"
        );
        assert!(
            back.contains("\r\nitem1.X-ABDATE;X-APPLE-OMIT-YEAR=1604:1604-06-20\r\n"),
            "{back}"
        );
        // The vCard 4 forms clients write.
        for v in ["--0314", "--03-14"] {
            let card = format!("BEGIN:VCARD\nVERSION:4.0\nBDAY;VALUE=text:{v}\nEND:VCARD\n");
            let up = to_upstream(&card).unwrap();
            assert!(
                up.contains("\nBDAY;X-APPLE-OMIT-YEAR=1604:1604-03-14\n"),
                "{up}"
            );
        }
    }

    #[test]
    fn dates_with_a_year_are_left_alone() {
        let card = "BEGIN:VCARD\r\nVERSION:3.0\r\nBDAY;VALUE=date:1980-03-14\r\nEND:VCARD\r\n";
        assert_eq!(to_client(card), None);
        assert_eq!(to_upstream(card), None);
        // An omit-year marker with another year in the value is not Apple's yearless form.
        let odd = "BEGIN:VCARD\r\nBDAY;X-APPLE-OMIT-YEAR=1604:1980-03-14\r\nEND:VCARD\r\n";
        assert_eq!(to_client(odd), None);
    }

    const GROUP: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Family\r\nN:Family;;;;\r\nX-ADDRESSBOOKSERVER-KIND:group\r\nX-ADDRESSBOOKSERVER-MEMBER:urn:uuid:a\r\nX-ADDRESSBOOKSERVER-MEMBER:urn:uuid:b\r\nUID:fam\r\nEND:VCARD\r\n";

    #[test]
    fn apple_groups_reach_clients_as_standard_groups_and_go_back() {
        let out = to_client(GROUP).unwrap();
        assert!(out.contains("\r\nKIND:group\r\n"), "{out}");
        assert!(out.contains("\r\nMEMBER:urn:uuid:a\r\nMEMBER:urn:uuid:b\r\n"));
        assert!(!out.contains("X-ADDRESSBOOKSERVER"));
        // A member added in the client, written back.
        let edited = out.replace("UID:fam", "MEMBER:urn:uuid:c\r\nUID:fam");
        let back = to_upstream(&edited).unwrap();
        assert!(
            back.contains("\r\nX-ADDRESSBOOKSERVER-KIND:group\r\n"),
            "{back}"
        );
        for m in ["a", "b", "c"] {
            let line = format!("\r\nX-ADDRESSBOOKSERVER-MEMBER:urn:uuid:{m}\r\n");
            assert_eq!(back.matches(&line).count(), 1, "{back}");
        }
        assert!(
            !back.contains("\nMEMBER") && !back.contains("\nKIND"),
            "{back}"
        );
    }

    #[test]
    fn a_client_keeping_apples_lines_beside_its_own_gets_one_of_each() {
        let both = GROUP.replace(
            "UID:fam",
            "KIND:group\r\nMEMBER:urn:uuid:a\r\nMEMBER:urn:uuid:d\r\nUID:fam",
        );
        let back = to_upstream(&both).unwrap();
        assert_eq!(back.matches("X-ADDRESSBOOKSERVER-KIND:group").count(), 1);
        assert_eq!(back.matches("MEMBER:urn:uuid:a").count(), 1, "{back}");
        assert_eq!(back.matches("MEMBER:urn:uuid:d").count(), 1);
        assert_eq!(back.matches("MEMBER:").count(), 3);
    }

    #[test]
    fn an_unchanged_apple_card_round_trips_to_the_same_meaning() {
        for card in [APPLE, GROUP] {
            let back = to_upstream(&to_client(card).unwrap()).unwrap();
            let norm = |s: &str| {
                let mut v: Vec<String> = lines(s)
                    .iter()
                    // Same meaning: the basic and extended date forms, VALUE=date or not.
                    .map(|l| {
                        unfold(l)
                            .replace(";VALUE=date", "")
                            .replace("1604-06-20", "16040620")
                    })
                    .collect();
                v.sort();
                v
            };
            assert_eq!(norm(&back), norm(card));
        }
    }

    #[test]
    fn folded_lines_and_other_text_survive() {
        let long = format!(
            "BEGIN:VCARD\r\nNOTE:{}\r\n  continued\r\nBDAY;X-APPLE-OMIT-YEAR=1604:1604-1\r\n 2-24\r\nEND:VCARD\r\n",
            "x".repeat(80)
        );
        let out = to_client(&long).unwrap();
        assert!(out.contains(&format!("NOTE:{}\r\n  continued\r\n", "x".repeat(80))));
        assert!(out.contains("\r\nBDAY:--12-24\r\n"), "{out}");
        assert_eq!(to_client("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"), None);
        assert_eq!(to_client("not a card"), None);
        // Malformed lines pass through.
        let odd = "BEGIN:VCARD\r\nno colon here\r\nBDAY;X-APPLE-OMIT-YEAR=1604:1604-xx-yy\r\nEND:VCARD\r\n";
        assert_eq!(to_client(odd), None);
    }

    #[test]
    fn long_rewritten_lines_are_folded_at_75_octets() {
        let f = fold(&format!("MEMBER:urn:uuid:{}", "é".repeat(60)), "\r\n");
        for l in f.split("\r\n") {
            assert!(l.len() <= 75, "{l}");
        }
        assert_eq!(unfold(&f), format!("MEMBER:urn:uuid:{}", "é".repeat(60)));
    }

    const WITH_PHOTO: &str = "BEGIN:VCARD\r\nVERSION:3.0\r\nN:Doe;Jane;;;\r\nPHOTO;VALUE=uri;X-ABCROP-RECTANGLE=ABClipRect_1&0&0&10&10&h:https://p42-contacts.icloud.com:443/1/wcs/h\r\nUID:jane\r\nEND:VCARD\r\n";

    fn inlined(url: &str, params: &str) -> Option<Inlined> {
        assert!(params.contains("X-ABCROP-RECTANGLE"), "{params}");
        (url == "https://p42-contacts.icloud.com:443/1/wcs/h").then(|| Inlined {
            base64: "/9j/4AAQ".into(),
            mime: "image/jpeg".into(),
            mark: "mark-1".into(),
        })
    }

    #[test]
    fn photos_given_by_url_are_inlined_with_a_mark() {
        assert_eq!(
            photo_urls(WITH_PHOTO),
            vec!["https://p42-contacts.icloud.com:443/1/wcs/h".to_string()]
        );
        let out = inline_photos(WITH_PHOTO, inlined)
            .unwrap()
            .replace("\r\n ", "");
        assert!(
            out.contains("\r\nPHOTO;ENCODING=b;TYPE=JPEG;X-ABCROP-RECTANGLE=ABClipRect_1&0&0&10&10&h:/9j/4AAQ\r\nX-ICLOUD-BRIDGE-PHOTO:mark-1\r\n"),
            "{out}"
        );
        assert!(!out.contains("icloud.com"), "{out}");
        let v4 = WITH_PHOTO.replace("VERSION:3.0", "VERSION:4.0");
        let out = inline_photos(&v4, inlined).unwrap().replace("\r\n ", "");
        assert!(out.contains("PHOTO;X-ABCROP-RECTANGLE=ABClipRect_1&0&0&10&10&h:data:image/jpeg;base64,/9j/4AAQ\r\n"), "{out}");
        // A photo the callback does not give stays as it was.
        assert_eq!(inline_photos(WITH_PHOTO, |_, _| None), None);
    }

    #[test]
    fn a_card_written_back_gets_its_photo_reference_again() {
        let original = "PHOTO;VALUE=uri:https://p42-contacts.icloud.com:443/1/wcs/h";
        let restore = |mark: &str, bytes: &[u8]| {
            (mark == "mark-1" && bytes == [0xff, 0xd8, 0xff, 0xe0, 0, 0x10])
                .then(|| original.to_string())
        };
        for form in [
            inline_photos(WITH_PHOTO, inlined).unwrap(),
            inline_photos(&WITH_PHOTO.replace("VERSION:3.0", "VERSION:4.0"), inlined).unwrap(),
        ] {
            let back = restore_photos(&form, restore).unwrap();
            assert!(back.contains(&format!("\r\n{original}\r\n")), "{back}");
            assert!(!back.contains(PHOTO_MARK), "{back}");
        }
        // A changed photo is sent as the client wrote it; the mark still goes.
        let changed = inline_photos(WITH_PHOTO, inlined)
            .unwrap()
            .replace("\r\n ", "")
            .replace("/9j/4AAQ", "iVBORw0K");
        let back = restore_photos(&changed, restore).unwrap();
        assert!(back.contains("PHOTO;ENCODING=b;TYPE=JPEG"), "{back}");
        assert!(!back.contains(PHOTO_MARK), "{back}");
        // A card without inline photos or marks is left alone.
        assert_eq!(restore_photos(WITH_PHOTO, restore), None);
    }
}
