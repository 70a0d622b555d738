//! icloud-bridge: a local CalDAV/CardDAV (and IMAP/SMTP) server that forwards to iCloud with
//! one centrally held app-specific password.
//!
//! # Layout
//!
//! Data flows one way: listener → local auth → router → upstream client → iCloud, and the
//! response back through the href rewriter.
//!
//! - [`config`]: typed, validated configuration.
//! - [`app`]: the composition root: every shared part built once.
//! - [`server`]: HTTP listeners, the router, status pages, admin forms, notifier.
//! - [`auth`]: local logins and the throttle of wrong ones.
//! - [`accounts`]: one owner per account: credential, state, discovery kept, `state.json`.
//! - [`dav`]: routing, local discovery, href mapping, streaming XML rewriting, proxying,
//!   explaining iCloud's refusals.
//! - [`mail`]: IMAP (plain + STARTTLS, implicit TLS) and SMTP submission front ends, relayed
//!   to iCloud with the stored credential.
//! - [`upstream`]: the wire to iCloud: HTTP client, discovery walk, failure classification.
//! - [`cache`]: cached answers and the cache policy.
//! - [`xml`]: streaming XML rewriting and inspection.
//! - [`push`]: WebDAV-Push (Web Push to DAVx5 and others when a collection changes).
//! - [`standin`]: a faithful local iCloud stand-in, used by `demo` and the tests.
//! - [`tls`]: the local CA and server certificate in `certs_dir`, TLS configurations.
//! - [`shutdown`]: signal handling and cancellation.

#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]
#![forbid(unsafe_code)]

pub mod accounts;
pub mod app;
pub mod auth;
pub mod body;
pub mod cache;
pub mod config;
pub mod dates;
pub mod dav;
pub mod files;
pub mod frontend;
pub mod init;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod push;
pub mod secret;
pub mod server;
pub mod shutdown;
pub mod start;
pub mod tls;
pub mod upstream;
pub mod xml;

/// The iCloud stand-in (a workspace crate), re-exported for `demo` and the tests.
pub use icloud_standin as standin;
