//! `kube-aggregator serve`.

use std::process::ExitCode;

/// Flags of `kube-aggregator serve`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("kube-aggregator serve: not built yet");
    ExitCode::from(super::EXIT_FAILURE)
}
