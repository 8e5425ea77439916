//! Wiring: the TLS listener (HTTP/1.1 and HTTP/2 on one port, upgrades allowed), one task per
//! connection, the informer and discovery tasks, certificate reloading, and graceful shutdown
//! (stop accepting, fail `/readyz`, end watches cleanly, let in-flight requests finish).
//! No protocol logic lives here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use front_proxy::PeerCertificates;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use store::Store;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::authn::Authenticator;
use crate::authz::{AbacPolicy, Authorizer, DefaultPolicy};
use crate::config::Config;
use crate::discovery::{self, BackendDiscovery, ServingState};
use crate::error::Error;
use crate::forward::Forwarder;
use crate::handler::{self, AppState, ConnInfo};
use crate::informer::{self, Snapshot};
use crate::metrics::Metrics;
use crate::openapi::{OpenApi, OpenApiRoutes};
use crate::registry::{Registry, StatusWriter};
use crate::tls;

/// How often the serving certificate files are checked for changes.
const CERT_POLL: Duration = Duration::from_secs(5);

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    reloader: Option<tls::CertReloader>,
    state: Arc<AppState>,
    store: Arc<dyn Store>,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    backend_tx: watch::Sender<Arc<BackendDiscovery>>,
    serving_tx: watch::Sender<Arc<ServingState>>,
    openapi_tx: watch::Sender<Arc<OpenApiRoutes>>,
    shutdown_tx: watch::Sender<bool>,
    header_read_timeout: Duration,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.listener.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Loads certificates, credentials and policies, builds the request path and binds the
    /// listen socket. Nothing is served until [`Server::run`].
    pub async fn bind(
        config: &Config,
        store: Arc<dyn Store>,
        forwarder: Arc<dyn Forwarder>,
    ) -> Result<Server, Error> {
        Server::bind_with(config, store, forwarder, crate::cluster::Hooks::default()).await
    }

    /// [`Server::bind`] with delegated authentication and authorization (TokenReview,
    /// SubjectAccessReview) from [`crate::cluster::ClusterSetup::hooks`].
    pub async fn bind_with(
        config: &Config,
        store: Arc<dyn Store>,
        forwarder: Arc<dyn Forwarder>,
        hooks: crate::cluster::Hooks,
    ) -> Result<Server, Error> {
        config.validate()?;
        let (resolver, reloader) = tls::serving_cert(
            config.tls_cert_file.as_deref(),
            config.tls_private_key_file.as_deref(),
        )?;
        let mut client_roots = Vec::new();
        if let Some(ca) = &config.client_ca_file {
            client_roots.extend(tls::load_ca_bundle(ca)?);
        }
        if let Some(rh) = &config.request_header {
            client_roots.extend(tls::load_ca_bundle(&rh.client_ca_file)?);
        }
        let tls_config = tls::server_config(resolver, &client_roots)?;
        let mut authn = Authenticator::from_config(config)?;
        if let Some(review) = hooks.token_review {
            authn = authn.with_token_review(review);
        }
        let authz: Arc<dyn Authorizer> = match &config.authorization_policy_file {
            Some(p) => Arc::new(AbacPolicy::load(p)?),
            None => Arc::new(DefaultPolicy),
        };
        let metrics = Arc::new(Metrics::new());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (snapshot_tx, _) = watch::channel(Arc::new(Snapshot::default()));
        let (backend_tx, _) = watch::channel(Arc::new(BackendDiscovery::default()));
        let initial =
            discovery::derive(Arc::new(Snapshot::default()), &BackendDiscovery::default());
        let (serving_tx, serving_rx) = watch::channel(Arc::new(initial));
        let registry = Registry::new(
            store.clone(),
            config.max_request_body_bytes,
            config.min_request_timeout,
            shutdown_rx.clone(),
            metrics.clone(),
        );
        let limit = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        let openapi = OpenApi::build();
        let (openapi_tx, openapi_rx) = watch::channel(Arc::new(OpenApiRoutes::local(&openapi)));
        let state = Arc::new(AppState {
            authn,
            authz,
            registry,
            serving: serving_rx,
            forwarder,
            metrics,
            openapi,
            openapi_routes: openapi_rx,
            version: Bytes::from(serde_json::to_vec(&crate::version::info()).unwrap_or_default()),
            own_resource_list: discovery::own_resource_list(),
            readonly_limit: limit(config.max_requests_inflight),
            mutating_limit: limit(config.max_mutating_requests_inflight),
            request_timeout: config.request_timeout,
            shutting_down: shutdown_rx,
            store: store.clone(),
            delegated_authz: hooks.authorizer,
        });
        let addr = config.listen_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(tls_config),
            reloader,
            state,
            store,
            snapshot_tx,
            backend_tx,
            serving_tx,
            openapi_tx,
            shutdown_tx,
            header_read_timeout: config.request_header_read_timeout,
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        let addr = self.listener.local_addr().map_err(|source| Error::Listen {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        Ok(addr)
    }

    /// All APIServices, as the informer sees them (for controllers such as availability).
    pub fn apiservices(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot_tx.subscribe()
    }

    /// Where backend discovery results are published (the proxy's discovery fetcher).
    pub fn backend_discovery(&self) -> watch::Sender<Arc<BackendDiscovery>> {
        self.backend_tx.clone()
    }

    /// Writes `status.conditions` with `/status` semantics (the availability controller).
    pub fn status_writer(&self) -> StatusWriter {
        self.state.registry.status_writer()
    }

    /// The metrics registry (to add series from other components).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.state.metrics.clone()
    }

    /// Where the merged OpenAPI v3 index is published (the OpenAPI controller).
    pub fn openapi_routes(&self) -> watch::Sender<Arc<OpenApiRoutes>> {
        self.openapi_tx.clone()
    }

    /// This server's own OpenAPI documents.
    pub fn own_openapi(&self) -> OpenApi {
        self.state.openapi.clone()
    }

    /// Turns true when [`Server::run`] begins to shut down (controllers stop on it).
    pub fn shutdown_watch(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }

    /// Serves until `shutdown` completes, then stops accepting, fails `/readyz`, ends watches
    /// and waits up to the shutdown timeout for in-flight requests.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Server {
            listener,
            acceptor,
            reloader,
            state,
            store,
            snapshot_tx,
            backend_tx,
            serving_tx,
            openapi_tx: _,
            shutdown_tx,
            header_read_timeout,
            shutdown_timeout,
        } = self;
        let shutdown_rx = shutdown_tx.subscribe();
        let informer = tokio::spawn(informer::run(
            store,
            snapshot_tx.clone(),
            shutdown_rx.clone(),
        ));
        let deriver = tokio::spawn(discovery::run(
            snapshot_tx.subscribe(),
            backend_tx.subscribe(),
            serving_tx,
            state.metrics.clone(),
            shutdown_rx.clone(),
        ));
        let reload = reloader.map(|r| tokio::spawn(r.run(CERT_POLL)));

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(1000);
        let builder = Arc::new(builder);
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);

        loop {
            let (tcp, peer_addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let state = state.clone();
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls =
                    match tokio::time::timeout(header_read_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer_addr, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer_addr, "TLS handshake timed out");
                            return;
                        }
                    };
                let conn = ConnInfo {
                    peer_addr,
                    peer_certs: PeerCertificates::from_presented(
                        tls.get_ref().1.peer_certificates(),
                    ),
                    cache: Arc::default(),
                };
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    let conn = conn.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handler::handle(state, req.map(proxy::body::boxed), conn).await,
                        )
                    }
                });
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                if let Err(e) = watcher.watch(conn.into_owned()).await {
                    tracing::debug!(peer = %peer_addr, error = %e, "connection ended with an error");
                }
            });
        }

        tracing::info!("shutting down: no new connections, waiting for in-flight requests");
        drop(listener);
        let _ = shutdown_tx.send(true);
        if tokio::time::timeout(shutdown_timeout, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout reached; closing remaining connections");
        }
        for t in [informer, deriver] {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        if let Some(r) = reload {
            r.abort();
        }
        Ok(())
    }
}
