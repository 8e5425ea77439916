//! Who is calling: request-header (a verified front proxy), x509 client certificates (CN → user,
//! O → groups), static bearer tokens (`--token-auth-file`), then anonymous if allowed.
//!
//! The union follows `k8s.io/apiserver` (upstream-behaviour.md §6.2): authenticators run in that
//! order and the first success wins; when none succeeds and any of them *failed* (a bad
//! certificate, an unknown token), the answer is 401 and anonymous is not tried. Every success
//! gets `system:authenticated`. The `Authorization` header is removed after a success and the
//! request-header identity headers are always removed, so neither can reach a backend.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use front_proxy::{HeaderNames, RequestHeaderConfig, UserInfo};
use http::HeaderMap;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};

use crate::config::{Config, RequestHeaderFlags};
use crate::error::Error;

/// The user of unauthenticated requests when `--anonymous-auth` is on.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// The group of unauthenticated requests.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";

/// Builds the request-header authenticator from flags, with the standard header names when a
/// list is empty (see [`RequestHeaderFlags`]).
pub fn request_header_authenticator(
    flags: &RequestHeaderFlags,
) -> Result<front_proxy::Authenticator, Error> {
    let or = |v: &Vec<String>, d: &str| {
        if v.is_empty() {
            vec![d.to_owned()]
        } else {
            v.clone()
        }
    };
    let config = RequestHeaderConfig::from_flags(
        &flags.client_ca_file,
        &flags.allowed_names,
        &or(&flags.username_headers, front_proxy::X_REMOTE_USER.as_str()),
        &flags.uid_headers,
        &or(&flags.group_headers, front_proxy::X_REMOTE_GROUP.as_str()),
        &or(
            &flags.extra_headers_prefix,
            front_proxy::X_REMOTE_EXTRA_PREFIX,
        ),
    )
    .map_err(Error::RequestHeader)?;
    front_proxy::Authenticator::new(config).map_err(Error::RequestHeader)
}

/// One line of a token file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TokenUser {
    name: String,
    uid: String,
    groups: Vec<String>,
}

/// `--token-auth-file`: kube-apiserver's static token CSV, `token,user,uid[,"group1,group2"]`.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenFile {
    tokens: HashMap<String, TokenUser>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFile")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl TokenFile {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<TokenFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        TokenFile::parse(&text).map_err(|m| Error::parse(path, m))
    }

    /// Parses CSV as Go's `encoding/csv` with `TrimLeadingSpace` does: quoted fields may hold
    /// commas; each record needs at least 3 columns; an empty token is skipped; a later
    /// duplicate token wins (upstream warns and does the same).
    pub fn parse(text: &str) -> Result<TokenFile, String> {
        let mut tokens = HashMap::new();
        for (lineno, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record = parse_csv_line(line).map_err(|e| format!("line {}: {e}", lineno + 1))?;
            if record.len() < 3 {
                return Err(format!(
                    "line {}: must have at least 3 columns (token, user name, user uid), found {}",
                    lineno + 1,
                    record.len()
                ));
            }
            if record[0].is_empty() {
                tracing::warn!(line = lineno + 1, "empty token in token file; skipped");
                continue;
            }
            let groups = match record.get(3) {
                Some(g) => g.split(',').map(str::to_owned).collect(),
                None => Vec::new(),
            };
            tokens.insert(
                record[0].clone(),
                TokenUser {
                    name: record[1].clone(),
                    uid: record[2].clone(),
                    groups,
                },
            );
        }
        Ok(TokenFile { tokens })
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    fn lookup(&self, token: &str) -> Option<UserInfo> {
        let u = self.tokens.get(token)?;
        Some(UserInfo {
            name: u.name.clone(),
            uid: u.uid.clone(),
            groups: u.groups.clone(),
            extra: Default::default(),
        })
    }
}

fn parse_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') || chars.peek() == Some(&'\t') {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("extraneous or missing \" in quoted-field".into()),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err("extraneous or missing \" in quoted-field".into()),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim_end_matches('\r').to_owned());
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => return Err("bare \" in non-quoted-field".into()),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

/// x509 client certificates verified against `--client-ca-file` only (a certificate from the
/// request-header CA passes the TLS handshake but is no user here).
#[derive(Debug, Clone)]
pub struct X509Authenticator {
    anchors: Vec<TrustAnchor<'static>>,
}

impl X509Authenticator {
    /// From a CA bundle.
    pub fn new(roots: &[CertificateDer<'static>]) -> Result<Self, Error> {
        let mut anchors = Vec::new();
        for c in roots {
            let a = webpki::anchor_from_trusted_cert(c)
                .map_err(|e| Error::Tls(format!("client CA: {e}")))?;
            anchors.push(a.to_owned());
        }
        Ok(X509Authenticator { anchors })
    }

    /// `Ok(None)`: not applicable (no certificate, or no CN); `Err`: the chain is invalid.
    pub fn authenticate(&self, chain: &[CertificateDer<'_>]) -> Result<Option<UserInfo>, String> {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Ok(None);
        };
        let ee = webpki::EndEntityCert::try_from(leaf).map_err(|e| format!("x509: {e}"))?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            intermediates,
            UnixTime::since_unix_epoch(now),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| format!("x509: {e}"))?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| format!("x509: {e}"))?;
        let subject = cert.subject();
        let cn = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_owned();
        if cn.is_empty() {
            return Ok(None);
        }
        let groups = subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect();
        Ok(Some(UserInfo {
            name: cn,
            uid: String::new(),
            groups,
            extra: Default::default(),
        }))
    }
}

/// The x509 result of one connection: its certificate chain never changes, so it is verified
/// once and reused for a while (signature checks are the most expensive part of a request).
#[derive(Debug, Default)]
pub struct ConnCache {
    x509: std::sync::Mutex<Option<(std::time::Instant, X509Result)>>,
}

type X509Result = Result<Option<UserInfo>, String>;

/// How long a connection's x509 result is reused before the chain is verified again (so a
/// certificate that expires on a long-lived connection stops working soon after).
const X509_CACHE_TTL: Duration = Duration::from_secs(60);

/// Why a request could not be authenticated (answered with 401; logged, never sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthenticated(pub String);

/// The union of all configured authenticators.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    request_header: Option<front_proxy::Authenticator>,
    x509: Option<X509Authenticator>,
    tokens: Option<TokenFile>,
    /// `--authentication-kubeconfig`: TokenReview for bearer tokens the token file does not
    /// know (after it, before anonymous).
    token_review: Option<std::sync::Arc<crate::cluster::tokenreview::TokenReviewAuthenticator>>,
    anonymous: bool,
}

/// What the synchronous authenticators found.
struct Pass {
    user: Option<UserInfo>,
    errors: Vec<String>,
    /// A bearer token no local authenticator knows, for TokenReview.
    unknown_token: Option<String>,
}

impl Authenticator {
    /// Builds every authenticator the configuration asks for.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let request_header = config
            .request_header
            .as_ref()
            .map(request_header_authenticator)
            .transpose()?;
        let x509 = match &config.client_ca_file {
            Some(ca) => Some(X509Authenticator::new(&crate::tls::load_ca_bundle(ca)?)?),
            None => None,
        };
        let tokens = config
            .token_auth_file
            .as_deref()
            .map(TokenFile::load)
            .transpose()?;
        Ok(Authenticator {
            request_header,
            x509,
            tokens,
            token_review: None,
            anonymous: config.anonymous_auth,
        })
    }

    /// An authenticator from parts (tests, embedding).
    pub fn new(
        request_header: Option<front_proxy::Authenticator>,
        x509: Option<X509Authenticator>,
        tokens: Option<TokenFile>,
        anonymous: bool,
    ) -> Self {
        Authenticator {
            request_header,
            x509,
            tokens,
            token_review: None,
            anonymous,
        }
    }

    /// Adds TokenReview (`--authentication-kubeconfig`) for bearer tokens the token file does
    /// not know; use [`Authenticator::authenticate_request`] then.
    pub fn with_token_review(
        mut self,
        token_review: std::sync::Arc<crate::cluster::tokenreview::TokenReviewAuthenticator>,
    ) -> Self {
        self.token_review = Some(token_review);
        self
    }

    /// The whole union including TokenReview (k8s.io/apiserver order: request-header → x509 →
    /// token file → TokenReview → anonymous). A token TokenReview rejects, or a review that
    /// cannot be made, is 401 (never anonymous).
    pub async fn authenticate_request(
        &self,
        peer: &[CertificateDer<'_>],
        headers: &mut HeaderMap,
        cache: Option<&ConnCache>,
    ) -> Result<UserInfo, Unauthenticated> {
        let mut pass = self.pass(peer, headers, cache);
        if let Some(token) = pass.unknown_token.take() {
            match (&self.token_review, pass.user.is_none()) {
                (Some(review), true) => match review.authenticate(&token).await {
                    Ok(Some(u)) => pass.user = Some(u),
                    Ok(None) => pass.errors.push("invalid bearer token".into()),
                    Err(e) => pass.errors.push(e),
                },
                _ => pass.errors.push("invalid bearer token".into()),
            }
        }
        self.finish(pass, headers)
    }

    /// The header names of the request-header authenticator (to scrub), or the defaults.
    pub fn request_header_names(&self) -> HeaderNames {
        self.request_header
            .as_ref()
            .map(|a| a.headers().clone())
            .unwrap_or_default()
    }

    /// Authenticates a request from its TLS peer chain and headers, removing credentials and
    /// identity headers from `headers`.
    pub fn authenticate(
        &self,
        peer: &[CertificateDer<'_>],
        headers: &mut HeaderMap,
    ) -> Result<UserInfo, Unauthenticated> {
        self.authenticate_cached(peer, headers, None)
    }

    /// [`Authenticator::authenticate`], reusing the connection's x509 result from `cache`.
    pub fn authenticate_cached(
        &self,
        peer: &[CertificateDer<'_>],
        headers: &mut HeaderMap,
        cache: Option<&ConnCache>,
    ) -> Result<UserInfo, Unauthenticated> {
        let mut pass = self.pass(peer, headers, cache);
        if pass.unknown_token.take().is_some() {
            pass.errors.push("invalid bearer token".into());
        }
        self.finish(pass, headers)
    }

    fn pass(
        &self,
        peer: &[CertificateDer<'_>],
        headers: &mut HeaderMap,
        cache: Option<&ConnCache>,
    ) -> Pass {
        let mut errors: Vec<String> = Vec::new();
        let mut unknown_token = None;
        let mut user = None;

        if let Some(rh) = &self.request_header {
            // Strips the request-header identity headers whatever the outcome.
            match rh.authenticate(peer, headers) {
                Ok(u) => user = Some(u),
                Err(r) if r.is_not_applicable() => {}
                Err(r) => errors.push(format!("request-header: {r}")),
            }
        }
        // Never let client-sent identity headers survive, configured or not.
        front_proxy::strip_identity(headers, default_header_names());

        if user.is_none()
            && let Some(x) = &self.x509
        {
            let result = match cache {
                Some(c) => {
                    let mut slot = c.x509.lock().unwrap_or_else(|p| p.into_inner());
                    match slot.as_ref() {
                        Some((at, r)) if at.elapsed() < X509_CACHE_TTL => r.clone(),
                        _ => {
                            let r = x.authenticate(peer);
                            *slot = Some((std::time::Instant::now(), r.clone()));
                            r
                        }
                    }
                }
                None => x.authenticate(peer),
            };
            match result {
                Ok(Some(u)) => user = Some(u),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        if user.is_none()
            && (self.tokens.is_some() || self.token_review.is_some())
            && let Some(token) = bearer_token(headers)
        {
            match self.tokens.as_ref().and_then(|t| t.lookup(&token)) {
                Some(u) => user = Some(u),
                None => unknown_token = Some(token),
            }
        }
        Pass {
            user,
            errors,
            unknown_token,
        }
    }

    fn finish(&self, pass: Pass, headers: &mut HeaderMap) -> Result<UserInfo, Unauthenticated> {
        let Pass { user, errors, .. } = pass;
        if let Some(mut u) = user {
            headers.remove(http::header::AUTHORIZATION);
            u.ensure_authenticated_group();
            return Ok(u);
        }
        if !errors.is_empty() {
            return Err(Unauthenticated(errors.join("; ")));
        }
        if self.anonymous {
            return Ok(UserInfo {
                name: ANONYMOUS_USER.into(),
                uid: String::new(),
                groups: vec![UNAUTHENTICATED_GROUP.into()],
                extra: Default::default(),
            });
        }
        Err(Unauthenticated("no credentials".into()))
    }
}

/// `HeaderNames::default()`, built once: it allocates, and stripping runs per request.
fn default_header_names() -> &'static HeaderNames {
    static NAMES: std::sync::OnceLock<HeaderNames> = std::sync::OnceLock::new();
    NAMES.get_or_init(HeaderNames::default)
}

/// `Authorization: Bearer <token>` (scheme case-insensitive), as upstream's bearertoken
/// authenticator reads it; `None` when absent or empty.
fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let mut parts = value.splitn(3, ' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return None;
    }
    Some(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_csv() {
        let f = TokenFile::parse(
            "t1,alice,u1,\"dev,ops\"\n  t2, bob ,u2\n\n,empty,u3\nt3,carol,u4,admins\n",
        );
        let f = match f {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(f.len(), 3);
        let a = f.lookup("t1").unwrap_or_default();
        assert_eq!(a.name, "alice");
        assert_eq!(a.uid, "u1");
        assert_eq!(a.groups, ["dev", "ops"]);
        let b = f.lookup("t2").unwrap_or_default();
        assert_eq!(b.name, "bob ");
        assert!(b.groups.is_empty());
        assert_eq!(
            f.lookup("t3").map(|u| u.groups),
            Some(vec!["admins".to_string()])
        );
        assert!(TokenFile::parse("t,u\n").is_err_and(|e| e.contains("at least 3 columns")));
        assert!(TokenFile::parse("t,\"u,x\n").is_err());
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_token(&h).as_deref(), Some("abc"));
        h.insert(
            "authorization",
            http::HeaderValue::from_static("bearer abc extra"),
        );
        assert_eq!(bearer_token(&h).as_deref(), Some("abc"));
        h.insert("authorization", http::HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
        h.insert("authorization", http::HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn union_semantics() {
        let tokens = TokenFile::parse("good,alice,u1,dev\n").ok();
        let auth = Authenticator::new(None, None, tokens.clone(), false);
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer good"),
        );
        h.insert("x-remote-user", http::HeaderValue::from_static("mallory"));
        let u = auth.authenticate(&[], &mut h).unwrap_or_default();
        assert_eq!(u.name, "alice");
        assert_eq!(u.groups, ["dev", "system:authenticated"]);
        assert!(h.get("authorization").is_none(), "credentials are removed");
        assert!(
            h.get("x-remote-user").is_none(),
            "spoofed identity headers are removed"
        );

        // A bad token fails even with anonymous on (no fall-back after an error).
        let anon = Authenticator::new(None, None, tokens, true);
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            http::HeaderValue::from_static("Bearer bad"),
        );
        assert!(anon.authenticate(&[], &mut h).is_err());
        let mut h = HeaderMap::new();
        let u = anon.authenticate(&[], &mut h).unwrap_or_default();
        assert_eq!(u.name, "system:anonymous");
        assert_eq!(u.groups, ["system:unauthenticated"]);

        let none = Authenticator::default();
        assert!(none.authenticate(&[], &mut HeaderMap::new()).is_err());
    }

    /// Knows one token; `down` fails every review.
    struct Review(bool);

    impl crate::cluster::tokenreview::TokenReviewer for Review {
        fn review(
            &self,
            token: String,
        ) -> crate::forward::BoxFuture<
            Result<k8s_openapi::api::authentication::v1::TokenReviewStatus, String>,
        > {
            let down = self.0;
            Box::pin(async move {
                if down {
                    return Err("TokenReview: connection refused".into());
                }
                Ok(k8s_openapi::api::authentication::v1::TokenReviewStatus {
                    authenticated: Some(token == "sa"),
                    user: (token == "sa").then(|| k8s_openapi::api::authentication::v1::UserInfo {
                        username: Some("system:serviceaccount:ns:sa".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
            })
        }
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&format!("Bearer {token}")) {
            h.insert("authorization", v);
        }
        h
    }

    #[tokio::test]
    async fn token_review_comes_after_the_token_file_and_fails_closed() {
        use crate::cluster::tokenreview::TokenReviewAuthenticator;
        use std::sync::Arc;
        let tokens = TokenFile::parse("good,alice,u1,dev\n").ok();
        let review = |down| {
            Arc::new(TokenReviewAuthenticator::new(
                Arc::new(Review(down)),
                Duration::from_secs(10),
            ))
        };
        let auth =
            Authenticator::new(None, None, tokens.clone(), true).with_token_review(review(false));
        let mut h = bearer("good");
        let u = auth.authenticate_request(&[], &mut h, None).await;
        assert_eq!(u.map(|u| u.name).ok().as_deref(), Some("alice"));
        let mut h = bearer("sa");
        let u = auth.authenticate_request(&[], &mut h, None).await;
        assert_eq!(
            u.map(|u| u.groups).ok(),
            Some(vec!["system:authenticated".to_string()])
        );
        assert!(h.get("authorization").is_none(), "credentials are removed");
        // Rejected, or the reviewer down: 401 even with anonymous on.
        assert!(
            auth.authenticate_request(&[], &mut bearer("nope"), None)
                .await
                .is_err()
        );
        let down =
            Authenticator::new(None, None, tokens.clone(), true).with_token_review(review(true));
        assert!(
            down.authenticate_request(&[], &mut bearer("sa"), None)
                .await
                .is_err()
        );
        assert!(
            down.authenticate_request(&[], &mut HeaderMap::new(), None)
                .await
                .is_ok(),
            "no token: anonymous"
        );
        // Without TokenReview an unknown token is still 401.
        let plain = Authenticator::new(None, None, tokens, true);
        assert!(
            plain
                .authenticate_request(&[], &mut bearer("sa"), None)
                .await
                .is_err()
        );
    }
}
