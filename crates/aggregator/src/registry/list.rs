//! List and watch options (`metav1.ListOptions` from the query), their validation with
//! upstream's messages, selectors, and `limit`/`continue` paging.

use std::time::Duration;

use apimachinery::Status;
use apimachinery::field::{FieldError, FieldPath};
use apimachinery::selector::{FieldSelector, LabelSelector};
use apimachinery::table::IncludeObject;
use base64::Engine as _;
use store::APIService;

use crate::request_info::{parse_bool, query_pairs};

/// Field selectors APIService supports (cluster-scoped object metadata).
pub const FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// Parsed list/watch query parameters.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// `labelSelector`.
    pub label_selector: LabelSelector,
    /// `fieldSelector`.
    pub field_selector: FieldSelector,
    /// `limit` (0 or absent: no limit).
    pub limit: Option<u64>,
    /// `continue`.
    pub continue_token: Option<String>,
    /// `resourceVersion` ("" when absent).
    pub resource_version: String,
    /// `resourceVersionMatch`.
    pub resource_version_match: String,
    /// `watch`.
    pub watch: bool,
    /// `allowWatchBookmarks`.
    pub allow_watch_bookmarks: bool,
    /// `timeoutSeconds`.
    pub timeout: Option<Duration>,
    /// `includeObject` (Table rows).
    pub include_object: IncludeObject,
    /// `sendInitialEvents`.
    pub send_initial_events: Option<bool>,
}

fn bool_param(name: &str, v: &str) -> Result<bool, Status> {
    if v.is_empty() {
        return Ok(true);
    }
    parse_bool(v).ok_or_else(|| {
        Status::bad_request(format!(
            "{name}: strconv.ParseBool: parsing {v:?}: invalid syntax"
        ))
    })
}

impl ListOptions {
    /// Parses and validates the query (upstream `ValidateListOptions`).
    pub fn parse(query: &str) -> Result<ListOptions, Status> {
        let mut o = ListOptions::default();
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "labelSelector" => {
                    o.label_selector = LabelSelector::parse(&v).map_err(Status::bad_request)?
                }
                "fieldSelector" => {
                    let sel = FieldSelector::parse(&v).map_err(Status::bad_request)?;
                    sel.check_fields(FIELDS).map_err(Status::bad_request)?;
                    o.field_selector = sel;
                }
                "limit" => {
                    let n: i64 = v.parse().map_err(|_| {
                        Status::bad_request(format!(
                            "limit: strconv.ParseInt: parsing {v:?}: invalid syntax"
                        ))
                    })?;
                    o.limit = (n > 0).then_some(n as u64);
                }
                "continue" if !v.is_empty() => o.continue_token = Some(v),
                "resourceVersion" => o.resource_version = v,
                "resourceVersionMatch" => o.resource_version_match = v,
                "watch" => o.watch = bool_param("watch", &v)?,
                "allowWatchBookmarks" => {
                    o.allow_watch_bookmarks = bool_param("allowWatchBookmarks", &v)?
                }
                "timeoutSeconds" => {
                    let n: i64 = v.parse().map_err(|_| {
                        Status::bad_request(format!(
                            "timeoutSeconds: strconv.ParseInt: parsing {v:?}: invalid syntax"
                        ))
                    })?;
                    o.timeout = (n > 0).then(|| Duration::from_secs(n as u64));
                }
                "includeObject" => {
                    o.include_object = IncludeObject::parse(&v).map_err(Status::bad_request)?
                }
                "sendInitialEvents" => {
                    o.send_initial_events = Some(bool_param("sendInitialEvents", &v)?)
                }
                _ => {}
            }
        }
        let errs = o.validate();
        if !errs.is_empty() {
            return Err(Status::invalid(
                apimachinery::GroupKind {
                    group: "meta.k8s.io",
                    kind: "ListOptions",
                },
                "",
                &errs,
            ));
        }
        Ok(o)
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = Vec::new();
        let m = &self.resource_version_match;
        if self.watch {
            if self.send_initial_events.is_some() && m != "NotOlderThan" {
                errs.push(FieldError::forbidden(
                    FieldPath::new("resourceVersionMatch"),
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                ));
            }
            if !m.is_empty() && self.send_initial_events.is_none() {
                errs.push(FieldError::forbidden(
                    FieldPath::new("resourceVersionMatch"),
                    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                ));
            }
            return errs;
        }
        if !m.is_empty() {
            if self.resource_version.is_empty() {
                errs.push(FieldError::forbidden(
                    FieldPath::new("resourceVersionMatch"),
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if self.continue_token.is_some() {
                errs.push(FieldError::forbidden(
                    FieldPath::new("resourceVersionMatch"),
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if m != "Exact" && m != "NotOlderThan" {
                errs.push(FieldError::not_supported(
                    FieldPath::new("resourceVersionMatch"),
                    m.as_str(),
                    &["Exact", "NotOlderThan", ""],
                ));
            }
            if m == "Exact" && self.resource_version == "0" {
                errs.push(FieldError::forbidden(
                    FieldPath::new("resourceVersionMatch"),
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if self.send_initial_events.is_some() {
            errs.push(FieldError::forbidden(
                FieldPath::new("sendInitialEvents"),
                "sendInitialEvents is forbidden for list",
            ));
        }
        errs
    }

    /// Whether `obj` passes both selectors.
    pub fn matches(&self, obj: &APIService) -> bool {
        self.label_selector.matches(obj.metadata.labels.as_ref())
            && self.field_selector.matches(|f| match f {
                "metadata.name" => obj.metadata.name.clone(),
                "metadata.namespace" => Some(String::new()),
                _ => None,
            })
    }
}

/// A decoded `continue` token: the list revision and the name to start after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continue {
    /// The resourceVersion of the first page (opaque).
    pub resource_version: String,
    /// Items with a name greater than this come next.
    pub after: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Token {
    v: String,
    rv: String,
    start: String,
}

impl Continue {
    /// Encodes the token (base64 of a small JSON document, like upstream's).
    pub fn encode(&self) -> String {
        let t = Token {
            v: "meta.k8s.io/v1".into(),
            rv: self.resource_version.clone(),
            start: format!("{}\u{0}", self.after),
        };
        base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&t).unwrap_or_default())
    }

    /// Decodes a token; `Err` is a 400 in upstream's words.
    pub fn decode(s: &str) -> Result<Continue, Status> {
        let bad = |why: &str| Status::bad_request(format!("continue key is not valid: {why}"));
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(s)
            .map_err(|_| bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)"))?;
        let t: Token = serde_json::from_slice(&bytes).map_err(|_| bad("invalid token"))?;
        if t.v != "meta.k8s.io/v1" {
            return Err(bad("server does not recognize this encoded key"));
        }
        let after = t.start.strip_suffix('\u{0}').unwrap_or(&t.start).to_owned();
        Ok(Continue {
            resource_version: t.rv,
            after,
        })
    }
}

/// One page: the items, a continue token and the remaining count when there are more.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The items of this page.
    pub items: Vec<APIService>,
    /// The token for the next page.
    pub continue_token: Option<String>,
    /// How many matching items follow this page.
    pub remaining: Option<i64>,
}

/// Filters `items` (sorted by name), skips to after `after`, and cuts at `limit`.
pub fn page(
    items: Vec<APIService>,
    opts: &ListOptions,
    after: Option<&str>,
    list_rv: &str,
) -> Page {
    let mut matching: Vec<APIService> = items
        .into_iter()
        .filter(|o| after.is_none_or(|a| o.metadata.name.as_deref().unwrap_or_default() > a))
        .filter(|o| opts.matches(o))
        .collect();
    let Some(limit) = opts.limit else {
        return Page {
            items: matching,
            ..Page::default()
        };
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if matching.len() <= limit {
        return Page {
            items: matching,
            ..Page::default()
        };
    }
    let rest = matching.split_off(limit);
    let last = matching
        .last()
        .and_then(|o| o.metadata.name.clone())
        .unwrap_or_default();
    Page {
        items: matching,
        continue_token: Some(
            Continue {
                resource_version: list_rv.to_owned(),
                after: last,
            }
            .encode(),
        ),
        remaining: Some(rest.len() as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn named(n: &str, labels: &[(&str, &str)]) -> APIService {
        APIService {
            metadata: ObjectMeta {
                name: Some(n.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..APIService::default()
        }
    }

    #[test]
    fn options_and_validation() {
        let o = ListOptions::parse("labelSelector=app%3Dweb&fieldSelector=metadata.name%3Dv1.a&limit=500&watch=true&allowWatchBookmarks=true&timeoutSeconds=5&timeout=32s")
            .unwrap_or_default();
        assert!(o.watch && o.allow_watch_bookmarks);
        assert_eq!(o.limit, Some(500));
        assert_eq!(o.timeout, Some(Duration::from_secs(5)));
        assert!(o.matches(&named("v1.a", &[("app", "web")])));
        assert!(!o.matches(&named("v1.b", &[("app", "web")])));

        let e = ListOptions::parse("fieldSelector=spec.group%3Dx")
            .err()
            .unwrap_or_else(|| Status::bad_request(""));
        assert_eq!(
            e.message,
            r#""spec.group" is not a known field selector: only "metadata.name", "metadata.namespace""#
        );
        let e = ListOptions::parse("resourceVersionMatch=Exact")
            .err()
            .unwrap_or_else(|| Status::bad_request(""));
        assert_eq!(e.code, 422);
        assert!(
            e.message
                .contains("resourceVersionMatch is forbidden unless resourceVersion is provided"),
            "{}",
            e.message
        );
        let e = ListOptions::parse("resourceVersion=0&resourceVersionMatch=Exact")
            .err()
            .unwrap_or_else(|| Status::bad_request(""));
        assert!(
            e.message.contains("forbidden for resourceVersion \"0\""),
            "{}",
            e.message
        );
        assert!(ListOptions::parse("resourceVersion=5&resourceVersionMatch=Sometimes").is_err());
        assert!(ListOptions::parse("labelSelector=a%20b").is_err());
        assert!(ListOptions::parse("limit=x").is_err());
        assert!(ListOptions::parse("watch=maybe").is_err());
    }

    #[test]
    fn paging() {
        let items: Vec<APIService> = ["v1.a", "v1.b", "v1.c", "v1.d", "v1.e"]
            .iter()
            .map(|n| named(n, &[]))
            .collect();
        let opts = ListOptions {
            limit: Some(2),
            ..ListOptions::default()
        };
        let p1 = page(items.clone(), &opts, None, "7");
        assert_eq!(p1.items.len(), 2);
        assert_eq!(p1.remaining, Some(3));
        let c = Continue::decode(p1.continue_token.as_deref().unwrap_or_default()).unwrap_or_else(
            |_| Continue {
                resource_version: String::new(),
                after: String::new(),
            },
        );
        assert_eq!(
            c,
            Continue {
                resource_version: "7".into(),
                after: "v1.b".into()
            }
        );
        let p2 = page(items.clone(), &opts, Some(&c.after), "7");
        assert_eq!(
            p2.items
                .iter()
                .filter_map(|o| o.metadata.name.as_deref())
                .collect::<Vec<_>>(),
            ["v1.c", "v1.d"]
        );
        let p3 = page(items, &opts, Some("v1.d"), "7");
        assert_eq!(p3.items.len(), 1);
        assert!(p3.continue_token.is_none());
        assert!(Continue::decode("!!!").is_err());
    }
}
