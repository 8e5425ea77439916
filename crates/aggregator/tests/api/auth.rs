//! Authentication (x509, tokens, request-header, anonymous), impersonation and authorization
//! (default policy and ABAC) over real TLS.

use anyhow::Result;
use http::Method;
use serde_json::json;

use crate::harness::{API, TestServer, Who, local};

#[tokio::test]
async fn who_may_do_what_by_default() -> Result<()> {
    let s = TestServer::start().await?;
    // No credentials: 401 Status (anonymous is off).
    let r = s.client(Who::Nobody).get(API).await?.expect(401)?;
    assert_eq!(
        r,
        json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401})
    );
    // A bad token is 401 too.
    s.token_client("wrong").get(API).await?.expect(401)?;
    // Health answers without credentials.
    s.client(Who::Nobody).get("/healthz").await?.expect(200)?;

    // admin (cert, system:masters) writes; bob (cert) and the bob token read but may not write.
    s.client(Who::Admin)
        .post_json(API, &local("a.example.com", "v1"))
        .await?
        .expect(201)?;
    s.token_client("admin-token")
        .post_json(API, &local("b.example.com", "v1"))
        .await?
        .expect(201)?;
    for bob in [s.client(Who::Bob), s.token_client("bob-token")] {
        bob.get(API).await?.expect(200)?;
        bob.get(&format!("{API}/v1.a.example.com"))
            .await?
            .expect(200)?;
        bob.get("/apis").await?.expect(200)?;
        bob.get("/openapi/v3").await?.expect(200)?;
        let r = bob
            .post_json(API, &local("c.example.com", "v1"))
            .await?
            .expect(403)?;
        assert_eq!(r["reason"], "Forbidden");
        assert_eq!(
            r["message"],
            "apiservices.apiregistration.k8s.io is forbidden: User \"bob\" cannot create resource \"apiservices\" in API group \"apiregistration.k8s.io\" at the cluster scope"
        );
        let r = bob
            .delete(&format!("{API}/v1.a.example.com"))
            .await?
            .expect(403)?;
        assert_eq!(
            r["message"],
            "apiservices.apiregistration.k8s.io \"v1.a.example.com\" is forbidden: User \"bob\" cannot delete resource \"apiservices\" in API group \"apiregistration.k8s.io\" at the cluster scope"
        );
        let r = bob.get("/metrics").await?.expect(403)?;
        assert_eq!(
            r["message"],
            "forbidden: User \"bob\" cannot get path \"/metrics\""
        );
    }
    // A certificate from an untrusted CA never gets a TLS session.
    assert!(s.client(Who::Rogue).get(API).await.is_err());
    Ok(())
}

#[tokio::test]
async fn anonymous_when_enabled() -> Result<()> {
    let s =
        TestServer::start_with(|c, _| c.anonymous_auth = true, store::Options::default()).await?;
    let anon = s.client(Who::Nobody);
    anon.get("/version").await?.expect(200)?;
    let r = anon.get(API).await?.expect(403)?;
    assert!(
        r["message"].as_str().is_some_and(
            |m| m.contains("User \"system:anonymous\" cannot list resource \"apiservices\"")
        ),
        "{r}"
    );
    // A bad token still fails: no fall-back to anonymous after an error.
    s.token_client("wrong").get("/version").await?.expect(401)?;
    Ok(())
}

#[tokio::test]
async fn impersonation() -> Result<()> {
    let s = TestServer::start().await?;
    let admin = s.client(Who::Admin);
    // Masters may impersonate; the impersonated user is then authorized.
    let r = admin
        .send(
            Method::POST,
            API,
            &[
                ("content-type", "application/json"),
                ("impersonate-user", "carol"),
                ("impersonate-group", "dev"),
            ],
            serde_json::to_vec(&local("x.example.com", "v1"))?,
        )
        .await?
        .expect(403)?;
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"carol\" cannot create")),
        "{r}"
    );
    admin
        .send(Method::GET, API, &[("impersonate-user", "carol")], "")
        .await?
        .expect(200)?;
    admin
        .send(
            Method::POST,
            API,
            &[
                ("content-type", "application/json"),
                ("impersonate-user", "root"),
                ("impersonate-group", "system:masters"),
            ],
            serde_json::to_vec(&local("y.example.com", "v1"))?,
        )
        .await?
        .expect(201)?;
    // Others may not.
    let r = s
        .client(Who::Bob)
        .send(Method::GET, API, &[("impersonate-user", "admin")], "")
        .await?
        .expect(403)?;
    assert_eq!(
        r["message"],
        "users \"admin\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    let r = admin
        .send(Method::GET, API, &[("impersonate-group", "x")], "")
        .await?
        .expect(400)?;
    assert_eq!(r["reason"], "BadRequest");
    Ok(())
}

#[tokio::test]
async fn abac_policy_file() -> Result<()> {
    let policy = concat!(
        r#"{"apiVersion":"abac.authorization.kubernetes.io/v1beta1","kind":"Policy","spec":{"user":"bob","namespace":"*","resource":"apiservices","apiGroup":"apiregistration.k8s.io"}}"#,
        "\n",
        r#"{"apiVersion":"abac.authorization.kubernetes.io/v1beta1","kind":"Policy","spec":{"group":"system:authenticated","readonly":true,"nonResourcePath":"*"}}"#,
        "\n",
    );
    let s = TestServer::start_with(
        |c, f| {
            let p = f.path("policy.jsonl");
            let _ = std::fs::write(&p, policy);
            c.authorization_policy_file = Some(p);
        },
        store::Options::default(),
    )
    .await?;
    // bob may now write apiservices; admin (masters) still may.
    s.client(Who::Bob)
        .post_json(API, &local("bob.example.com", "v1"))
        .await?
        .expect(201)?;
    s.client(Who::Admin)
        .delete(&format!("{API}/v1.bob.example.com"))
        .await?
        .expect(200)?;
    s.client(Who::Bob).get("/apis").await?.expect(200)?;
    Ok(())
}

#[tokio::test]
async fn request_header_authentication() -> Result<()> {
    let s = TestServer::start_with(
        |c, f| {
            c.request_header = Some(aggregator::RequestHeaderFlags {
                client_ca_file: f.path("front-proxy-ca.pem"),
                allowed_names: vec!["front-proxy-client".into()],
                username_headers: vec![],
                uid_headers: vec![],
                group_headers: vec![],
                extra_headers_prefix: vec![],
            })
        },
        store::Options::default(),
    )
    .await?;
    let proxy = s.client(Who::FrontProxy);
    // The proxy asserts a masters user: allowed to write.
    proxy
        .send(
            Method::POST,
            API,
            &[
                ("content-type", "application/json"),
                ("x-remote-user", "alice"),
                ("x-remote-group", "system:masters"),
            ],
            serde_json::to_vec(&local("rh.example.com", "v1"))?,
        )
        .await?
        .expect(201)?;
    let r = proxy
        .send(
            Method::DELETE,
            &format!("{API}/v1.rh.example.com"),
            &[("x-remote-user", "alice")],
            "",
        )
        .await?
        .expect(403)?;
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"alice\" cannot delete")),
        "{r}"
    );
    // Without a username header the proxy's own certificate is no user (not signed by the client CA).
    proxy.get(API).await?.expect(401)?;
    // Identity headers from an ordinary client are ignored: bob stays bob.
    let r = s
        .client(Who::Bob)
        .send(
            Method::DELETE,
            &format!("{API}/v1.rh.example.com"),
            &[
                ("x-remote-user", "admin"),
                ("x-remote-group", "system:masters"),
            ],
            "",
        )
        .await?
        .expect(403)?;
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"bob\"")),
        "{r}"
    );
    Ok(())
}
