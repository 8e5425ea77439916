//! Shared by the integration tests: a throw-away PKI, the server started in-process on
//! 127.0.0.1:0, and a small HTTPS client that plays the aggregator (front-proxy certificate and
//! X-Remote-* headers) or any other caller.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use front_proxy::test_util::{TestCa, TestCert};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_apiserver::{Config, RequestHeaderOptions, Server};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The CN the front-proxy client certificate must have.
pub const PROXY_CN: &str = "front-proxy-client";
/// The node name every test server uses.
pub const NODE: &str = "test-node";

/// Certificates, and the files a server reads them from.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub front_proxy_ca: TestCa,
    pub serving_ca: TestCa,
    pub client_ca: TestCa,
    /// The aggregator's front-proxy client certificate.
    pub proxy: TestCert,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub front_proxy_ca_file: PathBuf,
    pub client_ca_file: PathBuf,
}

impl Pki {
    pub fn new() -> Result<Pki> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let front_proxy_ca = TestCa::new("front-proxy-ca")?;
        let serving_ca = TestCa::new("serving-ca")?;
        let client_ca = TestCa::new("client-ca")?;
        let serving = serving_ca.serving_cert(&["localhost", "127.0.0.1"])?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.path().join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        Ok(Pki {
            serving_cert: write("serving.crt", serving.chain_pem())?,
            serving_key: write("serving.key", &serving.key_pem)?,
            front_proxy_ca_file: write("front-proxy-ca.crt", front_proxy_ca.ca_pem())?,
            client_ca_file: write("client-ca.crt", client_ca.ca_pem())?,
            proxy: front_proxy_ca.client_cert(PROXY_CN)?,
            front_proxy_ca,
            serving_ca,
            client_ca,
            dir,
        })
    }

    /// A configuration for 127.0.0.1:0 with request-header auth (CN `front-proxy-client`),
    /// this machine's `/proc`, a short first window, node name [`NODE`].
    pub fn config(&self) -> Config {
        let mut rh = RequestHeaderOptions::new(&self.front_proxy_ca_file);
        rh.allowed_names = vec![PROXY_CN.into()];
        rh.uid_headers = vec!["X-Remote-Uid".into()];
        Config {
            bind_address: "127.0.0.1"
                .parse()
                .unwrap_or(Config::default().bind_address),
            secure_port: 0,
            tls_cert_file: self.serving_cert.clone(),
            tls_private_key_file: self.serving_key.clone(),
            request_header: Some(rh),
            node_name: Some(NODE.into()),
            initial_window: Duration::from_millis(200),
            ..Config::default()
        }
    }

    /// A client trusting the serving CA, presenting `cert` (if any).
    pub fn client(&self, addr: SocketAddr, cert: Option<&TestCert>) -> Result<Client> {
        Client::new(addr, &self.serving_ca, cert, false)
    }

    /// The aggregator: the front-proxy certificate.
    pub fn aggregator(&self, addr: SocketAddr) -> Result<Client> {
        self.client(addr, Some(&self.proxy))
    }
}

/// A running server; stopping it (or dropping the handle) shuts it down.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), metrics_apiserver::Error>>,
}

impl Running {
    pub async fn start(config: Config) -> Result<Running> {
        let server = Server::bind(config).await?;
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Ok(Running {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// Asks for shutdown and waits for `serve` to return.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .context("serve did not return after shutdown")???;
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A reply, body read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON ({}): {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Asserts a Kubernetes Status body with this code and reason.
    pub fn assert_status(&self, code: u16, reason: &str) -> Result<serde_json::Value> {
        assert_eq!(self.status.as_u16(), code, "{}", self.text());
        let v = self.json()?;
        assert_eq!(v["kind"], "Status", "{v}");
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["reason"], reason, "{v}");
        Ok(v)
    }
}

/// HTTPS client, one connection per request.
pub struct Client {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
}

impl Client {
    pub fn new(addr: SocketAddr, ca: &TestCa, cert: Option<&TestCert>, h2: bool) -> Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_der())?;
        let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
        let mut tls = match cert {
            Some(c) => builder.with_client_auth_cert(c.chain.clone(), c.key_der())?,
            None => builder.with_no_client_auth(),
        };
        tls.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(Client {
            addr,
            tls: Arc::new(tls),
        })
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply> {
        self.request(Method::GET, path, headers).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply> {
        let tcp = TcpStream::connect(self.addr).await?;
        let connector = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls));
        let stream = connector
            .connect(ServerName::try_from("localhost")?, tcp)
            .await?;
        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
        let mut builder = Request::builder().method(method).uri(if h2 {
            format!("https://localhost:{}{path}", self.addr.port())
        } else {
            path.to_owned()
        });
        if !h2 {
            builder = builder.header(http::header::HOST, "localhost");
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Empty::<Bytes>::new())?;
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender.send_request(request).await?
        };
        let status = response.status();
        let version = response.version();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
            version,
        })
    }
}

/// Identity headers as the aggregator writes them.
pub fn identity<'a>(user: &'a str, groups: &'a [&'a str]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![("X-Remote-User", user)];
    h.extend(groups.iter().map(|g| ("X-Remote-Group", *g)));
    h
}

/// Polls `check` every 50 ms until it returns `Some` or `timeout` passes.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
