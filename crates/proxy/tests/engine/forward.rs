//! Ordinary requests: identity, header hygiene, query, redirects, streaming, HTTP/2, errors.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use front_proxy::UserInfo;
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use proxy::{EngineConfig, ForwardInfo, RequestContext, empty};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn identity_reaches_the_backend_as_a_verified_front_proxy_would_send_it() -> Result<()> {
    let w = World::new().await?;
    let mut user = UserInfo::new("system:serviceaccount:ns:sa");
    user.uid = "4f1c-uid".into();
    user.groups = vec![
        "system:serviceaccounts".into(),
        "system:authenticated".into(),
    ];
    user.extra.insert(
        "authentication.kubernetes.io/pod-name".into(),
        vec!["web-0".into()],
    );
    user.extra
        .insert("Scopes".into(), vec!["view".into(), "edit".into()]);
    user.extra
        .insert("example.com/key with space%".into(), vec!["v".into()]);
    let (status, _, body) = send(&w.engine, &w.route, get(&echo_path("echo")), &user).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(got["user"]["name"], "system:serviceaccount:ns:sa");
    assert_eq!(got["user"]["uid"], "4f1c-uid");
    assert_eq!(
        got["user"]["groups"],
        json!(["system:serviceaccounts", "system:authenticated"])
    );
    // Receivers lower-case, then unescape the key (§5.5): extras arrive lower-cased.
    let extra: BTreeMap<String, Vec<String>> =
        serde_json::from_value(got["user"]["extra"].clone())?;
    let want: BTreeMap<String, Vec<String>> = [
        ("authentication.kubernetes.io/pod-name", vec!["web-0"]),
        ("scopes", vec!["view", "edit"]),
        ("example.com/key with space%", vec!["v"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(extra, want);
    assert_eq!(got["peer_cn"], PROXY_CN);
    // The wire form: one header line per group and per extra value, keys escaped.
    let seen = w.backend.state.seen().pop().unwrap();
    assert_eq!(
        seen.header("x-remote-group"),
        ["system:serviceaccounts", "system:authenticated"]
    );
    assert_eq!(seen.header("x-remote-extra-scopes"), ["view", "edit"]);
    assert_eq!(
        seen.header("x-remote-extra-example.com%2fkey%20with%20space%25"),
        ["v"]
    );
    Ok(())
}

#[tokio::test]
async fn spoofed_identity_and_credentials_never_arrive() -> Result<()> {
    let w = World::new().await?;
    let request = Request::get(echo_path("echo"))
        .header("x-remote-user", "admin")
        .header("x-remote-group", "system:masters")
        .header("x-remote-extra-scopes", "everything")
        .header("x-remote-uid", "0")
        .header("x-remote-anything", "z")
        .header("impersonate-user", "root")
        .header("impersonate-group", "system:masters")
        .header("impersonate-extra-scopes", "all")
        .header("impersonate-uid", "0")
        .header("authorization", "Bearer stolen-token")
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp5")
        .header("x-forwarded-for", "198.51.100.1")
        .header("accept", "application/json")
        .body(empty())?;
    let (status, _, body) = send(&w.engine, &w.route, request, &alice()).await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(got["user"]["name"], "alice");
    assert_eq!(
        got["user"]["groups"],
        json!(["dev", "system:authenticated"])
    );
    assert_eq!(got["user"]["extra"], json!({}));
    let seen = w.backend.state.seen().pop().unwrap();
    for (name, _) in &seen.headers {
        assert!(
            !name.starts_with("impersonate-"),
            "{name} reached the backend"
        );
    }
    for gone in [
        "authorization",
        "x-remote-anything",
        "x-remote-extra-scopes",
        "x-remote-uid",
        "x-secret-hop",
        "keep-alive",
        "proxy-authorization",
    ] {
        assert!(seen.header(gone).is_empty(), "{gone} reached the backend");
    }
    assert_eq!(seen.header("x-remote-user"), ["alice"]);
    assert_eq!(
        seen.header("x-forwarded-for"),
        ["198.51.100.1, 203.0.113.7"]
    );
    assert_eq!(seen.header("x-forwarded-proto"), ["https"]);
    assert_eq!(seen.header("x-forwarded-host"), [w.backend.address()]);
    assert_eq!(seen.header("x-forwarded-uri"), [echo_path("echo")]);
    assert_eq!(seen.header("audit-id"), ["audit-42"]);
    assert_eq!(seen.header("accept"), ["application/json"]);
    if seen.version == Version::HTTP_11 {
        assert_eq!(seen.header("host"), [w.backend.address()]);
    }
    Ok(())
}

#[tokio::test]
async fn query_is_reencoded_and_the_path_is_verbatim() -> Result<()> {
    let w = World::new().await?;
    let got = echo(
        &w.engine,
        &w.route,
        &format!(
            "{}?watch=true&labelSelector=app%3dweb&b=x+y&a=1;bad=1&limit=500",
            echo_path("namespaces/ns-1/flunders/")
        ),
    )
    .await?;
    assert_eq!(got["path"], echo_path("namespaces/ns-1/flunders/"));
    assert_eq!(
        got["query"],
        "b=x+y&labelSelector=app%3Dweb&limit=500&watch=true"
    );
    Ok(())
}

#[tokio::test]
async fn backend_redirects_become_502_unless_allowed() -> Result<()> {
    let w = World::new().await?;
    let (status, headers, body) =
        send(&w.engine, &w.route, get(&echo_path("redirect")), &alice()).await?;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body, proxy::REDIRECT_REJECTED);
    assert!(headers.get("location").is_none());

    let allowing = engine_with(
        EngineConfig {
            reject_forwarding_redirects: false,
            ..EngineConfig::default()
        },
        w.pki.identity()?,
        &[(SERVICE, vec![w.backend.address()])],
    )?;
    let route = allowing.backend(&proxy::BackendSpec::service(
        service(SERVICE),
        w.pki.ca_bundle(),
    ))?;
    let (status, headers, _) =
        send(&allowing, &route, get(&echo_path("redirect")), &alice()).await?;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(headers["location"], "https://attacker.example/steal");
    Ok(())
}

#[tokio::test]
async fn cors_headers_from_the_backend_are_stripped() -> Result<()> {
    let w = World::new().await?;
    let ctx = RequestContext {
        user: &alice(),
        client_addr: None,
        audit_id: None,
    };
    let response = w
        .engine
        .forward(&w.route, get(&echo_path("echo")), &ctx)
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(response.headers()["x-backend"], "b1");
    let info = response.extensions().get::<ForwardInfo>().cloned().unwrap();
    assert_eq!(info.backend.unwrap().to_string(), w.backend.address());
    assert!(info.error.is_none());
    Ok(())
}

#[tokio::test]
async fn a_watch_streams_events_as_they_happen_through_a_server() -> Result<()> {
    let w = World::new().await?;
    let front = Front::start(w.engine.clone(), w.route.clone(), alice()).await?;
    let tcp = tokio::net::TcpStream::connect(front.addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let response = sender
        .send_request(
            Request::get(echo_path("watch?watch=true"))
                .header("host", "front")
                .body(http_body_util::Empty::<bytes::Bytes>::new())?,
        )
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    // The backend sends the second event only after we have seen the first: reading it proves
    // nothing was buffered on the way.
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await?
        .unwrap()?;
    assert_eq!(
        first.into_data().unwrap(),
        bytes::Bytes::from_static(b"{\"type\":\"ADDED\"}\n")
    );
    w.backend.state.watch_gate.notify_one();
    let mut rest = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame()).await? {
        if let Ok(data) = frame?.into_data() {
            rest.extend_from_slice(&data);
        }
    }
    assert_eq!(rest, b"{\"type\":\"MODIFIED\"}\n");
    Ok(())
}

#[tokio::test]
async fn http2_is_used_when_offered_and_concurrent_requests_share_one_connection() -> Result<()> {
    let w = World::new().await?;
    // Warm up: the first connection negotiates h2 through ALPN.
    echo(&w.engine, &w.route, &echo_path("warm")).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let engine = w.engine.clone();
        let route = w.route.clone();
        tasks.spawn(async move { echo(&engine, &route, &echo_path(&format!("c{i}"))).await });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let seen = w.backend.state.seen();
    assert_eq!(seen.len(), 65);
    assert!(
        seen.iter().all(|s| s.version == Version::HTTP_2),
        "{seen:?}"
    );
    let conns: std::collections::HashSet<_> = seen.iter().map(|s| s.conn).collect();
    assert_eq!(conns.len(), 1, "requests spread over {conns:?}");
    Ok(())
}

#[tokio::test]
async fn http1_only_backends_get_pooled_http1() -> Result<()> {
    let pki = Pki::new()?;
    let mut options = BackendOptions::new(&pki, "h1")?;
    options.alpn = vec![b"http/1.1".to_vec()];
    let backend = TestBackend::start_with(options).await?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![backend.address()])],
    )?;
    let route = engine.backend(&proxy::BackendSpec::service(
        service(SERVICE),
        pki.ca_bundle(),
    ))?;
    for i in 0..5 {
        echo(&engine, &route, &echo_path(&format!("s{i}"))).await?;
    }
    let seen = backend.state.seen();
    assert!(seen.iter().all(|s| s.version == Version::HTTP_11));
    let conns: std::collections::HashSet<_> = seen.iter().map(|s| s.conn).collect();
    assert_eq!(
        conns.len(),
        1,
        "sequential requests should reuse one connection"
    );
    Ok(())
}

#[tokio::test]
async fn a_dead_backend_is_503_with_the_cause() -> Result<()> {
    let pki = Pki::new()?;
    let port = dead_port().await?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![format!("127.0.0.1:{port}")])],
    )?;
    let route = engine.backend(&proxy::BackendSpec::service(
        service(SERVICE),
        pki.ca_bundle(),
    ))?;
    let (status, headers, body) = send(&engine, &route, get(&echo_path("x")), &alice()).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
    assert_eq!(
        body,
        format!(
            "error trying to reach service: dial tcp 127.0.0.1:{port}: connect: connection refused\n"
        )
    );
    Ok(())
}

#[tokio::test]
async fn unresolvable_services_are_a_bare_503() -> Result<()> {
    let w = World::new().await?;
    let route = w.engine.backend(&proxy::BackendSpec::service(
        service("missing"),
        w.pki.ca_bundle(),
    ))?;
    let ctx = RequestContext {
        user: &alice(),
        client_addr: None,
        audit_id: None,
    };
    let response = w.engine.forward(&route, get(&echo_path("x")), &ctx).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let info = response.extensions().get::<ForwardInfo>().cloned().unwrap();
    assert!(matches!(
        info.error.as_deref(),
        Some(proxy::Error::ServiceNotFound { .. })
    ));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "service unavailable\n");
    assert!(w.backend.state.seen().is_empty());
    Ok(())
}

#[tokio::test]
async fn the_discovery_path_has_a_deadline() -> Result<()> {
    let w = World::with_config(EngineConfig {
        discovery_path_timeout: Duration::from_millis(300),
        ..EngineConfig::default()
    })
    .await?;
    w.backend.state.set_mode(Mode::Hang);
    let (status, _, body) = send(
        &w.engine,
        &w.route,
        get(&format!("/apis/{GROUP}/{VERSION}")),
        &alice(),
    )
    .await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.starts_with("error trying to reach service: "),
        "{body}"
    );
    assert!(body.contains("no answer within 300ms"), "{body}");
    Ok(())
}

#[tokio::test]
async fn request_bodies_stream_to_the_backend() -> Result<()> {
    let w = World::new().await?;
    let payload = "x".repeat(256 * 1024);
    let request = Request::post(echo_path("namespaces/a/flunders"))
        .header("content-type", "application/json")
        .body(proxy::full(payload.clone()))?;
    let (status, _, body) = send(&w.engine, &w.route, request, &alice()).await?;
    assert_eq!(status, StatusCode::OK);
    let got: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(got["body_len"], 256 * 1024);
    let seen = w.backend.state.seen().pop().unwrap();
    assert_eq!(seen.method, "POST");
    Ok(())
}

#[tokio::test]
async fn more_concurrent_requests_than_the_backend_allows_streams_queue_instead_of_failing()
-> Result<()> {
    let pki = Pki::new()?;
    let mut options = BackendOptions::new(&pki, "narrow")?;
    options.max_streams = Some(4);
    let backend = TestBackend::start_with(options).await?;
    let engine = engine_with(
        EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![backend.address()])],
    )?;
    let route = engine.backend(&proxy::BackendSpec::service(
        service(SERVICE),
        pki.ca_bundle(),
    ))?;
    echo(&engine, &route, &echo_path("warm")).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..48 {
        let engine = engine.clone();
        let route = route.clone();
        tasks.spawn(async move { echo(&engine, &route, &echo_path(&format!("q{i}"))).await });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    assert_eq!(backend.state.seen().len(), 49);
    Ok(())
}

#[tokio::test]
async fn a_url_destination_such_as_the_delegate_is_forwarded_to_with_the_same_hygiene() -> Result<()>
{
    let pki = Pki::new()?;
    let backend = TestBackend::start(&pki, "delegate").await?;
    let engine = engine_with(EngineConfig::default(), pki.identity()?, &[])?;
    // The serving certificate carries 127.0.0.1: the URL's host is the TLS server name.
    let url: http::Uri = format!("https://{}", backend.address()).parse()?;
    let delegate = engine.backend(&proxy::BackendSpec::url(url, pki.ca_bundle()))?;
    assert_eq!(delegate.server_name(), "127.0.0.1");
    let request = Request::get("/api/v1/namespaces?limit=5")
        .header("authorization", "Bearer t")
        .header("impersonate-user", "root")
        .body(empty())?;
    let (status, _, _) = send(&engine, &delegate, request, &alice()).await?;
    // The stand-in does not serve /api: what matters is what arrived.
    assert_eq!(status, StatusCode::NOT_FOUND);
    let seen = backend.state.seen().pop().unwrap();
    assert_eq!(seen.path, "/api/v1/namespaces");
    assert_eq!(seen.user.as_ref().unwrap().name, "alice");
    assert!(seen.header("authorization").is_empty());
    assert!(seen.header("impersonate-user").is_empty());
    Ok(())
}
