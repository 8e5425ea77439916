//! A small HTTPS client over hyper's connection API: one HTTP/2 connection for control-plane
//! calls (register, patch, list), and one HTTP/1.1 connection per watch (the expensive case for
//! the server: a TLS session and a connection task per watcher).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// TLS settings for talking to one server.
#[derive(Clone)]
pub struct Tls {
    connector: TlsConnector,
    h2: TlsConnector,
    name: ServerName<'static>,
}

impl Tls {
    /// Verifies the server against the CA in `ca_file` under `name` (an IP or DNS name).
    pub fn new(ca_file: &Path, name: &str) -> anyhow::Result<Tls> {
        let pem =
            std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert?)?;
        }
        let base = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut h1 = base.clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut h2 = base;
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Tls {
            connector: TlsConnector::from(Arc::new(h1)),
            h2: TlsConnector::from(Arc::new(h2)),
            name: ServerName::try_from(name.to_owned())?,
        })
    }
}

/// A client with a bearer token, multiplexing over one HTTP/2 connection.
#[derive(Clone)]
pub struct Client {
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    token: String,
    authority: String,
}

/// A full response.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text (for messages).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.body)?)
    }
}

impl Client {
    /// Connects over HTTP/2.
    pub async fn connect(addr: SocketAddr, tls: &Tls, token: &str) -> anyhow::Result<Client> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let stream = tls.h2.connect(tls.name.clone(), tcp).await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        Ok(Client {
            sender,
            token: token.to_owned(),
            authority: addr.to_string(),
        })
    }

    /// Sends one request and reads the whole response.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        let mut sender = self.sender.clone();
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        let (head, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Reply {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// `GET path`, returning the streaming body once the head arrived with a 2xx (a watch).
    pub async fn stream(&self, path: &str) -> anyhow::Result<Incoming> {
        let mut sender = self.sender.clone();
        let request = Request::builder()
            .uri(format!("https://{}{path}", self.authority))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))?;
        sender.ready().await?;
        let response = sender.send_request(request).await?;
        if !response.status().is_success() {
            bail!("GET {path}: {}", response.status());
        }
        Ok(response.into_body())
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        self.call(Method::GET, path, &[], None).await
    }

    /// A JSON request that must succeed (2xx), returning the response body as JSON.
    pub async fn send_json(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let reply = self
            .call(
                method.clone(),
                path,
                &[("content-type", content_type)],
                Some(serde_json::to_vec(body)?),
            )
            .await?;
        if !reply.status.is_success() {
            bail!("{method} {path}: {} {}", reply.status, reply.text());
        }
        reply.json()
    }
}

/// Opens a new HTTP/1.1 TLS connection and sends one `GET` with the token; returns the
/// response head and its streaming body (a watch).
pub async fn open_stream(
    addr: SocketAddr,
    tls: &Tls,
    token: &str,
    path: &str,
) -> anyhow::Result<http::Response<Incoming>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = tls.connector.connect(tls.name.clone(), tcp).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = Request::builder()
        .uri(path)
        .header(header::HOST, addr.to_string())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
    }
    Ok(response)
}
