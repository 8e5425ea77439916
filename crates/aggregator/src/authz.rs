//! What a caller may do. `system:masters` may do anything (upstream's privileged-group
//! authorizer always runs first); then either the default policy (authenticated users may read
//! — `get`, `list`, `watch` and non-resource `get` such as discovery, OpenAPI and version —
//! and nothing else) or, with `--authorization-policy-file`, kube-apiserver's ABAC JSON-lines
//! policy (`pkg/auth/authorizer/abac`).

use std::path::Path;

use front_proxy::UserInfo;
use serde::Deserialize;

use crate::error::Error;
use crate::request_info::RequestInfo;

/// The group that may do anything.
pub const SYSTEM_MASTERS: &str = "system:masters";

/// What is being asked (`authorizer.Attributes`).
#[derive(Debug, Clone, Copy)]
pub struct Attributes<'a> {
    /// The (effective) user.
    pub user: &'a UserInfo,
    /// The request.
    pub info: &'a RequestInfo,
}

impl Attributes<'_> {
    fn is_read_only(&self) -> bool {
        matches!(self.info.verb.as_str(), "get" | "list" | "watch")
    }
}

/// An authorization decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed.
    Allow,
    /// Not allowed; the string is the reason appended to the 403 message (may be empty).
    Deny(String),
}

/// Decides requests.
pub trait Authorizer: Send + Sync + 'static {
    /// The decision for these attributes.
    fn authorize(&self, attrs: &Attributes<'_>) -> Decision;
}

fn is_master(user: &UserInfo) -> bool {
    user.groups.iter().any(|g| g == SYSTEM_MASTERS)
}

/// Paths anyone may `get`, authenticated or not (upstream's `system:public-info-viewer`).
const PUBLIC_PATHS: &[&str] = &["/healthz", "/livez", "/readyz", "/version"];

fn is_public_path(path: &str) -> bool {
    PUBLIC_PATHS
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

/// The default policy: masters do anything; authenticated users read resources and `get`
/// non-resource paths except `/metrics` (upstream's `system:discovery`, `system:basic-user`,
/// read access to `apiservices`); everyone `get`s the health and version endpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl Authorizer for DefaultPolicy {
    fn authorize(&self, a: &Attributes<'_>) -> Decision {
        if is_master(a.user) {
            return Decision::Allow;
        }
        if !a.info.is_resource_request && a.info.verb == "get" && is_public_path(&a.info.path) {
            return Decision::Allow;
        }
        let authenticated = a
            .user
            .groups
            .iter()
            .any(|g| g == front_proxy::SYSTEM_AUTHENTICATED);
        if !authenticated {
            return Decision::Deny(String::new());
        }
        if a.info.is_resource_request {
            if a.is_read_only() {
                return Decision::Allow;
            }
        } else if a.info.verb == "get" && a.info.path != "/metrics" {
            return Decision::Allow;
        }
        Decision::Deny(String::new())
    }
}

/// One `abac.authorization.kubernetes.io/v1beta1` policy line.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicySpec {
    #[serde(default)]
    user: String,
    #[serde(default)]
    group: String,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    non_resource_path: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PolicyLine {
    api_version: String,
    kind: String,
    spec: PolicySpec,
}

/// `--authorization-policy-file`: kube-apiserver's ABAC format, one JSON policy per line
/// (blank lines and `#` comments skipped). `system:masters` stays allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AbacPolicy {
    policies: Vec<PolicySpec>,
}

impl AbacPolicy {
    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<AbacPolicy, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::read(path, e))?;
        AbacPolicy::parse(&text).map_err(|m| Error::parse(path, m))
    }

    /// Parses the policy lines.
    pub fn parse(text: &str) -> Result<AbacPolicy, String> {
        let mut policies = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let p: PolicyLine =
                serde_json::from_str(t).map_err(|e| format!("line {}: {e}", i + 1))?;
            if p.api_version != "abac.authorization.kubernetes.io/v1beta1" || p.kind != "Policy" {
                return Err(format!(
                    "line {}: expected apiVersion abac.authorization.kubernetes.io/v1beta1 and kind Policy, got {}/{}",
                    i + 1,
                    p.api_version,
                    p.kind
                ));
            }
            policies.push(p.spec);
        }
        Ok(AbacPolicy { policies })
    }

    fn matches(p: &PolicySpec, a: &Attributes<'_>) -> bool {
        subject_matches(p, a.user)
            && (a.is_read_only() || !p.readonly)
            && (resource_matches(p, a) || non_resource_matches(p, a))
    }
}

fn subject_matches(p: &PolicySpec, user: &UserInfo) -> bool {
    let mut matched = false;
    if !p.user.is_empty() {
        if p.user == "*" {
            matched = true;
        } else {
            if p.user != user.name {
                return false;
            }
            matched = true;
        }
    }
    if !p.group.is_empty() {
        if p.group == "*" {
            matched = true;
        } else {
            if !user.groups.contains(&p.group) {
                return false;
            }
            matched = true;
        }
    }
    matched
}

fn resource_matches(p: &PolicySpec, a: &Attributes<'_>) -> bool {
    let i = a.info;
    i.is_resource_request
        && (p.namespace == "*" || p.namespace == i.namespace)
        && (p.resource == "*" || p.resource == i.resource)
        && (p.api_group == "*" || p.api_group == i.api_group)
}

fn non_resource_matches(p: &PolicySpec, a: &Attributes<'_>) -> bool {
    if a.info.is_resource_request {
        return false;
    }
    let path = &a.info.path;
    p.non_resource_path == "*"
        || p.non_resource_path == *path
        || (p.non_resource_path.ends_with('*')
            && path.starts_with(p.non_resource_path.trim_end_matches('*')))
}

impl Authorizer for AbacPolicy {
    fn authorize(&self, a: &Attributes<'_>) -> Decision {
        if is_master(a.user) {
            return Decision::Allow;
        }
        if self.policies.iter().any(|p| AbacPolicy::matches(p, a)) {
            Decision::Allow
        } else {
            Decision::Deny(String::new())
        }
    }
}

/// Upstream's 403 message (`forbiddenMessage`): `User "u" cannot <verb> resource "<r>" in API
/// group "<g>" at the cluster scope`, or `User "u" cannot <verb> path "<p>"`.
pub fn forbidden_message(user: &UserInfo, info: &RequestInfo, reason: &str) -> String {
    let msg = if !info.is_resource_request {
        format!(
            "User {:?} cannot {} path {:?}",
            user.name, info.verb, info.path
        )
    } else {
        let resource = if info.subresource.is_empty() {
            info.resource.clone()
        } else {
            format!("{}/{}", info.resource, info.subresource)
        };
        if info.namespace.is_empty() {
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                user.name, info.verb, resource, info.api_group
            )
        } else {
            format!(
                "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                user.name, info.verb, resource, info.api_group, info.namespace
            )
        }
    };
    if reason.is_empty() {
        msg
    } else {
        format!("{msg}: {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request_info::RequestInfo;

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..UserInfo::default()
        }
    }

    fn info(method: &str, path: &str) -> RequestInfo {
        RequestInfo::parse(method, path, "")
    }

    #[test]
    fn default_policy() {
        let p = DefaultPolicy;
        let admin = user("admin", &["system:masters", "system:authenticated"]);
        let bob = user("bob", &["system:authenticated"]);
        let anon = user("system:anonymous", &["system:unauthenticated"]);
        let ask = |u: &UserInfo, m: &str, path: &str| {
            p.authorize(&Attributes {
                user: u,
                info: &info(m, path),
            }) == Decision::Allow
        };
        let api = "/apis/apiregistration.k8s.io/v1/apiservices";
        assert!(ask(&admin, "POST", api));
        assert!(ask(&admin, "GET", "/metrics"));
        assert!(ask(&bob, "GET", api));
        assert!(ask(&bob, "GET", &format!("{api}/v1.foo")));
        assert!(!ask(&bob, "POST", api));
        assert!(!ask(&bob, "DELETE", &format!("{api}/v1.foo")));
        assert!(!ask(&bob, "PATCH", &format!("{api}/v1.foo/status")));
        assert!(ask(&bob, "GET", "/apis"));
        assert!(ask(&bob, "GET", "/openapi/v3"));
        assert!(!ask(&bob, "GET", "/metrics"));
        assert!(!ask(&bob, "POST", "/apis"));
        assert!(ask(&anon, "GET", "/healthz"));
        assert!(ask(&anon, "GET", "/readyz/ping"));
        assert!(ask(&anon, "GET", "/version"));
        assert!(!ask(&anon, "GET", "/apis"));
        assert!(!ask(&anon, "GET", api));
    }

    #[test]
    fn abac_policy() {
        let text = r#"
# comment
{"apiVersion": "abac.authorization.kubernetes.io/v1beta1", "kind": "Policy", "spec": {"user":"alice", "namespace": "*", "resource": "*", "apiGroup": "*"}}
{"apiVersion": "abac.authorization.kubernetes.io/v1beta1", "kind": "Policy", "spec": {"group":"viewers", "readonly": true, "namespace": "*", "resource": "apiservices", "apiGroup": "apiregistration.k8s.io"}}
{"apiVersion": "abac.authorization.kubernetes.io/v1beta1", "kind": "Policy", "spec": {"group":"system:authenticated", "readonly": true, "nonResourcePath": "/apis*"}}
"#;
        let p = match AbacPolicy::parse(text) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let ask = |u: &UserInfo, m: &str, path: &str| {
            p.authorize(&Attributes {
                user: u,
                info: &info(m, path),
            }) == Decision::Allow
        };
        let api = "/apis/apiregistration.k8s.io/v1/apiservices";
        let alice = user("alice", &["system:authenticated"]);
        let viewer = user("vic", &["viewers", "system:authenticated"]);
        let bob = user("bob", &["system:authenticated"]);
        assert!(ask(&alice, "POST", api));
        assert!(ask(&viewer, "GET", api));
        assert!(!ask(&viewer, "POST", api));
        assert!(!ask(&bob, "GET", api));
        assert!(ask(&bob, "GET", "/apis"));
        assert!(ask(&bob, "GET", "/apis/foo"));
        assert!(!ask(&bob, "GET", "/version"));
        assert!(ask(&user("root", &["system:masters"]), "DELETE", api));
        assert!(
            AbacPolicy::parse("{\"apiVersion\":\"v1\",\"kind\":\"Policy\",\"spec\":{}}").is_err()
        );
        assert!(AbacPolicy::parse("not json").is_err());
    }

    #[test]
    fn messages() {
        let bob = user("bob", &[]);
        assert_eq!(
            forbidden_message(
                &bob,
                &info("POST", "/apis/apiregistration.k8s.io/v1/apiservices"),
                ""
            ),
            "User \"bob\" cannot create resource \"apiservices\" in API group \"apiregistration.k8s.io\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(
                &bob,
                &info(
                    "PUT",
                    "/apis/apiregistration.k8s.io/v1/apiservices/x/status"
                ),
                ""
            ),
            "User \"bob\" cannot update resource \"apiservices/status\" in API group \"apiregistration.k8s.io\" at the cluster scope"
        );
        assert_eq!(
            forbidden_message(&bob, &info("GET", "/metrics"), ""),
            "User \"bob\" cannot get path \"/metrics\""
        );
    }
}
