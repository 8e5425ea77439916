//! Certificates from `pki` are accepted by rustls/webpki (what `serve`, the proxy and extension
//! servers use), which is stricter than openssl: a full mutual-TLS handshake in memory with the
//! serving and client certificates `init_dir` writes, for RSA and ECDSA keys.

use std::sync::Arc;

use pki::KeyAlgorithm;
use pki::init::{InitOptions, init_dir};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn certs(
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, Box<dyn std::error::Error>> {
    Ok(CertificateDer::pem_file_iter(path)?.collect::<Result<Vec<_>, _>>()?)
}

fn key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, Box<dyn std::error::Error>> {
    Ok(PrivateKeyDer::from_pem_file(path)?)
}

fn roots(path: &std::path::Path) -> Result<Arc<RootCertStore>, Box<dyn std::error::Error>> {
    let mut store = RootCertStore::empty();
    for c in certs(path)? {
        store.add(c)?;
    }
    Ok(Arc::new(store))
}

/// Moves TLS records between the two ends until neither has anything to send.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) -> TestResult {
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf)?;
        }
        if !buf.is_empty() {
            server.read_tls(&mut buf.as_slice())?;
            server.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf)?;
        }
        if !buf.is_empty() {
            client.read_tls(&mut buf.as_slice())?;
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(());
        }
    }
    Err("handshake did not finish".into())
}

#[test]
fn init_certificates_pass_a_rustls_mutual_tls_handshake() -> TestResult {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    for alg in [KeyAlgorithm::Rsa2048, KeyAlgorithm::EcdsaP384] {
        let dir = tempfile::tempdir()?;
        let mut opts = InitOptions::new(dir.path());
        opts.front_proxy.key = alg;
        let report = init_dir(&opts)?;
        let p = &report.paths;

        // The aggregator serving certificate, trusting clients of the cluster CA.
        let verifier = WebPkiClientVerifier::builder(roots(&p.ca_cert)?).build()?;
        let server_config = ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&p.aggregator_cert)?, key(&p.aggregator_key)?)?;
        // The admin client, trusting the cluster CA, dialling 127.0.0.1 and localhost.
        let client_config = ClientConfig::builder()
            .with_root_certificates(roots(&p.ca_cert)?)
            .with_client_auth_cert(certs(&p.admin_cert)?, key(&p.admin_key)?)?;
        for name in ["127.0.0.1", "localhost", "::1"] {
            let mut server = ServerConnection::new(Arc::new(server_config.clone()))?;
            let mut client = ClientConnection::new(
                Arc::new(client_config.clone()),
                ServerName::try_from(name)?.to_owned(),
            )?;
            handshake(&mut client, &mut server)?;
            assert!(
                server.peer_certificates().is_some_and(|c| !c.is_empty()),
                "{alg} {name}"
            );
        }

        // The front-proxy client certificate against a server trusting the front-proxy CA (as an
        // extension server does), and rejected by one trusting only the cluster CA.
        let fp_client = ClientConfig::builder()
            .with_root_certificates(roots(&p.ca_cert)?)
            .with_client_auth_cert(
                certs(&p.front_proxy_client_cert)?,
                key(&p.front_proxy_client_key)?,
            )?;
        let ext_server = ServerConfig::builder()
            .with_client_cert_verifier(
                WebPkiClientVerifier::builder(roots(&p.front_proxy_ca_cert)?).build()?,
            )
            .with_single_cert(certs(&p.aggregator_cert)?, key(&p.aggregator_key)?)?;
        let mut server = ServerConnection::new(Arc::new(ext_server))?;
        let mut client = ClientConnection::new(
            Arc::new(fp_client.clone()),
            ServerName::try_from("localhost")?.to_owned(),
        )?;
        handshake(&mut client, &mut server)?;

        let mut server = ServerConnection::new(Arc::new(server_config.clone()))?;
        let mut client = ClientConnection::new(
            Arc::new(fp_client),
            ServerName::try_from("localhost")?.to_owned(),
        )?;
        assert!(
            handshake(&mut client, &mut server).is_err(),
            "{alg}: front-proxy client accepted by the cluster CA"
        );
    }
    Ok(())
}
