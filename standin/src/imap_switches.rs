//! The IMAP role's switches (spec C9), set by name as `imap.<name>`.

/// The greeting's form (C9 `greeting_style`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GreetingStyle {
    /// `* OK [CAPABILITY XAPPLEPUSHSERVICE IMAP4 IMAP4rev1 SASL-IR AUTH=ATOKEN ...] (…) p00-iscream-…`
    Y2026,
    /// `* OK [CAPABILITY st11p00mm-iscream022 15E205 ...] iSCREAM ready to rumble …`
    Y2016,
}

/// The IMAP switches (C9), set as `imap.<name>` (the bare name works too).
#[derive(Clone, Debug, PartialEq)]
pub struct ImapSwitches {
    /// `imap.greeting_style` (2026; or 2016).
    pub greeting_style: GreetingStyle,
    /// `imap.capability_trailing_space` (false): the old server's trailing space.
    pub capability_trailing_space: bool,
    /// `imap.fail_text_case` ("Failed"; or "failed").
    pub fail_text_case: String,
    /// `imap.close_after_auth_failure` (false): close the socket right after the NO.
    pub close_after_auth_failure: bool,
    /// `imap.authenticate_plain_rejected` (false): AUTHENTICATE PLAIN always fails.
    pub authenticate_plain_rejected: bool,
    /// `imap.login_unavailable` (false): LOGIN/AUTHENTICATE get
    /// `BAD [UNAVAILABLE] Service temporarily unavailable`.
    pub login_unavailable: bool,
    /// `imap.drop_on_login` (false): close the connection, unanswered, on LOGIN/AUTHENTICATE.
    pub drop_on_login: bool,
    /// `imap.accept_local_part` (true): `alice` logs in as `alice@icloud.com`.
    pub accept_local_part: bool,
    /// `imap.accept_full_address` (true).
    pub accept_full_address: bool,
}

impl Default for ImapSwitches {
    fn default() -> Self {
        ImapSwitches {
            greeting_style: GreetingStyle::Y2026,
            capability_trailing_space: false,
            fail_text_case: "Failed".into(),
            close_after_auth_failure: false,
            authenticate_plain_rejected: false,
            login_unavailable: false,
            drop_on_login: false,
            accept_local_part: true,
            accept_full_address: true,
        }
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        other => Err(format!("not a boolean: {other}")),
    }
}

impl ImapSwitches {
    /// Every name, as listed by `Switches::names`.
    pub const NAMES: &'static [&'static str] = &[
        "imap.greeting_style",
        "imap.capability_trailing_space",
        "imap.fail_text_case",
        "imap.close_after_auth_failure",
        "imap.authenticate_plain_rejected",
        "imap.login_unavailable",
        "imap.drop_on_login",
        "imap.accept_local_part",
        "imap.accept_full_address",
    ];

    /// Set one switch; `None` when the name is not an IMAP switch.
    pub fn set(&mut self, name: &str, value: &str) -> Option<Result<(), String>> {
        let key = name.strip_prefix("imap.").unwrap_or(name);
        let v = value.trim();
        let r = match key {
            "greeting_style" => match v {
                "2026" => {
                    self.greeting_style = GreetingStyle::Y2026;
                    Ok(())
                }
                "2016" => {
                    self.greeting_style = GreetingStyle::Y2016;
                    Ok(())
                }
                _ => Err(format!("invalid value for {name}: {v} (2026 or 2016)")),
            },
            "fail_text_case" => match v {
                "Failed" | "failed" => {
                    self.fail_text_case = v.to_string();
                    Ok(())
                }
                _ => Err(format!("invalid value for {name}: {v} (Failed or failed)")),
            },
            "capability_trailing_space" => {
                parse_bool(v).map(|b| self.capability_trailing_space = b)
            }
            "close_after_auth_failure" => parse_bool(v).map(|b| self.close_after_auth_failure = b),
            "authenticate_plain_rejected" => {
                parse_bool(v).map(|b| self.authenticate_plain_rejected = b)
            }
            "login_unavailable" | "transient_failure" => {
                parse_bool(v).map(|b| self.login_unavailable = b)
            }
            "drop_on_login" | "drop_connection" => parse_bool(v).map(|b| self.drop_on_login = b),
            "accept_local_part" => parse_bool(v).map(|b| self.accept_local_part = b),
            "accept_full_address" => parse_bool(v).map(|b| self.accept_full_address = b),
            _ => return None,
        };
        Some(r)
    }
}
