//! The contenders' set-up: certificates (with our own `kube-aggregator pki`), processes started
//! on free loopback ports and stopped with SIGTERM, and nginx's configuration.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// The release binaries.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `kube-aggregator`.
    pub kube_aggregator: PathBuf,
    /// `bench-backend`.
    pub backend: PathBuf,
    /// `bench-front`.
    pub front: PathBuf,
}

/// Certificate files, all under one directory.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
}

impl Pki {
    /// A file of the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `kube-aggregator pki init` (cluster CA, admin, aggregator serving certificate,
    /// front-proxy CA and client), plus the backend's serving certificate for
    /// `backend.bench.svc` signed by the cluster CA with `pki gencert` — all RSA 2048, the
    /// defaults a cluster would use.
    pub fn create(kube_aggregator: &Path, dir: &Path) -> anyhow::Result<Pki> {
        run(Command::new(kube_aggregator)
            .args(["pki", "init", "--dir"])
            .arg(dir))?;
        let csr = dir.join("backend-csr.json");
        fs::write(
            &csr,
            r#"{"CN":"backend.bench.svc","key":{"algo":"rsa","size":2048}}"#,
        )?;
        run(Command::new(kube_aggregator)
            .args(["pki", "gencert", "-ca"])
            .arg(dir.join("ca.pem"))
            .arg("-ca-key")
            .arg(dir.join("ca-key.pem"))
            .args(["-hostname", "backend.bench.svc,127.0.0.1", "--bare"])
            .arg(dir.join("backend"))
            .arg(&csr))?;
        Ok(Pki {
            dir: dir.to_owned(),
        })
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A free loopback port (bound then released; the race is harmless on a quiet machine).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A started process, stopped (SIGTERM, then SIGKILL after 10 s) when dropped.
pub struct Proc {
    /// A name for messages.
    pub name: String,
    child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr in `<logs>/<name>.log`.
    pub fn spawn(name: &str, cmd: &mut Command, logs: &Path) -> anyhow::Result<Proc> {
        let log = logs.join(format!("{name}.log"));
        let out = fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited, quoting its log.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}): {}", self.name, self.tail());
        }
        Ok(())
    }

    /// The end of its log.
    pub fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        text.get(start..).unwrap_or_default().to_owned()
    }

    /// Waits for a `listening on <addr>` line in its log.
    pub fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(addr) = text
                .lines()
                .find_map(|l| l.strip_prefix("listening on "))
                .and_then(|a| a.trim().parse().ok())
            {
                return Ok(addr);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                bail!("{} did not start listening: {}", self.name, self.tail());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it: SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether this process runs as root (nginx then needs `user root;` to read the work dir).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// nginx as an operator would put it in front of the backend instead of an aggregator: TLS on
/// both legs, the front-proxy client certificate upstream with verification of the backend
/// against the cluster CA under its Service name, a keep-alive upstream pool large enough for
/// the highest concurrency, HTTP/1.1 upstream (nginx cannot proxy HTTP/2), keep-alive limits
/// lifted on both legs, and the access log as the product's default has it (Debian: on, one
/// line per request), like the aggregator's. nginx cannot authenticate callers, so it asserts a
/// fixed identity (`X-Remote-User: bench`, `X-Remote-Group: system:masters`) where the
/// aggregator asserts the authenticated caller's.
pub fn nginx_conf(
    work: &Path,
    port: u16,
    backend: SocketAddr,
    pki: &Pki,
    workers: usize,
    access_log: bool,
) -> String {
    let p = |name: &str| pki.file(name).display().to_string();
    let w = work.display();
    let user = if is_root() { "user root;\n" } else { "" };
    // Debian's default: the combined format, one write per request.
    let access_log = if access_log {
        format!("access_log {w}/nginx-access.log combined;")
    } else {
        "access_log off;".to_owned()
    };
    format!(
        r#"{user}worker_processes {workers};
daemon off;
master_process on;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  {access_log}
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  client_body_temp_path {w}/client_body;
  proxy_temp_path {w}/proxy;
  fastcgi_temp_path {w}/fastcgi;
  uwsgi_temp_path {w}/uwsgi;
  scgi_temp_path {w}/scgi;
  upstream backend {{
    server {backend};
    keepalive 512;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {agg};
    ssl_certificate_key {agg_key};
    ssl_session_cache shared:SSL:1m;
    location / {{
      proxy_pass https://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header Authorization "";
      proxy_set_header X-Remote-User bench;
      proxy_set_header X-Remote-Group system:masters;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_ssl_certificate {fp};
      proxy_ssl_certificate_key {fp_key};
      proxy_ssl_trusted_certificate {ca};
      proxy_ssl_verify on;
      proxy_ssl_name backend.bench.svc;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
"#,
        agg = p("aggregator.pem"),
        agg_key = p("aggregator-key.pem"),
        fp = p("front-proxy-client.pem"),
        fp_key = p("front-proxy-client-key.pem"),
        ca = p("ca.pem"),
    )
}

/// nginx's version line.
pub fn nginx_version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default()
}

/// The first line a tool prints for `--version`-like flags.
pub fn tool_version(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}
