//! Subject names as cfssl builds them: `CN` plus a list of `names` entries, encoded the way Go's
//! `pkix.Name.ToRDNSequence` does (C, ST, L, O, OU, CN, serialNumber, then e-mail; several values
//! of one type share a single multi-valued RDN).

use crate::der;

const OID_C: &[u64] = &[2, 5, 4, 6];
const OID_ST: &[u64] = &[2, 5, 4, 8];
const OID_L: &[u64] = &[2, 5, 4, 7];
const OID_O: &[u64] = &[2, 5, 4, 10];
const OID_OU: &[u64] = &[2, 5, 4, 11];
const OID_CN: &[u64] = &[2, 5, 4, 3];
const OID_SERIAL: &[u64] = &[2, 5, 4, 5];
const OID_EMAIL: &[u64] = &[1, 2, 840, 113549, 1, 9, 1];

/// One entry of a cfssl CSR's `names` list. Empty fields are skipped, as cfssl does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameEntry {
    /// `C`: country.
    pub country: String,
    /// `ST`: state or province.
    pub province: String,
    /// `L`: locality.
    pub locality: String,
    /// `O`: organisation. Kubernetes reads each O of a client certificate as a group.
    pub organization: String,
    /// `OU`: organisational unit.
    pub organizational_unit: String,
    /// `E`: e-mail address (newer cfssl).
    pub email: String,
}

/// A certificate subject: common name, cfssl `names`, and an optional serial number attribute.
///
/// By default empty; use [`Subject::new`] for a CN-only subject.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// `CN`. Kubernetes reads it as the user name of a client certificate.
    pub common_name: String,
    /// cfssl's `names` entries.
    pub names: Vec<NameEntry>,
    /// cfssl's top-level `serialnumber` (the subject attribute, not the certificate serial).
    pub serial_number: String,
}

impl Subject {
    /// A subject with only a common name.
    pub fn new(common_name: impl Into<String>) -> Self {
        Subject {
            common_name: common_name.into(),
            ..Subject::default()
        }
    }

    /// A subject with a common name and one `O` per organisation (Kubernetes groups).
    pub fn with_organizations<S: AsRef<str>>(common_name: impl Into<String>, orgs: &[S]) -> Self {
        Subject {
            common_name: common_name.into(),
            names: orgs
                .iter()
                .map(|o| NameEntry {
                    organization: o.as_ref().to_string(),
                    ..NameEntry::default()
                })
                .collect(),
            serial_number: String::new(),
        }
    }

    /// Whether no attribute at all would be written.
    pub fn is_empty(&self) -> bool {
        self.der_rdns().is_empty()
    }

    fn values(&self, pick: impl Fn(&NameEntry) -> &str) -> Vec<&str> {
        self.names
            .iter()
            .map(pick)
            .filter(|v| !v.is_empty())
            .collect()
    }

    fn der_rdns(&self) -> Vec<Vec<u8>> {
        let mut rdns = Vec::new();
        let mut push = |oid: &[u64], values: Vec<&str>| {
            if values.is_empty() {
                return;
            }
            let atvs: Vec<Vec<u8>> = values
                .iter()
                .map(|v| der::seq(&[&der::oid(oid), &der::go_string(v)]))
                .collect();
            // Go writes the values of one type into one SET in the order given; DER's SET OF
            // sorting is what Go's encoder does too (it sorts SET OF by encoding).
            rdns.push(der::set_of(atvs));
        };
        push(OID_C, self.values(|n| &n.country));
        push(OID_ST, self.values(|n| &n.province));
        push(OID_L, self.values(|n| &n.locality));
        push(OID_O, self.values(|n| &n.organization));
        push(OID_OU, self.values(|n| &n.organizational_unit));
        if !self.common_name.is_empty() {
            push(OID_CN, vec![self.common_name.as_str()]);
        }
        if !self.serial_number.is_empty() {
            push(OID_SERIAL, vec![self.serial_number.as_str()]);
        }
        // ExtraNames (e-mail) come last, one RDN each.
        for email in self.values(|n| &n.email) {
            rdns.push(der::set_of(vec![der::seq(&[
                &der::oid(OID_EMAIL),
                &der::go_string(email),
            ])]));
        }
        rdns
    }

    /// The DER `Name` (RDNSequence).
    pub(crate) fn to_der(&self) -> Vec<u8> {
        let rdns = self.der_rdns();
        let refs: Vec<&[u8]> = rdns.iter().map(Vec::as_slice).collect();
        der::seq(&refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_cfssl_bytes_for_the_seed_ca() {
        // The subject cfssl 1.2.0 wrote for the seed CA CSR (C=CN, ST=BeiJing, L=BeiJing, O=k8s,
        // OU=System, CN=Kubernetes-front-proxy CA), as shown by `openssl asn1parse`: 116 bytes of
        // content, every value a PrintableString, in C/ST/L/O/OU/CN order.
        let s = Subject {
            common_name: "Kubernetes-front-proxy CA".into(),
            names: vec![NameEntry {
                country: "CN".into(),
                province: "BeiJing".into(),
                locality: "BeiJing".into(),
                organization: "k8s".into(),
                organizational_unit: "System".into(),
                email: String::new(),
            }],
            serial_number: String::new(),
        };
        let d = s.to_der();
        assert_eq!(&d[..2], &[0x30, 116]);
        assert_eq!(
            &d[2..17],
            &[
                0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'C', b'N', 0x31,
                0x10
            ]
        );
    }

    #[test]
    fn several_organizations_share_one_rdn() {
        let s = Subject::with_organizations("admin", &["system:masters", "dev"]);
        let d = s.to_der();
        let mut r = der::Reader::new(&d);
        let body = r.read(der::tag::SEQUENCE).unwrap_or_default();
        let mut r = der::Reader::new(body);
        let o = r.read(der::tag::SET).unwrap_or_default();
        let mut inner = der::Reader::new(o);
        let mut count = 0;
        while inner.read(der::tag::SEQUENCE).is_ok() {
            count += 1;
        }
        assert_eq!(count, 2, "both organisations in one multi-valued RDN");
        assert!(r.read(der::tag::SET).is_ok(), "then the CN");
        assert!(r.is_empty());
    }

    #[test]
    fn empty_values_are_skipped() {
        let s = Subject {
            common_name: String::new(),
            names: vec![NameEntry::default()],
            serial_number: String::new(),
        };
        assert!(s.is_empty());
        assert_eq!(s.to_der(), vec![0x30, 0]);
    }
}
