//! The availability controller (upstream-behaviour.md §2): keeps every APIService's
//! `Available` condition true to what its backend does.
//!
//! One loop owns the timetable. A remote APIService is probed when it appears or its spec
//! changes, every 30 s, when the Service resolver publishes a new snapshot, and when the proxy
//! could not reach its backend; a failing one is probed again sooner (1 s doubling up to 30 s),
//! as upstream's rate-limited work queue re-queues failures. Local APIServices get
//! `True/Local`. At most 5 jobs run at once and at most one per APIService, so each object has
//! one writer here; the write compares before writing and only lands while the spec is the one
//! probed, so several replicas on one store agree without fighting.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIServiceCondition;
use proxy::{Availability, AvailabilityReason, ConditionStatus, Engine};
use store::APIService;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::schedule::{Schedule, sleep_until};
use crate::forward::BoxFuture;
use crate::informer::Snapshot;
use crate::metrics::Metrics;
use crate::registry::StatusWriter;
use crate::registry::strategy::{self, AVAILABLE};

/// The field manager of the controller's status writes.
pub const MANAGER: &str = "kube-aggregator-availability-controller";

/// Timings and concurrency. By default upstream's: 30 s period, 5 workers; failures retried
/// after 1 s, doubling up to 30 s; a proxy-reported failure re-probes at most every 2 s.
#[derive(Debug, Clone)]
pub struct AvailabilityConfig {
    /// How often each APIService is checked. By default 30 s.
    pub period: Duration,
    /// Checks running at once. By default 5.
    pub workers: usize,
    /// First retry after a failed check. By default 1 s.
    pub retry_initial: Duration,
    /// Longest retry interval. By default 30 s.
    pub retry_max: Duration,
    /// Re-checks asked for by the proxy run at most this often per APIService. By default
    /// 2 s.
    pub recheck_min_interval: Duration,
}

impl Default for AvailabilityConfig {
    fn default() -> Self {
        AvailabilityConfig {
            period: Duration::from_secs(30),
            workers: 5,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            recheck_min_interval: Duration::from_secs(2),
        }
    }
}

/// Checks one remote APIService.
pub trait Prober: Send + Sync + 'static {
    /// The availability of `api`'s backend. Never fails: every outcome is an [`Availability`].
    fn probe(&self, api: Arc<APIService>) -> BoxFuture<Availability>;
    /// `name` was deleted: drop what is cached for it.
    fn forget(&self, _name: &str) {}
}

/// Records one result (the status write and the metrics).
pub trait ConditionSink: Send + Sync + 'static {
    /// Stores `result` for `api` (the object as the controller last saw it).
    fn record(&self, api: Arc<APIService>, result: Availability) -> BoxFuture<()>;
}

/// Asks the controller to check an APIService now (the proxy sends its name when the backend
/// could not be reached). Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct Recheck(mpsc::Sender<String>);

impl Recheck {
    /// Asks for a check of `name`; dropped when the controller is busy with many requests.
    pub fn request(&self, name: &str) {
        let _ = self.0.try_send(name.to_owned());
    }
}

/// The controller's end of [`recheck_channel`].
#[derive(Debug)]
pub struct RecheckReceiver(mpsc::Receiver<String>);

/// A [`Recheck`] handle for the forwarder and the receiver for the controller.
pub fn recheck_channel() -> (Recheck, RecheckReceiver) {
    let (tx, rx) = mpsc::channel(256);
    (Recheck(tx), RecheckReceiver(rx))
}

/// Probes through the proxy engine, with the TLS settings the proxy itself uses.
#[derive(Debug, Clone)]
pub struct EngineProber(pub Engine);

impl Prober for EngineProber {
    fn probe(&self, api: Arc<APIService>) -> BoxFuture<Availability> {
        let engine = self.0.clone();
        Box::pin(async move {
            let spec = strategy::spec(&api);
            let group = spec.group.clone().unwrap_or_default();
            let version = spec.version.clone().unwrap_or_default();
            match engine.backend_for_apiservice(&api) {
                Ok(Some(backend)) => engine.check_availability(&backend, &group, &version).await,
                Ok(None) => Availability::local(),
                // An unusable caBundle: nothing can be sent, and the proxy answers 500.
                Err(error) => Availability {
                    status: ConditionStatus::False,
                    reason: AvailabilityReason::FailedDiscoveryCheck,
                    message: error.to_string(),
                },
            }
        })
    }

    fn forget(&self, name: &str) {
        self.0.forget_apiservice(name);
    }
}

/// Writes `status.conditions[Available]` through the registry and keeps
/// `aggregator_unavailable_apiservice_total`. (The gauge follows the stored status and is kept
/// by the discovery deriver, so every replica exports the same value.)
#[derive(Debug, Clone)]
pub struct StatusSink {
    /// The `/status` writer.
    pub writer: StatusWriter,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

fn condition(result: &Availability) -> APIServiceCondition {
    APIServiceCondition {
        type_: AVAILABLE.into(),
        status: result.status.as_str().into(),
        reason: Some(result.reason.as_str().into()),
        message: Some(result.message.clone()),
        last_transition_time: None,
    }
}

/// Whether the stored condition already says `result` (then nothing is written, §2.2).
fn already_recorded(api: &APIService, result: &Availability) -> bool {
    strategy::available_condition(api).is_some_and(|c| {
        c.status == result.status.as_str()
            && c.reason.as_deref() == Some(result.reason.as_str())
            && c.message.as_deref() == Some(result.message.as_str())
    })
}

impl ConditionSink for StatusSink {
    fn record(&self, api: Arc<APIService>, result: Availability) -> BoxFuture<()> {
        let sink = self.clone();
        Box::pin(async move {
            if already_recorded(&api, &result) {
                return;
            }
            let name = api.metadata.name.clone().unwrap_or_default();
            let probed_spec = api.spec.clone();
            let update = sink
                .writer
                .update_condition(&name, condition(&result), MANAGER, |stored| {
                    stored.spec == probed_spec
                })
                .await;
            match update {
                Ok(Some(update)) if update.written => {
                    let was_available =
                        update.previous.as_ref().is_some_and(|c| c.status == "True");
                    let m = proxy::metrics_update(was_available, &result);
                    if let Some(reason) = m.count_transition {
                        sink.metrics.unavailable_transition(&name, reason.as_str());
                    }
                    if was_available != result.is_available() || update.previous.is_none() {
                        tracing::info!(
                            apiservice = %name,
                            status = result.status.as_str(),
                            reason = result.reason.as_str(),
                            message = %result.message,
                            "APIService availability changed"
                        );
                    }
                }
                // Unchanged (another replica wrote it first), or the spec changed meanwhile:
                // the new spec is probed next.
                Ok(_) => {}
                Err(status) if status.code == 404 => {}
                Err(status) => tracing::warn!(
                    apiservice = %name,
                    error = %status.message,
                    "writing the Available condition failed; retrying at the next check"
                ),
            }
        })
    }
}

struct Tracked {
    api: Arc<APIService>,
    remote: bool,
    failures: u32,
    last_recheck: Option<Instant>,
}

/// The controller. Build it, then `tokio::spawn(controller.run())`.
pub struct AvailabilityController<T> {
    /// Timings.
    pub config: AvailabilityConfig,
    /// Probes remote APIServices.
    pub prober: Arc<dyn Prober>,
    /// Records results.
    pub sink: Arc<dyn ConditionSink>,
    /// The APIServices ([`crate::Server::apiservices`]).
    pub apiservices: watch::Receiver<Arc<Snapshot>>,
    /// Changes of the Service resolver or of the proxy client certificate (e.g.
    /// `ServiceMapResolver::subscribe`): every remote APIService is probed again.
    pub resolver_changes: Option<watch::Receiver<T>>,
    /// Re-check requests from the proxy.
    pub rechecks: Option<RecheckReceiver>,
    /// Turns true at shutdown ([`crate::Server::shutdown_watch`]).
    pub shutdown: watch::Receiver<bool>,
}

impl<T: Send + Sync + 'static> AvailabilityController<T> {
    /// Runs until shutdown (or until the APIService watch closes).
    pub async fn run(self) {
        let AvailabilityController {
            config,
            prober,
            sink,
            mut apiservices,
            mut resolver_changes,
            rechecks,
            mut shutdown,
        } = self;
        let mut rechecks = rechecks.map(|r| r.0);
        let workers = config.workers.max(1);
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        let mut schedule: Schedule<String> = Schedule::default();
        let mut jobs: JoinSet<bool> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        let snapshot = apiservices.borrow_and_update().clone();
        reconcile(&snapshot, &mut tracked, &mut schedule, prober.as_ref());
        loop {
            if *shutdown.borrow() {
                break;
            }
            let now = Instant::now();
            for name in schedule.take_due(now, workers.saturating_sub(jobs.len())) {
                let Some(t) = tracked.get(&name) else {
                    continue;
                };
                let (api, remote) = (t.api.clone(), t.remote);
                let (prober, sink) = (prober.clone(), sink.clone());
                let handle = jobs.spawn(async move {
                    let result = if remote {
                        prober.probe(api.clone()).await
                    } else {
                        Availability::local()
                    };
                    let available = result.is_available();
                    sink.record(api, result).await;
                    available
                });
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
                    reconcile(&snapshot, &mut tracked, &mut schedule, prober.as_ref());
                }
                changed = next_change(&mut resolver_changes) => {
                    if changed {
                        let now = Instant::now();
                        for (name, t) in &tracked {
                            if t.remote {
                                schedule.due_at(name.clone(), now);
                            }
                        }
                    } else {
                        resolver_changes = None;
                    }
                }
                name = next_recheck(&mut rechecks) => match name {
                    Some(name) => {
                        let now = Instant::now();
                        // Many requests fail at once when a backend dies: one probe is enough.
                        if let Some(t) = tracked.get_mut(&name)
                            && t.remote
                            && t.last_recheck.is_none_or(|s| now.duration_since(s) >= config.recheck_min_interval)
                        {
                            t.last_recheck = Some(now);
                            schedule.due_at(name, now);
                        }
                    }
                    None => rechecks = None,
                },
                Some(done) = jobs.join_next_with_id(), if !jobs.is_empty() => {
                    let (id, available) = match done {
                        Ok((id, available)) => (id, available),
                        // A panicking probe counts as a failure; the loop keeps going.
                        Err(e) => (e.id(), false),
                    };
                    let Some(name) = running.remove(&id) else { continue };
                    let now = Instant::now();
                    let next = match tracked.get_mut(&name) {
                        Some(t) if t.remote && !available => {
                            t.failures = t.failures.saturating_add(1);
                            now + retry_delay(&config, t.failures)
                        }
                        Some(t) => {
                            t.failures = 0;
                            now + config.period
                        }
                        None => now + config.period,
                    };
                    schedule.finished(&name, now, next);
                }
                _ = sleep_until(wake) => {}
            }
        }
        jobs.abort_all();
    }
}

/// The delay before re-checking after `failures` failures in a row: `retry_initial` doubling,
/// capped at `retry_max` and the period.
fn retry_delay(config: &AvailabilityConfig, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    config
        .retry_initial
        .saturating_mul(1u32 << exponent)
        .min(config.retry_max)
        .min(config.period)
}

async fn next_change<T>(rx: &mut Option<watch::Receiver<T>>) -> bool {
    match rx {
        Some(rx) => rx.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

async fn next_recheck(rx: &mut Option<mpsc::Receiver<String>>) -> Option<String> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Brings the tracked set in line with a snapshot: new APIServices and changed specs are due
/// now; deleted ones are forgotten.
fn reconcile(
    snapshot: &Snapshot,
    tracked: &mut HashMap<String, Tracked>,
    schedule: &mut Schedule<String>,
    prober: &dyn Prober,
) {
    if !snapshot.synced {
        return;
    }
    let now = Instant::now();
    for (name, api) in &snapshot.items {
        let remote = strategy::spec(api).service.is_some();
        match tracked.get_mut(name) {
            Some(t) if t.api.spec == api.spec => t.api = api.clone(),
            Some(t) => {
                t.api = api.clone();
                t.remote = remote;
                t.failures = 0;
                schedule.due_at(name.clone(), now);
            }
            None => {
                tracked.insert(
                    name.clone(),
                    Tracked {
                        api: api.clone(),
                        remote,
                        failures: 0,
                        last_recheck: None,
                    },
                );
                schedule.due_at(name.clone(), now);
            }
        }
    }
    let mut gone: Vec<String> = tracked
        .keys()
        .filter(|n| !snapshot.items.contains_key(*n))
        .cloned()
        .collect();
    gone.sort();
    for name in gone {
        tracked.remove(&name);
        schedule.remove(&name);
        prober.forget(&name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
        APIServiceSpec, ServiceReference,
    };

    fn api(name: &str, remote: bool, port: i32) -> Arc<APIService> {
        let (version, group) = name.split_once('.').unwrap_or((name, ""));
        Arc::new(APIService {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(APIServiceSpec {
                group: Some(group.into()),
                version: Some(version.into()),
                group_priority_minimum: 100,
                version_priority: 10,
                service: remote.then(|| ServiceReference {
                    namespace: Some("ns".into()),
                    name: Some("svc".into()),
                    port: Some(port),
                }),
                ..APIServiceSpec::default()
            }),
            status: None,
        })
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

    /// Answers from a switchable table and counts probes per name.
    #[derive(Default)]
    struct FakeProber {
        up: Mutex<HashMap<String, bool>>,
        probes: Mutex<Vec<(String, Instant)>>,
        forgotten: Mutex<Vec<String>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        delay: Duration,
    }

    impl FakeProber {
        fn count(&self, name: &str) -> usize {
            self.probes
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| n == name)
                .count()
        }
        fn set(&self, name: &str, up: bool) {
            self.up.lock().unwrap().insert(name.into(), up);
        }
    }

    impl Prober for Arc<FakeProber> {
        fn probe(&self, api: Arc<APIService>) -> BoxFuture<Availability> {
            let me = self.clone();
            Box::pin(async move {
                let name = api.metadata.name.clone().unwrap_or_default();
                me.probes
                    .lock()
                    .unwrap()
                    .push((name.clone(), Instant::now()));
                let n = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                me.max_in_flight.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(me.delay).await;
                me.in_flight.fetch_sub(1, Ordering::SeqCst);
                if me.up.lock().unwrap().get(&name).copied().unwrap_or(true) {
                    Availability {
                        status: ConditionStatus::True,
                        reason: AvailabilityReason::Passed,
                        message: "all checks passed".into(),
                    }
                } else {
                    Availability {
                        status: ConditionStatus::False,
                        reason: AvailabilityReason::FailedDiscoveryCheck,
                        message: "connect: connection refused".into(),
                    }
                }
            })
        }
        fn forget(&self, name: &str) {
            self.forgotten.lock().unwrap().push(name.into());
        }
    }

    #[derive(Default)]
    struct FakeSink {
        records: Mutex<Vec<(String, String, String)>>,
    }

    impl ConditionSink for Arc<FakeSink> {
        fn record(&self, api: Arc<APIService>, result: Availability) -> BoxFuture<()> {
            let me = self.clone();
            Box::pin(async move {
                me.records.lock().unwrap().push((
                    api.metadata.name.clone().unwrap_or_default(),
                    result.status.as_str().into(),
                    result.reason.as_str().into(),
                ));
            })
        }
    }

    struct Harness {
        prober: Arc<FakeProber>,
        sink: Arc<FakeSink>,
        snapshots: watch::Sender<Arc<Snapshot>>,
        resolver: watch::Sender<u64>,
        recheck: Recheck,
        shutdown: watch::Sender<bool>,
        task: tokio::task::JoinHandle<()>,
    }

    fn start(items: &[Arc<APIService>], delay: Duration) -> Harness {
        let prober = Arc::new(FakeProber {
            delay,
            ..FakeProber::default()
        });
        let sink = Arc::new(FakeSink::default());
        let (snapshots, apiservices) = watch::channel(snapshot(items));
        let (resolver, resolver_rx) = watch::channel(0u64);
        let (recheck, rechecks) = recheck_channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let controller = AvailabilityController {
            config: AvailabilityConfig::default(),
            prober: Arc::new(prober.clone()),
            sink: Arc::new(sink.clone()),
            apiservices,
            resolver_changes: Some(resolver_rx),
            rechecks: Some(rechecks),
            shutdown: shutdown_rx,
        };
        let task = tokio::spawn(controller.run());
        Harness {
            prober,
            sink,
            snapshots,
            resolver,
            recheck,
            shutdown,
            task,
        }
    }

    async fn advance(d: Duration) {
        tokio::time::sleep(d).await;
    }

    #[tokio::test(start_paused = true)]
    async fn probes_on_add_every_period_and_on_resolver_changes() {
        let h = start(
            &[api("v1.a.io", true, 443), api("v1.local.io", false, 0)],
            Duration::from_millis(10),
        );
        advance(Duration::from_millis(100)).await;
        assert_eq!(h.prober.count("v1.a.io"), 1);
        assert_eq!(
            h.prober.count("v1.local.io"),
            0,
            "local ones are not probed"
        );
        let records = h.sink.records.lock().unwrap().clone();
        assert!(records.contains(&("v1.local.io".into(), "True".into(), "Local".into())));
        assert!(records.contains(&("v1.a.io".into(), "True".into(), "Passed".into())));
        advance(Duration::from_secs(29)).await;
        assert_eq!(h.prober.count("v1.a.io"), 1);
        advance(Duration::from_secs(2)).await;
        assert_eq!(h.prober.count("v1.a.io"), 2, "every 30 s");
        h.resolver.send_replace(1);
        advance(Duration::from_millis(100)).await;
        assert_eq!(
            h.prober.count("v1.a.io"),
            3,
            "a new resolver snapshot re-probes"
        );
        // A spec change probes at once; deletion forgets.
        h.snapshots
            .send_replace(snapshot(&[api("v1.a.io", true, 8443)]));
        advance(Duration::from_millis(100)).await;
        assert_eq!(h.prober.count("v1.a.io"), 4);
        h.snapshots.send_replace(snapshot(&[]));
        advance(Duration::from_millis(100)).await;
        // The local one went with the first new snapshot, the remote one with the second.
        assert_eq!(
            *h.prober.forgotten.lock().unwrap(),
            ["v1.local.io", "v1.a.io"]
        );
        advance(Duration::from_secs(60)).await;
        assert_eq!(h.prober.count("v1.a.io"), 4, "deleted ones are not probed");
        h.shutdown.send_replace(true);
        assert!(h.task.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn failures_retry_with_backoff_and_rechecks_are_rate_limited() {
        let h = start(&[api("v1.a.io", true, 443)], Duration::from_millis(10));
        h.prober.set("v1.a.io", false);
        advance(Duration::from_millis(100)).await;
        assert_eq!(h.prober.count("v1.a.io"), 1);
        // Retries after 1 s, 2 s, 4 s: at ~1.1 s, ~3.1 s, ~7.1 s.
        advance(Duration::from_secs(1)).await;
        assert_eq!(h.prober.count("v1.a.io"), 2);
        advance(Duration::from_secs(2)).await;
        assert_eq!(h.prober.count("v1.a.io"), 3);
        h.prober.set("v1.a.io", true);
        advance(Duration::from_secs(4)).await;
        assert_eq!(h.prober.count("v1.a.io"), 4);
        let last = h.sink.records.lock().unwrap().last().cloned();
        assert_eq!(
            last,
            Some(("v1.a.io".into(), "True".into(), "Passed".into()))
        );
        // Back to the 30 s period after a success.
        advance(Duration::from_secs(20)).await;
        assert_eq!(h.prober.count("v1.a.io"), 4);
        // The proxy saw a failure: probe now, but not more often than every 2 s.
        h.recheck.request("v1.a.io");
        advance(Duration::from_millis(100)).await;
        assert_eq!(h.prober.count("v1.a.io"), 5);
        h.recheck.request("v1.a.io");
        h.recheck.request("unknown");
        advance(Duration::from_millis(100)).await;
        assert_eq!(h.prober.count("v1.a.io"), 5);
        advance(Duration::from_secs(2)).await;
        h.recheck.request("v1.a.io");
        advance(Duration::from_millis(100)).await;
        assert_eq!(h.prober.count("v1.a.io"), 6);
        h.shutdown.send_replace(true);
        assert!(h.task.await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_five_probes_run_at_once_and_one_per_apiservice() {
        let items: Vec<_> = (0..12)
            .map(|i| api(&format!("v1.g{i:02}.io"), true, 443))
            .collect();
        let h = start(&items, Duration::from_secs(5));
        advance(Duration::from_secs(20)).await;
        assert_eq!(h.prober.max_in_flight.load(Ordering::SeqCst), 5);
        for item in &items {
            let name = item.metadata.name.clone().unwrap_or_default();
            assert_eq!(h.prober.count(&name), 1, "{name}");
        }
        // Asked for again while running: one more probe right after, not two at once.
        h.resolver.send_replace(1);
        h.resolver.send_replace(2);
        advance(Duration::from_millis(10)).await;
        h.resolver.send_replace(3);
        advance(Duration::from_secs(40)).await;
        let name = "v1.g00.io";
        assert!(
            h.prober.count(name) >= 2 && h.prober.count(name) <= 4,
            "{}",
            h.prober.count(name)
        );
        assert_eq!(h.prober.max_in_flight.load(Ordering::SeqCst), 5);
        h.shutdown.send_replace(true);
        assert!(h.task.await.is_ok());
    }

    #[test]
    fn retry_delays_double_up_to_the_cap() {
        let c = AvailabilityConfig::default();
        let d: Vec<u64> = (1..=8).map(|f| retry_delay(&c, f).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(&c, u32::MAX).as_secs(), 30);
    }

    #[test]
    fn recorded_conditions_are_compared_by_status_reason_and_message() {
        let mut obj = (*api("v1.a.io", true, 443)).clone();
        let result = Availability {
            status: ConditionStatus::False,
            reason: AvailabilityReason::FailedDiscoveryCheck,
            message: "boom".into(),
        };
        assert!(!already_recorded(&obj, &result));
        strategy::set_condition(&mut obj, condition(&result));
        assert!(already_recorded(&obj, &result));
        let other = Availability {
            message: "other".into(),
            ..result.clone()
        };
        assert!(!already_recorded(&obj, &other));
    }
}
