//! The one node this server measures: its NodeMetrics and, for the sample core API, a minimal
//! core `v1` Node (what `kubectl top node` reads from `/api/v1/nodes` to compute percentages).

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::quantity::{format_binary_bytes, format_decimal_nanos, format_go_duration};
use crate::sampler::NodeSample;
use crate::types::NodeMetrics;

/// What does not change while the server runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node name (`--node-name`, by default the lower-cased hostname).
    pub name: String,
    /// `kubernetes.io/hostname`, `kubernetes.io/os` and `kubernetes.io/arch`.
    pub labels: BTreeMap<String, String>,
    /// `<proc>/sys/kernel/osrelease`.
    pub kernel_version: String,
    /// `<proc>/sys/kernel/random/boot_id`.
    pub boot_id: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
}

/// The Go architecture name, as the `kubernetes.io/arch` label uses it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The machine's hostname from `<proc>/sys/kernel/hostname`, lower-cased as the kubelet does;
/// `None` when unreadable or empty.
pub fn hostname(proc_dir: &Path) -> Option<String> {
    let name = std::fs::read_to_string(proc_dir.join("sys/kernel/hostname")).ok()?;
    let name = name.trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

impl NodeIdentity {
    /// Reads the optional facts best-effort: a missing file leaves the field empty.
    pub fn discover(name: String, proc_dir: &Path) -> Self {
        let read = |p: &Path| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=")
                        .map(|v| v.trim_matches('"').to_owned())
                })
            })
            .unwrap_or_default();
        NodeIdentity {
            labels: BTreeMap::from([
                ("kubernetes.io/arch".to_owned(), go_arch().to_owned()),
                ("kubernetes.io/hostname".to_owned(), name.clone()),
                ("kubernetes.io/os".to_owned(), "linux".to_owned()),
            ]),
            kernel_version: read(&proc_dir.join("sys/kernel/osrelease")),
            boot_id: read(&proc_dir.join("sys/kernel/random/boot_id")),
            os_image,
            name,
        }
    }

    /// A stable UID for the sample Node object: a UUID-shaped digest of the name and boot ID.
    pub fn uid(&self) -> String {
        let hex = apimachinery::etag::sha512_hex_upper(
            format!("node/{}/{}", self.name, self.boot_id).as_bytes(),
        )
        .to_ascii_lowercase();
        format!(
            "{}-{}-{}-{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..32]
        )
    }
}

/// The NodeMetrics object for one window. `now` is its creationTimestamp (metrics-server stamps
/// objects when it builds them).
pub fn node_metrics(id: &NodeIdentity, sample: &NodeSample, now: jiff::Timestamp) -> NodeMetrics {
    NodeMetrics::new(
        ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(id.labels.clone()),
            creation_timestamp: Some(Time(now)),
            ..ObjectMeta::default()
        },
        Time(sample.timestamp),
        format_go_duration(sample.window),
        BTreeMap::from([
            (
                "cpu".to_owned(),
                format_decimal_nanos(i128::from(sample.cpu_nanocores)),
            ),
            (
                "memory".to_owned(),
                format_binary_bytes(i128::from(sample.memory_working_set_bytes)),
            ),
        ]),
    )
}

/// The sample core Node: capacity and allocatable are the online CPUs and MemTotal, and a
/// Ready condition whose heartbeat is the latest window.
pub fn node_object(id: &NodeIdentity, sample: &NodeSample) -> Node {
    let resources = BTreeMap::from([
        ("cpu".to_owned(), K8sQuantity(sample.cpus.to_string())),
        (
            "memory".to_owned(),
            K8sQuantity(format_binary_bytes(i128::from(sample.memory_total_bytes))),
        ),
        ("pods".to_owned(), K8sQuantity("110".into())),
    ]);
    let started = sample.boot_time.unwrap_or(sample.timestamp);
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            uid: Some(id.uid()),
            resource_version: Some("1".into()),
            creation_timestamp: Some(Time(started)),
            labels: Some(id.labels.clone()),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("MetricsServerReady".into()),
                message: Some(
                    "sample node served by kube-aggregator metrics-server, not by a kubelet".into(),
                ),
                last_heartbeat_time: Some(Time(sample.timestamp)),
                last_transition_time: Some(Time(started)),
            }]),
            addresses: Some(vec![NodeAddress {
                type_: "Hostname".into(),
                address: id.name.clone(),
            }]),
            node_info: Some(NodeSystemInfo {
                architecture: go_arch().into(),
                boot_id: id.boot_id.clone(),
                kernel_version: id.kernel_version.clone(),
                operating_system: "linux".into(),
                os_image: id.os_image.clone(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn identity() -> NodeIdentity {
        NodeIdentity {
            name: "node-a".into(),
            labels: BTreeMap::from([("kubernetes.io/hostname".to_owned(), "node-a".to_owned())]),
            kernel_version: "6.1.0".into(),
            boot_id: "b".into(),
            os_image: "Debian".into(),
        }
    }

    fn sample() -> NodeSample {
        NodeSample {
            timestamp: jiff::Timestamp::from_second(1_795_912_450).unwrap_or_default(),
            window: Duration::from_millis(10_062),
            cpu_nanocores: 137_686_214,
            memory_working_set_bytes: 1_234_567 * 1024,
            memory_total_bytes: 24_576 * 1024 * 1024,
            cpus: 2,
            boot_time: jiff::Timestamp::from_second(1_767_225_600).ok(),
        }
    }

    #[test]
    fn node_metrics_look_like_metrics_servers() -> Result<(), serde_json::Error> {
        let now = jiff::Timestamp::from_second(1_795_912_460).unwrap_or_default();
        let json = serde_json::to_value(node_metrics(&identity(), &sample(), now))?;
        // kubectl-samples/nodemetrics-list.json, item 0.
        assert_eq!(
            json,
            serde_json::json!({"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/v1beta1",
                "metadata":{"name":"node-a","creationTimestamp":"2026-11-29T00:34:20Z",
                            "labels":{"kubernetes.io/hostname":"node-a"}},
                "timestamp":"2026-11-29T00:34:10Z","window":"10.062s",
                "usage":{"cpu":"137686214n","memory":"1234567Ki"}})
        );
        Ok(())
    }

    #[test]
    fn core_node_has_what_kubectl_top_reads() -> Result<(), serde_json::Error> {
        let json = serde_json::to_value(node_object(&identity(), &sample()))?;
        assert_eq!(json["kind"], "Node");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["metadata"]["name"], "node-a");
        assert_eq!(
            json["metadata"]["creationTimestamp"],
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(json["status"]["allocatable"]["cpu"], "2");
        assert_eq!(json["status"]["allocatable"]["memory"], "24Gi");
        assert_eq!(json["status"]["capacity"], json["status"]["allocatable"]);
        assert_eq!(json["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(json["status"]["conditions"][0]["status"], "True");
        let uid = json["metadata"]["uid"].as_str().unwrap_or_default();
        assert_eq!(uid.len(), 36);
        assert_eq!(uid, identity().uid());
        Ok(())
    }
}
