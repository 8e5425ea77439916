//! `kube-aggregator up` refusing to start: a taken port is one line naming the port and the
//! flag to change (exit 1, before any file is written); bad flags exit 64 with one line.

use std::net::TcpListener;

use anyhow::{Result, ensure};
use testkit::tools::{Cmd, Ran};

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");

fn one_line(ran: &Ran) -> Result<&str> {
    let lines: Vec<&str> = ran.stderr.lines().collect();
    ensure!(lines.len() == 1, "want one line on stderr:\n{ran}");
    Ok(lines[0])
}

#[test]
fn a_taken_secure_port_is_one_clear_line() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("state");
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let ran = Cmd::new(KA)
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .args(["--secure-port", &port.to_string()])
        .run()?;
    ensure!(ran.code == Some(1), "{ran}");
    let line = one_line(&ran)?;
    ensure!(
        line.contains(&format!("port {port} is already in use")) && line.contains("--secure-port"),
        "{line}"
    );
    // Nothing was issued for a run that could not start.
    ensure!(!dir.join("ca.pem").exists(), "certificates were written");
    ensure!(!dir.join("service-map.yaml").exists());
    Ok(())
}

#[test]
fn a_taken_metrics_port_names_its_flag() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port();
    let ran = Cmd::new(KA)
        .arg("up")
        .arg("--dir")
        .arg(tmp.path())
        .args(["--secure-port", "0", "--metrics-port", &port.to_string()])
        .run()?;
    ensure!(ran.code == Some(1), "{ran}");
    let line = one_line(&ran)?;
    ensure!(
        line.contains(&format!("port {port} is already in use")) && line.contains("--metrics-port"),
        "{line}"
    );
    Ok(())
}

#[test]
fn bad_flags_exit_64_with_one_line() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x")?;
    let dir = tmp.path().join("state");
    let dir = dir.to_string_lossy().into_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--dir".into(), file.to_string_lossy().into_owned()],
            "is not a directory",
        ),
        (
            vec![
                "--dir".into(),
                dir.clone(),
                "--ready-timeout".into(),
                "soon".into(),
            ],
            "--ready-timeout",
        ),
        (
            vec![
                "--dir".into(),
                dir.clone(),
                "--node-name".into(),
                "Not_A_Name".into(),
            ],
            "--node-name",
        ),
        (
            vec![
                "--dir".into(),
                dir.clone(),
                "--secure-port".into(),
                "7443".into(),
                "--metrics-port".into(),
                "7443".into(),
            ],
            "--metrics-port",
        ),
        (vec!["--secure-port".into(), "http".into()], "--secure-port"),
    ];
    for (args, want) in cases {
        let ran = Cmd::new(KA).arg("up").args(&args).run()?;
        ensure!(ran.code == Some(64), "{args:?}: {ran}");
        let line = one_line(&ran).or_else(|_| {
            // clap's errors add a usage hint after the first line.
            ran.stderr
                .lines()
                .next()
                .ok_or_else(|| anyhow::anyhow!("{ran}"))
        })?;
        ensure!(line.contains(want), "{args:?}: {line}");
    }
    ensure!(
        !tmp.path().join("state").exists(),
        "bad flags created the directory"
    );
    Ok(())
}

/// No availability check can pass within a nanosecond: `up` prints each APIService's state and
/// the log's place, stops what it started and exits 1.
#[test]
fn not_ready_in_time_prints_the_conditions_and_exits_1() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("state");
    let port = testkit::process::free_port();
    let ran = Cmd::new(KA)
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .args(["--secure-port", &port.to_string(), "--ready-timeout", "1ns"])
        .run()?;
    ensure!(ran.code == Some(1), "{ran}");
    ensure!(ran.stdout.contains("Not ready after 1ns:"), "{ran}");
    ensure!(
        ran.stdout.contains("  v1beta1.metrics.k8s.io: ") && ran.stdout.contains("  v1.: "),
        "{ran}"
    );
    ensure!(
        ran.stdout
            .contains(&format!("The log is in {}.", dir.join("up.log").display())),
        "{ran}"
    );
    ensure!(!ran.stdout.contains("Ready. Try:"), "{ran}");
    let line = one_line(&ran)?;
    ensure!(
        line == "kube-aggregator up: the APIServices did not become Available within 1ns",
        "{line}"
    );
    // Everything was stopped: the port is free and the store lock released.
    TcpListener::bind(("127.0.0.1", port))?;
    let again = Cmd::new(KA)
        .arg("up")
        .arg("--dir")
        .arg(&dir)
        .args(["--secure-port", &port.to_string(), "--ready-timeout", "1ns"])
        .run()?;
    ensure!(
        again.code == Some(1) && !again.stderr.contains("already running"),
        "{again}"
    );
    Ok(())
}
