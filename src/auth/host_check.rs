//! Which `Host` names the operator's pages answer to: the bridge's own names and addresses
//! only, so that a web page elsewhere cannot read them through DNS rebinding (a name of the
//! attacker's that resolves to the bridge's address).

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::ServerConfig;

/// How often, at most, the machine's addresses are read again when an unknown address
/// arrives (DHCP can hand out a new one while the bridge runs).
const REFRESH: Duration = Duration::from_secs(30);

/// The names and addresses the bridge answers its pages for.
#[derive(Debug)]
pub struct OwnNames {
    fixed: HashSet<String>,
    /// The machine's interface addresses, read at start and again now and then.
    addresses: Mutex<(HashSet<IpAddr>, Instant)>,
}

impl OwnNames {
    /// `localhost`, the machine's host name (also with `.local`, `.lan`, `.home.arpa`), the
    /// listen addresses, the host of `public_url`, and every address of this machine.
    pub fn new(server: &ServerConfig) -> OwnNames {
        let mut fixed: HashSet<String> = crate::tls::server_names(server)
            .into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect();
        fixed.insert("localhost".into());
        if let Some(h) = crate::tls::hostname() {
            let short = h.split('.').next().unwrap_or(&h).to_string();
            for suffix in ["", ".local", ".lan", ".home.arpa"] {
                fixed.insert(format!("{short}{suffix}"));
            }
            fixed.insert(h);
        }
        OwnNames {
            fixed,
            addresses: Mutex::new((interface_addresses(), Instant::now())),
        }
    }

    /// Does a request's `Host` (name or address, with or without port) name this bridge?
    /// A request without one (HTTP/1.0 tools) is let through: browsers always send it.
    pub fn allows(&self, host: Option<&str>) -> bool {
        let Some(host) = host else {
            return true;
        };
        let Some(name) = host_part(host) else {
            return false;
        };
        if let Ok(ip) = name.parse::<IpAddr>() {
            let ip = canonical(ip);
            if crate::net::is_loopback(ip)
                || ip.is_unspecified()
                || self.fixed.contains(&ip.to_string())
            {
                return true;
            }
            return self.is_own_address(ip);
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.fixed.contains(&name) || name.ends_with(".localhost")
    }

    fn is_own_address(&self, ip: IpAddr) -> bool {
        let mut g = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.contains(&ip) {
            return true;
        }
        if g.1.elapsed() >= REFRESH {
            *g = (interface_addresses(), Instant::now());
            return g.0.contains(&ip);
        }
        false
    }
}

/// The host of a `Host` header value without its port (`[::1]:8008` → `::1`).
fn host_part(host: &str) -> Option<&str> {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return Some(&rest[..end]);
    }
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        Some(_) => return None,
        None => host,
    };
    (!name.is_empty()).then_some(name)
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn interface_addresses() -> HashSet<IpAddr> {
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| canonical(i.ip()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> OwnNames {
        let mut cfg = crate::config::Config::defaults();
        cfg.server.public_url = Some("https://calendar.example.org/".parse().unwrap());
        OwnNames::new(&cfg.server)
    }

    #[test]
    fn own_names_and_addresses_pass_others_do_not() {
        let n = names();
        for ok in [
            "localhost",
            "localhost:8008",
            "127.0.0.1:8008",
            "127.0.0.2",
            "[::1]:8008",
            "[::ffff:127.0.0.1]",
            "calendar.example.org",
            "CALENDAR.example.org.:443",
        ] {
            assert!(n.allows(Some(ok)), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8008",
            "192.0.2.1",
            "[2001:db8::1]",
            "localhost.evil.example",
            "127.0.0.1:80:80",
            "[::1]x",
            "",
        ] {
            assert!(!n.allows(Some(bad)), "{bad}");
        }
        assert!(n.allows(None));
    }

    #[test]
    fn the_machine_name_and_its_lan_spellings_pass() {
        let Some(h) = crate::tls::hostname() else {
            return;
        };
        let n = names();
        let short = h.split('.').next().unwrap_or(&h).to_string();
        assert!(n.allows(Some(&h)));
        assert!(n.allows(Some(&format!("{short}.local:8008"))));
        assert!(n.allows(Some(&format!("{short}.home.arpa"))));
        assert!(!n.allows(Some(&format!("{short}.evil.example"))));
    }
}
