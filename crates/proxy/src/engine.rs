//! The engine and its per-APIService backends: configuration, the pooled HTTP client per backend
//! (rebuilt only when the proxy client certificate rotates), and address picking.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use front_proxy::HeaderNames;
use http::uri::Scheme;
use http::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use rustls_pki_types::ServerName;

use crate::body::Body;
use crate::connect::{Connector, Timeouts};
use crate::discovery::DiscoveryCache;
use crate::error::Error;
use crate::pool::{Http1Pool, PooledBody};
use crate::resolve::{BackendAddr, ResolvedService, RoutingMode, ServiceRef, ServiceResolver};
use crate::tls::{BackendTls, ClientIdentity, Roots, TlsFactory};

/// The engine's settings. Each field names its kube-apiserver flag where one exists and says its
/// default (`EngineConfig::default()`).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `--enable-aggregator-routing`: route to endpoint addresses instead of the Service address.
    /// By default [`RoutingMode::ClusterIp`].
    pub routing: RoutingMode,
    /// `--aggregator-reject-forwarding-redirect`: answer 502 instead of passing on a backend's
    /// 3xx with `Location`. By default true.
    pub reject_forwarding_redirects: bool,
    /// `--requestheader-username-headers`, `--requestheader-uid-headers`,
    /// `--requestheader-group-headers`, `--requestheader-extra-headers-prefix`: the identity
    /// headers written to backends (the first name of each list) and stripped from clients (all
    /// names). By default `X-Remote-User`, `X-Remote-Uid`, `X-Remote-Group`, `X-Remote-Extra-`.
    pub identity_headers: HeaderNames,
    /// Offer HTTP/2 to backends (ALPN `h2, http/1.1`): concurrent requests then share one
    /// multiplexed connection. When false, pooled requests use HTTP/1.1 connections only, one per
    /// request in flight, driven by the requesting task itself — the faster choice for small
    /// API requests (no shared connection lock, no hop to a connection task, and a cheaper
    /// exchange for the backend too; `docs/benchmarks.md`). By default true.
    pub http2: bool,
    /// TCP connect timeout. By default 30 s (client-go's dialer).
    pub connect_timeout: Duration,
    /// TLS handshake timeout. By default 10 s (client-go's transport).
    pub tls_handshake_timeout: Duration,
    /// Deadline of a proxied request for exactly `/apis/<group>/<version>` (§5.6). By default 5 s.
    pub discovery_path_timeout: Duration,
    /// Deadline of one availability probe attempt. By default 5 s (§2.2).
    pub probe_timeout: Duration,
    /// Deadline of each request of a backend discovery fetch. By default 5 s (§3.7).
    pub discovery_fetch_timeout: Duration,
    /// Deadline of an OpenAPI v3 index download. By default 60 s (§4.2).
    pub openapi_fetch_timeout: Duration,
    /// How long idle pooled connections are kept. By default 90 s (Go's transport).
    pub pool_idle_timeout: Duration,
    /// How long endpoint routing skips an address that refused a connection. By default 10 s.
    pub failed_endpoint_backoff: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            routing: RoutingMode::ClusterIp,
            reject_forwarding_redirects: true,
            identity_headers: HeaderNames::default(),
            http2: true,
            connect_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(10),
            discovery_path_timeout: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(5),
            discovery_fetch_timeout: Duration::from_secs(5),
            openapi_fetch_timeout: Duration::from_secs(60),
            pool_idle_timeout: Duration::from_secs(90),
            failed_endpoint_backoff: Duration::from_secs(10),
        }
    }
}

/// Where a backend's requests go.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// An APIService's Service, resolved per request through the [`ServiceResolver`].
    Service(ServiceRef),
    /// A fixed `https://host:port` or `http://host:port` (e.g. `--delegate-url`). The TLS server
    /// name is the URL's host.
    Url(Uri),
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Service(s) => write!(f, "service {s}"),
            Destination::Url(u) => write!(f, "{u}"),
        }
    }
}

/// What the engine needs to know about one remote APIService (or the delegate).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    /// Where requests go.
    pub destination: Destination,
    /// `spec.caBundle` (PEM). Empty means the system roots.
    pub ca_bundle: Vec<u8>,
    /// `spec.insecureSkipTLSVerify`. By default false.
    pub insecure_skip_tls_verify: bool,
}

impl BackendSpec {
    /// A backend behind a Service, verified against `ca_bundle`.
    pub fn service(service: ServiceRef, ca_bundle: impl Into<Vec<u8>>) -> Self {
        BackendSpec {
            destination: Destination::Service(service),
            ca_bundle: ca_bundle.into(),
            insecure_skip_tls_verify: false,
        }
    }

    /// A fixed URL destination (the delegate), verified against `ca_bundle`.
    pub fn url(url: Uri, ca_bundle: impl Into<Vec<u8>>) -> Self {
        BackendSpec {
            destination: Destination::Url(url),
            ca_bundle: ca_bundle.into(),
            insecure_skip_tls_verify: false,
        }
    }

    /// The spec of a remote APIService: `Ok(None)` for a local one (no `spec.service`). The port
    /// defaults to 443; one outside 1..65535 (which validation rejects) is an error.
    pub fn from_apiservice(api_service: &APIService) -> Result<Option<Self>, Error> {
        let Some(spec) = api_service.spec.as_ref() else {
            return Ok(None);
        };
        let Some(service) = spec.service.as_ref() else {
            return Ok(None);
        };
        let port = service.port.unwrap_or(443);
        let port = u16::try_from(port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Error::InvalidSpec {
                reason: format!("spec.service.port {port} is not in 1..65535"),
            })?;
        Ok(Some(BackendSpec {
            destination: Destination::Service(ServiceRef::new(
                service.namespace.clone().unwrap_or_default(),
                service.name.clone().unwrap_or_default(),
                port,
            )),
            ca_bundle: spec
                .ca_bundle
                .as_ref()
                .map(|b| b.0.clone())
                .unwrap_or_default(),
            insecure_skip_tls_verify: spec.insecure_skip_tls_verify.unwrap_or(false),
        }))
    }
}

pub(crate) struct EngineInner {
    pub(crate) config: EngineConfig,
    pub(crate) resolver: Arc<dyn ServiceResolver>,
    pub(crate) tls: TlsFactory,
    pub(crate) discovery: DiscoveryCache,
    /// Backends by APIService name, for [`Engine::backend_for_apiservice`].
    backends: RwLock<HashMap<String, (BackendSpec, Backend)>>,
}

/// Whether `spec` still describes `api`'s backend, without allocating (checked per request).
fn same_backend(spec: &BackendSpec, api: &APIService) -> bool {
    let Some(api_spec) = api.spec.as_ref() else {
        return false;
    };
    let Some(service) = api_spec.service.as_ref() else {
        return false;
    };
    let Destination::Service(current) = &spec.destination else {
        return false;
    };
    current.namespace == service.namespace.as_deref().unwrap_or_default()
        && current.name == service.name.as_deref().unwrap_or_default()
        && i32::from(current.port) == service.port.unwrap_or(443)
        && spec.insecure_skip_tls_verify == api_spec.insecure_skip_tls_verify.unwrap_or(false)
        && spec.ca_bundle.as_slice()
            == api_spec
                .ca_bundle
                .as_ref()
                .map(|b| b.0.as_slice())
                .unwrap_or_default()
}

/// The forwarding engine: cheap to clone, shared by every request. See the crate docs for the
/// request path; [`Engine::backend`] prepares one APIService's backend, then
/// [`Engine::forward`], [`Engine::check_availability`], [`Engine::fetch_discovery`] and
/// [`Engine::fetch_openapi_v3_index`] use it.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine presenting `identity` to backends and resolving Services with `resolver`.
    pub fn new(
        config: EngineConfig,
        identity: ClientIdentity,
        resolver: Arc<dyn ServiceResolver>,
    ) -> Engine {
        Engine {
            inner: Arc::new(EngineInner {
                config,
                resolver,
                tls: TlsFactory::new(identity),
                discovery: DiscoveryCache::default(),
                backends: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// The proxy client certificate.
    pub fn identity(&self) -> &ClientIdentity {
        self.inner.tls.identity()
    }

    /// Prepares a backend: checks the TLS settings and builds (or reuses) its TLS configs and a
    /// connection pool. Call it when an APIService is added or changed and keep the result in
    /// the route table; do not call it per request. An unparsable `caBundle` or a bad URL is an
    /// error the server answers with 500 for that APIService ([`Error::to_response`]).
    pub fn backend(&self, spec: &BackendSpec) -> Result<Backend, Error> {
        let (server_name, scheme, fixed) = match &spec.destination {
            Destination::Service(service) => {
                let name = service.server_name();
                let server_name =
                    ServerName::try_from(name.clone()).map_err(|_| Error::InvalidTlsSettings {
                        reason: format!("{name:?} is not a valid TLS server name"),
                    })?;
                (server_name, Scheme::HTTPS, None)
            }
            Destination::Url(url) => {
                let (server_name, scheme, addr) = parse_url(url)?;
                let fixed = Arc::new(ResolvedService::new(Some(addr), Vec::new()));
                (server_name, scheme, Some(fixed))
            }
        };
        let transport = build_transport(&self.inner, spec, &server_name, &scheme)?;
        let inner = BackendInner {
            spec: spec.clone(),
            server_name,
            scheme,
            fixed,
            slot: RwLock::new(Arc::new(transport)),
        };
        Ok(Backend {
            inner: Arc::new(inner),
        })
    }
}

impl Engine {
    /// The backend of a remote APIService, from a cache keyed by its name: built on first use
    /// and rebuilt when its `spec.service`, `caBundle` or `insecureSkipTLSVerify` change, so the
    /// server can call this per request with the APIService of its route table. `Ok(None)` for
    /// a local APIService. A failure (unparsable `caBundle`) is not cached.
    pub fn backend_for_apiservice(&self, api: &APIService) -> Result<Option<Backend>, Error> {
        let name = api.metadata.name.as_deref().unwrap_or_default();
        {
            let backends = match self.inner.backends.read() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some((spec, backend)) = backends.get(name)
                && same_backend(spec, api)
            {
                return Ok(Some(backend.clone()));
            }
        }
        let Some(spec) = BackendSpec::from_apiservice(api)? else {
            self.forget_apiservice(name);
            return Ok(None);
        };
        let backend = self.backend(&spec)?;
        let mut backends = match self.inner.backends.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        backends.insert(name.to_owned(), (spec, backend.clone()));
        Ok(Some(backend))
    }

    /// Drops the cached backend of a deleted APIService (its idle connections close).
    pub fn forget_apiservice(&self, name: &str) {
        let mut backends = match self.inner.backends.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        backends.remove(name);
    }
}

fn parse_url(url: &Uri) -> Result<(ServerName<'static>, Scheme, BackendAddr), Error> {
    let invalid = |reason| Error::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let scheme = match url.scheme_str() {
        Some("https") => Scheme::HTTPS,
        Some("http") => Scheme::HTTP,
        _ => return Err(invalid("the scheme must be https or http")),
    };
    let Some(authority) = url.authority() else {
        return Err(invalid("no host"));
    };
    if authority.as_str().contains('@') {
        return Err(invalid("user information is not allowed"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() {
        return Err(invalid("the URL must not have a path or query"));
    }
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
    let host = authority.host();
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let addr: BackendAddr = if bare.contains(':') {
        format!("[{bare}]:{port}")
    } else {
        format!("{bare}:{port}")
    }
    .parse()
    .map_err(|_| invalid("the host is not an IP or DNS name"))?;
    let server_name =
        ServerName::try_from(bare.to_owned()).map_err(|_| invalid("invalid TLS server name"))?;
    Ok((server_name, scheme, addr))
}

/// Everything needed to send requests to one backend at one client certificate generation.
pub(crate) struct Transport {
    pub(crate) generation: u64,
    /// For ordinary requests.
    pooled: Pooled,
    /// For upgrades and probes: fresh connections with ALPN http/1.1 only.
    pub(crate) http1: Connector,
}

/// The pool ordinary requests go through.
enum Pooled {
    /// `EngineConfig::http2`: hyper-util's client, HTTP/2 when the backend offers it in ALPN
    /// (one multiplexed connection), pooled HTTP/1.1 otherwise.
    Negotiated(Box<Client<Connector, Body>>),
    /// HTTP/1.1 only: our pool, whose connections are driven by the requesting task.
    Http1(Arc<Http1Pool>),
}

impl Transport {
    /// Sends one request (absolute URI) to `addr` through the pool. Errors keep their source
    /// chain for [`crate::connect::classify_chain`].
    pub(crate) async fn send(
        &self,
        addr: &BackendAddr,
        request: Request<Body>,
    ) -> Result<Response<TransportBody>, crate::BoxError> {
        match &self.pooled {
            Pooled::Negotiated(client) => match client.request(request).await {
                Ok(response) => Ok(response.map(TransportBody::Shared)),
                Err(e) => Err(Box::new(e)),
            },
            Pooled::Http1(pool) => match pool.send(addr, request).await {
                Ok(response) => Ok(response.map(TransportBody::Pooled)),
                Err(e) => Err(e),
            },
        }
    }
}

/// A backend response body from either pool; both fail with hyper's errors, which the error
/// classification reads.
pub(crate) enum TransportBody {
    Shared(hyper::body::Incoming),
    Pooled(PooledBody),
}

impl http_body::Body for TransportBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        match self.get_mut() {
            TransportBody::Shared(body) => std::pin::Pin::new(body).poll_frame(cx),
            TransportBody::Pooled(body) => std::pin::Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TransportBody::Shared(body) => body.is_end_stream(),
            TransportBody::Pooled(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            TransportBody::Shared(body) => body.size_hint(),
            TransportBody::Pooled(body) => body.size_hint(),
        }
    }
}

struct BackendInner {
    spec: BackendSpec,
    server_name: ServerName<'static>,
    scheme: Scheme,
    /// The address of a URL destination.
    fixed: Option<Arc<ResolvedService>>,
    /// Replaced only when the client certificate generation changes.
    slot: RwLock<Arc<Transport>>,
}

fn build_transport(
    engine: &EngineInner,
    spec: &BackendSpec,
    server_name: &ServerName<'static>,
    scheme: &Scheme,
) -> Result<Transport, Error> {
    let generation = engine.tls.identity().generation();
    let timeouts = Timeouts {
        connect: engine.config.connect_timeout,
        handshake: engine.config.tls_handshake_timeout,
    };
    let (normal, http1) = if *scheme == Scheme::HTTP {
        let plain = Connector {
            tls: None,
            server_name: server_name.clone(),
            roots: Roots::Insecure,
            timeouts,
        };
        (plain.clone(), plain)
    } else {
        let tls: Arc<BackendTls> = engine
            .tls
            .get(&spec.ca_bundle, spec.insecure_skip_tls_verify)?;
        let make = |config| Connector {
            tls: Some(config),
            server_name: server_name.clone(),
            roots: tls.roots,
            timeouts,
        };
        let pooled = if engine.config.http2 {
            &tls.normal
        } else {
            &tls.http1
        };
        (make(Arc::clone(pooled)), make(Arc::clone(&tls.http1)))
    };
    let pooled = if engine.config.http2 {
        Pooled::Negotiated(Box::new(
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(engine.config.pool_idle_timeout)
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                // Dead HTTP/2 connections are noticed within ~45 s instead of at the next
                // request, as client-go's ReadIdleTimeout/PingTimeout do.
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_timeout(Duration::from_secs(15))
                .build(normal),
        ))
    } else {
        Pooled::Http1(Http1Pool::new(normal, engine.config.pool_idle_timeout))
    };
    Ok(Transport {
        generation,
        pooled,
        http1,
    })
}

/// One APIService's backend as prepared by [`Engine::backend`]: its TLS settings, server name and
/// connection pool. Cheap to clone. Keep one per APIService in the route table and rebuild it
/// when the APIService's `spec.service`, `caBundle` or `insecureSkipTLSVerify` change.
#[derive(Clone)]
pub struct Backend {
    inner: Arc<BackendInner>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("destination", &self.inner.spec.destination)
            .field("server_name", &self.inner.server_name)
            .finish_non_exhaustive()
    }
}

/// The address one request goes to, and the balancing state to report its fate to.
pub(crate) struct Target {
    pub(crate) service: Arc<ResolvedService>,
    pub(crate) addr: BackendAddr,
}

impl Backend {
    /// The spec it was built from.
    pub fn spec(&self) -> &BackendSpec {
        &self.inner.spec
    }

    /// The TLS server name verified (`<service>.<namespace>.svc`, or the URL's host).
    pub fn server_name(&self) -> String {
        self.inner.server_name.to_str().into_owned()
    }

    /// `https` or `http`.
    pub(crate) fn scheme(&self) -> &Scheme {
        &self.inner.scheme
    }

    /// A key naming the destination, for caches shared by APIServices of one Service.
    pub(crate) fn cache_key(&self) -> String {
        self.inner.spec.destination.to_string()
    }

    /// The transport for the current client certificate generation. The common case is one
    /// read lock and an `Arc` clone; after a rotation the first caller builds a new pool (old
    /// connections close once their requests finish).
    pub(crate) fn transport(&self, engine: &EngineInner) -> Arc<Transport> {
        let generation = engine.tls.identity().generation();
        let current = match self.inner.slot.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        if current.generation == generation {
            return current;
        }
        let inner = &self.inner;
        match build_transport(engine, &inner.spec, &inner.server_name, &inner.scheme) {
            Ok(fresh) => {
                let fresh = Arc::new(fresh);
                let mut slot = match inner.slot.write() {
                    Ok(guard) => guard,
                    Err(poisoned) => poisoned.into_inner(),
                };
                *slot = Arc::clone(&fresh);
                fresh
            }
            Err(error) => {
                // Settings that built once build again; should the certificate be unusable after
                // all, keep serving with the previous pool rather than failing requests.
                tracing::warn!(%error, backend = ?self, "rebuilding the backend transport failed");
                current
            }
        }
    }

    /// The resolved Service (or the URL's fixed address).
    pub(crate) fn resolve(&self, engine: &EngineInner) -> Result<Arc<ResolvedService>, Error> {
        match (&self.inner.fixed, &self.inner.spec.destination) {
            (Some(fixed), _) => Ok(Arc::clone(fixed)),
            (None, Destination::Service(service)) => engine.resolver.resolve(service),
            (None, Destination::Url(_)) => Err(Error::InvalidUrl {
                url: self.inner.spec.destination.to_string(),
                reason: "no address",
            }),
        }
    }

    /// The routing mode for this backend: URL destinations have one address.
    pub(crate) fn routing(&self, engine: &EngineInner) -> RoutingMode {
        if self.inner.fixed.is_some() {
            RoutingMode::ClusterIp
        } else {
            engine.config.routing
        }
    }

    /// Picks the address for one request.
    pub(crate) fn pick_from(
        &self,
        engine: &EngineInner,
        service: Arc<ResolvedService>,
    ) -> Result<Target, Error> {
        match service.pick(self.routing(engine)) {
            Some(addr) => {
                let addr = addr.clone();
                Ok(Target { service, addr })
            }
            None => Err(self.missing_endpoints()),
        }
    }

    /// Resolves and picks.
    pub(crate) fn pick(&self, engine: &EngineInner) -> Result<Target, Error> {
        let service = self.resolve(engine)?;
        self.pick_from(engine, service)
    }

    pub(crate) fn missing_endpoints(&self) -> Error {
        match &self.inner.spec.destination {
            Destination::Service(service) => Error::MissingEndpoints {
                service: service.clone(),
            },
            Destination::Url(url) => Error::InvalidUrl {
                url: url.to_string(),
                reason: "no address",
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        let ok = |s: &str| parse_url(&s.parse::<Uri>().unwrap());
        let (name, scheme, addr) = ok("https://10.0.0.1:6443").unwrap();
        assert_eq!(name.to_str(), "10.0.0.1");
        assert_eq!(scheme, Scheme::HTTPS);
        assert_eq!(addr.to_string(), "10.0.0.1:6443");
        let (name, _, addr) = ok("https://kube.example.com").unwrap();
        assert_eq!(name.to_str(), "kube.example.com");
        assert_eq!(addr.to_string(), "kube.example.com:443");
        let (_, scheme, addr) = ok("http://[::1]").unwrap();
        assert_eq!(scheme, Scheme::HTTP);
        assert_eq!(addr.to_string(), "[::1]:80");
        for bad in [
            "ftp://x:1",
            "https://x:1/prefix",
            "https://x:1/?a=b",
            "/relative",
        ] {
            assert!(ok(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn apiservice_backends_are_cached_until_their_spec_changes() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let map = crate::ServiceMap::parse("").unwrap();
        let engine = Engine::new(
            EngineConfig::default(),
            ClientIdentity::none(),
            Arc::new(crate::ServiceMapResolver::from_map(map)),
        );
        let mut api: APIService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                     "groupPriorityMinimum": 100, "versionPriority": 100,
                     "service": {"namespace": "kube-system", "name": "metrics-server"},
                     "insecureSkipTLSVerify": true}
        }))
        .unwrap();
        let a = engine.backend_for_apiservice(&api).unwrap().unwrap();
        let b = engine.backend_for_apiservice(&api).unwrap().unwrap();
        assert!(Arc::ptr_eq(&a.inner, &b.inner));
        if let Some(service) = api.spec.as_mut().and_then(|s| s.service.as_mut()) {
            service.port = Some(8443);
        }
        let c = engine.backend_for_apiservice(&api).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&a.inner, &c.inner));
        assert_eq!(
            c.spec().destination,
            Destination::Service(ServiceRef::new("kube-system", "metrics-server", 8443))
        );
        if let Some(spec) = api.spec.as_mut() {
            spec.insecure_skip_tls_verify = None;
            spec.ca_bundle = Some(k8s_openapi::ByteString(b"not pem".to_vec()));
        }
        assert!(matches!(
            engine.backend_for_apiservice(&api),
            Err(Error::InvalidTlsSettings { .. })
        ));
        if let Some(spec) = api.spec.as_mut() {
            spec.service = None;
        }
        assert!(engine.backend_for_apiservice(&api).unwrap().is_none());
    }

    #[test]
    fn apiservice_specs_convert() {
        let api: APIService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {
                "group": "metrics.k8s.io", "version": "v1beta1",
                "groupPriorityMinimum": 100, "versionPriority": 100,
                "service": {"namespace": "kube-system", "name": "metrics-server"},
                "caBundle": "Y2E=",
            }
        }))
        .unwrap();
        let spec = BackendSpec::from_apiservice(&api).unwrap().unwrap();
        assert_eq!(
            spec.destination,
            Destination::Service(ServiceRef::new("kube-system", "metrics-server", 443))
        );
        assert_eq!(spec.ca_bundle, b"ca");
        assert!(!spec.insecure_skip_tls_verify);
        let local: APIService = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "v1.apps"},
            "spec": {"group": "apps", "version": "v1", "groupPriorityMinimum": 1, "versionPriority": 1}
        }))
        .unwrap();
        assert!(BackendSpec::from_apiservice(&local).unwrap().is_none());
        let mut bad = api.clone();
        if let Some(service) = bad.spec.as_mut().and_then(|s| s.service.as_mut()) {
            service.port = Some(70000);
        }
        assert!(BackendSpec::from_apiservice(&bad).is_err());
    }
}
