//! Walking JSON the way Go's `encoding/json` reads cfssl's structs (field names match
//! case-insensitively, unknown fields are ignored, `null` means "not set"), but with errors that
//! name the field's full path.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parses a whole document, naming it `what` in errors.
pub(crate) fn parse(what: &str, text: &str) -> Result<Value> {
    if text.trim().is_empty() {
        return Err(Error::field(
            what,
            "(document)",
            "empty input (if this came from a pipe, the command before it failed)",
        ));
    }
    serde_json::from_str(text).map_err(|source| Error::Json {
        what: what.to_string(),
        source,
    })
}

/// One JSON object and where it sits in its document.
pub(crate) struct Obj<'a> {
    what: &'a str,
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    /// The document's top level, which must be an object.
    pub(crate) fn root(what: &'a str, value: &'a Value) -> Result<Self> {
        match value {
            Value::Object(map) => Ok(Obj {
                what,
                path: String::new(),
                map,
            }),
            other => Err(Error::field(
                what,
                "(document)",
                format!("expected a JSON object, got {}", kind(other)),
            )),
        }
    }

    /// The path of `key` below this object, e.g. `signing.profiles.kubernetes`.
    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An error about `key`.
    pub(crate) fn err(&self, key: &str, message: impl Into<String>) -> Error {
        Error::field(self.what, self.path_of(key), message)
    }

    /// The value of `key`: an exact match first, else a case-insensitive one (Go's rule).
    /// `null` counts as absent.
    pub(crate) fn get(&self, key: &str) -> Option<&'a Value> {
        let v = self.map.get(key).or_else(|| {
            self.map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })?;
        (!v.is_null()).then_some(v)
    }

    /// Whether `key` is present (and not null).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(key, format!("expected a string, got {}", kind(other)))),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => {
                Err(self.err(key, format!("expected true or false, got {}", kind(other))))
            }
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected an integer, got {n}"))),
            Some(other) => Err(self.err(key, format!("expected a number, got {}", kind(other)))),
        }
    }

    pub(crate) fn obj(&self, key: &str) -> Result<Option<Obj<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Obj {
                what: self.what,
                path: self.path_of(key),
                map,
            })),
            Some(other) => Err(self.err(key, format!("expected an object, got {}", kind(other)))),
        }
    }

    /// The objects of an array of objects.
    pub(crate) fn obj_array(&self, key: &str) -> Result<Vec<Obj<'a>>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(map) => Ok(Obj {
                        what: self.what,
                        path: format!("{}[{i}]", self.path_of(key)),
                        map,
                    }),
                    other => Err(Error::field(
                        self.what,
                        format!("{}[{i}]", self.path_of(key)),
                        format!("expected an object, got {}", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.err(key, format!("expected an array, got {}", kind(other)))),
        }
    }

    pub(crate) fn str_array(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(Error::field(
                        self.what,
                        format!("{}[{i}]", self.path_of(key)),
                        format!("expected a string, got {}", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(self.err(
                key,
                format!("expected an array of strings, got {}", kind(other)),
            )),
        }
    }

    /// Every (key, object) member, for maps such as `signing.profiles`.
    pub(crate) fn members(&self) -> Result<Vec<(String, Obj<'a>)>> {
        self.map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::Object(map) => Ok((
                    k.clone(),
                    Obj {
                        what: self.what,
                        path: self.path_of(k),
                        map,
                    },
                )),
                other => Err(self.err(k, format!("expected an object, got {}", kind(other)))),
            })
            .collect()
    }
}

fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("{b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_match_case_insensitively_and_errors_name_paths() {
        let v = parse(
            "csr.json",
            r#"{"cn":"x","Key":{"algo":"rsa","size":"2048"}}"#,
        )
        .unwrap_or_default();
        let root = Obj::root("csr.json", &v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(root.str("CN").ok().flatten(), Some("x"));
        let key = root.obj("key").ok().flatten();
        let msg = key
            .map(|k| {
                k.int("size")
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        assert_eq!(
            msg,
            "csr.json: field `key.size`: expected a number, got the string \"2048\""
        );
    }

    #[test]
    fn syntax_errors_and_empty_input_are_clear() {
        let msg = parse("c.json", "{\"a\": 1,}")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.starts_with("c.json: invalid JSON:") && msg.contains("line 1"),
            "{msg}"
        );
        let msg = parse("stdin", "  ")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("empty input"), "{msg}");
    }
}
