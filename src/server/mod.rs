//! HTTP listener, local authentication and logins, and the operator's pages.

pub mod admin;
pub mod app;
pub mod auth;
pub mod csrf;
pub mod host_check;
pub mod limits;
pub mod listener;
pub mod logins;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod status;
pub mod stored_accounts;
pub mod throttle;
