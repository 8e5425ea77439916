//! Watch semantics over HTTP/1.1 (chunked) and HTTP/2 (DATA frames): event types, Table
//! encoding, selectors, resourceVersion, timeouts, 410, bookmarks, graceful shutdown, and
//! limits (429, header read timeout).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::harness::{API, Client, TestServer, Who, local};

/// Reads newline-delimited events from a streaming body.
struct Events {
    body: Incoming,
    buf: Vec<u8>,
}

impl Events {
    fn new(body: Incoming) -> Self {
        Events {
            body,
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ended cleanly.
    async fn next(&mut self) -> Result<Option<Value>> {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(
                    serde_json::from_slice(&line).context("event is one JSON line")?,
                ));
            }
            let frame = tokio::time::timeout(Duration::from_secs(10), self.body.frame())
                .await
                .context("no event within 10s")?;
            match frame {
                None => return Ok(None),
                Some(f) => {
                    if let Ok(d) = f?.into_data() {
                        self.buf.extend_from_slice(&d);
                    }
                }
            }
        }
    }

    async fn expect(&mut self, kind: &str, name: &str) -> Result<Value> {
        match self.next().await? {
            Some(ev)
                if ev["type"] == kind
                    && (name.is_empty()
                        || ev["object"]["metadata"]["name"] == name
                        || ev["object"]["rows"][0]["cells"][0] == name) =>
            {
                Ok(ev)
            }
            other => bail!("expected {kind} {name}, got {other:?}"),
        }
    }
}

async fn watch(c: &Client, query: &str, accept: &str) -> Result<Events> {
    let r = c
        .stream(
            Method::GET,
            &format!("{API}?watch=true&{query}"),
            &[("accept", accept)],
            Bytes::new(),
        )
        .await?;
    anyhow::ensure!(r.status() == 200, "watch status {}", r.status());
    Ok(Events::new(r.into_body()))
}

#[tokio::test]
async fn events_over_h1_and_h2() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    let list = admin.get(API).await?.expect(200)?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for c in [s.client(Who::Bob), s.h2_client(Who::Bob)] {
        let mut w = watch(&c, &format!("resourceVersion={rv}"), "application/json").await?;
        // Each client sees its own create/modify/delete.
        let n = format!("w{}.example.com", rand_suffix());
        admin.post_json(API, &local(&n, "v1")).await?.expect(201)?;
        admin
            .patch(
                &format!("{API}/v1.{n}"),
                "application/merge-patch+json",
                r#"{"metadata":{"labels":{"a":"b"}}}"#,
            )
            .await?
            .expect(200)?;
        admin.delete(&format!("{API}/v1.{n}")).await?.expect(200)?;
        // The stream starts after `rv`: earlier clients' events come first on the second pass.
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let ev = w.next().await?.context("stream ended")?;
            if ev["object"]["metadata"]["name"] == format!("v1.{n}") {
                assert_eq!(ev["object"]["kind"], "APIService");
                seen.push(ev["type"].as_str().unwrap_or_default().to_owned());
            }
        }
        assert_eq!(seen, ["ADDED", "MODIFIED", "DELETED"]);
    }
    Ok(())
}

fn rand_suffix() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{n}")
}

#[tokio::test]
async fn table_selectors_initial_events_and_timeout() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    admin
        .post_json(API, &local("one.example.com", "v1"))
        .await?
        .expect(201)?;
    admin
        .post_json(API, &local("two.example.com", "v1"))
        .await?
        .expect(201)?;

    // resourceVersion unset: synthetic ADDED for what exists, then changes; Table rows.
    let table = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    let r = admin
        .stream(
            Method::GET,
            &format!("{API}?watch=true&fieldSelector=metadata.name%3Dv1.two.example.com"),
            &[("accept", table)],
            Bytes::new(),
        )
        .await?;
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json;as=Table;v=v1;g=meta.k8s.io")
    );
    let mut w = Events::new(r.into_body());
    let first = w.expect("ADDED", "v1.two.example.com").await?;
    assert_eq!(first["object"]["kind"], "Table");
    assert_eq!(
        first["object"]["columnDefinitions"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    admin
        .patch(
            &format!("{API}/v1.one.example.com"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"x":"1"}}}"#,
        )
        .await?
        .expect(200)?;
    admin
        .patch(
            &format!("{API}/v1.two.example.com"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"x":"1"}}}"#,
        )
        .await?
        .expect(200)?;
    let m = w.expect("MODIFIED", "v1.two.example.com").await?;
    assert_eq!(
        m["object"]["columnDefinitions"],
        json!([]),
        "columns only in the first event"
    );

    // labelSelector transitions: leaving the selector is DELETED.
    let mut w = watch(&admin, "labelSelector=x%3D1", "application/json").await?;
    w.expect("ADDED", "v1.one.example.com").await?;
    w.expect("ADDED", "v1.two.example.com").await?;
    admin
        .patch(
            &format!("{API}/v1.one.example.com"),
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"x":"2"}}}"#,
        )
        .await?
        .expect(200)?;
    w.expect("DELETED", "v1.one.example.com").await?;

    // timeoutSeconds ends the stream cleanly.
    let mut w = watch(
        &admin,
        "resourceVersion=0&timeoutSeconds=1",
        "application/json",
    )
    .await?;
    w.expect("ADDED", "").await?;
    w.expect("ADDED", "").await?;
    assert!(w.next().await?.is_none(), "clean end after timeoutSeconds");
    Ok(())
}

#[tokio::test]
async fn too_old_bookmarks_and_shutdown() -> Result<()> {
    let options = store::Options::default()
        .history_size(5)
        .watch_cache_size(2)
        .bookmark_interval(Some(Duration::from_millis(200)));
    let mut s = TestServer::start_with(|_, _| {}, options).await?;
    let admin = s.client(Who::Admin);
    let first = admin
        .post_json(API, &local("old.example.com", "v1"))
        .await?
        .expect(201)?;
    let old_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for i in 0..8 {
        admin
            .patch(
                &format!("{API}/v1.old.example.com"),
                "application/merge-patch+json",
                &format!(r#"{{"metadata":{{"labels":{{"i":"{i}"}}}}}}"#),
            )
            .await?
            .expect(200)?;
    }
    let r = admin
        .get(&format!("{API}?watch=true&resourceVersion={old_rv}"))
        .await?
        .expect(410)?;
    assert_eq!(r["reason"], "Expired");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("too old resource version")),
        "{r}"
    );

    let list = admin.get(API).await?.expect(200)?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut w = watch(
        &admin,
        &format!("resourceVersion={rv}&allowWatchBookmarks=true"),
        "application/json",
    )
    .await?;
    let b = w.expect("BOOKMARK", "").await?;
    assert!(
        b["object"]["metadata"]["resourceVersion"]
            .as_str()
            .is_some(),
        "{b}"
    );

    // Shutdown ends open watches cleanly (the body finishes, no error).
    let mut h2 = watch(
        &s.h2_client(Who::Admin),
        &format!("resourceVersion={rv}"),
        "application/json",
    )
    .await?;
    s.shutdown().await?;
    loop {
        match w.next().await {
            Ok(Some(ev)) if ev["type"] == "BOOKMARK" => continue,
            Ok(None) => break,
            other => bail!("h1 watch did not end cleanly: {other:?}"),
        }
    }
    loop {
        match h2.next().await {
            Ok(Some(ev)) if ev["type"] == "BOOKMARK" => continue,
            Ok(None) => break,
            other => bail!("h2 watch did not end cleanly: {other:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn max_inflight_is_429() -> Result<()> {
    let s = TestServer::start_with(
        |c, _| c.max_mutating_requests_inflight = 1,
        store::Options::default(),
    )
    .await?;
    let admin = s.client(Who::Admin);
    // Hold the only mutating slot with a request whose body never finishes.
    let tcp = tokio::net::TcpStream::connect(s.addr).await?;
    let mut roots = rustls::RootCertStore::empty();
    for c in
        rustls::pki_types::CertificateDer::pem_slice_iter(s.pki.ca.cert_pem().as_bytes()).flatten()
    {
        roots.add(c)?;
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            rustls::pki_types::CertificateDer::pem_slice_iter(s.pki.admin.cert_pem.as_bytes())
                .flatten()
                .collect(),
            rustls::pki_types::PrivateKeyDer::from_pem_slice(s.pki.admin.key_pem.as_bytes())?,
        )?;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncWriteExt;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost")?.to_owned(),
            tcp,
        )
        .await?;
    tls.write_all(format!("POST {API} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{").as_bytes()).await?;
    tls.flush().await?;
    let mut got = None;
    for _ in 0..100 {
        let r = admin
            .post_json(API, &local("busy.example.com", "v1"))
            .await?;
        if r.status.as_u16() == 429 {
            got = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = got.context("expected a 429 while the slot is held")?;
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.expect(429)?["reason"], "TooManyRequests");
    // Reads have their own limit.
    admin.get(API).await?.expect(200)?;
    drop(tls);
    Ok(())
}

#[tokio::test]
async fn slow_clients_are_cut_off() -> Result<()> {
    let s = TestServer::start_with(
        |c, _| c.request_header_read_timeout = Duration::from_millis(300),
        store::Options::default(),
    )
    .await?;
    use tokio::io::AsyncReadExt;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await?;
    let mut buf = [0u8; 16];
    // No TLS handshake at all: the server closes the connection.
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await??;
    assert_eq!(n, 0, "closed without a response");
    Ok(())
}
