//! Standing in front of a real kube-apiserver (`docs/cluster.md`): the delegate taken from a
//! kubeconfig or the pod's service account, the client for the aggregator's own calls, Service
//! resolution from Services and EndpointSlices ([`resolver`]), delegated authentication
//! ([`tokenreview`]) and authorization ([`sar`]), the delegate's discovery merged into ours
//! ([`delegate_discovery`]) and the trust ConfigMap extension servers read ([`trust`]).
//!
//! Two credentials, never mixed: requests proxied for a user go to kube-apiserver with the
//! front-proxy client certificate and the user in `X-Remote-*` headers (kube-apiserver trusts
//! them through its `--requestheader-*` flags); the aggregator's own calls (watches, reviews,
//! the ConfigMap) use the kubeconfig's credentials.

pub mod delegate_discovery;
pub mod resolver;
pub mod sar;
pub mod tokenreview;
pub mod trust;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::error::Error;
use crate::proxying::ProxySetup;
use crate::server::Server;

/// What the request path needs from the cluster, for [`Server::bind_with`].
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// TokenReview for unknown bearer tokens (`--authentication-kubeconfig`).
    pub token_review: Option<Arc<tokenreview::TokenReviewAuthenticator>>,
    /// The delegated authorization chain (`--authorization-kubeconfig`).
    pub authorizer: Option<Arc<sar::DelegatedAuthorizer>>,
}

/// The cluster clients of one server, built in the runtime before [`Server::bind_with`]; then
/// [`ClusterSetup::spawn`] starts the Services/EndpointSlices informers, the delegate's
/// discovery and the trust ConfigMap check.
pub struct ClusterSetup {
    own: Option<kube::Client>,
    hooks: Hooks,
    config: Config,
}

impl std::fmt::Debug for ClusterSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSetup")
            .field("own_client", &self.own.is_some())
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

/// How long start-up waits for the first lists of Services and EndpointSlices before the
/// availability controller runs (so a restarting replica never reports `ServiceNotFound` for
/// Services it has not listed yet).
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);

impl ClusterSetup {
    /// Builds the clients the configuration asks for (none: an empty setup).
    pub async fn new(config: &Config) -> Result<ClusterSetup, Error> {
        let own = match own_source(config) {
            Some(source) => Some(client(&source).await?),
            None => None,
        };
        let token_review = match authentication_source(config) {
            Some(source) => Some(Arc::new(tokenreview::TokenReviewAuthenticator::new(
                Arc::new(tokenreview::KubeTokenReviewer::new(client(&source).await?)),
                config.cluster.authentication_cache_ttl,
            ))),
            None => None,
        };
        let authorizer = match authorization_source(config) {
            Some(source) => {
                let policy: Option<Arc<dyn crate::authz::Authorizer>> =
                    match &config.authorization_policy_file {
                        Some(p) => Some(Arc::new(crate::authz::AbacPolicy::load(p)?)),
                        None => None,
                    };
                Some(Arc::new(sar::DelegatedAuthorizer::new(
                    config.cluster.always_allow_paths.clone(),
                    policy,
                    Arc::new(sar::KubeAccessReviewer::new(client(&source).await?)),
                    config.cluster.authorization_cache_authorized_ttl,
                    config.cluster.authorization_cache_unauthorized_ttl,
                )))
            }
            None => None,
        };
        Ok(ClusterSetup {
            own,
            hooks: Hooks {
                token_review,
                authorizer,
            },
            config: config.clone(),
        })
    }

    /// The request path's part.
    pub fn hooks(&self) -> Hooks {
        self.hooks.clone()
    }

    /// Starts the informers (if the proxy uses the cluster resolver), the delegate discovery
    /// fetcher (if there is a delegate) and the trust ConfigMap check or publication, and
    /// waits up to [`SYNC_TIMEOUT`] for the first lists. Call before the controllers.
    pub async fn spawn(&self, server: &Server, proxy: &ProxySetup) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let (Some(resolver), Some(client)) = (&proxy.cluster, &self.own) {
            tasks.push(tokio::spawn(resolver.clone().run(
                client.clone(),
                server.apiservices(),
                server.shutdown_watch(),
            )));
            if !resolver.wait_synced(SYNC_TIMEOUT).await {
                tracing::warn!(
                    "Services and EndpointSlices were not listed within {}s; remote APIServices stay unknown until they are",
                    SYNC_TIMEOUT.as_secs()
                );
            }
        }
        if let Some(delegate) = &proxy.delegate {
            let fetcher =
                delegate_discovery::DelegateDiscovery::new(proxy.engine.clone(), delegate.clone());
            tasks.push(tokio::spawn(
                fetcher.run(server.backend_discovery(), server.shutdown_watch()),
            ));
        }
        if let Some(client) = &self.own {
            let client = client.clone();
            let config = self.config.clone();
            let mut stop = server.shutdown_watch();
            tasks.push(tokio::spawn(async move {
                // Once at start-up, then every 5 minutes when publishing (another writer may
                // have replaced our entries).
                loop {
                    match trust::sync(client.clone(), &config).await {
                        Ok(warnings) => {
                            for w in warnings {
                                tracing::warn!("{w}");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "the trust ConfigMap could not be synced")
                        }
                    }
                    if !config.cluster.publish_authentication_configmap {
                        return;
                    }
                    tokio::select! {
                        _ = stop.changed() => return,
                        _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                    }
                }
            }));
        }
        tasks
    }
}

/// Where the service account's files are mounted in a pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Whether the process runs in a pod (`KUBERNETES_SERVICE_HOST` is set).
pub fn running_in_pod() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty())
}

/// Where a client's server and credentials come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A kubeconfig file (its current context).
    Kubeconfig(PathBuf),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`, the mounted token and CA).
    InCluster,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Kubeconfig(p) => write!(f, "kubeconfig {}", p.display()),
            Source::InCluster => f.write_str("the in-cluster service account"),
        }
    }
}

fn kubeconfig_or_in_cluster(path: Option<&PathBuf>, in_cluster: bool) -> Option<Source> {
    match path {
        Some(p) => Some(Source::Kubeconfig(p.clone())),
        None if in_cluster => Some(Source::InCluster),
        None => None,
    }
}

/// The client of the aggregator's own calls: `--kubeconfig`, else `--delegate-kubeconfig`,
/// else the in-cluster service account.
pub fn own_source(config: &Config) -> Option<Source> {
    let c = &config.cluster;
    kubeconfig_or_in_cluster(
        c.kubeconfig.as_ref().or(c.delegate_kubeconfig.as_ref()),
        c.in_cluster,
    )
}

/// TokenReview's client: `--authentication-kubeconfig`, else in-cluster.
pub fn authentication_source(config: &Config) -> Option<Source> {
    let c = &config.cluster;
    kubeconfig_or_in_cluster(c.authentication_kubeconfig.as_ref(), c.in_cluster)
}

/// SubjectAccessReview's client: `--authorization-kubeconfig`, else in-cluster.
pub fn authorization_source(config: &Config) -> Option<Source> {
    let c = &config.cluster;
    kubeconfig_or_in_cluster(c.authorization_kubeconfig.as_ref(), c.in_cluster)
}

/// The delegate's address and how to verify it, from a kubeconfig's current cluster or the
/// service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelegateTarget {
    /// `https://host:port` (no path).
    pub url: http::Uri,
    /// The CA bundle (PEM); empty means the system roots.
    pub ca_pem: Vec<u8>,
    /// The kubeconfig's `insecure-skip-tls-verify`.
    pub insecure: bool,
}

/// The delegate of `config` when it comes from a kubeconfig or the service account
/// (`--delegate-url` is handled by the proxy setup itself).
pub fn delegate_target(config: &Config) -> Result<Option<DelegateTarget>, Error> {
    if config.delegate_url.is_some() {
        return Ok(None);
    }
    let c = &config.cluster;
    match (&c.delegate_kubeconfig, c.in_cluster) {
        (Some(path), _) => target_from_kubeconfig(path).map(Some),
        (None, true) => in_cluster_target().map(Some),
        (None, false) => Ok(None),
    }
}

fn kubeconfig_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Config(format!("kubeconfig {}: {message}", path.display()))
}

/// Reads a kubeconfig and checks that its current context names a cluster with a server.
pub fn read_kubeconfig(path: &Path) -> Result<kube::config::Kubeconfig, Error> {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(path).map_err(|e| kubeconfig_error(path, e))?;
    current_cluster(&kubeconfig, path)?;
    Ok(kubeconfig)
}

fn current_cluster(
    kubeconfig: &kube::config::Kubeconfig,
    path: &Path,
) -> Result<kube::config::Cluster, Error> {
    let context_name = kubeconfig
        .current_context
        .clone()
        .or_else(|| kubeconfig.contexts.first().map(|c| c.name.clone()))
        .ok_or_else(|| kubeconfig_error(path, "no current-context"))?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.clone())
        .ok_or_else(|| kubeconfig_error(path, format!("context {context_name:?} not found")))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| {
            kubeconfig_error(path, format!("cluster {:?} not found", context.cluster))
        })?;
    if cluster.server.as_deref().unwrap_or_default().is_empty() {
        return Err(kubeconfig_error(
            path,
            format!("cluster {:?} has no server", context.cluster),
        ));
    }
    Ok(cluster)
}

/// The delegate from a kubeconfig's current cluster: its server (which must have no path,
/// since paths are forwarded unchanged) and CA.
pub fn target_from_kubeconfig(path: &Path) -> Result<DelegateTarget, Error> {
    let kubeconfig = read_kubeconfig(path)?;
    let cluster = current_cluster(&kubeconfig, path)?;
    let server = cluster.server.unwrap_or_default();
    let url: http::Uri = server
        .parse()
        .map_err(|e| kubeconfig_error(path, format!("server {server:?}: {e}")))?;
    if !matches!(url.path(), "" | "/") {
        return Err(kubeconfig_error(
            path,
            format!(
                "server {server:?} has a path; the delegate must be served at the root of its host"
            ),
        ));
    }
    let ca_pem = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) if !data.is_empty() => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| kubeconfig_error(path, format!("certificate-authority-data: {e}")))?,
        (_, Some(file)) if !file.is_empty() => {
            let file = Path::new(file);
            let file = if file.is_relative() {
                path.parent().unwrap_or(Path::new(".")).join(file)
            } else {
                file.to_owned()
            };
            std::fs::read(&file).map_err(|e| Error::read(&file, e))?
        }
        _ => Vec::new(),
    };
    Ok(DelegateTarget {
        url,
        ca_pem,
        insecure: cluster.insecure_skip_tls_verify.unwrap_or(false),
    })
}

/// The delegate inside a pod: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
/// verified with the service account's `ca.crt`.
pub fn in_cluster_target() -> Result<DelegateTarget, Error> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST")
        .map_err(|_| Error::Config("in-cluster: KUBERNETES_SERVICE_HOST is not set".into()))?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let url: http::Uri = format!("https://{host}:{port}")
        .parse()
        .map_err(|e| Error::Config(format!("in-cluster server address: {e}")))?;
    let ca = Path::new(SERVICE_ACCOUNT_DIR).join("ca.crt");
    let ca_pem = std::fs::read(&ca).map_err(|e| Error::read(&ca, e))?;
    Ok(DelegateTarget {
        url,
        ca_pem,
        insecure: false,
    })
}

/// Builds a client for `source`. Needs a runtime (the client spawns its connection pool).
pub async fn client(source: &Source) -> Result<kube::Client, Error> {
    let config = match source {
        Source::Kubeconfig(path) => {
            let kubeconfig = read_kubeconfig(path)?;
            kube::Config::from_custom_kubeconfig(
                kubeconfig,
                &kube::config::KubeConfigOptions::default(),
            )
            .await
            .map_err(|e| kubeconfig_error(path, e))?
        }
        Source::InCluster => kube::Config::incluster()
            .map_err(|e| Error::Config(format!("in-cluster configuration: {e}")))?,
    };
    let mut config = config;
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    kube::Client::try_from(config).map_err(|e| Error::Config(format!("{source}: {e}")))
}

/// Checks the cluster flags (called by [`Config::validate`]): exclusive flags, readable
/// kubeconfigs with a current cluster, positive TTLs.
pub fn validate(config: &Config) -> Result<(), Error> {
    let c = &config.cluster;
    if c.delegate_kubeconfig.is_some() && config.delegate_url.is_some() {
        return Err(Error::Config(
            "--delegate-kubeconfig and --delegate-url are exclusive".into(),
        ));
    }
    if c.delegate_kubeconfig.is_some() && config.delegate_ca_file.is_some() {
        return Err(Error::Config(
            "--delegate-ca-file goes with --delegate-url; --delegate-kubeconfig carries its own CA"
                .into(),
        ));
    }
    if let Some(path) = &c.delegate_kubeconfig {
        target_from_kubeconfig(path)?;
    }
    for path in [
        &c.kubeconfig,
        &c.authentication_kubeconfig,
        &c.authorization_kubeconfig,
    ]
    .into_iter()
    .flatten()
    {
        read_kubeconfig(path)?;
    }
    for p in &c.always_allow_paths {
        if !p.starts_with('/') {
            return Err(Error::Config(format!(
                "--authorization-always-allow-paths: {p:?} must start with /"
            )));
        }
    }
    if c.publish_authentication_configmap && own_source(config).is_none() {
        return Err(Error::Config(
            "--publish-authentication-configmap needs --kubeconfig or --delegate-kubeconfig".into(),
        ));
    }
    if c.publish_authentication_configmap && config.request_header.is_none() {
        return Err(Error::Config(
            "--publish-authentication-configmap needs --requestheader-client-ca-file (the front-proxy CA to publish)".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: Q0E=\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user:\n    token: t\n";

    #[test]
    fn delegate_from_kubeconfig() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("k");
        std::fs::write(&path, KUBECONFIG)?;
        let t = target_from_kubeconfig(&path)?;
        assert_eq!(t.url.to_string(), "https://127.0.0.1:6443/");
        assert_eq!(t.ca_pem, b"CA");
        assert!(!t.insecure);

        std::fs::write(&path, KUBECONFIG.replace(":6443", ":6443/k8s/clusters/c-1"))?;
        let e = target_from_kubeconfig(&path).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("has a path")));
        std::fs::write(
            &path,
            KUBECONFIG.replace("current-context: x", "current-context: y"),
        )?;
        let e = target_from_kubeconfig(&path).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("context \"y\" not found")));
        let e = target_from_kubeconfig(&dir.path().join("missing"));
        assert!(e.is_err());
        Ok(())
    }

    #[test]
    fn sources_default_as_documented() {
        let mut config = Config::default();
        assert_eq!(own_source(&config), None);
        config.cluster.in_cluster = true;
        assert_eq!(own_source(&config), Some(Source::InCluster));
        assert_eq!(authorization_source(&config), Some(Source::InCluster));
        config.cluster.delegate_kubeconfig = Some("d".into());
        assert_eq!(own_source(&config), Some(Source::Kubeconfig("d".into())));
        config.cluster.kubeconfig = Some("k".into());
        assert_eq!(own_source(&config), Some(Source::Kubeconfig("k".into())));
        config.cluster.authentication_kubeconfig = Some("a".into());
        assert_eq!(
            authentication_source(&config),
            Some(Source::Kubeconfig("a".into()))
        );
    }
}
