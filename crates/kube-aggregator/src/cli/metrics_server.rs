//! `kube-aggregator metrics-server`: the sample `metrics.k8s.io/v1beta1` extension API server
//! as a standalone process. Flags are k8s.io/apiserver's and metrics-server's names; see
//! `docs/metrics-server.md`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use metrics_apiserver::quantity::parse_go_duration;
use metrics_apiserver::{Config, RequestHeaderOptions, Server};

use super::{EXIT_FAILURE, EXIT_USAGE};

/// Flags of `kube-aggregator metrics-server` (boxed: the subcommand enum stays small).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    flags: Box<Flags>,
}

/// The flags themselves.
#[derive(Debug, clap::Args)]
struct Flags {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,

    /// HTTPS port (0 picks a free one and logs it).
    #[arg(long, default_value_t = 4443)]
    secure_port: u16,

    /// Serving certificate chain (PEM). Behind an APIService it needs the SAN <service>.<namespace>.svc.
    #[arg(long, required = true)]
    tls_cert_file: PathBuf,

    /// Serving certificate key (PEM).
    #[arg(long, required = true)]
    tls_private_key_file: PathBuf,

    /// CA of the front-proxy client certificate; enables request-header authentication. Re-read when it changes.
    #[arg(long)]
    requestheader_client_ca_file: Option<PathBuf>,

    /// Allowed front-proxy client certificate CNs, comma-separated (empty: any CN from the CA).
    #[arg(long, value_delimiter = ',')]
    requestheader_allowed_names: Vec<String>,

    /// Username headers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-User")]
    requestheader_username_headers: Vec<String>,

    /// UID headers, comma-separated (none by default, as upstream; use X-Remote-Uid behind kube-apiserver 1.33+).
    #[arg(long, value_delimiter = ',')]
    requestheader_uid_headers: Vec<String>,

    /// Group headers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Group")]
    requestheader_group_headers: Vec<String>,

    /// Extra-header prefixes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "X-Remote-Extra-")]
    requestheader_extra_headers_prefix: Vec<String>,

    /// CA of plain client-certificate users (CN is the user, O the groups).
    #[arg(long)]
    client_ca_file: Option<PathBuf>,

    /// Let requests without credentials in as system:anonymous (--anonymous-auth=false to be explicit).
    #[arg(long, num_args = 0..=1, default_value_t = false, default_missing_value = "true", action = clap::ArgAction::Set)]
    anonymous_auth: bool,

    /// Kubeconfig of the kube-apiserver that answers SubjectAccessReviews. Without it the local policy decides.
    #[arg(long)]
    authorization_kubeconfig: Option<PathBuf>,

    /// How long allowed SubjectAccessReview answers are cached (Go duration).
    #[arg(long, default_value = "10s", value_parser = duration)]
    authorization_webhook_cache_authorized_ttl: Duration,

    /// How long denied SubjectAccessReview answers are cached (Go duration).
    #[arg(long, default_value = "10s", value_parser = duration)]
    authorization_webhook_cache_unauthorized_ttl: Duration,

    /// Paths that skip authorization, comma-separated; a trailing * makes a prefix.
    #[arg(long, value_delimiter = ',', default_value = "/healthz,/readyz,/livez")]
    authorization_always_allow_paths: Vec<String>,

    /// Local policy (no --authorization-kubeconfig): groups allowed to read metrics and discovery.
    #[arg(long, value_delimiter = ',', default_value = "system:authenticated")]
    authorization_allowed_groups: Vec<String>,

    /// Node name to report (default: the hostname, lower-cased).
    #[arg(long)]
    node_name: Option<String>,

    /// Sampling interval and window length (Go duration).
    #[arg(long, default_value = "10s", value_parser = duration)]
    metric_resolution: Duration,

    /// Where stat, meminfo and sys/kernel are read (e.g. /host/proc in a container).
    #[arg(long, default_value = "/proc")]
    proc_dir: PathBuf,

    /// PodMetricsList JSON file served as pod metrics, re-read when it changes (default: no pods).
    #[arg(long)]
    pod_metrics_file: Option<PathBuf>,

    /// Also serve a minimal core API (/api, /api/v1/nodes) with this machine's Node. Sample-only: for kubectl top node without kube-apiserver.
    #[arg(long)]
    serve_core_nodes: bool,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_go_duration(s).map_err(|e| e.to_string())
}

/// Comma-separated flags given as `--flag=` mean an empty list, as in k8s's string slices.
fn list(values: Vec<String>) -> Vec<String> {
    values.into_iter().filter(|v| !v.is_empty()).collect()
}

impl Flags {
    fn into_config(self) -> Config {
        let request_header = self
            .requestheader_client_ca_file
            .map(|ca| RequestHeaderOptions {
                client_ca_file: ca,
                allowed_names: list(self.requestheader_allowed_names),
                username_headers: list(self.requestheader_username_headers),
                uid_headers: list(self.requestheader_uid_headers),
                group_headers: list(self.requestheader_group_headers),
                extra_headers_prefix: list(self.requestheader_extra_headers_prefix),
            });
        let defaults = Config::default();
        Config {
            bind_address: self.bind_address,
            secure_port: self.secure_port,
            tls_cert_file: self.tls_cert_file,
            tls_private_key_file: self.tls_private_key_file,
            request_header,
            client_ca_file: self.client_ca_file,
            anonymous_auth: self.anonymous_auth,
            authorization_kubeconfig: self.authorization_kubeconfig,
            authorized_ttl: self.authorization_webhook_cache_authorized_ttl,
            unauthorized_ttl: self.authorization_webhook_cache_unauthorized_ttl,
            always_allow_paths: list(self.authorization_always_allow_paths),
            allowed_groups: list(self.authorization_allowed_groups),
            node_name: self.node_name,
            metric_resolution: self.metric_resolution,
            // The first window stays short unless the resolution itself is shorter.
            initial_window: defaults.initial_window.min(self.metric_resolution),
            proc_dir: self.proc_dir,
            pod_metrics_file: self.pod_metrics_file,
            serve_core_nodes: self.serve_core_nodes,
            ..defaults
        }
    }
}

fn exit_for(e: &metrics_apiserver::Error) -> ExitCode {
    eprintln!("kube-aggregator metrics-server: {e}");
    ExitCode::from(if e.is_config() {
        EXIT_USAGE
    } else {
        EXIT_FAILURE
    })
}

/// Runs the subcommand: checks the configuration (exit 64 on bad input, before any runtime),
/// then serves until SIGTERM or SIGINT (exit 0) or a runtime failure (exit 1).
pub fn run(args: Args) -> ExitCode {
    let _logs = super::logging::init("info", super::logging::Sink::Stderr);
    let config = args.flags.into_config();
    if config.request_header.is_none() && config.client_ca_file.is_none() {
        tracing::warn!(
            "neither --requestheader-client-ca-file nor --client-ca-file is set: only anonymous requests (if enabled) can get in"
        );
    }
    let prepared = match config.prepare() {
        Ok(p) => p,
        Err(e) => return exit_for(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-aggregator metrics-server: starting the runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        let server = Server::bind_prepared(prepared).await?;
        server.serve(shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit_for(&e),
    }
}

/// SIGTERM (what Kubernetes and `kill` send) or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, SIGINT still works.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = terminate => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
