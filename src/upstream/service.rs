//! The upstream services an account uses, and the states Apple's answers put each in.

use serde::{Deserialize, Serialize};

/// One of the upstream services an account uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    Caldav,
    Carddav,
    Imap,
    Smtp,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Caldav => "caldav",
            Service::Carddav => "carddav",
            Service::Imap => "imap",
            Service::Smtp => "smtp",
        }
    }
}

/// The state shown on the status page, in `/status.json` and in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    // Ordered from best to worst so that the account's state is the max.
    Ok,
    Unknown,
    RateLimited,
    Unreachable,
    AuthRejected,
    Unconfigured,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Ok => "ok",
            ServiceState::Unknown => "unknown",
            ServiceState::RateLimited => "rate_limited",
            ServiceState::Unreachable => "unreachable",
            ServiceState::AuthRejected => "auth_rejected",
            ServiceState::Unconfigured => "unconfigured",
        }
    }

    /// Every state, best first.
    pub const ALL: [ServiceState; 6] = [
        ServiceState::Ok,
        ServiceState::Unknown,
        ServiceState::RateLimited,
        ServiceState::Unreachable,
        ServiceState::AuthRejected,
        ServiceState::Unconfigured,
    ];

    /// A state the operator must hear about (everything but `ok` and `unknown`).
    pub fn is_bad(self) -> bool {
        !matches!(self, ServiceState::Ok | ServiceState::Unknown)
    }
}
