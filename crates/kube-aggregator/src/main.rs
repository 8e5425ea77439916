//! The `kube-aggregator` binary: flags → validated config → run. Exit codes: 0 success, 1 runtime
//! failure, 64 invalid usage or configuration (checked before any runtime starts).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// A standalone Kubernetes API aggregation layer, its front-proxy PKI tool, and a one-command local
/// setup.
#[derive(Debug, Parser)]
#[command(name = "kube-aggregator", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Certificates: a cfssl-compatible CA, the front-proxy bundle, checks.
    Pki(cli::pki::Args),
    /// Run the aggregation layer.
    Serve(Box<cli::serve::Args>),
    /// One command to a working local aggregation layer: certs, store, sample backend, kubeconfig.
    Up(cli::up::Args),
    /// Run the sample metrics.k8s.io extension API server.
    MetricsServer(cli::metrics_server::Args),
}

fn main() -> ExitCode {
    // One crypto provider for the whole process; ignore "already installed".
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = cli::pki::normalize_cfssl_args(std::env::args_os().collect());
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { cli::EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli.command {
        Command::Pki(args) => cli::pki::run(args),
        Command::Serve(args) => cli::serve::run(*args),
        Command::Up(args) => cli::up::run(args),
        Command::MetricsServer(args) => cli::metrics_server::run(args),
    }
}
