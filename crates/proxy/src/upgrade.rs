//! Upgrade requests (exec, attach, port-forward over SPDY/3.1 or WebSocket; §5.6): a fresh
//! HTTP/1.1 connection per request, never pooled, and a byte tunnel after a 101.
//!
//! CVE-2018-1002105 was a proxy that kept a backend connection open after a failed upgrade, so a
//! client could send further requests over it with the proxy's credentials. Here the backend
//! connection belongs to this one request: on anything but 101 it is dropped once the response
//! has been relayed, and the client connection is told to close (`Connection: close`).

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::body::{Body, boxed, empty};
use crate::connect::classify_chain;
use crate::engine::{Backend, EngineInner};
use crate::error::Error;
use crate::forward::{
    ForwardInfo, Outgoing, RequestContext, error_response, rewrite_request,
    rewrite_response_headers, transport_error,
};

/// Forwards an upgrade request. The steps run in this order:
pub(crate) async fn forward_upgrade(
    engine: &EngineInner,
    backend: &Backend,
    mut request: Request<Body>,
    ctx: &RequestContext<'_>,
) -> Response<Body> {
    // 1. Take the client connection's upgrade handle first: without one (HTTP/2, or a server
    //    without upgrades) nothing can be tunnelled, and nothing should be sent to the backend.
    let Some(client_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return error_response(Error::UpgradeUnsupported, None);
    };
    // 2. Resolve, as for any request.
    let target = match backend.pick(engine) {
        Ok(target) => target,
        Err(error) => return error_response(error, None),
    };
    // 3. Identity and forwarding headers are written onto the request before dialling: the
    //    upgrade path has no round-tripper that could add them later (§5.5).
    let (mut parts, body) = request.into_parts();
    let outgoing = Outgoing {
        scheme: backend.scheme(),
        addr: &target.addr,
        names: &engine.config.identity_headers,
        upgrade: true,
    };
    if let Err(error) = rewrite_request(&mut parts, &outgoing, ctx) {
        return error_response(error, Some(target.addr));
    }
    // hyper's HTTP/1 client connection sends origin-form request targets.
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .unwrap_or_default();
    // 4. A dedicated connection with ALPN http/1.1 only: upgrades cannot ride HTTP/2, and a
    //    pooled connection could be handed to someone else afterwards.
    let transport = backend.transport(engine);
    let stream = match transport
        .http1
        .dial(target.addr.host(), target.addr.port())
        .await
    {
        Ok(stream) => stream,
        Err(error) => {
            let error = match error {
                Error::Transport { cause, source, .. } => {
                    transport_error(engine, &target, cause, source)
                }
                other => other,
            };
            return error_response(error, Some(target.addr));
        }
    };
    let tls_ctx = transport.http1.tls_context();
    let fail = |e: hyper::Error| {
        let cause = classify_chain(&e, &tls_ctx);
        transport_error(engine, &target, cause, Some(Box::new(e)))
    };
    let (mut sender, connection) = match hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(stream)
        .await
    {
        Ok(pair) => pair,
        Err(e) => return error_response(fail(e), Some(target.addr.clone())),
    };
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upgrade backend connection ended");
        }
    });
    let mut response = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(e) => return error_response(fail(e), Some(target.addr.clone())),
    };
    // The sender is the only handle on the backend connection: dropping it here means the
    // connection closes as soon as this response is done, whatever its status.
    drop(sender);
    target.service.mark_healthy(&target.addr);
    let info = |upgraded| ForwardInfo {
        backend: Some(target.addr.clone()),
        version: Some(http::Version::HTTP_11),
        upgraded,
        error: None,
    };
    match response.status() {
        // 5a. 101: answer the client with the backend's head and splice the two connections
        //     once both sides have switched protocols.
        StatusCode::SWITCHING_PROTOCOLS => {
            let backend_upgrade = hyper::upgrade::on(&mut response);
            let (mut head, _) = response.into_parts();
            rewrite_response_headers(&mut head.headers, true);
            head.extensions = http::Extensions::new();
            head.extensions.insert(info(true));
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, backend_upgrade) {
                    Ok((client, backend)) => {
                        let mut client = TokioIo::new(client);
                        let mut backend = TokioIo::new(backend);
                        // Half-closes are forwarded; the tunnel ends when both sides are done.
                        if let Err(error) =
                            tokio::io::copy_bidirectional(&mut client, &mut backend).await
                        {
                            tracing::debug!(%error, "upgraded connection ended");
                        }
                    }
                    Err(error) => tracing::debug!(%error, "upgrade did not complete"),
                }
            });
            Response::from_parts(head, empty())
        }
        // 5b. An error: relay it and close both connections (upstream hijacks, writes it and
        //     closes), so the client cannot reuse anything the backend saw.
        status if status.as_u16() >= 400 => {
            let (mut head, body) = response.into_parts();
            rewrite_response_headers(&mut head.headers, false);
            head.headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            head.extensions = http::Extensions::new();
            head.extensions.insert(info(false));
            Response::from_parts(head, boxed(body))
        }
        // 5c. Anything else is not an upgrade and not an error: upstream's 503.
        status => error_response(
            Error::InvalidUpgradeResponse {
                status: status.as_u16(),
            },
            Some(target.addr.clone()),
        ),
    }
}
