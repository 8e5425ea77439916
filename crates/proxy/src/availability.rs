//! The availability check of one remote APIService (upstream-behaviour.md §2.2), deliberately
//! better than upstream in two ways:
//!
//! - TLS is verified exactly as the proxy verifies it (caBundle, server name, insecure flag), as
//!   upstream does from v1.36, so "Available" means the proxy can actually reach the backend;
//! - the message names the cause in plain words (connection refused, TLS unknown authority,
//!   certificate name mismatch, 401 because the backend does not trust the front-proxy
//!   certificate, 403, 404, timeouts and in which phase), and is stable across identical
//!   failures so the status is only rewritten when something changes.
//!
//! The rest is upstream's: resolution errors give `ServiceNotFound`, `ServicePortError`,
//! `MissingEndpoints`…; then 5 parallel `GET /apis/<group>/<version>` (or `/api/<version>` for the
//! core group) as `system:kube-aggregator` in group `system:masters`, each within 5 s, redirects
//! not followed, only 2xx succeeds, one success is enough.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use front_proxy::{UserInfo, write_identity};
use http::header;
use http::{Request, StatusCode};
use http_body_util::BodyExt;

use crate::body::{Body, empty};
use crate::engine::{Backend, Engine};
use crate::error::{Error, TransportCause};
use crate::resolve::ResolvedService;

/// The `Available` condition reasons of upstream's availability controllers (§2), plus the ones
/// this crate cannot produce itself (`Local`) so that the server uses one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AvailabilityReason {
    /// A remote APIService answered the discovery probe.
    Passed,
    /// A local APIService (no `spec.service`).
    Local,
    /// The Service does not exist.
    ServiceNotFound,
    /// The Service does not expose the APIService's port.
    ServicePortError,
    /// The Service has no endpoints object.
    EndpointsNotFound,
    /// The Service has no ready address for the port.
    MissingEndpoints,
    /// The Service could not be looked up.
    ServiceAccessError,
    /// The endpoints could not be looked up.
    EndpointsAccessError,
    /// Every probe of `/apis/<group>/<version>` failed.
    FailedDiscoveryCheck,
}

impl AvailabilityReason {
    /// The reason as written in the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            AvailabilityReason::Passed => "Passed",
            AvailabilityReason::Local => "Local",
            AvailabilityReason::ServiceNotFound => "ServiceNotFound",
            AvailabilityReason::ServicePortError => "ServicePortError",
            AvailabilityReason::EndpointsNotFound => "EndpointsNotFound",
            AvailabilityReason::MissingEndpoints => "MissingEndpoints",
            AvailabilityReason::ServiceAccessError => "ServiceAccessError",
            AvailabilityReason::EndpointsAccessError => "EndpointsAccessError",
            AvailabilityReason::FailedDiscoveryCheck => "FailedDiscoveryCheck",
        }
    }
}

impl fmt::Display for AvailabilityReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `Available` condition status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConditionStatus {
    /// Available.
    True,
    /// Not available.
    False,
    /// Could not be determined (the resolver's source failed).
    Unknown,
}

impl ConditionStatus {
    /// `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// The result of one availability check: the `Available` condition's status, reason and
/// message. Equal results mean "no status update needed".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Availability {
    /// The condition status.
    pub status: ConditionStatus,
    /// The condition reason.
    pub reason: AvailabilityReason,
    /// The condition message.
    pub message: String,
}

impl Availability {
    /// What upstream's local controller writes for an APIService without `spec.service`.
    pub fn local() -> Availability {
        Availability {
            status: ConditionStatus::True,
            reason: AvailabilityReason::Local,
            message: "Local APIServices are always available".into(),
        }
    }

    /// Whether the status is `True`.
    pub fn is_available(&self) -> bool {
        self.status == ConditionStatus::True
    }

    fn from_error(error: &Error) -> Availability {
        let status = match error {
            Error::ServiceAccess { .. } => ConditionStatus::Unknown,
            Error::Unresolvable {
                reason:
                    AvailabilityReason::ServiceAccessError | AvailabilityReason::EndpointsAccessError,
                ..
            } => ConditionStatus::Unknown,
            _ => ConditionStatus::False,
        };
        Availability {
            status,
            reason: error.availability_reason(),
            message: error.to_string(),
        }
    }
}

/// How the availability metrics change after a check (§2.3). The server keeps the metrics;
/// this is their semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsUpdate {
    /// `aggregator_unavailable_apiservice{name}`: 1 when unavailable, 0 when available. Set on
    /// every check; remove the series when the APIService is deleted.
    pub unavailable: i64,
    /// `aggregator_unavailable_apiservice_total{name, reason}`: incremented with this reason only
    /// when a status write flips the APIService from available to unavailable.
    pub count_transition: Option<AvailabilityReason>,
}

/// The metric changes for a check whose previous stored status was `was_available`.
pub fn metrics_update(was_available: bool, now: &Availability) -> MetricsUpdate {
    MetricsUpdate {
        unavailable: i64::from(!now.is_available()),
        count_transition: (was_available && !now.is_available()).then_some(now.reason),
    }
}

/// The user of availability probes and discovery fetches: `system:kube-aggregator` in group
/// `system:masters`, which every k8s.io/apiserver backend allows without asking RBAC.
pub fn kube_aggregator_user() -> UserInfo {
    let mut user = UserInfo::new("system:kube-aggregator");
    user.groups = vec!["system:masters".into()];
    user
}

const ATTEMPTS: usize = 5;
const MAX_PROBE_BODY: usize = 4 * 1024 * 1024;

const DIALING: u8 = 0;
const WAITING: u8 = 1;
const READING: u8 = 2;

/// One failed attempt: `kind` and `detail` group identical failures; the URL varies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Failure {
    kind: &'static str,
    detail: String,
    url: String,
}

impl Engine {
    /// Checks one remote APIService: resolution, then the discovery probe. `group` is empty for
    /// the core group (`v1.`), probed at `/api/<version>`. Never fails; every outcome is an
    /// [`Availability`].
    pub async fn check_availability(
        &self,
        backend: &Backend,
        group: &str,
        version: &str,
    ) -> Availability {
        let engine = &*self.inner;
        let service = match backend.resolve(engine) {
            Ok(service) => service,
            Err(error) => return Availability::from_error(&error),
        };
        if service.pick(backend.routing(engine)).is_none() {
            return Availability::from_error(&backend.missing_endpoints());
        }
        let path: Arc<str> = if group.is_empty() {
            format!("/api/{version}").into()
        } else {
            format!("/apis/{group}/{version}").into()
        };
        let group_version: Arc<str> = if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}").into()
        };
        let mut attempts = tokio::task::JoinSet::new();
        for _ in 0..ATTEMPTS {
            attempts.spawn(probe(
                self.clone(),
                backend.clone(),
                Arc::clone(&service),
                Arc::clone(&path),
                Arc::clone(&group_version),
            ));
        }
        let mut failures = Vec::with_capacity(ATTEMPTS);
        let mut notes: Vec<Option<String>> = Vec::new();
        while let Some(joined) = attempts.join_next().await {
            match joined {
                // One success is enough; the others are cancelled when the set is dropped.
                Ok(Ok(note)) => {
                    notes.push(note);
                    break;
                }
                Ok(Err(failure)) => failures.push(failure),
                Err(join) => failures.push(Failure {
                    kind: "failing or missing response from",
                    detail: format!("probe task failed: {join}"),
                    url: path.to_string(),
                }),
            }
        }
        if let Some(note) = notes.into_iter().next() {
            let message = match note {
                None => "all checks passed".to_owned(),
                Some(note) => format!("all checks passed; warning: {note}"),
            };
            return Availability {
                status: ConditionStatus::True,
                reason: AvailabilityReason::Passed,
                message,
            };
        }
        Availability {
            status: ConditionStatus::False,
            reason: AvailabilityReason::FailedDiscoveryCheck,
            message: summarize(failures),
        }
    }
}

/// The most frequent failure (ties: the first in sort order), with every URL that failed that
/// way, sorted. Deterministic whatever order the attempts finished in and whichever endpoints
/// they went to.
fn summarize(mut failures: Vec<Failure>) -> String {
    failures.sort();
    let mut groups: BTreeMap<(&'static str, &str), Vec<&str>> = BTreeMap::new();
    for f in &failures {
        let urls = groups.entry((f.kind, f.detail.as_str())).or_default();
        if !urls.contains(&f.url.as_str()) {
            urls.push(&f.url);
        }
    }
    let count = |kind: &str, detail: &str| {
        failures
            .iter()
            .filter(|f| f.kind == kind && f.detail == detail)
            .count()
    };
    let best = groups
        .iter()
        .max_by(|a, b| {
            count(a.0.0, a.0.1)
                .cmp(&count(b.0.0, b.0.1))
                .then_with(|| b.0.cmp(a.0))
        })
        .map(|((kind, detail), urls)| format!("{kind} {}: {detail}", urls.join(", ")));
    best.unwrap_or_else(|| "no discovery check could be made".into())
}

/// The plain-words explanation of a non-2xx probe answer.
fn status_hint(engine: &Engine, status: StatusCode, group_version: &str) -> String {
    let code = match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    };
    let hint = match status.as_u16() {
        401 => {
            let identity = engine.identity().current();
            let which = match &identity.summary {
                None => "the aggregator presented no client certificate \
                         (--proxy-client-cert-file is not set)"
                    .to_owned(),
                Some(cert) if cert.expired_at(SystemTime::now()) => format!(
                    "the front-proxy client certificate (CN={}) has expired",
                    cert.subject_cn
                ),
                Some(cert) => format!(
                    "the backend did not accept the front-proxy client certificate (CN={}, \
                     issued by {}); its --requestheader-client-ca-file must hold that CA and its \
                     --requestheader-allowed-names must be empty or list {}",
                    cert.subject_cn, cert.issuer_cn, cert.subject_cn
                ),
            };
            Some(which)
        }
        403 => Some(
            "the backend refused system:kube-aggregator (group system:masters); if it did not \
             take the user from the X-Remote-* headers (for example it authenticated the \
             front-proxy certificate as a user instead), check its --requestheader-* flags, \
             otherwise its authorization"
                .to_owned(),
        ),
        404 => Some(format!(
            "the backend does not serve {group_version} (check the APIService's group and \
             version, and that its Service points at this server)"
        )),
        300..=399 => Some("the backend redirected the check; redirects are not followed".into()),
        500..=599 => Some("the backend failed to answer".into()),
        _ => None,
    };
    match hint {
        Some(hint) => format!("{code}: {hint}"),
        None => code,
    }
}

/// What a successful probe's body says, when it is worth a warning.
fn body_note(body: &[u8], group_version: &str) -> Option<String> {
    match serde_json::from_slice::<apimachinery::discovery::APIResourceList>(body) {
        Ok(list) if list.group_version != group_version => Some(format!(
            "the backend answered for groupVersion {:?}, not {group_version}",
            list.group_version
        )),
        Ok(list) if list.resources.is_empty() => Some(format!(
            "the backend lists no resources in {group_version} (clients such as kubectl may \
             report an empty response for it)"
        )),
        Ok(_) => None,
        Err(_) => Some(format!(
            "the answer for {group_version} is not an APIResourceList (is the Service pointing at \
             the right server?)"
        )),
    }
}

/// One probe attempt on a fresh HTTP/1.1 connection, so a pooled connection cannot hide a
/// backend that no longer accepts new ones.
async fn probe(
    engine: Engine,
    backend: Backend,
    service: Arc<ResolvedService>,
    path: Arc<str>,
    group_version: Arc<str>,
) -> Result<Option<String>, Failure> {
    let inner = &*engine.inner;
    let target = backend.pick_from(inner, service).map_err(|error| Failure {
        kind: "failing or missing response from",
        detail: error.to_string(),
        url: path.to_string(),
    })?;
    let url = format!("{}://{}{}", backend.scheme(), target.addr, path);
    let timeout = inner.config.probe_timeout;
    let phase = AtomicU8::new(DIALING);
    let transport = backend.transport(inner);
    let failing = |cause: TransportCause| Failure {
        kind: "failing or missing response from",
        detail: cause.to_string(),
        url: url.clone(),
    };
    let attempt = async {
        let stream = transport
            .http1
            .dial(target.addr.host(), target.addr.port())
            .await
            .map_err(|error| match error {
                Error::Transport { cause, .. } => {
                    if cause.is_connect_failure() {
                        target
                            .service
                            .mark_failed(&target.addr, inner.config.failed_endpoint_backoff);
                    }
                    failing(cause)
                }
                other => Failure {
                    kind: "failing or missing response from",
                    detail: other.to_string(),
                    url: url.clone(),
                },
            })?;
        phase.store(WAITING, Ordering::Relaxed);
        let tls_ctx = transport.http1.tls_context();
        let classify = |e: hyper::Error| failing(crate::connect::classify_chain(&e, &tls_ctx));
        let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Body>(stream)
            .await
            .map_err(classify)?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut request = Request::new(empty());
        *request.uri_mut() = path.parse().map_err(|_| Failure {
            kind: "failing or missing response from",
            detail: "invalid path".into(),
            url: url.clone(),
        })?;
        let headers = request.headers_mut();
        headers.insert(header::HOST, target.addr.host_header().clone());
        write_identity(
            headers,
            &kube_aggregator_user(),
            &inner.config.identity_headers,
        )
        .map_err(|e| Failure {
            kind: "failing or missing response from",
            detail: e.to_string(),
            url: url.clone(),
        })?;
        let response = sender.send_request(request).await.map_err(classify)?;
        let status = response.status();
        if !status.is_success() {
            return Err(Failure {
                kind: "bad status from",
                detail: status_hint(&engine, status, &group_version),
                url: url.clone(),
            });
        }
        phase.store(READING, Ordering::Relaxed);
        let body = http_body_util::Limited::new(response.into_body(), MAX_PROBE_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Ok(body_note(&body, &group_version))
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_) => Err(timeout_failure(
            phase.load(Ordering::Relaxed),
            timeout,
            &url,
        )),
    };
    if result.is_ok() {
        target.service.mark_healthy(&target.addr);
    }
    result
}

fn timeout_failure(phase: u8, after: Duration, url: &str) -> Failure {
    let after = crate::error::fmt_duration(&after);
    let detail = match phase {
        DIALING => format!(
            "no TCP connection and TLS handshake within {after} (is the address reachable from \
             the aggregator, or are packets dropped?)"
        ),
        WAITING => format!("the backend accepted the connection but did not answer within {after}"),
        _ => format!("the backend did not finish its answer within {after}"),
    };
    Failure {
        kind: "timed out waiting for",
        detail,
        url: url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(kind: &'static str, detail: &str, url: &str) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
            url: url.into(),
        }
    }

    #[test]
    fn summaries_are_deterministic() {
        let a = vec![
            failure("failing or missing response from", "refused", "https://b/x"),
            failure("failing or missing response from", "refused", "https://a/x"),
            failure("timed out waiting for", "slow", "https://c/x"),
            failure("failing or missing response from", "refused", "https://a/x"),
        ];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(summarize(a.clone()), summarize(b));
        assert_eq!(
            summarize(a),
            "failing or missing response from https://a/x, https://b/x: refused"
        );
    }

    #[test]
    fn metrics_count_only_flips_to_unavailable() {
        let down = Availability {
            status: ConditionStatus::False,
            reason: AvailabilityReason::FailedDiscoveryCheck,
            message: "x".into(),
        };
        let up = Availability {
            status: ConditionStatus::True,
            reason: AvailabilityReason::Passed,
            message: "all checks passed".into(),
        };
        assert_eq!(
            metrics_update(true, &down),
            MetricsUpdate {
                unavailable: 1,
                count_transition: Some(AvailabilityReason::FailedDiscoveryCheck)
            }
        );
        assert_eq!(metrics_update(false, &down).count_transition, None);
        assert_eq!(
            metrics_update(false, &up),
            MetricsUpdate {
                unavailable: 0,
                count_transition: None
            }
        );
    }

    #[test]
    fn body_notes() {
        let list = |gv: &str, resources: &str| {
            format!(
                r#"{{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"{gv}","resources":{resources}}}"#
            )
        };
        let full = list(
            "g/v1",
            r#"[{"name":"things","singularName":"thing","namespaced":true,"kind":"Thing","verbs":["get"]}]"#,
        );
        assert_eq!(body_note(full.as_bytes(), "g/v1"), None);
        assert!(
            body_note(list("g/v1", "[]").as_bytes(), "g/v1")
                .unwrap()
                .contains("no resources")
        );
        assert!(
            body_note(full.as_bytes(), "g/v2")
                .unwrap()
                .contains("not g/v2")
        );
        assert!(
            body_note(b"<html>", "g/v1")
                .unwrap()
                .contains("not an APIResourceList")
        );
    }

    #[test]
    fn local_matches_upstream() {
        let local = Availability::local();
        assert!(local.is_available());
        assert_eq!(local.reason.as_str(), "Local");
        assert_eq!(local.message, "Local APIServices are always available");
    }
}
