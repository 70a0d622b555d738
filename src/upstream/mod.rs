//! Talking to iCloud: the HTTP client and its origin rules, how discovery walks iCloud, the
//! services and the classification of their failures.

pub mod client;
pub mod discover;
pub mod error;
pub mod gate;
pub mod imap;
pub mod response;
pub mod service;
pub mod smtp;
