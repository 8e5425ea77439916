//! The request pipeline, in the order upstream's filter chain runs it (upstream-behaviour.md
//! §5.7): panic recovery and audit ID → health endpoints (no credentials needed) →
//! authentication (401) → impersonation (400/403) → authorization (403) → max in-flight (429)
//! → route: version, metrics, discovery, OpenAPI, the registration API, a remote APIService,
//! or the delegate. Metrics are recorded for every request.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apimachinery::Status;
use apimachinery::discovery::DiscoveryVersion;
use apimachinery::negotiate::{self, DISCOVERY_V2, DISCOVERY_V2BETA1, Offer};
use bytes::Bytes;
use front_proxy::{PeerCertificates, UserInfo};
use futures_util::FutureExt;
use http::header::{CACHE_CONTROL, ETAG, HeaderValue, VARY};
use http::{Method, Request, Response, StatusCode};
use proxy::body::{Body, empty};
use store::Store;
use tokio::sync::{Semaphore, watch};

use crate::authn::Authenticator;
use crate::authz::{Attributes, Authorizer, Decision, forbidden_message};
use crate::discovery::{self, ServingState};
use crate::forward::{ForwardTarget, Forwarder, RequestContext};
use crate::health::{self, Check};
use crate::impersonate::{self, Refused};
use crate::metrics::Metrics;
use crate::openapi::{OpenApi, OpenApiOwner, OpenApiRoutes};
use crate::registry::{self, Registry};
use crate::request_info::{RequestInfo, query_pairs};
use crate::response;

/// Shared, read-only state of the request path (built once; no locks on the hot path).
pub struct AppState {
    /// Authentication.
    pub authn: Authenticator,
    /// Authorization.
    pub authz: Arc<dyn Authorizer>,
    /// The registration API.
    pub registry: Registry,
    /// Discovery documents and routes, replaced when APIServices change.
    pub serving: watch::Receiver<Arc<ServingState>>,
    /// Remote and delegate forwarding.
    pub forwarder: Arc<dyn Forwarder>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// OpenAPI documents.
    pub openapi: OpenApi,
    /// The merged `/openapi/v3` index and the owner of each entry (the OpenAPI controller).
    pub openapi_routes: watch::Receiver<Arc<OpenApiRoutes>>,
    /// `/version`.
    pub version: Bytes,
    /// `/apis/apiregistration.k8s.io/v1`.
    pub own_resource_list: Bytes,
    /// Non-mutating in-flight limit.
    pub readonly_limit: Option<Arc<Semaphore>>,
    /// Mutating in-flight limit.
    pub mutating_limit: Option<Arc<Semaphore>>,
    /// Deadline of non-long-running requests.
    pub request_timeout: Duration,
    /// True once shutdown began (`/readyz` fails).
    pub shutting_down: watch::Receiver<bool>,
    /// The store (for the readiness check).
    pub store: Arc<dyn Store>,
    /// `--authorization-kubeconfig`: the delegated chain (SubjectAccessReview) that replaces
    /// [`AppState::authz`] when set (`crate::cluster::sar`).
    pub delegated_authz: Option<Arc<crate::cluster::sar::DelegatedAuthorizer>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// What the connection knows about the client.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The TCP peer.
    pub peer_addr: SocketAddr,
    /// The TLS client certificate chain (empty without one).
    pub peer_certs: PeerCertificates,
    /// Per-connection authentication results.
    pub cache: Arc<crate::authn::ConnCache>,
}

/// Serves one request; never fails and never panics outward (a panic becomes a 500 `Status`).
pub async fn handle(
    state: Arc<AppState>,
    mut req: Request<Body>,
    conn: ConnInfo,
) -> Response<Body> {
    let start = Instant::now();
    let audit_id = registry::new_uid();
    req.extensions_mut().insert(conn.peer_certs.clone());
    let info = Arc::new(RequestInfo::parse(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query().unwrap_or_default(),
    ));
    let fut = AssertUnwindSafe(route(
        state.clone(),
        req,
        conn,
        info.clone(),
        audit_id.clone(),
    ));
    let mut resp = match fut.catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            tracing::error!(path = %info.path, panic = %what, "handler panicked");
            response::status(&Status::internal_error("an unexpected error occurred"))
        }
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&audit_id) {
        h.insert("audit-id", v);
    }
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    }
    state.metrics.request(
        &info.verb,
        &info.api_group,
        &info.api_version,
        &info.resource,
        &info.subresource,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

fn is_health(path: &str) -> Option<&'static str> {
    ["healthz", "livez", "readyz"].into_iter().find(|e| {
        let p = path.trim_start_matches('/');
        p == *e || p.strip_prefix(e).is_some_and(|r| r.starts_with('/'))
    })
}

fn is_long_running(info: &RequestInfo) -> bool {
    matches!(info.verb.as_str(), "watch" | "proxy")
        || matches!(
            info.subresource.as_str(),
            "attach" | "exec" | "proxy" | "log" | "portforward"
        )
}

/// Parses `timeout=32s`-style values (Go durations of s, m, h, ms).
fn query_timeout(query: &str) -> Option<Duration> {
    let (_, v) = query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "timeout")?;
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

async fn route(
    state: Arc<AppState>,
    mut req: Request<Body>,
    conn: ConnInfo,
    info: Arc<RequestInfo>,
    audit_id: String,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    if let Some(endpoint) = is_health(&path)
        && matches!(*req.method(), Method::GET | Method::HEAD)
    {
        let checks = health_checks(&state, endpoint).await;
        return health::render(
            endpoint,
            &path,
            req.uri().query().unwrap_or_default(),
            &checks,
        )
        .unwrap_or_else(|| response::status(&Status::not_found_path()));
    }

    let user = match state
        .authn
        .authenticate_request(&conn.peer_certs.0, req.headers_mut(), Some(&conn.cache))
        .await
    {
        Ok(u) => u,
        Err(why) => {
            tracing::debug!(path = %path, reason = %why.0, "unauthenticated");
            return response::status(&Status::unauthorized());
        }
    };
    let impersonated = match &state.delegated_authz {
        Some(d) => impersonate::impersonate_delegated(&user, req.headers_mut(), d).await,
        None => impersonate::impersonate(&user, req.headers_mut(), state.authz.as_ref()),
    };
    let user = match impersonated {
        Ok(Some(effective)) => effective,
        Ok(None) => user,
        Err(Refused::BadRequest(m)) => return response::status(&Status::bad_request(m)),
        Err(Refused::Internal(e)) => {
            tracing::warn!(path = %path, error = %e, "authorizing impersonation failed");
            return response::status(&Status::internal_error(&e));
        }
        Err(Refused::Forbidden {
            resource,
            group,
            name,
            message,
        }) => {
            return response::status(&Status::forbidden(
                apimachinery::GroupResource { group, resource },
                &name,
                &message,
            ));
        }
    };
    let decision = match &state.delegated_authz {
        Some(d) => match d.authorize(&user, &info).await {
            Ok(decision) => decision,
            // A review that cannot be made is never an allowance (upstream: 500).
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "authorization failed");
                return response::status(&Status::internal_error(&e));
            }
        },
        None => state.authz.authorize(&Attributes {
            user: &user,
            info: &info,
        }),
    };
    if let Decision::Deny(reason) = decision {
        let message = forbidden_message(&user, &info, &reason);
        return response::status(&if info.is_resource_request {
            Status::forbidden(
                apimachinery::GroupResource {
                    group: &info.api_group,
                    resource: &info.resource,
                },
                &info.name,
                &message,
            )
        } else {
            Status::forbidden_path(&message)
        });
    }

    let long_running = is_long_running(&info);
    let _permit = if long_running {
        None
    } else {
        let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let limit = if mutating {
            &state.mutating_limit
        } else {
            &state.readonly_limit
        };
        let guard = state
            .metrics
            .inflight(if mutating { "mutating" } else { "readOnly" });
        match limit {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some((p, guard)),
                Err(_) => {
                    let mut r = response::status(&Status::too_many_requests(1));
                    r.headers_mut()
                        .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return r;
                }
            },
            None => {
                drop(guard);
                None
            }
        }
    };

    let ctx = RequestContext {
        user,
        client_addr: conn.peer_addr,
        audit_id,
        info: info.clone(),
    };
    let fut = dispatch(state.clone(), req, ctx, info.clone());
    if long_running {
        return fut.await;
    }
    let deadline = query_timeout(&query)
        .map(|t| t.min(state.request_timeout))
        .unwrap_or(state.request_timeout);
    match tokio::time::timeout(deadline, fut).await {
        Ok(r) => r,
        Err(_) => response::status(&Status::timeout(
            "Timeout: request did not complete within requested timeout - context deadline exceeded",
            0,
        )),
    }
}

async fn health_checks(state: &AppState, endpoint: &str) -> Vec<Check> {
    let mut checks = vec![Check {
        name: "ping",
        result: Ok(()),
    }];
    if endpoint == "livez" {
        return checks;
    }
    let synced = state.serving.borrow().snapshot.synced;
    checks.push(Check {
        name: "informer-sync",
        result: if synced {
            Ok(())
        } else {
            Err("APIServices not listed yet".into())
        },
    });
    let store = match tokio::time::timeout(
        Duration::from_secs(2),
        state.store.current_resource_version(),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the store did not answer within 2s".into()),
    };
    checks.push(Check {
        name: "store",
        result: store,
    });
    if endpoint == "readyz" {
        let down = *state.shutting_down.borrow();
        checks.push(Check {
            name: "shutdown",
            result: if down {
                Err("the server is shutting down".into())
            } else {
                Ok(())
            },
        });
    }
    checks
}

/// Where a request goes, decided without awaiting (so no borrow lives across an await).
enum Route {
    Answer(Response<Body>),
    Registry,
    ApiService(Arc<store::APIService>, bool),
    Delegate,
}

/// The current discovery and route snapshot without the watch channel's lock: each worker
/// thread keeps its own receiver and last snapshot, and only compares the channel's version (an
/// atomic load) per request. One writer (the discovery task), readers never lock.
fn serving(state: &AppState) -> Arc<ServingState> {
    type Cached = Option<(watch::Receiver<Arc<ServingState>>, Arc<ServingState>)>;
    thread_local! {
        static CACHED: std::cell::RefCell<Cached> = const { std::cell::RefCell::new(None) };
    }
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        match cached.as_mut() {
            Some((rx, snapshot)) if rx.same_channel(&state.serving) => {
                if rx.has_changed().unwrap_or(false) {
                    *snapshot = rx.borrow_and_update().clone();
                }
                snapshot.clone()
            }
            _ => {
                let mut rx = state.serving.clone();
                let snapshot = rx.borrow_and_update().clone();
                *cached = Some((rx, snapshot.clone()));
                snapshot
            }
        }
    })
}

/// A `(group, version)` route-table key that can be looked up without allocating.
trait GroupVersion {
    fn parts(&self) -> (&str, &str);
}

impl GroupVersion for (String, String) {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl GroupVersion for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn GroupVersion + 'a> for (String, String) {
    fn borrow(&self) -> &(dyn GroupVersion + 'a) {
        self
    }
}

impl PartialEq for dyn GroupVersion + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn GroupVersion + '_ {}

impl std::hash::Hash for dyn GroupVersion + '_ {
    // The same as `(String, String)`'s hash, so both find the same entries.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let (group, version) = self.parts();
        group.hash(state);
        version.hash(state);
    }
}

fn decide(state: &AppState, req: &Request<Body>, info: &RequestInfo) -> Route {
    let path = req.uri().path();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let serving = serving(state);
    let answer = Route::Answer;
    match segs.as_slice() {
        ["version"] if get => answer(response::bytes(
            StatusCode::OK,
            response::JSON,
            state.version.clone(),
        )),
        ["metrics"] if get => answer(response::bytes(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.encode(),
        )),
        [""] if get => answer(root(&serving)),
        ["apis"] if get => answer(apis(&serving, req, true)),
        ["apis", ""] if get => answer(apis(&serving, req, false)),
        ["apis", discovery::GROUP] | ["apis", discovery::GROUP, ""] if get => {
            let doc = serving
                .groups
                .get(discovery::GROUP)
                .cloned()
                .unwrap_or_default();
            answer(response::bytes(StatusCode::OK, response::JSON, doc))
        }
        ["apis", discovery::GROUP, discovery::VERSION]
        | ["apis", discovery::GROUP, discovery::VERSION, ""]
            if get =>
        {
            answer(response::bytes(
                StatusCode::OK,
                response::JSON,
                state.own_resource_list.clone(),
            ))
        }
        ["apis", discovery::GROUP, discovery::VERSION, ..] if info.is_resource_request => {
            Route::Registry
        }
        ["apis", discovery::GROUP, ..] => answer(response::status(&Status::not_found_path())),
        ["apis", group] | ["apis", group, ""] if get => match serving.groups.get(*group) {
            Some(d) => answer(response::bytes(StatusCode::OK, response::JSON, d.clone())),
            None => Route::Delegate,
        },
        ["apis", group, version, rest @ ..] => {
            match serving
                .versions
                .get(&(*group, *version) as &dyn GroupVersion)
            {
                Some(svc) => Route::ApiService(svc.clone(), rest.iter().all(|s| s.is_empty())),
                None => Route::Delegate,
            }
        }
        // §3.8: a `v1.` APIService owns `/api`; without one it is the delegate's (404 without
        // a delegate, which client-go reads as "no legacy group").
        ["api", ..] => match &serving.core {
            Some(svc) => Route::ApiService(svc.clone(), segs.len() == 2 && segs[1] == "v1"),
            None => Route::Delegate,
        },
        ["openapi", "v3"] if get => answer(openapi_index(state, req)),
        [
            "openapi",
            "v3",
            "apis",
            discovery::GROUP,
            discovery::VERSION,
        ] if get => answer(openapi_doc(state, req)),
        // §4.2: another index entry is forwarded, query included, to the source that listed it.
        ["openapi", "v3", rest @ ..] if get && !rest.is_empty() => {
            let key = rest.join("/");
            let owner = state.openapi_routes.borrow().owners.get(&key).cloned();
            match owner {
                Some(OpenApiOwner::ApiService(name)) => match serving.snapshot.items.get(&name) {
                    Some(svc) => Route::ApiService(svc.clone(), false),
                    None => answer(response::status(&Status::not_found_path())),
                },
                Some(OpenApiOwner::Delegate) => Route::Delegate,
                Some(OpenApiOwner::Local) | None => {
                    answer(response::status(&Status::not_found_path()))
                }
            }
        }
        ["openapi", ..] => answer(response::status(&Status::not_found_path())),
        ["version" | "metrics" | "apis" | ""] | ["apis", _] => {
            answer(response::status(&Status::method_not_allowed()))
        }
        _ => Route::Delegate,
    }
}

async fn dispatch(
    state: Arc<AppState>,
    req: Request<Body>,
    ctx: RequestContext,
    info: Arc<RequestInfo>,
) -> Response<Body> {
    let route = decide(&state, &req, &info);
    match route {
        Route::Answer(r) => r,
        // Boxed: the registry's future is several KiB, and without the box every request's
        // future (and every HTTP/1.1 connection's in-flight slot, which hyper sizes for it)
        // would be that large.
        Route::Registry => Box::pin(state.registry.serve(req, &info)).await,
        Route::ApiService(svc, discovery_path) => {
            to_apiservice(&state, req, ctx, svc, discovery_path).await
        }
        Route::Delegate => forward(&state, req, ctx, ForwardTarget::Delegate).await,
    }
}

async fn forward(
    state: &AppState,
    req: Request<Body>,
    ctx: RequestContext,
    target: ForwardTarget,
) -> Response<Body> {
    state.forwarder.forward(req, ctx, target).await
}

async fn to_apiservice(
    state: &AppState,
    req: Request<Body>,
    ctx: RequestContext,
    svc: Arc<store::APIService>,
    discovery_path: bool,
) -> Response<Body> {
    if registry::strategy::spec(&svc).service.is_none() {
        return forward(state, req, ctx, ForwardTarget::Delegate).await;
    }
    // §5.1 step 3: an APIService that is not Available is refused without contacting it.
    if !registry::strategy::is_available(&svc) {
        return response::service_unavailable();
    }
    forward(
        state,
        req,
        ctx,
        ForwardTarget::Remote {
            apiservice: svc,
            discovery: discovery_path,
        },
    )
    .await
}

fn root(serving: &ServingState) -> Response<Body> {
    let mut paths: Vec<String> = vec![
        "/apis".into(),
        "/apis/".into(),
        format!("/apis/{}", discovery::GROUP),
        format!("/apis/{}/{}", discovery::GROUP, discovery::VERSION),
        "/healthz".into(),
        "/livez".into(),
        "/metrics".into(),
        "/openapi/v3".into(),
        "/readyz".into(),
        "/version".into(),
    ];
    for (g, v) in serving.versions.keys() {
        paths.push(format!("/apis/{g}"));
        paths.push(format!("/apis/{g}/{v}"));
    }
    if serving.core.is_some() {
        paths.push("/api".into());
        paths.push("/api/v1".into());
    }
    paths.sort();
    paths.dedup();
    response::json(StatusCode::OK, &serde_json::json!({ "paths": paths }))
}

const DISCOVERY_OFFERS: [Offer; 3] = [
    Offer::converted("application/json", DISCOVERY_V2),
    Offer::converted("application/json", DISCOVERY_V2BETA1),
    Offer::plain("application/json"),
];

fn accept(req: &Request<Body>) -> Option<&str> {
    req.headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
}

/// `/apis`: aggregated v2/v2beta1 when asked for (ETag, 304, `Vary: Accept`,
/// `Cache-Control: public`), the legacy APIGroupList otherwise; `/apis/` is legacy only
/// (§3.1).
fn apis(serving: &ServingState, req: &Request<Body>, aggregated_allowed: bool) -> Response<Body> {
    let offers: &[Offer] = if aggregated_allowed {
        &DISCOVERY_OFFERS
    } else {
        &DISCOVERY_OFFERS[2..]
    };
    let Some(i) = negotiate::negotiate(accept(req), offers) else {
        return response::status(&Status::not_acceptable(&["application/json"]));
    };
    let version = match offers[i].target {
        Some(t) if t == DISCOVERY_V2 => Some(DiscoveryVersion::V2),
        Some(t) if t == DISCOVERY_V2BETA1 => Some(DiscoveryVersion::V2beta1),
        _ => None,
    };
    let gzip = accepts_gzip(req);
    let body = |v: Option<DiscoveryVersion>, content_type| {
        let (bytes, gzipped) = serving.apis_body(v, gzip);
        let mut r = response::bytes(StatusCode::OK, content_type, bytes);
        if gzipped {
            r.headers_mut().insert(
                http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
        r
    };
    let mut r = match version {
        None => body(None, response::JSON),
        Some(v) => {
            let inm = req
                .headers()
                .get(http::header::IF_NONE_MATCH)
                .and_then(|h| h.to_str().ok());
            let mut r = if apimachinery::etag::if_none_match(inm, &serving.apis_etag) {
                let mut r = Response::new(empty());
                *r.status_mut() = StatusCode::NOT_MODIFIED;
                r
            } else {
                body(Some(v), v.content_type())
            };
            if let Ok(tag) = HeaderValue::from_str(&serving.apis_etag) {
                r.headers_mut().insert(ETAG, tag);
            }
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("public"));
            r
        }
    };
    r.headers_mut()
        .insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    r
}

/// Whether `Accept-Encoding` allows gzip (`gzip` or `*` without `q=0`).
fn accepts_gzip(req: &Request<Body>) -> bool {
    req.headers()
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

fn openapi_accepts_json(req: &Request<Body>) -> bool {
    negotiate::negotiate(accept(req), &[Offer::plain("application/json")]).is_some()
}

fn openapi_index(state: &AppState, req: &Request<Body>) -> Response<Body> {
    if !openapi_accepts_json(req) {
        return response::status(&Status::not_acceptable(&["application/json"]));
    }
    let index = state.openapi_routes.borrow().index.clone();
    response::bytes(StatusCode::OK, response::JSON, index)
}

/// kube-openapi `handler3`: a stale `?hash=` redirects (301) to the current one; a matching
/// one is immutable for a year; `If-None-Match` gives 304.
fn openapi_doc(state: &AppState, req: &Request<Body>) -> Response<Body> {
    if !openapi_accepts_json(req) {
        return response::status(&Status::not_acceptable(&["application/json"]));
    }
    let o = &state.openapi;
    let hash = query_pairs(req.uri().query().unwrap_or_default())
        .into_iter()
        .find(|(k, _)| k == "hash")
        .map(|(_, v)| v);
    if let Some(h) = &hash
        && *h != o.hash
    {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(loc) = HeaderValue::from_str(&format!(
            "/openapi/v3/{}?hash={}",
            crate::openapi::GV_PATH,
            o.hash
        )) {
            r.headers_mut().insert(http::header::LOCATION, loc);
        }
        return r;
    }
    let inm = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok());
    let mut r = if apimachinery::etag::if_none_match(inm, &o.etag) {
        let mut r = Response::new(empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        response::bytes(StatusCode::OK, response::JSON, o.group_version.clone())
    };
    if let Ok(tag) = HeaderValue::from_str(&o.etag) {
        r.headers_mut().insert(ETAG, tag);
    }
    if hash.is_some() {
        r.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("public, immutable"));
        let expires = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 365);
        let text = jiff::fmt::rfc2822::to_string(&expires.to_zoned(jiff::tz::TimeZone::UTC))
            .map(|s| s.replace("+0000", "GMT"))
            .unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().insert(http::header::EXPIRES, v);
        }
    }
    r.headers_mut()
        .insert(VARY, HeaderValue::from_static("Accept"));
    r
}

/// The user of requests made by the server itself (status writes).
pub fn loopback_user() -> UserInfo {
    UserInfo {
        name: "system:kube-aggregator".into(),
        uid: String::new(),
        groups: vec![
            "system:masters".into(),
            front_proxy::SYSTEM_AUTHENTICATED.into(),
        ],
        extra: Default::default(),
    }
}

/// Compile-time check: the request future must be `Send` for every lifetime (tokio::spawn).
#[cfg(test)]
#[allow(dead_code)]
fn handle_is_send(s: Arc<AppState>, r: Request<Body>, c: ConnInfo) {
    fn is_send<T: Send>(_: &T) {}
    is_send(&handle(s, r, c));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_and_long_running() {
        assert_eq!(query_timeout("timeout=32s"), Some(Duration::from_secs(32)));
        assert_eq!(
            query_timeout("timeout=5m&x=1"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            query_timeout("timeout=500ms"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(query_timeout("timeout=x"), None);
        assert_eq!(query_timeout(""), None);
        let w = RequestInfo::parse(
            "GET",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            "watch=true",
        );
        assert!(is_long_running(&w));
        let l = RequestInfo::parse("GET", "/api/v1/namespaces/a/pods/p/log", "");
        assert!(is_long_running(&l));
        assert!(!is_long_running(&RequestInfo::parse("GET", "/apis", "")));
        assert_eq!(is_health("/readyz/ping"), Some("readyz"));
        assert_eq!(is_health("/healthzz"), None);
    }
}
