//! OpenAPI v3 passthrough (upstream-behaviour.md §4.2): a backend's `/openapi/v3` index, so the
//! server can merge the entries, and the path of a per-group-version document, which the server
//! forwards unchanged (query included) with [`Engine::forward`].

use std::collections::BTreeMap;

use front_proxy::UserInfo;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::engine::{Backend, Engine};
use crate::error::Error;

const MAX_INDEX: usize = 8 * 1024 * 1024;

/// One entry of an OpenAPI v3 index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenApiV3Path {
    /// e.g. `/openapi/v3/apis/metrics.k8s.io/v1beta1?hash=8F3A…`; the hash is the owner's.
    #[serde(rename = "serverRelativeURL")]
    pub server_relative_url: String,
}

/// A `/openapi/v3` index: `{"paths": {"apis/<group>/<version>": {"serverRelativeURL": …}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenApiV3Index {
    /// Entries by group-version path (`apis/<group>/<version>`, `api/v1`, `version`, …).
    #[serde(default)]
    pub paths: BTreeMap<String, OpenApiV3Path>,
}

/// The index key of a group-version: `apis/<group>/<version>`, or `api/<version>` for the core
/// group. A request for `/openapi/v3/<key>` belongs to the backend whose index has the key.
pub fn openapi_v3_key(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

impl Engine {
    /// Downloads a backend's `/openapi/v3` index as `system:aggregator` (no groups), within
    /// [`crate::EngineConfig::openapi_fetch_timeout`]. `Ok(None)` when the backend answers 404
    /// (it has no v3; upstream then converts its v2 spec, which this crate does not do).
    pub async fn fetch_openapi_v3_index(
        &self,
        backend: &Backend,
    ) -> Result<Option<OpenApiV3Index>, Error> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let fetched = self
            .fetch(
                backend,
                "/openapi/v3",
                headers,
                &UserInfo::new("system:aggregator"),
                self.inner.config.openapi_fetch_timeout,
                MAX_INDEX,
            )
            .await?;
        match fetched.status {
            StatusCode::OK => serde_json::from_slice(&fetched.body)
                .map(Some)
                .map_err(|source| Error::Decode {
                    url: fetched.url,
                    what: "OpenAPI v3 index",
                    source,
                }),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(Error::BadStatus {
                url: fetched.url,
                status,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_round_trips_and_keys_match_upstream() {
        let index: OpenApiV3Index = serde_json::from_str(
            r#"{"paths":{"apis/metrics.k8s.io/v1beta1":{"serverRelativeURL":"/openapi/v3/apis/metrics.k8s.io/v1beta1?hash=AB"}},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(
            index.paths[&openapi_v3_key("metrics.k8s.io", "v1beta1")].server_relative_url,
            "/openapi/v3/apis/metrics.k8s.io/v1beta1?hash=AB"
        );
        assert_eq!(openapi_v3_key("", "v1"), "api/v1");
    }
}
