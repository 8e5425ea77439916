//! The proxy engine behind the [`Forwarder`] seam: [`ProxySetup`] turns the proxy flags into an
//! engine (client certificate, service map, delegate), and [`EngineForwarder`] hands each
//! request to it and writes one access-log line. Wiring only: the request rewrite, TLS,
//! identity headers and error answers are the `proxy` crate's (`docs/proxy.md`).

use std::sync::Arc;
use std::time::Instant;

use apimachinery::Status;
use http::{HeaderValue, Request, Response};
use proxy::body::Body;
use proxy::{
    Backend, BackendSpec, ClientIdentity, Engine, EngineConfig, ForwardInfo, RoutingMode,
    ServiceMap, ServiceMapResolver,
};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::controllers::availability::Recheck;
use crate::error::Error;
use crate::forward::{BoxFuture, ForwardTarget, Forwarder, RequestContext};
use crate::response;

/// The tracing target of the per-request access log (one line at info per proxied request).
pub const ACCESS_LOG_TARGET: &str = "access";

/// The proxy built from the flags: the engine, the certificate and service map it reloads, and
/// the delegate. Cheap to clone.
#[derive(Clone)]
pub struct ProxySetup {
    /// The forwarding engine.
    pub engine: Engine,
    /// The proxy client certificate (`--proxy-client-cert-file`); [`ClientIdentity::none`]
    /// without one.
    pub identity: ClientIdentity,
    /// The Services resolver (`--service-map`); empty without the flag, so every remote
    /// APIService is `ServiceNotFound`.
    pub services: ServiceMapResolver,
    /// Whether `--service-map` was given (only then is the file watched).
    pub has_service_map: bool,
    /// The Services/EndpointSlices resolver, used instead of the service map when the cluster
    /// is reachable (`--kubeconfig`, `--delegate-kubeconfig` or in-cluster) and no
    /// `--service-map` is given; its informers start with [`crate::cluster::ClusterSetup`].
    pub cluster: Option<crate::cluster::resolver::ClusterResolver>,
    /// The delegate (`--delegate-url`).
    pub delegate: Option<Backend>,
}

impl std::fmt::Debug for ProxySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxySetup")
            .field("engine", &self.engine)
            .field("has_service_map", &self.has_service_map)
            .field("delegate", &self.delegate)
            .finish_non_exhaustive()
    }
}

/// The engine settings the flags choose; the rest are upstream's defaults
/// ([`EngineConfig::default`]).
pub fn engine_config(config: &Config) -> Result<EngineConfig, Error> {
    Ok(EngineConfig {
        routing: if config.enable_aggregator_routing {
            RoutingMode::Endpoints
        } else {
            RoutingMode::ClusterIp
        },
        reject_forwarding_redirects: config.aggregator_reject_forwarding_redirect,
        identity_headers: config.proxy_header_names()?,
        // HTTP/2 when the backend offers it, as upstream; `--proxy-backend-http2=false` uses
        // pooled HTTP/1.1 connections driven by each request's own task (docs/benchmarks.md).
        http2: config.proxy_backend_http2,
        ..EngineConfig::default()
    })
}

impl ProxySetup {
    /// Reads the proxy's files (client certificate and key, service map, delegate CA) and builds
    /// the engine. Needs no runtime, so the binary calls it while validating flags: any error
    /// names the flag's file and means exit 64.
    pub fn from_config(config: &Config) -> Result<ProxySetup, Error> {
        let identity = match (
            &config.proxy_client_cert_file,
            &config.proxy_client_key_file,
        ) {
            (Some(cert), Some(key)) => {
                ClientIdentity::from_files(cert, key).map_err(Error::Proxy)?
            }
            (None, None) => ClientIdentity::none(),
            _ => {
                return Err(Error::Config(
                    "--proxy-client-cert-file and --proxy-client-key-file must be given together"
                        .into(),
                ));
            }
        };
        let (services, has_service_map) = match &config.service_map {
            Some(path) => (ServiceMapResolver::load(path).map_err(Error::Proxy)?, true),
            None => (
                ServiceMapResolver::from_map(ServiceMap::parse("").map_err(Error::Config)?),
                false,
            ),
        };
        let engine_config = engine_config(config)?;
        let cluster = (!has_service_map && crate::cluster::own_source(config).is_some())
            .then(|| crate::cluster::resolver::ClusterResolver::new(engine_config.routing));
        let resolver: Arc<dyn proxy::ServiceResolver> = match &cluster {
            Some(c) => Arc::new(c.clone()),
            None => Arc::new(services.clone()),
        };
        let engine = Engine::new(engine_config, identity.clone(), resolver);
        let delegate = match &config.delegate_url {
            Some(url) => {
                let ca = match &config.delegate_ca_file {
                    Some(path) => std::fs::read(path).map_err(|e| Error::read(path, e))?,
                    None => Vec::new(),
                };
                let backend = engine
                    .backend(&BackendSpec::url(url.clone(), ca))
                    .map_err(|e| Error::Config(format!("--delegate-url: {e}")))?;
                Some(backend)
            }
            // `--delegate-kubeconfig` or in-cluster: the kubeconfig's server and CA, still with
            // the front-proxy certificate and the caller's identity.
            None => match crate::cluster::delegate_target(config)? {
                Some(target) => {
                    let mut spec = BackendSpec::url(target.url, target.ca_pem);
                    spec.insecure_skip_tls_verify = target.insecure;
                    Some(
                        engine
                            .backend(&spec)
                            .map_err(|e| Error::Config(format!("--delegate-kubeconfig: {e}")))?,
                    )
                }
                None => None,
            },
        };
        Ok(ProxySetup {
            engine,
            identity,
            services,
            has_service_map,
            cluster,
            delegate,
        })
    }

    /// The forwarder for [`crate::Server::bind`]. `recheck` asks the availability controller
    /// to probe an APIService again when its backend could not be reached.
    pub fn forwarder(&self, recheck: Option<Recheck>) -> Arc<EngineForwarder> {
        Arc::new(EngineForwarder {
            engine: self.engine.clone(),
            delegate: self.delegate.clone(),
            recheck,
        })
    }

    /// Spawns the reload loops: the proxy client certificate (every 10 s) and the service map
    /// (every 2 s). Call inside the runtime; abort the handles at shutdown.
    pub fn spawn_reloaders(&self) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(
            self.identity
                .clone()
                .watch_files(proxy::DEFAULT_CERT_POLL_INTERVAL),
        )];
        if self.has_service_map {
            tasks.push(tokio::spawn(
                self.services.clone().watch(proxy::DEFAULT_POLL_INTERVAL),
            ));
        }
        tasks
    }
}

/// The [`Forwarder`] over [`proxy::Engine`]: a remote APIService goes to its backend, anything
/// delegated to `--delegate-url` (404 `Status` without one). Errors are the engine's answers
/// (upstream's plain-text 503/502/500).
pub struct EngineForwarder {
    engine: Engine,
    delegate: Option<Backend>,
    recheck: Option<Recheck>,
}

impl std::fmt::Debug for EngineForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineForwarder")
            .field("delegate", &self.delegate)
            .finish_non_exhaustive()
    }
}

impl EngineForwarder {
    /// A forwarder over `engine`, with an optional delegate and availability re-check handle.
    pub fn new(engine: Engine, delegate: Option<Backend>, recheck: Option<Recheck>) -> Self {
        EngineForwarder {
            engine,
            delegate,
            recheck,
        }
    }
}

/// Where a request was sent, for the access log.
enum Destination {
    ApiService(String, Backend),
    Delegate(Backend),
}

impl Forwarder for EngineForwarder {
    fn forward(
        &self,
        req: Request<Body>,
        ctx: RequestContext,
        target: ForwardTarget,
    ) -> BoxFuture<Response<Body>> {
        let engine = self.engine.clone();
        let recheck = self.recheck.clone();
        let start = Instant::now();
        let destination = match target {
            ForwardTarget::Remote { apiservice, .. } => {
                let name = apiservice.metadata.name.clone().unwrap_or_default();
                match engine.backend_for_apiservice(&apiservice) {
                    Ok(Some(backend)) => Destination::ApiService(name, backend),
                    // The route table said remote, the object says local: the delegate.
                    Ok(None) => match &self.delegate {
                        Some(d) => Destination::Delegate(d.clone()),
                        None => return not_found(),
                    },
                    // An unusable caBundle: upstream answers 500 with the text (§5.1 step 4).
                    Err(error) => {
                        let r = error.to_response();
                        access_log(&ctx, &name, None, r.status().as_u16(), start);
                        return Box::pin(async move { r });
                    }
                }
            }
            ForwardTarget::Delegate => match &self.delegate {
                Some(d) => Destination::Delegate(d.clone()),
                None => return not_found(),
            },
        };
        Box::pin(async move {
            let proxy_ctx = proxy::RequestContext {
                user: &ctx.user,
                client_addr: Some(ctx.client_addr.ip()),
                audit_id: HeaderValue::from_str(&ctx.audit_id).ok(),
            };
            let (name, backend) = match &destination {
                Destination::ApiService(name, backend) => (name.as_str(), backend),
                Destination::Delegate(backend) => ("", backend),
            };
            let response = engine.forward(backend, req, &proxy_ctx).await;
            let info = response.extensions().get::<ForwardInfo>();
            if let (Some(recheck), Some(info)) = (&recheck, info)
                && !name.is_empty()
                && info
                    .error
                    .as_ref()
                    .is_some_and(|e| e.transport_cause().is_some())
            {
                // The backend stopped answering between probes: find out now rather than at
                // the next 30 s check, so the condition names the cause soon.
                recheck.request(name);
            }
            access_log(&ctx, name, info, response.status().as_u16(), start);
            response
        })
    }
}

fn not_found() -> BoxFuture<Response<Body>> {
    let r = response::status(&Status::not_found_path());
    Box::pin(async move { r })
}

fn access_log(
    ctx: &RequestContext,
    apiservice: &str,
    info: Option<&ForwardInfo>,
    status: u16,
    start: Instant,
) {
    let backend = info
        .and_then(|i| i.backend.as_ref())
        .map(|b| b.to_string())
        .unwrap_or_default();
    let error = info
        .and_then(|i| i.error.as_ref())
        .map(|e| e.to_string())
        .unwrap_or_default();
    tracing::info!(
        target: ACCESS_LOG_TARGET,
        user = %ctx.user.name,
        verb = %ctx.info.verb,
        path = %ctx.info.path,
        apiservice = if apiservice.is_empty() { "<delegate>" } else { apiservice },
        backend = %backend,
        status,
        latency_ms = start.elapsed().as_secs_f64() * 1000.0,
        upgraded = info.is_some_and(|i| i.upgraded),
        error = %error,
        audit_id = %ctx.audit_id,
        "proxied"
    );
}
