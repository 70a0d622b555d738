//! Why the bridge could not start: one error type for building the server (listeners, files
//! in `data_dir`, the HTTP and mail clients, TLS), each a sentence for the operator that
//! names the config key or file involved. `main` prints it and exits non-zero.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Listen {
        key: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{key} = \"{addr}\" would let every device's login cross the network in clear; serve other devices over TLS instead (server.tls_listen for HTTPS, server.imaps_listen for IMAP) and keep plain listeners on 127.0.0.1, or set [server] allow_plaintext_lan = true if that is really wanted")]
    PlaintextOnLan { key: &'static str, addr: SocketAddr },
    #[error("cannot {action} {}: {source}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a link key (64 hex digits); remove it to make a new one", path.display())]
    LinkKey { path: PathBuf },
    #[error("the {what} client cannot be built: {detail}")]
    Client { what: &'static str, detail: String },
    #[error("the client logins in data_dir cannot be used: {detail}")]
    Logins { detail: String },
    #[error("{0}")]
    Tls(String),
}
