//! Field-level validation errors (`k8s.io/apimachinery/pkg/util/validation/field`), formatted
//! exactly as upstream so `Status.message` and `details.causes` read the same.

use std::fmt;

/// A path to a field, e.g. `spec.service.port` or `status.conditions[0].status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldPath(String);

impl FieldPath {
    /// A root path (`field.NewPath("spec")`).
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_owned())
    }

    /// `path.child("name")` → `path.name`.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_owned())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// `path.index(3)` → `path[3]`.
    pub fn index(&self, i: usize) -> Self {
        FieldPath(format!("{}[{i}]", self.0))
    }

    /// `path.key("k")` → `path[k]` (map keys are not quoted upstream).
    pub fn key(&self, k: &str) -> Self {
        FieldPath(format!("{}[{k}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// `FieldValueNotFound`, "Not found".
    NotFound,
    /// `FieldValueRequired`, "Required value".
    Required,
    /// `FieldValueDuplicate`, "Duplicate value".
    Duplicate,
    /// `FieldValueInvalid`, "Invalid value".
    Invalid,
    /// `FieldValueNotSupported`, "Unsupported value".
    NotSupported,
    /// `FieldValueForbidden`, "Forbidden".
    Forbidden,
    /// `FieldValueTooLong`, "Too long".
    TooLong,
    /// `InternalError`, "Internal error".
    Internal,
}

impl ErrorKind {
    /// The `StatusCause.reason` string, e.g. `FieldValueInvalid`.
    pub fn cause_type(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "FieldValueNotFound",
            ErrorKind::Required => "FieldValueRequired",
            ErrorKind::Duplicate => "FieldValueDuplicate",
            ErrorKind::Invalid => "FieldValueInvalid",
            ErrorKind::NotSupported => "FieldValueNotSupported",
            ErrorKind::Forbidden => "FieldValueForbidden",
            ErrorKind::TooLong => "FieldValueTooLong",
            ErrorKind::Internal => "InternalError",
        }
    }

    /// The human text, e.g. `Invalid value`.
    pub fn text(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "Not found",
            ErrorKind::Required => "Required value",
            ErrorKind::Duplicate => "Duplicate value",
            ErrorKind::Invalid => "Invalid value",
            ErrorKind::NotSupported => "Unsupported value",
            ErrorKind::Forbidden => "Forbidden",
            ErrorKind::TooLong => "Too long",
            ErrorKind::Internal => "Internal error",
        }
    }
}

/// The offending value, printed the way Go's `%v`/`%q` would print it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadValue {
    /// Printed quoted (`%q`), e.g. `"v1.foo"`.
    Str(String),
    /// Printed bare (`%v`).
    Int(i64),
    /// Printed bare (`%v`).
    Bool(bool),
    /// Printed as `null`.
    Null,
    /// Printed verbatim (what Go's `%#v` of a struct would be; we print something readable).
    Raw(String),
}

impl From<&str> for BadValue {
    fn from(s: &str) -> Self {
        BadValue::Str(s.to_owned())
    }
}
impl From<String> for BadValue {
    fn from(s: String) -> Self {
        BadValue::Str(s)
    }
}
impl From<i64> for BadValue {
    fn from(v: i64) -> Self {
        BadValue::Int(v)
    }
}
impl From<i32> for BadValue {
    fn from(v: i32) -> Self {
        BadValue::Int(v.into())
    }
}
impl From<bool> for BadValue {
    fn from(v: bool) -> Self {
        BadValue::Bool(v)
    }
}

/// One field error (`field.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// What kind of problem.
    pub kind: ErrorKind,
    /// The field path.
    pub field: String,
    /// The value (not printed for Required, Forbidden, TooLong, Internal).
    pub bad_value: BadValue,
    /// The explanation.
    pub detail: String,
}

impl FieldError {
    /// `field.Invalid(path, value, detail)`.
    pub fn invalid(path: FieldPath, value: impl Into<BadValue>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: ErrorKind::Invalid,
            field: path.0,
            bad_value: value.into(),
            detail: detail.into(),
        }
    }

    /// `field.Required(path, detail)`.
    pub fn required(path: FieldPath, detail: impl Into<String>) -> Self {
        FieldError {
            kind: ErrorKind::Required,
            field: path.0,
            bad_value: BadValue::Str(String::new()),
            detail: detail.into(),
        }
    }

    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(path: FieldPath, detail: impl Into<String>) -> Self {
        FieldError {
            kind: ErrorKind::Forbidden,
            field: path.0,
            bad_value: BadValue::Str(String::new()),
            detail: detail.into(),
        }
    }

    /// `field.Duplicate(path, value)`.
    pub fn duplicate(path: FieldPath, value: impl Into<BadValue>) -> Self {
        FieldError {
            kind: ErrorKind::Duplicate,
            field: path.0,
            bad_value: value.into(),
            detail: String::new(),
        }
    }

    /// `field.NotSupported(path, value, valid)`: detail `supported values: "a", "b"`.
    pub fn not_supported(path: FieldPath, value: impl Into<BadValue>, valid: &[&str]) -> Self {
        let detail = if valid.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        FieldError {
            kind: ErrorKind::NotSupported,
            field: path.0,
            bad_value: value.into(),
            detail,
        }
    }

    /// `field.TooLong(path, "", max)`: `Too long: must have at most N bytes`.
    pub fn too_long(path: FieldPath, max_bytes: usize) -> Self {
        FieldError {
            kind: ErrorKind::TooLong,
            field: path.0,
            bad_value: BadValue::Null,
            detail: format!("must have at most {max_bytes} bytes"),
        }
    }

    /// `field.InternalError(path, err)`.
    pub fn internal(path: FieldPath, detail: impl Into<String>) -> Self {
        FieldError {
            kind: ErrorKind::Internal,
            field: path.0,
            bad_value: BadValue::Null,
            detail: detail.into(),
        }
    }

    /// The message without the field (`ErrorBody()`), e.g. `Invalid value: 0: must be …`.
    pub fn body(&self) -> String {
        let mut s = match self.kind {
            ErrorKind::Required
            | ErrorKind::Forbidden
            | ErrorKind::TooLong
            | ErrorKind::Internal => self.kind.text().to_owned(),
            _ => match &self.bad_value {
                BadValue::Str(v) => format!("{}: {}", self.kind.text(), go_quote(v)),
                BadValue::Int(v) => format!("{}: {v}", self.kind.text()),
                BadValue::Bool(v) => format!("{}: {v}", self.kind.text()),
                BadValue::Null => format!("{}: null", self.kind.text()),
                BadValue::Raw(v) => format!("{}: {v}", self.kind.text()),
            },
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    /// `<field>: <body>` (`field.Error.Error()`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

/// `ErrorList.ToAggregate().Error()`: `None` for no errors, the single message for one, and
/// `[a, b]` for several (duplicates dropped, order kept).
pub fn aggregate(errors: &[FieldError]) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let msg = e.to_string();
        if !seen.contains(&msg) {
            seen.push(msg);
        }
    }
    match seen.len() {
        0 => None,
        1 => seen.pop(),
        _ => Some(format!("[{}]", seen.join(", "))),
    }
}

/// Go's `strconv.Quote` for the strings we print: `"…"` with `\"`, `\\` and control characters
/// escaped.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_upstream() {
        let p = FieldPath::new("spec");
        assert_eq!(
            FieldError::invalid(p.child("version"), "V1", "bad").to_string(),
            "spec.version: Invalid value: \"V1\": bad"
        );
        assert_eq!(
            FieldError::required(p.child("service").child("namespace"), "").to_string(),
            "spec.service.namespace: Required value"
        );
        assert_eq!(
            FieldError::invalid(
                p.child("insecureSkipTLSVerify"),
                true,
                "may not be true if caBundle is present"
            )
            .body(),
            "Invalid value: true: may not be true if caBundle is present"
        );
        assert_eq!(
            FieldError::not_supported(
                FieldPath::new("status")
                    .child("conditions")
                    .index(0)
                    .child("status"),
                "Maybe",
                &["True", "False", "Unknown"]
            )
            .to_string(),
            "status.conditions[0].status: Unsupported value: \"Maybe\": supported values: \"True\", \"False\", \"Unknown\""
        );
        assert_eq!(
            FieldError::forbidden(
                FieldPath::new("metadata").child("namespace"),
                "not allowed on this type"
            )
            .to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
    }

    #[test]
    fn aggregate_dedupes_and_brackets() {
        let a = FieldError::required(FieldPath::new("a"), "");
        assert_eq!(aggregate(&[]), None);
        assert_eq!(
            aggregate(std::slice::from_ref(&a)).as_deref(),
            Some("a: Required value")
        );
        assert_eq!(
            aggregate(&[a.clone(), a.clone()]).as_deref(),
            Some("a: Required value")
        );
        let b = FieldError::required(FieldPath::new("b"), "");
        assert_eq!(
            aggregate(&[a, b]).as_deref(),
            Some("[a: Required value, b: Required value]")
        );
    }
}
