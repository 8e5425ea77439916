//! `kube-aggregator up` end to end, with the real binary and the real kubectl (`kubectl.1.32`, a
//! fresh `--cache-dir` per command):
//!
//! - on a fresh directory it writes the PKI, starts everything and prints the two lines to try;
//! - `kubectl top node` prints this machine with plausible numbers, `get apiservices` shows
//!   `v1beta1.metrics.k8s.io` (and `v1.`) Available, `get --raw …/nodes` is a NodeMetricsList,
//!   the APIService trusts the cluster CA (no insecureSkipTLSVerify);
//! - the metrics server refuses callers without the front-proxy certificate with 401;
//! - a second `up` on the same directory is refused while the first runs;
//! - SIGINT stops everything with exit 0 and frees the port; `up` again on the same directory
//!   reuses the CA, the registrations and the data, and SIGTERM stops it with exit 0.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use testkit::kubectl::Kubectl;
use testkit::process::{ChildGuard, free_port, wait_for};
use testkit::server::https_request;
use testkit::tools::Cmd;

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");

fn start_up(name: &str, dir: &Path, port: u16, logs: &Path) -> Result<ChildGuard> {
    let mut cmd = Command::new(KA);
    cmd.arg("up")
        .arg("--dir")
        .arg(dir)
        .arg("--secure-port")
        .arg(port.to_string());
    ChildGuard::spawn(name, cmd, logs)
}

/// Waits for the ready lines and returns everything printed so far.
fn wait_ready(up: &mut ChildGuard, dir: &Path) -> Result<String> {
    let res = wait_for(
        "`up` to print the lines to try",
        Duration::from_secs(90),
        || {
            let out = up.log();
            if out.contains("Ctrl-C stops everything") {
                return Ok(Some(out));
            }
            if !up.is_running() {
                bail!("`up` exited early:\n{out}");
            }
            Ok(None)
        },
    );
    res.with_context(|| {
        let log = std::fs::read_to_string(dir.join("up.log")).unwrap_or_default();
        format!("--- output\n{}\n--- up.log\n{log}", up.log())
    })
}

/// The lines that tell the user what to run.
fn try_lines(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.trim_start().starts_with("kubectl "))
        .collect()
}

fn nproc() -> Result<u64> {
    Ok(std::thread::available_parallelism()?.get() as u64)
}

fn mem_total_bytes() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no MemTotal in /proc/meminfo")?;
    Ok(kib * 1024)
}

fn hostname() -> Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/hostname")?
        .trim()
        .to_ascii_lowercase())
}

/// `250m` or `2` → millicores.
fn millicores(q: &str) -> Result<u64> {
    match q.strip_suffix('m') {
        Some(m) => Ok(m.parse()?),
        None => Ok(q.parse::<u64>()? * 1000),
    }
}

/// `1205Mi`, `3Gi`, `812344Ki` or plain bytes → bytes.
fn bytes(q: &str) -> Result<u64> {
    for (suffix, factor) in [
        ("Ki", 1u64 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
    ] {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>()? * factor);
        }
    }
    Ok(q.parse()?)
}

/// `kubectl top node`: one row for this machine, numbers within what the machine has, and the
/// percentages that need `/api/v1/nodes`.
fn check_top_node(kubectl: &Kubectl) -> Result<()> {
    let ran = kubectl.ok(["top", "node"])?;
    let lines: Vec<&str> = ran.stdout.lines().collect();
    ensure!(
        lines.len() == 2,
        "want a header and one node:\n{}",
        ran.stdout
    );
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    ensure!(
        header == ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"],
        "header: {}",
        lines[0]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    ensure!(row.len() == 5, "row without percentages: {}", lines[1]);
    ensure!(row[0] == hostname()?, "node {} is not this machine", row[0]);
    let cpu = millicores(row[1]).with_context(|| format!("cpu {}", row[1]))?;
    ensure!(
        cpu <= nproc()? * 1000,
        "cpu {cpu}m exceeds {} cores",
        nproc()?
    );
    let mem = bytes(row[3]).with_context(|| format!("memory {}", row[3]))?;
    ensure!(
        mem > 0 && mem <= mem_total_bytes()?,
        "memory {mem} not in (0, MemTotal]"
    );
    for pct in [row[2], row[4]] {
        let n: u64 = pct.strip_suffix('%').context("not a percentage")?.parse()?;
        ensure!(n <= 100, "percentage {pct}");
    }
    Ok(())
}

fn check_apiservices(kubectl: &Kubectl) -> Result<()> {
    let ran = kubectl.ok(["get", "apiservices"])?;
    let row = |name: &str| {
        ran.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    let metrics = row("v1beta1.metrics.k8s.io").context(ran.stdout.clone())?;
    ensure!(
        metrics[1] == "kube-system/metrics-server" && metrics[2] == "True",
        "{}",
        ran.stdout
    );
    let core = row("v1.").context(ran.stdout.clone())?;
    ensure!(
        core[1] == "kube-system/metrics-server" && core[2] == "True",
        "{}",
        ran.stdout
    );
    Ok(())
}

fn check_node_metrics(kubectl: &Kubectl) -> Result<()> {
    let ran = kubectl.ok(["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])?;
    let list: Value = serde_json::from_str(&ran.stdout).context(ran.stdout.clone())?;
    ensure!(list["kind"] == "NodeMetricsList", "{list}");
    ensure!(list["apiVersion"] == "metrics.k8s.io/v1beta1", "{list}");
    let items = list["items"].as_array().context("no items")?;
    ensure!(items.len() == 1, "{list}");
    ensure!(
        items[0]["metadata"]["name"] == hostname()?.as_str(),
        "{list}"
    );
    ensure!(items[0]["usage"]["cpu"].is_string() && items[0]["usage"]["memory"].is_string());
    Ok(())
}

/// The metrics server's address, from the service map `up` wrote.
fn metrics_addr(dir: &Path) -> Result<SocketAddr> {
    let map = std::fs::read_to_string(dir.join("service-map.yaml"))?;
    ensure!(map.contains("namespace: kube-system") && map.contains("name: metrics-server"));
    let start = map.find("addresses: [\"").context(map.clone())? + "addresses: [\"".len();
    let end = start + map[start..].find('"').context(map.clone())?;
    Ok(map[start..end].parse()?)
}

fn check_metrics_server_refuses_strangers(dir: &Path) -> Result<()> {
    let addr = metrics_addr(dir)?;
    let ca = std::fs::read_to_string(dir.join("ca.pem"))?;
    let path = "/apis/metrics.k8s.io/v1beta1/nodes";
    let impersonating = [
        ("X-Remote-User", "admin"),
        ("X-Remote-Group", "system:masters"),
    ];
    // No client certificate: 401, identity headers or not.
    let r = https_request(addr, &ca, None, "GET", path, &impersonating, b"")?;
    ensure!(
        r.status == 401,
        "no certificate: {} {}",
        r.status,
        r.body_text()
    );
    // The admin certificate is the aggregator's user, not a front proxy: 401.
    let admin = (
        std::fs::read_to_string(dir.join("admin.pem"))?,
        std::fs::read_to_string(dir.join("admin-key.pem"))?,
    );
    let r = https_request(addr, &ca, Some((&admin.0, &admin.1)), "GET", path, &[], b"")?;
    ensure!(
        r.status == 401,
        "admin certificate: {} {}",
        r.status,
        r.body_text()
    );
    // Control: the front-proxy client certificate with an identity gets in.
    let proxy = (
        std::fs::read_to_string(dir.join("front-proxy-client.pem"))?,
        std::fs::read_to_string(dir.join("front-proxy-client-key.pem"))?,
    );
    let r = https_request(
        addr,
        &ca,
        Some((&proxy.0, &proxy.1)),
        "GET",
        path,
        &[("X-Remote-User", "alice"), ("X-Remote-Group", "devs")],
        b"",
    )?;
    ensure!(
        r.status == 200,
        "front proxy: {} {}",
        r.status,
        r.body_text()
    );
    Ok(())
}

/// The registration trusts the cluster CA that signed the metrics serving certificate.
fn check_ca_bundle(kubectl: &Kubectl, dir: &Path) -> Result<Value> {
    let ran = kubectl.ok(["get", "apiservice", "v1beta1.metrics.k8s.io", "-o", "json"])?;
    let api: Value = serde_json::from_str(&ran.stdout)?;
    let ca = std::fs::read(dir.join("ca.pem"))?;
    ensure!(
        api["spec"]["caBundle"] == testkit::kubectl::base64(&ca).as_str(),
        "caBundle is not ca.pem: {api}"
    );
    ensure!(api["spec"]["insecureSkipTLSVerify"].is_null(), "{api}");
    ensure!(api["spec"]["groupPriorityMinimum"] == 100, "{api}");
    ensure!(api["spec"]["versionPriority"] == 100, "{api}");
    let serving = dir.join("metrics-server.pem");
    testkit::tools::openssl_verify(&dir.join("ca.pem"), &serving)?;
    let text = testkit::tools::openssl_x509_text(&serving)?;
    ensure!(
        text.contains("DNS:metrics-server.kube-system.svc"),
        "{text}"
    );
    Ok(api)
}

fn stop(up: &mut ChildGuard, signal: &str, port: u16) -> Result<()> {
    up.signal(signal)?;
    let code = up.wait_timeout(Duration::from_secs(10))?;
    ensure!(
        code == Some(0),
        "exit {code:?} after SIG{signal}:\n{}",
        up.log()
    );
    ensure!(up.log().contains("Stopped."), "{}", up.log());
    // The port is free again.
    TcpListener::bind(("127.0.0.1", port)).context("the secure port is still taken")?;
    Ok(())
}

#[test]
fn up_serves_kubectl_top_node_and_stops_cleanly() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = tmp.path().join("state");
    let logs = tmp.path().join("logs");
    let port = free_port();

    // First run: a fresh directory.
    let mut up = start_up("up-1", &dir, port, &logs)?;
    let out = wait_ready(&mut up, &dir)?;
    ensure!(out.contains("Certificates: created"), "{out}");
    let kubeconfig = dir.join("admin.kubeconfig");
    let lines = try_lines(&out);
    ensure!(
        lines
            == [
                format!("  kubectl --kubeconfig {} top node", kubeconfig.display()),
                format!(
                    "  kubectl --kubeconfig {} get apiservices",
                    kubeconfig.display()
                ),
            ],
        "the two lines to try:\n{out}"
    );
    for file in [
        "ca.pem",
        "front-proxy-ca.pem",
        "front-proxy-client.pem",
        "metrics-server.pem",
        "metrics-server-key.pem",
        "admin.kubeconfig",
        "service-map.yaml",
        "up.log",
        "data",
    ] {
        ensure!(
            dir.join(file).exists(),
            "{file} missing in {}",
            dir.display()
        );
    }

    let kubectl = Kubectl::new(&kubeconfig)?;
    check_top_node(&kubectl)?;
    check_apiservices(&kubectl)?;
    check_node_metrics(&kubectl)?;
    let first = check_ca_bundle(&kubectl, &dir)?;
    check_metrics_server_refuses_strangers(&dir)?;

    // One `up` per directory.
    let second = Cmd::new(KA)
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .args(["--secure-port", &free_port().to_string()])
        .run()?;
    ensure!(second.code == Some(1), "{second}");
    ensure!(
        second.stderr.trim().lines().count() == 1 && second.stderr.contains("already running"),
        "{second}"
    );

    let ca_before = std::fs::read(dir.join("ca.pem"))?;
    stop(&mut up, "INT", port)?;

    // Second run on the same directory: same CA, same registrations, same data.
    let mut again = start_up("up-2", &dir, port, &logs)?;
    let out = wait_ready(&mut again, &dir)?;
    ensure!(out.contains("Certificates: reused in"), "{out}");
    ensure!(
        std::fs::read(dir.join("ca.pem"))? == ca_before,
        "the CA changed"
    );
    // Ready means a check of this run passed: the condition left by the first run was reset
    // and written again by this run's availability controller.
    let log = std::fs::read_to_string(dir.join("up.log"))?;
    ensure!(
        log.contains(
            "APIService availability changed apiservice=v1beta1.metrics.k8s.io status=\"True\""
        ),
        "{log}"
    );
    let kubectl = Kubectl::new(&kubeconfig)?;
    check_top_node(&kubectl)?;
    check_apiservices(&kubectl)?;
    let second = check_ca_bundle(&kubectl, &dir)?;
    ensure!(
        first["metadata"]["uid"] == second["metadata"]["uid"]
            && first["metadata"]["creationTimestamp"] == second["metadata"]["creationTimestamp"],
        "the APIService was re-created:\n{first}\n{second}"
    );
    check_metrics_server_refuses_strangers(&dir)?;
    stop(&mut again, "TERM", port)?;
    Ok(())
}
