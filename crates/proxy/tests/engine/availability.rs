//! The availability check: every reason, and messages that name the cause.

use std::time::Duration;

use anyhow::Result;
use pki::{CertRequest, CertificateAuthority, KeyAlgorithm};
use proxy::{
    AvailabilityReason, BackendSpec, ClientIdentity, ConditionStatus, EngineConfig, metrics_update,
};

use crate::support::*;

async fn check(w: &World) -> proxy::Availability {
    w.engine.check_availability(&w.route, GROUP, VERSION).await
}

fn assert_failed(a: &proxy::Availability, needles: &[&str]) {
    assert_eq!(a.status, ConditionStatus::False, "{a:?}");
    assert_eq!(a.reason, AvailabilityReason::FailedDiscoveryCheck, "{a:?}");
    for needle in needles {
        assert!(
            a.message.contains(needle),
            "{needle:?} not in {:?}",
            a.message
        );
    }
}

#[tokio::test]
async fn a_healthy_backend_passes_and_is_probed_as_upstream_does() -> Result<()> {
    let w = World::new().await?;
    let a = check(&w).await;
    assert_eq!(a.status, ConditionStatus::True, "{a:?}");
    assert_eq!(a.reason, AvailabilityReason::Passed);
    assert_eq!(a.message, "all checks passed");
    let probes: Vec<_> = w
        .backend
        .state
        .seen()
        .into_iter()
        .filter(|s| s.path == format!("/apis/{GROUP}/{VERSION}"))
        .collect();
    assert!(!probes.is_empty());
    for probe in probes {
        assert_eq!(probe.header("x-remote-user"), ["system:kube-aggregator"]);
        assert_eq!(probe.header("x-remote-group"), ["system:masters"]);
        assert!(probe.header("accept").is_empty());
        assert_eq!(probe.peer_cn, PROXY_CN);
    }
    Ok(())
}

#[tokio::test]
async fn killing_the_backend_flips_available_with_the_cause_and_back() -> Result<()> {
    let w = World::new().await?;
    assert!(check(&w).await.is_available());
    let port = w.backend.addr.port();
    let World {
        pki,
        backend,
        engine,
        route,
    } = w;
    backend.stop().await;
    let down = engine.check_availability(&route, GROUP, VERSION).await;
    assert_failed(
        &down,
        &[
            &format!(
                "failing or missing response from https://127.0.0.1:{port}/apis/{GROUP}/{VERSION}"
            ),
            "connection refused",
        ],
    );
    // Identical failures give identical messages: no status churn.
    let again = engine.check_availability(&route, GROUP, VERSION).await;
    assert_eq!(again, down);
    assert_eq!(
        metrics_update(true, &down).count_transition,
        Some(AvailabilityReason::FailedDiscoveryCheck)
    );

    let mut options = BackendOptions::new(&pki, "b1")?;
    options.port = port;
    let _restarted = TestBackend::start_with(options).await?;
    let up = engine.check_availability(&route, GROUP, VERSION).await;
    assert!(up.is_available(), "{up:?}");
    assert_eq!(metrics_update(false, &up).unavailable, 0);
    Ok(())
}

#[tokio::test]
async fn resolution_failures_have_upstream_reasons() -> Result<()> {
    let w = World::new().await?;
    let missing = w
        .engine
        .backend(&BackendSpec::service(service("nope"), w.pki.ca_bundle()))?;
    let a = w.engine.check_availability(&missing, GROUP, VERSION).await;
    assert_eq!(a.status, ConditionStatus::False);
    assert_eq!(a.reason, AvailabilityReason::ServiceNotFound);
    assert_eq!(
        a.message,
        format!("service/nope in \"{NAMESPACE}\" is not present")
    );

    let mut other_port = service(SERVICE);
    other_port.port = 8443;
    let wrong_port = w
        .engine
        .backend(&BackendSpec::service(other_port, w.pki.ca_bundle()))?;
    let a = w
        .engine
        .check_availability(&wrong_port, GROUP, VERSION)
        .await;
    assert_eq!(a.reason, AvailabilityReason::ServicePortError);
    assert_eq!(
        a.message,
        format!("service/{SERVICE} in \"{NAMESPACE}\" is not listening on port 8443")
    );

    let empty = engine_with(
        EngineConfig::default(),
        w.pki.identity()?,
        &[(SERVICE, vec![])],
    )?;
    let route = empty.backend(&BackendSpec::service(service(SERVICE), w.pki.ca_bundle()))?;
    let a = empty.check_availability(&route, GROUP, VERSION).await;
    assert_eq!(a.reason, AvailabilityReason::MissingEndpoints);
    Ok(())
}

#[tokio::test]
async fn tls_problems_are_named() -> Result<()> {
    let pki = Pki::new()?;
    // The serving certificate lacks <svc>.<ns>.svc.
    let mut options = BackendOptions::new(&pki, "b")?;
    options.serving = pki.serving_ca.issue(
        &CertRequest::server("metrics", &["metrics.default.svc"]).key(KeyAlgorithm::EcdsaP256),
    )?;
    let misnamed = TestBackend::start_with(options).await?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![misnamed.address()])],
    )?;
    let route = engine.backend(&BackendSpec::service(service(SERVICE), pki.ca_bundle()))?;
    let a = engine.check_availability(&route, GROUP, VERSION).await;
    assert_failed(
        &a,
        &[
            "certificate is valid for metrics.default.svc, not api.wardle.svc",
            "<service>.<namespace>.svc",
        ],
    );

    // The caBundle is another CA.
    let other = CertificateAuthority::new_root_with(
        &CertRequest::ca("other").key(KeyAlgorithm::EcdsaP256),
    )?;
    let route = engine.backend(&BackendSpec::service(
        service(SERVICE),
        other.cert_pem().as_bytes().to_vec(),
    ))?;
    let a = engine.check_availability(&route, GROUP, VERSION).await;
    assert_failed(
        &a,
        &[
            "certificate signed by unknown authority",
            "caBundle does not contain",
        ],
    );
    assert!(misnamed.state.seen().is_empty());

    // insecureSkipTLSVerify: the probe verifies TLS exactly as the proxy does, so it passes only
    // when set.
    let mut insecure = BackendSpec::service(service(SERVICE), Vec::new());
    insecure.insecure_skip_tls_verify = true;
    let route = engine.backend(&insecure)?;
    assert!(
        engine
            .check_availability(&route, GROUP, VERSION)
            .await
            .is_available()
    );
    Ok(())
}

#[tokio::test]
async fn an_untrusted_front_proxy_certificate_is_explained() -> Result<()> {
    let pki = Pki::new()?;
    let stranger_ca = CertificateAuthority::new_root_with(
        &CertRequest::ca("stranger-ca").key(KeyAlgorithm::EcdsaP256),
    )?;
    let stranger = stranger_ca
        .issue(&CertRequest::client(PROXY_CN, &[] as &[&str]).key(KeyAlgorithm::EcdsaP256))?;
    let identity =
        ClientIdentity::from_pem(stranger.cert_pem.as_bytes(), stranger.key_pem.as_bytes())?;
    let backend = TestBackend::start(&pki, "b").await?;
    let engine = engine_with(
        EngineConfig::default(),
        identity,
        &[(SERVICE, vec![backend.address()])],
    )?;
    let route = engine.backend(&BackendSpec::service(service(SERVICE), pki.ca_bundle()))?;
    let a = engine.check_availability(&route, GROUP, VERSION).await;
    assert_failed(
        &a,
        &[
            "bad status from https://",
            "401 Unauthorized",
            "did not accept the front-proxy client certificate (CN=front-proxy-client, issued by stranger-ca)",
            "--requestheader-client-ca-file",
        ],
    );

    let none = engine_with(
        EngineConfig::default(),
        ClientIdentity::none(),
        &[(SERVICE, vec![backend.address()])],
    )?;
    let route = none.backend(&BackendSpec::service(service(SERVICE), pki.ca_bundle()))?;
    let a = none.check_availability(&route, GROUP, VERSION).await;
    assert_failed(
        &a,
        &["401 Unauthorized", "--proxy-client-cert-file is not set"],
    );
    Ok(())
}

#[tokio::test]
async fn backend_answers_are_named() -> Result<()> {
    let w = World::new().await?;
    w.backend.state.set_mode(Mode::Status(403));
    assert_failed(
        &check(&w).await,
        &["403 Forbidden", "system:kube-aggregator"],
    );
    w.backend.state.set_mode(Mode::Status(404));
    assert_failed(
        &check(&w).await,
        &[
            "404 Not Found",
            &format!("does not serve {GROUP}/{VERSION}"),
        ],
    );
    w.backend.state.set_mode(Mode::Status(302));
    assert_failed(
        &check(&w).await,
        &["302 Found", "redirects are not followed"],
    );
    w.backend.state.set_mode(Mode::Status(500));
    assert_failed(&check(&w).await, &["500 Internal Server Error"]);

    // An empty resource list is served (upstream's semantics: 2xx is available) but flagged.
    w.backend.state.set_mode(Mode::Empty);
    let a = check(&w).await;
    assert!(a.is_available());
    assert!(
        a.message
            .starts_with("all checks passed; warning: the backend lists no resources"),
        "{}",
        a.message
    );
    Ok(())
}

#[tokio::test]
async fn a_hanging_backend_times_out_naming_the_phase() -> Result<()> {
    let w = World::with_config(EngineConfig {
        probe_timeout: Duration::from_millis(300),
        ..EngineConfig::default()
    })
    .await?;
    w.backend.state.set_mode(Mode::Hang);
    let a = check(&w).await;
    assert_failed(
        &a,
        &[
            "timed out waiting for https://",
            "accepted the connection but did not answer within 300ms",
        ],
    );
    Ok(())
}

#[tokio::test]
async fn the_core_group_is_probed_at_api_v1() -> Result<()> {
    let w = World::new().await?;
    let a = w.engine.check_availability(&w.route, "", "v1").await;
    // The stand-in serves no /api/v1: the probe went there and says so.
    assert_failed(&a, &["/api/v1", "404 Not Found", "does not serve v1"]);
    assert!(w.backend.state.count("/api/v1") >= 1);
    Ok(())
}
