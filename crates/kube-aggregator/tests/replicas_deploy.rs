//! `deploy/` checked without a cluster, following `deploy/README.md` on a copy of `deploy/`.
//!
//! For each topology (in front of kube-apiserver; behind a managed one) and the sample metrics
//! server: the certificates are made with the guide's `kube-aggregator pki` commands; each
//! kustomization is rendered with `kubectl kustomize`; every object is checked against the
//! Kubernetes schema (k8s-openapi types: an unknown or misspelt field does not survive the round
//! trip, a wrong type does not parse) and its references (volumes, Secrets, ConfigMaps, service
//! accounts, Service selectors and target ports, probe ports, RBAC, the etcd NetworkPolicy,
//! `--store` against the etcd StatefulSet's pod names). Then each container's exact arguments
//! are run with the real binary — its mounts materialised from the rendered Secrets and
//! ConfigMaps, `$(VAR)`s from the downward API, a real etcd instead of the StatefulSet, and for
//! the cluster `testkit::kube_apiserver_standin` (a **stand-in for kube-apiserver**, which cannot
//! run here) — until its readiness probe answers. Finally the sample APIService is registered
//! with the guide's `sed … | kubectl apply` line and metrics are read through the aggregator:
//! in front as an admin, behind as kube-apiserver would proxy a user (its front-proxy
//! certificate, `X-Remote-*`), after the aggregator published its CA into the trust ConfigMap
//! that the metrics server mounts.
//!
//! The one deliberate change to the arguments besides ports and the store: `--service-map`
//! is added, since there is no Service network on loopback.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::ByteString;
use pki::{CertRequest, CertificateAuthority, KeyAlgorithm};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use testkit::etcd::Etcd;
use testkit::kube_apiserver_standin::{KubeApiserverStandin, Rule, StandinConfig};
use testkit::kubectl::{Kubectl, base64};
use testkit::process::{ChildGuard, free_port, wait_for};
use testkit::server::{HttpResponse, https_request};
use testkit::tools::Cmd;

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");
/// ConfigMaps the manifests mount without creating them (the cluster's).
const EXTERNAL_CONFIGMAPS: &[(&str, &str)] =
    &[("kube-system", "extension-apiserver-authentication")];
/// Roles and ClusterRoles every cluster has.
const BUILTIN_ROLES: &[&str] = &[
    "system:auth-delegator",
    "extension-apiserver-authentication-reader",
];
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const NODE: &str = "node-a";

fn ec(req: CertRequest) -> CertRequest {
    req.key(KeyAlgorithm::EcdsaP256)
}

/// A copy of `deploy/` (without any `pki/`) and a shell that runs the guide's commands with
/// `kube-aggregator` and `kubectl` being the binaries under test.
struct Guide {
    dir: tempfile::TempDir,
    bin: PathBuf,
    kubectl: Kubectl,
}

impl Guide {
    fn new() -> Result<Guide> {
        let dir = tempfile::Builder::new().prefix("deploy-guide-").tempdir()?;
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        copy_dir(&source, &dir.path().join("deploy"))?;
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin)?;
        std::os::unix::fs::symlink(KA, bin.join("kube-aggregator"))?;
        std::os::unix::fs::symlink(testkit::kubectl::binary()?, bin.join("kubectl"))?;
        let kubeconfig = dir.path().join("none.kubeconfig");
        std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n")?;
        let kubectl = Kubectl::new(kubeconfig)?;
        Ok(Guide { dir, bin, kubectl })
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    fn read(&self, rel: &str) -> Result<String> {
        std::fs::read_to_string(self.path(rel)).with_context(|| rel.to_owned())
    }

    /// Runs `script` with `sh -e` in the copy's root.
    fn sh(&self, script: &str) -> Result<String> {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let ran = Cmd::new("sh")
            .args(["-e", "-c", script])
            .cwd(self.root())
            .env("PATH", path)
            .env("HOME", self.root())
            .ok()?;
        Ok(ran.stdout)
    }

    /// `kubectl kustomize deploy/<dir>`, one JSON value per object.
    fn render(&self, dir: &str) -> Result<Vec<Value>> {
        let out = self
            .kubectl
            .ok(["kustomize".to_owned(), self.path(dir).display().to_string()])?
            .stdout;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&out).context("the rendered YAML")?;
        Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == "pki" {
            continue;
        }
        let target = to.join(&name);
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

// ----- schema -----

/// Kubernetes' decoder skips newlines in base64 (kustomize wraps long values).
fn unwrap_base64(doc: &mut Value) {
    let strip = |v: &mut Value| {
        if let Value::String(s) = v {
            s.retain(|c| c != '\n' && c != '\r');
        }
    };
    if doc["kind"] == "Secret"
        && let Some(Value::Object(data)) = doc.get_mut("data")
    {
        data.values_mut().for_each(strip);
    }
    if let Some(bundle) = doc.pointer_mut("/spec/caBundle") {
        strip(bundle);
    }
}

/// Where `expected` and `actual` differ (paths), for fields lost or changed in a round trip.
fn differences(path: &str, expected: &Value, actual: &Value, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                match a.get(k) {
                    Some(w) => differences(&format!("{path}.{k}"), v, w, out),
                    None => out.push(format!("{path}.{k} (unknown field?)")),
                }
            }
            // k8s-openapi writes apiVersion and kind of nested resources (PVC templates).
            for k in a.keys().filter(|k| !e.contains_key(*k)) {
                if !(k == "apiVersion" || k == "kind") {
                    out.push(format!("{path}.{k} (added)"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (v, w)) in e.iter().zip(a).enumerate() {
                differences(&format!("{path}[{i}]"), v, w, out);
            }
        }
        (e, a) if e == a => {}
        (e, a) => out.push(format!("{path}: {e} became {a}")),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<()> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let back = serde_json::to_value(&typed)?;
    let mut diff = Vec::new();
    differences("", doc, &back, &mut diff);
    ensure!(
        diff.is_empty(),
        "not the Kubernetes schema: {}",
        diff.join("; ")
    );
    Ok(())
}

fn check_schema(doc: &Value) -> Result<()> {
    use k8s_openapi::api::{apps, core, networking, policy, rbac};
    let mut doc = doc.clone();
    unwrap_base64(&mut doc);
    let key = (
        doc["apiVersion"].as_str().unwrap_or_default(),
        doc["kind"].as_str().unwrap_or_default(),
    );
    match key {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(&doc),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(&doc),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(&doc),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(&doc),
        ("v1", "Service") => round_trip::<core::v1::Service>(&doc),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(&doc),
        ("apps/v1", "StatefulSet") => round_trip::<apps::v1::StatefulSet>(&doc),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<policy::v1::PodDisruptionBudget>(&doc),
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            round_trip::<networking::v1::NetworkPolicy>(&doc)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip::<rbac::v1::ClusterRole>(&doc)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(&doc)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(&doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip::<rbac::v1::RoleBinding>(&doc)
        }
        ("apiregistration.k8s.io/v1", "APIService") => round_trip::<
            k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        >(&doc),
        other => bail!("unexpected object {other:?}"),
    }
}

// ----- references -----

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn id(doc: &Value) -> (String, String, String) {
    (
        str_of(&doc["kind"]).to_owned(),
        str_of(&doc["metadata"]["namespace"]).to_owned(),
        str_of(&doc["metadata"]["name"]).to_owned(),
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, namespace: &str, name: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| id(d) == (kind.into(), namespace.into(), name.into()))
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Every reference between the objects of one rendering resolves.
fn check_references(docs: &[Value]) -> Result<()> {
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment" || d["kind"] == "StatefulSet")
        .collect();
    for w in &workloads {
        let (_, ns, name) = id(w);
        let what = format!("{}/{name}", str_of(&w["kind"]));
        ensure!(
            labels_match(
                &w["spec"]["selector"]["matchLabels"],
                &w["spec"]["template"]["metadata"]["labels"]
            ),
            "{what}: the selector does not select its pods"
        );
        let pod = &w["spec"]["template"]["spec"];
        if let Some(sa) = pod["serviceAccountName"].as_str() {
            ensure!(
                find(docs, "ServiceAccount", &ns, sa).is_some(),
                "{what}: no ServiceAccount {sa}"
            );
        }
        let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
        for v in &volumes {
            if let Some(secret) = v["secret"]["secretName"].as_str() {
                ensure!(
                    find(docs, "Secret", &ns, secret).is_some(),
                    "{what}: no Secret {secret}"
                );
            }
            if let Some(cm) = v["configMap"]["name"].as_str() {
                match find(docs, "ConfigMap", &ns, cm) {
                    Some(rendered) => {
                        for item in v["configMap"]["items"].as_array().into_iter().flatten() {
                            ensure!(
                                rendered["data"].get(str_of(&item["key"])).is_some(),
                                "{what}: ConfigMap {cm} has no key {}",
                                item["key"]
                            );
                        }
                    }
                    None => ensure!(
                        EXTERNAL_CONFIGMAPS.contains(&(ns.as_str(), cm)),
                        "{what}: no ConfigMap {cm}"
                    ),
                }
            }
        }
        for c in pod["containers"].as_array().into_iter().flatten() {
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                let claimed = w["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["metadata"]["name"] == m["name"]);
                ensure!(
                    claimed || volumes.iter().any(|v| v["name"] == m["name"]),
                    "{what}: mount {} has no volume",
                    m["name"]
                );
            }
            let ports: Vec<&str> = c["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| str_of(&p["name"]))
                .collect();
            for probe in ["readinessProbe", "livenessProbe"] {
                let port = c[probe]["httpGet"]["port"]
                    .as_str()
                    .or(c[probe]["tcpSocket"]["port"].as_str());
                if let Some(port) = port {
                    ensure!(
                        ports.contains(&port),
                        "{what}: {probe} names port {port}, not a container port"
                    );
                }
            }
        }
    }
    for svc in docs.iter().filter(|d| d["kind"] == "Service") {
        let (_, ns, name) = id(svc);
        let selected: Vec<&&Value> = workloads
            .iter()
            .filter(|w| {
                id(w).1 == ns
                    && labels_match(
                        &svc["spec"]["selector"],
                        &w["spec"]["template"]["metadata"]["labels"],
                    )
            })
            .collect();
        ensure!(
            selected.len() == 1,
            "Service {name} selects {} workloads",
            selected.len()
        );
        let containers = &selected[0]["spec"]["template"]["spec"]["containers"];
        for port in svc["spec"]["ports"].as_array().into_iter().flatten() {
            let target = &port["targetPort"];
            let found = containers
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                .any(|p| {
                    p["name"] == *target
                        || p["containerPort"] == *target
                        || (target.is_null() && p["containerPort"] == port["port"])
                });
            ensure!(
                found,
                "Service {name}: target port {target} is not a container port"
            );
        }
    }
    for b in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        let (kind, ns, name) = id(b);
        let role = str_of(&b["roleRef"]["name"]);
        let role_kind = str_of(&b["roleRef"]["kind"]);
        let role_ns = if role_kind == "Role" { ns.as_str() } else { "" };
        ensure!(
            find(docs, role_kind, role_ns, role).is_some() || BUILTIN_ROLES.contains(&role),
            "{kind} {name}: no {role_kind} {role}"
        );
        for s in b["subjects"].as_array().into_iter().flatten() {
            ensure!(
                find(
                    docs,
                    "ServiceAccount",
                    str_of(&s["namespace"]),
                    str_of(&s["name"])
                )
                .is_some(),
                "{kind} {name}: no ServiceAccount {}/{}",
                s["namespace"],
                s["name"]
            );
        }
    }
    for np in docs.iter().filter(|d| d["kind"] == "NetworkPolicy") {
        let (_, ns, name) = id(np);
        let pods: Vec<&Value> = workloads
            .iter()
            .filter(|w| id(w).1 == ns)
            .map(|w| &w["spec"]["template"]["metadata"]["labels"])
            .collect();
        ensure!(
            pods.iter()
                .any(|l| labels_match(&np["spec"]["podSelector"]["matchLabels"], l)),
            "NetworkPolicy {name} selects no pods"
        );
        for rule in np["spec"]["ingress"].as_array().into_iter().flatten() {
            for from in rule["from"].as_array().into_iter().flatten() {
                ensure!(
                    pods.iter()
                        .any(|l| labels_match(&from["podSelector"]["matchLabels"], l)),
                    "NetworkPolicy {name} admits pods that do not exist: {from}"
                );
            }
        }
    }
    Ok(())
}

fn container(doc: &Value) -> &Value {
    &doc["spec"]["template"]["spec"]["containers"][0]
}

fn args(doc: &Value) -> Vec<String> {
    container(doc)["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| str_of(a).to_owned())
        .collect()
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

/// `--store` names exactly the members of the etcd StatefulSet, on their client port.
fn check_store_url(docs: &[Value], aggregator: &Value) -> Result<()> {
    let sts = docs
        .iter()
        .find(|d| d["kind"] == "StatefulSet")
        .context("no etcd StatefulSet")?;
    let name = str_of(&sts["metadata"]["name"]);
    let service = str_of(&sts["spec"]["serviceName"]);
    ensure!(
        find(
            docs,
            "Service",
            str_of(&sts["metadata"]["namespace"]),
            service
        )
        .is_some()
    );
    let replicas = sts["spec"]["replicas"].as_u64().unwrap_or(1);
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("{name}-{i}.{service}:2379"))
        .collect();
    let args = args(aggregator);
    let store = flag(&args, "store").context("no --store")?;
    let endpoints: Vec<&str> = store
        .strip_prefix("etcd://")
        .context("not an etcd store")?
        .split(',')
        .collect();
    ensure!(
        endpoints == expected,
        "--store {store} does not name the etcd members {expected:?}"
    );
    let initial = args_of_sts(sts);
    for i in 0..replicas {
        ensure!(
            initial.contains(&format!("{name}-{i}=http://{name}-{i}.{service}.")),
            "--initial-cluster lacks member {i}"
        );
    }
    Ok(())
}

fn args_of_sts(sts: &Value) -> String {
    args(sts).join(" ")
}

// ----- running a container -----

/// What a container sees that is not in the rendering.
#[derive(Default)]
struct Fixtures {
    /// ConfigMaps of the cluster: name → data.
    configmaps: BTreeMap<String, BTreeMap<String, String>>,
    /// Replacements in mounted files and arguments (e.g. the service-account path).
    rewrites: Vec<(String, String)>,
    /// `--store` value.
    store: Option<String>,
    /// Extra arguments.
    extra: Vec<String>,
}

struct Running {
    child: ChildGuard,
    addr: SocketAddr,
}

/// Runs the first container of `workload` as the kubelet would, with `KA` as its image.
fn run(
    name: &str,
    work: &Path,
    docs: &[Value],
    workload: &Value,
    fixtures: &Fixtures,
    serving_ca_pem: &str,
) -> Result<Running> {
    let ns = str_of(&workload["metadata"]["namespace"]);
    let pod = &workload["spec"]["template"]["spec"];
    let c = container(workload);
    let mounts_root = work.join(format!("{name}-mounts"));
    let rewrite = |text: &str| {
        fixtures
            .rewrites
            .iter()
            .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
    };
    let mut path_map: Vec<(String, String)> = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let volume = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == m["name"])
            .context("volume")?;
        let dir = mounts_root.join(str_of(&m["name"]));
        std::fs::create_dir_all(&dir)?;
        let files: BTreeMap<String, Vec<u8>> =
            if let Some(secret) = volume["secret"]["secretName"].as_str() {
                let s = find(docs, "Secret", ns, secret).context("secret")?;
                let mut files = BTreeMap::new();
                for (k, v) in s["data"].as_object().into_iter().flatten() {
                    let flat: String = str_of(v).chars().filter(|c| !c.is_whitespace()).collect();
                    let bytes: ByteString = serde_json::from_value(Value::String(flat))?;
                    files.insert(k.clone(), bytes.0);
                }
                files
            } else if let Some(cm) = volume["configMap"]["name"].as_str() {
                let data: BTreeMap<String, String> = match find(docs, "ConfigMap", ns, cm) {
                    Some(rendered) => serde_json::from_value(rendered["data"].clone())?,
                    None => fixtures
                        .configmaps
                        .get(cm)
                        .cloned()
                        .with_context(|| format!("no fixture for ConfigMap {cm}"))?,
                };
                let mut files: BTreeMap<String, Vec<u8>> = data
                    .into_iter()
                    .map(|(k, v)| (k, rewrite(&v).into_bytes()))
                    .collect();
                if let Some(items) = volume["configMap"]["items"].as_array() {
                    let mut picked = BTreeMap::new();
                    for item in items {
                        let content = files
                            .remove(str_of(&item["key"]))
                            .with_context(|| format!("ConfigMap {cm} has no {}", item["key"]))?;
                        picked.insert(str_of(&item["path"]).to_owned(), content);
                    }
                    files = picked;
                }
                files
            } else {
                bail!("unsupported volume {volume}");
            };
        for (file, content) in files {
            std::fs::write(dir.join(file), content)?;
        }
        path_map.push((
            str_of(&m["mountPath"]).to_owned(),
            dir.display().to_string(),
        ));
    }
    let mut env = BTreeMap::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let value = match str_of(&e["valueFrom"]["fieldRef"]["fieldPath"]) {
            "metadata.name" => format!("{name}-0"),
            "spec.nodeName" => NODE.to_owned(),
            other => bail!("unsupported env source {other}"),
        };
        env.insert(str_of(&e["name"]).to_owned(), value);
    }
    let port = free_port();
    let mut argv: Vec<String> = Vec::new();
    for a in args(workload) {
        let mut a = a;
        for (k, v) in &env {
            a = a.replace(&format!("$({k})"), v);
        }
        for (from, to) in &path_map {
            a = a.replace(from.as_str(), to);
        }
        if a.starts_with("--secure-port=") {
            a = format!("--secure-port={port}");
        }
        if a.starts_with("--store=") {
            a = format!("--store={}", fixtures.store.clone().context("a store")?);
        }
        ensure!(!a.contains("$("), "{name}: unexpanded {a}");
        argv.push(a);
    }
    argv.push("--bind-address=127.0.0.1".into());
    argv.extend(fixtures.extra.iter().cloned());
    let mut cmd = std::process::Command::new(KA);
    cmd.args(&argv)
        .env("RUST_LOG", "info")
        .env_remove("KUBERNETES_SERVICE_HOST");
    let mut child = ChildGuard::spawn(name, cmd, &work.join("logs"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let probe = str_of(&c["readinessProbe"]["httpGet"]["path"]).to_owned();
    ensure!(
        c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS",
        "{name}: the probe must use HTTPS"
    );
    let ready = wait_for(&format!("{name} {probe}"), Duration::from_secs(40), || {
        if !child.is_running() {
            return Ok(Some(false));
        }
        Ok(
            (https_request(addr, serving_ca_pem, None, "GET", &probe, &[], b"")?.status == 200)
                .then_some(true),
        )
    });
    match ready {
        Ok(true) => {}
        Ok(false) => bail!("{name} exited\nargs: {argv:?}\n--- log\n{}", child.log()),
        Err(e) => bail!("{e:#}\nargs: {argv:?}\n--- log\n{}", child.log()),
    }
    Ok(Running { child, addr })
}

/// A kubeconfig like `source` but for `addr` (`pki/admin.kubeconfig` names the public address).
fn kubeconfig_for(source: &str, addr: SocketAddr, path: &Path) -> Result<Kubectl> {
    let text: String = source
        .lines()
        .map(|l| match l.split_once("server: ") {
            Some((indent, _)) => format!("{indent}server: https://{addr}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(path, text)?;
    Kubectl::new(path)
}

/// The guide's section 4: the sample metrics server's certificates.
const METRICS_PKI: &str = r#"
D=deploy/metrics-server/pki; mkdir -p $D
cat > $D/ca-csr.json <<'EOF'
{"CN": "sample-metrics-server-ca", "key": {"algo": "ecdsa", "size": 256}, "ca": {"expiry": "87600h"}}
EOF
cat > $D/serving-csr.json <<'EOF'
{"CN": "sample-metrics-server", "key": {"algo": "ecdsa", "size": 256}}
EOF
cat > $D/ca-config.json <<'EOF'
{"signing": {"profiles": {"server": {"usages": ["signing", "key encipherment", "server auth"], "expiry": "8760h"}}}}
EOF
kube-aggregator pki gencert -initca --bare $D/metrics-ca $D/ca-csr.json
kube-aggregator pki gencert -ca $D/metrics-ca.pem -ca-key $D/metrics-ca-key.pem \
  -config $D/ca-config.json -profile server \
  -hostname sample-metrics-server.kube-system.svc,localhost --bare $D/serving $D/serving-csr.json
"#;

/// The guide's registration line, with the aggregator's kubeconfig.
fn register_sample(guide: &Guide, kubeconfig: &Path) -> Result<()> {
    guide.sh(&format!(
        "sed \"s|CA_BUNDLE|$(base64 -w0 deploy/metrics-server/pki/metrics-ca.pem)|\" deploy/metrics-server/apiservice.yaml | kubectl --kubeconfig {} apply -f -",
        kubeconfig.display()
    ))?;
    Ok(())
}

fn wait_available(kubectl: &Kubectl) -> Result<()> {
    wait_for(
        "v1beta1.metrics.k8s.io Available",
        Duration::from_secs(20),
        || {
            let out = kubectl
                .ok([
                    "get",
                    "apiservices",
                    "v1beta1.metrics.k8s.io",
                    "--no-headers",
                ])?
                .stdout;
            Ok((out.split_whitespace().nth(2) == Some("True")).then_some(()))
        },
    )
}

fn check_rendering(docs: &[Value]) -> Result<()> {
    for d in docs {
        check_schema(d).with_context(|| format!("{:?}", id(d)))?;
    }
    check_references(docs)
}

fn node_metrics(r: &HttpResponse) -> Result<()> {
    ensure!(r.status == 200, "{} {}", r.status, r.body_text());
    let list = r.json()?;
    ensure!(list["kind"] == "NodeMetricsList", "{list}");
    ensure!(
        list["items"][0]["metadata"]["name"] == NODE,
        "the node name comes from $(NODE_NAME): {list}"
    );
    Ok(())
}

/// The cluster around the pods: a kube-apiserver stand-in holding the trust ConfigMap, and the
/// service-account files the kubelet would mount, with the rewrites that point the manifests'
/// in-cluster kubeconfig at them.
struct Cluster {
    standin: KubeApiserverStandin,
    rewrites: Vec<(String, String)>,
}

impl Cluster {
    /// `front_proxy_ca` signs the proxy certificate kube-apiserver itself presents.
    fn start(work: &Path, front_proxy_ca: &CertificateAuthority) -> Result<Cluster> {
        let serving_ca = CertificateAuthority::new_root_with(&ec(CertRequest::ca("cluster-ca")))?;
        let serving = serving_ca.issue(&ec(CertRequest::server(
            "kubernetes",
            &["127.0.0.1", "localhost"],
        )))?;
        let token = "service-account-token";
        let standin = KubeApiserverStandin::start(StandinConfig {
            serving_cert_pem: serving.cert_pem,
            serving_key_pem: serving.key_pem,
            front_proxy_ca_pem: front_proxy_ca.cert_pem().to_owned(),
            allowed_names: vec!["front-proxy-client".into()],
            own_token: token.into(),
        })?;
        let sa = work.join("serviceaccount");
        std::fs::create_dir_all(&sa)?;
        std::fs::write(sa.join("token"), token)?;
        std::fs::write(sa.join("ca.crt"), serving_ca.cert_pem())?;
        let rewrites = vec![
            (SA_DIR.to_owned(), sa.display().to_string()),
            ("https://kubernetes.default.svc".to_owned(), standin.url()),
        ];
        Ok(Cluster { standin, rewrites })
    }
}

#[test]
fn in_front_of_kube_apiserver() -> Result<()> {
    let guide = Guide::new()?;
    // Section 2.1. The cluster's CA is made up here; the guide reads it from kube-root-ca.crt.
    let cluster_ca = CertificateAuthority::new_root_with(&ec(CertRequest::ca("kubernetes")))?;
    guide.sh(
        "LB=aggregator.example.com\n\
         kube-aggregator pki init --dir deploy/in-front/pki --hostname \"$LB,kube-aggregator.kube-aggregator.svc\" --server \"https://$LB\"",
    )?;
    std::fs::write(
        guide.path("deploy/in-front/pki/client-ca.pem"),
        cluster_ca.cert_pem(),
    )?;
    guide.sh("cat deploy/in-front/pki/ca.pem >> deploy/in-front/pki/client-ca.pem")?;
    guide.sh(METRICS_PKI)?;

    let docs = guide.render("deploy/in-front")?;
    check_rendering(&docs)?;
    let aggregator = find(&docs, "Deployment", "kube-aggregator", "kube-aggregator")
        .context("the Deployment")?;
    check_store_url(&docs, aggregator)?;
    ensure!(
        aggregator["spec"]["replicas"].as_u64() >= Some(2),
        "HA needs replicas"
    );
    let sample = guide.render("deploy/metrics-server")?;
    check_rendering(&sample)?;
    let metrics = find(
        &sample,
        "Deployment",
        "kube-system",
        "sample-metrics-server",
    )
    .context("the sample")?;

    // Section 2.2: kube-apiserver's requestheader bundle (kubeadm's CA, then ours), which it
    // publishes to extension servers.
    let kubeadm_front_proxy =
        CertificateAuthority::new_root_with(&ec(CertRequest::ca("front-proxy-ca")))?;
    let published = format!(
        "{}{}",
        kubeadm_front_proxy.cert_pem(),
        guide.read("deploy/in-front/pki/front-proxy-ca.pem")?
    );
    let work = guide.path("run");
    let cluster = Cluster::start(&work, &kubeadm_front_proxy)?;
    let etcd = Etcd::start()?;
    let metrics_run = run(
        "sample-metrics-server",
        &work,
        &sample,
        metrics,
        &Fixtures {
            configmaps: BTreeMap::from([(
                "extension-apiserver-authentication".to_owned(),
                BTreeMap::from([("requestheader-client-ca-file".to_owned(), published)]),
            )]),
            rewrites: cluster.rewrites.clone(),
            ..Fixtures::default()
        },
        &guide.read("deploy/metrics-server/pki/metrics-ca.pem")?,
    )?;
    let map = work.join("services.yaml");
    std::fs::write(
        &map,
        format!(
            "services:\n  - namespace: kube-system\n    name: sample-metrics-server\n    port: 443\n    addresses: [\"{}\"]\n",
            metrics_run.addr
        ),
    )?;
    let aggregator_run = run(
        "kube-aggregator",
        &work,
        &docs,
        aggregator,
        &Fixtures {
            store: Some(etcd.store_url()),
            extra: vec![format!("--service-map={}", map.display())],
            ..Fixtures::default()
        },
        &guide.read("deploy/in-front/pki/ca.pem")?,
    )?;

    // Section 4 against this aggregator, as admin.kubeconfig.
    let kubeconfig = work.join("admin.kubeconfig");
    let admin = kubeconfig_for(
        &guide.read("deploy/in-front/pki/admin.kubeconfig")?,
        aggregator_run.addr,
        &kubeconfig,
    )?;
    register_sample(&guide, &kubeconfig)?;
    wait_available(&admin)?;
    let raw = admin
        .ok(["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])?
        .stdout;
    node_metrics(&HttpResponse {
        status: 200,
        headers: Vec::new(),
        body: raw.into_bytes(),
    })?;
    // The metrics server authenticated the aggregator's front-proxy certificate through the
    // published bundle: the request reached it as admin.
    drop((aggregator_run.child, metrics_run.child));
    Ok(())
}

#[test]
fn behind_a_managed_kube_apiserver() -> Result<()> {
    let guide = Guide::new()?;
    // The managed cluster: its kube-apiserver's front-proxy CA and client certificate, and the
    // trust ConfigMap it publishes — held by the kube-apiserver stand-in.
    let managed =
        CertificateAuthority::new_root_with(&ec(CertRequest::ca("managed-front-proxy-ca")))?;
    let none: &[&str] = &[];
    let managed_proxy = managed.issue(&ec(CertRequest::client("front-proxy-client", none)))?;
    let cluster = Cluster::start(&guide.path("run"), &managed)?;
    let standin = &cluster.standin;
    standin.set_configmap(json!({
        "requestheader-client-ca-file": managed.cert_pem(),
        "requestheader-allowed-names": "[\"front-proxy-client\"]",
        "requestheader-username-headers": "[\"X-Remote-User\"]",
        "requestheader-group-headers": "[\"X-Remote-Group\"]",
        "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
    }));
    standin.allow(Rule {
        user: "alice".into(),
        verb: "*".into(),
        resource: "*".into(),
    });

    // Section 3.1, with the ConfigMap read from the stand-in instead of through kubectl.
    guide.sh(
        "kube-aggregator pki init --dir deploy/behind/pki \
         --hostname kube-aggregator.kube-aggregator.svc --front-proxy-client-cn front-proxy-client",
    )?;
    let published = standin.configmap().context("the ConfigMap")?;
    std::fs::write(
        guide.path("deploy/behind/pki/cluster-front-proxy-ca.pem"),
        str_of(&published["data"]["requestheader-client-ca-file"]),
    )?;
    guide.sh("cat deploy/behind/pki/cluster-front-proxy-ca.pem deploy/behind/pki/front-proxy-ca.pem > deploy/behind/pki/requestheader-ca.pem")?;
    guide.sh(METRICS_PKI)?;

    let docs = guide.render("deploy/behind")?;
    check_rendering(&docs)?;
    let aggregator = find(&docs, "Deployment", "kube-aggregator", "kube-aggregator")
        .context("the Deployment")?;
    check_store_url(&docs, aggregator)?;
    // kube-apiserver's APIService points at our Service with our serving CA.
    let ours = docs
        .iter()
        .find(|d| d["kind"] == "APIService")
        .context("kube-apiserver's APIService")?;
    let svc = &ours["spec"]["service"];
    let target = find(
        &docs,
        "Service",
        str_of(&svc["namespace"]),
        str_of(&svc["name"]),
    )
    .context("its Service")?;
    ensure!(
        target["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["port"] == svc["port"])
    );
    let flat: String = str_of(&ours["spec"]["caBundle"])
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    ensure!(
        flat == base64(guide.read("deploy/behind/pki/ca.pem")?.as_bytes()),
        "caBundle is not pki/ca.pem"
    );
    let sample = guide.render("deploy/metrics-server")?;
    check_rendering(&sample)?;
    let metrics = find(
        &sample,
        "Deployment",
        "kube-system",
        "sample-metrics-server",
    )
    .context("the sample")?;

    // The service account as the kubelet mounts it, and kube-apiserver's address.
    let work = guide.path("run");
    let rewrites = cluster.rewrites.clone();
    let etcd = Etcd::start()?;
    let map = work.join("services.yaml");
    std::fs::create_dir_all(&work)?;
    std::fs::write(&map, "services: []\n")?;
    let aggregator_run = run(
        "kube-aggregator",
        &work,
        &docs,
        aggregator,
        &Fixtures {
            rewrites: rewrites.clone(),
            store: Some(etcd.store_url()),
            extra: vec![format!("--service-map={}", map.display())],
            ..Fixtures::default()
        },
        &guide.read("deploy/behind/pki/ca.pem")?,
    )?;

    // --publish-authentication-configmap: the cluster's CA is kept and ours added.
    let ours_ca = guide.read("deploy/behind/pki/front-proxy-ca.pem")?;
    let bundle = wait_for(
        "our CA in the trust ConfigMap",
        Duration::from_secs(20),
        || {
            let cm = standin.configmap().unwrap_or_default();
            let bundle = str_of(&cm["data"]["requestheader-client-ca-file"]).to_owned();
            Ok(
                (bundle.contains(ours_ca.trim()) && bundle.contains(managed.cert_pem().trim()))
                    .then_some(bundle),
            )
        },
    )
    .with_context(|| aggregator_run.child.log())?;
    let cm = standin.configmap().unwrap_or_default();
    ensure!(
        cm["data"]["requestheader-allowed-names"] == "[\"front-proxy-client\"]",
        "publishing must not change the allowed names: {}",
        cm["data"]
    );

    // The metrics server mounts that ConfigMap as the kubelet would.
    let metrics_run = run(
        "sample-metrics-server",
        &work,
        &sample,
        metrics,
        &Fixtures {
            configmaps: BTreeMap::from([(
                "extension-apiserver-authentication".to_owned(),
                BTreeMap::from([("requestheader-client-ca-file".to_owned(), bundle)]),
            )]),
            rewrites,
            ..Fixtures::default()
        },
        &guide.read("deploy/metrics-server/pki/metrics-ca.pem")?,
    )?;
    std::fs::write(
        &map,
        format!(
            "services:\n  - namespace: kube-system\n    name: sample-metrics-server\n    port: 443\n    addresses: [\"{}\"]\n",
            metrics_run.addr
        ),
    )?;

    // Section 3.3 (the port-forward is the loopback address here) and section 4.
    let kubeconfig = work.join("admin.kubeconfig");
    let admin = kubeconfig_for(
        &guide.read("deploy/behind/pki/admin.kubeconfig")?,
        aggregator_run.addr,
        &kubeconfig,
    )?;
    register_sample(&guide, &kubeconfig)?;
    wait_available(&admin)?;
    // kube-apiserver's APIService passes our validation too (server-side dry run).
    let rendered_yaml = serde_json::to_string(ours)?;
    admin.ok_stdin(["apply", "--dry-run=server", "-f", "-"], &rendered_yaml)?;

    // As kube-apiserver proxies `kubectl top node` for alice: its front-proxy certificate and
    // her identity in headers. We authenticate it with the cluster's CA, authorize her by
    // SubjectAccessReview, and the metrics server accepts our front-proxy certificate through
    // the CA we published.
    let r = https_request(
        aggregator_run.addr,
        &guide.read("deploy/behind/pki/ca.pem")?,
        Some((&managed_proxy.cert_pem, &managed_proxy.key_pem)),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        &[("X-Remote-User", "alice"), ("X-Remote-Group", "devs")],
        b"",
    )?;
    node_metrics(&r).with_context(|| {
        format!(
            "{}\n{}",
            aggregator_run.child.log(),
            metrics_run.child.log()
        )
    })?;
    let reviews = standin
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/subjectaccessreviews") && s.body.contains("\"alice\""))
        .count();
    ensure!(
        reviews >= 2,
        "alice should be authorized by the aggregator and by the metrics server ({reviews} reviews)"
    );
    // Someone else's certificate cannot assert identities.
    let stranger = CertificateAuthority::new_root_with(&ec(CertRequest::ca("stranger")))?
        .issue(&ec(CertRequest::client("front-proxy-client", none)))?;
    let r = https_request(
        aggregator_run.addr,
        &guide.read("deploy/behind/pki/ca.pem")?,
        Some((&stranger.cert_pem, &stranger.key_pem)),
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        &[("X-Remote-User", "alice")],
        b"",
    );
    ensure!(
        r.map(|r| r.status).unwrap_or(0) != 200,
        "a certificate from another CA must not pass"
    );
    drop((aggregator_run.child, metrics_run.child));
    Ok(())
}
