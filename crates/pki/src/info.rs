//! `certinfo`: a certificate as JSON. The members cfssl's `certinfo` prints come first and are
//! spelled as cfssl spells them (including its unpadded `%X` key identifiers), so scripts written
//! against cfssl keep working; members cfssl lacks (usages, CA flag, key, fingerprint) follow.

use aws_lc_rs::digest;
use serde::Serialize;

use crate::error::Result;
use crate::pem;
use crate::x509::{self, Attribute, CertView};

/// A subject or issuer as cfssl's certinfo shows it: each attribute type's values joined with
/// commas, plus every value in order under `names`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NameInfo {
    /// `CN`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub common_name: String,
    /// `SERIALNUMBER` attribute.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub serial_number: String,
    /// `C`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub country: String,
    /// `O` (several joined with `,`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub organization: String,
    /// `OU`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub organizational_unit: String,
    /// `L`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub locality: String,
    /// `ST`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub province: String,
    /// Every attribute value, in certificate order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

impl NameInfo {
    fn from_attributes(attrs: &[Attribute]) -> Self {
        let join = |kind: &str| {
            attrs
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.value.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        NameInfo {
            common_name: attrs
                .iter()
                .find(|a| a.kind == "CN")
                .map(|a| a.value.clone())
                .unwrap_or_default(),
            serial_number: join("SERIALNUMBER"),
            country: join("C"),
            organization: join("O"),
            organizational_unit: join("OU"),
            locality: join("L"),
            province: join("ST"),
            names: attrs.iter().map(|a| a.value.clone()).collect(),
        }
    }
}

/// What `pki certinfo -cert FILE` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject.
    pub subject: NameInfo,
    /// Issuer.
    pub issuer: NameInfo,
    /// Serial number in decimal, as cfssl prints it.
    pub serial_number: String,
    /// SANs: DNS names, IPs, e-mail addresses, URIs (cfssl's order).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    /// `notBefore`, RFC 3339 UTC.
    pub not_before: String,
    /// `notAfter`, RFC 3339 UTC.
    pub not_after: String,
    /// Go's name of the signature algorithm, e.g. `SHA256WithRSA`.
    pub sigalg: String,
    /// AuthorityKeyId in cfssl's format (`%X` per byte, colon-separated: `9F:A6:1:1`).
    pub authority_key_id: String,
    /// SubjectKeyId in cfssl's format.
    pub subject_key_id: String,
    /// The certificate as PEM.
    pub pem: String,
    /// KeyUsage names (cfssl spelling); empty when the extension is absent.
    pub key_usages: Vec<String>,
    /// ExtendedKeyUsage names (cfssl spelling, dotted OID for unknown ones).
    pub ext_key_usages: Vec<String>,
    /// BasicConstraints CA flag.
    pub is_ca: bool,
    /// BasicConstraints pathLenConstraint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_path_len: Option<u32>,
    /// Public key, e.g. `RSA 2048`.
    pub public_key: String,
    /// SHA-256 of the DER, upper-case hex pairs joined with `:` (as `openssl x509 -fingerprint
    /// -sha256` prints it).
    pub fingerprint_sha256: String,
    /// Seconds since the Unix epoch of `notBefore` (for scripts).
    pub not_before_unix: i64,
    /// Seconds since the Unix epoch of `notAfter`.
    pub not_after_unix: i64,
}

/// Builds [`CertInfo`] for the first certificate in PEM text.
pub fn certinfo(what: &str, pem_text: &str) -> Result<CertInfo> {
    let v = CertView::from_pem(what, pem_text)?;
    Ok(certinfo_of(&v))
}

pub(crate) fn certinfo_of(v: &CertView) -> CertInfo {
    let mut sans: Vec<String> = v.sans.dns.clone();
    sans.extend(v.sans.ip.iter().map(|ip| ip.to_string()));
    sans.extend(v.sans.email.iter().cloned());
    sans.extend(v.sans.uri.iter().cloned());
    let key_usages = v
        .key_usage
        .map(|bits| {
            KU_NAMES
                .iter()
                .filter(|(bit, _)| bits & bit != 0)
                .map(|(_, n)| n.to_string())
                .collect()
        })
        .unwrap_or_default();
    let fp = digest::digest(&digest::SHA256, &v.der);
    CertInfo {
        subject: NameInfo::from_attributes(&v.subject),
        issuer: NameInfo::from_attributes(&v.issuer),
        serial_number: v.serial_decimal.clone(),
        sans,
        not_before: rfc3339(v.not_before),
        not_after: rfc3339(v.not_after),
        sigalg: x509::signature_name(&v.signature_oid),
        authority_key_id: cfssl_key_id(v.aki.as_deref()),
        subject_key_id: cfssl_key_id(v.ski.as_deref()),
        pem: pem::encode("CERTIFICATE", &v.der),
        key_usages,
        ext_key_usages: v.ext_key_usage.clone().unwrap_or_default(),
        is_ca: v.basic_constraints.is_some_and(|(ca, _)| ca),
        max_path_len: v.basic_constraints.and_then(|(_, l)| l),
        public_key: x509::describe_key(v),
        fingerprint_sha256: fp
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":"),
        not_before_unix: v.not_before,
        not_after_unix: v.not_after,
    }
}

/// KeyUsage bits (Go numbering) and the names we print for them; each is a name cfssl configs
/// accept, so certinfo output can be pasted back into a profile.
const KU_NAMES: &[(u16, &str)] = &[
    (1 << 0, "digital signature"),
    (1 << 1, "content commitment"),
    (1 << 2, "key encipherment"),
    (1 << 3, "data encipherment"),
    (1 << 4, "key agreement"),
    (1 << 5, "cert sign"),
    (1 << 6, "crl sign"),
    (1 << 7, "encipher only"),
    (1 << 8, "decipher only"),
];

fn cfssl_key_id(id: Option<&[u8]>) -> String {
    id.map(|b| {
        b.iter()
            .map(|x| format!("{x:X}"))
            .collect::<Vec<_>>()
            .join(":")
    })
    .unwrap_or_default()
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertRequest, CertificateAuthority, KeyAlgorithm};

    #[test]
    fn certinfo_reports_what_was_issued() {
        let ca = CertificateAuthority::new_root_with(
            &CertRequest::ca("ca").key(KeyAlgorithm::EcdsaP256),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let issued = ca
            .issue(
                &CertRequest::client("front-proxy-client", &["a", "b"])
                    .key(KeyAlgorithm::EcdsaP384)
                    .hosts(&["x.example", "10.1.2.3"]),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        let info = certinfo("c.pem", &issued.cert_pem).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.subject.common_name, "front-proxy-client");
        assert_eq!(info.subject.organization, "a,b");
        assert_eq!(info.issuer.common_name, "ca");
        assert_eq!(info.sans, vec!["x.example", "10.1.2.3"]);
        assert_eq!(
            info.key_usages,
            vec!["digital signature", "key encipherment"]
        );
        assert_eq!(info.ext_key_usages, vec!["client auth"]);
        assert!(!info.is_ca);
        assert_eq!(info.public_key, "ECDSA P-384");
        assert_eq!(info.sigalg, "ECDSAWithSHA256", "signed by the P-256 CA");
        assert_eq!(info.fingerprint_sha256.len(), 32 * 3 - 1);
        assert_eq!(info.not_after_unix - info.not_before_unix, 8760 * 3600);
        assert!(info.not_before.ends_with(":00Z"));
        assert!(!info.authority_key_id.is_empty());
        let ca_info = certinfo("ca.pem", ca.cert_pem()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ca_info.subject_key_id, info.authority_key_id);
        assert!(ca_info.is_ca && ca_info.authority_key_id.is_empty());
    }

    #[test]
    fn key_ids_use_cfssl_unpadded_hex() {
        assert_eq!(cfssl_key_id(Some(&[0x9f, 0x01, 0x00, 0xab])), "9F:1:0:AB");
        assert_eq!(cfssl_key_id(None), "");
    }
}
