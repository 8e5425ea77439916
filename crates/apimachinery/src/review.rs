//! Reading webhook review answers as k8s.io/apiserver does.

use k8s_openapi::api::authorization::v1::SubjectAccessReviewStatus;

/// `None` when a SubjectAccessReview allows (allowed and not denied), otherwise the denial's
/// reason: `reason`, then `evaluationError` after a comma when both are set.
pub fn access_denial(status: SubjectAccessReviewStatus) -> Option<String> {
    if status.allowed && status.denied != Some(true) {
        return None;
    }
    let mut reason = status.reason.unwrap_or_default();
    if let Some(e) = status.evaluation_error.filter(|e| !e.is_empty()) {
        if !reason.is_empty() {
            reason.push_str(", ");
        }
        reason.push_str(&e);
    }
    Some(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_unless_denied_and_reasons_joined() {
        let s = |allowed, denied, reason: Option<&str>, error: Option<&str>| {
            SubjectAccessReviewStatus {
                allowed,
                denied,
                reason: reason.map(Into::into),
                evaluation_error: error.map(Into::into),
            }
        };
        assert_eq!(access_denial(s(true, None, Some("rbac"), None)), None);
        assert_eq!(
            access_denial(s(true, Some(true), Some("deny wins"), None)),
            Some("deny wins".into())
        );
        assert_eq!(
            access_denial(s(false, None, Some("no rule"), Some("bad role"))),
            Some("no rule, bad role".into())
        );
        assert_eq!(
            access_denial(s(false, None, None, Some("bad role"))),
            Some("bad role".into())
        );
        assert_eq!(
            access_denial(s(false, None, None, Some(""))),
            Some(String::new())
        );
    }
}
