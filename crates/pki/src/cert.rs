//! Certificate and CSR encoding, field by field as Go's `x509.CreateCertificate` /
//! `x509.CreateCertificateRequest` write them for cfssl (`signer/signer.go` `FillTemplate`,
//! `signer/local/local.go`): a 20-byte random serial, BasicConstraints always present and
//! critical, SubjectKeyId = SHA-1 of the public key bits, AuthorityKeyId = the CA's
//! SubjectKeyId, and Go's extension order (KU, EKU, BC, SKI, AKI, SAN).

use std::net::IpAddr;

use aws_lc_rs::digest;

use crate::der;
use crate::error::{Error, Result};
use crate::key::PrivateKey;
use crate::usage::{self, Usage};

const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const OID_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_EXTENSION_REQUEST: &[u64] = &[1, 2, 840, 113549, 1, 9, 14];

/// BasicConstraints of a CA certificate: cfssl's `ca_constraint` (or a CSR's `ca` object).
///
/// By default no path length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CaConstraint {
    /// `pathLenConstraint`; `None` writes none (cfssl: `max_path_len` 0 without
    /// `max_path_len_zero`).
    pub max_path_len: Option<u32>,
}

/// Subject alternative names, split the way cfssl splits `hosts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubjectAltNames {
    /// DNS names.
    pub dns: Vec<String>,
    /// E-mail addresses.
    pub email: Vec<String>,
    /// IP addresses.
    pub ip: Vec<IpAddr>,
    /// URIs (e.g. SPIFFE IDs).
    pub uri: Vec<String>,
}

impl SubjectAltNames {
    /// Splits cfssl `hosts` entries: an IP address, else an e-mail address (`a@b`, or
    /// `Name <a@b>`), else a URI (a `scheme:` prefix or an absolute path, as Go's
    /// `url.ParseRequestURI` accepts), else a DNS name.
    pub fn from_hosts<S: AsRef<str>>(hosts: &[S]) -> Self {
        let mut sans = SubjectAltNames::default();
        for host in hosts {
            let h = host.as_ref().trim();
            if h.is_empty() {
                continue;
            }
            if let Ok(ip) = h.parse::<IpAddr>() {
                sans.ip.push(ip);
            } else if let Some(email) = parse_email(h) {
                sans.email.push(email);
            } else if is_request_uri(h) {
                sans.uri.push(h.to_string());
            } else {
                sans.dns.push(h.to_string());
            }
        }
        sans
    }

    /// Whether there is no name at all.
    pub fn is_empty(&self) -> bool {
        self.dns.is_empty() && self.email.is_empty() && self.ip.is_empty() && self.uri.is_empty()
    }

    fn to_der(&self) -> Vec<u8> {
        // Go's marshalSANs order: DNS, e-mail, IP, URI.
        let mut names: Vec<Vec<u8>> = Vec::new();
        for d in &self.dns {
            names.push(der::context_primitive(2, d.as_bytes()));
        }
        for e in &self.email {
            names.push(der::context_primitive(1, e.as_bytes()));
        }
        for ip in &self.ip {
            let bytes = match ip {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                // Go's To4() turns IPv4-mapped IPv6 into 4 bytes.
                IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                    Some(v4) => v4.octets().to_vec(),
                    None => v6.octets().to_vec(),
                },
            };
            names.push(der::context_primitive(7, &bytes));
        }
        for u in &self.uri {
            names.push(der::context_primitive(6, u.as_bytes()));
        }
        let refs: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
        der::seq(&refs)
    }
}

fn parse_email(h: &str) -> Option<String> {
    let addr = match (h.find('<'), h.rfind('>')) {
        (Some(open), Some(close)) if open < close && close == h.len() - 1 => &h[open + 1..close],
        _ => h,
    };
    let (local, domain) = addr.split_once('@')?;
    let ok = !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !addr
            .chars()
            .any(|c| c.is_whitespace() || c == '<' || c == '>');
    ok.then(|| addr.to_string())
}

fn is_request_uri(h: &str) -> bool {
    if h.starts_with('/') {
        return true;
    }
    match h.find(':') {
        Some(i) if i > 0 => {
            let scheme = &h[..i];
            scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !h.contains(char::is_whitespace)
        }
        _ => false,
    }
}

/// The subject's public key as it goes into a certificate.
pub(crate) struct SubjectKey<'a> {
    pub spki_der: &'a [u8],
    pub bits: &'a [u8],
}

/// The issuing side: the CA's subject (copied verbatim, as Go uses `parent.RawSubject`), its
/// SubjectKeyId and key.
pub(crate) struct Signer<'a> {
    pub subject_der: &'a [u8],
    pub ski: Option<&'a [u8]>,
    pub key: &'a PrivateKey,
}

/// Everything that varies between certificates.
pub(crate) struct Template<'a> {
    pub subject_der: &'a [u8],
    pub not_before: jiff::Timestamp,
    pub not_after: jiff::Timestamp,
    pub usages: &'a [Usage],
    pub ca: Option<CaConstraint>,
    pub sans: &'a SubjectAltNames,
}

/// cfssl's SubjectKeyId: SHA-1 over the SubjectPublicKeyInfo BIT STRING contents
/// (`signer.ComputeSKI`).
pub(crate) fn subject_key_id(public_key_bits: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, public_key_bits)
        .as_ref()
        .to_vec()
}

/// A 20-byte random serial with the top bit cleared, as cfssl's local signer makes.
pub(crate) fn random_serial() -> Result<[u8; 20]> {
    let mut serial = [0u8; 20];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| Error::Crypto {
        what: "generating a serial number".into(),
        source: rcgen::Error::RingUnspecified,
    })?;
    serial[0] &= 0x7f;
    Ok(serial)
}

fn extension(oid: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        der::seq(&[
            &der::oid(oid),
            &der::boolean(true),
            &der::octet_string(value),
        ])
    } else {
        der::seq(&[&der::oid(oid), &der::octet_string(value)])
    }
}

fn key_usage_value(ku: u16) -> Vec<u8> {
    // Go numbers bits from the least significant; ASN.1 from the most significant of byte 0.
    let bytes = [(ku as u8).reverse_bits(), ((ku >> 8) as u8).reverse_bits()];
    let bit_len = 16 - u16::from_be_bytes(bytes).trailing_zeros() as usize;
    der::bit_string_bits(&bytes, bit_len)
}

fn basic_constraints_value(ca: Option<CaConstraint>) -> Vec<u8> {
    match ca {
        None => der::seq(&[]),
        Some(CaConstraint { max_path_len: None }) => der::seq(&[&der::boolean(true)]),
        Some(CaConstraint {
            max_path_len: Some(n),
        }) => der::seq(&[&der::boolean(true), &der::small_uint(u64::from(n))]),
    }
}

fn eku_value(ekus: &[Usage]) -> Vec<u8> {
    let oids: Vec<Vec<u8>> = ekus
        .iter()
        .filter_map(|u| u.eku_oid())
        .map(der::oid)
        .collect();
    let refs: Vec<&[u8]> = oids.iter().map(Vec::as_slice).collect();
    der::seq(&refs)
}

/// Encodes and signs a certificate.
pub(crate) fn build_certificate(
    t: &Template<'_>,
    subject_key: &SubjectKey<'_>,
    signer: &Signer<'_>,
    serial: &[u8],
) -> Result<Vec<u8>> {
    let (ku, ekus) = usage::split(t.usages);
    let mut exts: Vec<Vec<u8>> = Vec::new();
    if ku != 0 {
        exts.push(extension(OID_KEY_USAGE, true, &key_usage_value(ku)));
    }
    if !ekus.is_empty() {
        exts.push(extension(OID_EXT_KEY_USAGE, false, &eku_value(&ekus)));
    }
    exts.push(extension(
        OID_BASIC_CONSTRAINTS,
        true,
        &basic_constraints_value(t.ca),
    ));
    exts.push(extension(
        OID_SUBJECT_KEY_ID,
        false,
        &der::octet_string(&subject_key_id(subject_key.bits)),
    ));
    if let Some(aki) = signer.ski
        && signer.subject_der != t.subject_der
        && !aki.is_empty()
    {
        let value = der::seq(&[&der::context_primitive(0, aki)]);
        exts.push(extension(OID_AUTHORITY_KEY_ID, false, &value));
    }
    if !t.sans.is_empty() {
        // RFC 5280 §4.2.1.6: critical when the subject is empty; Go does the same.
        let empty_subject = t.subject_der == [0x30, 0x00];
        exts.push(extension(
            OID_SUBJECT_ALT_NAME,
            empty_subject,
            &t.sans.to_der(),
        ));
    }
    let ext_refs: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
    let sig_alg = signer.key.signature_algorithm_der();
    let tbs = der::seq(&[
        &der::context_constructed(0, &der::small_uint(2)),
        &der::uint(serial),
        &sig_alg,
        signer.subject_der,
        &der::seq(&[&der::time(t.not_before), &der::time(t.not_after)]),
        t.subject_der,
        subject_key.spki_der,
        &der::context_constructed(3, &der::seq(&ext_refs)),
    ]);
    let signature = signer.key.sign(&tbs)?;
    Ok(der::seq(&[&tbs, &sig_alg, &der::bit_string(&signature)]))
}

/// Encodes and signs a PKCS#10 request as cfssl's `csr.Generate` does: SANs from `hosts`, and a
/// critical BasicConstraints extension only for CA requests.
pub(crate) fn build_csr(
    subject_der: &[u8],
    sans: &SubjectAltNames,
    ca: Option<CaConstraint>,
    key: &PrivateKey,
) -> Result<Vec<u8>> {
    let mut exts: Vec<Vec<u8>> = Vec::new();
    if !sans.is_empty() {
        exts.push(extension(OID_SUBJECT_ALT_NAME, false, &sans.to_der()));
    }
    if let Some(c) = ca {
        exts.push(extension(
            OID_BASIC_CONSTRAINTS,
            true,
            &basic_constraints_value(Some(c)),
        ));
    }
    let attributes = if exts.is_empty() {
        Vec::new()
    } else {
        let ext_refs: Vec<&[u8]> = exts.iter().map(Vec::as_slice).collect();
        der::seq(&[
            &der::oid(OID_EXTENSION_REQUEST),
            &der::set_of(vec![der::seq(&ext_refs)]),
        ])
    };
    let info = der::seq(&[
        &der::small_uint(0),
        subject_der,
        &key.spki_der(),
        &der::context_constructed(0, &attributes),
    ]);
    let sig_alg = key.signature_algorithm_der();
    let signature = key.sign(&info)?;
    Ok(der::seq(&[&info, &sig_alg, &der::bit_string(&signature)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_like_cfssl() {
        let sans = SubjectAltNames::from_hosts(&[
            "a.example",
            "10.0.0.1",
            "::1",
            "me@x.org",
            "Ops <ops@x.org>",
            "spiffe://cluster/ns/x",
            "localhost",
            "*.svc",
        ]);
        assert_eq!(sans.dns, vec!["a.example", "localhost", "*.svc"]);
        assert_eq!(sans.email, vec!["me@x.org", "ops@x.org"]);
        assert_eq!(sans.uri, vec!["spiffe://cluster/ns/x"]);
        assert_eq!(sans.ip.len(), 2);
    }

    #[test]
    fn key_usage_bits_match_go() {
        // digitalSignature + keyEncipherment: the bytes cfssl wrote for the seed client cert.
        assert_eq!(key_usage_value(0b101), vec![0x03, 0x02, 0x05, 0xa0]);
        // certSign + cRLSign: the seed CA.
        assert_eq!(
            key_usage_value((1 << 5) | (1 << 6)),
            vec![0x03, 0x02, 0x01, 0x06]
        );
        // decipherOnly needs the second byte.
        assert_eq!(key_usage_value(1 << 8), vec![0x03, 0x03, 0x07, 0x00, 0x80]);
    }

    #[test]
    fn basic_constraints_match_go() {
        assert_eq!(basic_constraints_value(None), vec![0x30, 0x00]);
        assert_eq!(
            basic_constraints_value(Some(CaConstraint::default())),
            vec![0x30, 0x03, 0x01, 0x01, 0xff]
        );
        assert_eq!(
            basic_constraints_value(Some(CaConstraint {
                max_path_len: Some(0)
            })),
            vec![0x30, 0x06, 0x01, 0x01, 0xff, 0x02, 0x01, 0x00]
        );
    }

    #[test]
    fn serials_are_positive_and_random() {
        let a = random_serial().unwrap_or_default();
        let b = random_serial().unwrap_or_default();
        assert!(a[0] < 0x80 && b[0] < 0x80);
        assert_ne!(a, b);
    }
}
