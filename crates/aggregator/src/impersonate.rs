//! `Impersonate-User`, `-Group`, `-Uid` and `-Extra-<key>` (`k8s.io/apiserver/pkg/endpoints/
//! filters/impersonation.go`): each requested attribute is authorized with verb `impersonate`
//! on `users`, `groups`, `uids` or `userextras/<key>` (service accounts on `serviceaccounts`),
//! the effective user replaces the authenticated one, and the headers are removed.

use std::collections::BTreeMap;

use front_proxy::UserInfo;
use http::HeaderMap;

use crate::authz::{Attributes, Authorizer, Decision, forbidden_message};
use crate::request_info::RequestInfo;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";

/// Why impersonation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Malformed headers (400).
    BadRequest(String),
    /// The caller may not impersonate this (403): group, resource, name and message.
    Forbidden {
        /// The resource (`users`, `groups`, …).
        resource: &'static str,
        /// The API group of that resource.
        group: &'static str,
        /// The impersonated value.
        name: String,
        /// The full message tail.
        message: String,
    },
    /// The authorizer could not decide (a SubjectAccessReview failed): 500.
    Internal(String),
}

/// Whether the request asks for impersonation at all.
pub fn requested(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
}

fn values(headers: &HeaderMap, name: &str) -> Result<Vec<String>, Refused> {
    headers
        .get_all(name)
        .iter()
        .map(|v| {
            v.to_str()
                .map(str::to_owned)
                .map_err(|_| Refused::BadRequest(format!("{name}: not valid UTF-8")))
        })
        .collect()
}

/// Applies the impersonation headers: `Ok(None)` when there are none, `Ok(Some(user))` with the
/// effective user when every requested attribute is allowed. The headers are removed either way.
pub fn impersonate(
    caller: &UserInfo,
    headers: &mut HeaderMap,
    authz: &dyn Authorizer,
) -> Result<Option<UserInfo>, Refused> {
    if !requested(headers) {
        return Ok(None);
    }
    let result = resolve(caller, headers, authz);
    remove_headers(headers);
    result.map(Some)
}

/// [`impersonate`] with the delegated (SubjectAccessReview) authorizer.
pub async fn impersonate_delegated(
    caller: &UserInfo,
    headers: &mut HeaderMap,
    authz: &crate::cluster::sar::DelegatedAuthorizer,
) -> Result<Option<UserInfo>, Refused> {
    if !requested(headers) {
        return Ok(None);
    }
    let planned = plan(headers);
    remove_headers(headers);
    let Plan { checks, effective } = planned?;
    for check in checks {
        match authz.authorize(caller, &check.info).await {
            Ok(Decision::Allow) => {}
            Ok(Decision::Deny(reason)) => return Err(check.refuse(caller, &reason)),
            Err(e) => return Err(Refused::Internal(e)),
        }
    }
    Ok(Some(effective))
}

fn remove_headers(headers: &mut HeaderMap) {
    let names: Vec<http::HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("impersonate-"))
        .cloned()
        .collect();
    for n in names {
        headers.remove(n);
    }
}

/// One attribute to authorize with verb `impersonate`.
struct Check {
    resource: &'static str,
    group: &'static str,
    name: String,
    info: RequestInfo,
}

impl Check {
    fn refuse(&self, caller: &UserInfo, reason: &str) -> Refused {
        Refused::Forbidden {
            resource: self.resource,
            group: self.group,
            name: self.name.clone(),
            message: forbidden_message(caller, &self.info, reason),
        }
    }
}

/// The checks in upstream's order and the user they lead to.
struct Plan {
    checks: Vec<Check>,
    effective: UserInfo,
}

fn resolve(
    caller: &UserInfo,
    headers: &HeaderMap,
    authz: &dyn Authorizer,
) -> Result<UserInfo, Refused> {
    let Plan { checks, effective } = plan(headers)?;
    for check in checks {
        if let Decision::Deny(reason) = authz.authorize(&Attributes {
            user: caller,
            info: &check.info,
        }) {
            return Err(check.refuse(caller, &reason));
        }
    }
    Ok(effective)
}

fn plan(headers: &HeaderMap) -> Result<Plan, Refused> {
    let users = values(headers, USER)?;
    let groups = values(headers, GROUP)?;
    let uids = values(headers, UID)?;
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers.iter() {
        if let Some(suffix) = k.as_str().strip_prefix(EXTRA_PREFIX) {
            let key = front_proxy::unescape_extra_key(suffix);
            let v = v
                .to_str()
                .map_err(|_| Refused::BadRequest(format!("{k}: not valid UTF-8")))?;
            extra.entry(key).or_default().push(v.to_owned());
        }
    }
    let user = match users.as_slice() {
        [] => {
            return Err(Refused::BadRequest(
                "requested impersonation of groups, uid or extras without impersonating a user"
                    .into(),
            ));
        }
        [one] => one.clone(),
        _ => {
            return Err(Refused::BadRequest(
                "only one Impersonate-User header may be given".into(),
            ));
        }
    };
    if uids.len() > 1 {
        return Err(Refused::BadRequest(
            "only one Impersonate-Uid header may be given".into(),
        ));
    }

    let mut checks = Vec::new();
    let mut check =
        |resource: &'static str, group: &'static str, namespace: &str, name: &str, sub: &str| {
            checks.push(Check {
                resource,
                group,
                name: name.into(),
                info: RequestInfo {
                    is_resource_request: true,
                    verb: "impersonate".into(),
                    api_group: group.into(),
                    namespace: namespace.into(),
                    resource: resource.into(),
                    subresource: sub.into(),
                    name: name.into(),
                    ..RequestInfo::default()
                },
            });
        };
    match user
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => check("serviceaccounts", "", ns, sa, ""),
        None => check("users", "", "", &user, ""),
    }
    for g in &groups {
        check("groups", "", "", g, "");
    }
    for u in &uids {
        check("uids", "authentication.k8s.io", "", u, "");
    }
    for (k, vs) in &extra {
        for v in vs {
            check("userextras", "authentication.k8s.io", "", v, k);
        }
    }

    let mut effective = UserInfo {
        name: user,
        uid: uids.into_iter().next().unwrap_or_default(),
        groups,
        extra,
    };
    if effective.name == crate::authn::ANONYMOUS_USER {
        if !effective
            .groups
            .iter()
            .any(|g| g == crate::authn::UNAUTHENTICATED_GROUP)
        {
            effective
                .groups
                .push(crate::authn::UNAUTHENTICATED_GROUP.into());
        }
    } else {
        effective.ensure_authenticated_group();
    }
    Ok(Plan { checks, effective })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::{AbacPolicy, DefaultPolicy};

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                m.append(k, v);
            }
        }
        m
    }

    #[test]
    fn masters_impersonate_and_headers_go_away() {
        let admin = UserInfo {
            name: "admin".into(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
            ..UserInfo::default()
        };
        let mut headers = h(&[
            ("Impersonate-User", "bob"),
            ("Impersonate-Group", "dev"),
            ("Impersonate-Group", "ops"),
            ("Impersonate-Extra-Scopes", "a"),
            ("Impersonate-Uid", "u-1"),
            ("Accept", "application/json"),
        ]);
        let got = impersonate(&admin, &mut headers, &DefaultPolicy);
        let u = match got {
            Ok(Some(u)) => u,
            other => panic!("{other:?}"),
        };
        assert_eq!(u.name, "bob");
        assert_eq!(u.uid, "u-1");
        assert_eq!(u.groups, ["dev", "ops", "system:authenticated"]);
        assert_eq!(u.extra.get("scopes"), Some(&vec!["a".to_string()]));
        assert_eq!(headers.len(), 1, "only Accept remains");
        assert!(matches!(
            impersonate(&admin, &mut h(&[]), &DefaultPolicy),
            Ok(None)
        ));
    }

    #[test]
    fn others_are_forbidden_per_attribute() {
        let bob = UserInfo {
            name: "bob".into(),
            groups: vec!["system:authenticated".into()],
            ..UserInfo::default()
        };
        let err = impersonate(
            &bob,
            &mut h(&[("Impersonate-User", "admin")]),
            &DefaultPolicy,
        );
        match err {
            Err(Refused::Forbidden {
                resource, message, ..
            }) => {
                assert_eq!(resource, "users");
                assert_eq!(
                    message,
                    "User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
                );
            }
            other => panic!("{other:?}"),
        }
        // ABAC can allow users but not groups.
        let policy = AbacPolicy::parse(r#"{"apiVersion":"abac.authorization.kubernetes.io/v1beta1","kind":"Policy","spec":{"user":"bob","resource":"users","apiGroup":"*","namespace":"*"}}"#)
            .unwrap_or_default();
        assert!(matches!(
            impersonate(&bob, &mut h(&[("Impersonate-User", "x")]), &policy),
            Ok(Some(_))
        ));
        assert!(matches!(
            impersonate(
                &bob,
                &mut h(&[("Impersonate-User", "x"), ("Impersonate-Group", "g")]),
                &policy
            ),
            Err(Refused::Forbidden {
                resource: "groups",
                ..
            })
        ));
        assert!(matches!(
            impersonate(&bob, &mut h(&[("Impersonate-Group", "g")]), &policy),
            Err(Refused::BadRequest(_))
        ));
    }
}
