//! Configuration in two stages (house style): a [`Config`] with defaults, each field named after
//! its flag; [`Config::prepare`] reads and checks every file without a runtime, so the binary
//! can exit 64 on bad input before anything starts.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use front_proxy::HeaderNames;
use front_proxy::reload::{CaFileReloader, ReloadingAuthenticator};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;
use crate::authn::ClientCertAuthenticator;
use crate::node::{NodeIdentity, hostname};
use crate::types::PodMetrics;

/// `--requestheader-*`: how proxied requests carry the caller's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaderOptions {
    /// `--requestheader-client-ca-file`: the only roots a front-proxy client certificate may
    /// chain to. Re-read every 10 s; a bad new file keeps the previous CA.
    pub client_ca_file: PathBuf,
    /// `--requestheader-allowed-names`: allowed client certificate CNs. By default empty: any
    /// certificate from the CA.
    pub allowed_names: Vec<String>,
    /// `--requestheader-username-headers`. By default `X-Remote-User`.
    pub username_headers: Vec<String>,
    /// `--requestheader-uid-headers`. By default none, as upstream (k8s.io/apiserver has no
    /// default); set `X-Remote-Uid` behind kube-apiserver 1.33+ or kube-aggregator to receive
    /// the UID.
    pub uid_headers: Vec<String>,
    /// `--requestheader-group-headers`. By default `X-Remote-Group`.
    pub group_headers: Vec<String>,
    /// `--requestheader-extra-headers-prefix`. By default `X-Remote-Extra-`.
    pub extra_headers_prefix: Vec<String>,
}

impl RequestHeaderOptions {
    /// Upstream's defaults with this CA file.
    ///
    /// ```
    /// let o = metrics_apiserver::RequestHeaderOptions::new("front-proxy-ca.crt");
    /// assert_eq!(o.username_headers, ["X-Remote-User"]);
    /// assert!(o.uid_headers.is_empty());
    /// ```
    pub fn new(client_ca_file: impl Into<PathBuf>) -> Self {
        RequestHeaderOptions {
            client_ca_file: client_ca_file.into(),
            allowed_names: Vec::new(),
            username_headers: vec!["X-Remote-User".into()],
            uid_headers: Vec::new(),
            group_headers: vec!["X-Remote-Group".into()],
            extra_headers_prefix: vec!["X-Remote-Extra-".into()],
        }
    }
}

/// Everything the server needs. `Default` gives the documented defaults; the TLS files are
/// required.
///
/// ```
/// let mut config = metrics_apiserver::Config::default();
/// assert_eq!(config.secure_port, 4443);
/// assert_eq!(config.metric_resolution.as_secs(), 10);
/// // Without a serving certificate nothing starts.
/// assert!(config.clone().prepare().is_err());
/// config.tls_cert_file = "/nonexistent/tls.crt".into();
/// config.tls_private_key_file = "/nonexistent/tls.key".into();
/// assert!(config.prepare().unwrap_err().is_config());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--bind-address`. By default `0.0.0.0`.
    pub bind_address: IpAddr,
    /// `--secure-port`. By default 4443, like metrics-server; 0 picks a free port (see
    /// [`crate::Server::local_addr`]).
    pub secure_port: u16,
    /// `--tls-cert-file`: the serving certificate chain (PEM). Required. Behind an APIService
    /// it needs the SAN `<service>.<namespace>.svc`.
    pub tls_cert_file: PathBuf,
    /// `--tls-private-key-file`: its key (PEM: PKCS#8, PKCS#1 or SEC1). Required.
    pub tls_private_key_file: PathBuf,
    /// Request-header authentication. By default off (then only `--client-ca-file` users and,
    /// if enabled, anonymous requests get in).
    pub request_header: Option<RequestHeaderOptions>,
    /// `--client-ca-file`: CA of plain mTLS users (CN → user, O → groups). By default none.
    pub client_ca_file: Option<PathBuf>,
    /// `--anonymous-auth`: requests without credentials become `system:anonymous`. By default
    /// false: they get 401.
    pub anonymous_auth: bool,
    /// `--authorization-kubeconfig`: ask this kube-apiserver with SubjectAccessReview. By
    /// default none: the local policy decides.
    pub authorization_kubeconfig: Option<PathBuf>,
    /// `--authorization-webhook-cache-authorized-ttl`. By default 10 s.
    pub authorized_ttl: Duration,
    /// `--authorization-webhook-cache-unauthorized-ttl`. By default 10 s.
    pub unauthorized_ttl: Duration,
    /// `--authorization-always-allow-paths`: non-resource paths that skip authorization (a
    /// trailing `*` is a prefix). By default `/healthz`, `/readyz`, `/livez`.
    pub always_allow_paths: Vec<String>,
    /// `--authorization-allowed-groups`: the local policy lets members of these groups get and
    /// list metrics and read discovery. By default `system:authenticated`.
    pub allowed_groups: Vec<String>,
    /// `--node-name`. By default the lower-cased hostname from `<proc-dir>/sys/kernel/hostname`.
    pub node_name: Option<String>,
    /// `--metric-resolution`: the sampling interval and window length. By default 10 s.
    pub metric_resolution: Duration,
    /// The first window, so the first answer does not wait a whole resolution. By default 1 s.
    pub initial_window: Duration,
    /// `--proc-dir`: where `stat`, `meminfo` and `sys/kernel/*` are read. By default `/proc`.
    pub proc_dir: PathBuf,
    /// `--pod-metrics-file`: a PodMetricsList JSON file, re-read when it changes. By default
    /// none: the pod list is empty.
    pub pod_metrics_file: Option<PathBuf>,
    /// How often the pod metrics file is looked at. By default 2 s.
    pub pod_metrics_reload_interval: Duration,
    /// `--serve-core-nodes`: also serve a minimal core API (`/api`, `/api/v1`, `/api/v1/nodes`)
    /// with this machine's Node, for `kubectl top node` on a cluster without kube-apiserver.
    /// Sample-only behaviour. By default false.
    pub serve_core_nodes: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            secure_port: 4443,
            tls_cert_file: PathBuf::new(),
            tls_private_key_file: PathBuf::new(),
            request_header: None,
            client_ca_file: None,
            anonymous_auth: false,
            authorization_kubeconfig: None,
            authorized_ttl: Duration::from_secs(10),
            unauthorized_ttl: Duration::from_secs(10),
            always_allow_paths: vec!["/healthz".into(), "/readyz".into(), "/livez".into()],
            allowed_groups: vec![front_proxy::SYSTEM_AUTHENTICATED.into()],
            node_name: None,
            metric_resolution: Duration::from_secs(10),
            initial_window: Duration::from_secs(1),
            proc_dir: PathBuf::from("/proc"),
            pod_metrics_file: None,
            pod_metrics_reload_interval: Duration::from_secs(2),
            serve_core_nodes: false,
        }
    }
}

/// A checked configuration with every file read: what [`crate::Server::bind`] starts from.
pub struct Prepared {
    pub(crate) config: Config,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    pub(crate) request_header: Option<(ReloadingAuthenticator, CaFileReloader)>,
    pub(crate) client_cert: Option<ClientCertAuthenticator>,
    pub(crate) kubeconfig: Option<(kube::config::Kubeconfig, PathBuf)>,
    pub(crate) pods: Option<(Vec<PodMetrics>, Vec<u8>, PathBuf)>,
    pub(crate) node: NodeIdentity,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("config", &self.config)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidFlag {
        flag,
        reason: reason.into(),
    }
}

impl Config {
    /// Checks the values and reads every file: serving certificate and key, CA bundles, the
    /// kubeconfig, the pod metrics file. Needs no runtime. Logs upstream's "API aggregation will
    /// not work" warnings for unusual header names.
    pub fn prepare(self) -> Result<Prepared, Error> {
        if self.tls_cert_file.as_os_str().is_empty() {
            return Err(invalid("--tls-cert-file", "is required"));
        }
        if self.tls_private_key_file.as_os_str().is_empty() {
            return Err(invalid("--tls-private-key-file", "is required"));
        }
        if self.metric_resolution < Duration::from_millis(100) {
            return Err(invalid("--metric-resolution", "must be at least 100ms"));
        }
        if self.initial_window.is_zero() || self.initial_window > self.metric_resolution {
            return Err(invalid(
                "initial window",
                "must be more than 0 and at most --metric-resolution",
            ));
        }
        if self.authorized_ttl > Duration::from_secs(24 * 3600)
            || self.unauthorized_ttl > Duration::from_secs(24 * 3600)
        {
            return Err(invalid(
                "--authorization-webhook-cache-*-ttl",
                "must be at most 24h",
            ));
        }
        for path in &self.always_allow_paths {
            if !path.starts_with('/') {
                return Err(invalid(
                    "--authorization-always-allow-paths",
                    format!("{path:?} must start with /"),
                ));
            }
        }
        let name = match &self.node_name {
            Some(name) => name.clone(),
            None => hostname(&self.proc_dir).ok_or_else(|| {
                invalid(
                    "--node-name",
                    format!(
                        "not given, and no hostname in {}",
                        self.proc_dir.join("sys/kernel/hostname").display()
                    ),
                )
            })?,
        };
        if let Some(problem) = apimachinery::validation::is_dns1123_subdomain(&name)
            .into_iter()
            .next()
        {
            return Err(invalid("--node-name", format!("{name:?}: {problem}")));
        }
        let tls = Arc::new(server_tls(&self.tls_cert_file, &self.tls_private_key_file)?);
        let request_header = match &self.request_header {
            None => None,
            Some(rh) => {
                let headers = HeaderNames::from_flags(
                    &rh.username_headers,
                    &rh.uid_headers,
                    &rh.group_headers,
                    &rh.extra_headers_prefix,
                )?;
                for warning in headers.aggregation_warnings() {
                    tracing::warn!("{warning}");
                }
                for n in &rh.allowed_names {
                    if n.trim().is_empty() {
                        return Err(invalid("--requestheader-allowed-names", "empty name"));
                    }
                }
                Some(ReloadingAuthenticator::watch_ca_file(
                    &rh.client_ca_file,
                    rh.allowed_names.clone(),
                    headers,
                )?)
            }
        };
        let client_cert = match &self.client_ca_file {
            None => None,
            Some(path) => {
                let pem = read(path, "--client-ca-file")?;
                Some(ClientCertAuthenticator::from_pem(path, &pem)?)
            }
        };
        let kubeconfig = match &self.authorization_kubeconfig {
            None => None,
            Some(path) => {
                let kc =
                    kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                Some((kc, path.clone()))
            }
        };
        let pods = match &self.pod_metrics_file {
            None => None,
            Some(path) => {
                let (pods, bytes) = crate::pods::load(path, self.metric_resolution)?;
                Some((pods, bytes, path.clone()))
            }
        };
        let node = NodeIdentity::discover(name, &self.proc_dir);
        Ok(Prepared {
            config: self,
            tls,
            request_header,
            client_cert,
            kubeconfig,
            pods,
            node,
        })
    }
}

fn read(path: &Path, flag: &'static str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        flag,
        path: path.to_owned(),
        source,
    })
}

/// The serving TLS config: TLS 1.2+, ALPN h2 and http/1.1, and client certificates requested
/// but not required.
fn server_tls(cert_file: &Path, key_file: &Path) -> Result<rustls::ServerConfig, Error> {
    let cert_pem = read(cert_file, "--tls-cert-file")?;
    let key_pem = read(key_file, "--tls-private-key-file")?;
    let cert_err = |reason: String| Error::ServingCertificate {
        path: cert_file.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| Error::ServingCertificate {
        path: key_file.to_owned(),
        reason: format!("no usable private key: {e}"),
    })?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let verifier = front_proxy::tls::RequestClientCert::new(&provider);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(e.to_string()))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)
        .map_err(|e| cert_err(format!("certificate and key do not work together: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
