//! `kube-aggregator pki`.

use std::process::ExitCode;

/// Flags of `kube-aggregator pki`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the subcommand.
pub fn run(_args: Args) -> ExitCode {
    eprintln!("kube-aggregator pki: not built yet");
    ExitCode::from(super::EXIT_FAILURE)
}

/// Rewrites cfssl's single-dash long flags (`-initca`, `-ca-key=…`) into clap's `--` form so that
/// commands copied from cfssl guides work unchanged.
pub fn normalize_cfssl_args(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args
}
