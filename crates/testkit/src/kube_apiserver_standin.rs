//! A **stand-in for kube-apiserver** (which cannot run on these machines), serving exactly what
//! the aggregator uses when it stands in front of a cluster, over HTTPS on 127.0.0.1:
//!
//! - discovery: `GET /api` and `/apis` (aggregated v2 with an ETag, or legacy), `/api/v1`,
//!   `/apis/apps/v1`; `/api/v1/namespaces/<ns>/pods` and `/apis/apps/v1/.../deployments` lists;
//! - Services (`/api/v1/services`) and EndpointSlices (`/apis/discovery.k8s.io/v1/endpointslices`)
//!   list and watch (`resourceVersion`, `watch=true` streamed event by event, 410 for a version
//!   older than [`KubeApiserverStandin::compact`] left), changed by the test;
//! - `POST .../tokenreviews` answered from a token table, `POST .../subjectaccessreviews` from
//!   rules the test sets (both recorded);
//! - the `kube-system/extension-apiserver-authentication` ConfigMap: get, create, replace;
//! - anything else: 200 with JSON echoing the caller's identity.
//!
//! Authentication is kube-apiserver's: a client certificate that chains to the front-proxy CA
//! with an allowed CN makes the `X-Remote-*` headers the identity (checked by
//! `front_proxy::Authenticator`, so spoofed or badly signed identities are 401); otherwise the
//! `Authorization: Bearer` token must be the aggregator's own token. Every request is recorded
//! with the identity it was served as ([`KubeApiserverStandin::seen`]).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use front_proxy::{Authenticator, HeaderNames, PeerCertificates, RequestHeaderConfig, UserInfo};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

type Body = BoxBody<Bytes, Infallible>;
/// A served resource: plural, singular, kind, namespaced.
type Res = (&'static str, &'static str, &'static str, bool);

/// How the stand-in starts.
#[derive(Debug, Clone)]
pub struct StandinConfig {
    /// Serving certificate (PEM, leaf first; SAN 127.0.0.1).
    pub serving_cert_pem: String,
    /// Serving key (PEM).
    pub serving_key_pem: String,
    /// `--requestheader-client-ca-file`: the front-proxy CA.
    pub front_proxy_ca_pem: String,
    /// `--requestheader-allowed-names`.
    pub allowed_names: Vec<String>,
    /// The bearer token of the aggregator's own calls (its kubeconfig's user).
    pub own_token: String,
}

/// Who a request was served as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// A proxied request: the front-proxy certificate verified, the user from `X-Remote-*`.
    Proxied(UserInfo),
    /// The aggregator's own call (its bearer token).
    Own,
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query.
    pub query: String,
    /// The identity, or why authentication failed.
    pub identity: std::result::Result<Identity, String>,
    /// The request body (reviews).
    pub body: String,
}

/// A SubjectAccessReview rule: `user` may do `verb` on `resource` (`*` matches anything).
#[derive(Debug, Clone)]
pub struct Rule {
    /// The user name.
    pub user: String,
    /// The verb.
    pub verb: String,
    /// The resource (or the non-resource path).
    pub resource: String,
}

#[derive(Default)]
struct Objects {
    rv: u64,
    /// kind → (namespace, name) → object.
    items: HashMap<&'static str, BTreeMap<(String, String), Value>>,
    /// (rv, kind, type, object) since `compacted`.
    history: Vec<(u64, &'static str, &'static str, Value)>,
    compacted: u64,
}

struct Shared {
    config: StandinConfig,
    auth: Authenticator,
    seen: Mutex<Vec<Seen>>,
    tokens: Mutex<HashMap<String, UserInfo>>,
    rules: Mutex<Vec<Rule>>,
    objects: Mutex<Objects>,
    events: broadcast::Sender<(u64, &'static str, &'static str, Value)>,
    configmap: Mutex<Option<Value>>,
}

/// A running kube-apiserver stand-in (see the module docs). Stopped when dropped.
pub struct KubeApiserverStandin {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for KubeApiserverStandin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeApiserverStandin")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

const SERVICES: &str = "services";
const SLICES: &str = "endpointslices";

impl KubeApiserverStandin {
    /// Starts on a free loopback port.
    pub fn start(config: StandinConfig) -> Result<Self> {
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
            seen: Mutex::default(),
            tokens: Mutex::default(),
            rules: Mutex::default(),
            objects: Mutex::new(Objects {
                rv: 100,
                ..Objects::default()
            }),
            events: broadcast::channel(1024).0,
            configmap: Mutex::default(),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = StdListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&shared.config)?));
        let s = shared.clone();
        crate::backend::spawn_tls_server(&runtime, listener, acceptor, move |peer, req| {
            handle(s.clone(), peer, req)
        })?;
        Ok(KubeApiserverStandin {
            addr,
            shared,
            runtime: Some(runtime),
        })
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A kubeconfig for the aggregator's own calls (bearer `own_token`), trusting `ca_pem`.
    pub fn kubeconfig(&self, ca_pem: &str) -> String {
        crate::kubectl::token_kubeconfig(&self.url(), ca_pem, &self.shared.config.own_token)
    }

    /// TokenReview will authenticate `token` as `user`.
    pub fn add_token(&self, token: &str, user: UserInfo) {
        if let Ok(mut t) = self.shared.tokens.lock() {
            t.insert(token.to_owned(), user);
        }
    }

    /// SubjectAccessReview will allow what `rule` says.
    pub fn allow(&self, rule: Rule) {
        if let Ok(mut r) = self.shared.rules.lock() {
            r.push(rule);
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The trust ConfigMap as stored (`None` until created).
    pub fn configmap(&self) -> Option<Value> {
        self.shared.configmap.lock().ok().and_then(|c| c.clone())
    }

    /// Stores the trust ConfigMap (as kube-apiserver would have written it).
    pub fn set_configmap(&self, data: Value) {
        if let Ok(mut c) = self.shared.configmap.lock() {
            *c = Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system", "resourceVersion": "1"},
                "data": data}));
        }
    }

    fn mutate(
        &self,
        kind: &'static str,
        kind_name: &str,
        api_version: &str,
        mut obj: Value,
        delete: bool,
    ) {
        let shared = &self.shared;
        let Ok(mut o) = shared.objects.lock() else {
            return;
        };
        o.rv += 1;
        let rv = o.rv;
        obj["kind"] = json!(kind_name);
        obj["apiVersion"] = json!(api_version);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
        let map = o.items.entry(kind).or_default();
        let type_ = if delete {
            // As kube-apiserver: a DELETED event carries the object's last state.
            if let Some(mut last) = map.remove(&key) {
                last["metadata"]["resourceVersion"] = json!(rv.to_string());
                obj = last;
            }
            "DELETED"
        } else if map.insert(key, obj.clone()).is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        o.history.push((rv, kind, type_, obj.clone()));
        let _ = shared.events.send((rv, kind, type_, obj));
    }

    /// Creates or replaces a Service (JSON with `metadata.namespace`/`name` and `spec`).
    pub fn apply_service(&self, obj: Value) {
        self.mutate(SERVICES, "Service", "v1", obj, false);
    }

    /// Deletes a Service.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        let obj = json!({"metadata": {"namespace": namespace, "name": name}});
        self.mutate(SERVICES, "Service", "v1", obj, true);
    }

    /// Creates or replaces an EndpointSlice.
    pub fn apply_slice(&self, obj: Value) {
        self.mutate(SLICES, "EndpointSlice", "discovery.k8s.io/v1", obj, false);
    }

    /// Deletes an EndpointSlice.
    pub fn delete_slice(&self, namespace: &str, name: &str) {
        let obj = json!({"metadata": {"namespace": namespace, "name": name}});
        self.mutate(SLICES, "EndpointSlice", "discovery.k8s.io/v1", obj, true);
    }

    /// Forgets the event history: watches from older versions get 410 Gone.
    pub fn compact(&self) {
        if let Ok(mut o) = self.shared.objects.lock() {
            o.compacted = o.rv;
            o.history.clear();
        }
    }
}

impl Drop for KubeApiserverStandin {
    fn drop(&mut self) {
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

/// A ClusterIP Service `namespace/name` with one port (`port`, named `port_name`).
pub fn service(namespace: &str, name: &str, cluster_ip: &str, port: u16, port_name: &str) -> Value {
    json!({"metadata": {"namespace": namespace, "name": name},
           "spec": {"type": "ClusterIP", "clusterIP": cluster_ip,
                    "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]}})
}

/// An EndpointSlice of Service `service` with `(address, ready)` endpoints on `port` named
/// `port_name`.
pub fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    port_name: &str,
    port: u16,
    endpoints: &[(&str, bool)],
) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(a, ready)| json!({"addresses": [a], "conditions": {"ready": ready}}))
        .collect();
    json!({"metadata": {"namespace": namespace, "name": name,
                        "labels": {"kubernetes.io/service-name": service}},
           "addressType": "IPv4", "endpoints": eps,
           "ports": [{"name": port_name, "port": port, "protocol": "TCP"}]})
}

fn tls_config(config: &StandinConfig) -> Result<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(config.serving_cert_pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
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

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    json_typed(status, "application/json", v)
}

fn json_typed(status: StatusCode, ct: &'static str, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static(ct));
    r
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code}),
    )
}

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn core_resources() -> Vec<Res> {
    vec![
        ("pods", "pod", "Pod", true),
        ("services", "service", "Service", true),
        ("configmaps", "configmap", "ConfigMap", true),
    ]
}

fn aggregated_resources(group: &str, version: &str, rs: &[(&str, &str, &str, bool)]) -> Vec<Value> {
    rs.iter()
        .map(|(name, singular, kind, ns)| {
            json!({"resource": name, "responseKind": {"group": group, "version": version, "kind": kind},
                   "scope": if *ns { "Namespaced" } else { "Cluster" }, "singularResource": singular,
                   "verbs": VERBS})
        })
        .collect()
}

fn resource_list(gv: &str, rs: &[(&str, &str, &str, bool)]) -> Value {
    let resources: Vec<Value> = rs
        .iter()
        .map(|(name, singular, kind, ns)| {
            json!({"name": name, "singularName": singular, "namespaced": ns, "kind": kind, "verbs": VERBS})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn apps() -> Vec<Res> {
    vec![("deployments", "deployment", "Deployment", true)]
}

fn discovery_apis() -> Vec<(&'static str, &'static str, Vec<Res>)> {
    vec![
        ("apps", "v1", apps()),
        (
            "discovery.k8s.io",
            "v1",
            vec![("endpointslices", "endpointslice", "EndpointSlice", true)],
        ),
    ]
}

fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

struct ChannelBody(mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<http_body::Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}

fn user_json(u: &UserInfo) -> Value {
    json!({"name": u.name, "uid": u.uid, "groups": u.groups, "extra": u.extra})
}

async fn handle(
    shared: Arc<Shared>,
    peer: PeerCertificates,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let method = req.method().clone();
    // kube-apiserver's order: request-header (front-proxy certificate), then bearer tokens.
    let identity = match shared.auth.authenticate(&peer.0, req.headers_mut()) {
        Ok(u) => Ok(Identity::Proxied(u)),
        Err(r) if r.is_not_applicable() => {
            let bearer = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_owned);
            match bearer {
                Some(t) if t == shared.config.own_token => Ok(Identity::Own),
                Some(_) => Err("invalid bearer token".to_owned()),
                None => Err("no credentials".to_owned()),
            }
        }
        Err(r) => Err(r.to_string()),
    };
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    if let Ok(mut s) = shared.seen.lock() {
        s.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            identity: identity.clone(),
            body: body.clone(),
        });
    }
    let identity = match identity {
        Ok(i) => i,
        Err(e) => return status(401, "Unauthorized", &format!("Unauthorized: {e}")),
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == http::Method::GET;
    match (segs.as_slice(), get) {
        (["api"], true) => {
            if accept.contains("as=APIGroupDiscoveryList") {
                let doc = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
                    "items": [{"metadata": {"creationTimestamp": null},
                               "versions": [{"version": "v1", "resources": aggregated_resources("", "v1", &core_resources()), "freshness": "Current"}]}]});
                return json_typed(StatusCode::OK, AGGREGATED, &doc);
            }
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
            )
        }
        (["api", "v1"], true) => {
            json_response(StatusCode::OK, &resource_list("v1", &core_resources()))
        }
        (["apis"], true) => {
            if accept.contains("as=APIGroupDiscoveryList") {
                let items: Vec<Value> = discovery_apis()
                    .iter()
                    .map(|(g, v, rs)| json!({"metadata": {"name": g, "creationTimestamp": null},
                        "versions": [{"version": v, "resources": aggregated_resources(g, v, rs), "freshness": "Current"}]}))
                    .collect();
                let doc = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
                let mut r = json_typed(StatusCode::OK, AGGREGATED, &doc);
                r.headers_mut()
                    .insert("etag", HeaderValue::from_static("\"STANDIN-1\""));
                return r;
            }
            let groups: Vec<Value> = discovery_apis()
                .iter()
                .map(|(g, v, _)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv], "preferredVersion": gv})
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        (["apis", "apps", "v1"], true) => {
            json_response(StatusCode::OK, &resource_list("apps/v1", &apps()))
        }
        (["api", "v1", "namespaces", ns, "pods"], true) => {
            let who = match &identity {
                Identity::Proxied(u) => u.name.clone(),
                Identity::Own => "standin-own".into(),
            };
            json_response(
                StatusCode::OK,
                &json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                "items": [{"metadata": {"name": "standin-pod", "namespace": ns, "creationTimestamp": "2025-01-01T00:00:00Z",
                                        "annotations": {"standin/served-user": who}},
                           "spec": {"containers": [{"name": "c", "image": "x"}]}, "status": {"phase": "Running"}}]}),
            )
        }
        (["api", "v1", "services"], true) => {
            list_or_watch(&shared, SERVICES, "ServiceList", "v1", &query)
        }
        (["apis", "discovery.k8s.io", "v1", "endpointslices"], true) => list_or_watch(
            &shared,
            SLICES,
            "EndpointSliceList",
            "discovery.k8s.io/v1",
            &query,
        ),
        (["apis", "authentication.k8s.io", "v1", "tokenreviews"], false) => {
            token_review(&shared, &identity, &body)
        }
        (["apis", "authorization.k8s.io", "v1", "subjectaccessreviews"], false) => {
            access_review(&shared, &identity, &body)
        }
        (["api", "v1", "namespaces", "kube-system", "configmaps", ..], _) => {
            configmap(&shared, &identity, &method, &segs, &body)
        }
        (["openapi", ..], _) => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
        _ => {
            let user = match &identity {
                Identity::Proxied(u) => user_json(u),
                Identity::Own => json!("own"),
            };
            json_response(
                StatusCode::OK,
                &json!({"standin": "kube-apiserver", "user": user,
                "method": method.to_string(), "path": path, "query": query}),
            )
        }
    }
}

fn own_only(identity: &Identity) -> Option<Response<Body>> {
    match identity {
        Identity::Own => None,
        Identity::Proxied(u) => Some(status(
            403,
            "Forbidden",
            &format!(
                "User {:?} may not do this (the stand-in allows the aggregator's own token only)",
                u.name
            ),
        )),
    }
}

fn list_or_watch(
    shared: &Arc<Shared>,
    kind: &'static str,
    list_kind: &str,
    api_version: &str,
    query: &str,
) -> Response<Body> {
    let watch = query_value(query, "watch").is_some_and(|v| v == "true" || v == "1");
    let Ok(o) = shared.objects.lock() else {
        return status(500, "InternalError", "lock");
    };
    if !watch {
        let items: Vec<Value> = o
            .items
            .get(kind)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        return json_response(
            StatusCode::OK,
            &json!({"kind": list_kind, "apiVersion": api_version,
            "metadata": {"resourceVersion": o.rv.to_string()}, "items": items}),
        );
    }
    let from: u64 = query_value(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(o.rv);
    let (tx, rx) = mpsc::channel(64);
    if from < o.compacted {
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from} ({})", o.compacted), "reason": "Expired", "code": 410}});
        let _ = tx.try_send(Bytes::from(format!("{gone}\n")));
        drop(tx);
    } else {
        let backlog: Vec<Bytes> = o
            .history
            .iter()
            .filter(|(rv, k, _, _)| *rv > from && *k == kind)
            .map(|(_, _, t, obj)| Bytes::from(format!("{}\n", json!({"type": t, "object": obj}))))
            .collect();
        let mut events = shared.events.subscribe();
        tokio::spawn(async move {
            for b in backlog {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            while let Ok((rv, k, t, obj)) = events.recv().await {
                if k != kind || rv <= from {
                    continue;
                }
                if tx
                    .send(Bytes::from(format!(
                        "{}\n",
                        json!({"type": t, "object": obj})
                    )))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn token_review(shared: &Arc<Shared>, identity: &Identity, body: &str) -> Response<Body> {
    if let Some(r) = own_only(identity) {
        return r;
    }
    let review: Value = serde_json::from_str(body).unwrap_or_default();
    let token = review["spec"]["token"].as_str().unwrap_or_default();
    let user = shared
        .tokens
        .lock()
        .ok()
        .and_then(|t| t.get(token).cloned());
    let status = match user {
        Some(u) => {
            json!({"authenticated": true, "user": {"username": u.name, "uid": u.uid, "groups": u.groups, "extra": u.extra}})
        }
        None => json!({"authenticated": false, "error": "token not found"}),
    };
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {}, "spec": review["spec"], "status": status}),
    )
}

fn access_review(shared: &Arc<Shared>, identity: &Identity, body: &str) -> Response<Body> {
    if let Some(r) = own_only(identity) {
        return r;
    }
    let review: Value = serde_json::from_str(body).unwrap_or_default();
    let spec = &review["spec"];
    let user = spec["user"].as_str().unwrap_or_default();
    let (verb, resource) = match spec.get("resourceAttributes") {
        Some(r) => (
            r["verb"].as_str().unwrap_or_default(),
            r["resource"].as_str().unwrap_or_default(),
        ),
        None => (
            spec["nonResourceAttributes"]["verb"]
                .as_str()
                .unwrap_or_default(),
            spec["nonResourceAttributes"]["path"]
                .as_str()
                .unwrap_or_default(),
        ),
    };
    let m = |rule: &str, v: &str| rule == "*" || rule == v;
    let allowed = shared
        .rules
        .lock()
        .map(|rules| {
            rules
                .iter()
                .any(|r| m(&r.user, user) && m(&r.verb, verb) && m(&r.resource, resource))
        })
        .unwrap_or(false);
    let status = if allowed {
        json!({"allowed": true, "reason": "stand-in rule"})
    } else {
        json!({"allowed": false, "reason": format!("stand-in: no rule lets {user} {verb} {resource}")})
    };
    json_response(
        StatusCode::CREATED,
        &json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {}, "spec": spec, "status": status}),
    )
}

fn configmap(
    shared: &Arc<Shared>,
    identity: &Identity,
    method: &http::Method,
    segs: &[&str],
    body: &str,
) -> Response<Body> {
    if let Some(r) = own_only(identity) {
        return r;
    }
    let name = segs.get(5).copied().unwrap_or_default();
    let Ok(mut cm) = shared.configmap.lock() else {
        return status(500, "InternalError", "lock");
    };
    match (method.as_str(), name) {
        ("GET", "extension-apiserver-authentication") => match cm.as_ref() {
            Some(v) => json_response(StatusCode::OK, v),
            None => status(
                404,
                "NotFound",
                "configmaps \"extension-apiserver-authentication\" not found",
            ),
        },
        ("POST", "") => {
            if cm.is_some() {
                return status(
                    409,
                    "AlreadyExists",
                    "configmaps \"extension-apiserver-authentication\" already exists",
                );
            }
            let mut v: Value = serde_json::from_str(body).unwrap_or_default();
            v["metadata"]["resourceVersion"] = json!("1");
            *cm = Some(v.clone());
            json_response(StatusCode::CREATED, &v)
        }
        ("PUT", "extension-apiserver-authentication") => {
            let mut v: Value = serde_json::from_str(body).unwrap_or_default();
            let current = cm
                .as_ref()
                .map(|c| c["metadata"]["resourceVersion"].clone());
            if current != Some(v["metadata"]["resourceVersion"].clone()) {
                return status(409, "Conflict", "the object has been modified");
            }
            let next = current
                .and_then(|c| c.as_str().and_then(|s| s.parse::<u64>().ok()))
                .unwrap_or(1)
                + 1;
            v["metadata"]["resourceVersion"] = json!(next.to_string());
            *cm = Some(v.clone());
            json_response(StatusCode::OK, &v)
        }
        _ => status(404, "NotFound", "not found"),
    }
}
