//! The registration API over real sockets: status codes, `Status` bodies, validation messages,
//! strategy rules, patches, conflicts, list options and Table output.

use anyhow::Result;
use http::Method;
use serde_json::json;

use crate::harness::{API, TestServer, Who, local, remote};

#[tokio::test]
async fn create_get_and_errors() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);

    let mut obj = remote("metrics.k8s.io", "v1beta1", 100, 100);
    obj["status"] = json!({"conditions": [{"type": "Available", "status": "True"}]});
    let created = admin.post_json(API, &obj).await?.expect(201)?;
    assert_eq!(created["kind"], "APIService");
    assert_eq!(
        created["spec"]["service"]["port"], 443,
        "port defaults to 443"
    );
    assert!(
        created["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    assert!(created["metadata"]["resourceVersion"].as_str().is_some());
    assert!(
        created["metadata"]["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    assert!(
        created.get("status").is_none(),
        "create wipes status: {created}"
    );

    // A local one is Available at once.
    let l = admin
        .post_json(API, &local("local.example.com", "v1"))
        .await?
        .expect(201)?;
    assert_eq!(l["status"]["conditions"][0]["reason"], "Local");
    assert_eq!(
        l["status"]["conditions"][0]["message"],
        "Local APIServices are always available"
    );

    let got = admin
        .get(&format!("{API}/v1beta1.metrics.k8s.io"))
        .await?
        .expect(200)?;
    assert_eq!(got["metadata"]["uid"], created["metadata"]["uid"]);

    let nf = admin.get(&format!("{API}/nope")).await?;
    assert_eq!(
        nf.expect(404)?,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
               "message":"apiservices.apiregistration.k8s.io \"nope\" not found","reason":"NotFound",
               "details":{"name":"nope","group":"apiregistration.k8s.io","kind":"apiservices"},"code":404})
    );
    let dup = admin
        .post_json(API, &remote("metrics.k8s.io", "v1beta1", 100, 100))
        .await?
        .expect(409)?;
    assert_eq!(dup["reason"], "AlreadyExists");
    assert_eq!(
        dup["message"],
        "apiservices.apiregistration.k8s.io \"v1beta1.metrics.k8s.io\" already exists"
    );

    // Wrong method, unknown resource, bad content type, not-acceptable.
    assert_eq!(
        admin
            .send(Method::POST, &format!("{API}/x"), &[], "")
            .await?
            .expect(405)?["reason"],
        "MethodNotAllowed"
    );
    assert_eq!(
        admin
            .get("/apis/apiregistration.k8s.io/v1/things")
            .await?
            .expect(404)?["reason"],
        "NotFound"
    );
    let r = admin
        .send(
            Method::POST,
            API,
            &[("content-type", "application/vnd.kubernetes.protobuf")],
            "x",
        )
        .await?
        .expect(415)?;
    assert_eq!(r["reason"], "UnsupportedMediaType");
    let r = admin
        .get_with(API, &[("accept", "application/vnd.kubernetes.protobuf")])
        .await?
        .expect(406)?;
    assert_eq!(
        r["message"],
        "only the following media types are accepted: application/json, application/yaml"
    );
    let r = admin
        .send(
            Method::POST,
            API,
            &[("content-type", "application/json")],
            "{not json",
        )
        .await?
        .expect(400)?;
    assert_eq!(r["reason"], "BadRequest");
    let r = admin
        .post_json(API, &json!({"apiVersion": "v1", "kind": "Pod"}))
        .await?
        .expect(400)?;
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not match the expected API version")),
        "{r}"
    );

    // YAML in and out.
    let yaml = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1.yaml.example.com\nspec:\n  group: yaml.example.com\n  version: v1\n  groupPriorityMinimum: 5\n  versionPriority: 5\n";
    admin
        .send(
            Method::POST,
            API,
            &[("content-type", "application/yaml")],
            yaml,
        )
        .await?
        .expect(201)?;
    let r = admin
        .get_with(
            &format!("{API}/v1.yaml.example.com"),
            &[("accept", "application/yaml")],
        )
        .await?;
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    assert!(
        r.text().contains("name: v1.yaml.example.com"),
        "{}",
        r.text()
    );
    Ok(())
}

#[tokio::test]
async fn validation_messages_are_upstreams() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    let invalid = |v: serde_json::Value| {
        let admin = admin.clone();
        async move {
            let r = admin.post_json(API, &v).await?.expect(422)?;
            anyhow::ensure!(r["reason"] == "Invalid", "{r}");
            Ok::<_, anyhow::Error>(r)
        }
    };
    let mut o = remote("metrics.k8s.io", "v1beta1", 100, 100);
    o["metadata"]["name"] = json!("metrics");
    let r = invalid(o).await?;
    assert_eq!(
        r["message"],
        "APIService.apiregistration.k8s.io \"metrics\" is invalid: metadata.name: Invalid value: \"metrics\": must be `spec.version+\".\"+spec.group`: \"v1beta1.metrics.k8s.io\""
    );
    assert_eq!(r["details"]["kind"], "APIService");
    assert_eq!(r["details"]["causes"][0]["field"], "metadata.name");
    assert_eq!(r["details"]["causes"][0]["reason"], "FieldValueInvalid");

    let r = invalid(remote("metrics.k8s.io", "v1beta1", 0, 1001)).await?;
    assert_eq!(
        r["message"],
        "APIService.apiregistration.k8s.io \"v1beta1.metrics.k8s.io\" is invalid: [spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000, spec.versionPriority: Invalid value: 1001: must be positive and less than 1000]"
    );
    // The upper bounds are inclusive.
    admin
        .post_json(API, &remote("bounds.example.com", "v1", 20000, 1000))
        .await?
        .expect(201)?;

    let mut o = local("", "v2");
    o["metadata"]["name"] = json!("v2.");
    let r = invalid(o).await?;
    assert_eq!(
        r["details"]["causes"][0]["message"],
        "Required value: only v1 may have an empty group and it better be legacy kube"
    );

    let mut o = local("x.example.com", "v1");
    o["spec"]["caBundle"] = json!("cGVt");
    o["spec"]["insecureSkipTLSVerify"] = json!(true);
    let r = invalid(o).await?;
    let causes: Vec<&str> = r["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|x| x["message"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        causes,
        [
            "Invalid value: \"3 bytes\": local APIServices may not have a caBundle",
            "Invalid value: true: local APIServices may not have insecureSkipTLSVerify"
        ]
    );

    let mut o = remote("y.example.com", "v1", 10, 10);
    o["spec"]["service"] = json!({"port": 70000});
    o["spec"]["caBundle"] = json!("cGVt");
    let r = invalid(o).await?;
    let fields: Vec<&str> = r["details"]["causes"]
        .as_array()
        .map(|c| c.iter().filter_map(|x| x["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        fields,
        [
            "spec.service.namespace",
            "spec.service.name",
            "spec.service.port",
            "spec.insecureSkipTLSVerify"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn strict_field_validation() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    let mut o = local("strict.example.com", "v1");
    o["spec"]["bogus"] = json!(1);
    let r = admin
        .post_json(&format!("{API}?fieldValidation=Strict"), &o)
        .await?
        .expect(400)?;
    assert_eq!(
        r["message"],
        "APIService in version \"v1\" cannot be handled as a APIService: strict decoding error: unknown field \"spec.bogus\""
    );

    let dup = r#"{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1.dup.example.com"},"spec":{"group":"dup.example.com","group":"dup.example.com","version":"v1","groupPriorityMinimum":1,"versionPriority":1}}"#;
    let r = admin
        .send(
            Method::POST,
            &format!("{API}?fieldValidation=Strict"),
            &[("content-type", "application/json")],
            dup,
        )
        .await?
        .expect(400)?;
    assert_eq!(
        r["message"],
        "APIService in version \"v1\" cannot be handled as a APIService: strict decoding error: duplicate field \"spec.group\""
    );

    // Warn (the default) accepts and says why in Warning headers.
    let r = admin.post_json(API, &o).await?;
    r.expect(201)?;
    assert_eq!(
        r.header("warning"),
        Some("299 - \"unknown field \\\"spec.bogus\\\"\"")
    );
    assert!(r.json()["spec"].get("bogus").is_none());
    // Ignore says nothing.
    let mut o2 = local("ignore.example.com", "v1");
    o2["extra"] = json!(true);
    let r = admin
        .post_json(&format!("{API}?fieldValidation=Ignore"), &o2)
        .await?;
    r.expect(201)?;
    assert!(r.header("warning").is_none());
    // Strict also applies to merge patches.
    let r = admin
        .patch(
            &format!("{API}/v1.strict.example.com?fieldValidation=Strict"),
            "application/merge-patch+json",
            r#"{"spec":{"versionPriorityy":3}}"#,
        )
        .await?
        .expect(400)?;
    assert_eq!(
        r["message"],
        "strict decoding error: unknown field \"spec.versionPriorityy\""
    );
    let r = admin
        .post_json(&format!("{API}?fieldValidation=Sometimes"), &o)
        .await?
        .expect(400)?;
    assert_eq!(r["reason"], "BadRequest");
    Ok(())
}

#[tokio::test]
async fn updates_status_and_conflicts() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    let created = admin
        .post_json(API, &remote("u.example.com", "v1", 10, 10))
        .await?
        .expect(201)?;
    let url = format!("{API}/v1.u.example.com");

    // PUT without resourceVersion is invalid; a stale one conflicts.
    let mut no_rv = created.clone();
    no_rv["metadata"]
        .as_object_mut()
        .map(|m| m.remove("resourceVersion"));
    let r = admin.put_json(&url, &no_rv).await?.expect(422)?;
    assert!(
        r["message"].as_str().is_some_and(|m| m.contains(
            "metadata.resourceVersion: Invalid value: \"\": must be specified for an update"
        )),
        "{r}"
    );

    let mut changed = created.clone();
    changed["spec"]["versionPriority"] = json!(20);
    changed["status"] =
        json!({"conditions": [{"type": "Available", "status": "True", "reason": "Hacked"}]});
    let updated = admin.put_json(&url, &changed).await?.expect(200)?;
    assert_eq!(updated["spec"]["versionPriority"], 20);
    assert!(
        updated.get("status").is_none(),
        "the main resource ignores status: {updated}"
    );
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    let r = admin.put_json(&url, &changed).await?.expect(409)?;
    assert_eq!(r["reason"], "Conflict");
    assert_eq!(
        r["message"],
        "Operation cannot be fulfilled on apiservices.apiregistration.k8s.io \"v1.u.example.com\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // The name in the body must match the URL.
    let mut renamed = updated.clone();
    renamed["metadata"]["name"] = json!("v1.other.example.com");
    assert_eq!(
        admin.put_json(&url, &renamed).await?.expect(400)?["message"],
        "the name of the object (v1.other.example.com) does not match the name on the URL (v1.u.example.com)"
    );

    // /status: only status changes; spec edits are ignored.
    let mut st = updated.clone();
    st["spec"]["versionPriority"] = json!(99);
    st["metadata"]["labels"] = json!({"sneaky": "yes"});
    st["status"] = json!({"conditions": [{"type": "Available", "status": "False", "reason": "ServiceNotFound", "message": "service/svc in \"ns\" is not present", "lastTransitionTime": "2025-01-01T00:00:00Z"}]});
    let after = admin
        .put_json(&format!("{url}/status"), &st)
        .await?
        .expect(200)?;
    assert_eq!(after["spec"]["versionPriority"], 20);
    assert!(after["metadata"].get("labels").is_none());
    assert_eq!(
        after["status"]["conditions"][0]["reason"],
        "ServiceNotFound"
    );
    let got = admin.get(&format!("{url}/status")).await?.expect(200)?;
    assert_eq!(got["status"]["conditions"][0]["status"], "False");

    let mut bad = after.clone();
    bad["status"]["conditions"][0]["status"] = json!("Maybe");
    let r = admin
        .put_json(&format!("{url}/status"), &bad)
        .await?
        .expect(422)?;
    assert_eq!(
        r["details"]["causes"][0]["field"],
        "status.conditions[0].status"
    );
    assert_eq!(
        r["details"]["causes"][0]["message"],
        "Unsupported value: \"Maybe\": supported values: \"True\", \"False\", \"Unknown\""
    );

    // A PUT that changes nothing is not written.
    let same = admin.put_json(&url, &after).await?.expect(200)?;
    assert_eq!(
        same["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    Ok(())
}

#[tokio::test]
async fn patches() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    admin
        .post_json(API, &local("p.example.com", "v1"))
        .await?
        .expect(201)?;
    let url = format!("{API}/v1.p.example.com");

    let r = admin
        .patch(
            &url,
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"a":"1"}},"spec":{"versionPriority":7}}"#,
        )
        .await?
        .expect(200)?;
    assert_eq!(r["metadata"]["labels"]["a"], "1");
    assert_eq!(r["spec"]["versionPriority"], 7);
    let r = admin
        .patch(
            &url,
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/spec/versionPriority","value":8}]"#,
        )
        .await?
        .expect(200)?;
    assert_eq!(r["spec"]["versionPriority"], 8);
    let r = admin
        .patch(
            &url,
            "application/strategic-merge-patch+json",
            r#"{"metadata":{"labels":{"b":"2"}}}"#,
        )
        .await?
        .expect(200)?;
    assert_eq!(r["metadata"]["labels"], json!({"a":"1","b":"2"}));
    let r = admin
        .patch(
            &url,
            "application/json-patch+json",
            r#"[{"op":"test","path":"/spec/versionPriority","value":1}]"#,
        )
        .await?
        .expect(422)?;
    assert_eq!(r["reason"], "Invalid");
    let r = admin.patch(&url, "text/plain", "x").await?.expect(415)?;
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("application/apply-patch+yaml"))
    );
    // Patches that break validation are 422.
    let r = admin
        .patch(
            &url,
            "application/merge-patch+json",
            r#"{"spec":{"groupPriorityMinimum":0}}"#,
        )
        .await?
        .expect(422)?;
    assert_eq!(
        r["details"]["causes"][0]["field"],
        "spec.groupPriorityMinimum"
    );
    // A pinned stale resourceVersion conflicts.
    let r = admin
        .patch(
            &url,
            "application/merge-patch+json",
            r#"{"metadata":{"resourceVersion":"1"}}"#,
        )
        .await?
        .expect(409)?;
    assert_eq!(r["reason"], "Conflict");
    assert_eq!(
        admin
            .patch(
                &format!("{API}/missing"),
                "application/merge-patch+json",
                "{}"
            )
            .await?
            .expect(404)?["reason"],
        "NotFound"
    );

    // Server-side apply: create, conflict with another manager, force.
    let cfg = r#"{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1.ssa.example.com"},"spec":{"group":"ssa.example.com","version":"v1","groupPriorityMinimum":10,"versionPriority":10}}"#;
    let ssa = format!("{API}/v1.ssa.example.com");
    let r = admin
        .patch(
            &format!("{ssa}?fieldManager=tool&fieldValidation=Strict&force=false"),
            "application/apply-patch+yaml",
            cfg,
        )
        .await?
        .expect(201)?;
    assert_eq!(r["metadata"]["managedFields"][0]["manager"], "tool");
    assert_eq!(r["metadata"]["managedFields"][0]["operation"], "Apply");
    admin
        .patch(
            &format!("{ssa}?fieldManager=editor"),
            "application/merge-patch+json",
            r#"{"spec":{"versionPriority":11}}"#,
        )
        .await?
        .expect(200)?;
    let r = admin
        .patch(
            &format!("{ssa}?fieldManager=tool"),
            "application/apply-patch+yaml",
            cfg,
        )
        .await?
        .expect(409)?;
    assert_eq!(
        r["message"],
        "Apply failed with 1 conflict: conflict with \"editor\": .spec.versionPriority"
    );
    let r = admin
        .patch(
            &format!("{ssa}?fieldManager=tool&force=true"),
            "application/apply-patch+yaml",
            cfg,
        )
        .await?
        .expect(200)?;
    assert_eq!(r["spec"]["versionPriority"], 10);
    let r = admin
        .patch(&ssa, "application/apply-patch+yaml", cfg)
        .await?
        .expect(422)?;
    assert_eq!(
        r["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let r = admin
        .patch(
            &format!("{url}?force=true"),
            "application/merge-patch+json",
            "{}",
        )
        .await?
        .expect(422)?;
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("force: Forbidden"))
    );
    // YAML apply bodies work too.
    let yaml = "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1.yaml-ssa.example.com\nspec:\n  group: yaml-ssa.example.com\n  version: v1\n  groupPriorityMinimum: 3\n  versionPriority: 3\n";
    admin
        .patch(
            &format!("{API}/v1.yaml-ssa.example.com?fieldManager=tool"),
            "application/apply-patch+yaml",
            yaml,
        )
        .await?
        .expect(201)?;
    Ok(())
}

#[tokio::test]
async fn delete_and_deletecollection() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    let c = admin
        .post_json(API, &local("d.example.com", "v1"))
        .await?
        .expect(201)?;
    let r = admin
        .send(
            Method::DELETE,
            &format!("{API}/v1.d.example.com"),
            &[("content-type", "application/json")],
            "{\"propagationPolicy\":\"Background\"}\n",
        )
        .await?
        .expect(200)?;
    assert_eq!(
        r,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success",
        "details":{"name":"v1.d.example.com","group":"apiregistration.k8s.io","kind":"apiservices","uid":c["metadata"]["uid"]}})
    );
    assert_eq!(
        admin
            .delete(&format!("{API}/v1.d.example.com"))
            .await?
            .expect(404)?["reason"],
        "NotFound"
    );

    // Preconditions.
    admin
        .post_json(API, &local("pre.example.com", "v1"))
        .await?
        .expect(201)?;
    let r = admin
        .send(
            Method::DELETE,
            &format!("{API}/v1.pre.example.com"),
            &[],
            r#"{"preconditions":{"uid":"wrong"}}"#,
        )
        .await?
        .expect(409)?;
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("Precondition failed: UID in precondition: wrong")),
        "{r}"
    );
    // Dry run keeps it.
    admin
        .send(
            Method::DELETE,
            &format!("{API}/v1.pre.example.com?dryRun=All"),
            &[],
            "",
        )
        .await?
        .expect(200)?;
    admin
        .get(&format!("{API}/v1.pre.example.com"))
        .await?
        .expect(200)?;

    // Finalizers keep the object until they are removed.
    let mut f = local("fin.example.com", "v1");
    f["metadata"]["finalizers"] = json!(["example.com/hold"]);
    admin.post_json(API, &f).await?.expect(201)?;
    let r = admin
        .delete(&format!("{API}/v1.fin.example.com"))
        .await?
        .expect(200)?;
    assert!(r["metadata"]["deletionTimestamp"].as_str().is_some(), "{r}");
    admin
        .patch(
            &format!("{API}/v1.fin.example.com"),
            "application/merge-patch+json",
            r#"{"metadata":{"finalizers":null}}"#,
        )
        .await?
        .expect(200)?;
    admin
        .get(&format!("{API}/v1.fin.example.com"))
        .await?
        .expect(404)?;

    for g in ["a", "b", "c"] {
        let mut o = local(&format!("{g}.col.example.com"), "v1");
        o["metadata"]["labels"] = json!({"set": if g == "c" { "keep" } else { "drop" }});
        admin.post_json(API, &o).await?.expect(201)?;
    }
    let r = admin
        .delete(&format!("{API}?labelSelector=set%3Ddrop"))
        .await?
        .expect(200)?;
    assert_eq!(r["kind"], "APIServiceList");
    assert_eq!(r["items"].as_array().map(Vec::len), Some(2));
    let left = admin
        .get(&format!("{API}?labelSelector=set"))
        .await?
        .expect(200)?;
    let names: Vec<&str> = left["items"]
        .as_array()
        .map(|i| {
            i.iter()
                .filter_map(|x| x["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["v1.c.col.example.com"]);
    Ok(())
}

#[tokio::test]
async fn lists_selectors_paging_and_tables() -> Result<()> {
    let s = TestServer::start_with(|_, _| {}, store::Options::default().history_size(10)).await?;
    let admin = s.client(Who::Admin);
    let mut first_rv = String::new();
    for (i, g) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        let mut o = local(&format!("{g}.list.example.com"), "v1");
        o["metadata"]["labels"] = json!({"idx": i.to_string()});
        let c = admin.post_json(API, &o).await?.expect(201)?;
        if i == 0 {
            first_rv = c["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
    }
    let all = admin.get(API).await?.expect(200)?;
    assert_eq!(all["kind"], "APIServiceList");
    assert_eq!(all["apiVersion"], "apiregistration.k8s.io/v1");
    assert!(all["metadata"]["resourceVersion"].as_str().is_some());

    // limit/continue.
    let p1 = admin.get(&format!("{API}?limit=2")).await?.expect(200)?;
    assert_eq!(p1["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(p1["metadata"]["remainingItemCount"], 3);
    let token = p1["metadata"]["continue"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let p2 = admin
        .get(&format!("{API}?limit=2&continue={token}"))
        .await?
        .expect(200)?;
    assert_eq!(p2["items"][0]["metadata"]["name"], "v1.c.list.example.com");
    assert_eq!(
        p2["metadata"]["resourceVersion"], p1["metadata"]["resourceVersion"],
        "a continued list is a consistent snapshot"
    );
    assert_eq!(
        admin
            .get(&format!("{API}?continue=garbage"))
            .await?
            .expect(400)?["reason"],
        "BadRequest"
    );

    // Selectors.
    let r = admin
        .get(&format!(
            "{API}?fieldSelector=metadata.name%3Dv1.d.list.example.com"
        ))
        .await?
        .expect(200)?;
    assert_eq!(r["items"].as_array().map(Vec::len), Some(1));
    let r = admin
        .get(&format!("{API}?labelSelector=idx%20in%20(0,4)"))
        .await?
        .expect(200)?;
    assert_eq!(r["items"].as_array().map(Vec::len), Some(2));
    let r = admin
        .get(&format!("{API}?fieldSelector=spec.group%3Dx"))
        .await?
        .expect(400)?;
    assert_eq!(
        r["message"],
        "\"spec.group\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    );

    // resourceVersion semantics: exact reads the past; too new is 504; invalid is 400.
    let r = admin
        .get(&format!(
            "{API}?resourceVersion={first_rv}&resourceVersionMatch=Exact"
        ))
        .await?
        .expect(200)?;
    assert_eq!(r["items"].as_array().map(Vec::len), Some(1));
    let r = admin
        .get(&format!(
            "{API}?resourceVersion=999999&resourceVersionMatch=NotOlderThan"
        ))
        .await?
        .expect(504)?;
    assert_eq!(r["reason"], "Timeout");
    assert_eq!(
        admin
            .get(&format!("{API}?resourceVersion=abc"))
            .await?
            .expect(400)?["reason"],
        "BadRequest"
    );
    assert_eq!(
        admin
            .get(&format!("{API}?resourceVersionMatch=Exact"))
            .await?
            .expect(422)?["reason"],
        "Invalid"
    );

    // Old history is gone (history_size 10): 410 Expired.
    for i in 0..12 {
        admin
            .patch(
                &format!("{API}/v1.a.list.example.com"),
                "application/merge-patch+json",
                &format!(r#"{{"metadata":{{"labels":{{"n":"{i}"}}}}}}"#),
            )
            .await?
            .expect(200)?;
    }
    let r = admin
        .get(&format!(
            "{API}?resourceVersion={first_rv}&resourceVersionMatch=Exact"
        ))
        .await?
        .expect(410)?;
    assert_eq!(r["reason"], "Expired");

    // Table.
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let t = admin
        .get_with(&format!("{API}?limit=500"), &[("accept", accept)])
        .await?;
    assert_eq!(
        t.header("content-type"),
        Some("application/json;as=Table;v=v1;g=meta.k8s.io")
    );
    let t = t.expect(200)?;
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .map(|c| c.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(cols, ["Name", "Service", "Available", "Age"]);
    assert_eq!(t["rows"][0]["cells"][1], "Local");
    assert_eq!(t["rows"][0]["cells"][2], "True");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    assert!(t["metadata"]["resourceVersion"].as_str().is_some());
    let t = admin
        .get_with(
            &format!("{API}/v1.b.list.example.com?includeObject=None"),
            &[("accept", accept)],
        )
        .await?
        .expect(200)?;
    assert_eq!(t["rows"].as_array().map(Vec::len), Some(1));
    assert!(t["rows"][0].get("object").is_none());
    let m = admin
        .get_with(
            API,
            &[(
                "accept",
                "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io",
            )],
        )
        .await?
        .expect(200)?;
    assert_eq!(m["kind"], "PartialObjectMetadataList");
    Ok(())
}

#[tokio::test]
async fn body_limit_is_413() -> Result<()> {
    let s = TestServer::start_with(
        |c, _| c.max_request_body_bytes = 1024,
        store::Options::default(),
    )
    .await?;
    let admin = s.client(Who::Admin);
    let mut o = local("big.example.com", "v1");
    o["metadata"]["annotations"] = json!({"x": "y".repeat(4096)});
    let r = admin.post_json(API, &o).await?.expect(413)?;
    assert_eq!(r["reason"], "RequestEntityTooLarge");
    Ok(())
}
