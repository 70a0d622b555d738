//! HTTP listener, local authentication and logins, and the operator's pages.

pub mod admin;
pub mod listener;
pub mod notify;
pub mod page;
pub mod router;
pub mod status;
