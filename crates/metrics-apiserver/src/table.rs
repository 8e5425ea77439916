//! Server-side `Table`s for `kubectl get`: metrics-server's columns for NodeMetrics and
//! PodMetrics (Name, one column per resource, Window), and the core printer's columns for the
//! sample Node.

use std::collections::{BTreeMap, BTreeSet};

use apimachinery::duration::age;
use apimachinery::table::{
    IncludeObject, ListMeta, PartialObjectMetadata, Table, TableColumnDefinition, TableRow,
    age_column, name_column,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use crate::quantity::Quantity;
use crate::types::{NodeMetrics, PodMetrics};

fn column(name: &str, format: &str, description: &str, priority: i32) -> TableColumnDefinition {
    TableColumnDefinition {
        name: name.into(),
        type_: "string".into(),
        format: format.into(),
        description: description.into(),
        priority,
    }
}

/// metrics-server's columns: `Name`, one `quantity` column per resource name (sorted), then
/// `Window`. metrics-server sends no columns for an empty list; `cpu` and `memory` are used
/// then, so `kubectl get` prints its "No resources found" with proper headers.
fn metrics_columns(resources: &BTreeSet<String>) -> Vec<TableColumnDefinition> {
    let mut columns = vec![column("Name", "name", "Name of the resource", 0)];
    let defaults: BTreeSet<String> = ["cpu".to_owned(), "memory".to_owned()].into();
    let names = if resources.is_empty() {
        &defaults
    } else {
        resources
    };
    columns.extend(names.iter().map(|n| column(n, "quantity", "", 0)));
    columns.push(column("Window", "duration", "", 0));
    columns
}

fn row_object<T: Serialize>(
    include: IncludeObject,
    object: &T,
    meta: &ObjectMeta,
) -> Option<serde_json::Value> {
    match include {
        IncludeObject::None => None,
        IncludeObject::Metadata => {
            serde_json::to_value(PartialObjectMetadata::new(meta.clone())).ok()
        }
        IncludeObject::Object => serde_json::to_value(object).ok(),
    }
}

fn metrics_row(
    name: &str,
    usage: &BTreeMap<String, String>,
    resources: &BTreeSet<String>,
    window: &str,
    object: Option<serde_json::Value>,
) -> TableRow {
    let mut cells = vec![serde_json::Value::from(name)];
    cells.extend(resources.iter().map(|r| {
        // A resource another row has but this one lacks shows as Go's zero Quantity.
        serde_json::Value::from(usage.get(r).cloned().unwrap_or_else(|| "0".into()))
    }));
    cells.push(window.into());
    TableRow { cells, object }
}

/// The Table for NodeMetrics (`version` is `v1` or `v1beta1` of meta.k8s.io).
pub fn node_metrics_table(items: &[NodeMetrics], include: IncludeObject, version: &str) -> Table {
    let resources: BTreeSet<String> = items.iter().flat_map(|n| n.usage.keys().cloned()).collect();
    let rows = items
        .iter()
        .map(|n| {
            metrics_row(
                n.metadata.name.as_deref().unwrap_or_default(),
                &n.usage,
                &resources,
                &n.window,
                row_object(include, n, &n.metadata),
            )
        })
        .collect();
    Table::new(
        version,
        ListMeta::default(),
        metrics_columns(&resources),
        rows,
    )
}

/// A pod's usage: its containers' usage summed per resource, as metrics-server's table does.
pub fn pod_usage(pod: &PodMetrics) -> BTreeMap<String, String> {
    let mut sums: BTreeMap<String, Quantity> = BTreeMap::new();
    for container in &pod.containers {
        for (resource, value) in &container.usage {
            // Values were validated when the file was loaded.
            if let Ok(q) = Quantity::parse(value) {
                let sum = sums
                    .entry(resource.clone())
                    .or_insert(Quantity::from_nanos(0));
                *sum = *sum + q;
            }
        }
    }
    sums.into_iter().map(|(k, v)| (k, v.to_string())).collect()
}

/// The Table for PodMetrics.
pub fn pod_metrics_table(items: &[PodMetrics], include: IncludeObject, version: &str) -> Table {
    let usages: Vec<BTreeMap<String, String>> = items.iter().map(pod_usage).collect();
    let resources: BTreeSet<String> = usages.iter().flat_map(|u| u.keys().cloned()).collect();
    let rows = items
        .iter()
        .zip(&usages)
        .map(|(p, usage)| {
            metrics_row(
                p.metadata.name.as_deref().unwrap_or_default(),
                usage,
                &resources,
                &p.window,
                row_object(include, p, &p.metadata),
            )
        })
        .collect();
    Table::new(
        version,
        ListMeta::default(),
        metrics_columns(&resources),
        rows,
    )
}

/// The Table for core Nodes, with the core printer's columns.
pub fn nodes_table(
    items: &[Node],
    include: IncludeObject,
    version: &str,
    now: jiff::Timestamp,
) -> Table {
    let columns = vec![
        name_column(),
        column("Status", "", "The status of the node", 0),
        column("Roles", "", "The roles of the node", 0),
        age_column(),
        column("Version", "", "Kubelet Version reported by the node.", 0),
        column("Internal-IP", "", "List of internal IPs in the node.", 1),
        column("External-IP", "", "List of external IPs in the node.", 1),
        column(
            "OS-Image",
            "",
            "OS image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            1,
        ),
        column(
            "Kernel-Version",
            "",
            "Kernel version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            1,
        ),
        column(
            "Container-Runtime",
            "",
            "Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            1,
        ),
    ];
    let rows = items
        .iter()
        .map(|node| {
            let status = node.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let info = status.node_info.unwrap_or_default();
            let address = |kind: &str| {
                status
                    .addresses
                    .iter()
                    .flatten()
                    .find(|a| a.type_ == kind)
                    .map(|a| a.address.clone())
                    .unwrap_or_else(|| "<none>".into())
            };
            let cells = vec![
                node.metadata.name.clone().unwrap_or_default().into(),
                if ready { "Ready" } else { "NotReady" }.into(),
                "<none>".into(),
                age(node.metadata.creation_timestamp.as_ref().map(|t| t.0), now).into(),
                info.kubelet_version.clone().into(),
                address("InternalIP").into(),
                address("ExternalIP").into(),
                info.os_image.clone().into(),
                info.kernel_version.clone().into(),
                info.container_runtime_version.clone().into(),
            ];
            TableRow {
                cells,
                object: row_object(include, node, &node.metadata),
            }
        })
        .collect();
    Table::new(version, ListMeta::default(), columns, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ContainerMetrics;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> NodeMetrics {
        NodeMetrics::new(
            ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            Time(jiff::Timestamp::UNIX_EPOCH),
            "10.062s".into(),
            BTreeMap::from([
                ("cpu".to_owned(), cpu.to_owned()),
                ("memory".to_owned(), "1234567Ki".to_owned()),
            ]),
        )
    }

    fn pod(name: &str, containers: &[(&str, &str, &str)]) -> PodMetrics {
        PodMetrics {
            kind: "PodMetrics".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            timestamp: Time(jiff::Timestamp::UNIX_EPOCH),
            window: "10s".into(),
            containers: containers
                .iter()
                .map(|(n, cpu, mem)| ContainerMetrics {
                    name: (*n).into(),
                    usage: BTreeMap::from([
                        ("cpu".to_owned(), (*cpu).to_owned()),
                        ("memory".to_owned(), (*mem).to_owned()),
                    ]),
                })
                .collect(),
        }
    }

    #[test]
    fn node_metrics_columns_and_rows_are_metrics_servers() -> Result<(), serde_json::Error> {
        let t = node_metrics_table(
            &[node("node-a", "137686214n")],
            IncludeObject::Metadata,
            "v1",
        );
        let v = serde_json::to_value(&t)?;
        assert_eq!(v["kind"], "Table");
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
        let names: Vec<&str> = t
            .column_definitions
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, ["Name", "cpu", "memory", "Window"]);
        assert_eq!(t.column_definitions[1].format, "quantity");
        assert_eq!(t.column_definitions[3].format, "duration");
        assert_eq!(
            v["rows"][0]["cells"],
            json!(["node-a", "137686214n", "1234567Ki", "10.062s"])
        );
        assert_eq!(v["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(v["rows"][0]["object"]["metadata"]["name"], "node-a");
        Ok(())
    }

    #[test]
    fn include_object_controls_the_row_object() -> Result<(), serde_json::Error> {
        let items = [node("n", "1")];
        let full = serde_json::to_value(node_metrics_table(&items, IncludeObject::Object, "v1"))?;
        assert_eq!(full["rows"][0]["object"]["kind"], "NodeMetrics");
        let none =
            serde_json::to_value(node_metrics_table(&items, IncludeObject::None, "v1beta1"))?;
        assert!(none["rows"][0].get("object").is_none());
        assert_eq!(none["apiVersion"], "meta.k8s.io/v1beta1");
        Ok(())
    }

    #[test]
    fn pod_rows_sum_their_containers() {
        let p = pod(
            "web-0",
            &[("app", "100m", "100Mi"), ("sidecar", "1500u", "28Mi")],
        );
        assert_eq!(
            pod_usage(&p),
            BTreeMap::from([
                ("cpu".to_owned(), "101500u".to_owned()),
                ("memory".to_owned(), "128Mi".to_owned())
            ])
        );
        let t = pod_metrics_table(&[p, pod("idle", &[])], IncludeObject::Metadata, "v1");
        assert_eq!(
            t.rows[0].cells,
            [
                json!("web-0"),
                json!("101500u"),
                json!("128Mi"),
                json!("10s")
            ]
        );
        // A pod without containers shows zeros, not missing cells.
        assert_eq!(
            t.rows[1].cells,
            [json!("idle"), json!("0"), json!("0"), json!("10s")]
        );
    }

    #[test]
    fn empty_lists_still_have_columns() {
        let t = pod_metrics_table(&[], IncludeObject::Metadata, "v1");
        assert_eq!(t.column_definitions.len(), 4);
        assert!(t.rows.is_empty());
    }
}
