//! Integration tests of the store against real back-ends: the conformance suite (each test runs
//! against the embedded store and against a real etcd started on free ports), the crash test
//! (a child process killed with SIGKILL while writing), the etcd restart tests and etcd member
//! failures (`failover`).

mod conformance;
mod crash;
mod embedded;
mod etcd;
mod failover;
mod harness;
