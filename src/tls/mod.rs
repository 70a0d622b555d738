//! TLS for every front end (HTTPS on `tls_listen`, IMAPS, IMAP and SMTP STARTTLS) and for the
//! mail upstreams.
//!
//! The server certificate lives in `certs_dir`. When nothing is there, the bridge makes a
//! local CA (`ca.pem` + `ca-key.pem`, ten years) and a server certificate signed by it
//! (`server.pem`, the leaf followed by the CA, + `server-key.pem`); devices trust `ca.pem`
//! once. While `ca.pem` and `ca-key.pem` are there the bridge keeps `server.pem` current: it
//! issues a new one when it is missing, does not match its key, expires within 30 days or
//! lacks one of the bridge's names. A `server.pem` + `server-key.pem` without `ca.pem` (the
//! operator's own, or a self-signed one from an older version) is used as it is, never
//! rewritten. Keys are written with mode 0600, every file atomically (temporary file +
//! rename).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::ServerConfig;
use crate::files::write_atomic_mode;

pub mod constraints;

pub use constraints::CaInfo;

/// The local CA's certificate in `certs_dir`: what clients trust.
pub const CA_FILE: &str = "ca.pem";
/// The local CA's private key.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The server certificate chain (leaf first) in `certs_dir`.
pub const CERT_FILE: &str = "server.pem";
/// Its private key.
pub const KEY_FILE: &str = "server-key.pem";

/// How long the local CA is valid.
const CA_DAYS: i64 = 3650;
/// How long a server certificate is valid: Apple's platforms refuse more than 825 days.
const LEAF_DAYS: i64 = 824;
/// A server certificate that expires sooner than this is replaced at start.
const RENEW_BEFORE_DAYS: u64 = 30;

/// Where the server certificate in `certs_dir` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Signed by the bridge's local CA; clients trust `ca`.
    LocalCa {
        /// The CA certificate clients must trust.
        ca: PathBuf,
        /// The CA was made just now.
        ca_created: bool,
        /// The server certificate was (re)issued just now.
        issued: bool,
    },
    /// `server.pem` and `server-key.pem` without a `ca.pem`: the operator's own (or a
    /// self-signed one from an older version), used as they are.
    Provided,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The machine's host name, lower case, if it is a usable DNS name.
pub fn hostname() -> Option<String> {
    let from_file = |p: &str| std::fs::read_to_string(p).ok();
    let name = from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())?;
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    dns_name_ok(&name).then_some(name)
}

fn dns_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.parse::<IpAddr>().is_err()
        && matches!(ServerName::try_from(name), Ok(ServerName::DnsName(_)))
}

/// The names the server certificate must carry: `localhost`, `127.0.0.1`, `::1`, the host
/// name (and `<host>.local` for a short one), every listen address that is not a wildcard
/// (and, when one is, every LAN address of this machine), and the host of `public_url`.
pub fn server_names(server: &ServerConfig) -> Vec<String> {
    names_of(server, true)
}

/// [`server_names`] without the addresses found on the machine's interfaces: what the
/// configuration itself names (a new CA's constraints cover these; interface addresses
/// outside the private ranges, such as a global IPv6 address that changes, are not fixed
/// into a ten-year CA).
pub fn configured_names(server: &ServerConfig) -> Vec<String> {
    names_of(server, false)
}

fn names_of(server: &ServerConfig, with_interfaces: bool) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let mut add = |n: String| {
        if !names.contains(&n) {
            names.push(n);
        }
    };
    if let Some(h) = hostname() {
        if !h.contains('.') {
            add(format!("{h}.local"));
        }
        add(h);
    }
    let listens = [
        Some(server.listen),
        server.tls_listen,
        server.imap_listen,
        server.imaps_listen,
        server.smtp_listen,
    ];
    let mut wildcard = false;
    for addr in listens.into_iter().flatten() {
        if addr.ip().is_unspecified() {
            wildcard = true;
        } else {
            add(addr.ip().to_string());
        }
    }
    // Listening on every address: devices on the LAN may use any of this machine's
    // addresses (often an IP, not a name), so the certificate names them all.
    if wildcard && with_interfaces {
        for ip in interface_addresses() {
            add(ip.to_string());
        }
    }
    if let Some(u) = &server.public_url {
        match u.host() {
            Some(url::Host::Domain(d)) if dns_name_ok(&d.to_ascii_lowercase()) => {
                add(d.to_ascii_lowercase())
            }
            Some(url::Host::Ipv4(ip)) => add(ip.to_string()),
            Some(url::Host::Ipv6(ip)) => add(ip.to_string()),
            _ => {}
        }
    }
    names
}

/// This machine's addresses other devices can reach: not loopback, not link-local.
fn interface_addresses() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .filter(|i| !i.is_loopback() && !i.is_link_local())
        .map(|i| i.ip())
        .filter(|ip| !ip.is_unspecified())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// Make sure `server.certs_dir` holds a usable server certificate (see the module docs).
pub fn ensure(server: &ServerConfig) -> Result<CertSource, String> {
    ensure_names(
        &server.certs_dir,
        &server_names(server),
        &configured_names(server),
    )
}

struct Files {
    ca: PathBuf,
    ca_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Files {
        Files {
            ca: dir.join(CA_FILE),
            ca_key: dir.join(CA_KEY_FILE),
            cert: dir.join(CERT_FILE),
            key: dir.join(KEY_FILE),
        }
    }
}

/// [`ensure`] for a directory and the names the certificate must carry (all of them
/// configured ones).
pub fn ensure_in(dir: &Path, names: &[String]) -> Result<CertSource, String> {
    ensure_names(dir, names, names)
}

/// Say each warning about the CA once per process (`ensure` runs for every TLS listener).
fn warn_once(flag: &std::sync::atomic::AtomicBool, warn: impl FnOnce()) {
    if !flag.swap(true, std::sync::atomic::Ordering::Relaxed) {
        warn();
    }
}

static WARNED_UNCONSTRAINED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
static WARNED_OUTSIDE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// [`ensure_in`] where `configured` (a subset of `names`) is what the configuration names; a
/// new CA's constraints cover those, and only those are worth a warning when an existing CA
/// cannot vouch for them.
fn ensure_names(dir: &Path, names: &[String], configured: &[String]) -> Result<CertSource, String> {
    let f = Files::in_dir(dir);
    if !f.ca.exists() {
        return match (f.cert.exists(), f.key.exists()) {
            (true, true) => Ok(CertSource::Provided),
            (true, false) => Err(format!(
                "{} has no private key: {} is missing",
                f.cert.display(),
                f.key.display()
            )),
            _ => {
                create_ca_and_leaf(dir, &f, names, configured)?;
                Ok(CertSource::LocalCa {
                    ca: f.ca,
                    ca_created: true,
                    issued: true,
                })
            }
        };
    }
    let ca_certs = read_certs(&f.ca)?;
    // Names an existing CA may not vouch for are left out of the server certificate (it
    // would fail on every device); a CA from before name constraints vouches for anything.
    let names = match ca_certs.first() {
        Some(ca) => {
            let info = constraints::info(ca);
            if !info.constrained {
                warn_once(&WARNED_UNCONSTRAINED, || {
                    tracing::warn!(
                        ca = %f.ca.display(),
                        "the local CA has no name constraints: whoever copies its key can make certificates for any site that devices trusting it accept; to move to a constrained CA, {}",
                        MOVE_TO_CONSTRAINED
                    )
                });
            }
            let (ok, outside): (Vec<String>, Vec<String>) = names
                .iter()
                .cloned()
                .partition(|n| constraints::permits(ca, n));
            let told: Vec<String> = outside
                .into_iter()
                .filter(|n| configured.contains(n))
                .collect();
            if !told.is_empty() {
                warn_once(&WARNED_OUTSIDE, || {
                    tracing::warn!(
                        ca = %f.ca.display(),
                        names = %told.join(", "),
                        "these names of the bridge are outside the local CA's name constraints and are left out of the server certificate; devices using them will see a certificate error; to include them, {}",
                        MOVE_TO_CONSTRAINED
                    )
                });
            }
            ok
        }
        None => names.to_vec(),
    };
    let names = names.as_slice();
    let mut roots = rustls::RootCertStore::empty();
    for c in &ca_certs {
        roots
            .add(c.clone())
            .map_err(|e| format!("{} is not a usable CA certificate: {e}", f.ca.display()))?;
    }
    let current = if f.cert.exists() && f.key.exists() {
        Some(load_pair(&f.cert, &f.key))
    } else {
        None
    };
    let problem = match &current {
        None => Some(format!("{} is missing", f.cert.display())),
        Some(Err(e)) => Some(e.clone()),
        Some(Ok((chain, key))) => leaf_problem(chain, key, roots, names),
    };
    let Some(problem) = problem else {
        return Ok(CertSource::LocalCa {
            ca: f.ca,
            ca_created: false,
            issued: false,
        });
    };
    if !f.ca_key.exists() {
        if let Some(Ok(_)) = current {
            tracing::warn!(
                cert = %f.cert.display(),
                reason = %problem,
                "the server certificate should be replaced, but {} is missing; using it as it is",
                f.ca_key.display()
            );
            return Ok(CertSource::LocalCa {
                ca: f.ca,
                ca_created: false,
                issued: false,
            });
        }
        return Err(format!(
            "{problem}, and without {} the bridge cannot issue a new server certificate; move {} away to start a new local CA, or put your own {CERT_FILE} and {KEY_FILE} there without a {CA_FILE}",
            f.ca_key.display(),
            f.ca.display()
        ));
    }
    let ca_key_pem = std::fs::read_to_string(&f.ca_key)
        .map_err(|e| format!("cannot read {}: {e}", f.ca_key.display()))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| format!("{} holds no usable private key: {e}", f.ca_key.display()))?;
    let first = ca_certs
        .first()
        .ok_or_else(|| format!("{} holds no certificate", f.ca.display()))?;
    let issuer = rcgen::Issuer::from_ca_cert_der(first, ca_key)
        .map_err(|e| format!("{} cannot be read as a CA: {e}", f.ca.display()))?;
    let ca_pem = std::fs::read_to_string(&f.ca)
        .map_err(|e| format!("cannot read {}: {e}", f.ca.display()))?;
    issue_leaf(&f, &issuer, &ca_pem, names)?;
    tracing::info!(cert = %f.cert.display(), reason = %problem, "issued a new server certificate from the local CA");
    Ok(CertSource::LocalCa {
        ca: f.ca,
        ca_created: false,
        issued: true,
    })
}

/// Why the bridge's own server certificate must be replaced, if it must.
fn leaf_problem(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    roots: rustls::RootCertStore,
    names: &[String],
) -> Option<String> {
    let (ee, rest) = chain.split_first()?;
    if let Err(e) =
        rustls::sign::CertifiedKey::from_der(chain.to_vec(), key.clone_key(), &provider())
    {
        return Some(format!("{CERT_FILE} does not match {KEY_FILE} ({e})"));
    }
    let verifier = match rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        provider(),
    )
    .build()
    {
        Ok(v) => v,
        Err(e) => return Some(format!("{CA_FILE} cannot verify {CERT_FILE} ({e})")),
    };
    let soon = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(RENEW_BEFORE_DAYS * 86_400);
    let soon = UnixTime::since_unix_epoch(soon);
    for n in names {
        let Ok(name) = ServerName::try_from(n.as_str()) else {
            continue;
        };
        if let Err(e) = verifier.verify_server_cert(ee, rest, &name, &[], soon) {
            return Some(format!(
                "{CERT_FILE} is not valid for {n} for the next {RENEW_BEFORE_DAYS} days ({e})"
            ));
        }
    }
    None
}

fn random_serial() -> rcgen::SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f;
    b[0] |= 0x01;
    rcgen::SerialNumber::from_slice(&b)
}

fn dn(cn: &str) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "icloud-bridge");
    dn.push(rcgen::DnType::CommonName, cn);
    dn
}

fn validity(params: &mut rcgen::CertificateParams, days: i64) {
    params.not_before = crate::dates::midnight_in_days(-1);
    params.not_after = crate::dates::midnight_in_days(days - 1);
}

fn gen_err(e: rcgen::Error) -> String {
    format!("cannot generate a TLS certificate: {e}")
}

fn create_ca_and_leaf(
    dir: &Path,
    f: &Files,
    names: &[String],
    configured: &[String],
) -> Result<(), String> {
    let host = hostname().unwrap_or_else(|| "localhost".into());
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params.distinguished_name = dn(&format!("icloud-bridge local CA {host}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial());
    params.name_constraints = Some(constraints::for_new_ca(configured));
    validity(&mut params, CA_DAYS);
    let key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let key_pem = key.serialize_pem();
    let ca = rcgen::CertifiedIssuer::self_signed(params, key).map_err(gen_err)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write(&f.ca_key, &key_pem, 0o600)?;
    let ca_pem = ca.pem();
    write(&f.ca, &ca_pem, 0o644)?;
    // Interface addresses outside the constraints (a global IPv6 address) are left out.
    let names: Vec<String> = names
        .iter()
        .filter(|n| constraints::permits(ca.der(), n))
        .cloned()
        .collect();
    issue_leaf(f, &ca, &ca_pem, &names)?;
    tracing::info!(
        ca = %f.ca.display(),
        "created a local CA and a server certificate; let devices trust the CA file for HTTPS and IMAPS"
    );
    Ok(())
}

fn issue_leaf(
    f: &Files,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    ca_pem: &str,
    names: &[String],
) -> Result<(), String> {
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(gen_err)?;
    let cn = hostname().unwrap_or_else(|| "localhost".into());
    params.distinguished_name = dn(&format!("icloud-bridge {cn}"));
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, LEAF_DAYS);
    let key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, issuer).map_err(gen_err)?;
    let chain = format!("{}{}\n", cert.pem(), ca_pem.trim_end());
    write(&f.key, &key.serialize_pem(), 0o600)?;
    write(&f.cert, &chain, 0o644)
}

fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    write_atomic_mode(path, text.as_bytes(), mode)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn load_pair(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = read_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    Ok((certs, key))
}

/// How to replace the local CA with one limited to the bridge's names (for log lines and the
/// status page).
pub const MOVE_TO_CONSTRAINED: &str = "stop the bridge, move ca.pem, ca-key.pem, server.pem and server-key.pem out of certs_dir, start it again: a new CA limited to the bridge's names is made; then let every device trust the new ca.pem (and remove the old one)";

/// The local CA in `certs_dir`, if there is one: its fingerprint and whether it carries name
/// constraints.
pub fn ca_info(certs_dir: &Path) -> Option<CaInfo> {
    let certs = read_certs(&certs_dir.join(CA_FILE)).ok()?;
    certs.first().map(|c| constraints::info(c))
}

/// The server configuration for the mail front ends (STARTTLS and implicit TLS): ensures the
/// certificate (see [`ensure`]) and loads it.
pub fn server_config(server: &ServerConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    build_server_config(server, Vec::new())
}

/// The server configuration for HTTPS: as [`server_config`], offering h2 and HTTP/1.1 by ALPN.
pub fn https_config(server: &ServerConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    build_server_config(server, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
}

fn build_server_config(
    server: &ServerConfig,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    ensure(server)?;
    let f = Files::in_dir(&server.certs_dir);
    let (certs, key) = load_pair(&f.cert, &f.key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{} and {} cannot be used: {e}",
                f.cert.display(),
                f.key.display()
            )
        })?;
    cfg.alpn_protocols = alpn;
    Ok(Arc::new(cfg))
}

/// The certificates of an `upstream.ca_file`: at least one, or why not (naming the file). A
/// file without any would add no trust root, and every TLS upstream would then fail with an
/// unknown issuer far from the cause.
pub fn ca_certificates(ca: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no certificate (a PEM block starting -----BEGIN CERTIFICATE-----)",
            ca.display()
        ));
    }
    Ok(certs)
}

/// The client configuration for `imaps://` upstreams: the webpki roots, plus `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca_file {
        let certs = ca_certificates(ca).map_err(|e| format!("upstream.ca_file {e}"))?;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("upstream.ca_file {}: {e}", ca.display()))?;
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// The name the upstream certificate must carry.
pub fn server_name(url: &url::Url) -> Result<ServerName<'static>, std::io::Error> {
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok(ServerName::IpAddress(IpAddr::V4(ip).into())),
        Some(url::Host::Ipv6(ip)) => Ok(ServerName::IpAddress(IpAddr::V6(ip).into())),
        Some(url::Host::Domain(d)) => {
            ServerName::try_from(d.to_string()).map_err(|e| bad(e.to_string()))
        }
        None => Err(bad("the upstream URL has no host".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec()
    }

    fn server_cfg(dir: &Path) -> ServerConfig {
        let mut s = crate::config::Config::defaults().server;
        s.certs_dir = dir.to_path_buf();
        s
    }

    /// A TLS handshake over an in-memory pipe: the client trusts only `trust`; returns the
    /// negotiated ALPN protocol.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        trust: &Path,
        name: &str,
    ) -> Result<Option<Vec<u8>>, std::io::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for c in read_certs(trust).unwrap() {
            roots.add(c).unwrap();
        }
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server);
        let srv = tokio::spawn(async move { acceptor.accept(b).await.map(|_| ()) });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from(name.to_string()).unwrap();
        let r = connector.connect(name, a).await;
        let _ = srv.await;
        r.map(|s| s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    }

    #[cfg(unix)]
    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn the_local_ca_signs_a_server_certificate_clients_can_verify() {
        let dir = tempfile::tempdir().unwrap();
        let src = ensure_in(dir.path(), &names()).unwrap();
        let ca = dir.path().join(CA_FILE);
        assert_eq!(
            src,
            CertSource::LocalCa {
                ca: ca.clone(),
                ca_created: true,
                issued: true
            }
        );
        #[cfg(unix)]
        {
            assert_eq!(mode(&dir.path().join(CA_KEY_FILE)), 0o600);
            assert_eq!(mode(&dir.path().join(KEY_FILE)), 0o600);
            assert_eq!(mode(&ca), 0o644);
        }
        // The chain is the leaf, then the CA.
        let chain = read_certs(&dir.path().join(CERT_FILE)).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1], read_certs(&ca).unwrap()[0]);
        // Valid from yesterday's midnight (UTC) for whole days.
        for (der, days) in [(&chain[0], LEAF_DAYS), (&chain[1], CA_DAYS)] {
            use x509_parser::prelude::FromDer;
            let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
            let v = cert.validity();
            let at = |d: i64| crate::dates::midnight_in_days(d).unix_timestamp();
            assert_eq!(v.not_before.timestamp(), at(-1));
            assert_eq!(v.not_after.timestamp(), at(days - 1));
        }
        // A client that trusts only ca.pem accepts it, by name and by address, with ALPN.
        let https = https_config(&server_cfg(dir.path())).unwrap();
        for n in ["localhost", "127.0.0.1", "::1"] {
            let alpn = handshake(https.clone(), &ca, n).await.unwrap();
            assert_eq!(alpn.as_deref(), Some(&b"h2"[..]), "{n}");
        }
        // ... but not for a name it does not carry, nor when it trusts another CA.
        handshake(https.clone(), &ca, "example.org")
            .await
            .unwrap_err();
        let other = tempfile::tempdir().unwrap();
        ensure_in(other.path(), &names()).unwrap();
        handshake(https, &other.path().join(CA_FILE), "localhost")
            .await
            .unwrap_err();
        // The mail configuration offers no ALPN.
        let mail = server_config(&server_cfg(dir.path())).unwrap();
        assert_eq!(handshake(mail, &ca, "localhost").await.unwrap(), None);
    }

    #[test]
    fn a_second_start_keeps_the_files_and_a_missing_name_renews_only_the_leaf() {
        let dir = tempfile::tempdir().unwrap();
        ensure_in(dir.path(), &names()).unwrap();
        let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
        let (ca, ca_key, cert, key) = (
            read(CA_FILE),
            read(CA_KEY_FILE),
            read(CERT_FILE),
            read(KEY_FILE),
        );
        let again = ensure_in(dir.path(), &names()).unwrap();
        assert!(matches!(
            again,
            CertSource::LocalCa {
                ca_created: false,
                issued: false,
                ..
            }
        ));
        assert_eq!(read(CERT_FILE), cert);
        assert_eq!(read(KEY_FILE), key);
        // A new listen address: a new leaf from the same CA.
        let mut more = names();
        more.push("192.168.7.7".into());
        more.push("bridge.lan".into());
        let src = ensure_in(dir.path(), &more).unwrap();
        assert!(matches!(
            src,
            CertSource::LocalCa {
                ca_created: false,
                issued: true,
                ..
            }
        ));
        assert_eq!(read(CA_FILE), ca);
        assert_eq!(read(CA_KEY_FILE), ca_key);
        assert_ne!(read(CERT_FILE), cert);
        let roots = || {
            let mut r = rustls::RootCertStore::empty();
            r.add(read_certs(&dir.path().join(CA_FILE)).unwrap()[0].clone())
                .unwrap();
            r
        };
        let (chain, k) =
            load_pair(&dir.path().join(CERT_FILE), &dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(leaf_problem(&chain, &k, roots(), &more), None);
        // A leaf whose key was replaced (a crash between the two writes) is re-issued.
        std::fs::write(
            dir.path().join(KEY_FILE),
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let (chain, k) =
            load_pair(&dir.path().join(CERT_FILE), &dir.path().join(KEY_FILE)).unwrap();
        assert!(leaf_problem(&chain, &k, roots(), &more).is_some());
        ensure_in(dir.path(), &more).unwrap();
        let (chain, k) =
            load_pair(&dir.path().join(CERT_FILE), &dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(leaf_problem(&chain, &k, roots(), &more), None);
        // Names outside the CA's constraints (a public address or domain added later) are
        // left out, once: the next start finds nothing to re-issue.
        let mut outside = more.clone();
        outside.push("192.0.2.7".into());
        outside.push("bridge.example".into());
        ensure_in(dir.path(), &outside).unwrap();
        let again = ensure_in(dir.path(), &outside).unwrap();
        assert!(matches!(again, CertSource::LocalCa { issued: false, .. }));
        let (chain, k) =
            load_pair(&dir.path().join(CERT_FILE), &dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(leaf_problem(&chain, &k, roots(), &more), None);
        // A deleted server.pem comes back, signed by the same CA.
        std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        ensure_in(dir.path(), &names()).unwrap();
        assert_eq!(read(CA_FILE), ca);
        let (chain, k) =
            load_pair(&dir.path().join(CERT_FILE), &dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(leaf_problem(&chain, &k, roots(), &names()), None);
    }

    #[test]
    fn the_operators_own_certificate_is_used_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let own = rcgen::generate_simple_self_signed(vec!["bridge.lan".into()]).unwrap();
        let cert = own.cert.pem();
        let key = own.signing_key.serialize_pem();
        std::fs::write(dir.path().join(CERT_FILE), &cert).unwrap();
        std::fs::write(dir.path().join(KEY_FILE), &key).unwrap();
        assert_eq!(
            ensure_in(dir.path(), &names()).unwrap(),
            CertSource::Provided
        );
        server_config(&server_cfg(dir.path())).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CERT_FILE)).unwrap(),
            cert
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(),
            key
        );
        assert!(!dir.path().join(CA_FILE).exists());
        assert!(!dir.path().join(CA_KEY_FILE).exists());
        // A certificate without its key is an error that names the key file.
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let err = ensure_in(dir.path(), &names()).unwrap_err();
        assert!(err.contains(KEY_FILE), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CERT_FILE)).unwrap(),
            cert
        );
    }

    #[test]
    fn broken_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        ensure_in(dir.path(), &names()).unwrap();
        let cert = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        std::fs::write(dir.path().join(CA_FILE), "garbage").unwrap();
        let err = ensure_in(dir.path(), &names()).unwrap_err();
        assert!(
            err.contains(&dir.path().join(CA_FILE).display().to_string()),
            "{err}"
        );
        let err = server_config(&server_cfg(dir.path())).unwrap_err();
        assert!(err.contains(CA_FILE), "{err}");
        // Nothing was rewritten on the way.
        assert_eq!(std::fs::read(dir.path().join(CERT_FILE)).unwrap(), cert);
        // A corrupt CA key is named when a new leaf is needed.
        let dir = tempfile::tempdir().unwrap();
        ensure_in(dir.path(), &names()).unwrap();
        std::fs::write(dir.path().join(CA_KEY_FILE), "garbage").unwrap();
        std::fs::remove_file(dir.path().join(CERT_FILE)).unwrap();
        let err = ensure_in(dir.path(), &names()).unwrap_err();
        assert!(err.contains(CA_KEY_FILE), "{err}");
        // Without the CA key a missing leaf cannot be made again: say so.
        std::fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
        let err = ensure_in(dir.path(), &names()).unwrap_err();
        assert!(
            err.contains(CA_KEY_FILE) && err.contains(CERT_FILE),
            "{err}"
        );
        // The operator's own broken files are named too.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "garbage").unwrap();
        let err = server_config(&server_cfg(dir.path())).unwrap_err();
        assert!(err.contains(CERT_FILE), "{err}");
        client_config(Some(&dir.path().join("missing.pem"))).unwrap_err();
        // A file without a certificate adds no root: refused, not taken silently.
        let err = client_config(Some(&dir.path().join(CERT_FILE))).unwrap_err();
        assert!(err.contains("holds no certificate"), "{err}");
        client_config(None).unwrap();
    }

    #[test]
    fn names_cover_loopback_and_configured_addresses() {
        let mut s = crate::config::Config::defaults().server;
        s.listen = "0.0.0.0:8008".parse().unwrap();
        s.tls_listen = Some("192.0.2.1:8443".parse().unwrap());
        s.imaps_listen = Some("[::]:1993".parse().unwrap());
        s.public_url = Some("https://Bridge.Example:8443/".parse().unwrap());
        let n = server_names(&s);
        for want in [
            "localhost",
            "127.0.0.1",
            "::1",
            "192.0.2.1",
            "bridge.example",
        ] {
            assert!(n.contains(&want.to_string()), "{n:?}");
        }
        assert!(!n.iter().any(|x| x == "0.0.0.0" || x == "::"), "{n:?}");
        if let Some(h) = hostname() {
            assert!(n.contains(&h), "{n:?}");
        }
        // A wildcard listen address: every LAN address of this machine is named.
        let lan = interface_addresses();
        for ip in &lan {
            assert!(!ip.is_loopback(), "{lan:?}");
            assert!(n.contains(&ip.to_string()), "{ip} missing from {n:?}");
        }
        // Only the configured addresses otherwise.
        let mut only = crate::config::Config::defaults().server;
        only.listen = "192.0.2.7:8008".parse().unwrap();
        let n = server_names(&only);
        assert!(n.contains(&"192.0.2.7".to_string()), "{n:?}");
        for ip in lan.iter().filter(|ip| ip.to_string() != "192.0.2.7") {
            assert!(!n.contains(&ip.to_string()), "{ip} in {n:?}");
        }
    }
}
