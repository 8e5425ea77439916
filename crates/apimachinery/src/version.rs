//! Kube-aware version ordering (`k8s.io/apimachinery/pkg/version.CompareKubeAwareVersionStrings`),
//! upstream-behaviour.md §3.3 and §10 item 5.

use std::cmp::Ordering;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stability {
    Alpha = 0,
    Beta = 1,
    Ga = 2,
}

/// `^v(\d+)(?:(alpha|beta)(\d+))?$` → (major, stability, minor). Numbers that overflow are not
/// kube-like, as with Go's `strconv.Atoi`.
fn parse(v: &str) -> Option<(u64, Stability, u64)> {
    let rest = v.strip_prefix('v')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let major: u64 = rest[..digits]
        .parse()
        .ok()
        .filter(|m| *m <= i64::MAX as u64)?;
    let rest = &rest[digits..];
    if rest.is_empty() {
        return Some((major, Stability::Ga, 0));
    }
    let (stability, rest) = if let Some(r) = rest.strip_prefix("alpha") {
        (Stability::Alpha, r)
    } else if let Some(r) = rest.strip_prefix("beta") {
        (Stability::Beta, r)
    } else {
        return None;
    };
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let minor: u64 = rest.parse().ok().filter(|m| *m <= i64::MAX as u64)?;
    Some((major, stability, minor))
}

/// Whether `v` is a kube-like version (`v1`, `v2beta3`, `v1alpha1`).
pub fn is_kube_like(v: &str) -> bool {
    parse(v).is_some()
}

/// Compares two versions the way upstream orders them: `Greater` means `a` sorts *first*
/// (is preferred). GA > beta > alpha, then higher major, then higher minor; every kube-like
/// version beats every other string; two other strings compare so that the lexicographically
/// smaller one sorts first.
///
/// ```
/// use std::cmp::Ordering;
/// use apimachinery::version::compare_kube_aware;
/// assert_eq!(compare_kube_aware("v1", "v1beta2"), Ordering::Greater);
/// assert_eq!(compare_kube_aware("foo1", "foo10"), Ordering::Greater);
/// ```
pub fn compare_kube_aware(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    match (parse(a), parse(b)) {
        (None, None) => b.cmp(a),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some((amaj, at, amin)), Some((bmaj, bt, bmin))) => {
            at.cmp(&bt).then(amaj.cmp(&bmaj)).then(amin.cmp(&bmin))
        }
    }
}

/// Sorts versions in preference order (most preferred first).
pub fn sort_kube_aware(versions: &mut [impl AsRef<str>]) {
    versions.sort_by(|a, b| compare_kube_aware(b.as_ref(), a.as_ref()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_example_order() {
        // The example from the APIServiceSpec documentation (upstream-behaviour.md §3.3).
        let mut v = vec![
            "foo10",
            "v1",
            "v11alpha2",
            "v3beta1",
            "foo1",
            "v12alpha1",
            "v10beta3",
            "v2",
            "v10",
            "v11beta2",
        ];
        sort_kube_aware(&mut v);
        assert_eq!(
            v,
            [
                "v10",
                "v2",
                "v1",
                "v11beta2",
                "v10beta3",
                "v3beta1",
                "v12alpha1",
                "v11alpha2",
                "foo1",
                "foo10"
            ]
        );
    }

    #[test]
    fn section_10_item_5() {
        let mut v = vec![
            "foo10",
            "foo1",
            "v11alpha2",
            "v12alpha1",
            "v3beta1",
            "v10beta3",
            "v11beta2",
            "v1",
            "v2",
        ];
        sort_kube_aware(&mut v);
        assert_eq!(
            v,
            [
                "v2",
                "v1",
                "v11beta2",
                "v10beta3",
                "v3beta1",
                "v12alpha1",
                "v11alpha2",
                "foo1",
                "foo10"
            ]
        );
    }

    #[test]
    fn the_issue_example() {
        let mut v = vec!["foo", "v1alpha1", "v1beta2", "v1"];
        sort_kube_aware(&mut v);
        assert_eq!(v, ["v1", "v1beta2", "v1alpha1", "foo"]);
    }

    #[test]
    fn not_kube_like() {
        for s in [
            "v", "v1gamma1", "v1beta", "1", "vbeta1", "v1beta1x", "V1", "v١",
        ] {
            assert!(!is_kube_like(s), "{s}");
        }
        // Overflowing numbers are not kube-like (Go's Atoi fails).
        assert!(!is_kube_like("v99999999999999999999"));
        assert!(is_kube_like("v01"));
        assert_eq!(compare_kube_aware("v1", "v1"), Ordering::Equal);
        assert_eq!(compare_kube_aware("zzz", "v1alpha1"), Ordering::Less);
    }
}
