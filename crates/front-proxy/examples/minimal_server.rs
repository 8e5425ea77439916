//! A complete minimal extension API server: TLS, request-header (front-proxy) authentication with
//! a hot-reloaded CA, `/apis/<group>/<version>` discovery, and `/apis/<group>/<version>/whoami`,
//! which echoes the authenticated user.
//!
//! Self-contained demo (mints a throw-away PKI, starts the server on 127.0.0.1, then plays the
//! aggregator and a spoofing client against it):
//!
//! ```sh
//! cargo run -p front-proxy --example minimal_server
//! ```
//!
//! As a real server behind kube-apiserver or kube-aggregator (flags named like k8s.io/apiserver's):
//!
//! ```sh
//! cargo run -p front-proxy --example minimal_server -- \
//!     --listen 0.0.0.0:6443 --tls-cert-file serving.pem --tls-private-key-file serving-key.pem \
//!     --requestheader-client-ca-file front-proxy-ca.pem \
//!     --requestheader-allowed-names front-proxy-client \
//!     --group whoami.example.com --version v1
//! # then: kubectl get --raw /apis/whoami.example.com/v1/whoami
//! ```
//!
//! Trust is decided by the request-header authenticator, not by the TLS layer: the server asks
//! for a client certificate, checks that the client holds its key, and leaves the chain to the
//! authenticator. That is what lets the CA reload without rebuilding the TLS config, and turns a
//! bad certificate into a 401 with a logged reason instead of a failed handshake.

use std::convert::Infallible;
use std::future::{Ready, poll_fn};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use front_proxy::layer::RequestHeaderLayer;
use front_proxy::reload::ReloadingAuthenticator;
use front_proxy::test_util::TestCa;
use front_proxy::{HeaderNames, PeerCertificates, UserInfo, write_identity};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tower_layer::Layer;
use tower_service::Service;

/// The server's configuration, from flags.
#[derive(Debug)]
struct Options {
    listen: SocketAddr,
    tls_cert_file: PathBuf,
    tls_private_key_file: PathBuf,
    requestheader_client_ca_file: PathBuf,
    requestheader_allowed_names: Vec<String>,
    group: String,
    version: String,
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut listen = "0.0.0.0:6443".to_owned();
        let mut tls_cert_file = None;
        let mut tls_private_key_file = None;
        let mut ca_file = None;
        let mut allowed = String::new();
        let mut group = "whoami.example.com".to_owned();
        let mut version = "v1".to_owned();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (flag.as_str(), None),
            };
            let value = match inline {
                Some(value) => value,
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value"))?,
            };
            match name {
                "--listen" => listen = value,
                "--tls-cert-file" => tls_cert_file = Some(PathBuf::from(value)),
                "--tls-private-key-file" => tls_private_key_file = Some(PathBuf::from(value)),
                "--requestheader-client-ca-file" => ca_file = Some(PathBuf::from(value)),
                "--requestheader-allowed-names" => allowed = value,
                "--group" => group = value,
                "--version" => version = value,
                other => bail!("unknown flag {other}"),
            }
        }
        Ok(Options {
            listen: listen
                .parse()
                .with_context(|| format!("--listen {listen}"))?,
            tls_cert_file: tls_cert_file.context("--tls-cert-file is required")?,
            tls_private_key_file: tls_private_key_file
                .context("--tls-private-key-file is required")?,
            requestheader_client_ca_file: ca_file
                .context("--requestheader-client-ca-file is required")?,
            // Comma-separated, like every k8s string-slice flag.
            requestheader_allowed_names: allowed
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            group,
            version,
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.is_empty() {
        demo().await
    } else {
        match Options::parse(&args) {
            Ok(options) => run(options).await,
            Err(err) => {
                eprintln!("error: {err:#}");
                return std::process::ExitCode::from(64);
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    eprintln!(
        "serving /apis/{}/{} on https://{}",
        options.group,
        options.version,
        listener.local_addr()?
    );
    serve(listener, &options).await
}

/// Loads the configuration and serves until the listener fails.
async fn serve(listener: TcpListener, options: &Options) -> anyhow::Result<()> {
    // Upstream's defaults for the header flags (upstream-behaviour.md §6.1), plus X-Remote-Uid.
    let (auth, reloader) = ReloadingAuthenticator::watch_ca_file(
        &options.requestheader_client_ca_file,
        options.requestheader_allowed_names.clone(),
        HeaderNames::default(),
    )?;
    for warning in auth.current().headers().aggregation_warnings() {
        eprintln!("warning: {warning}");
    }
    tokio::spawn(reloader.run(|outcome| eprintln!("{outcome}")));

    let tls = Arc::new(server_tls(
        &options.tls_cert_file,
        &options.tls_private_key_file,
    )?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = App {
        prefix: format!("/apis/{}/{}", options.group, options.version),
        group_version: format!("{}/{}", options.group, options.version),
    };
    let layer = RequestHeaderLayer::new(auth).on_refusal(|refusal| {
        eprintln!("Unable to authenticate the request due to an error: {refusal}")
    });

    loop {
        let (tcp, remote) = listener.accept().await?;
        let acceptor = acceptor.clone();
        let service = layer.layer(app.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(err) => return eprintln!("TLS handshake with {remote} failed: {err}"),
            };
            // Once per connection; every request on it carries the same chain.
            let peer = PeerCertificates::from_presented(tls.get_ref().1.peer_certificates());
            let per_request = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(peer.clone());
                let mut service = service.clone();
                async move {
                    poll_fn(|cx| service.poll_ready(cx)).await?;
                    service.call(request).await
                }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(err) = builder
                .serve_connection(TokioIo::new(tls), per_request)
                .await
            {
                eprintln!("connection from {remote}: {err}");
            }
        });
    }
}

fn server_tls(cert_file: &Path, key_file: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("reading {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    // Go's `tls.RequestClientCert`: ask for a certificate, trust it per request (below).
    let verifier = front_proxy::tls::RequestClientCert::new(&provider);
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The API: discovery for one group-version with one read-only resource, `whoami`.
#[derive(Clone)]
struct App {
    prefix: String,
    group_version: String,
}

type Body = Full<Bytes>;

impl Service<Request<Incoming>> for App {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        std::future::ready(Ok(self.route(&request)))
    }
}

impl App {
    fn route<B>(&self, request: &Request<B>) -> Response<Body> {
        let path = request.uri().path();
        // Health endpoints are always allowed (upstream's --authorization-always-allow-paths).
        if matches!(path, "/healthz" | "/livez" | "/readyz") {
            return text(StatusCode::OK, "ok");
        }
        // This server has no other authenticator (no TokenReview, no anonymous access): a request
        // the layer passed on without a user is unauthenticated.
        let Some(user) = request.extensions().get::<UserInfo>() else {
            return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
        };
        if request.method() != Method::GET {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "only GET is served",
            );
        }
        let rest = path.strip_prefix(self.prefix.as_str());
        match rest {
            Some("") | Some("/") => json_response(&json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": self.group_version,
                "resources": [{
                    "name": "whoami",
                    "singularName": "whoami",
                    "namespaced": false,
                    "kind": "WhoAmI",
                    "verbs": ["get"],
                }],
            })),
            Some("/whoami") => json_response(&json!({
                "kind": "WhoAmI",
                "apiVersion": self.group_version,
                "user": {
                    "username": user.name,
                    "uid": user.uid,
                    "groups": user.groups,
                    "extra": user.extra,
                },
            })),
            _ => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
            ),
        }
    }
}

fn json_response(value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let mut response = json_response(&json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    }));
    *response.status_mut() = code;
    response
}

fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = code;
    response
}

/// Mints a PKI into a temporary directory, serves from it exactly as `run` does, and checks four
/// requests: the aggregator's (accepted, user echoed), discovery, a client spoofing
/// `X-Remote-User` without a certificate, and a certificate from the wrong CA (both refused).
async fn demo() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let front_proxy_ca = TestCa::new("front-proxy-ca")?;
    let serving_ca = TestCa::new("serving-ca")?;
    let serving = serving_ca.serving_cert(&["localhost", "127.0.0.1"])?;
    let write = |name: &str, contents: &str| -> anyhow::Result<PathBuf> {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let options = Options {
        listen: addr,
        tls_cert_file: write("serving.pem", serving.chain_pem())?,
        tls_private_key_file: write("serving-key.pem", &serving.key_pem)?,
        requestheader_client_ca_file: write("front-proxy-ca.pem", front_proxy_ca.ca_pem())?,
        requestheader_allowed_names: vec!["front-proxy-client".into()],
        group: "whoami.example.com".into(),
        version: "v1".into(),
    };
    eprintln!("demo: serving on https://{addr}");
    let server = tokio::spawn(async move { serve(listener, &options).await });

    let aggregator = client_tls(
        &serving_ca,
        Some(&front_proxy_ca.client_cert("front-proxy-client")?),
    )?;
    let mut alice = UserInfo::new("alice");
    alice.groups = vec!["developers".into(), "system:authenticated".into()];
    alice.extra.insert(
        "authentication.kubernetes.io/pod-name".into(),
        vec!["web-0".into()],
    );

    let (code, body) = get(
        addr,
        &aggregator,
        "/apis/whoami.example.com/v1",
        Some(&alice),
    )
    .await?;
    println!("aggregator GET /apis/whoami.example.com/v1 -> {code}\n{body}");
    expect(
        code == StatusCode::OK && body.contains("APIResourceList"),
        "discovery",
    )?;

    let (code, body) = get(
        addr,
        &aggregator,
        "/apis/whoami.example.com/v1/whoami",
        Some(&alice),
    )
    .await?;
    println!("aggregator GET .../whoami as alice -> {code}\n{body}");
    let echoed: serde_json::Value = serde_json::from_str(&body)?;
    expect(
        code == StatusCode::OK && echoed["user"]["username"] == "alice",
        "the user is echoed",
    )?;
    expect(
        echoed["user"]["extra"]["authentication.kubernetes.io/pod-name"][0] == "web-0",
        "extras survive",
    )?;

    let spoofer = client_tls(&serving_ca, None)?;
    let admin = UserInfo::new("system:admin");
    let (code, _) = get(
        addr,
        &spoofer,
        "/apis/whoami.example.com/v1/whoami",
        Some(&admin),
    )
    .await?;
    println!("no client certificate, X-Remote-User: system:admin -> {code}");
    expect(
        code == StatusCode::UNAUTHORIZED,
        "a spoofed header without a certificate is refused",
    )?;

    let wrong_ca = TestCa::new("not-the-front-proxy-ca")?;
    let impostor = client_tls(
        &serving_ca,
        Some(&wrong_ca.client_cert("front-proxy-client")?),
    )?;
    let (code, _) = get(
        addr,
        &impostor,
        "/apis/whoami.example.com/v1/whoami",
        Some(&admin),
    )
    .await?;
    println!("certificate from another CA -> {code}");
    expect(
        code == StatusCode::UNAUTHORIZED,
        "a certificate from another CA is refused",
    )?;

    server.abort();
    println!("demo: all four checks passed");
    Ok(())
}

fn expect(ok: bool, what: &str) -> anyhow::Result<()> {
    if !ok {
        bail!("demo check failed: {what}");
    }
    Ok(())
}

fn client_tls(
    serving_ca: &TestCa,
    client_cert: Option<&front_proxy::test_util::TestCert>,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(serving_ca.ca_der())?;
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    Ok(match client_cert {
        Some(cert) => builder.with_client_auth_cert(cert.chain.clone(), cert.key_der())?,
        None => builder.with_no_client_auth(),
    })
}

/// One GET over a fresh HTTP/1.1 connection, with the user written by the proxy side of the crate.
async fn get(
    addr: SocketAddr,
    tls: &rustls::ClientConfig,
    path: &str,
    user: Option<&UserInfo>,
) -> anyhow::Result<(StatusCode, String)> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.clone()));
    let stream = connector
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::get(path)
        .header(header::HOST, "localhost")
        .body(Empty::<Bytes>::new())?;
    if let Some(user) = user {
        write_identity(request.headers_mut(), user, &HeaderNames::default())?;
    }
    let response = sender.send_request(request).await?;
    let code = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}
