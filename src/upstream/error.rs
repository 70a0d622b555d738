//! The upstream layer's one error type: what went wrong talking to iCloud, and the
//! sentence that explains it to a person.

use std::time::Duration;

/// Why the stored app-specific password is not usable (design: "When Apple says no").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthReason {
    /// The stored value does not look like `xxxx-xxxx-xxxx-xxxx` (checked before calling Apple).
    NotAppPassword,
    /// Apple has never accepted it since it was stored.
    NeverAccepted,
    /// Apple accepted it before and rejects it now: usually revoked by a password change.
    Revoked,
}

/// Which kind of network trouble made iCloud unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    Connect,
    Timeout,
    Tls,
    Protocol,
}

/// Everything that can go wrong between the bridge and iCloud.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("no app-specific password is stored for account {account}; run `icloud-bridge reconnect --account {account}` or use the status page")]
    Unconfigured { account: String },
    #[error("{}", auth_sentence(*.reason, .apple_id))]
    AuthRejected {
        reason: AuthReason,
        apple_id: String,
    },
    #[error("iCloud could not be reached ({detail}); the bridge will keep trying")]
    Unreachable { kind: Unreachable, detail: String },
    #[error("iCloud is limiting requests (it answered {status}); try again in {} s", .retry_after.as_secs())]
    RateLimited { status: u16, retry_after: Duration },
    #[error("iCloud sent a response the bridge cannot use: {detail}")]
    BadResponse { detail: String },
}

/// The sentence for each auth reason; each names the app-specific password and the fix.
pub fn auth_sentence(reason: AuthReason, apple_id: &str) -> String {
    match reason {
        AuthReason::NotAppPassword => format!(
            "The stored password for {apple_id} looks like the Apple ID password, not an app-specific password; make one at account.apple.com (Sign-In and Security, App-Specific Passwords), then run `icloud-bridge reconnect` or use the status page."
        ),
        AuthReason::NeverAccepted => format!(
            "iCloud refused the app-specific password for {apple_id}: wrong Apple ID or password, or two-factor authentication is off; check the Apple ID, make a new app-specific password at account.apple.com, then run `icloud-bridge reconnect` or use the status page."
        ),
        AuthReason::Revoked => format!(
            "iCloud no longer accepts the app-specific password for {apple_id}, usually because the Apple ID password was changed; make a new app-specific password at account.apple.com, then run `icloud-bridge reconnect` or use the status page."
        ),
    }
}

impl UpstreamError {
    /// The HTTP status a DAV client gets for this error (never 401: that would prompt the user).
    pub fn http_status(&self) -> u16 {
        match self {
            UpstreamError::Unconfigured { .. } => 503,
            UpstreamError::AuthRejected { .. } => 503,
            UpstreamError::Unreachable { kind, .. } => match kind {
                Unreachable::Timeout => 504,
                _ => 502,
            },
            UpstreamError::RateLimited { .. } => 503,
            UpstreamError::BadResponse { .. } => 502,
        }
    }

    /// Seconds for a `Retry-After` header, if the client should retry later.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            UpstreamError::Unconfigured { .. } | UpstreamError::AuthRejected { .. } => Some(60),
            UpstreamError::RateLimited { retry_after, .. } => Some(retry_after.as_secs()),
            UpstreamError::Unreachable { .. } => Some(30),
            UpstreamError::BadResponse { .. } => None,
        }
    }

    /// A short form for the HTTP reason phrase (some clients show nothing else).
    pub fn short(&self) -> &'static str {
        match self {
            UpstreamError::Unconfigured { .. } => "iCloud app-specific password not set",
            UpstreamError::AuthRejected { reason, .. } => match reason {
                AuthReason::NotAppPassword => {
                    "Not an app-specific password; see bridge status page"
                }
                AuthReason::NeverAccepted => {
                    "iCloud refused the app-specific password; see bridge status page"
                }
                AuthReason::Revoked => {
                    "iCloud app-specific password revoked; run icloud-bridge reconnect"
                }
            },
            UpstreamError::Unreachable {
                kind: Unreachable::Timeout,
                ..
            } => "iCloud timed out",
            UpstreamError::Unreachable { .. } => "iCloud unreachable",
            UpstreamError::RateLimited { .. } => "iCloud is rate limiting; retry later",
            UpstreamError::BadResponse { .. } => "Bad response from iCloud",
        }
    }

    /// One line of this error's sentence, without control characters.
    fn one_line(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    }

    /// The SMTP reply a submission client gets for this error: one line without CRLF, a
    /// temporary code with the sentence (never 535, which would make the client ask for a
    /// password that is not the user's). `421` (iCloud unreachable) means the bridge closes
    /// the connection after it; see [`UpstreamError::smtp_closes`].
    pub fn smtp_reply(&self) -> String {
        let code = match self {
            UpstreamError::Unreachable {
                kind: Unreachable::Timeout,
                ..
            } => "421 4.4.1",
            UpstreamError::Unreachable { .. } => "421 4.4.0",
            UpstreamError::Unconfigured { .. }
            | UpstreamError::AuthRejected { .. }
            | UpstreamError::RateLimited { .. }
            | UpstreamError::BadResponse { .. } => "454 4.7.0",
        };
        format!("{code} {}", self.one_line())
    }

    /// Does the SMTP front end close the connection after [`UpstreamError::smtp_reply`]?
    pub fn smtp_closes(&self) -> bool {
        matches!(self, UpstreamError::Unreachable { .. })
    }

    /// What an IMAP client is told instead of iCloud's answer (design, "When Apple says no"):
    /// `* OK [ALERT] <sentence>` (clients must show ALERT text) then
    /// `<tag> NO [UNAVAILABLE] <sentence>` (so that clients do not ask for a new password).
    pub fn imap_reply(&self, tag: &str) -> String {
        let sentence = self.one_line();
        format!("* OK [ALERT] {sentence}\r\n{tag} NO [UNAVAILABLE] {sentence}\r\n")
    }

    /// May a cached (stale) answer stand in for iCloud's? Yes while iCloud cannot be
    /// reached, refuses the credential or limits requests; not for a garbled answer.
    pub fn serve_stale(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unconfigured { .. }
                | UpstreamError::AuthRejected { .. }
                | UpstreamError::Unreachable { .. }
                | UpstreamError::RateLimited { .. }
        )
    }

    /// The account state this error puts a service in.
    pub fn state(&self) -> crate::upstream::service::ServiceState {
        use crate::upstream::service::ServiceState;
        match self {
            UpstreamError::Unconfigured { .. } => ServiceState::Unconfigured,
            UpstreamError::AuthRejected { .. } => ServiceState::AuthRejected,
            UpstreamError::Unreachable { .. } => ServiceState::Unreachable,
            UpstreamError::RateLimited { .. } => ServiceState::RateLimited,
            UpstreamError::BadResponse { .. } => ServiceState::Unknown,
        }
    }
}

/// The wait Apple's `Retry-After` asks for (seconds or an HTTP date), bounded to 1 s–1 h;
/// `None` when absent or unreadable (the caller then backs off on its own).
pub fn parse_retry_after(header: Option<&str>) -> Option<Duration> {
    let v = header?.trim();
    let secs = v.parse::<u64>().ok().or_else(|| {
        httpdate::parse_http_date(v).ok().map(|t| {
            t.duration_since(std::time::SystemTime::now())
                .map(|d| d.as_secs_f64().ceil() as u64)
                .unwrap_or(0)
        })
    })?;
    Some(Duration::from_secs(secs.clamp(1, 3600)))
}

/// Whole seconds a client is told to wait for `left`: rounded up, at least 1.
pub fn retry_secs(left: Duration) -> Duration {
    Duration::from_secs((left.as_secs_f64().ceil() as u64).clamp(1, 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_what_apple_asked_within_1s_to_1h() {
        let secs = |v| parse_retry_after(v).map(|d| d.as_secs());
        assert_eq!(secs(None), None);
        assert_eq!(secs(Some("soon")), None);
        assert_eq!(secs(Some("3")), Some(3));
        assert_eq!(secs(Some(" 120 ")), Some(120));
        assert_eq!(secs(Some("0")), Some(1));
        assert_eq!(secs(Some("99999")), Some(3600));
        let later = std::time::SystemTime::now() + Duration::from_secs(30);
        let date = httpdate::fmt_http_date(later);
        assert!(matches!(secs(Some(&date)), Some(29..=31)), "{date}");
        assert_eq!(secs(Some("Thu, 01 Jan 1970 00:00:00 GMT")), Some(1));
        assert_eq!(retry_secs(Duration::from_millis(2100)).as_secs(), 3);
        assert_eq!(retry_secs(Duration::from_millis(10)).as_secs(), 1);
        assert_eq!(retry_secs(Duration::ZERO).as_secs(), 1);
    }

    #[test]
    fn sentences_name_the_app_specific_password_and_the_fix() {
        for r in [
            AuthReason::NotAppPassword,
            AuthReason::NeverAccepted,
            AuthReason::Revoked,
        ] {
            let s = auth_sentence(r, "a@icloud.com");
            assert!(s.contains("app-specific password"), "{s}");
            assert!(s.contains("account.apple.com"), "{s}");
            assert!(s.contains("a@icloud.com"), "{s}");
        }
    }

    #[test]
    fn auth_errors_never_map_to_401() {
        let e = UpstreamError::AuthRejected {
            reason: AuthReason::Revoked,
            apple_id: "a@icloud.com".into(),
        };
        assert_eq!(e.http_status(), 503);
        assert_eq!(e.retry_after(), Some(60));
        let r = e.imap_reply("a1");
        let lines: Vec<&str> = r.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 2, "{r}");
        assert!(
            lines[0].starts_with("* OK [ALERT] iCloud no longer accepts"),
            "{r}"
        );
        assert!(
            lines[1].starts_with("a1 NO [UNAVAILABLE] iCloud no longer accepts"),
            "{r}"
        );
    }

    #[test]
    fn smtp_replies_are_temporary_and_carry_the_sentence() {
        let e = UpstreamError::AuthRejected {
            reason: AuthReason::Revoked,
            apple_id: "a@icloud.com".into(),
        };
        let r = e.smtp_reply();
        assert!(r.starts_with("454 4.7.0 iCloud no longer accepts"), "{r}");
        assert!(!e.smtp_closes());
        let e = UpstreamError::Unreachable {
            kind: Unreachable::Connect,
            detail: "refused\r\nbad".into(),
        };
        let r = e.smtp_reply();
        assert!(
            r.starts_with("421 4.4.0 iCloud could not be reached"),
            "{r}"
        );
        assert!(!r.contains('\r') && !r.contains('\n'), "{r}");
        assert!(e.smtp_closes());
    }
}
