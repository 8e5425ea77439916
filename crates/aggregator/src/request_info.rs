//! What a request is about, from its method, path and query (`k8s.io/apiserver/pkg/endpoints/
//! request/requestinfo.go`): resource or non-resource, verb, group, version, namespace,
//! resource, subresource and name. Authorization and routing read it.

/// The parsed request (`request.RequestInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// Whether the path is `/api/<v>/…` or `/apis/<g>/<v>/…` with at least a resource.
    pub is_resource_request: bool,
    /// The URL path.
    pub path: String,
    /// Kubernetes verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`) for resource requests; the lower-cased method otherwise.
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    /// The group ("" for core).
    pub api_group: String,
    /// The version.
    pub api_version: String,
    /// The namespace ("" for cluster scope).
    pub namespace: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource.
    pub subresource: String,
    /// The object name.
    pub name: String,
    /// The path segments after group/version (and namespace).
    pub parts: Vec<String>,
}

/// Parses a Go `strconv.ParseBool` value.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The decoded `key=value` pairs of a query string, in order.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode_component(k), decode_component(v)),
            None => (decode_component(p), String::new()),
        })
        .collect()
}

impl RequestInfo {
    /// Parses a request. `query` is the raw query string (without `?`).
    pub fn parse(method: &str, path: &str, query: &str) -> RequestInfo {
        let mut info = RequestInfo {
            path: path.to_owned(),
            verb: method.to_ascii_lowercase(),
            ..RequestInfo::default()
        };
        let mut parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if parts.len() == 1 && parts[0].is_empty() {
            parts.clear();
        }
        if parts.len() < 3 || !(parts[0] == "api" || parts[0] == "apis") {
            return info;
        }
        let prefix = parts[0];
        let mut rest: &[&str] = &parts[1..];
        if prefix == "apis" {
            if rest.len() < 3 {
                return info;
            }
            info.api_group = rest[0].to_owned();
            rest = &rest[1..];
        }
        info.api_prefix = prefix.to_owned();
        info.is_resource_request = true;
        info.api_version = rest[0].to_owned();
        rest = &rest[1..];

        if rest[0] == "watch" || rest[0] == "proxy" {
            if rest.len() < 2 {
                // Upstream: "unable to determine kind and namespace"; treat as non-resource.
                info.is_resource_request = false;
                return info;
            }
            info.verb = rest[0].to_owned();
            rest = &rest[1..];
        } else {
            info.verb = match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            }
            .to_owned();
        }
        if rest[0] == "namespaces" && rest.len() > 1 {
            info.namespace = rest[1].to_owned();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        info.parts = rest.iter().map(|s| s.to_string()).collect();
        let n = info.parts.len();
        if n >= 3 && info.verb != "proxy" {
            info.subresource = info.parts[2].clone();
        }
        if n >= 2 {
            info.name = info.parts[1].clone();
        }
        if n >= 1 {
            info.resource = info.parts[0].clone();
        }
        if info.name.is_empty() && info.verb == "get" {
            let pairs = query_pairs(query);
            let watch = pairs
                .iter()
                .find(|(k, _)| k == "watch")
                .map(|(_, v)| {
                    parse_bool(v)
                        .unwrap_or(!matches!(v.to_ascii_lowercase().as_str(), "false" | "0"))
                })
                .unwrap_or(false);
            info.verb = if watch { "watch" } else { "list" }.to_owned();
            if let Some((_, fs)) = pairs.iter().find(|(k, _)| k == "fieldSelector")
                && let Ok(sel) = apimachinery::selector::FieldSelector::parse(fs)
                && sel.0.len() == 1
                && let Some(name) = sel.equals_value("metadata.name")
                && apimachinery::validation::is_valid_path_segment_name(name).is_empty()
            {
                info.name = name.to_owned();
            }
        }
        if info.name.is_empty() && info.verb == "delete" {
            info.verb = "deletecollection".to_owned();
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_requests() {
        let i = RequestInfo::parse(
            "GET",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            "limit=500",
        );
        assert!(i.is_resource_request);
        assert_eq!(
            (
                i.verb.as_str(),
                i.api_group.as_str(),
                i.api_version.as_str(),
                i.resource.as_str()
            ),
            ("list", "apiregistration.k8s.io", "v1", "apiservices")
        );
        let i = RequestInfo::parse(
            "GET",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            "watch=true&resourceVersion=5",
        );
        assert_eq!(i.verb, "watch");
        let i = RequestInfo::parse(
            "GET",
            "/apis/apiregistration.k8s.io/v1/apiservices",
            "watch=1&fieldSelector=metadata.name%3Dv1.foo",
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "v1.foo"));
        let i = RequestInfo::parse(
            "GET",
            "/apis/apiregistration.k8s.io/v1/watch/apiservices/x",
            "",
        );
        assert_eq!(
            (i.verb.as_str(), i.resource.as_str(), i.name.as_str()),
            ("watch", "apiservices", "x")
        );
        let i = RequestInfo::parse(
            "PATCH",
            "/apis/apiregistration.k8s.io/v1/apiservices/x/status",
            "",
        );
        assert_eq!(
            (i.verb.as_str(), i.name.as_str(), i.subresource.as_str()),
            ("patch", "x", "status")
        );
        let i = RequestInfo::parse("DELETE", "/apis/apiregistration.k8s.io/v1/apiservices", "");
        assert_eq!(i.verb, "deletecollection");
        let i = RequestInfo::parse("GET", "/api/v1/namespaces/kube-system/pods/p/log", "");
        assert_eq!(
            (
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str()
            ),
            ("kube-system", "pods", "p", "log")
        );
        let i = RequestInfo::parse("GET", "/api/v1/namespaces/ns", "");
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.verb.as_str()),
            ("namespaces", "ns", "get")
        );
    }

    #[test]
    fn non_resource_requests() {
        for p in [
            "/",
            "/apis",
            "/apis/g",
            "/apis/g/v1",
            "/api/v1",
            "/version",
            "/openapi/v3/apis/g/v1",
        ] {
            let i = RequestInfo::parse("GET", p, "");
            assert!(!i.is_resource_request, "{p}");
            assert_eq!(i.verb, "get");
        }
        assert_eq!(RequestInfo::parse("POST", "/apis", "").verb, "post");
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_pairs("a=b%3Dc&x&y=1+2&z=%zz"),
            vec![
                ("a".into(), "b=c".into()),
                ("x".into(), "".into()),
                ("y".into(), "1 2".into()),
                ("z".into(), "%zz".into())
            ]
        );
    }
}
