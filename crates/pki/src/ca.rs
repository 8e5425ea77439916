//! The library API other crates use: a [`CertificateAuthority`] that makes roots and issues
//! serving and client certificates as PEM strings, with cfssl's defaults.

use std::path::Path;
use std::time::{Duration, SystemTime};

use x509_parser::prelude::*;

use crate::cert::{self, CaConstraint, SubjectAltNames, SubjectKey};
use crate::error::{Error, Result};
use crate::key::{KeyAlgorithm, PrivateKey};
use crate::name::Subject;
use crate::pem;
use crate::usage::Usage;

/// cfssl's default CA lifetime (`initca.CAPolicy`: 43800h, 5 years).
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(43_800 * 3600);
/// cfssl's default certificate lifetime (`config.DefaultConfig`: 8760h, 1 year).
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(8760 * 3600);
/// cfssl's default backdate: `notBefore` is five minutes before "now rounded to the minute", so
/// that clocks slightly behind still accept a fresh certificate.
pub const DEFAULT_BACKDATE: Duration = Duration::from_secs(5 * 60);

/// One issued certificate as PEM strings: what `cfssl gencert` prints as `cert`, `key` and `csr`
/// and `cfssljson -bare` writes to `NAME.pem`, `NAME-key.pem` and `NAME.csr`.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// `CERTIFICATE` block.
    pub cert_pem: String,
    /// `RSA PRIVATE KEY` or `EC PRIVATE KEY` block (cfssl's block types).
    pub key_pem: String,
    /// `CERTIFICATE REQUEST` block for the same key and subject.
    pub csr_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keep private keys out of logs and test failure output.
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// What to issue. Start from [`CertRequest::server`], [`CertRequest::client`] or
/// [`CertRequest::ca`] and override what you need with the builder methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertRequest {
    /// Subject (CN, O, …).
    pub subject: Subject,
    /// cfssl `hosts`: DNS names, IPs, e-mail addresses, URIs. Dropped (except IPs, as cfssl
    /// does) for CA certificates.
    pub hosts: Vec<String>,
    /// Key to generate. By default RSA 2048.
    pub key: KeyAlgorithm,
    /// Key usages and extended key usages. By default those of the constructor used.
    pub usages: Vec<Usage>,
    /// Lifetime from `not_before`. By default 8760h for leaves and 43800h for CAs.
    pub validity: Duration,
    /// Explicit `notBefore`. By default now, rounded to the minute, minus
    /// [`DEFAULT_BACKDATE`].
    pub not_before: Option<SystemTime>,
    /// `Some` for a CA certificate. By default `None` except for [`CertRequest::ca`].
    pub ca: Option<CaConstraint>,
}

impl CertRequest {
    /// A TLS serving certificate for `hosts` (usages `signing`, `key encipherment`,
    /// `server auth`; RSA 2048; one year).
    pub fn server<S: AsRef<str>>(common_name: &str, hosts: &[S]) -> Self {
        CertRequest {
            subject: Subject::new(common_name),
            hosts: hosts.iter().map(|h| h.as_ref().to_string()).collect(),
            key: KeyAlgorithm::default(),
            usages: Usage::SERVER.to_vec(),
            validity: DEFAULT_VALIDITY,
            not_before: None,
            ca: None,
        }
    }

    /// A TLS client certificate: CN is the Kubernetes user name, each organisation a group
    /// (usages `signing`, `key encipherment`, `client auth`; RSA 2048; one year).
    pub fn client<S: AsRef<str>>(common_name: &str, organizations: &[S]) -> Self {
        CertRequest {
            subject: Subject::with_organizations(common_name, organizations),
            hosts: Vec::new(),
            key: KeyAlgorithm::default(),
            usages: Usage::CLIENT.to_vec(),
            validity: DEFAULT_VALIDITY,
            not_before: None,
            ca: None,
        }
    }

    /// A CA certificate like `cfssl gencert -initca` makes (usages `cert sign`, `crl sign`;
    /// RSA 2048; 43800h; no path length limit).
    pub fn ca(common_name: &str) -> Self {
        CertRequest {
            subject: Subject::new(common_name),
            hosts: Vec::new(),
            key: KeyAlgorithm::default(),
            usages: Usage::CA.to_vec(),
            validity: DEFAULT_CA_VALIDITY,
            not_before: None,
            ca: Some(CaConstraint::default()),
        }
    }

    /// Sets the key algorithm.
    pub fn key(mut self, key: KeyAlgorithm) -> Self {
        self.key = key;
        self
    }

    /// Sets the lifetime.
    pub fn validity(mut self, validity: Duration) -> Self {
        self.validity = validity;
        self
    }

    /// Sets the usages.
    pub fn usages(mut self, usages: &[Usage]) -> Self {
        self.usages = usages.to_vec();
        self
    }

    /// Sets `notBefore` explicitly (e.g. in the past, to make an expired certificate in a test).
    pub fn not_before(mut self, not_before: SystemTime) -> Self {
        self.not_before = Some(not_before);
        self
    }

    /// Sets the hosts.
    pub fn hosts<S: AsRef<str>>(mut self, hosts: &[S]) -> Self {
        self.hosts = hosts.iter().map(|h| h.as_ref().to_string()).collect();
        self
    }
}

/// A certificate authority: its certificate and private key.
///
/// ```
/// use pki::{CertificateAuthority, CertRequest, KeyAlgorithm};
///
/// // A root like `cfssl gencert -initca` makes, but with a fast ECDSA key.
/// let ca = CertificateAuthority::new_root_with(
///     &CertRequest::ca("front-proxy-ca").key(KeyAlgorithm::EcdsaP256),
/// )?;
/// let client = ca.issue(&CertRequest::client("front-proxy-client", &[] as &[&str]).key(KeyAlgorithm::EcdsaP256))?;
/// assert!(client.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
/// assert!(client.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
///
/// // Read it back, as a later run would from files.
/// let again = CertificateAuthority::from_pem(ca.cert_pem(), &ca.key_pem())?;
/// let server = again.issue_server("metrics", &["metrics.kube-system.svc", "127.0.0.1"])?;
/// assert!(server.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
/// # Ok::<(), pki::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: Vec<u8>,
    csr_pem: Option<String>,
    key: PrivateKey,
    subject_der: Vec<u8>,
    ski: Option<Vec<u8>>,
    not_after: SystemTime,
    max_path_len: Option<u32>,
}

impl CertificateAuthority {
    /// A self-signed root with cfssl's `-initca` defaults: RSA 2048, 43800h (5 years),
    /// KeyUsage `cert sign` + `crl sign`, BasicConstraints CA:TRUE.
    pub fn new_root(common_name: &str) -> Result<Self> {
        Self::new_root_with(&CertRequest::ca(common_name))
    }

    /// A self-signed root from a request; the request is made a CA request if it is not one.
    pub fn new_root_with(req: &CertRequest) -> Result<Self> {
        let key = PrivateKey::generate(req.key)?;
        Self::new_root_with_key(req, key)
    }

    /// A self-signed root for an existing key (used to renew a root without changing its key).
    pub fn new_root_with_key(req: &CertRequest, key: PrivateKey) -> Result<Self> {
        let ca = req.ca.unwrap_or_default();
        check_subject(req)?;
        let subject_der = req.subject.to_der();
        let mut sans = SubjectAltNames::from_hosts(&req.hosts);
        strip_ca_sans(&mut sans);
        let csr = cert::build_csr(&subject_der, &sans, Some(ca), &key)?;
        let ski = cert::subject_key_id(key.public_key_bits());
        let (not_before, not_after) = validity(req)?;
        let spki = key.spki_der();
        let serial = cert::random_serial()?;
        let der = cert::build_certificate(
            &cert::Template {
                subject_der: &subject_der,
                not_before,
                not_after,
                usages: &req.usages,
                ca: Some(ca),
                sans: &sans,
            },
            &SubjectKey {
                spki_der: &spki,
                bits: key.public_key_bits(),
            },
            // Self-signed: Go sets no AuthorityKeyId when issuer == subject.
            &cert::Signer {
                subject_der: &subject_der,
                ski: None,
                key: &key,
            },
            &serial,
        )?;
        Ok(CertificateAuthority {
            cert_pem: pem::encode("CERTIFICATE", &der),
            cert_der: der,
            csr_pem: Some(pem::encode("CERTIFICATE REQUEST", &csr)),
            key,
            subject_der,
            ski: Some(ski),
            not_after: to_system_time(not_after),
            max_path_len: ca.max_path_len,
        })
    }

    /// Reads a CA from PEM: the first `CERTIFICATE` block of `cert_pem` and the private key in
    /// `key_pem` (PKCS#1, SEC1 or PKCS#8). Fails if the key does not match the certificate or
    /// the certificate says CA:FALSE.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        Self::from_pem_named("CA certificate", cert_pem, "CA key", key_pem)
    }

    /// Reads a CA from files (names appear in errors).
    pub fn from_files(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert = read_to_string(cert_path)?;
        let key = read_to_string(key_path)?;
        Self::from_pem_named(
            &cert_path.display().to_string(),
            &cert,
            &key_path.display().to_string(),
            &key,
        )
    }

    pub(crate) fn from_pem_named(
        cert_what: &str,
        cert_pem: &str,
        key_what: &str,
        key_pem: &str,
    ) -> Result<Self> {
        let der = pem::all_of(cert_what, cert_pem, "CERTIFICATE")?
            .into_iter()
            .next()
            .unwrap_or_default();
        let key = PrivateKey::from_pem(key_what, key_pem)?;
        let (_, x509) =
            X509Certificate::from_der(&der).map_err(|e| Error::cert(cert_what, e.to_string()))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_bits() {
            return Err(Error::KeyMismatch {
                cert: cert_what.to_string(),
                key: key_what.to_string(),
            });
        }
        let mut max_path_len = None;
        if let Ok(Some(bc)) = x509.basic_constraints() {
            if !bc.value.ca {
                return Err(Error::NotACa(cert_what.to_string()));
            }
            max_path_len = bc.value.path_len_constraint;
        }
        let ski = x509
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            });
        let subject_der = x509.subject().as_raw().to_vec();
        let not_after = unix_to_system_time(x509.validity().not_after.timestamp());
        Ok(CertificateAuthority {
            cert_pem: pem::encode("CERTIFICATE", &der),
            cert_der: der,
            csr_pem: None,
            key,
            subject_der,
            ski,
            not_after,
            max_path_len,
        })
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA key as PEM in cfssl's block type.
    pub fn key_pem(&self) -> String {
        self.key.to_pem()
    }

    /// The CA's CSR, for roots made here (cfssl's `-initca` prints one too); `None` when read
    /// from PEM.
    pub fn csr_pem(&self) -> Option<&str> {
        self.csr_pem.as_deref()
    }

    /// When the CA certificate expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The CA's BasicConstraints `pathLenConstraint`, if any.
    pub fn max_path_len(&self) -> Option<u32> {
        self.max_path_len
    }

    /// The CA as an [`Issued`] (the CSR is empty when the CA was read from PEM).
    pub fn to_issued(&self) -> Issued {
        Issued {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key.to_pem(),
            csr_pem: self.csr_pem.clone().unwrap_or_default(),
        }
    }

    /// Issues a serving certificate for `hosts` with [`CertRequest::server`]'s defaults.
    pub fn issue_server<S: AsRef<str>>(&self, common_name: &str, hosts: &[S]) -> Result<Issued> {
        self.issue(&CertRequest::server(common_name, hosts))
    }

    /// Issues a client certificate with [`CertRequest::client`]'s defaults: CN is the user,
    /// organisations are the groups (e.g. `system:masters`).
    pub fn issue_client<S: AsRef<str>>(
        &self,
        common_name: &str,
        organizations: &[S],
    ) -> Result<Issued> {
        self.issue(&CertRequest::client(common_name, organizations))
    }

    /// Generates a key and issues a certificate for it.
    pub fn issue(&self, req: &CertRequest) -> Result<Issued> {
        let key = PrivateKey::generate(req.key)?;
        self.issue_for_key(req, &key)
    }

    /// Issues a certificate for an existing key (`req.key` is ignored), e.g. to renew a
    /// certificate without replacing its key.
    pub fn issue_for_key(&self, req: &CertRequest, key: &PrivateKey) -> Result<Issued> {
        check_subject(req)?;
        let subject_der = req.subject.to_der();
        let mut sans = SubjectAltNames::from_hosts(&req.hosts);
        if req.ca.is_some() {
            strip_ca_sans(&mut sans);
        }
        let csr = cert::build_csr(&subject_der, &sans, req.ca, key)?;
        let (not_before, not_after) = validity(req)?;
        let spki = key.spki_der();
        let serial = cert::random_serial()?;
        let der = cert::build_certificate(
            &cert::Template {
                subject_der: &subject_der,
                not_before,
                not_after,
                usages: &req.usages,
                ca: req.ca,
                sans: &sans,
            },
            &SubjectKey {
                spki_der: &spki,
                bits: key.public_key_bits(),
            },
            &cert::Signer {
                subject_der: &self.subject_der,
                ski: self.ski.as_deref(),
                key: &self.key,
            },
            &serial,
        )?;
        Ok(Issued {
            cert_pem: pem::encode("CERTIFICATE", &der),
            key_pem: key.to_pem(),
            csr_pem: pem::encode("CERTIFICATE REQUEST", &csr),
        })
    }
}

// Shared across test threads and tasks.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<CertificateAuthority>();
    send_sync::<Issued>();
};

fn check_subject(req: &CertRequest) -> Result<()> {
    if req.subject.is_empty() && req.hosts.iter().all(|h| h.trim().is_empty()) {
        return Err(Error::Request(
            "the request has no CN, no names and no hosts; a certificate needs at least one".into(),
        ));
    }
    if req.usages.is_empty() {
        return Err(Error::Request(
            "the request has no usages (e.g. \"signing\", \"key encipherment\", \"client auth\")"
                .into(),
        ));
    }
    Ok(())
}

/// cfssl's `FillTemplate` clears DNS names, e-mails and URIs (not IPs) of CA certificates.
fn strip_ca_sans(sans: &mut SubjectAltNames) {
    sans.dns.clear();
    sans.email.clear();
    sans.uri.clear();
}

/// `notBefore` and `notAfter` as cfssl computes them: now rounded to the minute (Go's
/// `time.Round`, halves up) minus the backdate, plus the validity.
fn validity(req: &CertRequest) -> Result<(jiff::Timestamp, jiff::Timestamp)> {
    let not_before = match req.not_before {
        Some(t) => system_to_timestamp(t)?,
        None => {
            let now = jiff::Timestamp::now().as_second();
            let rounded = (now + 30).div_euclid(60) * 60;
            jiff::Timestamp::from_second(rounded - DEFAULT_BACKDATE.as_secs() as i64)
                .map_err(|e| Error::Request(format!("bad clock: {e}")))?
        }
    };
    let secs = i64::try_from(req.validity.as_secs())
        .map_err(|_| Error::Request("validity too long".into()))?;
    let not_after = jiff::Timestamp::from_second(not_before.as_second().saturating_add(secs))
        .ok()
        .filter(|t| t.to_zoned(jiff::tz::TimeZone::UTC).year() <= 9999)
        .ok_or_else(|| {
            Error::Request(format!(
                "validity of {} ends after the year 9999",
                crate::duration::format_go_duration(req.validity)
            ))
        })?;
    if req.validity.is_zero() {
        return Err(Error::Request("validity must be longer than zero".into()));
    }
    Ok((not_before, not_after))
}

pub(crate) fn system_to_timestamp(t: SystemTime) -> Result<jiff::Timestamp> {
    jiff::Timestamp::try_from(t).map_err(|e| Error::Request(format!("time out of range: {e}")))
}

pub(crate) fn to_system_time(t: jiff::Timestamp) -> SystemTime {
    SystemTime::from(t)
}

/// Seconds since the epoch as `SystemTime`, saturating at the epoch on platforms whose
/// `SystemTime` cannot go that far (certificate times are years 0–9999; Unix handles them all).
pub(crate) fn unix_to_system_time(secs: i64) -> SystemTime {
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.unwrap_or(SystemTime::UNIX_EPOCH)
}

pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast_ca(cn: &str) -> CertificateAuthority {
        match CertificateAuthority::new_root_with(&CertRequest::ca(cn).key(KeyAlgorithm::EcdsaP256))
        {
            Ok(ca) => ca,
            Err(e) => panic!("{e}"),
        }
    }

    fn parse(pem_text: &str) -> Vec<u8> {
        pem::all_of("t", pem_text, "CERTIFICATE")
            .ok()
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default()
    }

    #[test]
    fn root_looks_like_cfssl_initca() {
        let ca = fast_ca("front-proxy-ca");
        let der = parse(ca.cert_pem());
        let (_, x) = X509Certificate::from_der(&der)
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(x.is_ca());
        let ku = x.key_usage().ok().flatten().map(|k| *k.value);
        assert!(ku.is_some_and(|k| k.key_cert_sign() && k.crl_sign() && !k.digital_signature()));
        // 20 random bytes with the top bit cleared; leading zero bytes are not encoded.
        assert!(
            (17..=20).contains(&x.raw_serial().len()),
            "{}",
            x.raw_serial().len()
        );
        let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert_eq!(life, 43_800 * 3600);
        assert_eq!(
            x.validity().not_before.timestamp() % 60,
            0,
            "rounded to the minute"
        );
        assert!(ca.csr_pem().is_some());
    }

    #[test]
    fn client_certs_carry_cn_orgs_and_client_auth() {
        let ca = fast_ca("c");
        let issued = ca
            .issue(
                &CertRequest::client("admin", &["system:masters", "devs"])
                    .key(KeyAlgorithm::EcdsaP256),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let der = parse(&issued.cert_pem);
        let (_, x) = X509Certificate::from_der(&der)
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let cn: Vec<&str> = x
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok())
            .collect();
        let orgs: Vec<&str> = x
            .subject()
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .collect();
        assert_eq!(cn, vec!["admin"]);
        assert_eq!(orgs.len(), 2);
        assert!(orgs.contains(&"system:masters") && orgs.contains(&"devs"));
        let eku = x
            .extended_key_usage()
            .ok()
            .flatten()
            .map(|e| e.value.client_auth);
        assert_eq!(eku, Some(true));
        assert!(!x.is_ca());
        // Issuer is the CA subject byte for byte, and AKI = CA SKI.
        let (_, cax) = X509Certificate::from_der(ca.cert_der())
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(x.issuer().as_raw(), cax.subject().as_raw());
        let aki = x
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        assert_eq!(aki, ca.ski.clone());
    }

    #[test]
    fn from_pem_rejects_a_foreign_key_and_non_cas() {
        let a = fast_ca("a");
        let b = fast_ca("b");
        let err = CertificateAuthority::from_pem(a.cert_pem(), &b.key_pem())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("does not match"), "{err}");
        let leaf = a
            .issue(&CertRequest::server("s", &["s"]).key(KeyAlgorithm::EcdsaP256))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not a CA"), "{err}");
    }

    #[test]
    fn explicit_not_before_and_empty_requests() {
        let ca = fast_ca("c");
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let issued = ca
            .issue(
                &CertRequest::client("old", &[] as &[&str])
                    .key(KeyAlgorithm::EcdsaP256)
                    .not_before(past)
                    .validity(Duration::from_secs(3600)),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let der = parse(&issued.cert_pem);
        let (_, x) = X509Certificate::from_der(&der)
            .map_err(|e| e.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(x.validity().not_before.timestamp(), 1_000_000_000);
        assert_eq!(x.validity().not_after.timestamp(), 1_000_003_600);
        let empty = CertRequest::client("", &[] as &[&str]);
        assert!(ca.issue(&empty).is_err());
        let too_long = CertRequest::client("x", &[] as &[&str])
            .validity(Duration::from_secs(10_000 * 365 * 86_400))
            .key(KeyAlgorithm::EcdsaP256);
        assert!(ca.issue(&too_long).is_err());
    }
}
