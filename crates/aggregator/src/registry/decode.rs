//! Request bodies: JSON or YAML into a `serde_json::Value` with duplicate keys recorded, unknown
//! fields found against the APIService schema, and `fieldValidation` (`Strict` → 400, `Warn` →
//! `Warning` headers, `Ignore`) applied as upstream (kubectl-wire.md §3.2: kubectl sends
//! `fieldValidation=Strict`; k8s-openapi's deserializer ignores unknown fields, so they are
//! checked here).

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use apimachinery::Status;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use store::APIService;

/// `fieldValidation`: what to do with unknown and duplicate fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in `Warning` headers (upstream's default since 1.27).
    #[default]
    Warn,
    /// Refuse the request with 400.
    Strict,
}

impl FieldValidation {
    /// Parses the query value (empty means the default, Warn).
    pub fn parse(s: &str) -> Result<Self, Status> {
        match s {
            "" | "Warn" => Ok(FieldValidation::Warn),
            "Ignore" => Ok(FieldValidation::Ignore),
            "Strict" => Ok(FieldValidation::Strict),
            other => Err(Status::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn, Strict, got {other:?}"
            ))),
        }
    }
}

/// The body formats accepted for create/update (`application/json`, `application/yaml`).
pub const OBJECT_TYPES: &[&str] = &["application/json", "application/yaml"];

/// A parsed body and the duplicate fields seen while parsing (dotted paths).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The value (the last of duplicate keys wins, as Go's decoder).
    pub value: Value,
    /// Paths of duplicate fields.
    pub duplicates: Vec<String>,
}

/// Parses JSON with duplicate-key detection.
pub fn parse_json(bytes: &[u8]) -> Result<Parsed, String> {
    let dups = Rc::new(RefCell::new(Vec::new()));
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = Seed {
        path: String::new(),
        dups: dups.clone(),
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    let duplicates = dups.borrow().clone();
    Ok(Parsed { value, duplicates })
}

/// Parses YAML (or JSON, which is YAML) with duplicate-key detection.
pub fn parse_yaml(bytes: &[u8]) -> Result<Parsed, String> {
    let trimmed = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| bytes[i]);
    if matches!(trimmed, Some(b'{') | Some(b'[')) {
        return parse_json(bytes);
    }
    let text = std::str::from_utf8(bytes).map_err(|e| format!("body is not UTF-8: {e}"))?;
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    let tracked: Tracked =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?;
    Ok(Parsed {
        value: tracked.0,
        duplicates: tracked.1,
    })
}

/// A value deserialized through [`Seed`] (serde-saphyr has no seed entry point).
struct Tracked(Value, Vec<String>);

impl<'de> de::Deserialize<'de> for Tracked {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let dups = Rc::new(RefCell::new(Vec::new()));
        let value = Seed {
            path: String::new(),
            dups: dups.clone(),
        }
        .deserialize(d)?;
        let duplicates = dups.borrow().clone();
        Ok(Tracked(value, duplicates))
    }
}

struct Seed {
    path: String,
    dups: Rc<RefCell<Vec<String>>>,
}

impl<'de> DeserializeSeed<'de> for Seed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v)
            .map(Value::Number)
            .unwrap_or(Value::Null))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed {
            path: format!("{}[{}]", self.path, out.len()),
            dups: self.dups.clone(),
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            let v = map.next_value_seed(Seed {
                path: path.clone(),
                dups: self.dups.clone(),
            })?;
            if out.insert(key, v).is_some() {
                self.dups.borrow_mut().push(path);
            }
        }
        Ok(Value::Object(out))
    }
}

/// The APIService schema as a tree of known field names; `Any` accepts anything below it
/// (map values, `fieldsV1`).
enum Shape {
    Object(&'static [(&'static str, &'static Shape)]),
    List(&'static Shape),
    StringMap,
    Scalar,
    Any,
}

static SCALAR: Shape = Shape::Scalar;
static ANY: Shape = Shape::Any;
static STRING_MAP: Shape = Shape::StringMap;
static STRING_LIST: Shape = Shape::List(&SCALAR);
static OWNER_REF: Shape = Shape::Object(&[
    ("apiVersion", &SCALAR),
    ("kind", &SCALAR),
    ("name", &SCALAR),
    ("uid", &SCALAR),
    ("controller", &SCALAR),
    ("blockOwnerDeletion", &SCALAR),
]);
static OWNER_REFS: Shape = Shape::List(&OWNER_REF);
static MANAGED_FIELD: Shape = Shape::Object(&[
    ("manager", &SCALAR),
    ("operation", &SCALAR),
    ("apiVersion", &SCALAR),
    ("time", &SCALAR),
    ("fieldsType", &SCALAR),
    ("fieldsV1", &ANY),
    ("subresource", &SCALAR),
]);
static MANAGED_FIELDS: Shape = Shape::List(&MANAGED_FIELD);
static OBJECT_META: Shape = Shape::Object(&[
    ("name", &SCALAR),
    ("generateName", &SCALAR),
    ("namespace", &SCALAR),
    ("selfLink", &SCALAR),
    ("uid", &SCALAR),
    ("resourceVersion", &SCALAR),
    ("generation", &SCALAR),
    ("creationTimestamp", &SCALAR),
    ("deletionTimestamp", &SCALAR),
    ("deletionGracePeriodSeconds", &SCALAR),
    ("labels", &STRING_MAP),
    ("annotations", &STRING_MAP),
    ("ownerReferences", &OWNER_REFS),
    ("finalizers", &STRING_LIST),
    ("managedFields", &MANAGED_FIELDS),
]);
static SERVICE_REF: Shape =
    Shape::Object(&[("namespace", &SCALAR), ("name", &SCALAR), ("port", &SCALAR)]);
static SPEC: Shape = Shape::Object(&[
    ("service", &SERVICE_REF),
    ("group", &SCALAR),
    ("version", &SCALAR),
    ("insecureSkipTLSVerify", &SCALAR),
    ("caBundle", &SCALAR),
    ("groupPriorityMinimum", &SCALAR),
    ("versionPriority", &SCALAR),
]);
static CONDITION: Shape = Shape::Object(&[
    ("type", &SCALAR),
    ("status", &SCALAR),
    ("lastTransitionTime", &SCALAR),
    ("reason", &SCALAR),
    ("message", &SCALAR),
]);
static CONDITIONS: Shape = Shape::List(&CONDITION);
static STATUS: Shape = Shape::Object(&[("conditions", &CONDITIONS)]);
static APISERVICE: Shape = Shape::Object(&[
    ("apiVersion", &SCALAR),
    ("kind", &SCALAR),
    ("metadata", &OBJECT_META),
    ("spec", &SPEC),
    ("status", &STATUS),
]);

/// Dotted paths of fields the APIService schema does not have (`spec.foo`,
/// `metadata.ownerReferences[0].bar`), in document order.
pub fn unknown_fields(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(value, &APISERVICE, "", &mut out);
    out
}

fn walk(v: &Value, shape: &Shape, path: &str, out: &mut Vec<String>) {
    match (shape, v) {
        (Shape::Object(fields), Value::Object(m)) => {
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match fields.iter().find(|(name, _)| name == k) {
                    Some((_, s)) => walk(child, s, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Shape::List(item), Value::Array(items)) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, item, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Applies `fieldValidation` to unknown and duplicate fields: `Err` (400) when Strict and
/// there are any, otherwise the warnings to send (empty for Ignore).
pub fn check_fields(
    value: &Value,
    duplicates: &[String],
    mode: FieldValidation,
) -> Result<Vec<String>, Status> {
    let mut problems: Vec<String> = Vec::new();
    for d in duplicates {
        problems.push(format!("duplicate field {d:?}"));
    }
    for u in unknown_fields(value) {
        problems.push(format!("unknown field {u:?}"));
    }
    match mode {
        FieldValidation::Ignore => Ok(Vec::new()),
        FieldValidation::Warn => Ok(problems),
        FieldValidation::Strict if problems.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(Status::bad_request(format!(
            "strict decoding error: {}",
            problems.join(", ")
        ))),
    }
}

/// Create and update word decoding errors as upstream's `transformDecodeError` does:
/// `APIService in version "v1" cannot be handled as a APIService: <error>`.
pub fn as_object_error(mut s: Status) -> Status {
    if s.code == 400 {
        s.message = format!(
            "APIService in version \"v1\" cannot be handled as a APIService: {}",
            s.message
        );
    }
    s
}

/// Checks `apiVersion` and `kind` (when present) and converts to an `APIService`; type errors
/// are 400 as upstream words them.
pub fn to_apiservice(mut value: Value) -> Result<APIService, Status> {
    let Value::Object(m) = &mut value else {
        return Err(Status::bad_request(
            "the body must be a JSON or YAML object (an APIService)",
        ));
    };
    match m.get("apiVersion") {
        None | Some(Value::Null) => {
            m.insert(
                "apiVersion".into(),
                Value::from("apiregistration.k8s.io/v1"),
            );
        }
        Some(Value::String(v)) if v == "apiregistration.k8s.io/v1" => {}
        Some(other) => {
            let shown = other
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| other.to_string());
            return Err(Status::bad_request(format!(
                "the API version in the data ({shown}) does not match the expected API version (apiregistration.k8s.io/v1)"
            )));
        }
    }
    match m.get("kind") {
        None | Some(Value::Null) => {
            m.insert("kind".into(), Value::from("APIService"));
        }
        Some(Value::String(k)) if k == "APIService" => {}
        Some(other) => {
            let shown = other
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| other.to_string());
            return Err(Status::bad_request(format!(
                "the kind in the data ({shown}) does not match the expected kind (APIService)"
            )));
        }
    }
    // kube-apiserver decodes `[]byte` with Go's base64, which skips '\r' and '\n': a wrapped
    // caBundle (`base64` without `-w0`, kustomize's generated Secret data) is accepted there,
    // so it is here.
    if let Some(Value::String(bundle)) = m.get_mut("spec").and_then(|s| s.get_mut("caBundle"))
        && bundle.contains(['\r', '\n'])
    {
        bundle.retain(|c| c != '\r' && c != '\n');
    }
    let mut obj: APIService = serde_json::from_value(value).map_err(|e| {
        Status::bad_request(format!(
            "APIService in version \"v1\" cannot be handled as a APIService: {e}"
        ))
    })?;
    obj.spec.get_or_insert_default();
    Ok(obj)
}

/// Parses a body by `Content-Type` into a value (JSON or YAML object types).
pub fn parse_object_body(content_type: Option<&str>, body: &[u8]) -> Result<Parsed, Status> {
    let essence = content_type
        .and_then(apimachinery::negotiate::MediaType::parse)
        .map(|m| m.essence());
    let result = match essence.as_deref() {
        None | Some("application/json") => parse_json(body),
        Some("application/yaml") => parse_yaml(body),
        Some(_) => return Err(Status::unsupported_media_type(OBJECT_TYPES)),
    };
    result.map_err(|e| Status::bad_request(format!("error decoding the request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_ca_bundle_decodes_as_go_does() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIBfjCCASSgAwIBAgIU\n-----END CERTIFICATE-----\n";
        use base64::Engine as _;
        let flat = base64::engine::general_purpose::STANDARD.encode(pem);
        let wrapped: String = flat
            .as_bytes()
            .chunks(20)
            .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
            .collect();
        let decode = |bundle: &str| {
            to_apiservice(serde_json::json!({"spec": {"caBundle": bundle}}))
                .unwrap_or_else(|e| panic!("{}", e.message))
                .spec
                .and_then(|s| s.ca_bundle)
                .map(|b| b.0)
        };
        assert_eq!(decode(&wrapped), Some(pem.as_bytes().to_vec()));
        assert_eq!(decode(&flat), decode(&wrapped));
        // Other whitespace is still an error, as in Go.
        assert!(to_apiservice(serde_json::json!({"spec": {"caBundle": "QUJD RA=="}})).is_err());
    }

    #[test]
    fn duplicates_are_found_with_paths() {
        let p = parse_json(
            br#"{"spec":{"group":"a","group":"b"},"metadata":{"labels":{"x":"1","x":"2"}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.duplicates, ["spec.group", "metadata.labels.x"]);
        assert_eq!(p.value["spec"]["group"], "b", "last wins");
        assert!(parse_json(b"{").is_err());
        assert!(parse_json(b"{} x").is_err());
    }

    #[test]
    fn yaml_bodies() {
        let p = parse_yaml(b"apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nspec:\n  group: a\n  group: b\n  versionPriority: 10\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.duplicates, ["spec.group"]);
        assert_eq!(p.value["spec"]["versionPriority"], 10);
    }

    #[test]
    fn unknown_fields_against_the_schema() {
        let v = serde_json::json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "x", "labels": {"anything": "goes"}, "ownerReferences": [{"name": "o", "bogus": 1}]},
            "spec": {"group": "g", "foo": 1, "service": {"name": "s", "portt": 1}},
            "status": {"conditions": [{"type": "Available", "extra": true}]},
            "top": 1
        });
        assert_eq!(
            unknown_fields(&v),
            vec![
                "metadata.ownerReferences[0].bogus",
                "spec.foo",
                "spec.service.portt",
                "status.conditions[0].extra",
                "top"
            ]
        );
        let err = check_fields(&v, &["spec.group".into()], FieldValidation::Strict)
            .err()
            .unwrap_or_else(|| Status::bad_request(""));
        assert_eq!(err.code, 400);
        assert!(err.message.starts_with("strict decoding error: duplicate field \"spec.group\", unknown field \"metadata.ownerReferences[0].bogus\""), "{}", err.message);
        assert_eq!(
            check_fields(&v, &[], FieldValidation::Warn).map(|w| w.len()),
            Ok(5)
        );
        assert_eq!(check_fields(&v, &[], FieldValidation::Ignore), Ok(vec![]));
    }

    #[test]
    fn kind_and_version_checks() {
        let ok = to_apiservice(
            serde_json::json!({"metadata":{"name":"v1.x"},"spec":{"group":"x","version":"v1","groupPriorityMinimum":1,"versionPriority":1}}),
        );
        assert!(ok.is_ok());
        let bad = to_apiservice(serde_json::json!({"apiVersion":"v1","kind":"APIService"}));
        assert!(bad.is_err_and(|s| {
            s.message
                .contains("does not match the expected API version")
        }));
        let typ = to_apiservice(serde_json::json!({"spec":{"groupPriorityMinimum":"high"}}));
        assert!(typ.is_err_and(
            |s| s.code == 400 && s.message.contains("cannot be handled as a APIService")
        ));
    }
}
