//! The crate's one error type, the plain-words classification of transport failures, and the one
//! place where errors become the proxy's plain-text responses (upstream-behaviour.md §5.8).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::availability::AvailabilityReason;
use crate::body::{Body, BoxError, full};
use crate::resolve::ServiceRef;

/// Everything that can go wrong between receiving a request and handing back the backend's
/// response head, plus configuration errors of the engine's inputs (certificate files, the
/// service map, a caBundle).
///
/// [`Error::to_response`] turns any of them into upstream's answer; [`Error::availability_reason`]
/// maps them to the `Available` condition's reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The resolver knows no Service with this namespace and name (upstream `ServiceNotFound`).
    #[error("service/{} in {:?} is not present", .service.name, .service.namespace)]
    ServiceNotFound {
        /// The Service asked for.
        service: ServiceRef,
    },

    /// The Service exists but has no port equal to the APIService's port (upstream
    /// `ServicePortError`).
    #[error("service/{} in {:?} is not listening on port {}", .service.name, .service.namespace, .service.port)]
    ServicePortNotFound {
        /// The Service asked for.
        service: ServiceRef,
    },

    /// The Service has no endpoints object at all (upstream `EndpointsNotFound`).
    #[error("cannot find endpoints for service/{} in {:?}", .service.name, .service.namespace)]
    EndpointsNotFound {
        /// The Service asked for.
        service: ServiceRef,
    },

    /// The Service's port has no ready address (upstream `MissingEndpoints`).
    #[error("endpoints for service/{} in {:?} have no addresses for port {}", .service.name, .service.namespace, .service.port)]
    MissingEndpoints {
        /// The Service asked for.
        service: ServiceRef,
    },

    /// The resolver could not answer, e.g. its source is unreachable (upstream
    /// `ServiceAccessError`).
    #[error("service/{} in {:?} cannot be checked due to: {message}", .service.name, .service.namespace)]
    ServiceAccess {
        /// The Service asked for.
        service: ServiceRef,
        /// Why.
        message: String,
    },

    /// A resolver's own refusal, with upstream's reason and wording (e.g. the EndpointSlice
    /// messages of a Kubernetes resolver, or a headless Service under ClusterIP routing). It is
    /// answered like the other resolution errors (503 `service unavailable`).
    #[error("{message}")]
    Unresolvable {
        /// The Service asked for.
        service: ServiceRef,
        /// The `Available` condition reason this stands for.
        reason: AvailabilityReason,
        /// The condition message.
        message: String,
    },

    /// The APIService's TLS settings cannot be turned into a client configuration: an unparsable
    /// `caBundle`, or `caBundle` together with `insecureSkipTLSVerify`. Upstream answers 500 with
    /// this text (§5.1 step 4).
    #[error("invalid TLS settings for the backend: {reason}")]
    InvalidTlsSettings {
        /// What is wrong.
        reason: String,
    },

    /// An APIService's `spec.service` cannot be used (a port outside 1..65535, which validation
    /// rejects before it is stored).
    #[error("invalid APIService spec: {reason}")]
    InvalidSpec {
        /// What is wrong.
        reason: String,
    },

    /// A destination URL (e.g. `--delegate-url`) is not usable.
    #[error("invalid backend URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// A file could not be read.
    #[error("reading {}: {source}", .path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The proxy client certificate or key (`--proxy-client-cert-file`,
    /// `--proxy-client-key-file`) is unusable.
    #[error("proxy client certificate: {message}")]
    ClientCertificate {
        /// What is wrong, naming the file.
        message: String,
    },

    /// The service map (`--service-map`) is unusable.
    #[error("service map {}: {message}", .path.display())]
    ServiceMap {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a line number where the parser gives one.
        message: String,
    },

    /// The backend could not be reached or did not answer: DNS, TCP, TLS or HTTP failures.
    #[error("{}", describe_transport(.address, .cause))]
    Transport {
        /// `host:port` dialled.
        address: String,
        /// What happened, in plain words.
        cause: TransportCause,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

    /// An upgrade request (exec, attach, port-forward) was answered with neither 101 nor an
    /// error status (upstream §5.6).
    #[error("invalid upgrade response: status code {status}")]
    InvalidUpgradeResponse {
        /// The backend's status.
        status: u16,
    },

    /// An upgrade request arrived on a connection that cannot be taken over (HTTP/2, or a
    /// server that does not enable upgrades).
    #[error("upgrade requests need an HTTP/1.1 client connection")]
    UpgradeUnsupported,

    /// A user field cannot be written into an identity header (a control character).
    #[error("identity headers: {0}")]
    Identity(#[source] front_proxy::WriteError),

    /// A backend answered a fetch made by the engine itself (discovery, OpenAPI) with an
    /// unexpected status.
    #[error("bad status from {url}: {status}")]
    BadStatus {
        /// The URL fetched.
        url: String,
        /// The status received.
        status: StatusCode,
    },

    /// A backend's document could not be decoded.
    #[error("decoding {what} from {url}: {source}")]
    Decode {
        /// The URL fetched.
        url: String,
        /// What was expected, e.g. `APIResourceList`.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Why a backend could not be reached, in words an operator can act on. `Display` gives the
/// Go-like error text followed by a hint; the text is stable for identical failures, so status
/// messages built from it only change when the cause does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportCause {
    /// Nothing listens on the address (TCP RST).
    ConnectionRefused,
    /// The TCP connection was not established in time.
    ConnectTimeout {
        /// The connect timeout.
        after: Duration,
    },
    /// No route to the host or network.
    Unreachable,
    /// The host name did not resolve.
    NameResolution {
        /// The resolver's message.
        message: String,
    },
    /// The backend closed or reset the connection before answering.
    ConnectionClosed,
    /// The backend's serving certificate does not chain to the trusted roots.
    TlsUnknownAuthority {
        /// Whether the roots were the APIService's `caBundle` (else the system roots).
        ca_bundle: bool,
    },
    /// The backend's serving certificate does not carry the expected DNS name.
    TlsNameMismatch {
        /// `<service>.<namespace>.svc`.
        expected: String,
        /// The names the certificate does carry (may be empty when unknown).
        presented: Vec<String>,
    },
    /// The backend's serving certificate has expired or is not valid yet.
    TlsExpired,
    /// The backend sent a TLS alert: it refused the handshake, typically because it does not
    /// accept the proxy's client certificate.
    TlsRejected {
        /// The alert, e.g. `BadCertificate`.
        alert: String,
    },
    /// The TLS handshake did not finish in time.
    TlsHandshakeTimeout {
        /// The handshake timeout.
        after: Duration,
    },
    /// Any other TLS failure.
    Tls {
        /// rustls' message.
        message: String,
    },
    /// The backend accepted the request but did not answer in time.
    Timeout {
        /// The deadline.
        after: Duration,
    },
    /// An HTTP-level failure (malformed response, protocol error).
    Protocol {
        /// hyper's message.
        message: String,
    },
}

impl TransportCause {
    /// True for failures that happen before any byte of the request reached the backend, so that
    /// the address may be skipped by endpoint balancing for a while.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            TransportCause::ConnectionRefused
                | TransportCause::ConnectTimeout { .. }
                | TransportCause::Unreachable
                | TransportCause::NameResolution { .. }
        )
    }
}

pub(crate) fn fmt_duration(d: &Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

impl TransportCause {
    /// The cause without the address: Go's wording (people search for it) plus a hint in plain
    /// words. This is also the `Display` text.
    fn summary(&self) -> String {
        match self {
            TransportCause::ConnectionRefused => "connect: connection refused".into(),
            TransportCause::ConnectTimeout { after } => format!(
                "i/o timeout (no TCP connection within {})",
                fmt_duration(after)
            ),
            TransportCause::Unreachable => "connect: no route to host".into(),
            TransportCause::NameResolution { message } => format!("lookup failed: {message}"),
            TransportCause::ConnectionClosed => {
                "connection closed by the backend before it answered (EOF)".into()
            }
            TransportCause::TlsUnknownAuthority { ca_bundle: true } => {
                "tls: failed to verify certificate: x509: certificate signed by unknown authority \
                 (the APIService's caBundle does not contain the CA that signed the backend's \
                 serving certificate)"
                    .into()
            }
            TransportCause::TlsUnknownAuthority { ca_bundle: false } => {
                "tls: failed to verify certificate: x509: certificate signed by unknown authority \
                 (the APIService has no caBundle and the system roots do not trust the backend's \
                 serving certificate)"
                    .into()
            }
            TransportCause::TlsNameMismatch {
                expected,
                presented,
            } => {
                let valid = if presented.is_empty() {
                    "not valid for any DNS name".to_owned()
                } else {
                    format!("valid for {}", presented.join(", "))
                };
                format!(
                    "tls: failed to verify certificate: x509: certificate is {valid}, not \
                     {expected} (the serving certificate must carry the DNS name \
                     <service>.<namespace>.svc)"
                )
            }
            TransportCause::TlsExpired => "tls: failed to verify certificate: x509: certificate \
                                           has expired or is not yet valid"
                .into(),
            TransportCause::TlsRejected { alert } => format!(
                "remote error: tls: {alert} (the backend refused the TLS handshake; it may not \
                 accept the front-proxy client certificate)"
            ),
            TransportCause::TlsHandshakeTimeout { after } => format!(
                "net/http: TLS handshake timeout (no handshake within {})",
                fmt_duration(after)
            ),
            TransportCause::Tls { message } => format!("tls: {message}"),
            TransportCause::Timeout { after } => format!(
                "timeout awaiting the response (no answer within {})",
                fmt_duration(after)
            ),
            TransportCause::Protocol { message } => message.clone(),
        }
    }
}

/// The text of a transport error: dial failures read like Go's (`dial tcp ADDR: connect:
/// connection refused`); the others name the address first.
fn describe_transport(address: &str, cause: &TransportCause) -> String {
    match cause {
        TransportCause::ConnectionRefused
        | TransportCause::ConnectTimeout { .. }
        | TransportCause::Unreachable => format!("dial tcp {address}: {cause}"),
        TransportCause::NameResolution { message } => {
            format!("dial tcp: lookup {address}: {message}")
        }
        _ => format!("{address}: {cause}"),
    }
}

impl fmt::Display for TransportCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

impl Error {
    /// The HTTP status the proxy answers with for this error (§5.8): 503 for resolution and
    /// transport failures, 500 for configuration problems, 400 for an upgrade on a connection
    /// that cannot be taken over.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::ServiceNotFound { .. }
            | Error::ServicePortNotFound { .. }
            | Error::EndpointsNotFound { .. }
            | Error::MissingEndpoints { .. }
            | Error::ServiceAccess { .. }
            | Error::Unresolvable { .. }
            | Error::Transport { .. }
            | Error::InvalidUpgradeResponse { .. }
            | Error::BadStatus { .. }
            | Error::Decode { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::UpgradeUnsupported => StatusCode::BAD_REQUEST,
            Error::InvalidTlsSettings { .. }
            | Error::InvalidSpec { .. }
            | Error::InvalidUrl { .. }
            | Error::ReadFile { .. }
            | Error::ClientCertificate { .. }
            | Error::ServiceMap { .. }
            | Error::Identity(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// True when the backend could not even be named (the Service, its port or endpoints are
    /// unknown): upstream logs these and answers a bare `service unavailable`.
    pub fn is_resolution(&self) -> bool {
        matches!(
            self,
            Error::ServiceNotFound { .. }
                | Error::ServicePortNotFound { .. }
                | Error::EndpointsNotFound { .. }
                | Error::MissingEndpoints { .. }
                | Error::ServiceAccess { .. }
                | Error::Unresolvable { .. }
        )
    }

    /// The transport cause, when this is a transport error.
    pub fn transport_cause(&self) -> Option<&TransportCause> {
        match self {
            Error::Transport { cause, .. } => Some(cause),
            _ => None,
        }
    }

    /// The availability reason this error stands for when it stops a probe before any request
    /// is sent (resolution errors), else `FailedDiscoveryCheck`.
    pub fn availability_reason(&self) -> AvailabilityReason {
        match self {
            Error::ServiceNotFound { .. } => AvailabilityReason::ServiceNotFound,
            Error::ServicePortNotFound { .. } => AvailabilityReason::ServicePortError,
            Error::EndpointsNotFound { .. } => AvailabilityReason::EndpointsNotFound,
            Error::MissingEndpoints { .. } => AvailabilityReason::MissingEndpoints,
            Error::ServiceAccess { .. } => AvailabilityReason::ServiceAccessError,
            Error::Unresolvable { reason, .. } => *reason,
            _ => AvailabilityReason::FailedDiscoveryCheck,
        }
    }

    /// The response the proxy sends for this error, in upstream's plain-text form (§5.8):
    /// resolution failures → 503 `service unavailable`; transport failures → 503
    /// `error trying to reach service: <cause>`; anything else → its status and text.
    pub fn to_response(&self) -> Response<Body> {
        match self {
            e if e.is_resolution() => service_unavailable(),
            Error::Transport { .. } => plain_text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("error trying to reach service: {self}"),
            ),
            other => plain_text(other.status(), &other.to_string()),
        }
    }
}

/// 503 `service unavailable`: what upstream answers, without contacting the backend, for an
/// APIService that is not Available or whose Service cannot be resolved.
pub fn service_unavailable() -> Response<Body> {
    plain_text(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
}

/// The 502 upstream answers instead of a backend redirect (`--aggregator-reject-forwarding-redirect`).
/// Unlike Go's `http.Error`, upstream writes this body without a trailing newline.
pub const REDIRECT_REJECTED: &str =
    "the backend attempted to redirect this request, which is not permitted";

/// The 502 answer to a backend redirect, with upstream's exact body (no trailing newline).
pub fn redirect_rejected() -> Response<Body> {
    let mut response = Response::new(full(REDIRECT_REJECTED));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A response like Go's `http.Error`: `text/plain; charset=utf-8`, `X-Content-Type-Options:
/// nosniff`, and the message followed by a newline.
pub fn plain_text(status: StatusCode, message: &str) -> Response<Body> {
    let mut body = String::with_capacity(message.len() + 1);
    body.push_str(message);
    body.push('\n');
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ServiceRef {
        ServiceRef::new("kube-system", "metrics-server", 443)
    }

    #[test]
    fn resolution_errors_use_upstream_messages_and_reasons() {
        let e = Error::ServiceNotFound { service: svc() };
        assert_eq!(
            e.to_string(),
            "service/metrics-server in \"kube-system\" is not present"
        );
        assert_eq!(e.availability_reason().as_str(), "ServiceNotFound");
        let e = Error::ServicePortNotFound { service: svc() };
        assert_eq!(
            e.to_string(),
            "service/metrics-server in \"kube-system\" is not listening on port 443"
        );
        assert_eq!(
            e.availability_reason(),
            AvailabilityReason::ServicePortError
        );
        assert_eq!(
            Error::MissingEndpoints { service: svc() }.availability_reason(),
            AvailabilityReason::MissingEndpoints
        );
    }

    #[test]
    fn transport_errors_answer_503_with_the_cause() {
        let e = Error::Transport {
            address: "127.0.0.1:1".into(),
            cause: TransportCause::ConnectionRefused,
            source: None,
        };
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            e.to_string(),
            "dial tcp 127.0.0.1:1: connect: connection refused"
        );
        let r = e.to_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }

    #[test]
    fn name_mismatch_lists_presented_names() {
        let cause = TransportCause::TlsNameMismatch {
            expected: "metrics-server.kube-system.svc".into(),
            presented: vec!["other.default.svc".into(), "127.0.0.1".into()],
        };
        let text = describe_transport("127.0.0.1:8443", &cause);
        assert!(
            text.starts_with("127.0.0.1:8443: tls: failed to verify certificate"),
            "{text}"
        );
        assert!(
            text.contains(
                "valid for other.default.svc, 127.0.0.1, not metrics-server.kube-system.svc"
            ),
            "{text}"
        );
    }

    #[test]
    fn durations_print_compactly() {
        assert_eq!(fmt_duration(&Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(&Duration::from_millis(250)), "250ms");
    }
}
