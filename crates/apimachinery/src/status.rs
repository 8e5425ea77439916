//! `meta/v1` `Status`: the body of every error the API answers, with one builder per reason.
//!
//! Messages follow `k8s.io/apimachinery/pkg/api/errors` (v1.32) word for word, because kubectl
//! prints them as `Error from server (<Reason>): <message>`.

use serde::{Deserialize, Serialize};

use crate::field::{self, FieldError};

/// A Kubernetes `Status` (`kind: Status`, `apiVersion: v1`).
///
/// Fields are declared in upstream's JSON order (`kind`, `apiVersion`, `metadata`, `status`,
/// `message`, `reason`, `details`, `code`) so the serialized bytes look like upstream's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Always `Status`.
    pub kind: String,
    /// Always `v1`.
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    /// Always empty (`{}`).
    pub metadata: EmptyListMeta,
    /// `Success` or `Failure`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    /// Human-readable description; kubectl prints it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Machine-readable reason (`NotFound`, `Invalid`, …); empty for success.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Which object the status is about, and field causes for `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code; 0 (omitted) for a success body.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub code: u16,
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

/// The always-empty `metadata` of a `Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmptyListMeta {}

/// `Status.details`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusDetails {
    /// The object name, when the error is about one object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The API group of the object.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The kind (upstream puts the *resource* here for NotFound/AlreadyExists/Conflict, e.g.
    /// `apiservices`, and the *Kind* for Invalid, e.g. `APIService`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The object's uid (delete success).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// Field-level causes (Invalid, strict decoding).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
    /// Seconds the client should wait before retrying (429, 503, 504).
    #[serde(
        rename = "retryAfterSeconds",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after_seconds: Option<u32>,
}

/// One entry of `Status.details.causes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCause {
    /// A machine-readable cause type, e.g. `FieldValueInvalid`.
    #[serde(rename = "reason", default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The message without the field path (`field.Error.ErrorBody()`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The field path, e.g. `spec.groupPriorityMinimum`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub field: String,
}

/// The `Status.reason` values this crate produces (`metav1.StatusReason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 409, create of an existing name.
    AlreadyExists,
    /// 409, a stale resourceVersion or precondition.
    Conflict,
    /// 410, the requested resourceVersion history is gone.
    Expired,
    /// 410 without a resourceVersion context.
    Gone,
    /// 422.
    Invalid,
    /// 400.
    BadRequest,
    /// 405.
    MethodNotAllowed,
    /// 406.
    NotAcceptable,
    /// 413.
    RequestEntityTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 429.
    TooManyRequests,
    /// 500.
    InternalError,
    /// 503.
    ServiceUnavailable,
    /// 504.
    Timeout,
}

impl Reason {
    /// The wire string, e.g. `NotFound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Expired => "Expired",
            Reason::Gone => "Gone",
            Reason::Invalid => "Invalid",
            Reason::BadRequest => "BadRequest",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::NotAcceptable => "NotAcceptable",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::InternalError => "InternalError",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::Timeout => "Timeout",
        }
    }

    /// The HTTP status code upstream uses with this reason.
    pub fn code(self) -> u16 {
        match self {
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Expired | Reason::Gone => 410,
            Reason::Invalid => 422,
            Reason::BadRequest => 400,
            Reason::MethodNotAllowed => 405,
            Reason::NotAcceptable => 406,
            Reason::RequestEntityTooLarge => 413,
            Reason::UnsupportedMediaType => 415,
            Reason::TooManyRequests => 429,
            Reason::InternalError => 500,
            Reason::ServiceUnavailable => 503,
            Reason::Timeout => 504,
        }
    }
}

/// A resource and its group, e.g. `apiservices.apiregistration.k8s.io`
/// (`schema.GroupResource`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupResource<'a> {
    /// The API group; empty for the core group.
    pub group: &'a str,
    /// The plural resource name.
    pub resource: &'a str,
}

impl std::fmt::Display for GroupResource<'_> {
    /// `resource.group`, or just `resource` for the core group (`GroupResource.String()`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// A kind and its group, e.g. `APIService.apiregistration.k8s.io` (`schema.GroupKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupKind<'a> {
    /// The API group; empty for the core group.
    pub group: &'a str,
    /// The kind.
    pub kind: &'a str,
}

impl std::fmt::Display for GroupKind<'_> {
    /// `Kind.group`, or just `Kind` for the core group (`GroupKind.String()`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

impl Status {
    /// A `Failure` status with this reason, message and the reason's code.
    pub fn failure(reason: Reason, message: impl Into<String>) -> Self {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: EmptyListMeta {},
            status: "Failure".into(),
            message: message.into(),
            reason: reason.as_str().into(),
            details: None,
            code: reason.code(),
        }
    }

    /// A `Success` status about one deleted object (what DELETE answers for some resources and
    /// what deletecollection of nothing looks like).
    pub fn success(details: Option<StatusDetails>) -> Self {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: EmptyListMeta {},
            status: "Success".into(),
            message: String::new(),
            reason: String::new(),
            details,
            code: 0,
        }
    }

    /// Replaces the details.
    pub fn with_details(mut self, details: StatusDetails) -> Self {
        self.details = Some(details);
        self
    }

    /// Sets `details.retryAfterSeconds` (creating empty details if needed).
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.details
            .get_or_insert_with(StatusDetails::default)
            .retry_after_seconds = Some(seconds);
        self
    }

    /// The HTTP status code to answer with (500 if the body has none).
    pub fn http_code(&self) -> u16 {
        if self.code == 0 { 200 } else { self.code }
    }

    /// The JSON body. Serializing this struct cannot fail; the fallback is a fixed 500 body.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"internal error","reason":"InternalError","code":500}"#.to_vec()
        })
    }

    /// 404 `<resource>.<group> "<name>" not found` (`errors.NewNotFound`).
    pub fn not_found(gr: GroupResource<'_>, name: &str) -> Self {
        Status::failure(Reason::NotFound, format!("{gr} \"{name}\" not found"))
            .with_details(object_details(gr, name))
    }

    /// 404 `the server could not find the requested resource` (an unknown path; client-go
    /// invalidates its discovery cache on it).
    pub fn not_found_path() -> Self {
        Status::failure(
            Reason::NotFound,
            "the server could not find the requested resource",
        )
        .with_details(StatusDetails::default())
    }

    /// 409 `<resource>.<group> "<name>" already exists` (`errors.NewAlreadyExists`).
    pub fn already_exists(gr: GroupResource<'_>, name: &str) -> Self {
        Status::failure(
            Reason::AlreadyExists,
            format!("{gr} \"{name}\" already exists"),
        )
        .with_details(object_details(gr, name))
    }

    /// 409 `Operation cannot be fulfilled on <resource>.<group> "<name>": <why>`
    /// (`errors.NewConflict`).
    pub fn conflict(gr: GroupResource<'_>, name: &str, why: &str) -> Self {
        Status::failure(
            Reason::Conflict,
            format!("Operation cannot be fulfilled on {gr} \"{name}\": {why}"),
        )
        .with_details(object_details(gr, name))
    }

    /// 409 for server-side apply conflicts (`Apply failed with N conflict(s): …`), with one
    /// `FieldManagerConflict` cause per field.
    pub fn apply_conflict(conflicts: &[(String, String)]) -> Self {
        let n = conflicts.len();
        let plural = if n == 1 { "conflict" } else { "conflicts" };
        let mut message = format!("Apply failed with {n} {plural}:");
        let mut causes = Vec::with_capacity(n);
        for (manager, field) in conflicts {
            message.push_str(&format!(" conflict with \"{manager}\": {field}"));
            causes.push(StatusCause {
                reason: "FieldManagerConflict".into(),
                message: format!("conflict with \"{manager}\""),
                field: field.clone(),
            });
        }
        Status::failure(Reason::Conflict, message).with_details(StatusDetails {
            causes,
            ..StatusDetails::default()
        })
    }

    /// 422 `<Kind>.<group> "<name>" is invalid: <errors>` with one cause per field error
    /// (`errors.NewInvalid`).
    pub fn invalid(gk: GroupKind<'_>, name: &str, errors: &[FieldError]) -> Self {
        let message = match field::aggregate(errors) {
            Some(agg) => format!("{gk} \"{name}\" is invalid: {agg}"),
            None => format!("{gk} \"{name}\" is invalid"),
        };
        let causes = errors
            .iter()
            .map(|e| StatusCause {
                reason: e.kind.cause_type().into(),
                message: e.body(),
                field: e.field.clone(),
            })
            .collect();
        Status::failure(Reason::Invalid, message).with_details(StatusDetails {
            name: name.into(),
            group: gk.group.into(),
            kind: gk.kind.into(),
            causes,
            ..StatusDetails::default()
        })
    }

    /// 400 with this message (`errors.NewBadRequest`).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Status::failure(Reason::BadRequest, message)
    }

    /// 403 `<user> cannot <verb> resource "<resource>" in API group "<group>" at the cluster
    /// scope` style message (`errors.NewForbidden`), built by the authorizer; `reason` is the
    /// authorizer's explanation (may be empty).
    pub fn forbidden(gr: GroupResource<'_>, name: &str, message: &str) -> Self {
        Status::failure(
            Reason::Forbidden,
            if name.is_empty() {
                format!("{gr} is forbidden: {message}")
            } else {
                format!("{gr} \"{name}\" is forbidden: {message}")
            },
        )
        .with_details(object_details(gr, name))
    }

    /// 403 for a non-resource URL: `forbidden: User "<u>" cannot get path "/x"`.
    pub fn forbidden_path(message: &str) -> Self {
        Status::failure(Reason::Forbidden, format!("forbidden: {message}"))
            .with_details(StatusDetails::default())
    }

    /// 401 `Unauthorized` (what upstream's authentication filter answers).
    pub fn unauthorized() -> Self {
        Status::failure(Reason::Unauthorized, "Unauthorized")
    }

    /// 405 `the server does not allow this method on the requested resource`.
    pub fn method_not_allowed() -> Self {
        Status::failure(
            Reason::MethodNotAllowed,
            "the server does not allow this method on the requested resource",
        )
        .with_details(StatusDetails::default())
    }

    /// 406 `only the following media types are accepted: <types>` (`NewNotAcceptableError`).
    pub fn not_acceptable(accepted: &[&str]) -> Self {
        Status::failure(
            Reason::NotAcceptable,
            format!(
                "only the following media types are accepted: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 415 `the body of the request was in an unknown format - accepted media types include:
    /// <types>` (`NewUnsupportedMediaTypeError`).
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Status::failure(
            Reason::UnsupportedMediaType,
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 410 `Expired` with upstream's `too old resource version: <rv> (<oldest>)` message.
    pub fn expired(message: impl Into<String>) -> Self {
        Status::failure(Reason::Expired, message)
    }

    /// 410 `Gone`.
    pub fn gone(message: impl Into<String>) -> Self {
        Status::failure(Reason::Gone, message)
    }

    /// 504 `Timeout` (e.g. "Too large resource version"), with `retryAfterSeconds`.
    pub fn timeout(message: impl Into<String>, retry_after_seconds: u32) -> Self {
        Status::failure(Reason::Timeout, message).with_retry_after(retry_after_seconds)
    }

    /// 503 `ServiceUnavailable`.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Status::failure(Reason::ServiceUnavailable, message)
    }

    /// 500 `Internal error occurred: <message>` (`errors.NewInternalError`).
    pub fn internal_error(message: &str) -> Self {
        Status::failure(
            Reason::InternalError,
            format!("Internal error occurred: {message}"),
        )
        .with_details(StatusDetails {
            causes: vec![StatusCause {
                message: message.into(),
                ..StatusCause::default()
            }],
            ..StatusDetails::default()
        })
    }

    /// 429 `TooManyRequests` with `retryAfterSeconds` (what max-in-flight answers upstream:
    /// "Too many requests, please try again later.").
    pub fn too_many_requests(retry_after_seconds: u32) -> Self {
        Status::failure(
            Reason::TooManyRequests,
            "Too many requests, please try again later.",
        )
        .with_retry_after(retry_after_seconds)
    }

    /// 413 `the request entity is too large` with the limit in the message
    /// (`errors.NewRequestEntityTooLargeError`).
    pub fn request_entity_too_large(limit_bytes: u64) -> Self {
        Status::failure(
            Reason::RequestEntityTooLarge,
            format!("Request entity too large: limit is {limit_bytes}"),
        )
    }
}

fn object_details(gr: GroupResource<'_>, name: &str) -> StatusDetails {
    StatusDetails {
        name: name.into(),
        group: gr.group.into(),
        kind: gr.resource.into(),
        ..StatusDetails::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::{FieldError, FieldPath};

    const GR: GroupResource<'static> = GroupResource {
        group: "apiregistration.k8s.io",
        resource: "apiservices",
    };

    #[test]
    fn not_found_matches_the_recorded_sample() {
        let s = Status::not_found(GR, "nope");
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap_or_default();
        let want = serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"apiservices.apiregistration.k8s.io \"nope\" not found","reason":"NotFound",
            "details":{"name":"nope","group":"apiregistration.k8s.io","kind":"apiservices"},"code":404});
        assert_eq!(v, want);
        // Field order as upstream writes it.
        let text = String::from_utf8(s.to_json()).unwrap_or_default();
        assert!(
            text.starts_with(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"#
            ),
            "{text}"
        );
    }

    #[test]
    fn invalid_has_causes_and_brackets_for_several_errors() {
        let errs = vec![
            FieldError::invalid(
                FieldPath::new("spec").child("groupPriorityMinimum"),
                0i64,
                "must be positive and less than 20000",
            ),
            FieldError::required(FieldPath::new("spec").child("service").child("name"), ""),
        ];
        let gk = GroupKind {
            group: "apiregistration.k8s.io",
            kind: "APIService",
        };
        let s = Status::invalid(gk, "v1.foo", &errs);
        assert_eq!(s.code, 422);
        assert_eq!(
            s.message,
            "APIService.apiregistration.k8s.io \"v1.foo\" is invalid: [spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000, spec.service.name: Required value]"
        );
        let details = s.details.unwrap_or_default();
        assert_eq!(details.kind, "APIService");
        assert_eq!(details.causes[0].reason, "FieldValueInvalid");
        assert_eq!(
            details.causes[0].message,
            "Invalid value: 0: must be positive and less than 20000"
        );
        assert_eq!(details.causes[1].field, "spec.service.name");

        let one = Status::invalid(gk, "x", &errs[..1]);
        assert!(one.message.ends_with("is invalid: spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000"), "{}", one.message);
    }

    #[test]
    fn reasons_and_codes() {
        assert_eq!(Status::conflict(GR, "a", "the object has been modified; please apply your changes to the latest version and try again").message,
            "Operation cannot be fulfilled on apiservices.apiregistration.k8s.io \"a\": the object has been modified; please apply your changes to the latest version and try again");
        assert_eq!(Status::already_exists(GR, "a").code, 409);
        assert_eq!(Status::too_many_requests(1).code, 429);
        assert_eq!(Status::request_entity_too_large(3).code, 413);
        assert_eq!(Status::not_acceptable(&["application/json"]).code, 406);
        assert_eq!(
            Status::unsupported_media_type(&["application/json"]).code,
            415
        );
        assert_eq!(Status::expired("too old").reason, "Expired");
        assert_eq!(Status::timeout("x", 1).code, 504);
        assert_eq!(Status::unauthorized().code, 401);
        assert_eq!(Status::method_not_allowed().code, 405);
        assert_eq!(
            Status::internal_error("boom").message,
            "Internal error occurred: boom"
        );
        let ok = Status::success(None);
        assert_eq!(ok.http_code(), 200);
        assert_eq!(
            String::from_utf8(ok.to_json()).unwrap_or_default(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success"}"#
        );
    }
}
