//! Decide every request's fate in one place — answer it here as Kubernetes would, or hand it
//! to a [`Forwarder`] — and compute everything shared (discovery, routes, OpenAPI) when
//! registrations change, never per request.
//!
//! The aggregation server: the `apiregistration.k8s.io/v1` registration API ([`registry`]),
//! discovery ([`discovery`]), OpenAPI ([`openapi`]), authentication ([`authn`]),
//! impersonation ([`impersonate`]) and authorization ([`authz`]), reloadable TLS ([`tls`]),
//! health and metrics, wired by [`server`]. Forwarding to extension servers and the delegate
//! goes through the [`forward`] seam; [`proxying`] implements it over the `proxy` crate's
//! engine, and the [`controllers`] keep availability, backend discovery and the OpenAPI index
//! up to date. [`preflight`] lists start-up warnings. [`cluster`] puts it in front of a real
//! kube-apiserver: Services/EndpointSlices resolution, TokenReview, SubjectAccessReview, the
//! delegate's discovery and the trust ConfigMap.
//!
//! ```no_run
//! # async fn run() -> Result<(), aggregator::Error> {
//! use std::sync::Arc;
//! let config = aggregator::Config { secure_port: 0, ..aggregator::Config::default() };
//! let store = store::open("embedded:./data").await.map_err(aggregator::Error::Store)?;
//! let server = aggregator::Server::bind(&config, store, Arc::new(aggregator::forward::NotWired)).await?;
//! println!("listening on {}", server.local_addr()?);
//! server.run(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

// `Status` is the error of every API path and is serialized right away; boxing it would
// only add an allocation to the error path.
#![allow(clippy::result_large_err)]

pub mod authn;
pub mod authz;
pub mod cluster;
pub mod config;
pub mod controllers;
pub mod discovery;
mod error;
pub mod forward;
pub mod handler;
pub mod health;
pub mod impersonate;
pub mod informer;
pub mod metrics;
pub mod openapi;
pub mod preflight;
pub mod proxying;
pub mod registry;
pub mod request_info;
pub mod response;
pub mod server;
pub mod tls;
pub mod version;

pub use config::{ClusterConfig, Config, RequestHeaderFlags};
pub use discovery::{BackendDiscovery, FetchedVersion};
pub use error::Error;
pub use forward::{ForwardTarget, Forwarder, RequestContext};
pub use informer::Snapshot;
pub use registry::{ConditionUpdate, StatusWriter};
pub use server::Server;
