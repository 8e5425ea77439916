//! What a user may do, in upstream's union order for a delegating server
//! (upstream-behaviour.md §6.5): `system:masters` → always-allowed paths → the policy, which is
//! either a SubjectAccessReview to kube-apiserver (`--authorization-kubeconfig`, decisions
//! cached 10 s allowed and 10 s denied) or the local policy.

use apimachinery::ttl_cache::TtlCache;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use apimachinery::{GroupResource, Status};
use front_proxy::UserInfo;
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus,
};
use tokio::time::Instant;

use crate::Error;
use crate::request::RequestInfo;

/// The group whose members may do anything, without asking anyone.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// Upstream's webhook client timeout.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Upper bound of cached decisions; past it, expired entries are dropped, then everything.
const CACHE_CAPACITY: usize = apimachinery::ttl_cache::DEFAULT_CAPACITY;

/// An authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// 403; the reason (possibly empty) is appended to the message.
    Deny(String),
}

/// Sends one SubjectAccessReview and returns its status.
pub trait Reviewer: Send + Sync + 'static {
    /// Asks about `spec`.
    fn review(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> Pin<Box<dyn Future<Output = Result<SubjectAccessReviewStatus, Error>> + Send + '_>>;
}

/// A [`Reviewer`] that POSTs to `/apis/authorization.k8s.io/v1/subjectaccessreviews` of the
/// kube-apiserver a kubeconfig points at.
#[derive(Clone)]
pub struct KubeReviewer {
    api: kube::Api<SubjectAccessReview>,
}

impl std::fmt::Debug for KubeReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeReviewer")
    }
}

impl KubeReviewer {
    /// A client for the kubeconfig's current context.
    pub async fn new(
        kubeconfig: kube::config::Kubeconfig,
        path: &std::path::Path,
    ) -> Result<Self, Error> {
        let err = |reason: String| Error::Kubeconfig {
            path: path.to_owned(),
            reason,
        };
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .map_err(|e| err(e.to_string()))?;
        let client = kube::Client::try_from(config).map_err(|e| err(e.to_string()))?;
        Ok(KubeReviewer {
            api: kube::Api::all(client),
        })
    }
}

impl Reviewer for KubeReviewer {
    fn review(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> Pin<Box<dyn Future<Output = Result<SubjectAccessReviewStatus, Error>> + Send + '_>> {
        Box::pin(async move {
            let review = SubjectAccessReview {
                spec,
                ..SubjectAccessReview::default()
            };
            let answer = tokio::time::timeout(
                REVIEW_TIMEOUT,
                self.api.create(&kube::api::PostParams::default(), &review),
            )
            .await
            .map_err(|_| Error::SubjectAccessReview("timed out after 10s".into()))?
            .map_err(|e| Error::SubjectAccessReview(e.to_string()))?;
            answer
                .status
                .ok_or_else(|| Error::SubjectAccessReview("the answer has no status".into()))
        })
    }
}

/// The authorization policy after the fixed rules.
pub enum Policy {
    /// Members of any of these groups may `get`, `list` and `watch` every resource served here
    /// and `get` every non-resource path (discovery). Everything else is denied.
    Local {
        /// By default `system:authenticated`.
        allowed_groups: Vec<String>,
    },
    /// Ask kube-apiserver, caching answers.
    Webhook(Webhook),
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Policy::Local { allowed_groups } => f
                .debug_struct("Local")
                .field("allowed_groups", allowed_groups)
                .finish(),
            Policy::Webhook(w) => f
                .debug_struct("Webhook")
                .field("authorized_ttl", &w.authorized_ttl)
                .field("unauthorized_ttl", &w.unauthorized_ttl)
                .finish(),
        }
    }
}

/// SubjectAccessReview with a decision cache keyed by the whole review spec.
pub struct Webhook {
    reviewer: Arc<dyn Reviewer>,
    authorized_ttl: Duration,
    unauthorized_ttl: Duration,
    cache: TtlCache<String, Decision>,
}

impl Webhook {
    /// Caches allowed decisions for `authorized_ttl` and denied ones for `unauthorized_ttl`
    /// (upstream's defaults: 10 s each). Errors are never cached.
    pub fn new(
        reviewer: Arc<dyn Reviewer>,
        authorized_ttl: Duration,
        unauthorized_ttl: Duration,
    ) -> Self {
        Webhook {
            reviewer,
            authorized_ttl,
            unauthorized_ttl,
            cache: TtlCache::new(CACHE_CAPACITY),
        }
    }

    async fn decide(&self, spec: SubjectAccessReviewSpec) -> Result<Decision, Error> {
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

/// The whole authorizer.
#[derive(Debug)]
pub struct Authorizer {
    /// `--authorization-always-allow-paths`: non-resource paths anyone authenticated may use;
    /// a trailing `*` makes a prefix.
    pub always_allow_paths: Vec<String>,
    /// The policy.
    pub policy: Policy,
}

impl Authorizer {
    /// Decides. `Err` (the SubjectAccessReview failed) is answered with 500, as upstream.
    pub async fn authorize(&self, user: &UserInfo, info: &RequestInfo) -> Result<Decision, Error> {
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Ok(Decision::Allow);
        }
        if info.resource.is_none()
            && self
                .always_allow_paths
                .iter()
                .any(|p| path_matches(p, &info.path))
        {
            return Ok(Decision::Allow);
        }
        match &self.policy {
            Policy::Local { allowed_groups } => Ok(local_decision(allowed_groups, user, info)),
            Policy::Webhook(webhook) => webhook.decide(review_spec(user, info)).await,
        }
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => pattern == path,
    }
}

/// The local policy: read-only access for members of the allowed groups.
pub fn local_decision(allowed_groups: &[String], user: &UserInfo, info: &RequestInfo) -> Decision {
    let read_only = match info.resource {
        Some(_) => matches!(info.verb.as_str(), "get" | "list" | "watch"),
        None => info.verb == "get",
    };
    let member = user.groups.iter().any(|g| allowed_groups.contains(g));
    if read_only && member {
        Decision::Allow
    } else {
        Decision::Deny(String::new())
    }
}

/// The SubjectAccessReview spec for a request, as upstream's webhook authorizer fills it
/// (empty fields are left out, as Go's `omitempty` does).
pub fn review_spec(user: &UserInfo, info: &RequestInfo) -> SubjectAccessReviewSpec {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    SubjectAccessReviewSpec {
        user: some(&user.name),
        uid: some(&user.uid),
        groups: (!user.groups.is_empty()).then(|| user.groups.clone()),
        extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
        resource_attributes: info.resource.as_ref().map(|r| ResourceAttributes {
            namespace: some(&r.namespace),
            verb: some(&info.verb),
            group: some(&r.group),
            version: some(&r.version),
            resource: some(&r.resource),
            subresource: some(&r.subresource),
            name: some(&r.name),
            ..ResourceAttributes::default()
        }),
        non_resource_attributes: match info.resource {
            Some(_) => None,
            None => Some(NonResourceAttributes {
                path: some(&info.path),
                verb: some(&info.verb),
            }),
        },
    }
}

/// The 403 body (`errors.NewForbidden` with upstream's `forbiddenMessage`).
///
/// ```
/// use front_proxy::UserInfo;
/// use http::Method;
/// use metrics_apiserver::authz::forbidden;
/// use metrics_apiserver::request::RequestInfo;
///
/// let info = RequestInfo::new(&Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes", None);
/// let status = forbidden(&UserInfo::new("alice"), &info, "");
/// assert_eq!(status.message, "nodes.metrics.k8s.io is forbidden: User \"alice\" cannot list \
///     resource \"nodes\" in API group \"metrics.k8s.io\" at the cluster scope");
/// assert_eq!(status.code, 403);
/// ```
pub fn forbidden(user: &UserInfo, info: &RequestInfo, reason: &str) -> Status {
    let suffix = if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    };
    match &info.resource {
        None => Status::forbidden_path(&format!(
            "User {:?} cannot {} path {:?}{suffix}",
            user.name, info.verb, info.path
        )),
        Some(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            let message = format!(
                "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}{suffix}",
                user.name, info.verb, r.group
            );
            Status::forbidden(
                GroupResource {
                    group: &r.group,
                    resource: &r.resource,
                },
                &r.name,
                &message,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..UserInfo::default()
        }
    }

    fn get(path: &str) -> RequestInfo {
        RequestInfo::new(&Method::GET, path, None)
    }

    fn local() -> Authorizer {
        Authorizer {
            always_allow_paths: vec!["/healthz".into(), "/livez*".into()],
            policy: Policy::Local {
                allowed_groups: vec!["system:authenticated".into()],
            },
        }
    }

    #[tokio::test]
    async fn local_policy() -> Result<(), Error> {
        let a = local();
        let alice = user("alice", &["system:authenticated"]);
        let anon = user("system:anonymous", &["system:unauthenticated"]);
        let admin = user("root", &["system:masters"]);
        let nodes = get("/apis/metrics.k8s.io/v1beta1/nodes");
        let delete = RequestInfo::new(
            &Method::DELETE,
            "/apis/metrics.k8s.io/v1beta1/nodes/n",
            None,
        );
        let post_apis = RequestInfo::new(&Method::POST, "/apis", None);
        assert_eq!(a.authorize(&alice, &nodes).await?, Decision::Allow);
        assert_eq!(a.authorize(&alice, &get("/apis")).await?, Decision::Allow);
        assert!(matches!(
            a.authorize(&alice, &delete).await?,
            Decision::Deny(_)
        ));
        assert!(matches!(
            a.authorize(&alice, &post_apis).await?,
            Decision::Deny(_)
        ));
        assert!(matches!(
            a.authorize(&anon, &nodes).await?,
            Decision::Deny(_)
        ));
        assert_eq!(a.authorize(&anon, &get("/healthz")).await?, Decision::Allow);
        assert_eq!(
            a.authorize(&anon, &get("/livez/ping")).await?,
            Decision::Allow
        );
        assert!(matches!(
            a.authorize(&anon, &get("/healthzz")).await?,
            Decision::Deny(_)
        ));
        assert_eq!(a.authorize(&admin, &delete).await?, Decision::Allow);
        Ok(())
    }

    #[test]
    fn review_specs() -> Result<(), serde_json::Error> {
        let mut alice = user("alice", &["dev", "system:authenticated"]);
        alice.uid = "u-1".into();
        alice
            .extra
            .insert("scopes".into(), vec!["a".into(), "b".into()]);
        let spec = review_spec(
            &alice,
            &get("/apis/metrics.k8s.io/v1beta1/namespaces/shop/pods/web-0"),
        );
        assert_eq!(
            serde_json::to_value(&spec)?,
            serde_json::json!({
                "user": "alice", "uid": "u-1", "groups": ["dev", "system:authenticated"],
                "extra": {"scopes": ["a", "b"]},
                "resourceAttributes": {"namespace": "shop", "verb": "get", "group": "metrics.k8s.io",
                    "version": "v1beta1", "resource": "pods", "name": "web-0"}
            })
        );
        let spec = review_spec(&user("bob", &[]), &get("/apis"));
        assert_eq!(
            serde_json::to_value(&spec)?,
            serde_json::json!({"user": "bob", "nonResourceAttributes": {"path": "/apis", "verb": "get"}})
        );
        Ok(())
    }

    #[test]
    fn forbidden_messages_match_upstream() {
        let alice = user("alice", &[]);
        let s = forbidden(
            &alice,
            &get("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/p"),
            "no RBAC",
        );
        assert_eq!(
            s.message,
            "pods.metrics.k8s.io \"p\" is forbidden: User \"alice\" cannot get resource \"pods\" in API group \"metrics.k8s.io\" in the namespace \"ns\": no RBAC"
        );
        let s = forbidden(&alice, &get("/apis"), "");
        assert_eq!(
            s.message,
            "forbidden: User \"alice\" cannot get path \"/apis\""
        );
        assert_eq!(s.reason, "Forbidden");
    }

    /// A reviewer that counts calls and answers from a fixed rule.
    struct Counting {
        calls: AtomicUsize,
        allow: bool,
        fail: bool,
    }

    impl Reviewer for Counting {
        fn review(
            &self,
            _spec: SubjectAccessReviewSpec,
        ) -> Pin<Box<dyn Future<Output = Result<SubjectAccessReviewStatus, Error>> + Send + '_>>
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let (allow, fail) = (self.allow, self.fail);
            Box::pin(async move {
                if fail {
                    return Err(Error::SubjectAccessReview("connection refused".into()));
                }
                Ok(SubjectAccessReviewStatus {
                    allowed: allow,
                    reason: (!allow).then(|| "RBAC: no".to_owned()),
                    ..SubjectAccessReviewStatus::default()
                })
            })
        }
    }

    fn webhook(
        allow: bool,
        fail: bool,
        ttl_ok: u64,
        ttl_denied: u64,
    ) -> (Arc<Counting>, Authorizer) {
        let reviewer = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            allow,
            fail,
        });
        let authorizer = Authorizer {
            always_allow_paths: vec!["/healthz".into()],
            policy: Policy::Webhook(Webhook::new(
                reviewer.clone(),
                Duration::from_secs(ttl_ok),
                Duration::from_secs(ttl_denied),
            )),
        };
        (reviewer, authorizer)
    }

    #[tokio::test(start_paused = true)]
    async fn allowed_decisions_are_cached_for_their_ttl() -> Result<(), Error> {
        let (reviewer, a) = webhook(true, false, 10, 3);
        let alice = user("alice", &["system:authenticated"]);
        let nodes = get("/apis/metrics.k8s.io/v1beta1/nodes");
        assert_eq!(a.authorize(&alice, &nodes).await?, Decision::Allow);
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(a.authorize(&alice, &nodes).await?, Decision::Allow);
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 1);
        // Another request (other verb) is another cache entry.
        assert_eq!(
            a.authorize(&alice, &get("/apis/metrics.k8s.io/v1beta1/nodes/n"))
                .await?,
            Decision::Allow
        );
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);
        tokio::time::advance(Duration::from_millis(2)).await;
        assert_eq!(a.authorize(&alice, &nodes).await?, Decision::Allow);
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 3);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn denied_decisions_use_their_own_ttl() -> Result<(), Error> {
        let (reviewer, a) = webhook(false, false, 10, 3);
        let bob = user("bob", &["system:authenticated"]);
        let pods = get("/apis/metrics.k8s.io/v1beta1/pods");
        assert_eq!(
            a.authorize(&bob, &pods).await?,
            Decision::Deny("RBAC: no".into())
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            a.authorize(&bob, &pods).await?,
            Decision::Deny("RBAC: no".into())
        );
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            a.authorize(&bob, &pods).await?,
            Decision::Deny("RBAC: no".into())
        );
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn masters_and_health_skip_the_review_and_errors_are_not_cached() -> Result<(), Error> {
        let (reviewer, a) = webhook(true, true, 10, 10);
        let root = user("root", &["system:masters"]);
        let alice = user("alice", &[]);
        assert_eq!(
            a.authorize(&root, &get("/apis/metrics.k8s.io/v1beta1/nodes"))
                .await?,
            Decision::Allow
        );
        assert_eq!(
            a.authorize(&alice, &get("/healthz")).await?,
            Decision::Allow
        );
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 0);
        assert!(a.authorize(&alice, &get("/apis")).await.is_err());
        assert!(a.authorize(&alice, &get("/apis")).await.is_err());
        assert_eq!(reviewer.calls.load(Ordering::SeqCst), 2);
        Ok(())
    }
}
