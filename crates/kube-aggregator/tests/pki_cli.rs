//! `kube-aggregator pki` end to end: bad input gives one clear line and the right exit code,
//! `front-proxy` and `init` write what `serve` and kube-apiserver need and are safe to re-run,
//! `-hostname` and stdin work as in cfssl.

use std::path::Path;

use anyhow::{Context, Result};
use tools::{Cmd, Ran};

use testkit::tools;

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");

fn ka(dir: &Path) -> Cmd {
    Cmd::new(KA).arg("pki").cwd(dir)
}

const CONFIG: &str = r#"{"signing":{"default":{"expiry":"8760h"},"profiles":{
  "client":{"usages":["signing","key encipherment","client auth"],"expiry":"8760h"},
  "server":{"usages":["signing","key encipherment","server auth"],"expiry":"8760h"}}}}"#;

/// A directory with a CA (`ca.pem`, `ca-key.pem`), `config.json` and `csr.json`.
fn ca_dir() -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(
        d.join("ca-csr.json"),
        r#"{"CN":"test CA","key":{"algo":"ecdsa","size":256}}"#,
    )?;
    std::fs::write(d.join("config.json"), CONFIG)?;
    std::fs::write(
        d.join("csr.json"),
        r#"{"CN":"svc","hosts":["svc.ns.svc"],"key":{"algo":"ecdsa","size":256}}"#,
    )?;
    ka(d)
        .args(["gencert", "-initca", "--bare", "ca", "ca-csr.json"])
        .ok()?;
    Ok(dir)
}

/// Asserts a failure with `code`, a single stderr line containing every `needles`, no panic.
fn assert_one_line_error(ran: &Ran, code: i32, needles: &[&str]) {
    assert_eq!(ran.code, Some(code), "{ran}");
    assert_eq!(ran.stderr.lines().count(), 1, "{ran}");
    assert!(!ran.stderr.contains("panicked"), "{ran}");
    for n in needles {
        assert!(ran.stderr.contains(n), "missing {n:?} in {ran}");
    }
    assert!(ran.stdout.is_empty(), "{ran}");
}

#[test]
fn bad_input_is_a_clear_one_line_error() -> Result<()> {
    let dir = ca_dir()?;
    let d = dir.path();
    let write = |name: &str, text: &str| std::fs::write(d.join(name), text);
    write("bad-json.json", "{\"CN\": \"x\",\n \"hosts\": [}")?;
    write(
        "bad-type.json",
        r#"{"CN":"x","key":{"algo":"rsa","size":"2048"}}"#,
    )?;
    write(
        "bad-algo.json",
        r#"{"CN":"x","key":{"algo":"ed25519","size":256}}"#,
    )?;
    write(
        "bad-size.json",
        r#"{"CN":"x","key":{"algo":"rsa","size":1024}}"#,
    )?;
    write("bad-ca-expiry.json", r#"{"CN":"x","ca":{"expiry":"10y"}}"#)?;
    write(
        "bad-usage.json",
        r#"{"signing":{"profiles":{"p":{"usages":["signing","clientauth"],"expiry":"1h"}}}}"#,
    )?;
    write(
        "bad-expiry.json",
        r#"{"signing":{"profiles":{"p":{"usages":["signing"],"expiry":"1 year"}}}}"#,
    )?;
    write(
        "other-key.pem",
        &pki::PrivateKey::generate(pki::KeyAlgorithm::EcdsaP256)?.to_pem(),
    )?;
    write(
        "garbage-key.pem",
        "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
    )?;

    let cases: &[(&[&str], i32, &[&str])] = &[
        (
            &["gencert", "-initca", "bad-json.json"],
            1,
            &["bad-json.json", "invalid JSON", "line 2"],
        ),
        (
            &["gencert", "-initca", "bad-type.json"],
            1,
            &["bad-type.json", "`key.size`", "expected a number"],
        ),
        (
            &["gencert", "-initca", "bad-algo.json"],
            1,
            &["`key.algo`", "\"ed25519\""],
        ),
        (
            &["gencert", "-initca", "bad-size.json"],
            1,
            &["`key.size`", "1024"],
        ),
        (
            &["gencert", "-initca", "bad-ca-expiry.json"],
            1,
            &["`ca.expiry`", "\"10y\""],
        ),
        (
            &["gencert", "-initca", "missing.json"],
            1,
            &["missing.json"],
        ),
        (
            &[
                "gencert",
                "-ca",
                "ca.pem",
                "-ca-key",
                "ca-key.pem",
                "-config",
                "bad-usage.json",
                "-profile",
                "p",
                "csr.json",
            ],
            1,
            &[
                "`signing.profiles.p.usages[1]`",
                "\"clientauth\"",
                "\"client auth\"",
            ],
        ),
        (
            &[
                "gencert",
                "-ca",
                "ca.pem",
                "-ca-key",
                "ca-key.pem",
                "-config",
                "bad-expiry.json",
                "-profile",
                "p",
                "csr.json",
            ],
            1,
            &["`signing.profiles.p.expiry`", "\"1 year\""],
        ),
        (
            // The profile mistake cfssl masks (user-needs.md §3): named, with the defined ones.
            &[
                "gencert",
                "-ca=ca.pem",
                "-ca-key=ca-key.pem",
                "-config=config.json",
                "-profile=kubernetes",
                "csr.json",
            ],
            1,
            &[
                "profile \"kubernetes\" is not defined in config.json",
                "\"client\", \"server\"",
            ],
        ),
        (
            &[
                "gencert",
                "-ca",
                "ca.pem",
                "-ca-key",
                "other-key.pem",
                "csr.json",
            ],
            1,
            &["other-key.pem does not match", "ca.pem"],
        ),
        (
            &[
                "gencert",
                "-ca",
                "ca.pem",
                "-ca-key",
                "garbage-key.pem",
                "csr.json",
            ],
            1,
            &["garbage-key.pem"],
        ),
        (
            &[
                "gencert", "-ca", "ca.pem", "-ca-key", "nope.pem", "csr.json",
            ],
            1,
            &["nope.pem"],
        ),
        (
            &[
                "gencert",
                "-ca",
                "ca-key.pem",
                "-ca-key",
                "ca-key.pem",
                "csr.json",
            ],
            1,
            &["ca-key.pem", "CERTIFICATE"],
        ),
        (&["gencert", "-ca", "ca.pem", "csr.json"], 64, &["-ca-key"]),
        (
            &[
                "front-proxy",
                "--dir",
                "x",
                "--key-algo",
                "rsa",
                "--key-size",
                "1024",
            ],
            64,
            &["--key-size", "1024"],
        ),
        (
            &["init", "--dir", "x", "--expiry", "1y"],
            64,
            &["--expiry", "\"1y\""],
        ),
        (
            &["init", "--dir", "x", "--server", "http://127.0.0.1:6443"],
            64,
            &["--server", "https://"],
        ),
        (
            &["certinfo", "-cert", "csr.json"],
            1,
            &["csr.json", "no CERTIFICATE block"],
        ),
    ];
    for (args, code, needles) in cases {
        let ran = ka(d).args(*args).run()?;
        assert_one_line_error(&ran, *code, needles);
    }
    // Usage errors from clap itself (unknown flag) exit 64 too.
    let ran = ka(d).args(["gencert", "-frobnicate", "csr.json"]).run()?;
    assert_eq!(ran.code, Some(64), "{ran}");
    // Nothing was written by the failures.
    assert!(!d.join("x").exists());
    Ok(())
}

#[test]
fn cfssljson_rejects_empty_and_failed_input_clearly() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    // `cfssl gencert … | cfssljson -bare x` after gencert failed: cfssljson only says
    // "unexpected end of JSON input"; we say what probably happened.
    let ran = ka(d).args(["cfssljson", "-bare", "x"]).stdin("").run()?;
    assert_one_line_error(&ran, 1, &["empty input", "the command before it failed"]);
    let ran = ka(d)
        .args(["cfssljson", "x"])
        .stdin(r#"{"success":false,"result":null,"errors":[{"code":5100,"message":"Invalid policy: no key usage available"}]}"#)
        .run()?;
    assert_one_line_error(&ran, 1, &["no key usage available"]);
    assert!(std::fs::read_dir(d)?.next().is_none(), "no files written");
    Ok(())
}

#[test]
fn hostname_overrides_hosts_and_stdin_works() -> Result<()> {
    let dir = ca_dir()?;
    let d = dir.path();
    let csr = std::fs::read_to_string(d.join("csr.json"))?;
    ka(d)
        .args([
            "gencert",
            "-ca=ca.pem",
            "-ca-key=ca-key.pem",
            "-config=config.json",
            "-profile=server",
            "-hostname=metrics.kube-system.svc,10.0.0.7,localhost",
            "--bare",
            "server",
            "-",
        ])
        .stdin(csr)
        .ok()?;
    let info: serde_json::Value =
        serde_json::from_str(&ka(d).args(["certinfo", "-cert", "server.pem"]).ok()?.stdout)?;
    assert_eq!(
        info["sans"],
        serde_json::json!(["metrics.kube-system.svc", "localhost", "10.0.0.7"])
    );
    assert_eq!(info["ext_key_usages"], serde_json::json!(["server auth"]));
    assert_eq!(info["subject"]["common_name"], "svc");
    // Without -hostname the CSR's hosts are used, and the default profile has both usages.
    ka(d)
        .args([
            "gencert",
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.pem",
            "--bare",
            "plain",
            "csr.json",
        ])
        .ok()?;
    let text = tools::openssl_x509_text(&d.join("plain.pem"))?;
    assert!(text.contains("DNS:svc.ns.svc"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    tools::openssl_verify(&d.join("ca.pem"), &d.join("server.pem"))?;
    Ok(())
}

#[test]
fn front_proxy_writes_cfssl_files_and_prints_flags() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ran = ka(d).args(["front-proxy", "--dir", "pki"]).ok()?;
    let pki_dir = d.join("pki").canonicalize()?;
    for f in [
        "front-proxy-ca.pem",
        "front-proxy-ca-key.pem",
        "front-proxy-ca.csr",
        "front-proxy-client.pem",
        "front-proxy-client-key.pem",
        "front-proxy-client.csr",
    ] {
        assert!(pki_dir.join(f).is_file(), "{f}");
    }
    let p = |f: &str| pki_dir.join(f).display().to_string();
    let want = [
        format!("--requestheader-client-ca-file={}", p("front-proxy-ca.pem")),
        "--requestheader-allowed-names=front-proxy-client".to_string(),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
        "--requestheader-group-headers=X-Remote-Group".to_string(),
        "--requestheader-username-headers=X-Remote-User".to_string(),
        format!("--proxy-client-cert-file={}", p("front-proxy-client.pem")),
        format!(
            "--proxy-client-key-file={}",
            p("front-proxy-client-key.pem")
        ),
    ];
    assert_eq!(ran.stdout.lines().collect::<Vec<_>>(), want, "{ran}");
    assert!(ran.stderr.contains("--enable-aggregator-routing"), "{ran}");

    let client = pki_dir.join("front-proxy-client.pem");
    tools::openssl_verify(&pki_dir.join("front-proxy-ca.pem"), &client)?;
    let text = tools::openssl_x509_text(&client)?;
    assert!(text.contains("Subject: CN = front-proxy-client"), "{text}");
    assert!(
        text.contains("Issuer: CN = Kubernetes-front-proxy CA"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(
        text.contains("Public-Key: (2048 bit)"),
        "RSA 2048 by default: {text}"
    );
    let key = std::fs::read_to_string(pki_dir.join("front-proxy-client-key.pem"))?;
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    // The printed flags pass our own check.
    let check = Cmd::new(KA)
        .args(["pki", "check"])
        .args(
            ran.stdout
                .lines()
                .filter(|l| !l.contains("-headers") && !l.contains("-prefix")),
        )
        .run()?;
    assert_eq!(check.code, Some(0), "{check}");

    // Re-running keeps every key; a new CN re-issues the client certificate for the same key.
    let again = ka(d).args(["front-proxy", "--dir", "pki"]).ok()?;
    assert!(!again.stderr.contains("created"), "{again}");
    let renamed = ka(d)
        .args(["front-proxy", "--dir", "pki", "--client-cn", "aggregator"])
        .ok()?;
    assert!(
        renamed
            .stdout
            .contains("--requestheader-allowed-names=aggregator"),
        "{renamed}"
    );
    assert!(renamed.stderr.contains("renewed"), "{renamed}");
    assert_eq!(
        std::fs::read_to_string(pki_dir.join("front-proxy-client-key.pem"))?,
        key
    );
    let text = tools::openssl_x509_text(&client)?;
    assert!(text.contains("Subject: CN = aggregator"), "{text}");
    Ok(())
}

/// A base64 `*-data` member of the kubeconfig, decoded with `openssl base64`.
fn kubeconfig_field(kubeconfig: &str, field: &str) -> Result<String> {
    let line = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{field}: ")))
        .with_context(|| format!("{field} not in kubeconfig"))?;
    Ok(tools::openssl()
        .args(["base64", "-d", "-A"])
        .stdin(line.to_string())
        .ok()?
        .stdout)
}

#[test]
fn init_writes_everything_serve_needs_and_is_idempotent() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let first = ka(d)
        .args([
            "init",
            "--dir",
            "pki",
            "--hostname",
            "agg.example,10.9.8.7",
            "--key-algo",
            "ecdsa",
        ])
        .ok()?;
    let pki_dir = d.join("pki");
    let files = [
        "ca.pem",
        "ca-key.pem",
        "admin.pem",
        "admin-key.pem",
        "aggregator.pem",
        "aggregator-key.pem",
        "front-proxy-ca.pem",
        "front-proxy-ca-key.pem",
        "front-proxy-client.pem",
        "front-proxy-client-key.pem",
        "admin.kubeconfig",
    ];
    for f in files {
        assert!(pki_dir.join(f).is_file(), "{f}: {first}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        for f in [
            "ca-key.pem",
            "admin-key.pem",
            "front-proxy-client-key.pem",
            "admin.kubeconfig",
        ] {
            let mode = std::fs::metadata(pki_dir.join(f))?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
    }
    let ca = pki_dir.join("ca.pem");
    for leaf in ["admin.pem", "aggregator.pem"] {
        tools::openssl_verify(&ca, &pki_dir.join(leaf))?;
    }
    tools::openssl_verify(
        &pki_dir.join("front-proxy-ca.pem"),
        &pki_dir.join("front-proxy-client.pem"),
    )?;

    let admin = tools::openssl_x509_text(&pki_dir.join("admin.pem"))?;
    assert!(
        admin.contains("Subject: O = system:masters, CN = admin"),
        "{admin}"
    );
    assert!(admin.contains("TLS Web Client Authentication"), "{admin}");
    let serving = tools::openssl_x509_text(&pki_dir.join("aggregator.pem"))?;
    assert!(
        serving.contains(
            "DNS:localhost, DNS:agg.example, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1, IP Address:10.9.8.7"
        ),
        "{serving}"
    );
    assert!(
        serving.contains("TLS Web Server Authentication"),
        "{serving}"
    );

    let kubeconfig = std::fs::read_to_string(pki_dir.join("admin.kubeconfig"))?;
    assert!(
        kubeconfig.contains("server: \"https://127.0.0.1:6443\""),
        "{kubeconfig}"
    );
    assert_eq!(
        kubeconfig_field(&kubeconfig, "certificate-authority-data")?,
        std::fs::read_to_string(&ca)?
    );
    assert_eq!(
        kubeconfig_field(&kubeconfig, "client-certificate-data")?,
        std::fs::read_to_string(pki_dir.join("admin.pem"))?
    );
    assert_eq!(
        kubeconfig_field(&kubeconfig, "client-key-data")?,
        std::fs::read_to_string(pki_dir.join("admin-key.pem"))?
    );

    // The front-proxy CA is not the client CA, and everything else checks out.
    let check = Cmd::new(KA)
        .args([
            "pki",
            "check",
            "--ca",
            "front-proxy-ca.pem",
            "--cert",
            "front-proxy-client.pem",
        ])
        .args([
            "--key",
            "front-proxy-client-key.pem",
            "--client-ca",
            "ca.pem",
        ])
        .args(["--allowed-names", "front-proxy-client"])
        .cwd(&pki_dir)
        .run()?;
    assert_eq!(check.code, Some(0), "{check}");

    // Second run: nothing changes.
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(pki_dir.join(f)).unwrap_or_default())
        .collect();
    let second = ka(d)
        .args([
            "init",
            "--dir",
            "pki",
            "--hostname",
            "agg.example,10.9.8.7",
            "--key-algo",
            "ecdsa",
        ])
        .ok()?;
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(pki_dir.join(f)).unwrap_or_default())
        .collect();
    assert_eq!(before, after, "{second}");
    assert!(
        second.stderr.lines().all(|l| l.starts_with("kept: ")),
        "{second}"
    );

    // A different server: the serving certificate and kubeconfig change, keys do not.
    let third = ka(d)
        .args([
            "init",
            "--dir",
            "pki",
            "--server",
            "https://agg.internal:7443",
            "--key-algo",
            "ecdsa",
        ])
        .ok()?;
    assert!(third.stderr.contains("aggregator.pem"), "{third}");
    let serving = tools::openssl_x509_text(&pki_dir.join("aggregator.pem"))?;
    assert!(serving.contains("DNS:agg.internal"), "{serving}");
    for key in ["ca-key.pem", "aggregator-key.pem", "admin-key.pem"] {
        let i = files.iter().position(|f| *f == key).unwrap_or_default();
        assert_eq!(std::fs::read(pki_dir.join(key))?, before[i], "{key}");
    }

    // --force replaces keys.
    ka(d)
        .args(["init", "--dir", "pki", "--force", "--key-algo", "ecdsa"])
        .ok()?;
    let i = files
        .iter()
        .position(|f| *f == "ca-key.pem")
        .unwrap_or_default();
    assert_ne!(std::fs::read(pki_dir.join("ca-key.pem"))?, before[i]);
    tools::openssl_verify(&ca, &pki_dir.join("admin.pem"))?;
    Ok(())
}

#[test]
fn init_never_overwrites_an_unreadable_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::create_dir(d.join("pki"))?;
    std::fs::write(d.join("pki/admin-key.pem"), "precious but not PEM")?;
    let ran = ka(d)
        .args(["init", "--dir", "pki", "--key-algo", "ecdsa"])
        .run()?;
    assert_eq!(ran.code, Some(1), "{ran}");
    assert!(ran.stderr.contains("admin-key.pem"), "{ran}");
    assert_eq!(
        std::fs::read_to_string(d.join("pki/admin-key.pem"))?,
        "precious but not PEM"
    );
    Ok(())
}
