//! Name and metadata rules (`k8s.io/apimachinery/pkg/util/validation`,
//! `pkg/api/validation/objectmeta.go`, `pkg/api/validation/path`) with upstream's messages.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::field::{BadValue, FieldError, FieldPath};

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
/// Upstream's limit on the summed size of all annotation keys and values.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// `validation.MaxLenError`.
pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// `validation.RegexError`.
pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push_str(&format!("'{e}', "));
    }
    s.push_str(&format!("regex used for validation is '{fmt}')"));
    s
}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn matches_dns1123_label(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

fn matches_dns1123_subdomain(v: &str) -> bool {
    !v.is_empty() && v.split('.').all(matches_dns1123_label)
}

/// `IsDNS1123Label`: at most 63 characters of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns1123_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1123_label(value) {
        if matches_dns1123_subdomain(value) {
            errs.push("must not contain dots".to_owned());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

/// `IsDNS1123Subdomain`: at most 253 characters, dot-separated RFC 1123 labels.
pub fn is_dns1123_subdomain(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !matches_dns1123_subdomain(value) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// `IsDNS1035Label`: at most 63 characters, a lowercase letter first, alphanumeric last.
pub fn is_dns1035_label(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    let b = value.as_bytes();
    let ok = !b.is_empty()
        && b[0].is_ascii_lowercase()
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-');
    if !ok {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

fn matches_qualified_name_part(v: &str) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
}

/// `IsQualifiedName` (label and annotation keys, finalizers): `[prefix/]name`.
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_owned());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_owned());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue`: empty, or at most 63 characters shaped like a qualified name part.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `path.IsValidPathSegmentName`: not `.` or `..`, no `/` or `%`.
pub fn is_valid_path_segment_name(name: &str) -> Vec<String> {
    for illegal in [".", ".."] {
        if name == illegal {
            return vec![format!("may not be '{illegal}'")];
        }
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// `ValidateObjectMeta` for a cluster-scoped object: name (through `name_fn`), namespace
/// forbidden, generation, labels, annotations, owner references, finalizers.
pub fn validate_object_meta(
    meta: &ObjectMeta,
    name_fn: &dyn Fn(&str) -> Vec<String>,
) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    if let Some(generate) = meta.generate_name.as_deref().filter(|g| !g.is_empty()) {
        for m in is_valid_path_segment_prefix(generate) {
            errs.push(FieldError::invalid(path.child("generateName"), generate, m));
        }
    }
    match meta.name.as_deref() {
        None | Some("") => errs.push(FieldError::required(
            path.child("name"),
            "name or generateName is required",
        )),
        Some(name) => {
            for m in name_fn(name) {
                errs.push(FieldError::invalid(path.child("name"), name, m));
            }
        }
    }
    errs.extend(validate_common(meta, &path));
    errs
}

fn is_valid_path_segment_prefix(name: &str) -> Vec<String> {
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(*c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

fn validate_common(meta: &ObjectMeta, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if meta.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
        errs.push(FieldError::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(g) = meta.generation
        && g < 0
    {
        errs.push(FieldError::invalid(
            path.child("generation"),
            g,
            "must be greater than or equal to 0",
        ));
    }
    errs.extend(validate_labels(meta, path));
    errs.extend(validate_annotations(meta, path));
    if let Some(refs) = &meta.owner_references {
        let p = path.child("ownerReferences");
        let mut first_controller: Option<String> = None;
        for r in refs {
            let (group_version_ok, kind_ok) = (
                r.api_version
                    .rsplit('/')
                    .next()
                    .is_some_and(|v| !v.is_empty()),
                !r.kind.is_empty(),
            );
            if !group_version_ok {
                errs.push(FieldError::invalid(
                    p.child("apiVersion"),
                    r.api_version.as_str(),
                    "version must not be empty",
                ));
            }
            if !kind_ok {
                errs.push(FieldError::invalid(
                    p.child("kind"),
                    r.kind.as_str(),
                    "must not be empty",
                ));
            }
            if r.name.is_empty() {
                errs.push(FieldError::invalid(
                    p.child("name"),
                    r.name.as_str(),
                    "must not be empty",
                ));
            }
            if r.uid.is_empty() {
                errs.push(FieldError::invalid(
                    p.child("uid"),
                    r.uid.as_str(),
                    "must not be empty",
                ));
            }
            if r.controller == Some(true) {
                let cur = format!("{}/{}", r.kind, r.name);
                match &first_controller {
                    Some(first) => errs.push(FieldError::invalid(
                        p.clone(),
                        BadValue::Raw(format!("{} owner references", refs.len())),
                        format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {cur}"),
                    )),
                    None => first_controller = Some(cur),
                }
            }
        }
    }
    if let Some(finalizers) = &meta.finalizers {
        let p = path.child("finalizers");
        for f in finalizers {
            for m in is_qualified_name(f) {
                errs.push(FieldError::invalid(p.clone(), f.as_str(), m));
            }
        }
        let orphan = finalizers.iter().any(|f| f == "orphan");
        let foreground = finalizers.iter().any(|f| f == "foregroundDeletion");
        if orphan && foreground {
            errs.push(FieldError::invalid(
                p,
                BadValue::Raw(format!("{finalizers:?}")),
                "finalizer orphan and foregroundDeletion cannot be both set",
            ));
        }
    }
    errs
}

fn validate_labels(meta: &ObjectMeta, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let p = path.child("labels");
    for (k, v) in meta.labels.iter().flatten() {
        for m in is_qualified_name(k) {
            errs.push(FieldError::invalid(p.clone(), k.as_str(), m));
        }
        for m in is_valid_label_value(v) {
            errs.push(FieldError::invalid(p.clone(), v.as_str(), m));
        }
    }
    errs
}

fn validate_annotations(meta: &ObjectMeta, path: &FieldPath) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let p = path.child("annotations");
    let mut total = 0usize;
    for (k, v) in meta.annotations.iter().flatten() {
        // Upstream: "the rule is QualifiedName except that case doesn't matter".
        for m in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(p.clone(), k.as_str(), m));
        }
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(p, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// `ValidateObjectMetaUpdate`: resourceVersion required, generation not decremented, name,
/// uid, creationTimestamp, deletionTimestamp and deletionGracePeriodSeconds immutable, no new
/// finalizers while deleting, plus labels/annotations/ownerReferences/finalizers rules.
pub fn validate_object_meta_update(new: &ObjectMeta, old: &ObjectMeta) -> Vec<FieldError> {
    let path = FieldPath::new("metadata");
    let mut errs = Vec::new();
    if old.deletion_timestamp.is_some() {
        let old_f = old.finalizers.clone().unwrap_or_default();
        let mut extra: Vec<String> = new
            .finalizers
            .iter()
            .flatten()
            .filter(|f| !old_f.contains(f))
            .cloned()
            .collect();
        extra.sort();
        extra.dedup();
        if !extra.is_empty() {
            errs.push(FieldError::forbidden(
                path.child("finalizers"),
                format!(
                    "no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                    extra.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
    }
    if new
        .resource_version
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        errs.push(FieldError::invalid(
            path.child("resourceVersion"),
            "",
            "must be specified for an update",
        ));
    }
    if new.generation.unwrap_or(0) < old.generation.unwrap_or(0) {
        errs.push(FieldError::invalid(
            path.child("generation"),
            new.generation.unwrap_or(0),
            "must not be decremented",
        ));
    }
    let immutable =
        |errs: &mut Vec<FieldError>, field: &str, new_v: Option<String>, old_v: Option<String>| {
            if new_v != old_v {
                let shown = match new_v {
                    Some(v) => BadValue::Str(v),
                    None => BadValue::Null,
                };
                errs.push(FieldError::invalid(
                    path.child(field),
                    shown,
                    "field is immutable",
                ));
            }
        };
    immutable(
        &mut errs,
        "name",
        new.name.clone().filter(|s| !s.is_empty()),
        old.name.clone().filter(|s| !s.is_empty()),
    );
    immutable(
        &mut errs,
        "namespace",
        new.namespace.clone().filter(|s| !s.is_empty()),
        old.namespace.clone().filter(|s| !s.is_empty()),
    );
    immutable(
        &mut errs,
        "uid",
        new.uid.clone().filter(|s| !s.is_empty()),
        old.uid.clone().filter(|s| !s.is_empty()),
    );
    immutable(
        &mut errs,
        "creationTimestamp",
        new.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        old.creation_timestamp.as_ref().map(|t| t.0.to_string()),
    );
    immutable(
        &mut errs,
        "deletionTimestamp",
        new.deletion_timestamp.as_ref().map(|t| t.0.to_string()),
        old.deletion_timestamp.as_ref().map(|t| t.0.to_string()),
    );
    if new.deletion_grace_period_seconds != old.deletion_grace_period_seconds {
        errs.push(FieldError::invalid(
            path.child("deletionGracePeriodSeconds"),
            match new.deletion_grace_period_seconds {
                Some(v) => BadValue::Int(v),
                None => BadValue::Null,
            },
            "field is immutable",
        ));
    }
    let mut common = validate_common(new, &path);
    // The namespace rule is covered by immutability on update.
    common.retain(|e| e.field != "metadata.namespace");
    errs.extend(common);
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_rules() {
        assert!(is_dns1123_subdomain("metrics.k8s.io").is_empty());
        assert!(is_dns1123_subdomain("a").is_empty());
        assert_eq!(
            is_dns1123_subdomain("Foo.com"),
            vec![
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
            ]
        );
        assert!(!is_dns1123_subdomain("a..b").is_empty());
        assert!(!is_dns1123_subdomain(&"a".repeat(254)).is_empty());
        assert!(is_dns1035_label("v1beta1").is_empty());
        assert_eq!(
            is_dns1035_label("1v"),
            vec![
                "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
            ]
        );
        assert_eq!(is_dns1123_label("a.b"), vec!["must not contain dots"]);
        assert_eq!(
            is_dns1035_label(&"a".repeat(64))[0],
            "must be no more than 63 characters"
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(is_qualified_name("k8s-app").is_empty());
        assert!(is_qualified_name("example.com/My_Name").is_empty());
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert!(is_qualified_name("-x")[0].starts_with("name part must consist of"));
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("x.y_z-1").is_empty());
        assert!(!is_valid_label_value("-x").is_empty());
    }

    #[test]
    fn path_segments() {
        assert_eq!(is_valid_path_segment_name(".."), vec!["may not be '..'"]);
        assert_eq!(
            is_valid_path_segment_name("a/b%"),
            vec!["may not contain '/'", "may not contain '%'"]
        );
        assert!(is_valid_path_segment_name("v1.").is_empty());
    }

    #[test]
    fn object_meta_rules() {
        let meta = ObjectMeta {
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        };
        let errs = validate_object_meta(&meta, &|_| vec![]);
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            vec![
                "metadata.name: Required value: name or generateName is required",
                "metadata.namespace: Forbidden: not allowed on this type"
            ]
        );
        let old = ObjectMeta {
            name: Some("a".into()),
            uid: Some("u1".into()),
            resource_version: Some("5".into()),
            ..ObjectMeta::default()
        };
        let new = ObjectMeta {
            name: Some("a".into()),
            uid: Some("u2".into()),
            ..ObjectMeta::default()
        };
        let shown: Vec<String> = validate_object_meta_update(&new, &old)
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            shown,
            vec![
                "metadata.resourceVersion: Invalid value: \"\": must be specified for an update",
                "metadata.uid: Invalid value: \"u2\": field is immutable"
            ]
        );
    }
}
