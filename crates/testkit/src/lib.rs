//! Test harness shared by integration and end-to-end tests. Everything here starts real programs
//! (etcd, kubectl, openssl, cfssl, the `kube-aggregator` binary) and kills them when dropped; a
//! stand-in is used only for kube-apiserver, which cannot run on these machines, and says so.
//! [`backend`] is that stand-in for extension API servers (and for kube-apiserver as the
//! delegate): it verifies the front-proxy certificate with the real `front_proxy` crate and
//! echoes what it received.

pub mod backend;
pub mod etcd;
pub mod kube_apiserver_standin;
pub mod kubectl;
pub mod process;
pub mod server;
pub mod tools;
