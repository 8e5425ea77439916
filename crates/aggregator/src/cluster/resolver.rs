//! Service resolution from the cluster (upstream-behaviour.md §2.2 and §5.2, the EndpointSlice
//! variants of v1.34+): two list+watch loops over Services and EndpointSlices feed one task
//! that publishes an immutable snapshot; [`ClusterResolver::resolve`] answers from it without
//! awaiting or locking.
//!
//! - **ClusterIP routing** (default): `clusterIP:port` of the Service port equal to the
//!   APIService's port; ExternalName Services go to `externalName:port`; a headless Service
//!   cannot be routed to.
//! - **Endpoint routing** (`--enable-aggregator-routing`): the ready endpoints (`conditions.ready`
//!   unset or true) of the Service's EndpointSlices (label `kubernetes.io/service-name`), at the
//!   slice port whose name equals the Service port's name.
//! - For ClusterIP-type Services both modes first require, as upstream's availability check
//!   does, the port (`ServicePortError`), some EndpointSlice (`EndpointsNotFound`) and a ready
//!   endpoint with that port name (`MissingEndpoints`), with upstream's EndpointSlice wording.
//!
//! Changes of a Service or its slices that some APIService references bump
//! [`ClusterResolver::changes`], which re-probes availability.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use proxy::{
    AvailabilityReason, BackendAddr, ResolvedService, RoutingMode, ServiceRef, ServiceResolver,
};
use tokio::sync::{mpsc, watch};

use crate::informer::Snapshot;
use crate::registry::strategy;

/// The label tying an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a Service contributes to resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `spec.type` (`ClusterIP` when unset).
    pub type_: String,
    /// `spec.clusterIP` (`None` for headless; empty when unset).
    pub cluster_ip: String,
    /// `spec.externalName`.
    pub external_name: String,
    /// `spec.ports`: (port, name).
    pub ports: Vec<(i32, String)>,
}

impl ServiceInfo {
    /// From a Service object.
    pub fn from_service(svc: &Service) -> ServiceInfo {
        let spec = svc.spec.clone().unwrap_or_default();
        ServiceInfo {
            type_: spec.type_.unwrap_or_else(|| "ClusterIP".into()),
            cluster_ip: spec.cluster_ip.unwrap_or_default(),
            external_name: spec.external_name.unwrap_or_default(),
            ports: spec
                .ports
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.port, p.name.unwrap_or_default()))
                .collect(),
        }
    }
}

/// What one EndpointSlice contributes: its ports (name, port) and the first address of each
/// ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceInfo {
    /// `ports[]`: (name, port); an unset name is the empty name.
    pub ports: Vec<(String, Option<i32>)>,
    /// Ready endpoints' first addresses.
    pub ready: Vec<String>,
}

impl SliceInfo {
    /// From an EndpointSlice object.
    pub fn from_slice(slice: &EndpointSlice) -> SliceInfo {
        SliceInfo {
            ports: slice
                .ports
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|p| (p.name.unwrap_or_default(), p.port))
                .collect(),
            ready: slice
                .endpoints
                .iter()
                .flatten()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
                .filter_map(|e| e.addresses.first().cloned())
                .collect(),
        }
    }
}

/// A resolution refusal with upstream's reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The condition reason.
    pub reason: AvailabilityReason,
    /// The condition message.
    pub message: String,
}

fn address(host: &str, port: i32) -> Option<BackendAddr> {
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    let text = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    text.parse().ok()
}

/// Resolves `service:port` from a Service and its slices, as upstream's availability check and
/// resolvers do (see the module docs). `Ok` carries the service address (ClusterIP routing)
/// and the ready endpoint addresses (endpoint routing).
pub fn resolve_one(
    mode: RoutingMode,
    namespace: &str,
    name: &str,
    port: u16,
    svc: &ServiceInfo,
    slices: Option<&[Arc<SliceInfo>]>,
) -> Result<ResolvedService, Refusal> {
    let refuse = |reason, message: String| Err(Refusal { reason, message });
    let port_i32 = i32::from(port);
    let service_port = svc.ports.iter().find(|(p, _)| *p == port_i32);
    match svc.type_.as_str() {
        "ExternalName" => {
            if mode == RoutingMode::Endpoints {
                return refuse(
                    AvailabilityReason::FailedDiscoveryCheck,
                    format!(
                        "unsupported service type \"ExternalName\" for service/{name} in {namespace:?} with --enable-aggregator-routing"
                    ),
                );
            }
            return match address(&svc.external_name, port_i32) {
                Some(addr) => Ok(ResolvedService::new(Some(addr), Vec::new())),
                None => refuse(
                    AvailabilityReason::FailedDiscoveryCheck,
                    format!(
                        "service/{name} in {namespace:?} has an invalid externalName {:?}",
                        svc.external_name
                    ),
                ),
            };
        }
        "ClusterIP" | "NodePort" | "LoadBalancer" => {}
        other => {
            return refuse(
                AvailabilityReason::FailedDiscoveryCheck,
                format!("unsupported service type {other:?} for service/{name} in {namespace:?}"),
            );
        }
    }
    let Some((_, port_name)) = service_port else {
        return refuse(
            AvailabilityReason::ServicePortError,
            format!("service/{name} in {namespace:?} is not listening on port {port}"),
        );
    };
    let slices = slices.unwrap_or_default();
    // Ready addresses at the slice port named like the Service port, deduplicated (a pod can
    // appear in two slices while they are rewritten).
    let mut seen = BTreeSet::new();
    let mut endpoints = Vec::new();
    for slice in slices {
        let Some(target) = slice
            .ports
            .iter()
            .find(|(n, p)| n == port_name && p.is_some())
            .and_then(|(_, p)| *p)
        else {
            continue;
        };
        for host in &slice.ready {
            if let Some(addr) = address(host, target)
                && seen.insert(addr.to_string())
            {
                endpoints.push(addr);
            }
        }
    }
    if svc.type_ == "ClusterIP" || mode == RoutingMode::Endpoints {
        if slices.is_empty() {
            return refuse(
                AvailabilityReason::EndpointsNotFound,
                format!("cannot find endpointslices for service/{name} in {namespace:?}"),
            );
        }
        if endpoints.is_empty() {
            return refuse(
                AvailabilityReason::MissingEndpoints,
                format!(
                    "endpointslices for service/{name} in {namespace:?} have no addresses with port name {port_name:?}"
                ),
            );
        }
    }
    let headless = svc.cluster_ip.is_empty() || svc.cluster_ip == "None";
    let service_address = if headless {
        if mode == RoutingMode::ClusterIp {
            return refuse(
                AvailabilityReason::FailedDiscoveryCheck,
                format!(
                    "cannot route to service with ClusterIP \"None\" (service/{name} in {namespace:?} is headless; use --enable-aggregator-routing)"
                ),
            );
        }
        None
    } else {
        address(&svc.cluster_ip, port_i32)
    };
    Ok(ResolvedService::new(service_address, endpoints))
}

/// One resolvable Service: its info, its slices, and every declared port resolved once (the
/// round-robin state of endpoint routing lives in those `Arc`s until the Service changes).
#[derive(Debug)]
struct Entry {
    info: ServiceInfo,
    ports: HashMap<u16, Result<Arc<ResolvedService>, Refusal>>,
}

/// The published state.
#[derive(Debug, Default)]
struct State {
    synced: bool,
    error: Option<String>,
    entries: HashMap<(String, String), Arc<Entry>>,
}

/// Services and EndpointSlices as the resolver knows them (the informer task's own copy).
#[derive(Debug, Default)]
struct Cache {
    services: HashMap<(String, String), ServiceInfo>,
    /// (namespace, service) → slice name → slice.
    slices: HashMap<(String, String), HashMap<String, Arc<SliceInfo>>>,
}

impl Cache {
    fn entry(&self, mode: RoutingMode, key: &(String, String)) -> Option<Arc<Entry>> {
        let info = self.services.get(key)?.clone();
        let slices: Option<Vec<Arc<SliceInfo>>> = self.slices.get(key).map(|m| {
            let mut v: Vec<(&String, &Arc<SliceInfo>)> = m.iter().collect();
            v.sort_by(|a, b| a.0.cmp(b.0));
            v.into_iter().map(|(_, s)| s.clone()).collect()
        });
        let ports = info
            .ports
            .iter()
            .filter_map(|(p, _)| u16::try_from(*p).ok())
            .map(|p| {
                let r =
                    resolve_one(mode, &key.0, &key.1, p, &info, slices.as_deref()).map(Arc::new);
                (p, r)
            })
            .collect();
        Some(Arc::new(Entry { info, ports }))
    }
}

/// Which Services APIServices refer to (only their changes re-probe availability).
type Referenced = Arc<RwLock<HashSet<(String, String)>>>;

/// A [`ServiceResolver`] over the cluster's Services and EndpointSlices. Cheap to clone; start
/// its informers with [`ClusterResolver::run`].
#[derive(Clone)]
pub struct ClusterResolver {
    mode: RoutingMode,
    state: watch::Sender<Arc<State>>,
    changes: watch::Sender<u64>,
    referenced: Referenced,
}

impl std::fmt::Debug for ClusterResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.borrow();
        f.debug_struct("ClusterResolver")
            .field("mode", &self.mode)
            .field("synced", &state.synced)
            .field("services", &state.entries.len())
            .finish()
    }
}

impl ClusterResolver {
    /// An empty, unsynced resolver for `mode` (every lookup is `ServiceAccessError` until the
    /// first lists arrive).
    pub fn new(mode: RoutingMode) -> Self {
        ClusterResolver {
            mode,
            state: watch::channel(Arc::new(State::default())).0,
            changes: watch::channel(0).0,
            referenced: Arc::default(),
        }
    }

    /// Bumped whenever a Service or EndpointSlice that an APIService refers to changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Whether both Services and EndpointSlices have been listed.
    pub fn is_synced(&self) -> bool {
        self.state.borrow().synced
    }

    /// Waits until both kinds have been listed, at most `timeout`; false on timeout.
    pub async fn wait_synced(&self, timeout: Duration) -> bool {
        let mut rx = self.state.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|s| s.synced))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Runs the informers until `shutdown` turns true: lists and watches Services and
    /// EndpointSlices in all namespaces through `client` (re-listing after a 410 or an
    /// outage), and follows `apiservices` to know which Services matter for availability.
    pub async fn run(
        self,
        client: kube::Client,
        mut apiservices: watch::Receiver<Arc<Snapshot>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Update>(256);
        let services = tokio::spawn(list_watch(
            Api::<Service>::all(client.clone()),
            tx.clone(),
            Kind::Services,
        ));
        let slices = tokio::spawn(list_watch(
            Api::<EndpointSlice>::all(client),
            tx,
            Kind::Slices,
        ));
        let mut cache = Cache::default();
        let mut synced = (false, false);
        self.set_referenced(&apiservices.borrow_and_update());
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => break,
                changed = apiservices.changed() => {
                    if changed.is_err() { break; }
                    self.set_referenced(&apiservices.borrow_and_update());
                    continue;
                }
                u = rx.recv() => match u { Some(u) => u, None => break },
            };
            // Apply everything already queued before publishing once.
            let mut touched = HashSet::new();
            let mut batch = vec![first];
            while let Some(Some(u)) = rx.recv().now_or_never() {
                batch.push(u);
                if batch.len() >= 1024 {
                    break;
                }
            }
            let mut error = None;
            for u in batch {
                match u {
                    Update::Listed(Kind::Services, _) => synced.0 = true,
                    Update::Listed(Kind::Slices, _) => synced.1 = true,
                    _ => {}
                }
                if let Update::Failed(e) = &u {
                    error = Some(e.clone());
                }
                apply(&mut cache, u, &mut touched);
            }
            self.publish(&cache, synced.0 && synced.1, error, &touched);
        }
        services.abort();
        slices.abort();
    }

    fn set_referenced(&self, snapshot: &Snapshot) {
        let set: HashSet<(String, String)> = snapshot
            .items
            .values()
            .filter_map(|a| strategy::spec(a).service.clone())
            .map(|s| (s.namespace.unwrap_or_default(), s.name.unwrap_or_default()))
            .collect();
        if let Ok(mut r) = self.referenced.write() {
            *r = set;
        }
    }

    fn publish(
        &self,
        cache: &Cache,
        synced: bool,
        error: Option<String>,
        touched: &HashSet<(String, String)>,
    ) {
        let old = self.state.borrow().clone();
        let mut entries = old.entries.clone();
        for key in touched {
            match cache.entry(self.mode, key) {
                Some(e) => entries.insert(key.clone(), e),
                None => entries.remove(key),
            };
        }
        let became_synced = synced && !old.synced;
        self.state.send_replace(Arc::new(State {
            synced,
            error: error.or_else(|| if synced { None } else { old.error.clone() }),
            entries,
        }));
        let relevant = became_synced
            || self
                .referenced
                .read()
                .map(|r| touched.iter().any(|k| r.contains(k)))
                .unwrap_or(true);
        if relevant {
            self.changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

impl ServiceResolver for ClusterResolver {
    fn resolve(&self, service: &ServiceRef) -> Result<Arc<ResolvedService>, proxy::Error> {
        let state = self.state.borrow();
        if !state.synced {
            return Err(proxy::Error::ServiceAccess {
                service: service.clone(),
                message: match &state.error {
                    Some(e) => format!("Services and EndpointSlices are not listed yet: {e}"),
                    None => "Services and EndpointSlices are not listed yet".into(),
                },
            });
        }
        let key = (service.namespace.clone(), service.name.clone());
        let Some(entry) = state.entries.get(&key) else {
            return Err(proxy::Error::ServiceNotFound {
                service: service.clone(),
            });
        };
        let refusal = |r: &Refusal| proxy::Error::Unresolvable {
            service: service.clone(),
            reason: r.reason,
            message: r.message.clone(),
        };
        match entry.ports.get(&service.port) {
            Some(Ok(resolved)) => Ok(resolved.clone()),
            Some(Err(r)) => Err(refusal(r)),
            // ExternalName Services have no ports of their own: any port is the APIService's.
            None if entry.info.type_ == "ExternalName" => resolve_one(
                self.mode,
                &service.namespace,
                &service.name,
                service.port,
                &entry.info,
                None,
            )
            .map(Arc::new)
            .map_err(|r| refusal(&r)),
            None => Err(proxy::Error::ServicePortNotFound {
                service: service.clone(),
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Services,
    Slices,
}

/// One change from an informer.
enum Update {
    /// A full list: everything of this kind.
    Listed(Kind, Vec<Object>),
    Applied(Object),
    Deleted(Object),
    /// Listing or watching failed (reported until the next success).
    Failed(String),
}

enum Object {
    Service((String, String), ServiceInfo),
    /// (namespace, service), slice name.
    Slice((String, String), String, SliceInfo),
    /// A slice without a service label: (namespace, slice name). Only a deletion matters (a
    /// slice whose label was removed no longer counts for its former Service).
    Unowned((String, String)),
}

fn apply(cache: &mut Cache, update: Update, touched: &mut HashSet<(String, String)>) {
    match update {
        Update::Listed(kind, objects) => {
            match kind {
                Kind::Services => {
                    touched.extend(cache.services.keys().cloned());
                    cache.services.clear();
                }
                Kind::Slices => {
                    touched.extend(cache.slices.keys().cloned());
                    cache.slices.clear();
                }
            }
            for o in objects {
                apply(cache, Update::Applied(o), touched);
            }
        }
        Update::Applied(Object::Service(key, info)) => {
            touched.insert(key.clone());
            cache.services.insert(key, info);
        }
        Update::Applied(Object::Slice(key, slice, info)) => {
            // A slice may move to another Service (label change): drop it elsewhere.
            for (k, m) in cache.slices.iter_mut() {
                if *k != key && m.remove(&slice).is_some() {
                    touched.insert(k.clone());
                }
            }
            touched.insert(key.clone());
            cache
                .slices
                .entry(key)
                .or_default()
                .insert(slice, Arc::new(info));
        }
        Update::Deleted(Object::Service(key, _)) => {
            touched.insert(key.clone());
            cache.services.remove(&key);
        }
        Update::Deleted(Object::Slice(key, slice, _)) => {
            // By name in the namespace: the label may have changed since it was applied.
            for (k, m) in cache.slices.iter_mut() {
                if k.0 == key.0 && m.remove(&slice).is_some() {
                    touched.insert(k.clone());
                }
            }
            touched.insert(key);
            cache.slices.retain(|_, m| !m.is_empty());
        }
        Update::Applied(Object::Unowned((ns, slice)))
        | Update::Deleted(Object::Unowned((ns, slice))) => {
            for (k, m) in cache.slices.iter_mut() {
                if k.0 == ns && m.remove(&slice).is_some() {
                    touched.insert(k.clone());
                }
            }
            cache.slices.retain(|_, m| !m.is_empty());
        }
        Update::Failed(_) => {}
    }
}

/// Converts the objects the informers see into what the cache keeps.
trait Informed:
    kube::Resource<DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
    + Send
    + 'static
{
    fn object(&self) -> Object;
}

impl Informed for Service {
    fn object(&self) -> Object {
        let key = (
            self.metadata.namespace.clone().unwrap_or_default(),
            self.metadata.name.clone().unwrap_or_default(),
        );
        Object::Service(key, ServiceInfo::from_service(self))
    }
}

impl Informed for EndpointSlice {
    fn object(&self) -> Object {
        let ns = self.metadata.namespace.clone().unwrap_or_default();
        let name = self.metadata.name.clone().unwrap_or_default();
        match self
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            Some(svc) if !svc.is_empty() => {
                Object::Slice((ns, svc.clone()), name, SliceInfo::from_slice(self))
            }
            _ => Object::Unowned((ns, name)),
        }
    }
}

/// The list+watch state machine of one kind (style.md habit 5): list, then watch from the
/// list's resourceVersion; a closed watch resumes from the last seen version; a 410 (or any
/// failure) lists again after a capped back-off.
enum Phase {
    List,
    Watch(String),
    Backoff(Duration),
}

async fn list_watch<K: Informed>(api: Api<K>, tx: mpsc::Sender<Update>, kind: Kind) {
    let mut phase = Phase::List;
    let mut backoff = Duration::from_millis(200);
    loop {
        phase = match phase {
            Phase::List => match api.list(&ListParams::default()).await {
                Ok(list) => {
                    let rv = list.metadata.resource_version.clone().unwrap_or_default();
                    let objects = list.items.iter().map(Informed::object).collect();
                    if tx.send(Update::Listed(kind, objects)).await.is_err() {
                        return;
                    }
                    backoff = Duration::from_millis(200);
                    Phase::Watch(rv)
                }
                Err(e) => {
                    let _ = tx
                        .send(Update::Failed(format!("listing {kind:?}: {e}")))
                        .await;
                    Phase::Backoff(backoff)
                }
            },
            Phase::Backoff(d) => {
                tokio::time::sleep(d).await;
                backoff = (d * 2).min(Duration::from_secs(30));
                Phase::List
            }
            Phase::Watch(mut rv) => {
                let params = WatchParams::default().timeout(290);
                match api.watch(&params, &rv).await {
                    Err(e) => {
                        tracing::debug!(?kind, error = %e, "watch failed; listing again");
                        Phase::Backoff(backoff)
                    }
                    Ok(stream) => {
                        let mut stream = std::pin::pin!(stream);
                        let mut next = None;
                        while let Some(event) = stream.next().await {
                            let update = match event {
                                Ok(WatchEvent::Added(o) | WatchEvent::Modified(o)) => {
                                    if let Some(v) = o.meta().resource_version.clone() {
                                        rv = v;
                                    }
                                    Update::Applied(o.object())
                                }
                                Ok(WatchEvent::Deleted(o)) => {
                                    if let Some(v) = o.meta().resource_version.clone() {
                                        rv = v;
                                    }
                                    Update::Deleted(o.object())
                                }
                                Ok(WatchEvent::Bookmark(b)) => {
                                    rv = b.metadata.resource_version;
                                    continue;
                                }
                                Ok(WatchEvent::Error(status)) => {
                                    // 410 Gone: the version is too old; anything else: start over.
                                    tracing::debug!(?kind, code = status.code, message = %status.message, "watch error; listing again");
                                    next = Some(if status.code == 410 {
                                        Phase::List
                                    } else {
                                        Phase::Backoff(backoff)
                                    });
                                    break;
                                }
                                Err(e) => {
                                    tracing::debug!(?kind, error = %e, "watch stream failed; listing again");
                                    next = Some(Phase::Backoff(backoff));
                                    break;
                                }
                            };
                            if tx.send(update).await.is_err() {
                                return;
                            }
                        }
                        next.unwrap_or(Phase::Watch(rv))
                    }
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(type_: &str, ip: &str, ports: &[(i32, &str)]) -> ServiceInfo {
        ServiceInfo {
            type_: type_.into(),
            cluster_ip: ip.into(),
            external_name: "ext.example.com".into(),
            ports: ports.iter().map(|(p, n)| (*p, n.to_string())).collect(),
        }
    }

    fn slice(ports: &[(&str, i32)], ready: &[&str]) -> Arc<SliceInfo> {
        Arc::new(SliceInfo {
            ports: ports
                .iter()
                .map(|(n, p)| (n.to_string(), Some(*p)))
                .collect(),
            ready: ready.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn ok(
        mode: RoutingMode,
        s: &ServiceInfo,
        slices: Option<&[Arc<SliceInfo>]>,
    ) -> (Option<String>, Vec<String>) {
        match resolve_one(mode, "ns", "m", 443, s, slices) {
            Ok(r) => (
                r.service_address().map(|a| a.to_string()),
                r.endpoints().iter().map(|a| a.to_string()).collect(),
            ),
            Err(e) => panic!("{e:?}"),
        }
    }

    fn refused(mode: RoutingMode, s: &ServiceInfo, slices: Option<&[Arc<SliceInfo>]>) -> Refusal {
        match resolve_one(mode, "ns", "m", 443, s, slices) {
            Ok(r) => panic!("resolved: {r:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn cluster_ip_routing_needs_ready_endpoints_by_port_name() {
        let s = svc("ClusterIP", "10.96.0.7", &[(80, "http"), (443, "https")]);
        let slices = [
            slice(
                &[("https", 8443), ("http", 8080)],
                &["10.0.0.1", "10.0.0.2"],
            ),
            slice(&[("https", 8443)], &["10.0.0.2", "fd00::3"]),
        ];
        let (addr, eps) = ok(RoutingMode::ClusterIp, &s, Some(&slices));
        assert_eq!(addr.as_deref(), Some("10.96.0.7:443"));
        assert_eq!(eps, ["10.0.0.1:8443", "10.0.0.2:8443", "[fd00::3]:8443"]);

        let r = refused(RoutingMode::ClusterIp, &s, None);
        assert_eq!(r.reason, AvailabilityReason::EndpointsNotFound);
        assert_eq!(
            r.message,
            "cannot find endpointslices for service/m in \"ns\""
        );
        let wrong_name = [slice(&[("http", 8080)], &["10.0.0.1"])];
        let r = refused(RoutingMode::ClusterIp, &s, Some(&wrong_name));
        assert_eq!(r.reason, AvailabilityReason::MissingEndpoints);
        assert_eq!(
            r.message,
            "endpointslices for service/m in \"ns\" have no addresses with port name \"https\""
        );
        let not_ready = [slice(&[("https", 8443)], &[])];
        let r = refused(RoutingMode::Endpoints, &s, Some(&not_ready));
        assert_eq!(r.reason, AvailabilityReason::MissingEndpoints);

        let other_port = svc("ClusterIP", "10.96.0.7", &[(80, "http")]);
        let r = refused(RoutingMode::ClusterIp, &other_port, Some(&slices));
        assert_eq!(r.reason, AvailabilityReason::ServicePortError);
        assert_eq!(
            r.message,
            "service/m in \"ns\" is not listening on port 443"
        );
    }

    #[test]
    fn headless_external_name_and_other_types() {
        let headless = svc("ClusterIP", "None", &[(443, "")]);
        let slices = [slice(&[("", 6443)], &["10.0.0.9"])];
        let r = refused(RoutingMode::ClusterIp, &headless, Some(&slices));
        assert_eq!(r.reason, AvailabilityReason::FailedDiscoveryCheck);
        assert!(
            r.message
                .starts_with("cannot route to service with ClusterIP \"None\"")
        );
        let (addr, eps) = ok(RoutingMode::Endpoints, &headless, Some(&slices));
        assert_eq!(addr, None);
        assert_eq!(eps, ["10.0.0.9:6443"]);

        let ext = svc("ExternalName", "", &[]);
        let (addr, _) = ok(RoutingMode::ClusterIp, &ext, None);
        assert_eq!(addr.as_deref(), Some("ext.example.com:443"));
        assert!(
            refused(RoutingMode::Endpoints, &ext, None)
                .message
                .contains("unsupported service type")
        );

        // NodePort and LoadBalancer skip the endpoint checks under ClusterIP routing.
        let np = svc("NodePort", "10.96.0.8", &[(443, "")]);
        let (addr, eps) = ok(RoutingMode::ClusterIp, &np, None);
        assert_eq!(addr.as_deref(), Some("10.96.0.8:443"));
        assert!(eps.is_empty());
        let r = refused(RoutingMode::Endpoints, &np, None);
        assert_eq!(r.reason, AvailabilityReason::EndpointsNotFound);
    }

    fn key(ns: &str, n: &str) -> (String, String) {
        (ns.into(), n.into())
    }

    #[tokio::test]
    async fn cache_updates_publish_and_notify_only_for_referenced_services() {
        let resolver = ClusterResolver::new(RoutingMode::Endpoints);
        let r = ServiceRef::new("ns", "m", 443);
        assert!(matches!(
            resolver.resolve(&r),
            Err(proxy::Error::ServiceAccess { .. })
        ));
        if let Ok(mut refs) = resolver.referenced.write() {
            refs.insert(key("ns", "m"));
        }
        let mut changes = resolver.changes();
        let mut cache = Cache::default();
        let mut touched = HashSet::new();
        apply(
            &mut cache,
            Update::Listed(
                Kind::Services,
                vec![Object::Service(
                    key("ns", "m"),
                    svc("ClusterIP", "10.96.0.1", &[(443, "https")]),
                )],
            ),
            &mut touched,
        );
        apply(
            &mut cache,
            Update::Listed(Kind::Slices, vec![]),
            &mut touched,
        );
        resolver.publish(&cache, true, None, &touched);
        assert!(changes.has_changed().unwrap_or(false));
        changes.borrow_and_update();
        assert!(matches!(
            resolver.resolve(&r),
            Err(proxy::Error::Unresolvable {
                reason: AvailabilityReason::EndpointsNotFound,
                ..
            })
        ));
        assert!(matches!(
            resolver.resolve(&ServiceRef::new("ns", "m", 80)),
            Err(proxy::Error::ServicePortNotFound { .. })
        ));
        assert!(matches!(
            resolver.resolve(&ServiceRef::new("ns", "gone", 443)),
            Err(proxy::Error::ServiceNotFound { .. })
        ));

        let mut touched = HashSet::new();
        apply(
            &mut cache,
            Update::Applied(Object::Slice(
                key("ns", "m"),
                "m-1".into(),
                SliceInfo {
                    ports: vec![("https".into(), Some(8443))],
                    ready: vec!["10.0.0.1".into(), "10.0.0.2".into()],
                },
            )),
            &mut touched,
        );
        resolver.publish(&cache, true, None, &touched);
        assert!(changes.has_changed().unwrap_or(false));
        changes.borrow_and_update();
        let resolved = resolver.resolve(&r).ok();
        let picks: Vec<String> = (0..4)
            .filter_map(|_| {
                resolved
                    .as_ref()?
                    .pick(RoutingMode::Endpoints)
                    .map(|a| a.to_string())
            })
            .collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1:8443",
                "10.0.0.2:8443",
                "10.0.0.1:8443",
                "10.0.0.2:8443"
            ]
        );

        // An unrelated Service changing publishes but does not re-probe.
        let mut touched = HashSet::new();
        apply(
            &mut cache,
            Update::Applied(Object::Service(
                key("other", "x"),
                svc("ClusterIP", "10.96.0.2", &[(443, "")]),
            )),
            &mut touched,
        );
        resolver.publish(&cache, true, None, &touched);
        assert!(!changes.has_changed().unwrap_or(true));

        // The slice going away (a deletion without labels still finds it) and the Service.
        let mut touched = HashSet::new();
        apply(
            &mut cache,
            Update::Deleted(Object::Unowned(key("ns", "m-1"))),
            &mut touched,
        );
        assert!(touched.contains(&key("ns", "m")));
        assert!(cache.slices.is_empty());
        apply(
            &mut cache,
            Update::Deleted(Object::Service(key("ns", "m"), svc("", "", &[]))),
            &mut touched,
        );
        resolver.publish(&cache, true, None, &touched);
        assert!(changes.has_changed().unwrap_or(false));
        assert!(matches!(
            resolver.resolve(&r),
            Err(proxy::Error::ServiceNotFound { .. })
        ));
    }

    #[test]
    fn objects_convert_from_kubernetes_types() -> Result<(), serde_json::Error> {
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m-abc", "namespace": "ns", "labels": {"kubernetes.io/service-name": "m"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false}}
            ],
            "ports": [{"name": "https", "port": 8443}]
        }))?;
        match slice.object() {
            Object::Slice(k, name, info) => {
                assert_eq!(k, key("ns", "m"));
                assert_eq!(name, "m-abc");
                assert_eq!(info.ready, ["10.0.0.1", "10.0.0.2"]);
                assert_eq!(info.ports, [("https".to_string(), Some(8443))]);
            }
            _ => panic!("not a slice"),
        }
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "m", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 443, "name": "https", "targetPort": 8443}]}
        }))?;
        match service.object() {
            Object::Service(k, info) => {
                assert_eq!(k, key("ns", "m"));
                assert_eq!(info.type_, "ClusterIP");
                assert_eq!(info.ports, [(443, "https".to_string())]);
            }
            _ => panic!("not a service"),
        }
        Ok(())
    }
}
