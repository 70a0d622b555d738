//! Limits against one hostile device: how many connections an address may hold (every front
//! end together), and the global budget for request bodies held in memory at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::server::throttle::address_key;

/// How often, at most, a refused connection is logged (the log must not become the flood).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Open connections per address (IPv6 per /64, IPv4-mapped as IPv4), shared by the HTTP,
/// HTTPS, IMAP and SMTP listeners: one device, one allowance.
#[derive(Debug)]
pub struct ConnLimit {
    per_ip: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// Milliseconds since `start` of the last refusal logged, plus one (0: none yet).
    last_log: AtomicU64,
    start: Instant,
    refused: AtomicU64,
}

/// One counted connection; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnSlot {
    key: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
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
        let key = address_key(ip);
        let held = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            let n = open.entry(key).or_insert(0);
            if *n < self.per_ip {
                *n += 1;
                return Some(ConnSlot {
                    key,
                    open: self.open.clone(),
                });
            }
            *n
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
        open.get(&address_key(ip)).copied().unwrap_or(0)
    }

    /// Connections refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The bytes of request bodies held at once, all clients together.
#[derive(Debug)]
pub struct BodyBudget {
    limit: usize,
    used: Arc<AtomicUsize>,
    refused: AtomicU64,
}

/// Bytes reserved from the [`BodyBudget`]; dropping it gives them back.
#[derive(Debug)]
pub struct BodyReservation {
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl BodyBudget {
    pub fn new(limit: usize) -> BodyBudget {
        BodyBudget {
            limit,
            used: Arc::new(AtomicUsize::new(0)),
            refused: AtomicU64::new(0),
        }
    }

    /// Reserve `bytes` (possibly 0), or `None` if they do not fit now.
    pub fn try_reserve(&self, bytes: usize) -> Option<BodyReservation> {
        let mut r = BodyReservation {
            used: self.used.clone(),
            bytes: 0,
        };
        if r.try_grow(self.limit, bytes) {
            Some(r)
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Reserve `more` bytes on top of `r`; `false` (and nothing reserved) if they do not fit.
    pub fn try_grow(&self, r: &mut BodyReservation, more: usize) -> bool {
        let ok = r.try_grow(self.limit, more);
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bodies refused since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

impl BodyReservation {
    fn try_grow(&mut self, limit: usize, more: usize) -> bool {
        if more == 0 {
            return true;
        }
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|n| *n <= limit)
            })
            .is_ok();
        if ok {
            self.bytes += more;
        }
        ok
    }

    /// Bytes this reservation holds.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for BodyReservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.used.fetch_sub(self.bytes, Ordering::AcqRel);
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
        // IPv6 per /64.
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2::2".parse().unwrap();
        let v6c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _x = l.try_open(v6a, "http").unwrap();
        let _y = l.try_open(v6b, "http").unwrap();
        assert!(l.try_open(v6a, "http").is_none());
        assert!(l.try_open(v6c, "http").is_some());
    }

    #[test]
    fn body_budget_reserves_grows_and_gives_back() {
        let b = BodyBudget::new(100);
        let mut r1 = b.try_reserve(60).unwrap();
        assert!(b.try_reserve(50).is_none());
        assert!(b.try_grow(&mut r1, 40));
        assert!(!b.try_grow(&mut r1, 1));
        assert_eq!((r1.bytes(), b.used()), (100, 100));
        let empty = b.try_reserve(0).unwrap();
        drop(r1);
        assert_eq!(b.used(), 0);
        let r2 = b.try_reserve(100).unwrap();
        drop((r2, empty));
        assert_eq!(b.used(), 0);
        assert_eq!(b.refused(), 2);
    }
}
