//! Backend TLS: caBundle, server name, insecureSkipTLSVerify, client certificate rotation.

use anyhow::Result;
use http::StatusCode;
use pki::{CertRequest, CertificateAuthority, KeyAlgorithm};
use proxy::{BackendSpec, ClientIdentity, Engine, EngineConfig, Error};

use crate::support::*;

async fn backend_with_serving(
    pki: &Pki,
    names: &[&str],
    ca: &CertificateAuthority,
) -> Result<TestBackend> {
    let mut options = BackendOptions::new(pki, "b")?;
    options.serving =
        ca.issue(&CertRequest::server(names[0], names).key(KeyAlgorithm::EcdsaP256))?;
    TestBackend::start_with(options).await
}

fn route(engine: &Engine, ca_bundle: Vec<u8>, insecure: bool) -> Result<proxy::Backend> {
    let mut spec = BackendSpec::service(service(SERVICE), ca_bundle);
    spec.insecure_skip_tls_verify = insecure;
    Ok(engine.backend(&spec)?)
}

#[tokio::test]
async fn a_wrong_ca_bundle_is_refused_as_unknown_authority() -> Result<()> {
    let pki = Pki::new()?;
    let backend = TestBackend::start(&pki, "b").await?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![backend.address()])],
    )?;
    let other = CertificateAuthority::new_root_with(
        &CertRequest::ca("other").key(KeyAlgorithm::EcdsaP256),
    )?;
    let wrong = route(&engine, other.cert_pem().as_bytes().to_vec(), false)?;
    let (status, _, body) = send(&engine, &wrong, get(&echo_path("x")), &alice()).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("x509: certificate signed by unknown authority"),
        "{body}"
    );
    assert!(body.contains("caBundle does not contain"), "{body}");
    assert!(
        backend.state.seen().is_empty(),
        "nothing may reach an unverified backend"
    );

    // An empty caBundle means the system roots, which do not know the test CA.
    let system = route(&engine, Vec::new(), false)?;
    let (status, _, body) = send(&engine, &system, get(&echo_path("x")), &alice()).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("has no caBundle"), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_serving_certificate_without_the_service_name_is_a_name_mismatch() -> Result<()> {
    let pki = Pki::new()?;
    let backend =
        backend_with_serving(&pki, &["other.default.svc", "127.0.0.1"], &pki.serving_ca).await?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![backend.address()])],
    )?;
    let route = route(&engine, pki.ca_bundle(), false)?;
    let (status, _, body) = send(&engine, &route, get(&echo_path("x")), &alice()).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains(&format!(
            "certificate is valid for other.default.svc, 127.0.0.1, not {SERVER_NAME}"
        )),
        "{body}"
    );
    Ok(())
}

#[tokio::test]
async fn insecure_skip_tls_verify_is_honoured_only_when_set() -> Result<()> {
    let pki = Pki::new()?;
    let other = CertificateAuthority::new_root_with(
        &CertRequest::ca("other").key(KeyAlgorithm::EcdsaP256),
    )?;
    let backend = backend_with_serving(&pki, &["wrong.name"], &other).await?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![backend.address()])],
    )?;
    let insecure = route(&engine, Vec::new(), true)?;
    let got = echo(&engine, &insecure, &echo_path("x")).await?;
    // The client certificate is still presented and verified by the backend.
    assert_eq!(got["user"]["name"], "alice");
    let secure = route(&engine, pki.ca_bundle(), false)?;
    let (status, _, _) = send(&engine, &secure, get(&echo_path("x")), &alice()).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    Ok(())
}

#[tokio::test]
async fn an_unparsable_ca_bundle_is_a_typed_error_answered_500() -> Result<()> {
    let pki = Pki::new()?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec!["127.0.0.1:1".into()])],
    )?;
    let err = route(
        &engine,
        b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n".to_vec(),
        false,
    )
    .unwrap_err()
    .downcast::<Error>()?;
    assert!(matches!(err, Error::InvalidTlsSettings { .. }), "{err}");
    assert_eq!(
        err.to_response().status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    Ok(())
}

#[tokio::test]
async fn a_backend_that_does_not_trust_the_proxy_certificate_answers_401() -> Result<()> {
    let pki = Pki::new()?;
    let mut options = BackendOptions::new(&pki, "strict")?;
    // The backend trusts the front-proxy CA but only another CN.
    options.request_header = pki.request_header(&["someone-else"]);
    let backend = TestBackend::start_with(options).await?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![backend.address()])],
    )?;
    let route = route(&engine, pki.ca_bundle(), false)?;
    let (status, _, body) = send(&engine, &route, get(&echo_path("x")), &alice()).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("not in the allowed list"), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_rotated_client_certificate_is_used_by_new_connections() -> Result<()> {
    let pki = Pki::new()?;
    let dir = tempfile::tempdir()?;
    let cert = dir.path().join("front-proxy-client.pem");
    let key = dir.path().join("front-proxy-client-key.pem");
    std::fs::write(&cert, &pki.proxy_client.cert_pem)?;
    std::fs::write(&key, &pki.proxy_client.key_pem)?;
    let identity = ClientIdentity::from_files(&cert, &key)?;
    let backend = TestBackend::start(&pki, "b").await?;
    let engine = engine_with(
        EngineConfig::default(),
        identity.clone(),
        &[(SERVICE, vec![backend.address()])],
    )?;
    let route = route(&engine, pki.ca_bundle(), false)?;
    let before = echo(&engine, &route, &echo_path("a")).await?;
    assert_eq!(before["peer_cn"], PROXY_CN);
    assert!(!identity.reload_if_changed()?, "nothing changed yet");

    // Rotate to an RSA certificate with a PKCS#1 key (cfssl's RSA output) and another CN.
    let rotated = pki
        .front_proxy_ca
        .issue(&CertRequest::client("front-proxy-client-2", &[] as &[&str]))?;
    assert!(rotated.key_pem.contains("BEGIN RSA PRIVATE KEY"));
    std::fs::write(&cert, &rotated.cert_pem)?;
    std::fs::write(&key, &rotated.key_pem)?;
    assert!(identity.reload_if_changed()?);
    assert_eq!(identity.generation(), 1);
    let after = echo(&engine, &route, &echo_path("b")).await?;
    assert_eq!(after["peer_cn"], "front-proxy-client-2");
    assert_ne!(
        after["conn"], before["conn"],
        "a new pool, a new connection"
    );

    // A half-written pair (new cert, old key) is refused and the current certificate stays.
    std::fs::write(&cert, &pki.proxy_client.cert_pem)?;
    assert!(matches!(
        identity.reload_if_changed(),
        Err(Error::ClientCertificate { .. })
    ));
    let still = echo(&engine, &route, &echo_path("c")).await?;
    assert_eq!(still["peer_cn"], "front-proxy-client-2");
    Ok(())
}

#[tokio::test]
async fn without_a_client_certificate_the_backend_cannot_trust_the_headers() -> Result<()> {
    let pki = Pki::new()?;
    let backend = TestBackend::start(&pki, "b").await?;
    let engine = engine_with(
        EngineConfig::default(),
        ClientIdentity::none(),
        &[(SERVICE, vec![backend.address()])],
    )?;
    let route = route(&engine, pki.ca_bundle(), false)?;
    let (status, _, _) = send(&engine, &route, get(&echo_path("x")), &alice()).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let seen = backend.state.seen().pop().unwrap();
    assert!(seen.user.is_none());
    assert_eq!(seen.peer_cn, "");
    Ok(())
}
