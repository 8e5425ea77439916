//! A real etcd (Debian `etcd-server`) on free loopback ports: single member or a 3-member cluster.
//!
//! Everything is synchronous (std::process) so sync and async tests can use it. Data and logs live
//! in a temporary directory removed on drop; every member is killed on drop. A missing `etcd`
//! binary is a test failure with an install hint, never a skip.
//!
//! ```no_run
//! let mut etcd = testkit::etcd::Etcd::start()?;
//! let url = etcd.store_url(); // "etcd://127.0.0.1:PORT"
//! etcd.restart()?;            // same ports, same data
//! # anyhow::Ok(())
//! ```

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::process::{ChildGuard, free_port};
use crate::tools::require;

/// How long a member may take to report healthy (measured: 0.7 s fresh, 2.8 s for 3 members).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// One etcd member: its ports, data directory and (while running) its process.
#[derive(Debug)]
pub struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log_dir: PathBuf,
    initial_cluster: String,
    child: Option<ChildGuard>,
}

impl Member {
    /// The member name (`n0`, `n1`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `127.0.0.1:PORT` of the client listener.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT` of the client listener.
    pub fn client_url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    /// The member's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(ChildGuard::is_running)
    }

    /// Everything the member has logged (all of its runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("etcd-{}.log", self.name)))
            .unwrap_or_default()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    fn spawn(&mut self) -> Result<()> {
        require("etcd")?;
        let client = self.client_url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            // Ignored once the data directory holds a member (restarts).
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "testkit"])
            .args(["--listen-metrics-urls", ""])
            .args(["--log-level", "warn", "--logger", "zap"]);
        let child = ChildGuard::spawn(&format!("etcd-{}", self.name), cmd, &self.log_dir)?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self, deadline: Instant) -> Result<()> {
        loop {
            if !self.is_running() {
                bail!("etcd member {} exited:\n{}", self.name, self.log());
            }
            if let Ok(body) = http_get(self.addr(), "/health")
                && body.contains(r#""health":"true""#)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd member {} not healthy within {READY_TIMEOUT:?}:\n{}",
                    self.name,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the member with SIGTERM (SIGKILL after 10 s) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take()
            && child.is_running()
        {
            child.signal("TERM")?;
            if child.wait_timeout(Duration::from_secs(10)).is_err() {
                child.kill();
            }
        }
        Ok(())
    }

    /// Kills the member with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts a stopped or killed member again on the same ports with the same data, and waits
    /// until it is healthy (for a cluster member: until it has a leader).
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()?;
        self.wait_ready(Instant::now() + READY_TIMEOUT)
    }
}

/// A cluster of etcd members on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    // Declared before `_dir` so the processes die before their data is removed.
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `n` members on free ports and waits until every one is healthy.
    pub fn start(n: usize) -> Result<Self> {
        if n == 0 {
            bail!("an etcd cluster needs at least one member");
        }
        require("etcd")?;
        // `free_port` releases the port before etcd binds it, so a parallel test can take it in
        // between; etcd then exits with "address already in use" and we try other ports.
        let mut last_error = None;
        for _ in 0..3 {
            match Self::try_start(n) {
                Ok(cluster) => return Ok(cluster),
                Err(e) if format!("{e:#}").contains("address already in use") => {
                    last_error = Some(e)
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("etcd did not start")))
    }

    fn try_start(n: usize) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-etcd-")
            .tempdir()
            .context("creating a temporary directory for etcd")?;
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("n{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, &(client_port, peer_port))| Member {
                name: format!("n{i}"),
                client_port,
                peer_port,
                data_dir: dir.path().join(format!("n{i}.etcd")),
                log_dir: dir.path().to_path_buf(),
                initial_cluster: initial_cluster.clone(),
                child: None,
            })
            .collect();
        for m in &mut members {
            m.spawn()?;
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        for m in &mut members {
            m.wait_ready(deadline)?;
        }
        Ok(EtcdCluster { members, _dir: dir })
    }

    /// `127.0.0.1:PORT` of every member's client listener.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(Member::endpoint).collect()
    }

    /// `http://127.0.0.1:PORT` of every member's client listener.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// `etcd://host:port,host:port…` for `--store` (the store's default key prefix applies).
    pub fn store_url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// One member, to stop, kill or restart it.
    ///
    /// # Panics
    ///
    /// If `index` is not below the number of members (a bug in the test).
    pub fn member(&mut self, index: usize) -> &mut Member {
        &mut self.members[index]
    }

    /// Every member's log, for failure messages.
    pub fn log(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- etcd {}\n{}", m.name, m.log()))
            .collect()
    }

    /// The Prometheus text of the first running member (`GET /metrics` on its client port).
    pub fn metrics(&mut self) -> Result<String> {
        for m in &mut self.members {
            if m.is_running() {
                return http_get(m.addr(), "/metrics");
            }
        }
        bail!("no etcd member is running")
    }
}

/// A single-member etcd.
#[derive(Debug)]
pub struct Etcd {
    cluster: EtcdCluster,
}

impl Etcd {
    /// Starts one member on free loopback ports and waits until it is healthy.
    pub fn start() -> Result<Self> {
        Ok(Etcd {
            cluster: EtcdCluster::start(1)?,
        })
    }

    fn member(&mut self) -> &mut Member {
        self.cluster.member(0)
    }

    /// `["127.0.0.1:PORT"]`.
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.endpoints()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn client_url(&self) -> String {
        self.cluster.members[0].client_url()
    }

    /// `etcd://127.0.0.1:PORT` for `--store`.
    pub fn store_url(&self) -> String {
        self.cluster.store_url()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.cluster.members[0].data_dir()
    }

    /// Stops etcd (SIGTERM).
    pub fn stop(&mut self) -> Result<()> {
        self.member().stop()
    }

    /// Kills etcd (SIGKILL).
    pub fn kill(&mut self) {
        self.member().kill();
    }

    /// Starts etcd again on the same port with the same data and waits until it is healthy.
    pub fn restart(&mut self) -> Result<()> {
        self.member().restart()
    }

    /// Whether etcd is running.
    pub fn is_running(&mut self) -> bool {
        self.member().is_running()
    }

    /// Everything etcd has logged.
    pub fn log(&self) -> String {
        self.cluster.members[0].log()
    }

    /// `GET /metrics` (Prometheus text).
    pub fn metrics(&mut self) -> Result<String> {
        self.cluster.metrics()
    }
}

/// A plain HTTP/1.0 GET on loopback (1.0 so that the body is never chunked); returns the body of
/// a 200 answer.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    if !(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")) {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_member_starts_restarts_and_stops() -> Result<()> {
        let mut etcd = Etcd::start()?;
        assert!(etcd.store_url().starts_with("etcd://127.0.0.1:"));
        assert!(etcd.metrics()?.contains("etcd_server_has_leader 1"));
        etcd.kill();
        assert!(!etcd.is_running());
        etcd.restart()?;
        assert!(etcd.is_running());
        etcd.stop()?;
        assert!(!etcd.is_running());
        Ok(())
    }
}
