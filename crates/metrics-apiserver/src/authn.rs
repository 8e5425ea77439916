//! Who is calling: upstream's union authenticator for a delegating extension server
//! (upstream-behaviour.md §6.2) with request-header first, then plain client certificates, then
//! anonymous when enabled.
//!
//! The union tries every authenticator; the first success wins. If none succeeds and any of
//! them returned an error (a certificate that does not verify, a CN not in the allowed list),
//! the answer is 401: an error never falls back to anonymous.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use front_proxy::reload::ReloadingAuthenticator;
use front_proxy::{HeaderNames, UserInfo, strip_identity};
use http::HeaderMap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::Error;

/// `system:anonymous`, the user of requests without credentials when anonymous auth is on.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of anonymous requests.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// Plain mTLS users (`--client-ca-file`): the CN is the username and each O a group, as
/// k8s.io/apiserver's x509 authenticator maps them.
#[derive(Debug, Clone)]
pub struct ClientCertAuthenticator {
    anchors: Arc<Vec<TrustAnchor<'static>>>,
}

impl ClientCertAuthenticator {
    /// Trusts the certificates of this PEM bundle as roots.
    pub fn from_pem(path: &std::path::Path, pem: &[u8]) -> Result<Self, Error> {
        let err = |reason: String| Error::ClientCa {
            path: path.to_owned(),
            reason,
        };
        let mut anchors = Vec::new();
        for (index, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
            let cert = cert.map_err(|e| err(format!("invalid PEM: {e}")))?;
            let anchor = webpki::anchor_from_trusted_cert(&cert)
                .map_err(|e| err(format!("certificate #{index} is unusable: {e}")))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err(err("no certificates".into()));
        }
        Ok(ClientCertAuthenticator {
            anchors: Arc::new(anchors),
        })
    }

    /// `Ok(None)`: not applicable (no certificate, or one without a CN); `Err`: the chain does
    /// not verify against the client CA for client authentication.
    pub fn authenticate(
        &self,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<Option<UserInfo>, String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Ok(None);
        };
        let end_entity = EndEntityCert::try_from(leaf)
            .map_err(|e| format!("x509: malformed certificate: {e}"))?;
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                UnixTime::since_unix_epoch(since_epoch),
                KeyUsage::client_auth(),
                None,
                None,
            )
            .map_err(|e| match e {
                webpki::Error::UnknownIssuer => {
                    "x509: certificate signed by unknown authority".to_owned()
                }
                other => format!("x509: {other}"),
            })?;
        let (_, cert) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("x509: malformed certificate: {e}"))?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .last()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or_default();
        if name.is_empty() {
            // Upstream's CommonNameUserConversion: no CN, no opinion.
            return Ok(None);
        }
        let groups = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok())
            .map(str::to_owned)
            .collect();
        Ok(Some(UserInfo {
            name: name.to_owned(),
            groups,
            ..UserInfo::default()
        }))
    }
}

/// The union of the configured authenticators.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// `--requestheader-client-ca-file` and friends, hot-reloaded.
    pub request_header: Option<ReloadingAuthenticator>,
    /// `--client-ca-file`.
    pub client_cert: Option<ClientCertAuthenticator>,
    /// `--anonymous-auth`.
    pub anonymous: bool,
}

/// Why a request was not authenticated (logged; the client only sees 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated(pub Vec<String>);

impl std::fmt::Display for Unauthenticated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str("no credentials")
        } else {
            f.write_str(&self.0.join("; "))
        }
    }
}

impl Authenticator {
    /// Authenticates one request from its TLS peer chain and headers. Identity headers are
    /// always removed from `headers`, whoever the caller turns out to be.
    pub fn authenticate(
        &self,
        chain: &[CertificateDer<'_>],
        headers: &mut HeaderMap,
    ) -> Result<UserInfo, Unauthenticated> {
        let mut errors = Vec::new();
        match &self.request_header {
            Some(rh) => match rh.current().authenticate(chain, headers) {
                Ok(mut user) => {
                    user.ensure_authenticated_group();
                    return Ok(user);
                }
                Err(refusal) if refusal.is_not_applicable() => {}
                Err(refusal) => errors.push(refusal.to_string()),
            },
            // Nothing reads identity headers without a request-header CA, but a spoofed
            // X-Remote-User must not reach any handler either.
            None => strip_identity(headers, &HeaderNames::default()),
        }
        if let Some(cc) = &self.client_cert {
            match cc.authenticate(chain, SystemTime::now()) {
                Ok(Some(mut user)) => {
                    user.ensure_authenticated_group();
                    return Ok(user);
                }
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() && self.anonymous {
            return Ok(UserInfo {
                name: ANONYMOUS_USER.into(),
                groups: vec![UNAUTHENTICATED_GROUP.into()],
                ..UserInfo::default()
            });
        }
        Err(Unauthenticated(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use front_proxy::test_util::{ClientCertKind, TestCa};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn union(
        rh: Option<&TestCa>,
        cc: Option<&TestCa>,
        anonymous: bool,
    ) -> Result<Authenticator, Box<dyn std::error::Error>> {
        let request_header = match rh {
            Some(ca) => Some(
                ReloadingAuthenticator::new(front_proxy::Authenticator::new(
                    ca.request_header_config(&["front-proxy-client"]),
                )?)
                .0,
            ),
            None => None,
        };
        let client_cert = match cc {
            Some(ca) => Some(ClientCertAuthenticator::from_pem(
                std::path::Path::new("client-ca.pem"),
                ca.ca_pem().as_bytes(),
            )?),
            None => None,
        };
        Ok(Authenticator {
            request_header,
            client_cert,
            anonymous,
        })
    }

    fn headers_for(user: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            "x-remote-user",
            user.parse()
                .unwrap_or_else(|_| http::HeaderValue::from_static("x")),
        );
        h.append("x-remote-group", http::HeaderValue::from_static("dev"));
        h
    }

    #[test]
    fn request_header_user_gets_system_authenticated() -> TestResult {
        let fp = TestCa::new("front-proxy-ca")?;
        let auth = union(Some(&fp), None, false)?;
        let proxy = fp.client_cert("front-proxy-client")?;
        let mut h = headers_for("alice");
        let user = auth.authenticate(&proxy.chain, &mut h);
        let user = user.map_err(|e| e.to_string())?;
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "system:authenticated"]);
        assert!(h.get("x-remote-user").is_none());
        Ok(())
    }

    #[test]
    fn errors_never_fall_back_to_anonymous() -> TestResult {
        let fp = TestCa::new("front-proxy-ca")?;
        let other = TestCa::new("other-ca")?;
        let auth = union(Some(&fp), None, true)?;
        for cert in [
            other.client_cert("front-proxy-client")?,
            fp.client_cert("not-allowed")?,
            fp.client_cert_with("front-proxy-client", ClientCertKind::Expired)?,
        ] {
            let mut h = headers_for("alice");
            let got = auth.authenticate(&cert.chain, &mut h);
            assert!(got.is_err(), "{got:?}");
            assert!(h.get("x-remote-user").is_none());
        }
        // No credentials at all: anonymous, since it is enabled here.
        let mut h = headers_for("alice");
        let anon = auth.authenticate(&[], &mut h).map_err(|e| e.to_string())?;
        assert_eq!(anon.name, ANONYMOUS_USER);
        assert_eq!(anon.groups, [UNAUTHENTICATED_GROUP]);
        Ok(())
    }

    #[test]
    fn no_credentials_is_401_by_default() -> TestResult {
        let fp = TestCa::new("front-proxy-ca")?;
        let auth = union(Some(&fp), None, false)?;
        let mut h = headers_for("system:admin");
        assert_eq!(auth.authenticate(&[], &mut h), Err(Unauthenticated(vec![])));
        // Valid proxy certificate without a username: not applicable, so also 401.
        let proxy = fp.client_cert("front-proxy-client")?;
        assert!(
            auth.authenticate(&proxy.chain, &mut HeaderMap::new())
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn client_cert_users_pass_even_though_request_header_refuses_them() -> TestResult {
        let fp = TestCa::new("front-proxy-ca")?;
        let clients = TestCa::new("client-ca")?;
        let auth = union(Some(&fp), Some(&clients), false)?;
        let cert = clients.client_cert("bob")?;
        // A spoofed header from a plain client is ignored and removed.
        let mut h = headers_for("system:admin");
        let user = auth
            .authenticate(&cert.chain, &mut h)
            .map_err(|e| e.to_string())?;
        assert_eq!(user.name, "bob");
        assert_eq!(user.groups, ["system:authenticated"]);
        assert!(h.is_empty());
        // A certificate from neither CA: 401 with both reasons.
        let stranger = TestCa::new("stranger")?.client_cert("eve")?;
        let err = auth
            .authenticate(&stranger.chain, &mut HeaderMap::new())
            .err()
            .unwrap_or(Unauthenticated(vec![]));
        assert_eq!(err.0.len(), 2, "{err}");
        Ok(())
    }

    #[test]
    fn spoofed_headers_are_stripped_without_request_header_auth() -> TestResult {
        let auth = union(None, None, true)?;
        let mut h = headers_for("system:admin");
        let user = auth.authenticate(&[], &mut h).map_err(|e| e.to_string())?;
        assert_eq!(user.name, ANONYMOUS_USER);
        assert!(h.is_empty());
        Ok(())
    }

    #[test]
    fn bad_client_ca_bundles_are_errors() {
        let p = std::path::Path::new("ca.pem");
        assert!(ClientCertAuthenticator::from_pem(p, b"").is_err());
        assert!(
            ClientCertAuthenticator::from_pem(
                p,
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            )
            .is_err()
        );
    }
}
