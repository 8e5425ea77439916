//! The benchmark's extension API server: HTTPS (HTTP/1.1 and HTTP/2), trusting identity headers
//! only under a front-proxy client certificate, answering a small JSON object fast.
//!
//! The certificate chain is verified once per connection with `front_proxy::Authenticator`
//! (the TLS handshake checks it against the request-header CA, the authenticator checks it again
//! with the allowed names); each request then only reads `X-Remote-User`/`X-Remote-Group` and is
//! refused with 401 when no user is asserted. `--allow-direct` also serves connections without a
//! client certificate, taking the identity headers as sent: the load generators (wrk, h2load)
//! cannot present a certificate, and the direct-to-backend baseline needs them.
//!
//! Paths (`G`/`V` from `--group`/`--version`):
//! - `/apis/G/V`: an `APIResourceList` (the aggregator's availability probe and discovery);
//! - `/apis/G/V/whoami`: the identity the request carried, as JSON;
//! - any other `/apis/G/V/...`: the same 236-byte object, the benchmark's payload;
//! - anything else: 404.
//!
//! Prints `listening on <addr>` on stdout once it accepts connections.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use front_proxy::{Authenticator, HeaderNames, Refusal, RequestHeaderConfig};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Flags, named like an extension API server's where one exists.
#[derive(Debug, Parser)]
#[command(
    name = "bench-backend",
    about = "HTTPS backend of the kube-aggregator benchmark"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serving certificate (PEM, leaf first).
    #[arg(long = "tls-cert-file")]
    tls_cert_file: PathBuf,
    /// Serving key.
    #[arg(long = "tls-private-key-file")]
    tls_private_key_file: PathBuf,
    /// The front-proxy CA: client certificates must chain to it.
    #[arg(long = "requestheader-client-ca-file")]
    requestheader_client_ca_file: PathBuf,
    /// Allowed CNs of the front-proxy certificate (comma-separated; empty allows any).
    #[arg(long = "requestheader-allowed-names", value_delimiter = ',')]
    requestheader_allowed_names: Vec<String>,
    /// Also serve connections without a client certificate (the direct baseline).
    #[arg(long = "allow-direct")]
    allow_direct: bool,
    /// The API group served.
    #[arg(long, default_value = "bench.example.com")]
    group: String,
    /// The version served.
    #[arg(long, default_value = "v1")]
    version: String,
    /// Runtime worker threads.
    #[arg(long = "worker-threads", default_value_t = 2)]
    worker_threads: usize,
    /// HTTP/2 streams per connection (kube-apiserver's default is 1000).
    #[arg(long = "max-concurrent-streams", default_value_t = 1000)]
    max_concurrent_streams: u32,
}

/// The benchmark's payload: a small namespaced object, as a typical `get` returns.
const THING: &[u8] = br#"{"kind":"Thing","apiVersion":"bench.example.com/v1","metadata":{"name":"x","namespace":"default","resourceVersion":"1","creationTimestamp":"2025-01-01T00:00:00Z"},"spec":{"replicas":3,"image":"registry.example/app:1.0"},"status":{"ready":true}}"#;

const UNAUTHORIZED: &[u8] = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;

const NOT_FOUND: &[u8] = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;

struct State {
    /// `/apis/G/V`.
    prefix: String,
    resource_list: Bytes,
    names: HeaderNames,
}

/// Whether a connection may assert identities: decided once, at the handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Trust {
    FrontProxy,
    Direct,
    Refused,
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn first_value<'a>(headers: &'a http::HeaderMap, names: &[http::HeaderName]) -> Option<&'a str> {
    names
        .iter()
        .filter_map(|n| headers.get(n))
        .filter_map(|v| v.to_str().ok())
        .find(|v| !v.is_empty())
}

fn serve(state: &State, trust: Trust, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let user = match trust {
        Trust::Refused => None,
        Trust::FrontProxy | Trust::Direct => first_value(request.headers(), &state.names.username),
    };
    let Some(user) = user else {
        return json(StatusCode::UNAUTHORIZED, Bytes::from_static(UNAUTHORIZED));
    };
    let path = request.uri().path();
    let Some(rest) = path.strip_prefix(state.prefix.as_str()) else {
        return json(StatusCode::NOT_FOUND, Bytes::from_static(NOT_FOUND));
    };
    match rest {
        "" | "/" => json(StatusCode::OK, state.resource_list.clone()),
        "/whoami" => {
            let groups: Vec<&str> = state
                .names
                .group
                .iter()
                .flat_map(|n| request.headers().get_all(n))
                .filter_map(|v| v.to_str().ok())
                .collect();
            let body = serde_json::json!({"user": user, "groups": groups, "frontProxy": trust == Trust::FrontProxy});
            json(StatusCode::OK, Bytes::from(body.to_string()))
        }
        _ if rest.starts_with('/') => json(StatusCode::OK, Bytes::from_static(THING)),
        _ => json(StatusCode::NOT_FOUND, Bytes::from_static(NOT_FOUND)),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.worker_threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let cert_pem = read(&args.tls_cert_file)?;
    let key_pem = read(&args.tls_private_key_file)?;
    let ca_pem = read(&args.requestheader_client_ca_file)?;

    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the serving certificate")?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
        .context("parsing the serving key")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca_pem) {
        roots.add(cert.context("parsing the front-proxy CA")?)?;
    }
    let mut verifier = WebPkiClientVerifier::builder(Arc::new(roots));
    if args.allow_direct {
        verifier = verifier.allow_unauthenticated();
    }
    let mut tls = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier.build()?)
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let authenticator = Arc::new(Authenticator::new(RequestHeaderConfig {
        client_ca_pem: ca_pem,
        allowed_names: args.requestheader_allowed_names.clone(),
        headers: HeaderNames::default(),
    })?);
    let prefix = format!("/apis/{}/{}", args.group, args.version);
    let resource_list = serde_json::json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{}/{}", args.group, args.version),
        "resources": [{
            "name": "things", "singularName": "thing", "namespaced": true, "kind": "Thing",
            "verbs": ["get", "list"]
        }]
    });
    let state = Arc::new(State {
        prefix,
        resource_list: Bytes::from(resource_list.to_string()),
        names: authenticator.headers().clone(),
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(args.max_concurrent_streams);
    let builder = Arc::new(builder);

    let listener = TcpListener::bind(args.listen).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;

    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("bench-backend: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let authenticator = authenticator.clone();
        let state = state.clone();
        let builder = builder.clone();
        let allow_direct = args.allow_direct;
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let trust = match stream.get_ref().1.peer_certificates() {
                // The documented order of `authenticate`: chain, then allowed names, then the
                // headers. With no headers, "missing username" means the first two passed.
                Some(chain) => {
                    match authenticator.authenticate(chain, &mut http::HeaderMap::new()) {
                        Err(Refusal::MissingUsername) => Trust::FrontProxy,
                        Ok(_) => Trust::FrontProxy,
                        Err(refusal) => {
                            eprintln!("bench-backend: refusing a connection: {refusal}");
                            Trust::Refused
                        }
                    }
                }
                None if allow_direct => Trust::Direct,
                None => Trust::Refused,
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let response = serve(&state, trust, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
