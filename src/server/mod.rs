//! HTTP listener, local authentication and logins, and the operator's pages.

pub mod app;
pub mod auth;
pub mod listener;
pub mod logins;
pub mod metrics;
pub mod notify;
pub mod status;
pub mod throttle;
