//! A minimal DER writer and reader: enough for certificates, CSRs, and the PKCS#1 / SEC1 /
//! PKCS#8 key containers. We write certificates ourselves (rather than through rcgen's
//! `CertificateParams`) because cfssl compatibility needs byte-level control: multi-valued RDNs,
//! Go's PrintableString/UTF8String choice, the issuer copied verbatim from the CA, and Go's
//! extension order.

/// Universal tags used here.
pub(crate) mod tag {
    pub const BOOLEAN: u8 = 0x01;
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const UTC_TIME: u8 = 0x17;
    pub const GENERALIZED_TIME: u8 = 0x18;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
}

/// One TLV with the given tag and content.
pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A SEQUENCE of already-encoded elements.
pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag::SEQUENCE, &parts.concat())
}

/// A SET of already-encoded elements, sorted as DER requires for SET OF.
pub(crate) fn set_of(mut parts: Vec<Vec<u8>>) -> Vec<u8> {
    parts.sort();
    tlv(tag::SET, &parts.concat())
}

/// A context-specific constructed tag (`[n]` EXPLICIT, or IMPLICIT over a constructed type).
pub(crate) fn context_constructed(n: u8, content: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, content)
}

/// A context-specific primitive tag (`[n]` IMPLICIT over a primitive type).
pub(crate) fn context_primitive(n: u8, content: &[u8]) -> Vec<u8> {
    tlv(0x80 | n, content)
}

/// An OBJECT IDENTIFIER from its arcs.
pub(crate) fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    if arcs.len() >= 2 {
        encode_base128(arcs[0] * 40 + arcs[1], &mut body);
        for arc in &arcs[2..] {
            encode_base128(*arc, &mut body);
        }
    }
    tlv(tag::OID, &body)
}

fn encode_base128(mut v: u64, out: &mut Vec<u8>) {
    let mut tmp = [0u8; 10];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            break;
        }
    }
    let last = tmp.len() - 1;
    for (j, b) in tmp.iter().enumerate().skip(i) {
        out.push(if j == last { *b } else { *b | 0x80 });
    }
}

/// A non-negative INTEGER from big-endian magnitude bytes (leading zeros are trimmed and a zero
/// byte is added when the high bit is set, as `big.Int` marshals).
pub(crate) fn uint(bytes: &[u8]) -> Vec<u8> {
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let trimmed = &bytes[skip..];
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.is_empty() || trimmed[0] & 0x80 != 0 {
        body.push(0);
    }
    body.extend_from_slice(trimmed);
    tlv(tag::INTEGER, &body)
}

/// A small non-negative INTEGER.
pub(crate) fn small_uint(v: u64) -> Vec<u8> {
    uint(&v.to_be_bytes())
}

/// A BOOLEAN.
pub(crate) fn boolean(v: bool) -> Vec<u8> {
    tlv(tag::BOOLEAN, &[if v { 0xff } else { 0 }])
}

/// NULL.
pub(crate) fn null() -> Vec<u8> {
    tlv(tag::NULL, &[])
}

/// An OCTET STRING.
pub(crate) fn octet_string(bytes: &[u8]) -> Vec<u8> {
    tlv(tag::OCTET_STRING, bytes)
}

/// A BIT STRING whose content is whole bytes.
pub(crate) fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 1);
    body.push(0);
    body.extend_from_slice(bytes);
    tlv(tag::BIT_STRING, &body)
}

/// A BIT STRING holding `bit_len` bits of `bytes` (the rest of the last byte unused).
pub(crate) fn bit_string_bits(bytes: &[u8], bit_len: usize) -> Vec<u8> {
    let used = bit_len.div_ceil(8);
    let unused = (used * 8 - bit_len) as u8;
    let mut body = Vec::with_capacity(used + 1);
    body.push(unused);
    body.extend_from_slice(&bytes[..used]);
    tlv(tag::BIT_STRING, &body)
}

/// A string in the type Go's `encoding/asn1` picks for a plain Go string: PrintableString when
/// every character is in PrintableString's alphabet (Go also rejects `*` and `&` here),
/// otherwise UTF8String.
pub(crate) fn go_string(s: &str) -> Vec<u8> {
    if s.bytes().all(is_printable) {
        tlv(tag::PRINTABLE_STRING, s.as_bytes())
    } else {
        tlv(tag::UTF8_STRING, s.as_bytes())
    }
}

fn is_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b' ' | b'\'' | b'(' | b')' | b'+' | b',' | b'-' | b'.' | b'/' | b':' | b'=' | b'?'
        )
}

/// A time as RFC 5280 §4.1.2.5 requires: UTCTime through 2049, GeneralizedTime from 2050.
pub(crate) fn time(t: jiff::Timestamp) -> Vec<u8> {
    let dt = t.to_zoned(jiff::tz::TimeZone::UTC);
    let year = dt.year();
    if (1950..2050).contains(&year) {
        let s = format!(
            "{:02}{:02}{:02}{:02}{:02}{:02}Z",
            year % 100,
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        tlv(tag::UTC_TIME, s.as_bytes())
    } else {
        let s = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}Z",
            year,
            dt.month(),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        tlv(tag::GENERALIZED_TIME, s.as_bytes())
    }
}

/// A parse error from [`Reader`]; the caller wraps it with the input's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DerError(pub &'static str);

/// A cursor over DER bytes that reads one TLV at a time.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(input: &'a [u8]) -> Self {
        Reader { rest: input }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element's tag without consuming it.
    pub(crate) fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Reads one TLV, returning its tag and content.
    pub(crate) fn read_any(&mut self) -> Result<(u8, &'a [u8]), DerError> {
        let (&tag, after_tag) = self.rest.split_first().ok_or(DerError("truncated"))?;
        let (&first, mut after_len) = after_tag.split_first().ok_or(DerError("truncated"))?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || after_len.len() < n {
                return Err(DerError("bad length"));
            }
            let mut len = 0usize;
            for b in &after_len[..n] {
                len = (len << 8) | *b as usize;
            }
            after_len = &after_len[n..];
            len
        };
        if after_len.len() < len {
            return Err(DerError("truncated"));
        }
        let (content, rest) = after_len.split_at(len);
        self.rest = rest;
        Ok((tag, content))
    }

    /// Reads one TLV that must have `want` as its tag.
    pub(crate) fn read(&mut self, want: u8) -> Result<&'a [u8], DerError> {
        let (tag, content) = self.read_any()?;
        if tag != want {
            return Err(DerError("unexpected tag"));
        }
        Ok(content)
    }
}

/// Decodes an OBJECT IDENTIFIER's content into arcs.
pub(crate) fn parse_oid(content: &[u8]) -> Result<Vec<u64>, DerError> {
    let mut arcs = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in content.iter().enumerate() {
        if v > (u64::MAX >> 7) {
            return Err(DerError("OID arc too large"));
        }
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        } else if i + 1 == content.len() {
            return Err(DerError("truncated OID"));
        }
    }
    if arcs.is_empty() {
        return Err(DerError("empty OID"));
    }
    Ok(arcs)
}

/// Strips the sign byte of an INTEGER's content, returning the magnitude.
pub(crate) fn uint_magnitude(content: &[u8]) -> &[u8] {
    let skip = content.iter().take_while(|b| **b == 0).count();
    &content[skip..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_use_short_and_long_forms() {
        assert_eq!(tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = tlv(0x04, &[0u8; 200]);
        assert_eq!(&long[..3], &[0x04, 0x81, 200]);
        let longer = tlv(0x04, &[0u8; 300]);
        assert_eq!(&longer[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut r = Reader::new(&longer);
        assert_eq!(r.read(0x04).map(|c| c.len()), Ok(300));
        assert!(r.is_empty());
    }

    #[test]
    fn oids_round_trip() {
        let arcs = [1u64, 2, 840, 113549, 1, 1, 11];
        let enc = oid(&arcs);
        assert_eq!(
            enc,
            vec![
                0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b
            ]
        );
        let mut r = Reader::new(&enc);
        let content = r.read(tag::OID).unwrap_or_default();
        assert_eq!(parse_oid(content), Ok(arcs.to_vec()));
    }

    #[test]
    fn unsigned_integers_are_minimal_and_positive() {
        assert_eq!(uint(&[0, 0, 5]), vec![0x02, 1, 5]);
        assert_eq!(uint(&[0x80]), vec![0x02, 2, 0, 0x80]);
        assert_eq!(uint(&[]), vec![0x02, 1, 0]);
        assert_eq!(small_uint(65537), vec![0x02, 3, 1, 0, 1]);
    }

    #[test]
    fn strings_follow_go_choice() {
        assert_eq!(go_string("front-proxy-client")[0], tag::PRINTABLE_STRING);
        assert_eq!(go_string("system:masters")[0], tag::PRINTABLE_STRING);
        assert_eq!(go_string("a_b")[0], tag::UTF8_STRING);
        assert_eq!(go_string("a*b")[0], tag::UTF8_STRING);
        assert_eq!(go_string("Zürich")[0], tag::UTF8_STRING);
    }

    #[test]
    fn times_switch_to_generalized_in_2050() {
        let t: jiff::Timestamp = "2049-12-31T23:59:59Z".parse().unwrap_or_default();
        assert_eq!(time(t), tlv(tag::UTC_TIME, b"491231235959Z"));
        let t: jiff::Timestamp = "2126-11-05T02:54:00Z".parse().unwrap_or_default();
        assert_eq!(time(t), tlv(tag::GENERALIZED_TIME, b"21261105025400Z"));
    }

    #[test]
    fn reader_rejects_truncation() {
        assert!(Reader::new(&[0x30, 0x05, 1]).read_any().is_err());
        assert!(Reader::new(&[0x30]).read_any().is_err());
        assert!(
            Reader::new(&[0x30, 0x85, 1, 1, 1, 1, 1])
                .read_any()
                .is_err()
        );
    }
}
