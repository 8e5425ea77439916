//! `pki init` and `pki front-proxy`: every certificate `kube-aggregator serve` needs on one
//! machine, written under fixed cfssl-style names and safe to run again. Keys are never replaced
//! without `force`; certificates are kept while they still fit (right CA, key, names, usages, and
//! not close to expiry) and re-issued for the same key otherwise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::ca::{self, CertRequest, CertificateAuthority};
use crate::cfssl::write_file_atomic;
use crate::check::{self, CheckInput, Problem};
use crate::error::{Error, Result};
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::usage::Usage;
use crate::x509::CertView;

/// CN of the front-proxy CA we make, as in the cfssl guides.
pub const FRONT_PROXY_CA_CN: &str = "Kubernetes-front-proxy CA";
/// CN of the proxy client certificate: kubeadm's, and what `--requestheader-allowed-names`
/// usually lists.
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";
/// CN of the cluster CA `init` makes.
pub const CLUSTER_CA_CN: &str = "kube-aggregator CA";
/// CN of the aggregator's serving certificate.
pub const AGGREGATOR_CN: &str = "kube-aggregator";
/// By default `init` points the kubeconfig here.
pub const DEFAULT_SERVER: &str = "https://127.0.0.1:6443";
/// By default CAs live 10 years (kubeadm's choice).
pub const DEFAULT_INIT_CA_VALIDITY: Duration = Duration::from_secs(87_600 * 3600);
/// By default certificates are renewed when less than this is left (or half their lifetime,
/// whichever is shorter).
pub const DEFAULT_RENEW_WITHIN: Duration = Duration::from_secs(30 * 86_400);

/// The file names `init` writes, which `serve`, `up` and the tests read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPaths {
    /// `ca.pem`: cluster CA (signs the serving and client certificates; `--client-ca-file`).
    pub ca_cert: PathBuf,
    /// `ca-key.pem`.
    pub ca_key: PathBuf,
    /// `admin.pem`: client certificate, CN `admin`, O `system:masters`.
    pub admin_cert: PathBuf,
    /// `admin-key.pem`.
    pub admin_key: PathBuf,
    /// `aggregator.pem`: serving certificate (127.0.0.1, ::1, localhost, plus hostnames).
    pub aggregator_cert: PathBuf,
    /// `aggregator-key.pem`.
    pub aggregator_key: PathBuf,
    /// `front-proxy-ca.pem` (`--requestheader-client-ca-file`).
    pub front_proxy_ca_cert: PathBuf,
    /// `front-proxy-ca-key.pem`.
    pub front_proxy_ca_key: PathBuf,
    /// `front-proxy-client.pem` (`--proxy-client-cert-file`).
    pub front_proxy_client_cert: PathBuf,
    /// `front-proxy-client-key.pem` (`--proxy-client-key-file`).
    pub front_proxy_client_key: PathBuf,
    /// `admin.kubeconfig`.
    pub kubeconfig: PathBuf,
}

impl InitPaths {
    /// The paths under `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        InitPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            admin_cert: dir.join("admin.pem"),
            admin_key: dir.join("admin-key.pem"),
            aggregator_cert: dir.join("aggregator.pem"),
            aggregator_key: dir.join("aggregator-key.pem"),
            front_proxy_ca_cert: dir.join("front-proxy-ca.pem"),
            front_proxy_ca_key: dir.join("front-proxy-ca-key.pem"),
            front_proxy_client_cert: dir.join("front-proxy-client.pem"),
            front_proxy_client_key: dir.join("front-proxy-client-key.pem"),
            kubeconfig: dir.join("admin.kubeconfig"),
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// It did not exist and was written.
    Created,
    /// It existed and was left alone.
    Kept,
    /// A certificate (or kubeconfig) re-issued for an existing key.
    Renewed,
    /// Overwritten because of `force`, or a certificate without its key.
    Replaced,
}

impl std::fmt::Display for FileAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FileAction::Created => "created",
            FileAction::Kept => "kept",
            FileAction::Renewed => "renewed",
            FileAction::Replaced => "replaced",
        })
    }
}

/// One file and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// What happened.
    pub action: FileAction,
    /// Why, when it was renewed or replaced (e.g. `expires in 3 days`).
    pub reason: Option<String>,
}

/// Options shared by [`init_dir`] and [`front_proxy_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontProxyOptions {
    /// Where to write. Created if missing.
    pub dir: PathBuf,
    /// CN of the front-proxy CA. By default [`FRONT_PROXY_CA_CN`].
    pub ca_common_name: String,
    /// CN of the proxy client certificate. By default [`FRONT_PROXY_CLIENT_CN`].
    pub client_common_name: String,
    /// Key algorithm for every new key. By default RSA 2048.
    pub key: KeyAlgorithm,
    /// CA lifetime. By default 87600h (10 years).
    pub ca_validity: Duration,
    /// Certificate lifetime. By default 8760h (1 year).
    pub cert_validity: Duration,
    /// Renew certificates with less than this left. By default 30 days.
    pub renew_within: Duration,
    /// Replace existing keys too. By default `false`.
    pub force: bool,
}

impl FrontProxyOptions {
    /// The defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FrontProxyOptions {
            dir: dir.into(),
            ca_common_name: FRONT_PROXY_CA_CN.to_string(),
            client_common_name: FRONT_PROXY_CLIENT_CN.to_string(),
            key: KeyAlgorithm::default(),
            ca_validity: DEFAULT_INIT_CA_VALIDITY,
            cert_validity: ca::DEFAULT_VALIDITY,
            renew_within: DEFAULT_RENEW_WITHIN,
            force: false,
        }
    }
}

/// The front-proxy files and what happened to them.
#[derive(Debug, Clone)]
pub struct FrontProxyReport {
    /// `front-proxy-ca.pem`.
    pub ca_cert: PathBuf,
    /// `front-proxy-ca-key.pem`.
    pub ca_key: PathBuf,
    /// `front-proxy-client.pem`.
    pub client_cert: PathBuf,
    /// `front-proxy-client-key.pem`.
    pub client_key: PathBuf,
    /// The client certificate's CN (for `--requestheader-allowed-names`).
    pub client_common_name: String,
    /// Every file written or kept, including the `.csr` files.
    pub files: Vec<FileReport>,
}

impl FrontProxyReport {
    /// The kube-apiserver flags for this bundle, one per line, with the paths as given (pass an
    /// absolute `dir` to get absolute paths).
    pub fn kube_apiserver_flags(&self) -> Vec<String> {
        kube_apiserver_flags(
            &self.ca_cert,
            &self.client_cert,
            &self.client_key,
            &self.client_common_name,
        )
    }
}

/// The kube-apiserver flags of the aggregation layer (upstream-behaviour.md §7): the
/// requestheader CA and allowed name, the header names the aggregator always sends, and the
/// proxy client certificate.
pub fn kube_apiserver_flags(
    ca_cert: &Path,
    client_cert: &Path,
    client_key: &Path,
    allowed_name: &str,
) -> Vec<String> {
    vec![
        format!("--requestheader-client-ca-file={}", ca_cert.display()),
        format!("--requestheader-allowed-names={allowed_name}"),
        "--requestheader-extra-headers-prefix=X-Remote-Extra-".to_string(),
        "--requestheader-group-headers=X-Remote-Group".to_string(),
        "--requestheader-username-headers=X-Remote-User".to_string(),
        format!("--proxy-client-cert-file={}", client_cert.display()),
        format!("--proxy-client-key-file={}", client_key.display()),
    ]
}

/// Writes (or keeps) the front-proxy CA and client certificate under cfssl names:
/// `front-proxy-ca.pem`, `front-proxy-ca-key.pem`, `front-proxy-ca.csr`,
/// `front-proxy-client.pem`, `front-proxy-client-key.pem`, `front-proxy-client.csr`.
pub fn front_proxy_dir(opts: &FrontProxyOptions) -> Result<FrontProxyReport> {
    ensure_dir(&opts.dir)?;
    let mut files = Vec::new();
    let ca_req = CertRequest::ca(&opts.ca_common_name)
        .key(opts.key)
        .validity(opts.ca_validity);
    let ca = ensure_ca(&opts.dir, "front-proxy-ca", &ca_req, opts, &mut files)?;
    let client_req = CertRequest::client(&opts.client_common_name, &[] as &[&str])
        .key(opts.key)
        .validity(opts.cert_validity);
    ensure_leaf(
        &opts.dir,
        "front-proxy-client",
        &client_req,
        &ca,
        opts,
        &mut files,
    )?;
    Ok(FrontProxyReport {
        ca_cert: opts.dir.join("front-proxy-ca.pem"),
        ca_key: opts.dir.join("front-proxy-ca-key.pem"),
        client_cert: opts.dir.join("front-proxy-client.pem"),
        client_key: opts.dir.join("front-proxy-client-key.pem"),
        client_common_name: opts.client_common_name.clone(),
        files,
    })
}

/// Options of [`init_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// Directory, key algorithm, lifetimes, `force`, front-proxy CNs.
    pub front_proxy: FrontProxyOptions,
    /// Extra SANs for `aggregator.pem` besides 127.0.0.1, ::1, localhost and the host of
    /// `server`. By default none.
    pub hostnames: Vec<String>,
    /// The API server URL written into `admin.kubeconfig`. By default [`DEFAULT_SERVER`].
    pub server: String,
}

impl InitOptions {
    /// The defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        InitOptions {
            front_proxy: FrontProxyOptions::new(dir),
            hostnames: Vec::new(),
            server: DEFAULT_SERVER.to_string(),
        }
    }
}

/// What [`init_dir`] did.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The files, by role.
    pub paths: InitPaths,
    /// Every file written or kept.
    pub files: Vec<FileReport>,
    /// [`check::check`] of the result (the front-proxy client against the front-proxy CA, with
    /// `ca.pem` as the client CA); empty unless something is badly wrong.
    pub problems: Vec<Problem>,
}

/// Writes everything `kube-aggregator serve` needs into `opts.front_proxy.dir` (see
/// [`InitPaths`]). Idempotent: existing keys are reused unless `force`; certificates that
/// still fit are kept.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let mut opts = pki::init::InitOptions::new(dir.path());
/// opts.front_proxy.key = pki::KeyAlgorithm::EcdsaP256; // fast for the example
/// let first = pki::init::init_dir(&opts)?;
/// assert!(first.paths.kubeconfig.exists());
/// assert!(first.problems.is_empty());
/// let again = pki::init::init_dir(&opts)?;
/// assert!(again.files.iter().all(|f| f.action == pki::init::FileAction::Kept));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init_dir(opts: &InitOptions) -> Result<InitReport> {
    let fp = &opts.front_proxy;
    let server_host = server_host(&opts.server)?;
    ensure_dir(&fp.dir)?;
    let paths = InitPaths::in_dir(&fp.dir);
    let mut files = Vec::new();

    let ca_req = CertRequest::ca(CLUSTER_CA_CN)
        .key(fp.key)
        .validity(fp.ca_validity);
    let ca = ensure_ca(&fp.dir, "ca", &ca_req, fp, &mut files)?;

    let admin_req = CertRequest::client("admin", &["system:masters"])
        .key(fp.key)
        .validity(fp.cert_validity);
    ensure_leaf(&fp.dir, "admin", &admin_req, &ca, fp, &mut files)?;

    let mut hosts: Vec<String> = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
    for h in std::iter::once(server_host.as_str()).chain(opts.hostnames.iter().map(String::as_str))
    {
        let h = h.trim();
        if !h.is_empty() && !hosts.iter().any(|x| x == h) {
            hosts.push(h.to_string());
        }
    }
    let serving_req = CertRequest::server(AGGREGATOR_CN, &hosts)
        .key(fp.key)
        .validity(fp.cert_validity);
    ensure_leaf(&fp.dir, "aggregator", &serving_req, &ca, fp, &mut files)?;

    let front = front_proxy_dir(fp)?;
    files.extend(front.files);

    let kubeconfig = admin_kubeconfig(
        &opts.server,
        ca.cert_pem(),
        &ca::read_to_string(&paths.admin_cert)?,
        &ca::read_to_string(&paths.admin_key)?,
    );
    files.push(write_if_changed(&paths.kubeconfig, &kubeconfig, 0o600)?);

    let fp_ca = ca::read_to_string(&paths.front_proxy_ca_cert)?;
    let fp_cert = ca::read_to_string(&paths.front_proxy_client_cert)?;
    let fp_key = ca::read_to_string(&paths.front_proxy_client_key)?;
    let allowed = vec![fp.client_common_name.clone()];
    let mut input = CheckInput::new(&fp_ca, &fp_cert);
    input.client_key_pem = Some(&fp_key);
    input.allowed_names = &allowed;
    input.client_ca_pem = Some(ca.cert_pem());
    input.expiry_warning = Duration::ZERO;
    let problems = check::check(&input)?;

    Ok(InitReport {
        paths,
        files,
        problems,
    })
}

/// An admin kubeconfig with embedded CA, client certificate and key.
pub fn admin_kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    // A JSON string is a valid YAML scalar, whatever the URL contains.
    let server = serde_json::to_string(server).unwrap_or_default();
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: kube-aggregator\n\
         contexts:\n\
         - context:\n    cluster: kube-aggregator\n    user: admin\n  name: admin@kube-aggregator\n\
         current-context: admin@kube-aggregator\n\
         preferences: {{}}\n\
         users:\n\
         - name: admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = STANDARD.encode(ca_pem),
        cert = STANDARD.encode(cert_pem),
        key = STANDARD.encode(key_pem),
    )
}

/// The host of an `https://host[:port][/path]` URL, for the serving certificate's SANs.
fn server_host(server: &str) -> Result<String> {
    let bad = |m: &str| Error::Request(format!("--server {server:?}: {m}"));
    let rest = server
        .strip_prefix("https://")
        .ok_or_else(|| bad("must start with https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() || authority.contains('@') {
        return Err(bad("has no host"));
    }
    Ok(host.to_string())
}

fn ensure_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // The directory holds private keys.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

fn renew_threshold(validity: Duration, renew_within: Duration) -> i64 {
    let half = validity / 2;
    i64::try_from(renew_within.min(half).as_secs()).unwrap_or(i64::MAX)
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Loads the key at `path` if it exists; a key that exists but cannot be read is an error
/// (we never overwrite it).
fn existing_key(path: &Path, force: bool) -> Result<Option<PrivateKey>> {
    if force || !path.exists() {
        return Ok(None);
    }
    let text = ca::read_to_string(path)?;
    PrivateKey::from_pem(&path.display().to_string(), &text).map(Some)
}

fn ensure_ca(
    dir: &Path,
    base: &str,
    req: &CertRequest,
    opts: &FrontProxyOptions,
    files: &mut Vec<FileReport>,
) -> Result<CertificateAuthority> {
    let cert_path = dir.join(format!("{base}.pem"));
    let key_path = dir.join(format!("{base}-key.pem"));
    let csr_path = dir.join(format!("{base}.csr"));
    match existing_key(&key_path, opts.force)? {
        Some(key) => {
            let mut fitting = None;
            let reason = match std::fs::read_to_string(&cert_path) {
                Err(_) => Some("certificate missing".to_string()),
                Ok(text) => match CertificateAuthority::from_pem_named(
                    &cert_path.display().to_string(),
                    &text,
                    &key_path.display().to_string(),
                    &key.to_pem(),
                ) {
                    Err(e) => Some(e.to_string()),
                    Ok(existing) => {
                        let view = CertView::from_der("CA", existing.cert_der())?;
                        let threshold = renew_threshold(req.validity, opts.renew_within);
                        let reason = unfit_reason(&view, req, None, threshold);
                        if reason.is_none() {
                            fitting = Some(existing);
                        }
                        reason
                    }
                },
            };
            match (fitting, reason) {
                (Some(ca), _) => {
                    files.push(kept(&cert_path));
                    files.push(kept(&key_path));
                    if csr_path.exists() {
                        files.push(kept(&csr_path));
                    }
                    Ok(ca)
                }
                (None, reason) => {
                    let reason = reason.unwrap_or_default();
                    let ca = CertificateAuthority::new_root_with_key(req, key)?;
                    write_file_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
                    write_file_atomic(
                        &csr_path,
                        ca.csr_pem().unwrap_or_default().as_bytes(),
                        0o644,
                    )?;
                    files.push(FileReport {
                        path: cert_path,
                        action: FileAction::Renewed,
                        reason: Some(reason),
                    });
                    files.push(kept(&key_path));
                    Ok(ca)
                }
            }
        }
        None => {
            let replaced = key_path.exists() || cert_path.exists();
            let ca = CertificateAuthority::new_root_with(req)?;
            // Key first: if writing the certificate fails, the next run re-issues it for this key.
            write_file_atomic(&key_path, ca.key_pem().as_bytes(), 0o600)?;
            write_file_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
            write_file_atomic(
                &csr_path,
                ca.csr_pem().unwrap_or_default().as_bytes(),
                0o644,
            )?;
            let action = if replaced {
                FileAction::Replaced
            } else {
                FileAction::Created
            };
            for p in [key_path, cert_path, csr_path] {
                files.push(FileReport {
                    path: p,
                    action,
                    reason: None,
                });
            }
            Ok(ca)
        }
    }
}

fn ensure_leaf(
    dir: &Path,
    base: &str,
    req: &CertRequest,
    ca: &CertificateAuthority,
    opts: &FrontProxyOptions,
    files: &mut Vec<FileReport>,
) -> Result<()> {
    let cert_path = dir.join(format!("{base}.pem"));
    let key_path = dir.join(format!("{base}-key.pem"));
    let csr_path = dir.join(format!("{base}.csr"));
    let ca_view = CertView::from_der("CA", ca.cert_der())?;
    match existing_key(&key_path, opts.force)? {
        Some(key) => {
            let reason = match std::fs::read_to_string(&cert_path) {
                Err(_) => Some("certificate missing".to_string()),
                Ok(text) => match CertView::from_pem(&cert_path.display().to_string(), &text) {
                    Err(e) => Some(e.to_string()),
                    Ok(view) if view.public_key_bits != key.public_key_bits() => {
                        Some("certificate does not match its key".to_string())
                    }
                    Ok(view) => unfit_reason(
                        &view,
                        req,
                        Some(&ca_view),
                        renew_threshold(req.validity, opts.renew_within),
                    ),
                },
            };
            match reason {
                None => {
                    files.push(kept(&cert_path));
                    files.push(kept(&key_path));
                    if csr_path.exists() {
                        files.push(kept(&csr_path));
                    }
                }
                Some(reason) => {
                    let issued = ca.issue_for_key(req, &key)?;
                    write_file_atomic(&cert_path, issued.cert_pem.as_bytes(), 0o644)?;
                    write_file_atomic(&csr_path, issued.csr_pem.as_bytes(), 0o644)?;
                    files.push(FileReport {
                        path: cert_path,
                        action: FileAction::Renewed,
                        reason: Some(reason),
                    });
                    files.push(kept(&key_path));
                }
            }
        }
        None => {
            let replaced = key_path.exists() || cert_path.exists();
            let issued = ca.issue(req)?;
            write_file_atomic(&key_path, issued.key_pem.as_bytes(), 0o600)?;
            write_file_atomic(&cert_path, issued.cert_pem.as_bytes(), 0o644)?;
            write_file_atomic(&csr_path, issued.csr_pem.as_bytes(), 0o644)?;
            let action = if replaced {
                FileAction::Replaced
            } else {
                FileAction::Created
            };
            for p in [key_path, cert_path, csr_path] {
                files.push(FileReport {
                    path: p,
                    action,
                    reason: None,
                });
            }
        }
    }
    Ok(())
}

/// Why an existing certificate no longer fits the request, or `None` if it does.
fn unfit_reason(
    view: &CertView,
    req: &CertRequest,
    issuer: Option<&CertView>,
    renew_threshold: i64,
) -> Option<String> {
    let now = now_unix();
    if let Some(ca) = issuer
        && let Err(e) = view.is_signed_by(ca)
    {
        return Some(format!("not issued by the current CA ({e})"));
    }
    if view.common_name().unwrap_or_default() != req.subject.common_name {
        return Some(format!(
            "CN is {:?}, want {:?}",
            view.common_name().unwrap_or_default(),
            req.subject.common_name
        ));
    }
    let mut have: Vec<&str> = view
        .subject
        .iter()
        .filter(|a| a.kind == "O")
        .map(|a| a.value.as_str())
        .collect();
    let mut want: Vec<&str> = req
        .subject
        .names
        .iter()
        .map(|n| n.organization.as_str())
        .filter(|o| !o.is_empty())
        .collect();
    have.sort_unstable();
    want.sort_unstable();
    if have != want {
        return Some(format!("organizations are {have:?}, want {want:?}"));
    }
    if req.ca.is_some() != view.basic_constraints.is_some_and(|(ca, _)| ca) {
        return Some("CA flag differs".to_string());
    }
    let wanted = crate::cert::SubjectAltNames::from_hosts(&req.hosts);
    if req.ca.is_none() {
        if let Some(d) = wanted.dns.iter().find(|d| !view.sans.dns.contains(d)) {
            return Some(format!("SAN {d} missing"));
        }
        if let Some(ip) = wanted.ip.iter().find(|ip| !view.sans.ip.contains(ip)) {
            return Some(format!("SAN {ip} missing"));
        }
    }
    for u in &req.usages {
        let ok = match (u.key_usage_bit(), u.eku_oid()) {
            (Some(bit), _) => view.key_usage.is_some_and(|k| k & bit != 0),
            _ => view
                .ext_key_usage
                .as_ref()
                .is_some_and(|e| e.iter().any(|n| n == u.cfssl_name())),
        };
        if !ok && *u != Usage::Any {
            return Some(format!("usage \"{u}\" missing"));
        }
    }
    if view.not_after - now < renew_threshold {
        return Some(format!(
            "expires in {} days",
            (view.not_after - now).max(0) / 86_400
        ));
    }
    if view.not_before > now + 300 {
        return Some("not valid yet".to_string());
    }
    None
}

fn kept(path: &Path) -> FileReport {
    FileReport {
        path: path.to_path_buf(),
        action: FileAction::Kept,
        reason: None,
    }
}

fn write_if_changed(path: &Path, contents: &str, mode: u32) -> Result<FileReport> {
    let action = match std::fs::read_to_string(path) {
        Ok(old) if old == contents => return Ok(kept(path)),
        Ok(_) => FileAction::Renewed,
        Err(_) => FileAction::Created,
    };
    write_file_atomic(path, contents.as_bytes(), mode)?;
    Ok(FileReport {
        path: path.to_path_buf(),
        action,
        reason: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> InitOptions {
        let mut o = InitOptions::new(dir);
        o.front_proxy.key = KeyAlgorithm::EcdsaP256;
        o
    }

    fn action_of(report: &InitReport, name: &str) -> Option<FileAction> {
        report
            .files
            .iter()
            .find(|f| f.path.file_name().is_some_and(|n| n == name))
            .map(|f| f.action)
    }

    #[test]
    fn init_writes_every_file_once_and_keeps_keys() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let o = opts(dir.path());
        let first = init_dir(&o).unwrap_or_else(|e| panic!("{e}"));
        assert!(first.problems.is_empty(), "{:?}", first.problems);
        for p in [
            &first.paths.ca_cert,
            &first.paths.ca_key,
            &first.paths.admin_cert,
            &first.paths.admin_key,
            &first.paths.aggregator_cert,
            &first.paths.aggregator_key,
            &first.paths.front_proxy_ca_cert,
            &first.paths.front_proxy_ca_key,
            &first.paths.front_proxy_client_cert,
            &first.paths.front_proxy_client_key,
            &first.paths.kubeconfig,
        ] {
            assert!(p.is_file(), "{}", p.display());
        }
        let key_before = std::fs::read(&first.paths.admin_key).unwrap_or_default();

        // An admin cert that no longer fits (deleted) is re-issued for the same key.
        std::fs::remove_file(&first.paths.admin_cert).unwrap_or_else(|e| panic!("{e}"));
        let second = init_dir(&o).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(action_of(&second, "admin.pem"), Some(FileAction::Renewed));
        assert_eq!(action_of(&second, "admin-key.pem"), Some(FileAction::Kept));
        assert_eq!(action_of(&second, "ca.pem"), Some(FileAction::Kept));
        assert_eq!(
            std::fs::read(&first.paths.admin_key).unwrap_or_default(),
            key_before
        );

        // A new hostname re-issues only the serving certificate.
        let mut o2 = o.clone();
        o2.hostnames = vec!["agg.example".into()];
        let third = init_dir(&o2).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            action_of(&third, "aggregator.pem"),
            Some(FileAction::Renewed)
        );
        assert_eq!(action_of(&third, "admin.pem"), Some(FileAction::Kept));

        // --force replaces keys.
        let mut forced = o2.clone();
        forced.front_proxy.force = true;
        let fourth = init_dir(&forced).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            action_of(&fourth, "admin-key.pem"),
            Some(FileAction::Replaced)
        );
        assert_ne!(
            std::fs::read(&first.paths.admin_key).unwrap_or_default(),
            key_before
        );
    }

    #[test]
    fn a_broken_key_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let key = dir.path().join("ca-key.pem");
        std::fs::write(&key, "not a key").unwrap_or_else(|e| panic!("{e}"));
        let err = init_dir(&opts(dir.path()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("ca-key.pem"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&key).unwrap_or_default(),
            "not a key"
        );
    }

    #[test]
    fn server_hosts_are_extracted() {
        assert_eq!(
            server_host("https://127.0.0.1:6443").ok(),
            Some("127.0.0.1".into())
        );
        assert_eq!(server_host("https://[::1]:6443/x").ok(), Some("::1".into()));
        assert_eq!(
            server_host("https://agg.example").ok(),
            Some("agg.example".into())
        );
        assert!(server_host("http://x").is_err());
        assert!(server_host("https://:6443").is_err());
    }

    #[test]
    fn kubeconfig_embeds_everything() {
        let k = admin_kubeconfig("https://127.0.0.1:6443", "CA", "CERT", "KEY");
        assert!(k.contains("server: \"https://127.0.0.1:6443\""));
        assert!(k.contains(&format!(
            "certificate-authority-data: {}",
            STANDARD.encode("CA")
        )));
        assert!(k.contains(&format!("client-key-data: {}", STANDARD.encode("KEY"))));
    }
}
