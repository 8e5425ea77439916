//! The one place a resourceVersion string is made from, or turned back into, a revision number.
//!
//! Both back-ends use etcd's model: one global counter, decimal on the wire. Only the canonical
//! form this crate writes is accepted back (no sign, no leading zeros, no spaces), so a string
//! round-trips exactly and two spellings of one revision cannot exist.

use crate::{Error, Result};

/// Formats a revision as its resourceVersion.
pub(crate) fn format(revision: u64) -> String {
    revision.to_string()
}

/// Parses a resourceVersion this crate produced.
pub(crate) fn parse(resource_version: &str) -> Result<u64> {
    let bytes = resource_version.as_bytes();
    let canonical = !bytes.is_empty()
        && bytes.iter().all(u8::is_ascii_digit)
        && (bytes.len() == 1 || bytes[0] != b'0');
    if !canonical {
        return Err(Error::InvalidResourceVersion(resource_version.to_string()));
    }
    resource_version
        .parse()
        .map_err(|_| Error::InvalidResourceVersion(resource_version.to_string()))
}

/// Orders two resourceVersions.
pub(crate) fn compare(a: &str, b: &str) -> Result<std::cmp::Ordering> {
    Ok(parse(a)?.cmp(&parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn round_trips_canonical_decimals() {
        for n in [0, 1, 9, 10, 12345, u64::MAX] {
            assert_eq!(parse(&format(n)).ok(), Some(n));
        }
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            " 1",
            "1 ",
            "+1",
            "-1",
            "01",
            "00",
            "1.0",
            "0x10",
            "abc",
            "18446744073709551616",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidResourceVersion(ref s)) if s == bad),
                "{bad:?} must be rejected"
            );
        }
    }

    #[test]
    fn compares_numerically_not_lexically() {
        assert_eq!(compare("9", "10").ok(), Some(Ordering::Less));
        assert_eq!(compare("10", "10").ok(), Some(Ordering::Equal));
        assert_eq!(compare("100", "99").ok(), Some(Ordering::Greater));
        assert!(compare("1", "x").is_err());
    }
}
