//! `kube-aggregator serve` end to end with the real kubectl v1.32 (a fresh `--cache-dir` per
//! command), certificates from `kube-aggregator pki init`, on both store back-ends: version,
//! discovery, get (Table columns), -o yaml, apply (create, unchanged, configured), apply
//! --server-side, create, label, delete with wait, get -w (ADDED, MODIFIED, DELETED), explain,
//! get --raw /apis — as admin (client certificate) and as a token user who may read but not
//! write, with exit codes and output checked.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use testkit::kubectl::Kubectl;
use testkit::process::wait_for;
use testkit::server::{Aggregator, Options, VIEWER_TOKEN};

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");

const METRICS: &str = "apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
  labels:
    app: metrics
spec:
  service:
    namespace: kube-system
    name: metrics-server
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
";

const LOCAL: &str = "apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1alpha1.example.com
spec:
  group: example.com
  version: v1alpha1
  groupPriorityMinimum: 10
  versionPriority: 10
";

const CREATED: &str = "apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v2.created.example.org
spec:
  group: created.example.org
  version: v2
  groupPriorityMinimum: 500
  versionPriority: 15
";

fn write(dir: &Path, name: &str, text: &str) -> Result<std::path::PathBuf> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

fn expect_stdout(ran: &testkit::tools::Ran, needle: &str) -> Result<()> {
    ensure!(
        ran.stdout.contains(needle),
        "expected {needle:?} in stdout of {ran}"
    );
    Ok(())
}

fn expect_failure(ran: &testkit::tools::Ran, needle: &str) -> Result<()> {
    ensure!(ran.code == Some(1), "expected exit 1: {ran}");
    ensure!(
        ran.stderr.contains(needle),
        "expected {needle:?} in stderr of {ran}"
    );
    Ok(())
}

/// The whole kubectl story against one running server.
fn kubectl_story(store: &str) -> Result<()> {
    let work = tempfile::tempdir()?;
    let agg = Aggregator::start(
        Path::new(KA),
        work.path(),
        &Options {
            store: store.into(),
            extra_args: vec![],
        },
    )?;
    let admin = Kubectl::new(agg.admin_kubeconfig())?;
    let files = work.path();
    let metrics = write(files, "metrics.yaml", METRICS)?;
    let local = write(files, "local.yaml", LOCAL)?;
    let created = write(files, "created.yaml", CREATED)?;

    // version: the server reports a Kubernetes 1.32 version.
    let v = admin.ok(["version"])?;
    expect_stdout(&v, "Server Version: v1.32.0+kube-aggregator")?;

    // Watch everything from here on, with event types.
    let watch = admin.spawn(
        "watch",
        &["get", "apiservices", "-w", "--output-watch-events"],
        files,
    )?;

    // apply: create, unchanged, configured.
    let r = admin.ok([
        "apply".to_string(),
        "-f".into(),
        metrics.display().to_string(),
    ])?;
    expect_stdout(
        &r,
        "apiservice.apiregistration.k8s.io/v1beta1.metrics.k8s.io created",
    )?;
    let r = admin.ok([
        "apply".to_string(),
        "-f".into(),
        metrics.display().to_string(),
    ])?;
    expect_stdout(
        &r,
        "apiservice.apiregistration.k8s.io/v1beta1.metrics.k8s.io unchanged",
    )?;
    write(
        files,
        "metrics.yaml",
        &METRICS.replace("versionPriority: 100", "versionPriority: 101"),
    )?;
    let r = admin.ok([
        "apply".to_string(),
        "-f".into(),
        metrics.display().to_string(),
    ])?;
    expect_stdout(
        &r,
        "apiservice.apiregistration.k8s.io/v1beta1.metrics.k8s.io configured",
    )?;

    // apply --server-side (creates, then re-applies).
    for _ in 0..2 {
        let r = admin.ok([
            "apply".to_string(),
            "--server-side".into(),
            "-f".into(),
            local.display().to_string(),
        ])?;
        expect_stdout(
            &r,
            "apiservice.apiregistration.k8s.io/v1alpha1.example.com serverside-applied",
        )?;
    }

    // create, then create again fails with AlreadyExists.
    let r = admin.ok([
        "create".to_string(),
        "-f".into(),
        created.display().to_string(),
    ])?;
    expect_stdout(
        &r,
        "apiservice.apiregistration.k8s.io/v2.created.example.org created",
    )?;
    let r = admin.run([
        "create".to_string(),
        "-f".into(),
        created.display().to_string(),
    ])?;
    expect_failure(&r, "Error from server (AlreadyExists)")?;
    expect_failure(
        &r,
        "apiservices.apiregistration.k8s.io \"v2.created.example.org\" already exists",
    )?;

    // Server-side strict field validation: kubectl sends fieldValidation=Strict.
    let bad = write(
        files,
        "bad.yaml",
        &CREATED
            .replace("v2.created.example.org", "v3.created.example.org")
            .replace("version: v2", "version: v3\n  bogus: 1"),
    )?;
    let r = admin.run(["apply".to_string(), "-f".into(), bad.display().to_string()])?;
    expect_failure(&r, "Error from server (BadRequest)")?;
    expect_failure(&r, "strict decoding error: unknown field \"spec.bogus\"")?;
    // Validation errors carry upstream's message.
    let invalid = write(
        files,
        "invalid.yaml",
        &CREATED.replace("groupPriorityMinimum: 500", "groupPriorityMinimum: 0"),
    )?;
    let r = admin.run([
        "apply".to_string(),
        "-f".into(),
        invalid.display().to_string(),
    ])?;
    expect_failure(
        &r,
        "The APIService \"v2.created.example.org\" is invalid: spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000",
    )?;

    // label.
    let r = admin.ok(["label", "apiservice", "v2.created.example.org", "tier=gold"])?;
    expect_stdout(
        &r,
        "apiservice.apiregistration.k8s.io/v2.created.example.org labeled",
    )?;

    // get: server-side Table columns and cells.
    let r = admin.ok(["get", "apiservices"])?;
    let lines: Vec<&str> = r.stdout.lines().collect();
    let header: Vec<&str> = lines
        .first()
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    ensure!(
        header == ["NAME", "SERVICE", "AVAILABLE", "AGE"],
        "columns: {r}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    let m = row("v1beta1.metrics.k8s.io").context("metrics row")?;
    ensure!(m[1] == "kube-system/metrics-server", "{r}");
    let l = row("v1alpha1.example.com").context("local row")?;
    ensure!(
        l[1] == "Local" && l[2] == "True",
        "local APIServices are available at once: {r}"
    );
    let r = admin.ok(["get", "apiservices", "-l", "tier=gold", "-o", "name"])?;
    ensure!(
        r.stdout.trim() == "apiservice.apiregistration.k8s.io/v2.created.example.org",
        "{r}"
    );

    // get -o yaml: defaults applied, status of local ones set.
    let r = admin.ok(["get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "yaml"])?;
    for needle in [
        "name: v1beta1.metrics.k8s.io",
        "port: 443",
        "versionPriority: 101",
        "resourceVersion: ",
        "uid: ",
        "creationTimestamp: ",
    ] {
        expect_stdout(&r, needle)?;
    }
    let r = admin.ok(["get", "apiservice", "v1alpha1.example.com", "-o", "yaml"])?;
    expect_stdout(&r, "message: Local APIServices are always available")?;

    // explain.
    let r = admin.ok(["explain", "apiservice"])?;
    for needle in [
        "GROUP:      apiregistration.k8s.io",
        "KIND:       APIService",
        "VERSION:    v1",
        "spec\t<APIServiceSpec>",
    ] {
        expect_stdout(&r, needle)?;
    }
    let r = admin.ok(["explain", "apiservice.spec.service"])?;
    expect_stdout(&r, "port\t<integer>")?;

    // discovery through kubectl.
    let r = admin.ok(["api-versions"])?;
    expect_stdout(&r, "apiregistration.k8s.io/v1")?;
    let r = admin.ok(["api-resources"])?;
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("apiservices"))
        .context("api-resources lists apiservices")?;
    ensure!(
        line.split_whitespace().collect::<Vec<_>>()
            == [
                "apiservices",
                "apiregistration.k8s.io/v1",
                "false",
                "APIService"
            ],
        "{r}"
    );

    // get --raw /apis: the legacy APIGroupList, our group first, priorities after.
    let r = admin.ok(["get", "--raw", "/apis"])?;
    let v: serde_json::Value = serde_json::from_str(&r.stdout)?;
    ensure!(v["kind"] == "APIGroupList", "{r}");
    let groups: Vec<&str> = v["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        groups
            == [
                "apiregistration.k8s.io",
                "created.example.org",
                "metrics.k8s.io",
                "example.com"
            ],
        "{groups:?}"
    );

    // delete (kubectl waits for the 404), then it is gone.
    let r = admin.ok(["delete", "apiservice", "v1alpha1.example.com"])?;
    expect_stdout(
        &r,
        "apiservice.apiregistration.k8s.io \"v1alpha1.example.com\" deleted",
    )?;
    let r = admin.run(["get", "apiservice", "v1alpha1.example.com"])?;
    expect_failure(
        &r,
        "Error from server (NotFound): apiservices.apiregistration.k8s.io \"v1alpha1.example.com\" not found",
    )?;
    let r = admin.run(["delete", "apiservice", "v1alpha1.example.com"])?;
    expect_failure(&r, "NotFound")?;

    // The watch saw every kind of event.
    let mut watch = watch;
    let log = wait_for("watch events", Duration::from_secs(15), || {
        let log = watch.log();
        let seen = [
            "ADDED      v1beta1.metrics.k8s.io",
            "MODIFIED   v1beta1.metrics.k8s.io",
            "ADDED      v2.created.example.org",
            "MODIFIED   v2.created.example.org",
            "DELETED    v1alpha1.example.com",
        ]
        .iter()
        .all(|n| log.contains(n));
        Ok(seen.then_some(log))
    })?;
    ensure!(
        log.starts_with("EVENT") || log.contains("\nEVENT") || log.contains("EVENT "),
        "{log}"
    );
    ensure!(watch.is_running(), "the watch is still open");

    // A token user reads but cannot write.
    let viewer = Kubectl::new(agg.token_kubeconfig("viewer", VIEWER_TOKEN)?)?;
    let r = viewer.ok(["get", "apiservices"])?;
    expect_stdout(&r, "v1beta1.metrics.k8s.io")?;
    viewer.ok(["get", "apiservice", "v2.created.example.org", "-o", "yaml"])?;
    viewer.ok(["api-versions"])?;
    viewer.ok(["explain", "apiservice"])?;
    let r = viewer.run([
        "apply".to_string(),
        "-f".into(),
        local.display().to_string(),
    ])?;
    expect_failure(&r, "Error from server (Forbidden)")?;
    expect_failure(
        &r,
        "User \"viewer\" cannot create resource \"apiservices\" in API group \"apiregistration.k8s.io\" at the cluster scope",
    )?;
    let r = viewer.run(["delete", "apiservice", "v1beta1.metrics.k8s.io"])?;
    expect_failure(&r, "User \"viewer\" cannot delete resource \"apiservices\"")?;
    let r = viewer.run(["label", "apiservice", "v1beta1.metrics.k8s.io", "x=y"])?;
    expect_failure(&r, "Forbidden")?;

    // A wrong token is 401.
    let nobody = Kubectl::new(agg.token_kubeconfig("nobody", "not-a-token")?)?;
    let r = nobody.run(["get", "apiservices"])?;
    expect_failure(&r, "error: You must be logged in to the server")?;
    Ok(())
}

#[test]
fn kubectl_against_the_embedded_store() -> Result<()> {
    let data = tempfile::tempdir()?;
    kubectl_story(&format!("embedded:{}", data.path().join("data").display()))
}

#[test]
fn kubectl_against_etcd() -> Result<()> {
    let etcd = testkit::etcd::Etcd::start()?;
    kubectl_story(&etcd.store_url())
}
