//! Slowing wrong-password attempts without ever locking anyone out, and summarising them in
//! the log.
//!
//! Checks that need argon2 take turns per address ([`FailureThrottle::turn`]): one at a
//! time, first come first served, so parallel connections from one address gain nothing.
//! A failure delays the *next* turn of the address it came from by 100 ms per recent
//! failure from that address or on that login name, whichever is more, at most 1 s; the
//! delay is paid even if the client hangs up, and never by other addresses or by correct
//! passwords already remembered. 15 minutes without a failure forget an address or name.
//! IPv6 addresses count per /64 (one host usually owns the whole prefix); IPv4-mapped IPv6
//! addresses count as their IPv4 address. Failures are logged at most once per address per
//! minute, with a count; only names of existing logins are named (an unknown name may be a
//! password typed into the wrong field). Memory is bounded: at most 10 000 addresses and
//! 10 000 names are remembered, the ones with the oldest failure are forgotten first.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Delay added per recent failure.
pub const STEP: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(1);
/// Failures are forgotten after this long without another.
pub const DECAY: Duration = Duration::from_secs(15 * 60);
/// Most addresses (and, separately, names) remembered.
pub const MAX_ENTRIES: usize = 10_000;
/// At most one log line per address per this long.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Login names listed in one summary line.
const LOG_NAMES: usize = 5;
/// Longest login name (longer ones are never valid, and are counted under their prefix).
const NAME_KEY_MAX: usize = 65;

#[derive(Debug, Clone, Copy)]
struct Count {
    failures: u32,
    last_failure: Instant,
}

impl Count {
    fn bump(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_failure) >= DECAY {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = now;
    }

    fn delay(&self, now: Instant) -> Duration {
        if now.saturating_duration_since(self.last_failure) < DECAY {
            STEP.saturating_mul(self.failures).min(MAX_DELAY)
        } else {
            Duration::ZERO
        }
    }
}

/// What one address did wrong, and what is still to be logged about it.
#[derive(Debug)]
struct Address {
    count: Count,
    /// Its next turn starts no earlier than this.
    next_free: Instant,
    /// When its last log line was written.
    logged: Option<Instant>,
    /// Failures not yet logged, the existing logins they named, how many named none, and
    /// the front ends they came through.
    pending: u32,
    names: BTreeSet<String>,
    unknown: u32,
    fronts: BTreeSet<&'static str>,
}

type Gates = Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>;

/// Per-address turns and failure counts, per-name failure counts. Share it behind an
/// `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct FailureThrottle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    addresses: Mutex<HashMap<IpAddr, Address>>,
    names: Mutex<HashMap<String, Count>>,
    gates: Gates,
    max_entries: usize,
}

/// An address's turn to check a password: while it is held, no other check from that
/// address starts. Move it into the work it guards so that a client hanging up does not
/// end the turn early, and count a failure with [`Turn::failed`] before it ends, so that
/// the next turn pays the delay.
#[derive(Debug)]
pub struct Turn {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    key: IpAddr,
    inner: Arc<Inner>,
}

impl Turn {
    /// Count a wrong password in this turn, for the login name `name` (`known`: a login of
    /// that name exists), and set the delay of the address's next turn. Logging is left
    /// to [`FailureThrottle::log_due`] (on the caller's side) or [`FailureThrottle::flush_logs`].
    pub fn failed(&self, name: &str, known: bool, front: &'static str) {
        self.inner
            .count_failure(self.key, name, known, front, Instant::now());
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut gates = lock(&self.inner.gates);
        drop(self.guard.take());
        if gates
            .get(&self.key)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            gates.remove(&self.key);
        }
    }
}

impl Default for FailureThrottle {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the maps consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Make room for one more entry: forget the decayed ones, then the oldest.
fn make_room<K: Clone + Eq + Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    now: Instant,
    last: impl Fn(&V) -> Instant,
) {
    if map.len() < max {
        return;
    }
    map.retain(|_, v| now.saturating_duration_since(last(v)) < DECAY);
    if map.len() >= max {
        let oldest = map
            .iter()
            .min_by_key(|(_, v)| last(v))
            .map(|(k, _)| k.clone());
        if let Some(oldest) = oldest {
            map.remove(&oldest);
        }
    }
}

impl FailureThrottle {
    pub fn new() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }

    fn with_capacity(max_entries: usize) -> Self {
        FailureThrottle {
            inner: Arc::new(Inner {
                addresses: Mutex::new(HashMap::new()),
                names: Mutex::new(HashMap::new()),
                gates: Mutex::new(HashMap::new()),
                max_entries: max_entries.max(1),
            }),
        }
    }

    /// Wait for `ip`'s turn to check a password: after the checks from that address that
    /// came first, and after the delay its last failure set.
    pub async fn turn(&self, ip: IpAddr) -> Turn {
        let key = address_key(ip);
        let gate = lock(&self.inner.gates).entry(key).or_default().clone();
        let turn = Turn {
            guard: Some(gate.lock_owned().await),
            key,
            inner: self.inner.clone(),
        };
        let next_free = lock(&self.inner.addresses).get(&key).map(|a| a.next_free);
        if let Some(t) = next_free {
            tokio::time::sleep_until(t.into()).await;
        }
        turn
    }

    /// How many password checks from `ip`'s address wait for their turn or are in it now.
    pub fn queued(&self, ip: IpAddr) -> usize {
        lock(&self.inner.gates)
            .get(&address_key(ip))
            .map_or(0, |g| Arc::strong_count(g).saturating_sub(1))
    }

    /// How long the next turn of `ip` would wait now (zero for a good record).
    pub fn delay_for(&self, ip: IpAddr) -> Duration {
        self.delay_at(ip, Instant::now())
    }

    /// Count a wrong password from `ip` outside a turn (see [`Turn::failed`]) and log it.
    pub fn record_failure(&self, ip: IpAddr, name: &str, known: bool, front: &'static str) {
        let now = Instant::now();
        self.inner
            .count_failure(address_key(ip), name, known, front, now);
        self.log_due_at(ip, now);
    }

    /// Log `ip`'s failures not logged yet, if its last line is a minute old (at most one
    /// line per address per minute).
    pub fn log_due(&self, ip: IpAddr) {
        self.log_due_at(ip, Instant::now());
    }

    /// Log what the last minute's failures of every address have not yet logged. Call it
    /// every few seconds.
    pub fn flush_logs(&self) {
        self.flush_at(Instant::now());
    }

    /// How many addresses are remembered.
    pub fn len(&self) -> usize {
        lock(&self.inner.addresses).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn log_due_at(&self, ip: IpAddr, now: Instant) {
        let key = address_key(ip);
        let mut map = lock(&self.inner.addresses);
        if let Some(a) = map.get_mut(&key) {
            if a.pending > 0
                && a.logged
                    .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY)
            {
                log_pending(key, a, now);
            }
        }
    }

    fn flush_at(&self, now: Instant) {
        let mut map = lock(&self.inner.addresses);
        for (key, a) in map.iter_mut() {
            if a.pending > 0
                && a.logged
                    .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY)
            {
                log_pending(*key, a, now);
            }
        }
    }

    fn delay_at(&self, ip: IpAddr, now: Instant) -> Duration {
        lock(&self.inner.addresses)
            .get(&address_key(ip))
            .map(|a| a.next_free.saturating_duration_since(now))
            .unwrap_or(Duration::ZERO)
    }

    #[cfg(test)]
    fn failure_at(&self, ip: IpAddr, name: &str, known: bool, front: &'static str, now: Instant) {
        self.inner
            .count_failure(address_key(ip), name, known, front, now);
        self.log_due_at(ip, now);
    }
}

impl Inner {
    fn name_delay(&self, name: &str, now: Instant) -> Duration {
        let key = name_key(name);
        let mut names = lock(&self.names);
        if !names.contains_key(key) {
            make_room(&mut names, self.max_entries, now, |c| c.last_failure);
        }
        let c = names.entry(key.to_string()).or_insert(Count {
            failures: 0,
            last_failure: now,
        });
        c.bump(now);
        c.delay(now)
    }

    fn count_failure(
        &self,
        key: IpAddr,
        name: &str,
        known: bool,
        front: &'static str,
        now: Instant,
    ) {
        let name_delay = self.name_delay(name, now);
        let mut map = lock(&self.addresses);
        if !map.contains_key(&key) {
            make_room(&mut map, self.max_entries, now, |a| a.count.last_failure);
        }
        let a = map.entry(key).or_insert_with(|| Address {
            count: Count {
                failures: 0,
                last_failure: now,
            },
            next_free: now,
            logged: None,
            pending: 0,
            names: BTreeSet::new(),
            unknown: 0,
            fronts: BTreeSet::new(),
        });
        a.count.bump(now);
        a.next_free = now + a.count.delay(now).max(name_delay).min(MAX_DELAY);
        a.pending = a.pending.saturating_add(1);
        if known {
            if a.names.len() < LOG_NAMES {
                a.names.insert(name.to_string());
            }
        } else {
            a.unknown = a.unknown.saturating_add(1);
        }
        a.fronts.insert(front);
    }
}

/// One summary line for what `a` has not logged yet.
fn log_pending(ip: IpAddr, a: &mut Address, now: Instant) {
    let failures = a.pending;
    let logins = a.names.iter().cloned().collect::<Vec<_>>().join(" ");
    let unknown = a.unknown;
    let fronts = a.fronts.iter().copied().collect::<Vec<_>>().join(" ");
    let recent = a.count.failures;
    a.logged = Some(now);
    a.pending = 0;
    a.names.clear();
    a.unknown = 0;
    a.fronts.clear();
    if failures >= 10 {
        tracing::warn!(%ip, failures, recent, logins = %logins, unknown_names = unknown, fronts = %fronts,
            "wrong local login or password, repeatedly (summarised: at most one line per address per minute)");
    } else {
        tracing::info!(%ip, failures, recent, logins = %logins, unknown_names = unknown, fronts = %fronts,
            "wrong local login or password (summarised: at most one line per address per minute)");
    }
}

/// The map key of a login name: at most [`NAME_KEY_MAX`] bytes.
fn name_key(name: &str) -> &str {
    if name.len() <= NAME_KEY_MAX {
        return name;
    }
    let mut end = NAME_KEY_MAX;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// The key an address is counted under: IPv4 as is (also when IPv4-mapped), IPv6 by its
/// /64. Shared with the connection limit ([`crate::limits`]).
pub fn address_key(ip: IpAddr) -> IpAddr {
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
    fn delay_grows_caps_and_stays_with_its_address() {
        let t = FailureThrottle::new();
        let now = Instant::now();
        assert_eq!(t.delay_at(ip(1), now), Duration::ZERO);
        t.failure_at(ip(1), "a", false, "http", now);
        assert_eq!(t.delay_at(ip(1), now), Duration::from_millis(100));
        t.failure_at(ip(1), "b", false, "http", now);
        assert_eq!(t.delay_at(ip(1), now), Duration::from_millis(200));
        for i in 0..50 {
            t.failure_at(ip(1), &format!("n{i}"), false, "http", now);
        }
        assert_eq!(t.delay_at(ip(1), now), MAX_DELAY);
        // Other addresses are not affected.
        assert_eq!(t.delay_at(ip(2), now), Duration::ZERO);
    }

    #[test]
    fn a_name_under_attack_slows_only_the_failing_addresses() {
        let t = FailureThrottle::new();
        let now = Instant::now();
        // Many addresses, one failure each, all on "phone".
        for i in 0..8 {
            t.failure_at(ip(10 + i), "phone", true, "http", now);
        }
        // The eighth address pays the name's delay although it failed once.
        assert_eq!(t.delay_at(ip(17), now), Duration::from_millis(800));
        // An address that never failed waits for nothing.
        assert_eq!(t.delay_at(ip(1), now), Duration::ZERO);
        // Never more than the cap.
        for i in 0..40 {
            t.failure_at(ip(100 + i), "phone", true, "http", now);
        }
        assert_eq!(t.delay_at(ip(139), now), MAX_DELAY);
    }

    #[test]
    fn decays_after_quiet_period() {
        let t = FailureThrottle::new();
        let start = Instant::now();
        for _ in 0..5 {
            t.failure_at(ip(1), "x", false, "http", start);
        }
        let later = start + DECAY + Duration::from_secs(1);
        assert_eq!(t.delay_at(ip(1), later), Duration::ZERO);
        // A failure after the quiet period starts counting afresh (address and name).
        t.failure_at(ip(1), "x", false, "http", later);
        assert_eq!(t.delay_at(ip(1), later), Duration::from_millis(100));
    }

    #[test]
    fn memory_is_bounded_and_oldest_evicted() {
        let t = FailureThrottle::with_capacity(3);
        let start = Instant::now();
        for i in 0..3u8 {
            t.failure_at(
                ip(i),
                &format!("n{i}"),
                false,
                "http",
                start + Duration::from_secs(u64::from(i)),
            );
        }
        t.failure_at(ip(9), "n9", false, "http", start + Duration::from_secs(10));
        assert_eq!(t.len(), 3);
        assert_eq!(lock(&t.inner.names).len(), 3);
        let map = lock(&t.inner.addresses);
        assert!(!map.contains_key(&ip(0)), "oldest evicted");
        assert!(map.contains_key(&ip(1)) && map.contains_key(&ip(9)));
        drop(map);

        let big = FailureThrottle::new();
        for i in 0..(MAX_ENTRIES as u32 + 500) {
            big.record_failure(
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)),
                &format!("name-{i}"),
                false,
                "http",
            );
        }
        assert_eq!(big.len(), MAX_ENTRIES);
        assert_eq!(lock(&big.inner.names).len(), MAX_ENTRIES);
        // Long names are counted under a bounded key.
        let long = "é".repeat(1000);
        assert!(name_key(&long).len() <= NAME_KEY_MAX);
    }

    #[test]
    fn ipv6_counts_per_prefix_and_mapped_as_v4() {
        let t = FailureThrottle::new();
        let now = Instant::now();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        t.failure_at(a, "x", false, "http", now);
        t.failure_at(b, "y", false, "http", now);
        assert_eq!(t.delay_at(a, now), Duration::from_millis(200));
        assert_eq!(t.delay_at(other, now), Duration::ZERO);

        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        t.failure_at(mapped, "z", false, "http", now);
        assert_eq!(t.delay_at(ip(7), now), STEP);
    }

    #[test]
    fn logs_are_summarised_per_address_per_minute() {
        let t = FailureThrottle::new();
        let start = Instant::now();
        t.failure_at(ip(1), "phone", true, "http", start);
        {
            let map = lock(&t.inner.addresses);
            let a = &map[&ip(1)];
            assert_eq!(
                (a.pending, a.logged),
                (0, Some(start)),
                "the first is logged"
            );
        }
        for i in 0..49 {
            let name = if i % 2 == 0 { "phone" } else { "guess" };
            t.failure_at(
                ip(1),
                name,
                name == "phone",
                "imap",
                start + Duration::from_secs(1),
            );
        }
        // Nothing more within the minute, even when flushed.
        t.flush_at(start + Duration::from_secs(30));
        {
            let map = lock(&t.inner.addresses);
            let a = &map[&ip(1)];
            assert_eq!(a.pending, 49);
            assert_eq!(a.unknown, 24);
            assert_eq!(a.names.iter().collect::<Vec<_>>(), vec!["phone"]);
        }
        // After it, one summary line takes them all.
        t.flush_at(start + LOG_EVERY);
        let map = lock(&t.inner.addresses);
        let a = &map[&ip(1)];
        assert_eq!((a.pending, a.logged), (0, Some(start + LOG_EVERY)));
        assert!(a.names.is_empty() && a.fronts.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_one_at_a_time_in_order_and_pay_the_delay() {
        let t = Arc::new(FailureThrottle::new());
        let first = t.turn(ip(1)).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (t, order) = (t.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let turn = t.turn(ip(1)).await;
                order.lock().unwrap().push(i);
                drop(turn);
            }));
            tokio::task::yield_now().await;
        }
        // Another address is not held up.
        let other = t.turn(ip(2)).await;
        drop(other);
        assert!(order.lock().unwrap().is_empty());
        t.record_failure(ip(1), "x", false, "http");
        let released = tokio::time::Instant::now();
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2]);
        assert!(released.elapsed() >= STEP, "the failure's delay was paid");
        assert!(
            lock(&t.inner.gates).is_empty(),
            "gates are forgotten when unused"
        );
    }
}
