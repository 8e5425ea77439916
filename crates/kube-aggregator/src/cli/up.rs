//! `kube-aggregator up`.

use std::process::ExitCode;

/// Flags of `kube-aggregator up`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("kube-aggregator up: not built yet");
    ExitCode::from(super::EXIT_FAILURE)
}
