//! The tower layer: user in extensions on success, pass-through without a user when not
//! applicable, 401 Status without calling the inner service on error.

use std::convert::Infallible;
use std::future::{Ready, poll_fn};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use front_proxy::layer::RequestHeaderLayer;
use front_proxy::reload::ReloadingAuthenticator;
use front_proxy::test_util::{ClientCertKind, TestCa};
use front_proxy::{Authenticator, AuthenticatorSource, PeerCertificates, Refusal, UserInfo};
use http::{HeaderValue, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What the inner service saw of one request.
#[derive(Debug, Default, Clone)]
struct Seen {
    user: Option<UserInfo>,
    identity_headers: Vec<String>,
    had_peer: bool,
}

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Service<Request<()>> for Recorder {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let seen = Seen {
            user: request.extensions().get::<UserInfo>().cloned(),
            identity_headers: request
                .headers()
                .keys()
                .filter(|k| k.as_str().starts_with("x-remote-"))
                .map(|k| k.to_string())
                .collect(),
            had_peer: request.extensions().get::<PeerCertificates>().is_some(),
        };
        if let Ok(mut all) = self.seen.lock() {
            all.push(seen);
        }
        std::future::ready(Ok(Response::new("inner".to_owned())))
    }
}

impl Recorder {
    fn last(&self) -> Seen {
        self.seen
            .lock()
            .ok()
            .and_then(|all| all.last().cloned())
            .unwrap_or_default()
    }
}

async fn call<S>(service: &mut S, request: Request<()>) -> Response<String>
where
    S: Service<Request<()>, Response = Response<String>, Error = Infallible>,
{
    let Ok(()) = poll_fn(|cx| service.poll_ready(cx)).await;
    let Ok(response) = service.call(request).await;
    response
}

fn alice() -> UserInfo {
    let mut user = UserInfo::new("alice");
    user.groups = vec!["dev".into()];
    user
}

#[tokio::test]
async fn success_puts_the_user_in_extensions() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Arc::new(Authenticator::new(
        ca.request_header_config(&["front-proxy-client"]),
    )?);
    let recorder = Recorder::default();
    let mut service = RequestHeaderLayer::new(auth).layer(recorder.clone());

    let request = ca
        .client_cert("front-proxy-client")?
        .proxied_request(Request::new(()), &alice())?;
    let response = call(&mut service, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = recorder.last();
    let user = seen.user.ok_or("no user")?;
    assert_eq!(user.name, "alice");
    // The union authenticator's group is added, once.
    assert_eq!(user.groups, ["dev", "system:authenticated"]);
    assert!(
        seen.identity_headers.is_empty(),
        "{:?}",
        seen.identity_headers
    );
    assert!(seen.had_peer, "handlers still see the peer chain");
    Ok(())
}

#[tokio::test]
async fn not_applicable_passes_on_without_a_user_and_without_spoofed_headers() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let auth = Arc::new(Authenticator::new(ca.request_header_config(&[]))?);
    let recorder = Recorder::default();
    let mut service = RequestHeaderLayer::new(auth).layer(recorder.clone());

    // No PeerCertificates extension at all: a client without a certificate.
    let mut request = Request::new(());
    request
        .headers_mut()
        .insert("x-remote-user", HeaderValue::from_static("system:admin"));
    request
        .headers_mut()
        .insert("x-remote-group", HeaderValue::from_static("system:masters"));
    let response = call(&mut service, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = recorder.last();
    assert!(seen.user.is_none());
    assert!(
        seen.identity_headers.is_empty(),
        "{:?}",
        seen.identity_headers
    );

    // A verified proxy that sent no username: also "no opinion".
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(ca.client_cert("p")?.peer_certificates());
    let response = call(&mut service, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(recorder.last().user.is_none());
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn errors_answer_401_status_without_calling_the_inner_service() -> TestResult {
    let ca = TestCa::new("front-proxy-ca")?;
    let other = TestCa::new("someone-else")?;
    let auth = Arc::new(Authenticator::new(
        ca.request_header_config(&["front-proxy-client"]),
    )?);
    let recorder = Recorder::default();
    let refusals = Arc::new(Mutex::new(Vec::<Refusal>::new()));
    let log = Arc::clone(&refusals);
    let mut service = RequestHeaderLayer::new(auth)
        .on_refusal(move |r| {
            if let Ok(mut all) = log.lock() {
                all.push(r.clone());
            }
        })
        .layer(recorder.clone());

    let bad = [
        other.client_cert("front-proxy-client")?,
        ca.client_cert("not-allowed")?,
        ca.client_cert_with("front-proxy-client", ClientCertKind::NoClientAuthUsage)?,
        ca.client_cert_with("front-proxy-client", ClientCertKind::Expired)?,
    ];
    for cert in &bad {
        let response = call(
            &mut service,
            cert.proxied_request(Request::new(()), &alice())?,
        )
        .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(
            response.body(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        );
    }
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 0);
    let refusals = refusals.lock().map_err(|e| e.to_string())?;
    assert!(matches!(refusals[0], Refusal::UntrustedChain { .. }));
    assert!(matches!(refusals[1], Refusal::NameNotAllowed { .. }));
    assert_eq!(refusals[2], Refusal::MissingClientAuthUsage);
    assert!(matches!(refusals[3], Refusal::Expired { .. }));
    Ok(())
}

#[tokio::test]
async fn follows_a_reloading_authenticator() -> TestResult {
    let old = TestCa::new("front-proxy-ca-old")?;
    let new = TestCa::new("front-proxy-ca-new")?;
    let (auth, updater) =
        ReloadingAuthenticator::new(Authenticator::new(old.request_header_config(&[]))?);
    let recorder = Recorder::default();
    let mut service = RequestHeaderLayer::new(auth.clone()).layer(recorder.clone());

    let old_proxy = old.client_cert("front-proxy-client")?;
    let new_proxy = new.client_cert("front-proxy-client")?;
    let response = call(
        &mut service,
        old_proxy.proxied_request(Request::new(()), &alice())?,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);

    assert!(updater.apply(new.request_header_config(&[]))?);
    assert!(Arc::ptr_eq(
        &AuthenticatorSource::current(&auth),
        &updater.current()
    ));
    let response = call(
        &mut service,
        old_proxy.proxied_request(Request::new(()), &alice())?,
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = call(
        &mut service,
        new_proxy.proxied_request(Request::new(()), &alice())?,
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(recorder.calls.load(Ordering::SeqCst), 2);
    Ok(())
}
