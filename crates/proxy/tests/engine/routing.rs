//! Service resolution: ClusterIP and endpoint routing, failed-address skipping, service-map
//! reloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use http::StatusCode;
use proxy::{BackendSpec, Engine, EngineConfig, ReloadOutcome, RoutingMode, ServiceMapResolver};

use crate::support::*;

async fn three_backends(pki: &Pki) -> Result<Vec<TestBackend>> {
    let mut backends = Vec::new();
    for name in ["e0", "e1", "e2"] {
        backends.push(TestBackend::start(pki, name).await?);
    }
    Ok(backends)
}

async fn hits(engine: &Engine, route: &proxy::Backend, n: usize) -> Result<HashMap<String, usize>> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let got = echo(engine, route, &echo_path(&format!("r{i}"))).await?;
        *counts
            .entry(got["backend"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    Ok(counts)
}

#[tokio::test]
async fn endpoint_routing_spreads_requests_over_every_address() -> Result<()> {
    let pki = Pki::new()?;
    let backends = three_backends(&pki).await?;
    let addresses: Vec<String> = backends.iter().map(TestBackend::address).collect();
    let endpoints = engine_with(
        EngineConfig {
            routing: RoutingMode::Endpoints,
            ..EngineConfig::default()
        },
        pki.identity()?,
        &[(SERVICE, addresses.clone())],
    )?;
    let route = endpoints.backend(&BackendSpec::service(service(SERVICE), pki.ca_bundle()))?;
    let counts = hits(&endpoints, &route, 30).await?;
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|&c| c == 10), "round-robin: {counts:?}");

    let cluster_ip = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, addresses)],
    )?;
    let route = cluster_ip.backend(&BackendSpec::service(service(SERVICE), pki.ca_bundle()))?;
    let counts = hits(&cluster_ip, &route, 6).await?;
    assert_eq!(counts, HashMap::from([("e0".to_owned(), 6)]));
    Ok(())
}

#[tokio::test]
async fn endpoint_routing_skips_an_address_that_refused_connections() -> Result<()> {
    let pki = Pki::new()?;
    let backends = three_backends(&pki).await?;
    let mut addresses: Vec<String> = backends.iter().map(TestBackend::address).collect();
    addresses.insert(1, format!("127.0.0.1:{}", dead_port().await?));
    let engine = engine_with(
        EngineConfig {
            routing: RoutingMode::Endpoints,
            // Long enough that the mark cannot expire during the test.
            failed_endpoint_backoff: Duration::from_secs(600),
            ..EngineConfig::default()
        },
        pki.identity()?,
        &[(SERVICE, addresses)],
    )?;
    let route = engine.backend(&BackendSpec::service(service(SERVICE), pki.ca_bundle()))?;
    let mut failures = 0;
    for i in 0..20 {
        let (status, _, body) =
            send(&engine, &route, get(&echo_path(&format!("r{i}"))), &alice()).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(body.contains("connection refused"), "{body}");
                failures += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(
        failures, 1,
        "the dead address is skipped after its first refusal"
    );
    Ok(())
}

#[tokio::test]
async fn the_service_map_reloads_and_keeps_the_last_good_map() -> Result<()> {
    let pki = Pki::new()?;
    let one = TestBackend::start(&pki, "one").await?;
    let two = TestBackend::start(&pki, "two").await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("services.yaml");
    let write = |address: &str| {
        std::fs::write(
            &path,
            format!(
                "services:\n  - namespace: {NAMESPACE}\n    name: {SERVICE}\n    addresses: [\"{address}\"]\n"
            ),
        )
    };
    write(&one.address())?;
    let resolver = ServiceMapResolver::load(&path)?;
    let engine = Engine::new(
        EngineConfig::default(),
        pki.identity()?,
        Arc::new(resolver.clone()),
    );
    let route = engine.backend(&BackendSpec::service(service(SERVICE), pki.ca_bundle()))?;
    assert_eq!(
        echo(&engine, &route, &echo_path("a")).await?["backend"],
        "one"
    );

    // The other backend; the comment line also changes the size, which some filesystems with
    // coarse modification times need to notice an edit within the same tick.
    std::fs::write(
        &path,
        format!(
            "# moved\nservices:\n  - namespace: {NAMESPACE}\n    name: {SERVICE}\n    addresses: [\"{}\"]\n",
            two.address()
        ),
    )?;
    assert!(matches!(
        resolver.reload_if_changed(),
        ReloadOutcome::Reloaded { services: 1 }
    ));
    assert_eq!(
        echo(&engine, &route, &echo_path("b")).await?["backend"],
        "two"
    );

    std::fs::write(&path, "services: [ {namespace: broken")?;
    assert!(matches!(
        resolver.reload_if_changed(),
        ReloadOutcome::Failed(_)
    ));
    assert_eq!(
        echo(&engine, &route, &echo_path("c")).await?["backend"],
        "two"
    );
    assert!(matches!(
        resolver.reload_if_changed(),
        ReloadOutcome::Unchanged
    ));

    // The watch loop picks up the next edit by itself.
    let mut changes = resolver.subscribe();
    tokio::spawn(resolver.clone().watch(Duration::from_millis(20)));
    write(&one.address())?;
    tokio::time::timeout(Duration::from_secs(10), changes.changed()).await??;
    assert_eq!(
        echo(&engine, &route, &echo_path("d")).await?["backend"],
        "one"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_service_map_fails_at_load() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("services.yaml");
    std::fs::write(
        &path,
        "services:\n  - namespace: a\n    name: b\n    port: 0\n",
    )?;
    let err = ServiceMapResolver::load(&path).unwrap_err();
    assert!(err.to_string().contains("services[0].port"), "{err}");
    let missing = ServiceMapResolver::load(dir.path().join("nope.yaml")).unwrap_err();
    assert!(
        matches!(missing, proxy::Error::ReadFile { .. }),
        "{missing}"
    );
    Ok(())
}
