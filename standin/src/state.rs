//! Shared server state: accounts, switches, listener addresses by role, the request log.

use crate::accounts::{lock, read, write, Accounts};
use crate::config::Service;
use crate::switches::Switches;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, RwLock};
use std::time::Instant;
use tokio::sync::watch;

/// The role of a listener (spec C1). IMAP and SMTP roles are a later task; they will be added
/// here (`Imap`, `Smtp`) with their own accept loops in `server.rs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    FrontCal,
    FrontCard,
    PartCal(u32),
    PartCard(u32),
}

impl Role {
    pub fn is_cal(self) -> bool {
        matches!(self, Role::FrontCal | Role::PartCal(_))
    }

    pub fn partition(self) -> Option<u32> {
        match self {
            Role::PartCal(p) | Role::PartCard(p) => Some(p),
            _ => None,
        }
    }

    pub fn service(self) -> Service {
        if self.is_cal() {
            Service::Calendar
        } else {
            Service::Contacts
        }
    }

    /// Name used in logs, e.g. `front-cal`, `part-card/42`.
    pub fn label(self) -> String {
        match self {
            Role::FrontCal => "front-cal".into(),
            Role::FrontCard => "front-card".into(),
            Role::PartCal(p) => format!("part-cal/{p}"),
            Role::PartCard(p) => format!("part-card/{p}"),
        }
    }
}

/// One request as the stand-in saw it (C11 `request_log`).
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedRequest {
    pub method: String,
    /// The `Host` header (empty if absent).
    pub host: String,
    /// Path and query as sent.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Response status (0 when the connection was dropped without an answer).
    pub status: u16,
    /// `front-cal`, `front-card`, `part-cal/42`, `part-card/42`.
    pub role: String,
}

/// Addresses of the bound HTTP roles.
#[derive(Clone, Debug, Default)]
pub struct Listeners {
    pub front_cal: Option<SocketAddr>,
    pub front_card: Option<SocketAddr>,
    /// The IMAP role (plaintext).
    pub imap: Option<SocketAddr>,
    /// partition -> (cal, card)
    pub partitions: BTreeMap<u32, (SocketAddr, SocketAddr)>,
    /// The SMTP submission role (C10).
    pub smtp: Option<SocketAddr>,
}

/// The fixed-window request counter for `rate.limit_after`.
#[derive(Debug)]
pub struct RateWindow {
    pub started: Instant,
    pub count: u64,
}

/// Maximum kept log entries (oldest dropped first).
pub const LOG_CAP: usize = 100_000;

/// Everything the listeners share.
pub struct Shared {
    pub accounts: Accounts,
    pub switches: RwLock<Switches>,
    pub server_hash: String,
    pub instance_hex: String,
    pub log: Mutex<VecDeque<LoggedRequest>>,
    pub rate: Mutex<RateWindow>,
    pub listeners: RwLock<Listeners>,
    /// Bumped on every change of the switches (requests held by `hold.path` look again).
    pub switch_changes: watch::Sender<u64>,
    /// Requests held by `hold.path` now.
    pub held: std::sync::atomic::AtomicUsize,
    /// Mirrors `partition.unreachable` for the accept loops.
    pub unreachable: watch::Sender<bool>,
    /// Bumped on every change of any mailbox (IDLE sessions look again).
    pub mail_changes: watch::Sender<u64>,
    /// Set to true on stop.
    pub shutdown: watch::Sender<bool>,
    pub runtime: tokio::runtime::Handle,
    /// Accept-loop tasks, awaited on stop.
    pub tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Address the listeners bind to (127.0.0.1).
    pub bind_ip: std::net::IpAddr,
    /// The CA and server certificate of the mail roles.
    pub tls: crate::tls::StandinTls,
    /// Bytes of message data the SMTP role has received so far (counted as they arrive, so
    /// tests can see a message stream in before it ends).
    pub smtp_data_bytes: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub fn switches(&self) -> Switches {
        read(&self.switches).clone()
    }

    pub fn update_switches(&self, f: impl FnOnce(&mut Switches)) {
        let unreachable = {
            let mut s = write(&self.switches);
            f(&mut s);
            s.partition_unreachable
        };
        self.switch_changes.send_modify(|n| *n = n.wrapping_add(1));
        self.unreachable.send_if_modified(|v| {
            let changed = *v != unreachable;
            *v = unreachable;
            changed
        });
    }

    pub fn push_log(&self, entry: LoggedRequest) {
        let mut log = lock(&self.log);
        if log.len() >= LOG_CAP {
            log.pop_front();
        }
        log.push_back(entry);
    }

    pub fn partition_addrs(&self, p: u32) -> Option<(SocketAddr, SocketAddr)> {
        read(&self.listeners).partitions.get(&p).copied()
    }

    /// `http://127.0.0.1:<part-cal>/<dsid>/calendars/` for the account's partition.
    pub fn cal_home_url(&self, partition: u32, dsid: &str) -> String {
        match self.partition_addrs(partition) {
            Some((cal, _)) => format!("http://{cal}/{dsid}/calendars/"),
            None => format!("/{dsid}/calendars/"),
        }
    }

    /// `http://127.0.0.1:<part-card>/<dsid>/carddavhome/`.
    pub fn card_home_url(&self, partition: u32, dsid: &str) -> String {
        match self.partition_addrs(partition) {
            Some((_, card)) => format!("http://{card}/{dsid}/carddavhome/"),
            None => format!("/{dsid}/carddavhome/"),
        }
    }

    /// `http://127.0.0.1:<part-card>` (photo URIs).
    pub fn card_base(&self, partition: u32) -> String {
        match self.partition_addrs(partition) {
            Some((_, card)) => format!("http://{card}"),
            None => String::new(),
        }
    }

    /// Base URL of a role's listener.
    pub fn role_base(&self, role: Role) -> Option<String> {
        let l = read(&self.listeners);
        let a = match role {
            Role::FrontCal => l.front_cal,
            Role::FrontCard => l.front_card,
            Role::PartCal(p) => l.partitions.get(&p).map(|x| x.0),
            Role::PartCard(p) => l.partitions.get(&p).map(|x| x.1),
        }?;
        Some(format!("http://{a}"))
    }
}
