//! An in-process server on 127.0.0.1:0 with the embedded store in a temp dir, test PKI from
//! the `pki` crate, and a hyper client over real TLS (HTTP/1.1 or HTTP/2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pki::{CertRequest, CertificateAuthority, Issued, KeyAlgorithm};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::sync::oneshot;

/// Tokens in every test server's token file.
pub const TOKENS: &str =
    "admin-token,token-admin,u-admin,\"system:masters\"\nbob-token,bob,u-bob,\"dev,qa\"\n";

/// Test PKI: a cluster CA with serving and client certificates, a front-proxy CA with its
/// client, and a rogue CA nobody trusts.
pub struct Pki {
    pub ca: CertificateAuthority,
    pub serving: Issued,
    pub admin: Issued,
    pub bob: Issued,
    pub front_proxy_ca: CertificateAuthority,
    pub front_proxy: Issued,
    pub rogue: Issued,
}

fn ec(req: CertRequest) -> CertRequest {
    req.key(KeyAlgorithm::EcdsaP256)
}

impl Pki {
    pub fn new() -> Result<Pki> {
        let ca = CertificateAuthority::new_root_with(&ec(CertRequest::ca("test-ca")))?;
        let fp = CertificateAuthority::new_root_with(&ec(CertRequest::ca("front-proxy-ca")))?;
        let rogue_ca = CertificateAuthority::new_root_with(&ec(CertRequest::ca("rogue-ca")))?;
        Ok(Pki {
            serving: ca.issue(&ec(CertRequest::server(
                "aggregator",
                &["localhost", "127.0.0.1"],
            )))?,
            admin: ca.issue(&ec(CertRequest::client("admin", &["system:masters"])))?,
            bob: ca.issue(&ec(CertRequest::client("bob", &["dev"])))?,
            front_proxy: fp.issue(&ec(CertRequest::client(
                "front-proxy-client",
                &[] as &[&str],
            )))?,
            rogue: rogue_ca.issue(&ec(CertRequest::client("admin", &["system:masters"])))?,
            ca,
            front_proxy_ca: fp,
        })
    }
}

/// Who the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Nobody,
    Admin,
    Bob,
    FrontProxy,
    Rogue,
}

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub pki: Arc<Pki>,
    _dir: tempfile::TempDir,
    /// Where backend discovery results are published.
    pub backend: tokio::sync::watch::Sender<Arc<aggregator::BackendDiscovery>>,
    /// Status writes as a controller does them.
    pub status: aggregator::StatusWriter,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), aggregator::Error>>>,
}

/// Files written for the server, for `configure` to reference.
pub struct Files {
    pub dir: PathBuf,
}

impl Files {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl TestServer {
    /// Starts with the default configuration plus client CA and token file.
    pub async fn start() -> Result<TestServer> {
        TestServer::start_with(|_, _| {}, store::Options::default()).await
    }

    /// Starts after `configure` adjusts the config; `options` tune the embedded store.
    pub async fn start_with(
        configure: impl FnOnce(&mut aggregator::Config, &Files),
        options: store::Options,
    ) -> Result<TestServer> {
        TestServer::start_full(configure, options, Arc::new(aggregator::forward::NotWired)).await
    }

    /// Starts with a custom forwarder (the proxy seam).
    pub async fn start_full(
        configure: impl FnOnce(&mut aggregator::Config, &Files),
        options: store::Options,
        forwarder: Arc<dyn aggregator::Forwarder>,
    ) -> Result<TestServer> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let pki = Arc::new(Pki::new()?);
        let dir = tempfile::tempdir()?;
        let files = Files {
            dir: dir.path().to_owned(),
        };
        let w = |name: &str, text: &str| std::fs::write(files.path(name), text);
        w("serving.pem", &pki.serving.cert_pem)?;
        w("serving-key.pem", &pki.serving.key_pem)?;
        w("ca.pem", pki.ca.cert_pem())?;
        w("front-proxy-ca.pem", pki.front_proxy_ca.cert_pem())?;
        w("tokens.csv", TOKENS)?;
        let mut config = aggregator::Config {
            bind_address: "127.0.0.1".parse()?,
            secure_port: 0,
            tls_cert_file: Some(files.path("serving.pem")),
            tls_private_key_file: Some(files.path("serving-key.pem")),
            client_ca_file: Some(files.path("ca.pem")),
            token_auth_file: Some(files.path("tokens.csv")),
            shutdown_timeout: Duration::from_secs(5),
            ..aggregator::Config::default()
        };
        configure(&mut config, &files);
        let url: store::StoreUrl =
            format!("embedded:{}", dir.path().join("data").display()).parse()?;
        let store = store::open_with(&url, options).await?;
        let server = aggregator::Server::bind(&config, store, forwarder).await?;
        let backend = server.backend_discovery();
        let status = server.status_writer();
        let addr = server.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = stopped.await;
        }));
        let s = TestServer {
            addr,
            pki,
            _dir: dir,
            backend,
            status,
            stop: Some(stop),
            task: Some(task),
        };
        s.wait_ready().await?;
        Ok(s)
    }

    async fn wait_ready(&self) -> Result<()> {
        let c = self.client(Who::Nobody);
        for _ in 0..200 {
            if let Ok(r) = c.get("/readyz").await
                && r.status == StatusCode::OK
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(anyhow!("server not ready"))
    }

    /// An HTTP/1.1 client.
    pub fn client(&self, who: Who) -> Client {
        Client::new(self, who, None, false)
    }

    /// An HTTP/2 client.
    pub fn h2_client(&self, who: Who) -> Client {
        Client::new(self, who, None, true)
    }

    /// An HTTP/1.1 client with a bearer token.
    pub fn token_client(&self, token: &str) -> Client {
        Client::new(self, Who::Nobody, Some(token.to_owned()), false)
    }

    /// Asks the server to shut down and waits for `run` to return.
    pub async fn shutdown(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t).await???;
        }
        Ok(())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A response read in full.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    /// Asserts the code and returns the JSON body.
    pub fn expect(&self, code: u16) -> Result<Value> {
        anyhow::ensure!(
            self.status.as_u16() == code,
            "expected {code}, got {}: {}",
            self.status,
            self.text()
        );
        Ok(self.json())
    }
}

/// A TLS client with a fresh connection per request.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    token: Option<String>,
    h2: bool,
}

impl Client {
    fn new(s: &TestServer, who: Who, token: Option<String>, h2: bool) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(s.pki.ca.cert_pem().as_bytes()).flatten() {
            let _ = roots.add(c);
        }
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let identity = match who {
            Who::Nobody => None,
            Who::Admin => Some(&s.pki.admin),
            Who::Bob => Some(&s.pki.bob),
            Who::FrontProxy => Some(&s.pki.front_proxy),
            Who::Rogue => Some(&s.pki.rogue),
        };
        let mut config = match identity {
            Some(i) => {
                let chain: Vec<CertificateDer<'static>> =
                    CertificateDer::pem_slice_iter(i.cert_pem.as_bytes())
                        .flatten()
                        .collect();
                let key = PrivateKeyDer::from_pem_slice(i.key_pem.as_bytes())
                    .unwrap_or_else(|e| panic!("test key: {e}"));
                builder
                    .with_client_auth_cert(chain, key)
                    .unwrap_or_else(|e| panic!("client cert: {e}"))
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Client {
            addr: s.addr,
            config: Arc::new(config),
            token,
            h2,
        }
    }

    /// Sends a request and returns the head with the streaming body.
    pub async fn stream(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<http::Response<Incoming>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
            .await?;
        let mut req = Request::builder().method(method).uri(path);
        if !self.h2 {
            req = req.header("host", "localhost");
        } else {
            req = req.uri(format!("https://localhost{path}"));
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into()))?;
        let resp = if self.h2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await?;
            tokio::spawn(conn);
            send.send_request(req).await?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            send.send_request(req).await?
        };
        Ok(resp)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<Resp> {
        // Never hang a test: a whole exchange gets 30 s.
        tokio::time::timeout(Duration::from_secs(30), async {
            let r = self.stream(method, path, headers, body).await?;
            let (parts, body) = r.into_parts();
            let body = body.collect().await.context("reading the body")?.to_bytes();
            Ok(Resp {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
        .await
        .context("request timed out")?
    }

    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.send(Method::GET, path, &[], Bytes::new()).await
    }

    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Resp> {
        self.send(Method::GET, path, headers, Bytes::new()).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Result<Resp> {
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(body)?,
        )
        .await
    }

    pub async fn put_json(&self, path: &str, body: &Value) -> Result<Resp> {
        self.send(
            Method::PUT,
            path,
            &[("content-type", "application/json")],
            serde_json::to_vec(body)?,
        )
        .await
    }

    pub async fn patch(&self, path: &str, content_type: &str, body: &str) -> Result<Resp> {
        self.send(
            Method::PATCH,
            path,
            &[("content-type", content_type)],
            body.to_owned(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Result<Resp> {
        self.send(Method::DELETE, path, &[], Bytes::new()).await
    }
}

pub const API: &str = "/apis/apiregistration.k8s.io/v1/apiservices";

/// A valid remote APIService.
pub fn remote(group: &str, version: &str, gp: i32, vp: i32) -> Value {
    serde_json::json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": format!("{version}.{group}")},
        "spec": {"group": group, "version": version, "groupPriorityMinimum": gp, "versionPriority": vp,
                 "service": {"namespace": "ns", "name": "svc"}, "insecureSkipTLSVerify": true}
    })
}

/// A valid local APIService.
pub fn local(group: &str, version: &str) -> Value {
    serde_json::json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": format!("{version}.{group}")},
        "spec": {"group": group, "version": version, "groupPriorityMinimum": 100, "versionPriority": 10}
    })
}
