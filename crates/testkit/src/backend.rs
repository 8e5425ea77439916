//! An extension API server stand-in for end-to-end tests of the proxy: HTTPS on 127.0.0.1 that
//! authenticates every request the way k8s.io/apiserver does — the client certificate must
//! chain to the front-proxy CA, carry an allowed CN and allow client auth, checked by
//! `front_proxy::Authenticator` — and then trusts the `X-Remote-*` headers.
//!
//! What it serves, for the group-versions it is given:
//!
//! - `GET /apis`: aggregated discovery (`apidiscovery.k8s.io/v2`, with an ETag and 304) when
//!   asked for, else an `APIGroupList`; `GET /apis/<g>/<v>`: the `APIResourceList`;
//! - `GET /openapi/v3` and `/openapi/v3/apis/<g>/<v>` (the document echoes its query);
//! - a watch (`?watch=true` or `/watch/` in the path): one `ADDED` event at once, one
//!   `MODIFIED` after [`Backend::release_watch`], then the end of the stream (chunked);
//! - an upgrade (`Connection: Upgrade`, as WebSocket and SPDY clients send): 101, then every
//!   byte echoed back; the user is in the `X-Echo-User` response header;
//! - a path ending in `/redirect`: 302 to another host;
//! - anything else: 200 with JSON describing the request — the authenticated user (name, uid,
//!   groups, extra), method, path, query, HTTP version and every header received.
//!
//! A request that fails authentication is answered 401 with the refusal in a `Status`. Every
//! request is recorded ([`Backend::seen`]). [`Backend::stop`] closes the listener and every
//! connection like a killed process; [`Backend::restart`] serves again on the same port. The
//! server runs on its own runtime, so blocking tests can use it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bytes::Bytes;
use front_proxy::{Authenticator, HeaderNames, PeerCertificates, RequestHeaderConfig, UserInfo};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

type Body = BoxBody<Bytes, Infallible>;

/// One resource of a served group-version.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Plural name, e.g. `flunders`.
    pub name: String,
    /// Kind, e.g. `Flunder`.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
}

impl Resource {
    /// A namespaced resource `name` of `kind`.
    pub fn namespaced(name: &str, kind: &str) -> Self {
        Resource {
            name: name.into(),
            kind: kind.into(),
            namespaced: true,
        }
    }
}

/// A served group-version.
#[derive(Debug, Clone)]
pub struct GroupVersion {
    /// The group.
    pub group: String,
    /// The version.
    pub version: String,
    /// Its resources.
    pub resources: Vec<Resource>,
}

impl GroupVersion {
    /// `group`/`version` with `resources`.
    pub fn new(group: &str, version: &str, resources: Vec<Resource>) -> Self {
        GroupVersion {
            group: group.into(),
            version: version.into(),
            resources,
        }
    }
}

/// How to start a [`Backend`].
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// A name echoed in responses (`"backend"`).
    pub name: String,
    /// Serving certificate (PEM, leaf first).
    pub serving_cert_pem: String,
    /// Serving key (PEM).
    pub serving_key_pem: String,
    /// `--requestheader-client-ca-file`: the only roots for the proxy's client certificate.
    pub front_proxy_ca_pem: String,
    /// `--requestheader-allowed-names` (empty allows any CN).
    pub allowed_names: Vec<String>,
    /// What it serves.
    pub group_versions: Vec<GroupVersion>,
}

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query (empty when none).
    pub query: String,
    /// Headers, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    /// The authenticated user, or why authentication failed.
    pub user: Result<UserInfo, String>,
}

impl Seen {
    /// Every value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

struct Shared {
    config: BackendConfig,
    auth: Authenticator,
    seen: Mutex<Vec<Seen>>,
    release: watch::Sender<u64>,
}

/// A running stand-in (see the module docs). Stopped when dropped.
pub struct Backend {
    /// Where it listens (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.shared.config.name)
            .field("addr", &self.addr)
            .field("running", &self.runtime.is_some())
            .finish()
    }
}

impl Backend {
    /// Starts on a free loopback port.
    pub fn start(config: BackendConfig) -> Result<Backend> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let auth = Authenticator::new(RequestHeaderConfig {
            client_ca_pem: config.front_proxy_ca_pem.as_bytes().to_vec(),
            allowed_names: config.allowed_names.clone(),
            headers: HeaderNames::default(),
        })
        .context("the front-proxy CA")?;
        let shared = Arc::new(Shared {
            config,
            auth,
            seen: Mutex::new(Vec::new()),
            release: watch::channel(0).0,
        });
        let mut backend = Backend {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shared,
            runtime: None,
        };
        backend.serve()?;
        Ok(backend)
    }

    fn serve(&mut self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener =
            StdListener::bind(self.addr).with_context(|| format!("binding {}", self.addr))?;
        listener.set_nonblocking(true)?;
        self.addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&self.shared.config)?));
        let shared = self.shared.clone();
        spawn_tls_server(&runtime, listener, acceptor, move |peer, req| {
            handle(shared.clone(), peer, req)
        })?;
        self.runtime = Some(runtime);
        Ok(())
    }

    /// Closes the listener and every connection (new connections are refused), like a killed
    /// process. Blocks up to 2 s for the server's tasks to end, so call it from blocking code
    /// (not inside another runtime).
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(2));
        }
    }

    /// Serves again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.serve()
    }

    /// Lets every open watch send its second event and end.
    pub fn release_watch(&self) {
        self.shared.release.send_modify(|n| *n += 1);
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        match self.shared.seen.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Requests received for `path`.
    pub fn seen_path(&self, path: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| s.path == path).collect()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Accepts TCP connections and never answers (not even the TLS handshake): a backend that hangs.
#[derive(Debug)]
pub struct BlackHole {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    /// Starts on a free loopback port.
    pub fn start() -> Result<BlackHole> {
        let listener = StdListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held: Vec<StdStream> = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => held.push(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(BlackHole {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn tls_config(config: &BackendConfig) -> Result<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(config.serving_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .context("serving certificate")?;
    let key =
        PrivateKeyDer::from_pem_slice(config.serving_key_pem.as_bytes()).context("serving key")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder()
        .with_client_cert_verifier(front_proxy::tls::RequestClientCert::arc(&provider))
        .with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn singular(r: &Resource) -> String {
    r.kind.to_ascii_lowercase()
}

const VERBS: [&str; 6] = ["create", "delete", "get", "list", "update", "watch"];

fn aggregated(config: &BackendConfig) -> Value {
    let items: Vec<Value> = config
        .group_versions
        .iter()
        .map(|gv| {
            let resources: Vec<Value> = gv
                .resources
                .iter()
                .map(|r| {
                    json!({
                        "resource": r.name,
                        "responseKind": {"group": gv.group, "version": gv.version, "kind": r.kind},
                        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": singular(r),
                        "verbs": VERBS,
                    })
                })
                .collect();
            json!({"metadata": {"name": gv.group, "creationTimestamp": null},
                   "versions": [{"version": gv.version, "resources": resources, "freshness": "Current"}]})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
           "metadata": {}, "items": items})
}

fn resource_list(gv: &GroupVersion) -> Value {
    let resources: Vec<Value> = gv
        .resources
        .iter()
        .map(|r| {
            json!({"name": r.name, "singularName": singular(r), "namespaced": r.namespaced,
                   "kind": r.kind, "verbs": VERBS})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1",
           "groupVersion": format!("{}/{}", gv.group, gv.version), "resources": resources})
}

/// A body fed from a channel: each message is sent as soon as it is produced.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(http_body::Frame::data(b))))
    }
}

fn event(kind: &str, gv: &str, name: &str) -> Bytes {
    Bytes::from(format!(
        "{}\n",
        json!({"type": kind, "object": {"apiVersion": gv, "kind": "Flunder",
               "metadata": {"name": name, "namespace": "default"}}})
    ))
}

fn user_json(user: &UserInfo) -> Value {
    json!({"name": user.name, "uid": user.uid, "groups": user.groups, "extra": user.extra})
}

/// Serves TLS connections from `listener` on `runtime` (HTTP/1.1 with upgrades, or HTTP/2),
/// handing each request to `handler` with the connection's presented certificates, as a
/// k8s.io/apiserver server would before authenticating.
pub(crate) fn spawn_tls_server<F, Fut, B>(
    runtime: &tokio::runtime::Runtime,
    listener: StdListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handler: F,
) -> std::io::Result<()>
where
    F: Fn(PeerCertificates, Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _guard = runtime.enter();
    let listener = tokio::net::TcpListener::from_std(listener)?;
    runtime.spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                // Out of descriptors and the like: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let acceptor = acceptor.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let peer = PeerCertificates::from_presented(tls.get_ref().1.peer_certificates());
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = handler(peer.clone(), req);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(())
}

async fn handle(
    shared: Arc<Shared>,
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
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    // k8s.io/apiserver's order: verify the certificate (CA, allowed CN, client auth), then
    // read and strip the identity headers; any failure is 401.
    let user = shared
        .auth
        .authenticate(&peer.0, req.headers_mut())
        .map_err(|r| r.to_string());
    if let Ok(mut seen) = shared.seen.lock() {
        seen.push(Seen {
            method: req.method().to_string(),
            path: path.clone(),
            query: query.clone(),
            headers: headers.clone(),
            user: user.clone(),
        });
    }
    let user = match user {
        Ok(user) => user,
        Err(refusal) => {
            return json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": refusal, "reason": "Unauthorized", "code": 401}),
            );
        }
    };
    let config = &shared.config;
    if proxy_upgrade(&req) {
        return upgrade(&mut req, &user);
    }
    if path == "/apis" || path == "/apis/" {
        let accept = req
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if accept.contains("as=APIGroupDiscoveryList") {
            let doc = aggregated(config).to_string();
            let etag = format!("\"{:016X}\"", fnv(doc.as_bytes()));
            if req.headers().get("if-none-match").map(|v| v.as_bytes()) == Some(etag.as_bytes()) {
                let mut r = Response::new(full(Bytes::new()));
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                return r;
            }
            let mut r = Response::new(full(doc));
            r.headers_mut().insert(
                "content-type",
                HeaderValue::from_static(
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert("etag", v);
            }
            return r;
        }
        let groups: Vec<Value> = config
            .group_versions
            .iter()
            .map(|gv| {
                let v = json!({"groupVersion": format!("{}/{}", gv.group, gv.version), "version": gv.version});
                json!({"name": gv.group, "versions": [v], "preferredVersion": v})
            })
            .collect();
        return json_response(
            StatusCode::OK,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
        );
    }
    if path == "/openapi/v3" {
        let mut paths = serde_json::Map::new();
        for gv in &config.group_versions {
            let key = format!("apis/{}/{}", gv.group, gv.version);
            paths.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={}", config.name.to_ascii_uppercase())}),
            );
        }
        return json_response(StatusCode::OK, &json!({ "paths": paths }));
    }
    if let Some(key) = path.strip_prefix("/openapi/v3/") {
        return json_response(
            StatusCode::OK,
            &json!({"openapi": "3.0.0", "info": {"title": config.name, "version": key},
                    "paths": {}, "x-query": query}),
        );
    }
    for gv in &config.group_versions {
        let base = format!("/apis/{}/{}", gv.group, gv.version);
        if path == base || path == format!("{base}/") {
            return json_response(StatusCode::OK, &resource_list(gv));
        }
        if path.starts_with(&format!("{base}/")) && is_watch(&path, &query) {
            return watch_stream(&shared, &format!("{}/{}", gv.group, gv.version));
        }
    }
    if path.ends_with("/redirect") {
        let mut r = Response::new(full("moved"));
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut().insert(
            "location",
            HeaderValue::from_static("https://elsewhere.example/apis"),
        );
        return r;
    }
    let method = req.method().to_string();
    let version = format!("{:?}", req.version());
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => format!("<body error: {e}>"),
    };
    let mut by_name: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &headers {
        by_name.entry(k.clone()).or_default().push(v.clone());
    }
    json_response(
        StatusCode::OK,
        &json!({"backend": config.name, "user": user_json(&user), "method": method,
                "path": path, "query": query, "headers": by_name, "body": body,
                "httpVersion": version}),
    )
}

fn is_watch(path: &str, query: &str) -> bool {
    path.split('/').any(|s| s == "watch")
        || query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
}

fn watch_stream(shared: &Arc<Shared>, gv: &str) -> Response<Body> {
    let (tx, rx) = mpsc::channel(4);
    let mut release = shared.release.subscribe();
    let start = *release.borrow_and_update();
    let gv = gv.to_owned();
    tokio::spawn(async move {
        if tx.send(event("ADDED", &gv, "one")).await.is_err() {
            return;
        }
        while *release.borrow_and_update() == start {
            if release.changed().await.is_err() {
                return;
            }
        }
        let _ = tx.send(event("MODIFIED", &gv, "one")).await;
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn proxy_upgrade(req: &Request<Incoming>) -> bool {
    req.headers().get_all("connection").iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade"))
    })
}

fn upgrade(req: &mut Request<Incoming>, user: &UserInfo) -> Response<Body> {
    let protocol = req
        .headers()
        .get("upgrade")
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("websocket"));
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 4096];
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
            let _ = io.shutdown().await;
        }
    });
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    h.insert("upgrade", protocol);
    if let Ok(v) = HeaderValue::from_str(&user.name) {
        h.insert("x-echo-user", v);
    }
    if let Ok(v) = HeaderValue::from_str(&user.groups.join(",")) {
        h.insert("x-echo-groups", v);
    }
    r
}

/// FNV-1a, for a stable ETag without another dependency.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Reads an HTTP/1.1 response head byte by byte (so nothing after it is consumed) from a
/// blocking stream, returning the status and headers (names lower-case).
pub fn read_head(stream: &mut impl std::io::Read) -> Result<(u16, Vec<(String, String)>)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!(
                "EOF in the response head: {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(byte[0]);
        if head.len() > 64 * 1024 {
            bail!("response head too long");
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

/// Writes `data` and reads until as many bytes came back (an echo round trip).
pub fn echo_round_trip(
    stream: &mut (impl std::io::Read + std::io::Write),
    data: &[u8],
) -> Result<Vec<u8>> {
    stream.write_all(data)?;
    stream.flush()?;
    let mut got = vec![0u8; data.len()];
    let mut filled = 0;
    while filled < got.len() {
        let n = stream.read(&mut got[filled..])?;
        if n == 0 {
            bail!("EOF after {filled} of {} echoed bytes", data.len());
        }
        filled += n;
    }
    Ok(got)
}
