//! The writer side (what the aggregator's proxy sends) against the reader side (what an extension
//! server authenticates), over arbitrary users.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use front_proxy::test_util::{TestCa, TestCert};
use front_proxy::{
    Authenticator, HeaderNames, UserInfo, escape_extra_key, unescape_extra_key, write_identity,
};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;

struct Pki {
    auth: Authenticator,
    proxy: TestCert,
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = TestCa::new("front-proxy-ca").unwrap_or_else(|e| panic!("{e}"));
        Pki {
            auth: Authenticator::new(ca.request_header_config(&["front-proxy-client"]))
                .unwrap_or_else(|e| panic!("{e}")),
            proxy: ca
                .client_cert("front-proxy-client")
                .unwrap_or_else(|e| panic!("{e}")),
        }
    })
}

/// Keys: arbitrary Unicode, and a mix weighted towards what needs escaping (`%`, `/`, spaces,
/// upper case) and what real clusters send.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9%/._~ :+-]{0,24}",
        Just("authentication.kubernetes.io/pod-name".to_owned()),
        Just("Scopes".to_owned()),
        Just("100%".to_owned()),
    ]
}

/// Values: anything an HTTP header value may hold (no control characters except tab, no DEL).
fn value() -> impl Strategy<Value = String> {
    "[^\\x00-\\x08\\x0A-\\x1F\\x7F]{0,12}"
}

fn user() -> impl Strategy<Value = UserInfo> {
    (
        "[^\\x00-\\x08\\x0A-\\x1F\\x7F]{1,16}",
        value(),
        vec(value(), 0..4),
        btree_map(key(), vec(value(), 0..3), 0..6),
    )
        .prop_map(|(name, uid, groups, extra)| UserInfo {
            name,
            uid,
            groups,
            extra,
        })
}

/// What upstream's reader makes of a user written by client-go: empty groups are dropped, keys
/// without values vanish (no header line carries them), and keys come back with their ASCII
/// letters lower-cased (the receiver lower-cases the header suffix before decoding; everything
/// else was percent-escaped, so survives). Keys equal up to case merge, values in writing order.
fn as_upstream_reads_it(user: &UserInfo) -> UserInfo {
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, values) in &user.extra {
        if !values.is_empty() {
            extra
                .entry(key.to_ascii_lowercase())
                .or_default()
                .extend(values.iter().cloned());
        }
    }
    UserInfo {
        name: user.name.clone(),
        uid: user.uid.clone(),
        groups: user
            .groups
            .iter()
            .filter(|g| !g.is_empty())
            .cloned()
            .collect(),
        extra,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// write_identity (the aggregator's proxy) → authenticate (the extension server) gives the user
    /// back, extra keys lower-cased as upstream.
    #[test]
    fn writer_then_reader_round_trips(user in user()) {
        let pki = pki();
        let mut request = pki.proxy.proxied_request(Request::new(()), &user)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let got = pki.auth.authenticate(&pki.proxy.chain, request.headers_mut())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(got, as_upstream_reads_it(&user));
        prop_assert!(request.headers().is_empty());
    }

    /// Escaping yields a valid header-name suffix, and decoding gives the key lower-cased.
    #[test]
    fn escape_then_unescape_is_ascii_lowercase(key in key()) {
        let escaped = escape_extra_key(&key);
        let name = format!("X-Remote-Extra-{escaped}");
        prop_assert!(HeaderName::from_bytes(name.as_bytes()).is_ok(), "{}", name);
        prop_assert_eq!(unescape_extra_key(&escaped), key.to_ascii_lowercase());
        // Go then re-cases the header name on the wire; that must not matter either.
        prop_assert_eq!(unescape_extra_key(&escaped.to_ascii_uppercase()), key.to_ascii_lowercase());
    }

    /// Whatever identity headers a client sends, none survives the writer: only the user's own.
    #[test]
    fn spoofed_identity_never_survives_the_writer(
        spoofed in vec(("(X-Remote-(User|Uid|Group)|x-remote-extra-[a-z0-9%.-]{0,10}|X-REMOTE-EXTRA-[A-Z]{1,5})", "[a-z]{0,8}"), 0..8),
        user in user(),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &spoofed {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let value = HeaderValue::from_str(value).map_err(|e| TestCaseError::fail(e.to_string()))?;
            headers.append(name, value);
        }
        write_identity(&mut headers, &user, &HeaderNames::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut expected = HeaderMap::new();
        write_identity(&mut expected, &user, &HeaderNames::default())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(headers, expected);
    }
}

#[test]
fn known_extra_keys_arrive_as_upstream_documents() -> Result<(), Box<dyn std::error::Error>> {
    let pki = pki();
    let mut user = UserInfo::new("system:serviceaccount:kube-system:metrics");
    for key in [
        "authentication.kubernetes.io/pod-name",
        "authentication.kubernetes.io/pod-uid",
        "authentication.kubernetes.io/node-name",
        "authentication.kubernetes.io/credential-id",
    ] {
        user.extra.insert(key.into(), vec!["x".into()]);
    }
    user.extra.insert(
        "Scopes".into(),
        vec!["user:info".into(), "user:check-access".into()],
    );
    let mut request = pki.proxy.proxied_request(Request::new(()), &user)?;
    assert!(
        request
            .headers()
            .contains_key("x-remote-extra-authentication.kubernetes.io%2fpod-name")
    );
    let got = pki
        .auth
        .authenticate(&pki.proxy.chain, request.headers_mut())?;
    assert_eq!(got.extra["authentication.kubernetes.io/pod-name"], ["x"]);
    assert_eq!(got.extra["scopes"], ["user:info", "user:check-access"]);
    assert!(!got.extra.contains_key("Scopes"));
    Ok(())
}
