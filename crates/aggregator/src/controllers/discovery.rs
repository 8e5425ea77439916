//! The backend discovery controller (upstream-behaviour.md §3.7): fetches each APIService's
//! resources from its backend and publishes them into [`BackendDiscovery`], which feeds the
//! aggregated `/apis`.
//!
//! An APIService is fetched when it appears or changes, when it becomes Available, and every
//! 60 s (all of them marked dirty at once, so APIServices sharing a backend share one fetch).
//! Fetches run concurrently and each is bounded by the engine (5 s), and every result is
//! published as soon as it arrives, so one slow or dead backend never delays the others. An
//! APIService that is not Available is published `Stale` with its last good resources and not
//! fetched; a deleted one is removed. Local APIServices are fetched from the delegate when
//! there is one (upstream reads them from its delegate servers).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apimachinery::discovery::Freshness;
use proxy::{Backend, BackendSpec, Engine};
use store::APIService;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::schedule::{Schedule, sleep_until};
use crate::discovery::{BackendDiscovery, FetchedVersion, GROUP};
use crate::forward::BoxFuture;
use crate::informer::Snapshot;
use crate::registry::strategy;

/// Timings and concurrency. By default 60 s (upstream v1.32) and 32 fetches at once.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// How often every APIService is fetched again. By default 60 s.
    pub period: Duration,
    /// Fetches running at once. By default 32.
    pub workers: usize,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            period: Duration::from_secs(60),
            workers: 32,
        }
    }
}

/// Fetches one APIService's resources.
pub trait DiscoveryFetcher: Send + Sync + 'static {
    /// The APIService's group-version entry; a cached document fetched after `dirty_since` may
    /// be reused. `None` when there is nothing to fetch from (a local APIService without a
    /// delegate). Never fails: a failure is a `Stale` entry with the last good resources.
    fn fetch(
        &self,
        api: Arc<APIService>,
        dirty_since: std::time::Instant,
    ) -> BoxFuture<Option<FetchedVersion>>;
    /// `api` was deleted: drop what is cached for it.
    fn forget(&self, _api: &APIService) {}
}

/// Fetches through the proxy engine: remote APIServices from their backends, local ones from
/// the delegate if any.
#[derive(Debug, Clone)]
pub struct EngineFetcher {
    /// The engine.
    pub engine: Engine,
    /// The delegate (`--delegate-url`).
    pub delegate: Option<Backend>,
}

impl EngineFetcher {
    fn backend(&self, api: &APIService) -> Result<Option<Backend>, proxy::Error> {
        match self.engine.backend_for_apiservice(api)? {
            Some(backend) => Ok(Some(backend)),
            None => Ok(self.delegate.clone()),
        }
    }
}

impl DiscoveryFetcher for EngineFetcher {
    fn fetch(
        &self,
        api: Arc<APIService>,
        dirty_since: std::time::Instant,
    ) -> BoxFuture<Option<FetchedVersion>> {
        let me = self.clone();
        Box::pin(async move {
            let (group, version) = group_version(&api);
            let backend = match me.backend(&api) {
                Ok(Some(backend)) => backend,
                Ok(None) => return None,
                Err(error) => {
                    tracing::debug!(apiservice = ?api.metadata.name, %error, "no discovery backend");
                    return Some(FetchedVersion {
                        resources: Vec::new(),
                        freshness: Freshness::Stale,
                    });
                }
            };
            let found = me
                .engine
                .fetch_discovery(&backend, &group, &version, Some(dirty_since))
                .await;
            if let Some(error) = &found.error {
                tracing::debug!(apiservice = ?api.metadata.name, %error, "discovery fetch failed");
            }
            Some(FetchedVersion {
                freshness: found.version.freshness.unwrap_or(Freshness::Stale),
                resources: found.version.resources,
            })
        })
    }

    fn forget(&self, api: &APIService) {
        let (group, version) = group_version(api);
        // Build the backend without the engine's per-name cache: the availability controller
        // drops that entry on delete, and only the destination matters here.
        let spec = match BackendSpec::from_apiservice(api) {
            Ok(Some(spec)) => spec,
            _ => return,
        };
        if let Ok(backend) = self.engine.backend(&spec) {
            self.engine.forget_discovery(&backend, &group, &version);
        }
    }
}

fn group_version(api: &APIService) -> (String, String) {
    let spec = strategy::spec(api);
    (
        spec.group.clone().unwrap_or_default(),
        spec.version.clone().unwrap_or_default(),
    )
}

/// Whether the APIService appears in `/apis` (the core `v1.` and our own group do not).
fn listed(api: &APIService) -> bool {
    let group = strategy::spec(api).group.as_deref().unwrap_or_default();
    !group.is_empty() && group != GROUP
}

/// Whether requests may be sent to it: local ones always, remote ones when `Available=True`.
fn usable(api: &APIService) -> bool {
    strategy::spec(api).service.is_none() || strategy::is_available(api)
}

struct Tracked {
    api: Arc<APIService>,
    key: (String, String),
    usable: bool,
    dirty_since: std::time::Instant,
}

/// The controller. Build it, then `tokio::spawn(controller.run())`.
pub struct DiscoveryController {
    /// Timings.
    pub config: DiscoveryConfig,
    /// Fetches.
    pub fetcher: Arc<dyn DiscoveryFetcher>,
    /// The APIServices ([`crate::Server::apiservices`]).
    pub apiservices: watch::Receiver<Arc<Snapshot>>,
    /// Where results go ([`crate::Server::backend_discovery`]).
    pub publish: watch::Sender<Arc<BackendDiscovery>>,
    /// Turns true at shutdown.
    pub shutdown: watch::Receiver<bool>,
}

impl DiscoveryController {
    /// Runs until shutdown (or until the APIService watch closes).
    pub async fn run(self) {
        let DiscoveryController {
            config,
            fetcher,
            mut apiservices,
            publish,
            mut shutdown,
        } = self;
        let workers = config.workers.max(1);
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut schedule: Schedule<String> = Schedule::default();
        let mut jobs: JoinSet<Option<FetchedVersion>> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        let mut next_resync = Instant::now() + config.period;
        let snapshot = apiservices.borrow_and_update().clone();
        reconcile(
            &snapshot,
            &mut tracked,
            &mut schedule,
            &publish,
            fetcher.as_ref(),
        );
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            for name in schedule.take_due(now, workers.saturating_sub(jobs.len())) {
                let Some(t) = tracked.get(&name) else {
                    continue;
                };
                if !t.usable {
                    // Unavailable: no request is sent (the proxy would answer 503 too).
                    mark_stale(&publish, &t.key);
                    schedule.finished(&name, now, next_resync);
                    continue;
                }
                let (fetcher, api, dirty_since) = (fetcher.clone(), t.api.clone(), t.dirty_since);
                let handle = jobs.spawn(async move { fetcher.fetch(api, dirty_since).await });
                running.insert(handle.id(), name);
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
                    reconcile(&snapshot, &mut tracked, &mut schedule, &publish, fetcher.as_ref());
                }
                Some(done) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                    let (id, fetched) = match done {
                        Ok((id, fetched)) => (id, fetched),
                        Err(e) => (e.id(), None),
                    };
                    let Some(name) = running.remove(&id) else { continue };
                    if let (Some(t), Some(mut fetched)) = (tracked.get(&name), fetched) {
                        if !t.usable {
                            fetched.freshness = Freshness::Stale;
                        }
                        set(&publish, &t.key, fetched);
                    }
                    schedule.finished(&name, Instant::now(), next_resync);
                }
                _ = sleep_until(Some(next_resync)) => {
                    let since = std::time::Instant::now();
                    let now = Instant::now();
                    for (name, t) in tracked.iter_mut() {
                        t.dirty_since = since;
                        schedule.due_at(name.clone(), now);
                    }
                    next_resync = now + config.period;
                }
                _ = sleep_until(wake) => {}
            }
        }
        jobs.abort_all();
    }
}

/// Publishes `fetched` for `key` unless it is already what is published.
fn set(
    publish: &watch::Sender<Arc<BackendDiscovery>>,
    key: &(String, String),
    fetched: FetchedVersion,
) {
    publish.send_if_modified(|d| {
        if d.versions.get(key) == Some(&fetched) {
            return false;
        }
        Arc::make_mut(d).versions.insert(key.clone(), fetched);
        true
    });
}

/// Marks `key` `Stale`, keeping its resources (absent entries are listed `Stale` already).
fn mark_stale(publish: &watch::Sender<Arc<BackendDiscovery>>, key: &(String, String)) {
    publish.send_if_modified(|d| match d.versions.get(key) {
        Some(v) if v.freshness != Freshness::Stale => {
            if let Some(v) = Arc::make_mut(d).versions.get_mut(key) {
                v.freshness = Freshness::Stale;
            }
            true
        }
        _ => false,
    });
}

fn reconcile(
    snapshot: &Snapshot,
    tracked: &mut HashMap<String, Tracked>,
    schedule: &mut Schedule<String>,
    publish: &watch::Sender<Arc<BackendDiscovery>>,
    fetcher: &dyn DiscoveryFetcher,
) {
    if !snapshot.synced {
        return;
    }
    let now = Instant::now();
    let since = std::time::Instant::now();
    for (name, api) in &snapshot.items {
        if !listed(api) {
            continue;
        }
        let now_usable = usable(api);
        match tracked.get_mut(name) {
            Some(t) => {
                let spec_changed = t.api.spec != api.spec;
                let flipped = t.usable != now_usable;
                t.api = api.clone();
                t.usable = now_usable;
                if spec_changed || flipped {
                    t.dirty_since = since;
                    schedule.due_at(name.clone(), now);
                }
            }
            None => {
                let (group, version) = group_version(api);
                tracked.insert(
                    name.clone(),
                    Tracked {
                        api: api.clone(),
                        key: (group, version),
                        usable: now_usable,
                        dirty_since: since,
                    },
                );
                schedule.due_at(name.clone(), now);
            }
        }
    }
    // The name fixes the group-version (`<version>.<group>`), so only deletion ends tracking.
    let gone: Vec<String> = tracked
        .keys()
        .filter(|n| snapshot.items.get(*n).is_none_or(|a| !listed(a)))
        .cloned()
        .collect();
    for name in gone {
        if let Some(t) = tracked.remove(&name) {
            schedule.remove(&name);
            fetcher.forget(&t.api);
            publish.send_if_modified(|d| {
                if d.versions.contains_key(&t.key) {
                    Arc::make_mut(d).versions.remove(&t.key);
                    true
                } else {
                    false
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    use apimachinery::discovery::{APIResourceDiscovery, Scope};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
        APIServiceCondition, APIServiceSpec, ServiceReference,
    };

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
                    name: Some(group.into()),
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

    fn resource(name: &str) -> APIResourceDiscovery {
        APIResourceDiscovery {
            resource: name.into(),
            response_kind: None,
            scope: Scope::Cluster,
            singular_resource: String::new(),
            verbs: vec!["get".into()],
            short_names: Vec::new(),
            categories: Vec::new(),
            subresources: Vec::new(),
        }
    }

    /// `slow.io` never answers within the test; every other group answers at once, `Stale`
    /// when marked down.
    #[derive(Default)]
    struct FakeFetcher {
        down: Mutex<Vec<String>>,
        fetches: Mutex<Vec<String>>,
        forgotten: Mutex<Vec<String>>,
    }

    impl DiscoveryFetcher for Arc<FakeFetcher> {
        fn fetch(
            &self,
            api: Arc<APIService>,
            _dirty_since: std::time::Instant,
        ) -> BoxFuture<Option<FetchedVersion>> {
            let me = self.clone();
            Box::pin(async move {
                let (group, _) = group_version(&api);
                me.fetches.lock().unwrap().push(group.clone());
                if group == "slow.io" {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let down = me.down.lock().unwrap().contains(&group);
                Some(FetchedVersion {
                    resources: vec![resource(&format!("{}s", group.replace('.', "")))],
                    freshness: if down {
                        Freshness::Stale
                    } else {
                        Freshness::Current
                    },
                })
            })
        }
        fn forget(&self, api: &APIService) {
            self.forgotten.lock().unwrap().push(group_version(api).0);
        }
    }

    fn freshness(rx: &watch::Receiver<Arc<BackendDiscovery>>, group: &str) -> Option<Freshness> {
        rx.borrow()
            .versions
            .get(&(group.to_owned(), "v1".to_owned()))
            .map(|v| v.freshness)
    }

    #[tokio::test(start_paused = true)]
    async fn results_arrive_independently_and_follow_availability() {
        let fetcher = Arc::new(FakeFetcher::default());
        let (snapshots, apiservices) =
            watch::channel(snapshot(&[api("v1.slow.io", true), api("v1.a.io", true)]));
        let (publish, published) = watch::channel(Arc::new(BackendDiscovery::default()));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(
            DiscoveryController {
                config: DiscoveryConfig::default(),
                fetcher: Arc::new(fetcher.clone()),
                apiservices,
                publish,
                shutdown: shutdown_rx,
            }
            .run(),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        // The hanging backend does not hold up the other one.
        assert_eq!(freshness(&published, "a.io"), Some(Freshness::Current));
        assert_eq!(freshness(&published, "slow.io"), None);
        // Unavailable: Stale at once, resources kept, no fetch.
        let before = fetcher.fetches.lock().unwrap().len();
        snapshots.send_replace(snapshot(&[api("v1.slow.io", true), api("v1.a.io", false)]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(freshness(&published, "a.io"), Some(Freshness::Stale));
        assert_eq!(
            published.borrow().versions[&("a.io".to_owned(), "v1".to_owned())].resources,
            [resource("aios")]
        );
        assert_eq!(fetcher.fetches.lock().unwrap().len(), before);
        // Available again: fetched at once.
        snapshots.send_replace(snapshot(&[api("v1.slow.io", true), api("v1.a.io", true)]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(freshness(&published, "a.io"), Some(Freshness::Current));
        assert_eq!(fetcher.fetches.lock().unwrap().len(), before + 1);
        // Every 60 s everything is fetched again; a failure is published Stale.
        fetcher.down.lock().unwrap().push("a.io".into());
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert_eq!(freshness(&published, "a.io"), Some(Freshness::Stale));
        // Deleted: removed from discovery and forgotten.
        snapshots.send_replace(snapshot(&[api("v1.slow.io", true)]));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(freshness(&published, "a.io"), None);
        assert_eq!(*fetcher.forgotten.lock().unwrap(), ["a.io"]);
        shutdown.send_replace(true);
        assert!(task.await.is_ok());
    }
}
