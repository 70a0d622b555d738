//! The local CA's name constraints and fingerprint. A CA the bridge makes may vouch only for
//! what the bridge serves (its names, `localhost`, `.local`/`.lan`/`.home.arpa`/`.internal`,
//! loopback and private addresses), so whoever steals `ca-key.pem` cannot mint a certificate
//! for `idmsa.apple.com` that the household's devices would accept.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// DNS subtrees every new CA permits (each with all its subdomains).
const DNS: &[&str] = &["localhost", "local", "lan", "home.arpa", "internal"];
/// Address ranges every new CA permits: loopback, RFC 1918, link-local, CGNAT (Tailscale and
/// other overlay networks hand these out), IPv6 loopback, unique-local and link-local.
const NETS: &[(&str, u8)] = &[
    ("127.0.0.0", 8),
    ("10.0.0.0", 8),
    ("172.16.0.0", 12),
    ("192.168.0.0", 16),
    ("169.254.0.0", 16),
    ("100.64.0.0", 10),
    ("::1", 128),
    ("fc00::", 7),
    ("fe80::", 10),
];

/// What a device owner compares, and whether the CA is limited to the bridge's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaInfo {
    /// SHA-256 of the certificate (DER), upper-case hex pairs joined by ':' as browsers,
    /// phones and `openssl x509 -fingerprint -sha256` show it.
    pub sha256: String,
    /// The CA carries name constraints.
    pub constrained: bool,
}

/// The SHA-256 fingerprint of a DER certificate, `AB:CD:…`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Fingerprint and constraint of a CA certificate (DER).
pub fn info(der: &[u8]) -> CaInfo {
    CaInfo {
        sha256: fingerprint(der),
        // Limited where it matters: DNS names (a CA that constrained only other name types
        // would still vouch for any site).
        constrained: permitted(der)
            .is_some_and(|trees| trees.iter().any(|t| matches!(t, Subtree::Dns(_)))),
    }
}

/// The name constraints for a new CA that must also cover `names` (the server certificate's
/// names): the fixed subtrees above, plus any of `names` outside them (the machine's name, a
/// `public_url` host or a public address it was configured with), exactly.
pub fn for_new_ca(names: &[String]) -> rcgen::NameConstraints {
    let mut dns: Vec<String> = DNS.iter().map(|d| d.to_string()).collect();
    let mut nets: Vec<(IpAddr, u8)> = NETS
        .iter()
        .filter_map(|(a, p)| a.parse().ok().map(|a| (a, *p)))
        .collect();
    for n in names {
        let n = n.trim_end_matches('.').to_ascii_lowercase();
        match n.parse::<IpAddr>() {
            Ok(ip) if !nets.iter().any(|(net, p)| in_net(ip, *net, *p)) => {
                nets.push((ip, if ip.is_ipv4() { 32 } else { 128 }))
            }
            Ok(_) => {}
            Err(_) if !dns.iter().any(|d| dns_within(&n, d)) => dns.push(n),
            Err(_) => {}
        }
    }
    let mut permitted: Vec<rcgen::GeneralSubtree> = dns
        .into_iter()
        .map(rcgen::GeneralSubtree::DnsName)
        .collect();
    for (ip, prefix) in nets {
        let subnet = match ip {
            IpAddr::V4(v4) => rcgen::CidrSubnet::from_v4_prefix(v4.octets(), prefix),
            IpAddr::V6(v6) => rcgen::CidrSubnet::from_v6_prefix(v6.octets(), prefix),
        };
        permitted.push(rcgen::GeneralSubtree::IpAddress(subnet));
    }
    rcgen::NameConstraints {
        permitted_subtrees: permitted,
        excluded_subtrees: Vec::new(),
    }
}

/// A permitted subtree read back from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subtree {
    Dns(String),
    /// Address and mask bytes (4 + 4 or 16 + 16).
    Ip(Vec<u8>, Vec<u8>),
}

/// The permitted subtrees of a CA certificate (DER); `None` when it has no name constraints
/// (or cannot be read).
fn permitted(der: &[u8]) -> Option<Vec<Subtree>> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    for ext in cert.extensions() {
        if let ParsedExtension::NameConstraints(nc) = ext.parsed_extension() {
            let subtrees = nc.permitted_subtrees.as_deref().unwrap_or_default();
            return Some(
                subtrees
                    .iter()
                    .filter_map(|s| match &s.base {
                        GeneralName::DNSName(d) => Some(Subtree::Dns(d.to_ascii_lowercase())),
                        GeneralName::IPAddress(b) if b.len() == 8 || b.len() == 32 => {
                            let (a, m) = b.split_at(b.len() / 2);
                            Some(Subtree::Ip(a.to_vec(), m.to_vec()))
                        }
                        _ => None,
                    })
                    .collect(),
            );
        }
    }
    None
}

/// Whether a server certificate signed by this CA (DER) may carry `name`: always for a CA
/// without constraints; otherwise the name must fall in a permitted subtree of its kind.
pub fn permits(ca_der: &[u8], name: &str) -> bool {
    let Some(subtrees) = permitted(ca_der) else {
        return true;
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    match name.parse::<IpAddr>() {
        Ok(ip) => {
            let octets = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            let ip_trees: Vec<_> = subtrees
                .iter()
                .filter_map(|s| match s {
                    Subtree::Ip(a, m) => Some((a, m)),
                    _ => None,
                })
                .collect();
            ip_trees.is_empty()
                || ip_trees.iter().any(|(a, m)| {
                    a.len() == octets.len()
                        && octets
                            .iter()
                            .zip(a.iter().zip(m.iter()))
                            .all(|(o, (a, m))| o & m == a & m)
                })
        }
        Err(_) => {
            let dns: Vec<_> = subtrees
                .iter()
                .filter_map(|s| match s {
                    Subtree::Dns(d) => Some(d),
                    _ => None,
                })
                .collect();
            dns.is_empty() || dns.iter().any(|d| dns_within(&name, d))
        }
    }
}

fn dns_within(name: &str, tree: &str) -> bool {
    let tree = tree.trim_start_matches('.');
    name == tree || name.ends_with(&format!(".{tree}"))
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_der(constraints: Option<rcgen::NameConstraints>) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        p.name_constraints = constraints;
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_new_ca_permits_the_bridges_names_and_private_addresses_only() {
        let names: Vec<String> = [
            "localhost",
            "nas",
            "bridge.example.org",
            "203.0.113.9",
            "192.168.1.5",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let der = ca_der(Some(for_new_ca(&names)));
        assert!(info(&der).constrained);
        for ok in [
            "localhost",
            "nas",
            "nas.local",
            "x.lan",
            "box.home.arpa",
            "bridge.example.org",
            "203.0.113.9",
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "100.100.1.1",
            "::1",
            "fd00::5",
            "fe80::1",
        ] {
            assert!(permits(&der, ok), "{ok}");
        }
        for bad in [
            "idmsa.apple.com",
            "caldav.icloud.com",
            "example.org",
            "evil-bridge.example.org",
            "local.evil.com",
            "203.0.113.10",
            "8.8.8.8",
            "2001:db8::1",
            "172.32.0.1",
        ] {
            assert!(!permits(&der, bad), "{bad}");
        }
        let old = ca_der(None);
        assert!(!info(&old).constrained);
        assert!(permits(&old, "idmsa.apple.com"));
    }

    #[test]
    fn fingerprints_look_like_openssls() {
        let f = fingerprint(b"abc");
        assert_eq!(f.len(), 32 * 3 - 1);
        assert!(f.starts_with("BA:78:16:BF:"), "{f}");
    }
}
