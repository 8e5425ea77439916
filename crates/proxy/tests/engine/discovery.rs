//! Backend discovery: aggregated with ETag/304, legacy fallback, Stale on failure, isolation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use apimachinery::discovery::{Freshness, Scope};
use proxy::{BackendSpec, DiscoverySource, EngineConfig};

use crate::support::*;

#[tokio::test]
async fn aggregated_discovery_is_cached_with_etag_and_revalidated() -> Result<()> {
    let w = World::new().await?;
    let first = w
        .engine
        .fetch_discovery(&w.route, GROUP, VERSION, None)
        .await;
    assert_eq!(
        first.source,
        DiscoverySource::Aggregated,
        "{:?}",
        first.error
    );
    assert_eq!(first.version.freshness, Some(Freshness::Current));
    let names: Vec<_> = first
        .version
        .resources
        .iter()
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(
        names,
        ["flunders"],
        "only this APIService's group-version is taken"
    );
    let fetch = w.backend.state.seen().pop().unwrap();
    assert_eq!(fetch.path, "/apis");
    assert_eq!(fetch.header("accept"), [proxy::AGGREGATED_ACCEPT]);
    assert_eq!(fetch.header("x-remote-user"), ["system:kube-aggregator"]);
    assert_eq!(fetch.header("x-remote-group"), ["system:masters"]);
    assert!(fetch.header("if-none-match").is_empty());

    // Dirty again: revalidated with If-None-Match, 304, same resources.
    let second = w
        .engine
        .fetch_discovery(&w.route, GROUP, VERSION, Some(Instant::now()))
        .await;
    assert_eq!(second.source, DiscoverySource::NotModified);
    assert_eq!(second.version.resources, first.version.resources);
    assert_eq!(
        w.backend
            .state
            .seen()
            .pop()
            .unwrap()
            .header("if-none-match"),
        ["\"E1\""]
    );

    // Fetched after it was marked dirty: served from the cache without a request.
    let requests = w.backend.state.count("/apis");
    let marked = Instant::now() - Duration::from_secs(60);
    let third = w
        .engine
        .fetch_discovery(&w.route, GROUP, VERSION, Some(marked))
        .await;
    assert_eq!(third.source, DiscoverySource::Cache);
    assert_eq!(w.backend.state.count("/apis"), requests);

    // Another group-version of the same Service shares the document.
    let other = w
        .engine
        .fetch_discovery(&w.route, "other.example.com", "v1", Some(marked))
        .await;
    assert_eq!(other.source, DiscoverySource::Cache);
    assert_eq!(other.version.resources[0].resource, "others");
    Ok(())
}

#[tokio::test]
async fn backends_without_aggregated_discovery_fall_back_to_the_resource_list() -> Result<()> {
    let w = World::new().await?;
    w.backend.state.set_discovery(DiscoveryMode::Legacy);
    let got = w
        .engine
        .fetch_discovery(&w.route, GROUP, VERSION, None)
        .await;
    assert_eq!(got.source, DiscoverySource::Legacy, "{:?}", got.error);
    assert_eq!(got.version.freshness, Some(Freshness::Current));
    let flunders = &got.version.resources[0];
    assert_eq!(flunders.resource, "flunders");
    assert_eq!(flunders.scope, Scope::Namespaced);
    assert_eq!(flunders.subresources[0].subresource, "status");
    let legacy = w.backend.state.seen().pop().unwrap();
    assert_eq!(legacy.path, format!("/apis/{GROUP}/{VERSION}"));
    assert_eq!(legacy.header("x-remote-user"), ["system:kube-aggregator"]);
    assert!(
        legacy.header("x-remote-group").is_empty(),
        "no system:masters for the fallback"
    );
    Ok(())
}

#[tokio::test]
async fn failures_are_stale_with_the_last_good_resources() -> Result<()> {
    let w = World::new().await?;
    let good = w
        .engine
        .fetch_discovery(&w.route, GROUP, VERSION, None)
        .await;
    assert_eq!(good.version.freshness, Some(Freshness::Current));
    let World {
        backend,
        engine,
        route,
        ..
    } = w;
    backend.stop().await;
    let stale = engine.fetch_discovery(&route, GROUP, VERSION, None).await;
    assert!(stale.is_stale());
    assert_eq!(stale.source, DiscoverySource::LastGood);
    assert_eq!(stale.version.resources, good.version.resources);
    let error = stale.error.unwrap().to_string();
    assert!(error.contains("connection refused"), "{error}");

    // Never fetched: Stale with no resources.
    let never = engine
        .fetch_discovery(&route, "never.example.com", "v1", None)
        .await;
    assert!(never.is_stale());
    assert!(never.version.resources.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_hanging_backend_does_not_hold_back_another() -> Result<()> {
    let pki = Pki::new()?;
    let mut options = BackendOptions::new(&pki, "slow")?;
    options.serving = pki.serving_for("slow")?;
    let slow = TestBackend::start_with(options).await?;
    slow.state.set_discovery(DiscoveryMode::Hang);
    let mut options = BackendOptions::new(&pki, "fast")?;
    options.serving = pki.serving_for("fast")?;
    let fast = TestBackend::start_with(options).await?;
    let engine = engine_with(
        EngineConfig {
            discovery_fetch_timeout: Duration::from_millis(500),
            ..EngineConfig::default()
        },
        pki.identity()?,
        &[
            ("slow", vec![slow.address()]),
            ("fast", vec![fast.address()]),
        ],
    )?;
    let slow_route = engine.backend(&BackendSpec::service(service("slow"), pki.ca_bundle()))?;
    let fast_route = engine.backend(&BackendSpec::service(service("fast"), pki.ca_bundle()))?;
    let order = Arc::new(AtomicUsize::new(0));
    let (slow_result, fast_result) = tokio::join!(
        async {
            let r = engine
                .fetch_discovery(&slow_route, GROUP, VERSION, None)
                .await;
            (r, order.fetch_add(1, Ordering::SeqCst))
        },
        async {
            let r = engine
                .fetch_discovery(&fast_route, GROUP, VERSION, None)
                .await;
            (r, order.fetch_add(1, Ordering::SeqCst))
        },
    );
    assert_eq!(fast_result.1, 0, "the healthy backend finished first");
    assert_eq!(fast_result.0.version.freshness, Some(Freshness::Current));
    assert!(slow_result.0.is_stale());
    let error = slow_result.0.error.unwrap().to_string();
    assert!(error.contains("no answer within 500ms"), "{error}");
    Ok(())
}

#[tokio::test]
async fn the_openapi_v3_index_is_fetched_as_system_aggregator() -> Result<()> {
    let w = World::new().await?;
    let index = w.engine.fetch_openapi_v3_index(&w.route).await?.unwrap();
    let key = proxy::openapi_v3_key(GROUP, VERSION);
    assert_eq!(
        index.paths[&key].server_relative_url,
        format!("/openapi/v3/apis/{GROUP}/{VERSION}?hash=ABC")
    );
    let seen = w.backend.state.seen().pop().unwrap();
    assert_eq!(seen.header("x-remote-user"), ["system:aggregator"]);
    assert!(seen.header("x-remote-group").is_empty());
    Ok(())
}
