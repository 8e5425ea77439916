//! Discovery documents and the route table, derived from each new APIService snapshot (and
//! each new set of backend discovery results), never per request: `/apis` legacy and
//! aggregated (v2, v2beta1, one ETag), `/apis/<group>`, and the own group's documents, all as
//! shared `Bytes` (upstream-behaviour.md §3).
//!
//! Backends' resources come in through [`BackendDiscovery`], published by whoever fetches them
//! (the proxy's discovery fetcher): a group-version without an entry is listed `Stale` with no
//! resources, as upstream lists a backend whose fetch never succeeded.

use std::collections::HashMap;
use std::sync::Arc;

use apimachinery::discovery::{
    APIGroup, APIGroupDiscovery, APIGroupDiscoveryList, APIGroupList, APIResource,
    APIResourceDiscovery, APIResourceList, APISubresourceDiscovery, APIVersionDiscovery,
    DiscoveryVersion, Freshness, GroupMeta, GroupVersionKind, PrioritizedVersion, Scope,
    aggregated_order, legacy_order,
};
use bytes::Bytes;
use store::APIService;
use tokio::sync::watch;

use crate::informer::Snapshot;
use crate::metrics::Metrics;
use crate::registry::strategy::spec;

/// The aggregator's own group.
pub const GROUP: &str = "apiregistration.k8s.io";
/// Its only served version.
pub const VERSION: &str = "v1";
/// The group priority upstream gives apiregistration in aggregated discovery (above the
/// validation maximum, so it is always first).
pub const OWN_GROUP_PRIORITY: i32 = 20001;

/// Resources fetched from a backend for one group-version.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchedVersion {
    /// The group-version's resources.
    pub resources: Vec<APIResourceDiscovery>,
    /// `Current` after a successful fetch, `Stale` (keeping the last good resources) after a
    /// failed one.
    pub freshness: Freshness,
}

/// The latest backend discovery results, keyed by `(group, version)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendDiscovery {
    /// Results per group-version.
    pub versions: HashMap<(String, String), FetchedVersion>,
    /// The delegate's own groups (kube-apiserver's built-in and CRD groups), listed where no
    /// APIService claims the group-version (`crate::cluster::delegate_discovery`).
    pub delegate: Option<Arc<crate::cluster::delegate_discovery::DelegateGroups>>,
}

/// Everything the request path reads, derived from one snapshot.
#[derive(Debug, Clone, Default)]
pub struct ServingState {
    /// The APIServices.
    pub snapshot: Arc<Snapshot>,
    /// `/apis` as a legacy `APIGroupList`.
    pub apis_legacy: Bytes,
    /// `/apis` as `apidiscovery.k8s.io/v2`.
    pub apis_v2: Bytes,
    /// `/apis` as `apidiscovery.k8s.io/v2beta1`.
    pub apis_v2beta1: Bytes,
    /// The quoted SHA-512 ETag of the v2 document, shared by both versions (§3.6).
    pub apis_etag: String,
    /// `/apis/<group>` documents (`APIGroup`).
    pub groups: HashMap<String, Bytes>,
    /// The APIService serving each `(group, version)` (the route table).
    pub versions: HashMap<(String, String), Arc<APIService>>,
    /// The `v1.` APIService, which owns `/api`.
    pub core: Option<Arc<APIService>>,
    /// Gzip copies of the `/apis` documents, made on first request (once per snapshot).
    pub gzipped: Arc<Gzipped>,
}

/// Documents at least this large are sent gzip-compressed to clients that accept it (client-go
/// and kubectl always do). Upstream compresses responses over 128 KiB per request; ours are
/// compressed once per snapshot, so smaller documents are worth it too.
pub const GZIP_MIN_BYTES: usize = 8 << 10;

/// Lazily compressed copies of the three `/apis` documents.
#[derive(Debug, Default)]
pub struct Gzipped {
    legacy: std::sync::OnceLock<Bytes>,
    v2: std::sync::OnceLock<Bytes>,
    v2beta1: std::sync::OnceLock<Bytes>,
}

/// `body` gzip-compressed (level 6, as Go's default).
pub fn gzip(body: &[u8]) -> Bytes {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 6),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(body);
    Bytes::from(encoder.finish().unwrap_or_default())
}

impl ServingState {
    /// The `/apis` document for `v` (`None`: the legacy APIGroupList) and whether it is the
    /// gzip-compressed copy: compressed when `accepts_gzip` and the document is large enough.
    pub fn apis_body(&self, v: Option<DiscoveryVersion>, accepts_gzip: bool) -> (Bytes, bool) {
        let (plain, cell) = match v {
            None => (&self.apis_legacy, &self.gzipped.legacy),
            Some(DiscoveryVersion::V2) => (&self.apis_v2, &self.gzipped.v2),
            Some(DiscoveryVersion::V2beta1) => (&self.apis_v2beta1, &self.gzipped.v2beta1),
        };
        if accepts_gzip && plain.len() >= GZIP_MIN_BYTES {
            (cell.get_or_init(|| gzip(plain)).clone(), true)
        } else {
            (plain.clone(), false)
        }
    }

    /// The aggregated `/apis` document for `v`.
    pub fn apis_aggregated(&self, v: DiscoveryVersion) -> &Bytes {
        match v {
            DiscoveryVersion::V2 => &self.apis_v2,
            DiscoveryVersion::V2beta1 => &self.apis_v2beta1,
        }
    }
}

fn gvk(kind: &str) -> Option<GroupVersionKind> {
    Some(GroupVersionKind {
        group: GROUP.into(),
        version: VERSION.into(),
        kind: kind.into(),
    })
}

/// The `apiservices` resource as aggregated discovery lists it.
pub fn own_resources() -> Vec<APIResourceDiscovery> {
    vec![APIResourceDiscovery {
        resource: "apiservices".into(),
        response_kind: gvk("APIService"),
        scope: Scope::Cluster,
        singular_resource: "apiservice".into(),
        verbs: [
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
        .map(String::from)
        .to_vec(),
        short_names: Vec::new(),
        categories: vec!["api-extensions".into()],
        subresources: vec![APISubresourceDiscovery {
            subresource: "status".into(),
            response_kind: gvk("APIService"),
            accepted_types: Vec::new(),
            verbs: ["get", "patch", "update"].map(String::from).to_vec(),
        }],
    }]
}

/// `/apis/apiregistration.k8s.io/v1` (`APIResourceList`).
pub fn own_resource_list() -> Bytes {
    let list = APIResourceList::new(
        GROUP,
        VERSION,
        vec![
            APIResource {
                name: "apiservices".into(),
                singular_name: "apiservice".into(),
                namespaced: false,
                kind: "APIService".into(),
                verbs: [
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch",
                ]
                .map(String::from)
                .to_vec(),
                categories: vec!["api-extensions".into()],
                ..APIResource::default()
            },
            APIResource {
                name: "apiservices/status".into(),
                singular_name: String::new(),
                namespaced: false,
                kind: "APIService".into(),
                verbs: ["get", "patch", "update"].map(String::from).to_vec(),
                ..APIResource::default()
            },
        ],
    );
    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

fn own_group() -> APIGroup {
    APIGroup::new(GROUP, &[VERSION])
}

/// Whether an APIService takes part in routing and discovery: not the core `v1.` (it owns
/// `/api` only) and not our own group (served here, whatever is registered for it).
fn is_routed_group(obj: &APIService) -> bool {
    let g = spec(obj).group.as_deref().unwrap_or_default();
    !g.is_empty() && g != GROUP
}

fn prioritized(obj: &APIService) -> PrioritizedVersion {
    PrioritizedVersion {
        name: obj.metadata.name.clone().unwrap_or_default(),
        group: spec(obj).group.clone().unwrap_or_default(),
        version: spec(obj).version.clone().unwrap_or_default(),
        group_priority_minimum: spec(obj).group_priority_minimum,
        version_priority: spec(obj).version_priority,
    }
}

/// Computes every document and the route table.
pub fn derive(snapshot: Arc<Snapshot>, backend: &BackendDiscovery) -> ServingState {
    let services: Vec<&Arc<APIService>> = snapshot.items.values().collect();
    let mut routed: Vec<PrioritizedVersion> = services
        .iter()
        .filter(|o| is_routed_group(o))
        .map(|o| prioritized(o))
        .collect();
    // The delegate's group-versions that no APIService claims (§3.6: source Aggregator
    // shadows Builtin); our own group is always ours.
    let claimed: std::collections::HashSet<(&str, &str)> = services
        .iter()
        .map(|o| {
            (
                spec(o).group.as_deref().unwrap_or_default(),
                spec(o).version.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    let delegated: HashMap<(String, String), APIVersionDiscovery> = match &backend.delegate {
        Some(d) => d
            .unclaimed(|g, v| g == GROUP || claimed.contains(&(g, v)))
            .into_iter()
            .map(|(p, v)| {
                let key = (p.group.clone(), p.version.clone());
                routed.push(p);
                (key, v)
            })
            .collect(),
        None => HashMap::new(),
    };

    // Legacy /apis: our group first, then §3.3's order.
    let legacy = legacy_order(&routed);
    let mut groups_json = HashMap::new();
    let mut groups = vec![own_group()];
    groups_json.insert(
        GROUP.to_owned(),
        Bytes::from(serde_json::to_vec(&own_group().standalone()).unwrap_or_default()),
    );
    for g in &legacy {
        let versions: Vec<&str> = g.iter().map(|v| v.version.as_str()).collect();
        let group = APIGroup::new(&g[0].group, &versions);
        groups_json.insert(
            g[0].group.clone(),
            Bytes::from(serde_json::to_vec(&group.clone().standalone()).unwrap_or_default()),
        );
        groups.push(group);
    }
    let apis_legacy =
        Bytes::from(serde_json::to_vec(&APIGroupList::new(groups)).unwrap_or_default());

    // Aggregated /apis.
    let mut with_own = routed.clone();
    with_own.push(PrioritizedVersion {
        name: format!("{VERSION}.{GROUP}"),
        group: GROUP.into(),
        version: VERSION.into(),
        group_priority_minimum: OWN_GROUP_PRIORITY,
        version_priority: 15,
    });
    let items: Vec<APIGroupDiscovery> = aggregated_order(&with_own)
        .into_iter()
        .map(|g| APIGroupDiscovery {
            metadata: GroupMeta {
                name: g[0].group.clone(),
                creation_timestamp: None,
            },
            versions: g
                .iter()
                .map(|v| {
                    if v.group == GROUP {
                        return APIVersionDiscovery {
                            version: VERSION.into(),
                            resources: own_resources(),
                            freshness: Some(Freshness::Current),
                        };
                    }
                    let key = (v.group.clone(), v.version.clone());
                    if let Some(d) = delegated.get(&key) {
                        let mut d = d.clone();
                        d.freshness = Some(d.freshness.unwrap_or(Freshness::Current));
                        return d;
                    }
                    match backend.versions.get(&key) {
                        Some(f) => {
                            let mut resources = f.resources.clone();
                            resources.sort_by(|a, b| a.resource.cmp(&b.resource));
                            APIVersionDiscovery {
                                version: v.version.clone(),
                                resources,
                                freshness: Some(f.freshness),
                            }
                        }
                        None => APIVersionDiscovery {
                            version: v.version.clone(),
                            resources: Vec::new(),
                            freshness: Some(Freshness::Stale),
                        },
                    }
                })
                .collect(),
        })
        .collect();
    let v2 = APIGroupDiscoveryList::new(DiscoveryVersion::V2, items);
    let apis_v2 = serde_json::to_vec(&v2).unwrap_or_default();
    let apis_etag = apimachinery::etag::etag(&apis_v2);
    let v2beta1 = APIGroupDiscoveryList {
        api_version: DiscoveryVersion::V2beta1.api_version().into(),
        ..v2
    };
    let apis_v2beta1 = Bytes::from(serde_json::to_vec(&v2beta1).unwrap_or_default());

    let mut versions = HashMap::new();
    for o in services.iter().filter(|o| is_routed_group(o)) {
        versions.insert(
            (
                spec(o).group.clone().unwrap_or_default(),
                spec(o).version.clone().unwrap_or_default(),
            ),
            Arc::clone(o),
        );
    }
    let core = snapshot
        .items
        .get("v1.")
        .filter(|o| spec(o).group.as_deref().unwrap_or_default().is_empty())
        .cloned();

    ServingState {
        snapshot,
        apis_legacy,
        apis_v2: Bytes::from(apis_v2),
        apis_v2beta1,
        apis_etag,
        groups: groups_json,
        versions,
        core,
        gzipped: Arc::default(),
    }
}

/// Recomputes the serving state whenever the snapshot or the backend discovery changes.
pub async fn run(
    mut snapshots: watch::Receiver<Arc<Snapshot>>,
    mut backends: watch::Receiver<Arc<BackendDiscovery>>,
    tx: watch::Sender<Arc<ServingState>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut known: Vec<String> = Vec::new();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let backend = backends.borrow_and_update().clone();
        let state = derive(snap.clone(), &backend);
        metrics.discovery_aggregated();
        for name in &known {
            if !snap.items.contains_key(name) {
                metrics.forget_apiservice(name);
            }
        }
        known = snap.items.keys().cloned().collect();
        for (name, obj) in &snap.items {
            metrics.set_unavailable(name, !crate::registry::strategy::is_available(obj));
        }
        tx.send_replace(Arc::new(state));
        tokio::select! {
            r = snapshots.changed() => if r.is_err() { return },
            r = backends.changed() => if r.is_err() { return },
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
        APIServiceSpec, ServiceReference,
    };

    fn svc(group: &str, version: &str, gp: i32, vp: i32) -> APIService {
        APIService {
            metadata: ObjectMeta {
                name: Some(format!("{version}.{group}")),
                ..ObjectMeta::default()
            },
            spec: Some(APIServiceSpec {
                group: Some(group.into()),
                version: Some(version.into()),
                group_priority_minimum: gp,
                version_priority: vp,
                service: Some(ServiceReference {
                    namespace: Some("ns".into()),
                    name: Some("s".into()),
                    port: Some(443),
                }),
                ..APIServiceSpec::default()
            }),
            status: None,
        }
    }

    fn snapshot(objs: Vec<APIService>) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            resource_version: "1".into(),
            items: objs
                .into_iter()
                .map(|o| (o.metadata.name.clone().unwrap_or_default(), Arc::new(o)))
                .collect(),
            synced: true,
        })
    }

    #[test]
    fn documents_follow_upstream_order() {
        let snap = snapshot(vec![
            svc("example.com", "foo", 100, 15),
            svc("example.com", "v1alpha1", 100, 15),
            svc("example.com", "v1", 100, 15),
            svc("example.com", "v1beta2", 100, 15),
            svc("high.io", "v1", 15000, 15),
            svc("", "v1", 18000, 1),
        ]);
        let mut backend = BackendDiscovery::default();
        backend.versions.insert(
            ("high.io".into(), "v1".into()),
            FetchedVersion {
                resources: vec![],
                freshness: Freshness::Current,
            },
        );
        let st = derive(snap, &backend);
        let legacy: serde_json::Value = serde_json::from_slice(&st.apis_legacy).unwrap_or_default();
        let names: Vec<&str> = legacy["groups"]
            .as_array()
            .map(|g| g.iter().filter_map(|x| x["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["apiregistration.k8s.io", "high.io", "example.com"]);
        let versions: Vec<&str> = legacy["groups"][2]["versions"]
            .as_array()
            .map(|g| g.iter().filter_map(|x| x["version"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(versions, ["v1", "v1beta2", "v1alpha1", "foo"]);
        assert_eq!(legacy["groups"][2]["preferredVersion"]["version"], "v1");

        let agg: serde_json::Value = serde_json::from_slice(&st.apis_v2).unwrap_or_default();
        assert_eq!(agg["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(
            agg["items"][0]["metadata"]["name"],
            "apiregistration.k8s.io"
        );
        assert_eq!(
            agg["items"][0]["versions"][0]["resources"][0]["responseKind"]["kind"],
            "APIService"
        );
        assert_eq!(agg["items"][1]["metadata"]["name"], "high.io");
        assert_eq!(agg["items"][1]["versions"][0]["freshness"], "Current");
        assert_eq!(agg["items"][2]["versions"][3]["version"], "foo");
        assert_eq!(agg["items"][2]["versions"][0]["freshness"], "Stale");
        let beta: serde_json::Value = serde_json::from_slice(&st.apis_v2beta1).unwrap_or_default();
        assert_eq!(beta["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        assert_eq!(st.apis_etag, apimachinery::etag::etag(&st.apis_v2));
        assert!(st.core.is_some());
        assert!(
            st.versions
                .contains_key(&("high.io".to_string(), "v1".to_string()))
        );
        assert!(st.groups.contains_key("example.com"));
    }
}
