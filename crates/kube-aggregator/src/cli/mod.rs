//! One module per subcommand; each owns its flags (`Args`), validates them into its config and runs.

pub mod logging;
pub mod metrics_server;
pub mod pki;
pub mod serve;
pub mod up;

/// Exit code for invalid usage or configuration (BSD `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for a failure at run time.
pub const EXIT_FAILURE: u8 = 1;
