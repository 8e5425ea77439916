//! `kube-aggregator metrics-server` as a real process: a caller with the front-proxy client
//! certificate and X-Remote-* headers gets this machine's NodeMetrics, a caller without one gets
//! 401, real `kubectl top node` works straight against it (plain client-certificate user, sample
//! core nodes API), SIGTERM stops it with exit 0, and bad flags exit 64.
//!
//! Test PKI comes from the same `pki` crate the CLI uses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use pki::{CertRequest, CertificateAuthority, Issued, KeyAlgorithm};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use testkit::process::{ChildGuard, free_port, wait_for, wait_for_port};
use testkit::tools::Cmd;

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");
const NODE: &str = "e2e-node";

fn ec(req: CertRequest) -> CertRequest {
    req.key(KeyAlgorithm::EcdsaP256)
}

/// The files a metrics server and its callers need.
struct Files {
    dir: tempfile::TempDir,
    serving_ca: String,
    proxy: Issued,
    admin: Issued,
    stranger: Issued,
}

impl Files {
    fn new() -> Result<Files> {
        let dir = tempfile::tempdir()?;
        let front_proxy_ca =
            CertificateAuthority::new_root_with(&ec(CertRequest::ca("front-proxy-ca")))?;
        let serving_ca =
            CertificateAuthority::new_root_with(&ec(CertRequest::ca("metrics-serving-ca")))?;
        let client_ca = CertificateAuthority::new_root_with(&ec(CertRequest::ca("client-ca")))?;
        let other_ca = CertificateAuthority::new_root_with(&ec(CertRequest::ca("front-proxy-ca")))?;
        let serving = serving_ca.issue(&ec(CertRequest::server(
            "metrics-server",
            &["metrics-server.kube-system.svc", "localhost", "127.0.0.1"],
        )))?;
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text);
        write("serving.pem", &serving.cert_pem)?;
        write("serving-key.pem", &serving.key_pem)?;
        write("front-proxy-ca.pem", front_proxy_ca.cert_pem())?;
        write("client-ca.pem", client_ca.cert_pem())?;
        let none: &[&str] = &[];
        Ok(Files {
            proxy: front_proxy_ca.issue(&ec(CertRequest::client("front-proxy-client", none)))?,
            admin: client_ca.issue(&ec(CertRequest::client("e2e-admin", &["system:masters"])))?,
            stranger: other_ca.issue(&ec(CertRequest::client("front-proxy-client", none)))?,
            serving_ca: serving_ca.cert_pem().to_owned(),
            dir,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The reply of one HTTP/1.1 request.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.body).with_context(|| format!("{}: {}", self.status, self.body))
    }
}

/// One blocking HTTPS GET over rustls with `Connection: close`.
fn get(
    addr: SocketAddr,
    ca_pem: &str,
    client: Option<&Issued>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match client {
        Some(c) => {
            let chain = CertificateDer::pem_slice_iter(c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()?;
            let key = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes())?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    let conn = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("localhost")?.to_owned(),
    )?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    tls.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // The server may close without close_notify once the response is complete.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head}"))?;
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        bail!("unexpected chunked reply: {head}");
    }
    Ok(Reply {
        status,
        body: body.to_owned(),
    })
}

fn start(files: &Files, port: u16, extra: &[&str]) -> Result<ChildGuard> {
    let mut cmd = Command::new(KA);
    cmd.arg("metrics-server")
        .args([
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            &port.to_string(),
        ])
        .arg("--tls-cert-file")
        .arg(files.path("serving.pem"))
        .arg("--tls-private-key-file")
        .arg(files.path("serving-key.pem"))
        .arg("--requestheader-client-ca-file")
        .arg(files.path("front-proxy-ca.pem"))
        .args([
            "--requestheader-allowed-names",
            "front-proxy-client",
            "--node-name",
            NODE,
        ])
        .args(extra);
    ChildGuard::spawn("metrics-server", cmd, &files.path("logs"))
}

fn wait_ready(addr: SocketAddr, files: &Files, server: &mut ChildGuard) -> Result<()> {
    wait_for_port(addr, Duration::from_secs(20)).with_context(|| server.log())?;
    wait_for("/readyz", Duration::from_secs(10), || {
        Ok(get(addr, &files.serving_ca, None, "/readyz", &[])
            .ok()
            .filter(|r| r.status == 200)
            .map(|_| ()))
    })
}

#[test]
fn proxied_callers_get_node_metrics_and_others_get_401() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let files = Files::new()?;
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut server = start(&files, port, &[])?;
    wait_ready(addr, &files, &mut server)?;

    let alice = [
        ("X-Remote-User", "alice"),
        ("X-Remote-Group", "system:authenticated"),
        ("Accept", "application/vnd.kubernetes.protobuf, */*"),
    ];
    let reply = get(
        addr,
        &files.serving_ca,
        Some(&files.proxy),
        "/apis/metrics.k8s.io/v1beta1/nodes",
        &alice,
    )?;
    assert_eq!(reply.status, 200, "{reply:?}\n{}", server.log());
    let list = reply.json()?;
    assert_eq!(list["kind"], "NodeMetricsList");
    assert_eq!(list["items"][0]["metadata"]["name"], NODE);
    let cpu = list["items"][0]["usage"]["cpu"]
        .as_str()
        .unwrap_or_default();
    assert!(
        cpu.ends_with('n') || cpu.ends_with('u') || cpu.ends_with('m') || cpu == "0",
        "{cpu}"
    );
    assert!(
        list["items"][0]["window"]
            .as_str()
            .is_some_and(|w| w.ends_with('s'))
    );

    // Refused: no certificate (with spoofed headers), a certificate from another CA.
    let admin = [
        ("X-Remote-User", "system:admin"),
        ("X-Remote-Group", "system:masters"),
    ];
    for client in [None, Some(&files.stranger)] {
        let reply = get(
            addr,
            &files.serving_ca,
            client,
            "/apis/metrics.k8s.io/v1beta1/nodes",
            &admin,
        )?;
        assert_eq!(reply.status, 401, "{reply:?}");
        let status = reply.json()?;
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "Unauthorized");
    }
    // The sample core API is off by default.
    let core = get(
        addr,
        &files.serving_ca,
        Some(&files.proxy),
        "/api/v1/nodes",
        &alice,
    )?;
    assert_eq!(core.status, 404, "{core:?}");

    server.signal("TERM")?;
    assert_eq!(
        server.wait_timeout(Duration::from_secs(20))?,
        Some(0),
        "{}",
        server.log()
    );
    Ok(())
}

/// The versioned kubectl behind the Cloud SDK dispatcher (kubectl-wire.md §3.0), or plain kubectl.
fn kubectl() -> Result<PathBuf> {
    let found = Cmd::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .ok()?;
    let path = PathBuf::from(found.stdout.trim());
    let versioned = path.with_file_name("kubectl.1.32");
    if versioned.exists() {
        return Ok(versioned);
    }
    if path.exists() {
        return Ok(path);
    }
    bail!("kubectl is not installed")
}

fn kubeconfig(files: &Files, addr: SocketAddr, path: &Path) -> Result<()> {
    let b64 = |s: &str| {
        use base64_lite::encode;
        encode(s.as_bytes())
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: metrics\n  cluster:\n    server: https://localhost:{}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: metrics\n  context:\n    cluster: metrics\n    user: admin\ncurrent-context: metrics\n",
        addr.port(),
        b64(&files.serving_ca),
        b64(&files.admin.cert_pem),
        b64(&files.admin.key_pem),
    );
    std::fs::write(path, text)?;
    Ok(())
}

/// Standard base64 without a dependency (kube-aggregator's dev-dependencies have none).
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn known_vectors() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
    }
}

#[test]
fn kubectl_top_node_straight_against_the_sample_core_api() -> Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let kubectl = kubectl()?;
    let files = Files::new()?;
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let client_ca = files.path("client-ca.pem");
    let client_ca = client_ca.to_string_lossy().into_owned();
    let mut server = start(
        &files,
        port,
        &["--client-ca-file", &client_ca, "--serve-core-nodes"],
    )?;
    wait_ready(addr, &files, &mut server)?;
    let config = files.path("admin.kubeconfig");
    kubeconfig(&files, addr, &config)?;
    let cache = files.path("kube-cache");
    let run = |args: &[&str]| {
        Cmd::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&config)
            .args(args)
            .env("KUBECACHEDIR", &cache)
            .run()
    };

    let top = run(&["top", "node"])?;
    assert!(top.success(), "{top}\n{}", server.log());
    let lines: Vec<&str> = top.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME")
            && lines[0].contains("CPU(%)")
            && lines[0].contains("MEMORY(%)"),
        "{top}"
    );
    let fields: Vec<&str> = lines
        .get(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(fields.len(), 5, "{top}");
    assert_eq!(fields[0], NODE);
    assert!(fields[1].ends_with('m'), "cpu {fields:?}");
    assert!(
        fields[2].ends_with('%') && fields[4].ends_with('%'),
        "{fields:?}"
    );
    let memory_percent: u32 = fields[4].trim_end_matches('%').parse()?;
    assert!(memory_percent <= 100, "{fields:?}");

    let raw = run(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes"])?;
    assert!(raw.success(), "{raw}");
    let list: Value = serde_json::from_str(&raw.stdout)?;
    assert_eq!(list["kind"], "NodeMetricsList");

    let table = run(&["get", "nodes.metrics.k8s.io"])?;
    assert!(table.success(), "{table}");
    assert!(
        table.stdout.starts_with("NAME") && table.stdout.contains("WINDOW"),
        "{table}"
    );
    assert!(table.stdout.contains(NODE), "{table}");

    server.signal("TERM")?;
    assert_eq!(
        server.wait_timeout(Duration::from_secs(20))?,
        Some(0),
        "{}",
        server.log()
    );
    Ok(())
}

#[test]
fn bad_flags_exit_64_with_one_clear_line() -> Result<()> {
    let files = Files::new()?;
    let missing = files.path("missing.pem");
    let ran = Cmd::new(KA)
        .arg("metrics-server")
        .arg("--tls-cert-file")
        .arg(&missing)
        .arg("--tls-private-key-file")
        .arg(files.path("serving-key.pem"))
        .arg("--requestheader-client-ca-file")
        .arg(files.path("front-proxy-ca.pem"))
        .run()?;
    assert_eq!(ran.code, Some(64), "{ran}");
    assert!(
        ran.stderr.contains("--tls-cert-file") && ran.stderr.contains("missing.pem"),
        "{ran}"
    );
    assert!(!ran.stderr.contains("panicked"), "{ran}");

    let ran = Cmd::new(KA)
        .arg("metrics-server")
        .arg("--tls-cert-file")
        .arg(files.path("serving.pem"))
        .arg("--tls-private-key-file")
        .arg(files.path("serving-key.pem"))
        .arg("--requestheader-client-ca-file")
        .arg(files.path("serving.pem.nope"))
        .run()?;
    assert_eq!(ran.code, Some(64), "{ran}");
    assert!(ran.stderr.contains("serving.pem.nope"), "{ran}");

    let ran = Cmd::new(KA)
        .args(["metrics-server", "--metric-resolution", "soon"])
        .arg("--tls-cert-file")
        .arg(files.path("serving.pem"))
        .arg("--tls-private-key-file")
        .arg(files.path("serving-key.pem"))
        .run()?;
    assert_eq!(ran.code, Some(64), "{ran}");
    assert!(ran.stderr.contains("--metric-resolution"), "{ran}");
    Ok(())
}
