//! Running the real command-line tools the tests compare against (openssl, cfssl, cfssljson, and
//! the `kube-aggregator` binary itself). A missing program is a test failure with an install
//! hint, never a skip. Add launchers for other tools (kubectl, …) in their own modules; the
//! [`Cmd`] builder here is generic.
//!
//! This file depends on nothing else in testkit, so a test crate that cannot depend on testkit
//! yet may include it with `#[path = "…/testkit/src/tools.rs"] mod tools;`.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Whether an executable file named `program` is in a PATH directory.
pub fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        let candidate = dir.join(program);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(&candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        }
        #[cfg(not(unix))]
        {
            candidate.is_file()
        }
    })
}

/// Fails unless `program` is on PATH, saying which Debian package provides it.
pub fn require(program: &str) -> Result<()> {
    if on_path(program) {
        return Ok(());
    }
    let package = match program {
        "cfssl" | "cfssljson" => "golang-cfssl",
        "openssl" => "openssl",
        "etcd" => "etcd-server",
        "etcdctl" => "etcd-client",
        "protoc" => "protobuf-compiler",
        other => other,
    };
    bail!(
        "`{program}` is required by this test but not on PATH; install it with `scripts/deps test` (Debian package {package})"
    )
}

/// What a finished command printed and how it exited.
#[derive(Debug, Clone)]
pub struct Ran {
    /// The command line, for messages.
    pub command: String,
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

impl Ran {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        )
    }
}

/// A command to run to completion: program, arguments, working directory and stdin.
#[derive(Debug)]
pub struct Cmd {
    program: String,
    command: Command,
    shown: Vec<String>,
    stdin: Option<Vec<u8>>,
}

impl Cmd {
    /// A command for `program` (a name on PATH or a path).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        let program_str = program.as_ref().to_string_lossy().into_owned();
        Cmd {
            shown: vec![program_str.clone()],
            program: program_str,
            command: Command::new(program),
            stdin: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.shown.push(arg.as_ref().to_string_lossy().into_owned());
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    /// Runs in `dir`.
    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Feeds `input` on stdin (by default stdin is empty).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Runs to completion whatever the exit code. Fails only if the program cannot be started
    /// (a bare program name must be on PATH; see [`require`]).
    pub fn run(mut self) -> Result<Ran> {
        if !self.program.contains('/') {
            require(&self.program)?;
        }
        let shown = self.shown.join(" ");
        let mut child = self
            .command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{shown}`"))?;
        let input = self.stdin.take().unwrap_or_default();
        if let Some(mut stdin) = child.stdin.take() {
            // A child that exits without reading gives EPIPE here; its exit code tells the story.
            let writer = std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
            let out = child
                .wait_with_output()
                .with_context(|| format!("waiting for `{shown}`"))?;
            let _ = writer.join();
            return Ok(Ran {
                command: shown,
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        bail!("`{shown}`: no stdin pipe")
    }

    /// Runs and fails unless the exit code is 0; the error shows both outputs.
    pub fn ok(self) -> Result<Ran> {
        let ran = self.run()?;
        if !ran.success() {
            bail!("{ran}");
        }
        Ok(ran)
    }
}

/// `openssl …` (Debian `openssl`).
pub fn openssl() -> Cmd {
    Cmd::new("openssl")
}

/// `cfssl …` (Debian `golang-cfssl`).
pub fn cfssl() -> Cmd {
    Cmd::new("cfssl")
}

/// `cfssljson …` (Debian `golang-cfssl`).
pub fn cfssljson() -> Cmd {
    Cmd::new("cfssljson")
}

/// `openssl x509 -noout -text -in FILE`, the human-readable dump tests grep.
pub fn openssl_x509_text(cert: &Path) -> Result<String> {
    Ok(openssl()
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .ok()?
        .stdout)
}

/// `openssl verify -CAfile CA CERT`: `Ok(())` only if openssl says `CERT: OK`.
pub fn openssl_verify(ca: &Path, cert: &Path) -> Result<()> {
    let ran = openssl()
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert)
        .run()?;
    if !ran.success() || !ran.stdout.contains(": OK") {
        bail!("{ran}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_captures() -> Result<()> {
        let ran = Cmd::new("sh")
            .args(["-c", "cat; echo err >&2; exit 3"])
            .stdin("in")
            .run()?;
        assert_eq!(ran.code, Some(3));
        assert_eq!(ran.stdout, "in");
        assert_eq!(ran.stderr, "err\n");
        assert!(Cmd::new("sh").args(["-c", "exit 1"]).ok().is_err());
        Ok(())
    }

    #[test]
    fn finds_programs_on_path() {
        assert!(on_path("sh"));
        assert!(!on_path("definitely-not-installed-xyz"));
    }

    #[test]
    fn a_missing_program_fails_with_a_hint() {
        let err = Cmd::new("definitely-not-installed-xyz")
            .run()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("scripts/deps test"), "{err}");
    }
}
