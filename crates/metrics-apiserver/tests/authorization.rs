//! Delegated authorization over real TLS: the server sends SubjectAccessReviews to a
//! **stand-in for kube-apiserver** (kube-apiserver cannot run on these machines), which records
//! each review and allows alice, denies bob and fails for carol.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use base64::Engine;
use bytes::Bytes;
use front_proxy::test_util::TestCa;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use support::{Pki, Running, identity};
use tokio::net::TcpListener;

/// One request the stand-in received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: String,
    review: Value,
}

/// Stand-in for kube-apiserver's `subjectaccessreviews` endpoint (HTTPS, bearer token).
struct StandIn {
    addr: SocketAddr,
    ca: TestCa,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    async fn start() -> Result<StandIn> {
        let ca = TestCa::new("stand-in-kube-apiserver-ca")?;
        let cert = ca.serving_cert(&["127.0.0.1"])?;
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(cert.chain.clone(), cert.key_der())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let recorded = Arc::clone(&recorded);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let recorded = Arc::clone(&recorded);
                        async move {
                            Ok::<_, std::convert::Infallible>(answer(request, &recorded).await)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(StandIn {
            addr,
            ca,
            seen,
            task,
        })
    }

    fn kubeconfig(&self, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca.ca_pem());
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: https://{}\n    certificate-authority-data: {ca}\nusers:\n- name: metrics-server\n  user:\n    token: stand-in-token\ncontexts:\n- name: default\n  context:\n    cluster: stand-in\n    user: metrics-server\ncurrent-context: default\n",
            self.addr
        );
        let path = dir.join("authorization.kubeconfig");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn answer(request: Request<Incoming>, recorded: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Ok(mut seen) = recorded.lock() {
        seen.push(Seen {
            path: path.clone(),
            authorization,
            review: review.clone(),
        });
    }
    let reply = |code: StatusCode, body: Value| {
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
        *r.status_mut() = code;
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    if path != "/apis/authorization.k8s.io/v1/subjectaccessreviews" {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"kind":"Status","apiVersion":"v1","status":"Failure","code":404}),
        );
    }
    let status = match review["spec"]["user"].as_str() {
        Some("alice") => {
            json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"metrics-readers\""})
        }
        Some("bob") => json!({"allowed": false, "reason": "RBAC: bob may not"}),
        _ => {
            return reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"kind":"Status","apiVersion":"v1","status":"Failure","message":"etcdserver: request timed out","code":500}),
            );
        }
    };
    review["status"] = status;
    reply(StatusCode::CREATED, review)
}

fn reviews_of(seen: &[Seen], user: &str) -> Vec<Value> {
    seen.iter()
        .filter(|s| s.review["spec"]["user"] == user)
        .map(|s| s.review.clone())
        .collect()
}

#[tokio::test]
async fn subject_access_reviews_decide_and_are_cached() -> Result<()> {
    let pki = Pki::new()?;
    let stand_in = StandIn::start().await?;
    let mut config = pki.config();
    config.authorization_kubeconfig = Some(stand_in.kubeconfig(pki.dir.path())?);
    let server = Running::start(config).await?;
    let aggregator = pki.aggregator(server.addr)?;
    let mut alice = identity("alice", &["dev", "system:authenticated"]);
    alice.push(("X-Remote-Uid", "u-1"));
    alice.push(("X-Remote-Extra-Scopes", "view"));

    let reply = aggregator
        .get("/apis/metrics.k8s.io/v1beta1/nodes", &alice)
        .await?;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = stand_in.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].path,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews"
    );
    assert_eq!(seen[0].authorization, "Bearer stand-in-token");
    let review = &seen[0].review;
    assert_eq!(review["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(review["kind"], "SubjectAccessReview");
    assert_eq!(
        review["spec"],
        json!({"user": "alice", "uid": "u-1", "groups": ["dev", "system:authenticated"],
               "extra": {"scopes": ["view"]},
               "resourceAttributes": {"verb": "list", "group": "metrics.k8s.io", "version": "v1beta1", "resource": "nodes"}})
    );

    // Within the 10 s TTL the same question is not asked again.
    let reply = aggregator
        .get("/apis/metrics.k8s.io/v1beta1/nodes", &alice)
        .await?;
    assert_eq!(reply.status, 200);
    assert_eq!(stand_in.seen().len(), 1);

    // Denied, with the reviewer's reason in the message.
    let bob = identity("bob", &["system:authenticated"]);
    let denied = aggregator
        .get(
            "/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods/web-0",
            &bob,
        )
        .await?;
    let status = denied.assert_status(403, "Forbidden")?;
    assert_eq!(
        status["message"],
        "pods.metrics.k8s.io \"web-0\" is forbidden: User \"bob\" cannot get resource \"pods\" in API group \"metrics.k8s.io\" in the namespace \"shop\": RBAC: bob may not"
    );
    assert_eq!(
        reviews_of(&stand_in.seen(), "bob")[0]["spec"]["resourceAttributes"],
        json!({"namespace": "shop", "verb": "get", "group": "metrics.k8s.io", "version": "v1beta1", "resource": "pods", "name": "web-0"})
    );

    // Discovery is a non-resource request.
    let discovery = aggregator.get("/apis", &bob).await?;
    let status = discovery.assert_status(403, "Forbidden")?;
    assert_eq!(
        status["message"],
        "forbidden: User \"bob\" cannot get path \"/apis\": RBAC: bob may not"
    );
    let bobs = reviews_of(&stand_in.seen(), "bob");
    assert_eq!(
        bobs[1]["spec"]["nonResourceAttributes"],
        json!({"path": "/apis", "verb": "get"})
    );
    assert!(bobs[1]["spec"].get("resourceAttributes").is_none());

    // system:masters and health checks never ask.
    let before = stand_in.seen().len();
    let root = identity("system:kube-aggregator", &["system:masters"]);
    assert_eq!(
        aggregator
            .get("/apis/metrics.k8s.io/v1beta1", &root)
            .await?
            .status,
        200
    );
    assert_eq!(aggregator.get("/healthz", &[]).await?.status, 200);
    assert_eq!(stand_in.seen().len(), before);

    // The reviewer failing is a 500, not a decision, and is not cached.
    let carol = identity("carol", &["system:authenticated"]);
    aggregator
        .get("/apis/metrics.k8s.io/v1beta1/nodes", &carol)
        .await?
        .assert_status(500, "InternalError")?;
    aggregator
        .get("/apis/metrics.k8s.io/v1beta1/nodes", &carol)
        .await?
        .assert_status(500, "InternalError")?;
    assert_eq!(reviews_of(&stand_in.seen(), "carol").len(), 2);
    server.stop().await
}

#[tokio::test]
async fn a_zero_ttl_asks_every_time() -> Result<()> {
    let pki = Pki::new()?;
    let stand_in = StandIn::start().await?;
    let mut config = pki.config();
    config.authorization_kubeconfig = Some(stand_in.kubeconfig(pki.dir.path())?);
    config.authorized_ttl = Duration::ZERO;
    let server = Running::start(config).await?;
    let aggregator = pki.aggregator(server.addr)?;
    let alice = identity("alice", &["system:authenticated"]);
    for _ in 0..3 {
        assert_eq!(
            aggregator
                .get("/apis/metrics.k8s.io/v1beta1", &alice)
                .await?
                .status,
            200
        );
    }
    assert_eq!(reviews_of(&stand_in.seen(), "alice").len(), 3);
    server.stop().await
}

#[tokio::test]
async fn an_unreachable_reviewer_is_a_500() -> Result<()> {
    let pki = Pki::new()?;
    let stand_in = StandIn::start().await?;
    let mut config = pki.config();
    config.authorization_kubeconfig = Some(stand_in.kubeconfig(pki.dir.path())?);
    drop(stand_in);
    let server = Running::start(config).await?;
    let reply = pki
        .aggregator(server.addr)?
        .get(
            "/apis/metrics.k8s.io/v1beta1/nodes",
            &identity("alice", &["system:authenticated"]),
        )
        .await?;
    let status = reply.assert_status(500, "InternalError")?;
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("SubjectAccessReview"),
        "{status}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_broken_kubeconfig_is_a_configuration_error() -> Result<()> {
    let pki = Pki::new()?;
    let path = pki.dir.path().join("broken.kubeconfig");
    std::fs::write(&path, "clusters: [ this is not yaml")?;
    let mut config = pki.config();
    config.authorization_kubeconfig = Some(path);
    let err = config.prepare().err();
    assert!(err.as_ref().is_some_and(|e| e.is_config()), "{err:?}");
    assert!(err.is_some_and(|e| e.to_string().contains("--authorization-kubeconfig")));
    Ok(())
}
