//! The APIService strategy (`kube-aggregator/pkg/registry/apiservice/strategy.go`,
//! `apis/apiregistration/{v1/defaults.go,validation/validation.go}`): defaulting, what create
//! and update may change, and validation with upstream's messages and field paths
//! (upstream-behaviour.md §1.3–§1.6).

use apimachinery::field::{BadValue, FieldError, FieldPath};
use apimachinery::validation::{
    is_dns1035_label, is_dns1123_subdomain, is_valid_path_segment_name, validate_object_meta,
    validate_object_meta_update,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIServiceSpec;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIServiceCondition, APIServiceStatus,
};
use store::APIService;

static EMPTY_SPEC: std::sync::LazyLock<APIServiceSpec> =
    std::sync::LazyLock::new(APIServiceSpec::default);

/// The spec, or an empty one when the object has none (k8s-openapi makes `spec` optional;
/// upstream's internal type always has one).
pub fn spec(obj: &APIService) -> &APIServiceSpec {
    obj.spec.as_ref().unwrap_or(&EMPTY_SPEC)
}

/// The only condition type upstream uses.
pub const AVAILABLE: &str = "Available";

/// The condition local APIServices get on create.
pub fn local_available_condition(now: jiff::Timestamp) -> APIServiceCondition {
    APIServiceCondition {
        type_: AVAILABLE.into(),
        status: "True".into(),
        last_transition_time: Some(Time(now)),
        reason: Some("Local".into()),
        message: Some("Local APIServices are always available".into()),
    }
}

/// Now, truncated to whole seconds (Kubernetes timestamps have second precision).
pub fn now() -> jiff::Timestamp {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second()).unwrap_or(now)
}

/// v1 defaulting: `spec.service.port` = 443 when unset.
pub fn apply_defaults(obj: &mut APIService) {
    if let Some(svc) = obj.spec.as_mut().and_then(|s| s.service.as_mut())
        && svc.port.is_none()
    {
        svc.port = Some(443);
    }
}

/// Create: status is wiped; a local APIService is `Available=True/Local` at once.
pub fn prepare_for_create(obj: &mut APIService, now: jiff::Timestamp) {
    obj.status = None;
    if spec(obj).service.is_none() {
        set_condition(obj, local_available_condition(now));
    }
}

/// Update of the main resource: status changes are ignored.
pub fn prepare_for_update(new: &mut APIService, old: &APIService) {
    new.status = old.status.clone();
}

/// Update of `/status`: spec, labels, annotations, finalizers and ownerReferences come from
/// the stored object.
pub fn prepare_for_status_update(new: &mut APIService, old: &APIService) {
    new.spec = old.spec.clone();
    new.metadata.labels = old.metadata.labels.clone();
    new.metadata.annotations = old.metadata.annotations.clone();
    new.metadata.finalizers = old.metadata.finalizers.clone();
    new.metadata.owner_references = old.metadata.owner_references.clone();
}

/// Sets (or replaces) the condition of `cond.type_`, keeping `lastTransitionTime` when the
/// status did not change (`SetAPIServiceCondition`, §1.6). Reason and message are always
/// overwritten. Returns whether anything changed.
pub fn set_condition(obj: &mut APIService, cond: APIServiceCondition) -> bool {
    let status = obj.status.get_or_insert_with(APIServiceStatus::default);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(existing) => {
            let mut next = cond;
            if existing.status == next.status {
                next.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == next {
                return false;
            }
            *existing = next;
            true
        }
        None => {
            conditions.push(cond);
            true
        }
    }
}

/// The `Available` condition, if any.
pub fn available_condition(obj: &APIService) -> Option<&APIServiceCondition> {
    obj.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == AVAILABLE))
}

/// Whether the APIService is `Available=True`.
pub fn is_available(obj: &APIService) -> bool {
    available_condition(obj).is_some_and(|c| c.status == "True")
}

/// `ValidateAPIService`: metadata (name must be `version.group`), group, version, priorities,
/// local versus service rules. All errors are returned, in upstream's order.
pub fn validate(obj: &APIService) -> Vec<FieldError> {
    let spec = spec(obj);
    let group = spec.group.as_deref().unwrap_or_default();
    let version = spec.version.as_deref().unwrap_or_default();
    let required_name = format!("{version}.{group}");
    let name_fn = |name: &str| -> Vec<String> {
        let minimal = is_valid_path_segment_name(name);
        if !minimal.is_empty() {
            return minimal;
        }
        if name != required_name {
            return vec![format!(
                "must be `spec.version+\".\"+spec.group`: {}",
                apimachinery::field::go_quote(&required_name)
            )];
        }
        Vec::new()
    };
    let mut errs = validate_object_meta(&obj.metadata, &name_fn);
    let spec_path = FieldPath::new("spec");

    if group.is_empty() && version != "v1" {
        errs.push(FieldError::required(
            spec_path.child("group"),
            "only v1 may have an empty group and it better be legacy kube",
        ));
    }
    if !group.is_empty() {
        for m in is_dns1123_subdomain(group) {
            errs.push(FieldError::invalid(spec_path.child("group"), group, m));
        }
    }
    for m in is_dns1035_label(version) {
        errs.push(FieldError::invalid(spec_path.child("version"), version, m));
    }
    if spec.group_priority_minimum <= 0 || spec.group_priority_minimum > 20000 {
        errs.push(FieldError::invalid(
            spec_path.child("groupPriorityMinimum"),
            spec.group_priority_minimum,
            "must be positive and less than 20000",
        ));
    }
    if spec.version_priority <= 0 || spec.version_priority > 1000 {
        errs.push(FieldError::invalid(
            spec_path.child("versionPriority"),
            spec.version_priority,
            "must be positive and less than 1000",
        ));
    }
    let ca_len = spec.ca_bundle.as_ref().map(|b| b.0.len()).unwrap_or(0);
    let insecure = spec.insecure_skip_tls_verify.unwrap_or(false);
    let Some(svc) = &spec.service else {
        if ca_len != 0 {
            errs.push(FieldError::invalid(
                spec_path.child("caBundle"),
                format!("{ca_len} bytes"),
                "local APIServices may not have a caBundle",
            ));
        }
        if insecure {
            errs.push(FieldError::invalid(
                spec_path.child("insecureSkipTLSVerify"),
                insecure,
                "local APIServices may not have insecureSkipTLSVerify",
            ));
        }
        return errs;
    };
    let svc_path = spec_path.child("service");
    if svc.namespace.as_deref().unwrap_or_default().is_empty() {
        errs.push(FieldError::required(svc_path.child("namespace"), ""));
    }
    if svc.name.as_deref().unwrap_or_default().is_empty() {
        errs.push(FieldError::required(svc_path.child("name"), ""));
    }
    if let Some(port) = svc.port
        && !(1..=65535).contains(&port)
    {
        errs.push(FieldError::invalid(
            svc_path.child("port"),
            port,
            "port is not valid: must be between 1 and 65535, inclusive",
        ));
    }
    if insecure && ca_len > 0 {
        errs.push(FieldError::invalid(
            spec_path.child("insecureSkipTLSVerify"),
            insecure,
            "may not be true if caBundle is present",
        ));
    }
    errs
}

/// `ValidateAPIServiceUpdate`: metadata update rules, then everything [`validate`] checks.
pub fn validate_update(new: &APIService, old: &APIService) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    errs.extend(validate(new));
    errs
}

/// `ValidateAPIServiceStatusUpdate`: metadata update rules and condition statuses only.
pub fn validate_status_update(new: &APIService, old: &APIService) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(&new.metadata, &old.metadata);
    let path = FieldPath::new("status").child("conditions");
    let conditions = new
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    for (i, c) in conditions.iter().enumerate() {
        if !matches!(c.status.as_str(), "True" | "False" | "Unknown") {
            errs.push(FieldError::not_supported(
                path.index(i).child("status"),
                BadValue::Str(c.status.clone()),
                &["True", "False", "Unknown"],
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
        APIServiceSpec, ServiceReference,
    };

    fn svc(name: &str, group: &str, version: &str) -> APIService {
        APIService {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(APIServiceSpec {
                group: Some(group.into()),
                version: Some(version.into()),
                group_priority_minimum: 100,
                version_priority: 10,
                service: Some(ServiceReference {
                    namespace: Some("ns".into()),
                    name: Some("s".into()),
                    port: Some(443),
                }),
                ..APIServiceSpec::default()
            }),
            status: None,
        }
    }

    fn msgs(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn a_good_apiservice_is_valid() {
        assert!(validate(&svc("v1beta1.metrics.k8s.io", "metrics.k8s.io", "v1beta1")).is_empty());
        let mut core = svc("v1.", "", "v1");
        core.spec.get_or_insert_default().service = None;
        assert!(validate(&core).is_empty());
    }

    #[test]
    fn name_must_be_version_dot_group() {
        assert_eq!(
            msgs(&validate(&svc("metrics", "metrics.k8s.io", "v1beta1"))),
            vec![
                "metadata.name: Invalid value: \"metrics\": must be `spec.version+\".\"+spec.group`: \"v1beta1.metrics.k8s.io\""
            ]
        );
        assert_eq!(
            msgs(&validate(&svc("a/b", "metrics.k8s.io", "v1beta1"))),
            vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
        );
        let mut nameless = svc("", "g", "v1");
        nameless.metadata.name = None;
        assert_eq!(
            msgs(&validate(&nameless)),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
    }

    #[test]
    fn group_and_version_rules() {
        assert_eq!(
            msgs(&validate(&svc("v2.", "", "v2"))),
            vec![
                "spec.group: Required value: only v1 may have an empty group and it better be legacy kube"
            ]
        );
        let errs = msgs(&validate(&svc("v1.Bad_Group", "Bad_Group", "v1")));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with(
                "spec.group: Invalid value: \"Bad_Group\": a lowercase RFC 1123 subdomain"
            ),
            "{errs:?}"
        );
        let errs = msgs(&validate(&svc("1v.g", "g", "1v")));
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0]
                .starts_with("spec.version: Invalid value: \"1v\": a DNS-1035 label must consist"),
            "{errs:?}"
        );
    }

    #[test]
    fn priority_bounds_are_inclusive() {
        let mut s = svc("v1.g", "g", "v1");
        s.spec.get_or_insert_default().group_priority_minimum = 20000;
        s.spec.get_or_insert_default().version_priority = 1000;
        assert!(validate(&s).is_empty());
        s.spec.get_or_insert_default().group_priority_minimum = 20001;
        s.spec.get_or_insert_default().version_priority = 0;
        assert_eq!(
            msgs(&validate(&s)),
            vec![
                "spec.groupPriorityMinimum: Invalid value: 20001: must be positive and less than 20000",
                "spec.versionPriority: Invalid value: 0: must be positive and less than 1000",
            ]
        );
        s.spec.get_or_insert_default().group_priority_minimum = 0;
        s.spec.get_or_insert_default().version_priority = 1001;
        assert_eq!(validate(&s).len(), 2);
    }

    #[test]
    fn local_and_service_rules() {
        let mut local = svc("v1.g", "g", "v1");
        local.spec.get_or_insert_default().service = None;
        local.spec.get_or_insert_default().ca_bundle = Some(ByteString(b"pem".to_vec()));
        local.spec.get_or_insert_default().insecure_skip_tls_verify = Some(true);
        assert_eq!(
            msgs(&validate(&local)),
            vec![
                "spec.caBundle: Invalid value: \"3 bytes\": local APIServices may not have a caBundle",
                "spec.insecureSkipTLSVerify: Invalid value: true: local APIServices may not have insecureSkipTLSVerify",
            ]
        );
        let mut remote = svc("v1.g", "g", "v1");
        remote.spec.get_or_insert_default().service = Some(ServiceReference {
            namespace: None,
            name: Some(String::new()),
            port: Some(0),
        });
        remote.spec.get_or_insert_default().ca_bundle = Some(ByteString(b"pem".to_vec()));
        remote.spec.get_or_insert_default().insecure_skip_tls_verify = Some(true);
        assert_eq!(
            msgs(&validate(&remote)),
            vec![
                "spec.service.namespace: Required value",
                "spec.service.name: Required value",
                "spec.service.port: Invalid value: 0: port is not valid: must be between 1 and 65535, inclusive",
                "spec.insecureSkipTLSVerify: Invalid value: true: may not be true if caBundle is present",
            ]
        );
    }

    #[test]
    fn defaults_and_status_rules() {
        let mut s = svc("v1.g", "g", "v1");
        if let Some(x) = s.spec.get_or_insert_default().service.as_mut() {
            x.port = None;
        }
        apply_defaults(&mut s);
        assert_eq!(spec(&s).service.as_ref().and_then(|x| x.port), Some(443));

        let t0 = jiff::Timestamp::from_second(1_000).unwrap_or_default();
        let mut local = svc("v1.g", "g", "v1");
        local.spec.get_or_insert_default().service = None;
        local.status = Some(APIServiceStatus {
            conditions: Some(vec![APIServiceCondition {
                type_: "X".into(),
                status: "False".into(),
                ..Default::default()
            }]),
        });
        prepare_for_create(&mut local, t0);
        let c = available_condition(&local).cloned().unwrap_or_default();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("True", Some("Local"))
        );
        assert_eq!(
            local
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(Vec::len),
            Some(1),
            "status wiped first"
        );

        // lastTransitionTime changes only when status flips.
        let t1 = jiff::Timestamp::from_second(2_000).unwrap_or_default();
        let mut again = local_available_condition(t1);
        again.message = Some("new".into());
        assert!(set_condition(&mut local, again));
        let c = available_condition(&local).cloned().unwrap_or_default();
        assert_eq!(c.last_transition_time, Some(Time(t0)));
        assert_eq!(c.message.as_deref(), Some("new"));
        let mut flip = local_available_condition(t1);
        flip.status = "False".into();
        assert!(set_condition(&mut local, flip.clone()));
        assert_eq!(
            available_condition(&local).and_then(|c| c.last_transition_time.clone()),
            Some(Time(t1))
        );
        assert!(!set_condition(&mut local, flip), "no change, no write");

        let mut bad = local.clone();
        if let Some(cs) = bad.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            cs[0].status = "Maybe".into();
        }
        bad.metadata.resource_version = Some("1".into());
        assert_eq!(
            msgs(&validate_status_update(&bad, &local)),
            vec![
                "status.conditions[0].status: Unsupported value: \"Maybe\": supported values: \"True\", \"False\", \"Unknown\""
            ]
        );
    }
}
