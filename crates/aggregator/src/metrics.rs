//! `/metrics` in Prometheus text format: upstream's request counter and latency histogram,
//! in-flight and long-running (watch) gauges, and the aggregator's own series.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Upstream's `apiserver_request_duration_seconds` buckets.
const BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

fn histogram() -> Histogram {
    Histogram::default()
}

/// A classic histogram of [`BUCKETS`] whose observations are a few relaxed atomic adds:
/// prometheus-client's takes a lock per observation, once per request here.
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug, Default)]
struct HistogramCells {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    /// The sum, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// Records one value.
    pub fn observe(&self, v: f64) {
        let cells = &self.0;
        let i = BUCKETS
            .iter()
            .position(|upper| v <= *upper)
            .unwrap_or(BUCKETS.len());
        cells.buckets[i].fetch_add(1, Ordering::Relaxed);
        cells.count.fetch_add(1, Ordering::Relaxed);
        let _ = cells
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let cells = &self.0;
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(cells.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(
            f64::from_bits(cells.sum.load(Ordering::Relaxed)),
            cells.count.load(Ordering::Relaxed),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// FNV-1a: the per-thread series cache below hashes short label values per request.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// The two series one finished request updates, as the families hold them.
struct RequestSeries {
    metrics: u64,
    verb: String,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    code: u16,
    duration: Histogram,
    count: Counter,
}

/// Cached series per worker thread, by a hash of their labels: recording a request then takes
/// no lock and allocates nothing (the families' maps are read-locked and keyed by owned label
/// vectors). Bounded: cleared when it grows past [`SERIES_CACHE_LIMIT`].
type SeriesCache = HashMap<u64, Vec<RequestSeries>, BuildHasherDefault<Fnv>>;

const SERIES_CACHE_LIMIT: usize = 4096;

thread_local! {
    static SERIES: RefCell<SeriesCache> = RefCell::default();
}

/// Distinguishes [`Metrics`] instances in the per-thread cache (tests run several).
static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(1);

/// All series. Cheap to share (`Arc`); every metric is atomic or a lock-striped family.
pub struct Metrics {
    id: u64,
    registry: Registry,
    requests: Family<Labels, Counter>,
    durations: Family<Labels, Histogram, fn() -> Histogram>,
    inflight: Family<Labels, Gauge>,
    inflight_readonly: Gauge,
    inflight_mutating: Gauge,
    watches: Gauge,
    watch_count: AtomicI64,
    discovery_aggregations: Counter,
    unavailable: Family<Labels, Gauge>,
    /// `aggregator_unavailable_apiservice_total{name,reason}`, written by hand in the 0.0.4
    /// text format: prometheus-client names a counter family after its samples without
    /// `_total`, which would clash with the gauge `aggregator_unavailable_apiservice`.
    unavailable_total: Mutex<BTreeMap<(String, String), u64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Decrements the watch gauge when dropped.
#[derive(Debug)]
pub struct WatchGuard(Arc<Metrics>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.watches.dec();
        self.0.watch_count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Decrements an in-flight gauge when dropped.
pub struct InflightGuard(Gauge);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Registers every series.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, subresource and HTTP response code.",
            requests.clone(),
        );
        let durations = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource and subresource.",
            durations.clone(),
        );
        let inflight = Family::<Labels, Gauge>::default();
        registry.register(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per request kind in last second.",
            inflight.clone(),
        );
        let watches = Gauge::default();
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches).",
            watches.clone(),
        );
        let discovery_aggregations = Counter::default();
        registry.register(
            "aggregator_discovery_aggregation_count",
            "Counter of number of times discovery was aggregated",
            discovery_aggregations.clone(),
        );
        let unavailable = Family::<Labels, Gauge>::default();
        registry.register(
            "aggregator_unavailable_apiservice",
            "Gauge of APIServices which are marked as unavailable broken down by APIService name.",
            unavailable.clone(),
        );
        let inflight_readonly =
            inflight.get_or_create_owned(&vec![("request_kind", "readOnly".to_owned())]);
        let inflight_mutating =
            inflight.get_or_create_owned(&vec![("request_kind", "mutating".to_owned())]);
        Metrics {
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            durations,
            inflight,
            inflight_readonly,
            inflight_mutating,
            watches,
            watch_count: AtomicI64::new(0),
            discovery_aggregations,
            unavailable,
            unavailable_total: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records a finished request.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        verb: &str,
        group: &str,
        version: &str,
        resource: &str,
        subresource: &str,
        code: u16,
        seconds: f64,
    ) {
        let mut hasher = Fnv::default();
        for part in [verb, group, version, resource, subresource] {
            hasher.write(part.as_bytes());
            hasher.write_u8(0xff);
        }
        hasher.write_u16(code);
        hasher.write_u64(self.id);
        let key = hasher.finish();
        SERIES.with(|cache| {
            let mut cache = cache.borrow_mut();
            let found = cache.get(&key).and_then(|list| {
                list.iter().find(|s| {
                    s.metrics == self.id
                        && s.code == code
                        && s.verb == verb
                        && s.group == group
                        && s.version == version
                        && s.resource == resource
                        && s.subresource == subresource
                })
            });
            if let Some(series) = found {
                series.duration.observe(seconds);
                series.count.inc();
                return;
            }
            let base: Labels = vec![
                ("verb", verb.to_ascii_uppercase()),
                ("group", group.to_owned()),
                ("version", version.to_owned()),
                ("resource", resource.to_owned()),
                ("subresource", subresource.to_owned()),
            ];
            let duration = self.durations.get_or_create_owned(&base);
            let mut with_code = base;
            with_code.push(("code", code.to_string()));
            let count = self.requests.get_or_create_owned(&with_code);
            duration.observe(seconds);
            count.inc();
            if cache.len() >= SERIES_CACHE_LIMIT {
                cache.clear();
            }
            cache.entry(key).or_default().push(RequestSeries {
                metrics: self.id,
                verb: verb.to_owned(),
                group: group.to_owned(),
                version: version.to_owned(),
                resource: resource.to_owned(),
                subresource: subresource.to_owned(),
                code,
                duration,
                count,
            });
        });
    }

    /// Counts an in-flight request of `kind` (`readOnly` or `mutating`) until the guard drops.
    pub fn inflight(&self, kind: &'static str) -> InflightGuard {
        let g = match kind {
            "readOnly" => self.inflight_readonly.clone(),
            "mutating" => self.inflight_mutating.clone(),
            other => self
                .inflight
                .get_or_create_owned(&vec![("request_kind", other.to_owned())]),
        };
        g.inc();
        InflightGuard(g)
    }

    /// Counts a running watch until the guard drops.
    pub fn watch_guard(self: &Arc<Self>) -> WatchGuard {
        self.watches.inc();
        self.watch_count.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self.clone())
    }

    /// Running watches.
    pub fn watches(&self) -> i64 {
        self.watch_count.load(Ordering::Relaxed)
    }

    /// Discovery was recomputed.
    pub fn discovery_aggregated(&self) {
        self.discovery_aggregations.inc();
    }

    /// Sets `aggregator_unavailable_apiservice{name}` (1 unavailable, 0 available).
    pub fn set_unavailable(&self, name: &str, unavailable: bool) {
        self.unavailable
            .get_or_create(&vec![("name", name.to_owned())])
            .set(i64::from(unavailable));
    }

    /// Drops the series of a deleted APIService.
    pub fn forget_apiservice(&self, name: &str) {
        self.unavailable.remove(&vec![("name", name.to_owned())]);
    }

    /// Counts a flip of APIService `name` from available to unavailable with `reason`
    /// (`aggregator_unavailable_apiservice_total`, upstream-behaviour.md §2.3).
    pub fn unavailable_transition(&self, name: &str, reason: &str) {
        let mut counts = match self.unavailable_total.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        *counts
            .entry((name.to_owned(), reason.to_owned()))
            .or_default() += 1;
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        let counts = match self.unavailable_total.lock() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let mut extra = String::from(
            "# HELP aggregator_unavailable_apiservice_total Counter of APIServices which are marked as unavailable broken down by APIService name and reason.\n\
             # TYPE aggregator_unavailable_apiservice_total counter\n",
        );
        for ((name, reason), n) in &counts {
            let _ = writeln!(
                extra,
                "aggregator_unavailable_apiservice_total{{name=\"{}\",reason=\"{}\"}} {n}",
                escape_label(name),
                escape_label(reason)
            );
        }
        // Before the OpenMetrics terminator, which ends the exposition for parsers that know it.
        match s.rfind("# EOF") {
            Some(at) => s.insert_str(at, &extra),
            None => s.push_str(&extra),
        }
        s
    }
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_series() {
        let m = Arc::new(Metrics::new());
        m.request(
            "get",
            "apiregistration.k8s.io",
            "v1",
            "apiservices",
            "",
            200,
            0.01,
        );
        let g = m.inflight("readOnly");
        let w = m.watch_guard();
        assert_eq!(m.watches(), 1);
        m.set_unavailable("v1.x", true);
        let text = m.encode();
        assert!(text.contains("apiserver_request_total{verb=\"GET\",group=\"apiregistration.k8s.io\",version=\"v1\",resource=\"apiservices\",subresource=\"\",code=\"200\"} 1"), "{text}");
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(
            text.contains("apiserver_current_inflight_requests{request_kind=\"readOnly\"} 1"),
            "{text}"
        );
        assert!(text.contains("apiserver_longrunning_requests 1"), "{text}");
        assert!(
            text.contains("aggregator_unavailable_apiservice{name=\"v1.x\"} 1"),
            "{text}"
        );
        m.unavailable_transition("v1.x", "FailedDiscoveryCheck");
        m.unavailable_transition("v1.x", "FailedDiscoveryCheck");
        m.unavailable_transition("v1.\"q\"", "MissingEndpoints");
        let text = m.encode();
        assert!(
            text.contains("aggregator_unavailable_apiservice_total{name=\"v1.x\",reason=\"FailedDiscoveryCheck\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("{name=\"v1.\\\"q\\\"\",reason=\"MissingEndpoints\"} 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        drop((g, w));
        assert_eq!(m.watches(), 0);
        assert!(
            m.encode()
                .contains("apiserver_current_inflight_requests{request_kind=\"readOnly\"} 0")
        );
    }
}
