//! A throw-away front-proxy PKI and proxied requests for tests of extension servers and proxies
//! (feature `test-util`). Keys are ECDSA P-256, generated in memory; nothing touches the disk.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{
    HeaderNames, PeerCertificates, RequestHeaderConfig, UserInfo, WriteError, write_identity,
};

/// Why a test certificate or request could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestPkiError {
    /// rcgen failed to generate a key or sign a certificate.
    #[error("test PKI: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The user could not be written into headers.
    #[error("test request: {0}")]
    Identity(#[from] WriteError),
}

/// What kind of client certificate to mint, including the bad ones an authenticator must refuse.
///
/// ```
/// use front_proxy::test_util::ClientCertKind;
///
/// assert_eq!(ClientCertKind::default(), ClientCertKind::Valid);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ClientCertKind {
    /// clientAuth EKU, valid from 1975 to 4096.
    #[default]
    Valid,
    /// EKU serverAuth only: refused with `MissingClientAuthUsage`.
    NoClientAuthUsage,
    /// No EKU extension at all: accepted, as Go accepts it.
    NoExtendedKeyUsage,
    /// Valid during the year 2000 only: refused with `Expired`.
    Expired,
    /// Valid from the year 3000: refused with `NotYetValid`.
    NotYetValid,
}

/// A certificate authority for tests: a root, or an intermediate under another `TestCa`.
///
/// ```
/// use front_proxy::test_util::TestCa;
///
/// let root = TestCa::new("front-proxy-ca")?;
/// assert!(root.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
/// let intermediate = root.intermediate("front-proxy-intermediate")?;
/// let leaf = intermediate.client_cert("front-proxy-client")?;
/// assert_eq!(leaf.chain.len(), 2); // leaf, intermediate
/// # Ok::<(), front_proxy::test_util::TestPkiError>(())
/// ```
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
    /// This CA's certificate followed by its parents' up to, not including, the root (empty for
    /// a root), as DER and as concatenated PEM.
    chain_to_root: Vec<CertificateDer<'static>>,
    chain_to_root_pem: String,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("chain_to_root", &self.chain_to_root.len())
            .finish()
    }
}

fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

fn leaf_params(common_name: &str, dns_names: &[&str]) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(
        dns_names
            .iter()
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>(),
    )?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

impl TestCa {
    /// A new self-signed root CA with this CN.
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("front-proxy-ca")?;
    /// assert!(!ca.ca_der().is_empty());
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn new(common_name: &str) -> Result<Self, TestPkiError> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name)?;
        let cert = params.self_signed(&key)?;
        Ok(TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            chain_to_root: Vec::new(),
            chain_to_root_pem: String::new(),
        })
    }

    /// A new intermediate CA signed by this one. Certificates it issues carry it in their chain.
    ///
    /// ```
    /// let root = front_proxy::test_util::TestCa::new("root")?;
    /// let mid = root.intermediate("mid")?;
    /// assert_eq!(mid.client_cert("c")?.chain.len(), 2);
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn intermediate(&self, common_name: &str) -> Result<TestCa, TestPkiError> {
        let key = KeyPair::generate()?;
        let params = ca_params(common_name)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain_to_root = vec![cert.der().clone()];
        chain_to_root.extend(self.chain_to_root.iter().cloned());
        let pem = cert.pem();
        Ok(TestCa {
            chain_to_root_pem: format!("{pem}{}", self.chain_to_root_pem),
            pem,
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            chain_to_root,
        })
    }

    /// This CA's certificate as PEM: what `--requestheader-client-ca-file` would hold.
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("ca")?;
    /// assert!(ca.ca_pem().contains("END CERTIFICATE"));
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn ca_pem(&self) -> &str {
        &self.pem
    }

    /// This CA's certificate as DER (e.g. for a rustls `RootCertStore`).
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("ca")?;
    /// let mut roots = Vec::new();
    /// roots.push(ca.ca_der());
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// A [`RequestHeaderConfig`] trusting this CA, with these allowed names and the default header
    /// names.
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("ca")?;
    /// let config = ca.request_header_config(&["front-proxy-client"]);
    /// assert_eq!(config.allowed_names, ["front-proxy-client"]);
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn request_header_config(&self, allowed_names: &[&str]) -> RequestHeaderConfig {
        RequestHeaderConfig {
            client_ca_pem: self.pem.clone().into_bytes(),
            allowed_names: allowed_names.iter().map(|s| (*s).to_owned()).collect(),
            headers: HeaderNames::default(),
        }
    }

    /// A valid client certificate (clientAuth EKU) with this CN.
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("ca")?;
    /// let cert = ca.client_cert("front-proxy-client")?;
    /// assert!(cert.key_pem.contains("PRIVATE KEY"));
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn client_cert(&self, common_name: &str) -> Result<TestCert, TestPkiError> {
        self.client_cert_with(common_name, ClientCertKind::Valid)
    }

    /// A client certificate of the given kind with this CN.
    ///
    /// ```
    /// use front_proxy::test_util::{ClientCertKind, TestCa};
    ///
    /// let ca = TestCa::new("ca")?;
    /// let expired = ca.client_cert_with("front-proxy-client", ClientCertKind::Expired)?;
    /// assert_eq!(expired.chain.len(), 1);
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn client_cert_with(
        &self,
        common_name: &str,
        kind: ClientCertKind,
    ) -> Result<TestCert, TestPkiError> {
        let mut params = leaf_params(common_name, &[])?;
        params.extended_key_usages = match kind {
            ClientCertKind::NoClientAuthUsage => vec![ExtendedKeyUsagePurpose::ServerAuth],
            ClientCertKind::NoExtendedKeyUsage => vec![],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        match kind {
            ClientCertKind::Expired => {
                params.not_before = date_time_ymd(2000, 1, 1);
                params.not_after = date_time_ymd(2001, 1, 1);
            }
            ClientCertKind::NotYetValid => {
                params.not_before = date_time_ymd(3000, 1, 1);
                params.not_after = date_time_ymd(3001, 1, 1);
            }
            _ => {}
        }
        self.issue(params)
    }

    /// A serving certificate (serverAuth EKU) for these DNS names or IP addresses, e.g.
    /// `["metrics.kube-system.svc", "127.0.0.1"]`.
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("ca")?;
    /// let serving = ca.serving_cert(&["localhost", "127.0.0.1"])?;
    /// assert!(serving.chain_pem().contains("BEGIN CERTIFICATE"));
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn serving_cert(&self, names: &[&str]) -> Result<TestCert, TestPkiError> {
        let cn = names.first().copied().unwrap_or("server");
        let mut params = leaf_params(cn, names)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    fn issue(&self, params: CertificateParams) -> Result<TestCert, TestPkiError> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.chain_to_root.iter().cloned());
        Ok(TestCert {
            chain,
            chain_pem: format!("{}{}", cert.pem(), self.chain_to_root_pem),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }
}

/// A certificate with its chain (leaf first, up to but not including the root) and private key.
///
/// ```
/// use front_proxy::test_util::TestCa;
///
/// let ca = TestCa::new("ca")?;
/// let cert = ca.client_cert("front-proxy-client")?;
/// let peer = cert.peer_certificates();
/// assert_eq!(peer.0.len(), cert.chain.len());
/// # Ok::<(), front_proxy::test_util::TestPkiError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TestCert {
    /// Leaf first, then intermediates.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    chain_pem: String,
    key_der: Vec<u8>,
}

impl TestCert {
    /// The chain as concatenated PEM (what `--proxy-client-cert-file` would hold).
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("ca")?;
    /// let mid = ca.intermediate("mid")?;
    /// let cert = mid.client_cert("c")?;
    /// assert_eq!(cert.chain_pem().matches("BEGIN CERTIFICATE").count(), 2);
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// The private key as DER, for a rustls config.
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("ca")?;
    /// let key = ca.client_cert("c")?.key_der();
    /// assert!(matches!(key, rustls_pki_types::PrivateKeyDer::Pkcs8(_)));
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The chain as a server would put it into request extensions.
    ///
    /// ```
    /// let ca = front_proxy::test_util::TestCa::new("ca")?;
    /// assert_eq!(ca.client_cert("c")?.peer_certificates().0.len(), 1);
    /// # Ok::<(), front_proxy::test_util::TestPkiError>(())
    /// ```
    pub fn peer_certificates(&self) -> PeerCertificates {
        PeerCertificates(self.chain.clone().into())
    }

    /// The request as an extension server receives it from a proxy using this certificate:
    /// `user` written into the identity headers with the default names (replacing any already
    /// there), and [`PeerCertificates`] in the extensions.
    ///
    /// ```
    /// use front_proxy::{test_util::TestCa, PeerCertificates, UserInfo};
    ///
    /// let ca = TestCa::new("ca")?;
    /// let request = ca
    ///     .client_cert("front-proxy-client")?
    ///     .proxied_request(http::Request::get("/apis/metrics.k8s.io/v1beta1").body(())?, &UserInfo::new("alice"))?;
    /// assert_eq!(request.headers()["x-remote-user"], "alice");
    /// assert!(request.extensions().get::<PeerCertificates>().is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn proxied_request<B>(
        &self,
        mut request: http::Request<B>,
        user: &UserInfo,
    ) -> Result<http::Request<B>, TestPkiError> {
        write_identity(request.headers_mut(), user, &HeaderNames::default())?;
        request.extensions_mut().insert(self.peer_certificates());
        Ok(request)
    }
}
