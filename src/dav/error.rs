//! The DAV layer's one error type, which knows how it maps to a DAV status, a `DAV:error`
//! body and a reason phrase.

use http::{HeaderValue, Response, StatusCode};

use crate::body::{full, Body};
use crate::upstream::error::UpstreamError;
use crate::xml::build::error_body;

/// Everything the DAV layer answers with an error.
#[derive(Debug, thiserror::Error)]
pub enum DavError {
    /// The client sent something we will not forward (malformed XML, bad path).
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than the bridge accepts ({limit} bytes)")]
    TooLarge { limit: usize },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("method {0} is not supported here")]
    MethodNotAllowed(String),
    /// The client was too slow.
    #[error("{0}")]
    Timeout(String),
    /// The bridge holds as much as it may right now (503 with `Retry-After`).
    #[error("{message}")]
    Busy { message: String, retry_after: u64 },
    /// iCloud refused a write for a reason it does not say; `condition` is the RFC
    /// precondition element the client can act on.
    #[error("{message}")]
    Refused {
        status: StatusCode,
        condition: Option<(&'static str, &'static str)>,
        message: String,
        short: &'static str,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The bridge itself failed (a response it could not build, a task that died): 500.
    #[error("the bridge could not {0}")]
    Internal(&'static str),
}

impl DavError {
    pub fn status(&self) -> StatusCode {
        match self {
            DavError::BadRequest(_) => StatusCode::BAD_REQUEST,
            DavError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            DavError::NotFound(_) => StatusCode::NOT_FOUND,
            DavError::Forbidden(_) => StatusCode::FORBIDDEN,
            DavError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            DavError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            DavError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            DavError::Refused { status, .. } => *status,
            DavError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            DavError::Upstream(e) => {
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The response a client sees: status, short reason phrase, `Retry-After` when useful,
    /// and an XML `DAV:error` body carrying the full sentence.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        let (condition, short, retry_after): (Option<(&str, &str)>, Option<&str>, Option<u64>) =
            match &self {
                DavError::Refused {
                    condition, short, ..
                } => (*condition, Some(short), None),
                DavError::Upstream(e) => (None, Some(e.short()), e.retry_after()),
                DavError::TooLarge { .. } => (None, Some("Request body too large"), None),
                DavError::Busy { retry_after, .. } => (None, Some("Busy"), Some(*retry_after)),
                _ => (None, None, None),
            };
        let body = error_body(condition, &self.to_string());
        let mut resp = Response::new(full(body));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/xml; charset=utf-8"),
        );
        if let Some(secs) = retry_after {
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(short) = short {
            if let Ok(rp) = hyper::ext::ReasonPhrase::try_from(short.as_bytes().to_vec()) {
                resp.extensions_mut().insert(rp);
            }
        }
        resp
    }
}

impl crate::cache::serve::FetchError for DavError {
    fn upstream(&self) -> Option<&UpstreamError> {
        match self {
            DavError::Upstream(e) => Some(e),
            _ => None,
        }
    }
}
