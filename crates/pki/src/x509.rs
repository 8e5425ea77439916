//! Reading certificates back: an owned summary of the fields `certinfo`, `check` and `init`
//! look at, parsed with x509-parser, and signature verification with aws-lc-rs.

use std::net::IpAddr;

use aws_lc_rs::signature;
use x509_parser::prelude::*;

use crate::cert::SubjectAltNames;
use crate::error::{Error, Result};
use crate::key::{OID_EC_PUBLIC_KEY, OID_RSA_ENCRYPTION};
use crate::pem;
use crate::usage::Usage;

const OID_SHA1_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 5];
const OID_SHA256_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
const OID_SHA384_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 12];
const OID_SHA512_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 13];
const OID_ECDSA_SHA1: &[u64] = &[1, 2, 840, 10045, 4, 1];
const OID_ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_ECDSA_SHA384: &[u64] = &[1, 2, 840, 10045, 4, 3, 3];
const OID_ECDSA_SHA512: &[u64] = &[1, 2, 840, 10045, 4, 3, 4];
const OID_ED25519: &[u64] = &[1, 3, 101, 112];
const OID_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const OID_P384: &[u64] = &[1, 3, 132, 0, 34];
const OID_P521: &[u64] = &[1, 3, 132, 0, 35];

/// One RDN attribute: its short type name (`CN`, `O`, …, or the dotted OID) and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attribute {
    pub kind: String,
    pub value: String,
}

/// The fields of a certificate we inspect, owned.
#[derive(Debug, Clone)]
pub(crate) struct CertView {
    pub der: Vec<u8>,
    pub tbs: Vec<u8>,
    pub signature_oid: Vec<u64>,
    pub signature: Vec<u8>,
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub subject: Vec<Attribute>,
    pub issuer: Vec<Attribute>,
    pub serial_decimal: String,
    pub key_oid: Vec<u64>,
    pub key_curve: Option<Vec<u64>>,
    pub public_key_bits: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
    /// `Some(ca)` when BasicConstraints is present.
    pub basic_constraints: Option<(bool, Option<u32>)>,
    /// Go-numbered KeyUsage bits when the extension is present.
    pub key_usage: Option<u16>,
    /// EKU names (cfssl's names, or the dotted OID for unknown ones); `None` when absent.
    pub ext_key_usage: Option<Vec<String>>,
    pub ski: Option<Vec<u8>>,
    pub aki: Option<Vec<u8>>,
    pub sans: SubjectAltNames,
}

impl CertView {
    /// Parses one DER certificate.
    pub(crate) fn from_der(what: &str, der: &[u8]) -> Result<Self> {
        let (rest, x) =
            X509Certificate::from_der(der).map_err(|e| Error::cert(what, e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::cert(what, "trailing data after the certificate"));
        }
        let tbs = &x.tbs_certificate;
        let mut view = CertView {
            der: der.to_vec(),
            tbs: tbs.as_ref().to_vec(),
            signature_oid: oid_arcs(&x.signature_algorithm.algorithm),
            signature: x.signature_value.data.to_vec(),
            subject_raw: tbs.subject.as_raw().to_vec(),
            issuer_raw: tbs.issuer.as_raw().to_vec(),
            subject: attributes(&tbs.subject),
            issuer: attributes(&tbs.issuer),
            serial_decimal: tbs.serial.to_string(),
            key_oid: oid_arcs(&tbs.subject_pki.algorithm.algorithm),
            key_curve: tbs
                .subject_pki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| oid_arcs(&o)),
            public_key_bits: tbs.subject_pki.subject_public_key.data.to_vec(),
            not_before: tbs.validity.not_before.timestamp(),
            not_after: tbs.validity.not_after.timestamp(),
            basic_constraints: None,
            key_usage: None,
            ext_key_usage: None,
            ski: None,
            aki: None,
            sans: SubjectAltNames::default(),
        };
        for ext in tbs.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::BasicConstraints(bc) => {
                    view.basic_constraints = Some((bc.ca, bc.path_len_constraint));
                }
                ParsedExtension::KeyUsage(ku) => {
                    // x509-parser numbers bits like Go (bit 0 = digitalSignature).
                    view.key_usage = Some(ku.flags);
                }
                ParsedExtension::ExtendedKeyUsage(eku) => {
                    let mut names = Vec::new();
                    let known = [
                        (eku.any, Usage::Any),
                        (eku.server_auth, Usage::ServerAuth),
                        (eku.client_auth, Usage::ClientAuth),
                        (eku.code_signing, Usage::CodeSigning),
                        (eku.email_protection, Usage::EmailProtection),
                        (eku.time_stamping, Usage::TimeStamping),
                        (eku.ocsp_signing, Usage::OcspSigning),
                    ];
                    for (set, u) in known {
                        if set {
                            names.push(u.cfssl_name().to_string());
                        }
                    }
                    for other in &eku.other {
                        let arcs = oid_arcs(other);
                        let name = [
                            Usage::IpsecEndSystem,
                            Usage::IpsecTunnel,
                            Usage::IpsecUser,
                            Usage::MicrosoftSgc,
                            Usage::NetscapeSgc,
                        ]
                        .into_iter()
                        .find(|u| u.eku_oid() == Some(arcs.as_slice()))
                        .map(|u| u.cfssl_name().to_string())
                        .unwrap_or_else(|| dotted(&arcs));
                        names.push(name);
                    }
                    view.ext_key_usage = Some(names);
                }
                ParsedExtension::SubjectKeyIdentifier(k) => view.ski = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    view.aki = a.key_identifier.as_ref().map(|k| k.0.to_vec());
                }
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(d) => view.sans.dns.push(d.to_string()),
                            GeneralName::RFC822Name(e) => view.sans.email.push(e.to_string()),
                            GeneralName::URI(u) => view.sans.uri.push(u.to_string()),
                            GeneralName::IPAddress(b) => {
                                if let Some(ip) = ip_from_bytes(b) {
                                    view.sans.ip.push(ip);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(view)
    }

    /// Every `CERTIFICATE` block in PEM text (at least one).
    pub(crate) fn all_from_pem(what: &str, text: &str) -> Result<Vec<Self>> {
        pem::all_of(what, text, "CERTIFICATE")?
            .iter()
            .enumerate()
            .map(|(i, der)| {
                if i == 0 {
                    Self::from_der(what, der)
                } else {
                    Self::from_der(&format!("{what} (certificate #{})", i + 1), der)
                }
            })
            .collect()
    }

    /// The first `CERTIFICATE` block in PEM text.
    pub(crate) fn from_pem(what: &str, text: &str) -> Result<Self> {
        let ders = pem::all_of(what, text, "CERTIFICATE")?;
        let first = ders.first().map(Vec::as_slice).unwrap_or_default();
        Self::from_der(what, first)
    }

    /// The subject's first CN.
    pub(crate) fn common_name(&self) -> Option<&str> {
        self.subject
            .iter()
            .find(|a| a.kind == "CN")
            .map(|a| a.value.as_str())
    }

    /// Whether this certificate may sign others: CA:TRUE (or a self-signed v1 root without
    /// BasicConstraints), and keyCertSign when KeyUsage is present.
    pub(crate) fn can_sign_certificates(&self) -> bool {
        let ca = match self.basic_constraints {
            Some((ca, _)) => ca,
            None => self.subject_raw == self.issuer_raw,
        };
        let ku_ok = self.key_usage.is_none_or(|k| k & (1 << 5) != 0);
        ca && ku_ok
    }

    /// Whether `issuer` signed this certificate: names chain and the signature verifies.
    pub(crate) fn is_signed_by(&self, issuer: &CertView) -> std::result::Result<(), String> {
        if self.issuer_raw != issuer.subject_raw {
            return Err("issuer name does not match the CA's subject".into());
        }
        let alg: &'static dyn signature::VerificationAlgorithm = match (
            self.signature_oid.as_slice(),
            issuer.key_oid.as_slice(),
            issuer.key_curve.as_deref(),
        ) {
            (OID_SHA256_RSA, OID_RSA_ENCRYPTION, _) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (OID_SHA384_RSA, OID_RSA_ENCRYPTION, _) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (OID_SHA512_RSA, OID_RSA_ENCRYPTION, _) => &signature::RSA_PKCS1_2048_8192_SHA512,
            (OID_ECDSA_SHA256, OID_EC_PUBLIC_KEY, Some(OID_P256)) => {
                &signature::ECDSA_P256_SHA256_ASN1
            }
            (OID_ECDSA_SHA384, OID_EC_PUBLIC_KEY, Some(OID_P256)) => {
                &signature::ECDSA_P256_SHA384_ASN1
            }
            (OID_ECDSA_SHA256, OID_EC_PUBLIC_KEY, Some(OID_P384)) => {
                &signature::ECDSA_P384_SHA256_ASN1
            }
            (OID_ECDSA_SHA384, OID_EC_PUBLIC_KEY, Some(OID_P384)) => {
                &signature::ECDSA_P384_SHA384_ASN1
            }
            (OID_ECDSA_SHA512, OID_EC_PUBLIC_KEY, Some(OID_P521)) => {
                &signature::ECDSA_P521_SHA512_ASN1
            }
            (OID_ECDSA_SHA384, OID_EC_PUBLIC_KEY, Some(OID_P521)) => {
                &signature::ECDSA_P521_SHA384_ASN1
            }
            (OID_ECDSA_SHA256, OID_EC_PUBLIC_KEY, Some(OID_P521)) => {
                &signature::ECDSA_P521_SHA256_ASN1
            }
            (OID_ED25519, OID_ED25519, _) => &signature::ED25519,
            (sig, _, _) => {
                return Err(format!(
                    "unsupported signature algorithm {} for the CA's key",
                    signature_name(sig)
                ));
            }
        };
        signature::UnparsedPublicKey::new(alg, &issuer.public_key_bits)
            .verify(&self.tbs, &self.signature)
            .map_err(|_| "signature does not verify with the CA's public key".to_string())
    }
}

/// Go's name for a signature algorithm, as cfssl's certinfo prints it.
pub(crate) fn signature_name(oid: &[u64]) -> String {
    match oid {
        OID_SHA1_RSA => "SHA1WithRSA".into(),
        OID_SHA256_RSA => "SHA256WithRSA".into(),
        OID_SHA384_RSA => "SHA384WithRSA".into(),
        OID_SHA512_RSA => "SHA512WithRSA".into(),
        OID_ECDSA_SHA1 => "ECDSAWithSHA1".into(),
        OID_ECDSA_SHA256 => "ECDSAWithSHA256".into(),
        OID_ECDSA_SHA384 => "ECDSAWithSHA384".into(),
        OID_ECDSA_SHA512 => "ECDSAWithSHA512".into(),
        OID_ED25519 => "Ed25519".into(),
        other => dotted(other),
    }
}

pub(crate) fn dotted(arcs: &[u64]) -> String {
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

fn oid_arcs(oid: &x509_parser::der_parser::oid::Oid<'_>) -> Vec<u64> {
    oid.iter().map(|i| i.collect()).unwrap_or_default()
}

fn attributes(name: &X509Name<'_>) -> Vec<Attribute> {
    let mut out = Vec::new();
    for rdn in name.iter() {
        for atv in rdn.iter() {
            let arcs = oid_arcs(atv.attr_type());
            let kind = match arcs.as_slice() {
                [2, 5, 4, 3] => "CN".to_string(),
                [2, 5, 4, 6] => "C".to_string(),
                [2, 5, 4, 8] => "ST".to_string(),
                [2, 5, 4, 7] => "L".to_string(),
                [2, 5, 4, 10] => "O".to_string(),
                [2, 5, 4, 11] => "OU".to_string(),
                [2, 5, 4, 5] => "SERIALNUMBER".to_string(),
                [2, 5, 4, 9] => "STREET".to_string(),
                [2, 5, 4, 17] => "POSTALCODE".to_string(),
                [1, 2, 840, 113549, 1, 9, 1] => "E".to_string(),
                other => dotted(other),
            };
            let value = atv
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|_| String::from_utf8_lossy(atv.attr_value().data).into_owned());
            out.push(Attribute { kind, value });
        }
    }
    out
}

fn ip_from_bytes(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
        _ => None,
    }
}

/// The public key's description (`RSA 2048`, `ECDSA P-256`, …).
pub(crate) fn describe_key(view: &CertView) -> String {
    match (view.key_oid.as_slice(), view.key_curve.as_deref()) {
        (OID_RSA_ENCRYPTION, _) => match crate::key::rsa_modulus_bits(&view.public_key_bits) {
            Some(bits) => format!("RSA {bits}"),
            None => "RSA".into(),
        },
        (OID_EC_PUBLIC_KEY, Some(OID_P256)) => "ECDSA P-256".into(),
        (OID_EC_PUBLIC_KEY, Some(OID_P384)) => "ECDSA P-384".into(),
        (OID_EC_PUBLIC_KEY, Some(OID_P521)) => "ECDSA P-521".into(),
        (OID_ED25519, _) => "Ed25519".into(),
        (other, _) => dotted(other),
    }
}
