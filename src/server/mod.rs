//! HTTP listener, local logins and the operator's pages.

pub mod logins;
pub mod throttle;
