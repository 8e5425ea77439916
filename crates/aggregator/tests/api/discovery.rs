//! Discovery, OpenAPI, version, health and metrics endpoints, and routing to APIServices.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use crate::harness::{API, Client, TestServer, Who, local, remote};

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

fn names(v: &Value, list: &str, key: &str) -> Vec<String> {
    v[list]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.pointer(key).and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the informer has published `n` APIServices into discovery.
async fn wait_groups(c: &Client, n: usize) -> Result<Value> {
    for _ in 0..200 {
        let v = c.get("/apis").await?.expect(200)?;
        if v["groups"].as_array().map(Vec::len) == Some(n) {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("discovery never had {n} groups")
}

#[tokio::test]
async fn discovery_order_negotiation_and_caching() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    for o in [
        remote("kube.example.com", "foo", 100, 15),
        remote("kube.example.com", "v1alpha1", 100, 15),
        remote("kube.example.com", "v1", 100, 15),
        remote("kube.example.com", "v1beta2", 100, 15),
        remote("high.example.com", "v1", 15000, 15),
        remote("tie-b.example.com", "v1", 50, 15),
        remote("tie-a.example.com", "v2", 50, 15),
        local("", "v1"),
    ] {
        let mut o = o;
        if o["spec"]["group"] == "" {
            o["metadata"]["name"] = Value::from("v1.");
        }
        admin.post_json(API, &o).await?.expect(201)?;
    }
    // Legacy: our group first; §3.3 order; kube version order inside a group; core excluded.
    let legacy = wait_groups(&admin, 5).await?;
    // Equal group priorities: legacy breaks ties by APIService name ("v1.tie-b…" < "v2.tie-a…"),
    // aggregated by group name (below).
    assert_eq!(
        names(&legacy, "groups", "/name"),
        [
            "apiregistration.k8s.io",
            "high.example.com",
            "kube.example.com",
            "tie-b.example.com",
            "tie-a.example.com"
        ]
    );
    let kube = &legacy["groups"][2];
    assert_eq!(
        names(kube, "versions", "/version"),
        ["v1", "v1beta2", "v1alpha1", "foo"]
    );
    assert_eq!(kube["preferredVersion"]["version"], "v1");
    let r = admin
        .get_with("/apis", &[("accept", "application/json, */*")])
        .await?;
    assert_eq!(r.header("content-type"), Some("application/json"));

    // Aggregated: by Accept, with ETag, Vary and public caching; 304 on a match.
    let r = admin.get_with("/apis", &[("accept", AGGREGATED)]).await?;
    assert_eq!(
        r.header("content-type"),
        Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    );
    assert_eq!(r.header("vary"), Some("Accept, Accept-Encoding"));
    assert_eq!(r.header("cache-control"), Some("public"));
    let etag = r.header("etag").unwrap_or_default().to_owned();
    assert!(etag.starts_with('"') && etag.len() == 130, "{etag}");
    let agg = r.expect(200)?;
    assert_eq!(agg["kind"], "APIGroupDiscoveryList");
    assert_eq!(
        names(&agg, "items", "/metadata/name"),
        [
            "apiregistration.k8s.io",
            "high.example.com",
            "kube.example.com",
            "tie-a.example.com",
            "tie-b.example.com"
        ]
    );
    let own = &agg["items"][0]["versions"][0];
    assert_eq!(own["freshness"], "Current");
    assert_eq!(own["resources"][0]["resource"], "apiservices");
    assert_eq!(own["resources"][0]["responseKind"]["kind"], "APIService");
    assert_eq!(own["resources"][0]["scope"], "Cluster");
    assert_eq!(
        own["resources"][0]["subresources"][0]["subresource"],
        "status"
    );
    // Backends not fetched yet are Stale with no resources (§3.6).
    assert_eq!(agg["items"][2]["versions"][0]["freshness"], "Stale");
    assert_eq!(
        names(&agg["items"][2], "versions", "/version"),
        ["v1", "v1beta2", "v1alpha1", "foo"]
    );
    let r = admin
        .get_with("/apis", &[("accept", AGGREGATED), ("if-none-match", &etag)])
        .await?;
    assert_eq!(r.status.as_u16(), 304);
    assert!(r.body.is_empty());
    let r = admin
        .get_with(
            "/apis",
            &[(
                "accept",
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
            )],
        )
        .await?;
    assert_eq!(
        r.header("etag"),
        Some(etag.as_str()),
        "one ETag for both versions"
    );
    assert_eq!(r.expect(200)?["apiVersion"], "apidiscovery.k8s.io/v2beta1");
    // `/apis/` is legacy only; unsupported types are 406.
    assert_eq!(
        admin
            .get_with("/apis/", &[("accept", AGGREGATED)])
            .await?
            .expect(200)?["kind"],
        "APIGroupList"
    );
    assert_eq!(
        admin
            .get_with(
                "/apis",
                &[("accept", "application/vnd.kubernetes.protobuf")]
            )
            .await?
            .expect(406)?["reason"],
        "NotAcceptable"
    );

    // A change recomputes the document (new ETag).
    admin
        .delete(&format!("{API}/foo.kube.example.com"))
        .await?
        .expect(200)?;
    for _ in 0..200 {
        let r = admin.get_with("/apis", &[("accept", AGGREGATED)]).await?;
        if r.header("etag") != Some(etag.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(
        admin
            .get_with("/apis", &[("accept", AGGREGATED)])
            .await?
            .header("etag"),
        Some(etag.as_str())
    );

    // Group documents.
    let g = admin.get("/apis/kube.example.com").await?.expect(200)?;
    assert_eq!(g["kind"], "APIGroup");
    assert_eq!(g["preferredVersion"]["groupVersion"], "kube.example.com/v1");
    let g = admin
        .get("/apis/apiregistration.k8s.io")
        .await?
        .expect(200)?;
    assert_eq!(
        g["versions"][0]["groupVersion"],
        "apiregistration.k8s.io/v1"
    );
    let rl = admin
        .get("/apis/apiregistration.k8s.io/v1")
        .await?
        .expect(200)?;
    assert_eq!(rl["kind"], "APIResourceList");
    assert_eq!(
        names(&rl, "resources", "/name"),
        ["apiservices", "apiservices/status"]
    );
    admin.get("/apis/unknown.example.com").await?.expect(404)?;

    // Routing: a remote APIService that is not Available answers upstream's 503 text; a local
    // one and unknown paths go to the delegate (none: 404).
    let r = admin.get("/apis/high.example.com/v1/things").await?;
    assert_eq!(r.status.as_u16(), 503);
    assert_eq!(r.text(), "service unavailable\n");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    admin.get("/api/v1/nodes").await?.expect(404)?;
    admin
        .get("/apis/nobody.example.com/v1/things")
        .await?
        .expect(404)?;
    Ok(())
}

/// Large `/apis` documents go gzip-compressed to clients that accept it (as client-go does),
/// with the same ETag; small ones and clients without gzip get them as they are.
#[tokio::test]
async fn large_discovery_documents_are_gzipped_for_clients_that_accept_it() -> Result<()> {
    use std::io::Read as _;
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    let gunzip = |b: &[u8]| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b).read_to_end(&mut out)?;
        Ok(out)
    };
    // One group: well under the threshold, never compressed.
    let r = admin
        .get_with("/apis", &[("accept-encoding", "gzip")])
        .await?;
    assert_eq!(r.header("content-encoding"), None);
    r.expect(200)?;

    for i in 0..120 {
        admin
            .post_json(API, &remote(&format!("g{i:03}.example.com"), "v1", 100, 15))
            .await?
            .expect(201)?;
    }
    wait_groups(&admin, 121).await?;
    for accept in ["application/json", AGGREGATED] {
        let plain = admin.get_with("/apis", &[("accept", accept)]).await?;
        assert_eq!(plain.header("content-encoding"), None);
        assert!(plain.body.len() >= 8 << 10, "{}", plain.body.len());
        for encoding in ["gzip", "br;q=1.0, gzip;q=0.8", "*"] {
            let gz = admin
                .get_with(
                    "/apis",
                    &[("accept", accept), ("accept-encoding", encoding)],
                )
                .await?;
            assert_eq!(gz.header("content-encoding"), Some("gzip"), "{encoding}");
            assert_eq!(gz.header("vary"), Some("Accept, Accept-Encoding"));
            assert_eq!(gz.header("etag"), plain.header("etag"));
            assert!(gz.body.len() * 4 < plain.body.len(), "{}", gz.body.len());
            assert_eq!(
                gunzip(&gz.body)?,
                plain.body.to_vec(),
                "{accept} {encoding}"
            );
        }
        // Refused by q=0, or another coding only: uncompressed.
        for encoding in ["gzip;q=0", "br", "identity"] {
            let r = admin
                .get_with(
                    "/apis",
                    &[("accept", accept), ("accept-encoding", encoding)],
                )
                .await?;
            assert_eq!(r.header("content-encoding"), None, "{encoding}");
            assert_eq!(r.body, plain.body);
        }
    }
    Ok(())
}

#[tokio::test]
async fn api_is_404_without_a_core_apiservice() -> Result<()> {
    let s = TestServer::start().await?;
    let r = s
        .client(Who::Admin)
        .get_with("/api", &[("accept", AGGREGATED)])
        .await?
        .expect(404)?;
    assert_eq!(
        r["message"],
        "the server could not find the requested resource"
    );
    Ok(())
}

#[tokio::test]
async fn openapi_version_health_metrics() -> Result<()> {
    let s = TestServer::start().await?;
    let c = s.h2_client(Who::Bob);
    let idx = c.get("/openapi/v3").await?.expect(200)?;
    let url = idx["paths"]["apis/apiregistration.k8s.io/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        url.starts_with("/openapi/v3/apis/apiregistration.k8s.io/v1?hash="),
        "{url}"
    );
    let r = c.get(&url).await?;
    assert_eq!(r.header("cache-control"), Some("public, immutable"));
    assert!(r.header("expires").is_some());
    let doc = r.expect(200)?;
    assert_eq!(
        doc["paths"]["/apis/apiregistration.k8s.io/v1/apiservices"]["get"]["x-kubernetes-group-version-kind"]
            ["kind"],
        "APIService"
    );
    let r = c
        .get("/openapi/v3/apis/apiregistration.k8s.io/v1?hash=stale")
        .await?;
    assert_eq!(r.status.as_u16(), 301);
    assert_eq!(r.header("location"), Some(url.as_str()));
    c.get("/openapi/v2").await?.expect(404)?;

    let v = c.get("/version").await?.expect(200)?;
    assert_eq!(
        (v["major"].as_str(), v["minor"].as_str()),
        (Some("1"), Some("32"))
    );

    let nobody = s.client(Who::Nobody);
    assert_eq!(nobody.get("/healthz").await?.text(), "ok");
    assert_eq!(nobody.get("/livez").await?.text(), "ok");
    let r = nobody.get("/readyz?verbose").await?;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(
        r.text(),
        "[+]ping ok\n[+]informer-sync ok\n[+]store ok\n[+]shutdown ok\nreadyz check passed\n"
    );
    assert_eq!(nobody.get("/readyz/informer-sync").await?.text(), "ok");

    let admin = s.client(Who::Admin);
    admin.get(API).await?.expect(200)?;
    let m = admin.get("/metrics").await?;
    let text = m.text();
    for series in [
        "apiserver_request_total{verb=\"LIST\",group=\"apiregistration.k8s.io\",version=\"v1\",resource=\"apiservices\",subresource=\"\",code=\"200\"}",
        "apiserver_request_duration_seconds_bucket",
        "apiserver_current_inflight_requests",
        "apiserver_longrunning_requests",
        "aggregator_discovery_aggregation_count_total",
    ] {
        assert!(text.contains(series), "{series} missing from\n{text}");
    }
    Ok(())
}
