//! Response encodings of the registration API: the object as JSON or YAML, a `Table`, or
//! `PartialObjectMetadata(List)`, chosen from `Accept`.

use apimachinery::Status;
use apimachinery::negotiate::{
    self, Offer, PARTIAL_OBJECT_METADATA_LIST_V1, PARTIAL_OBJECT_METADATA_V1, TABLE_V1,
    TABLE_V1BETA1, Target,
};
use apimachinery::table::{
    IncludeObject, ListMeta, PartialObjectMetadata, PartialObjectMetadataList,
};
use http::{Response, StatusCode};
use proxy::body::Body;
use serde::Serialize;
use store::APIService;

use super::table;
use crate::response;

/// What the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The object(s) as JSON.
    Json,
    /// The object(s) as YAML.
    Yaml,
    /// A `meta.k8s.io/<version>` Table.
    Table(&'static str),
    /// `PartialObjectMetadata` (or the List form for lists).
    Metadata,
}

const OFFERS: [Offer; 6] = [
    Offer::plain("application/json"),
    Offer::converted("application/json", TABLE_V1),
    Offer::converted("application/json", TABLE_V1BETA1),
    Offer::converted("application/json", PARTIAL_OBJECT_METADATA_V1),
    Offer::converted("application/json", PARTIAL_OBJECT_METADATA_LIST_V1),
    Offer::plain("application/yaml"),
];

/// Picks the output for `Accept`; `list` decides which PartialObjectMetadata form matches.
/// Watches are JSON only (upstream has no YAML stream encoding).
pub fn negotiate(accept: Option<&str>, list: bool, watch: bool) -> Result<Output, Status> {
    let offers: Vec<Offer> = OFFERS
        .iter()
        .copied()
        .filter(|o| match o.target {
            Some(t) if t == PARTIAL_OBJECT_METADATA_V1 => !list,
            Some(t) if t == PARTIAL_OBJECT_METADATA_LIST_V1 => list,
            _ => !(watch && o.media_type == "application/yaml"),
        })
        .collect();
    let i = negotiate::negotiate(accept, &offers)
        .ok_or_else(|| Status::not_acceptable(&negotiate::accepted_types(&offers)))?;
    Ok(match offers[i].target {
        None if offers[i].media_type == "application/yaml" => Output::Yaml,
        None => Output::Json,
        Some(t) if t == TABLE_V1 => Output::Table("v1"),
        Some(t) if t == TABLE_V1BETA1 => Output::Table("v1beta1"),
        Some(_) => Output::Metadata,
    })
}

fn content_type(output: Output, list: bool) -> String {
    match output {
        Output::Json => "application/json".into(),
        Output::Yaml => "application/yaml".into(),
        Output::Table("v1beta1") => TABLE_V1BETA1.json_content_type(),
        Output::Table(_) => TABLE_V1.json_content_type(),
        Output::Metadata => {
            let t: Target = if list {
                PARTIAL_OBJECT_METADATA_LIST_V1
            } else {
                PARTIAL_OBJECT_METADATA_V1
            };
            t.json_content_type()
        }
    }
}

fn encode<T: Serialize>(
    code: StatusCode,
    output: Output,
    list: bool,
    value: &T,
    pretty: bool,
) -> Response<Body> {
    let ct = content_type(output, list);
    let body = match output {
        Output::Yaml => serde_json::to_value(value)
            .map_err(|e| e.to_string())
            .and_then(|v| serde_saphyr::to_string(&v).map_err(|e| e.to_string()))
            .map(String::into_bytes),
        _ if pretty => serde_json::to_vec_pretty(value).map_err(|e| e.to_string()),
        _ => serde_json::to_vec(value).map_err(|e| e.to_string()),
    };
    match body {
        Ok(b) => response::bytes(code, &ct, b),
        Err(e) => response::status(&Status::internal_error(&format!(
            "encoding the response: {e}"
        ))),
    }
}

/// One object in the chosen output.
pub fn object(
    code: StatusCode,
    obj: &APIService,
    output: Output,
    include: IncludeObject,
    pretty: bool,
) -> Response<Body> {
    match output {
        Output::Table(v) => {
            let meta = ListMeta {
                resource_version: obj.metadata.resource_version.clone(),
                ..ListMeta::default()
            };
            let t = table::table(v, [obj], meta, include, true, super::strategy::now());
            encode(code, output, false, &t, pretty)
        }
        Output::Metadata => encode(
            code,
            output,
            false,
            &PartialObjectMetadata::new(obj.metadata.clone()),
            pretty,
        ),
        _ => encode(code, output, false, obj, pretty),
    }
}

/// `APIServiceList` as upstream writes it.
#[derive(Serialize)]
struct ApiServiceList<'a> {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: &'a ListMeta,
    items: &'a [APIService],
}

/// A list in the chosen output.
pub fn list(
    items: &[APIService],
    meta: ListMeta,
    output: Output,
    include: IncludeObject,
    pretty: bool,
) -> Response<Body> {
    match output {
        Output::Table(v) => {
            let t = table::table(v, items, meta, include, true, super::strategy::now());
            encode(StatusCode::OK, output, true, &t, pretty)
        }
        Output::Metadata => {
            let l = PartialObjectMetadataList::new(
                meta,
                items
                    .iter()
                    .map(|o| PartialObjectMetadata::new(o.metadata.clone()))
                    .collect(),
            );
            encode(StatusCode::OK, output, true, &l, pretty)
        }
        _ => {
            let l = ApiServiceList {
                kind: "APIServiceList",
                api_version: "apiregistration.k8s.io/v1",
                metadata: &meta,
                items,
            };
            encode(StatusCode::OK, output, true, &l, pretty)
        }
    }
}

/// The response Content-Type of a watch in this output.
pub fn watch_content_type(output: Output) -> String {
    content_type(output, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(kubectl), true, false),
            Ok(Output::Table("v1"))
        );
        assert_eq!(
            negotiate(Some("application/json"), false, false),
            Ok(Output::Json)
        );
        assert_eq!(
            negotiate(Some("application/yaml"), false, false),
            Ok(Output::Yaml)
        );
        assert!(negotiate(Some("application/yaml"), false, true).is_err());
        assert_eq!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                true,
                false
            ),
            Ok(Output::Metadata)
        );
        assert!(
            negotiate(
                Some("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"),
                false,
                false
            )
            .is_err()
        );
        let e = negotiate(Some("application/vnd.kubernetes.protobuf"), false, false)
            .err()
            .map(|s| s.code);
        assert_eq!(e, Some(406));
    }
}
