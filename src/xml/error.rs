//! The error type shared by the rewriter, the request inspector and their callers.

use std::sync::Arc;

/// Why an XML document could not be rewritten or inspected.
///
/// Everything except [`XmlError::Io`] means the *document* is at fault; when the document came
/// from a client, answer `400 Bad Request` with [`XmlError`]'s `Display` text.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed (or not namespace-well-formed) XML, or a construct the bridge refuses
    /// (DOCTYPE, foreign encodings). `position` is a byte offset into the input.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed {
        /// Byte offset in the input where the problem was noticed.
        position: u64,
        /// What is wrong, in words fit for a `400` response body.
        message: String,
    },
    /// The body was empty or only whitespace. Returned by
    /// [`inspect`](super::inspect::inspect) only (the rewriter reports
    /// [`XmlError::Malformed`]); for PROPFIND an empty body means `allprop` (RFC 4918 §9.1).
    #[error("empty XML body")]
    Empty,
    /// Elements nested deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    #[error("XML nested deeper than {limit} elements at byte {position}")]
    TooDeep {
        /// Byte offset of the element that went too deep.
        position: u64,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A single href text exceeded the size limit.
    #[error("XML element at byte {position} is too large")]
    TooLarge {
        /// Byte offset where the limit was exceeded.
        position: u64,
    },
    /// More markup than any DAV document needs (attributes on one element, namespace
    /// declarations in scope, items in a request body): see [`guard`](super::guard).
    #[error("XML at byte {position} has {what} (at most {limit})")]
    TooMuchMarkup {
        /// Byte offset where the limit was exceeded.
        position: u64,
        /// Which limit, in words.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// Reading the input failed (e.g. the upstream connection broke mid-body).
    #[error("reading XML input failed: {0}")]
    Io(#[from] std::io::Error),
}

impl XmlError {
    /// Shorthand for [`XmlError::Malformed`].
    pub fn malformed(position: u64, message: impl Into<String>) -> Self {
        XmlError::Malformed {
            position,
            message: message.into(),
        }
    }

    /// Converts a quick-xml error observed at `position`.
    pub(crate) fn from_quick(err: quick_xml::Error, position: u64) -> Self {
        match err {
            quick_xml::Error::Io(io) => XmlError::Io(
                Arc::try_unwrap(io)
                    .unwrap_or_else(|io| std::io::Error::new(io.kind(), io.to_string())),
            ),
            other => XmlError::malformed(position, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let e = XmlError::malformed(12, "mismatched end tag");
        assert_eq!(
            e.to_string(),
            "malformed XML at byte 12: mismatched end tag"
        );
        let io = quick_xml::Error::Io(Arc::new(std::io::Error::other("boom")));
        assert!(matches!(XmlError::from_quick(io, 0), XmlError::Io(_)));
    }
}
