//! The server over real TLS on 127.0.0.1: who gets in, what each endpoint answers, and that the
//! shapes are the ones kubectl accepted (kubectl-wire.md, kubectl-samples/).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use front_proxy::test_util::{ClientCertKind, TestCa};
use http::Method;
use metrics_apiserver::quantity::{Quantity, parse_go_duration};
use serde_json::{Value, json};
use support::{Client, NODE, Pki, Running, eventually, identity};

const ALICE: &[&str] = &["dev", "system:authenticated"];
const AGGREGATED_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
/// What `kubectl top` sends (kubectl-wire.md §3.2).
const TOP_ACCEPT: &str = "application/vnd.kubernetes.protobuf, */*";

/// kubectl-samples/nodemetrics-list.json, as recorded from metrics-server's shape.
const SAMPLE_NODE_METRICS: &str = r#"{"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": [{"metadata": {"name": "node-a", "creationTimestamp": "2026-11-29T00:34:20Z", "labels": {"kubernetes.io/hostname": "node-a"}}, "timestamp": "2026-11-29T00:34:10Z", "window": "10.062s", "usage": {"cpu": "137686214n", "memory": "1234567Ki"}}]}"#;
/// kubectl-samples/nodelist.json.
const SAMPLE_NODE_LIST: &str = r#"{"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "100"}, "items": [{"metadata": {"name": "node-a", "uid": "1b4f0c8e-0000-4000-8000-000000000001", "resourceVersion": "90", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"kubernetes.io/hostname": "node-a"}}, "status": {"capacity": {"cpu": "2", "memory": "24576Mi", "pods": "110"}, "allocatable": {"cpu": "2", "memory": "24000Mi", "pods": "110"}}}]}"#;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[tokio::test]
async fn proxied_requests_get_this_machines_node_metrics() -> Result<()> {
    let pki = Pki::new()?;
    let server = Running::start(pki.config()).await?;
    let aggregator = pki.aggregator(server.addr)?;

    let reply = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/nodes",
            &[&identity("alice", ALICE)[..], &[("Accept", TOP_ACCEPT)]].concat(),
        )
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("content-type"), "application/json");
    let list = reply.json()?;
    let sample: Value = serde_json::from_str(SAMPLE_NODE_METRICS)?;
    assert_eq!(keys(&list), keys(&sample));
    assert_eq!(list["kind"], "NodeMetricsList");
    assert_eq!(list["apiVersion"], "metrics.k8s.io/v1beta1");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{list}");
    let item = &items[0];
    assert_eq!(keys(item), keys(&sample["items"][0]));
    assert_eq!(
        keys(&item["metadata"]),
        keys(&sample["items"][0]["metadata"])
    );
    assert_eq!(item["metadata"]["name"], NODE);
    assert_eq!(item["metadata"]["labels"]["kubernetes.io/hostname"], NODE);
    assert_eq!(item["metadata"]["labels"]["kubernetes.io/os"], "linux");

    // Plausible numbers: some CPU but no more than the machine has, some memory.
    let cpu = item["usage"]["cpu"].as_str().unwrap_or_default();
    let cpu = Quantity::parse(cpu)?;
    assert!(
        cpu.nanos >= 0 && cpu.nanos <= cpus() as i128 * 1_000_000_000,
        "{item}"
    );
    let memory = item["usage"]["memory"].as_str().unwrap_or_default();
    assert!(
        memory.ends_with("Ki") || memory.ends_with("Mi") || memory.ends_with("Gi"),
        "{memory}"
    );
    assert!(Quantity::parse(memory)?.nanos > 0);
    let window = parse_go_duration(item["window"].as_str().unwrap_or_default())?;
    assert!(
        window >= Duration::from_millis(150) && window <= Duration::from_secs(11),
        "{window:?}"
    );
    let timestamp: jiff::Timestamp = item["timestamp"].as_str().unwrap_or_default().parse()?;
    assert!((jiff::Timestamp::now() - timestamp).get_seconds().abs() < 60);

    // One node by name, and an unknown one.
    let one = aggregator
        .get(
            &format!("/apis/metrics.k8s.io/v1beta1/nodes/{NODE}"),
            &identity("alice", ALICE),
        )
        .await?;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()?["kind"], "NodeMetrics");
    let missing = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/nodes/other",
            &identity("alice", ALICE),
        )
        .await?;
    let status = missing.assert_status(404, "NotFound")?;
    assert_eq!(
        status["message"],
        "nodes.metrics.k8s.io \"other\" not found"
    );
    server.stop().await
}

#[tokio::test]
async fn callers_without_a_trusted_front_proxy_certificate_get_401() -> Result<()> {
    let pki = Pki::new()?;
    let server = Running::start(pki.config()).await?;
    let path = "/apis/metrics.k8s.io/v1beta1/nodes";
    let admin = identity("system:admin", &["system:masters"]);

    // No client certificate, spoofed headers.
    let none = pki.client(server.addr, None)?.get(path, &admin).await?;
    none.assert_status(401, "Unauthorized")?;
    // A front-proxy certificate from another CA.
    let other = TestCa::new("front-proxy-ca")?.client_cert(support::PROXY_CN)?;
    pki.client(server.addr, Some(&other))?
        .get(path, &admin)
        .await?
        .assert_status(401, "Unauthorized")?;
    // The right CA, a CN not in --requestheader-allowed-names.
    let wrong_cn = pki.front_proxy_ca.client_cert("kube-controller-manager")?;
    pki.client(server.addr, Some(&wrong_cn))?
        .get(path, &admin)
        .await?
        .assert_status(401, "Unauthorized")?;
    // The right CA and CN, but not a client certificate, or expired.
    for kind in [ClientCertKind::NoClientAuthUsage, ClientCertKind::Expired] {
        let bad = pki
            .front_proxy_ca
            .client_cert_with(support::PROXY_CN, kind)?;
        pki.client(server.addr, Some(&bad))?
            .get(path, &admin)
            .await?
            .assert_status(401, "Unauthorized")?;
    }
    // The aggregator's certificate without a username: nobody to be, so 401 too.
    pki.aggregator(server.addr)?
        .get(path, &[])
        .await?
        .assert_status(401, "Unauthorized")?;
    // Discovery is no exception.
    pki.client(server.addr, None)?
        .get("/apis", &[])
        .await?
        .assert_status(401, "Unauthorized")?;

    // Health needs no credentials.
    for health in ["/healthz", "/livez", "/readyz"] {
        let reply = pki.client(server.addr, None)?.get(health, &[]).await?;
        assert_eq!(
            (reply.status.as_u16(), reply.text().as_str()),
            (200, "ok"),
            "{health}"
        );
    }
    server.stop().await
}

#[tokio::test]
async fn anonymous_access_when_enabled_and_the_local_policy() -> Result<()> {
    let pki = Pki::new()?;
    let mut config = pki.config();
    config.anonymous_auth = true;
    config.client_ca_file = Some(pki.client_ca_file.clone());
    config.allowed_groups = vec!["metrics-readers".into()];
    let server = Running::start(config).await?;
    let path = "/apis/metrics.k8s.io/v1beta1/nodes";

    // Anonymous is authenticated, then forbidden: not in the allowed groups.
    let anon = pki.client(server.addr, None)?.get(path, &[]).await?;
    let status = anon.assert_status(403, "Forbidden")?;
    assert_eq!(
        status["message"],
        "nodes.metrics.k8s.io is forbidden: User \"system:anonymous\" cannot list resource \"nodes\" in API group \"metrics.k8s.io\" at the cluster scope"
    );
    // A bad certificate is still 401, never anonymous.
    let stranger = TestCa::new("stranger")?.client_cert("eve")?;
    pki.client(server.addr, Some(&stranger))?
        .get(path, &[])
        .await?
        .assert_status(401, "Unauthorized")?;
    // A plain mTLS user from --client-ca-file: authenticated, but not a reader.
    let bob = pki.client_ca.client_cert("bob")?;
    let reply = pki.client(server.addr, Some(&bob))?.get(path, &[]).await?;
    reply.assert_status(403, "Forbidden")?;

    let aggregator = pki.aggregator(server.addr)?;
    // A proxied member of the allowed group reads; a write is forbidden by the local policy.
    let carol = identity("carol", &["metrics-readers"]);
    assert_eq!(aggregator.get(path, &carol).await?.status, 200);
    aggregator
        .request(Method::DELETE, &format!("{path}/{NODE}"), &carol)
        .await?
        .assert_status(403, "Forbidden")?;
    // system:masters may ask, and learns the method is not supported.
    let root = identity("root", &["system:masters"]);
    let reply = aggregator
        .request(Method::DELETE, &format!("{path}/{NODE}"), &root)
        .await?;
    reply.assert_status(405, "MethodNotAllowed")?;
    let watch = aggregator.get(&format!("{path}?watch=true"), &root).await?;
    let status = watch.assert_status(405, "MethodNotAllowed")?;
    assert_eq!(
        status["message"],
        "watch is not supported on resources of kind \"nodes.metrics.k8s.io\""
    );
    server.stop().await
}

#[tokio::test]
async fn discovery_aggregated_legacy_and_negotiation() -> Result<()> {
    let pki = Pki::new()?;
    let server = Running::start(pki.config()).await?;
    let aggregator = pki.aggregator(server.addr)?;
    let alice = identity("alice", ALICE);
    let with = |extra: &[(&'static str, &'static str)]| [&alice[..], extra].concat();

    let aggregated = aggregator
        .get("/apis", &with(&[("Accept", AGGREGATED_ACCEPT)]))
        .await?;
    assert_eq!(aggregated.status, 200);
    assert_eq!(
        aggregated.header("content-type"),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(aggregated.header("vary"), "Accept");
    assert_eq!(aggregated.header("cache-control"), "public");
    let etag = aggregated.header("etag").to_owned();
    assert_eq!(etag.len(), 130, "{etag}");
    let doc = aggregated.json()?;
    assert_eq!(doc["items"][0]["metadata"]["name"], "metrics.k8s.io");
    assert_eq!(doc["items"][0]["versions"][0]["freshness"], "Current");
    let kinds: Vec<&str> = doc["items"][0]["versions"][0]["resources"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r["responseKind"]["kind"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(kinds, ["NodeMetrics", "PodMetrics"]);

    let mut conditional = alice.clone();
    conditional.push(("Accept", AGGREGATED_ACCEPT));
    conditional.push(("If-None-Match", &etag));
    let again = aggregator.get("/apis", &conditional).await?;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    // v2beta1 only: same ETag, other apiVersion.
    let beta = aggregator
        .get(
            "/apis",
            &with(&[(
                "Accept",
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
            )]),
        )
        .await?;
    assert_eq!(beta.header("etag"), etag);
    assert_eq!(beta.json()?["apiVersion"], "apidiscovery.k8s.io/v2beta1");

    // kubectl get --raw /apis: the legacy list.
    let legacy = aggregator
        .get("/apis", &with(&[("Accept", "application/json, */*")]))
        .await?;
    assert_eq!(legacy.header("content-type"), "application/json");
    assert_eq!(legacy.json()?["kind"], "APIGroupList");
    assert_eq!(
        legacy.json()?["groups"][0]["preferredVersion"]["groupVersion"],
        "metrics.k8s.io/v1beta1"
    );

    let group = aggregator.get("/apis/metrics.k8s.io", &alice).await?;
    assert_eq!(group.json()?["kind"], "APIGroup");
    let resources = aggregator
        .get("/apis/metrics.k8s.io/v1beta1", &alice)
        .await?;
    let list = resources.json()?;
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(list["resources"][0]["name"], "nodes");
    assert_eq!(list["resources"][1]["namespaced"], true);

    // Protobuf only, or YAML: 406 naming what is offered.
    for accept in ["application/vnd.kubernetes.protobuf", "application/yaml"] {
        let refused = aggregator
            .get(
                "/apis/metrics.k8s.io/v1beta1/nodes",
                &with(&[("Accept", accept)]),
            )
            .await?;
        let status = refused.assert_status(406, "NotAcceptable")?;
        assert!(
            status["message"]
                .as_str()
                .unwrap_or_default()
                .contains("application/json"),
            "{status}"
        );
    }
    // Unknown paths: 404 Status. No OpenAPI here (aggregators tolerate it, §4.1).
    for path in [
        "/apis/metrics.k8s.io/v1",
        "/openapi/v2",
        "/openapi/v3",
        "/api",
        "/api/v1/nodes",
        "/apis/metrics.k8s.io/v1beta1/nodes/x/status",
    ] {
        aggregator
            .get(path, &alice)
            .await?
            .assert_status(404, "NotFound")?;
    }
    server.stop().await
}

#[tokio::test]
async fn tables_for_kubectl_get() -> Result<()> {
    let pki = Pki::new()?;
    let server = Running::start(pki.config()).await?;
    let aggregator = pki.aggregator(server.addr)?;
    let headers = [&identity("alice", ALICE)[..], &[("Accept", TABLE_ACCEPT)]].concat();
    let reply = aggregator
        .get("/apis/metrics.k8s.io/v1beta1/nodes?limit=500", &headers)
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("content-type"),
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    );
    let table = reply.json()?;
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(columns, ["Name", "cpu", "memory", "Window"]);
    assert_eq!(table["rows"][0]["cells"][0], NODE);
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");

    let bad = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/nodes?includeObject=Everything",
            &headers,
        )
        .await?;
    bad.assert_status(400, "BadRequest")?;
    server.stop().await
}

#[tokio::test]
async fn pod_metrics_from_a_file_with_selectors_and_reload() -> Result<()> {
    let pki = Pki::new()?;
    let file = pki.dir.path().join("pods.json");
    let pod = |ns: &str, name: &str, app: &str, cpu: &str| {
        json!({"metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
               "containers": [{"name": "main", "usage": {"cpu": cpu, "memory": "64Mi"}}]})
    };
    std::fs::write(
        &file,
        json!({"items": [pod("shop", "web-0", "web", "0.1"), pod("shop", "db-0", "db", "20m"), pod("ops", "agent", "agent", "5m")]})
            .to_string(),
    )?;
    let mut config = pki.config();
    config.pod_metrics_file = Some(file.clone());
    config.pod_metrics_reload_interval = Duration::from_millis(50);
    let server = Running::start(config).await?;
    let aggregator = pki.aggregator(server.addr)?;
    let alice = identity("alice", ALICE);
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| {
                        format!(
                            "{}/{}",
                            i["metadata"]["namespace"].as_str().unwrap_or(""),
                            i["metadata"]["name"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };

    let all = aggregator
        .get("/apis/metrics.k8s.io/v1beta1/pods", &alice)
        .await?
        .json()?;
    assert_eq!(all["kind"], "PodMetricsList");
    assert_eq!(names(&all), ["ops/agent", "shop/db-0", "shop/web-0"]);
    assert_eq!(all["items"][2]["containers"][0]["usage"]["cpu"], "100m");
    assert!(all["items"][2].get("kind").is_none());
    assert!(all["items"][0]["metadata"]["creationTimestamp"].is_string());

    let shop = aggregator
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods", &alice)
        .await?
        .json()?;
    assert_eq!(names(&shop), ["shop/db-0", "shop/web-0"]);
    let web = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods?labelSelector=app%3Dweb",
            &alice,
        )
        .await?
        .json()?;
    assert_eq!(names(&web), ["shop/web-0"]);
    let by_field = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=metadata.namespace%21%3Dshop",
            &alice,
        )
        .await?
        .json()?;
    assert_eq!(names(&by_field), ["ops/agent"]);
    let one = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods/db-0",
            &alice,
        )
        .await?;
    assert_eq!(one.json()?["kind"], "PodMetrics");
    let missing = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/namespaces/ops/pods/db-0",
            &alice,
        )
        .await?;
    assert_eq!(
        missing.assert_status(404, "NotFound")?["message"],
        "pods.metrics.k8s.io \"db-0\" not found"
    );
    aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3D%3D%3D",
            &alice,
        )
        .await?
        .assert_status(400, "BadRequest")?;
    aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/pods?fieldSelector=spec.nodeName%3Dx",
            &alice,
        )
        .await?
        .assert_status(400, "BadRequest")?;

    // The file changes: the server follows.
    std::fs::write(
        &file,
        json!({"items": [pod("shop", "web-1", "web", "1")]}).to_string(),
    )?;
    let reloaded = eventually(
        "the pod file to be reloaded",
        Duration::from_secs(10),
        || async {
            let v = aggregator
                .get("/apis/metrics.k8s.io/v1beta1/pods", &alice)
                .await?
                .json()?;
            Ok((names(&v) == ["shop/web-1"]).then_some(v))
        },
    )
    .await?;
    assert_eq!(reloaded["items"][0]["containers"][0]["usage"]["cpu"], "1");

    // A broken file keeps the last good set.
    std::fs::write(&file, "{ not json")?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = aggregator
        .get("/apis/metrics.k8s.io/v1beta1/pods", &alice)
        .await?
        .json()?;
    assert_eq!(names(&kept), ["shop/web-1"]);

    let table = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/pods",
            &[&alice[..], &[("Accept", TABLE_ACCEPT)]].concat(),
        )
        .await?
        .json()?;
    assert_eq!(
        table["rows"][0]["cells"],
        json!(["web-1", "1", "64Mi", "10s"])
    );
    server.stop().await
}

#[tokio::test]
async fn the_sample_core_nodes_api_for_kubectl_top_node() -> Result<()> {
    let pki = Pki::new()?;
    let mut config = pki.config();
    config.serve_core_nodes = true;
    let server = Running::start(config).await?;
    let aggregator = pki.aggregator(server.addr)?;
    let alice = identity("alice", ALICE);
    let with = |extra: &[(&'static str, &'static str)]| [&alice[..], extra].concat();

    let api = aggregator
        .get("/api", &with(&[("Accept", AGGREGATED_ACCEPT)]))
        .await?;
    assert_eq!(
        api.header("content-type"),
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let api = api.json()?;
    assert!(api["items"][0]["metadata"].get("name").is_none());
    assert_eq!(
        api["items"][0]["versions"][0]["resources"][0]["resource"],
        "nodes"
    );
    let legacy = aggregator
        .get("/api", &with(&[("Accept", "application/json, */*")]))
        .await?
        .json()?;
    assert_eq!(legacy["kind"], "APIVersions");
    assert_eq!(legacy["versions"], json!(["v1"]));
    let v1 = aggregator.get("/api/v1", &alice).await?.json()?;
    assert_eq!(v1["resources"][0]["kind"], "Node");

    // What kubectl top node reads after the metrics.
    let nodes = aggregator
        .get(
            "/api/v1/nodes",
            &with(&[(
                "Accept",
                "application/vnd.kubernetes.protobuf,application/json",
            )]),
        )
        .await?;
    assert_eq!(nodes.status, 200, "{}", nodes.text());
    let nodes = nodes.json()?;
    let sample: Value = serde_json::from_str(SAMPLE_NODE_LIST)?;
    assert_eq!(nodes["kind"], sample["kind"]);
    assert_eq!(nodes["apiVersion"], sample["apiVersion"]);
    let node = &nodes["items"][0];
    for key in keys(&sample["items"][0]["metadata"]) {
        assert!(
            node["metadata"].get(&key).is_some(),
            "metadata.{key} missing: {node}"
        );
    }
    assert!(
        node.get("kind").is_none(),
        "list items carry no kind: {node}"
    );
    assert_eq!(node["metadata"]["name"], NODE);
    assert_eq!(node["status"]["allocatable"]["cpu"], cpus().to_string());
    let memory = Quantity::parse(
        node["status"]["allocatable"]["memory"]
            .as_str()
            .unwrap_or_default(),
    )?;
    assert!(memory.nanos > 0);
    assert_eq!(node["status"]["conditions"][0]["type"], "Ready");

    let one = aggregator
        .get(&format!("/api/v1/nodes/{NODE}"), &alice)
        .await?
        .json()?;
    assert_eq!(one["kind"], "Node");
    aggregator
        .get("/api/v1/nodes/other", &alice)
        .await?
        .assert_status(404, "NotFound")?;
    let table = aggregator
        .get("/api/v1/nodes", &with(&[("Accept", TABLE_ACCEPT)]))
        .await?
        .json()?;
    assert_eq!(table["rows"][0]["cells"][1], "Ready");
    server.stop().await
}

#[tokio::test]
async fn http2_works_and_shutdown_is_graceful() -> Result<()> {
    let pki = Pki::new()?;
    let server = Running::start(pki.config()).await?;
    let h2 = Client::new(server.addr, &pki.serving_ca, Some(&pki.proxy), true)?;
    let reply = h2
        .get(
            "/apis/metrics.k8s.io/v1beta1/nodes",
            &identity("alice", ALICE),
        )
        .await?;
    assert_eq!(reply.version, http::Version::HTTP_2);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let addr = server.addr;
    server.stop().await?;
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    Ok(())
}

#[tokio::test]
async fn bad_configuration_is_a_clear_error() -> Result<()> {
    let pki = Pki::new()?;
    let mut config = pki.config();
    config.tls_private_key_file = pki.front_proxy_ca_file.clone();
    let err = metrics_apiserver::Server::bind(config)
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("private key")),
        "{err:?}"
    );

    let mut config = pki.config();
    config.node_name = Some("Not A Node".into());
    let err = config.prepare().err().map(|e| e.to_string());
    assert!(
        err.as_deref().is_some_and(|e| e.contains("--node-name")),
        "{err:?}"
    );

    let mut config = pki.config();
    let bad = pki.dir.path().join("pods.json");
    std::fs::write(&bad, r#"{"items":[{"metadata":{"name":"x"}}]}"#)?;
    config.pod_metrics_file = Some(bad);
    let err = config.prepare().err().map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("items[0].metadata.namespace")),
        "{err:?}"
    );
    Ok(())
}
