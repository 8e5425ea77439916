//! Entity tags for cached documents: the quoted uppercase hex SHA-512 of the JSON bytes
//! (upstream-behaviour.md §3.6 and §10 item 2; kube-openapi uses the same form).

use aws_lc_rs::digest;

/// `"<UPPERCASE HEX SHA-512>"`, quotes included.
///
/// ```
/// let tag = apimachinery::etag::etag(b"{}");
/// assert!(tag.starts_with('"') && tag.ends_with('"'));
/// assert_eq!(tag.len(), 128 + 2);
/// ```
pub fn etag(bytes: &[u8]) -> String {
    format!("\"{}\"", sha512_hex_upper(bytes))
}

/// Uppercase hex SHA-512 without quotes (the OpenAPI v3 `?hash=` value).
pub fn sha512_hex_upper(bytes: &[u8]) -> String {
    let d = digest::digest(&digest::SHA512, bytes);
    let mut s = String::with_capacity(128);
    for b in d.as_ref() {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Whether `If-None-Match` matches: upstream compares the raw header with the quoted tag as
/// plain strings (no lists, no weak tags).
pub fn if_none_match(header: Option<&str>, tag: &str) -> bool {
    header == Some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        // SHA-512("abc") from FIPS 180-2.
        assert_eq!(
            sha512_hex_upper(b"abc"),
            "DDAF35A193617ABACC417349AE20413112E6FA4E89A97EA20A9EEEE64B55D39A2192992A274FC1A836BA3C23A3FEEBBD454D4423643CE80E2A9AC94FA54CA49F"
        );
        let t = etag(b"abc");
        assert!(if_none_match(Some(&t), &t));
        assert!(!if_none_match(Some(&format!("W/{t}")), &t));
        assert!(!if_none_match(None, &t));
    }
}
