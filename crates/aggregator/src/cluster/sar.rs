//! Delegated authorization (upstream-behaviour.md §6.5): with `--authorization-kubeconfig`,
//! what the fixed rules do not allow is asked of kube-apiserver as an
//! `authorization.k8s.io/v1` SubjectAccessReview, so RBAC decides.
//!
//! The union, in upstream's order, first decision wins:
//!
//! 1. `system:masters` → allow (upstream's privileged-group authorizer);
//! 2. `--authorization-always-allow-paths` (non-resource `get`s of `/healthz`, `/livez`,
//!    `/readyz`, `/version` by default) → allow;
//! 3. `--authorization-policy-file` (ABAC), when given → allow if a line matches, otherwise no
//!    opinion;
//! 4. SubjectAccessReview → allow, deny (with RBAC's reason) or no opinion (= deny).
//!
//! The default read-only policy is *not* part of this chain: in front of a cluster RBAC is the
//! source of truth. Answers are cached — allowed for `--authorization-webhook-cache-authorized-ttl`,
//! denied for `--authorization-webhook-cache-unauthorized-ttl` (10 s each) — in a bounded cache
//! keyed by the whole review; a failed review is never cached and is answered 500, as upstream
//! (never allowed).

use apimachinery::ttl_cache::TtlCache;
use std::sync::Arc;
use std::time::Duration;

use front_proxy::UserInfo;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus,
};
use tokio::time::Instant;

use crate::authz::{Attributes, Authorizer, Decision, SYSTEM_MASTERS};
use crate::forward::BoxFuture;
use crate::request_info::RequestInfo;

/// Upstream's webhook timeout.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound of cached decisions.
pub const CACHE_CAPACITY: usize = apimachinery::ttl_cache::DEFAULT_CAPACITY;

/// Sends one SubjectAccessReview.
pub trait AccessReviewer: Send + Sync + 'static {
    /// The review's status for `spec`, or why it could not be made.
    fn review(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> BoxFuture<Result<SubjectAccessReviewStatus, String>>;
}

/// POSTs to `/apis/authorization.k8s.io/v1/subjectaccessreviews` with the client's own
/// credentials.
#[derive(Clone)]
pub struct KubeAccessReviewer {
    api: kube::Api<SubjectAccessReview>,
}

impl std::fmt::Debug for KubeAccessReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeAccessReviewer")
    }
}

impl KubeAccessReviewer {
    /// Reviews through `client`.
    pub fn new(client: kube::Client) -> Self {
        KubeAccessReviewer {
            api: kube::Api::all(client),
        }
    }
}

impl AccessReviewer for KubeAccessReviewer {
    fn review(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> BoxFuture<Result<SubjectAccessReviewStatus, String>> {
        let api = self.api.clone();
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec,
                ..SubjectAccessReview::default()
            };
            let answer = tokio::time::timeout(
                REVIEW_TIMEOUT,
                api.create(&kube::api::PostParams::default(), &review),
            )
            .await
            .map_err(|_| "SubjectAccessReview timed out after 10s".to_owned())?
            .map_err(|e| format!("SubjectAccessReview: {e}"))?;
            answer
                .status
                .ok_or_else(|| "SubjectAccessReview: the answer has no status".to_owned())
        })
    }
}

/// The review of a request, filled as upstream's webhook authorizer fills it (empty fields
/// left out).
pub fn review_spec(user: &UserInfo, info: &RequestInfo) -> SubjectAccessReviewSpec {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    SubjectAccessReviewSpec {
        user: some(&user.name),
        uid: some(&user.uid),
        groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        resource_attributes: info.is_resource_request.then(|| ResourceAttributes {
            namespace: some(&info.namespace),
            verb: some(&info.verb),
            group: some(&info.api_group),
            version: some(&info.api_version),
            resource: some(&info.resource),
            subresource: some(&info.subresource),
            name: some(&info.name),
            ..ResourceAttributes::default()
        }),
        non_resource_attributes: (!info.is_resource_request).then(|| NonResourceAttributes {
            path: some(&info.path),
            verb: some(&info.verb),
        }),
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// The delegated chain (see the module docs).
pub struct DelegatedAuthorizer {
    always_allow_paths: Vec<String>,
    policy: Option<Arc<dyn Authorizer>>,
    reviewer: Arc<dyn AccessReviewer>,
    authorized_ttl: Duration,
    unauthorized_ttl: Duration,
    cache: TtlCache<String, Decision>,
}

impl std::fmt::Debug for DelegatedAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegatedAuthorizer")
            .field("always_allow_paths", &self.always_allow_paths)
            .field("policy", &self.policy.is_some())
            .field("authorized_ttl", &self.authorized_ttl)
            .field("unauthorized_ttl", &self.unauthorized_ttl)
            .finish_non_exhaustive()
    }
}

impl DelegatedAuthorizer {
    /// A chain asking `reviewer` after the fixed rules and the optional ABAC `policy`.
    pub fn new(
        always_allow_paths: Vec<String>,
        policy: Option<Arc<dyn Authorizer>>,
        reviewer: Arc<dyn AccessReviewer>,
        authorized_ttl: Duration,
        unauthorized_ttl: Duration,
    ) -> Self {
        DelegatedAuthorizer {
            always_allow_paths,
            policy,
            reviewer,
            authorized_ttl,
            unauthorized_ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }

    /// The decision; `Err` when the review could not be made (answered 500).
    pub async fn authorize(&self, user: &UserInfo, info: &RequestInfo) -> Result<Decision, String> {
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Ok(Decision::Allow);
        }
        if !info.is_resource_request
            && info.verb == "get"
            && self
                .always_allow_paths
                .iter()
                .any(|p| path_matches(p, &info.path))
        {
            return Ok(Decision::Allow);
        }
        if let Some(policy) = &self.policy
            && policy.authorize(&Attributes { user, info }) == Decision::Allow
        {
            return Ok(Decision::Allow);
        }
        let spec = review_spec(user, info);
        let key = serde_json::to_string(&spec).unwrap_or_default();
        if let Some(decision) = self.cache.get(&key, Instant::now().into_std()) {
            return Ok(decision);
        }
        let status = self.reviewer.review(spec).await?;
        let decision = match apimachinery::review::access_denial(status) {
            None => Decision::Allow,
            Some(reason) => Decision::Deny(reason),
        };
        let ttl = match decision {
            Decision::Allow => self.authorized_ttl,
            Decision::Deny(_) => self.unauthorized_ttl,
        };
        self.cache
            .insert(key, decision.clone(), ttl, Instant::now().into_std());
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::AbacPolicy;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Rbac {
        calls: AtomicUsize,
        down: AtomicBool,
        seen: Mutex<Vec<SubjectAccessReviewSpec>>,
    }

    impl AccessReviewer for Rbac {
        fn review(
            &self,
            spec: SubjectAccessReviewSpec,
        ) -> BoxFuture<Result<SubjectAccessReviewStatus, String>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let allowed = spec.user.as_deref() == Some("system:serviceaccount:ns:reader")
                && spec
                    .resource_attributes
                    .as_ref()
                    .is_some_and(|r| r.verb.as_deref() == Some("list"));
            if let Ok(mut s) = self.seen.lock() {
                s.push(spec);
            }
            let down = self.down.load(Ordering::SeqCst);
            Box::pin(async move {
                if down {
                    return Err("connection refused".into());
                }
                Ok(SubjectAccessReviewStatus {
                    allowed,
                    reason: (!allowed).then(|| "RBAC: no rule".to_owned()),
                    ..SubjectAccessReviewStatus::default()
                })
            })
        }
    }

    fn chain(policy: Option<Arc<dyn Authorizer>>) -> (Arc<Rbac>, DelegatedAuthorizer) {
        let rbac = Arc::new(Rbac {
            calls: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
        });
        let a = DelegatedAuthorizer::new(
            ["/healthz", "/livez", "/readyz", "/version"]
                .map(String::from)
                .to_vec(),
            policy,
            rbac.clone(),
            Duration::from_secs(10),
            Duration::from_secs(5),
        );
        (rbac, a)
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    fn info(method: &str, path: &str, query: &str) -> RequestInfo {
        RequestInfo::parse(method, path, query)
    }

    #[tokio::test(start_paused = true)]
    async fn union_order_and_caching() -> Result<(), String> {
        let (rbac, a) = chain(None);
        let reader = user(
            "system:serviceaccount:ns:reader",
            &["system:serviceaccounts", "system:authenticated"],
        );
        let pods = info("GET", "/api/v1/namespaces/ns/pods", "");
        assert_eq!(a.authorize(&reader, &pods).await?, Decision::Allow);
        assert_eq!(
            a.authorize(&reader, &info("DELETE", "/api/v1/namespaces/ns/pods/p", ""))
                .await?,
            Decision::Deny("RBAC: no rule".into())
        );
        // Masters and the always-allowed paths never ask.
        let root = user("root", &["system:masters"]);
        assert_eq!(
            a.authorize(&root, &info("DELETE", "/apis/x/v1/y", ""))
                .await?,
            Decision::Allow
        );
        let anon = user("system:anonymous", &["system:unauthenticated"]);
        assert_eq!(
            a.authorize(&anon, &info("GET", "/readyz", "")).await?,
            Decision::Allow
        );
        assert_eq!(
            a.authorize(&anon, &info("GET", "/version", "")).await?,
            Decision::Allow
        );
        assert_eq!(rbac.calls.load(Ordering::SeqCst), 2);
        // No default policy here: an authenticated user's read goes to RBAC.
        let bob = user("bob", &["system:authenticated"]);
        assert!(matches!(
            a.authorize(&bob, &info("GET", "/apis", "")).await?,
            Decision::Deny(_)
        ));
        assert_eq!(rbac.calls.load(Ordering::SeqCst), 3);
        {
            let seen = rbac.seen.lock().map_err(|e| e.to_string())?;
            let spec = serde_json::to_value(&seen[0]).map_err(|e| e.to_string())?;
            assert_eq!(
                spec,
                serde_json::json!({"user": "system:serviceaccount:ns:reader",
                    "groups": ["system:serviceaccounts", "system:authenticated"],
                    "resourceAttributes": {"namespace": "ns", "verb": "list", "version": "v1", "resource": "pods"}})
            );
            let spec = serde_json::to_value(&seen[2]).map_err(|e| e.to_string())?;
            assert_eq!(
                spec["nonResourceAttributes"],
                serde_json::json!({"path": "/apis", "verb": "get"})
            );
        }

        // Cached: allowed 10 s, denied 5 s.
        tokio::time::advance(Duration::from_secs(4)).await;
        a.authorize(&reader, &pods).await?;
        a.authorize(&bob, &info("GET", "/apis", "")).await?;
        assert_eq!(rbac.calls.load(Ordering::SeqCst), 3);
        tokio::time::advance(Duration::from_secs(2)).await;
        a.authorize(&bob, &info("GET", "/apis", "")).await?;
        assert_eq!(rbac.calls.load(Ordering::SeqCst), 4, "the denial expired");
        a.authorize(&reader, &pods).await?;
        assert_eq!(rbac.calls.load(Ordering::SeqCst), 4);
        tokio::time::advance(Duration::from_secs(5)).await;
        a.authorize(&reader, &pods).await?;
        assert_eq!(
            rbac.calls.load(Ordering::SeqCst),
            5,
            "the allowance expired"
        );

        // A failed review is an error (500), never an allowance, and is not cached.
        rbac.down.store(true, Ordering::SeqCst);
        let other = info("GET", "/api/v1/namespaces/other/pods", "");
        assert!(a.authorize(&reader, &other).await.is_err());
        assert!(a.authorize(&reader, &other).await.is_err());
        assert_eq!(rbac.calls.load(Ordering::SeqCst), 7);
        Ok(())
    }

    #[tokio::test]
    async fn an_abac_policy_allows_before_the_review() -> Result<(), String> {
        let policy = AbacPolicy::parse(
            r#"{"apiVersion":"abac.authorization.kubernetes.io/v1beta1","kind":"Policy","spec":{"user":"alice","namespace":"*","resource":"*","apiGroup":"*"}}"#,
        )?;
        let (rbac, a) = chain(Some(Arc::new(policy)));
        let alice = user("alice", &["system:authenticated"]);
        assert_eq!(
            a.authorize(&alice, &info("DELETE", "/api/v1/namespaces/a/pods/p", ""))
                .await?,
            Decision::Allow
        );
        assert_eq!(rbac.calls.load(Ordering::SeqCst), 0);
        let bob = user("bob", &["system:authenticated"]);
        assert!(matches!(
            a.authorize(&bob, &info("DELETE", "/api/v1/namespaces/a/pods/p", ""))
                .await?,
            Decision::Deny(_)
        ));
        assert_eq!(rbac.calls.load(Ordering::SeqCst), 1);
        Ok(())
    }
}
