//! Running the real kubectl (the versioned `kubectl.1.32`, bypassing the SDK dispatcher) with a fresh
//! cache dir per command.
//!
//! The `kubectl` on PATH is the Google Cloud SDK dispatcher (kubectl-wire.md §3.0); the versioned
//! binary sits next to what it resolves to. A missing kubectl is a test failure, never a skip.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use base64::Engine as _;

use crate::process::ChildGuard;
use crate::tools::{Cmd, Ran};

/// The kubectl minor version the tests drive.
pub const MINOR: &str = "1.32";

/// Finds `kubectl.1.32` next to the resolved `kubectl` on PATH.
pub fn binary() -> Result<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("readlink -f \"$(command -v kubectl)\"")
        .stderr(Stdio::null())
        .output()
        .context("resolving kubectl on PATH")?;
    let resolved = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if resolved.is_empty() {
        bail!(
            "`kubectl` is required by this test but not on PATH (the Google Cloud SDK's kubectl with kubectl.{MINOR} beside it)"
        );
    }
    let dir = Path::new(&resolved)
        .parent()
        .context("kubectl has no parent directory")?;
    let versioned = dir.join(format!("kubectl.{MINOR}"));
    if !versioned.exists() {
        bail!(
            "{} not found next to {resolved}; install the Google Cloud SDK's kubectl component",
            versioned.display()
        );
    }
    Ok(versioned)
}

/// Standard base64 (e.g. an APIService `caBundle` in YAML).
pub fn base64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// A kubeconfig authenticating with a bearer token.
pub fn token_kubeconfig(server: &str, ca_pem: &str, token: &str) -> String {
    let server = serde_json::to_string(server).unwrap_or_default();
    let token = serde_json::to_string(token).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: test\ncontexts:\n- context:\n    cluster: test\n    user: token\n  name: token@test\ncurrent-context: token@test\npreferences: {{}}\nusers:\n- name: token\n  user:\n    token: {token}\n",
        ca = base64::engine::general_purpose::STANDARD.encode(ca_pem),
    )
}

/// kubectl bound to one kubeconfig; every command gets its own empty `--cache-dir`, so
/// discovery and OpenAPI are always fetched from the server.
#[derive(Debug)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    scratch: tempfile::TempDir,
    counter: std::cell::Cell<u32>,
}

impl Kubectl {
    /// kubectl using `kubeconfig`.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> Result<Self> {
        Ok(Kubectl {
            bin: binary()?,
            kubeconfig: kubeconfig.into(),
            scratch: tempfile::tempdir()?,
            counter: std::cell::Cell::new(0),
        })
    }

    fn fresh_cache(&self) -> Result<PathBuf> {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        let dir = self.scratch.path().join(format!("cache-{n}"));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// The command, ready to run: `kubectl.1.32 --kubeconfig K --cache-dir FRESH ARGS…`, with
    /// `HOME` pointed at a scratch directory so nothing touches `~/.kube`.
    pub fn cmd<I, S>(&self, args: I) -> Result<Cmd>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let cache = self.fresh_cache()?;
        Ok(Cmd::new(&self.bin)
            .env("HOME", self.scratch.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg(format!("--cache-dir={}", cache.display()))
            .args(args))
    }

    /// Runs to completion whatever the exit code.
    pub fn run<I, S>(&self, args: I) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args)?.run()
    }

    /// Runs and fails unless kubectl exits 0.
    pub fn ok<I, S>(&self, args: I) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args)?.ok()
    }

    /// Runs with `input` on stdin (`-f -`), failing unless it exits 0.
    pub fn ok_stdin<I, S>(&self, args: I, input: &str) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args)?.stdin(input).ok()
    }

    /// Runs with `input` on stdin whatever the exit code.
    pub fn run_stdin<I, S>(&self, args: I, input: &str) -> Result<Ran>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd(args)?.stdin(input).run()
    }

    /// Starts a long-running kubectl (e.g. `get -w`) whose output goes to `log_dir/<name>.log`.
    pub fn spawn(&self, name: &str, args: &[&str], log_dir: &Path) -> Result<ChildGuard> {
        let cache = self.fresh_cache()?;
        let mut cmd = Command::new(&self.bin);
        cmd.env("HOME", self.scratch.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg(format!("--cache-dir={}", cache.display()))
            .args(args);
        ChildGuard::spawn(name, cmd, log_dir)
    }
}
