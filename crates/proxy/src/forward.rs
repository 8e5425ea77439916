//! Forwarding one request (upstream-behaviour.md §5.4–§5.6): the request rewrite, the response
//! rewrite, and the ordered steps between them.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use front_proxy::{HeaderNames, UserInfo, write_identity};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version, request};
use http_body_util::BodyExt;

use crate::body::{Body, DeadlineBody, boxed};
use crate::connect::{TlsContext, classify_chain};
use crate::engine::{Backend, Engine, EngineInner, Target};
use crate::error::{Error, TransportCause, redirect_rejected};
use crate::resolve::BackendAddr;

/// Who is calling and from where: what the server knows about a request after authentication.
#[derive(Debug, Clone)]
pub struct RequestContext<'a> {
    /// The authenticated (and, after impersonation, effective) user. Written to the backend as
    /// identity headers; the server must have added `system:authenticated` already, as
    /// upstream's union authenticator does.
    pub user: &'a UserInfo,
    /// The client's IP, appended to `X-Forwarded-For`. `None` leaves the header alone.
    pub client_addr: Option<IpAddr>,
    /// The request's audit ID, sent as `Audit-Id`.
    pub audit_id: Option<HeaderValue>,
}

/// What happened to a forwarded request, attached to every response [`Engine::forward`] returns
/// (`response.extensions().get::<ForwardInfo>()`), for the server's access log.
#[derive(Debug, Clone, Default)]
pub struct ForwardInfo {
    /// The address the request went to (`None` when resolution failed).
    pub backend: Option<BackendAddr>,
    /// The HTTP version spoken with the backend.
    pub version: Option<Version>,
    /// Whether the connection was upgraded and is now tunnelled.
    pub upgraded: bool,
    /// The error when the response was produced by the proxy itself.
    pub error: Option<Arc<Error>>,
}

/// Whether a request asks for a protocol upgrade (exec, attach, port-forward): any `Connection`
/// value contains `upgrade`, case-insensitively (Go's `httpstream.IsUpgradeRequest`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .windows(7)
            .any(|w| w.eq_ignore_ascii_case(b"upgrade"))
    })
}

/// Whether a path is exactly `/apis/<group>/<version>` (trailing slash allowed): upstream gives
/// such discovery requests a 5 s deadline (§5.6).
pub fn is_discovery_path(path: &str) -> bool {
    let mut segments = path.trim_matches('/').split('/');
    matches!(
        (segments.next(), segments.next(), segments.next(), segments.next()),
        (Some("apis"), Some(g), Some(v), None) if !g.is_empty() && !v.is_empty()
    )
}

fn unhex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; a bad escape is `None`.
fn query_unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = unhex(*bytes.get(i + 1)?)?;
                let lo = unhex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `url.QueryEscape`: unreserved bytes stay, space becomes `+`, the rest `%XX` (upper case).
fn query_escape_into(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// The query as upstream forwards it: `req.URL.Query().Encode()`. Pairs are parsed like Go
/// (segments containing `;` and bad escapes are dropped, `+` is a space), then re-encoded with
/// keys sorted (values keep their order) and `QueryEscape`d.
///
/// ```
/// assert_eq!(
///     proxy::canonical_query("watch=true&labelSelector=app%3dweb&limit=500"),
///     "labelSelector=app%3Dweb&limit=500&watch=true"
/// );
/// assert_eq!(proxy::canonical_query("a=1;b=2&c"), "c=");
/// ```
pub fn canonical_query(raw: &str) -> String {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for segment in raw.split('&') {
        if segment.is_empty() || segment.contains(';') {
            continue;
        }
        let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
        if let (Some(key), Some(value)) = (query_unescape(key), query_unescape(value)) {
            pairs.push((key, value));
        }
    }
    // Stable: values of one key keep their order, as in Go's url.Values.
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(raw.len() + 8);
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        query_escape_into(&mut out, key);
        out.push('=');
        query_escape_into(&mut out, value);
    }
    out
}

/// Go's `path.Clean` as the proxy transport applies it to `X-Forwarded-Uri`, keeping a trailing
/// slash. Borrowed when nothing changes (the usual case).
fn forwarded_uri(path: &str) -> Cow<'_, str> {
    let dirty = path.contains("//")
        || path.contains("/./")
        || path.contains("/../")
        || path.ends_with("/.")
        || path.ends_with("/..");
    if !dirty {
        return Cow::Borrowed(path);
    }
    let rooted = path.starts_with('/');
    let mut stack: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if stack.last().is_some_and(|s| *s != "..") {
                    stack.pop();
                } else if !rooted {
                    stack.push("..");
                }
            }
            s => stack.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    if rooted {
        out.push('/');
    }
    out.push_str(&stack.join("/"));
    if out.is_empty() {
        out.push('.');
    }
    if path.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    Cow::Owned(out)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const AUDIT_ID: HeaderName = HeaderName::from_static("audit-id");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Hop-by-hop headers (RFC 9110 §7.6.1 and Go's `ReverseProxy` list), except `Connection` and
/// `Upgrade`, which the caller handles because upgrades keep them.
const HOP_BY_HOP: [HeaderName; 6] = [
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The CORS headers upstream strips from backend responses (`removeCORSHeaders`).
const CORS: [HeaderName; 4] = [
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
];

/// Removes hop-by-hop headers, including those the `Connection` header names; `Connection` and
/// `Upgrade` themselves survive when `keep_upgrade`.
fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Usually there is none: one pass over the names instead of a dozen hashed removals.
    if !headers.keys().any(|name| {
        *name == header::CONNECTION
            || *name == header::UPGRADE
            || *name == header::TE
            || HOP_BY_HOP.iter().any(|h| h == name)
    }) {
        return;
    }
    if !keep_upgrade && headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // `TE: trailers` is end-to-end in practice (gRPC); Go keeps it too.
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    if !keep_upgrade {
        headers.remove(header::CONNECTION);
        headers.remove(header::UPGRADE);
    }
}

/// An IP address as text without going through `fmt` (IPv4, the common case, is written by
/// hand; IPv6 falls back to `Display`).
pub(crate) struct IpText {
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub(crate) fn new(ip: IpAddr) -> IpText {
        let mut text = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let s = v6.to_string();
                let n = s.len().min(text.buf.len());
                text.buf[..n].copy_from_slice(&s.as_bytes()[..n]);
                text.len = n;
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// Where and how one request is sent.
pub(crate) struct Outgoing<'a> {
    pub(crate) scheme: &'a Scheme,
    pub(crate) addr: &'a BackendAddr,
    pub(crate) names: &'a HeaderNames,
    pub(crate) upgrade: bool,
}

/// Turns the client's request into the backend's (§5.4, §5.5). The steps run in this order:
pub(crate) fn rewrite_request(
    parts: &mut request::Parts,
    out: &Outgoing<'_>,
    ctx: &RequestContext<'_>,
) -> Result<(), Error> {
    // 1. The URI first, while the client's path and query are untouched: the path verbatim, the
    //    query re-encoded like Go's `url.Values.Encode`, the authority the resolved address.
    let path_and_query = match parts.uri.path_and_query() {
        Some(pq) => match pq.query() {
            Some(query) => {
                let canonical = canonical_query(query);
                if canonical == query {
                    pq.clone()
                } else if canonical.is_empty() {
                    PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(pq.path().as_bytes()))
                        .unwrap_or_else(|_| pq.clone())
                } else {
                    let joined = format!("{}?{canonical}", pq.path());
                    PathAndQuery::from_maybe_shared(Bytes::from(joined))
                        .unwrap_or_else(|_| pq.clone())
                }
            }
            None => pq.clone(),
        },
        None => PathAndQuery::from_static("/"),
    };
    let forwarded_path = HeaderValue::from_str(&forwarded_uri(path_and_query.path())).ok();
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(out.scheme.clone());
    uri.authority = Some(out.addr.authority().clone());
    uri.path_and_query = Some(path_and_query);
    parts.uri = Uri::from_parts(uri).map_err(|_| Error::InvalidUrl {
        url: out.addr.to_string(),
        reason: "cannot build the backend URL",
    })?;
    // hyper-util sends HTTP/2 when ALPN picked it, whatever the client spoke to us.
    parts.version = Version::HTTP_11;

    let headers = &mut parts.headers;
    // 2. Hop-by-hop headers go before anything is added, so nothing added is removed by a
    //    `Connection: <name>` trick.
    remove_hop_by_hop(headers, out.upgrade);

    // 3. Credentials and identity claims of the client never reach the backend: the backend
    //    trusts only what the proxy asserts with its certificate (CVE-class: identity spoofing).
    headers.remove(header::AUTHORIZATION);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str().as_bytes();
            n.starts_with(b"impersonate-") || n.starts_with(b"x-remote-")
        })
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }

    // 4. Host is the resolved address: hyper-util writes it from the URI for HTTP/1.1 and
    //    `:authority` for HTTP/2, so the client's Host must go; upgrades are written by hand.
    headers.remove(header::HOST);
    if out.upgrade {
        headers.insert(header::HOST, out.addr.host_header().clone());
    }

    // 5. Forwarding headers, as Go's ReverseProxy and the proxy transport set them.
    if let Some(ip) = ctx.client_addr {
        let client = IpText::new(ip);
        let value = if headers.contains_key(&X_FORWARDED_FOR) {
            let prior: Vec<&str> = headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            HeaderValue::from_str(&format!("{}, {}", prior.join(", "), client.as_str()))
        } else {
            HeaderValue::from_str(client.as_str())
        };
        if let Ok(value) = value {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    match forwarded_path {
        Some(v) => headers.insert(X_FORWARDED_URI, v),
        None => headers.remove(X_FORWARDED_URI),
    };
    headers.insert(X_FORWARDED_HOST, out.addr.host_header().clone());
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if *out.scheme == Scheme::HTTP {
            "http"
        } else {
            "https"
        }),
    );
    match &ctx.audit_id {
        Some(id) => headers.insert(AUDIT_ID, id.clone()),
        None => headers.remove(AUDIT_ID),
    };

    // 6. Identity last: `write_identity` strips the configured names once more and writes the
    //    authenticated user, so nothing after it can disturb what the backend trusts.
    write_identity(headers, ctx.user, out.names).map_err(Error::Identity)
}

/// Strips what must not travel back to the client: CORS headers (the aggregator's own CORS
/// filter decides) and hop-by-hop headers (the server frames its own response).
pub(crate) fn rewrite_response_headers(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.keys().any(|name| CORS.iter().any(|c| c == name)) {
        for name in CORS {
            headers.remove(name);
        }
    }
    remove_hop_by_hop(headers, keep_upgrade);
}

/// An error response carrying its [`ForwardInfo`].
pub(crate) fn error_response(error: Error, backend: Option<BackendAddr>) -> Response<Body> {
    let mut response = error.to_response();
    response.extensions_mut().insert(ForwardInfo {
        backend,
        version: None,
        upgraded: false,
        error: Some(Arc::new(error)),
    });
    response
}

/// A transport error for `target`, reporting connect failures to the balancer.
pub(crate) fn transport_error(
    engine: &EngineInner,
    target: &Target,
    cause: TransportCause,
    source: Option<crate::BoxError>,
) -> Error {
    if cause.is_connect_failure() {
        target
            .service
            .mark_failed(&target.addr, engine.config.failed_endpoint_backoff);
    }
    Error::Transport {
        address: target.addr.to_string(),
        cause,
        source,
    }
}

/// A response fully read by the engine for its own fetches (discovery, OpenAPI).
pub(crate) struct Fetched {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) url: String,
}

impl Engine {
    /// Forwards one request to `backend` and returns the backend's response, streaming, or the
    /// proxy's own error response (§5.8). Never fails: errors are answered, and described in the
    /// response's [`ForwardInfo`] extension.
    ///
    /// The server decides beforehand that the request belongs to this backend, that the
    /// APIService is Available (else [`crate::service_unavailable`]) and who the user is.
    /// Upgrade requests need the server to serve HTTP/1.1 with upgrades enabled
    /// (`serve_connection_with_upgrades`).
    pub async fn forward(
        &self,
        backend: &Backend,
        request: Request<Body>,
        ctx: &RequestContext<'_>,
    ) -> Response<Body> {
        let engine = &*self.inner;
        // 1. Upgrades leave first: they bypass the pool and take over the client connection,
        //    so nothing below (pooling, HTTP/2, deadlines) applies to them.
        if is_upgrade_request(request.headers()) {
            return crate::upgrade::forward_upgrade(engine, backend, request, ctx).await;
        }
        // 2. Resolve before touching the request: an unknown Service answers 503 without work.
        let target = match backend.pick(engine) {
            Ok(target) => target,
            Err(error) => return error_response(error, None),
        };
        // 3. Rewrite once the address is known (Host and X-Forwarded-Host name it).
        let (mut parts, body) = request.into_parts();
        let outgoing = Outgoing {
            scheme: backend.scheme(),
            addr: &target.addr,
            names: &engine.config.identity_headers,
            upgrade: false,
        };
        if let Err(error) = rewrite_request(&mut parts, &outgoing, ctx) {
            return error_response(error, Some(target.addr));
        }
        // 4. The discovery deadline wraps the send so it covers connecting and the response
        //    head; the body gets the rest of it below.
        let deadline = is_discovery_path(parts.uri.path()).then(|| {
            let after = engine.config.discovery_path_timeout;
            (tokio::time::Instant::now() + after, after)
        });
        let transport = backend.transport(engine);
        // 5. Send through the pool (HTTP/2 multiplexed when offered and enabled).
        let sent = transport.send(&target.addr, Request::from_parts(parts, body));
        let result = match deadline {
            Some((at, after)) => match tokio::time::timeout_at(at, sent).await {
                Ok(result) => result,
                Err(_) => {
                    let error = Error::Transport {
                        address: target.addr.to_string(),
                        cause: TransportCause::Timeout { after },
                        source: None,
                    };
                    return error_response(error, Some(target.addr));
                }
            },
            None => sent.await,
        };
        // 6. Classify failures and tell the balancer before answering, so the next request
        //    already avoids an address that refused us.
        let response = match result {
            Ok(response) => response,
            Err(e) => {
                let ctx = TlsContext {
                    expected: backend.server_name(),
                    roots: transport.http1.roots,
                };
                let cause = classify_chain(&*e, &ctx);
                let error = transport_error(engine, &target, cause, Some(e));
                return error_response(error, Some(target.addr));
            }
        };
        target.service.mark_healthy(&target.addr);
        let version = response.version();
        let (mut head, body) = response.into_parts();
        // 7. Redirects are refused before anything else is copied: the backend's body and
        //    headers are discarded entirely (CVE-2022-3172).
        if engine.config.reject_forwarding_redirects
            && head.status.is_redirection()
            && head.headers.contains_key(header::LOCATION)
        {
            let mut response = redirect_rejected();
            response.extensions_mut().insert(ForwardInfo {
                backend: Some(target.addr),
                version: Some(version),
                upgraded: false,
                error: None,
            });
            return response;
        }
        // 8. Every passed-through response loses CORS and hop-by-hop headers.
        rewrite_response_headers(&mut head.headers, false);
        // 9. Streamed as it arrives: watch events are not held back (upstream flushes every
        //    200 ms; hyper writes each frame when it comes).
        let body = match deadline {
            Some((at, after)) => DeadlineBody::new(boxed(body), at, after).boxed_unsync(),
            None => boxed(body),
        };
        head.version = Version::HTTP_11;
        // 10. Last, what the access log needs.
        head.extensions.insert(ForwardInfo {
            backend: Some(target.addr),
            version: Some(version),
            upgraded: false,
            error: None,
        });
        Response::from_parts(head, body)
    }

    /// Sends a request made by the engine itself (discovery, OpenAPI) through the backend's pool
    /// as `user`, and reads the whole response (up to `limit` bytes) within `timeout`.
    pub(crate) async fn fetch(
        &self,
        backend: &Backend,
        path: &str,
        headers: HeaderMap,
        user: &UserInfo,
        timeout: Duration,
        limit: usize,
    ) -> Result<Fetched, Error> {
        let engine = &*self.inner;
        let target = backend.pick(engine)?;
        let mut request = Request::new(crate::body::empty());
        *request.uri_mut() = path.parse().map_err(|_| Error::InvalidUrl {
            url: path.to_owned(),
            reason: "invalid path",
        })?;
        *request.headers_mut() = headers;
        let (mut parts, body) = request.into_parts();
        let ctx = RequestContext {
            user,
            client_addr: None,
            audit_id: None,
        };
        let outgoing = Outgoing {
            scheme: backend.scheme(),
            addr: &target.addr,
            names: &engine.config.identity_headers,
            upgrade: false,
        };
        rewrite_request(&mut parts, &outgoing, &ctx)?;
        let url = parts.uri.to_string();
        let transport = backend.transport(engine);
        let tls_ctx = TlsContext {
            expected: backend.server_name(),
            roots: transport.http1.roots,
        };
        let exchange = async {
            let response = transport
                .send(&target.addr, Request::from_parts(parts, body))
                .await
                .map_err(|e: crate::BoxError| {
                    let cause = classify_chain(&*e, &tls_ctx);
                    transport_error(engine, &target, cause, Some(e))
                })?;
            let (head, body) = response.into_parts();
            let body = http_body_util::Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    let cause = classify_chain(e.as_ref(), &tls_ctx);
                    transport_error(engine, &target, cause, Some(e))
                })?
                .to_bytes();
            Ok::<_, Error>((head, body))
        };
        let (head, body) = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(Error::Transport {
                    address: target.addr.to_string(),
                    cause: TransportCause::Timeout { after: timeout },
                    source: None,
                });
            }
        };
        target.service.mark_healthy(&target.addr);
        Ok(Fetched {
            status: head.status,
            headers: head.headers,
            body,
            url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_reencoded_like_go() {
        assert_eq!(canonical_query("b=2&a=1"), "a=1&b=2");
        assert_eq!(canonical_query("a=2&b=1&a=1"), "a=2&a=1&b=1");
        assert_eq!(canonical_query("q=a+b%20c"), "q=a+b+c");
        assert_eq!(canonical_query("x=%zz&y=1"), "y=1");
        assert_eq!(canonical_query("k=a/b:c"), "k=a%2Fb%3Ac");
        assert_eq!(canonical_query("&&watch"), "watch=");
        assert_eq!(canonical_query("a=1;b=2"), "");
        assert_eq!(
            canonical_query("fieldSelector=metadata.name%3Dx&timeoutSeconds=30"),
            "fieldSelector=metadata.name%3Dx&timeoutSeconds=30"
        );
        assert_eq!(canonical_query("k=%E2%9C%93"), "k=%E2%9C%93");
    }

    #[test]
    fn discovery_paths_are_exactly_three_segments_under_apis() {
        assert!(is_discovery_path("/apis/metrics.k8s.io/v1beta1"));
        assert!(is_discovery_path("/apis/metrics.k8s.io/v1beta1/"));
        assert!(!is_discovery_path("/apis/metrics.k8s.io"));
        assert!(!is_discovery_path("/apis/metrics.k8s.io/v1beta1/nodes"));
        assert!(!is_discovery_path("/api/v1/pods"));
    }

    #[test]
    fn upgrade_detection_matches_go() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade_request(&h));
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert!(!is_upgrade_request(&h));
        h.append(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        assert!(is_upgrade_request(&h));
    }

    #[test]
    fn ip_text_matches_display() {
        for ip in [
            "0.0.0.0",
            "10.0.0.5",
            "192.168.100.255",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(IpText::new(ip).as_str(), ip.to_string());
        }
    }

    #[test]
    fn forwarded_uri_is_cleaned_like_path_join() {
        assert_eq!(forwarded_uri("/apis/a/v1"), "/apis/a/v1");
        assert_eq!(forwarded_uri("/apis//a/./v1/../v2/"), "/apis/a/v2/");
        assert_eq!(forwarded_uri("/.."), "/");
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn request_rewrite_strips_spoofing_and_sets_forwarding_headers() {
        let mut parts = request(
            "/apis/g/v1/ns/x/things?b=2&a=1",
            &[
                ("authorization", "Bearer secret"),
                ("impersonate-user", "root"),
                ("impersonate-extra-scopes", "all"),
                ("x-remote-user", "admin"),
                ("x-remote-group", "system:masters"),
                ("x-remote-extra-foo", "bar"),
                ("x-remote-anything", "z"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "gzip"),
                ("proxy-authorization", "Basic x"),
                ("x-forwarded-for", "198.51.100.1"),
                ("host", "client.example"),
                ("accept", "application/json"),
            ],
        );
        let mut user = UserInfo::new("alice");
        user.groups = vec!["dev".into(), "system:authenticated".into()];
        let addr: BackendAddr = "127.0.0.1:8443".parse().unwrap();
        let names = HeaderNames::default();
        let ctx = RequestContext {
            user: &user,
            client_addr: Some("203.0.113.7".parse().unwrap()),
            audit_id: Some(HeaderValue::from_static("audit-1")),
        };
        let out = Outgoing {
            scheme: &Scheme::HTTPS,
            addr: &addr,
            names: &names,
            upgrade: false,
        };
        rewrite_request(&mut parts, &out, &ctx).unwrap();
        assert_eq!(
            parts.uri.to_string(),
            "https://127.0.0.1:8443/apis/g/v1/ns/x/things?a=1&b=2"
        );
        let h = &parts.headers;
        for gone in [
            "authorization",
            "impersonate-user",
            "impersonate-extra-scopes",
            "x-remote-extra-foo",
            "x-remote-anything",
            "connection",
            "x-hop",
            "keep-alive",
            "te",
            "proxy-authorization",
            "host",
        ] {
            assert!(!h.contains_key(gone), "{gone} survived");
        }
        assert_eq!(h["x-remote-user"], "alice");
        let groups: Vec<_> = h.get_all("x-remote-group").iter().collect();
        assert_eq!(groups, ["dev", "system:authenticated"]);
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 203.0.113.7");
        assert_eq!(h["x-forwarded-host"], "127.0.0.1:8443");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-uri"], "/apis/g/v1/ns/x/things");
        assert_eq!(h["audit-id"], "audit-1");
        assert_eq!(h["accept"], "application/json");
    }

    #[test]
    fn upgrades_keep_connection_and_upgrade_and_set_host() {
        let mut parts = request(
            "/apis/g/v1/x/exec",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-protocol", "v5.channel.k8s.io"),
            ],
        );
        let user = UserInfo::new("bob");
        let addr: BackendAddr = "10.0.0.1:443".parse().unwrap();
        let names = HeaderNames::default();
        let ctx = RequestContext {
            user: &user,
            client_addr: None,
            audit_id: None,
        };
        let out = Outgoing {
            scheme: &Scheme::HTTPS,
            addr: &addr,
            names: &names,
            upgrade: true,
        };
        rewrite_request(&mut parts, &out, &ctx).unwrap();
        assert_eq!(parts.headers["connection"], "Upgrade");
        assert_eq!(parts.headers["upgrade"], "websocket");
        assert_eq!(parts.headers["host"], "10.0.0.1:443");
        assert!(!parts.headers.contains_key("x-forwarded-for"));
    }

    #[test]
    fn response_rewrite_strips_cors_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert(
            "access-control-allow-credentials",
            HeaderValue::from_static("true"),
        );
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("content-type", HeaderValue::from_static("application/json"));
        rewrite_response_headers(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }
}
