//! Label and field selectors as list and watch requests carry them (`labelSelector=…`,
//! `fieldSelector=…`), parsed with `k8s.io/apimachinery/pkg/labels` and `pkg/fields` grammar.

use std::collections::BTreeMap;

use crate::validation::{is_qualified_name, is_valid_label_value};

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key` (exists).
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
    /// `key=v`, `key==v`, `key in (a,b)`.
    In(String, Vec<String>),
    /// `key!=v`, `key notin (a,b)`: true when the key is absent too.
    NotIn(String, Vec<String>),
    /// `key>n`.
    GreaterThan(String, i64),
    /// `key<n`.
    LessThan(String, i64),
}

/// A parsed label selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

impl LabelSelector {
    /// Parses a selector string; `Err` is a message for a 400.
    ///
    /// ```
    /// use apimachinery::selector::LabelSelector;
    /// let s = LabelSelector::parse("app=web, tier in (a,b), !legacy").unwrap_or_default();
    /// let labels = [("app".to_string(), "web".to_string()), ("tier".into(), "b".into())].into();
    /// assert!(s.matches(Some(&labels)));
    /// ```
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut p = Parser {
            s: s.as_bytes(),
            i: 0,
            src: s,
        };
        let mut reqs = Vec::new();
        p.ws();
        if p.eof() {
            return Ok(LabelSelector(reqs));
        }
        loop {
            reqs.push(p.requirement()?);
            p.ws();
            if p.eof() {
                break;
            }
            if !p.eat(b',') {
                return Err(format!(
                    "unable to parse requirement: found '{}', expected: ',' or 'end of string'",
                    p.rest_token()
                ));
            }
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.0.iter().all(|r| match r {
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
            LabelRequirement::GreaterThan(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v > *n),
            LabelRequirement::LessThan(k, n) => get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v < *n),
        })
    }

    /// Whether the selector is empty (matches everything).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }
    fn ws(&mut self) {
        while !self.eof() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        if !self.eof() && self.s[self.i] == c {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn peek_str(&self, t: &str) -> bool {
        self.s[self.i..].starts_with(t.as_bytes())
    }
    fn rest_token(&self) -> String {
        self.src[self.i..].chars().take(16).collect()
    }
    /// A key or value: everything up to whitespace or one of `,=!()<>`.
    fn word(&mut self) -> &str {
        let start = self.i;
        while !self.eof() {
            let c = self.s[self.i];
            if c.is_ascii_whitespace() || b",=!()<>".contains(&c) {
                break;
            }
            self.i += 1;
        }
        &self.src[start..self.i]
    }
    fn key(&mut self) -> Result<String, String> {
        self.ws();
        let k = self.word().to_owned();
        if k.is_empty() {
            return Err(format!(
                "unable to parse requirement: found '{}', expected: identifier",
                self.rest_token()
            ));
        }
        let errs = is_qualified_name(&k);
        if !errs.is_empty() {
            return Err(format!(
                "unable to parse requirement: key: Invalid value: {}: {}",
                crate::field::go_quote(&k),
                errs.join("; ")
            ));
        }
        Ok(k)
    }
    fn value(&mut self) -> Result<String, String> {
        self.ws();
        let v = self.word().to_owned();
        let errs = is_valid_label_value(&v);
        if !errs.is_empty() {
            return Err(format!(
                "unable to parse requirement: values[0][{}]: Invalid value: {}: {}",
                "value",
                crate::field::go_quote(&v),
                errs.join("; ")
            ));
        }
        Ok(v)
    }
    fn set(&mut self) -> Result<Vec<String>, String> {
        self.ws();
        if !self.eat(b'(') {
            return Err(format!(
                "unable to parse requirement: found '{}', expected: '('",
                self.rest_token()
            ));
        }
        let mut vals = Vec::new();
        loop {
            let v = self.value()?;
            vals.push(v);
            self.ws();
            if self.eat(b')') {
                break;
            }
            if !self.eat(b',') {
                return Err(format!(
                    "unable to parse requirement: found '{}', expected: ',', ')' or identifier",
                    self.rest_token()
                ));
            }
        }
        Ok(vals)
    }
    fn requirement(&mut self) -> Result<LabelRequirement, String> {
        self.ws();
        if self.eat(b'!') {
            return Ok(LabelRequirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        self.ws();
        if self.eof() || self.s[self.i] == b',' {
            return Ok(LabelRequirement::Exists(key));
        }
        if self.peek_str("==") {
            self.i += 2;
            return Ok(LabelRequirement::In(key, vec![self.value()?]));
        }
        if self.peek_str("!=") {
            self.i += 2;
            return Ok(LabelRequirement::NotIn(key, vec![self.value()?]));
        }
        if self.eat(b'=') {
            return Ok(LabelRequirement::In(key, vec![self.value()?]));
        }
        if self.eat(b'>') || self.eat(b'<') {
            let gt = self.s[self.i - 1] == b'>';
            self.ws();
            let w = self.word().to_owned();
            let n: i64 = w.parse().map_err(|_| {
                format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {w:?}")
            })?;
            return Ok(if gt {
                LabelRequirement::GreaterThan(key, n)
            } else {
                LabelRequirement::LessThan(key, n)
            });
        }
        let op = self.word().to_owned();
        match op.as_str() {
            "in" => Ok(LabelRequirement::In(key, self.set()?)),
            "notin" => Ok(LabelRequirement::NotIn(key, self.set()?)),
            other => Err(format!(
                "unable to parse requirement: found '{other}', expected: in, notin, =, ==, !=, gt, lt"
            )),
        }
    }
}

/// One field requirement (`field=value` or `field!=value`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field, e.g. `metadata.name`.
    pub field: String,
    /// `true` for `=`/`==`, `false` for `!=`.
    pub equals: bool,
    /// The (unescaped) value.
    pub value: String,
}

/// A parsed field selector; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    /// Parses `a=b,c!=d` with `\` escaping of `,`, `=`, `!` and `\`
    /// (`fields.ParseSelector`). `Err` is upstream's message.
    pub fn parse(s: &str) -> Result<FieldSelector, String> {
        let mut reqs = Vec::new();
        if s.is_empty() {
            return Ok(FieldSelector(reqs));
        }
        for term in split_unescaped(s, ',') {
            if term.is_empty() {
                continue;
            }
            let (field, equals, raw) = if let Some(i) = find_unescaped(&term, "!=") {
                (&term[..i], false, &term[i + 2..])
            } else if let Some(i) = find_unescaped(&term, "==") {
                (&term[..i], true, &term[i + 2..])
            } else if let Some(i) = find_unescaped(&term, "=") {
                (&term[..i], true, &term[i + 1..])
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                ));
            };
            let value = unescape(raw).map_err(|e| format!("invalid selector: '{s}'; {e}"))?;
            reqs.push(FieldRequirement {
                field: field.to_owned(),
                equals,
                value,
            });
        }
        Ok(FieldSelector(reqs))
    }

    /// Checks that every field is one of `supported`; `Err` is upstream's message for the
    /// first unsupported one (`"<f>" is not a known field selector: only "a", "b"`).
    pub fn check_fields(&self, supported: &[&str]) -> Result<(), String> {
        for r in &self.0 {
            if !supported.contains(&r.field.as_str()) {
                let only: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
                return Err(format!(
                    "{:?} is not a known field selector: only {}",
                    r.field,
                    only.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Whether the object's fields (looked up with `get`; missing fields are "") satisfy it.
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| {
            let v = get(&r.field).unwrap_or_default();
            (v == r.value) == r.equals
        })
    }

    /// The value of a `field=value` requirement, if there is exactly such a term (used to
    /// narrow a watch or list to one name).
    pub fn equals_value(&self, field: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| r.equals && r.field == field)
            .map(|r| r.value.as_str())
    }

    /// Whether the selector is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            cur.push('\\');
            cur.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    if escaped {
        cur.push('\\');
    }
    out.push(cur);
    out
}

fn find_unescaped(s: &str, pat: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(pat) {
            return Some(i);
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(e @ ('\\' | ',' | '=' | '!')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence: \\{e}")),
                None => return Err("unterminated escape sequence".into()),
            }
        } else if c == '=' || c == ',' {
            return Err(format!("unescaped {c} in value"));
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn label_selectors() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let ok = |s: &str| LabelSelector::parse(s).map(|sel| sel.matches(Some(&l)));
        assert_eq!(ok(""), Ok(true));
        assert_eq!(ok("app=web"), Ok(true));
        assert_eq!(ok("app==web"), Ok(true));
        assert_eq!(ok("app!=web"), Ok(false));
        assert_eq!(ok("missing!=x"), Ok(true));
        assert_eq!(ok("app in (api, web)"), Ok(true));
        assert_eq!(ok("app notin (api,web)"), Ok(false));
        assert_eq!(ok("app,tier"), Ok(true));
        assert_eq!(ok("!app"), Ok(false));
        assert_eq!(ok("!other"), Ok(true));
        assert_eq!(ok("n>4,n<6"), Ok(true));
        assert_eq!(ok("example.com/x=y"), Ok(false));
        assert!(LabelSelector::parse("app=").is_ok());
        assert!(LabelSelector::parse("a b").is_err());
        assert!(LabelSelector::parse("-bad=x").is_err());
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a=-x").is_err());
        assert_eq!(
            LabelSelector::parse("x").map(|s| s.matches(None)),
            Ok(false)
        );
    }

    #[test]
    fn field_selectors() {
        let s = FieldSelector::parse("metadata.name=v1.foo").unwrap_or_default();
        assert_eq!(s.equals_value("metadata.name"), Some("v1.foo"));
        assert!(s.matches(|f| (f == "metadata.name").then(|| "v1.foo".to_string())));
        assert!(!s.matches(|_| Some("x".into())));
        let s = FieldSelector::parse("metadata.name!=a,metadata.namespace==").unwrap_or_default();
        assert!(s.matches(|f| (f == "metadata.name").then(|| "b".to_string())));
        assert_eq!(
            FieldSelector::parse("spec.group=x").and_then(|s| s.check_fields(&["metadata.name", "metadata.namespace"])),
            Err(r#""spec.group" is not a known field selector: only "metadata.name", "metadata.namespace""#.into())
        );
        assert_eq!(
            FieldSelector::parse("foo"),
            Err("invalid selector: 'foo'; can't understand 'foo'".into())
        );
        let s = FieldSelector::parse(r"metadata.name=a\,b").unwrap_or_default();
        assert_eq!(s.equals_value("metadata.name"), Some("a,b"));
    }
}
