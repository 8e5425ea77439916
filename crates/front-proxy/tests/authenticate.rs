//! The reader side against real certificates: every refusal reason on a certificate made to have
//! it, chains through intermediates, the allowed-names rule, and header stripping.

use std::time::{Duration, SystemTime};

use front_proxy::test_util::{ClientCertKind, TestCa, TestCert};
use front_proxy::{Authenticator, HeaderNames, Refusal, RequestHeaderConfig, UserInfo};
use http::{HeaderMap, HeaderValue, Request};
use rustls_pki_types::CertificateDer;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn alice() -> UserInfo {
    let mut user = UserInfo::new("alice");
    user.uid = "uid-1".into();
    user.groups = vec!["dev".into(), "system:authenticated".into()];
    user.extra
        .insert("scopes".into(), vec!["a".into(), "b".into()]);
    user
}

/// Runs `auth` on a request proxied with `cert` for `user`, plus a few spoofed extras, and checks
/// that no identity header survives whatever the outcome.
fn run(auth: &Authenticator, cert: &TestCert, user: &UserInfo) -> Result<UserInfo, Refusal> {
    let mut request = cert
        .proxied_request(Request::new(()), user)
        .unwrap_or_else(|e| panic!("minting the request: {e}"));
    request
        .headers_mut()
        .insert("accept", HeaderValue::from_static("application/json"));
    let outcome = auth.authenticate(&cert.chain, request.headers_mut());
    assert_no_identity(request.headers());
    assert_eq!(request.headers()["accept"], "application/json");
    outcome
}

fn assert_no_identity(headers: &HeaderMap) {
    for name in headers.keys() {
        assert!(
            !name.as_str().starts_with("x-remote-"),
            "{name} survived authentication"
        );
    }
}

#[test]
fn valid_proxy_certificate_yields_the_user() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&["front-proxy-client"]))?;
    let cert = ca.client_cert("front-proxy-client")?;
    assert_eq!(run(&auth, &cert, &alice())?, alice());
    Ok(())
}

#[test]
fn empty_allowed_list_accepts_any_cn() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    for cn in ["front-proxy-client", "anything", ""] {
        let cert = ca.client_cert(cn)?;
        assert_eq!(run(&auth, &cert, &alice())?.name, "alice", "cn={cn:?}");
    }
    Ok(())
}

#[test]
fn cn_not_allowed_is_an_error() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&["front-proxy-client"]))?;
    // The case from user-needs §1b: the request-header CA also signs component certificates.
    let cert = ca.client_cert("system:kube-controller-manager")?;
    let refusal = run(&auth, &cert, &alice()).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::NameNotAllowed {
            cn: "system:kube-controller-manager".into(),
            allowed: vec!["front-proxy-client".into()],
        }
    );
    assert!(!refusal.is_not_applicable());
    assert_eq!(
        refusal.to_string(),
        "x509: subject with cn=system:kube-controller-manager is not in the allowed list"
    );
    // Matching is exact and case-sensitive, as upstream.
    let cert = ca.client_cert("Front-Proxy-Client")?;
    assert!(matches!(
        run(&auth, &cert, &alice()),
        Err(Refusal::NameNotAllowed { .. })
    ));
    Ok(())
}

#[test]
fn certificate_from_another_ca_is_untrusted() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let cluster_ca = TestCa::new("kubernetes")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    let cert = cluster_ca.client_cert("front-proxy-client")?;
    let refusal = run(&auth, &cert, &alice()).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::UntrustedChain {
            reason: "certificate signed by unknown authority".into()
        }
    );
    assert!(!refusal.is_not_applicable());
    Ok(())
}

#[test]
fn missing_client_auth_usage_is_an_error() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    let cert = ca.client_cert_with("front-proxy-client", ClientCertKind::NoClientAuthUsage)?;
    let refusal = run(&auth, &cert, &alice()).unwrap_err();
    assert_eq!(refusal, Refusal::MissingClientAuthUsage);
    assert!(!refusal.is_not_applicable());
    Ok(())
}

#[test]
fn no_extended_key_usage_at_all_is_accepted_like_go() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    let cert = ca.client_cert_with("front-proxy-client", ClientCertKind::NoExtendedKeyUsage)?;
    assert_eq!(run(&auth, &cert, &alice())?, alice());
    Ok(())
}

#[test]
fn expired_and_not_yet_valid_are_errors() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;

    let expired = ca.client_cert_with("front-proxy-client", ClientCertKind::Expired)?;
    match run(&auth, &expired, &alice()) {
        Err(Refusal::Expired { not_after, .. }) => {
            // 2001-01-01T00:00:00Z
            assert_eq!(
                not_after,
                SystemTime::UNIX_EPOCH + Duration::from_secs(978_307_200)
            );
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    let message = run(&auth, &expired, &alice()).unwrap_err().to_string();
    assert!(
        message.contains("is after 2001-01-01T00:00:00Z"),
        "{message}"
    );

    let future = ca.client_cert_with("front-proxy-client", ClientCertKind::NotYetValid)?;
    let refusal = run(&auth, &future, &alice()).unwrap_err();
    assert!(
        matches!(refusal, Refusal::NotYetValid { .. }),
        "{refusal:?}"
    );
    assert!(!refusal.is_not_applicable());
    Ok(())
}

#[test]
fn validity_is_checked_at_the_given_time() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    let expired = ca.client_cert_with("front-proxy-client", ClientCertKind::Expired)?;
    // Mid-2000, when the certificate was valid.
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(962_000_000);
    let mut request = expired.proxied_request(Request::new(()), &alice())?;
    assert_eq!(
        auth.authenticate_at(&expired.chain, request.headers_mut(), then)?,
        alice()
    );
    Ok(())
}

#[test]
fn intermediate_chain_is_accepted_when_presented() -> TestResult {
    let root = TestCa::new("front-proxy-root")?;
    let intermediate = root.intermediate("front-proxy-intermediate")?;
    let auth = Authenticator::new(root.request_header_config(&["front-proxy-client"]))?;
    let cert = intermediate.client_cert("front-proxy-client")?;
    assert_eq!(cert.chain.len(), 2);
    assert_eq!(run(&auth, &cert, &alice())?, alice());

    // Intermediates come from the presented chain only: the leaf alone does not verify.
    let mut headers = HeaderMap::new();
    let refusal = auth
        .authenticate(&cert.chain[..1], &mut headers)
        .unwrap_err();
    assert!(
        matches!(refusal, Refusal::UntrustedChain { .. }),
        "{refusal:?}"
    );

    // Two levels of intermediates.
    let deeper = intermediate.intermediate("second-intermediate")?;
    let cert = deeper.client_cert("front-proxy-client")?;
    assert_eq!(cert.chain.len(), 3);
    assert_eq!(run(&auth, &cert, &alice())?, alice());
    Ok(())
}

#[test]
fn any_certificate_of_the_bundle_is_a_root() -> TestResult {
    let old = TestCa::new("front-proxy-ca-old")?;
    let new = TestCa::new("front-proxy-ca-new")?;
    // During a CA rotation the bundle holds both (upstream's ConfigMap controller concatenates).
    let bundle = format!("{}{}", old.ca_pem(), new.ca_pem());
    let auth = Authenticator::new(RequestHeaderConfig {
        client_ca_pem: bundle.into_bytes(),
        allowed_names: vec![],
        headers: HeaderNames::default(),
    })?;
    assert_eq!(run(&auth, &old.client_cert("p")?, &alice())?, alice());
    assert_eq!(run(&auth, &new.client_cert("p")?, &alice())?, alice());
    Ok(())
}

#[test]
fn no_client_certificate_is_not_applicable_and_strips_spoofed_headers() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    let mut headers = HeaderMap::new();
    headers.insert("x-remote-user", HeaderValue::from_static("system:admin"));
    headers.append("x-remote-group", HeaderValue::from_static("system:masters"));
    headers.insert("x-remote-extra-scopes", HeaderValue::from_static("all"));
    headers.insert("x-remote-uid", HeaderValue::from_static("0"));
    let refusal = auth.authenticate(&[], &mut headers).unwrap_err();
    assert_eq!(refusal, Refusal::NoClientCertificate);
    assert!(refusal.is_not_applicable());
    assert!(headers.is_empty(), "{headers:?}");
    Ok(())
}

#[test]
fn missing_or_empty_username_is_not_applicable() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    let cert = ca.client_cert("front-proxy-client")?;

    let mut headers = HeaderMap::new();
    headers.append("x-remote-group", HeaderValue::from_static("system:masters"));
    let refusal = auth.authenticate(&cert.chain, &mut headers).unwrap_err();
    assert_eq!(refusal, Refusal::MissingUsername);
    assert!(refusal.is_not_applicable());
    assert!(headers.is_empty());

    // The writer always sends the username header, even empty; an empty one is no username.
    let refusal = run(&auth, &cert, &UserInfo::new("")).unwrap_err();
    assert_eq!(refusal, Refusal::MissingUsername);
    Ok(())
}

#[test]
fn malformed_leaf_is_an_error() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    let mut headers = HeaderMap::new();
    headers.insert("x-remote-user", HeaderValue::from_static("mallory"));
    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
    let refusal = auth.authenticate(&[garbage], &mut headers).unwrap_err();
    assert!(
        matches!(refusal, Refusal::MalformedCertificate { .. }),
        "{refusal:?}"
    );
    assert!(!refusal.is_not_applicable());
    assert!(headers.is_empty());
    Ok(())
}

#[test]
fn non_utf8_identity_values_are_an_error() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Authenticator::new(ca.request_header_config(&[]))?;
    let cert = ca.client_cert("front-proxy-client")?;
    let mut headers = HeaderMap::new();
    headers.insert("x-remote-user", HeaderValue::from_static("alice"));
    headers.append("x-remote-group", HeaderValue::from_bytes(b"dev\xff")?);
    let refusal = auth.authenticate(&cert.chain, &mut headers).unwrap_err();
    assert_eq!(
        refusal,
        Refusal::InvalidHeaderValue {
            header: "x-remote-group".into()
        }
    );
    assert!(headers.is_empty());
    Ok(())
}

#[test]
fn custom_header_names_are_read_and_every_identity_header_is_stripped() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let headers = HeaderNames::from_flags(
        &["X-Proxy-User".into()],
        &[],
        &["X-Proxy-Group".into()],
        &["X-Proxy-Extra-".into()],
    )?;
    let auth = Authenticator::new(RequestHeaderConfig {
        headers,
        ..ca.request_header_config(&[])
    })?;
    let cert = ca.client_cert("front-proxy-client")?;

    let mut request = Request::new(());
    let h = request.headers_mut();
    h.insert("x-proxy-user", HeaderValue::from_static("bob"));
    h.append("x-proxy-group", HeaderValue::from_static("ops"));
    h.insert("X-Proxy-Extra-Reason", HeaderValue::from_static("oncall"));
    // Standard names are not read with custom flags, but are still stripped.
    h.insert("x-remote-user", HeaderValue::from_static("mallory"));
    h.insert("x-remote-uid", HeaderValue::from_static("0"));
    h.insert("x-remote-extra-scopes", HeaderValue::from_static("all"));
    let user = auth.authenticate(&cert.chain, request.headers_mut())?;
    assert_eq!(user.name, "bob");
    assert_eq!(user.uid, "");
    assert_eq!(user.groups, ["ops"]);
    assert_eq!(user.extra.get("reason"), Some(&vec!["oncall".to_owned()]));
    assert_eq!(user.extra.len(), 1);
    assert!(request.headers().is_empty(), "{:?}", request.headers());
    Ok(())
}

#[test]
fn uid_is_read_only_when_configured() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let cert = ca.client_cert("front-proxy-client")?;
    let upstream_132 = HeaderNames {
        uid: vec![],
        ..HeaderNames::default()
    };
    let auth = Authenticator::new(RequestHeaderConfig {
        headers: upstream_132,
        ..ca.request_header_config(&[])
    })?;
    let user = run(&auth, &cert, &alice())?;
    assert_eq!(user.uid, "");
    Ok(())
}
