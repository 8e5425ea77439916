//! The proxy engine alone behind a TLS listener: what `kube-aggregator serve` costs minus its
//! request pipeline (authentication, authorization, routing, metrics). The benchmark runs it as
//! the `engine` contender so the two overheads can be told apart.
//!
//! Every request is checked for `Authorization: Bearer <--token>` (a string compare, standing in
//! for the server's token lookup), then forwarded with `proxy::Engine::forward` as user
//! `--user` (groups `system:masters`, `system:authenticated`) to the one backend
//! `--service` (resolved through `--service-map`, verified against `--ca-bundle`).
//!
//! Prints `listening on <addr>` on stdout once it accepts connections.

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use front_proxy::UserInfo;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use proxy::{
    BackendSpec, ClientIdentity, Engine, EngineConfig, RequestContext, ServiceMapResolver,
    ServiceRef,
};
use rustls_pki_types::pem::PemObject as _;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Parser)]
#[command(
    name = "bench-front",
    about = "proxy::Engine behind a TLS listener, for the benchmark"
)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serving certificate.
    #[arg(long = "tls-cert-file")]
    tls_cert_file: PathBuf,
    /// Serving key.
    #[arg(long = "tls-private-key-file")]
    tls_private_key_file: PathBuf,
    /// Front-proxy client certificate presented to the backend.
    #[arg(long = "proxy-client-cert-file")]
    proxy_client_cert_file: PathBuf,
    /// Its key.
    #[arg(long = "proxy-client-key-file")]
    proxy_client_key_file: PathBuf,
    /// Service map (the format of `kube-aggregator serve --service-map`).
    #[arg(long = "service-map")]
    service_map: PathBuf,
    /// The backend Service, `namespace/name:port`.
    #[arg(long, default_value = "bench/backend:443")]
    service: String,
    /// CA bundle verifying the backend (the APIService's caBundle).
    #[arg(long = "ca-bundle")]
    ca_bundle: PathBuf,
    /// Bearer token every request must carry (empty: none required).
    #[arg(long, default_value = "")]
    token: String,
    /// The user asserted to the backend.
    #[arg(long, default_value = "bench")]
    user: String,
    /// Speak HTTP/1.1 to the backend instead of offering HTTP/2.
    #[arg(long = "backend-http1")]
    backend_http1: bool,
    /// Runtime worker threads.
    #[arg(long = "worker-threads", default_value_t = 2)]
    worker_threads: usize,
}

fn parse_service(s: &str) -> anyhow::Result<ServiceRef> {
    let (ns, rest) = s
        .split_once('/')
        .context("--service: expected namespace/name:port")?;
    let (name, port) = rest.split_once(':').unwrap_or((rest, "443"));
    Ok(ServiceRef::new(
        ns,
        name,
        port.parse().context("--service: port")?,
    ))
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
    let cert_pem = std::fs::read(&args.tls_cert_file).context("--tls-cert-file")?;
    let key_pem = std::fs::read(&args.tls_private_key_file).context("--tls-private-key-file")?;
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the serving certificate")?;
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&key_pem)
        .context("parsing the serving key")?;
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(tls));

    let identity =
        ClientIdentity::from_files(&args.proxy_client_cert_file, &args.proxy_client_key_file)?;
    let services = ServiceMapResolver::load(&args.service_map)?;
    let config = EngineConfig {
        http2: !args.backend_http1,
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, identity, Arc::new(services));
    let ca_bundle = std::fs::read(&args.ca_bundle).context("--ca-bundle")?;
    let backend = engine.backend(&BackendSpec::service(
        parse_service(&args.service)?,
        ca_bundle,
    ))?;

    let mut user = UserInfo::new(args.user.clone());
    user.groups = vec!["system:masters".into()];
    user.ensure_authenticated_group();
    let user = Arc::new(user);
    let expected = Arc::new(if args.token.is_empty() {
        String::new()
    } else {
        format!("Bearer {}", args.token)
    });

    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let listener = TcpListener::bind(args.listen).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;

    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("bench-front: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let engine = engine.clone();
        let backend = backend.clone();
        let user = user.clone();
        let expected = expected.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = service_fn(move |request: Request<Incoming>| {
                let engine = engine.clone();
                let backend = backend.clone();
                let user = user.clone();
                let expected = expected.clone();
                async move {
                    let authorized = expected.is_empty()
                        || request
                            .headers()
                            .get(http::header::AUTHORIZATION)
                            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
                    if !authorized {
                        let mut response = Response::new(proxy::empty());
                        *response.status_mut() = StatusCode::UNAUTHORIZED;
                        return Ok::<_, Infallible>(response);
                    }
                    let ctx = RequestContext {
                        user: &user,
                        client_addr: Some(peer.ip()),
                        audit_id: None,
                    };
                    Ok(engine
                        .forward(&backend, request.map(proxy::boxed), &ctx)
                        .await)
                }
            });
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        });
    }
}
