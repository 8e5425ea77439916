//! The `metrics.k8s.io/v1beta1` objects (`k8s.io/metrics/pkg/apis/metrics/v1beta1`), which
//! k8s-openapi does not have. Field order and omission follow the Go JSON encoding.

use std::collections::BTreeMap;

use apimachinery::table::ListMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
/// The served version.
pub const VERSION: &str = "v1beta1";
/// `metrics.k8s.io/v1beta1`.
pub const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// `NodeMetrics`: one node's usage over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    /// `NodeMetrics`; empty (omitted) inside a list, as Go encodes list items.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `metrics.k8s.io/v1beta1`; empty (omitted) inside a list.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// Name (the node's), labels (the node's) and creationTimestamp (when the object was
    /// built, as metrics-server sets it).
    pub metadata: ObjectMeta,
    /// The end of the window the usage was measured over.
    pub timestamp: Time,
    /// The window's length as a Go duration, e.g. `10.062s`.
    pub window: String,
    /// `cpu` in nanocores (`137686214n`) and `memory` in bytes (`1234567Ki`).
    pub usage: BTreeMap<String, String>,
}

impl NodeMetrics {
    /// The object with kind and apiVersion set.
    pub fn new(
        metadata: ObjectMeta,
        timestamp: Time,
        window: String,
        usage: BTreeMap<String, String>,
    ) -> Self {
        NodeMetrics {
            kind: "NodeMetrics".into(),
            api_version: API_VERSION.into(),
            metadata,
            timestamp,
            window,
            usage,
        }
    }
}

/// `NodeMetricsList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMetricsList {
    /// `NodeMetricsList`.
    pub kind: String,
    /// `metrics.k8s.io/v1beta1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Empty: metrics have no resourceVersion.
    pub metadata: ListMeta,
    /// Items sorted by name.
    pub items: Vec<NodeMetrics>,
}

impl NodeMetricsList {
    /// A list of these items (their kind and apiVersion are cleared).
    pub fn new(mut items: Vec<NodeMetrics>) -> Self {
        for item in &mut items {
            item.kind.clear();
            item.api_version.clear();
        }
        NodeMetricsList {
            kind: "NodeMetricsList".into(),
            api_version: API_VERSION.into(),
            metadata: ListMeta::default(),
            items,
        }
    }
}

/// `ContainerMetrics`: one container's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerMetrics {
    /// The container name.
    pub name: String,
    /// Usage by resource name, as canonical quantities.
    pub usage: BTreeMap<String, String>,
}

/// `PodMetrics`: one pod's per-container usage over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodMetrics {
    /// `PodMetrics`; empty (omitted) inside a list, as Go encodes list items.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// `metrics.k8s.io/v1beta1`; empty (omitted) inside a list.
    #[serde(
        rename = "apiVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub api_version: String,
    /// Name, namespace and labels of the pod.
    pub metadata: ObjectMeta,
    /// The end of the window.
    pub timestamp: Time,
    /// The window's length as a Go duration.
    pub window: String,
    /// The containers.
    pub containers: Vec<ContainerMetrics>,
}

/// `PodMetricsList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodMetricsList {
    /// `PodMetricsList`.
    pub kind: String,
    /// `metrics.k8s.io/v1beta1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Empty.
    pub metadata: ListMeta,
    /// Items sorted by namespace, then name.
    pub items: Vec<PodMetrics>,
}

impl PodMetricsList {
    /// A list of these items (their kind and apiVersion are cleared).
    pub fn new(mut items: Vec<PodMetrics>) -> Self {
        for item in &mut items {
            item.kind.clear();
            item.api_version.clear();
        }
        PodMetricsList {
            kind: "PodMetricsList".into(),
            api_version: API_VERSION.into(),
            metadata: ListMeta::default(),
            items,
        }
    }
}
