//! Dialling a backend: TCP to the resolved address, TLS with the backend's config and the
//! `<service>.<namespace>.svc` server name, and the classification of every failure into a
//! [`TransportCause`]. The [`Connector`] is what hyper-util's pooled client calls for new
//! connections; upgrades and availability probes dial with it directly.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::{Error, TransportCause};
use crate::tls::Roots;

/// Connect and handshake deadlines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) handshake: Duration,
}

/// A connection to a backend, TLS or (for an `http://` delegate) plain.
#[derive(Debug)]
pub(crate) enum BackendStream {
    Tls {
        // Boxed: a TLS stream is over a kilobyte, the plain one a few words.
        io: Box<TokioIo<TlsStream<TcpStream>>>,
        h2: bool,
    },
    Plain(TokioIo<TcpStream>),
}

impl BackendStream {
    /// Whether ALPN selected HTTP/2.
    pub(crate) fn is_h2(&self) -> bool {
        matches!(self, BackendStream::Tls { h2: true, .. })
    }
}

impl Read for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tls { io, .. } => Pin::new(&mut **io).poll_read(cx, buf),
            BackendStream::Plain(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl Write for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tls { io, .. } => Pin::new(&mut **io).poll_write(cx, buf),
            BackendStream::Plain(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tls { io, .. } => Pin::new(&mut **io).poll_flush(cx),
            BackendStream::Plain(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Tls { io, .. } => Pin::new(&mut **io).poll_shutdown(cx),
            BackendStream::Plain(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Tls { io, .. } => io.is_write_vectored(),
            BackendStream::Plain(io) => io.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Tls { io, .. } => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
            BackendStream::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
}

impl Connection for BackendStream {
    fn connected(&self) -> Connected {
        // Telling the pool that ALPN chose h2 makes it share this one connection for all
        // concurrent requests instead of opening one per request.
        if self.is_h2() {
            Connected::new().negotiated_h2()
        } else {
            Connected::new()
        }
    }
}

/// Dials backends for one TLS setting and server name. Cloned into hyper-util's client; every
/// field is cheap to clone.
#[derive(Clone)]
pub(crate) struct Connector {
    /// `None` for a plain `http://` destination.
    pub(crate) tls: Option<Arc<ClientConfig>>,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) roots: Roots,
    pub(crate) timeouts: Timeouts,
}

impl Connector {
    /// The server name as text, for messages.
    pub(crate) fn expected_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    /// Opens one connection to `host:port`.
    pub(crate) async fn dial(&self, host: &str, port: u16) -> Result<BackendStream, Error> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let address = || {
            if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            }
        };
        let fail = |cause: TransportCause, source: Option<io::Error>| Error::Transport {
            address: address(),
            cause,
            source: source.map(|e| Box::new(e) as crate::BoxError),
        };
        let candidates: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => match tokio::net::lookup_host((host, port)).await {
                Ok(found) => found.collect(),
                Err(e) => {
                    return Err(fail(
                        TransportCause::NameResolution {
                            message: e.to_string(),
                        },
                        Some(e),
                    ));
                }
            },
        };
        let mut last = fail(
            TransportCause::NameResolution {
                message: "no such host".into(),
            },
            None,
        );
        let mut tcp = None;
        for candidate in candidates {
            match tokio::time::timeout(self.timeouts.connect, TcpStream::connect(candidate)).await {
                Ok(Ok(stream)) => {
                    tcp = Some(stream);
                    break;
                }
                Ok(Err(e)) => last = fail(classify_io(&e, &self.tls_context()), Some(e)),
                Err(_) => {
                    last = fail(
                        TransportCause::ConnectTimeout {
                            after: self.timeouts.connect,
                        },
                        None,
                    )
                }
            }
        }
        let Some(tcp) = tcp else {
            return Err(last);
        };
        // Small API requests and watch events must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let Some(config) = &self.tls else {
            return Ok(BackendStream::Plain(TokioIo::new(tcp)));
        };
        let connector = TlsConnector::from(Arc::clone(config));
        match tokio::time::timeout(
            self.timeouts.handshake,
            connector.connect(self.server_name.clone(), tcp),
        )
        .await
        {
            Ok(Ok(stream)) => {
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                Ok(BackendStream::Tls {
                    io: Box::new(TokioIo::new(stream)),
                    h2,
                })
            }
            Ok(Err(e)) => Err(fail(classify_io(&e, &self.tls_context()), Some(e))),
            Err(_) => Err(fail(
                TransportCause::TlsHandshakeTimeout {
                    after: self.timeouts.handshake,
                },
                None,
            )),
        }
    }

    pub(crate) fn tls_context(&self) -> TlsContext {
        TlsContext {
            expected: self.expected_name(),
            roots: self.roots,
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = BackendStream;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<BackendStream, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
            this.dial(host, port).await
        })
    }
}

/// What a TLS failure's hint needs to know.
#[derive(Debug, Clone)]
pub(crate) struct TlsContext {
    pub(crate) expected: String,
    pub(crate) roots: Roots,
}

/// Classifies an I/O error, looking inside for a rustls error first.
pub(crate) fn classify_io(err: &io::Error, ctx: &TlsContext) -> TransportCause {
    if let Some(inner) = err.get_ref() {
        if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
            return classify_tls(tls, ctx);
        }
        if let Some(Error::Transport { cause, .. }) = inner.downcast_ref::<Error>() {
            return cause.clone();
        }
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => TransportCause::ConnectionRefused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
            TransportCause::Unreachable
        }
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::BrokenPipe
        | io::ErrorKind::NotConnected => TransportCause::ConnectionClosed,
        _ => TransportCause::Protocol {
            message: err.to_string(),
        },
    }
}

/// Go's wording of the TLS alerts a backend typically sends.
fn alert_words(alert: &rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::BadCertificate => "bad certificate".into(),
        A::UnknownCA => "unknown certificate authority".into(),
        A::CertificateRequired => "certificate required".into(),
        A::CertificateExpired => "expired certificate".into(),
        A::CertificateUnknown => "unknown certificate".into(),
        A::HandshakeFailure => "handshake failure".into(),
        A::AccessDenied => "access denied".into(),
        A::UnsupportedCertificate => "unsupported certificate".into(),
        other => format!("{other:?}"),
    }
}

/// rustls lists presented names in their Debug form (`DnsName("a.b")`, `IpAddress(1.2.3.4)`);
/// operators want the names.
fn plain_name(name: &str) -> String {
    let inner = name
        .strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        });
    inner.unwrap_or(name).to_owned()
}

/// Classifies a rustls error into the causes operators act on.
pub(crate) fn classify_tls(err: &rustls::Error, ctx: &TlsContext) -> TransportCause {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            TransportCause::TlsUnknownAuthority {
                ca_bundle: ctx.roots == Roots::CaBundle,
            }
        }
        rustls::Error::InvalidCertificate(C::NotValidForName) => TransportCause::TlsNameMismatch {
            expected: ctx.expected.clone(),
            presented: Vec::new(),
        },
        rustls::Error::InvalidCertificate(C::NotValidForNameContext { presented, .. }) => {
            TransportCause::TlsNameMismatch {
                expected: ctx.expected.clone(),
                presented: presented.iter().map(|n| plain_name(n)).collect(),
            }
        }
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => TransportCause::TlsExpired,
        rustls::Error::AlertReceived(alert) => TransportCause::TlsRejected {
            alert: alert_words(alert),
        },
        other => TransportCause::Tls {
            message: other.to_string(),
        },
    }
}

/// Classifies an error from hyper or hyper-util's client by walking its source chain: our own
/// connector errors keep their cause; I/O and TLS errors are classified; hyper's own conditions
/// (closed early, timeouts) map to their causes; anything else is a protocol error with the
/// whole chain as text.
pub(crate) fn classify_chain(err: &(dyn StdError + 'static), ctx: &TlsContext) -> TransportCause {
    let mut closed_early = false;
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(Error::Transport { cause, .. }) = e.downcast_ref::<Error>() {
            return cause.clone();
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return classify_io(io, ctx);
        }
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return classify_tls(tls, ctx);
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_closed() || h.is_canceled())
        {
            closed_early = true;
        }
        current = e.source();
    }
    if closed_early {
        return TransportCause::ConnectionClosed;
    }
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    TransportCause::Protocol { message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(roots: Roots) -> TlsContext {
        TlsContext {
            expected: "m.kube-system.svc".into(),
            roots,
        }
    }

    #[test]
    fn io_errors_are_classified() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            classify_io(&refused, &ctx(Roots::System)),
            TransportCause::ConnectionRefused
        );
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            classify_io(&reset, &ctx(Roots::System)),
            TransportCause::ConnectionClosed
        );
    }

    #[test]
    fn tls_errors_inside_io_errors_are_classified() {
        let unknown = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            classify_io(&unknown, &ctx(Roots::CaBundle)),
            TransportCause::TlsUnknownAuthority { ca_bundle: true }
        );
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        assert_eq!(
            classify_io(&alert, &ctx(Roots::CaBundle)),
            TransportCause::TlsRejected {
                alert: "certificate required".into()
            }
        );
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert!(matches!(
            classify_tls(&name, &ctx(Roots::CaBundle)),
            TransportCause::TlsNameMismatch { expected, .. } if expected == "m.kube-system.svc"
        ));
    }

    #[test]
    fn presented_names_are_plain() {
        assert_eq!(plain_name("DnsName(\"a.b.svc\")"), "a.b.svc");
        assert_eq!(plain_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(plain_name("other"), "other");
    }

    #[test]
    fn chains_find_the_innermost_known_cause() {
        let inner = Error::Transport {
            address: "1.2.3.4:5".into(),
            cause: TransportCause::ConnectionRefused,
            source: None,
        };
        let wrapped = io::Error::other(inner);
        // An io::Error wrapping our error: its kind is Other, so the walk must look inside
        // rather than stop at a generic classification.
        assert_eq!(
            classify_chain(&wrapped, &ctx(Roots::System)),
            TransportCause::ConnectionRefused
        );
        let odd = io::Error::other("weird");
        assert!(matches!(
            classify_chain(&odd, &ctx(Roots::System)),
            TransportCause::Protocol { message } if message == "weird"
        ));
    }
}
