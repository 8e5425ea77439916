//! `kube-aggregator metrics-server`.

use std::process::ExitCode;

/// Flags of `kube-aggregator metrics-server`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("kube-aggregator metrics-server: not built yet");
    ExitCode::from(super::EXIT_FAILURE)
}
