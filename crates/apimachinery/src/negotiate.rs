//! Content negotiation: `Accept` parsing with q-values and parameters in any order, matching
//! against what an endpoint offers (plain objects, `as=Table`, `as=APIGroupDiscoveryList`, …),
//! and `Content-Type` parsing for request bodies.
//!
//! Rules follow `k8s.io/apiserver/pkg/endpoints/handlers/negotiation` as far as kubectl and
//! client-go exercise them: clauses are tried by q-value, then specificity, then client order;
//! a clause with `as=` (plus `g=` and `v=`) asks for a conversion and only matches an offer of
//! exactly that conversion; a clause without `as=` only matches plain offers; other parameters
//! (`charset`, `pretty`, `stream`) are ignored; `q=0` excludes a clause.

/// A parsed media type: lower-cased `type/subtype` and its parameters (keys lower-cased,
/// values as given, quotes removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// e.g. `application`.
    pub type_: String,
    /// e.g. `json`.
    pub subtype: String,
    /// Parameters in the order given.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Parses `type/subtype;k=v;…`; `None` if there is no `/`.
    pub fn parse(s: &str) -> Option<MediaType> {
        let mut parts = s.split(';');
        let essence = parts.next()?.trim();
        let (t, st) = essence.split_once('/')?;
        let (t, st) = (t.trim(), st.trim());
        if t.is_empty() || st.is_empty() {
            return None;
        }
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim().trim_matches('"');
                Some((k.trim().to_ascii_lowercase(), v.to_owned()))
            })
            .collect();
        Some(MediaType {
            type_: t.to_ascii_lowercase(),
            subtype: st.to_ascii_lowercase(),
            params,
        })
    }

    /// `type/subtype`.
    pub fn essence(&self) -> String {
        format!("{}/{}", self.type_, self.subtype)
    }

    /// The value of parameter `key` (lower-case key).
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One clause of an `Accept` header.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRange {
    /// The media type (may contain `*`).
    pub media_type: MediaType,
    /// The q-value (1.0 when absent).
    pub q: f32,
}

/// Parses an `Accept` header into clauses sorted by preference: q-value descending, then
/// specific types before `type/*` before `*/*`, then header order. Clauses with `q=0` and
/// unparsable clauses are dropped.
pub fn parse_accept(header: &str) -> Vec<MediaRange> {
    let mut ranges: Vec<(usize, MediaRange)> = header
        .split(',')
        .filter_map(|clause| {
            let mut mt = MediaType::parse(clause.trim())?;
            let mut q = 1.0f32;
            mt.params.retain(|(k, v)| {
                if k == "q" {
                    q = v.parse().unwrap_or(1.0);
                    false
                } else {
                    true
                }
            });
            Some(MediaRange { media_type: mt, q })
        })
        .filter(|r| r.q > 0.0)
        .enumerate()
        .collect();
    ranges.sort_by(|(ia, a), (ib, b)| {
        b.q.partial_cmp(&a.q)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| (b.media_type.type_ != "*").cmp(&(a.media_type.type_ != "*")))
            .then_with(|| (b.media_type.subtype != "*").cmp(&(a.media_type.subtype != "*")))
            .then_with(|| ia.cmp(ib))
    });
    ranges.into_iter().map(|(_, r)| r).collect()
}

/// A conversion target (`as=<kind>;g=<group>;v=<version>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    /// `as`, e.g. `Table`.
    pub kind: &'static str,
    /// `g`, e.g. `meta.k8s.io`.
    pub group: &'static str,
    /// `v`, e.g. `v1`.
    pub version: &'static str,
}

/// `as=Table;g=meta.k8s.io;v=v1`.
pub const TABLE_V1: Target = Target {
    kind: "Table",
    group: "meta.k8s.io",
    version: "v1",
};
/// `as=Table;g=meta.k8s.io;v=v1beta1`.
pub const TABLE_V1BETA1: Target = Target {
    kind: "Table",
    group: "meta.k8s.io",
    version: "v1beta1",
};
/// `as=PartialObjectMetadata;g=meta.k8s.io;v=v1`.
pub const PARTIAL_OBJECT_METADATA_V1: Target = Target {
    kind: "PartialObjectMetadata",
    group: "meta.k8s.io",
    version: "v1",
};
/// `as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`.
pub const PARTIAL_OBJECT_METADATA_LIST_V1: Target = Target {
    kind: "PartialObjectMetadataList",
    group: "meta.k8s.io",
    version: "v1",
};
/// `as=APIGroupDiscoveryList;g=apidiscovery.k8s.io;v=v2`.
pub const DISCOVERY_V2: Target = Target {
    kind: "APIGroupDiscoveryList",
    group: "apidiscovery.k8s.io",
    version: "v2",
};
/// `as=APIGroupDiscoveryList;g=apidiscovery.k8s.io;v=v2beta1`.
pub const DISCOVERY_V2BETA1: Target = Target {
    kind: "APIGroupDiscoveryList",
    group: "apidiscovery.k8s.io",
    version: "v2beta1",
};

impl Target {
    /// The response `Content-Type` for this target in JSON, parameters in upstream's order
    /// (`as;v;g` for meta conversions, `g;v;as` for discovery, as recorded in kubectl-samples).
    pub fn json_content_type(self) -> String {
        if self.group == "apidiscovery.k8s.io" {
            format!(
                "application/json;g={};v={};as={}",
                self.group, self.version, self.kind
            )
        } else {
            format!(
                "application/json;as={};v={};g={}",
                self.kind, self.version, self.group
            )
        }
    }
}

/// What an endpoint can produce: a concrete media type and, optionally, a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// e.g. `application/json`.
    pub media_type: &'static str,
    /// `None` for the plain object.
    pub target: Option<Target>,
}

impl Offer {
    /// A plain offer.
    pub const fn plain(media_type: &'static str) -> Self {
        Offer {
            media_type,
            target: None,
        }
    }

    /// A conversion offer.
    pub const fn converted(media_type: &'static str, target: Target) -> Self {
        Offer {
            media_type,
            target: Some(target),
        }
    }
}

fn clause_matches(range: &MediaRange, offer: &Offer) -> bool {
    let (ot, ost) = offer
        .media_type
        .split_once('/')
        .unwrap_or((offer.media_type, ""));
    let mt = &range.media_type;
    let type_ok = mt.type_ == "*" || mt.type_ == ot;
    let subtype_ok = mt.subtype == "*" || mt.subtype == ost;
    if !(type_ok && subtype_ok) {
        return false;
    }
    match (mt.param("as"), offer.target) {
        (None, None) => true,
        (Some(kind), Some(t)) => {
            kind == t.kind && mt.param("g") == Some(t.group) && mt.param("v") == Some(t.version)
        }
        _ => false,
    }
}

/// Picks the offer the client prefers: the index into `offers`, or `None` when nothing is
/// acceptable (answer 406). A missing or empty `Accept` means `*/*` (the first plain offer).
pub fn negotiate(accept: Option<&str>, offers: &[Offer]) -> Option<usize> {
    let accept = accept
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .unwrap_or("*/*");
    for range in parse_accept(accept) {
        if let Some(i) = offers.iter().position(|o| clause_matches(&range, o)) {
            return Some(i);
        }
    }
    None
}

/// The media types named in a 406 answer for these offers (plain types only, deduplicated).
pub fn accepted_types(offers: &[Offer]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for o in offers {
        if !out.contains(&o.media_type) {
            out.push(o.media_type);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFERS: [Offer; 4] = [
        Offer::plain("application/json"),
        Offer::converted("application/json", TABLE_V1),
        Offer::converted("application/json", TABLE_V1BETA1),
        Offer::plain("application/yaml"),
    ];

    #[test]
    fn kubectl_table_accept_picks_table_v1() {
        let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(negotiate(Some(accept), &OFFERS), Some(1));
        // Parameter order does not matter.
        assert_eq!(
            negotiate(
                Some("application/json;g=meta.k8s.io;v=v1beta1;as=Table"),
                &OFFERS
            ),
            Some(2)
        );
        // Without Table offers the plain JSON clause matches.
        assert_eq!(negotiate(Some(accept), &OFFERS[..1]), Some(0));
    }

    #[test]
    fn plain_and_wildcards() {
        assert_eq!(negotiate(None, &OFFERS), Some(0));
        assert_eq!(negotiate(Some(""), &OFFERS), Some(0));
        assert_eq!(negotiate(Some("application/json, */*"), &OFFERS), Some(0));
        assert_eq!(negotiate(Some("application/*"), &OFFERS), Some(0));
        assert_eq!(negotiate(Some("application/yaml"), &OFFERS), Some(3));
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf, */*"), &OFFERS),
            Some(0)
        );
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf"), &OFFERS),
            None
        );
        assert_eq!(negotiate(Some("text/html"), &OFFERS), None);
        // An unknown conversion is skipped, not served plain.
        assert_eq!(
            negotiate(Some("application/json;as=Foo;g=x;v=v1"), &OFFERS),
            None
        );
        // charset and other parameters are ignored.
        assert_eq!(
            negotiate(Some("application/json; charset=utf-8"), &OFFERS),
            Some(0)
        );
    }

    #[test]
    fn q_values_and_specificity() {
        assert_eq!(
            negotiate(Some("application/json;q=0.5, application/yaml"), &OFFERS),
            Some(3)
        );
        assert_eq!(negotiate(Some("*/*, application/yaml"), &OFFERS), Some(3));
        assert_eq!(negotiate(Some("application/json;q=0"), &OFFERS), None);
    }

    #[test]
    fn discovery_accepts() {
        let offers = [
            Offer::converted("application/json", DISCOVERY_V2),
            Offer::converted("application/json", DISCOVERY_V2BETA1),
            Offer::plain("application/json"),
        ];
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(negotiate(Some(kubectl), &offers), Some(0));
        assert_eq!(
            negotiate(
                Some("application/json;as=APIGroupDiscoveryList;v=v2beta1;g=apidiscovery.k8s.io"),
                &offers
            ),
            Some(1)
        );
        assert_eq!(negotiate(Some("application/json, */*"), &offers), Some(2));
        assert_eq!(
            DISCOVERY_V2.json_content_type(),
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
        assert_eq!(
            TABLE_V1.json_content_type(),
            "application/json;as=Table;v=v1;g=meta.k8s.io"
        );
    }

    #[test]
    fn media_type_parsing() {
        let mt = MediaType::parse("Application/Merge-Patch+JSON; charset=\"utf-8\"");
        assert_eq!(
            mt.as_ref().map(MediaType::essence).as_deref(),
            Some("application/merge-patch+json")
        );
        assert_eq!(mt.as_ref().and_then(|m| m.param("charset")), Some("utf-8"));
        assert_eq!(MediaType::parse("json"), None);
        assert_eq!(
            accepted_types(&OFFERS),
            vec!["application/json", "application/yaml"]
        );
    }
}
