//! A tower layer that authenticates each request by request-header (feature `tower`).
//!
//! For every request it reads [`PeerCertificates`] from the extensions (a missing extension means
//! no client certificate), calls [`Authenticator::authenticate`] and then:
//!
//! - on success inserts the [`UserInfo`] into the extensions, with `system:authenticated` added
//!   as upstream's union authenticator does, and calls the inner service;
//! - on a not-applicable refusal ([`Refusal::is_not_applicable`]: no client certificate, no
//!   username) calls the inner service **without** a `UserInfo`, so the server can try its other
//!   authenticators (bearer tokens, its own client CA) or treat the request as anonymous — the
//!   same "no opinion" upstream's union authenticator acts on;
//! - on any other refusal answers 401 with a Kubernetes `Status` body (message `Unauthorized`,
//!   as upstream, which never tells the client why) without calling the inner service. Use
//!   [`RequestHeaderLayer::on_refusal`] to log the reason.
//!
//! In every case the identity headers have been stripped before the inner service sees the request.
//!
//! [`Authenticator::authenticate`]: crate::Authenticator::authenticate

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::{AuthenticatorSource, PeerCertificates, Refusal, UserInfo};

/// upstream's 401 body (`apierrors.NewUnauthorized("Unauthorized")`).
const UNAUTHORIZED_STATUS: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;

type RefusalHook = Arc<dyn Fn(&Refusal) + Send + Sync>;

/// Wraps a service with request-header authentication; see the [module docs](self).
///
/// ```
/// use std::sync::Arc;
/// use front_proxy::layer::RequestHeaderLayer;
/// # fn demo(auth: front_proxy::Authenticator) {
/// let layer = RequestHeaderLayer::new(Arc::new(auth))
///     .on_refusal(|refusal| eprintln!("Unable to authenticate the request: {refusal}"));
/// # let _ = layer;
/// # }
/// ```
#[derive(Clone)]
pub struct RequestHeaderLayer<A> {
    source: A,
    on_refusal: Option<RefusalHook>,
}

impl<A> fmt::Debug for RequestHeaderLayer<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHeaderLayer").finish_non_exhaustive()
    }
}

impl<A: AuthenticatorSource + Clone> RequestHeaderLayer<A> {
    /// A layer taking its authenticator from `source`: an `Arc<Authenticator>` or, with feature
    /// `reload`, a `ReloadingAuthenticator`.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::sync::Arc;
    /// use front_proxy::layer::RequestHeaderLayer;
    /// use front_proxy::{test_util::TestCa, Authenticator};
    ///
    /// let auth = Authenticator::new(TestCa::new("ca")?.request_header_config(&[]))?;
    /// let layer = RequestHeaderLayer::new(Arc::new(auth));
    /// # let _ = layer;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(source: A) -> Self {
        RequestHeaderLayer {
            source,
            on_refusal: None,
        }
    }

    /// Calls `hook` for every refusal that is an error (the ones answered with 401), e.g. to log
    /// it as upstream does ("Unable to authenticate the request due to an error").
    ///
    /// ```
    /// use std::sync::Arc;
    /// use front_proxy::layer::RequestHeaderLayer;
    /// # fn demo(auth: Arc<front_proxy::Authenticator>) {
    /// let layer = RequestHeaderLayer::new(auth).on_refusal(|r| eprintln!("{r}"));
    /// # let _ = layer;
    /// # }
    /// ```
    pub fn on_refusal(mut self, hook: impl Fn(&Refusal) + Send + Sync + 'static) -> Self {
        self.on_refusal = Some(Arc::new(hook));
        self
    }
}

impl<S, A: Clone> tower_layer::Layer<S> for RequestHeaderLayer<A> {
    type Service = RequestHeaderService<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestHeaderService {
            inner,
            source: self.source.clone(),
            on_refusal: self.on_refusal.clone(),
        }
    }
}

/// The service made by [`RequestHeaderLayer`].
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::sync::Arc;
/// use front_proxy::layer::RequestHeaderLayer;
/// use front_proxy::{test_util::TestCa, Authenticator};
/// use tower_layer::Layer;
///
/// #[derive(Clone)]
/// struct App;
/// impl tower_service::Service<http::Request<()>> for App {
///     type Response = http::Response<String>;
///     type Error = std::convert::Infallible;
///     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
///         std::task::Poll::Ready(Ok(()))
///     }
///     fn call(&mut self, req: http::Request<()>) -> Self::Future {
///         let who = req.extensions().get::<front_proxy::UserInfo>().map(|u| u.name.clone());
///         std::future::ready(Ok(http::Response::new(who.unwrap_or_default())))
///     }
/// }
///
/// let auth = Authenticator::new(TestCa::new("ca")?.request_header_config(&[]))?;
/// let service = RequestHeaderLayer::new(Arc::new(auth)).layer(App);
/// # let _ = service;
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RequestHeaderService<S, A> {
    inner: S,
    source: A,
    on_refusal: Option<RefusalHook>,
}

impl<S: fmt::Debug, A> fmt::Debug for RequestHeaderService<S, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHeaderService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, A, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for RequestHeaderService<S, A>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>,
    A: AuthenticatorSource,
    ResBody: From<String>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let peer = request.extensions_mut().remove::<PeerCertificates>();
        let chain = peer.as_ref().map(|p| &p.0[..]).unwrap_or_default();
        let authenticator = self.source.current();
        let outcome = authenticator.authenticate(chain, request.headers_mut());
        if let Some(peer) = peer {
            // Put it back: handlers may want the peer chain too.
            request.extensions_mut().insert(peer);
        }
        match outcome {
            Ok(mut user) => {
                user.ensure_authenticated_group();
                request.extensions_mut().insert::<UserInfo>(user);
            }
            Err(refusal) if refusal.is_not_applicable() => {}
            Err(refusal) => {
                if let Some(hook) = &self.on_refusal {
                    hook(&refusal);
                }
                return ResponseFuture::ready(unauthorized());
            }
        }
        ResponseFuture::inner(self.inner.call(request))
    }
}

fn unauthorized<B: From<String>>() -> Response<B> {
    let mut response = Response::new(B::from(UNAUTHORIZED_STATUS.to_owned()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

pin_project_lite::pin_project! {
    /// The future of [`RequestHeaderService`]: the inner service's, or a ready 401.
    ///
    /// ```
    /// use front_proxy::layer::ResponseFuture;
    ///
    /// // The future for an inner service whose own future is `Pending`.
    /// type Fut = ResponseFuture<std::future::Pending<Result<http::Response<String>, ()>>, String, ()>;
    /// let _ = std::mem::size_of::<Fut>();
    /// ```
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        state: State<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B, E> {
        // The inner service is handling the request.
        Inner { #[pin] future: F },
        // The request was refused; the 401 is taken on first poll.
        Ready { response: Option<Result<Response<B>, E>> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    fn inner(future: F) -> Self {
        ResponseFuture {
            state: State::Inner { future },
        }
    }

    fn ready(response: Response<B>) -> Self {
        ResponseFuture {
            state: State::Ready {
                response: Some(Ok(response)),
            },
        }
    }
}

impl<F, B, E> fmt::Debug for ResponseFuture<F, B, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.state {
            State::Inner { .. } => f.write_str("ResponseFuture::Inner"),
            State::Ready { .. } => f.write_str("ResponseFuture::Ready"),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Inner { future } => future.poll(cx),
            StateProj::Ready { response } => match response.take() {
                Some(response) => Poll::Ready(response),
                // Polled after completion: the contract allows anything, and a panic is unkind;
                // stay pending instead.
                None => Poll::Pending,
            },
        }
    }
}
