//! The seam to the proxy engine: the server decides *where* a request goes; a [`Forwarder`]
//! carries it there. Until the proxy is wired in, [`NotWired`] answers what upstream answers
//! when it cannot reach anything: 503 `service unavailable` for remote APIServices and a 404
//! `Status` for paths nobody serves.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use apimachinery::Status;
use front_proxy::UserInfo;
use http::{Request, Response};
use proxy::body::Body;
use store::APIService;

use crate::request_info::RequestInfo;
use crate::response;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What the server knows about a request when it hands it over.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The authenticated (and, if requested, impersonated) user; the proxy writes it as
    /// `X-Remote-*` headers. The request's own `Authorization`, `Impersonate-*` and
    /// `X-Remote-*` headers have already been removed.
    pub user: UserInfo,
    /// The TCP peer address (for `X-Forwarded-For`).
    pub client_addr: SocketAddr,
    /// The audit ID (also sent back as the `Audit-Id` response header).
    pub audit_id: String,
    /// The parsed request.
    pub info: Arc<RequestInfo>,
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub enum ForwardTarget {
    /// A remote APIService (`spec.service` set) that is `Available`: proxy to its Service.
    /// `discovery` is true for exactly `/apis/<g>/<v>` (upstream's 5 s discovery timeout,
    /// §5.6).
    Remote {
        /// The APIService, as of the latest snapshot.
        apiservice: Arc<APIService>,
        /// Whether this is the group-version discovery path.
        discovery: bool,
    },
    /// A local APIService (`spec.service` unset) or a path nobody here serves: the delegate
    /// (`--delegate-url`), if any.
    Delegate,
}

/// Forwards requests to backends or the delegate. Implemented by the proxy engine.
pub trait Forwarder: Send + Sync + 'static {
    /// Forwards `req` and returns the response, streaming its body. Must not panic; failures
    /// are answered the way upstream's proxy answers them (plain-text 503/502).
    fn forward(
        &self,
        req: Request<Body>,
        ctx: RequestContext,
        target: ForwardTarget,
    ) -> BoxFuture<Response<Body>>;
}

/// The forwarder in place until the proxy engine is wired: remote → 503 `service
/// unavailable`, delegate → 404 `Status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NotWired;

impl Forwarder for NotWired {
    fn forward(
        &self,
        _req: Request<Body>,
        _ctx: RequestContext,
        target: ForwardTarget,
    ) -> BoxFuture<Response<Body>> {
        let r = match target {
            ForwardTarget::Remote { .. } => response::service_unavailable(),
            ForwardTarget::Delegate => response::status(&Status::not_found_path()),
        };
        Box::pin(async move { r })
    }
}
