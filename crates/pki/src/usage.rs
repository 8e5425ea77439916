//! cfssl's usage names (`config.KeyUsage` and `config.ExtKeyUsage` in cfssl's `config/config.go`)
//! and how they map to the KeyUsage and ExtendedKeyUsage extensions.

use std::fmt;

use crate::error::{Error, Result};

/// One cfssl usage name. `signing` and `digital signature` are the same bit, as in cfssl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// KeyUsage digitalSignature (`signing`, `digital signature`).
    DigitalSignature,
    /// KeyUsage contentCommitment (cfssl spells it `content committment`).
    ContentCommitment,
    /// KeyUsage keyEncipherment (`key encipherment`).
    KeyEncipherment,
    /// KeyUsage keyAgreement (`key agreement`).
    KeyAgreement,
    /// KeyUsage dataEncipherment (`data encipherment`).
    DataEncipherment,
    /// KeyUsage keyCertSign (`cert sign`).
    CertSign,
    /// KeyUsage cRLSign (`crl sign`).
    CrlSign,
    /// KeyUsage encipherOnly (`encipher only`).
    EncipherOnly,
    /// KeyUsage decipherOnly (`decipher only`).
    DecipherOnly,
    /// EKU anyExtendedKeyUsage (`any`).
    Any,
    /// EKU serverAuth (`server auth`).
    ServerAuth,
    /// EKU clientAuth (`client auth`): what a front-proxy client certificate needs.
    ClientAuth,
    /// EKU codeSigning (`code signing`).
    CodeSigning,
    /// EKU emailProtection (`email protection`, `s/mime`).
    EmailProtection,
    /// EKU ipsecEndSystem (`ipsec end system`).
    IpsecEndSystem,
    /// EKU ipsecTunnel (`ipsec tunnel`).
    IpsecTunnel,
    /// EKU ipsecUser (`ipsec user`).
    IpsecUser,
    /// EKU timeStamping (`timestamping`).
    TimeStamping,
    /// EKU OCSPSigning (`ocsp signing`).
    OcspSigning,
    /// EKU Microsoft Server Gated Crypto (`microsoft sgc`).
    MicrosoftSgc,
    /// EKU Netscape Server Gated Crypto (`netscape sgc`).
    NetscapeSgc,
}

/// Every accepted name and its usage, in cfssl's table order.
const NAMES: &[(&str, Usage)] = &[
    ("signing", Usage::DigitalSignature),
    ("digital signature", Usage::DigitalSignature),
    ("content committment", Usage::ContentCommitment),
    ("content commitment", Usage::ContentCommitment),
    ("key encipherment", Usage::KeyEncipherment),
    ("key agreement", Usage::KeyAgreement),
    ("data encipherment", Usage::DataEncipherment),
    ("cert sign", Usage::CertSign),
    ("crl sign", Usage::CrlSign),
    ("encipher only", Usage::EncipherOnly),
    ("decipher only", Usage::DecipherOnly),
    ("any", Usage::Any),
    ("server auth", Usage::ServerAuth),
    ("client auth", Usage::ClientAuth),
    ("code signing", Usage::CodeSigning),
    ("email protection", Usage::EmailProtection),
    ("s/mime", Usage::EmailProtection),
    ("ipsec end system", Usage::IpsecEndSystem),
    ("ipsec tunnel", Usage::IpsecTunnel),
    ("ipsec user", Usage::IpsecUser),
    ("timestamping", Usage::TimeStamping),
    ("ocsp signing", Usage::OcspSigning),
    ("microsoft sgc", Usage::MicrosoftSgc),
    ("netscape sgc", Usage::NetscapeSgc),
];

impl Usage {
    /// Parses a cfssl usage name. Matching is exact (lower case), as in cfssl; unlike cfssl, an
    /// unknown name is an error instead of being silently dropped.
    ///
    /// ```
    /// use pki::Usage;
    /// assert_eq!(Usage::from_cfssl("client auth")?, Usage::ClientAuth);
    /// assert_eq!(Usage::from_cfssl("signing")?, Usage::DigitalSignature);
    /// assert!(Usage::from_cfssl("client-auth").is_err());
    /// # Ok::<(), pki::Error>(())
    /// ```
    pub fn from_cfssl(name: &str) -> Result<Usage> {
        NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, u)| *u)
            .ok_or_else(|| Error::UnknownUsage {
                name: name.to_string(),
                known: NAMES
                    .iter()
                    .map(|(n, _)| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The canonical cfssl name.
    pub fn cfssl_name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, u)| *u == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// The bit in Go's `x509.KeyUsage` numbering (bit 0 = digitalSignature), or `None` for an
    /// extended key usage.
    pub(crate) fn key_usage_bit(self) -> Option<u16> {
        Some(match self {
            Usage::DigitalSignature => 1 << 0,
            Usage::ContentCommitment => 1 << 1,
            Usage::KeyEncipherment => 1 << 2,
            Usage::DataEncipherment => 1 << 3,
            Usage::KeyAgreement => 1 << 4,
            Usage::CertSign => 1 << 5,
            Usage::CrlSign => 1 << 6,
            Usage::EncipherOnly => 1 << 7,
            Usage::DecipherOnly => 1 << 8,
            _ => return None,
        })
    }

    /// The EKU OID, or `None` for a key usage bit.
    pub(crate) fn eku_oid(self) -> Option<&'static [u64]> {
        Some(match self {
            Usage::Any => &[2, 5, 29, 37, 0],
            Usage::ServerAuth => &[1, 3, 6, 1, 5, 5, 7, 3, 1],
            Usage::ClientAuth => &[1, 3, 6, 1, 5, 5, 7, 3, 2],
            Usage::CodeSigning => &[1, 3, 6, 1, 5, 5, 7, 3, 3],
            Usage::EmailProtection => &[1, 3, 6, 1, 5, 5, 7, 3, 4],
            Usage::IpsecEndSystem => &[1, 3, 6, 1, 5, 5, 7, 3, 5],
            Usage::IpsecTunnel => &[1, 3, 6, 1, 5, 5, 7, 3, 6],
            Usage::IpsecUser => &[1, 3, 6, 1, 5, 5, 7, 3, 7],
            Usage::TimeStamping => &[1, 3, 6, 1, 5, 5, 7, 3, 8],
            Usage::OcspSigning => &[1, 3, 6, 1, 5, 5, 7, 3, 9],
            Usage::MicrosoftSgc => &[1, 3, 6, 1, 4, 1, 311, 10, 3, 3],
            Usage::NetscapeSgc => &[2, 16, 840, 1, 113730, 4, 1],
            _ => return None,
        })
    }

    /// `signing`, `key encipherment`, `server auth`: a TLS serving certificate.
    pub const SERVER: &'static [Usage] = &[
        Usage::DigitalSignature,
        Usage::KeyEncipherment,
        Usage::ServerAuth,
    ];

    /// `signing`, `key encipherment`, `client auth`: a TLS client certificate (the front-proxy
    /// profile of the cfssl guides).
    pub const CLIENT: &'static [Usage] = &[
        Usage::DigitalSignature,
        Usage::KeyEncipherment,
        Usage::ClientAuth,
    ];

    /// `cert sign`, `crl sign`: what `cfssl gencert -initca` gives a root CA.
    pub const CA: &'static [Usage] = &[Usage::CertSign, Usage::CrlSign];
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cfssl_name())
    }
}

/// Splits usages into Go's KeyUsage bit set and the EKU list (in the order given, duplicates
/// dropped), exactly as cfssl's `SigningProfile.Usages` does.
pub(crate) fn split(usages: &[Usage]) -> (u16, Vec<Usage>) {
    let mut ku = 0u16;
    let mut eku: Vec<Usage> = Vec::new();
    for u in usages {
        if let Some(bit) = u.key_usage_bit() {
            ku |= bit;
        } else if !eku.contains(u) {
            eku.push(*u);
        }
    }
    (ku, eku)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_to_one_extension() {
        for (name, usage) in NAMES {
            assert_eq!(Usage::from_cfssl(name).ok(), Some(*usage));
            assert!(
                usage.key_usage_bit().is_some() != usage.eku_oid().is_some(),
                "{name} must be exactly one of KU / EKU"
            );
        }
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        let msg = Usage::from_cfssl("client-auth")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("\"client-auth\"") && msg.contains("\"client auth\""),
            "{msg}"
        );
    }

    #[test]
    fn split_matches_cfssl_for_the_seed_profile() {
        let (ku, eku) = split(&[
            Usage::DigitalSignature,
            Usage::KeyEncipherment,
            Usage::ClientAuth,
        ]);
        assert_eq!(ku, 0b101);
        assert_eq!(eku, vec![Usage::ClientAuth]);
    }
}
