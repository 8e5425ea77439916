//! Extra-key escaping, both directions: client-go's `headerKeyEscape` and k8s.io/apiserver's
//! `unescapeExtraKey` (upstream-behaviour.md §5.5, §10.10).

use std::borrow::Cow;

/// Go's `net/http` token table (RFC 7230 `tchar`), which client-go uses to decide what to escape.
const fn is_token_byte(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`'
        | b'|' | b'~' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z')
}

/// client-go escapes `%` too, because the receiver's `PathUnescape` fails on a stray `%`.
const fn should_escape(b: u8) -> bool {
    !is_token_byte(b) || b == b'%'
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

pub(crate) fn push_escaped(buf: &mut Vec<u8>, key: &str) {
    for &b in key.as_bytes() {
        if should_escape(b) {
            buf.extend_from_slice(&[
                b'%',
                HEX_UPPER[usize::from(b >> 4)],
                HEX_UPPER[usize::from(b & 0xf)],
            ]);
        } else {
            buf.push(b);
        }
    }
}

/// The escaped form, borrowing the key when nothing needs escaping.
fn escape_extra_key_cow(key: &str) -> Cow<'_, str> {
    if !key.bytes().any(should_escape) {
        return Cow::Borrowed(key);
    }
    let mut buf = Vec::with_capacity(key.len() + 8);
    push_escaped(&mut buf, key);
    // Every byte pushed is ASCII (a token byte or `%XX`), so this cannot fail; fall back to the
    // lossy form rather than panic should that ever change.
    Cow::Owned(
        String::from_utf8(buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Escapes an extra key exactly as client-go does: every byte that is not an RFC 7230 token
/// character, and `%` itself, becomes `%XX` with upper-case hex (upstream-behaviour.md §5.5).
///
/// ```
/// use front_proxy::escape_extra_key;
///
/// assert_eq!(escape_extra_key("authentication.kubernetes.io/pod-name"),
///            "authentication.kubernetes.io%2Fpod-name");
/// assert_eq!(escape_extra_key("100%"), "100%25");
/// assert_eq!(escape_extra_key("scopes"), "scopes");
/// ```
pub fn escape_extra_key(key: &str) -> String {
    escape_extra_key_cow(key).into_owned()
}

/// Decodes an extra-header suffix exactly as k8s.io/apiserver does: lower-case it, then
/// percent-decode it like Go's `url.PathUnescape`; if decoding fails (a `%` not followed by two
/// hex digits, or bytes that are not UTF-8) the lower-cased suffix is used raw. Keys therefore
/// arrive lower-cased (only ASCII letters can be, since everything else was escaped).
///
/// ```
/// use front_proxy::unescape_extra_key;
///
/// assert_eq!(unescape_extra_key("Authentication.kubernetes.io%2fpod-Name"),
///            "authentication.kubernetes.io/pod-name");
/// assert_eq!(unescape_extra_key("bad%zz"), "bad%zz");
/// ```
pub fn unescape_extra_key(suffix: &str) -> String {
    let lower = suffix.to_lowercase();
    match path_unescape(&lower) {
        Some(decoded) => decoded,
        None => lower,
    }
}

/// Go's `url.PathUnescape`: `%XX` decoded, `+` left alone, `None` on a malformed escape.
fn path_unescape(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_value(*bytes.get(i + 1)?)?;
            let lo = hex_value(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

const fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_client_go() {
        assert_eq!(escape_extra_key("a/b c"), "a%2Fb%20c");
        assert_eq!(escape_extra_key("é"), "%C3%A9");
        assert_eq!(escape_extra_key("Mixed.Case_~|`^"), "Mixed.Case_~|`^");
        assert_eq!(escape_extra_key(""), "");
        // `%` is a token byte but is escaped anyway, or the receiver's PathUnescape would choke.
        assert_eq!(escape_extra_key("50%off"), "50%25off");
        assert!(matches!(
            escape_extra_key_cow("scopes"),
            Cow::Borrowed("scopes")
        ));
        // Every control byte and DEL is escaped.
        assert_eq!(escape_extra_key("\u{0}\u{7f}"), "%00%7F");
    }

    #[test]
    fn unescaping_matches_apiserver() {
        assert_eq!(unescape_extra_key("A%2Fb"), "a/b");
        assert_eq!(unescape_extra_key("%C3%A9"), "é");
        assert_eq!(unescape_extra_key("a+b"), "a+b");
        // Truncated or non-hex escapes: raw (lower-cased).
        assert_eq!(unescape_extra_key("X%4"), "x%4");
        assert_eq!(unescape_extra_key("x%"), "x%");
        assert_eq!(unescape_extra_key("x%g1"), "x%g1");
        // Decodes to invalid UTF-8: raw.
        assert_eq!(unescape_extra_key("%FF"), "%ff");
    }
}
