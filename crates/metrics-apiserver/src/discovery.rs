//! The discovery documents this server answers, built once at start-up: legacy
//! (`APIGroupList`, `APIGroup`, `APIResourceList`, `APIVersions`) and aggregated
//! (`apidiscovery.k8s.io/v2` and v2beta1, one shared ETag per document as upstream).

use apimachinery::discovery::{
    APIGroup, APIGroupDiscovery, APIGroupDiscoveryList, APIGroupList, APIResource,
    APIResourceDiscovery, APIResourceList, APIVersionDiscovery, DiscoveryVersion, Freshness,
    GroupMeta, GroupVersionKind, Scope,
};
use apimachinery::etag::etag;
use bytes::Bytes;

use crate::types::{GROUP, VERSION};

/// `/apis/metrics.k8s.io/v1beta1` (and the core `/api/v1` when enabled) resources.
pub fn metrics_resources() -> APIResourceList {
    let resource = |name: &str, singular: &str, namespaced: bool, kind: &str| APIResource {
        name: name.into(),
        singular_name: singular.into(),
        namespaced,
        kind: kind.into(),
        verbs: vec!["get".into(), "list".into()],
        ..APIResource::default()
    };
    APIResourceList::new(
        GROUP,
        VERSION,
        vec![
            resource("nodes", "nodemetrics", false, "NodeMetrics"),
            resource("pods", "podmetrics", true, "PodMetrics"),
        ],
    )
}

/// `/api/v1` resources of the sample core API: read-only `nodes`.
pub fn core_resources() -> APIResourceList {
    APIResourceList::new(
        "",
        "v1",
        vec![APIResource {
            name: "nodes".into(),
            singular_name: "node".into(),
            namespaced: false,
            kind: "Node".into(),
            verbs: vec!["get".into(), "list".into()],
            short_names: vec!["no".into()],
            ..APIResource::default()
        }],
    )
}

fn aggregated_group(name: &str, version: &str, list: &APIResourceList) -> APIGroupDiscovery {
    APIGroupDiscovery {
        metadata: GroupMeta {
            name: name.into(),
            creation_timestamp: None,
        },
        versions: vec![APIVersionDiscovery {
            version: version.into(),
            resources: aggregated_resources(name, version, list),
            freshness: Some(Freshness::Current),
        }],
    }
}

fn aggregated_resources(
    group: &str,
    version: &str,
    list: &APIResourceList,
) -> Vec<APIResourceDiscovery> {
    list.resources
        .iter()
        .map(|r| APIResourceDiscovery {
            resource: r.name.clone(),
            response_kind: Some(GroupVersionKind {
                group: group.into(),
                version: version.into(),
                kind: r.kind.clone(),
            }),
            scope: if r.namespaced {
                Scope::Namespaced
            } else {
                Scope::Cluster
            },
            singular_resource: r.singular_name.clone(),
            verbs: r.verbs.clone(),
            short_names: r.short_names.clone(),
            categories: Vec::new(),
            subresources: Vec::new(),
        })
        .collect()
}

/// A serialized document and its entity tag.
#[derive(Debug, Clone)]
pub struct Document {
    /// The JSON body.
    pub body: Bytes,
    /// The quoted ETag (computed from the v2 form for aggregated documents).
    pub etag: String,
}

impl Document {
    fn json<T: serde::Serialize>(value: &T) -> Self {
        let body = serde_json::to_vec(value).unwrap_or_default();
        Document {
            etag: etag(&body),
            body: Bytes::from(body),
        }
    }
}

/// An aggregated document in both versions, sharing one ETag.
#[derive(Debug, Clone)]
pub struct Aggregated {
    /// `apidiscovery.k8s.io/v2`.
    pub v2: Document,
    /// `apidiscovery.k8s.io/v2beta1`: same items, other apiVersion, v2's ETag.
    pub v2beta1: Document,
}

impl Aggregated {
    fn new(items: Vec<APIGroupDiscovery>) -> Self {
        let v2 = Document::json(&APIGroupDiscoveryList::new(
            DiscoveryVersion::V2,
            items.clone(),
        ));
        let mut v2beta1 = Document::json(&APIGroupDiscoveryList::new(
            DiscoveryVersion::V2beta1,
            items,
        ));
        v2beta1.etag = v2.etag.clone();
        Aggregated { v2, v2beta1 }
    }

    /// The document for a discovery version.
    pub fn get(&self, version: DiscoveryVersion) -> &Document {
        match version {
            DiscoveryVersion::V2 => &self.v2,
            DiscoveryVersion::V2beta1 => &self.v2beta1,
        }
    }
}

/// Every discovery document of the server.
#[derive(Debug, Clone)]
pub struct Documents {
    /// `/apis`, aggregated.
    pub apis_aggregated: Aggregated,
    /// `/apis`, legacy `APIGroupList`.
    pub apis_legacy: Document,
    /// `/apis/metrics.k8s.io`.
    pub group: Document,
    /// `/apis/metrics.k8s.io/v1beta1`.
    pub metrics_resources: Document,
    /// `/api`, aggregated (core group `""`, version `v1`, `nodes`).
    pub api_aggregated: Aggregated,
    /// `/api/v1`.
    pub core_resources: Document,
}

impl Documents {
    /// Builds them all.
    pub fn build() -> Self {
        let metrics = metrics_resources();
        let core = core_resources();
        Documents {
            apis_aggregated: Aggregated::new(vec![aggregated_group(GROUP, VERSION, &metrics)]),
            apis_legacy: Document::json(&APIGroupList::new(vec![APIGroup::new(GROUP, &[VERSION])])),
            group: Document::json(&APIGroup::new(GROUP, &[VERSION]).standalone()),
            metrics_resources: Document::json(&metrics),
            api_aggregated: Aggregated::new(vec![aggregated_group("", "v1", &core)]),
            core_resources: Document::json(&core),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn parse(doc: &Document) -> Value {
        serde_json::from_slice(&doc.body).unwrap_or(Value::Null)
    }

    #[test]
    fn aggregated_apis_has_what_kubectl_top_needs() {
        let docs = Documents::build();
        let v2 = parse(&docs.apis_aggregated.v2);
        assert_eq!(v2["kind"], "APIGroupDiscoveryList");
        assert_eq!(v2["apiVersion"], "apidiscovery.k8s.io/v2");
        let group = &v2["items"][0];
        assert_eq!(group["metadata"]["name"], "metrics.k8s.io");
        let version = &group["versions"][0];
        assert_eq!(version["version"], "v1beta1");
        assert_eq!(version["freshness"], "Current");
        assert_eq!(
            version["resources"][0],
            json!({"resource":"nodes","responseKind":{"group":"metrics.k8s.io","version":"v1beta1","kind":"NodeMetrics"},
                   "scope":"Cluster","singularResource":"nodemetrics","verbs":["get","list"]})
        );
        assert_eq!(version["resources"][1]["scope"], "Namespaced");
        assert_eq!(
            version["resources"][1]["responseKind"]["kind"],
            "PodMetrics"
        );
        let beta = parse(&docs.apis_aggregated.v2beta1);
        assert_eq!(beta["apiVersion"], "apidiscovery.k8s.io/v2beta1");
        assert_eq!(beta["items"], v2["items"]);
        assert_eq!(
            docs.apis_aggregated.v2beta1.etag,
            docs.apis_aggregated.v2.etag
        );
        assert_eq!(docs.apis_aggregated.v2.etag.len(), 130);
    }

    #[test]
    fn legacy_documents_match_the_recorded_shapes() {
        let docs = Documents::build();
        assert_eq!(
            parse(&docs.apis_legacy),
            json!({"kind":"APIGroupList","apiVersion":"v1","groups":[{"name":"metrics.k8s.io",
                "versions":[{"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"}],
                "preferredVersion":{"groupVersion":"metrics.k8s.io/v1beta1","version":"v1beta1"}}]})
        );
        assert_eq!(parse(&docs.group)["kind"], "APIGroup");
        assert_eq!(parse(&docs.group)["apiVersion"], "v1");
        assert_eq!(
            parse(&docs.metrics_resources),
            json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":"metrics.k8s.io/v1beta1","resources":[
                {"name":"nodes","singularName":"nodemetrics","namespaced":false,"kind":"NodeMetrics","verbs":["get","list"]},
                {"name":"pods","singularName":"podmetrics","namespaced":true,"kind":"PodMetrics","verbs":["get","list"]}]})
        );
    }

    #[test]
    fn core_documents() {
        let docs = Documents::build();
        let api = parse(&docs.api_aggregated.v2);
        // The core group has no name (kubectl-samples/api-aggregated.json).
        assert!(api["items"][0]["metadata"].get("name").is_none());
        assert_eq!(api["items"][0]["versions"][0]["version"], "v1");
        let nodes = &api["items"][0]["versions"][0]["resources"][0];
        assert_eq!(nodes["resource"], "nodes");
        assert_eq!(nodes["responseKind"]["kind"], "Node");
        assert_eq!(nodes["shortNames"], json!(["no"]));
        let v1 = parse(&docs.core_resources);
        assert_eq!(v1["groupVersion"], "v1");
        assert_eq!(v1["resources"][0]["kind"], "Node");
    }
}
