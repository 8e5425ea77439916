//! `kube-aggregator serve`: the aggregation layer. Flags carry kube-apiserver's names; they are
//! turned into a validated `aggregator::Config` and the proxy's inputs (every file read once)
//! before any runtime starts, so a bad flag exits 64 with one line on stderr. Then: start-up
//! warnings, the server, the proxy's reload loops and the controllers; on SIGTERM the server
//! drains, the controllers stop and the store is closed.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use aggregator::controllers::Controllers;
use aggregator::controllers::availability::recheck_channel;
use aggregator::proxying::ProxySetup;
use clap::ArgAction;

/// Flags of `kube-aggregator serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The IP address to listen on.
    #[arg(long = "bind-address", default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// The HTTPS port (HTTP/1.1 and HTTP/2). 0 picks a free port.
    #[arg(long = "secure-port", default_value_t = 6443)]
    secure_port: u16,
    /// Serving certificate (PEM, leaf first); re-read when it changes. Without it a
    /// self-signed certificate for localhost is generated.
    #[arg(long = "tls-cert-file", value_name = "FILE")]
    tls_cert_file: Option<PathBuf>,
    /// Serving key.
    #[arg(long = "tls-private-key-file", value_name = "FILE")]
    tls_private_key_file: Option<PathBuf>,
    /// CA bundle for x509 client certificates (CN → user, O → groups).
    #[arg(long = "client-ca-file", value_name = "FILE")]
    client_ca_file: Option<PathBuf>,
    /// Static bearer tokens, kube-apiserver's CSV: token,user,uid,"group1,group2".
    #[arg(long = "token-auth-file", value_name = "FILE")]
    token_auth_file: Option<PathBuf>,
    /// Let unauthenticated requests in as system:anonymous.
    #[arg(long = "anonymous-auth", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    anonymous_auth: bool,
    /// ABAC policy (JSON lines) replacing the default policy (masters write, users read).
    #[arg(long = "authorization-policy-file", value_name = "FILE")]
    authorization_policy_file: Option<PathBuf>,
    /// CA bundle of an authenticating proxy in front of us; enables request-header
    /// authentication.
    #[arg(long = "requestheader-client-ca-file", value_name = "FILE")]
    requestheader_client_ca_file: Option<PathBuf>,
    /// Allowed CNs of that proxy's client certificate (comma-separated; empty allows any).
    #[arg(long = "requestheader-allowed-names", value_delimiter = ',')]
    requestheader_allowed_names: Vec<String>,
    /// Headers holding the user name (default X-Remote-User).
    #[arg(long = "requestheader-username-headers", value_delimiter = ',')]
    requestheader_username_headers: Vec<String>,
    /// Headers holding the UID (default none).
    #[arg(long = "requestheader-uid-headers", value_delimiter = ',')]
    requestheader_uid_headers: Vec<String>,
    /// Headers holding groups (default X-Remote-Group).
    #[arg(long = "requestheader-group-headers", value_delimiter = ',')]
    requestheader_group_headers: Vec<String>,
    /// Prefixes of extra-attribute headers (default X-Remote-Extra-).
    #[arg(long = "requestheader-extra-headers-prefix", value_delimiter = ',')]
    requestheader_extra_headers_prefix: Vec<String>,
    /// Client certificate presented to extension API servers.
    #[arg(long = "proxy-client-cert-file", value_name = "FILE")]
    proxy_client_cert_file: Option<PathBuf>,
    /// Its key.
    #[arg(long = "proxy-client-key-file", value_name = "FILE")]
    proxy_client_key_file: Option<PathBuf>,
    /// A file mapping Services to addresses, for clusters the proxy cannot resolve.
    #[arg(long = "service-map", value_name = "FILE")]
    service_map: Option<PathBuf>,
    /// Route to endpoint IPs instead of the Service's cluster IP.
    #[arg(long = "enable-aggregator-routing", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    enable_aggregator_routing: bool,
    /// Turn backend redirects into 502.
    #[arg(long = "aggregator-reject-forwarding-redirect", action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    aggregator_reject_forwarding_redirect: bool,
    /// Offer HTTP/2 to extension API servers (ALPN h2, http/1.1; one multiplexed connection per
    /// backend, as upstream). `false`: pooled HTTP/1.1 connections, one per request in flight.
    #[arg(long = "proxy-backend-http2", action = ArgAction::Set, num_args = 0..=1, default_value_t = true, default_missing_value = "true")]
    proxy_backend_http2: bool,
    /// Where local APIServices and unknown paths are sent (http:// or https://), with the
    /// proxy client certificate and the caller's identity.
    #[arg(long = "delegate-url", value_name = "URL")]
    delegate_url: Option<String>,
    /// CA bundle verifying the delegate's serving certificate (default: system roots).
    #[arg(long = "delegate-ca-file", value_name = "FILE")]
    delegate_ca_file: Option<PathBuf>,
    /// The delegate (kube-apiserver) is this kubeconfig's server, verified with its CA;
    /// requests still carry the proxy client certificate and the caller's identity.
    #[arg(long = "delegate-kubeconfig", value_name = "FILE")]
    delegate_kubeconfig: Option<PathBuf>,
    /// Client for the aggregator's own calls (Services, EndpointSlices, the trust ConfigMap);
    /// default: --delegate-kubeconfig, else the in-cluster service account.
    #[arg(long = "kubeconfig", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Check unknown bearer tokens with a TokenReview through this kubeconfig (in a pod: the
    /// service account).
    #[arg(long = "authentication-kubeconfig", value_name = "FILE")]
    authentication_kubeconfig: Option<PathBuf>,
    /// How long TokenReview answers are cached (Go duration).
    #[arg(long = "authentication-token-webhook-cache-ttl", default_value = "10s")]
    authentication_token_webhook_cache_ttl: String,
    /// Decide requests with a SubjectAccessReview through this kubeconfig (in a pod: the
    /// service account); replaces the default policy.
    #[arg(long = "authorization-kubeconfig", value_name = "FILE")]
    authorization_kubeconfig: Option<PathBuf>,
    /// How long allowed SubjectAccessReview answers are cached (Go duration).
    #[arg(
        long = "authorization-webhook-cache-authorized-ttl",
        default_value = "10s"
    )]
    authorization_webhook_cache_authorized_ttl: String,
    /// How long denied SubjectAccessReview answers are cached (Go duration).
    #[arg(
        long = "authorization-webhook-cache-unauthorized-ttl",
        default_value = "10s"
    )]
    authorization_webhook_cache_unauthorized_ttl: String,
    /// Non-resource paths anyone may get without a SubjectAccessReview (comma-separated; a
    /// trailing * is a prefix).
    #[arg(
        long = "authorization-always-allow-paths",
        value_delimiter = ',',
        default_value = "/healthz,/livez,/readyz,/version"
    )]
    authorization_always_allow_paths: Vec<String>,
    /// Write our front-proxy CA and header names into
    /// kube-system/extension-apiserver-authentication (default: only check it).
    #[arg(long = "publish-authentication-configmap", action = ArgAction::Set, num_args = 0..=1, default_value_t = false, default_missing_value = "true")]
    publish_authentication_configmap: bool,
    /// Storage: embedded:DIR or etcd://host:port[,host:port…][/prefix].
    #[arg(long, default_value = "embedded:./data")]
    store: String,
    /// Concurrent non-mutating requests before 429 (0: unlimited; watches excluded).
    #[arg(long = "max-requests-inflight", default_value_t = 400)]
    max_requests_inflight: usize,
    /// Concurrent mutating requests before 429 (0: unlimited).
    #[arg(long = "max-mutating-requests-inflight", default_value_t = 200)]
    max_mutating_requests_inflight: usize,
    /// Largest accepted request body in bytes.
    #[arg(long = "max-request-body-bytes", default_value_t = aggregator::config::DEFAULT_MAX_BODY_BYTES)]
    max_request_body_bytes: usize,
    /// Time allowed for the TLS handshake and request head (Go duration).
    #[arg(long = "request-header-read-timeout", default_value = "10s")]
    request_header_read_timeout: String,
    /// Deadline of non-watch requests (Go duration).
    #[arg(long = "request-timeout", default_value = "1m0s")]
    request_timeout: String,
    /// Minimum watch duration in seconds when the client gives no timeoutSeconds.
    #[arg(long = "min-request-timeout", default_value_t = 1800)]
    min_request_timeout: u64,
    /// After SIGTERM, how long in-flight requests may take (Go duration).
    #[arg(long = "shutdown-timeout", default_value = "30s")]
    shutdown_timeout: String,
    /// Runtime worker threads (default: the number of CPUs, at most 4).
    #[arg(long = "worker-threads")]
    worker_threads: Option<usize>,
    /// Log verbosity like klog's -v: 0–1 info, 2–3 debug, 4+ trace (RUST_LOG overrides).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
}

fn duration(flag: &str, value: &str) -> Result<Duration, String> {
    pki::parse_go_duration(value).map_err(|e| format!("--{flag}: {e}"))
}

fn config(a: &Args) -> Result<aggregator::Config, String> {
    let request_header = match &a.requestheader_client_ca_file {
        Some(ca) => Some(aggregator::RequestHeaderFlags {
            client_ca_file: ca.clone(),
            allowed_names: a.requestheader_allowed_names.clone(),
            username_headers: a.requestheader_username_headers.clone(),
            uid_headers: a.requestheader_uid_headers.clone(),
            group_headers: a.requestheader_group_headers.clone(),
            extra_headers_prefix: a.requestheader_extra_headers_prefix.clone(),
        }),
        None => {
            let given = !a.requestheader_allowed_names.is_empty()
                || !a.requestheader_username_headers.is_empty()
                || !a.requestheader_uid_headers.is_empty()
                || !a.requestheader_group_headers.is_empty()
                || !a.requestheader_extra_headers_prefix.is_empty();
            if given {
                return Err(
                    "--requestheader-* flags require --requestheader-client-ca-file".into(),
                );
            }
            None
        }
    };
    let delegate_url = match &a.delegate_url {
        Some(u) => Some(aggregator::config::parse_url(u).map_err(|e| e.to_string())?),
        None => None,
    };
    let c = aggregator::Config {
        bind_address: a.bind_address,
        secure_port: a.secure_port,
        tls_cert_file: a.tls_cert_file.clone(),
        tls_private_key_file: a.tls_private_key_file.clone(),
        client_ca_file: a.client_ca_file.clone(),
        token_auth_file: a.token_auth_file.clone(),
        anonymous_auth: a.anonymous_auth,
        request_header,
        authorization_policy_file: a.authorization_policy_file.clone(),
        proxy_client_cert_file: a.proxy_client_cert_file.clone(),
        proxy_client_key_file: a.proxy_client_key_file.clone(),
        service_map: a.service_map.clone(),
        enable_aggregator_routing: a.enable_aggregator_routing,
        aggregator_reject_forwarding_redirect: a.aggregator_reject_forwarding_redirect,
        proxy_backend_http2: a.proxy_backend_http2,
        delegate_url,
        delegate_ca_file: a.delegate_ca_file.clone(),
        max_requests_inflight: a.max_requests_inflight,
        max_mutating_requests_inflight: a.max_mutating_requests_inflight,
        max_request_body_bytes: a.max_request_body_bytes,
        request_header_read_timeout: duration(
            "request-header-read-timeout",
            &a.request_header_read_timeout,
        )?,
        request_timeout: duration("request-timeout", &a.request_timeout)?,
        min_request_timeout: Duration::from_secs(a.min_request_timeout),
        shutdown_timeout: duration("shutdown-timeout", &a.shutdown_timeout)?,
        cluster: aggregator::ClusterConfig {
            delegate_kubeconfig: a.delegate_kubeconfig.clone(),
            kubeconfig: a.kubeconfig.clone(),
            // In a pod with nothing said about the cluster: its service account, as
            // k8s.io/apiserver's delegating servers do.
            in_cluster: aggregator::cluster::running_in_pod()
                && a.delegate_url.is_none()
                && a.delegate_kubeconfig.is_none()
                && a.kubeconfig.is_none()
                && a.service_map.is_none(),
            authentication_kubeconfig: a.authentication_kubeconfig.clone(),
            authentication_cache_ttl: duration(
                "authentication-token-webhook-cache-ttl",
                &a.authentication_token_webhook_cache_ttl,
            )?,
            authorization_kubeconfig: a.authorization_kubeconfig.clone(),
            authorization_cache_authorized_ttl: duration(
                "authorization-webhook-cache-authorized-ttl",
                &a.authorization_webhook_cache_authorized_ttl,
            )?,
            authorization_cache_unauthorized_ttl: duration(
                "authorization-webhook-cache-unauthorized-ttl",
                &a.authorization_webhook_cache_unauthorized_ttl,
            )?,
            always_allow_paths: a.authorization_always_allow_paths.clone(),
            publish_authentication_configmap: a.publish_authentication_configmap,
        },
    };
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The first line of an error: YAML parser errors add a source excerpt on further lines, and
/// the first one already names the file, line and column.
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default().trim_end()
}

fn init_logging(verbosity: u8) -> super::logging::LogGuard {
    let level = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    super::logging::init(level, super::logging::Sink::Stderr)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

async fn serve(
    config: aggregator::Config,
    proxy: ProxySetup,
    store_url: String,
) -> anyhow::Result<()> {
    let store = store::open(&store_url)
        .await
        .map_err(|e| anyhow::anyhow!("opening the store {store_url}: {e}"))?;
    let bound = match bind_server(&config, proxy, store.clone()).await {
        Ok(bound) => bound,
        Err(e) => {
            close_store(store.as_ref()).await;
            return Err(e.into());
        }
    };
    tracing::info!(store = %store_url, "store opened");
    let result = bound.run(shutdown_signal()).await;
    // Ends the store's watches cleanly and releases the embedded store's lock.
    close_store(store.as_ref()).await;
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// The server stack of `serve` (forwarder over the proxy engine, availability rechecks), bound
/// to its port but not serving yet. `kube-aggregator up` runs the same stack in-process.
pub(crate) struct BoundServer {
    /// The bound server (for its address, APIService snapshots and status writer before it runs).
    pub(crate) server: aggregator::Server,
    proxy: ProxySetup,
    rechecks: aggregator::controllers::availability::RecheckReceiver,
    cluster: aggregator::cluster::ClusterSetup,
}

/// Binds the server stack; the caller owns `store` (and closes it after [`BoundServer::run`]).
pub(crate) async fn bind_server(
    config: &aggregator::Config,
    proxy: ProxySetup,
    store: std::sync::Arc<dyn store::Store>,
) -> Result<BoundServer, aggregator::Error> {
    let (recheck, rechecks) = recheck_channel();
    // Cluster clients (TokenReview, SubjectAccessReview, Services/EndpointSlices, the trust
    // ConfigMap) when a kubeconfig or the in-cluster service account is configured.
    let cluster = aggregator::cluster::ClusterSetup::new(config).await?;
    let server = aggregator::Server::bind_with(
        config,
        store,
        proxy.forwarder(Some(recheck)),
        cluster.hooks(),
    )
    .await?;
    Ok(BoundServer {
        server,
        proxy,
        rechecks,
        cluster,
    })
}

impl BoundServer {
    /// Starts the proxy's reload loops and the controllers, serves until `shutdown`, then
    /// drains and stops them.
    pub(crate) async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), aggregator::Error> {
        let BoundServer {
            server,
            proxy,
            rechecks,
            cluster,
        } = self;
        let reloaders = proxy.spawn_reloaders();
        // Before the controllers: availability waits for the first Services/EndpointSlices.
        let cluster_tasks = cluster.spawn(&server, &proxy).await;
        let controllers = Controllers::spawn(&server, &proxy, rechecks);
        let addr = server.local_addr()?;
        tracing::info!(address = %addr, "serving on https://{addr}");
        let result = server.run(shutdown).await;
        controllers.join(Duration::from_secs(5)).await;
        for task in reloaders.into_iter().chain(cluster_tasks) {
            task.abort();
        }
        result
    }
}

async fn close_store(store: &dyn store::Store) {
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "closing the store");
    }
}

/// Runs the subcommand.
pub fn run(args: Args) -> ExitCode {
    let _logs = init_logging(args.verbosity);
    let config = match config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kube-aggregator serve: {}", first_line(&e));
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    if let Err(e) = args.store.parse::<store::StoreUrl>() {
        eprintln!("kube-aggregator serve: --store: {e}");
        return ExitCode::from(super::EXIT_USAGE);
    }
    // The proxy client certificate, the service map and the delegate are read here too, so
    // their errors also exit 64 before anything starts.
    let proxy = match ProxySetup::from_config(&config) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("kube-aggregator serve: {}", first_line(&e.to_string()));
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    for warning in aggregator::preflight::warnings(&config) {
        tracing::warn!("{warning}");
    }
    let workers = args.worker_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().min(4))
            .unwrap_or(2)
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-aggregator serve: starting the runtime: {e}");
            return ExitCode::from(super::EXIT_FAILURE);
        }
    };
    match runtime.block_on(serve(config, proxy, args.store)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-aggregator serve: {e:#}");
            ExitCode::from(super::EXIT_FAILURE)
        }
    }
}
