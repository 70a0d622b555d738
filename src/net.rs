//! The one loopback rule of every front end (HTTP, IMAP, SMTP) and of the plaintext check:
//! an address is loopback when it is 127.0.0.0/8, `::1`, or an IPv4-mapped IPv6 form of
//! 127.0.0.0/8 (`::ffff:127.0.0.1`, which a dual-stack listener reports for IPv4 peers).

use std::net::IpAddr;

/// Is `ip` a loopback address (IPv4-mapped IPv6 included)?
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_in_every_spelling() {
        for ok in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:127.1.2.3",
        ] {
            assert!(is_loopback(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "0.0.0.0",
            "::",
            "192.168.1.2",
            "::ffff:192.168.1.2",
            "fe80::1",
            "10.0.0.1",
        ] {
            assert!(!is_loopback(no.parse().unwrap()), "{no}");
        }
    }
}
