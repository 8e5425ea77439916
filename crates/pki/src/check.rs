//! Checks of a front-proxy (requestheader) setup, each problem named: the mistakes people make
//! by hand with cfssl (user-needs.md §1b, §3): a client certificate that does not chain to the
//! requestheader CA, a CN outside `--requestheader-allowed-names`, no client-auth EKU, expiry,
//! a key that belongs to another certificate, and the front-proxy CA reused as the cluster's
//! client CA.

use std::fmt;
use std::time::{Duration, SystemTime};

use crate::error::{Error, Result};
use crate::key::PrivateKey;
use crate::x509::CertView;

/// By default a certificate expiring within 30 days is reported.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// Which certificate a validity problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The proxy client certificate (`--proxy-client-cert-file`).
    ClientCert,
    /// The front-proxy CA (`--requestheader-client-ca-file`).
    FrontProxyCa,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::ClientCert => "the proxy client certificate",
            Role::FrontProxyCa => "the front-proxy CA",
        })
    }
}

/// One problem found by [`check`]. [`Problem::name`] is a stable identifier; `Display` is a
/// one-line explanation with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The client certificate does not chain to any certificate of the front-proxy CA bundle.
    ChainDoesNotVerify {
        /// Why, for the closest candidate.
        reason: String,
    },
    /// The client certificate's CN is not in `--requestheader-allowed-names`.
    CommonNameNotAllowed {
        /// The CN found (empty if none).
        common_name: String,
        /// The allowed names.
        allowed: Vec<String>,
    },
    /// The client certificate has an ExtendedKeyUsage extension without `client auth`, so TLS
    /// client verification rejects it.
    MissingClientAuth {
        /// The EKUs it does have.
        ext_key_usages: Vec<String>,
    },
    /// `notAfter` has passed.
    Expired {
        /// Which certificate.
        role: Role,
        /// `notAfter`, RFC 3339.
        not_after: String,
    },
    /// `notBefore` is still in the future.
    NotYetValid {
        /// Which certificate.
        role: Role,
        /// `notBefore`, RFC 3339.
        not_before: String,
    },
    /// `notAfter` is within the warning window.
    ExpiresSoon {
        /// Which certificate.
        role: Role,
        /// `notAfter`, RFC 3339.
        not_after: String,
        /// Whole days left.
        days_left: i64,
    },
    /// The private key does not belong to the client certificate.
    KeyMismatch,
    /// A certificate of the front-proxy CA bundle is also in the client CA bundle
    /// (`--client-ca-file`): every client certificate of the cluster is then checked against
    /// `--requestheader-allowed-names` (log floods), and with empty allowed names any of them can
    /// assert any identity.
    CaIsAlsoClientCa {
        /// The shared CA's subject CN.
        common_name: String,
    },
}

impl Problem {
    /// The stable name, e.g. `chain-does-not-verify`.
    pub fn name(&self) -> &'static str {
        match self {
            Problem::ChainDoesNotVerify { .. } => "chain-does-not-verify",
            Problem::CommonNameNotAllowed { .. } => "cn-not-allowed",
            Problem::MissingClientAuth { .. } => "missing-client-auth",
            Problem::Expired {
                role: Role::ClientCert,
                ..
            } => "expired",
            Problem::Expired { .. } => "ca-expired",
            Problem::NotYetValid {
                role: Role::ClientCert,
                ..
            } => "not-yet-valid",
            Problem::NotYetValid { .. } => "ca-not-yet-valid",
            Problem::ExpiresSoon {
                role: Role::ClientCert,
                ..
            } => "expires-soon",
            Problem::ExpiresSoon { .. } => "ca-expires-soon",
            Problem::KeyMismatch => "key-mismatch",
            Problem::CaIsAlsoClientCa { .. } => "ca-is-also-client-ca",
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ChainDoesNotVerify { reason } => write!(
                f,
                "the proxy client certificate does not chain to the front-proxy CA: {reason}; sign it with the CA passed as --requestheader-client-ca-file"
            ),
            Problem::CommonNameNotAllowed {
                common_name,
                allowed,
            } => write!(
                f,
                "CN {common_name:?} is not in --requestheader-allowed-names ({}); extension servers will reject proxied requests",
                allowed.join(",")
            ),
            Problem::MissingClientAuth { ext_key_usages } => write!(
                f,
                "the proxy client certificate lacks the client auth extended key usage (it has: {}); add \"client auth\" to the signing profile",
                if ext_key_usages.is_empty() {
                    "none".to_string()
                } else {
                    ext_key_usages.join(", ")
                }
            ),
            Problem::Expired { role, not_after } => {
                write!(f, "{role} expired at {not_after}")
            }
            Problem::NotYetValid { role, not_before } => write!(
                f,
                "{role} is not valid before {not_before} (clock skew, or notBefore set in the future)"
            ),
            Problem::ExpiresSoon {
                role,
                not_after,
                days_left,
            } => write!(
                f,
                "{role} expires at {not_after} ({days_left} days left); renew it"
            ),
            Problem::KeyMismatch => write!(
                f,
                "the proxy client key does not belong to the proxy client certificate (--proxy-client-key-file vs --proxy-client-cert-file)"
            ),
            Problem::CaIsAlsoClientCa { common_name } => write!(
                f,
                "CA {common_name:?} is both the front-proxy CA and the client CA (--client-ca-file); use a dedicated front-proxy CA"
            ),
        }
    }
}

/// The inputs of [`check`]: file contents as kube-apiserver would be given them.
#[derive(Debug, Clone)]
pub struct CheckInput<'a> {
    /// `--requestheader-client-ca-file`: the front-proxy CA bundle (PEM).
    pub front_proxy_ca_pem: &'a str,
    /// `--proxy-client-cert-file`: the client certificate, optionally followed by
    /// intermediates (PEM).
    pub client_cert_pem: &'a str,
    /// `--proxy-client-key-file` (PEM), if it should be checked.
    pub client_key_pem: Option<&'a str>,
    /// `--requestheader-allowed-names`. Empty means any CN (kube-apiserver's rule), and the
    /// CN check is skipped.
    pub allowed_names: &'a [String],
    /// `--client-ca-file` (PEM), if the CA-reuse check should run.
    pub client_ca_pem: Option<&'a str>,
    /// Report certificates expiring within this window. By default 30 days.
    pub expiry_warning: Duration,
    /// The time to check at. By default now.
    pub now: SystemTime,
}

impl<'a> CheckInput<'a> {
    /// Inputs with the defaults: no key, no allowed names, no client CA, 30 days, now.
    pub fn new(front_proxy_ca_pem: &'a str, client_cert_pem: &'a str) -> Self {
        CheckInput {
            front_proxy_ca_pem,
            client_cert_pem,
            client_key_pem: None,
            allowed_names: &[],
            client_ca_pem: None,
            expiry_warning: DEFAULT_EXPIRY_WARNING,
            now: SystemTime::now(),
        }
    }
}

/// Checks a front-proxy setup and returns every problem found (empty when all is well).
/// Inputs that cannot be read at all (not PEM, not a certificate, not a key) are an `Err`.
///
/// ```
/// use pki::check::{check, CheckInput};
/// use pki::{CertificateAuthority, CertRequest, KeyAlgorithm};
///
/// let ca = CertificateAuthority::new_root_with(&CertRequest::ca("front-proxy-ca").key(KeyAlgorithm::EcdsaP256))?;
/// let client = ca.issue(&CertRequest::client("front-proxy-client", &[] as &[&str]).key(KeyAlgorithm::EcdsaP256))?;
/// let allowed = vec!["aggregator".to_string()];
/// let mut input = CheckInput::new(ca.cert_pem(), &client.cert_pem);
/// input.client_key_pem = Some(&client.key_pem);
/// input.allowed_names = &allowed;
/// let problems = check(&input)?;
/// assert_eq!(problems.iter().map(|p| p.name()).collect::<Vec<_>>(), ["cn-not-allowed"]);
/// # Ok::<(), pki::Error>(())
/// ```
pub fn check(input: &CheckInput<'_>) -> Result<Vec<Problem>> {
    let ca_bundle = CertView::all_from_pem("front-proxy CA", input.front_proxy_ca_pem)?;
    let client_chain = CertView::all_from_pem("proxy client certificate", input.client_cert_pem)?;
    let Some(leaf) = client_chain.first() else {
        return Err(Error::cert("proxy client certificate", "no certificate"));
    };
    let now = jiff::Timestamp::try_from(input.now)
        .map(|t| t.as_second())
        .unwrap_or(0);
    let warn = i64::try_from(input.expiry_warning.as_secs()).unwrap_or(i64::MAX);
    let mut problems = Vec::new();

    let anchor = match verify_chain(leaf, &client_chain[1..], &ca_bundle) {
        Ok(anchor) => Some(anchor),
        Err(reason) => {
            problems.push(Problem::ChainDoesNotVerify { reason });
            None
        }
    };

    if !input.allowed_names.is_empty() {
        let cn = leaf.common_name().unwrap_or_default();
        // kube-apiserver compares exactly and case-sensitively.
        if !input.allowed_names.iter().any(|n| n == cn) {
            problems.push(Problem::CommonNameNotAllowed {
                common_name: cn.to_string(),
                allowed: input.allowed_names.to_vec(),
            });
        }
    }

    if let Some(ekus) = &leaf.ext_key_usage
        && !ekus.iter().any(|e| e == "client auth" || e == "any")
    {
        problems.push(Problem::MissingClientAuth {
            ext_key_usages: ekus.clone(),
        });
    }

    validity(leaf, Role::ClientCert, now, warn, &mut problems);
    // The CA that anchors the chain, or every CA when the chain is broken.
    let cas: Vec<&CertView> = match anchor {
        Some(i) => ca_bundle.get(i).into_iter().collect(),
        None => ca_bundle.iter().collect(),
    };
    for ca in cas {
        validity(ca, Role::FrontProxyCa, now, warn, &mut problems);
    }

    if let Some(key_pem) = input.client_key_pem {
        let key = PrivateKey::from_pem("proxy client key", key_pem)?;
        if key.public_key_bits() != leaf.public_key_bits.as_slice() {
            problems.push(Problem::KeyMismatch);
        }
    }

    if let Some(client_ca_pem) = input.client_ca_pem {
        let client_cas = CertView::all_from_pem("client CA", client_ca_pem)?;
        for fp in &ca_bundle {
            let shared = client_cas.iter().any(|c| {
                c.der == fp.der
                    || (c.subject_raw == fp.subject_raw && c.public_key_bits == fp.public_key_bits)
            });
            if shared {
                problems.push(Problem::CaIsAlsoClientCa {
                    common_name: fp.common_name().unwrap_or_default().to_string(),
                });
            }
        }
    }
    Ok(problems)
}

fn validity(cert: &CertView, role: Role, now: i64, warn: i64, problems: &mut Vec<Problem>) {
    let fmt = |t: i64| {
        jiff::Timestamp::from_second(t)
            .map(|t| t.to_string())
            .unwrap_or_else(|_| t.to_string())
    };
    if now > cert.not_after {
        problems.push(Problem::Expired {
            role,
            not_after: fmt(cert.not_after),
        });
    } else if now < cert.not_before {
        problems.push(Problem::NotYetValid {
            role,
            not_before: fmt(cert.not_before),
        });
    } else if cert.not_after - now < warn {
        problems.push(Problem::ExpiresSoon {
            role,
            not_after: fmt(cert.not_after),
            days_left: (cert.not_after - now) / 86_400,
        });
    }
}

/// Finds a path from `leaf` through `intermediates` to a certificate of `roots`; returns the
/// index of the anchoring root, or the reason for the closest failure.
fn verify_chain(
    leaf: &CertView,
    intermediates: &[CertView],
    roots: &[CertView],
) -> std::result::Result<usize, String> {
    fn walk(
        cert: &CertView,
        intermediates: &[CertView],
        roots: &[CertView],
        depth: usize,
        last_err: &mut Option<String>,
    ) -> Option<usize> {
        for (i, root) in roots.iter().enumerate() {
            if cert.issuer_raw != root.subject_raw {
                continue;
            }
            if !root.can_sign_certificates() {
                *last_err = Some(format!(
                    "{:?} in the CA bundle is not a CA (BasicConstraints/KeyUsage)",
                    root.common_name().unwrap_or_default()
                ));
                continue;
            }
            match cert.is_signed_by(root) {
                Ok(()) => return Some(i),
                Err(e) => *last_err = Some(e),
            }
        }
        if depth >= 8 {
            return None;
        }
        for inter in intermediates {
            if cert.issuer_raw == inter.subject_raw
                && inter.der != cert.der
                && inter.can_sign_certificates()
                && cert.is_signed_by(inter).is_ok()
                && let Some(i) = walk(inter, intermediates, roots, depth + 1, last_err)
            {
                return Some(i);
            }
        }
        None
    }
    let mut last_err = None;
    walk(leaf, intermediates, roots, 0, &mut last_err).ok_or_else(|| {
        last_err.unwrap_or_else(|| {
            let issuer = leaf
                .issuer
                .iter()
                .find(|a| a.kind == "CN")
                .map(|a| a.value.clone())
                .unwrap_or_default();
            format!("it was issued by {issuer:?}, which is not in the CA bundle")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertRequest, CertificateAuthority, KeyAlgorithm, Usage};

    fn ca(cn: &str) -> CertificateAuthority {
        CertificateAuthority::new_root_with(&CertRequest::ca(cn).key(KeyAlgorithm::EcdsaP256))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn client(ca: &CertificateAuthority, req: CertRequest) -> crate::Issued {
        ca.issue(&req.key(KeyAlgorithm::EcdsaP256))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn names(p: &[Problem]) -> Vec<&'static str> {
        p.iter().map(Problem::name).collect()
    }

    #[test]
    fn a_good_setup_has_no_problems() {
        let fp = ca("front-proxy-ca");
        let c = client(
            &fp,
            CertRequest::client("front-proxy-client", &[] as &[&str]),
        );
        let allowed = vec!["front-proxy-client".to_string()];
        let other = ca("kubernetes");
        let mut input = CheckInput::new(fp.cert_pem(), &c.cert_pem);
        input.client_key_pem = Some(&c.key_pem);
        input.allowed_names = &allowed;
        input.client_ca_pem = Some(other.cert_pem());
        assert_eq!(
            names(&check(&input).unwrap_or_else(|e| panic!("{e}"))),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn intermediates_in_the_cert_file_are_followed() {
        let root = ca("root");
        let inter = root
            .issue(&CertRequest::ca("inter").key(KeyAlgorithm::EcdsaP256))
            .unwrap_or_else(|e| panic!("{e}"));
        let inter_ca = CertificateAuthority::from_pem(&inter.cert_pem, &inter.key_pem)
            .unwrap_or_else(|e| panic!("{e}"));
        let c = client(
            &inter_ca,
            CertRequest::client("front-proxy-client", &[] as &[&str]),
        );
        let chain = format!("{}{}", c.cert_pem, inter.cert_pem);
        let input = CheckInput::new(root.cert_pem(), &chain);
        assert!(check(&input).unwrap_or_else(|e| panic!("{e}")).is_empty());
        let input = CheckInput::new(root.cert_pem(), &c.cert_pem);
        assert_eq!(
            names(&check(&input).unwrap_or_else(|e| panic!("{e}"))),
            ["chain-does-not-verify"]
        );
    }

    #[test]
    fn a_forged_signature_is_caught() {
        // Same subject as the real CA but another key: names chain, signature does not.
        let real = ca("front-proxy-ca");
        let forged = ca("front-proxy-ca");
        let c = client(
            &forged,
            CertRequest::client("front-proxy-client", &[] as &[&str]),
        );
        let problems =
            check(&CheckInput::new(real.cert_pem(), &c.cert_pem)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&problems), ["chain-does-not-verify"]);
        assert!(
            problems[0]
                .to_string()
                .contains("signature does not verify"),
            "{}",
            problems[0]
        );
    }

    #[test]
    fn server_only_usage_is_missing_client_auth() {
        let fp = ca("fp");
        let c = client(
            &fp,
            CertRequest::client("front-proxy-client", &[] as &[&str]).usages(Usage::SERVER),
        );
        let p =
            check(&CheckInput::new(fp.cert_pem(), &c.cert_pem)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&p), ["missing-client-auth"]);
        assert!(p[0].to_string().contains("server auth"));
    }

    #[test]
    fn ca_validity_is_checked_too() {
        let fp = CertificateAuthority::new_root_with(
            &CertRequest::ca("fp")
                .key(KeyAlgorithm::EcdsaP256)
                .validity(Duration::from_secs(86_400)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let c = client(
            &fp,
            CertRequest::client("x", &[] as &[&str]).validity(Duration::from_secs(3600)),
        );
        let p =
            check(&CheckInput::new(fp.cert_pem(), &c.cert_pem)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(names(&p), ["expires-soon", "ca-expires-soon"]);
    }

    #[test]
    fn unreadable_inputs_are_errors_not_problems() {
        let fp = ca("fp");
        assert!(check(&CheckInput::new("garbage", fp.cert_pem())).is_err());
        let mut input = CheckInput::new(fp.cert_pem(), fp.cert_pem());
        input.client_key_pem = Some("not a key");
        assert!(check(&input).is_err());
    }
}
