//! The local CA: whoever copies `ca-key.pem` off the bridge still cannot make a certificate
//! that devices trusting the CA accept for Apple's hosts (name constraints, checked here by a
//! real TLS handshake through rustls/webpki, as on the devices); its fingerprint is shown for
//! comparison; an older unconstrained CA keeps serving and is flagged.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::Digest;

use crate::support::*;

fn with_https() -> Options {
    Options {
        tweak: Box::new(|c| c.server.tls_listen = Some("127.0.0.1:0".parse().unwrap())),
        ..Default::default()
    }
}

fn certs_dir(env: &Env) -> std::path::PathBuf {
    env.cfg.server.certs_dir.clone()
}

/// A leaf for `name`, signed with the bridge's CA key (what a thief of `ca-key.pem` can do).
fn forge(
    dir: &std::path::Path,
    name: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let ca_pem = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca-key.pem")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
}

/// Serve one TLS handshake with `chain` on loopback; the client trusts only `ca.pem` and
/// asks for `name`. Ok(()) when the client accepted the certificate.
async fn handshake(
    dir: &std::path::Path,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    name: &str,
) -> Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let serve = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(s).await;
    });
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let result = connector
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    serve.abort();
    result
}

#[tokio::test]
async fn a_certificate_made_with_the_stolen_ca_key_is_refused_for_apples_hosts() {
    let env = start_with(with_https()).await;
    let dir = certs_dir(&env);
    for apple in ["idmsa.apple.com", "caldav.icloud.com", "gateway.icloud.com"] {
        let (chain, key) = forge(&dir, apple);
        let err = handshake(&dir, chain, key, apple)
            .await
            .expect_err("a device accepted a forged certificate for an Apple host");
        assert!(
            err.to_lowercase().contains("name") || err.to_lowercase().contains("constraint"),
            "{apple}: {err}"
        );
    }
    // The same forgery for a name the bridge may serve is accepted: the refusal above comes
    // from the constraints, not from a broken test.
    let (chain, key) = forge(&dir, "bridge.home.arpa");
    handshake(&dir, chain, key, "bridge.home.arpa")
        .await
        .unwrap();
    // And the bridge's own HTTPS port works for a client trusting only ca.pem.
    assert_eq!(healthz_over_https(&env, &dir).await, 200);
    env.stop().await;
}

/// GET /healthz on the bridge's HTTPS port as a device trusting only `dir/ca.pem`.
async fn healthz_over_https(env: &Env, dir: &std::path::Path) -> u16 {
    let pem = std::fs::read(dir.join("ca.pem")).unwrap();
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let tls = env.bridge.tls_addr.unwrap();
    https
        .get(format!("https://localhost:{}/healthz", tls.port()))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn sha256_of_ca(dir: &std::path::Path) -> String {
    let der = CertificateDer::pem_file_iter(dir.join("ca.pem"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[tokio::test]
async fn the_status_page_shows_the_cas_fingerprint_to_compare() {
    let env = start_with(with_https()).await;
    let want = sha256_of_ca(&certs_dir(&env));
    let st = env.status_json().await;
    assert_eq!(st["ca"]["sha256"], want.as_str(), "{st}");
    assert_eq!(st["ca"]["constrained"], true);
    let page = env.page("/status").await;
    assert!(page.contains(&want), "the page lacks the fingerprint");
    assert!(!page.contains("no name constraints"));
    env.stop().await;
}

#[tokio::test]
async fn an_old_unconstrained_ca_keeps_serving_and_is_flagged() {
    // A CA as earlier versions made it: no name constraints.
    let certs = tempfile::tempdir().unwrap().keep();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = p.self_signed(&key).unwrap();
    std::fs::write(certs.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(certs.join("ca-key.pem"), key.serialize_pem()).unwrap();
    let log = LogCapture::start();
    let dir = certs.clone();
    let env = start_with(Options {
        tweak: Box::new(move |c| {
            c.server.tls_listen = Some("127.0.0.1:0".parse().unwrap());
            c.server.certs_dir = dir;
        }),
        ..Default::default()
    })
    .await;
    // It still serves: a leaf from the old CA, accepted by devices that trust it.
    assert_eq!(healthz_over_https(&env, &certs).await, 200);
    // Flagged in the log, in status.json and on the page, with the way out.
    assert!(log.text().contains("no name constraints"), "{}", log.text());
    let st = env.status_json().await;
    assert_eq!(st["ca"]["constrained"], false, "{st}");
    assert_eq!(st["ca"]["sha256"], sha256_of_ca(&certs).as_str());
    let page = env.page("/status").await;
    assert!(
        page.contains("no name constraints"),
        "the page does not flag it"
    );
    assert!(page.contains("move ca.pem, ca-key.pem"));
    env.stop().await;
}
