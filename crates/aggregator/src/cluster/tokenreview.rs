//! Delegated authentication (upstream-behaviour.md §6.4): a bearer token no local authenticator
//! recognises is sent to kube-apiserver as an `authentication.k8s.io/v1` TokenReview, so
//! service-account and OIDC tokens work. Answers — authenticated or not — are cached for
//! `--authentication-token-webhook-cache-ttl` (10 s), keyed by the token's SHA-256 (tokens are
//! never kept), in a bounded cache; a failed review is never cached and is a 401 (fail closed).

use apimachinery::ttl_cache::TtlCache;
use std::sync::Arc;
use std::time::Duration;

use front_proxy::UserInfo;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use tokio::time::Instant;

use crate::forward::BoxFuture;

/// Upstream's webhook timeout.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound of cached answers; past it expired entries go, then everything.
pub const CACHE_CAPACITY: usize = apimachinery::ttl_cache::DEFAULT_CAPACITY;

/// Sends one TokenReview.
pub trait TokenReviewer: Send + Sync + 'static {
    /// The review's status for `token`, or why the review could not be made.
    fn review(&self, token: String) -> BoxFuture<Result<TokenReviewStatus, String>>;
}

/// POSTs to `/apis/authentication.k8s.io/v1/tokenreviews` with the client's own credentials.
#[derive(Clone)]
pub struct KubeTokenReviewer {
    api: kube::Api<TokenReview>,
}

impl std::fmt::Debug for KubeTokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeTokenReviewer")
    }
}

impl KubeTokenReviewer {
    /// Reviews through `client`.
    pub fn new(client: kube::Client) -> Self {
        KubeTokenReviewer {
            api: kube::Api::all(client),
        }
    }
}

impl TokenReviewer for KubeTokenReviewer {
    fn review(&self, token: String) -> BoxFuture<Result<TokenReviewStatus, String>> {
        let api = self.api.clone();
        Box::pin(async move {
            let review = TokenReview {
                spec: TokenReviewSpec {
                    token,
                    audiences: None,
                },
                ..TokenReview::default()
            };
            let answer = tokio::time::timeout(
                REVIEW_TIMEOUT,
                api.create(&kube::api::PostParams::default(), &review),
            )
            .await
            .map_err(|_| "TokenReview timed out after 10s".to_owned())?
            .map_err(|e| format!("TokenReview: {e}"))?;
            answer
                .status
                .ok_or_else(|| "TokenReview: the answer has no status".to_owned())
        })
    }
}

type Key = [u8; 32];

/// TokenReview with a TTL cache.
pub struct TokenReviewAuthenticator {
    reviewer: Arc<dyn TokenReviewer>,
    ttl: Duration,
    cache: TtlCache<Key, Option<UserInfo>>,
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

fn key(token: &str) -> Key {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(digest.as_ref());
    k
}

impl TokenReviewAuthenticator {
    /// Caches answers for `ttl` (0 disables the cache).
    pub fn new(reviewer: Arc<dyn TokenReviewer>, ttl: Duration) -> Self {
        TokenReviewAuthenticator {
            reviewer,
            ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }

    /// `Ok(Some(user))` for an authenticated token, `Ok(None)` for one kube-apiserver rejects,
    /// `Err` when the review could not be made.
    pub async fn authenticate(&self, token: &str) -> Result<Option<UserInfo>, String> {
        let k = key(token);
        if let Some(answer) = self.cache.get(&k, Instant::now().into_std()) {
            return Ok(answer);
        }
        let status = self.reviewer.review(token.to_owned()).await?;
        let answer = if status.authenticated == Some(true) {
            let u = status.user.unwrap_or_default();
            Some(UserInfo {
                name: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default().into_iter().collect(),
            })
        } else {
            if let Some(e) = status.error.filter(|e| !e.is_empty()) {
                tracing::debug!(error = %e, "TokenReview rejected a token");
            }
            None
        };
        self.cache
            .insert(k, answer.clone(), self.ttl, Instant::now().into_std());
        Ok(answer)
    }

    /// Cached entries (tests, metrics).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo as KubeUser;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Knows `good`; `down` makes every review fail.
    struct Table {
        calls: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    impl TokenReviewer for Table {
        fn review(&self, token: String) -> BoxFuture<Result<TokenReviewStatus, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let down = self.down.load(Ordering::SeqCst);
            Box::pin(async move {
                if down {
                    return Err("connection refused".into());
                }
                Ok(if token == "good" {
                    TokenReviewStatus {
                        authenticated: Some(true),
                        user: Some(KubeUser {
                            username: Some("system:serviceaccount:ns:sa".into()),
                            uid: Some("u-1".into()),
                            groups: Some(vec!["system:serviceaccounts".into()]),
                            extra: Some(
                                [(
                                    "authentication.kubernetes.io/pod-name".to_owned(),
                                    vec!["p".to_owned()],
                                )]
                                .into_iter()
                                .collect(),
                            ),
                        }),
                        ..TokenReviewStatus::default()
                    }
                } else {
                    TokenReviewStatus {
                        authenticated: Some(false),
                        error: Some("invalid token".into()),
                        ..TokenReviewStatus::default()
                    }
                })
            })
        }
    }

    fn table() -> Arc<Table> {
        Arc::new(Table {
            calls: AtomicUsize::new(0),
            down: std::sync::atomic::AtomicBool::new(false),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_cached_for_the_ttl_and_failures_are_not() -> Result<(), String> {
        let t = table();
        let a = TokenReviewAuthenticator::new(t.clone(), Duration::from_secs(10));
        let u = a.authenticate("good").await?;
        assert_eq!(
            u.as_ref().map(|u| u.name.as_str()),
            Some("system:serviceaccount:ns:sa")
        );
        assert_eq!(u.as_ref().map(|u| u.uid.as_str()), Some("u-1"));
        assert_eq!(
            u.as_ref()
                .and_then(|u| u.extra.get("authentication.kubernetes.io/pod-name"))
                .cloned(),
            Some(vec!["p".to_owned()])
        );
        assert_eq!(a.authenticate("bad").await?, None);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(a.authenticate("good").await?.is_some());
        assert_eq!(a.authenticate("bad").await?, None);
        assert_eq!(t.calls.load(Ordering::SeqCst), 2, "both answers cached");
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(a.authenticate("good").await?.is_some());
        assert_eq!(t.calls.load(Ordering::SeqCst), 3);

        t.down.store(true, Ordering::SeqCst);
        assert!(a.authenticate("new").await.is_err());
        assert!(a.authenticate("new").await.is_err());
        assert_eq!(t.calls.load(Ordering::SeqCst), 5, "errors are not cached");
        assert!(a.authenticate("good").await?.is_some(), "still cached");
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded() -> Result<(), String> {
        let t = table();
        let a = TokenReviewAuthenticator::new(t, Duration::from_secs(10));
        for i in 0..CACHE_CAPACITY + 10 {
            a.authenticate(&format!("t{i}")).await?;
        }
        assert!(a.cached() <= CACHE_CAPACITY);
        Ok(())
    }
}
