//! The validated server configuration (style.md §9: clap flags in the binary → this `Config`).
//! Every field names its kube-apiserver flag and says its default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::Error;

/// Upstream's limit for JSON/YAML request bodies (`maxRequestBodyBytes`, 3 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// `--requestheader-*`: trust identity headers from a verified authenticating proxy in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeaderFlags {
    /// `--requestheader-client-ca-file`: the only roots for the proxy's client certificate.
    pub client_ca_file: PathBuf,
    /// `--requestheader-allowed-names`: allowed client certificate CNs; empty allows any.
    pub allowed_names: Vec<String>,
    /// `--requestheader-username-headers`. By default `X-Remote-User` (kube-apiserver has no
    /// default and then never finds a user; we use the names every proxy sends).
    pub username_headers: Vec<String>,
    /// `--requestheader-uid-headers`. By default none (as upstream 1.32).
    pub uid_headers: Vec<String>,
    /// `--requestheader-group-headers`. By default `X-Remote-Group`.
    pub group_headers: Vec<String>,
    /// `--requestheader-extra-headers-prefix`. By default `X-Remote-Extra-`.
    pub extra_headers_prefix: Vec<String>,
}

/// Access to the cluster's kube-apiserver (`docs/cluster.md`): where non-aggregated requests go,
/// the client for the aggregator's own calls (Services, EndpointSlices, the trust ConfigMap),
/// and delegated authentication (TokenReview) and authorization (SubjectAccessReview).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `--delegate-kubeconfig`: the delegate (normally kube-apiserver) is this kubeconfig's
    /// server, verified with its CA; proxied requests still carry the front-proxy client
    /// certificate and the caller's identity. Exclusive with `--delegate-url`. By default none.
    pub delegate_kubeconfig: Option<PathBuf>,
    /// `--kubeconfig`: the client for the aggregator's own calls (watching Services and
    /// EndpointSlices, the trust ConfigMap). By default the delegate kubeconfig, else the
    /// in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// Use the pod's service account (`KUBERNETES_SERVICE_HOST`) where no kubeconfig is given:
    /// the delegate, the own client, TokenReview and SubjectAccessReview. The binary sets it when
    /// running in a pod with none of `--delegate-url`, `--delegate-kubeconfig`, `--kubeconfig`
    /// and `--service-map`. By default false.
    pub in_cluster: bool,
    /// `--authentication-kubeconfig`: bearer tokens nobody else recognises are checked with a
    /// TokenReview there. By default none (in-cluster: the service account).
    pub authentication_kubeconfig: Option<PathBuf>,
    /// `--authentication-token-webhook-cache-ttl`: how long TokenReview answers (successes and
    /// failures) are cached. By default 10 s.
    pub authentication_cache_ttl: Duration,
    /// `--authorization-kubeconfig`: requests the fixed rules do not allow are decided by a
    /// SubjectAccessReview there (replacing the default policy). By default none (in-cluster:
    /// the service account).
    pub authorization_kubeconfig: Option<PathBuf>,
    /// `--authorization-webhook-cache-authorized-ttl`. By default 10 s.
    pub authorization_cache_authorized_ttl: Duration,
    /// `--authorization-webhook-cache-unauthorized-ttl`. By default 10 s.
    pub authorization_cache_unauthorized_ttl: Duration,
    /// `--authorization-always-allow-paths`: non-resource paths anyone may `get` without asking
    /// (a trailing `*` is a prefix). By default `/healthz`, `/livez`, `/readyz`, `/version`.
    pub always_allow_paths: Vec<String>,
    /// `--publish-authentication-configmap`: write our front-proxy CA and header names into
    /// `kube-system/extension-apiserver-authentication` (merged, as kube-apiserver does) instead
    /// of only checking it. By default false.
    pub publish_authentication_configmap: bool,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            delegate_kubeconfig: None,
            kubeconfig: None,
            in_cluster: false,
            authentication_kubeconfig: None,
            authentication_cache_ttl: Duration::from_secs(10),
            authorization_kubeconfig: None,
            authorization_cache_authorized_ttl: Duration::from_secs(10),
            authorization_cache_unauthorized_ttl: Duration::from_secs(10),
            always_allow_paths: ["/healthz", "/livez", "/readyz", "/version"]
                .map(String::from)
                .to_vec(),
            publish_authentication_configmap: false,
        }
    }
}

/// Everything `kube-aggregator serve` needs, validated. Build it from flags, then call
/// [`Config::validate`] before starting a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--bind-address`. By default `0.0.0.0`.
    pub bind_address: IpAddr,
    /// `--secure-port`. By default 6443 (0 picks a free port; tests use it).
    pub secure_port: u16,
    /// `--tls-cert-file` (PEM, leaf first). By default none: a self-signed certificate for
    /// `localhost`, `127.0.0.1` and `::1` is generated in memory, as upstream does.
    pub tls_cert_file: Option<PathBuf>,
    /// `--tls-private-key-file`. Required with `tls_cert_file`.
    pub tls_private_key_file: Option<PathBuf>,
    /// `--client-ca-file`: x509 client certificates signed by it authenticate as CN (user) and
    /// O (groups). By default none.
    pub client_ca_file: Option<PathBuf>,
    /// `--token-auth-file`: kube-apiserver's static token CSV (`token,user,uid,"g1,g2"`).
    /// By default none.
    pub token_auth_file: Option<PathBuf>,
    /// `--anonymous-auth`: unauthenticated requests become `system:anonymous`. By default
    /// false (kube-apiserver defaults to true; we do not).
    pub anonymous_auth: bool,
    /// `--requestheader-*`. By default none.
    pub request_header: Option<RequestHeaderFlags>,
    /// `--authorization-policy-file`: ABAC JSON lines replacing the default policy (only
    /// `system:masters` writes; authenticated users read). By default none.
    pub authorization_policy_file: Option<PathBuf>,
    /// `--proxy-client-cert-file`: the front-proxy client certificate presented to backends.
    pub proxy_client_cert_file: Option<PathBuf>,
    /// `--proxy-client-key-file`.
    pub proxy_client_key_file: Option<PathBuf>,
    /// `--service-map`: a file mapping Services to addresses for the proxy. By default none.
    pub service_map: Option<PathBuf>,
    /// `--enable-aggregator-routing`: route to endpoints instead of the Service address.
    /// By default false.
    pub enable_aggregator_routing: bool,
    /// `--aggregator-reject-forwarding-redirect`: turn backend redirects into 502. By default
    /// true.
    pub aggregator_reject_forwarding_redirect: bool,
    /// `--proxy-backend-http2`: offer HTTP/2 to backends (ALPN), as upstream does. When false,
    /// pooled HTTP/1.1 connections, one per request in flight (`docs/benchmarks.md` compares
    /// both). By default true.
    pub proxy_backend_http2: bool,
    /// `--delegate-url`: where local APIServices and paths nobody owns are sent (normally a
    /// kube-apiserver), with the proxy client certificate and the caller's identity in
    /// `X-Remote-*` headers. By default none (404).
    pub delegate_url: Option<http::Uri>,
    /// `--delegate-ca-file`: the CA bundle that verifies the delegate's serving certificate.
    /// By default none: the system roots.
    pub delegate_ca_file: Option<PathBuf>,
    /// `--max-requests-inflight`: concurrent non-mutating requests (watches excluded) before
    /// 429. 0 means no limit. By default 400.
    pub max_requests_inflight: usize,
    /// `--max-mutating-requests-inflight`: concurrent mutating requests before 429. 0 means no
    /// limit. By default 200.
    pub max_mutating_requests_inflight: usize,
    /// `--max-request-body-bytes`: larger bodies get 413. By default 3 MiB, as upstream.
    pub max_request_body_bytes: usize,
    /// `--request-header-read-timeout`: how long a client may take to send the TLS handshake
    /// and request head. By default 10 s.
    pub request_header_read_timeout: Duration,
    /// `--request-timeout`: deadline for non-watch requests handled here. By default 60 s.
    pub request_timeout: Duration,
    /// `--min-request-timeout`: a watch without `timeoutSeconds` lasts between this and twice
    /// this. By default 1800 s.
    pub min_request_timeout: Duration,
    /// `--shutdown-timeout`: after SIGTERM, how long in-flight requests may take before
    /// connections are closed. By default 30 s.
    pub shutdown_timeout: Duration,
    /// The cluster: delegate kubeconfig, own client, TokenReview, SubjectAccessReview, trust
    /// ConfigMap. By default none of them.
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            secure_port: 6443,
            tls_cert_file: None,
            tls_private_key_file: None,
            client_ca_file: None,
            token_auth_file: None,
            anonymous_auth: false,
            request_header: None,
            authorization_policy_file: None,
            proxy_client_cert_file: None,
            proxy_client_key_file: None,
            service_map: None,
            enable_aggregator_routing: false,
            aggregator_reject_forwarding_redirect: true,
            proxy_backend_http2: true,
            delegate_url: None,
            delegate_ca_file: None,
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_request_body_bytes: DEFAULT_MAX_BODY_BYTES,
            request_header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            min_request_timeout: Duration::from_secs(1800),
            shutdown_timeout: Duration::from_secs(30),
            cluster: ClusterConfig::default(),
        }
    }
}

/// Parses a `--delegate-url` value.
pub fn parse_url(s: &str) -> Result<http::Uri, Error> {
    s.parse::<http::Uri>()
        .map_err(|e| Error::Config(format!("--delegate-url {s:?}: {e}")))
}

impl Config {
    /// The identity headers the proxy writes to backends and the delegate (the first name of
    /// each list) and strips from what clients send (every name): the `--requestheader-*`
    /// flags, each empty list meaning the standard name (`X-Remote-User`, `X-Remote-Uid`,
    /// `X-Remote-Group`, `X-Remote-Extra-`). The UID is written whenever the user has one.
    pub fn proxy_header_names(&self) -> Result<front_proxy::HeaderNames, Error> {
        let Some(rh) = &self.request_header else {
            return Ok(front_proxy::HeaderNames::default());
        };
        let or = |v: &Vec<String>, d: &str| {
            if v.is_empty() {
                vec![d.to_owned()]
            } else {
                v.clone()
            }
        };
        front_proxy::HeaderNames::from_flags(
            &or(&rh.username_headers, front_proxy::X_REMOTE_USER.as_str()),
            &or(&rh.uid_headers, front_proxy::X_REMOTE_UID.as_str()),
            &or(&rh.group_headers, front_proxy::X_REMOTE_GROUP.as_str()),
            &or(&rh.extra_headers_prefix, front_proxy::X_REMOTE_EXTRA_PREFIX),
        )
        .map_err(Error::RequestHeader)
    }

    /// The address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, self.secure_port)
    }

    /// Checks consistency and reads every file once (certificates, keys, CA bundles, the token
    /// file, the policy file), so that a bad flag fails before the server starts.
    pub fn validate(&self) -> Result<(), Error> {
        match (&self.tls_cert_file, &self.tls_private_key_file) {
            (Some(_), None) => {
                return Err(Error::Config(
                    "--tls-cert-file requires --tls-private-key-file".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::Config(
                    "--tls-private-key-file requires --tls-cert-file".into(),
                ));
            }
            _ => {}
        }
        match (&self.proxy_client_cert_file, &self.proxy_client_key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::Config(
                    "--proxy-client-cert-file and --proxy-client-key-file must be given together"
                        .into(),
                ));
            }
            _ => {}
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert_file, &self.tls_private_key_file) {
            crate::tls::load_certified_key(cert, key)?;
        }
        if let (Some(cert), Some(key)) = (&self.proxy_client_cert_file, &self.proxy_client_key_file)
        {
            crate::tls::load_certified_key(cert, key)?;
        }
        if let Some(ca) = &self.client_ca_file {
            crate::tls::load_ca_bundle(ca)?;
        }
        if let Some(rh) = &self.request_header {
            crate::authn::request_header_authenticator(rh)?;
        }
        if let Some(tokens) = &self.token_auth_file {
            crate::authn::TokenFile::load(tokens)?;
        }
        if let Some(policy) = &self.authorization_policy_file {
            crate::authz::AbacPolicy::load(policy)?;
        }
        if let Some(map) = &self.service_map {
            proxy::ServiceMapResolver::load(map).map_err(Error::Proxy)?;
        }
        if let Some(ca) = &self.delegate_ca_file {
            if self.delegate_url.is_none() {
                return Err(Error::Config(
                    "--delegate-ca-file requires --delegate-url".into(),
                ));
            }
            crate::tls::load_ca_bundle(ca)?;
        }
        self.proxy_header_names()?;
        if let Some(url) = &self.delegate_url
            && url.scheme_str() != Some("https")
            && url.scheme_str() != Some("http")
        {
            return Err(Error::Config(format!(
                "--delegate-url {url}: must be an http:// or https:// URL"
            )));
        }
        crate::cluster::validate(self)?;
        if self.max_request_body_bytes == 0 {
            return Err(Error::Config(
                "--max-request-body-bytes must be positive".into(),
            ));
        }
        if self.request_header_read_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config("timeouts must be positive".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_header_names_follow_the_requestheader_flags() -> Result<(), Error> {
        let standard = Config::default().proxy_header_names()?;
        assert_eq!(standard, front_proxy::HeaderNames::default());
        let config = Config {
            request_header: Some(RequestHeaderFlags {
                client_ca_file: PathBuf::from("ca.pem"),
                allowed_names: vec![],
                username_headers: vec!["X-Proxy-User".into(), "X-Remote-User".into()],
                uid_headers: vec![],
                group_headers: vec![],
                extra_headers_prefix: vec!["X-Proxy-Extra-".into()],
            }),
            ..Config::default()
        };
        let names = config.proxy_header_names()?;
        assert_eq!(names.username[0], "x-proxy-user");
        assert_eq!(names.username.len(), 2);
        assert_eq!(names.uid, [front_proxy::X_REMOTE_UID]);
        assert_eq!(names.group, [front_proxy::X_REMOTE_GROUP]);
        assert_eq!(names.extra_prefixes, ["X-Proxy-Extra-"]);
        Ok(())
    }
}
