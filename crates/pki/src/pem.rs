//! PEM blocks in and out. Written by hand (not `rustls-pki-types`) so that errors can name the
//! block labels actually found, e.g. an `ENCRYPTED PRIVATE KEY` we cannot use.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, Result};

/// One `-----BEGIN LABEL-----` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block {
    pub label: String,
    pub der: Vec<u8>,
}

/// Encodes DER as a PEM block with 64-column lines, as Go's `pem.Encode` does.
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    let bytes = b64.as_bytes();
    for chunk in bytes.chunks(64) {
        // base64 output is ASCII, so every chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

/// All PEM blocks in `text`, in order. Text outside blocks is ignored (like Go's `pem.Decode`);
/// PEM headers such as `Proc-Type` are rejected, because they mean an encrypted legacy key.
pub(crate) fn parse(what: &str, text: &str) -> Result<Vec<Block>> {
    let mut blocks = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut b64 = String::new();
        let mut closed = false;
        for body in lines.by_ref() {
            let body = body.trim();
            if body == end {
                closed = true;
                break;
            }
            if body.contains(':') {
                return Err(Error::Pem {
                    what: what.to_string(),
                    message: format!(
                        "{label} block has PEM headers ({body}); encrypted keys are not supported"
                    ),
                });
            }
            b64.push_str(body);
        }
        if !closed {
            return Err(Error::Pem {
                what: what.to_string(),
                message: format!("{label} block has no END line"),
            });
        }
        let der = STANDARD.decode(b64.as_bytes()).map_err(|e| Error::Pem {
            what: what.to_string(),
            message: format!("{label} block is not valid base64: {e}"),
        })?;
        blocks.push(Block {
            label: label.to_string(),
            der,
        });
    }
    Ok(blocks)
}

/// The DER of every block labelled `label` (at least one).
pub(crate) fn all_of(what: &str, text: &str, label: &str) -> Result<Vec<Vec<u8>>> {
    let blocks = parse(what, text)?;
    let found: Vec<Vec<u8>> = blocks
        .iter()
        .filter(|b| b.label == label)
        .map(|b| b.der.clone())
        .collect();
    if found.is_empty() {
        return Err(Error::Pem {
            what: what.to_string(),
            message: format!("no {label} block found{}", describe_labels(&blocks)),
        });
    }
    Ok(found)
}

/// " (found: A, B)" or " (no PEM blocks at all)", for error messages.
pub(crate) fn describe_labels(blocks: &[Block]) -> String {
    if blocks.is_empty() {
        " (no PEM blocks at all)".to_string()
    } else {
        let labels: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
        format!(" (found: {})", labels.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_wraps_at_64() {
        let der: Vec<u8> = (0..=255u8).collect();
        let text = encode("CERTIFICATE", &der);
        assert!(
            text.lines()
                .all(|l| l.len() <= 64 || l.starts_with("-----"))
        );
        let blocks = parse("x", &text).unwrap_or_default();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].der, der);
        assert_eq!(blocks[0].label, "CERTIFICATE");
    }

    #[test]
    fn reports_what_it_found() {
        let text = encode("ENCRYPTED PRIVATE KEY", &[1, 2, 3]);
        let err = all_of("key.pem", &text, "PRIVATE KEY").map(|_| ());
        let msg = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("found: ENCRYPTED PRIVATE KEY"), "{msg}");
        let msg = all_of("key.pem", "hello", "CERTIFICATE")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("no PEM blocks at all"), "{msg}");
    }

    #[test]
    fn rejects_bad_base64_and_missing_end() {
        assert!(parse("x", "-----BEGIN A-----\n!!!!\n-----END A-----\n").is_err());
        assert!(parse("x", "-----BEGIN A-----\nAAAA\n").is_err());
    }
}
