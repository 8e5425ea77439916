//! A cfssl-compatible certificate authority for the front-proxy PKI: CSR and config JSON, keys,
//! signing, `-bare` files, inspection and checks. Never reads the environment, never spawns.
//!
//! The certificates match what cfssl writes (see `docs/pki.md` for the few differences): a
//! 20-byte random serial, SubjectKeyId = SHA-1 of the public key, AuthorityKeyId = the CA's
//! SubjectKeyId, BasicConstraints on every certificate, `notBefore` five minutes before now
//! rounded to the minute, SHA-256/384/512 chosen by the signing key, and keys written as
//! `RSA PRIVATE KEY` / `EC PRIVATE KEY`.
//!
//! # For tests and `up`: a CA and certificates as PEM strings
//!
//! ```
//! use pki::{CertificateAuthority, CertRequest, KeyAlgorithm};
//!
//! // RSA 2048 like cfssl guides by default; ECDSA P-256 is faster for tests.
//! let ca = CertificateAuthority::new_root_with(
//!     &CertRequest::ca("test-ca").key(KeyAlgorithm::EcdsaP256),
//! )?;
//! let serving = ca.issue(
//!     &CertRequest::server("metrics", &["metrics.kube-system.svc", "127.0.0.1"])
//!         .key(KeyAlgorithm::EcdsaP256),
//! )?;
//! let admin = ca.issue(
//!     &CertRequest::client("admin", &["system:masters"]).key(KeyAlgorithm::EcdsaP256),
//! )?;
//! // PEM strings: certificate, key (cfssl's block type), CSR.
//! assert!(serving.cert_pem.contains("BEGIN CERTIFICATE"));
//! assert!(admin.key_pem.contains("BEGIN EC PRIVATE KEY"));
//! let ca_cert: &str = ca.cert_pem();
//! # let _ = ca_cert;
//! # Ok::<(), pki::Error>(())
//! ```
//!
//! With the defaults (`ca.issue_server(cn, &hosts)`, `ca.issue_client(cn, &orgs)`,
//! `CertificateAuthority::new_root(cn)`) keys are RSA 2048 and lifetimes are cfssl's: one year
//! for leaves, five years for roots.
//!
//! Override what you need on the [`CertRequest`]: `.key(..)`, `.validity(..)`, `.usages(..)`
//! (cfssl's names through [`Usage::from_cfssl`]), `.hosts(..)`, `.not_before(..)` (e.g. to make
//! an expired certificate for a test). [`CertificateAuthority::from_pem`] reads a CA back (any of
//! PKCS#1, SEC1, PKCS#8 keys).
//!
//! # cfssl's commands as functions
//!
//! [`CsrJson`], [`SigningConfig`], [`gencert_initca`], [`gencert`], [`gencert_json`],
//! [`parse_cfssljson_input`], [`write_bare_files`] and [`certinfo`] are what
//! `kube-aggregator pki gencert | cfssljson -bare` and `certinfo` run.
//!
//! ```
//! let csr = pki::CsrJson::parse("csr.json", r#"{"CN":"front-proxy-client","key":{"algo":"ecdsa","size":256}}"#)?;
//! let config = pki::SigningConfig::parse("ca-config.json", r#"{"signing":{"profiles":{
//!     "kubernetes-front-proxy":{"usages":["signing","key encipherment","client auth"],"expiry":"876000h"}}}}"#)?;
//! let ca_csr = pki::CsrJson::parse("ca-csr.json", r#"{"CN":"front-proxy-ca","key":{"algo":"ecdsa","size":256}}"#)?;
//! let ca = pki::gencert_initca(&ca_csr, None)?;
//! let ca = pki::CertificateAuthority::from_pem(&ca.cert_pem, &ca.key_pem)?;
//! let client = pki::gencert(&ca, &csr, Some(&config), Some("kubernetes-front-proxy"), None)?;
//! assert!(pki::gencert_json(&client).starts_with(r#"{"cert":"-----BEGIN CERTIFICATE-----"#));
//! // A profile that does not exist is named (cfssl would silently use the default one).
//! let err = pki::gencert(&ca, &csr, Some(&config), Some("kubernetes"), None).unwrap_err();
//! assert!(err.to_string().contains("\"kubernetes\" is not defined"));
//! # Ok::<(), pki::Error>(())
//! ```
//!
//! # A whole directory for `kube-aggregator serve`
//!
//! [`init::init_dir`] writes the cluster CA, admin client, aggregator serving certificate,
//! front-proxy bundle and an admin kubeconfig, reusing what is already there.
//!
//! # Checks
//!
//! [`check::check`] lists every named problem of a front-proxy setup (chain, CN, EKU, validity,
//! key pair, CA reuse).

mod ca;
mod cert;
mod cfssl;
pub mod check;
mod der;
mod duration;
mod error;
mod info;
pub mod init;
mod json;
mod key;
mod name;
mod pem;
mod usage;
mod x509;

pub use ca::{
    CertRequest, CertificateAuthority, DEFAULT_BACKDATE, DEFAULT_CA_VALIDITY, DEFAULT_VALIDITY,
    Issued,
};
pub use cert::{CaConstraint, SubjectAltNames};
pub use cfssl::{
    CaConfig, CsrJson, Profile, SigningConfig, gencert, gencert_initca, gencert_json,
    parse_cfssljson_input, write_bare_files,
};
pub use duration::{format_go_duration, parse_go_duration};
pub use error::{Error, Result};
pub use info::{CertInfo, NameInfo, certinfo};
pub use key::{KeyAlgorithm, PrivateKey};
pub use name::{NameEntry, Subject};
pub use usage::Usage;
