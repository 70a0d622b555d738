//! What the bridge knows of each service of an account, the rule that makes the account's
//! state of them, and the event a change of either sends.

use std::time::SystemTime;

use serde::Serialize;

use crate::upstream::error::UpstreamError;
use crate::upstream::service::{Service, ServiceState};

/// The services every process serves (the account's state is the worst of the served ones);
/// IMAP joins them when an IMAP listener is configured (see [`served_for`]).
pub const SERVED: &[Service] = &[Service::Caldav, Service::Carddav];

/// The services a process with this server configuration serves.
pub fn served_for(server: &crate::config::ServerConfig) -> Vec<Service> {
    let mut v = SERVED.to_vec();
    if server.imap_listen.is_some() || server.imaps_listen.is_some() {
        v.push(Service::Imap);
    }
    if server.smtp_listen.is_some() {
        v.push(Service::Smtp);
    }
    v
}

/// The account's state from its served services' statuses: `unconfigured` without a
/// credential, `unknown` while no served service has been asked, else the worst one; the
/// reason is the first one given for that state.
pub fn account_state(
    account: &str,
    has_credential: bool,
    statuses: &[&ServiceStatus],
) -> (ServiceState, Option<String>) {
    let worst = statuses
        .iter()
        .map(|s| s.state)
        .max()
        .unwrap_or(ServiceState::Unknown);
    let state = if !has_credential {
        ServiceState::Unconfigured
    } else if statuses.iter().all(|s| s.state == ServiceState::Unknown) {
        ServiceState::Unknown
    } else {
        worst
    };
    let reason = statuses
        .iter()
        .filter(|s| s.state == state)
        .find_map(|s| s.reason.clone());
    let reason = match (state, reason) {
        (ServiceState::Unconfigured, None) => Some(
            UpstreamError::Unconfigured {
                account: account.to_string(),
            }
            .to_string(),
        ),
        (_, r) => r,
    };
    (state, reason)
}

/// One change of a service's or an account's (state, reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEvent {
    pub account: String,
    /// `None`: the account as a whole (the worst of its served services).
    pub service: Option<Service>,
    pub old: ServiceState,
    pub new: ServiceState,
    /// The sentence explaining `new` (none for `ok`).
    pub reason: Option<String>,
    pub at: SystemTime,
}

/// What the bridge knows about one service of one account.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStatus {
    pub state: ServiceState,
    pub reason: Option<String>,
    #[serde(serialize_with = "ser_time")]
    pub last_success: Option<SystemTime>,
    #[serde(serialize_with = "ser_time")]
    pub last_failure: Option<SystemTime>,
    pub last_upstream_status: Option<u16>,
}

impl Default for ServiceStatus {
    fn default() -> Self {
        ServiceStatus {
            state: ServiceState::Unknown,
            reason: None,
            last_success: None,
            last_failure: None,
            last_upstream_status: None,
        }
    }
}

fn ser_time<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&httpdate::fmt_http_date(*t)),
        None => s.serialize_none(),
    }
}
