//! The kube-aggregator benchmark harness (`bench/README.md`): process accounting from `/proc`,
//! the load generators' invocation and parsing, a small HTTPS client for the control plane and
//! watches, the contenders' set-up, and the report. Benchmarks are not tests: nothing here
//! asserts a timing; the driver (`bench-run`) measures and writes what it saw.

pub mod client;
pub mod load;
pub mod procfs;
pub mod report;
pub mod setup;
pub mod watch;
