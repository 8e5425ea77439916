//! Discovery documents: the legacy `APIVersions` / `APIGroupList` / `APIGroup` /
//! `APIResourceList`, the aggregated `apidiscovery.k8s.io/v2` (and v2beta1, same shape)
//! `APIGroupDiscoveryList`, and the group/version ordering of upstream-behaviour.md §3.3.
//!
//! k8s-openapi has no apidiscovery types, and its legacy types serialize fields in a different
//! order, so all shapes are defined here. Every type deserializes too (the proxy reads
//! backends' documents with them); unknown fields are ignored.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::version::compare_kube_aware;

/// Media-type parameter `g` of aggregated discovery.
pub const DISCOVERY_GROUP: &str = "apidiscovery.k8s.io";
/// `Content-Type` of an aggregated v2 answer (parameters in upstream's order g, v, as).
pub const CONTENT_TYPE_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
/// `Content-Type` of an aggregated v2beta1 answer.
pub const CONTENT_TYPE_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";
/// The priorities upstream gives a group-version without an APIService (§3.3).
pub const DEFAULT_PRIORITY: (i32, i32) = (1000, 15);

/// Which aggregated discovery version a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscoveryVersion {
    /// `apidiscovery.k8s.io/v2`.
    V2,
    /// `apidiscovery.k8s.io/v2beta1` (same shape, other apiVersion).
    V2beta1,
}

impl DiscoveryVersion {
    /// `apidiscovery.k8s.io/v2` or `…/v2beta1`.
    pub fn api_version(self) -> &'static str {
        match self {
            DiscoveryVersion::V2 => "apidiscovery.k8s.io/v2",
            DiscoveryVersion::V2beta1 => "apidiscovery.k8s.io/v2beta1",
        }
    }

    /// The response `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            DiscoveryVersion::V2 => CONTENT_TYPE_V2,
            DiscoveryVersion::V2beta1 => CONTENT_TYPE_V2BETA1,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Aggregated discovery.

/// `APIGroupDiscoveryList` (`apidiscovery.k8s.io/v2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct APIGroupDiscoveryList {
    /// `APIGroupDiscoveryList`.
    #[serde(default)]
    pub kind: String,
    /// `apidiscovery.k8s.io/v2` or `/v2beta1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// Always empty (no resourceVersion, as upstream).
    #[serde(default)]
    pub metadata: EmptyMeta,
    /// Groups in preference order.
    #[serde(default)]
    pub items: Vec<APIGroupDiscovery>,
}

impl APIGroupDiscoveryList {
    /// A list of these groups for `version`.
    pub fn new(version: DiscoveryVersion, items: Vec<APIGroupDiscovery>) -> Self {
        APIGroupDiscoveryList {
            kind: "APIGroupDiscoveryList".into(),
            api_version: version.api_version().into(),
            metadata: EmptyMeta {},
            items,
        }
    }
}

/// An always-empty `metadata` object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyMeta {}

/// `metadata` of an `APIGroupDiscovery`: the group name (empty for the core group), and the
/// `creationTimestamp: null` upstream always writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMeta {
    /// The group name; omitted for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Always null (Go's zero `metav1.Time`).
    #[serde(rename = "creationTimestamp", default)]
    pub creation_timestamp: Option<String>,
}

/// `APIGroupDiscovery`: one group and its versions in preference order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct APIGroupDiscovery {
    /// The group name.
    #[serde(default)]
    pub metadata: GroupMeta,
    /// Versions, the first being the preferred one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<APIVersionDiscovery>,
}

/// `Current` (the resources were fetched) or `Stale` (the backend could not be asked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Freshness {
    /// The resources are up to date.
    Current,
    /// The last fetch failed; clients drop the version (§9 item 5).
    Stale,
}

/// `APIVersionDiscovery`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct APIVersionDiscovery {
    /// The version, e.g. `v1beta1`.
    pub version: String,
    /// Resources, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<APIResourceDiscovery>,
    /// Omitted means Current to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
}

/// `GroupVersionKind` as discovery writes it (all three fields always present).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupVersionKind {
    /// The group.
    #[serde(default)]
    pub group: String,
    /// The version.
    #[serde(default)]
    pub version: String,
    /// The kind.
    #[serde(default)]
    pub kind: String,
}

/// `Cluster` or `Namespaced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// Cluster-scoped.
    Cluster,
    /// Namespaced.
    Namespaced,
}

/// `APIResourceDiscovery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct APIResourceDiscovery {
    /// Plural name.
    pub resource: String,
    /// What the resource returns; kubectl drops resources without it (kubectl-wire.md §3.1).
    #[serde(
        rename = "responseKind",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub response_kind: Option<GroupVersionKind>,
    /// Scope.
    pub scope: Scope,
    /// Singular name.
    #[serde(rename = "singularResource", default)]
    pub singular_resource: String,
    /// Verbs.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Short names.
    #[serde(rename = "shortNames", default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    /// Categories (e.g. `api-extensions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Subresources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subresources: Vec<APISubresourceDiscovery>,
}

/// `APISubresourceDiscovery`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct APISubresourceDiscovery {
    /// Subresource name, e.g. `status`.
    pub subresource: String,
    /// What it returns.
    #[serde(
        rename = "responseKind",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub response_kind: Option<GroupVersionKind>,
    /// Accepted request kinds.
    #[serde(
        rename = "acceptedTypes",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub accepted_types: Vec<GroupVersionKind>,
    /// Verbs.
    #[serde(default)]
    pub verbs: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Legacy discovery.

/// `GroupVersionForDiscovery`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupVersionForDiscovery {
    /// `group/version` (just `version` for core).
    #[serde(rename = "groupVersion")]
    pub group_version: String,
    /// The version.
    pub version: String,
}

impl GroupVersionForDiscovery {
    /// The entry for `group`/`version`.
    pub fn new(group: &str, version: &str) -> Self {
        GroupVersionForDiscovery {
            group_version: group_version(group, version),
            version: version.into(),
        }
    }
}

/// `group/version`, or `version` for the core group.
pub fn group_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

/// Legacy `APIGroup` (inside a list, or standalone at `/apis/<group>` with kind/apiVersion).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct APIGroup {
    /// `APIGroup` when standalone; omitted inside a list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `v1` when standalone.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub api_version: Option<String>,
    /// The group name.
    pub name: String,
    /// All versions in preference order.
    #[serde(default)]
    pub versions: Vec<GroupVersionForDiscovery>,
    /// The first version.
    #[serde(
        rename = "preferredVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub preferred_version: Option<GroupVersionForDiscovery>,
}

impl APIGroup {
    /// A group with versions in the given (already sorted) order; the first is preferred.
    pub fn new(name: &str, versions: &[&str]) -> Self {
        let versions: Vec<GroupVersionForDiscovery> = versions
            .iter()
            .map(|v| GroupVersionForDiscovery::new(name, v))
            .collect();
        APIGroup {
            kind: None,
            api_version: None,
            name: name.into(),
            preferred_version: versions.first().cloned(),
            versions,
        }
    }

    /// The same group with `kind: APIGroup, apiVersion: v1`, as `/apis/<group>` answers.
    pub fn standalone(mut self) -> Self {
        self.kind = Some("APIGroup".into());
        self.api_version = Some("v1".into());
        self
    }
}

/// Legacy `APIGroupList` (`/apis` without the aggregated Accept).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct APIGroupList {
    /// `APIGroupList`.
    pub kind: String,
    /// `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Groups in order.
    pub groups: Vec<APIGroup>,
}

impl APIGroupList {
    /// A list of these groups.
    pub fn new(groups: Vec<APIGroup>) -> Self {
        APIGroupList {
            kind: "APIGroupList".into(),
            api_version: "v1".into(),
            groups,
        }
    }
}

/// Legacy `APIVersions` (`/api`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct APIVersions {
    /// `APIVersions`.
    pub kind: String,
    /// The core versions, e.g. `["v1"]`.
    pub versions: Vec<String>,
    /// Where clients reach the server.
    #[serde(rename = "serverAddressByClientCIDRs", default)]
    pub server_address_by_client_cidrs: Vec<ServerAddressByClientCIDR>,
}

/// `ServerAddressByClientCIDR`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAddressByClientCIDR {
    /// e.g. `0.0.0.0/0`.
    #[serde(rename = "clientCIDR")]
    pub client_cidr: String,
    /// e.g. `127.0.0.1:6443`.
    #[serde(rename = "serverAddress")]
    pub server_address: String,
}

/// Legacy `APIResource`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct APIResource {
    /// Plural name, or `parent/subresource`.
    pub name: String,
    /// Singular name (empty for subresources).
    #[serde(rename = "singularName", default)]
    pub singular_name: String,
    /// Whether namespaced.
    #[serde(default)]
    pub namespaced: bool,
    /// Group, if it differs from the list's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Version, if it differs from the list's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Verbs.
    #[serde(default)]
    pub verbs: Vec<String>,
    /// Short names.
    #[serde(rename = "shortNames", default, skip_serializing_if = "Vec::is_empty")]
    pub short_names: Vec<String>,
    /// Categories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<String>,
    /// Storage version hash.
    #[serde(
        rename = "storageVersionHash",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_version_hash: Option<String>,
}

/// Legacy `APIResourceList` (`/apis/<group>/<version>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct APIResourceList {
    /// `APIResourceList`.
    pub kind: String,
    /// `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// `group/version`.
    #[serde(rename = "groupVersion")]
    pub group_version: String,
    /// Resources.
    pub resources: Vec<APIResource>,
}

impl APIResourceList {
    /// A list for `group`/`version`.
    pub fn new(group: &str, version: &str, resources: Vec<APIResource>) -> Self {
        APIResourceList {
            kind: "APIResourceList".into(),
            api_version: "v1".into(),
            group_version: group_version(group, version),
            resources,
        }
    }

    /// The aggregated form of this list (§3.7 "legacy fallback"): entries without `/` become
    /// resources, `parent/sub` entries subresources of their parent (a parent without its own
    /// entry is created with no responseKind). `group`/`version` fill empty responseKind parts.
    pub fn to_aggregated(&self, group: &str, version: &str) -> Vec<APIResourceDiscovery> {
        let gvk = |r: &APIResource| GroupVersionKind {
            group: r.group.clone().unwrap_or_else(|| group.to_owned()),
            version: r.version.clone().unwrap_or_else(|| version.to_owned()),
            kind: r.kind.clone(),
        };
        let scope = |r: &APIResource| {
            if r.namespaced {
                Scope::Namespaced
            } else {
                Scope::Cluster
            }
        };
        let mut out: Vec<APIResourceDiscovery> = Vec::new();
        for r in self.resources.iter().filter(|r| !r.name.contains('/')) {
            out.push(APIResourceDiscovery {
                resource: r.name.clone(),
                response_kind: Some(gvk(r)),
                scope: scope(r),
                singular_resource: r.singular_name.clone(),
                verbs: r.verbs.clone(),
                short_names: r.short_names.clone(),
                categories: r.categories.clone(),
                subresources: Vec::new(),
            });
        }
        for r in self.resources.iter().filter(|r| r.name.contains('/')) {
            let Some((parent, sub)) = r.name.split_once('/') else {
                continue;
            };
            let idx = match out.iter().position(|p| p.resource == parent) {
                Some(i) => i,
                None => {
                    out.push(APIResourceDiscovery {
                        resource: parent.to_owned(),
                        response_kind: None,
                        scope: scope(r),
                        singular_resource: String::new(),
                        verbs: Vec::new(),
                        short_names: Vec::new(),
                        categories: Vec::new(),
                        subresources: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            out[idx].subresources.push(APISubresourceDiscovery {
                subresource: sub.to_owned(),
                response_kind: Some(gvk(r)),
                accepted_types: Vec::new(),
                verbs: r.verbs.clone(),
            });
        }
        out.sort_by(|a, b| a.resource.cmp(&b.resource));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Ordering (§3.3).

/// One served group-version with its priorities: an APIService, or a built-in entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrioritizedVersion {
    /// The APIService name (`<version>.<group>`); breaks group-priority ties in legacy order.
    pub name: String,
    /// The group ("" for core).
    pub group: String,
    /// The version.
    pub version: String,
    /// `spec.groupPriorityMinimum`.
    pub group_priority_minimum: i32,
    /// `spec.versionPriority`.
    pub version_priority: i32,
}

fn version_order(a: &PrioritizedVersion, b: &PrioritizedVersion) -> Ordering {
    // Higher versionPriority first, then the kube-aware greater version first.
    b.version_priority
        .cmp(&a.version_priority)
        .then_with(|| compare_kube_aware(&b.version, &a.version))
}

/// Legacy `/apis` order (`SortedByGroupAndVersion`): sort by groupPriorityMinimum descending,
/// ties by APIService name; bucket by group in order of first appearance; versions by
/// versionPriority descending, ties kube-aware.
pub fn legacy_order(items: &[PrioritizedVersion]) -> Vec<Vec<PrioritizedVersion>> {
    let mut sorted: Vec<&PrioritizedVersion> = items.iter().collect();
    sorted.sort_by(|a, b| {
        b.group_priority_minimum
            .cmp(&a.group_priority_minimum)
            .then_with(|| a.name.as_bytes().cmp(b.name.as_bytes()))
    });
    let mut groups: Vec<Vec<PrioritizedVersion>> = Vec::new();
    for item in sorted {
        match groups.iter_mut().find(|g| g[0].group == item.group) {
            Some(g) => g.push(item.clone()),
            None => groups.push(vec![item.clone()]),
        }
    }
    for g in &mut groups {
        g.sort_by(version_order);
    }
    groups
}

/// Aggregated discovery order (the `ResourceManager`'s): groups by their maximum
/// groupPriorityMinimum descending, ties by group name; versions as in [`legacy_order`].
pub fn aggregated_order(items: &[PrioritizedVersion]) -> Vec<Vec<PrioritizedVersion>> {
    let mut groups: Vec<Vec<PrioritizedVersion>> = Vec::new();
    for item in items {
        match groups.iter_mut().find(|g| g[0].group == item.group) {
            Some(g) => g.push(item.clone()),
            None => groups.push(vec![item.clone()]),
        }
    }
    let max = |g: &Vec<PrioritizedVersion>| {
        g.iter()
            .map(|v| v.group_priority_minimum)
            .max()
            .unwrap_or(0)
    };
    groups.sort_by(|a, b| {
        max(b)
            .cmp(&max(a))
            .then_with(|| a[0].group.cmp(&b[0].group))
    });
    for g in &mut groups {
        g.sort_by(version_order);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(group: &str, version: &str, gp: i32, vp: i32) -> PrioritizedVersion {
        PrioritizedVersion {
            name: format!("{version}.{group}"),
            group: group.into(),
            version: version.into(),
            group_priority_minimum: gp,
            version_priority: vp,
        }
    }

    fn flat(groups: &[Vec<PrioritizedVersion>]) -> Vec<String> {
        groups
            .iter()
            .map(|g| {
                let vs: Vec<&str> = g.iter().map(|v| v.version.as_str()).collect();
                format!("{}:{}", g[0].group, vs.join(","))
            })
            .collect()
    }

    #[test]
    fn legacy_priorities_and_tiebreaks() {
        let items = vec![
            pv("b.example", "v1", 100, 10),
            pv("a.example", "v1", 100, 10),
            pv("high.example", "v1", 500, 10),
            // A group takes the position of its highest APIService.
            pv("low.example", "v1", 10, 10),
            pv("low.example", "v2", 900, 10),
            // Versions: kube order on equal versionPriority.
            pv("k.example", "foo", 50, 10),
            pv("k.example", "v1alpha1", 50, 10),
            pv("k.example", "v1", 50, 10),
            pv("k.example", "v1beta2", 50, 10),
            // versionPriority beats version order.
            pv("p.example", "v1", 40, 1),
            pv("p.example", "v1alpha1", 40, 9),
        ];
        assert_eq!(
            flat(&legacy_order(&items)),
            vec![
                "low.example:v2,v1",
                "high.example:v1",
                "a.example:v1",
                "b.example:v1",
                "k.example:v1,v1beta2,v1alpha1,foo",
                "p.example:v1alpha1,v1",
            ]
        );
    }

    #[test]
    fn legacy_ties_use_apiservice_name_and_aggregated_use_group_name() {
        // Same priority: legacy compares "<version>.<group>", aggregated compares group names.
        let items = vec![
            pv("b.example", "v1", 100, 10),
            pv("a.example", "v2", 100, 10),
        ];
        assert_eq!(
            flat(&legacy_order(&items)),
            vec!["b.example:v1", "a.example:v2"]
        );
        assert_eq!(
            flat(&aggregated_order(&items)),
            vec!["a.example:v2", "b.example:v1"]
        );
    }

    #[test]
    fn aggregated_uses_max_priority() {
        let items = vec![
            pv("x.example", "v1", 10, 10),
            pv("y.example", "v1", 20, 10),
            pv("x.example", "v2", 30, 10),
        ];
        assert_eq!(
            flat(&aggregated_order(&items)),
            vec!["x.example:v2,v1", "y.example:v1"]
        );
    }

    #[test]
    fn shapes_serialize_like_upstream() {
        let list = APIGroupList::new(vec![APIGroup::new("apiregistration.k8s.io", &["v1"])]);
        assert_eq!(
            serde_json::to_string(&list).unwrap_or_default(),
            r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"apiregistration.k8s.io","versions":[{"groupVersion":"apiregistration.k8s.io/v1","version":"v1"}],"preferredVersion":{"groupVersion":"apiregistration.k8s.io/v1","version":"v1"}}]}"#
        );
        let g = APIGroupDiscovery {
            metadata: GroupMeta {
                name: "g".into(),
                creation_timestamp: None,
            },
            versions: vec![APIVersionDiscovery {
                version: "v1".into(),
                resources: vec![],
                freshness: Some(Freshness::Stale),
            }],
        };
        let doc = APIGroupDiscoveryList::new(DiscoveryVersion::V2, vec![g]);
        assert_eq!(
            serde_json::to_string(&doc).unwrap_or_default(),
            r#"{"kind":"APIGroupDiscoveryList","apiVersion":"apidiscovery.k8s.io/v2","metadata":{},"items":[{"metadata":{"name":"g","creationTimestamp":null},"versions":[{"version":"v1","freshness":"Stale"}]}]}"#
        );
    }

    #[test]
    fn legacy_resource_list_converts_to_aggregated() {
        let list: APIResourceList = serde_json::from_str(
            r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"metrics.k8s.io/v1beta1","resources":[
              {"name":"pods/log","singularName":"","namespaced":true,"kind":"Log","verbs":["get"]},
              {"name":"nodes","singularName":"node","namespaced":false,"kind":"NodeMetrics","verbs":["get","list"]},
              {"name":"nodes/status","singularName":"","namespaced":false,"kind":"NodeMetrics","verbs":["get"]}]}"#,
        )
        .unwrap_or_default();
        let agg = list.to_aggregated("metrics.k8s.io", "v1beta1");
        assert_eq!(agg.len(), 2);
        assert_eq!(agg[0].resource, "nodes");
        assert_eq!(agg[0].subresources[0].subresource, "status");
        assert_eq!(
            agg[0].response_kind.as_ref().map(|k| k.kind.as_str()),
            Some("NodeMetrics")
        );
        assert_eq!(agg[1].resource, "pods");
        assert_eq!(agg[1].response_kind, None);
        assert_eq!(agg[1].scope, Scope::Namespaced);
    }
}
