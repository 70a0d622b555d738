//! Talking to iCloud: HTTP client, credential sources and vault, account state.

pub mod credential;
pub mod vault;
