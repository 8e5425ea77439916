//! Header names, the writer side of the contract (client-go
//! `SetAuthProxyHeaders`, upstream-behaviour.md §5.5) and reading the user from headers.

use std::collections::BTreeMap;

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::UserInfo;
use crate::config::ConfigError;
use crate::escape::{push_escaped, unescape_extra_key};

/// `X-Remote-User`: the standard username header.
///
/// ```
/// assert_eq!(front_proxy::X_REMOTE_USER.as_str(), "x-remote-user");
/// ```
pub const X_REMOTE_USER: HeaderName = HeaderName::from_static("x-remote-user");

/// `X-Remote-Uid`: the standard UID header (sent by kube-apiserver from 1.33 on).
///
/// ```
/// assert_eq!(front_proxy::X_REMOTE_UID.as_str(), "x-remote-uid");
/// ```
pub const X_REMOTE_UID: HeaderName = HeaderName::from_static("x-remote-uid");

/// `X-Remote-Group`: the standard group header, one line per group.
///
/// ```
/// assert_eq!(front_proxy::X_REMOTE_GROUP.as_str(), "x-remote-group");
/// ```
pub const X_REMOTE_GROUP: HeaderName = HeaderName::from_static("x-remote-group");

/// `X-Remote-Extra-`: the standard prefix of extra headers, one line per value.
///
/// ```
/// assert!("X-Remote-Extra-Scopes".starts_with(front_proxy::X_REMOTE_EXTRA_PREFIX));
/// ```
pub const X_REMOTE_EXTRA_PREFIX: &str = "X-Remote-Extra-";

const FLAG_USERNAME: &str = "requestheader-username-headers";
const FLAG_UID: &str = "requestheader-uid-headers";
const FLAG_GROUP: &str = "requestheader-group-headers";
const FLAG_EXTRA: &str = "requestheader-extra-headers-prefix";

/// The header names of the contract. Readers check all listed names; writers use the first of each
/// list, and an empty list means that part is not written.
///
/// By default (`Default`) `X-Remote-User`, `X-Remote-Uid`, `X-Remote-Group` and `X-Remote-Extra-`.
/// Including the UID header by default is a deliberate difference from upstream 1.32, where the
/// `RemoteRequestHeaderUID` gate is off and `--requestheader-uid-headers` has no default
/// (upstream-behaviour.md §5.5, §6.1): kube-apiserver sends the UID from 1.33 on. Behind a
/// kube-apiserver older than 1.32, which forwards a client's own `X-Remote-Uid` unchanged, set
/// `uid` to an empty list.
///
/// ```
/// use front_proxy::HeaderNames;
///
/// let names = HeaderNames::default();
/// assert_eq!(names.username[0], "x-remote-user");
/// assert_eq!(names.uid[0], "x-remote-uid");
/// assert_eq!(names.group[0], "x-remote-group");
/// assert_eq!(names.extra_prefixes, ["X-Remote-Extra-"]);
///
/// // Upstream 1.32 behaviour: never read or write the UID.
/// let no_uid = HeaderNames { uid: vec![], ..HeaderNames::default() };
/// assert!(no_uid.uid.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    /// `--requestheader-username-headers`: the first header with a non-empty value wins.
    pub username: Vec<HeaderName>,
    /// `--requestheader-uid-headers`: the first header with a non-empty value wins.
    pub uid: Vec<HeaderName>,
    /// `--requestheader-group-headers`: every non-empty value of every listed header is a group.
    pub group: Vec<HeaderName>,
    /// `--requestheader-extra-headers-prefix`: prefixes matched case-insensitively; the rest of the
    /// header name is the escaped extra key.
    pub extra_prefixes: Vec<String>,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            username: vec![X_REMOTE_USER],
            uid: vec![X_REMOTE_UID],
            group: vec![X_REMOTE_GROUP],
            extra_prefixes: vec![X_REMOTE_EXTRA_PREFIX.to_owned()],
        }
    }
}

impl HeaderNames {
    /// Builds the names from kube-apiserver-style flag values, validating like upstream: each value
    /// is trimmed, and an empty or all-whitespace value is an error, as is a value that is not a
    /// valid HTTP header name (prefix). Empty lists stay empty (they are not defaulted).
    ///
    /// ```
    /// use front_proxy::{ConfigError, HeaderNames};
    ///
    /// let names = HeaderNames::from_flags(
    ///     &["X-Remote-User".into()],
    ///     &[],
    ///     &["X-Remote-Group".into()],
    ///     &["X-Remote-Extra-".into()],
    /// )?;
    /// assert!(names.uid.is_empty());
    /// assert!(names.aggregation_warnings().is_empty());
    ///
    /// let err = HeaderNames::from_flags(&[" ".into()], &[], &[], &[]).unwrap_err();
    /// assert!(matches!(err, ConfigError::EmptyValue { .. }));
    /// # Ok::<(), ConfigError>(())
    /// ```
    pub fn from_flags(
        username: &[String],
        uid: &[String],
        group: &[String],
        extra_prefixes: &[String],
    ) -> Result<Self, ConfigError> {
        Ok(HeaderNames {
            username: parse_names(FLAG_USERNAME, username)?,
            uid: parse_names(FLAG_UID, uid)?,
            group: parse_names(FLAG_GROUP, group)?,
            extra_prefixes: parse_prefixes(FLAG_EXTRA, extra_prefixes)?,
        })
    }

    /// Upstream's "API aggregation will not work" conditions, as messages a caller can log: a
    /// non-empty list that lacks the standard name (kube-apiserver always writes the standard
    /// names). Also reports an empty username list, with which no request can authenticate.
    ///
    /// ```
    /// use front_proxy::HeaderNames;
    ///
    /// let names = HeaderNames::from_flags(&["X-Custom-User".into()], &[], &[], &[])?;
    /// let warnings = names.aggregation_warnings();
    /// assert_eq!(warnings.len(), 1);
    /// assert!(warnings[0].contains("API aggregation will not work"));
    /// # Ok::<(), front_proxy::ConfigError>(())
    /// ```
    pub fn aggregation_warnings(&self) -> Vec<&'static str> {
        let mut warnings = Vec::new();
        if self.username.is_empty() {
            warnings.push(
                "--requestheader-username-headers is empty - no proxied request can authenticate",
            );
        } else if !self.username.contains(&X_REMOTE_USER) {
            warnings.push(
                "--requestheader-username-headers is set without specifying the standard \
                 X-Remote-User header - API aggregation will not work",
            );
        }
        if !self.uid.is_empty() && !self.uid.contains(&X_REMOTE_UID) {
            warnings.push(
                "--requestheader-uid-headers is set without specifying the standard \
                 X-Remote-Uid header - API aggregation will not work",
            );
        }
        if !self.group.is_empty() && !self.group.contains(&X_REMOTE_GROUP) {
            warnings.push(
                "--requestheader-group-headers is set without specifying the standard \
                 X-Remote-Group header - API aggregation will not work",
            );
        }
        if !self.extra_prefixes.is_empty()
            && !self
                .extra_prefixes
                .iter()
                .any(|p| p.eq_ignore_ascii_case(X_REMOTE_EXTRA_PREFIX))
        {
            warnings.push(
                "--requestheader-extra-headers-prefix is set without specifying the standard \
                 X-Remote-Extra- header prefix - API aggregation will not work",
            );
        }
        warnings
    }
}

pub(crate) fn parse_names(
    flag: &'static str,
    values: &[String],
) -> Result<Vec<HeaderName>, ConfigError> {
    values
        .iter()
        .map(|value| {
            let trimmed = value.trim();
            if trimmed.is_empty() {
                return Err(ConfigError::EmptyValue {
                    flag,
                    value: value.clone(),
                });
            }
            HeaderName::from_bytes(trimmed.as_bytes()).map_err(|source| {
                ConfigError::InvalidHeaderName {
                    flag,
                    value: value.clone(),
                    source,
                }
            })
        })
        .collect()
}

pub(crate) fn parse_prefixes(
    flag: &'static str,
    values: &[String],
) -> Result<Vec<String>, ConfigError> {
    values
        .iter()
        .map(|value| {
            let trimmed = value.trim();
            if trimmed.is_empty() {
                return Err(ConfigError::EmptyValue {
                    flag,
                    value: value.clone(),
                });
            }
            // A prefix is the start of a header name, so it must be a valid one itself; checking
            // here keeps `write_identity` from failing on every request later.
            HeaderName::from_bytes(trimmed.as_bytes()).map_err(|source| {
                ConfigError::InvalidHeaderName {
                    flag,
                    value: value.clone(),
                    source,
                }
            })?;
            Ok(trimmed.to_owned())
        })
        .collect()
}

/// Why identity headers could not be written. Nothing identity-related is left in the headers
/// when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A user field holds a byte that cannot appear in an HTTP header value (a control character
    /// other than tab). Go's HTTP client refuses to send such a request too.
    #[error("cannot send {field} {value:?} in header {header}: {source}")]
    InvalidValue {
        /// Which part of the user: `username`, `uid`, `group` or `extra`.
        field: &'static str,
        /// The header it was meant for.
        header: String,
        /// The offending value.
        value: String,
        /// http's error.
        #[source]
        source: http::header::InvalidHeaderValue,
    },

    /// A configured extra prefix is not a valid header-name start (only possible when
    /// [`HeaderNames`] was built by hand rather than through [`HeaderNames::from_flags`]).
    #[error("cannot build an extra header from prefix {prefix:?}: {source}")]
    InvalidExtraPrefix {
        /// The prefix as configured.
        prefix: String,
        /// http's error.
        #[source]
        source: http::header::InvalidHeaderName,
    },
}

/// The writer side (the proxy): removes every identity header (see [`strip_identity`]), then
/// writes the user like client-go's `SetAuthProxyHeaders` (upstream-behaviour.md §5.5): one
/// username header (even for an empty name), the UID when non-empty, one group header line per
/// group, and one extra header line per value with the key escaped by [`escape_extra_key`].
///
/// The first name of each [`HeaderNames`] list is used; an empty list writes nothing for that
/// part (an empty `uid` list reproduces kube-apiserver 1.32, which never sends the UID).
///
/// On error no identity header is left, so a caller that forwards anyway forwards no identity.
///
/// ```
/// use front_proxy::{write_identity, HeaderNames, UserInfo};
/// use http::HeaderMap;
///
/// let mut user = UserInfo::new("alice");
/// user.groups = vec!["system:authenticated".into(), "dev".into()];
/// user.extra.insert("authentication.kubernetes.io/pod-name".into(), vec!["web-0".into()]);
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-remote-group", "system:masters".parse()?); // spoofed by the client
/// write_identity(&mut headers, &user, &HeaderNames::default())?;
///
/// assert_eq!(headers["x-remote-user"], "alice");
/// assert!(headers.get("x-remote-uid").is_none());
/// let groups: Vec<_> = headers.get_all("x-remote-group").iter().collect();
/// assert_eq!(groups, ["system:authenticated", "dev"]);
/// assert_eq!(headers["x-remote-extra-authentication.kubernetes.io%2fpod-name"], "web-0");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn write_identity(
    headers: &mut HeaderMap,
    user: &UserInfo,
    names: &HeaderNames,
) -> Result<(), WriteError> {
    strip_identity(headers, names);
    let written = append_identity(headers, user, names);
    if written.is_err() {
        strip_identity(headers, names);
    }
    written
}

fn append_identity(
    headers: &mut HeaderMap,
    user: &UserInfo,
    names: &HeaderNames,
) -> Result<(), WriteError> {
    // At most one growth of the map on the proxy's hot path.
    let lines = 2 + user.groups.len() + user.extra.values().map(Vec::len).sum::<usize>();
    headers.reserve(lines);
    if let Some(name) = names.username.first() {
        headers.append(
            name.clone(),
            header_value("username", name.as_str(), &user.name)?,
        );
    }
    if let Some(name) = names.uid.first()
        && !user.uid.is_empty()
    {
        headers.append(name.clone(), header_value("uid", name.as_str(), &user.uid)?);
    }
    if let Some(name) = names.group.first() {
        for group in &user.groups {
            headers.append(name.clone(), header_value("group", name.as_str(), group)?);
        }
    }
    if let Some(prefix) = names.extra_prefixes.first() {
        // One buffer for every extra header name of this request.
        let mut buf = Vec::with_capacity(prefix.len() + 48);
        for (key, values) in &user.extra {
            if values.is_empty() {
                continue;
            }
            buf.clear();
            buf.extend_from_slice(prefix.as_bytes());
            push_escaped(&mut buf, key);
            let name =
                HeaderName::from_bytes(&buf).map_err(|source| WriteError::InvalidExtraPrefix {
                    prefix: prefix.clone(),
                    source,
                })?;
            for value in values {
                headers.append(name.clone(), header_value("extra", name.as_str(), value)?);
            }
        }
    }
    Ok(())
}

fn header_value(field: &'static str, header: &str, value: &str) -> Result<HeaderValue, WriteError> {
    HeaderValue::from_str(value).map_err(|source| WriteError::InvalidValue {
        field,
        header: header.to_owned(),
        value: value.to_owned(),
        source,
    })
}

/// Removes every identity header a client might have sent: `X-Remote-User`, `X-Remote-Uid`,
/// `X-Remote-Group`, every header starting (case-insensitively) with `X-Remote-Extra-`, and the
/// names and prefixes configured in `names`. Nothing else is touched: `Authorization` and
/// `Impersonate-*` are the server's business.
///
/// ```
/// use front_proxy::{strip_identity, HeaderNames};
/// use http::HeaderMap;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-remote-user", "mallory".parse()?);
/// headers.insert("x-remote-extra-scopes", "all".parse()?);
/// headers.insert("authorization", "Bearer t".parse()?);
/// strip_identity(&mut headers, &HeaderNames::default());
/// assert_eq!(headers.len(), 1);
/// assert!(headers.contains_key("authorization"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn strip_identity(headers: &mut HeaderMap, names: &HeaderNames) {
    headers.remove(X_REMOTE_USER);
    headers.remove(X_REMOTE_UID);
    headers.remove(X_REMOTE_GROUP);
    for name in names.username.iter().chain(&names.uid).chain(&names.group) {
        headers.remove(name);
    }
    // HeaderMap has no retain; collect the (rare) matches first. No allocation when none match.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        let matches = has_prefix_ignore_case(name.as_str(), X_REMOTE_EXTRA_PREFIX)
            || names
                .extra_prefixes
                .iter()
                .any(|p| has_prefix_ignore_case(name.as_str(), p));
        if matches {
            doomed.push(name.clone());
        }
    }
    for name in doomed {
        headers.remove(name);
    }
}

pub(crate) fn has_prefix_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// A header value as a string. Go keeps raw bytes; we require UTF-8 and refuse otherwise rather
/// than guess (a lossy conversion could turn two distinct names into one).
fn value_str<'h>(name: &HeaderName, value: &'h HeaderValue) -> Result<&'h str, HeaderName> {
    std::str::from_utf8(value.as_bytes()).map_err(|_| name.clone())
}

/// The user read from the headers (upstream `requestHeaderAuthRequestHandler`), or `Ok(None)` when
/// no username header has a value. `Err` names a header whose value is not UTF-8.
pub(crate) fn read_identity(
    headers: &HeaderMap,
    names: &HeaderNames,
) -> Result<Option<UserInfo>, HeaderName> {
    let Some(name) = first_value(headers, &names.username)? else {
        return Ok(None);
    };
    let uid = first_value(headers, &names.uid)?.unwrap_or_default();
    let mut groups = Vec::new();
    for header in &names.group {
        for value in headers.get_all(header) {
            let value = value_str(header, value)?;
            // Upstream drops empty group values but keeps empty extra values.
            if !value.is_empty() {
                groups.push(value.to_owned());
            }
        }
    }
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Prefixes first, like upstream, so values keep their order within a key.
    for prefix in &names.extra_prefixes {
        for header in headers.keys() {
            if !has_prefix_ignore_case(header.as_str(), prefix) {
                continue;
            }
            let key = unescape_extra_key(&header.as_str()[prefix.len()..]);
            let slot = extra.entry(key).or_default();
            for value in headers.get_all(header) {
                slot.push(value_str(header, value)?.to_owned());
            }
        }
    }
    Ok(Some(UserInfo {
        name: name.to_owned(),
        uid: uid.to_owned(),
        groups,
        extra,
    }))
}

fn first_value<'h>(
    headers: &'h HeaderMap,
    names: &[HeaderName],
) -> Result<Option<&'h str>, HeaderName> {
    for name in names {
        // Go's Header.Get: the first line of that header only.
        if let Some(value) = headers.get(name) {
            let value = value_str(name, value)?;
            if !value.is_empty() {
                return Ok(Some(value));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> UserInfo {
        UserInfo::new(name)
    }

    #[test]
    fn write_replaces_spoofed_headers_and_keeps_others() -> Result<(), Box<dyn std::error::Error>> {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", "mallory".parse()?);
        headers.insert("x-remote-uid", "spoofed".parse()?);
        headers.append("x-remote-group", "system:masters".parse()?);
        headers.insert("X-Remote-Extra-Evil".parse::<HeaderName>()?, "1".parse()?);
        headers.insert("x-custom-user", "mallory".parse()?);
        headers.insert("accept", "application/json".parse()?);
        let names = HeaderNames {
            username: vec![X_REMOTE_USER, HeaderName::from_static("x-custom-user")],
            ..HeaderNames::default()
        };
        write_identity(&mut headers, &user("alice"), &names)?;
        assert_eq!(headers["x-remote-user"], "alice");
        assert!(headers.get("x-remote-uid").is_none());
        assert!(headers.get("x-remote-group").is_none());
        assert!(headers.get("x-remote-extra-evil").is_none());
        assert!(headers.get("x-custom-user").is_none());
        assert_eq!(headers["accept"], "application/json");
        assert_eq!(headers.len(), 2);
        Ok(())
    }

    #[test]
    fn write_sets_empty_username_and_uid_when_present() -> Result<(), WriteError> {
        let mut headers = HeaderMap::new();
        let mut u = user("");
        u.uid = "1234".into();
        u.groups = vec!["a".into(), "".into(), "b".into()];
        write_identity(&mut headers, &u, &HeaderNames::default())?;
        assert_eq!(headers["x-remote-user"], "");
        assert_eq!(headers["x-remote-uid"], "1234");
        let groups: Vec<_> = headers.get_all("x-remote-group").iter().collect();
        assert_eq!(groups, ["a", "", "b"]);
        Ok(())
    }

    #[test]
    fn write_without_uid_names_never_sends_uid() -> Result<(), WriteError> {
        let mut headers = HeaderMap::new();
        let mut u = user("alice");
        u.uid = "1234".into();
        let names = HeaderNames {
            uid: vec![],
            ..HeaderNames::default()
        };
        write_identity(&mut headers, &u, &names)?;
        assert!(headers.get("x-remote-uid").is_none());
        Ok(())
    }

    #[test]
    fn write_one_line_per_extra_value() -> Result<(), WriteError> {
        let mut headers = HeaderMap::new();
        let mut u = user("alice");
        u.extra
            .insert("scopes".into(), vec!["a".into(), "b".into()]);
        u.extra.insert("empty".into(), vec![]);
        write_identity(&mut headers, &u, &HeaderNames::default())?;
        let scopes: Vec<_> = headers.get_all("x-remote-extra-scopes").iter().collect();
        assert_eq!(scopes, ["a", "b"]);
        assert!(headers.get("x-remote-extra-empty").is_none());
        Ok(())
    }

    #[test]
    fn write_refuses_control_characters_and_leaves_no_identity() {
        let mut headers = HeaderMap::new();
        let mut u = user("alice");
        u.groups = vec!["ok".into(), "bad\ngroup".into()];
        let err = write_identity(&mut headers, &u, &HeaderNames::default()).unwrap_err();
        assert!(
            matches!(err, WriteError::InvalidValue { field: "group", .. }),
            "{err}"
        );
        assert!(headers.is_empty());

        let mut u = user("alice\r\nx-remote-group: system:masters");
        u.groups = vec!["ok".into()];
        assert!(write_identity(&mut headers, &u, &HeaderNames::default()).is_err());
        assert!(headers.is_empty());
    }

    #[test]
    fn write_refuses_a_bad_hand_built_prefix() {
        let mut headers = HeaderMap::new();
        let mut u = user("alice");
        u.extra.insert("k".into(), vec!["v".into()]);
        let names = HeaderNames {
            extra_prefixes: vec!["bad prefix ".into()],
            ..HeaderNames::default()
        };
        let err = write_identity(&mut headers, &u, &names).unwrap_err();
        assert!(matches!(err, WriteError::InvalidExtraPrefix { .. }));
        assert!(headers.is_empty());
    }

    #[test]
    fn read_takes_first_non_empty_username_and_all_groups() -> Result<(), Box<dyn std::error::Error>>
    {
        let names = HeaderNames::from_flags(
            &["X-Remote-User".into(), "X-Other-User".into()],
            &["X-Remote-Uid".into()],
            &["X-Remote-Group".into(), "X-Other-Group".into()],
            &["X-Remote-Extra-".into()],
        )?;
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", "".parse()?);
        headers.insert("x-other-user", "bob".parse()?);
        headers.append("x-remote-group", "g1".parse()?);
        headers.append("x-remote-group", "".parse()?);
        headers.append("x-other-group", "g2, g3".parse()?);
        headers.append("x-remote-extra-a%2fb", "".parse()?);
        let got = read_identity(&headers, &names).map_err(|h| h.to_string())?;
        let got = got.ok_or("no user")?;
        assert_eq!(got.name, "bob");
        assert_eq!(got.uid, "");
        // Go does not split on commas: one header line is one group.
        assert_eq!(got.groups, ["g1", "g2, g3"]);
        assert_eq!(got.extra.get("a/b"), Some(&vec![String::new()]));
        Ok(())
    }

    #[test]
    fn read_without_username_is_none() {
        let headers = HeaderMap::new();
        assert_eq!(read_identity(&headers, &HeaderNames::default()), Ok(None));
    }

    #[test]
    fn read_refuses_non_utf8_values() -> Result<(), Box<dyn std::error::Error>> {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", HeaderValue::from_bytes(b"al\xffice")?);
        assert_eq!(
            read_identity(&headers, &HeaderNames::default()),
            Err(X_REMOTE_USER)
        );
        Ok(())
    }

    #[test]
    fn read_accepts_utf8_values() -> Result<(), Box<dyn std::error::Error>> {
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", HeaderValue::from_bytes("zoë".as_bytes())?);
        let got = read_identity(&headers, &HeaderNames::default()).map_err(|h| h.to_string())?;
        assert_eq!(got.map(|u| u.name), Some("zoë".to_owned()));
        Ok(())
    }

    #[test]
    fn overlapping_prefixes_read_like_upstream() -> Result<(), Box<dyn std::error::Error>> {
        let names = HeaderNames::from_flags(
            &["X-Remote-User".into()],
            &[],
            &[],
            &["X-Remote-Extra-".into(), "X-Remote-Extra-Foo-".into()],
        )?;
        let mut headers = HeaderMap::new();
        headers.insert("x-remote-user", "u".parse()?);
        headers.insert("x-remote-extra-foo-bar", "v".parse()?);
        let got = read_identity(&headers, &names)
            .map_err(|h| h.to_string())?
            .ok_or("no user")?;
        assert_eq!(got.extra.get("foo-bar"), Some(&vec!["v".to_owned()]));
        assert_eq!(got.extra.get("bar"), Some(&vec!["v".to_owned()]));
        Ok(())
    }

    #[test]
    fn from_flags_validates_like_upstream() {
        let err = HeaderNames::from_flags(&[], &[], &["\t".into()], &[]).unwrap_err();
        assert!(
            err.to_string().contains("requestheader-group-headers"),
            "{err}"
        );
        let err = HeaderNames::from_flags(&["bad header".into()], &[], &[], &[]).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidHeaderName { .. }));
        let err = HeaderNames::from_flags(&[], &[], &[], &["x-remote-extra/".into()]).unwrap_err();
        assert!(matches!(err, ConfigError::InvalidHeaderName { .. }));
        let ok = HeaderNames::from_flags(
            &[" X-Remote-User ".into()],
            &[],
            &[],
            &[" X-Remote-Extra- ".into()],
        );
        assert_eq!(
            ok.map(|n| (n.username, n.extra_prefixes)).ok(),
            Some((vec![X_REMOTE_USER], vec!["X-Remote-Extra-".to_owned()]))
        );
    }

    #[test]
    fn warnings_follow_upstream_conditions() -> Result<(), ConfigError> {
        assert!(HeaderNames::default().aggregation_warnings().is_empty());
        let names = HeaderNames::from_flags(
            &["x-remote-user".into()],
            &["x-my-uid".into()],
            &["x-my-group".into()],
            &["x-my-extra-".into()],
        )?;
        assert_eq!(names.aggregation_warnings().len(), 3);
        let empty = HeaderNames::from_flags(&[], &[], &[], &[])?;
        assert_eq!(empty.aggregation_warnings().len(), 1);
        Ok(())
    }
}
