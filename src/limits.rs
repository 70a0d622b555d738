//! Limits against one hostile device: how many connections an address may hold (every front
//! end together), and the global budget for request bodies held in memory at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::throttle::address_key;

/// Request extension set by the listener: the address the request came from.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// How often, at most, a refused connection is logged (the log must not become the flood).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Open connections per address (IPv4-mapped as IPv4), shared by the HTTP, HTTPS, IMAP and
/// SMTP listeners: one device, one allowance. An IPv6 address counts on its own, since every
/// device of a home LAN lives in the same /64; the /64 as a whole gets
/// [`PREFIX_FACTOR`] allowances, so a device that makes up addresses in its prefix gains
/// only that many.
#[derive(Debug)]
pub struct ConnLimit {
    per_ip: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Milliseconds since `start` of the last refusal logged, plus one (0: none yet).
    last_log: AtomicU64,
    start: Instant,
    refused: AtomicU64,
}

/// How many allowances an IPv6 /64 gets together.
pub const PREFIX_FACTOR: usize = 4;

/// One counted connection; dropping it frees the slot (and its /64's, for IPv6).
#[derive(Debug)]
pub struct ConnSlot {
    keys: Vec<IpAddr>,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for key in &self.keys {
            if let Some(n) = open.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    open.remove(key);
                }
            }
        }
    }
}

/// The counters an address uses, with their limits: the address itself, and for IPv6 its /64.
fn conn_keys(ip: IpAddr, per_ip: usize) -> Vec<(IpAddr, usize)> {
    let own = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let prefix = address_key(own);
    if prefix == own {
        vec![(own, per_ip)]
    } else {
        vec![
            (own, per_ip),
            (prefix, per_ip.saturating_mul(PREFIX_FACTOR)),
        ]
    }
}

impl ConnLimit {
    pub fn new(per_ip: usize) -> ConnLimit {
        ConnLimit {
            per_ip: per_ip.max(1),
            open: Arc::default(),
            last_log: AtomicU64::new(0),
            start: Instant::now(),
            refused: AtomicU64::new(0),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it already holds the most
    /// allowed (the caller refuses the connection at once; nothing waits).
    pub fn try_open(&self, ip: IpAddr, front: &'static str) -> Option<ConnSlot> {
        let keys = conn_keys(ip, self.per_ip);
        let held = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let full = keys
                .iter()
                .find(|(k, limit)| open.get(k).copied().unwrap_or(0) >= *limit);
            match full {
                None => {
                    for (k, _) in &keys {
                        *open.entry(*k).or_insert(0) += 1;
                    }
                    return Some(ConnSlot {
                        keys: keys.into_iter().map(|(k, _)| k).collect(),
                        open: self.open.clone(),
                    });
                }
                Some((k, _)) => open.get(k).copied().unwrap_or(0),
            }
        };
        self.refused.fetch_add(1, Ordering::Relaxed);
        let now = self.start.elapsed().as_millis() as u64 + 1;
        let last = self.last_log.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= REFUSAL_LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                %ip,
                front,
                held,
                refused_so_far = self.refused.load(Ordering::Relaxed),
                "refusing connections: this address already holds the most allowed (limits.max_connections_per_ip); logged at most once a minute"
            );
        }
        None
    }

    /// Connections `ip` holds now.
    pub fn held(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let own = conn_keys(ip, self.per_ip)[0].0;
        open.get(&own).copied().unwrap_or(0)
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The bytes of request bodies held at once: all clients together at most `limit`, one
/// address (counted as for connections) at most a quarter of that, or one largest body if
/// that is more, so that a single device cannot fill the budget and turn every other
/// client's requests away.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    per_ip: usize,
    held: Arc<Mutex<Held>>,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Bytes reserved from the [`BodyBudget`]; dropping it gives them back.
#[derive(Debug)]
pub struct BodyReservation {
    held: Arc<Mutex<Held>>,
    key: Option<IpAddr>,
    bytes: usize,
}

impl BodyBudget {
    /// A budget of `limit` bytes, where one address may hold a quarter of it or
    /// `max_body`, whichever is more.
    pub fn new(limit: usize, max_body: usize) -> BodyBudget {
        BodyBudget {
            limit,
            per_ip: (limit / 4).max(max_body).min(limit),
            held: Arc::default(),
            refused: AtomicU64::new(0),
        }
    }

    /// Reserve `bytes` (possibly 0) for a body from `client` (unknown: counted in the total
    /// only), or `None` if they do not fit now.
    pub fn try_reserve(&self, client: Option<IpAddr>, bytes: usize) -> Option<BodyReservation> {
        let mut r = BodyReservation {
            held: self.held.clone(),
            key: client.map(address_key),
            bytes: 0,
        };
        self.try_grow(&mut r, bytes).then_some(r)
    }

    /// Reserve `more` bytes on top of `r`; `false` (and nothing more reserved) if they do
    /// not fit.
    pub fn try_grow(&self, r: &mut BodyReservation, more: usize) -> bool {
        if more == 0 {
            return true;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let total = held.total.checked_add(more).filter(|n| *n <= self.limit);
        let mine = match r.key {
            Some(k) => held
                .by_ip
                .get(&k)
                .copied()
                .unwrap_or(0)
                .checked_add(more)
                .filter(|n| *n <= self.per_ip)
                .map(Some),
            None => Some(None),
        };
        let (Some(total), Some(mine)) = (total, mine) else {
            drop(held);
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        held.total = total;
        if let (Some(k), Some(n)) = (r.key, mine) {
            held.by_ip.insert(k, n);
        }
        r.bytes += more;
        true
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
    }

    /// Bodies refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl BodyReservation {
    /// Bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.total = held.total.saturating_sub(self.bytes);
        if let Some(k) = self.key {
            if let Some(n) = held.by_ip.get_mut(&k) {
                *n = n.saturating_sub(self.bytes);
                if *n == 0 {
                    held.by_ip.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_address_and_freed_on_drop() {
        let l = ConnLimit::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.try_open(a, "http").unwrap();
        let s2 = l.try_open(mapped, "imap").unwrap();
        assert!(l.try_open(a, "http").is_none(), "mapped counts as IPv4");
        assert!(
            l.try_open(b, "http").is_some(),
            "other addresses unaffected"
        );
        assert_eq!(l.refused(), 1);
        drop(s1);
        let s3 = l.try_open(a, "smtp").unwrap();
        drop((s2, s3));
        assert_eq!(l.held(a), 0);
        assert!(l.open.lock().unwrap().is_empty());
        // IPv6: each address its own allowance (a home LAN's devices share one /64), the /64
        // together PREFIX_FACTOR of them.
        let v6 = |i: u16| IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, i));
        let mut held = vec![l.try_open(v6(1), "http").unwrap()];
        held.push(l.try_open(v6(1), "http").unwrap());
        assert!(l.try_open(v6(1), "http").is_none());
        for i in 2..=PREFIX_FACTOR as u16 {
            held.push(l.try_open(v6(i), "http").unwrap());
            held.push(l.try_open(v6(i), "http").unwrap());
        }
        assert!(
            l.try_open(v6(99), "http").is_none(),
            "the /64 is full: {PREFIX_FACTOR} allowances"
        );
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.try_open(other, "http").is_some());
        drop(held);
        assert!(l.try_open(v6(99), "http").is_some());
    }

    #[test]
    fn body_budget_reserves_grows_and_gives_back() {
        let b = BodyBudget::new(100, 10);
        let mut r1 = b.try_reserve(None, 60).unwrap();
        assert!(b.try_reserve(None, 50).is_none());
        assert!(b.try_grow(&mut r1, 40));
        assert!(!b.try_grow(&mut r1, 1));
        assert_eq!((r1.bytes(), b.used()), (100, 100));
        let empty = b.try_reserve(None, 0).unwrap();
        drop(r1);
        assert_eq!(b.used(), 0);
        let r2 = b.try_reserve(None, 100).unwrap();
        drop((r2, empty));
        assert_eq!(b.used(), 0);
        assert_eq!(b.refused(), 2);
    }

    #[test]
    fn one_address_holds_at_most_its_share() {
        let b = BodyBudget::new(100, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        let r1 = b.try_reserve(Some(a), 20).unwrap();
        assert!(b.try_reserve(Some(mapped), 6).is_none(), "a quarter each");
        let r2 = b.try_reserve(Some(mapped), 5).unwrap();
        let r3 = b.try_reserve(Some(other), 25).unwrap();
        drop(r1);
        let r4 = b.try_reserve(Some(a), 20).unwrap();
        drop((r2, r3, r4));
        assert_eq!(b.used(), 0);
        assert!(b.held.lock().unwrap().by_ip.is_empty());
        // One largest body is always allowed, if the total has room.
        let big = BodyBudget::new(100, 60);
        assert!(big.try_reserve(Some(a), 60).is_some());
    }
}
