//! Response builders: the exact 401, the nginx-style 400 page, 207 bodies, Apple's noise headers.

use crate::body::Body;
use crate::state::{Role, Shared};
use crate::switches::{Switches, WwwAuthStyle};
use http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Response, StatusCode};

pub type Resp = Response<Body>;

/// A response with this status and an empty body (`Content-Length: 0`).
pub fn status(code: u16) -> Resp {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    r
}

/// A response with a body and content type.
pub fn with_body(code: u16, content_type: &str, body: Body) -> Resp {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// A 207 multistatus.
pub fn multistatus(body: Body) -> Resp {
    with_body(207, "text/xml; charset=UTF-8", body)
}

/// The one and only 401 (C3): empty body, realm MMCalDav, no hint of the cause.
pub fn unauthorized(sw: &Switches) -> Resp {
    let mut r = status(401);
    let h = r.headers_mut();
    let name = http::header::WWW_AUTHENTICATE;
    match sw.www_authenticate_style {
        WwwAuthStyle::TwoHeaders => {
            h.append(&name, HeaderValue::from_static("Basic realm=\"MMCalDav\""));
            h.append(
                &name,
                HeaderValue::from_static("X-MobileMe-AuthToken realm=\"MMCalDav\""),
            );
        }
        WwwAuthStyle::Combined => {
            h.append(
                &name,
                HeaderValue::from_static(
                    "X-MobileMe-AuthToken realm=\"MMCalDav\", Basic realm=\"MMCalDav\"",
                ),
            );
        }
    }
    r
}

/// The nginx-style 400 page with `Connection: close`.
pub fn bad_request(server_hash: &str) -> Resp {
    let page = format!(
        "<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body bgcolor=\"white\">\r\n<center><h1>400 Bad Request</h1></center>\r\n<hr><center>AppleHttpServer/{server_hash}</center>\r\n</body>\r\n</html>\r\n"
    );
    let mut r = with_body(400, "text/html", Body::from_string(page));
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// An empty 400 with `Connection: close` (GET `/` with `empty_400_on_root`).
pub fn empty_bad_request() -> Resp {
    let mut r = status(400);
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

/// MKCALENDAR with more than one component (VS#593).
pub fn component_set_exceeded() -> Resp {
    with_body(
        400,
        "text/html",
        Body::from_string(
            "<html><head><title>Bad Request</title></head><body><h1>Bad Request</h1><p>Calendar SupportedCalendarComponentSet length exceeded, only one calendar component type supported</p></body></html>".into(),
        ),
    )
}

/// A redirect with a Location header.
pub fn redirect(code: u16, location: &str) -> Resp {
    let mut r = status(code);
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(http::header::LOCATION, v);
    }
    r
}

fn set(r: &mut Resp, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// Apple's noise headers, on every response (C3).
pub fn add_common(
    r: &mut Resp,
    shared: &Shared,
    role: Role,
    user_partition: Option<u32>,
    elapsed_ms: u128,
) {
    set(
        r,
        "server",
        format!("AppleHttpServer/{}", shared.server_hash),
    );
    set(
        r,
        "x-apple-request-uuid",
        uuid::Uuid::new_v4().hyphenated().to_string(),
    );
    // The instance depends on the host only, so it never tells known and unknown users apart.
    let p = role.partition().unwrap_or(44);
    let kind = if role.is_cal() { "caldavj" } else { "carddavj" };
    set(
        r,
        "x-responding-instance",
        format!(
            "{kind}:3:p{p:02}-{kind}-{}:8080:{}:{}",
            &shared.instance_hex[..10.min(shared.instance_hex.len())],
            "2428B596",
            &shared.server_hash
        ),
    );
    set(
        r,
        "strict-transport-security",
        "max-age=31536000; includeSubDomains;".into(),
    );
    set(
        r,
        "via",
        "icloudedge:st11p00ic-standin01:7401:26R10:Loopback".into(),
    );
    set(
        r,
        "access-control-expose-headers",
        "X-Apple-Request-UUID,Via".into(),
    );
    set(r, "x-apple-edge-response-time", elapsed_ms.to_string());
    if let Some(up) = user_partition {
        set(r, "x-apple-user-partition", format!("{up:02}"));
    }
}
