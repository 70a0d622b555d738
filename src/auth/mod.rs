//! Local authentication: HTTP Basic against the local logins, with the failure throttle.

use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::auth::logins::{Hold, Login, LoginStore, Verify};
use crate::auth::throttle::{FailureThrottle, Turn};
use crate::body::{full, Body};

pub mod csrf;
pub mod host_check;
pub mod logins;
pub mod throttle;

/// The local logins and the throttle of wrong ones: what every front end asks before it
/// serves a device.
pub struct LocalAuth {
    pub logins: LoginStore,
    pub throttle: FailureThrottle,
}

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

impl LocalAuth {
    pub fn new(logins: LoginStore) -> LocalAuth {
        LocalAuth {
            logins,
            throttle: FailureThrottle::new(),
        }
    }

    pub async fn authenticate(&self, ip: IpAddr, headers: &HeaderMap) -> AuthOutcome {
        let Some(basic) = parse_basic(headers) else {
            return AuthOutcome::Challenge;
        };
        match self
            .check_login(ip, basic.user(), basic.password(), "http")
            .await
        {
            Some(login) => AuthOutcome::Ok(login),
            None => AuthOutcome::Wrong,
        }
    }

    /// Check a local login for any front end (`front`: "http", "imap", "smtp"); `None` for a
    /// wrong login or password.
    ///
    /// A pair that succeeded within the last 10 minutes is answered from memory at once, never
    /// waiting behind argon2 or any delay. Every other check waits for its address's turn
    /// (one check at a time per address, in order, after the delay its failures set: see
    /// [`crate::auth::throttle`]), then costs one argon2 run whether or not the name exists.
    /// The turn is held until that run ends even if the client hangs up, so parallel or
    /// abandoned attempts from one address never run two at once, and a new device on another
    /// address waits for at most one run per other address.
    pub async fn check_login(
        &self,
        ip: IpAddr,
        user: &str,
        pass: &str,
        front: &'static str,
    ) -> Option<Login> {
        if let Some(login) = self.logins.remembered(user, pass).await {
            return Some(login);
        }
        // Boxed: the slow path's state (a turn, argon2 on the blocking pool) is large, and
        // every remembered login would otherwise carry it.
        Box::pin(self.verify_in_turn(ip, user, pass, front)).await
    }

    /// A check that is not answered from memory: wait for the address's turn, then one
    /// argon2 run; a failure is counted before the turn ends.
    async fn verify_in_turn(
        &self,
        ip: IpAddr,
        user: &str,
        pass: &str,
        front: &'static str,
    ) -> Option<Login> {
        let attempt = Attempt {
            turn: self.throttle.turn(ip).await,
            name: user.to_string(),
            front,
        };
        match self.logins.verify_holding(user, pass, attempt).await {
            Verify::Ok(login) => Some(login),
            Verify::WrongPassword | Verify::UnknownUser => {
                self.throttle.log_due(ip);
                None
            }
        }
    }
}

/// One check in its address's turn: a failure is counted before the turn ends.
struct Attempt {
    turn: Turn,
    name: String,
    front: &'static str,
}

impl Hold for Attempt {
    fn ended(self, ok: bool, known_name: bool) {
        if !ok {
            self.turn.failed(&self.name, known_name, self.front);
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
