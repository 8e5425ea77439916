//! The API once a request is authenticated and authorized: discovery, NodeMetrics, PodMetrics
//! and the optional sample core nodes, with content negotiation (JSON or `as=Table`).
//! Every error leaves through [`status_response`] as a Kubernetes `Status`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use apimachinery::discovery::{APIVersions, DiscoveryVersion, ServerAddressByClientCIDR};
use apimachinery::negotiate::{
    DISCOVERY_V2, DISCOVERY_V2BETA1, Offer, TABLE_V1, TABLE_V1BETA1, Target, accepted_types,
    negotiate,
};
use apimachinery::selector::{FieldSelector, LabelSelector};
use apimachinery::status::StatusDetails;
use apimachinery::table::{IncludeObject, ListMeta};
use apimachinery::{GroupResource, Reason, Status};
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue, VARY};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::Full;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use tokio::sync::watch;

use crate::discovery::{Aggregated, Document, Documents};
use crate::node::{NodeIdentity, node_metrics, node_object};
use crate::pods::PodSet;
use crate::request::{RequestInfo, ResourceRef, query_param};
use crate::sampler::{NodeSample, NodeState, current};
use crate::table::{node_metrics_table, nodes_table, pod_metrics_table};
use crate::types::{GROUP, NodeMetricsList, PodMetricsList, VERSION};

/// Response bodies are always complete in memory.
pub type Body = Full<Bytes>;

const JSON: &str = "application/json";

/// Offers of discovery endpoints that have an aggregated form.
const DISCOVERY_OFFERS: [Offer; 3] = [
    Offer::converted(JSON, DISCOVERY_V2),
    Offer::converted(JSON, DISCOVERY_V2BETA1),
    Offer::plain(JSON),
];

/// Offers of resource endpoints. A JSON answer to `application/vnd.kubernetes.protobuf, */*`
/// is what kubectl top accepts (kubectl-wire.md §3.2).
const RESOURCE_OFFERS: [Offer; 3] = [
    Offer::plain(JSON),
    Offer::converted(JSON, TABLE_V1),
    Offer::converted(JSON, TABLE_V1BETA1),
];

const PLAIN_OFFERS: [Offer; 1] = [Offer::plain(JSON)];

/// The API's state: readers of the node sampler and the pod source, and prebuilt discovery.
#[derive(Debug)]
pub struct Api {
    /// The measured node.
    pub node: NodeIdentity,
    /// Node windows.
    pub nodes: watch::Receiver<NodeState>,
    /// Pod metrics.
    pub pods: watch::Receiver<PodSet>,
    /// Whether `/api`, `/api/v1` and `/api/v1/nodes` are served.
    pub serve_core_nodes: bool,
    /// Discovery documents.
    pub docs: Documents,
    /// How long a node request waits for the first window.
    pub first_window_wait: Duration,
}

/// A `Status` as the response (`Cache-Control: no-cache, private` as upstream's filters add).
pub fn status_response(status: &Status) -> Response<Body> {
    let code =
        StatusCode::from_u16(status.http_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(code, JSON, Bytes::from(status.to_json()));
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    response
}

fn json_response(code: StatusCode, content_type: &str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = code;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}

fn ok_json<T: Serialize>(value: &T, content_type: &str) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = json_response(StatusCode::OK, content_type, Bytes::from(body));
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
            response
        }
        Err(e) => status_response(&Status::internal_error(&e.to_string())),
    }
}

fn not_acceptable(offers: &[Offer]) -> Status {
    Status::not_acceptable(&accepted_types(offers))
}

fn method_not_supported(resource: &ResourceRef, verb: &str) -> Status {
    let gr = GroupResource {
        group: &resource.group,
        resource: &resource.resource,
    };
    Status::failure(
        Reason::MethodNotAllowed,
        format!(
            "{verb} is not supported on resources of kind {:?}",
            gr.to_string()
        ),
    )
    .with_details(StatusDetails {
        group: resource.group.clone(),
        kind: resource.resource.clone(),
        ..StatusDetails::default()
    })
}

/// How a resource response is encoded.
#[derive(Debug, Clone, Copy)]
enum Encoding {
    Json,
    Table(Target, IncludeObject),
}

impl Encoding {
    fn negotiate(headers: &HeaderMap, query: Option<&str>) -> Result<Encoding, Box<Status>> {
        let accept = headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        match negotiate(accept, &RESOURCE_OFFERS) {
            None => Err(Box::new(not_acceptable(&RESOURCE_OFFERS))),
            Some(0) => Ok(Encoding::Json),
            Some(i) => {
                let target = RESOURCE_OFFERS[i].target.unwrap_or(TABLE_V1);
                let include = IncludeObject::parse(
                    query_param(query, "includeObject")
                        .as_deref()
                        .unwrap_or_default(),
                )
                .map_err(|m| Box::new(Status::bad_request(m)))?;
                Ok(Encoding::Table(target, include))
            }
        }
    }
}

/// The selectors of a list request; errors are 400 answers.
struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    fn parse(query: Option<&str>, fields: &[&str]) -> Result<Selectors, Box<Status>> {
        let bad = |m: String| Box::new(Status::bad_request(m));
        let labels = LabelSelector::parse(&query_param(query, "labelSelector").unwrap_or_default())
            .map_err(bad)?;
        let selector =
            FieldSelector::parse(&query_param(query, "fieldSelector").unwrap_or_default())
                .map_err(bad)?;
        selector.check_fields(fields).map_err(bad)?;
        Ok(Selectors {
            labels,
            fields: selector,
        })
    }
}

impl Api {
    /// Answers an authenticated, authorized request.
    pub async fn handle(
        &self,
        method: &Method,
        headers: &HeaderMap,
        query: Option<&str>,
        info: &RequestInfo,
        local_addr: SocketAddr,
    ) -> Response<Body> {
        let path = info.path.as_str();
        let reading = matches!(*method, Method::GET | Method::HEAD);
        let core = self.serve_core_nodes;
        let discovery = match path {
            "/apis" => {
                Some(self.aggregated(headers, &self.docs.apis_aggregated, &self.docs.apis_legacy))
            }
            // The trailing-slash form has no aggregated support upstream (§3.1).
            "/apis/" => Some(self.plain(headers, &self.docs.apis_legacy)),
            "/apis/metrics.k8s.io" | "/apis/metrics.k8s.io/" => {
                Some(self.plain(headers, &self.docs.group))
            }
            "/apis/metrics.k8s.io/v1beta1" | "/apis/metrics.k8s.io/v1beta1/" => {
                Some(self.plain(headers, &self.docs.metrics_resources))
            }
            "/api" if core => {
                let legacy = self.api_versions(local_addr);
                Some(self.aggregated(headers, &self.docs.api_aggregated, &legacy))
            }
            "/api/" if core => Some(self.plain(headers, &self.api_versions(local_addr))),
            "/api/v1" | "/api/v1/" if core => Some(self.plain(headers, &self.docs.core_resources)),
            _ => None,
        };
        if let Some(response) = discovery {
            return if reading {
                response
            } else {
                status_response(&Status::method_not_allowed())
            };
        }
        let Some(resource) = &info.resource else {
            return status_response(&Status::not_found_path());
        };
        let served = match (
            resource.group.as_str(),
            resource.version.as_str(),
            resource.resource.as_str(),
        ) {
            (GROUP, VERSION, "nodes") => resource.namespace.is_empty(),
            (GROUP, VERSION, "pods") => true,
            ("", "v1", "nodes") => core && resource.namespace.is_empty(),
            _ => false,
        };
        if !served || !resource.subresource.is_empty() {
            return status_response(&Status::not_found_path());
        }
        if info.verb != "get" && info.verb != "list" {
            return status_response(&method_not_supported(resource, &info.verb));
        }
        let encoding = match Encoding::negotiate(headers, query) {
            Ok(e) => e,
            Err(status) => return status_response(&status),
        };
        match (resource.group.as_str(), resource.resource.as_str()) {
            (GROUP, "nodes") => self.node_metrics(resource, query, encoding).await,
            (GROUP, _) => self.pod_metrics(resource, query, encoding),
            _ => self.core_nodes(resource, query, encoding).await,
        }
    }

    fn api_versions(&self, local_addr: SocketAddr) -> Document {
        let versions = APIVersions {
            kind: "APIVersions".into(),
            versions: vec!["v1".into()],
            server_address_by_client_cidrs: vec![ServerAddressByClientCIDR {
                client_cidr: "0.0.0.0/0".into(),
                server_address: local_addr.to_string(),
            }],
        };
        let body = serde_json::to_vec(&versions).unwrap_or_default();
        Document {
            etag: String::new(),
            body: Bytes::from(body),
        }
    }

    /// A legacy-only document (JSON; anything else is 406).
    fn plain(&self, headers: &HeaderMap, doc: &Document) -> Response<Body> {
        let accept = headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        match negotiate(accept, &PLAIN_OFFERS) {
            Some(_) => {
                let mut r = json_response(StatusCode::OK, JSON, doc.body.clone());
                r.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
                r
            }
            None => status_response(&not_acceptable(&PLAIN_OFFERS)),
        }
    }

    /// `/apis` and `/api`: aggregated when Accept asks for it (with ETag, 304 on an exact
    /// `If-None-Match`), legacy otherwise (upstream-behaviour.md §3.6).
    fn aggregated(
        &self,
        headers: &HeaderMap,
        aggregated: &Aggregated,
        legacy: &Document,
    ) -> Response<Body> {
        let accept = headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        let version = match negotiate(accept, &DISCOVERY_OFFERS) {
            Some(0) => DiscoveryVersion::V2,
            Some(1) => DiscoveryVersion::V2beta1,
            Some(_) => return self.plain(headers, legacy),
            None => return status_response(&not_acceptable(&DISCOVERY_OFFERS)),
        };
        let doc = aggregated.get(version);
        let if_none_match = headers
            .get(http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        let mut response = if apimachinery::etag::if_none_match(if_none_match, &doc.etag) {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            r
        } else {
            json_response(StatusCode::OK, version.content_type(), doc.body.clone())
        };
        let h = response.headers_mut();
        if let Ok(tag) = HeaderValue::from_str(&doc.etag) {
            h.insert(ETAG, tag);
        }
        h.insert(VARY, HeaderValue::from_static("Accept"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("public"));
        response
    }

    /// The latest window: 503 (retry in a second) before the first one, 500 when `/proc`
    /// cannot be read.
    async fn sample(&self) -> Result<Arc<NodeSample>, Status> {
        current(&self.nodes, self.first_window_wait)
            .await
            .map_err(|reason| {
                if reason.starts_with("failed") {
                    Status::internal_error(&reason)
                } else {
                    Status::service_unavailable(reason).with_retry_after(1)
                }
            })
    }

    fn node_selected(&self, resource: &ResourceRef, selectors: &Selectors) -> bool {
        let name = &self.node.name;
        (resource.name.is_empty() || resource.name == *name)
            && selectors.labels.matches(Some(&self.node.labels))
            && selectors
                .fields
                .matches(|f| (f == "metadata.name").then(|| name.clone()))
    }

    async fn node_metrics(
        &self,
        resource: &ResourceRef,
        query: Option<&str>,
        encoding: Encoding,
    ) -> Response<Body> {
        let gr = GroupResource {
            group: GROUP,
            resource: "nodes",
        };
        let selectors = match Selectors::parse(query, &["metadata.name"]) {
            Ok(s) => s,
            Err(status) => return status_response(&status),
        };
        let selected = self.node_selected(resource, &selectors);
        if !resource.name.is_empty() && resource.name != self.node.name {
            return status_response(&Status::not_found(gr, &resource.name));
        }
        let mut items = Vec::new();
        if selected {
            match self.sample().await {
                Ok(sample) => items.push(node_metrics(&self.node, &sample, jiff::Timestamp::now())),
                Err(status) => return status_response(&status),
            }
        }
        match (encoding, resource.name.is_empty()) {
            (Encoding::Table(t, include), _) => ok_json(
                &node_metrics_table(&items, include, t.version),
                &t.json_content_type(),
            ),
            (Encoding::Json, true) => ok_json(&NodeMetricsList::new(items), JSON),
            (Encoding::Json, false) => match items.first() {
                Some(item) => ok_json(item, JSON),
                None => status_response(&Status::not_found(gr, &resource.name)),
            },
        }
    }

    fn pod_metrics(
        &self,
        resource: &ResourceRef,
        query: Option<&str>,
        encoding: Encoding,
    ) -> Response<Body> {
        let selectors = match Selectors::parse(query, &["metadata.name", "metadata.namespace"]) {
            Ok(s) => s,
            Err(status) => return status_response(&status),
        };
        let pods = self.pods.borrow().clone();
        let now = Time(jiff::Timestamp::now());
        let items: Vec<_> = pods
            .iter()
            .filter(|p| {
                let ns = p.metadata.namespace.as_deref().unwrap_or_default();
                let name = p.metadata.name.as_deref().unwrap_or_default();
                (resource.namespace.is_empty() || resource.namespace == ns)
                    && (resource.name.is_empty() || resource.name == name)
                    && selectors.labels.matches(p.metadata.labels.as_ref())
                    && selectors.fields.matches(|f| match f {
                        "metadata.name" => Some(name.to_owned()),
                        "metadata.namespace" => Some(ns.to_owned()),
                        _ => None,
                    })
            })
            .map(|p| {
                let mut p = p.clone();
                p.metadata.creation_timestamp = Some(now.clone());
                p
            })
            .collect();
        if !resource.name.is_empty() && items.is_empty() {
            let gr = GroupResource {
                group: GROUP,
                resource: "pods",
            };
            return status_response(&Status::not_found(gr, &resource.name));
        }
        match (encoding, resource.name.is_empty()) {
            (Encoding::Table(t, include), _) => ok_json(
                &pod_metrics_table(&items, include, t.version),
                &t.json_content_type(),
            ),
            (Encoding::Json, true) => ok_json(&PodMetricsList::new(items), JSON),
            (Encoding::Json, false) => match items.first() {
                Some(item) => ok_json(item, JSON),
                None => status_response(&Status::not_found_path()),
            },
        }
    }

    async fn core_nodes(
        &self,
        resource: &ResourceRef,
        query: Option<&str>,
        encoding: Encoding,
    ) -> Response<Body> {
        let gr = GroupResource {
            group: "",
            resource: "nodes",
        };
        let selectors = match Selectors::parse(query, &["metadata.name"]) {
            Ok(s) => s,
            Err(status) => return status_response(&status),
        };
        if !resource.name.is_empty() && resource.name != self.node.name {
            return status_response(&Status::not_found(gr, &resource.name));
        }
        let mut items = Vec::new();
        if self.node_selected(resource, &selectors) {
            match self.sample().await {
                Ok(sample) => items.push(node_object(&self.node, &sample)),
                Err(status) => return status_response(&status),
            }
        }
        match (encoding, resource.name.is_empty()) {
            (Encoding::Table(t, include), _) => ok_json(
                &nodes_table(&items, include, t.version, jiff::Timestamp::now()),
                &t.json_content_type(),
            ),
            (Encoding::Json, true) => {
                // List items carry no kind/apiVersion in Go's encoding (kubectl-samples/nodelist.json).
                let items: Vec<serde_json::Value> = items
                    .iter()
                    .filter_map(|n| serde_json::to_value(n).ok())
                    .map(|mut v| {
                        if let Some(o) = v.as_object_mut() {
                            o.remove("kind");
                            o.remove("apiVersion");
                        }
                        v
                    })
                    .collect();
                ok_json(
                    &serde_json::json!({
                        "kind": "NodeList",
                        "apiVersion": "v1",
                        "metadata": ListMeta { resource_version: Some("1".into()), ..ListMeta::default() },
                        "items": items,
                    }),
                    JSON,
                )
            }
            (Encoding::Json, false) => match items.first() {
                Some(item) => ok_json(item, JSON),
                None => status_response(&Status::not_found(gr, &resource.name)),
            },
        }
    }
}
