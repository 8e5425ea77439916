//! Upgrades (kubectl exec/attach/port-forward): tunnelled after a 101, never reused after a
//! failure (CVE-2018-1002105).

use std::time::Duration;

use anyhow::Result;
use http::StatusCode;
use proxy::RequestContext;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn upgrade_request(path: &str, protocol: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: front\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\
         X-Remote-User: mallory\r\nImpersonate-User: root\r\n\r\n"
    )
}

#[tokio::test]
async fn websocket_and_spdy_upgrades_round_trip_bytes() -> Result<()> {
    let w = World::new().await?;
    let front = Front::start(w.engine.clone(), w.route.clone(), alice()).await?;
    for protocol in ["websocket", "SPDY/3.1"] {
        let mut client = TcpStream::connect(front.addr).await?;
        client
            .write_all(upgrade_request(&echo_path("exec"), protocol).as_bytes())
            .await?;
        let (status, headers) = read_head(&mut client).await?;
        assert_eq!(status, 101, "{headers:?}");
        assert_eq!(headers["upgrade"], protocol);
        assert!(headers["connection"].eq_ignore_ascii_case("upgrade"));
        for message in [&b"hello"[..], &b"\x00\x01binary frame"[..]] {
            client.write_all(message).await?;
            let mut buf = vec![0u8; message.len()];
            tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut buf)).await??;
            assert_eq!(buf, message);
        }
    }
    // The backend saw the proxy's identity on the upgrade request, not the client's claims.
    let upgrades: Vec<_> = w
        .backend
        .state
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/exec"))
        .collect();
    assert_eq!(upgrades.len(), 2);
    for seen in upgrades {
        assert_eq!(seen.user.as_ref().unwrap().name, "alice");
        assert_eq!(seen.header("x-remote-user"), ["alice"]);
        assert!(seen.header("impersonate-user").is_empty());
        assert_eq!(seen.version, http::Version::HTTP_11);
        assert_eq!(seen.peer_cn, PROXY_CN);
    }
    Ok(())
}

#[tokio::test]
async fn a_failed_upgrade_closes_both_connections() -> Result<()> {
    let w = World::new().await?;
    let front = Front::start(w.engine.clone(), w.route.clone(), alice()).await?;
    let mut client = TcpStream::connect(front.addr).await?;
    client
        .write_all(upgrade_request(&echo_path("exec-denied"), "websocket").as_bytes())
        .await?;
    let (status, headers) = read_head(&mut client).await?;
    assert_eq!(status, 403);
    assert_eq!(headers["connection"], "close");
    // The error body, then EOF: the client connection is not kept for more requests.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest)).await??;
    assert!(
        String::from_utf8_lossy(&rest).contains("denied"),
        "{rest:?}"
    );

    // The backend connection that carried the upgrade attempt is closed, and the next request
    // (with the proxy's credentials) goes over another one.
    let denied_conn = w
        .backend
        .state
        .seen()
        .into_iter()
        .find(|s| s.path.ends_with("/exec-denied"))
        .unwrap()
        .conn;
    eventually("the backend sees the upgrade connection close", || {
        w.backend
            .state
            .closed
            .lock()
            .unwrap()
            .contains(&denied_conn)
    })
    .await?;
    let next = echo(&w.engine, &w.route, &echo_path("after")).await?;
    assert_ne!(next["conn"], denied_conn);
    Ok(())
}

#[tokio::test]
async fn a_non_upgrade_answer_to_an_upgrade_is_503() -> Result<()> {
    let w = World::new().await?;
    let front = Front::start(w.engine.clone(), w.route.clone(), alice()).await?;
    let mut client = TcpStream::connect(front.addr).await?;
    client
        .write_all(upgrade_request(&echo_path("exec-not-upgraded"), "websocket").as_bytes())
        .await?;
    let (status, headers) = read_head(&mut client).await?;
    assert_eq!(status, 503);
    let len: usize = headers["content-length"].parse()?;
    let mut body = vec![0u8; len];
    client.read_exact(&mut body).await?;
    assert_eq!(body, b"invalid upgrade response: status code 200\n");
    Ok(())
}

#[tokio::test]
async fn an_upgrade_without_an_upgradable_connection_is_refused_before_the_backend() -> Result<()> {
    let w = World::new().await?;
    let request = http::Request::get(echo_path("exec"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(proxy::empty())?;
    let ctx = RequestContext {
        user: &alice(),
        client_addr: None,
        audit_id: None,
    };
    let response = w.engine.forward(&w.route, request, &ctx).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(w.backend.state.seen().is_empty());
    Ok(())
}

#[tokio::test]
async fn an_upgrade_to_a_dead_backend_is_503_with_the_cause() -> Result<()> {
    let pki = Pki::new()?;
    let port = dead_port().await?;
    let engine = engine_with(
        proxy::EngineConfig::default(),
        pki.identity()?,
        &[(SERVICE, vec![format!("127.0.0.1:{port}")])],
    )?;
    let route = engine.backend(&proxy::BackendSpec::service(
        service(SERVICE),
        pki.ca_bundle(),
    ))?;
    let front = Front::start(engine, route, alice()).await?;
    let mut client = TcpStream::connect(front.addr).await?;
    client
        .write_all(upgrade_request(&echo_path("exec"), "websocket").as_bytes())
        .await?;
    let (status, headers) = read_head(&mut client).await?;
    assert_eq!(status, 503);
    let len: usize = headers["content-length"].parse()?;
    let mut body = vec![0u8; len];
    client.read_exact(&mut body).await?;
    let body = String::from_utf8(body)?;
    assert!(body.contains("connection refused"), "{body}");
    Ok(())
}
