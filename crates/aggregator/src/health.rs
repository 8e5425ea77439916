//! `/healthz`, `/livez`, `/readyz` (and `/<endpoint>/<check>`), in upstream's text format:
//! `ok`, or with `?verbose` one `[+]name ok` / `[-]name failed: reason withheld` line per check.
//! They answer without authentication, so probes need no credentials.

use http::{Response, StatusCode};
use proxy::body::Body;

use crate::request_info::query_pairs;
use crate::response;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The check name, e.g. `ping`.
    pub name: &'static str,
    /// `Err` with a reason (logged, not shown).
    pub result: Result<(), String>,
}

/// Renders `endpoint` (`healthz`, `livez`, `readyz`) for `path` and `query` over `checks`.
/// `None` when the path names an unknown check.
pub fn render(endpoint: &str, path: &str, query: &str, checks: &[Check]) -> Option<Response<Body>> {
    let pairs = query_pairs(query);
    let verbose = pairs.iter().any(|(k, _)| k == "verbose");
    let excluded: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "exclude")
        .map(|(_, v)| v.as_str())
        .collect();
    let sub = path
        .trim_start_matches('/')
        .strip_prefix(endpoint)
        .map(|r| r.trim_matches('/'))
        .unwrap_or_default();
    if !sub.is_empty() {
        let c = checks.iter().find(|c| c.name == sub)?;
        return Some(match &c.result {
            Ok(()) => response::text(StatusCode::OK, "ok"),
            Err(e) => {
                tracing::warn!(check = c.name, error = %e, "{endpoint} check failed");
                response::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("internal server error: {e}\n"),
                )
            }
        });
    }
    let mut body = String::new();
    let mut failed = false;
    for c in checks {
        if excluded.contains(&c.name) {
            body.push_str(&format!("[+]{} excluded: ok\n", c.name));
            continue;
        }
        match &c.result {
            Ok(()) => body.push_str(&format!("[+]{} ok\n", c.name)),
            Err(e) => {
                tracing::warn!(check = c.name, error = %e, "{endpoint} check failed");
                failed = true;
                body.push_str(&format!("[-]{} failed: reason withheld\n", c.name));
            }
        }
    }
    Some(if failed {
        body.push_str(&format!("{endpoint} check failed\n"));
        response::text(StatusCode::INTERNAL_SERVER_ERROR, &body)
    } else if verbose {
        body.push_str(&format!("{endpoint} check passed\n"));
        response::text(StatusCode::OK, &body)
    } else {
        response::text(StatusCode::OK, "ok")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(r: Response<Body>) -> (u16, String) {
        let code = r.status().as_u16();
        let b = r
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        (code, String::from_utf8_lossy(&b).into_owned())
    }

    #[tokio::test]
    async fn formats() {
        let ok = [
            Check {
                name: "ping",
                result: Ok(()),
            },
            Check {
                name: "informer-sync",
                result: Ok(()),
            },
        ];
        let bad = [
            Check {
                name: "ping",
                result: Ok(()),
            },
            Check {
                name: "informer-sync",
                result: Err("not yet".into()),
            },
        ];
        let r = |p: &str, q: &str, c: &[Check]| render("readyz", p, q, c);
        assert_eq!(
            text(
                r("/readyz", "", &ok).unwrap_or_else(|| response::text(StatusCode::NOT_FOUND, ""))
            )
            .await,
            (200, "ok".into())
        );
        assert_eq!(
            text(
                r("/readyz", "verbose", &ok)
                    .unwrap_or_else(|| response::text(StatusCode::NOT_FOUND, ""))
            )
            .await,
            (
                200,
                "[+]ping ok\n[+]informer-sync ok\nreadyz check passed\n".into()
            )
        );
        assert_eq!(
            text(
                r("/readyz", "", &bad).unwrap_or_else(|| response::text(StatusCode::NOT_FOUND, ""))
            )
            .await,
            (
                500,
                "[+]ping ok\n[-]informer-sync failed: reason withheld\nreadyz check failed\n"
                    .into()
            )
        );
        assert_eq!(
            text(
                r("/readyz", "exclude=informer-sync", &bad)
                    .unwrap_or_else(|| response::text(StatusCode::NOT_FOUND, ""))
            )
            .await
            .0,
            200
        );
        assert_eq!(
            text(
                r("/readyz/ping", "", &bad)
                    .unwrap_or_else(|| response::text(StatusCode::NOT_FOUND, ""))
            )
            .await,
            (200, "ok".into())
        );
        assert!(r("/readyz/nope", "", &ok).is_none());
    }
}
