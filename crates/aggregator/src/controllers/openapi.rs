//! The OpenAPI v3 controller (upstream-behaviour.md §4.2): downloads the `/openapi/v3` index of
//! every Available remote APIService and of the delegate, and publishes the merged index with
//! the owner of each entry ([`OpenApiRoutes`]), so `/openapi/v3/<key>` can be forwarded to the
//! source that serves it.
//!
//! A source is fetched when it appears, changes or becomes Available, then every minute after
//! a success; failures back off from 1 min to 1 h, as upstream. The last good entries stay
//! published while a source is failing or unavailable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use proxy::{Backend, Engine, OpenApiV3Index, openapi_v3_key};
use store::APIService;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::schedule::{Schedule, sleep_until};
use crate::forward::BoxFuture;
use crate::informer::Snapshot;
use crate::openapi::{OpenApi, OpenApiRoutes, RemoteEntry, merge};
use crate::registry::strategy;

/// Timings. By default upstream's: 1 min after a success, backoff from 1 min to 1 h.
#[derive(Debug, Clone)]
pub struct OpenApiConfig {
    /// Re-fetch interval after a success. By default 60 s.
    pub period: Duration,
    /// First retry after a failure. By default 60 s.
    pub retry_initial: Duration,
    /// Longest retry interval. By default 1 h.
    pub retry_max: Duration,
    /// Downloads at once. By default 4.
    pub workers: usize,
}

impl Default for OpenApiConfig {
    fn default() -> Self {
        OpenApiConfig {
            period: Duration::from_secs(60),
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            workers: 4,
        }
    }
}

/// What one download gave: the index, `None` when the source has no v3 (404), or why it failed.
pub type IndexResult = Result<Option<OpenApiV3Index>, String>;

/// Downloads indexes.
pub trait IndexFetcher: Send + Sync + 'static {
    /// The `/openapi/v3` index of a remote APIService's backend.
    fn fetch_apiservice(&self, api: Arc<APIService>) -> BoxFuture<IndexResult>;
    /// The delegate's index; `None` when there is no delegate.
    fn fetch_delegate(&self) -> Option<BoxFuture<IndexResult>>;
}

/// Downloads through the proxy engine (as `system:aggregator`, 60 s).
#[derive(Debug, Clone)]
pub struct EngineIndexFetcher {
    /// The engine.
    pub engine: Engine,
    /// The delegate (`--delegate-url`).
    pub delegate: Option<Backend>,
}

impl IndexFetcher for EngineIndexFetcher {
    fn fetch_apiservice(&self, api: Arc<APIService>) -> BoxFuture<IndexResult> {
        let engine = self.engine.clone();
        Box::pin(async move {
            match engine.backend_for_apiservice(&api) {
                Ok(Some(backend)) => engine
                    .fetch_openapi_v3_index(&backend)
                    .await
                    .map_err(|e| e.to_string()),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn fetch_delegate(&self) -> Option<BoxFuture<IndexResult>> {
        let engine = self.engine.clone();
        let delegate = self.delegate.clone()?;
        Some(Box::pin(async move {
            engine
                .fetch_openapi_v3_index(&delegate)
                .await
                .map_err(|e| e.to_string())
        }))
    }
}

/// A source of index entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Source {
    ApiService(String),
    Delegate,
}

struct Tracked {
    api: Arc<APIService>,
    usable: bool,
}

/// The controller. Build it, then `tokio::spawn(controller.run())`.
pub struct OpenApiController {
    /// Timings.
    pub config: OpenApiConfig,
    /// Downloads.
    pub fetcher: Arc<dyn IndexFetcher>,
    /// This server's own documents (their entry always wins).
    pub own: OpenApi,
    /// The APIServices ([`crate::Server::apiservices`]).
    pub apiservices: watch::Receiver<Arc<Snapshot>>,
    /// Where the merged index goes ([`crate::Server::openapi_routes`]).
    pub publish: watch::Sender<Arc<OpenApiRoutes>>,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// What the loop has learnt from the sources.
#[derive(Default)]
struct Learnt {
    remote: BTreeMap<String, RemoteEntry>,
    delegate: Option<OpenApiV3Index>,
}

impl OpenApiController {
    /// Runs until shutdown (or until the APIService watch closes).
    pub async fn run(self) {
        let OpenApiController {
            config,
            fetcher,
            own,
            mut apiservices,
            publish,
            mut shutdown,
        } = self;
        let workers = config.workers.max(1);
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut failures: HashMap<Source, u32> = HashMap::new();
        let mut learnt = Learnt::default();
        let mut schedule: Schedule<Source> = Schedule::default();
        let mut jobs: JoinSet<IndexResult> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Source> = HashMap::new();
        let has_delegate = fetcher.fetch_delegate().is_some();
        if has_delegate {
            schedule.due_at(Source::Delegate, Instant::now());
        }
        let snapshot = apiservices.borrow_and_update().clone();
        if reconcile(&snapshot, &mut tracked, &mut schedule, &mut learnt) {
            publish.send_replace(Arc::new(merge(
                &own,
                &learnt.remote,
                learnt.delegate.as_ref(),
            )));
        }
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            for source in schedule.take_due(now, workers.saturating_sub(jobs.len())) {
                let job = match &source {
                    Source::Delegate => fetcher.fetch_delegate(),
                    Source::ApiService(name) => match tracked.get(name) {
                        Some(t) if t.usable => Some(fetcher.fetch_apiservice(t.api.clone())),
                        // Not Available: wait for the flip (the proxy would answer 503).
                        _ => None,
                    },
                };
                match job {
                    Some(job) => {
                        let handle = jobs.spawn(job);
                        running.insert(handle.id(), source);
                    }
                    None => schedule.finished(&source, now, now + config.period),
                }
            }
            let wake = if jobs.len() < workers {
                schedule.next_due()
            } else {
                None
            };
            tokio::select! {
                _ = shutdown.changed() => break,
                changed = apiservices.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let snapshot = apiservices.borrow_and_update().clone();
                    if reconcile(&snapshot, &mut tracked, &mut schedule, &mut learnt) {
                        publish.send_replace(Arc::new(merge(&own, &learnt.remote, learnt.delegate.as_ref())));
                    }
                }
                Some(done) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                    let (id, result) = match done {
                        Ok((id, result)) => (id, result),
                        Err(e) => (e.id(), Err(format!("download task failed: {e}"))),
                    };
                    let Some(source) = running.remove(&id) else { continue };
                    let now = Instant::now();
                    let next = match &result {
                        Ok(_) => {
                            failures.remove(&source);
                            now + config.period
                        }
                        Err(error) => {
                            let n = failures.entry(source.clone()).or_default();
                            *n = n.saturating_add(1);
                            tracing::debug!(source = ?source, %error, "OpenAPI v3 index download failed");
                            now + backoff(&config, *n)
                        }
                    };
                    schedule.finished(&source, now, next);
                    if apply(&source, result, &tracked, &mut learnt) {
                        publish.send_replace(Arc::new(merge(&own, &learnt.remote, learnt.delegate.as_ref())));
                    }
                }
                _ = sleep_until(wake) => {}
            }
        }
        jobs.abort_all();
    }
}

fn backoff(config: &OpenApiConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    config
        .retry_initial
        .saturating_mul(1u32 << exponent)
        .min(config.retry_max)
}

/// Records a download; true when the merged index changes.
fn apply(
    source: &Source,
    result: IndexResult,
    tracked: &HashMap<String, Tracked>,
    learnt: &mut Learnt,
) -> bool {
    let Ok(index) = result else {
        // Keep the last good entries while a source is failing.
        return false;
    };
    match source {
        Source::Delegate => {
            if learnt.delegate == index {
                return false;
            }
            learnt.delegate = index;
            true
        }
        Source::ApiService(name) => {
            let Some(t) = tracked.get(name) else {
                return false;
            };
            let spec = strategy::spec(&t.api);
            let key = openapi_v3_key(
                spec.group.as_deref().unwrap_or_default(),
                spec.version.as_deref().unwrap_or_default(),
            );
            let entry = index
                .and_then(|i| i.paths.get(&key).cloned())
                .map(|path| RemoteEntry { key, path });
            if learnt.remote.get(name) == entry.as_ref() {
                return false;
            }
            match entry {
                Some(e) => learnt.remote.insert(name.clone(), e),
                None => learnt.remote.remove(name),
            };
            true
        }
    }
}

/// Tracks remote APIServices; true when an entry was dropped (a deleted or now local one).
fn reconcile(
    snapshot: &Snapshot,
    tracked: &mut HashMap<String, Tracked>,
    schedule: &mut Schedule<Source>,
    learnt: &mut Learnt,
) -> bool {
    if !snapshot.synced {
        return false;
    }
    let now = Instant::now();
    for (name, api) in &snapshot.items {
        if strategy::spec(api).service.is_none() {
            continue;
        }
        let usable = strategy::is_available(api);
        let key = Source::ApiService(name.clone());
        match tracked.get_mut(name) {
            Some(t) => {
                if t.api.spec != api.spec || (usable && !t.usable) {
                    schedule.due_at(key, now);
                }
                t.api = api.clone();
                t.usable = usable;
            }
            None => {
                tracked.insert(
                    name.clone(),
                    Tracked {
                        api: api.clone(),
                        usable,
                    },
                );
                schedule.due_at(key, now);
            }
        }
    }
    let gone: Vec<String> = tracked
        .iter()
        .filter(|(n, _)| {
            snapshot
                .items
                .get(*n)
                .is_none_or(|a| strategy::spec(a).service.is_none())
        })
        .map(|(n, _)| n.clone())
        .collect();
    let mut changed = false;
    for name in gone {
        tracked.remove(&name);
        schedule.remove(&Source::ApiService(name.clone()));
        changed |= learnt.remote.remove(&name).is_some();
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
        APIServiceCondition, APIServiceSpec, ServiceReference,
    };
    use proxy::OpenApiV3Path;
    use serde_json::Value;

    fn api(name: &str, available: bool) -> Arc<APIService> {
        let (version, group) = name.split_once('.').unwrap_or((name, ""));
        let mut obj = APIService {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(APIServiceSpec {
                group: Some(group.into()),
                version: Some(version.into()),
                group_priority_minimum: 100,
                version_priority: 10,
                service: Some(ServiceReference {
                    namespace: Some("ns".into()),
                    name: Some("svc".into()),
                    port: Some(443),
                }),
                ..APIServiceSpec::default()
            }),
            status: None,
        };
        strategy::set_condition(
            &mut obj,
            APIServiceCondition {
                type_: "Available".into(),
                status: if available { "True" } else { "False" }.into(),
                ..APIServiceCondition::default()
            },
        );
        Arc::new(obj)
    }

    fn snapshot(items: &[Arc<APIService>]) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            resource_version: "1".into(),
            items: items
                .iter()
                .map(|a| (a.metadata.name.clone().unwrap_or_default(), a.clone()))
                .collect(),
            synced: true,
        })
    }

    fn index(keys: &[(&str, &str)]) -> OpenApiV3Index {
        let mut i = OpenApiV3Index::default();
        for (key, hash) in keys {
            i.paths.insert(
                (*key).into(),
                OpenApiV3Path {
                    server_relative_url: format!("/openapi/v3/{key}?hash={hash}"),
                },
            );
        }
        i
    }

    #[derive(Default)]
    struct FakeFetcher {
        failing: Mutex<bool>,
        calls: Mutex<Vec<(String, Instant)>>,
    }

    impl IndexFetcher for Arc<FakeFetcher> {
        fn fetch_apiservice(&self, api: Arc<APIService>) -> BoxFuture<IndexResult> {
            let me = self.clone();
            Box::pin(async move {
                let name = api.metadata.name.clone().unwrap_or_default();
                me.calls.lock().unwrap().push((name, Instant::now()));
                if *me.failing.lock().unwrap() {
                    return Err("connection refused".into());
                }
                // A backend also lists paths it does not own; only its own group-version counts.
                Ok(Some(index(&[("apis/a.io/v1", "A1"), ("version", "X")])))
            })
        }
        fn fetch_delegate(&self) -> Option<BoxFuture<IndexResult>> {
            let me = self.clone();
            Some(Box::pin(async move {
                me.calls
                    .lock()
                    .unwrap()
                    .push(("<delegate>".into(), Instant::now()));
                Ok(Some(index(&[("api/v1", "D"), ("version", "D")])))
            }))
        }
    }

    fn paths(rx: &watch::Receiver<Arc<OpenApiRoutes>>) -> Vec<String> {
        let v: Value = serde_json::from_slice(&rx.borrow().index).unwrap_or_default();
        v["paths"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn sources_merge_refresh_every_minute_and_back_off() {
        let own = OpenApi::build();
        let fetcher = Arc::new(FakeFetcher::default());
        let (snapshots, apiservices) = watch::channel(snapshot(&[api("v1.a.io", false)]));
        let (publish, published) = watch::channel(Arc::new(OpenApiRoutes::local(&own)));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(
            OpenApiController {
                config: OpenApiConfig::default(),
                fetcher: Arc::new(fetcher.clone()),
                own,
                apiservices,
                publish,
                shutdown: shutdown_rx,
            }
            .run(),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Not Available yet: only the delegate's entries.
        assert_eq!(
            paths(&published),
            ["api/v1", "apis/apiregistration.k8s.io/v1", "version"]
        );
        snapshots.send_replace(snapshot(&[api("v1.a.io", true)]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            paths(&published),
            [
                "api/v1",
                "apis/a.io/v1",
                "apis/apiregistration.k8s.io/v1",
                "version"
            ]
        );
        assert_eq!(
            published.borrow().owners["version"],
            crate::openapi::OpenApiOwner::Delegate
        );
        let count = |name: &str| {
            fetcher
                .calls
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| n == name)
                .count()
        };
        assert_eq!(count("v1.a.io"), 1);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(count("v1.a.io"), 2);
        assert_eq!(count("<delegate>"), 2);
        // Failures keep the entries and back off: 60 s, then 120 s.
        *fetcher.failing.lock().unwrap() = true;
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(count("v1.a.io"), 3);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(count("v1.a.io"), 4);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(count("v1.a.io"), 4, "the second retry waits 120 s");
        assert!(paths(&published).contains(&"apis/a.io/v1".to_owned()));
        // Deleted: its entry goes.
        snapshots.send_replace(snapshot(&[]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!paths(&published).contains(&"apis/a.io/v1".to_owned()));
        shutdown.send_replace(true);
        assert!(task.await.is_ok());
    }
}
