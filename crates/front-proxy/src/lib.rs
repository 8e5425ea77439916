//! Never trust an identity header without a verified front-proxy client certificate, and never let
//! one survive past authentication.
//!
//! This crate is the Kubernetes request-header (front-proxy) contract, both sides, with one
//! definition of the header names and of the extra-key escaping:
//!
//! - **writer** (the aggregator's proxy): [`write_identity`] strips whatever identity headers the
//!   client sent and writes `X-Remote-User`, `X-Remote-Uid`, `X-Remote-Group` and
//!   `X-Remote-Extra-*` exactly as client-go's `SetAuthProxyHeaders` does;
//! - **reader** (an extension API server): an [`Authenticator`] built from
//!   `--requestheader-*` flags ([`RequestHeaderConfig::from_flags`]) or from the
//!   `kube-system/extension-apiserver-authentication` ConfigMap
//!   ([`RequestHeaderConfig::from_configmap`]) verifies the client certificate chain against the
//!   request-header CA only, checks the CN against the allowed names, reads the [`UserInfo`] and
//!   strips the headers. Failures are a typed [`Refusal`].
//!
//! Optional features:
//!
//! - `tower`: `layer::RequestHeaderLayer`, which puts the [`UserInfo`] into request extensions;
//! - `reload`: `reload::ReloadingAuthenticator`, which follows CA-file or ConfigMap changes
//!   without a restart;
//! - `test-util`: `test_util`, a throw-away front-proxy CA and proxied requests for tests,
//!   including bad certificates;
//! - `rustls`: `tls::RequestClientCert`, the handshake side (Go's `tls.RequestClientCert`) for a
//!   rustls server.
//!
//! # An extension server's side
//!
//! ```
//! # #[cfg(feature = "test-util")] {
//! use front_proxy::test_util::TestCa;
//! use front_proxy::{Authenticator, PeerCertificates, Refusal, UserInfo};
//!
//! // In a real server: RequestHeaderConfig::from_flags(...) or ::from_configmap(...).
//! let ca = TestCa::new("front-proxy-ca")?;
//! let auth = Authenticator::new(ca.request_header_config(&["front-proxy-client"]))?;
//!
//! // What the aggregator sends: its front-proxy client certificate and X-Remote-* headers.
//! let proxy_cert = ca.client_cert("front-proxy-client")?;
//! let mut user = UserInfo::new("alice");
//! user.groups = vec!["dev".into(), "system:authenticated".into()];
//! let mut request = proxy_cert.proxied_request(http::Request::new(()), &user)?;
//!
//! // The server takes the peer chain from its TLS connection.
//! let peer = request.extensions().get::<PeerCertificates>().cloned();
//! let chain = peer.map(|p| p.0).unwrap_or_default();
//! match auth.authenticate(&chain, request.headers_mut()) {
//!     Ok(who) => assert_eq!(who.name, "alice"),
//!     Err(refusal) if refusal.is_not_applicable() => { /* try bearer tokens, then anonymous */ }
//!     Err(refusal) => panic!("401: {refusal}"),
//! }
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A complete TLS extension server is in `examples/minimal_server.rs`.
//!
//! # The proxy's side
//!
//! ```
//! use front_proxy::{write_identity, HeaderNames, UserInfo};
//!
//! let mut user = UserInfo::new("system:serviceaccount:ns:sa");
//! user.extra.insert("authentication.kubernetes.io/pod-name".into(), vec!["web-0".into()]);
//! let mut headers = http::HeaderMap::new();
//! write_identity(&mut headers, &user, &HeaderNames::default())?;
//! assert!(headers.contains_key("x-remote-extra-authentication.kubernetes.io%2fpod-name"));
//! # Ok::<(), front_proxy::WriteError>(())
//! ```

#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

mod authenticator;
mod config;
mod escape;
mod headers;
#[cfg(feature = "tower")]
pub mod layer;
#[cfg(feature = "reload")]
pub mod reload;
#[cfg(feature = "test-util")]
pub mod test_util;
#[cfg(feature = "rustls")]
pub mod tls;

pub use authenticator::{Authenticator, Refusal};
pub use config::{ConfigError, RequestHeaderConfig};
pub use escape::{escape_extra_key, unescape_extra_key};
pub use headers::{
    HeaderNames, WriteError, X_REMOTE_EXTRA_PREFIX, X_REMOTE_GROUP, X_REMOTE_UID, X_REMOTE_USER,
    strip_identity, write_identity,
};

/// The group every authenticated user has (upstream's union authenticator adds it).
///
/// ```
/// assert_eq!(front_proxy::SYSTEM_AUTHENTICATED, "system:authenticated");
/// ```
pub const SYSTEM_AUTHENTICATED: &str = "system:authenticated";

/// The authenticated user (k8s.io/apiserver `user.Info`).
///
/// ```
/// use front_proxy::UserInfo;
///
/// let mut user = UserInfo::new("alice");
/// user.groups.push("dev".into());
/// assert_eq!(user.uid, "");
/// assert!(user.extra.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserInfo {
    /// The username (`X-Remote-User`).
    pub name: String,
    /// The UID (`X-Remote-Uid`); empty when unknown.
    pub uid: String,
    /// The groups (`X-Remote-Group`, one header line each), in order.
    pub groups: Vec<String>,
    /// Extra attributes (`X-Remote-Extra-<escaped key>`, one header line per value). Keys read
    /// from headers are lower-cased, as upstream.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// A user with this name and nothing else.
    ///
    /// ```
    /// let user = front_proxy::UserInfo::new("bob");
    /// assert_eq!(user.name, "bob");
    /// assert!(user.groups.is_empty());
    /// ```
    pub fn new(name: impl Into<String>) -> Self {
        UserInfo {
            name: name.into(),
            ..UserInfo::default()
        }
    }

    /// Adds [`SYSTEM_AUTHENTICATED`] to the groups unless present, as upstream's union
    /// authenticator does after any successful authentication.
    ///
    /// ```
    /// let mut user = front_proxy::UserInfo::new("bob");
    /// user.ensure_authenticated_group();
    /// user.ensure_authenticated_group();
    /// assert_eq!(user.groups, ["system:authenticated"]);
    /// ```
    pub fn ensure_authenticated_group(&mut self) {
        if !self.groups.iter().any(|g| g == SYSTEM_AUTHENTICATED) {
            self.groups.push(SYSTEM_AUTHENTICATED.to_owned());
        }
    }
}

/// The TLS peer certificate chain of a connection (leaf first), as servers put it into request
/// extensions for [`Authenticator::authenticate`] and the tower layer.
///
/// ```
/// use front_proxy::PeerCertificates;
/// use rustls_pki_types::CertificateDer;
///
/// // e.g. from tokio-rustls: tls_stream.get_ref().1.peer_certificates()
/// let presented: Option<&[CertificateDer<'_>]> = None;
/// let peer = PeerCertificates::from_presented(presented);
/// assert!(peer.0.is_empty());
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(peer);
/// ```
#[derive(Debug, Clone, Default)]
pub struct PeerCertificates(pub Arc<[CertificateDer<'static>]>);

impl PeerCertificates {
    /// Copies a presented chain (rustls' `peer_certificates()`), or an empty one when the client
    /// sent no certificate. Do this once per connection and clone the result per request.
    ///
    /// ```
    /// use front_proxy::PeerCertificates;
    /// use rustls_pki_types::CertificateDer;
    ///
    /// let chain = [CertificateDer::from(vec![0x30, 0x00])];
    /// let peer = PeerCertificates::from_presented(Some(&chain[..]));
    /// assert_eq!(peer.0.len(), 1);
    /// ```
    pub fn from_presented(chain: Option<&[CertificateDer<'_>]>) -> Self {
        let chain = chain.unwrap_or_default();
        PeerCertificates(chain.iter().map(|c| c.clone().into_owned()).collect())
    }
}

/// Where an authenticating layer gets the authenticator for each request: a fixed
/// `Arc<Authenticator>`, or a `ReloadingAuthenticator` (feature `reload`) whose snapshot changes.
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::sync::Arc;
/// use front_proxy::test_util::TestCa;
/// use front_proxy::{Authenticator, AuthenticatorSource};
///
/// let auth = Arc::new(Authenticator::new(TestCa::new("ca")?.request_header_config(&[]))?);
/// let snapshot = auth.current();
/// assert!(Arc::ptr_eq(&auth, &snapshot));
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait AuthenticatorSource {
    /// The authenticator to use for one request. Must not block.
    fn current(&self) -> Arc<Authenticator>;
}

impl AuthenticatorSource for Arc<Authenticator> {
    fn current(&self) -> Arc<Authenticator> {
        Arc::clone(self)
    }
}
