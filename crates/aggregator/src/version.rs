//! `/version`: a Kubernetes version kubectl's dispatcher accepts (kubectl-wire.md §3.0: major
//! "1", minor "32" makes it run `kubectl.1.32`), with our own version in the build metadata.

use serde::Serialize;

/// The `gitVersion` we report: Kubernetes v1.32 compatible, built by kube-aggregator.
pub const GIT_VERSION: &str = concat!("v1.32.0+kube-aggregator-", env!("CARGO_PKG_VERSION"));

/// The `/version` body (`version.Info`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Info {
    major: &'static str,
    minor: &'static str,
    git_version: &'static str,
    git_commit: &'static str,
    git_tree_state: &'static str,
    build_date: &'static str,
    go_version: &'static str,
    compiler: &'static str,
    platform: String,
}

/// This build's version info.
pub fn info() -> Info {
    Info {
        major: "1",
        minor: "32",
        git_version: GIT_VERSION,
        git_commit: concat!("kube-aggregator-", env!("CARGO_PKG_VERSION")),
        git_tree_state: "clean",
        build_date: "1970-01-01T00:00:00Z",
        go_version: "rust",
        compiler: "rustc",
        platform: format!("{}/{}", std::env::consts::OS, go_arch()),
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn kubectl_shape() {
        let v = serde_json::to_value(super::info()).unwrap_or_default();
        assert_eq!(v["major"], "1");
        assert_eq!(v["minor"], "32");
        assert!(
            v["gitVersion"]
                .as_str()
                .is_some_and(|g| g.starts_with("v1.32."))
        );
        assert_eq!(v["platform"], format!("linux/{}", super::go_arch()));
    }
}
