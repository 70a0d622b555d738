//! Text handling of the rewriter engine: whitespace runs, CDATA, references and the captured
//! text of mapped elements (hrefs, calendar/address data).

use super::{malformed, utf8, Capture, Engine, BODY_LIMIT, HREF_LIMIT};
use crate::xml::error::XmlError;
use crate::xml::escape::{is_ws, push_raw_text, push_text, resolve_ref};
use crate::xml::rewrite::HrefMap;

impl Engine {
    pub(super) fn finish_body(&mut self, map: &dyn HrefMap) {
        let mut text = std::mem::take(&mut self.cap_text);
        match map.body_text(&text) {
            Some(mapped) => push_text(&mut self.out, &mapped, self.cap_cr_ref),
            None => push_text(&mut self.out, &text, self.cap_cr_ref),
        }
        text.clear();
        self.cap_text = text;
        self.end_capture();
    }

    /// A child element appeared inside a mapped element (e.g. `calendar-data` in a REPORT
    /// request): write the collected text unmapped and continue normally.
    pub(super) fn abort_capture(&mut self) {
        if !is_ws(self.cap_text.as_bytes()) {
            push_text(&mut self.out, &self.cap_text, self.cap_cr_ref);
        }
        self.cap_text.clear();
        self.end_capture();
    }

    /// Whether a run of whitespace that ends where a tag starts would leave no trace: outside
    /// the root, or neither collected for a mapped element nor part of significant text, and
    /// followed by a child's start tag (which drops it) or by the end tag of an element that
    /// has children.
    pub(in crate::xml) fn drops_whitespace_before(&self, end_tag: bool) -> bool {
        self.open.is_empty()
            || (self.capture == Capture::None && !self.significant && (!end_tag || !self.leaf))
    }

    pub(super) fn end_capture(&mut self) {
        self.capture = Capture::None;
        self.cap_cr_ref = false;
    }

    /// Adds decoded text to the capture, enforcing the size limits.
    pub(super) fn capture_text(&mut self, s: &str, pos: u64) -> Result<(), XmlError> {
        let limit = if self.capture == Capture::Href {
            HREF_LIMIT
        } else {
            BODY_LIMIT
        };
        if self.cap_text.len() + s.len() <= limit {
            self.cap_text.push_str(s);
            return Ok(());
        }
        if self.capture == Capture::Href {
            return Err(XmlError::TooLarge { position: pos });
        }
        // Too big to buffer: pass the rest of this body through unmapped.
        tracing::debug!(
            position = pos,
            "calendar/address data too large to map; passing through"
        );
        push_text(&mut self.out, &self.cap_text, self.cap_cr_ref);
        push_text(&mut self.out, s, self.cap_cr_ref);
        self.cap_text.clear();
        self.end_capture();
        self.significant = true;
        Ok(())
    }

    /// Starts writing significant text in the current run (flushing held whitespace).
    pub(super) fn begin_significant(&mut self) {
        if !self.significant {
            self.out.extend_from_slice(&self.pending_ws);
            self.pending_ws.clear();
            self.significant = true;
        }
    }

    pub(super) fn outside_root(&self, pos: u64, what: &str) -> XmlError {
        let place = if self.root_done { "after" } else { "before" };
        malformed(pos, format!("{what} {place} the root element"))
    }

    pub(in crate::xml) fn text(&mut self, raw: &[u8], pos: u64) -> Result<(), XmlError> {
        if self.open.is_empty() {
            if is_ws(raw) {
                return Ok(());
            }
            return Err(self.outside_root(pos, "text"));
        }
        if self.capture == Capture::None && !self.significant && is_ws(raw) {
            // Whitespace is valid UTF-8: no need to check it.
            self.pending_ws.extend_from_slice(raw);
            return Ok(());
        }
        if self.capture != Capture::None {
            return self.capture_text(utf8(raw, pos)?, pos);
        }
        // Checked, not converted: the text is written as it came. Most of it is ASCII, which
        // is checked a word at a time.
        if !raw.is_ascii() {
            utf8(raw, pos)?;
        }
        if !self.significant && is_ws(raw) {
            self.pending_ws.extend_from_slice(raw);
        } else {
            self.begin_significant();
            push_raw_text(&mut self.out, raw);
        }
        Ok(())
    }

    pub(super) fn cdata(&mut self, raw: &[u8], pos: u64) -> Result<(), XmlError> {
        if self.open.is_empty() {
            return Err(self.outside_root(pos, "CDATA section"));
        }
        if self.capture == Capture::None && !self.significant && is_ws(raw) {
            // Whitespace is valid UTF-8: no need to check it.
            self.pending_ws.extend_from_slice(raw);
            return Ok(());
        }
        let s = utf8(raw, pos)?;
        if self.capture != Capture::None {
            return self.capture_text(s, pos);
        }
        if !self.significant && is_ws(raw) {
            self.pending_ws.extend_from_slice(raw);
        } else {
            self.begin_significant();
            push_text(&mut self.out, s, false);
        }
        Ok(())
    }

    pub(in crate::xml) fn general_ref(&mut self, name: &[u8], pos: u64) -> Result<(), XmlError> {
        if self.open.is_empty() {
            return Err(self.outside_root(pos, "character reference"));
        }
        let Some(c) = resolve_ref(name) else {
            return Err(malformed(
                pos,
                format!(
                    "undefined entity or invalid character reference '&{};'",
                    String::from_utf8_lossy(name)
                ),
            ));
        };
        if self.capture != Capture::None {
            if c == '\r' {
                self.cap_cr_ref = true;
            }
            return self.capture_text(c.encode_utf8(&mut [0; 4]), pos);
        }
        let target = if !self.significant && matches!(c, ' ' | '\t' | '\r' | '\n') {
            &mut self.pending_ws
        } else {
            self.begin_significant();
            &mut self.out
        };
        target.push(b'&');
        target.extend_from_slice(name);
        target.push(b';');
        Ok(())
    }
}
