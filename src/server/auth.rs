//! Local authentication: HTTP Basic against the local logins, with the failure throttle.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::dav::respond::{full, Body};
use crate::server::app::App;
use crate::server::logins::{Login, Verify};

pub enum AuthOutcome {
    Ok(Login),
    /// No credentials: a normal first step for clients.
    Challenge,
    /// Wrong local login or password.
    Wrong,
}

/// Parse `Authorization: Basic ...` into the user and password (one decoded buffer).
pub fn parse_basic(headers: &HeaderMap) -> Option<Basic> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let colon = decoded.find(':')?;
    Some(Basic { decoded, colon })
}

/// Decoded Basic credentials, `user:password` in one buffer.
pub struct Basic {
    decoded: String,
    colon: usize,
}

impl Basic {
    pub fn user(&self) -> &str {
        &self.decoded[..self.colon]
    }

    pub fn password(&self) -> &str {
        &self.decoded[self.colon + 1..]
    }
}

pub async fn authenticate(app: &App, ip: IpAddr, headers: &HeaderMap) -> AuthOutcome {
    let Some(basic) = parse_basic(headers) else {
        return AuthOutcome::Challenge;
    };
    match check_login(app, ip, basic.user(), basic.password(), "http").await {
        Some(login) => AuthOutcome::Ok(login),
        None => AuthOutcome::Wrong,
    }
}

/// Check a local login for any front end (`front`: "http", "imap", "smtp"), slowed and
/// counted by the failure throttle; `None` for a wrong login or password.
pub async fn check_login(
    app: &App,
    ip: IpAddr,
    user: &str,
    pass: &str,
    front: &'static str,
) -> Option<Login> {
    let delay = app.throttle.delay_for(ip);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match app.logins.verify(user, pass).await {
        Verify::Ok(login) => {
            app.throttle.record_success(ip);
            Some(login)
        }
        Verify::WrongPassword | Verify::UnknownUser => {
            app.throttle.record_failure(ip);
            tracing::info!(%ip, front, "wrong local login or password");
            None
        }
    }
}

/// 401 with the bridge's own realm (never Apple's).
pub fn challenge(wrong: bool) -> Response<Body> {
    let body = if wrong {
        "Wrong bridge login or password. Use the login made with `icloud-bridge client add`, not your Apple ID.\n"
    } else {
        "Log in with a bridge login (made with `icloud-bridge client add`).\n"
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    r.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"icloud-bridge\", charset=\"UTF-8\""),
    );
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
