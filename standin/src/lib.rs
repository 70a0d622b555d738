//! A faithful local stand-in for iCloud's CalDAV and CardDAV servers (front and partition
//! roles on separate loopback ports), with switches for every known quirk and fault.
//!
//! Follows `reference/icloud-protocol.md` section C (C1–C11). The IMAP role (C9) lives in
//! `imap.rs` on its own plaintext loopback port ([`Standin::imap_url`]), with a small mail
//! store per account (`mailstore.rs`); the SMTP submission role (C10) in `smtp.rs` on its own
//! port, with STARTTLS from a CA generated at start-up (`tls.rs`, [`Standin::ca_pem`]).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use icloud_standin::{Standin, StandinConfig};
//! let standin = Standin::start(StandinConfig::demo()).await?;
//! println!("CalDAV at {}", standin.caldav_url());
//! standin.control().set_switch("rate.limit_after", "100").ok();
//! standin.stop().await;
//! # Ok(()) }
//! ```

// Handlers return the finished iCloud-style refusal as their error value; that is the point of
// these `Result`s, so the size of `http::Response` in the error variant is accepted.
#![allow(clippy::result_large_err)]

mod accounts;
mod auth;
mod body;
mod collections;
mod config;
mod control;
mod control_http;
mod ctx;
mod faults;
mod filters;
mod ical;
mod imap;
mod imap_data;
mod imap_parse;
mod imap_switches;
mod mailstore;
mod objects;
mod objprops;
mod paths;
mod propfind;
mod props;
mod recur;
mod report;
mod respond;
mod router;
mod seed;
mod server;
mod smtp;
mod state;
mod store;
mod switch_names;
mod switches;
mod tls;
mod vcard;
mod xml_in;
mod xml_out;

pub use config::{
    AccountSpec, AccountState, CalendarSpec, ObjectSpec, Ports, Service, Services, StandinConfig,
    DEMO_APPLE_ID, DEMO_APP_PASSWORD, DEMO_DSID, DEMO_HEX_CALENDAR, DEMO_PARTITION,
    DEMO_PRIMARY_PASSWORD, DEMO_REVOKED_APP_PASSWORD, DEMO_UUID_CALENDAR,
};
pub use control::{Control, MailMessage};
pub use imap_switches::{GreetingStyle, ImapSwitches};
pub use mailstore::FOLDERS as MAIL_FOLDERS;
pub use seed::DEMO_JPEG;
pub use smtp::SentMessage;
pub use state::LoggedRequest;
pub use switches::{
    CtagStyle, DtendRule, InvalidTokenStyle, MovedResponse, OptionsDavHeader, PhotoStyle, Switches,
    WellKnownMode, WwwAuthStyle,
};

use accounts::{lock, read, write, Accounts};
use rand::Rng;
use state::{Listeners, RateWindow, Role, Shared};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use tokio::sync::watch;

/// A running stand-in.
pub struct Standin {
    shared: Arc<Shared>,
}

pub(crate) fn random_hex(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.gen_range(0..16)]))
        .collect()
}

impl Standin {
    /// Bind every role on 127.0.0.1 (front-cal, front-card, and part-cal/part-card for each
    /// partition in use) and start serving. Must be called inside a tokio runtime (an error
    /// otherwise).
    pub async fn start(cfg: StandinConfig) -> std::io::Result<Standin> {
        let bind_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (unreachable, _) = watch::channel(cfg.switches.partition_unreachable);
        let (shutdown, _) = watch::channel(false);
        let (mail_changes, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            accounts: Accounts::new(&cfg.accounts),
            switches: RwLock::new(cfg.switches.clone()),
            server_hash: cfg.server_hash.clone().unwrap_or_else(|| random_hex(12)),
            instance_hex: random_hex(10),
            log: Mutex::new(VecDeque::new()),
            rate: Mutex::new(RateWindow {
                started: Instant::now(),
                count: 0,
            }),
            listeners: RwLock::new(Listeners::default()),
            switch_changes: watch::channel(0u64).0,
            held: std::sync::atomic::AtomicUsize::new(0),
            unreachable,
            mail_changes,
            shutdown,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            tasks: Mutex::new(Vec::new()),
            bind_ip,
            tls: tls::generate()?,
            smtp_data_bytes: std::sync::atomic::AtomicU64::new(0),
        });
        let cal = server::bind_role(
            &shared,
            Role::FrontCal,
            SocketAddr::new(bind_ip, cfg.ports.front_cal),
        )?;
        let card = server::bind_role(
            &shared,
            Role::FrontCard,
            SocketAddr::new(bind_ip, cfg.ports.front_card),
        )?;
        let imap = imap::bind(&shared, SocketAddr::new(bind_ip, cfg.ports.imap))?;
        {
            let mut l = write(&shared.listeners);
            l.front_cal = Some(cal);
            l.front_card = Some(card);
            l.imap = Some(imap);
        }
        for p in shared.accounts.partitions() {
            server::ensure_partition(&shared, p)?;
        }
        let smtp = smtp::bind(&shared, SocketAddr::new(bind_ip, cfg.ports.smtp))?;
        smtp::set_addr(&shared, smtp);
        tracing::info!(caldav = %cal, carddav = %card, imap = %imap, %smtp, "iCloud stand-in listening");
        Ok(Standin { shared })
    }

    fn front(&self, cal: bool) -> String {
        let l = read(&self.shared.listeners);
        match if cal { l.front_cal } else { l.front_card } {
            Some(a) => format!("http://{a}/"),
            None => String::new(),
        }
    }

    /// Front CalDAV URL, e.g. `http://127.0.0.1:41001/`.
    pub fn caldav_url(&self) -> String {
        self.front(true)
    }

    /// Front CardDAV URL.
    pub fn carddav_url(&self) -> String {
        self.front(false)
    }

    /// The IMAP role, plaintext: `imap://127.0.0.1:<port>`.
    pub fn imap_url(&self) -> String {
        match read(&self.shared.listeners).imap {
            Some(a) => format!("imap://{a}"),
            None => String::new(),
        }
    }

    /// `http://127.0.0.1:<port>/` of a partition's CalDAV host.
    pub fn partition_caldav_url(&self, partition: u32) -> Option<String> {
        self.shared
            .partition_addrs(partition)
            .map(|(c, _)| format!("http://{c}/"))
    }

    /// `http://127.0.0.1:<port>/` of a partition's CardDAV host.
    pub fn partition_carddav_url(&self, partition: u32) -> Option<String> {
        self.shared
            .partition_addrs(partition)
            .map(|(_, c)| format!("http://{c}/"))
    }

    /// The SMTP submission role (STARTTLS), e.g. `smtp://127.0.0.1:41003`.
    pub fn smtp_url(&self) -> String {
        match read(&self.shared.listeners).smtp {
            Some(a) => format!("smtp://{a}"),
            None => String::new(),
        }
    }

    /// The PEM of the CA that signed the mail roles' certificate (for a client's trust store).
    pub fn ca_pem(&self) -> String {
        self.shared.tls.ca_pem.clone()
    }

    /// The `AppleHttpServer/<hash>` token of this run.
    pub fn server_hash(&self) -> &str {
        &self.shared.server_hash
    }

    /// Serve the control API over HTTP on `127.0.0.1` (an ephemeral port); returns its
    /// base URL, e.g. `http://127.0.0.1:41005/`. For scripts in other processes.
    pub async fn serve_control(&self) -> std::io::Result<String> {
        let addr =
            control_http::serve(self.control(), SocketAddr::new(self.shared.bind_ip, 0)).await?;
        Ok(format!("http://{addr}/"))
    }

    pub fn control(&self) -> Control {
        Control {
            shared: self.shared.clone(),
        }
    }

    /// Stop every listener and open connection.
    pub async fn stop(self) {
        let _ = self.shared.shutdown.send(true);
        let tasks: Vec<_> = lock(&self.shared.tasks).drain(..).collect();
        for t in tasks {
            let _ = t.await;
        }
    }
}
