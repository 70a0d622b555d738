//! TLS for the mail roles: at start-up a fresh CA and a server certificate for `127.0.0.1`
//! and `localhost` signed by it (rcgen), and the rustls acceptor that serves them. Clients
//! under test trust [`crate::Standin::ca_pem`].

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// The stand-in's CA (PEM, for clients) and the acceptor serving the signed server cert.
#[derive(Clone)]
pub struct StandinTls {
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
}

fn err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("stand-in TLS: {e}"))
}

/// Generate the CA and the server certificate.
pub fn generate() -> std::io::Result<StandinTls> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "iCloud stand-in test CA");
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(err)?;

    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca).map_err(err)?;

    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone(), ca.der().clone()];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(err)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(err)?;
    Ok(StandinTls {
        ca_pem: ca.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn generates_a_ca_and_an_acceptor() {
        let t = super::generate().unwrap();
        assert!(t.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
