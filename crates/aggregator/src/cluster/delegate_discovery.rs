//! The delegate's own groups in our `/apis` (upstream-behaviour.md §3.6): kube-apiserver's
//! built-in and CRD group-versions, fetched from its `/apis` and merged with the APIServices',
//! so `kubectl api-resources` lists core, built-in and aggregated resources in one list.
//!
//! The delegate's aggregated document (v2) is fetched at start and every 10 s with
//! `If-None-Match` (a 304 costs nothing); a delegate without aggregated discovery is read the
//! legacy way (`APIGroupList`, then each group-version's `APIResourceList`). Requests go through
//! the proxy engine like user requests — front-proxy certificate, identity
//! `system:kube-aggregator` in `system:masters`. A failed fetch keeps the last good document.
//!
//! Merge rule (the `ResourceManager`'s source order): a group-version served by an APIService
//! (source Aggregator) shadows the delegate's (source Builtin). Delegate group-versions get
//! upstream's built-in group priorities (1000 for unknown groups, e.g. CRDs) and keep the
//! delegate's version order.

use std::sync::Arc;
use std::time::Duration;

use apimachinery::discovery::{
    APIGroupDiscovery, APIGroupDiscoveryList, APIGroupList, APIResourceList, APIVersionDiscovery,
    Freshness, GroupMeta, PrioritizedVersion,
};
use bytes::Bytes;
use front_proxy::UserInfo;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use proxy::{Backend, Engine};
use tokio::sync::watch;

use crate::discovery::BackendDiscovery;

/// How often the delegate's `/apis` is fetched.
pub const REFRESH: Duration = Duration::from_secs(10);
/// Largest discovery document accepted.
const MAX_BYTES: usize = 32 * 1024 * 1024;
const AGGREGATED_V2: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// The delegate's groups (the core group excluded: `/api` is the delegate's).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DelegateGroups {
    /// Groups in the delegate's order, versions preferred first.
    pub groups: Vec<APIGroupDiscovery>,
}

/// Upstream's built-in group priorities (kube-apiserver's table); 1000 for anything else.
pub fn builtin_group_priority(group: &str) -> i32 {
    match group {
        "apps" => 17800,
        "events.k8s.io" => 17750,
        "authentication.k8s.io" => 17700,
        "authorization.k8s.io" => 17600,
        "autoscaling" => 17500,
        "batch" => 17400,
        "certificates.k8s.io" => 17300,
        "networking.k8s.io" => 17200,
        "policy" => 17100,
        "rbac.authorization.k8s.io" => 17000,
        "storage.k8s.io" => 16800,
        "admissionregistration.k8s.io" | "apiextensions.k8s.io" => 16700,
        "scheduling.k8s.io" => 16600,
        "coordination.k8s.io" => 16500,
        "node.k8s.io" => 16300,
        "discovery.k8s.io" => 16200,
        "flowcontrol.apiserver.k8s.io" => 16100,
        _ => 1000,
    }
}

impl DelegateGroups {
    /// The delegate's group-versions that no APIService claims (`claimed(group, version)`), with
    /// priorities for ordering, and the version entry to publish for each.
    pub fn unclaimed(
        &self,
        claimed: impl Fn(&str, &str) -> bool,
    ) -> Vec<(PrioritizedVersion, APIVersionDiscovery)> {
        let mut out = Vec::new();
        for g in &self.groups {
            let group = g.metadata.name.as_str();
            if group.is_empty() {
                continue;
            }
            let n = g.versions.len() as i32;
            for (i, v) in g.versions.iter().enumerate() {
                if claimed(group, &v.version) {
                    continue;
                }
                out.push((
                    PrioritizedVersion {
                        name: format!("{}.{group}", v.version),
                        group: group.to_owned(),
                        version: v.version.clone(),
                        group_priority_minimum: builtin_group_priority(group),
                        // Keeps the delegate's order (preferred first) among its versions.
                        version_priority: 15 + (n - i as i32),
                    },
                    v.clone(),
                ));
            }
        }
        out
    }
}

fn is_aggregated(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = ct.split(';').map(str::trim);
    if !parts
        .next()
        .is_some_and(|t| t.eq_ignore_ascii_case("application/json"))
    {
        return false;
    }
    let params: Vec<(String, String)> = parts
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.trim().trim_matches('"').to_owned(),
            )
        })
        .collect();
    let has = |k: &str, v: &str| params.iter().any(|(pk, pv)| pk == k && pv == v);
    has("g", "apidiscovery.k8s.io") && has("v", "v2") && has("as", "APIGroupDiscoveryList")
}

/// Fetches the delegate's discovery through the engine.
#[derive(Debug, Clone)]
pub struct DelegateDiscovery {
    engine: Engine,
    delegate: Backend,
    etag: Option<String>,
    last: Option<Arc<DelegateGroups>>,
}

fn user() -> UserInfo {
    UserInfo {
        name: "system:kube-aggregator".into(),
        uid: String::new(),
        groups: vec![
            "system:masters".into(),
            front_proxy::SYSTEM_AUTHENTICATED.into(),
        ],
        extra: Default::default(),
    }
}

impl DelegateDiscovery {
    /// A fetcher for `delegate`.
    pub fn new(engine: Engine, delegate: Backend) -> Self {
        DelegateDiscovery {
            engine,
            delegate,
            etag: None,
            last: None,
        }
    }

    async fn get(
        &self,
        path: &str,
        accept: &str,
        etag: Option<&str>,
    ) -> Result<(StatusCode, Option<HeaderValue>, Option<HeaderValue>, Bytes), String> {
        let mut req = Request::get(path)
            .header(http::header::ACCEPT, accept)
            .body(proxy::empty())
            .map_err(|e| e.to_string())?;
        if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
            req.headers_mut().insert(http::header::IF_NONE_MATCH, tag);
        }
        let user = user();
        let ctx = proxy::RequestContext {
            user: &user,
            client_addr: None,
            audit_id: None,
        };
        let resp = tokio::time::timeout(
            Duration::from_secs(10),
            self.engine.forward(&self.delegate, req, &ctx),
        )
        .await
        .map_err(|_| format!("GET {path}: no answer within 10s"))?;
        let status = resp.status();
        let ct = resp.headers().get(http::header::CONTENT_TYPE).cloned();
        let tag = resp.headers().get(http::header::ETAG).cloned();
        let mut body = resp.into_body();
        let mut bytes = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("GET {path}: {e}"))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_BYTES {
                    return Err(format!("GET {path}: larger than {MAX_BYTES} bytes"));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok((status, ct, tag, bytes.freeze()))
    }

    /// One fetch: `Ok(Some(groups))` for a new document, `Ok(None)` when unchanged (304).
    pub async fn fetch(&mut self) -> Result<Option<Arc<DelegateGroups>>, String> {
        let etag = self.etag.clone();
        let (status, ct, tag, body) = self
            .get(
                "/apis",
                AGGREGATED_V2,
                etag.as_deref().filter(|_| self.last.is_some()),
            )
            .await?;
        if status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if status != StatusCode::OK {
            return Err(format!(
                "GET /apis: {status}: {}",
                String::from_utf8_lossy(&body).trim()
            ));
        }
        let groups = if is_aggregated(ct.as_ref()) {
            let doc: APIGroupDiscoveryList = serde_json::from_slice(&body)
                .map_err(|e| format!("decoding the delegate's APIGroupDiscoveryList: {e}"))?;
            self.etag = tag.and_then(|t| t.to_str().ok().map(str::to_owned));
            doc.items
        } else {
            self.etag = None;
            self.legacy(&body).await?
        };
        let groups = Arc::new(DelegateGroups {
            groups: groups
                .into_iter()
                .filter(|g| !g.metadata.name.is_empty())
                .collect(),
        });
        if self.last.as_ref() == Some(&groups) {
            return Ok(None);
        }
        self.last = Some(groups.clone());
        Ok(Some(groups))
    }

    /// A delegate without aggregated discovery: its `APIGroupList`, then every group-version.
    async fn legacy(&self, body: &[u8]) -> Result<Vec<APIGroupDiscovery>, String> {
        let list: APIGroupList = serde_json::from_slice(body)
            .map_err(|e| format!("decoding the delegate's APIGroupList: {e}"))?;
        let mut out = Vec::new();
        for g in list.groups {
            let mut versions = Vec::new();
            for v in &g.versions {
                let path = format!("/apis/{}/{}", g.name, v.version);
                let (status, _, _, body) = self.get(&path, "application/json", None).await?;
                let (resources, freshness) = if status == StatusCode::OK {
                    match serde_json::from_slice::<APIResourceList>(&body) {
                        Ok(l) => (l.to_aggregated(&g.name, &v.version), Freshness::Current),
                        Err(_) => (Vec::new(), Freshness::Stale),
                    }
                } else {
                    (Vec::new(), Freshness::Stale)
                };
                versions.push(APIVersionDiscovery {
                    version: v.version.clone(),
                    resources,
                    freshness: Some(freshness),
                });
            }
            out.push(APIGroupDiscovery {
                metadata: GroupMeta {
                    name: g.name.clone(),
                    creation_timestamp: None,
                },
                versions,
            });
        }
        Ok(out)
    }

    /// Fetches every [`REFRESH`] until `shutdown`, publishing new documents into `publish`.
    pub async fn run(
        mut self,
        publish: watch::Sender<Arc<BackendDiscovery>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut logged = false;
        loop {
            match self.fetch().await {
                Ok(Some(groups)) => {
                    logged = false;
                    publish.send_modify(|d| Arc::make_mut(d).delegate = Some(groups));
                }
                Ok(None) => logged = false,
                Err(error) => {
                    if !logged {
                        tracing::warn!(%error, "fetching the delegate's discovery failed; keeping the last good one");
                        logged = true;
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, versions: &[&str]) -> APIGroupDiscovery {
        APIGroupDiscovery {
            metadata: GroupMeta {
                name: name.into(),
                creation_timestamp: None,
            },
            versions: versions
                .iter()
                .map(|v| APIVersionDiscovery {
                    version: v.to_string(),
                    resources: Vec::new(),
                    freshness: None,
                })
                .collect(),
        }
    }

    #[test]
    fn apiservices_shadow_the_delegate_and_order_is_kept() {
        let d = DelegateGroups {
            groups: vec![
                group("apps", &["v1"]),
                group("autoscaling", &["v2", "v1"]),
                group("crd.example.com", &["v1beta1"]),
            ],
        };
        let got = d.unclaimed(|g, v| g == "autoscaling" && v == "v1");
        let names: Vec<&str> = got.iter().map(|(p, _)| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["v1.apps", "v2.autoscaling", "v1beta1.crd.example.com"]
        );
        assert_eq!(got[0].0.group_priority_minimum, 17800);
        assert_eq!(got[2].0.group_priority_minimum, 1000);
        let two = d.unclaimed(|_, _| false);
        let auto: Vec<i32> = two
            .iter()
            .filter(|(p, _)| p.group == "autoscaling")
            .map(|(p, _)| p.version_priority)
            .collect();
        assert!(auto[0] > auto[1], "v2 stays preferred");
    }

    #[test]
    fn aggregated_content_types() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_aggregated(Some(&h(AGGREGATED_V2))));
        assert!(is_aggregated(Some(&h(
            "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io"
        ))));
        assert!(!is_aggregated(Some(&h("application/json"))));
        assert!(!is_aggregated(None));
    }
}
