//! The seed's cfssl flow run through `kube-aggregator pki`, checked with the real openssl and the
//! real cfssl/cfssljson (Debian `golang-cfssl`): our output must be accepted by cfssl and cfssl's
//! by us.

use std::path::Path;

use anyhow::{Context, Result, bail};
use tools::Cmd;

use testkit::tools;

const KA: &str = env!("CARGO_BIN_EXE_kube-aggregator");

/// The CSR and config files of the cfssl front-proxy guides (user-needs.md §3).
const CA_CSR: &str = r#"{
  "CN": "Kubernetes-front-proxy CA",
  "key": {"algo": "rsa", "size": 2048},
  "names": [{"C": "CN", "ST": "BeiJing", "L": "BeiJing", "O": "k8s", "OU": "System"}],
  "ca": {"expiry": "876000h"}
}"#;
const CA_CONFIG: &str = r#"{
  "signing": {
    "default": {"expiry": "87600h"},
    "profiles": {
      "kubernetes-front-proxy": {
        "usages": ["signing", "key encipherment", "client auth"],
        "expiry": "876000h"
      }
    }
  }
}"#;
const CLIENT_CSR: &str = r#"{
  "CN": "front-proxy-client",
  "hosts": [],
  "key": {"algo": "rsa", "size": 2048}
}"#;

/// 876000h in seconds.
const HUNDRED_YEARS: u64 = 876_000 * 3600;

fn ka() -> Cmd {
    Cmd::new(KA).arg("pki")
}

fn write_seed_files(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("front-proxy-ca-csr.json"), CA_CSR)?;
    std::fs::write(dir.join("ca-config.json"), CA_CONFIG)?;
    std::fs::write(dir.join("front-proxy-client-csr.json"), CLIENT_CSR)?;
    Ok(())
}

/// `A | B` where both sides are commands: A's stdout becomes B's stdin.
fn pipe(a: Cmd, b: Cmd) -> Result<()> {
    let first = a.ok()?;
    b.stdin(first.stdout).ok()?;
    Ok(())
}

/// `openssl x509 -checkend SECONDS`: whether the certificate is still valid that far ahead.
fn valid_for(cert: &Path, secs: u64) -> Result<bool> {
    let ran = tools::openssl()
        .args(["x509", "-noout", "-checkend", &secs.to_string(), "-in"])
        .arg(cert)
        .run()?;
    match ran.code {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!("{ran}"),
    }
}

fn first_line(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// The seed's exact two commands with `cfssl` replaced by `kube-aggregator pki`, including the
/// `cfssljson -bare` step, then verified with openssl.
#[test]
fn seed_flow_through_our_cli_verifies_with_openssl() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    write_seed_files(d)?;

    // cfssl gencert -initca front-proxy-ca-csr.json | cfssljson -bare front-proxy-ca
    pipe(
        ka().args(["gencert", "-initca", "front-proxy-ca-csr.json"])
            .cwd(d),
        ka().args(["cfssljson", "-bare", "front-proxy-ca"]).cwd(d),
    )?;
    // cfssl gencert -ca=… -ca-key=… -config=… -profile=… csr.json | cfssljson -bare front-proxy-client
    pipe(
        ka().args([
            "gencert",
            "-ca=front-proxy-ca.pem",
            "-ca-key=front-proxy-ca-key.pem",
            "-config=ca-config.json",
            "-profile=kubernetes-front-proxy",
            "front-proxy-client-csr.json",
        ])
        .cwd(d),
        ka().args(["cfssljson", "-bare", "front-proxy-client"])
            .cwd(d),
    )?;

    for f in [
        "front-proxy-ca.pem",
        "front-proxy-ca-key.pem",
        "front-proxy-ca.csr",
        "front-proxy-client.pem",
        "front-proxy-client-key.pem",
        "front-proxy-client.csr",
    ] {
        assert!(d.join(f).is_file(), "{f} missing");
    }
    assert_eq!(
        first_line(&d.join("front-proxy-ca-key.pem"))?,
        "-----BEGIN RSA PRIVATE KEY-----"
    );
    assert_eq!(
        first_line(&d.join("front-proxy-client-key.pem"))?,
        "-----BEGIN RSA PRIVATE KEY-----"
    );
    assert_eq!(
        first_line(&d.join("front-proxy-client.csr"))?,
        "-----BEGIN CERTIFICATE REQUEST-----"
    );

    let ca = d.join("front-proxy-ca.pem");
    let client = d.join("front-proxy-client.pem");
    tools::openssl_verify(&ca, &client)?;

    let text = tools::openssl_x509_text(&client)?;
    assert!(text.contains("Subject: CN = front-proxy-client"), "{text}");
    assert!(
        text.contains("Issuer: C = CN, ST = BeiJing, L = BeiJing, O = k8s, OU = System, CN = Kubernetes-front-proxy CA"),
        "{text}"
    );
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(!text.contains("TLS Web Server Authentication"), "{text}");
    assert!(
        text.contains("Digital Signature, Key Encipherment"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("Public-Key: (2048 bit)"), "{text}");
    assert!(text.contains("sha256WithRSAEncryption"), "{text}");

    let ca_text = tools::openssl_x509_text(&ca)?;
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");

    // ~100 years: valid 876000h minus a day from now, not 876000h plus a day.
    for cert in [&ca, &client] {
        assert!(
            valid_for(cert, HUNDRED_YEARS - 86_400)?,
            "{} too short",
            cert.display()
        );
        assert!(
            !valid_for(cert, HUNDRED_YEARS + 86_400)?,
            "{} too long",
            cert.display()
        );
    }

    // The keys and CSRs are well-formed for openssl too.
    tools::openssl()
        .args(["rsa", "-check", "-noout", "-in"])
        .arg(d.join("front-proxy-client-key.pem"))
        .ok()?;
    tools::openssl()
        .args(["req", "-verify", "-noout", "-in"])
        .arg(d.join("front-proxy-client.csr"))
        .ok()?;
    Ok(())
}

/// `cfssl certinfo` reads our certificates and agrees with our own `certinfo` on the fields
/// both print.
#[test]
fn cfssl_certinfo_reads_our_certs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    write_seed_files(d)?;
    pipe(
        ka().args(["gencert", "-initca", "front-proxy-ca-csr.json"])
            .cwd(d),
        ka().args(["cfssljson", "-bare", "front-proxy-ca"]).cwd(d),
    )?;
    ka().args([
        "gencert",
        "-ca",
        "front-proxy-ca.pem",
        "-ca-key",
        "front-proxy-ca-key.pem",
        "-config",
        "ca-config.json",
        "-profile",
        "kubernetes-front-proxy",
        "--bare",
        "front-proxy-client",
        "front-proxy-client-csr.json",
    ])
    .cwd(d)
    .ok()?;

    for cert in ["front-proxy-ca.pem", "front-proxy-client.pem"] {
        let theirs: serde_json::Value = serde_json::from_str(
            &tools::cfssl()
                .args(["certinfo", "-cert", cert])
                .cwd(d)
                .ok()?
                .stdout,
        )?;
        let ours: serde_json::Value =
            serde_json::from_str(&ka().args(["certinfo", "-cert", cert]).cwd(d).ok()?.stdout)?;
        for field in [
            "serial_number",
            "not_before",
            "not_after",
            "sigalg",
            "authority_key_id",
            "subject_key_id",
            "pem",
        ] {
            assert_eq!(theirs[field], ours[field], "{cert}: {field}");
        }
        assert_eq!(theirs["subject"], ours["subject"], "{cert}: subject");
        assert_eq!(theirs["issuer"], ours["issuer"], "{cert}: issuer");
    }
    Ok(())
}

/// The real `cfssljson -bare` accepts our gencert JSON and writes exactly its members.
#[test]
fn real_cfssljson_accepts_our_json() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    write_seed_files(d)?;
    let json = ka()
        .args(["gencert", "-initca", "front-proxy-ca-csr.json"])
        .cwd(d)
        .ok()?
        .stdout;
    let parsed: serde_json::Value = serde_json::from_str(&json)?;
    tools::cfssljson()
        .args(["-bare", "front-proxy-ca"])
        .cwd(d)
        .stdin(json.clone())
        .ok()?;
    for (member, file) in [
        ("cert", "front-proxy-ca.pem"),
        ("key", "front-proxy-ca-key.pem"),
        ("csr", "front-proxy-ca.csr"),
    ] {
        let written = std::fs::read_to_string(d.join(file))?;
        assert_eq!(Some(written.as_str()), parsed[member].as_str(), "{file}");
    }
    Ok(())
}

/// We sign with a CA made by real cfssl (RSA), and the result verifies against it.
#[test]
fn we_sign_with_a_ca_made_by_cfssl() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    write_seed_files(d)?;
    pipe(
        tools::cfssl()
            .args(["gencert", "-initca", "front-proxy-ca-csr.json"])
            .cwd(d),
        tools::cfssljson().args(["-bare", "front-proxy-ca"]).cwd(d),
    )?;
    pipe(
        ka().args([
            "gencert",
            "-ca=front-proxy-ca.pem",
            "-ca-key=front-proxy-ca-key.pem",
            "-config=ca-config.json",
            "-profile=kubernetes-front-proxy",
            "front-proxy-client-csr.json",
        ])
        .cwd(d),
        tools::cfssljson()
            .args(["-bare", "front-proxy-client"])
            .cwd(d),
    )?;
    tools::openssl_verify(
        &d.join("front-proxy-ca.pem"),
        &d.join("front-proxy-client.pem"),
    )?;
    // AuthorityKeyId is cfssl's SubjectKeyId, as cfssl itself would have written it.
    let ca: serde_json::Value = serde_json::from_str(
        &tools::cfssl()
            .args(["certinfo", "-cert", "front-proxy-ca.pem"])
            .cwd(d)
            .ok()?
            .stdout,
    )?;
    let leaf: serde_json::Value = serde_json::from_str(
        &tools::cfssl()
            .args(["certinfo", "-cert", "front-proxy-client.pem"])
            .cwd(d)
            .ok()?
            .stdout,
    )?;
    assert_eq!(leaf["authority_key_id"], ca["subject_key_id"]);
    assert_eq!(leaf["issuer"], ca["subject"]);
    Ok(())
}

/// Real cfssl signs with a CA made by us, with an ECDSA P-384 key (our `EC PRIVATE KEY` must be
/// what Go's `x509.ParseECPrivateKey` reads), and with our RSA CA.
#[test]
fn cfssl_signs_with_a_ca_made_by_us() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    write_seed_files(d)?;
    std::fs::write(
        d.join("ec-ca-csr.json"),
        r#"{"CN":"ec front-proxy CA","key":{"algo":"ecdsa","size":384},"ca":{"expiry":"8760h"}}"#,
    )?;
    pipe(
        ka().args(["gencert", "-initca", "ec-ca-csr.json"]).cwd(d),
        ka().args(["cfssljson", "-bare", "ec-ca"]).cwd(d),
    )?;
    pipe(
        ka().args(["gencert", "-initca", "front-proxy-ca-csr.json"])
            .cwd(d),
        ka().args(["cfssljson", "-bare", "rsa-ca"]).cwd(d),
    )?;
    assert_eq!(
        first_line(&d.join("ec-ca-key.pem"))?,
        "-----BEGIN EC PRIVATE KEY-----"
    );
    for ca in ["ec-ca", "rsa-ca"] {
        pipe(
            tools::cfssl()
                .args([
                    "gencert",
                    &format!("-ca={ca}.pem"),
                    &format!("-ca-key={ca}-key.pem"),
                    "-config=ca-config.json",
                    "-profile=kubernetes-front-proxy",
                    "front-proxy-client-csr.json",
                ])
                .cwd(d),
            tools::cfssljson()
                .args(["-bare", &format!("{ca}-client")])
                .cwd(d),
        )?;
        tools::openssl_verify(
            &d.join(format!("{ca}.pem")),
            &d.join(format!("{ca}-client.pem")),
        )?;
    }
    let text = tools::openssl_x509_text(&d.join("ec-ca-client.pem"))?;
    // cfssl picks SHA-384 for a P-384 CA key, as we do.
    assert!(text.contains("ecdsa-with-SHA384"), "{text}");
    Ok(())
}

/// Keys in PKCS#1, SEC1 and PKCS#8 made by openssl are read (`-initca -ca-key` re-makes a CA
/// for an existing key), and the certificate carries that key.
#[test]
fn existing_keys_in_every_format_are_read() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("csr.json"), r#"{"CN":"renewed CA"}"#)?;
    std::fs::write(d.join("leaf.json"), r#"{"CN":"leaf"}"#)?;
    let keys = [
        (
            "pkcs8-rsa.pem",
            vec![
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
        ),
        (
            "pkcs8-ec.pem",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ],
        ),
        (
            "pkcs8-p521.pem",
            vec![
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-521",
            ],
        ),
    ];
    for (file, args) in &keys {
        tools::openssl()
            .args(args)
            .args(["-out", file])
            .cwd(d)
            .ok()?;
    }
    // PKCS#1 and SEC1 from the PKCS#8 ones.
    tools::openssl()
        .args([
            "rsa",
            "-traditional",
            "-in",
            "pkcs8-rsa.pem",
            "-out",
            "pkcs1.pem",
        ])
        .cwd(d)
        .ok()?;
    tools::openssl()
        .args(["ec", "-in", "pkcs8-ec.pem", "-out", "sec1.pem"])
        .cwd(d)
        .ok()?;
    assert_eq!(
        first_line(&d.join("pkcs1.pem"))?,
        "-----BEGIN RSA PRIVATE KEY-----"
    );
    assert_eq!(
        first_line(&d.join("sec1.pem"))?,
        "-----BEGIN EC PRIVATE KEY-----"
    );
    assert_eq!(
        first_line(&d.join("pkcs8-ec.pem"))?,
        "-----BEGIN PRIVATE KEY-----"
    );

    for key in [
        "pkcs1.pem",
        "sec1.pem",
        "pkcs8-rsa.pem",
        "pkcs8-ec.pem",
        "pkcs8-p521.pem",
    ] {
        let base = key.trim_end_matches(".pem");
        let out = ka()
            .args([
                "gencert",
                "-initca",
                "-ca-key",
                key,
                "--bare",
                &format!("{base}-ca"),
                "csr.json",
            ])
            .cwd(d)
            .ok()?;
        assert!(out.stdout.is_empty(), "{out}");
        // No new key is written when an existing one is used.
        assert!(!d.join(format!("{base}-ca-key.pem")).exists());
        let cert_pub = tools::openssl()
            .args([
                "x509",
                "-noout",
                "-pubkey",
                "-in",
                &format!("{base}-ca.pem"),
            ])
            .cwd(d)
            .ok()?
            .stdout;
        let key_pub = tools::openssl()
            .args(["pkey", "-pubout", "-in", key])
            .cwd(d)
            .ok()?
            .stdout;
        assert_eq!(cert_pub, key_pub, "{key}");
        // And the CA signs with it.
        ka().args([
            "gencert",
            "-ca",
            &format!("{base}-ca.pem"),
            "-ca-key",
            key,
            "--bare",
            &format!("{base}-leaf"),
            "leaf.json",
        ])
        .cwd(d)
        .ok()?;
        tools::openssl_verify(
            &d.join(format!("{base}-ca.pem")),
            &d.join(format!("{base}-leaf.pem")),
        )?;
    }
    Ok(())
}

/// Every key algorithm and size: the signature algorithm follows cfssl's `DefaultSigAlgo`, and
/// openssl accepts the result.
#[test]
fn every_key_algorithm_signs_like_cfssl() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let cases = [
        ("rsa", 2048, "sha256WithRSAEncryption"),
        ("rsa", 3072, "sha384WithRSAEncryption"),
        ("rsa", 4096, "sha512WithRSAEncryption"),
        ("ecdsa", 256, "ecdsa-with-SHA256"),
        ("ecdsa", 384, "ecdsa-with-SHA384"),
        ("ecdsa", 521, "ecdsa-with-SHA512"),
    ];
    for (algo, size, sigalg) in cases {
        let name = format!("{algo}{size}");
        std::fs::write(
            d.join(format!("{name}.json")),
            format!(r#"{{"CN":"{name}","key":{{"algo":"{algo}","size":{size}}}}}"#),
        )?;
        ka().args([
            "gencert",
            "-initca",
            "--bare",
            &name,
            &format!("{name}.json"),
        ])
        .cwd(d)
        .ok()?;
        let text = tools::openssl_x509_text(&d.join(format!("{name}.pem")))?;
        assert!(
            text.contains(&format!("Signature Algorithm: {sigalg}")),
            "{name}: {text}"
        );
        let key_block = if algo == "rsa" {
            "RSA PRIVATE KEY"
        } else {
            "EC PRIVATE KEY"
        };
        assert_eq!(
            first_line(&d.join(format!("{name}-key.pem")))?,
            format!("-----BEGIN {key_block}-----")
        );
        tools::openssl()
            .args([
                "pkey",
                "-check",
                "-noout",
                "-in",
                &format!("{name}-key.pem"),
            ])
            .cwd(d)
            .ok()?;
        tools::openssl_verify(
            &d.join(format!("{name}.pem")),
            &d.join(format!("{name}.pem")),
        )?;
    }
    Ok(())
}
