//! The test world: a PKI minted with the `pki` crate, extension-server stand-ins that verify the
//! front-proxy certificate with `front_proxy::Authenticator` (CA, allowed names, client-auth
//! usage, as k8s.io/apiserver does) and echo what they received, and a plain-HTTP front server
//! that calls the engine like the aggregator will.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use front_proxy::{Authenticator, HeaderNames, PeerCertificates, RequestHeaderConfig, UserInfo};
use http::{Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pki::{CertRequest, CertificateAuthority, Issued, KeyAlgorithm};
use proxy::{
    Backend, BackendSpec, Body, ClientIdentity, Engine, EngineConfig, RequestContext, ServiceMap,
    ServiceMapResolver, ServiceRef, boxed, empty, full,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};

pub const GROUP: &str = "wardle.example.com";
pub const VERSION: &str = "v1beta1";
pub const NAMESPACE: &str = "wardle";
pub const SERVICE: &str = "api";
pub const SERVER_NAME: &str = "api.wardle.svc";
pub const PROXY_CN: &str = "front-proxy-client";

pub fn install_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn ec(req: CertRequest) -> CertRequest {
    req.key(KeyAlgorithm::EcdsaP256)
}

/// Two CAs as in a cluster: one signs serving certificates, the other (front-proxy) signs the
/// proxy's client certificate.
pub struct Pki {
    pub serving_ca: CertificateAuthority,
    pub front_proxy_ca: CertificateAuthority,
    pub proxy_client: Issued,
}

impl Pki {
    pub fn new() -> Result<Pki> {
        install_provider();
        let serving_ca = CertificateAuthority::new_root_with(&ec(CertRequest::ca("serving-ca")))?;
        let front_proxy_ca =
            CertificateAuthority::new_root_with(&ec(CertRequest::ca("front-proxy-ca")))?;
        let proxy_client =
            front_proxy_ca.issue(&ec(CertRequest::client(PROXY_CN, &[] as &[&str])))?;
        Ok(Pki {
            serving_ca,
            front_proxy_ca,
            proxy_client,
        })
    }

    /// A serving certificate for `api.wardle.svc` from the serving CA.
    pub fn serving(&self) -> Result<Issued> {
        self.serving_for(SERVICE)
    }

    /// A serving certificate for `<service>.wardle.svc` from the serving CA.
    pub fn serving_for(&self, service: &str) -> Result<Issued> {
        let name = format!("{service}.{NAMESPACE}.svc");
        Ok(self.serving_ca.issue(&ec(CertRequest::server(
            &name,
            &[name.as_str(), "127.0.0.1"],
        )))?)
    }

    /// The proxy's identity (cfssl-style SEC1 `EC PRIVATE KEY`).
    pub fn identity(&self) -> Result<ClientIdentity> {
        Ok(ClientIdentity::from_pem(
            self.proxy_client.cert_pem.as_bytes(),
            self.proxy_client.key_pem.as_bytes(),
        )?)
    }

    /// How an extension server trusts the front proxy: the front-proxy CA, allowed names.
    pub fn request_header(&self, allowed: &[&str]) -> RequestHeaderConfig {
        RequestHeaderConfig {
            client_ca_pem: self.front_proxy_ca.cert_pem().as_bytes().to_vec(),
            allowed_names: allowed.iter().map(|s| s.to_string()).collect(),
            headers: HeaderNames::default(),
        }
    }

    pub fn ca_bundle(&self) -> Vec<u8> {
        self.serving_ca.cert_pem().as_bytes().to_vec()
    }
}

/// How the backend answers its discovery endpoints.
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// A normal APIResourceList.
    Normal,
    /// An APIResourceList without resources.
    Empty,
    /// This status with a small body.
    Status(u16),
    /// Never answers.
    Hang,
}

/// How the backend answers `GET /apis`.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoveryMode {
    /// Aggregated v2 with this ETag (304 on a match).
    Aggregated(String),
    /// A plain APIGroupList (forces the legacy fallback).
    Legacy,
    /// Never answers.
    Hang,
}

/// One request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: usize,
    pub version: Version,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub user: Option<UserInfo>,
    pub peer_cn: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

pub struct State {
    pub name: String,
    pub mode: Mutex<Mode>,
    pub discovery: Mutex<DiscoveryMode>,
    pub seen: Mutex<Vec<Seen>>,
    pub closed: Mutex<HashSet<usize>>,
    pub connections: AtomicUsize,
    pub watch_gate: Notify,
    auth: Authenticator,
}

impl State {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    pub fn set_discovery(&self, mode: DiscoveryMode) {
        *self.discovery.lock().unwrap() = mode;
    }
}

/// An extension API server stand-in on 127.0.0.1 over TLS.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    shutdown: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

pub struct BackendOptions {
    pub name: String,
    pub serving: Issued,
    pub request_header: RequestHeaderConfig,
    pub alpn: Vec<Vec<u8>>,
    pub port: u16,
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS` (hyper's default when `None`).
    pub max_streams: Option<u32>,
}

impl BackendOptions {
    pub fn new(pki: &Pki, name: &str) -> Result<BackendOptions> {
        Ok(BackendOptions {
            name: name.into(),
            serving: pki.serving()?,
            request_header: pki.request_header(&[PROXY_CN, "front-proxy-client-2"]),
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            port: 0,
            max_streams: None,
        })
    }
}

impl TestBackend {
    pub async fn start(pki: &Pki, name: &str) -> Result<TestBackend> {
        TestBackend::start_with(BackendOptions::new(pki, name)?).await
    }

    pub async fn start_with(options: BackendOptions) -> Result<TestBackend> {
        install_provider();
        let chain: Vec<CertificateDer<'static>> =
            rustls_pem_certs(options.serving.cert_pem.as_bytes())?;
        let key = {
            use rustls::pki_types::pem::PemObject;
            PrivateKeyDer::from_pem_slice(options.serving.key_pem.as_bytes())?
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(front_proxy::tls::RequestClientCert::arc(&provider))
            .with_single_cert(chain, key)?;
        config.alpn_protocols = options.alpn.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(("127.0.0.1", options.port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            name: options.name.clone(),
            mode: Mutex::new(Mode::Normal),
            discovery: Mutex::new(DiscoveryMode::Aggregated("\"E1\"".into())),
            seen: Mutex::new(Vec::new()),
            closed: Mutex::new(HashSet::new()),
            connections: AtomicUsize::new(0),
            watch_gate: Notify::new(),
            auth: Authenticator::new(options.request_header.clone())?,
        });
        let (shutdown, _) = watch::channel(false);
        let accept_state = Arc::clone(&state);
        let max_streams = options.max_streams;
        let mut stop = shutdown.subscribe();
        let accept = tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                    _ = stop.changed() => return,
                };
                let acceptor = acceptor.clone();
                let state = Arc::clone(&accept_state);
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let conn = state.connections.fetch_add(1, Ordering::SeqCst);
                    let peer =
                        PeerCertificates::from_presented(tls.get_ref().1.peer_certificates());
                    let service_state = Arc::clone(&state);
                    let service = service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&service_state);
                        let peer = peer.clone();
                        async move { Ok::<_, Infallible>(handle(state, conn, peer, req).await) }
                    });
                    let mut builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(max_streams);
                    let serving =
                        builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    tokio::select! {
                        _ = serving => {}
                        _ = stop.changed() => {}
                    }
                    state.closed.lock().unwrap().insert(conn);
                });
            }
        });
        Ok(TestBackend {
            addr,
            state,
            shutdown,
            accept,
        })
    }

    /// Stops listening and drops every connection, like a killed process.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept.await;
    }

    pub fn address(&self) -> String {
        self.addr.to_string()
    }
}

fn rustls_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    Ok(CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>()?)
}

fn common_name(peer: &PeerCertificates) -> String {
    peer.0
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .and_then(|(_, cert)| {
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok().map(str::to_owned))
        })
        .unwrap_or_default()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

fn resource_list(empty: bool) -> Value {
    let resources = if empty {
        json!([])
    } else {
        json!([
            {"name": "flunders", "singularName": "flunder", "namespaced": true, "kind": "Flunder",
             "verbs": ["create", "delete", "get", "list", "watch"]},
            {"name": "flunders/status", "singularName": "", "namespaced": true, "kind": "Flunder",
             "verbs": ["get", "patch"]},
        ])
    };
    json!({"kind": "APIResourceList", "apiVersion": "v1",
           "groupVersion": format!("{GROUP}/{VERSION}"), "resources": resources})
}

fn aggregated_document() -> Value {
    json!({
        "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
        "items": [
            {"metadata": {"name": GROUP, "creationTimestamp": null}, "versions": [
                {"version": VERSION, "resources": [
                    {"resource": "flunders", "singularResource": "flunder", "scope": "Namespaced",
                     "responseKind": {"group": GROUP, "version": VERSION, "kind": "Flunder"},
                     "verbs": ["get", "list"]}
                ], "freshness": "Current"}]},
            {"metadata": {"name": "other.example.com"}, "versions": [
                {"version": "v1", "resources": [
                    {"resource": "others", "scope": "Cluster", "verbs": ["get"],
                     "responseKind": {"group": "other.example.com", "version": "v1", "kind": "Other"}}
                ]}]}
        ]
    })
}

/// A body fed from a channel, for watch-like streams.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = proxy::BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b))))
    }
}

async fn handle(
    state: Arc<State>,
    conn: usize,
    peer: PeerCertificates,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let peer_cn = common_name(&peer);
    // What k8s.io/apiserver does: verify the certificate (CA, allowed names, client auth EKU),
    // then trust the headers; any failure is a 401.
    let user = state.auth.authenticate(&peer.0, req.headers_mut());
    let path = req.uri().path().to_owned();
    let seen = Seen {
        conn,
        version: req.version(),
        method: req.method().to_string(),
        path: path.clone(),
        headers: headers.clone(),
        user: user.as_ref().ok().cloned(),
        peer_cn: peer_cn.clone(),
    };
    state.seen.lock().unwrap().push(seen);
    let user = match user {
        Ok(user) => user,
        Err(refusal) => {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": refusal.to_string(), "reason": "Unauthorized", "code": 401}),
            );
        }
    };
    let gv = format!("/apis/{GROUP}/{VERSION}");
    if path == gv || path == format!("{gv}/") {
        let mode = state.mode.lock().unwrap().clone();
        return match mode {
            Mode::Normal => json_response(StatusCode::OK, &resource_list(false)),
            Mode::Empty => json_response(StatusCode::OK, &resource_list(true)),
            Mode::Status(code) => json_response(
                StatusCode::from_u16(code).unwrap(),
                &json!({"kind": "Status", "code": code}),
            ),
            Mode::Hang => std::future::pending().await,
        };
    }
    if path == "/apis" {
        let mode = state.discovery.lock().unwrap().clone();
        return match mode {
            DiscoveryMode::Aggregated(etag) => {
                if req.headers().get("if-none-match").map(|v| v.as_bytes()) == Some(etag.as_bytes())
                {
                    let mut r = Response::new(empty());
                    *r.status_mut() = StatusCode::NOT_MODIFIED;
                    return r;
                }
                let accept = req
                    .headers()
                    .get("accept")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !accept.contains("as=APIGroupDiscoveryList") {
                    return json_response(StatusCode::NOT_ACCEPTABLE, &json!({}));
                }
                let mut r = json_response(StatusCode::OK, &aggregated_document());
                r.headers_mut().insert(
                    "content-type",
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
                        .parse()
                        .unwrap(),
                );
                r.headers_mut().insert("etag", etag.parse().unwrap());
                r
            }
            DiscoveryMode::Legacy => json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
            ),
            DiscoveryMode::Hang => std::future::pending().await,
        };
    }
    if path == "/openapi/v3" {
        return json_response(
            StatusCode::OK,
            &json!({"paths": {format!("apis/{GROUP}/{VERSION}"):
                {"serverRelativeURL": format!("/openapi/v3/apis/{GROUP}/{VERSION}?hash=ABC")}}}),
        );
    }
    let Some(rest) = path.strip_prefix(&format!("{gv}/")) else {
        return json_response(
            StatusCode::NOT_FOUND,
            &json!({"kind": "Status", "code": 404}),
        );
    };
    match rest {
        "watch" => {
            let (tx, rx) = mpsc::channel(4);
            let gate_state = Arc::clone(&state);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"{\"type\":\"ADDED\"}\n")).await;
                gate_state.watch_gate.notified().await;
                let _ = tx
                    .send(Bytes::from_static(b"{\"type\":\"MODIFIED\"}\n"))
                    .await;
            });
            let mut r = Response::new(ChannelBody(rx).boxed_unsync());
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
        "redirect" => {
            let mut r = Response::new(full("go elsewhere"));
            *r.status_mut() = StatusCode::FOUND;
            r.headers_mut().insert(
                "location",
                "https://attacker.example/steal".parse().unwrap(),
            );
            r
        }
        "exec" if hyper_upgrade_requested(&req) => {
            let upgrade_kind = req
                .headers()
                .get("upgrade")
                .cloned()
                .unwrap_or_else(|| "websocket".parse().unwrap());
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let mut buf = [0u8; 1024];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            r.headers_mut()
                .insert("connection", "Upgrade".parse().unwrap());
            r.headers_mut().insert("upgrade", upgrade_kind);
            r
        }
        "exec-denied" => {
            let mut r = Response::new(full("denied"));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        }
        "exec-not-upgraded" => Response::new(full("plain")),
        _ => {
            let query = req.uri().query().map(str::to_owned);
            let body_len = match req.into_body().collect().await {
                Ok(collected) => collected.to_bytes().len(),
                Err(_) => usize::MAX,
            };
            let mut r = json_response(
                StatusCode::OK,
                &json!({
                    "backend": state.name,
                    "user": {"name": user.name, "uid": user.uid, "groups": user.groups,
                             "extra": user.extra},
                    "path": path,
                    "query": query,
                    "body_len": body_len,
                    "peer_cn": peer_cn,
                    "conn": conn,
                }),
            );
            r.headers_mut()
                .insert("access-control-allow-origin", "*".parse().unwrap());
            r.headers_mut()
                .insert("x-backend", state.name.parse().unwrap());
            r
        }
    }
}

fn hyper_upgrade_requested(req: &Request<Incoming>) -> bool {
    proxy::is_upgrade_request(req.headers())
}

/// An engine over a fixed service map; `services` maps service names to addresses.
pub fn engine_with(
    config: EngineConfig,
    identity: ClientIdentity,
    services: &[(&str, Vec<String>)],
) -> Result<Engine> {
    let entries: Vec<Value> = services
        .iter()
        .map(|(name, addresses)| {
            json!({"namespace": NAMESPACE, "name": name, "port": 443, "addresses": addresses})
        })
        .collect();
    let map = ServiceMap::parse(&json!({ "services": entries }).to_string())
        .map_err(anyhow::Error::msg)?;
    Ok(Engine::new(
        config,
        identity,
        Arc::new(ServiceMapResolver::from_map(map)),
    ))
}

pub fn service(name: &str) -> ServiceRef {
    ServiceRef::new(NAMESPACE, name, 443)
}

/// The usual setup: one backend behind service `api`, verified with the serving CA.
pub struct World {
    pub pki: Pki,
    pub backend: TestBackend,
    pub engine: Engine,
    pub route: Backend,
}

impl World {
    pub async fn new() -> Result<World> {
        World::with_config(EngineConfig::default()).await
    }

    pub async fn with_config(config: EngineConfig) -> Result<World> {
        let pki = Pki::new()?;
        let backend = TestBackend::start(&pki, "b1").await?;
        let engine = engine_with(
            config,
            pki.identity()?,
            &[(SERVICE, vec![backend.address()])],
        )?;
        let route = engine.backend(&BackendSpec::service(service(SERVICE), pki.ca_bundle()))?;
        Ok(World {
            pki,
            backend,
            engine,
            route,
        })
    }
}

pub fn alice() -> UserInfo {
    let mut user = UserInfo::new("alice");
    user.groups = vec!["dev".into(), "system:authenticated".into()];
    user
}

pub fn get(path: &str) -> Request<Body> {
    Request::get(path).body(empty()).unwrap()
}

/// Forwards directly (no front server) as `user` and returns status, headers and body.
pub async fn send(
    engine: &Engine,
    backend: &Backend,
    request: Request<Body>,
    user: &UserInfo,
) -> Result<(StatusCode, http::HeaderMap, String)> {
    let ctx = RequestContext {
        user,
        client_addr: Some("203.0.113.7".parse()?),
        audit_id: Some("audit-42".parse()?),
    };
    let response = engine.forward(backend, request, &ctx).await;
    let (head, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("body: {e}"))?
        .to_bytes();
    Ok((
        head.status,
        head.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}

/// Forwards and parses the backend's echo.
pub async fn echo(engine: &Engine, backend: &Backend, path: &str) -> Result<Value> {
    let (status, _, body) = send(engine, backend, get(path), &alice()).await?;
    if status != StatusCode::OK {
        bail!("{path}: {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| body.clone())
}

pub fn echo_path(rest: &str) -> String {
    format!("/apis/{GROUP}/{VERSION}/{rest}")
}

/// A plain-HTTP/1.1 server with upgrades that forwards everything to one backend as `user`,
/// as the aggregator will after authenticating.
pub struct Front {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    pub async fn start(engine: Engine, backend: Backend, user: UserInfo) -> Result<Front> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let user = Arc::new(user);
        let task = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let engine = engine.clone();
                let backend = backend.clone();
                let user = Arc::clone(&user);
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let engine = engine.clone();
                        let backend = backend.clone();
                        let user = Arc::clone(&user);
                        async move {
                            let ctx = RequestContext {
                                user: &user,
                                client_addr: Some(peer.ip()),
                                audit_id: None,
                            };
                            Ok::<_, Infallible>(
                                engine.forward(&backend, req.map(boxed), &ctx).await,
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Ok(Front { addr, task })
    }
}

/// Reads an HTTP/1.1 response head from a raw stream (byte by byte, so nothing after it is
/// consumed) and returns it with lower-cased header names.
pub async fn read_head(stream: &mut TcpStream) -> Result<(u16, HashMap<String, String>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await??;
        if n == 0 {
            bail!("EOF in response head: {:?}", String::from_utf8_lossy(&head));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8(head)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().context("no status line")?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status")?
        .parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

/// Polls `check` until it is true (at most ~10 s): for effects that happen on another task.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) -> Result<()> {
    for _ in 0..1000 {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bail!("never happened: {what}")
}

/// A port nothing listens on.
pub async fn dead_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    Ok(listener.local_addr()?.port())
}
