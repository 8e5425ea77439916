//! Fetching one backend's discovery for one APIService (upstream-behaviour.md §3.7): the
//! aggregated `/apis` document cached per backend with its ETag, the legacy
//! `/apis/<group>/<version>` fallback, and `Stale` with the last good resources on failure.
//!
//! Scheduling (which APIServices are dirty, the 60 s refresh, publishing each result as soon as
//! it arrives so one slow backend never holds back the others) is the server's; every fetch here
//! is bounded by [`crate::EngineConfig::discovery_fetch_timeout`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use apimachinery::discovery::{
    APIGroupDiscoveryList, APIResourceDiscovery, APIResourceList, APIVersionDiscovery,
    DISCOVERY_GROUP, Freshness, GroupVersionKind,
};
use apimachinery::negotiate::MediaType;
use front_proxy::UserInfo;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};

use crate::availability::kube_aggregator_user;
use crate::engine::{Backend, Engine};
use crate::error::Error;

/// The `Accept` of upstream v1.32's fetcher (v2, then v2beta1).
pub const AGGREGATED_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Discovery documents can be large (many groups); anything above this is refused.
const MAX_DOCUMENT: usize = 64 * 1024 * 1024;

/// Where a [`VersionDiscovery`]'s resources came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscoverySource {
    /// The backend's cached aggregated document, fetched after `dirty_since`: no request made.
    Cache,
    /// The backend answered 304 to `If-None-Match`: the cached document is still current.
    NotModified,
    /// A new aggregated document (`apidiscovery.k8s.io` v2 or v2beta1).
    Aggregated,
    /// The legacy `APIResourceList` of the group-version, converted.
    Legacy,
    /// The fetch failed: the last good resources, if any, marked `Stale`.
    LastGood,
}

/// One APIService's entry for the merged aggregated discovery document.
#[derive(Debug)]
pub struct VersionDiscovery {
    /// The version entry: resources sorted as the backend listed them (legacy lists by name),
    /// `freshness` `Current` or `Stale`.
    pub version: APIVersionDiscovery,
    /// Where it came from.
    pub source: DiscoverySource,
    /// Why the entry is `Stale`.
    pub error: Option<Error>,
}

impl VersionDiscovery {
    /// Whether the entry is `Stale`.
    pub fn is_stale(&self) -> bool {
        self.version.freshness == Some(Freshness::Stale)
    }
}

struct CachedDocument {
    etag: Option<HeaderValue>,
    document: Arc<APIGroupDiscoveryList>,
    fetched_at: Instant,
}

/// Per backend: the last aggregated document; per (backend, group, version): the last good
/// resources. Locks are held only for map operations, never across a request.
#[derive(Default)]
pub(crate) struct DiscoveryCache {
    documents: Mutex<HashMap<String, CachedDocument>>,
    last_good: Mutex<HashMap<(String, String, String), Vec<APIResourceDiscovery>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Whether a `Content-Type` is aggregated discovery (parameters in any order, as Go's
/// `mime.ParseMediaType` check).
fn is_aggregated(content_type: Option<&HeaderValue>) -> bool {
    let Some(mt) = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(MediaType::parse)
    else {
        return false;
    };
    mt.type_ == "application"
        && mt.subtype == "json"
        && mt.param("g") == Some(DISCOVERY_GROUP)
        && matches!(mt.param("v"), Some("v2" | "v2beta1"))
        && mt.param("as") == Some("APIGroupDiscoveryList")
}

/// The resources of `group`/`version` in a backend's document (empty when it lacks them), with
/// missing `responseKind`s set to `{}` to protect old clients, as upstream.
fn extract(
    document: &APIGroupDiscoveryList,
    group: &str,
    version: &str,
) -> Vec<APIResourceDiscovery> {
    let mut resources = document
        .items
        .iter()
        .filter(|g| g.metadata.name == group)
        .flat_map(|g| g.versions.iter())
        .find(|v| v.version == version)
        .map(|v| v.resources.clone())
        .unwrap_or_default();
    for resource in &mut resources {
        resource
            .response_kind
            .get_or_insert_with(GroupVersionKind::default);
        for sub in &mut resource.subresources {
            sub.response_kind
                .get_or_insert_with(GroupVersionKind::default);
        }
    }
    resources
}

impl Engine {
    /// Fetches `group`/`version`'s discovery from `backend` (§3.7). A cached aggregated document
    /// fetched after `dirty_since` is reused without a request (`None` always asks). Never fails:
    /// errors give a `Stale` entry with the last good resources.
    pub async fn fetch_discovery(
        &self,
        backend: &Backend,
        group: &str,
        version: &str,
        dirty_since: Option<Instant>,
    ) -> VersionDiscovery {
        let key = backend.cache_key();
        let gv_key = (key.clone(), group.to_owned(), version.to_owned());
        let result = self
            .fetch_resources(backend, &key, group, version, dirty_since)
            .await;
        let cache = &self.inner.discovery;
        match result {
            Ok((resources, source)) => {
                lock(&cache.last_good).insert(gv_key, resources.clone());
                VersionDiscovery {
                    version: APIVersionDiscovery {
                        version: version.to_owned(),
                        resources,
                        freshness: Some(Freshness::Current),
                    },
                    source,
                    error: None,
                }
            }
            Err(error) => {
                let resources = lock(&cache.last_good)
                    .get(&gv_key)
                    .cloned()
                    .unwrap_or_default();
                VersionDiscovery {
                    version: APIVersionDiscovery {
                        version: version.to_owned(),
                        resources,
                        freshness: Some(Freshness::Stale),
                    },
                    source: DiscoverySource::LastGood,
                    error: Some(error),
                }
            }
        }
    }

    /// Forgets what is cached for `group`/`version` (call when its APIService is deleted) and,
    /// when no group-version of the backend is left, the backend's document.
    pub fn forget_discovery(&self, backend: &Backend, group: &str, version: &str) {
        let key = backend.cache_key();
        let cache = &self.inner.discovery;
        let mut last_good = lock(&cache.last_good);
        last_good.remove(&(key.clone(), group.to_owned(), version.to_owned()));
        if !last_good.keys().any(|(k, _, _)| *k == key) {
            lock(&cache.documents).remove(&key);
        }
    }

    async fn fetch_resources(
        &self,
        backend: &Backend,
        key: &str,
        group: &str,
        version: &str,
        dirty_since: Option<Instant>,
    ) -> Result<(Vec<APIResourceDiscovery>, DiscoverySource), Error> {
        let cache = &self.inner.discovery;
        let (etag, cached) = {
            let documents = lock(&cache.documents);
            match documents.get(key) {
                Some(doc) if dirty_since.is_some_and(|dirty| doc.fetched_at > dirty) => {
                    return Ok((
                        extract(&doc.document, group, version),
                        DiscoverySource::Cache,
                    ));
                }
                Some(doc) => (doc.etag.clone(), Some(Arc::clone(&doc.document))),
                None => (None, None),
            }
        };
        let timeout = self.inner.config.discovery_fetch_timeout;
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(AGGREGATED_ACCEPT));
        if let Some(etag) = &etag {
            headers.insert(header::IF_NONE_MATCH, etag.clone());
        }
        let fetched = self
            .fetch(
                backend,
                "/apis",
                headers,
                &kube_aggregator_user(),
                timeout,
                MAX_DOCUMENT,
            )
            .await?;
        if fetched.status == StatusCode::NOT_MODIFIED
            && let Some(document) = cached
        {
            if let Some(doc) = lock(&cache.documents).get_mut(key) {
                doc.fetched_at = Instant::now();
            }
            return Ok((
                extract(&document, group, version),
                DiscoverySource::NotModified,
            ));
        }
        match fetched.status {
            StatusCode::SERVICE_UNAVAILABLE => Err(Error::BadStatus {
                url: fetched.url,
                status: fetched.status,
            }),
            StatusCode::OK if is_aggregated(fetched.headers.get(header::CONTENT_TYPE)) => {
                let document: APIGroupDiscoveryList = serde_json::from_slice(&fetched.body)
                    .map_err(|source| Error::Decode {
                        url: fetched.url.clone(),
                        what: "APIGroupDiscoveryList",
                        source,
                    })?;
                let resources = extract(&document, group, version);
                lock(&cache.documents).insert(
                    key.to_owned(),
                    CachedDocument {
                        etag: fetched.headers.get(header::ETAG).cloned(),
                        document: Arc::new(document),
                        fetched_at: Instant::now(),
                    },
                );
                Ok((resources, DiscoverySource::Aggregated))
            }
            _ => self.fetch_legacy(backend, group, version).await,
        }
    }

    /// The legacy fallback: `GET /apis/<group>/<version>` (or `/api/<version>`) as
    /// `system:kube-aggregator` without `system:masters` (discovery is public to authenticated
    /// users), converted; not cached, as upstream.
    async fn fetch_legacy(
        &self,
        backend: &Backend,
        group: &str,
        version: &str,
    ) -> Result<(Vec<APIResourceDiscovery>, DiscoverySource), Error> {
        let path = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let fetched = self
            .fetch(
                backend,
                &path,
                headers,
                &UserInfo::new("system:kube-aggregator"),
                self.inner.config.discovery_fetch_timeout,
                MAX_DOCUMENT,
            )
            .await?;
        if fetched.status != StatusCode::OK {
            return Err(Error::BadStatus {
                url: fetched.url,
                status: fetched.status,
            });
        }
        let list: APIResourceList =
            serde_json::from_slice(&fetched.body).map_err(|source| Error::Decode {
                url: fetched.url.clone(),
                what: "APIResourceList",
                source,
            })?;
        Ok((list.to_aggregated(group, version), DiscoverySource::Legacy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_content_types_are_recognised_in_any_parameter_order() {
        let yes = [
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            "application/json; as=APIGroupDiscoveryList; v=v2beta1; g=apidiscovery.k8s.io",
        ];
        for ct in yes {
            assert!(is_aggregated(Some(&HeaderValue::from_static(ct))), "{ct}");
        }
        let no = [
            "application/json",
            "application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList",
            "application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ];
        for ct in no {
            assert!(!is_aggregated(Some(&HeaderValue::from_static(ct))), "{ct}");
        }
        assert!(!is_aggregated(None));
    }

    #[test]
    fn extract_takes_only_the_group_version_and_fills_response_kinds() {
        let document: APIGroupDiscoveryList = serde_json::from_value(serde_json::json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": [
                {"metadata": {"name": "other.io"}, "versions": [{"version": "v1", "resources": [
                    {"resource": "others", "scope": "Cluster", "verbs": ["get"]}]}]},
                {"metadata": {"name": "wardle.example.com"}, "versions": [
                    {"version": "v1beta1", "resources": [
                        {"resource": "flunders", "scope": "Namespaced", "singularResource": "flunder",
                         "responseKind": {"group": "wardle.example.com", "version": "v1beta1", "kind": "Flunder"},
                         "verbs": ["get", "list"],
                         "subresources": [{"subresource": "status", "verbs": ["get"]}]},
                        {"resource": "parents", "scope": "Namespaced", "verbs": []}]},
                    {"version": "v1alpha1", "resources": []}]}
            ]
        }))
        .unwrap();
        let got = extract(&document, "wardle.example.com", "v1beta1");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].resource, "flunders");
        assert_eq!(
            got[0].subresources[0].response_kind,
            Some(GroupVersionKind::default())
        );
        assert_eq!(got[1].response_kind, Some(GroupVersionKind::default()));
        assert!(extract(&document, "wardle.example.com", "v9").is_empty());
        assert!(extract(&document, "nope.io", "v1").is_empty());
    }
}
