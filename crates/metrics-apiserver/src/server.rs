//! Sockets: TLS, HTTP/1.1 and h2, the per-request filter chain (health → authentication →
//! authorization → API) and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apimachinery::Status;
use bytes::Bytes;
use front_proxy::PeerCertificates;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{Api, Body, status_response};
use crate::authn::Authenticator;
use crate::authz::{Authorizer, Decision, KubeReviewer, Policy, Webhook, forbidden};
use crate::config::{Config, Prepared};
use crate::discovery::Documents;
use crate::pods::PodFileReloader;
use crate::request::RequestInfo;
use crate::{Error, sampler};

/// A TLS handshake must finish within this time, so idle sockets cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get after shutdown is asked for.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What every connection shares.
struct Shared {
    authn: Authenticator,
    authz: Authorizer,
    api: Api,
}

/// A bound server, not yet accepting. Build it with [`Server::bind`], read
/// [`Server::local_addr`], then run [`Server::serve`].
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Prepares `config` ([`Config::prepare`]), binds the port and starts the node sampler and
    /// the file reloaders. Needs a tokio runtime.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        Server::bind_prepared(config.prepare()?).await
    }

    /// [`Server::bind`] for a configuration already prepared (the binary prepares before it
    /// starts the runtime, so bad input exits 64 early).
    pub async fn bind_prepared(prepared: Prepared) -> Result<Server, Error> {
        let Prepared {
            config,
            tls,
            request_header,
            client_cert,
            kubeconfig,
            pods,
            node,
        } = prepared;
        let addr = SocketAddr::new(config.bind_address, config.secure_port);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Listen { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| Error::Listen { addr, source })?;

        let policy = match kubeconfig {
            Some((kc, path)) => Policy::Webhook(Webhook::new(
                Arc::new(KubeReviewer::new(kc, &path).await?),
                config.authorized_ttl,
                config.unauthorized_ttl,
            )),
            None => Policy::Local {
                allowed_groups: config.allowed_groups.clone(),
            },
        };

        let mut tasks = Vec::new();
        let request_header = request_header.map(|(auth, reloader)| {
            tasks.push(tokio::spawn(reloader.run(|outcome| {
                tracing::info!("{outcome}");
            })));
            auth
        });
        let (pod_tx, pod_rx) = watch::channel(Arc::new(Vec::new()));
        if let Some((initial, bytes, path)) = pods {
            pod_tx.send_replace(Arc::new(initial));
            let reloader = PodFileReloader::new(path, config.metric_resolution, bytes, pod_tx);
            tasks.push(tokio::spawn(
                reloader.run(config.pod_metrics_reload_interval),
            ));
        }
        let (node_rx, sampler_task) = sampler::spawn(
            config.proc_dir.clone(),
            config.initial_window,
            config.metric_resolution,
        );
        tasks.push(sampler_task);

        let shared = Arc::new(Shared {
            authn: Authenticator {
                request_header,
                client_cert,
                anonymous: config.anonymous_auth,
            },
            authz: Authorizer {
                always_allow_paths: config.always_allow_paths.clone(),
                policy,
            },
            api: Api {
                node,
                nodes: node_rx,
                pods: pod_rx,
                serve_core_nodes: config.serve_core_nodes,
                docs: Documents::build(),
                first_window_wait: config.initial_window * 5,
            },
        });
        Ok(Server {
            listener,
            local_addr,
            acceptor: tokio_rustls::TlsAcceptor::from(tls),
            shared,
            tasks,
        })
    }

    /// The bound address (with the real port when `--secure-port` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
    /// (up to 10 s) and stops the background tasks.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        let Server {
            listener,
            local_addr,
            acceptor,
            shared,
            tasks,
        } = self;
        tracing::info!("serving metrics.k8s.io on https://{local_addr}");
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        let result = loop {
            let (tcp, remote) = tokio::select! {
                () = &mut shutdown => break Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(pair) => pair,
                    // Out of file descriptors and similar: keep serving the others.
                    Err(e) if is_transient(&e) => {
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    Err(source) => break Err(Error::Listen { addr: local_addr, source }),
                },
            };
            let acceptor = acceptor.clone();
            let shared = Arc::clone(&shared);
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => return tracing::debug!("TLS handshake with {remote}: {e}"),
                    Err(_) => return tracing::debug!("TLS handshake with {remote} timed out"),
                };
                let (_, connection) = tls.get_ref();
                // Once per connection; every request on it carries the same chain.
                let peer = PeerCertificates::from_presented(connection.peer_certificates());
                let local = tls.get_ref().0.local_addr().unwrap_or(local_addr);
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let shared = Arc::clone(&shared);
                    let peer = peer.clone();
                    async move { Ok::<_, Infallible>(shared.handle(request, &peer, local).await) }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(tls), service)
                    .into_owned();
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!("connection from {remote}: {e}");
                }
            });
        };
        drop(listener);
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
        }
        for task in tasks {
            task.abort();
        }
        result
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
            | std::io::ErrorKind::WouldBlock
    ) || e
        .raw_os_error()
        .is_some_and(|code| code == 24 || code == 23)
}

/// `/healthz`, `/livez`, `/readyz` and their sub-paths: answered before authentication so
/// that probes need no credentials.
fn is_health(path: &str) -> bool {
    ["/healthz", "/livez", "/readyz"].iter().any(|p| {
        path == *p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

fn health(method: &Method) -> Response<Body> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return status_response(&Status::method_not_allowed());
    }
    let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Shared {
    async fn handle(
        &self,
        mut request: Request<Incoming>,
        peer: &PeerCertificates,
        local: SocketAddr,
    ) -> Response<Body> {
        let path = request.uri().path().to_owned();
        if is_health(&path) {
            return health(request.method());
        }
        let user = match self.authn.authenticate(&peer.0, request.headers_mut()) {
            Ok(user) => user,
            Err(why) => {
                if why.0.is_empty() {
                    tracing::debug!("{} {path}: no credentials", request.method());
                } else {
                    tracing::info!("Unable to authenticate the request due to an error: {why}");
                }
                return status_response(&Status::unauthorized());
            }
        };
        let query = request.uri().query().map(str::to_owned);
        let info = RequestInfo::new(request.method(), &path, query.as_deref());
        match self.authz.authorize(&user, &info).await {
            Ok(Decision::Allow) => {}
            Ok(Decision::Deny(reason)) => {
                return status_response(&forbidden(&user, &info, &reason));
            }
            Err(e) => {
                tracing::warn!("authorizing {} {path} for {:?}: {e}", info.verb, user.name);
                return status_response(&Status::internal_error(&e.to_string()));
            }
        }
        self.api
            .handle(
                request.method(),
                request.headers(),
                query.as_deref(),
                &info,
                local,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_paths() {
        for p in [
            "/healthz",
            "/livez",
            "/readyz",
            "/healthz/ping",
            "/readyz/log",
        ] {
            assert!(is_health(p), "{p}");
        }
        for p in ["/healthzz", "/", "/apis", "/livezx/y", "/health"] {
            assert!(!is_health(p), "{p}");
        }
    }
}
