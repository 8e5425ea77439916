//! The crate's one error type: what can stop the server from starting or running. Request-level
//! problems never become an `Error`; they are answered with a Kubernetes `Status`.

use std::path::PathBuf;

/// Why the server could not be configured, started or kept running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is inconsistent (e.g. a certificate without its key).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file named by a flag could not be read.
    #[error("reading {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file named by a flag could not be parsed.
    #[error("{path}: {message}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// What is wrong, with a line number where it helps.
        message: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS: {0}")]
    Tls(String),
    /// The request-header (front-proxy) configuration is invalid.
    #[error("request-header authentication: {0}")]
    RequestHeader(#[source] front_proxy::ConfigError),
    /// Binding or accepting on the listen socket failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Generating the fallback self-signed serving certificate failed.
    #[error("generating a self-signed serving certificate: {0}")]
    SelfSigned(#[source] pki::Error),
    /// The proxy's inputs are unusable: the proxy client certificate or key, the service map,
    /// the delegate URL or its CA.
    #[error("{0}")]
    Proxy(#[source] proxy::Error),
    /// The store failed in a way the server cannot recover from at start-up.
    #[error("store: {0}")]
    Store(#[source] store::Error),
}

impl Error {
    pub(crate) fn read(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::ReadFile {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn parse(path: &std::path::Path, message: impl Into<String>) -> Self {
        Error::ParseFile {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}
