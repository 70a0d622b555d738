//! Failure injection before routing (C8): rate limit, random 5xx, hangs/delays, resets.

use crate::accounts::lock;
use crate::respond::{self, Resp};
use crate::state::Shared;
use crate::switches::Switches;
use http::HeaderValue;
use rand::Rng;
use std::time::{Duration, Instant};

/// What a fault does to this request.
pub enum Fault {
    /// Answer with this instead of routing.
    Respond(Resp),
    /// Never answer.
    Hang,
    /// Answer normally after this delay.
    Delay(Duration),
    /// Answer normally but break the connection mid-response.
    Reset,
}

/// Count the request and roll the dice.
pub fn pre(shared: &Shared, sw: &Switches) -> Option<Fault> {
    {
        let mut w = lock(&shared.rate);
        if w.started.elapsed() >= Duration::from_millis(sw.rate_window_ms.max(1)) {
            w.started = Instant::now();
            w.count = 0;
        }
        w.count += 1;
        if let Some(limit) = sw.rate_limit_after {
            if w.count > limit {
                let mut r = respond::status(sw.rate_status);
                if let Some(secs) = sw.rate_retry_after {
                    r.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
                }
                return Some(Fault::Respond(r));
            }
        }
    }
    let mut rng = rand::thread_rng();
    if sw.flaky_5xx > 0.0 && rng.gen_bool(sw.flaky_5xx.clamp(0.0, 1.0)) {
        let code = match sw.flaky_5xx_status.and_then(|c| u16::try_from(c).ok()) {
            Some(c) => c,
            None => [500u16, 502, 503][rng.gen_range(0..3)],
        };
        return Some(Fault::Respond(respond::status(code)));
    }
    if sw.flaky_timeout > 0.0 && rng.gen_bool(sw.flaky_timeout.clamp(0.0, 1.0)) {
        return Some(match sw.flaky_timeout_delay_ms {
            Some(ms) => Fault::Delay(Duration::from_millis(ms)),
            None => Fault::Hang,
        });
    }
    if sw.flaky_garbage > 0.0 && rng.gen_bool(sw.flaky_garbage.clamp(0.0, 1.0)) {
        let garbage = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<multistatus xmlns=\"DAV:\"><response><href>/1234567890/calendars/</hr";
        let mut r = respond::status(207);
        *r.body_mut() = crate::body::Body::from_string(garbage.to_string());
        r.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            HeaderValue::from(garbage.len()),
        );
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/xml; charset=UTF-8"),
        );
        return Some(Fault::Respond(r));
    }
    if sw.flaky_reset > 0.0 && rng.gen_bool(sw.flaky_reset.clamp(0.0, 1.0)) {
        return Some(Fault::Reset);
    }
    None
}
