//! `meta.k8s.io/v1` `Table` and `PartialObjectMetadata`: what `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` (upstream-behaviour.md §1.7, §9 item 7).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// `ListMeta` as lists and Tables carry it (empty fields omitted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMeta {
    /// The list's resourceVersion (opaque).
    #[serde(
        rename = "resourceVersion",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub resource_version: Option<String>,
    /// The continue token when more items remain.
    #[serde(rename = "continue", default, skip_serializing_if = "Option::is_none")]
    pub continue_: Option<String>,
    /// How many items remain after this page.
    #[serde(
        rename = "remainingItemCount",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub remaining_item_count: Option<i64>,
}

/// One column of a Table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableColumnDefinition {
    /// Column name; kubectl upper-cases it.
    pub name: String,
    /// OpenAPI type, e.g. `string`.
    #[serde(rename = "type")]
    pub type_: String,
    /// OpenAPI format, e.g. `name` or empty.
    pub format: String,
    /// Description.
    pub description: String,
    /// 0 for default columns, > 0 for `-o wide` only.
    pub priority: i32,
}

/// One row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRow {
    /// Cell values, one per column.
    pub cells: Vec<serde_json::Value>,
    /// The object (by default a `PartialObjectMetadata`; omitted with `includeObject=None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<serde_json::Value>,
}

/// `meta.k8s.io/v1` `Table`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// `Table`.
    pub kind: String,
    /// `meta.k8s.io/v1` (or `v1beta1` when that was asked for).
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// resourceVersion / continue / remainingItemCount of the list.
    pub metadata: ListMeta,
    /// Columns (upstream sends them in every response, also in watch events).
    #[serde(rename = "columnDefinitions")]
    pub column_definitions: Vec<TableColumnDefinition>,
    /// Rows.
    pub rows: Vec<TableRow>,
}

impl Table {
    /// A Table of `meta.k8s.io/<version>`.
    pub fn new(
        version: &str,
        metadata: ListMeta,
        column_definitions: Vec<TableColumnDefinition>,
        rows: Vec<TableRow>,
    ) -> Self {
        Table {
            kind: "Table".into(),
            api_version: format!("meta.k8s.io/{version}"),
            metadata,
            column_definitions,
            rows,
        }
    }
}

/// What `includeObject` asks each row to carry (upstream default: `Metadata`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// The full object.
    Object,
}

impl IncludeObject {
    /// Parses the query value (`None`, `Metadata`, `Object`); `Err` with upstream's message.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(format!(
                "includeObject: Unsupported value: {}: supported values: \"Metadata\", \"None\", \"Object\"",
                crate::field::go_quote(other)
            )),
        }
    }
}

/// `meta.k8s.io/v1` `PartialObjectMetadata`: kind, apiVersion and the full `ObjectMeta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialObjectMetadata {
    /// `PartialObjectMetadata`.
    pub kind: String,
    /// `meta.k8s.io/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// The object's metadata.
    pub metadata: ObjectMeta,
}

impl PartialObjectMetadata {
    /// Wraps `metadata`.
    pub fn new(metadata: ObjectMeta) -> Self {
        PartialObjectMetadata {
            kind: "PartialObjectMetadata".into(),
            api_version: "meta.k8s.io/v1".into(),
            metadata,
        }
    }
}

/// `meta.k8s.io/v1` `PartialObjectMetadataList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialObjectMetadataList {
    /// `PartialObjectMetadataList`.
    pub kind: String,
    /// `meta.k8s.io/v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// List metadata.
    pub metadata: ListMeta,
    /// Items.
    pub items: Vec<PartialObjectMetadata>,
}

impl PartialObjectMetadataList {
    /// A list of these items.
    pub fn new(metadata: ListMeta, items: Vec<PartialObjectMetadata>) -> Self {
        PartialObjectMetadataList {
            kind: "PartialObjectMetadataList".into(),
            api_version: "meta.k8s.io/v1".into(),
            metadata,
            items,
        }
    }
}

/// The `Name` column every resource has (ObjectMeta.name's documentation as description).
pub fn name_column() -> TableColumnDefinition {
    TableColumnDefinition {
        name: "Name".into(),
        type_: "string".into(),
        format: "name".into(),
        description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names".into(),
        priority: 0,
    }
}

/// The `Age` column (creationTimestamp's documentation as description).
pub fn age_column() -> TableColumnDefinition {
    TableColumnDefinition {
        name: "Age".into(),
        type_: "string".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata".into(),
        priority: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shape() {
        let t = Table::new(
            "v1",
            ListMeta {
                resource_version: Some("7".into()),
                ..ListMeta::default()
            },
            vec![name_column()],
            vec![TableRow {
                cells: vec!["a".into()],
                object: None,
            }],
        );
        let v = serde_json::to_value(&t).unwrap_or_default();
        assert_eq!(v["kind"], "Table");
        assert_eq!(v["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(v["metadata"], serde_json::json!({"resourceVersion":"7"}));
        assert_eq!(v["columnDefinitions"][0]["format"], "name");
        assert_eq!(v["rows"][0], serde_json::json!({"cells":["a"]}));
        assert_eq!(IncludeObject::parse("Object"), Ok(IncludeObject::Object));
        assert!(IncludeObject::parse("x").is_err());
    }
}
