//! Configuration as kube-apiserver and extension servers take it: flags or the
//! `kube-system/extension-apiserver-authentication` ConfigMap (upstream-behaviour.md §6.1, §6.3).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::headers::{HeaderNames, parse_names, parse_prefixes};

/// The ConfigMap key holding the request-header CA bundle.
const KEY_CA: &str = "requestheader-client-ca-file";
const KEY_ALLOWED: &str = "requestheader-allowed-names";
const KEY_USERNAME: &str = "requestheader-username-headers";
const KEY_UID: &str = "requestheader-uid-headers";
const KEY_GROUP: &str = "requestheader-group-headers";
const KEY_EXTRA: &str = "requestheader-extra-headers-prefix";

/// Why a request-header configuration was rejected. Each message names the flag, ConfigMap key or
/// file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A list value is empty or only whitespace (upstream: `empty value in "<flag>"`).
    #[error("empty value {value:?} in {flag:?}")]
    EmptyValue {
        /// The flag or ConfigMap key, e.g. `requestheader-group-headers`.
        flag: &'static str,
        /// The value as given.
        value: String,
    },

    /// A header name or prefix that HTTP does not allow (spaces, `/`, non-ASCII …).
    #[error("invalid header name {value:?} in {flag:?}: {source}")]
    InvalidHeaderName {
        /// The flag or ConfigMap key.
        flag: &'static str,
        /// The value as given.
        value: String,
        /// http's error.
        #[source]
        source: http::header::InvalidHeaderName,
    },

    /// `--requestheader-client-ca-file` was given as an empty path.
    #[error("missing requestheader client CA file")]
    MissingCaFile,

    /// The CA file could not be read.
    #[error("error reading {}: {source}", path.display())]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The CA bundle is not valid PEM.
    #[error("invalid PEM in the requestheader client CA bundle: {source}")]
    CaPem {
        /// The PEM parser's error.
        #[source]
        source: rustls_pki_types::pem::Error,
    },

    /// The CA bundle holds no `CERTIFICATE` block (upstream: "data does not contain any valid
    /// RSA or ECDSA certificates").
    #[error("the requestheader client CA bundle contains no certificates")]
    NoCaCertificates,

    /// A certificate in the CA bundle cannot be used as a trust anchor.
    #[error("certificate #{index} of the requestheader client CA bundle is unusable: {source}")]
    CaCertificate {
        /// Its position in the bundle, from 0.
        index: usize,
        /// webpki's error.
        #[source]
        source: webpki::Error,
    },

    /// The ConfigMap lacks a key this crate cannot do without (an empty value counts as missing,
    /// as upstream). For `requestheader-client-ca-file` it means the cluster does not provide
    /// request-header authentication (kube-apiserver runs without `--requestheader-client-ca-file`).
    #[error(
        "kube-system/extension-apiserver-authentication has no {key:?}: the cluster does not provide request-header authentication"
    )]
    MissingKey {
        /// The key.
        key: &'static str,
    },

    /// A ConfigMap list is not a JSON array of strings (the keys hold JSON-encoded arrays).
    #[error("ConfigMap key {key:?} is not a JSON array of strings: {source}")]
    InvalidJson {
        /// The key.
        key: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Request-header configuration as kube-apiserver and extension servers take it.
///
/// ```
/// use front_proxy::{HeaderNames, RequestHeaderConfig};
///
/// let config = RequestHeaderConfig {
///     client_ca_pem: b"-----BEGIN CERTIFICATE-----\n...".to_vec(),
///     allowed_names: vec!["front-proxy-client".into()],
///     headers: HeaderNames::default(),
/// };
/// assert_eq!(config.allowed_names, ["front-proxy-client"]);
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RequestHeaderConfig {
    /// `--requestheader-client-ca-file` contents: the PEM bundle whose certificates are the only
    /// roots for the front-proxy client certificate.
    pub client_ca_pem: Vec<u8>,
    /// `--requestheader-allowed-names`: the client certificate's CN must be one of these (exact,
    /// case-sensitive). By default empty, which allows any CN that chains to the CA.
    pub allowed_names: Vec<String>,
    /// The `--requestheader-*-headers` names.
    pub headers: HeaderNames,
}

impl fmt::Debug for RequestHeaderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestHeaderConfig")
            .field(
                "client_ca_pem",
                &format_args!("<{} bytes>", self.client_ca_pem.len()),
            )
            .field("allowed_names", &self.allowed_names)
            .field("headers", &self.headers)
            .finish()
    }
}

impl RequestHeaderConfig {
    /// From kube-apiserver-style flags: reads the CA file and validates every list like upstream
    /// (an empty or all-whitespace value is an error). Empty lists stay empty: give upstream's
    /// defaults yourself (`x-remote-user`, `x-remote-group`, `x-remote-extra-`) if your flags
    /// have none. The bundle's contents are checked by [`crate::Authenticator::new`].
    ///
    /// ```
    /// use front_proxy::{ConfigError, RequestHeaderConfig};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let ca = dir.path().join("front-proxy-ca.crt");
    /// std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n")?;
    /// let config = RequestHeaderConfig::from_flags(
    ///     &ca,
    ///     &["front-proxy-client".into()],
    ///     &["X-Remote-User".into()],
    ///     &["X-Remote-Uid".into()],
    ///     &["X-Remote-Group".into()],
    ///     &["X-Remote-Extra-".into()],
    /// )?;
    /// assert_eq!(config.allowed_names, ["front-proxy-client"]);
    ///
    /// let missing = RequestHeaderConfig::from_flags(&dir.path().join("nope"), &[], &[], &[], &[], &[]);
    /// assert!(matches!(missing, Err(ConfigError::ReadCaFile { .. })));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn from_flags(
        client_ca_file: &Path,
        allowed_names: &[String],
        username_headers: &[String],
        uid_headers: &[String],
        group_headers: &[String],
        extra_headers_prefix: &[String],
    ) -> Result<Self, ConfigError> {
        let headers = HeaderNames::from_flags(
            username_headers,
            uid_headers,
            group_headers,
            extra_headers_prefix,
        )?;
        let allowed_names = parse_allowed_names(allowed_names)?;
        let client_ca_pem = read_ca_file(client_ca_file)?;
        Ok(RequestHeaderConfig {
            client_ca_pem,
            allowed_names,
            headers,
        })
    }

    /// From the data of the `kube-system/extension-apiserver-authentication` ConfigMap, whose
    /// lists are JSON arrays stored as strings (upstream-behaviour.md §6.3).
    ///
    /// As upstream, a missing or empty list key means an empty list (`null` too), so a ConfigMap
    /// from a kube-apiserver that predates `requestheader-uid-headers` reads no UID. A missing or
    /// empty `requestheader-client-ca-file` is [`ConfigError::MissingKey`]: the cluster offers no
    /// request-header authentication. Malformed JSON is [`ConfigError::InvalidJson`]. The
    /// `client-ca-file` key (plain mTLS users) is not read.
    ///
    /// Upstream uses the ConfigMap only when `--requestheader-client-ca-file` is empty; a server
    /// given that flag ignores the ConfigMap's header names too (upstream-behaviour.md §10.13).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use front_proxy::{ConfigError, RequestHeaderConfig};
    ///
    /// let mut data = BTreeMap::new();
    /// data.insert("requestheader-client-ca-file".to_owned(), "-----BEGIN CERTIFICATE-----\n".to_owned());
    /// data.insert("requestheader-allowed-names".to_owned(), r#"["front-proxy-client"]"#.to_owned());
    /// data.insert("requestheader-username-headers".to_owned(), r#"["X-Remote-User"]"#.to_owned());
    /// data.insert("requestheader-uid-headers".to_owned(), "[]".to_owned());
    /// data.insert("requestheader-group-headers".to_owned(), r#"["X-Remote-Group"]"#.to_owned());
    /// data.insert("requestheader-extra-headers-prefix".to_owned(), r#"["X-Remote-Extra-"]"#.to_owned());
    /// let config = RequestHeaderConfig::from_configmap(&data)?;
    /// assert_eq!(config.allowed_names, ["front-proxy-client"]);
    /// assert!(config.headers.uid.is_empty());
    ///
    /// data.remove("requestheader-client-ca-file");
    /// assert!(matches!(RequestHeaderConfig::from_configmap(&data),
    ///                  Err(ConfigError::MissingKey { key: "requestheader-client-ca-file" })));
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn from_configmap(data: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let client_ca_pem = match data.get(KEY_CA) {
            Some(pem) if !pem.is_empty() => pem.clone().into_bytes(),
            _ => return Err(ConfigError::MissingKey { key: KEY_CA }),
        };
        let allowed = json_strings(data, KEY_ALLOWED)?;
        let headers = HeaderNames {
            username: parse_names(KEY_USERNAME, &json_strings(data, KEY_USERNAME)?)?,
            uid: parse_names(KEY_UID, &json_strings(data, KEY_UID)?)?,
            group: parse_names(KEY_GROUP, &json_strings(data, KEY_GROUP)?)?,
            extra_prefixes: parse_prefixes(KEY_EXTRA, &json_strings(data, KEY_EXTRA)?)?,
        };
        Ok(RequestHeaderConfig {
            client_ca_pem,
            allowed_names: parse_allowed_names(&allowed)?,
            headers,
        })
    }
}

pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    if path.as_os_str().is_empty() {
        return Err(ConfigError::MissingCaFile);
    }
    std::fs::read(path).map_err(|source| ConfigError::ReadCaFile {
        path: path.to_owned(),
        source,
    })
}

fn parse_allowed_names(values: &[String]) -> Result<Vec<String>, ConfigError> {
    for value in values {
        if value.trim().is_empty() {
            return Err(ConfigError::EmptyValue {
                flag: KEY_ALLOWED,
                value: value.clone(),
            });
        }
    }
    // Matching is exact (upstream compares the CN with ==), so names are kept untrimmed.
    Ok(values.to_vec())
}

/// upstream `deserializeStrings`: empty means nil, otherwise a JSON array of strings.
fn json_strings(
    data: &BTreeMap<String, String>,
    key: &'static str,
) -> Result<Vec<String>, ConfigError> {
    match data.get(key) {
        None => Ok(Vec::new()),
        Some(raw) if raw.is_empty() => Ok(Vec::new()),
        Some(raw) => serde_json::from_str::<Option<Vec<String>>>(raw)
            .map(Option::unwrap_or_default)
            .map_err(|source| ConfigError::InvalidJson { key, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::{X_REMOTE_GROUP, X_REMOTE_UID, X_REMOTE_USER};

    fn full_configmap() -> BTreeMap<String, String> {
        // As kube-apiserver 1.33 writes it.
        [
            (
                KEY_CA,
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            ),
            (KEY_ALLOWED, r#"["front-proxy-client"]"#),
            (KEY_USERNAME, r#"["X-Remote-User"]"#),
            (KEY_UID, r#"["X-Remote-Uid"]"#),
            (KEY_GROUP, r#"["X-Remote-Group"]"#),
            (KEY_EXTRA, r#"["X-Remote-Extra-"]"#),
            ("client-ca-file", "ignored"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    #[test]
    fn configmap_full() -> Result<(), ConfigError> {
        let config = RequestHeaderConfig::from_configmap(&full_configmap())?;
        assert!(
            config
                .client_ca_pem
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        );
        assert_eq!(config.allowed_names, ["front-proxy-client"]);
        assert_eq!(config.headers, HeaderNames::default());
        Ok(())
    }

    #[test]
    fn configmap_empty_arrays_and_missing_keys_are_empty_lists() -> Result<(), ConfigError> {
        let mut data = full_configmap();
        data.insert(KEY_ALLOWED.into(), "[]".into());
        data.remove(KEY_UID);
        data.insert(KEY_GROUP.into(), String::new());
        data.insert(KEY_EXTRA.into(), "null".into());
        let config = RequestHeaderConfig::from_configmap(&data)?;
        assert!(config.allowed_names.is_empty());
        assert!(config.headers.uid.is_empty());
        assert!(config.headers.group.is_empty());
        assert!(config.headers.extra_prefixes.is_empty());
        assert_eq!(config.headers.username, [X_REMOTE_USER]);
        Ok(())
    }

    #[test]
    fn configmap_without_ca_is_a_typed_error() {
        let mut data = full_configmap();
        data.insert(KEY_CA.into(), String::new());
        assert!(matches!(
            RequestHeaderConfig::from_configmap(&data),
            Err(ConfigError::MissingKey { key: KEY_CA })
        ));
        assert!(matches!(
            RequestHeaderConfig::from_configmap(&BTreeMap::new()),
            Err(ConfigError::MissingKey { key: KEY_CA })
        ));
    }

    #[test]
    fn configmap_malformed_json_names_the_key() {
        for bad in [
            r#"["X-Remote-User""#,
            r#""X-Remote-User""#,
            "[1]",
            "X-Remote-User",
            "{}",
        ] {
            let mut data = full_configmap();
            data.insert(KEY_USERNAME.into(), bad.into());
            match RequestHeaderConfig::from_configmap(&data) {
                Err(ConfigError::InvalidJson { key, .. }) => assert_eq!(key, KEY_USERNAME),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn configmap_blank_header_name_is_an_error() {
        let mut data = full_configmap();
        data.insert(KEY_GROUP.into(), r#"["X-Remote-Group", " "]"#.into());
        assert!(matches!(
            RequestHeaderConfig::from_configmap(&data),
            Err(ConfigError::EmptyValue {
                flag: KEY_GROUP,
                ..
            })
        ));
        let mut data = full_configmap();
        data.insert(KEY_ALLOWED.into(), r#"[""]"#.into());
        assert!(matches!(
            RequestHeaderConfig::from_configmap(&data),
            Err(ConfigError::EmptyValue {
                flag: KEY_ALLOWED,
                ..
            })
        ));
    }

    #[test]
    fn configmap_multiple_names_in_order() -> Result<(), ConfigError> {
        let mut data = full_configmap();
        data.insert(KEY_USERNAME.into(), r#"["X-Remote-User","X-Other"]"#.into());
        let config = RequestHeaderConfig::from_configmap(&data)?;
        assert_eq!(config.headers.username.len(), 2);
        assert_eq!(config.headers.username[1], "x-other");
        assert_eq!(config.headers.uid, [X_REMOTE_UID]);
        assert_eq!(config.headers.group, [X_REMOTE_GROUP]);
        Ok(())
    }

    #[test]
    fn flags_reject_empty_path_and_blank_allowed_names() -> Result<(), Box<dyn std::error::Error>> {
        assert!(matches!(
            RequestHeaderConfig::from_flags(Path::new(""), &[], &[], &[], &[], &[]),
            Err(ConfigError::MissingCaFile)
        ));
        let dir = tempfile::tempdir()?;
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "x")?;
        let err =
            RequestHeaderConfig::from_flags(&ca, &["  ".into()], &[], &[], &[], &[]).unwrap_err();
        assert!(
            err.to_string().contains("requestheader-allowed-names"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn debug_hides_the_bundle() -> Result<(), ConfigError> {
        let config = RequestHeaderConfig::from_configmap(&full_configmap())?;
        let debug = format!("{config:?}");
        assert!(debug.contains("bytes>"), "{debug}");
        assert!(!debug.contains("BEGIN"), "{debug}");
        Ok(())
    }
}
