//! The static service resolver (`--service-map FILE`): Services mapped to addresses in a small
//! YAML or JSON file, reloaded when the file changes. Readers take an `Arc` snapshot and never
//! lock; a bad edit keeps the last good map.
//!
//! ```yaml
//! # namespace/name/port → addresses. ClusterIP routing uses serviceAddress (default: the first
//! # address); endpoint routing (--enable-aggregator-routing) balances across all addresses.
//! services:
//!   - namespace: kube-system
//!     name: metrics-server
//!     port: 443                 # the APIService's spec.service.port; default 443
//!     addresses: ["10.244.0.7:10250", "10.244.1.9:10250"]
//!     serviceAddress: 10.96.14.3:443   # optional
//! ```

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;

use crate::error::Error;
use crate::resolve::{BackendAddr, ResolvedService, ServiceRef, ServiceResolver};

/// How often [`ServiceMapResolver::watch`] looks at the file by default.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    #[serde(default)]
    services: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    namespace: String,
    name: String,
    #[serde(default = "default_port")]
    port: i64,
    #[serde(default)]
    addresses: Vec<String>,
    #[serde(default)]
    service_address: Option<String>,
}

fn default_port() -> i64 {
    443
}

/// One parsed service map: an immutable snapshot.
#[derive(Debug, Default)]
pub struct ServiceMap {
    entries: HashMap<ServiceRef, Arc<ResolvedService>>,
    services: HashSet<(String, String)>,
}

impl ServiceMap {
    /// Parses the file format (YAML, or JSON which is YAML too). Every problem is reported with
    /// the entry it is in; an empty document is an empty map.
    pub fn parse(text: &str) -> Result<ServiceMap, String> {
        if text.trim().is_empty() {
            return Ok(ServiceMap::default());
        }
        let file: FileFormat = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut map = ServiceMap::default();
        for (index, entry) in file.services.into_iter().enumerate() {
            let at = format!("services[{index}]");
            for (field, value) in [("namespace", &entry.namespace), ("name", &entry.name)] {
                if value.is_empty() || value.contains('/') || value.contains(char::is_whitespace) {
                    return Err(format!(
                        "{at}.{field}: {value:?} must be a non-empty name without '/' or spaces"
                    ));
                }
            }
            let port = u16::try_from(entry.port)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{at}.port: {} is not in 1..65535", entry.port))?;
            let mut endpoints = Vec::with_capacity(entry.addresses.len());
            for (i, address) in entry.addresses.iter().enumerate() {
                let parsed: BackendAddr = address
                    .parse()
                    .map_err(|e| format!("{at}.addresses[{i}]: {e}"))?;
                endpoints.push(parsed);
            }
            let service_address = match &entry.service_address {
                Some(address) => Some(
                    address
                        .parse::<BackendAddr>()
                        .map_err(|e| format!("{at}.serviceAddress: {e}"))?,
                ),
                None => endpoints.first().cloned(),
            };
            let key = ServiceRef::new(entry.namespace.clone(), entry.name.clone(), port);
            if map.entries.contains_key(&key) {
                return Err(format!("{at}: {key} is listed twice"));
            }
            map.services.insert((entry.namespace, entry.name));
            map.entries.insert(
                key,
                Arc::new(ResolvedService::new(service_address, endpoints)),
            );
        }
        Ok(map)
    }

    /// The number of Service ports in the map.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Resolves like a Kubernetes resolver would: an unknown Service is `ServiceNotFound`, a known
    /// Service without the port `ServicePortNotFound`, an entry without addresses
    /// `MissingEndpoints`.
    pub fn lookup(&self, service: &ServiceRef) -> Result<Arc<ResolvedService>, Error> {
        match self.entries.get(service) {
            Some(entry) if entry.endpoints().is_empty() && entry.service_address().is_none() => {
                Err(Error::MissingEndpoints {
                    service: service.clone(),
                })
            }
            Some(entry) => Ok(Arc::clone(entry)),
            None if self
                .services
                .contains(&(service.namespace.clone(), service.name.clone())) =>
            {
                Err(Error::ServicePortNotFound {
                    service: service.clone(),
                })
            }
            None => Err(Error::ServiceNotFound {
                service: service.clone(),
            }),
        }
    }
}

/// What one look at the file found.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The file has not changed.
    Unchanged,
    /// A new map was published.
    Reloaded {
        /// Service ports in the new map.
        services: usize,
    },
    /// The file changed but could not be read or parsed; the last good map stays in use.
    Failed(Error),
}

#[derive(Default)]
struct FileState {
    stamp: Option<(SystemTime, u64)>,
    contents: Vec<u8>,
}

struct Inner {
    path: PathBuf,
    current: watch::Sender<Arc<ServiceMap>>,
    state: Mutex<FileState>,
}

/// [`ServiceResolver`] over a `--service-map` file. Cheap to clone; clones share the snapshot.
///
/// Run [`ServiceMapResolver::watch`] on a task to follow edits; [`ServiceMapResolver::subscribe`]
/// tells the availability controller when to re-check.
#[derive(Clone)]
pub struct ServiceMapResolver {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServiceMapResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceMapResolver")
            .field("path", &self.inner.path)
            .field("services", &self.inner.current.borrow().len())
            .finish()
    }
}

fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len()))
}

impl ServiceMapResolver {
    /// Loads the file; it must exist and parse (a bad flag fails before the server starts).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, Error> {
        let path = path.into();
        let stamp = stamp(&path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?;
        let contents = std::fs::read(&path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?;
        let map = parse_file(&path, &contents)?;
        let (current, _) = watch::channel(Arc::new(map));
        Ok(ServiceMapResolver {
            inner: Arc::new(Inner {
                path,
                current,
                state: Mutex::new(FileState {
                    stamp: Some(stamp),
                    contents,
                }),
            }),
        })
    }

    /// A resolver over a fixed map, with no file behind it (tests, embedding).
    pub fn from_map(map: ServiceMap) -> Self {
        let (current, _) = watch::channel(Arc::new(map));
        ServiceMapResolver {
            inner: Arc::new(Inner {
                path: PathBuf::new(),
                current,
                state: Mutex::new(FileState::default()),
            }),
        }
    }

    /// The file this resolver follows.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<ServiceMap> {
        Arc::clone(&self.inner.current.borrow())
    }

    /// A receiver that is notified whenever a new map is published.
    pub fn subscribe(&self) -> watch::Receiver<Arc<ServiceMap>> {
        self.inner.current.subscribe()
    }

    /// Looks at the file once: when its modification time or size changed and its content
    /// differs, parses it and publishes the new map. A file that cannot be read or parsed leaves
    /// the last good map in place.
    pub fn reload_if_changed(&self) -> ReloadOutcome {
        if self.inner.path.as_os_str().is_empty() {
            return ReloadOutcome::Unchanged;
        }
        let path = &self.inner.path;
        let new_stamp = match stamp(path) {
            Ok(s) => s,
            Err(source) => {
                return ReloadOutcome::Failed(Error::ReadFile {
                    path: path.clone(),
                    source,
                });
            }
        };
        let mut state = match self.inner.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.stamp == Some(new_stamp) {
            return ReloadOutcome::Unchanged;
        }
        let contents = match std::fs::read(path) {
            Ok(c) => c,
            Err(source) => {
                return ReloadOutcome::Failed(Error::ReadFile {
                    path: path.clone(),
                    source,
                });
            }
        };
        state.stamp = Some(new_stamp);
        if contents == state.contents {
            return ReloadOutcome::Unchanged;
        }
        // Remember the bad content too, so that a broken file is reported once, not every poll.
        state.contents = contents;
        match parse_file(path, &state.contents) {
            Ok(map) => {
                let services = map.len();
                self.inner.current.send_replace(Arc::new(map));
                ReloadOutcome::Reloaded { services }
            }
            Err(e) => ReloadOutcome::Failed(e),
        }
    }

    /// Polls the file every `interval` forever, logging reloads and failures. Spawn it.
    pub async fn watch(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let this = self.clone();
            let outcome = tokio::task::spawn_blocking(move || this.reload_if_changed())
                .await
                .unwrap_or(ReloadOutcome::Unchanged);
            match outcome {
                ReloadOutcome::Unchanged => {}
                ReloadOutcome::Reloaded { services } => tracing::info!(
                    path = %self.inner.path.display(),
                    services,
                    "reloaded the service map"
                ),
                ReloadOutcome::Failed(error) => tracing::warn!(
                    path = %self.inner.path.display(),
                    %error,
                    "keeping the last good service map"
                ),
            }
        }
    }
}

fn parse_file(path: &Path, contents: &[u8]) -> Result<ServiceMap, Error> {
    let text = std::str::from_utf8(contents).map_err(|_| Error::ServiceMap {
        path: path.to_owned(),
        message: "not UTF-8".into(),
    })?;
    ServiceMap::parse(text).map_err(|message| Error::ServiceMap {
        path: path.to_owned(),
        message,
    })
}

impl ServiceResolver for ServiceMapResolver {
    fn resolve(&self, service: &ServiceRef) -> Result<Arc<ResolvedService>, Error> {
        self.inner.current.borrow().lookup(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::RoutingMode;

    const MAP: &str = r#"
services:
  - namespace: kube-system
    name: metrics-server
    addresses: ["10.0.0.1:10250", "10.0.0.2:10250"]
  - namespace: demo
    name: flunder
    port: 8443
    addresses: [flunder.example.com:8443]
    serviceAddress: 10.96.0.9:8443
  - namespace: demo
    name: empty
    port: 443
"#;

    #[test]
    fn parses_yaml_and_resolves_like_kubernetes() {
        let map = ServiceMap::parse(MAP).unwrap();
        assert_eq!(map.len(), 3);
        let svc = map
            .lookup(&ServiceRef::new("kube-system", "metrics-server", 443))
            .unwrap();
        assert_eq!(
            svc.pick(RoutingMode::ClusterIp).unwrap().to_string(),
            "10.0.0.1:10250"
        );
        assert_eq!(svc.endpoints().len(), 2);
        let flunder = map
            .lookup(&ServiceRef::new("demo", "flunder", 8443))
            .unwrap();
        assert_eq!(
            flunder.pick(RoutingMode::ClusterIp).unwrap().to_string(),
            "10.96.0.9:8443"
        );
        assert_eq!(
            flunder.pick(RoutingMode::Endpoints).unwrap().to_string(),
            "flunder.example.com:8443"
        );
        assert!(matches!(
            map.lookup(&ServiceRef::new("demo", "flunder", 443)),
            Err(Error::ServicePortNotFound { .. })
        ));
        assert!(matches!(
            map.lookup(&ServiceRef::new("demo", "nope", 443)),
            Err(Error::ServiceNotFound { .. })
        ));
        assert!(matches!(
            map.lookup(&ServiceRef::new("demo", "empty", 443)),
            Err(Error::MissingEndpoints { .. })
        ));
    }

    #[test]
    fn json_is_accepted() {
        let map = ServiceMap::parse(
            r#"{"services":[{"namespace":"a","name":"b","port":1,"addresses":["127.0.0.1:9"]}]}"#,
        )
        .unwrap();
        assert_eq!(map.len(), 1);
        assert!(ServiceMap::parse("").unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        let cases = [
            (
                "services: [{namespace: a, name: b, port: 70000}]",
                "services[0].port",
            ),
            (
                "services: [{namespace: a, name: b, addresses: [nope]}]",
                "services[0].addresses[0]",
            ),
            (
                "services: [{namespace: '', name: b}]",
                "services[0].namespace",
            ),
            (
                "services: [{namespace: a, name: b}, {namespace: a, name: b}]",
                "listed twice",
            ),
            ("services: [{namespace: a, name: b, colour: red}]", "colour"),
            ("services: [", ""),
        ];
        for (text, needle) in cases {
            let err = ServiceMap::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}
