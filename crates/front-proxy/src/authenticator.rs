//! The reader side: verify the front-proxy client certificate, then trust the identity headers
//! (k8s.io/apiserver `headerrequest` + `x509.Verifier`, upstream-behaviour.md §6.2).

use std::fmt;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter, KeyUsage};

use crate::UserInfo;
use crate::config::{ConfigError, RequestHeaderConfig};
use crate::headers::{HeaderNames, read_identity, strip_identity};

/// Why a request was not authenticated by the request-header authenticator.
///
/// [`Refusal::is_not_applicable`] is true for [`Refusal::NoClientCertificate`] and
/// [`Refusal::MissingUsername`]: upstream treats these as "try the next authenticator". All others
/// are errors: answer 401 and never fall back to anonymous (upstream-behaviour.md §6.2, §10.12).
///
/// ```
/// use front_proxy::Refusal;
///
/// assert!(Refusal::MissingUsername.is_not_applicable());
/// assert!(!Refusal::MissingClientAuthUsage.is_not_applicable());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The connection presented no client certificate (not applicable).
    #[error("no client certificate presented")]
    NoClientCertificate,

    /// The leaf certificate is not a parsable X.509 certificate.
    #[error("x509: malformed client certificate: {reason}")]
    MalformedCertificate {
        /// The parser's complaint.
        reason: String,
    },

    /// The chain does not lead to a request-header CA root (or is otherwise invalid, e.g. a bad
    /// signature or an intermediate that may not be used for client authentication).
    #[error("x509: {reason}")]
    UntrustedChain {
        /// What is wrong, e.g. `certificate signed by unknown authority`.
        reason: String,
    },

    /// The leaf's extended key usage does not include client authentication.
    #[error("x509: certificate specifies an incompatible key usage (client auth is required)")]
    MissingClientAuthUsage,

    /// A certificate of the chain has expired.
    #[error("x509: certificate has expired or is not yet valid: current time {} is after {}", Rfc3339(*now), Rfc3339(*not_after))]
    Expired {
        /// The verification time.
        now: SystemTime,
        /// The certificate's notAfter.
        not_after: SystemTime,
    },

    /// A certificate of the chain is not valid yet.
    #[error("x509: certificate has expired or is not yet valid: current time {} is before {}", Rfc3339(*now), Rfc3339(*not_before))]
    NotYetValid {
        /// The verification time.
        now: SystemTime,
        /// The certificate's notBefore.
        not_before: SystemTime,
    },

    /// The leaf's CN is not in the non-empty allowed-names list (upstream's message).
    #[error("x509: subject with cn={cn} is not in the allowed list")]
    NameNotAllowed {
        /// The leaf's subject CN (empty when it has none).
        cn: String,
        /// The allowed names.
        allowed: Vec<String>,
    },

    /// A verified proxy sent no username header value (not applicable).
    #[error("no username in the request headers")]
    MissingUsername,

    /// An identity header's value is not UTF-8.
    #[error("identity header {header} is not valid UTF-8")]
    InvalidHeaderValue {
        /// The header name.
        header: String,
    },
}

impl Refusal {
    /// True when upstream would move on to the next authenticator ("no opinion") rather than fail
    /// the request: no client certificate, or no username header.
    ///
    /// ```
    /// use front_proxy::Refusal;
    ///
    /// assert!(Refusal::NoClientCertificate.is_not_applicable());
    /// let untrusted = Refusal::UntrustedChain { reason: "certificate signed by unknown authority".into() };
    /// assert!(!untrusted.is_not_applicable());
    /// ```
    pub fn is_not_applicable(&self) -> bool {
        matches!(
            self,
            Refusal::NoClientCertificate | Refusal::MissingUsername
        )
    }
}

/// Authenticates proxied requests: a verified front-proxy client certificate, then the identity
/// headers. Cheap to share behind an `Arc`; see `ReloadingAuthenticator` (feature `reload`) for a
/// CA bundle that changes at run time.
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use front_proxy::test_util::TestCa;
/// use front_proxy::{Authenticator, UserInfo};
///
/// let ca = TestCa::new("front-proxy-ca")?;
/// let auth = Authenticator::new(ca.request_header_config(&["front-proxy-client"]))?;
/// let proxy = ca.client_cert("front-proxy-client")?;
///
/// let mut user = UserInfo::new("alice");
/// user.groups = vec!["system:authenticated".into()];
/// let mut request = proxy.proxied_request(http::Request::new(()), &user)?;
/// let chain = proxy.peer_certificates();
/// let got = auth.authenticate(&chain.0, request.headers_mut())?;
/// assert_eq!(got, user);
/// assert!(request.headers().get("x-remote-user").is_none()); // stripped after reading
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Authenticator {
    anchors: Vec<TrustAnchor<'static>>,
    config: RequestHeaderConfig,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("roots", &self.anchors.len())
            .field("allowed_names", &self.config.allowed_names)
            .field("headers", &self.config.headers)
            .finish()
    }
}

impl Authenticator {
    /// Parses the CA bundle into trust anchors. Fails when the bundle is not PEM, holds no
    /// certificate, or holds one webpki cannot use as a root.
    ///
    /// ```
    /// use front_proxy::{Authenticator, ConfigError, HeaderNames, RequestHeaderConfig};
    ///
    /// let config = RequestHeaderConfig {
    ///     client_ca_pem: b"no certificates here".to_vec(),
    ///     allowed_names: vec![],
    ///     headers: HeaderNames::default(),
    /// };
    /// assert!(matches!(Authenticator::new(config), Err(ConfigError::NoCaCertificates)));
    /// ```
    pub fn new(config: RequestHeaderConfig) -> Result<Self, ConfigError> {
        let mut anchors = Vec::new();
        for (index, cert) in CertificateDer::pem_slice_iter(&config.client_ca_pem).enumerate() {
            let cert = cert.map_err(|source| ConfigError::CaPem { source })?;
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|source| ConfigError::CaCertificate { index, source })?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(ConfigError::NoCaCertificates);
        }
        Ok(Authenticator { anchors, config })
    }

    /// Authenticates a request from its verified TLS peer chain (leaf first, as presented) and its
    /// headers, at the current time. See [`Authenticator::authenticate_at`].
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::{test_util::TestCa, Authenticator, Refusal};
    ///
    /// let auth = Authenticator::new(TestCa::new("front-proxy-ca")?.request_header_config(&[]))?;
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-remote-user", "mallory".parse()?);
    /// // No client certificate: not applicable, and the spoofed header is gone.
    /// assert_eq!(auth.authenticate(&[], &mut headers), Err(Refusal::NoClientCertificate));
    /// assert!(headers.is_empty());
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authenticate(
        &self,
        peer_chain: &[CertificateDer<'_>],
        headers: &mut HeaderMap,
    ) -> Result<UserInfo, Refusal> {
        self.authenticate_at(peer_chain, headers, SystemTime::now())
    }

    /// Authenticates at a given time (for tests and replay):
    ///
    /// 1. no certificate → [`Refusal::NoClientCertificate`];
    /// 2. the leaf must chain to the request-header CA roots only (intermediates are taken from the
    ///    presented chain), be valid at `now`, and allow client authentication (a leaf without an
    ///    EKU extension, or with anyExtendedKeyUsage, is accepted, as Go does);
    /// 3. a non-empty allowed-names list must contain the leaf's CN;
    /// 4. the user is read from the headers (first non-empty username; no username →
    ///    [`Refusal::MissingUsername`]); extra keys are decoded by [`crate::unescape_extra_key`].
    ///
    /// Whatever the outcome, every identity header is removed from `headers` before returning
    /// ([`crate::strip_identity`] with this authenticator's names), so nothing downstream can read
    /// an unverified identity. Unlike upstream's union authenticator, `system:authenticated` is not
    /// added here.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::time::{Duration, SystemTime};
    /// use front_proxy::test_util::{ClientCertKind, TestCa};
    /// use front_proxy::{Authenticator, Refusal, UserInfo};
    ///
    /// let ca = TestCa::new("front-proxy-ca")?;
    /// let auth = Authenticator::new(ca.request_header_config(&[]))?;
    /// let expired = ca.client_cert_with("front-proxy-client", ClientCertKind::Expired)?;
    /// let mut request = expired.proxied_request(http::Request::new(()), &UserInfo::new("alice"))?;
    /// let refusal = auth
    ///     .authenticate_at(&expired.chain, request.headers_mut(), SystemTime::now())
    ///     .unwrap_err();
    /// assert!(matches!(refusal, Refusal::Expired { .. }));
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn authenticate_at(
        &self,
        peer_chain: &[CertificateDer<'_>],
        headers: &mut HeaderMap,
        now: SystemTime,
    ) -> Result<UserInfo, Refusal> {
        let result = self.authenticate_inner(peer_chain, headers, now);
        strip_identity(headers, &self.config.headers);
        result
    }

    fn authenticate_inner(
        &self,
        peer_chain: &[CertificateDer<'_>],
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Result<UserInfo, Refusal> {
        let Some((leaf, intermediates)) = peer_chain.split_first() else {
            return Err(Refusal::NoClientCertificate);
        };
        self.verify_chain(leaf, intermediates, now)?;
        if !self.config.allowed_names.is_empty() {
            let cn = common_name(leaf);
            if !self.config.allowed_names.contains(&cn) {
                return Err(Refusal::NameNotAllowed {
                    cn,
                    allowed: self.config.allowed_names.clone(),
                });
            }
        }
        match read_identity(headers, &self.config.headers) {
            Ok(Some(user)) => Ok(user),
            Ok(None) => Err(Refusal::MissingUsername),
            Err(header) => Err(Refusal::InvalidHeaderValue {
                header: header.to_string(),
            }),
        }
    }

    fn verify_chain(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), Refusal> {
        let end_entity =
            EndEntityCert::try_from(leaf).map_err(|e| Refusal::MalformedCertificate {
                reason: e.to_string(),
            })?;
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        let time = UnixTime::since_unix_epoch(since_epoch);
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                time,
                ClientAuthOrAny,
                None,
                None,
            )
            .map(|_| ())
            .map_err(|err| classify(err, leaf, now))
    }

    /// The header names this authenticator reads and strips.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::test_util::TestCa;
    /// use front_proxy::{Authenticator, HeaderNames};
    ///
    /// let auth = Authenticator::new(TestCa::new("ca")?.request_header_config(&[]))?;
    /// assert_eq!(auth.headers(), &HeaderNames::default());
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn headers(&self) -> &HeaderNames {
        &self.config.headers
    }

    /// The configuration this authenticator was built from.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::test_util::TestCa;
    /// use front_proxy::Authenticator;
    ///
    /// let auth = Authenticator::new(TestCa::new("ca")?.request_header_config(&["front-proxy-client"]))?;
    /// assert_eq!(auth.config().allowed_names, ["front-proxy-client"]);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config(&self) -> &RequestHeaderConfig {
        &self.config
    }
}

/// Go's `x509` accepts a certificate for client auth when its EKU list is absent, contains
/// clientAuth, or contains anyExtendedKeyUsage; webpki's `KeyUsage::client_auth()` lacks the last.
struct ClientAuthOrAny;

/// id-kp-clientAuth, 1.3.6.1.5.5.7.3.2, DER contents.
const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// anyExtendedKeyUsage, 2.5.29.37.0, DER contents.
const OID_ANY_EKU: &[u8] = &[0x55, 0x1d, 0x25, 0x00];

impl ExtendedKeyUsageValidator for ClientAuthOrAny {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let client_auth = KeyPurposeId::new(OID_CLIENT_AUTH);
        let any = KeyPurposeId::new(OID_ANY_EKU);
        let mut present = Vec::new();
        for id in iter {
            let id = id?;
            if id == client_auth || id == any {
                return Ok(());
            }
            present.push(id.to_decoded_oid());
        }
        if present.is_empty() {
            return Ok(());
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(
            webpki::RequiredEkuNotFoundContext {
                required: KeyUsage::client_auth(),
                present,
            },
        ))
    }
}

/// Turns webpki's error into a typed refusal. An EKU failure is the leaf's only when the leaf
/// itself lacks client auth; otherwise an intermediate forbids it, which is a chain problem.
fn classify(err: webpki::Error, leaf: &CertificateDer<'_>, now: SystemTime) -> Refusal {
    let at = |t: UnixTime| SystemTime::UNIX_EPOCH + Duration::from_secs(t.as_secs());
    match err {
        webpki::Error::CertExpired { not_after, .. } => Refusal::Expired {
            now,
            not_after: at(not_after),
        },
        webpki::Error::CertNotValidYet { not_before, .. } => Refusal::NotYetValid {
            now,
            not_before: at(not_before),
        },
        webpki::Error::RequiredEkuNotFoundContext(_) | webpki::Error::EmptyEkuExtension
            if leaf_lacks_client_auth(leaf) =>
        {
            Refusal::MissingClientAuthUsage
        }
        webpki::Error::RequiredEkuNotFoundContext(_) | webpki::Error::EmptyEkuExtension => {
            Refusal::UntrustedChain {
                reason: "an intermediate certificate does not allow client authentication".into(),
            }
        }
        webpki::Error::UnknownIssuer => Refusal::UntrustedChain {
            reason: "certificate signed by unknown authority".into(),
        },
        other => Refusal::UntrustedChain {
            reason: other.to_string(),
        },
    }
}

fn leaf_lacks_client_auth(leaf: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return false;
    };
    match cert.extended_key_usage() {
        Ok(Some(eku)) => !(eku.value.client_auth || eku.value.any),
        Ok(None) => false,
        // A duplicated or undecodable EKU extension cannot grant client auth.
        Err(_) => true,
    }
}

/// The subject CN as Go's `pkix.Name.CommonName` sees it (the last CN attribute); empty when
/// absent or not a string type.
fn common_name(leaf: &CertificateDer<'_>) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return String::new();
    };
    cert.subject()
        .iter_common_name()
        .last()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Formats a time as RFC 3339 UTC (Go prints times in refusal messages).
struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = match self.0.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
        };
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let at = |s: u64| Rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(978_307_199), "2000-12-31T23:59:59Z");
        assert_eq!(at(32_503_680_000), "3000-01-01T00:00:00Z");
    }

    #[test]
    fn not_applicable_is_exactly_two_variants() {
        let errors = [
            Refusal::MalformedCertificate {
                reason: String::new(),
            },
            Refusal::UntrustedChain {
                reason: String::new(),
            },
            Refusal::MissingClientAuthUsage,
            Refusal::Expired {
                now: SystemTime::UNIX_EPOCH,
                not_after: SystemTime::UNIX_EPOCH,
            },
            Refusal::NotYetValid {
                now: SystemTime::UNIX_EPOCH,
                not_before: SystemTime::UNIX_EPOCH,
            },
            Refusal::NameNotAllowed {
                cn: String::new(),
                allowed: vec![],
            },
            Refusal::InvalidHeaderValue {
                header: String::new(),
            },
        ];
        assert!(errors.iter().all(|r| !r.is_not_applicable()));
        assert!(Refusal::NoClientCertificate.is_not_applicable());
        assert!(Refusal::MissingUsername.is_not_applicable());
    }

    #[test]
    fn name_not_allowed_message_is_upstreams() {
        let r = Refusal::NameNotAllowed {
            cn: "system:kube-controller-manager".into(),
            allowed: vec![],
        };
        assert_eq!(
            r.to_string(),
            "x509: subject with cn=system:kube-controller-manager is not in the allowed list"
        );
    }

    #[test]
    fn garbage_ca_bundles_are_rejected() {
        let config = |pem: &[u8]| RequestHeaderConfig {
            client_ca_pem: pem.to_vec(),
            allowed_names: vec![],
            headers: HeaderNames::default(),
        };
        assert!(matches!(
            Authenticator::new(config(b"")),
            Err(ConfigError::NoCaCertificates)
        ));
        let bad_base64 = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Authenticator::new(config(bad_base64)),
            Err(ConfigError::CaPem { .. })
        ));
        let not_der = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            Authenticator::new(config(not_der)),
            Err(ConfigError::CaCertificate { index: 0, .. })
        ));
    }
}
