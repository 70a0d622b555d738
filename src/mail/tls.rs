//! TLS for the mail front ends and their upstream connections: the server certificate from
//! `certs_dir` (`server.pem` + `server-key.pem`, as `init` writes them) or, when absent, a
//! self-signed one generated at start (and written there, key 0600); and the client
//! configuration for iCloud (webpki roots plus `upstream.ca_file`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The certificate file in `certs_dir`.
pub const CERT_FILE: &str = "server.pem";
/// Its private key.
pub const KEY_FILE: &str = "server-key.pem";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration for STARTTLS and implicit TLS.
pub fn server_config(certs_dir: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let (certs, key) = load_or_generate(certs_dir)?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "the certificate in {} cannot be used: {e}",
                certs_dir.display()
            )
        })?;
    Ok(Arc::new(cfg))
}

fn load_or_generate(
    dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if cert_path.is_file() && key_path.is_file() {
        let certs = CertificateDer::pem_file_iter(&cert_path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("cannot read {}: {e}", cert_path.display()))?;
        if certs.is_empty() {
            return Err(format!("{} holds no certificate", cert_path.display()));
        }
        let key = PrivateKeyDer::from_pem_file(&key_path)
            .map_err(|e| format!("cannot read {}: {e}", key_path.display()))?;
        return Ok((certs, key));
    }
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a TLS certificate: {e}"))?;
    let cert_pem = ck.cert.pem();
    let key_pem = ck.signing_key.serialize_pem();
    match write_pair(dir, &cert_pem, &key_pem) {
        Ok(()) => tracing::info!(
            dir = %dir.display(),
            "generated a self-signed certificate for IMAP TLS (replace {CERT_FILE}/{KEY_FILE} to use your own)"
        ),
        Err(e) => tracing::warn!(
            dir = %dir.display(),
            error = %e,
            "cannot save the generated TLS certificate; using it for this run only"
        ),
    }
    let der = ck.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    Ok((vec![der], key))
}

fn write_pair(dir: &Path, cert_pem: &str, key_pem: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let key_path = dir.join(KEY_FILE);
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        use std::io::Write;
        let mut f = opts.open(&key_path)?;
        f.write_all(key_pem.as_bytes())?;
    }
    std::fs::write(dir.join(CERT_FILE), cert_pem)
}

/// The client configuration for `imaps://` upstreams: the webpki roots, plus `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = ca_file {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("upstream.ca_file {}: {e}", ca.display()))?;
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
pub fn server_name(
    url: &url::Url,
) -> Result<rustls::pki_types::ServerName<'static>, std::io::Error> {
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    match url.host() {
        Some(url::Host::Ipv4(ip)) => Ok(rustls::pki_types::ServerName::IpAddress(
            std::net::IpAddr::V4(ip).into(),
        )),
        Some(url::Host::Ipv6(ip)) => Ok(rustls::pki_types::ServerName::IpAddress(
            std::net::IpAddr::V6(ip).into(),
        )),
        Some(url::Host::Domain(d)) => {
            rustls::pki_types::ServerName::try_from(d.to_string()).map_err(|e| bad(e.to_string()))
        }
        None => Err(bad("the upstream URL has no host".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_loads_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        server_config(dir.path()).unwrap();
        let key = dir.path().join(KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let before = std::fs::read(dir.path().join(CERT_FILE)).unwrap();
        server_config(dir.path()).unwrap();
        assert_eq!(before, std::fs::read(dir.path().join(CERT_FILE)).unwrap());
        std::fs::write(dir.path().join(CERT_FILE), "garbage").unwrap();
        assert!(server_config(dir.path()).is_err());
        client_config(Some(&dir.path().join("missing.pem"))).unwrap_err();
        client_config(None).unwrap();
    }
}
