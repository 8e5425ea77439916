//! The crate's one error type.

use std::path::PathBuf;

/// Why the metrics server could not start, or why one of its inputs was rejected. Each message
/// names the flag or file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file named by a flag could not be read.
    #[error("reading {flag} {}: {source}", path.display())]
    ReadFile {
        /// The flag, e.g. `--tls-cert-file`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A required flag is missing or a flag value is invalid.
    #[error("{flag}: {reason}")]
    InvalidFlag {
        /// The flag, e.g. `--tls-cert-file`.
        flag: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The serving certificate or key could not be used.
    #[error("serving certificate ({}): {reason}", path.display())]
    ServingCertificate {
        /// The certificate or key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The request-header (front-proxy) configuration was rejected.
    #[error("request-header authentication: {0}")]
    RequestHeader(#[from] front_proxy::ConfigError),

    /// The `--client-ca-file` bundle holds no usable certificate.
    #[error("--client-ca-file {}: {reason}", path.display())]
    ClientCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// The `--authorization-kubeconfig` could not be loaded or turned into a client.
    #[error("--authorization-kubeconfig {}: {reason}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// A SubjectAccessReview could not be sent or its answer not read.
    #[error("SubjectAccessReview failed: {0}")]
    SubjectAccessReview(String),

    /// A `/proc` file could not be parsed.
    #[error("parsing {file}: {reason}")]
    Proc {
        /// The file, e.g. `/proc/stat`.
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// A Kubernetes quantity or duration could not be parsed.
    #[error("invalid quantity {value:?}: {reason}")]
    Quantity {
        /// The text as given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// A Go duration (`10s`, `1m30s`) could not be parsed.
    #[error("invalid duration {value:?}: {reason}")]
    Duration {
        /// The text as given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },

    /// The `--pod-metrics-file` document is invalid.
    #[error("--pod-metrics-file {}: {reason}", path.display())]
    PodMetrics {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the JSON path of the bad field when there is one).
        reason: String,
    },

    /// The listener could not be bound or accepting connections failed.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// True when the error is about the configuration (a flag, a file it names): the binary
    /// exits 64 for these and 1 for the rest.
    ///
    /// ```
    /// use metrics_apiserver::Error;
    ///
    /// let e = Error::InvalidFlag { flag: "--secure-port", reason: "must not be 0".into() };
    /// assert!(e.is_config());
    /// ```
    pub fn is_config(&self) -> bool {
        !matches!(
            self,
            Error::Listen { .. } | Error::SubjectAccessReview(_) | Error::Proc { .. }
        )
    }
}
