//! Forward each request the way upstream's aggregator does — the caller's identity asserted only
//! under the proxy's client certificate, bodies streamed, no connection reused after a failed
//! upgrade — and name every failure in words an operator can act on.
//!
//! This crate is the aggregation layer's engine. It knows nothing about how APIServices are
//! stored or served: the `aggregator` crate decides routes, authenticates users and wires it in.
//! `docs/proxy.md` describes the behaviour and the deliberate differences from upstream.
//!
//! # What the server calls
//!
//! - At start-up: a [`ClientIdentity`] from `--proxy-client-cert-file`/`--proxy-client-key-file`
//!   (spawn [`ClientIdentity::watch_files`]), a [`ServiceResolver`] such as
//!   [`ServiceMapResolver`] from `--service-map` (spawn [`ServiceMapResolver::watch`]), an
//!   [`EngineConfig`] from the flags, then [`Engine::new`].
//! - Per remote APIService: [`Engine::backend_for_apiservice`] gives its [`Backend`] from a
//!   cache keyed by name (rebuilt only when `spec.service`, `caBundle` or
//!   `insecureSkipTLSVerify` change; [`Engine::forget_apiservice`] on delete). Or build them
//!   yourself with [`BackendSpec::from_apiservice`] and [`Engine::backend`]. An error
//!   (unparsable `caBundle`) is answered with [`Error::to_response`] (500, §5.1 step 4).
//! - Per request for a remote APIService: if it is not Available answer
//!   [`service_unavailable`]; else [`Engine::forward`] with the authenticated user in a
//!   [`RequestContext`]. The response streams; its [`ForwardInfo`] extension has what the access
//!   log needs. The delegate (`--delegate-url`) is a [`Backend`] too ([`BackendSpec::url`]).
//!   Upgrades need the server to serve HTTP/1.1 with `serve_connection_with_upgrades`.
//! - The availability controller: [`Engine::check_availability`] per remote APIService (every
//!   30 s and when the resolver's snapshot changes), write the [`Availability`] when it differs,
//!   and keep the metrics as [`metrics_update`] says.
//! - Discovery: [`Engine::fetch_discovery`] per remote APIService, publishing each result as it
//!   arrives; [`Engine::forget_discovery`] on delete.
//! - OpenAPI v3: [`Engine::fetch_openapi_v3_index`] per backend, and [`Engine::forward`] for
//!   `/openapi/v3/apis/<group>/<version>?hash=…`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use proxy::{BackendSpec, ClientIdentity, Engine, EngineConfig, RequestContext,
//!             ServiceMapResolver, ServiceRef};
//!
//! # async fn example(request: http::Request<proxy::Body>) -> Result<(), proxy::Error> {
//! let identity = ClientIdentity::from_files("front-proxy-client.pem", "front-proxy-client-key.pem")?;
//! let services = ServiceMapResolver::load("services.yaml")?;
//! tokio::spawn(identity.clone().watch_files(proxy::DEFAULT_CERT_POLL_INTERVAL));
//! tokio::spawn(services.clone().watch(proxy::DEFAULT_POLL_INTERVAL));
//! let engine = Engine::new(EngineConfig::default(), identity, Arc::new(services));
//!
//! let ca_bundle = std::fs::read("metrics-ca.pem").unwrap_or_default();
//! let backend = engine.backend(&BackendSpec::service(
//!     ServiceRef::new("kube-system", "metrics-server", 443),
//!     ca_bundle,
//! ))?;
//! let availability = engine.check_availability(&backend, "metrics.k8s.io", "v1beta1").await;
//! if availability.is_available() {
//!     let mut user = front_proxy::UserInfo::new("alice");
//!     user.ensure_authenticated_group();
//!     let ctx = RequestContext { user: &user, client_addr: None, audit_id: None };
//!     let response = engine.forward(&backend, request, &ctx).await;
//!     # let _ = response;
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod availability;
pub mod body;
mod connect;
mod discovery;
mod engine;
mod error;
mod forward;
mod openapi;
mod pool;
mod resolve;
mod service_map;
mod tls;
mod upgrade;

pub use availability::{
    Availability, AvailabilityReason, ConditionStatus, MetricsUpdate, kube_aggregator_user,
    metrics_update,
};
pub use body::{Body, BoxError, boxed, empty, full};
pub use discovery::{AGGREGATED_ACCEPT, DiscoverySource, VersionDiscovery};
pub use engine::{Backend, BackendSpec, Destination, Engine, EngineConfig};
pub use error::{
    Error, REDIRECT_REJECTED, TransportCause, plain_text, redirect_rejected, service_unavailable,
};
pub use forward::{
    ForwardInfo, RequestContext, canonical_query, is_discovery_path, is_upgrade_request,
};
pub use openapi::{OpenApiV3Index, OpenApiV3Path, openapi_v3_key};
pub use resolve::{BackendAddr, ResolvedService, RoutingMode, ServiceRef, ServiceResolver};
pub use service_map::{DEFAULT_POLL_INTERVAL, ReloadOutcome, ServiceMap, ServiceMapResolver};
pub use tls::{CertSummary, ClientIdentity, DEFAULT_CERT_POLL_INTERVAL, LoadedIdentity};
