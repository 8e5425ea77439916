//! Service resolution: `(namespace, name, port)` → the addresses that serve it, behind one
//! snapshot-based trait, and the balancing of endpoint routing (upstream-behaviour.md §5.2).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use http::uri::Authority;

use crate::error::Error;

/// An APIService's `spec.service`: the Service and port requests go to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    /// `spec.service.namespace`.
    pub namespace: String,
    /// `spec.service.name`.
    pub name: String,
    /// `spec.service.port` (upstream defaults it to 443).
    pub port: u16,
}

impl ServiceRef {
    /// A reference to `namespace/name:port`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>, port: u16) -> Self {
        ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
            port,
        }
    }

    /// The TLS server name upstream verifies the backend's certificate against:
    /// `<name>.<namespace>.svc` (no `.cluster.local`, not the dialled IP; §5.3).
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.name, self.namespace)
    }
}

impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
    }
}

/// One `host:port` a backend is reached at. The host is usually an IP; a DNS name is resolved
/// when a connection is opened. The `Host` header value is prepared once, here.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BackendAddr {
    authority: Authority,
    host_header: HeaderValue,
    socket: Option<SocketAddr>,
}

impl BackendAddr {
    /// An address from an IP socket address.
    pub fn from_socket(addr: SocketAddr) -> Self {
        // A SocketAddr always prints as a valid authority ("1.2.3.4:5", "[::1]:5").
        let text = addr.to_string();
        let authority = Authority::from_maybe_shared(bytes::Bytes::from(text.clone()))
            .unwrap_or_else(|_| Authority::from_static("invalid:0"));
        let host_header =
            HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        BackendAddr {
            authority,
            host_header,
            socket: Some(addr),
        }
    }

    /// The `host:port` authority (the URI authority and `Host` header of forwarded requests).
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The same as a header value.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// The socket address when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.socket
    }

    /// The host part (without brackets for IPv6).
    pub fn host(&self) -> &str {
        let host = self.authority.host();
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.authority.port_u16().unwrap_or(443)
    }
}

impl FromStr for BackendAddr {
    type Err = String;

    /// Parses `host:port`, `ip:port` or `[ipv6]:port`; the port is required.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(socket) = s.parse::<SocketAddr>() {
            return Ok(BackendAddr::from_socket(socket));
        }
        let authority: Authority = s
            .parse()
            .map_err(|_| format!("{s:?} is not a host:port address"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{s:?} must not contain user information"));
        }
        let Some(port) = authority.port_u16() else {
            return Err(format!("{s:?} has no port (expected host:port)"));
        };
        if port == 0 {
            return Err(format!("{s:?}: port 0 is not a valid port"));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(format!("{s:?} has no host"));
        }
        if host.parse::<IpAddr>().is_err()
            && !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!("{s:?}: {host:?} is neither an IP nor a DNS name"));
        }
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| format!("{s:?} cannot be a Host header"))?;
        Ok(BackendAddr {
            authority,
            host_header,
            socket: None,
        })
    }
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.authority.as_str())
    }
}

impl fmt::Debug for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackendAddr({})", self.authority.as_str())
    }
}

/// How a Service's address is chosen (kube-apiserver `--enable-aggregator-routing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RoutingMode {
    /// The Service's own address (its ClusterIP; kube-proxy spreads the load). The default,
    /// as in upstream.
    #[default]
    ClusterIp,
    /// The Service's endpoint addresses, balanced round-robin by the proxy, skipping addresses
    /// that recently refused connections (`--enable-aggregator-routing=true`).
    Endpoints,
}

/// Milliseconds since the first call, for lock-free "failed until" marks.
fn now_millis() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The addresses of one Service port, as a resolver publishes them, and the balancing state of
/// endpoint routing. Resolvers hand out `Arc`s of it from immutable snapshots; the state is
/// atomics only, so picking an address never locks.
#[derive(Debug)]
pub struct ResolvedService {
    service_address: Option<BackendAddr>,
    endpoints: Vec<BackendAddr>,
    next: AtomicUsize,
    /// Per endpoint: `now_millis()` value before which the address is skipped (0 = healthy).
    failed_until: Vec<AtomicU64>,
}

impl ResolvedService {
    /// A Service with an optional service (ClusterIP) address and its ready endpoint addresses.
    pub fn new(service_address: Option<BackendAddr>, endpoints: Vec<BackendAddr>) -> Self {
        let failed_until = endpoints.iter().map(|_| AtomicU64::new(0)).collect();
        ResolvedService {
            service_address,
            endpoints,
            next: AtomicUsize::new(0),
            failed_until,
        }
    }

    /// The service (ClusterIP) address.
    pub fn service_address(&self) -> Option<&BackendAddr> {
        self.service_address.as_ref()
    }

    /// The endpoint addresses.
    pub fn endpoints(&self) -> &[BackendAddr] {
        &self.endpoints
    }

    /// The address one request should use. ClusterIP mode: the service address. Endpoints mode:
    /// the next endpoint round-robin, skipping addresses marked failed within the back-off
    /// window unless all are. `None` when there is no address.
    pub fn pick(&self, mode: RoutingMode) -> Option<&BackendAddr> {
        match mode {
            RoutingMode::ClusterIp => self.service_address.as_ref(),
            RoutingMode::Endpoints => {
                let n = self.endpoints.len();
                match n {
                    0 => None,
                    1 => self.endpoints.first(),
                    _ => {
                        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
                        let now = now_millis();
                        (0..n)
                            .map(|i| (start + i) % n)
                            .find(|&i| self.failed_until[i].load(Ordering::Relaxed) <= now)
                            .or(Some(start))
                            .and_then(|i| self.endpoints.get(i))
                    }
                }
            }
        }
    }

    /// Records that connecting to `addr` failed: endpoint routing skips it for `backoff`.
    pub fn mark_failed(&self, addr: &BackendAddr, backoff: Duration) {
        let until = now_millis().saturating_add(u64::try_from(backoff.as_millis()).unwrap_or(0));
        for (endpoint, mark) in self.endpoints.iter().zip(&self.failed_until) {
            if endpoint == addr {
                mark.store(until, Ordering::Relaxed);
            }
        }
    }

    /// Records that `addr` answered: it is no longer skipped.
    pub fn mark_healthy(&self, addr: &BackendAddr) {
        for (endpoint, mark) in self.endpoints.iter().zip(&self.failed_until) {
            if endpoint == addr && mark.load(Ordering::Relaxed) != 0 {
                mark.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// Where the addresses of Services come from: the static `--service-map` file
/// ([`crate::ServiceMapResolver`]), or later a Kubernetes Services/EndpointSlices informer.
///
/// Resolution is synchronous and must not block: implementations answer from an in-memory
/// snapshot (an `Arc` published by a background task) so the proxy's hot path neither awaits
/// nor locks. The errors map to upstream's availability reasons and to the proxy's 503
/// `service unavailable`:
///
/// - [`Error::ServiceNotFound`] — no such Service;
/// - [`Error::ServicePortNotFound`] — the Service lacks the port;
/// - [`Error::EndpointsNotFound`] — no endpoints object;
/// - [`Error::MissingEndpoints`] — no ready address for the port (may also be returned as a
///   `ResolvedService` without addresses; the engine maps that to the same error);
/// - [`Error::ServiceAccess`] — the source cannot be read.
pub trait ServiceResolver: Send + Sync + 'static {
    /// The addresses of `service`, or why there are none.
    fn resolve(&self, service: &ServiceRef) -> Result<std::sync::Arc<ResolvedService>, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<BackendAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn parses_addresses() {
        let a: BackendAddr = "10.0.0.1:8443".parse().unwrap();
        assert_eq!(a.authority().as_str(), "10.0.0.1:8443");
        assert!(a.socket_addr().is_some());
        let v6: BackendAddr = "[::1]:443".parse().unwrap();
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.port(), 443);
        let dns: BackendAddr = "metrics.example.com:443".parse().unwrap();
        assert!(dns.socket_addr().is_none());
        assert_eq!(dns.host(), "metrics.example.com");
        for bad in [
            "10.0.0.1",
            "host",
            ":443",
            "user@host:1",
            "a b:1",
            "host:0",
            "host:99999",
        ] {
            assert!(bad.parse::<BackendAddr>().is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn cluster_ip_mode_uses_the_service_address() {
        let list = addrs(&["10.0.0.1:1", "10.0.0.2:1"]);
        let svc = ResolvedService::new(Some(list[0].clone()), list.clone());
        for _ in 0..4 {
            assert_eq!(svc.pick(RoutingMode::ClusterIp), Some(&list[0]));
        }
        let none = ResolvedService::new(None, list);
        assert_eq!(none.pick(RoutingMode::ClusterIp), None);
    }

    #[test]
    fn endpoints_mode_round_robins_and_skips_failed() {
        let list = addrs(&["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]);
        let svc = ResolvedService::new(None, list.clone());
        let picked: Vec<_> = (0..6)
            .map(|_| svc.pick(RoutingMode::Endpoints).unwrap().clone())
            .collect();
        assert_eq!(picked[..3], list[..]);
        assert_eq!(picked[3..], list[..]);

        svc.mark_failed(&list[1], Duration::from_secs(600));
        let picked: Vec<_> = (0..6)
            .map(|_| svc.pick(RoutingMode::Endpoints).unwrap().clone())
            .collect();
        assert!(!picked.contains(&list[1]), "{picked:?}");
        assert!(picked.contains(&list[0]) && picked.contains(&list[2]));

        svc.mark_healthy(&list[1]);
        let picked: Vec<_> = (0..3)
            .map(|_| svc.pick(RoutingMode::Endpoints).unwrap().clone())
            .collect();
        assert!(picked.contains(&list[1]));
    }

    #[test]
    fn all_failed_still_picks_something() {
        let list = addrs(&["10.0.0.1:1", "10.0.0.2:1"]);
        let svc = ResolvedService::new(None, list.clone());
        for a in &list {
            svc.mark_failed(a, Duration::from_secs(600));
        }
        assert!(svc.pick(RoutingMode::Endpoints).is_some());
        let empty = ResolvedService::new(None, vec![]);
        assert_eq!(empty.pick(RoutingMode::Endpoints), None);
    }

    #[test]
    fn server_name_is_svc_without_cluster_local() {
        assert_eq!(
            ServiceRef::new("kube-system", "metrics-server", 443).server_name(),
            "metrics-server.kube-system.svc"
        );
    }
}
