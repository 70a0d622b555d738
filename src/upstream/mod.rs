//! Talking to iCloud: HTTP client, credential sources and vault, account state, discovery.

pub mod client;
pub mod credential;
pub mod discover;
pub mod error;
pub mod reconnect;
pub mod state;
pub mod vault;
