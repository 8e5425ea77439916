//! Private keys: generation (RSA 2048/3072/4096, ECDSA P-256/P-384/P-521 through rcgen on
//! aws-lc-rs), reading PKCS#1, SEC1 and PKCS#8 PEM, and writing cfssl's block types
//! (`RSA PRIVATE KEY`, `EC PRIVATE KEY` with curve parameters and public key, as Go's
//! `x509.MarshalPKCS1PrivateKey` / `x509.MarshalECPrivateKey` do).

use std::fmt;
use std::sync::Arc;

use rcgen::{KeyPair, PublicKeyData as _, SigningKey as _};

use crate::der::{self, Reader, tag};
use crate::error::{Error, Result};
use crate::pem;

pub(crate) const OID_RSA_ENCRYPTION: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
pub(crate) const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_P256: &[u64] = &[1, 2, 840, 10045, 3, 1, 7];
const OID_P384: &[u64] = &[1, 3, 132, 0, 34];
const OID_P521: &[u64] = &[1, 3, 132, 0, 35];
const OID_SHA256_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 11];
const OID_SHA384_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 12];
const OID_SHA512_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 13];
const OID_ECDSA_SHA256: &[u64] = &[1, 2, 840, 10045, 4, 3, 2];
const OID_ECDSA_SHA384: &[u64] = &[1, 2, 840, 10045, 4, 3, 3];
const OID_ECDSA_SHA512: &[u64] = &[1, 2, 840, 10045, 4, 3, 4];

/// A key algorithm and size that we generate: cfssl's `key {algo, size}` values.
///
/// By default RSA 2048, the key every cfssl front-proxy guide and kubeadm use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyAlgorithm {
    /// `{"algo":"rsa","size":2048}`.
    #[default]
    Rsa2048,
    /// `{"algo":"rsa","size":3072}`.
    Rsa3072,
    /// `{"algo":"rsa","size":4096}`.
    Rsa4096,
    /// `{"algo":"ecdsa","size":256}` (cfssl's default when a CSR has no `key`).
    EcdsaP256,
    /// `{"algo":"ecdsa","size":384}`.
    EcdsaP384,
    /// `{"algo":"ecdsa","size":521}`.
    EcdsaP521,
}

impl KeyAlgorithm {
    /// Every supported algorithm.
    pub const ALL: [KeyAlgorithm; 6] = [
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
        KeyAlgorithm::EcdsaP256,
        KeyAlgorithm::EcdsaP384,
        KeyAlgorithm::EcdsaP521,
    ];

    /// Maps cfssl's `key.algo` / `key.size` to an algorithm.
    ///
    /// ```
    /// use pki::KeyAlgorithm;
    /// assert_eq!(KeyAlgorithm::from_cfssl("rsa", 2048)?, KeyAlgorithm::Rsa2048);
    /// assert_eq!(KeyAlgorithm::from_cfssl("ecdsa", 384)?, KeyAlgorithm::EcdsaP384);
    /// assert!(KeyAlgorithm::from_cfssl("rsa", 1024).is_err());
    /// # Ok::<(), pki::Error>(())
    /// ```
    pub fn from_cfssl(algo: &str, size: u64) -> Result<Self> {
        match (algo, size) {
            ("rsa", 2048) => Ok(KeyAlgorithm::Rsa2048),
            ("rsa", 3072) => Ok(KeyAlgorithm::Rsa3072),
            ("rsa", 4096) => Ok(KeyAlgorithm::Rsa4096),
            ("rsa", n) => Err(Error::UnsupportedKey(format!(
                "RSA size {n} (supported: 2048, 3072, 4096)"
            ))),
            ("ecdsa", 256) => Ok(KeyAlgorithm::EcdsaP256),
            ("ecdsa", 384) => Ok(KeyAlgorithm::EcdsaP384),
            ("ecdsa", 521) => Ok(KeyAlgorithm::EcdsaP521),
            ("ecdsa", n) => Err(Error::UnsupportedKey(format!(
                "ECDSA size {n} (supported: 256, 384, 521)"
            ))),
            (other, _) => Err(Error::UnsupportedKey(format!(
                "algo {other:?} (supported: \"rsa\", \"ecdsa\")"
            ))),
        }
    }

    /// cfssl's `algo` name: `rsa` or `ecdsa`.
    pub fn cfssl_algo(self) -> &'static str {
        match self {
            KeyAlgorithm::Rsa2048 | KeyAlgorithm::Rsa3072 | KeyAlgorithm::Rsa4096 => "rsa",
            _ => "ecdsa",
        }
    }

    /// cfssl's `size`: RSA modulus bits or the curve's size.
    pub fn size(self) -> u64 {
        match self {
            KeyAlgorithm::Rsa2048 => 2048,
            KeyAlgorithm::Rsa3072 => 3072,
            KeyAlgorithm::Rsa4096 => 4096,
            KeyAlgorithm::EcdsaP256 => 256,
            KeyAlgorithm::EcdsaP384 => 384,
            KeyAlgorithm::EcdsaP521 => 521,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.cfssl_algo(), self.size())
    }
}

/// The kind of a loaded key, which decides the signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa { bits: usize },
    Ec(Curve),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn oid(self) -> &'static [u64] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
            Curve::P521 => OID_P521,
        }
    }

    fn from_oid(arcs: &[u64]) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521]
            .into_iter()
            .find(|c| c.oid() == arcs)
    }

    fn scalar_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
}

/// A private key ready to sign certificates and CSRs.
///
/// The signature algorithm follows cfssl (`signer.DefaultSigAlgo`): RSA below 3072 bits and
/// P-256 sign with SHA-256, RSA 3072 and P-384 with SHA-384, RSA 4096+ and P-521 with SHA-512.
#[derive(Clone)]
pub struct PrivateKey {
    kind: KeyKind,
    /// Shared so that keys (and CAs) clone cheaply.
    pair: Arc<KeyPair>,
    /// cfssl's encoding: PKCS#1 for RSA, SEC1 (with parameters and public key) for EC.
    cfssl_der: Vec<u8>,
    /// PKCS#8 encoding.
    pkcs8_der: Vec<u8>,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("PrivateKey")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generates a fresh key.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self> {
        let what = format!("generating a {alg} key");
        let pair = match alg {
            KeyAlgorithm::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            }
            KeyAlgorithm::Rsa3072 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA384, rcgen::RsaKeySize::_3072)
            }
            KeyAlgorithm::Rsa4096 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA512, rcgen::RsaKeySize::_4096)
            }
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::EcdsaP384 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384),
            KeyAlgorithm::EcdsaP521 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512),
        }
        .map_err(|e| Error::crypto(what.clone(), e))?;
        // rcgen serialises generated keys as PKCS#8.
        let pkcs8 = pair.serialize_der();
        Self::from_pkcs8(&what, &pkcs8)
    }

    /// Reads the first private key in PEM text: `RSA PRIVATE KEY` (PKCS#1), `EC PRIVATE KEY`
    /// (SEC1) or `PRIVATE KEY` (PKCS#8). `what` names the input in errors (e.g. a file name).
    pub fn from_pem(what: &str, text: &str) -> Result<Self> {
        let blocks = pem::parse(what, text)?;
        for block in &blocks {
            match block.label.as_str() {
                "RSA PRIVATE KEY" => return Self::from_pkcs1(what, &block.der),
                "EC PRIVATE KEY" => return Self::from_sec1(what, &block.der, None),
                "PRIVATE KEY" => return Self::from_pkcs8(what, &block.der),
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(Error::key(
                        what,
                        "encrypted keys are not supported; decrypt it first (openssl pkey -in KEY -out PLAIN)",
                    ));
                }
                _ => {}
            }
        }
        Err(Error::Pem {
            what: what.to_string(),
            message: format!(
                "no private key found (expected RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY){}",
                pem::describe_labels(&blocks)
            ),
        })
    }

    fn from_pkcs1(what: &str, pkcs1: &[u8]) -> Result<Self> {
        let bits = rsa_modulus_bits(pkcs1).ok_or_else(|| Error::key(what, "malformed PKCS#1"))?;
        let pkcs8 = der::seq(&[
            &der::small_uint(0),
            &der::seq(&[&der::oid(OID_RSA_ENCRYPTION), &der::null()]),
            &der::octet_string(pkcs1),
        ]);
        let pair = KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), rsa_alg(bits))
            .map_err(|e| Error::key(what, format!("RSA key rejected by aws-lc: {e}")))?;
        Ok(PrivateKey {
            kind: KeyKind::Rsa { bits },
            pair: Arc::new(pair),
            cfssl_der: pkcs1.to_vec(),
            pkcs8_der: pkcs8,
        })
    }

    /// SEC1 `ECPrivateKey`; `outer_curve` is the curve from a PKCS#8 wrapper, which may be the
    /// only place the curve is named.
    fn from_sec1(what: &str, sec1: &[u8], outer_curve: Option<Curve>) -> Result<Self> {
        let malformed = |m: &str| Error::key(what, format!("malformed SEC1 EC key: {m}"));
        let mut outer = Reader::new(sec1);
        let body = outer.read(tag::SEQUENCE).map_err(|e| malformed(e.0))?;
        let mut r = Reader::new(body);
        r.read(tag::INTEGER).map_err(|e| malformed(e.0))?;
        let scalar = r.read(tag::OCTET_STRING).map_err(|e| malformed(e.0))?;
        let mut curve = outer_curve;
        while !r.is_empty() {
            let (t, content) = r.read_any().map_err(|e| malformed(e.0))?;
            if t == 0xa0 {
                let mut p = Reader::new(content);
                let arcs = p
                    .read(tag::OID)
                    .and_then(der::parse_oid)
                    .map_err(|e| malformed(e.0))?;
                let c = Curve::from_oid(&arcs).ok_or_else(|| {
                    Error::key(
                        what,
                        format!(
                            "unsupported EC curve {} (supported: P-256, P-384, P-521)",
                            arcs.iter()
                                .map(u64::to_string)
                                .collect::<Vec<_>>()
                                .join(".")
                        ),
                    )
                })?;
                if outer_curve.is_some_and(|o| o != c) {
                    return Err(malformed("curve in PKCS#8 and SEC1 disagree"));
                }
                curve = Some(c);
            }
        }
        let curve = curve.ok_or_else(|| malformed("no named curve"))?;
        // Go pads the scalar to the curve size; do the same so aws-lc and cfssl agree.
        let mut padded = vec![0u8; curve.scalar_len().saturating_sub(scalar.len())];
        padded.extend_from_slice(scalar);
        // aws-lc needs the public key; rebuild a full SEC1 structure from the scalar via PKCS#8
        // after deriving it, so we hand it a minimal SEC1 first.
        let minimal = der::seq(&[
            &der::small_uint(1),
            &der::octet_string(&padded),
            &der::context_constructed(0, &der::oid(curve.oid())),
        ]);
        let pair = KeyPair::from_der_and_sign_algo(
            &rustls_pki_types::PrivateKeyDer::Sec1(minimal.into()),
            ec_alg(curve),
        )
        .map_err(|e| Error::key(what, format!("EC key rejected by aws-lc: {e}")))?;
        let public = pair.der_bytes().to_vec();
        let cfssl_der = der::seq(&[
            &der::small_uint(1),
            &der::octet_string(&padded),
            &der::context_constructed(0, &der::oid(curve.oid())),
            &der::context_constructed(1, &der::bit_string(&public)),
        ]);
        // PKCS#8 per RFC 5915 §3: the curve lives in the AlgorithmIdentifier.
        let inner = der::seq(&[
            &der::small_uint(1),
            &der::octet_string(&padded),
            &der::context_constructed(1, &der::bit_string(&public)),
        ]);
        let pkcs8_der = der::seq(&[
            &der::small_uint(0),
            &der::seq(&[&der::oid(OID_EC_PUBLIC_KEY), &der::oid(curve.oid())]),
            &der::octet_string(&inner),
        ]);
        Ok(PrivateKey {
            kind: KeyKind::Ec(curve),
            pair: Arc::new(pair),
            cfssl_der,
            pkcs8_der,
        })
    }

    fn from_pkcs8(what: &str, pkcs8: &[u8]) -> Result<Self> {
        let malformed = |m: &str| Error::key(what, format!("malformed PKCS#8: {m}"));
        let mut outer = Reader::new(pkcs8);
        let body = outer.read(tag::SEQUENCE).map_err(|e| malformed(e.0))?;
        let mut r = Reader::new(body);
        r.read(tag::INTEGER).map_err(|e| malformed(e.0))?;
        let alg = r.read(tag::SEQUENCE).map_err(|e| malformed(e.0))?;
        let inner = r.read(tag::OCTET_STRING).map_err(|e| malformed(e.0))?;
        let mut a = Reader::new(alg);
        let alg_oid = a
            .read(tag::OID)
            .and_then(der::parse_oid)
            .map_err(|e| malformed(e.0))?;
        if alg_oid == OID_RSA_ENCRYPTION {
            Self::from_pkcs1(what, inner)
        } else if alg_oid == OID_EC_PUBLIC_KEY {
            let curve = match a.peek_tag() {
                Some(tag::OID) => {
                    let arcs = a
                        .read(tag::OID)
                        .and_then(der::parse_oid)
                        .map_err(|e| malformed(e.0))?;
                    Some(Curve::from_oid(&arcs).ok_or_else(|| {
                        Error::key(
                            what,
                            "unsupported EC curve (supported: P-256, P-384, P-521)",
                        )
                    })?)
                }
                _ => None,
            };
            Self::from_sec1(what, inner, curve)
        } else {
            Err(Error::key(
                what,
                format!(
                    "unsupported key type {} (supported: RSA, ECDSA)",
                    alg_oid
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(".")
                ),
            ))
        }
    }

    /// The key in cfssl's PEM form: `RSA PRIVATE KEY` or `EC PRIVATE KEY`.
    pub fn to_pem(&self) -> String {
        let label = match self.kind {
            KeyKind::Rsa { .. } => "RSA PRIVATE KEY",
            KeyKind::Ec(_) => "EC PRIVATE KEY",
        };
        pem::encode(label, &self.cfssl_der)
    }

    /// The key as PKCS#8 (`PRIVATE KEY`), for tools that want it.
    pub fn to_pkcs8_pem(&self) -> String {
        pem::encode("PRIVATE KEY", &self.pkcs8_der)
    }

    /// A short description such as `RSA 2048` or `ECDSA P-256`.
    pub fn describe(&self) -> String {
        match self.kind {
            KeyKind::Rsa { bits } => format!("RSA {bits}"),
            KeyKind::Ec(c) => format!("ECDSA {}", c.name()),
        }
    }

    /// The raw public key (RSAPublicKey DER, or the uncompressed EC point): the content of the
    /// SubjectPublicKeyInfo BIT STRING.
    pub(crate) fn public_key_bits(&self) -> &[u8] {
        self.pair.der_bytes()
    }

    /// The SubjectPublicKeyInfo DER.
    pub(crate) fn spki_der(&self) -> Vec<u8> {
        let alg = match self.kind {
            KeyKind::Rsa { .. } => der::seq(&[&der::oid(OID_RSA_ENCRYPTION), &der::null()]),
            KeyKind::Ec(c) => der::seq(&[&der::oid(OID_EC_PUBLIC_KEY), &der::oid(c.oid())]),
        };
        der::seq(&[&alg, &der::bit_string(self.public_key_bits())])
    }

    /// The AlgorithmIdentifier of signatures this key makes.
    pub(crate) fn signature_algorithm_der(&self) -> Vec<u8> {
        match self.kind {
            KeyKind::Rsa { bits } => {
                let oid = if bits >= 4096 {
                    OID_SHA512_RSA
                } else if bits >= 3072 {
                    OID_SHA384_RSA
                } else {
                    OID_SHA256_RSA
                };
                der::seq(&[&der::oid(oid), &der::null()])
            }
            KeyKind::Ec(c) => {
                let oid = match c {
                    Curve::P256 => OID_ECDSA_SHA256,
                    Curve::P384 => OID_ECDSA_SHA384,
                    Curve::P521 => OID_ECDSA_SHA512,
                };
                der::seq(&[&der::oid(oid)])
            }
        }
    }

    /// Signs `msg` with the hash of [`signature_algorithm_der`](Self::signature_algorithm_der).
    pub(crate) fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        self.pair.sign(msg).map_err(|e| Error::crypto("signing", e))
    }
}

fn rsa_alg(bits: usize) -> &'static rcgen::SignatureAlgorithm {
    if bits >= 4096 {
        &rcgen::PKCS_RSA_SHA512
    } else if bits >= 3072 {
        &rcgen::PKCS_RSA_SHA384
    } else {
        &rcgen::PKCS_RSA_SHA256
    }
}

fn ec_alg(curve: Curve) -> &'static rcgen::SignatureAlgorithm {
    match curve {
        Curve::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        Curve::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
        Curve::P521 => &rcgen::PKCS_ECDSA_P521_SHA512,
    }
}

/// Bit length of the modulus in a PKCS#1 `RSAPrivateKey` or `RSAPublicKey`.
pub(crate) fn rsa_modulus_bits(pkcs1: &[u8]) -> Option<usize> {
    let mut outer = Reader::new(pkcs1);
    let body = outer.read(tag::SEQUENCE).ok()?;
    let mut r = Reader::new(body);
    let first = r.read(tag::INTEGER).ok()?;
    // RSAPrivateKey starts with a version; RSAPublicKey starts with the modulus.
    let modulus = if first.len() <= 1 {
        r.read(tag::INTEGER).ok()?
    } else {
        first
    };
    let m = der::uint_magnitude(modulus);
    let top = *m.first()?;
    Some(m.len() * 8 - top.leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen_key(alg: KeyAlgorithm) -> PrivateKey {
        match PrivateKey::generate(alg) {
            Ok(k) => k,
            Err(e) => panic!("{alg}: {e}"),
        }
    }

    #[test]
    fn generated_keys_use_cfssl_block_types_and_reload() {
        for alg in [
            KeyAlgorithm::Rsa2048,
            KeyAlgorithm::EcdsaP256,
            KeyAlgorithm::EcdsaP384,
            KeyAlgorithm::EcdsaP521,
        ] {
            let key = gen_key(alg);
            let pem_text = key.to_pem();
            let want = if alg.cfssl_algo() == "rsa" {
                "-----BEGIN RSA PRIVATE KEY-----"
            } else {
                "-----BEGIN EC PRIVATE KEY-----"
            };
            assert!(pem_text.starts_with(want), "{alg}: {pem_text}");
            // Re-read from all three encodings; the public key must survive each.
            for text in [pem_text.clone(), key.to_pkcs8_pem()] {
                let back = PrivateKey::from_pem("k", &text);
                let back = match back {
                    Ok(b) => b,
                    Err(e) => panic!("{alg}: {e}"),
                };
                assert_eq!(back.public_key_bits(), key.public_key_bits(), "{alg}");
                assert_eq!(back.to_pem(), pem_text, "{alg}");
            }
        }
    }

    #[test]
    fn sec1_output_has_curve_and_public_key() {
        let key = gen_key(KeyAlgorithm::EcdsaP384);
        let mut r = Reader::new(&key.cfssl_der);
        let body = r.read(tag::SEQUENCE).unwrap_or_default();
        let mut r = Reader::new(body);
        let tags: Vec<u8> = std::iter::from_fn(|| r.read_any().ok().map(|(t, _)| t)).collect();
        assert_eq!(tags, vec![tag::INTEGER, tag::OCTET_STRING, 0xa0, 0xa1]);
    }

    #[test]
    fn rsa_sizes_pick_cfssl_hashes() {
        let key = gen_key(KeyAlgorithm::Rsa2048);
        assert_eq!(key.describe(), "RSA 2048");
        assert_eq!(
            key.signature_algorithm_der(),
            der::seq(&[&der::oid(OID_SHA256_RSA), &der::null()])
        );
        assert_eq!(rsa_alg(4096), &rcgen::PKCS_RSA_SHA512);
        assert_eq!(rsa_alg(3072), &rcgen::PKCS_RSA_SHA384);
    }

    #[test]
    fn garbage_keys_are_clear_errors() {
        let msg = |r: Result<PrivateKey>| r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg(PrivateKey::from_pem("k.pem", "nope")).contains("no private key found"));
        let bad = pem::encode("RSA PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(msg(PrivateKey::from_pem("k.pem", &bad)).contains("k.pem"));
        let bad = pem::encode("EC PRIVATE KEY", &[0x30, 0x00]);
        assert!(msg(PrivateKey::from_pem("k.pem", &bad)).contains("malformed SEC1"));
        let enc = pem::encode("ENCRYPTED PRIVATE KEY", &[0x30, 0x00]);
        assert!(msg(PrivateKey::from_pem("k.pem", &enc)).contains("encrypted keys"));
        let cert = pem::encode("CERTIFICATE", &[0x30, 0x00]);
        assert!(msg(PrivateKey::from_pem("k.pem", &cert)).contains("found: CERTIFICATE"));
    }
}
