//! The TLS side of the contract for an extension server built on rustls (feature `rustls`).
//!
//! k8s.io/apiserver serves with Go's `tls.RequestClientCert`: the handshake asks for a client
//! certificate and checks the client holds its key, but trusts nothing; the authenticators
//! decide per request (the request-header one against the front-proxy CA, the x509 one against
//! the client CA). That is what lets the request-header CA be reloaded without a new TLS
//! configuration, and turns a bad certificate into a 401 with a reason instead of a failed
//! handshake. [`RequestClientCert`] is that verifier for rustls.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// Go's `tls.RequestClientCert` for rustls: asks every client for a certificate, accepts any
/// (or none), and verifies only the handshake signature. Pair it with
/// [`crate::Authenticator::authenticate`], which checks the chain for every request.
///
/// No CA names are hinted in the request: Go clients would then withhold a certificate whose
/// issuer is not listed.
///
/// ```
/// use std::sync::Arc;
/// use front_proxy::tls::RequestClientCert;
///
/// let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
/// let verifier = RequestClientCert::new(&provider);
/// let builder = rustls::ServerConfig::builder_with_provider(provider)
///     .with_safe_default_protocol_versions()
///     .expect("the provider supports TLS 1.2 and 1.3")
///     .with_client_cert_verifier(Arc::new(verifier));
/// // …then .with_single_cert(serving_chain, serving_key)
/// # let _ = builder;
/// ```
#[derive(Debug, Clone)]
pub struct RequestClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl RequestClientCert {
    /// A verifier checking handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> RequestClientCert {
        RequestClientCert {
            algorithms: provider.signature_verification_algorithms,
        }
    }

    /// The same, shared, ready for `with_client_cert_verifier`.
    pub fn arc(provider: &CryptoProvider) -> Arc<dyn ClientCertVerifier> {
        Arc::new(RequestClientCert::new(provider))
    }
}

impl ClientCertVerifier for RequestClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Health probes, token users and anonymous clients connect without a certificate.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Deferred to the authenticators, for every request.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
