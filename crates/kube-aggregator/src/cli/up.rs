//! `kube-aggregator up [--dir DIR]`: one command to a working local aggregation layer.
//!
//! In order: lock the embedded store in `DIR/data` (one `up` per directory), check the ports,
//! write or reuse the PKI (`pki init` plus a serving certificate for the sample metrics server,
//! issued by the same cluster CA), start the metrics server on loopback, write
//! `DIR/service-map.yaml` pointing `kube-system/metrics-server:443` at it, register
//! `v1beta1.metrics.k8s.io` and `v1.` (create-or-update, straight into the store with the
//! registry's own strategy, validation and managed fields), bind the same server stack `serve`
//! runs, wait until both APIServices are Available and the metrics group's discovery has been
//! fetched, print two commands to try, and on SIGINT/SIGTERM stop the aggregator, then the
//! metrics server, then close the store. See `docs/up.md`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aggregator::proxying::ProxySetup;
use aggregator::registry::fields::{self, Scope};
use aggregator::registry::{new_uid, strategy};
use aggregator::{BackendDiscovery, Snapshot};
use apimachinery::discovery::Freshness;
use k8s_openapi::ByteString;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIServiceCondition, APIServiceSpec, ServiceReference,
};
use pki::init::{FileAction, InitOptions, InitPaths};
use pki::{CertRequest, CertificateAuthority, KeyAlgorithm};
use store::{APIService, Store};
use tokio::sync::watch;

use super::serve::{BoundServer, bind_server};
use super::{EXIT_FAILURE, EXIT_USAGE};

/// The APIService of the sample metrics server.
pub const METRICS_APISERVICE: &str = "v1beta1.metrics.k8s.io";
/// The remote core APIService (`/api`), sample-only: see `docs/up.md`.
pub const CORE_APISERVICE: &str = "v1.";
/// The Service both APIServices point at, as in metrics-server's manifest.
const SERVICE_NAMESPACE: &str = "kube-system";
const SERVICE_NAME: &str = "metrics-server";
const SERVICE_PORT: i32 = 443;
/// Field manager of the registrations and the label marking them.
const MANAGER: &str = "kube-aggregator-up";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Files in DIR besides those of `pki init`.
const METRICS_CERT: &str = "metrics-server";
const SERVICE_MAP: &str = "service-map.yaml";
const LOG_FILE: &str = "up.log";
/// The metrics serving certificate is re-issued when less than this is left.
const RENEW_WITHIN: Duration = Duration::from_secs(30 * 86_400);
/// How long in-flight requests may take after Ctrl-C.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Flags of `kube-aggregator up`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where certificates, the store (DIR/data), the kubeconfig, the service map and the log
    /// live. Created if missing; reused if present.
    #[arg(long, value_name = "DIR", default_value = "./.kube-aggregator")]
    dir: PathBuf,
    /// The aggregator's HTTPS port. 0 picks a free one.
    #[arg(long = "secure-port", default_value_t = 6443)]
    secure_port: u16,
    /// The aggregator's listen address (loopback by default: this is a local playground).
    #[arg(long = "bind-address", default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The sample metrics server's port on 127.0.0.1. 0 picks a free one.
    #[arg(long = "metrics-port", default_value_t = 0)]
    metrics_port: u16,
    /// Node name the metrics server reports (default: this machine's hostname, lower-cased).
    #[arg(long = "node-name")]
    node_name: Option<String>,
    /// How long to wait for both APIServices to become Available (Go duration).
    #[arg(long = "ready-timeout", default_value = "30s")]
    ready_timeout: String,
    /// Verbosity of DIR/up.log like klog's -v: 0–1 info, 2–3 debug, 4+ trace (RUST_LOG overrides).
    #[arg(short = 'v', long = "v", default_value_t = 0)]
    verbosity: u8,
}

/// Why `up` stops early: one line for the terminal and the exit code.
#[derive(Debug, Clone)]
struct Fail {
    code: u8,
    message: String,
}

fn usage(message: impl Into<String>) -> Fail {
    Fail {
        code: EXIT_USAGE,
        message: message.into(),
    }
}

fn failure(message: impl Into<String>) -> Fail {
    Fail {
        code: EXIT_FAILURE,
        message: message.into(),
    }
}

/// The checked flags.
#[derive(Debug)]
struct Opts {
    /// `--dir`, made absolute.
    dir: PathBuf,
    bind_address: IpAddr,
    secure_port: u16,
    metrics_port: u16,
    node_name: Option<String>,
    ready_timeout: Duration,
    /// `--ready-timeout` as given, for messages.
    ready_timeout_text: String,
}

fn check(args: &Args) -> Result<Opts, Fail> {
    let ready_timeout = pki::parse_go_duration(&args.ready_timeout)
        .map_err(|e| usage(format!("--ready-timeout: {e}")))?;
    if ready_timeout.is_zero() {
        return Err(usage("--ready-timeout: must be more than 0"));
    }
    if args.dir.as_os_str().is_empty() {
        return Err(usage("--dir: must not be empty"));
    }
    if args.dir.exists() && !args.dir.is_dir() {
        return Err(usage(format!(
            "--dir {}: exists and is not a directory",
            args.dir.display()
        )));
    }
    if let Some(name) = &args.node_name
        && let Some(problem) = apimachinery::validation::is_dns1123_subdomain(name)
            .into_iter()
            .next()
    {
        return Err(usage(format!("--node-name {name:?}: {problem}")));
    }
    let overlaps = args.bind_address.is_unspecified() || args.bind_address.is_loopback();
    if args.metrics_port != 0 && args.metrics_port == args.secure_port && overlaps {
        return Err(usage(format!(
            "--metrics-port {} is also --secure-port; choose two different ports",
            args.metrics_port
        )));
    }
    // Absolute, so that the printed commands work from any directory (the user's next
    // terminal is rarely where `scripts/up` ran).
    let dir = std::path::absolute(&args.dir)
        .map_err(|e| failure(format!("--dir {}: {e}", args.dir.display())))?;
    Ok(Opts {
        dir,
        bind_address: args.bind_address,
        secure_port: args.secure_port,
        metrics_port: args.metrics_port,
        node_name: args.node_name.clone(),
        ready_timeout,
        ready_timeout_text: args.ready_timeout.clone(),
    })
}

/// Runs the subcommand: 0 after a clean stop, 64 for bad flags, 1 for everything else.
pub fn run(args: Args) -> ExitCode {
    match run_checked(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "kube-aggregator up: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn run_checked(args: Args) -> Result<(), Fail> {
    let opts = check(&args)?;
    create_private_dir(&opts.dir)?;
    let workers = std::thread::available_parallelism()
        .map(|n| n.get().min(4))
        .unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| failure(format!("starting the runtime: {e}")))?;
    let result = runtime.block_on(up(&opts, args.verbosity));
    // Whatever is still running (the second-signal watcher) goes with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    tracing::info!("runtime stopped");
    result
}

/// DIR holds private keys: created 0700 (the directories `pki init` creates are 0700 too).
fn create_private_dir(dir: &Path) -> Result<(), Fail> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| failure(format!("creating {}: {e}", dir.display())))
}

/// Logs of the aggregator and the metrics server go to DIR/up.log (truncated on each start, once
/// the store lock is ours), so the terminal shows only what `up` itself says.
fn init_logging(path: &Path, verbosity: u8) -> Result<super::logging::LogGuard, Fail> {
    let file = std::fs::File::create(path)
        .map_err(|e| failure(format!("creating the log file {}: {e}", path.display())))?;
    let level = match verbosity {
        0 | 1 => "info",
        2 | 3 => "debug",
        _ => "trace",
    };
    Ok(super::logging::init(
        level,
        super::logging::Sink::File(file),
    ))
}

/// Opens the store, runs everything else, and closes the store whatever happened (that
/// releases the embedded lock).
async fn up(opts: &Opts, verbosity: u8) -> Result<(), Fail> {
    let data = opts.dir.join("data");
    let url = store::StoreUrl::Embedded { dir: data.clone() };
    let store = store::open_with(&url, store::Options::default())
        .await
        .map_err(|e| match e {
            store::Error::Locked { .. } => failure(format!(
                "{} is in use by another process; is `kube-aggregator up --dir {}` already running?",
                data.display(),
                opts.dir.display()
            )),
            e => failure(format!("opening the store in {}: {e}", data.display())),
        })?;
    let logs = init_logging(&opts.dir.join(LOG_FILE), verbosity);
    let result = match &logs {
        Ok(_) => up_with_store(opts, store.clone()).await,
        Err(e) => Err(e.clone()),
    };
    match store.close().await {
        Ok(()) => tracing::info!("store closed"),
        Err(e) => tracing::warn!(error = %e, "closing the store"),
    }
    // Every log line is in up.log before "Stopped." is printed.
    drop(logs);
    if result.is_ok() {
        say("Stopped.");
    }
    result
}

/// One line for the user on stdout (a closed stdout is not worth a panic).
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

async fn up_with_store(opts: &Opts, store: Arc<dyn Store>) -> Result<(), Fail> {
    // Fail fast, before any file is written, when a port is taken.
    check_port(opts.bind_address, opts.secure_port, "--secure-port")?;
    check_port(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        opts.metrics_port,
        "--metrics-port",
    )?;

    let requested_port = if opts.secure_port == 0 {
        6443
    } else {
        opts.secure_port
    };
    let client_host = client_host(opts.bind_address);
    let files = {
        let dir = opts.dir.clone();
        let server = server_url(client_host, requested_port);
        tokio::task::spawn_blocking(move || certificates(&dir, &server))
            .await
            .map_err(|e| failure(format!("writing certificates: {e}")))??
    };
    say(&format!(
        "Certificates: {} in {}",
        files.summary,
        opts.dir.display()
    ));
    for problem in &files.problems {
        say(&format!("Warning: {problem}"));
    }

    let (metrics, node) = start_metrics_server(opts, &files).await?;
    let metrics_addr = metrics.local_addr();
    say(&format!(
        "Metrics server: https://{metrics_addr} (node {node})"
    ));

    // The normal --service-map path resolves the APIServices' Service to it.
    let service_map = opts.dir.join(SERVICE_MAP);
    write_atomic(
        &service_map,
        service_map_yaml(metrics_addr).as_bytes(),
        0o644,
    )?;

    let config = aggregator_config(opts, &files, service_map);
    config
        .validate()
        .map_err(|e| failure(format!("the aggregator: {e}")))?;
    let proxy =
        ProxySetup::from_config(&config).map_err(|e| failure(format!("the aggregator: {e}")))?;
    for warning in aggregator::preflight::warnings(&config) {
        tracing::warn!("{warning}");
        say(&format!("Warning: {warning}"));
    }

    for (name, spec) in desired_apiservices(&files.ca_pem) {
        let outcome = register(store.as_ref(), name, spec).await?;
        tracing::info!(apiservice = name, outcome, "registered");
    }

    let bound = bind_server(&config, proxy, store.clone())
        .await
        .map_err(|e| match e {
            aggregator::Error::Listen { addr, source } => {
                listen_failure(addr, &source, "--secure-port")
            }
            e => failure(format!("the aggregator: {e}")),
        })?;
    let addr = bound
        .server
        .local_addr()
        .map_err(|e| failure(format!("the aggregator: {e}")))?;
    if addr.port() != requested_port {
        // --secure-port 0: point the kubeconfig at the port we got.
        let kubeconfig = pki::init::admin_kubeconfig(
            &server_url(client_host, addr.port()),
            &files.ca_pem,
            &read(&files.paths.admin_cert)?,
            &read(&files.paths.admin_key)?,
        );
        write_atomic(&files.paths.kubeconfig, kubeconfig.as_bytes(), 0o600)?;
    }
    say(&format!(
        "Aggregator: {} (store {})",
        server_url(client_host, addr.port()),
        opts.dir.join("data").display()
    ));
    forget_last_run(&bound).await?;

    serve(opts, bound, metrics, &files.paths.kubeconfig).await
}

/// The sample metrics server on loopback, trusting the front-proxy CA (CN
/// `front-proxy-client`) and serving the sample core nodes API; and the node name it reports.
async fn start_metrics_server(
    opts: &Opts,
    files: &Files,
) -> Result<(metrics_apiserver::Server, String), Fail> {
    let mut request_header =
        metrics_apiserver::RequestHeaderOptions::new(&files.paths.front_proxy_ca_cert);
    request_header.allowed_names = vec![pki::init::FRONT_PROXY_CLIENT_CN.to_string()];
    // The aggregator sends the caller's UID (docs/proxy.md §9).
    request_header.uid_headers = vec!["X-Remote-Uid".to_string()];
    let mut config = metrics_apiserver::Config {
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        secure_port: opts.metrics_port,
        tls_cert_file: files.metrics_cert.clone(),
        tls_private_key_file: files.metrics_key.clone(),
        request_header: Some(request_header),
        node_name: opts.node_name.clone(),
        serve_core_nodes: true,
        ..metrics_apiserver::Config::default()
    };
    let node = match &opts.node_name {
        Some(name) => name.clone(),
        None => default_node_name(&config.proc_dir)?,
    };
    config.node_name = Some(node.clone());
    let prepared = config
        .prepare()
        .map_err(|e| failure(format!("the metrics server: {e}")))?;
    let server = metrics_apiserver::Server::bind_prepared(prepared)
        .await
        .map_err(|e| match e {
            metrics_apiserver::Error::Listen { addr, source } => {
                listen_failure(addr, &source, "--metrics-port")
            }
            e => failure(format!("the metrics server: {e}")),
        })?;
    Ok((server, node))
}

/// This machine's hostname, lower-cased, as the kubelet names its node; a hostname that is not
/// a valid node name asks for `--node-name`.
fn default_node_name(proc_dir: &Path) -> Result<String, Fail> {
    let Some(name) = metrics_apiserver::node::hostname(proc_dir) else {
        return Err(failure(
            "cannot read this machine's hostname; name the node with --node-name",
        ));
    };
    match apimachinery::validation::is_dns1123_subdomain(&name)
        .into_iter()
        .next()
    {
        None => Ok(name),
        Some(problem) => Err(failure(format!(
            "this machine's hostname {name:?} is not a valid node name ({problem}); name the node with --node-name"
        ))),
    }
}

/// What `serve` would get from `--tls-cert-file … --client-ca-file ca.pem
/// --proxy-client-cert-file … --service-map DIR/service-map.yaml`.
fn aggregator_config(opts: &Opts, files: &Files, service_map: PathBuf) -> aggregator::Config {
    aggregator::Config {
        bind_address: opts.bind_address,
        secure_port: opts.secure_port,
        tls_cert_file: Some(files.paths.aggregator_cert.clone()),
        tls_private_key_file: Some(files.paths.aggregator_key.clone()),
        client_ca_file: Some(files.paths.ca_cert.clone()),
        proxy_client_cert_file: Some(files.paths.front_proxy_client_cert.clone()),
        proxy_client_key_file: Some(files.paths.front_proxy_client_key.clone()),
        service_map: Some(service_map),
        shutdown_timeout: SHUTDOWN_TIMEOUT,
        ..aggregator::Config::default()
    }
}

/// What `up` wrote or reused.
struct Files {
    paths: InitPaths,
    ca_pem: String,
    metrics_cert: PathBuf,
    metrics_key: PathBuf,
    summary: String,
    problems: Vec<String>,
}

/// `pki init` into DIR (with the kubeconfig pointing at `server`), then the metrics server's
/// serving certificate from the same cluster CA.
fn certificates(dir: &Path, server: &str) -> Result<Files, Fail> {
    let mut init = InitOptions::new(dir);
    init.server = server.to_string();
    let report = pki::init::init_dir(&init)
        .map_err(|e| failure(format!("writing certificates into {}: {e}", dir.display())))?;
    let paths = report.paths.clone();
    let ca = CertificateAuthority::from_files(&paths.ca_cert, &paths.ca_key)
        .map_err(|e| failure(format!("reading the cluster CA: {e}")))?;
    let (metrics_cert, metrics_key, metrics_action) = metrics_serving_cert(dir, &ca)?;
    let mut actions: Vec<(FileAction, PathBuf)> = report
        .files
        .iter()
        .map(|f| (f.action, f.path.clone()))
        .collect();
    actions.push((metrics_action, metrics_cert.clone()));
    let summary = summarize(&actions);
    Ok(Files {
        ca_pem: ca.cert_pem().to_string(),
        paths,
        metrics_cert,
        metrics_key,
        summary,
        problems: report.problems.iter().map(ToString::to_string).collect(),
    })
}

/// "created", "reused", or "reused; renewed admin.kubeconfig" for what `pki init` and the
/// metrics certificate did.
fn summarize(actions: &[(FileAction, PathBuf)]) -> String {
    if actions.iter().all(|(a, _)| *a == FileAction::Created) {
        return "created".to_string();
    }
    let changed: Vec<String> = actions
        .iter()
        .filter(|(a, _)| *a != FileAction::Kept)
        .map(|(a, p)| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            format!("{a} {name}")
        })
        .collect();
    if changed.is_empty() {
        "reused".to_string()
    } else {
        format!("reused; {}", changed.join(", "))
    }
}

/// The names the metrics serving certificate carries: the Service name the aggregator dials
/// (`<service>.<namespace>.svc`), and loopback for direct requests.
fn metrics_hosts() -> [String; 3] {
    [
        format!("{SERVICE_NAME}.{SERVICE_NAMESPACE}.svc"),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ]
}

/// `DIR/metrics-server.pem` and `-key.pem`, issued by the cluster CA; kept while they are
/// issued by this CA, carry the names, match each other and have more than 30 days left.
fn metrics_serving_cert(
    dir: &Path,
    ca: &CertificateAuthority,
) -> Result<(PathBuf, PathBuf, FileAction), Fail> {
    let base = dir.join(METRICS_CERT);
    let cert = dir.join(format!("{METRICS_CERT}.pem"));
    let key = dir.join(format!("{METRICS_CERT}-key.pem"));
    let existed = cert.exists() || key.exists();
    if existed && serving_cert_fits(&cert, &key, ca) {
        return Ok((cert, key, FileAction::Kept));
    }
    let request = CertRequest::server(METRICS_CERT, &metrics_hosts()).key(KeyAlgorithm::EcdsaP256);
    let issued = ca
        .issue(&request)
        .map_err(|e| failure(format!("issuing the metrics serving certificate: {e}")))?;
    pki::write_bare_files(&base, &issued)
        .map_err(|e| failure(format!("writing the metrics serving certificate: {e}")))?;
    let action = if existed {
        FileAction::Renewed
    } else {
        FileAction::Created
    };
    Ok((cert, key, action))
}

fn serving_cert_fits(cert: &Path, key: &Path, ca: &CertificateAuthority) -> bool {
    let (Ok(cert_pem), Ok(key_pem)) = (std::fs::read_to_string(cert), std::fs::read_to_string(key))
    else {
        return false;
    };
    let (Ok(info), Ok(ca_info)) = (
        pki::certinfo("metrics serving certificate", &cert_pem),
        pki::certinfo("cluster CA", ca.cert_pem()),
    ) else {
        return false;
    };
    let now = unix_now();
    let renew = i64::try_from(RENEW_WITHIN.as_secs()).unwrap_or(i64::MAX);
    info.authority_key_id == ca_info.subject_key_id
        && info.issuer.names == ca_info.subject.names
        && metrics_hosts().iter().all(|h| info.sans.contains(h))
        && info.not_before_unix <= now
        && info.not_after_unix - now > renew
        && keys_match(&cert_pem, &key_pem)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn keys_match(cert_pem: &str, key_pem: &str) -> bool {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let Ok(chain) =
        CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let Ok(key) = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()) else {
        return false;
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, key, &provider).is_ok()
}

/// Fails with one line when something already listens on `ip:port` (port 0 is always free).
fn check_port(ip: IpAddr, port: u16, flag: &str) -> Result<(), Fail> {
    if port == 0 {
        return Ok(());
    }
    let addr = SocketAddr::new(ip, port);
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) => Err(listen_failure(addr, &e, flag)),
    }
}

fn listen_failure(addr: SocketAddr, e: &std::io::Error, flag: &str) -> Fail {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => failure(format!(
            "port {} is already in use on {}; stop what listens there or choose another port with {flag}",
            addr.port(),
            addr.ip()
        )),
        _ => failure(format!("cannot listen on {addr} ({flag}): {e}")),
    }
}

/// Where clients reach a server listening on `bind`: loopback for a wildcard address.
fn client_host(bind: IpAddr) -> IpAddr {
    match bind {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    }
}

fn server_url(host: IpAddr, port: u16) -> String {
    format!("https://{}", SocketAddr::new(host, port))
}

fn service_map_yaml(metrics: SocketAddr) -> String {
    format!(
        "# Written by `kube-aggregator up` at every start: where the sample metrics server listens.\n\
         services:\n\
         \x20 - namespace: {SERVICE_NAMESPACE}\n\
         \x20   name: {SERVICE_NAME}\n\
         \x20   port: {SERVICE_PORT}\n\
         \x20   addresses: [\"{metrics}\"]\n"
    )
}

fn read(path: &Path) -> Result<String, Fail> {
    std::fs::read_to_string(path).map_err(|e| failure(format!("reading {}: {e}", path.display())))
}

/// Writes through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), Fail> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| failure(format!("writing {}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let written = options.open(&tmp).and_then(|mut f| {
        f.write_all(contents)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// The two APIServices: `v1beta1.metrics.k8s.io` as metrics-server's manifest registers it,
/// and `v1.` (the core API) at the same Service. Both trust the cluster CA.
fn desired_apiservices(ca_pem: &str) -> [(&'static str, APIServiceSpec); 2] {
    let spec = |group: Option<&str>, version: &str, group_priority: i32, version_priority: i32| {
        APIServiceSpec {
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            group: group.map(str::to_string),
            group_priority_minimum: group_priority,
            insecure_skip_tls_verify: None,
            service: Some(ServiceReference {
                namespace: Some(SERVICE_NAMESPACE.to_string()),
                name: Some(SERVICE_NAME.to_string()),
                port: Some(SERVICE_PORT),
            }),
            version: Some(version.to_string()),
            version_priority,
        }
    };
    [
        (
            METRICS_APISERVICE,
            spec(Some("metrics.k8s.io"), "v1beta1", 100, 100),
        ),
        // kube-apiserver's own `v1.` uses these priorities.
        (CORE_APISERVICE, spec(None, "v1", 18000, 1)),
    ]
}

fn internal(name: &str, e: impl std::fmt::Display) -> Fail {
    failure(format!("registering {name}: {e}"))
}

/// Create-or-update of one APIService, as `POST`/`PUT` would do it (defaults, strategy,
/// validation, managed fields under [`MANAGER`]), straight into the store. Returns what
/// happened.
async fn register(
    store: &dyn Store,
    name: &'static str,
    spec: APIServiceSpec,
) -> Result<&'static str, Fail> {
    for _ in 0..5 {
        let now = strategy::now();
        match store.get(name).await {
            Err(store::Error::NotFound { .. }) => {
                let mut obj = APIService {
                    metadata: ObjectMeta {
                        name: Some(name.to_string()),
                        labels: Some(BTreeMap::from([(
                            MANAGED_BY.to_string(),
                            MANAGER.to_string(),
                        )])),
                        uid: Some(new_uid()),
                        creation_timestamp: Some(Time(now)),
                        ..ObjectMeta::default()
                    },
                    spec: Some(spec.clone()),
                    status: None,
                };
                strategy::apply_defaults(&mut obj);
                strategy::prepare_for_create(&mut obj, now);
                invalid_if_any(name, strategy::validate(&obj))?;
                let mut v = serde_json::to_value(&obj).map_err(|e| internal(name, e))?;
                fields::record_update(None, &mut v, MANAGER, Scope::Main, now);
                let obj: APIService = serde_json::from_value(v).map_err(|e| internal(name, e))?;
                match store.create(obj).await {
                    Ok(_) => return Ok("created"),
                    Err(store::Error::AlreadyExists { .. }) => continue,
                    Err(e) => return Err(internal(name, e)),
                }
            }
            Err(e) => return Err(internal(name, e)),
            Ok(old) => {
                let mut new = old.clone();
                new.spec = Some(spec.clone());
                new.metadata
                    .labels
                    .get_or_insert_with(BTreeMap::new)
                    .insert(MANAGED_BY.to_string(), MANAGER.to_string());
                strategy::apply_defaults(&mut new);
                strategy::prepare_for_update(&mut new, &old);
                if new == old {
                    return Ok("unchanged");
                }
                invalid_if_any(name, strategy::validate_update(&new, &old))?;
                let old_v = serde_json::to_value(&old).map_err(|e| internal(name, e))?;
                let mut v = serde_json::to_value(&new).map_err(|e| internal(name, e))?;
                fields::record_update(Some(&old_v), &mut v, MANAGER, Scope::Main, now);
                let new: APIService = serde_json::from_value(v).map_err(|e| internal(name, e))?;
                match store.update(new).await {
                    Ok(_) => return Ok("updated"),
                    Err(store::Error::Conflict { .. } | store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(internal(name, e)),
                }
            }
        }
    }
    Err(failure(format!(
        "registering {name}: it kept changing underneath (is something else writing it?)"
    )))
}

fn invalid_if_any(name: &str, errors: Vec<apimachinery::field::FieldError>) -> Result<(), Fail> {
    if errors.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(failure(format!("registering {name}: {}", text.join("; "))))
}

/// A stored `Available` condition describes the backend of the previous run. It is set to
/// `Unknown` before the controllers start, so that "ready" below always means a check of
/// this run passed (the availability controller writes only what differs).
async fn forget_last_run(bound: &BoundServer) -> Result<(), Fail> {
    let writer = bound.server.status_writer();
    for name in [METRICS_APISERVICE, CORE_APISERVICE] {
        let condition = APIServiceCondition {
            type_: strategy::AVAILABLE.to_string(),
            status: "Unknown".to_string(),
            reason: Some("Starting".to_string()),
            message: Some(
                "kube-aggregator up is starting; the first availability check has not run yet"
                    .to_string(),
            ),
            last_transition_time: None,
        };
        let update = writer
            .update_condition(name, condition, MANAGER, |stored| {
                strategy::available_condition(stored).is_some()
            })
            .await;
        if let Err(status) = update {
            return Err(failure(format!(
                "resetting the Available condition of {name}: {}",
                status.message
            )));
        }
    }
    Ok(())
}

/// Why the setup is not ready yet, one line per reason; empty when it is.
fn not_ready(snapshot: &Snapshot, discovery: &BackendDiscovery) -> Vec<String> {
    let mut reasons = Vec::new();
    for name in [METRICS_APISERVICE, CORE_APISERVICE] {
        match snapshot.items.get(name) {
            // Before the informer's first list nothing is known yet.
            None if !snapshot.synced => reasons.push(format!("{name}: not checked yet")),
            None => reasons.push(format!("{name}: not registered")),
            Some(api) => match strategy::available_condition(api) {
                Some(c) if c.status == "True" => {}
                Some(c) => reasons.push(format!(
                    "{name}: Available={} ({}): {}",
                    c.status,
                    c.reason.as_deref().unwrap_or_default(),
                    c.message.as_deref().unwrap_or_default()
                )),
                None => reasons.push(format!("{name}: not checked yet")),
            },
        }
    }
    match discovery
        .versions
        .get(&("metrics.k8s.io".to_string(), "v1beta1".to_string()))
    {
        Some(v) if v.freshness == Freshness::Current => {}
        Some(_) => reasons.push(
            "metrics.k8s.io/v1beta1 discovery: Stale (the last fetch from the metrics server failed)"
                .to_string(),
        ),
        None => reasons.push("metrics.k8s.io/v1beta1 discovery: not fetched yet".to_string()),
    }
    reasons
}

/// Resolves once [`not_ready`] is empty.
async fn ready(
    mut apiservices: watch::Receiver<Arc<Snapshot>>,
    mut discovery: watch::Receiver<Arc<BackendDiscovery>>,
) {
    loop {
        let done = {
            let s = apiservices.borrow_and_update().clone();
            let d = discovery.borrow_and_update().clone();
            not_ready(&s, &d).is_empty()
        };
        if done {
            return;
        }
        let changed = tokio::select! {
            r = apiservices.changed() => r.is_ok(),
            r = discovery.changed() => r.is_ok(),
        };
        if !changed {
            // The server is gone; the caller notices that on its own.
            std::future::pending::<()>().await;
        }
    }
}

/// SIGINT or SIGTERM; a second one exits at once.
async fn stop_signal() {
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
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "kube-aggregator up: second interrupt, exiting without a clean stop"
            );
            std::process::exit(130);
        }
    });
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=+@,%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Runs both servers until a signal (or a failure), with the readiness wait in between.
async fn serve(
    opts: &Opts,
    bound: BoundServer,
    metrics: metrics_apiserver::Server,
    kubeconfig: &Path,
) -> Result<(), Fail> {
    let apiservices = bound.server.apiservices();
    let discovery = bound.server.backend_discovery().subscribe();
    let (stop_aggregator, aggregator_stop) = watch::channel(false);
    let (stop_metrics, metrics_stop) = watch::channel(false);
    let aggregator = bound.run(stopped(aggregator_stop));
    let metrics = metrics.serve(stopped(metrics_stop));
    tokio::pin!(aggregator);
    tokio::pin!(metrics);
    let signal = stop_signal();
    tokio::pin!(signal);

    say(&format!(
        "Waiting for {METRICS_APISERVICE} and {CORE_APISERVICE} to become Available..."
    ));
    let mut aggregator_done = None;
    let mut metrics_done = None;
    let mut outcome: Result<(), Fail> = Ok(());
    let deadline = tokio::time::sleep(opts.ready_timeout);
    let became_ready = tokio::select! {
        r = &mut aggregator => { aggregator_done = Some(r); false }
        r = &mut metrics => { metrics_done = Some(r); false }
        () = &mut signal => false,
        () = ready(apiservices.clone(), discovery.clone()) => true,
        () = deadline => {
            let reasons = not_ready(&apiservices.borrow().clone(), &discovery.borrow().clone());
            say(&format!("Not ready after {}:", opts.ready_timeout_text));
            for reason in reasons {
                say(&format!("  {reason}"));
            }
            say(&format!("The log is in {}.", opts.dir.join(LOG_FILE).display()));
            outcome = Err(failure(format!(
                "the APIServices did not become Available within {}",
                opts.ready_timeout_text
            )));
            false
        }
    };
    if became_ready {
        let k = shell_quote(&kubeconfig.display().to_string());
        say("Ready. Try:");
        say(&format!("  kubectl --kubeconfig {k} top node"));
        say(&format!("  kubectl --kubeconfig {k} get apiservices"));
        say(&format!(
            "Files and the log ({LOG_FILE}) are in {}. Ctrl-C stops everything.",
            opts.dir.display()
        ));
        tokio::select! {
            r = &mut aggregator => aggregator_done = Some(r),
            r = &mut metrics => metrics_done = Some(r),
            () = &mut signal => {}
        }
    }
    if aggregator_done.is_none() && metrics_done.is_none() && outcome.is_ok() {
        say("Stopping...");
    }
    // The aggregator first (its in-flight requests may still need the backend), then the
    // metrics server.
    let _ = stop_aggregator.send(true);
    let aggregator_result = match aggregator_done {
        Some(r) => r,
        None => aggregator.await,
    };
    tracing::info!("aggregator stopped");
    let _ = stop_metrics.send(true);
    let metrics_result = match metrics_done {
        Some(r) => r,
        None => metrics.await,
    };
    tracing::info!("metrics server stopped");
    if let Err(e) = aggregator_result {
        tracing::error!(error = %e, "the aggregator stopped");
        outcome = outcome.and(Err(failure(format!("the aggregator stopped: {e}"))));
    }
    if let Err(e) = metrics_result {
        tracing::error!(error = %e, "the metrics server stopped");
        outcome = outcome.and(Err(failure(format!("the metrics server stopped: {e}"))));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA_A: &str = "-----BEGIN CERTIFICATE-----\nQQ==\n-----END CERTIFICATE-----\n";
    const CA_B: &str = "-----BEGIN CERTIFICATE-----\nQg==\n-----END CERTIFICATE-----\n";

    async fn register_all(store: &dyn Store, ca: &str) -> Vec<&'static str> {
        let mut outcomes = Vec::new();
        for (name, spec) in desired_apiservices(ca) {
            outcomes.push(register(store, name, spec).await.unwrap());
        }
        outcomes
    }

    #[tokio::test]
    async fn registration_is_create_or_update_and_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::open_with(
            &store::StoreUrl::Embedded {
                dir: dir.path().join("data"),
            },
            store::Options::default(),
        )
        .await
        .unwrap();
        assert_eq!(register_all(store.as_ref(), CA_A).await, ["created"; 2]);
        let first = store.get(METRICS_APISERVICE).await.unwrap();
        assert_eq!(register_all(store.as_ref(), CA_A).await, ["unchanged"; 2]);
        let same = store.get(METRICS_APISERVICE).await.unwrap();
        assert_eq!(
            same.metadata.resource_version,
            first.metadata.resource_version
        );

        // A new CA (the old one was deleted): the caBundle follows, the object stays.
        assert_eq!(register_all(store.as_ref(), CA_B).await, ["updated"; 2]);
        let updated = store.get(METRICS_APISERVICE).await.unwrap();
        assert_eq!(updated.metadata.uid, first.metadata.uid);
        assert_eq!(
            updated.metadata.creation_timestamp,
            first.metadata.creation_timestamp
        );
        let spec = updated.spec.as_ref().unwrap();
        assert_eq!(spec.ca_bundle.as_ref().unwrap().0, CA_B.as_bytes());
        assert_eq!(spec.group.as_deref(), Some("metrics.k8s.io"));
        assert_eq!(
            (spec.group_priority_minimum, spec.version_priority),
            (100, 100)
        );
        assert_eq!(spec.insecure_skip_tls_verify, None);
        let service = spec.service.as_ref().unwrap();
        assert_eq!(
            (
                service.namespace.as_deref(),
                service.name.as_deref(),
                service.port
            ),
            (Some("kube-system"), Some("metrics-server"), Some(443))
        );
        let managers: Vec<_> = updated
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .map(|m| m.manager.as_deref().unwrap_or_default())
            .collect();
        assert_eq!(managers, [MANAGER]);
        assert_eq!(
            updated.metadata.labels.as_ref().unwrap()[MANAGED_BY],
            MANAGER
        );

        // Someone edits the spec: the next start puts it back, keeping their label.
        let mut edited = updated.clone();
        edited.spec.as_mut().unwrap().version_priority = 7;
        edited
            .metadata
            .labels
            .get_or_insert_default()
            .insert("team".into(), "mine".into());
        store.update(edited).await.unwrap();
        register(
            store.as_ref(),
            METRICS_APISERVICE,
            desired_apiservices(CA_B)[0].1.clone(),
        )
        .await
        .unwrap();
        let restored = store.get(METRICS_APISERVICE).await.unwrap();
        assert_eq!(restored.spec.as_ref().unwrap().version_priority, 100);
        assert_eq!(restored.metadata.labels.as_ref().unwrap()["team"], "mine");

        let core = store.get(CORE_APISERVICE).await.unwrap();
        let spec = core.spec.as_ref().unwrap();
        assert_eq!(
            (spec.group.as_deref(), spec.version.as_deref()),
            (None, Some("v1"))
        );
        store.close().await.unwrap();
    }

    fn with_condition(name: &str, status: Option<&str>) -> Arc<APIService> {
        let mut api = APIService {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            ..APIService::default()
        };
        if let Some(status) = status {
            strategy::set_condition(
                &mut api,
                APIServiceCondition {
                    type_: "Available".into(),
                    status: status.into(),
                    reason: Some("FailedDiscoveryCheck".into()),
                    message: Some("failing or missing response from https://x".into()),
                    last_transition_time: None,
                },
            );
        }
        Arc::new(api)
    }

    fn snapshot(items: &[Arc<APIService>]) -> Snapshot {
        Snapshot {
            items: items
                .iter()
                .map(|a| (a.metadata.name.clone().unwrap_or_default(), a.clone()))
                .collect(),
            synced: true,
            ..Snapshot::default()
        }
    }

    fn discovery(freshness: Option<Freshness>) -> BackendDiscovery {
        let mut d = BackendDiscovery::default();
        if let Some(freshness) = freshness {
            d.versions.insert(
                ("metrics.k8s.io".into(), "v1beta1".into()),
                aggregator::FetchedVersion {
                    resources: Vec::new(),
                    freshness,
                },
            );
        }
        d
    }

    #[test]
    fn ready_needs_both_available_and_fresh_discovery() {
        let metrics_ok = with_condition(METRICS_APISERVICE, Some("True"));
        let core_ok = with_condition(CORE_APISERVICE, Some("True"));
        let all = snapshot(&[metrics_ok.clone(), core_ok.clone()]);
        assert!(not_ready(&all, &discovery(Some(Freshness::Current))).is_empty());

        assert_eq!(
            not_ready(&all, &discovery(None)),
            ["metrics.k8s.io/v1beta1 discovery: not fetched yet"]
        );
        assert!(not_ready(&all, &discovery(Some(Freshness::Stale)))[0].contains("Stale"));

        let failing = snapshot(&[
            with_condition(METRICS_APISERVICE, Some("False")),
            with_condition(CORE_APISERVICE, None),
        ]);
        assert_eq!(
            not_ready(&failing, &discovery(Some(Freshness::Current))),
            [
                "v1beta1.metrics.k8s.io: Available=False (FailedDiscoveryCheck): failing or missing response from https://x",
                "v1.: not checked yet",
            ]
        );
        assert_eq!(
            not_ready(
                &snapshot(&[metrics_ok]),
                &discovery(Some(Freshness::Current))
            ),
            ["v1.: not registered"]
        );
        assert_eq!(
            not_ready(&Snapshot::default(), &discovery(None)),
            [
                "v1beta1.metrics.k8s.io: not checked yet",
                "v1.: not checked yet",
                "metrics.k8s.io/v1beta1 discovery: not fetched yet",
            ]
        );
    }

    #[test]
    fn summary_names_what_changed() {
        let p = |n: &str| PathBuf::from("dir").join(n);
        assert_eq!(
            summarize(&[
                (FileAction::Created, p("ca.pem")),
                (FileAction::Created, p("a"))
            ]),
            "created"
        );
        assert_eq!(summarize(&[(FileAction::Kept, p("ca.pem"))]), "reused");
        assert_eq!(
            summarize(&[
                (FileAction::Kept, p("ca.pem")),
                (FileAction::Renewed, p("admin.kubeconfig")),
                (FileAction::Created, p("metrics-server.pem")),
            ]),
            "reused; renewed admin.kubeconfig, created metrics-server.pem"
        );
    }

    #[test]
    fn the_service_map_names_the_metrics_server() {
        let yaml = service_map_yaml("127.0.0.1:40001".parse().unwrap());
        assert!(yaml.contains("namespace: kube-system\n"), "{yaml}");
        assert!(yaml.contains("name: metrics-server\n"), "{yaml}");
        assert!(yaml.contains("port: 443\n"), "{yaml}");
        assert!(yaml.contains("addresses: [\"127.0.0.1:40001\"]"), "{yaml}");
    }

    #[test]
    fn client_host_replaces_wildcards_with_loopback() {
        assert_eq!(
            client_host("0.0.0.0".parse().unwrap()),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            client_host("::".parse().unwrap()),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            client_host("192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            server_url(client_host("::".parse().unwrap()), 6443),
            "https://[::1]:6443"
        );
    }

    #[test]
    fn the_directory_is_made_absolute_and_flags_are_checked() {
        let args = |dir: &str, timeout: &str| Args {
            dir: dir.into(),
            secure_port: 6443,
            bind_address: "127.0.0.1".parse().unwrap(),
            metrics_port: 0,
            node_name: None,
            ready_timeout: timeout.into(),
            verbosity: 0,
        };
        let opts = check(&args("./.kube-aggregator", "30s")).unwrap();
        assert!(opts.dir.is_absolute(), "{}", opts.dir.display());
        assert!(opts.dir.ends_with(".kube-aggregator"));
        assert_eq!(opts.ready_timeout, Duration::from_secs(30));
        let err = check(&args("x", "0s")).unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (EXIT_USAGE, "--ready-timeout: must be more than 0")
        );
    }

    #[test]
    fn the_node_is_named_after_the_hostname_or_asks_for_a_flag() {
        let proc = tempfile::tempdir().unwrap();
        let kernel = proc.path().join("sys/kernel");
        std::fs::create_dir_all(&kernel).unwrap();
        assert!(
            default_node_name(proc.path())
                .unwrap_err()
                .message
                .contains("--node-name")
        );
        std::fs::write(kernel.join("hostname"), "Build-Box\n").unwrap();
        assert_eq!(default_node_name(proc.path()).unwrap(), "build-box");
        std::fs::write(kernel.join("hostname"), "my_laptop\n").unwrap();
        let err = default_node_name(proc.path()).unwrap_err();
        assert_eq!(err.code, EXIT_FAILURE);
        assert!(
            err.message
                .starts_with("this machine's hostname \"my_laptop\" is not a valid node name (")
                && err.message.ends_with("); name the node with --node-name"),
            "{}",
            err.message
        );
    }

    #[test]
    fn shell_quote_leaves_plain_paths_alone() {
        assert_eq!(
            shell_quote("./.kube-aggregator/admin.kubeconfig"),
            "./.kube-aggregator/admin.kubeconfig"
        );
        assert_eq!(shell_quote("/tmp/my dir/a"), "'/tmp/my dir/a'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
    }
}
