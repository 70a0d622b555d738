//! Slowing repeated wrong-password failures from one address, without ever locking out.
//!
//! Each failure from an address adds 100 ms to the delay its next attempts wait (at most
//! 1 s); 15 minutes without a failure forget the address, and a success resets it at once.
//! IPv6 addresses count per /64 (one host usually owns the whole prefix); IPv4-mapped IPv6
//! addresses count as their IPv4 address. Memory is bounded: at most 10 000 addresses are
//! remembered, the ones with the oldest failure are forgotten first.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Delay added per recent failure.
pub const STEP: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Failures are forgotten after this long without another.
pub const DECAY: Duration = Duration::from_secs(15 * 60);
/// Most addresses remembered.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
}

/// Per-address failure counts. Share it behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct FailureThrottle {
    entries: Mutex<HashMap<IpAddr, Entry>>,
    max_entries: usize,
}

impl Default for FailureThrottle {
    fn default() -> Self {
        Self::new()
    }
}

impl FailureThrottle {
    pub fn new() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }

    fn with_capacity(max_entries: usize) -> Self {
        FailureThrottle {
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        }
    }

    /// How long to wait before checking a login from `ip` (zero for a good record).
    pub fn delay_for(&self, ip: IpAddr) -> Duration {
        self.delay_at(ip, Instant::now())
    }

    /// Count a wrong password from `ip`.
    pub fn record_failure(&self, ip: IpAddr) {
        self.failure_at(ip, Instant::now());
    }

    /// A correct password from `ip`: forget its failures.
    pub fn record_success(&self, ip: IpAddr) {
        self.lock().remove(&key(ip));
    }

    /// How many addresses are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        // The map stays consistent even if a holder panicked: every update is one insert.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn delay_at(&self, ip: IpAddr, now: Instant) -> Duration {
        let map = self.lock();
        match map.get(&key(ip)) {
            Some(e) if now.saturating_duration_since(e.last_failure) < DECAY => {
                STEP.saturating_mul(e.failures).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    fn failure_at(&self, ip: IpAddr, now: Instant) {
        let k = key(ip);
        let mut map = self.lock();
        if let Some(e) = map.get_mut(&k) {
            if now.saturating_duration_since(e.last_failure) >= DECAY {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            return;
        }
        if map.len() >= self.max_entries {
            map.retain(|_, e| now.saturating_duration_since(e.last_failure) < DECAY);
        }
        if map.len() >= self.max_entries {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_failure)
                .map(|(ip, _)| *ip);
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(
            k,
            Entry {
                failures: 1,
                last_failure: now,
            },
        );
    }
}

/// The map key of an address: IPv4 as is (also when IPv4-mapped), IPv6 by its /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn delay_grows_caps_and_resets_on_success() {
        let t = FailureThrottle::new();
        assert_eq!(t.delay_for(ip(1)), Duration::ZERO);
        t.record_failure(ip(1));
        assert_eq!(t.delay_for(ip(1)), Duration::from_millis(100));
        t.record_failure(ip(1));
        assert_eq!(t.delay_for(ip(1)), Duration::from_millis(200));
        for _ in 0..50 {
            t.record_failure(ip(1));
        }
        assert_eq!(t.delay_for(ip(1)), Duration::from_secs(1));
        // Other addresses are not affected.
        assert_eq!(t.delay_for(ip(2)), Duration::ZERO);
        t.record_success(ip(1));
        assert_eq!(t.delay_for(ip(1)), Duration::ZERO);
        assert!(t.is_empty());
    }

    #[test]
    fn decays_after_quiet_period() {
        let t = FailureThrottle::new();
        let start = Instant::now();
        for _ in 0..5 {
            t.failure_at(ip(1), start);
        }
        assert_eq!(
            t.delay_at(ip(1), start + Duration::from_secs(60)),
            Duration::from_millis(500)
        );
        let later = start + DECAY + Duration::from_secs(1);
        assert_eq!(t.delay_at(ip(1), later), Duration::ZERO);
        // A failure after the quiet period starts counting afresh.
        t.failure_at(ip(1), later);
        assert_eq!(t.delay_at(ip(1), later), Duration::from_millis(100));
    }

    #[test]
    fn memory_is_bounded_and_oldest_evicted() {
        let t = FailureThrottle::with_capacity(3);
        let start = Instant::now();
        for i in 0..3u8 {
            t.failure_at(ip(i), start + Duration::from_secs(u64::from(i)));
        }
        t.failure_at(ip(9), start + Duration::from_secs(10));
        assert_eq!(t.len(), 3);
        let now = start + Duration::from_secs(11);
        assert_eq!(t.delay_at(ip(0), now), Duration::ZERO, "oldest evicted");
        assert_eq!(t.delay_at(ip(1), now), STEP);
        assert_eq!(t.delay_at(ip(9), now), STEP);

        let big = FailureThrottle::new();
        for i in 0..(MAX_ENTRIES as u32 + 500) {
            big.record_failure(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(big.len(), MAX_ENTRIES);
    }

    #[test]
    fn ipv6_counts_per_prefix_and_mapped_as_v4() {
        let t = FailureThrottle::new();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        t.record_failure(a);
        t.record_failure(b);
        assert_eq!(t.delay_for(a), Duration::from_millis(200));
        assert_eq!(t.delay_for(other), Duration::ZERO);

        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        t.record_failure(mapped);
        assert_eq!(t.delay_for(ip(7)), STEP);
    }
}
