//! Mail front ends: IMAP and SMTP submission, relayed to iCloud with the stored credential.

pub mod smtp;
