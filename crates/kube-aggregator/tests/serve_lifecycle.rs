//! `kube-aggregator serve` as a process: invalid flags exit 64 with one line before anything
//! starts; SIGTERM ends watches cleanly and exits 0; data survives a restart; the server keeps
//! working across an etcd restart (the informer lists again).

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, ensure};
use testkit::kubectl::Kubectl;
use testkit::process::wait_for;
use testkit::server::{Aggregator, Options};
use testkit::tools::Cmd;

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");

fn apiservice(group: &str) -> String {
    format!(
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1.{group}\nspec:\n  group: {group}\n  version: v1\n  groupPriorityMinimum: 100\n  versionPriority: 10\n"
    )
}

#[test]
fn invalid_flags_exit_64_with_one_line() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("policy.jsonl"), "not json\n")?;
    std::fs::write(d.join("tokens.csv"), "only,two\n")?;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--tls-cert-file=/nonexistent/cert.pem".into()],
            "--tls-cert-file requires --tls-private-key-file",
        ),
        (
            vec!["--client-ca-file=/nonexistent/ca.pem".into()],
            "reading /nonexistent/ca.pem",
        ),
        (
            vec![format!(
                "--token-auth-file={}",
                d.join("tokens.csv").display()
            )],
            "must have at least 3 columns",
        ),
        (
            vec![format!(
                "--authorization-policy-file={}",
                d.join("policy.jsonl").display()
            )],
            "line 1",
        ),
        (vec!["--store=mysql://x".into()], "--store"),
        (
            vec!["--requestheader-allowed-names=front-proxy-client".into()],
            "require --requestheader-client-ca-file",
        ),
        (vec!["--request-timeout=soon".into()], "--request-timeout"),
    ];
    for (args, needle) in cases {
        let ran = Cmd::new(KA)
            .arg("serve")
            .arg("--secure-port=0")
            .args(&args)
            .cwd(d)
            .run()?;
        ensure!(ran.code == Some(64), "{args:?}: expected exit 64: {ran}");
        ensure!(ran.stdout.is_empty(), "{ran}");
        let lines: Vec<&str> = ran.stderr.lines().collect();
        ensure!(lines.len() == 1, "{args:?}: expected one line: {ran}");
        ensure!(
            lines[0].starts_with("kube-aggregator serve: ") && lines[0].contains(needle),
            "{args:?}: {ran}"
        );
    }
    ensure!(!d.join("data").exists(), "nothing was started or created");
    Ok(())
}

#[test]
fn sigterm_ends_watches_and_exits_0_and_data_survives_restart() -> Result<()> {
    let work = tempfile::tempdir()?;
    let store = format!("embedded:{}", work.path().join("data").display());
    let mut agg = Aggregator::start(
        Path::new(KA),
        work.path(),
        &Options {
            store,
            extra_args: vec![],
        },
    )?;
    let admin = Kubectl::new(agg.admin_kubeconfig())?;
    admin.ok_stdin(["create", "-f", "-"], &apiservice("persist.example.com"))?;

    // Data survives a restart (kill -9 included).
    agg.restart()?;
    let r = admin.ok(["get", "apiservice", "v1.persist.example.com", "-o", "name"])?;
    ensure!(
        r.stdout.trim() == "apiservice.apiregistration.k8s.io/v1.persist.example.com",
        "{r}"
    );

    let mut watch = admin.spawn("watch", &["get", "apiservices", "-w"], work.path())?;
    wait_for("the watch to list", Duration::from_secs(10), || {
        Ok(watch.log().contains("v1.persist.example.com").then_some(()))
    })?;
    agg.child.signal("TERM")?;
    let code = agg.child.wait_timeout(Duration::from_secs(15))?;
    ensure!(
        code == Some(0),
        "serve exit code {code:?}\n{}",
        agg.child.log()
    );
    let code = watch.wait_timeout(Duration::from_secs(10))?;
    ensure!(
        code == Some(0),
        "kubectl get -w exits 0 when the server ends the watch: {code:?}\n{}",
        watch.log()
    );
    ensure!(
        agg.child.log().contains("shutting down"),
        "{}",
        agg.child.log()
    );
    Ok(())
}

#[test]
fn keeps_working_across_an_etcd_restart() -> Result<()> {
    let mut etcd = testkit::etcd::Etcd::start()?;
    let work = tempfile::tempdir()?;
    let agg = Aggregator::start(
        Path::new(KA),
        work.path(),
        &Options {
            store: etcd.store_url(),
            extra_args: vec![],
        },
    )?;
    let admin = Kubectl::new(agg.admin_kubeconfig())?;
    admin.ok_stdin(["create", "-f", "-"], &apiservice("before.example.com"))?;

    etcd.restart()?;
    // Writes work again once etcd is back.
    wait_for(
        "a create after the etcd restart",
        Duration::from_secs(30),
        || {
            let r = admin.run_stdin(["create", "-f", "-"], &apiservice("after.example.com"))?;
            Ok(r.success().then_some(()))
        },
    )?;
    // The informer caught up: discovery lists the group created after the restart.
    wait_for(
        "discovery to show the new group",
        Duration::from_secs(30),
        || {
            let r = admin.run(["get", "--raw", "/apis"])?;
            Ok(r.stdout.contains("after.example.com").then_some(()))
        },
    )?;
    let r = admin.ok(["get", "apiservices", "-o", "name"])?;
    ensure!(
        r.stdout.contains("v1.before.example.com") && r.stdout.contains("v1.after.example.com"),
        "{r}"
    );
    Ok(())
}
