//! What a request asks for, as k8s.io/apiserver's `RequestInfoFactory` sees it: a resource
//! request (`/apis/<group>/<version>/[namespaces/<ns>/]<resource>[/<name>[/<sub>]]`, the same
//! under `/api/<version>`) with a verb derived from the method, or a non-resource request
//! (discovery, health) whose verb is the lower-cased method.

use http::Method;

/// The resource part of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ResourceRef {
    /// The API group (empty for the core group).
    pub group: String,
    /// The version.
    pub version: String,
    /// The plural resource.
    pub resource: String,
    /// The subresource, if any.
    pub subresource: String,
    /// The namespace (empty for cluster-scoped requests and all-namespace lists).
    pub namespace: String,
    /// The object name (empty for lists).
    pub name: String,
}

/// Verb, path and (for resource requests) the resource: what authorization decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// `get`, `list`, `watch`, `create`, … for resources; the lower-cased method otherwise.
    pub verb: String,
    /// The URL path.
    pub path: String,
    /// Present for resource requests.
    pub resource: Option<ResourceRef>,
}

impl RequestInfo {
    /// Classifies a request.
    ///
    /// ```
    /// use http::Method;
    /// use metrics_apiserver::request::RequestInfo;
    ///
    /// let info = RequestInfo::new(&Method::GET, "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods", None);
    /// assert_eq!(info.verb, "list");
    /// assert_eq!(info.resource.map(|r| r.namespace), Some("ns".to_string()));
    ///
    /// let discovery = RequestInfo::new(&Method::GET, "/apis/metrics.k8s.io/v1beta1", None);
    /// assert!(discovery.resource.is_none());
    /// ```
    pub fn new(method: &Method, path: &str, query: Option<&str>) -> Self {
        let non_resource = || RequestInfo {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.to_owned(),
            resource: None,
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (group, version, rest) = match segments.as_slice() {
            ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest),
            ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest),
            _ => return non_resource(),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (*ns, rest),
            _ => ("", rest),
        };
        let resource = rest.first().copied().unwrap_or_default();
        let name = rest.get(1).copied().unwrap_or_default();
        let subresource = rest.get(2).copied().unwrap_or_default();
        if resource.is_empty() {
            return non_resource();
        }
        let watch = query_param(query, "watch").is_some_and(|v| v == "true" || v == "1");
        let verb = match *method {
            Method::GET | Method::HEAD if watch => "watch",
            Method::GET | Method::HEAD if name.is_empty() => "list",
            Method::GET | Method::HEAD => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE if name.is_empty() => "deletecollection",
            Method::DELETE => "delete",
            _ => return non_resource(),
        };
        RequestInfo {
            verb: verb.into(),
            path: path.to_owned(),
            resource: Some(ResourceRef {
                group: group.into(),
                version: version.into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: namespace.into(),
                name: name.into(),
            }),
        }
    }
}

/// The first value of query parameter `key`, percent-decoded (`+` is a space, as Go's
/// `url.ParseQuery` reads it). Invalid escapes are kept as written.
///
/// ```
/// use metrics_apiserver::request::query_param;
///
/// assert_eq!(query_param(Some("labelSelector=app%3Dweb&limit=500"), "labelSelector").as_deref(), Some("app=web"));
/// assert_eq!(query_param(Some("a=b"), "c"), None);
/// ```
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        // Two hex digits are at most 0xFF.
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: Method, path: &str, query: Option<&str>) -> (String, Option<ResourceRef>) {
        let i = RequestInfo::new(&method, path, query);
        (i.verb, i.resource)
    }

    fn res(group: &str, resource: &str, namespace: &str, name: &str) -> Option<ResourceRef> {
        Some(ResourceRef {
            group: group.into(),
            version: if group.is_empty() { "v1" } else { "v1beta1" }.into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    #[test]
    fn resource_requests() {
        let m = "metrics.k8s.io";
        let cases = [
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/nodes",
                None,
                "list",
                res(m, "nodes", "", ""),
            ),
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/nodes/n1",
                None,
                "get",
                res(m, "nodes", "", "n1"),
            ),
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/nodes",
                Some("watch=true"),
                "watch",
                res(m, "nodes", "", ""),
            ),
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/pods",
                Some("watch=false"),
                "list",
                res(m, "pods", "", ""),
            ),
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods",
                None,
                "list",
                res(m, "pods", "ns", ""),
            ),
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/p",
                None,
                "get",
                res(m, "pods", "ns", "p"),
            ),
            (
                Method::DELETE,
                "/apis/metrics.k8s.io/v1beta1/nodes/n1",
                None,
                "delete",
                res(m, "nodes", "", "n1"),
            ),
            (
                Method::DELETE,
                "/apis/metrics.k8s.io/v1beta1/nodes",
                None,
                "deletecollection",
                res(m, "nodes", "", ""),
            ),
            (
                Method::POST,
                "/apis/metrics.k8s.io/v1beta1/nodes",
                None,
                "create",
                res(m, "nodes", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/nodes/n1",
                None,
                "get",
                res("", "nodes", "", "n1"),
            ),
            // `namespaces/<ns>` alone is the namespaces resource.
            (
                Method::GET,
                "/apis/metrics.k8s.io/v1beta1/namespaces/ns",
                None,
                "get",
                res(m, "namespaces", "", "ns"),
            ),
        ];
        for (method, path, query, verb, want) in cases {
            assert_eq!(
                info(method, path, query),
                (verb.to_string(), want),
                "{path}"
            );
        }
    }

    #[test]
    fn non_resource_requests() {
        for path in [
            "/apis",
            "/apis/metrics.k8s.io",
            "/apis/metrics.k8s.io/v1beta1",
            "/api",
            "/api/v1",
            "/healthz",
            "/",
            "/openapi/v2",
        ] {
            assert_eq!(
                info(Method::GET, path, None),
                ("get".into(), None),
                "{path}"
            );
        }
        assert_eq!(info(Method::POST, "/apis", None).0, "post");
    }

    #[test]
    fn query_decoding() {
        let q = Some("labelSelector=kubernetes.io%2Fos+in+%28linux%29&bad=%zz&x");
        assert_eq!(
            query_param(q, "labelSelector").as_deref(),
            Some("kubernetes.io/os in (linux)")
        );
        assert_eq!(query_param(q, "bad").as_deref(), Some("%zz"));
        assert_eq!(query_param(q, "x").as_deref(), Some(""));
        assert_eq!(query_param(Some("t=%"), "t").as_deref(), Some("%"));
        assert_eq!(query_param(Some("t=%4"), "t").as_deref(), Some("%4"));
        assert_eq!(query_param(None, "t"), None);
    }
}
