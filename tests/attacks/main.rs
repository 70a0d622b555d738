//! The attacks of a hostile device on the LAN (issue 11), one module per kind, each test
//! driving a running bridge the way an attacker with one ordinary device login (or none)
//! would. Read this list as the threat model: every numbered finding has its test here.
//!
//! 1. credential: the stored password goes only to the configured and learned origins
//!    (forged `_up` keys, planted `ATTACH:`/`URL:`, redirects to other ports or schemes).
//! 2. credential: only Apple's DAV answers judge the password (a 401 from a photo URL does
//!    not mark the account `auth_rejected`).
//! 3. xml: attribute bombs and other markup work are refused in linear time without
//!    freezing other clients.
//! 4. paths: backslashes and dot segments never leave the account's home (request target
//!    and `Destination`); `_up` is never a `Destination`.
//! 5. connections: one address cannot take every connection slot.
//! 6. logins: wrong-password floods slow only their own address; remembered logins never
//!    wait behind argon2.
//! 7. logins: unknown names cost the same as known ones, long passwords included.
//! 8. memory: request bodies held at once have a global budget.
//! 9. host: status, setup and admin pages answer only for the bridge's own names.
//!
//! Also: tls (the local CA's name constraints and fingerprint), plaintext (no plain
//! listener on a LAN address without `allow_plaintext_lan`, `data_dir` 0700, one loopback
//! rule for every front end).

#[path = "../support/mod.rs"]
mod support;

mod connections;
mod credential;
mod host;
mod logins;
mod memory;
mod paths;
mod plaintext;
mod tls;
mod xml;
