//! The `--store` URL: `embedded:DIR` or `etcd://host:port[,host:port…][/prefix]`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::Error;

/// The store used when `--store` is not given: an embedded database in `./data`.
pub const DEFAULT_STORE_URL: &str = "embedded:./data";

/// The etcd key prefix used when the URL has none: upstream's standalone kube-aggregator default
/// (`--etcd-prefix=/registry/kube-aggregator.kubernetes.io/`) followed by the resource path the
/// generic registry appends (`apiregistration.k8s.io/apiservices/`). An object's key is this
/// prefix followed by its name.
pub const DEFAULT_ETCD_PREFIX: &str =
    "/registry/kube-aggregator.kubernetes.io/apiregistration.k8s.io/apiservices/";

/// A parsed `--store` URL.
///
/// - `embedded:DIR` — the embedded database in directory `DIR` (created if missing);
/// - `etcd://host:port[,host:port…][/prefix]` — etcd over plain HTTP/2 at those endpoints, keys
///   under `/prefix/` (a trailing `/` is added; [`DEFAULT_ETCD_PREFIX`] when omitted). The prefix
///   is used verbatim (no percent-decoding).
///
/// `Display` prints a URL that parses back to the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded back-end.
    Embedded {
        /// The data directory.
        dir: PathBuf,
    },
    /// The etcd back-end.
    Etcd {
        /// `host:port` of each endpoint, in the order given.
        endpoints: Vec<String>,
        /// The key prefix, starting and ending with `/`.
        prefix: String,
    },
}

impl Default for StoreUrl {
    fn default() -> Self {
        StoreUrl::Embedded {
            dir: PathBuf::from("./data"),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = Error;

    fn from_str(url: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        if let Some(dir) = url.strip_prefix("embedded:") {
            if dir.is_empty() {
                return Err(invalid("the data directory is empty (embedded:DIR)".into()));
            }
            return Ok(StoreUrl::Embedded {
                dir: PathBuf::from(dir),
            });
        }
        if let Some(rest) = url.strip_prefix("etcd://") {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let endpoints = authority
                .split(',')
                .map(|e| check_endpoint(e).map(str::to_string).map_err(&invalid))
                .collect::<Result<Vec<_>, _>>()?;
            let prefix = match path {
                "" => DEFAULT_ETCD_PREFIX.to_string(),
                "/" => {
                    return Err(invalid(
                        "the key prefix is empty; omit the trailing `/` to use the default".into(),
                    ));
                }
                p if p.chars().any(|c| c.is_control() || c.is_whitespace()) => {
                    return Err(invalid(
                        "the key prefix contains whitespace or control characters".into(),
                    ));
                }
                p if p.contains("//") => {
                    return Err(invalid(
                        "the key prefix contains an empty segment (`//`)".into(),
                    ));
                }
                p if p.ends_with('/') => p.to_string(),
                p => format!("{p}/"),
            };
            return Ok(StoreUrl::Etcd { endpoints, prefix });
        }
        let hint = match url.split_once("://") {
            Some(("https" | "etcds", _)) => "TLS to etcd is not supported yet; use etcd://",
            Some(("http", _)) => "write etcd://host:port for etcd",
            _ if url.is_empty() => "the URL is empty",
            _ => "expected embedded:DIR or etcd://host:port[,host:port...][/prefix]",
        };
        Err(invalid(hint.into()))
    }
}

/// Checks one `host:port` (host may be a bracketed IPv6 address).
fn check_endpoint(endpoint: &str) -> Result<&str, String> {
    if endpoint.is_empty() {
        return Err("an endpoint is empty (expected host:port)".into());
    }
    let (host, port) = match endpoint.rsplit_once(':') {
        Some(split) => split,
        None => {
            return Err(format!(
                "endpoint {endpoint:?} has no port (expected host:port)"
            ));
        }
    };
    let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        inner.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    };
    if !host_ok {
        return Err(format!("endpoint {endpoint:?} has an invalid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 && !port.starts_with('+') => Ok(endpoint),
        _ => Err(format!(
            "endpoint {endpoint:?} has an invalid port (expected 1-65535)"
        )),
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Embedded { dir } => write!(f, "embedded:{}", dir.display()),
            StoreUrl::Etcd { endpoints, prefix } => {
                write!(f, "etcd://{}{}", endpoints.join(","), prefix)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<StoreUrl, Error> {
        s.parse()
    }

    #[test]
    fn embedded_and_default() {
        assert_eq!(parse(DEFAULT_STORE_URL).ok(), Some(StoreUrl::default()));
        assert_eq!(
            parse("embedded:/var/lib/kube-aggregator").ok(),
            Some(StoreUrl::Embedded {
                dir: "/var/lib/kube-aggregator".into()
            })
        );
        assert!(parse("embedded:").is_err());
    }

    #[test]
    fn etcd_endpoints_and_prefix() {
        assert_eq!(
            parse("etcd://127.0.0.1:2379").ok(),
            Some(StoreUrl::Etcd {
                endpoints: vec!["127.0.0.1:2379".into()],
                prefix: DEFAULT_ETCD_PREFIX.into()
            })
        );
        assert_eq!(
            parse("etcd://a:1,b.example.com:2,[::1]:3/my/prefix").ok(),
            Some(StoreUrl::Etcd {
                endpoints: vec!["a:1".into(), "b.example.com:2".into(), "[::1]:3".into()],
                prefix: "/my/prefix/".into()
            })
        );
        assert_eq!(
            parse("etcd://a:1/p/").ok(),
            Some(StoreUrl::Etcd {
                endpoints: vec!["a:1".into()],
                prefix: "/p/".into()
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "embedded:./data",
            "embedded:/tmp/x y",
            "etcd://127.0.0.1:2379",
            "etcd://a:1,b:2/x/y",
        ] {
            let parsed = parse(s).ok();
            let again = parsed
                .as_ref()
                .map(|u| u.to_string())
                .and_then(|d| parse(&d).ok());
            assert!(parsed.is_some() && parsed == again, "{s}");
        }
    }

    #[test]
    fn invalid_urls_say_why() {
        for (url, reason) in [
            ("", "empty"),
            ("./data", "expected embedded:DIR"),
            ("etcd://", "endpoint is empty"),
            ("etcd://host", "no port"),
            ("etcd://host:0", "invalid port"),
            ("etcd://host:99999", "invalid port"),
            ("etcd://host:x", "invalid port"),
            ("etcd://a:1,,b:2", "endpoint is empty"),
            ("etcd://ho st:1", "invalid host"),
            ("etcd://[zz]:1", "invalid host"),
            ("etcd://a:1/", "prefix is empty"),
            ("etcd://a:1/a//b", "empty segment"),
            ("etcd://a:1/a b", "whitespace"),
            ("https://a:1", "TLS"),
            ("http://a:1", "etcd://"),
        ] {
            match parse(url) {
                Err(Error::InvalidUrl { url: u, reason: r }) => {
                    assert_eq!(u, url);
                    assert!(r.contains(reason), "{url}: {r}");
                }
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
    }
}
