//! Serve `metrics.k8s.io/v1beta1` for this machine, and trust a caller's identity only from a
//! verified front-proxy client certificate.
//!
//! A real extension API server, built on the `front-proxy` crate: NodeMetrics of the machine it
//! runs on (CPU from `/proc/stat` deltas, memory working set from `/proc/meminfo`), PodMetrics
//! from a JSON file (or none), aggregated and legacy discovery, `Table` output for
//! `kubectl get`, `/healthz` `/livez` `/readyz`, HTTPS with HTTP/1.1 and h2. Requests are
//! authenticated by request-header (front-proxy), then plain client certificates, then
//! (optionally) as anonymous; they are authorized by SubjectAccessReview against a
//! kube-apiserver when a kubeconfig is given, otherwise by a local read-only policy. Optionally
//! it also serves a minimal core API with this machine's Node (`--serve-core-nodes`), so that
//! `kubectl top node` works against a standalone aggregator.
//!
//! Run it in-process (what `kube-aggregator up` does) or through `kube-aggregator
//! metrics-server`:
//!
//! ```no_run
//! use metrics_apiserver::{Config, RequestHeaderOptions, Server};
//!
//! # async fn run() -> Result<(), metrics_apiserver::Error> {
//! let mut rh = RequestHeaderOptions::new("front-proxy-ca.crt");
//! rh.allowed_names = vec!["front-proxy-client".into()];
//! let config = Config {
//!     tls_cert_file: "serving.crt".into(),
//!     tls_private_key_file: "serving.key".into(),
//!     request_header: Some(rh),
//!     secure_port: 0,
//!     ..Config::default()
//! };
//! let server = Server::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! See `docs/metrics-server.md` for flags, registration behind an aggregator and the
//! differences from kubernetes-sigs/metrics-server.

#![warn(missing_docs)]

pub mod api;
pub mod authn;
pub mod authz;
mod config;
pub mod discovery;
mod error;
pub mod node;
pub mod pods;
pub mod proc;
pub mod quantity;
pub mod request;
pub mod sampler;
mod server;
pub mod table;
pub mod types;

pub use config::{Config, Prepared, RequestHeaderOptions};
pub use error::Error;
pub use server::Server;
