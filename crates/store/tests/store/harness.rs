//! One back-end under test (a store plus whatever it runs on), and small helpers.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIServiceSpec, ServiceReference,
};
use store::{APIService, Options, Store, StoreUrl, Watch, WatchEvent};
use testkit::etcd::Etcd;

/// Which back-end a conformance test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Etcd,
}

/// A store and what keeps it alive (its data dir or its etcd).
pub struct Backend {
    pub store: Arc<dyn Store>,
    pub url: StoreUrl,
    pub options: Options,
    pub etcd: Option<Etcd>,
    _dir: Option<tempfile::TempDir>,
}

/// Options for tests: no periodic bookmarks (tests count events), short etcd timeouts.
pub fn test_options() -> Options {
    Options::default()
        .bookmark_interval(None)
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .max_reconnect_backoff(Duration::from_millis(200))
}

impl Backend {
    pub async fn new(kind: Kind, options: Options) -> Result<Backend> {
        match kind {
            Kind::Embedded => {
                let dir = tempfile::tempdir()?;
                let url = StoreUrl::Embedded {
                    dir: dir.path().join("data"),
                };
                let store = store::open_with(&url, options.clone()).await?;
                Ok(Backend {
                    store,
                    url,
                    options,
                    etcd: None,
                    _dir: Some(dir),
                })
            }
            Kind::Etcd => {
                let etcd = tokio::task::spawn_blocking(Etcd::start).await??;
                let url: StoreUrl = format!("{}/conformance", etcd.store_url()).parse()?;
                let store = store::open_with(&url, options.clone()).await?;
                Ok(Backend {
                    store,
                    url,
                    options,
                    etcd: Some(etcd),
                    _dir: None,
                })
            }
        }
    }

    /// Closes the store and opens it again on the same data.
    pub async fn reopen(&mut self) -> Result<()> {
        self.store.close().await?;
        self.store = store::open_with(&self.url, self.options.clone()).await?;
        Ok(())
    }

    /// Makes the back-end drop old history: etcd compacts at its current revision; the embedded
    /// log is already bounded by `Options::history_size`.
    pub async fn forget_history(&self) -> Result<()> {
        if let Some(etcd) = &self.etcd {
            let mut client = etcd_client::Client::connect(etcd.endpoints(), None).await?;
            let rev = client
                .get("x", None)
                .await?
                .header()
                .map(|h| h.revision())
                .context("no header")?;
            client
                .compact(
                    rev,
                    Some(etcd_client::CompactionOptions::new().with_physical()),
                )
                .await?;
        }
        Ok(())
    }
}

/// An APIService `v1.<group>` with a spec that names a service.
pub fn apiservice(name: &str) -> APIService {
    let (version, group) = name.split_once('.').unwrap_or(("v1", name));
    APIService {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(APIServiceSpec {
            group: Some(group.to_string()),
            version: Some(version.to_string()),
            group_priority_minimum: 1000,
            version_priority: 15,
            service: Some(ServiceReference {
                name: Some("svc".into()),
                namespace: Some("ns".into()),
                port: Some(443),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// The object's resourceVersion.
pub fn rv(object: &APIService) -> String {
    object.metadata.resource_version.clone().unwrap_or_default()
}

/// The revision number behind a resourceVersion (tests may look; the server may not).
pub fn num(rv: &str) -> u64 {
    rv.parse().unwrap_or(0)
}

/// Returns `object` with `spec.versionPriority` set (a visible change for updates).
pub fn with_priority(mut object: APIService, priority: i32) -> APIService {
    if let Some(spec) = object.spec.as_mut() {
        spec.version_priority = priority;
    }
    object
}

/// The next watch event, failing after 30 s so a missing event fails the test instead of
/// hanging it.
pub async fn next_event(watch: &mut Watch) -> Result<Arc<WatchEvent>> {
    match tokio::time::timeout(Duration::from_secs(30), watch.next()).await {
        Ok(Some(Ok(event))) => Ok(event),
        Ok(Some(Err(e))) => bail!("watch ended with an error: {e}"),
        Ok(None) => bail!("watch ended"),
        Err(_) => bail!("no watch event within 30 s"),
    }
}

/// Reads events until one has revision `>= until`; returns them all.
pub async fn events_until(watch: &mut Watch, until: u64) -> Result<Vec<Arc<WatchEvent>>> {
    let mut out = Vec::new();
    loop {
        let event = next_event(watch).await?;
        let rev = num(event.resource_version());
        out.push(event);
        if rev >= until {
            return Ok(out);
        }
    }
}

/// Asserts that nothing arrives on `watch` right now (used after the expected events were read).
pub async fn assert_quiet(watch: &mut Watch) -> Result<()> {
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(200), watch.next()).await {
        bail!("unexpected watch item: {item:?}");
    }
    Ok(())
}

/// Retries `check` every 50 ms until it returns `Ok(Some(v))` or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            match last_error {
                Some(e) => bail!("timed out after {timeout:?} waiting for {what}: {e:#}"),
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
