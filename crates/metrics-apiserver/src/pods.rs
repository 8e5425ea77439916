//! PodMetrics from a JSON file (`--pod-metrics-file`), reloaded when it changes; one writer
//! publishing over a `watch` channel, as the node sampler does.
//!
//! The file is a `PodMetricsList` as `kubectl get --raw /apis/metrics.k8s.io/v1beta1/pods`
//! prints it, so a snapshot of a real cluster can be replayed. `kind`, `apiVersion` and unknown
//! fields are ignored; `timestamp` and `window` may be left out (they default to the load time
//! and the metric resolution). Quantities are validated and written back in canonical form.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use apimachinery::validation::{
    is_dns1123_label, is_dns1123_subdomain, is_qualified_name, is_valid_label_value,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::Deserialize;
use tokio::sync::watch;

use crate::Error;
use crate::quantity::{Quantity, format_go_duration, parse_go_duration};
use crate::types::{API_VERSION, ContainerMetrics, PodMetrics};

/// The published pods, sorted by namespace then name.
pub type PodSet = Arc<Vec<PodMetrics>>;

#[derive(Deserialize)]
struct FileList {
    #[serde(default)]
    items: Vec<FilePod>,
}

#[derive(Deserialize)]
struct FilePod {
    #[serde(default)]
    metadata: FileMeta,
    timestamp: Option<String>,
    window: Option<String>,
    #[serde(default)]
    containers: Vec<FileContainer>,
}

#[derive(Deserialize, Default)]
struct FileMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
struct FileContainer {
    #[serde(default)]
    name: String,
    #[serde(default)]
    usage: BTreeMap<String, String>,
}

/// Parses and validates a pod metrics document. `loaded_at` fills missing timestamps and
/// `default_window` missing windows. The error names the JSON path of the first bad field.
///
/// ```
/// use std::time::Duration;
///
/// let pods = metrics_apiserver::pods::parse_pod_metrics(
///     r#"{"items":[{"metadata":{"name":"web-0","namespace":"shop"},
///         "containers":[{"name":"app","usage":{"cpu":"0.25","memory":"1048576Ki"}}]}]}"#,
///     jiff::Timestamp::UNIX_EPOCH,
///     Duration::from_secs(10),
/// )?;
/// assert_eq!(pods[0].containers[0].usage["cpu"], "250m");
/// assert_eq!(pods[0].containers[0].usage["memory"], "1Gi");
/// assert_eq!(pods[0].window, "10s");
/// # Ok::<(), String>(())
/// ```
pub fn parse_pod_metrics(
    text: &str,
    loaded_at: jiff::Timestamp,
    default_window: Duration,
) -> Result<Vec<PodMetrics>, String> {
    let list: FileList = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(list.items.len());
    for (i, pod) in list.items.into_iter().enumerate() {
        let at = |field: &str| format!("items[{i}].{field}");
        let mut meta = pod.metadata;
        let labels = meta.labels.take().unwrap_or_default();
        if let Some(problem) = is_dns1123_subdomain(&meta.name).into_iter().next() {
            return Err(format!("{}: {problem}", at("metadata.name")));
        }
        if let Some(problem) = is_dns1123_label(&meta.namespace).into_iter().next() {
            return Err(format!("{}: {problem}", at("metadata.namespace")));
        }
        for (key, value) in &labels {
            if let Some(problem) = is_qualified_name(key)
                .into_iter()
                .chain(is_valid_label_value(value))
                .next()
            {
                return Err(format!(
                    "{}: {problem}",
                    at(&format!("metadata.labels[{key}]"))
                ));
            }
        }
        if !seen.insert((meta.namespace.clone(), meta.name.clone())) {
            return Err(format!(
                "{}: duplicate pod {}/{}",
                at("metadata"),
                meta.namespace,
                meta.name
            ));
        }
        let timestamp = match &pod.timestamp {
            None => loaded_at,
            Some(t) => t
                .parse::<jiff::Timestamp>()
                .map_err(|e| format!("{}: {e}", at("timestamp")))?,
        };
        let window = match &pod.window {
            None => default_window,
            Some(w) => parse_go_duration(w).map_err(|e| format!("{}: {e}", at("window")))?,
        };
        let mut names = BTreeSet::new();
        let mut containers = Vec::with_capacity(pod.containers.len());
        for (j, c) in pod.containers.into_iter().enumerate() {
            let at = |field: &str| at(&format!("containers[{j}].{field}"));
            if let Some(problem) = is_dns1123_label(&c.name).into_iter().next() {
                return Err(format!("{}: {problem}", at("name")));
            }
            if !names.insert(c.name.clone()) {
                return Err(format!("{}: duplicate container {:?}", at("name"), c.name));
            }
            let mut usage = BTreeMap::new();
            for (resource, value) in c.usage {
                let q = Quantity::parse(&value)
                    .map_err(|e| format!("{}: {e}", at(&format!("usage.{resource}"))))?;
                if q.nanos < 0 {
                    return Err(format!(
                        "{}: usage must not be negative",
                        at(&format!("usage.{resource}"))
                    ));
                }
                usage.insert(resource, q.to_string());
            }
            containers.push(ContainerMetrics {
                name: c.name,
                usage,
            });
        }
        out.push(PodMetrics {
            kind: "PodMetrics".into(),
            api_version: API_VERSION.into(),
            metadata: ObjectMeta {
                name: Some(meta.name),
                namespace: Some(meta.namespace),
                labels: (!labels.is_empty()).then_some(labels),
                ..ObjectMeta::default()
            },
            timestamp: Time(timestamp),
            window: format_go_duration(window),
            containers,
        });
    }
    out.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    Ok(out)
}

/// Reads and parses the file now (at start-up: a bad file is a configuration error).
pub fn load(path: &Path, default_window: Duration) -> Result<(Vec<PodMetrics>, Vec<u8>), Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::ReadFile {
        flag: "--pod-metrics-file",
        path: path.to_owned(),
        source,
    })?;
    let pods = parse_bytes(path, &bytes, default_window)?;
    Ok((pods, bytes))
}

fn parse_bytes(
    path: &Path,
    bytes: &[u8],
    default_window: Duration,
) -> Result<Vec<PodMetrics>, Error> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::PodMetrics {
        path: path.to_owned(),
        reason: "not UTF-8".into(),
    })?;
    parse_pod_metrics(text, jiff::Timestamp::now(), default_window).map_err(|reason| {
        Error::PodMetrics {
            path: path.to_owned(),
            reason,
        }
    })
}

/// What one look at the file did.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// Same bytes as last time.
    Unchanged,
    /// A new set of pods was published.
    Reloaded(usize),
    /// The file could not be read or parsed; the previous pods stay published.
    Failed(Error),
}

/// The writer: looks at the file and publishes a new [`PodSet`] when its contents change.
#[derive(Debug)]
pub struct PodFileReloader {
    path: PathBuf,
    default_window: Duration,
    last_seen: Option<Vec<u8>>,
    tx: watch::Sender<PodSet>,
}

impl PodFileReloader {
    /// A reloader for `path` whose current contents `bytes` are already published on `tx`.
    pub fn new(
        path: PathBuf,
        default_window: Duration,
        bytes: Vec<u8>,
        tx: watch::Sender<PodSet>,
    ) -> Self {
        PodFileReloader {
            path,
            default_window,
            last_seen: Some(bytes),
            tx,
        }
    }

    /// Reads the file once and publishes it if it changed and is valid.
    pub fn check(&mut self) -> ReloadOutcome {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(source) => {
                // Report a missing file once, not every interval.
                let first = self.last_seen.take().is_some();
                let err = Error::ReadFile {
                    flag: "--pod-metrics-file",
                    path: self.path.clone(),
                    source,
                };
                return if first {
                    ReloadOutcome::Failed(err)
                } else {
                    ReloadOutcome::Unchanged
                };
            }
        };
        if self.last_seen.as_ref() == Some(&bytes) {
            return ReloadOutcome::Unchanged;
        }
        let parsed = parse_bytes(&self.path, &bytes, self.default_window);
        self.last_seen = Some(bytes);
        match parsed {
            Ok(pods) => {
                let n = pods.len();
                self.tx.send_replace(Arc::new(pods));
                ReloadOutcome::Reloaded(n)
            }
            Err(e) => ReloadOutcome::Failed(e),
        }
    }

    /// Checks every `interval` until every reader is gone.
    pub async fn run(mut self, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if self.tx.is_closed() {
                return;
            }
            match self.check() {
                ReloadOutcome::Unchanged => {}
                ReloadOutcome::Reloaded(n) => {
                    tracing::info!("reloaded {} ({n} pods)", self.path.display())
                }
                ReloadOutcome::Failed(e) => tracing::warn!("keeping the previous pod metrics: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<PodMetrics>, String> {
        parse_pod_metrics(text, jiff::Timestamp::UNIX_EPOCH, Duration::from_secs(10))
    }

    #[test]
    fn a_kubectl_snapshot_round_trips() -> Result<(), String> {
        let text = r#"{"kind":"PodMetricsList","apiVersion":"metrics.k8s.io/v1beta1","metadata":{},
          "items":[
            {"metadata":{"name":"b","namespace":"ns","creationTimestamp":"2026-01-01T00:00:00Z",
                         "labels":{"app":"web"}},
             "timestamp":"2026-01-01T00:00:00Z","window":"10.062s",
             "containers":[{"name":"c","usage":{"cpu":"1502370n","memory":"12340Ki"}}]},
            {"metadata":{"name":"a","namespace":"ns"},"containers":[]}]}"#;
        let pods = parse(text)?;
        assert_eq!(pods.len(), 2);
        // Sorted by namespace/name.
        assert_eq!(pods[0].metadata.name.as_deref(), Some("a"));
        assert_eq!(pods[1].window, "10.062s");
        assert_eq!(pods[1].containers[0].usage["cpu"], "1502370n");
        assert_eq!(pods[1].timestamp.0.as_second(), 1_767_225_600);
        // Defaults for what the file leaves out.
        assert_eq!(pods[0].window, "10s");
        assert_eq!(pods[0].timestamp.0, jiff::Timestamp::UNIX_EPOCH);
        let json = serde_json::to_value(&pods[1]).map_err(|e| e.to_string())?;
        assert_eq!(json["kind"], "PodMetrics");
        assert_eq!(json["apiVersion"], "metrics.k8s.io/v1beta1");
        assert_eq!(json["metadata"]["labels"]["app"], "web");
        Ok(())
    }

    #[test]
    fn empty_documents_are_empty_sets() -> Result<(), String> {
        assert!(parse("{}")?.is_empty());
        assert!(parse(r#"{"items":[]}"#)?.is_empty());
        Ok(())
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("not json", "expected"),
            (
                r#"{"items":[{"metadata":{"namespace":"ns"}}]}"#,
                "items[0].metadata.name",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a"}}]}"#,
                "items[0].metadata.namespace",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a","namespace":"ns"}},{"metadata":{"name":"a","namespace":"ns"}}]}"#,
                "duplicate pod ns/a",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a","namespace":"ns"},"containers":[{"name":"c","usage":{"cpu":"lots"}}]}]}"#,
                "items[0].containers[0].usage.cpu",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a","namespace":"ns"},"containers":[{"name":"c","usage":{"cpu":"-1"}}]}]}"#,
                "must not be negative",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a","namespace":"ns"},"window":"ten seconds"}]}"#,
                "items[0].window",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a","namespace":"ns"},"timestamp":"yesterday"}]}"#,
                "items[0].timestamp",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a","namespace":"ns","labels":{"bad key":"v"}}}]}"#,
                "metadata.labels[bad key]",
            ),
            (
                r#"{"items":[{"metadata":{"name":"a","namespace":"ns"},"containers":[{"name":"c","usage":{}},{"name":"c","usage":{}}]}]}"#,
                "duplicate container",
            ),
        ];
        for (text, needle) in cases {
            match parse(text) {
                Ok(_) => panic!("{text} parsed"),
                Err(e) => assert!(e.contains(needle), "{text}: {e}"),
            }
        }
    }

    #[test]
    fn reloader_publishes_changes_and_keeps_the_last_good_set() -> Result<(), Error> {
        let dir = tempfile::tempdir().map_err(|e| Error::Proc {
            file: "tempdir".into(),
            reason: e.to_string(),
        })?;
        let path = dir.path().join("pods.json");
        let one = r#"{"items":[{"metadata":{"name":"a","namespace":"ns"}}]}"#;
        let write = |text: &str| {
            std::fs::write(&path, text).map_err(|source| Error::ReadFile {
                flag: "test",
                path: path.clone(),
                source,
            })
        };
        write(one)?;
        let (pods, bytes) = load(&path, Duration::from_secs(10))?;
        let (tx, rx) = watch::channel(Arc::new(pods));
        let mut reloader = PodFileReloader::new(path.clone(), Duration::from_secs(10), bytes, tx);
        assert!(matches!(reloader.check(), ReloadOutcome::Unchanged));

        write(
            r#"{"items":[{"metadata":{"name":"a","namespace":"ns"}},{"metadata":{"name":"b","namespace":"ns"}}]}"#,
        )?;
        assert!(matches!(reloader.check(), ReloadOutcome::Reloaded(2)));
        assert_eq!(rx.borrow().len(), 2);

        write("{ broken")?;
        assert!(matches!(reloader.check(), ReloadOutcome::Failed(_)));
        assert!(matches!(reloader.check(), ReloadOutcome::Unchanged));
        assert_eq!(rx.borrow().len(), 2, "a bad file keeps the last good set");

        std::fs::remove_file(&path).map_err(|source| Error::ReadFile {
            flag: "test",
            path: path.clone(),
            source,
        })?;
        assert!(matches!(reloader.check(), ReloadOutcome::Failed(_)));
        assert!(matches!(reloader.check(), ReloadOutcome::Unchanged));
        write(one)?;
        assert!(matches!(reloader.check(), ReloadOutcome::Reloaded(1)));
        assert_eq!(rx.borrow().len(), 1);
        Ok(())
    }
}
