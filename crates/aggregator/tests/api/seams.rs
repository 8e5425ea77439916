//! The seams for the proxy: what a `Forwarder` receives (target, user, scrubbed headers), that a
//! panic inside it becomes a 500 `Status`, backend discovery feeding `/apis`, and controller
//! status writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use apimachinery::discovery::{APIResourceDiscovery, Freshness, GroupVersionKind, Scope};
use http::{Request, Response, StatusCode};
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIServiceCondition;
use proxy::body::Body;

use crate::harness::{API, TestServer, Who, local, remote};
use aggregator::forward::{BoxFuture, ForwardTarget, Forwarder, RequestContext};

#[derive(Debug, Clone)]
struct Seen {
    target: String,
    discovery: bool,
    user: String,
    groups: Vec<String>,
    headers: Vec<String>,
    path: String,
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl Forwarder for Recorder {
    fn forward(
        &self,
        req: Request<Body>,
        ctx: RequestContext,
        target: ForwardTarget,
    ) -> BoxFuture<Response<Body>> {
        if req.uri().path().contains("/panic") {
            panic!("forwarder exploded");
        }
        let (name, discovery) = match &target {
            ForwardTarget::Remote {
                apiservice,
                discovery,
            } => (
                apiservice.metadata.name.clone().unwrap_or_default(),
                *discovery,
            ),
            ForwardTarget::Delegate => ("delegate".into(), false),
        };
        if let Ok(mut s) = self.seen.lock() {
            s.push(Seen {
                target: name,
                discovery,
                user: ctx.user.name.clone(),
                groups: ctx.user.groups.clone(),
                headers: req
                    .headers()
                    .keys()
                    .map(|k| k.as_str().to_owned())
                    .collect(),
                path: req.uri().path().to_owned(),
            });
        }
        Box::pin(async { aggregator::response::text(StatusCode::OK, "forwarded") })
    }
}

#[tokio::test]
async fn forwarder_gets_routes_users_and_clean_headers() -> Result<()> {
    let rec = Arc::new(Recorder::default());
    let s = TestServer::start_full(|_, _| {}, store::Options::default(), rec.clone()).await?;
    let admin = s.client(Who::Admin);
    admin
        .post_json(API, &remote("metrics.k8s.io", "v1beta1", 100, 100))
        .await?
        .expect(201)?;
    admin
        .post_json(API, &local("local.example.com", "v1"))
        .await?
        .expect(201)?;
    // Mark the remote one Available, as the availability controller will.
    s.status
        .set_condition(
            "v1beta1.metrics.k8s.io",
            APIServiceCondition {
                type_: "Available".into(),
                status: "True".into(),
                reason: Some("Passed".into()),
                message: Some("all checks passed".into()),
                last_transition_time: None,
            },
            "availability-controller",
        )
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message))?;

    let bob = s.token_client("bob-token");
    let path = "/apis/metrics.k8s.io/v1beta1/nodes";
    let mut r = None;
    for _ in 0..100 {
        let x = bob
            .send(
                http::Method::GET,
                path,
                &[
                    ("x-remote-user", "mallory"),
                    ("x-remote-group", "system:masters"),
                ],
                "",
            )
            .await?;
        if x.status == StatusCode::OK {
            r = Some(x);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        r.context("the remote APIService never became routable")?
            .text(),
        "forwarded"
    );
    let seen = rec.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let last = seen.last().context("the forwarder was called")?;
    assert_eq!(last.target, "v1beta1.metrics.k8s.io");
    assert!(!last.discovery);
    assert_eq!(last.user, "bob");
    assert_eq!(last.groups, ["dev", "qa", "system:authenticated"]);
    assert_eq!(last.path, path);
    for h in ["authorization", "x-remote-user", "x-remote-group"] {
        assert!(
            !last.headers.iter().any(|k| k == h),
            "{h} must not reach the forwarder: {:?}",
            last.headers
        );
    }
    bob.get("/apis/metrics.k8s.io/v1beta1")
        .await?
        .expect(200)
        .ok();
    let seen = rec.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(
        seen.last().is_some_and(|s| s.discovery),
        "exactly /apis/<g>/<v> is a discovery request"
    );

    // Local APIServices and unknown paths go to the delegate.
    assert_eq!(
        admin.get("/apis/local.example.com/v1/things").await?.text(),
        "forwarded"
    );
    assert_eq!(admin.get("/logs/x").await?.text(), "forwarded");
    let seen = rec.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert!(seen.iter().rev().take(2).all(|s| s.target == "delegate"));

    // A panic inside becomes a 500 Status and the server keeps serving.
    let r = admin
        .get("/apis/local.example.com/v1/panic")
        .await?
        .expect(500)?;
    assert_eq!(r["reason"], "InternalError");
    admin.get(API).await?.expect(200)?;
    Ok(())
}

#[tokio::test]
async fn impersonation_headers_need_permission_even_on_proxied_paths() -> Result<()> {
    let rec = Arc::new(Recorder::default());
    let s = TestServer::start_full(|_, _| {}, store::Options::default(), rec.clone()).await?;
    let r = s
        .token_client("bob-token")
        .send(
            http::Method::GET,
            "/apis/x.example.com/v1/y",
            &[("impersonate-user", "admin")],
            "",
        )
        .await?;
    assert_eq!(r.status.as_u16(), 403);
    assert!(
        rec.seen.lock().map(|s| s.is_empty()).unwrap_or(false),
        "nothing forwarded"
    );
    Ok(())
}

#[tokio::test]
async fn backend_discovery_feeds_apis() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    admin
        .post_json(API, &remote("metrics.k8s.io", "v1beta1", 100, 100))
        .await?
        .expect(201)?;
    let mut backend = aggregator::BackendDiscovery::default();
    backend.versions.insert(
        ("metrics.k8s.io".into(), "v1beta1".into()),
        aggregator::FetchedVersion {
            resources: vec![APIResourceDiscovery {
                resource: "nodes".into(),
                response_kind: Some(GroupVersionKind {
                    group: String::new(),
                    version: String::new(),
                    kind: "NodeMetrics".into(),
                }),
                scope: Scope::Cluster,
                singular_resource: "nodemetrics".into(),
                verbs: vec!["get".into(), "list".into()],
                short_names: vec![],
                categories: vec![],
                subresources: vec![],
            }],
            freshness: Freshness::Current,
        },
    );
    s.backend.send_replace(Arc::new(backend));
    let accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
    for _ in 0..200 {
        let v = admin
            .get_with("/apis", &[("accept", accept)])
            .await?
            .expect(200)?;
        if v["items"][1]["versions"][0]["freshness"] == "Current" {
            assert_eq!(v["items"][1]["metadata"]["name"], "metrics.k8s.io");
            assert_eq!(
                v["items"][1]["versions"][0]["resources"][0]["resource"],
                "nodes"
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("backend discovery never reached /apis")
}

/// What several replicas rely on: the same result written at once lands once, the previous
/// condition is reported (for the flip counter), and a result probed against an old spec is
/// dropped.
#[tokio::test]
async fn status_writes_are_idempotent_across_writers() -> Result<()> {
    let s = TestServer::start().await?;
    s.client(Who::Admin)
        .post_json(API, &remote("metrics.k8s.io", "v1beta1", 100, 100))
        .await?
        .expect(201)?;
    let name = "v1beta1.metrics.k8s.io";
    let cond = |status: &str, reason: &str| APIServiceCondition {
        type_: "Available".into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(format!("{reason} message")),
        last_transition_time: None,
    };
    let err = |s: apimachinery::Status| anyhow::anyhow!("{}", s.message);
    let (a, b) = (s.status.clone(), s.status.clone());
    let (ra, rb) = tokio::join!(
        a.update_condition(
            name,
            cond("False", "FailedDiscoveryCheck"),
            "replica-a",
            |_| true
        ),
        b.update_condition(
            name,
            cond("False", "FailedDiscoveryCheck"),
            "replica-b",
            |_| true
        ),
    );
    let ra = ra.map_err(err)?.context("no precondition")?;
    let rb = rb.map_err(err)?.context("no precondition")?;
    assert_eq!(
        u8::from(ra.written) + u8::from(rb.written),
        1,
        "one replica writes, the other finds it written"
    );
    assert_eq!(
        ra.object.metadata.resource_version,
        rb.object.metadata.resource_version
    );
    let up = s
        .status
        .update_condition(name, cond("True", "Passed"), "replica-a", |_| true)
        .await
        .map_err(err)?
        .context("no precondition")?;
    assert!(up.written);
    assert_eq!(up.previous.map(|c| c.status), Some("False".to_owned()));
    let stale_spec = s
        .status
        .update_condition(name, cond("False", "Stale"), "replica-b", |stored| {
            stored
                .spec
                .as_ref()
                .and_then(|sp| sp.service.as_ref())
                .and_then(|svc| svc.port)
                == Some(8443)
        })
        .await
        .map_err(err)?;
    assert!(
        stale_spec.is_none(),
        "a result for another spec is not written"
    );
    Ok(())
}
