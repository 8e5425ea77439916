//! `kube-aggregator pki check`: one test per named problem, each on certificates made (with the
//! same `pki` crate the CLI uses) to have exactly that problem, plus a clean setup.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use pki::{CertRequest, CertificateAuthority, Issued, KeyAlgorithm, Usage};
use tools::{Cmd, Ran};

use testkit::tools;

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");
const DAY: Duration = Duration::from_secs(86_400);

/// A front-proxy setup on disk: CA, client cert and key, and a separate cluster client CA.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `front-proxy-ca.pem`, `front-proxy-client.pem` / `-key.pem` and `ca.pem`.
    fn new(
        ca: &CertificateAuthority,
        client: &Issued,
        cluster_ca: &CertificateAuthority,
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        std::fs::write(d.join("front-proxy-ca.pem"), ca.cert_pem())?;
        std::fs::write(d.join("front-proxy-client.pem"), &client.cert_pem)?;
        std::fs::write(d.join("front-proxy-client-key.pem"), &client.key_pem)?;
        std::fs::write(d.join("ca.pem"), cluster_ca.cert_pem())?;
        Ok(Setup { dir })
    }

    /// `pki check` with every input, cfssl-style single-dash flags and the default CN.
    fn check(&self) -> Result<Ran> {
        self.check_with(&[])
    }

    fn check_with(&self, extra: &[&str]) -> Result<Ran> {
        Cmd::new(KA)
            .args([
                "pki",
                "check",
                "-ca",
                "front-proxy-ca.pem",
                "-cert",
                "front-proxy-client.pem",
            ])
            .args(["-key", "front-proxy-client-key.pem", "-client-ca", "ca.pem"])
            .args(["-allowed-names", "front-proxy-client"])
            .args(extra)
            .cwd(self.dir.path())
            .run()
    }
}

fn root(cn: &str) -> Result<CertificateAuthority> {
    Ok(CertificateAuthority::new_root_with(
        &CertRequest::ca(cn).key(KeyAlgorithm::EcdsaP256),
    )?)
}

fn client_req() -> CertRequest {
    CertRequest::client("front-proxy-client", &[] as &[&str]).key(KeyAlgorithm::EcdsaP256)
}

/// The problem names `pki check` printed, one per line as `name: message`.
fn problem_names(ran: &Ran) -> Vec<String> {
    ran.stdout
        .lines()
        .filter_map(|l| l.split_once(": ").map(|(n, _)| n.to_string()))
        .collect()
}

/// Asserts exit 1 and exactly the given problems.
fn assert_problems(ran: &Ran, want: &[&str]) {
    assert_eq!(ran.code, Some(1), "{ran}");
    assert_eq!(problem_names(ran), want, "{ran}");
    assert!(ran.stderr.is_empty(), "{ran}");
}

#[test]
fn a_correct_setup_passes() -> Result<()> {
    let fp = root("front-proxy-ca")?;
    let setup = Setup::new(&fp, &fp.issue(&client_req())?, &root("kubernetes")?)?;
    let ran = setup.check()?;
    assert_eq!(ran.code, Some(0), "{ran}");
    assert_eq!(ran.stdout, "ok: no problems found\n");
    // kube-apiserver's flag names work as aliases.
    let ran = Cmd::new(KA)
        .args(["pki", "check"])
        .args(["--requestheader-client-ca-file", "front-proxy-ca.pem"])
        .args(["--proxy-client-cert-file", "front-proxy-client.pem"])
        .args(["--proxy-client-key-file", "front-proxy-client-key.pem"])
        .args([
            "--requestheader-allowed-names",
            "aggregator,front-proxy-client",
        ])
        .args(["--client-ca-file", "ca.pem"])
        .cwd(setup.dir.path())
        .run()?;
    assert_eq!(ran.code, Some(0), "{ran}");
    Ok(())
}

#[test]
fn chain_does_not_verify() -> Result<()> {
    // Signed by the cluster CA instead of the front-proxy CA: the classic wrong-CA mistake.
    let fp = root("front-proxy-ca")?;
    let cluster = root("kubernetes")?;
    let setup = Setup::new(&fp, &cluster.issue(&client_req())?, &cluster)?;
    let ran = setup.check()?;
    assert_problems(&ran, &["chain-does-not-verify"]);
    assert!(ran.stdout.contains("\"kubernetes\""), "{ran}");
    // openssl agrees.
    assert!(
        tools::openssl_verify(
            &setup.path("front-proxy-ca.pem"),
            &setup.path("front-proxy-client.pem")
        )
        .is_err()
    );
    Ok(())
}

#[test]
fn cn_not_in_allowed_names() -> Result<()> {
    let fp = root("front-proxy-ca")?;
    let client = fp.issue(
        &CertRequest::client("kubernetes-admin", &[] as &[&str]).key(KeyAlgorithm::EcdsaP256),
    )?;
    let setup = Setup::new(&fp, &client, &root("kubernetes")?)?;
    let ran = setup.check()?;
    assert_problems(&ran, &["cn-not-allowed"]);
    assert!(ran.stdout.contains("\"kubernetes-admin\""), "{ran}");
    // Empty allowed names accept any CN, as kube-apiserver does.
    let ran = Cmd::new(KA)
        .args([
            "pki",
            "check",
            "--ca",
            "front-proxy-ca.pem",
            "--cert",
            "front-proxy-client.pem",
        ])
        .cwd(setup.dir.path())
        .run()?;
    assert_eq!(ran.code, Some(0), "{ran}");
    Ok(())
}

#[test]
fn missing_client_auth_usage() -> Result<()> {
    let fp = root("front-proxy-ca")?;
    let client = fp.issue(&client_req().usages(&[
        Usage::DigitalSignature,
        Usage::KeyEncipherment,
        Usage::ServerAuth,
    ]))?;
    let setup = Setup::new(&fp, &client, &root("kubernetes")?)?;
    let ran = setup.check()?;
    assert_problems(&ran, &["missing-client-auth"]);
    // openssl agrees that the certificate is unfit for TLS client use.
    let openssl = tools::openssl()
        .args([
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            "front-proxy-ca.pem",
            "front-proxy-client.pem",
        ])
        .cwd(setup.dir.path())
        .run()?;
    assert!(!openssl.success(), "{openssl}");
    Ok(())
}

#[test]
fn expired() -> Result<()> {
    let fp = root("front-proxy-ca")?;
    let client = fp.issue(
        &client_req()
            .not_before(SystemTime::now() - 3 * DAY)
            .validity(DAY),
    )?;
    let setup = Setup::new(&fp, &client, &root("kubernetes")?)?;
    assert_problems(&setup.check()?, &["expired"]);
    Ok(())
}

#[test]
fn not_yet_valid() -> Result<()> {
    let fp = root("front-proxy-ca")?;
    let client = fp.issue(
        &client_req()
            .not_before(SystemTime::now() + 2 * DAY)
            .validity(365 * DAY),
    )?;
    let setup = Setup::new(&fp, &client, &root("kubernetes")?)?;
    assert_problems(&setup.check()?, &["not-yet-valid"]);
    Ok(())
}

#[test]
fn expires_within_the_warning_window() -> Result<()> {
    let fp = root("front-proxy-ca")?;
    let client = fp.issue(&client_req().validity(10 * DAY))?;
    let setup = Setup::new(&fp, &client, &root("kubernetes")?)?;
    let ran = setup.check()?;
    assert_problems(&ran, &["expires-soon"]);
    assert!(ran.stdout.contains("days left"), "{ran}");
    // A shorter window accepts it.
    let ran = setup.check_with(&["--expiry-warning-days", "5"])?;
    assert_eq!(ran.code, Some(0), "{ran}");
    Ok(())
}

#[test]
fn key_does_not_match_cert() -> Result<()> {
    let fp = root("front-proxy-ca")?;
    let client = fp.issue(&client_req())?;
    let other = fp.issue(&client_req())?;
    let setup = Setup::new(&fp, &client, &root("kubernetes")?)?;
    std::fs::write(setup.path("front-proxy-client-key.pem"), &other.key_pem)?;
    assert_problems(&setup.check()?, &["key-mismatch"]);
    Ok(())
}

#[test]
fn front_proxy_ca_also_used_as_client_ca() -> Result<()> {
    let shared = root("kubernetes")?;
    let setup = Setup::new(&shared, &shared.issue(&client_req())?, &shared)?;
    let ran = setup.check()?;
    assert_problems(&ran, &["ca-is-also-client-ca"]);
    // Also when the client CA file is a bundle that merely contains it.
    let bundle = format!("{}{}", root("other")?.cert_pem(), shared.cert_pem());
    std::fs::write(setup.path("ca.pem"), bundle)?;
    assert_problems(&setup.check()?, &["ca-is-also-client-ca"]);
    Ok(())
}

#[test]
fn expired_front_proxy_ca() -> Result<()> {
    let fp = CertificateAuthority::new_root_with(
        &CertRequest::ca("front-proxy-ca")
            .key(KeyAlgorithm::EcdsaP256)
            .not_before(SystemTime::now() - 10 * DAY)
            .validity(DAY),
    )?;
    let setup = Setup::new(&fp, &fp.issue(&client_req())?, &root("kubernetes")?)?;
    assert_problems(&setup.check()?, &["ca-expired"]);
    Ok(())
}

#[test]
fn several_problems_are_all_reported() -> Result<()> {
    let shared = root("kubernetes")?;
    let client = shared.issue(
        &CertRequest::client("admin", &["system:masters"])
            .key(KeyAlgorithm::EcdsaP256)
            .usages(Usage::SERVER)
            .not_before(SystemTime::now() - 3 * DAY)
            .validity(DAY),
    )?;
    let setup = Setup::new(&shared, &client, &shared)?;
    assert_problems(
        &setup.check()?,
        &[
            "cn-not-allowed",
            "missing-client-auth",
            "expired",
            "ca-is-also-client-ca",
        ],
    );
    Ok(())
}

#[test]
fn unreadable_inputs_are_one_line_errors() -> Result<()> {
    let fp = root("front-proxy-ca")?;
    let setup = Setup::new(&fp, &fp.issue(&client_req())?, &root("kubernetes")?)?;
    std::fs::write(setup.path("front-proxy-client-key.pem"), "garbage")?;
    let ran = setup.check()?;
    assert_eq!(ran.code, Some(1), "{ran}");
    assert!(ran.stdout.is_empty(), "{ran}");
    assert_eq!(ran.stderr.lines().count(), 1, "{ran}");
    assert!(ran.stderr.contains("no private key found"), "{ran}");
    let ran = Cmd::new(KA)
        .args([
            "pki",
            "check",
            "--ca",
            "missing.pem",
            "--cert",
            "front-proxy-client.pem",
        ])
        .cwd(setup.dir.path())
        .run()?;
    assert_eq!(ran.code, Some(1), "{ran}");
    assert!(ran.stderr.contains("missing.pem"), "{ran}");
    Ok(())
}
