//! `kube-aggregator pki`: a drop-in for the cfssl commands of the front-proxy guides
//! (`gencert`, `cfssljson`, `certinfo`), plus `front-proxy`, `init` and `check`. cfssl's
//! single-dash flags (`-initca`, `-ca-key=…`) are accepted: see [`normalize_cfssl_args`].
//!
//! Exit codes: 0 success, 1 a runtime failure or (for `check`) any problem found, 64 invalid
//! flags. Errors are one line on stderr.

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use pki::KeyAlgorithm;

/// Flags of `kube-aggregator pki`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Generate a key and certificate from a cfssl CSR JSON, printing cfssl's JSON
    /// (`cfssl gencert`).
    Gencert(GencertArgs),
    /// Write NAME.pem, NAME-key.pem and NAME.csr from gencert's JSON on stdin (`cfssljson`).
    Cfssljson(CfssljsonArgs),
    /// Print a certificate as JSON (`cfssl certinfo`, plus usages, CA flag and fingerprint).
    Certinfo(CertinfoArgs),
    /// Write the front-proxy CA and client certificate and print the kube-apiserver flags.
    FrontProxy(FrontProxyArgs),
    /// Write every certificate `kube-aggregator serve` needs, and an admin kubeconfig.
    Init(InitArgs),
    /// Check a front-proxy setup; report each problem by name and exit 1 if there is any.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct GencertArgs {
    /// Make a self-signed CA from the CSR (with --ca-key: re-make it for that existing key).
    #[arg(long)]
    initca: bool,
    /// CA certificate that signs.
    #[arg(long, value_name = "CA.pem")]
    ca: Option<PathBuf>,
    /// CA private key (PKCS#1, SEC1 or PKCS#8).
    #[arg(long = "ca-key", value_name = "CA-key.pem")]
    ca_key: Option<PathBuf>,
    /// cfssl signing config (signing.default, signing.profiles).
    #[arg(long, value_name = "CONFIG.json")]
    config: Option<PathBuf>,
    /// Profile of the config to sign with (default: signing.default).
    #[arg(long)]
    profile: Option<String>,
    /// Comma-separated hosts replacing the CSR's `hosts`.
    #[arg(long)]
    hostname: Option<String>,
    /// Write NAME.pem, NAME-key.pem, NAME.csr instead of printing JSON.
    #[arg(long, value_name = "NAME")]
    bare: Option<PathBuf>,
    /// The CSR JSON file (`-` for stdin).
    #[arg(value_name = "CSR.json")]
    csr: PathBuf,
}

#[derive(Debug, clap::Args)]
struct CfssljsonArgs {
    /// The input is gencert's JSON, not wrapped in cfssl's API envelope.
    #[arg(long)]
    bare: bool,
    /// Input file (`-` for stdin).
    #[arg(short = 'f', value_name = "FILE", default_value = "-")]
    file: PathBuf,
    /// Print the PEM blocks instead of writing files.
    #[arg(long)]
    stdout: bool,
    /// Base name of the files (may include a directory).
    #[arg(value_name = "NAME", default_value = "cert")]
    name: PathBuf,
}

#[derive(Debug, clap::Args)]
struct CertinfoArgs {
    /// Certificate file (PEM; the first certificate is shown).
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
}

#[derive(Debug, clap::Args)]
struct KeyFlags {
    /// Key algorithm for new keys: rsa or ecdsa.
    #[arg(long = "key-algo", default_value = "rsa")]
    key_algo: String,
    /// Key size: 2048/3072/4096 for rsa (default 2048), 256/384/521 for ecdsa (default 256).
    #[arg(long = "key-size")]
    key_size: Option<u64>,
    /// CA lifetime as a Go duration.
    #[arg(long = "ca-expiry", default_value = "87600h")]
    ca_expiry: String,
    /// Certificate lifetime as a Go duration.
    #[arg(long, default_value = "8760h")]
    expiry: String,
    /// Replace existing keys (by default keys are never overwritten).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, clap::Args)]
struct FrontProxyArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// CN of the front-proxy CA.
    #[arg(long = "ca-cn", default_value = pki::init::FRONT_PROXY_CA_CN)]
    ca_cn: String,
    /// CN of the proxy client certificate (goes into --requestheader-allowed-names).
    #[arg(long = "client-cn", default_value = pki::init::FRONT_PROXY_CLIENT_CN)]
    client_cn: String,
    #[command(flatten)]
    keys: KeyFlags,
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// Extra SANs for aggregator.pem (comma-separated), besides 127.0.0.1, ::1 and localhost.
    #[arg(long, value_delimiter = ',')]
    hostname: Vec<String>,
    /// API server URL for admin.kubeconfig (its host is added to aggregator.pem).
    #[arg(long, default_value = pki::init::DEFAULT_SERVER)]
    server: String,
    /// CN of the front-proxy client certificate.
    #[arg(long = "front-proxy-client-cn", default_value = pki::init::FRONT_PROXY_CLIENT_CN)]
    front_proxy_client_cn: String,
    #[command(flatten)]
    keys: KeyFlags,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The front-proxy CA bundle.
    #[arg(
        long,
        value_name = "FILE",
        visible_alias = "requestheader-client-ca-file"
    )]
    ca: PathBuf,
    /// The proxy client certificate (optionally followed by intermediates).
    #[arg(long, value_name = "FILE", visible_alias = "proxy-client-cert-file")]
    cert: PathBuf,
    /// The proxy client key.
    #[arg(long, value_name = "FILE", visible_alias = "proxy-client-key-file")]
    key: Option<PathBuf>,
    /// Allowed CNs (comma-separated); empty allows any CN, as in kube-apiserver.
    #[arg(
        long = "allowed-names",
        value_delimiter = ',',
        visible_alias = "requestheader-allowed-names"
    )]
    allowed_names: Vec<String>,
    /// The cluster's client CA, to catch the front-proxy CA being reused as it.
    #[arg(
        long = "client-ca",
        value_name = "FILE",
        visible_alias = "client-ca-file"
    )]
    client_ca: Option<PathBuf>,
    /// Report certificates that expire within this many days.
    #[arg(long = "expiry-warning-days", default_value_t = 30)]
    expiry_warning_days: u64,
}

/// How a subcommand failed.
enum Failure {
    /// Invalid flags (exit 64).
    Usage(String),
    /// Anything else (exit 1).
    Runtime(String),
}

impl From<pki::Error> for Failure {
    fn from(e: pki::Error) -> Self {
        Failure::Runtime(e.to_string())
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    let (name, result) = match args.command {
        PkiCommand::Gencert(a) => ("gencert", gencert(a)),
        PkiCommand::Cfssljson(a) => ("cfssljson", cfssljson(a)),
        PkiCommand::Certinfo(a) => ("certinfo", certinfo(a)),
        PkiCommand::FrontProxy(a) => ("front-proxy", front_proxy(a)),
        PkiCommand::Init(a) => ("init", init(a)),
        PkiCommand::Check(a) => ("check", check(a)),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            stderr_line(&format!("kube-aggregator pki {name}: {msg}"));
            ExitCode::from(super::EXIT_USAGE)
        }
        Err(Failure::Runtime(msg)) => {
            stderr_line(&format!("kube-aggregator pki {name}: {msg}"));
            ExitCode::from(super::EXIT_FAILURE)
        }
    }
}

fn gencert(a: GencertArgs) -> Result<ExitCode, Failure> {
    let csr_what = display_input(&a.csr);
    let csr = pki::CsrJson::parse(&csr_what, &read_input(&a.csr)?)?;
    let issued = if a.initca {
        if a.ca.is_some() {
            return Err(Failure::Usage(
                "-initca makes a self-signed CA; drop -ca (use -ca-key alone to re-make a CA for an existing key)".into(),
            ));
        }
        let existing = match &a.ca_key {
            Some(p) => Some(pki::PrivateKey::from_pem(
                &p.display().to_string(),
                &read_input(p)?,
            )?),
            None => None,
        };
        let mut csr = csr;
        if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
            csr.hosts = h.split(',').map(str::to_string).collect();
        }
        pki::gencert_initca(&csr, existing)?
    } else {
        let (ca, ca_key) = match (&a.ca, &a.ca_key) {
            (Some(c), Some(k)) => (c, k),
            _ => {
                return Err(Failure::Usage(
                    "either -initca, or both -ca CA.pem and -ca-key CA-key.pem, are required"
                        .into(),
                ));
            }
        };
        let ca = pki::CertificateAuthority::from_files(ca, ca_key)?;
        let config = match &a.config {
            Some(p) => Some(pki::SigningConfig::parse(
                &p.display().to_string(),
                &read_input(p)?,
            )?),
            None => None,
        };
        pki::gencert(
            &ca,
            &csr,
            config.as_ref(),
            a.profile.as_deref(),
            a.hostname.as_deref(),
        )?
    };
    match &a.bare {
        Some(base) => {
            let written = pki::write_bare_files(base, &issued)?;
            for p in written {
                stderr_line(&format!("wrote {}", p.display()));
            }
        }
        None => stdout_write(&format!("{}\n", pki::gencert_json(&issued)))?,
    }
    Ok(ExitCode::SUCCESS)
}

fn cfssljson(a: CfssljsonArgs) -> Result<ExitCode, Failure> {
    let what = display_input(&a.file);
    let issued = pki::parse_cfssljson_input(&what, &read_input(&a.file)?, a.bare)?;
    if a.stdout {
        let mut out = String::new();
        for part in [&issued.cert_pem, &issued.key_pem, &issued.csr_pem] {
            out.push_str(part);
        }
        stdout_write(&out)?;
    } else {
        pki::write_bare_files(&a.name, &issued)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn certinfo(a: CertinfoArgs) -> Result<ExitCode, Failure> {
    let info = pki::certinfo(&a.cert.display().to_string(), &read_input(&a.cert)?)?;
    let json = serde_json::to_string_pretty(&info)
        .map_err(|e| Failure::Runtime(format!("encoding JSON: {e}")))?;
    stdout_write(&format!("{json}\n"))?;
    Ok(ExitCode::SUCCESS)
}

/// Validated key and lifetime flags.
struct KeySettings {
    key: KeyAlgorithm,
    ca_validity: Duration,
    cert_validity: Duration,
    force: bool,
}

fn key_settings(k: &KeyFlags) -> Result<KeySettings, Failure> {
    let size = k.key_size.unwrap_or(match k.key_algo.as_str() {
        "ecdsa" => 256,
        _ => 2048,
    });
    let key = KeyAlgorithm::from_cfssl(&k.key_algo, size)
        .map_err(|e| Failure::Usage(format!("--key-algo/--key-size: {e}")))?;
    let duration = |flag: &str, v: &str| -> Result<Duration, Failure> {
        match pki::parse_go_duration(v) {
            Ok(d) if d.is_zero() => Err(Failure::Usage(format!("{flag}: must be longer than 0"))),
            Ok(d) => Ok(d),
            Err(e) => Err(Failure::Usage(format!("{flag}: {e}"))),
        }
    };
    Ok(KeySettings {
        key,
        ca_validity: duration("--ca-expiry", &k.ca_expiry)?,
        cert_validity: duration("--expiry", &k.expiry)?,
        force: k.force,
    })
}

fn front_proxy_options(
    dir: &Path,
    k: &KeySettings,
) -> Result<pki::init::FrontProxyOptions, Failure> {
    let mut opts = pki::init::FrontProxyOptions::new(absolute(dir)?);
    opts.key = k.key;
    opts.ca_validity = k.ca_validity;
    opts.cert_validity = k.cert_validity;
    opts.force = k.force;
    Ok(opts)
}

fn front_proxy(a: FrontProxyArgs) -> Result<ExitCode, Failure> {
    let k = key_settings(&a.keys)?;
    if a.client_cn.is_empty() {
        return Err(Failure::Usage("--client-cn must not be empty".into()));
    }
    let mut opts = front_proxy_options(&a.dir, &k)?;
    opts.ca_common_name = a.ca_cn;
    opts.client_common_name = a.client_cn;
    let report = pki::init::front_proxy_dir(&opts)?;
    report_files(&report.files);
    let mut flags = report.kube_apiserver_flags().join("\n");
    flags.push('\n');
    stdout_write(&flags)?;
    stderr_line(
        "note: if the control plane cannot reach Service IPs (no kube-proxy on it), also set --enable-aggregator-routing=true so kube-apiserver dials endpoint IPs directly",
    );
    Ok(ExitCode::SUCCESS)
}

fn init(a: InitArgs) -> Result<ExitCode, Failure> {
    let k = key_settings(&a.keys)?;
    let mut opts = pki::init::InitOptions::new(absolute(&a.dir)?);
    opts.front_proxy = front_proxy_options(&a.dir, &k)?;
    opts.front_proxy.client_common_name = a.front_proxy_client_cn;
    opts.hostnames = a.hostname.into_iter().filter(|h| !h.is_empty()).collect();
    opts.server = a.server;
    if !opts.server.starts_with("https://") {
        return Err(Failure::Usage(format!(
            "--server {:?}: must be an https:// URL",
            opts.server
        )));
    }
    let report = pki::init::init_dir(&opts)?;
    report_files(&report.files);
    for p in &report.problems {
        stderr_line(&format!("warning: {}: {p}", p.name()));
    }
    stdout_write(&format!(
        "kubeconfig: {}\n",
        report.paths.kubeconfig.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn check(a: CheckArgs) -> Result<ExitCode, Failure> {
    let ca = read_input(&a.ca)?;
    let cert = read_input(&a.cert)?;
    let key = a.key.as_deref().map(read_input).transpose()?;
    let client_ca = a.client_ca.as_deref().map(read_input).transpose()?;
    let allowed: Vec<String> = a
        .allowed_names
        .into_iter()
        .filter(|n| !n.is_empty())
        .collect();
    let mut input = pki::check::CheckInput::new(&ca, &cert);
    input.client_key_pem = key.as_deref();
    input.allowed_names = &allowed;
    input.client_ca_pem = client_ca.as_deref();
    input.expiry_warning = Duration::from_secs(a.expiry_warning_days.saturating_mul(86_400));
    let problems = pki::check::check(&input).map_err(|e| {
        // Name the file: the library only knows the input's role.
        Failure::Runtime(format!(
            "{e} (--ca {}, --cert {})",
            a.ca.display(),
            a.cert.display()
        ))
    })?;
    if problems.is_empty() {
        stdout_write("ok: no problems found\n")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = String::new();
    for p in &problems {
        out.push_str(&format!("{}: {p}\n", p.name()));
    }
    stdout_write(&out)?;
    Ok(ExitCode::from(super::EXIT_FAILURE))
}

fn report_files(files: &[pki::init::FileReport]) {
    for f in files {
        match &f.reason {
            Some(r) => stderr_line(&format!("{}: {} ({r})", f.action, f.path.display())),
            None => stderr_line(&format!("{}: {}", f.action, f.path.display())),
        }
    }
}

fn absolute(dir: &Path) -> Result<PathBuf, Failure> {
    if dir.is_absolute() {
        return Ok(dir.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(dir))
        .map_err(|e| Failure::Runtime(format!("current directory: {e}")))
}

fn display_input(path: &Path) -> String {
    if path == Path::new("-") {
        "stdin".to_string()
    } else {
        path.display().to_string()
    }
}

/// Reads a file, or stdin for `-`.
fn read_input(path: &Path) -> Result<String, Failure> {
    if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| Failure::Runtime(format!("reading stdin: {e}")))?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))
}

/// Writes to stdout without panicking on a closed pipe.
fn stdout_write(s: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Runtime(format!("writing stdout: {e}")))
}

fn stderr_line(s: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

/// Rewrites cfssl's single-dash long flags (`-initca`, `-ca-key=…`) into clap's `--` form so that
/// commands copied from cfssl guides work unchanged. Only arguments after the `pki` subcommand
/// are touched (other subcommands keep clap's usual parsing), only words of two or more letters
/// after one dash (single-letter shorts such as `-f` stay), and nothing after a `--`.
///
/// ```text
/// kube-aggregator pki gencert -ca=ca.pem -ca-key ca-key.pem -profile=x csr.json
/// kube-aggregator pki gencert --ca=ca.pem --ca-key ca-key.pem --profile=x csr.json
/// ```
pub fn normalize_cfssl_args(args: Vec<OsString>) -> Vec<OsString> {
    // The subcommand is the first argument after the program name that is not a flag.
    let pki_at = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|i| i + 1);
    let Some(pki_at) = pki_at.filter(|i| args[*i] == "pki") else {
        return args;
    };
    let mut out = Vec::with_capacity(args.len());
    let mut rest_verbatim = false;
    for (i, arg) in args.into_iter().enumerate() {
        if i <= pki_at || rest_verbatim {
            out.push(arg);
            continue;
        }
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest_verbatim = true;
            out.push(arg);
            continue;
        }
        if is_single_dash_long_flag(s) {
            out.push(OsString::from(format!("-{s}")));
        } else {
            out.push(arg);
        }
    }
    out
}

/// `-word[=value]` with a word of at least two characters starting with a letter.
fn is_single_dash_long_flag(s: &str) -> bool {
    let Some(body) = s.strip_prefix('-') else {
        return false;
    };
    if body.starts_with('-') {
        return false;
    }
    let name = body.split('=').next().unwrap_or_default();
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_cfssl_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn cfssl_flags_after_pki_get_two_dashes() {
        assert_eq!(
            norm(&[
                "ka",
                "pki",
                "gencert",
                "-ca=ca.pem",
                "-ca-key",
                "ca-key.pem",
                "-config=c.json",
                "-profile=kubernetes",
                "-hostname",
                "a,b",
                "csr.json"
            ]),
            [
                "ka",
                "pki",
                "gencert",
                "--ca=ca.pem",
                "--ca-key",
                "ca-key.pem",
                "--config=c.json",
                "--profile=kubernetes",
                "--hostname",
                "a,b",
                "csr.json"
            ]
        );
        assert_eq!(
            norm(&["ka", "pki", "gencert", "-initca", "csr.json"]),
            ["ka", "pki", "gencert", "--initca", "csr.json"]
        );
        assert_eq!(
            norm(&["ka", "pki", "cfssljson", "-bare", "ca", "-f", "-"]),
            ["ka", "pki", "cfssljson", "--bare", "ca", "-f", "-"]
        );
    }

    #[test]
    fn leaves_other_arguments_alone() {
        // Other subcommands, values, stdin, double-dash flags and anything after `--`.
        assert_eq!(norm(&["ka", "serve", "-ca=x"]), ["ka", "serve", "-ca=x"]);
        assert_eq!(
            norm(&[
                "ka", "pki", "check", "--ca", "x", "-", "-h", "--", "-initca"
            ]),
            [
                "ka", "pki", "check", "--ca", "x", "-", "-h", "--", "-initca"
            ]
        );
        assert_eq!(norm(&["ka"]), ["ka"]);
        assert_eq!(norm(&["ka", "pki"]), ["ka", "pki"]);
    }
}
