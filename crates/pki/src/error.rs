//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in `pki`. Each message is one line that names the input at fault
/// (a file, a JSON field, a flag value), so the CLI can print it as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A JSON document (CSR, config, cfssl output) is not valid JSON at all.
    #[error("{what}: invalid JSON: {source}")]
    Json {
        /// Which document, e.g. `csr.json`.
        what: String,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },

    /// A JSON field has the wrong type or an unacceptable value.
    #[error("{what}: field `{field}`: {message}")]
    Field {
        /// Which document, e.g. `ca-config.json`.
        what: String,
        /// The field's path, e.g. `signing.profiles.kubernetes.expiry`.
        field: String,
        /// What is wrong with it.
        message: String,
    },

    /// A key algorithm or size that cfssl (and therefore we) do not generate.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),

    /// A usage name that is not in cfssl's tables (see [`crate::Usage`]).
    #[error("unknown usage {name:?} (known: {known})")]
    UnknownUsage {
        /// The name as given.
        name: String,
        /// All accepted names, comma-separated.
        known: String,
    },

    /// A Go duration string (`876000h`, `1h30m`) that does not parse.
    #[error("invalid duration {input:?}: {message}")]
    Duration {
        /// The string as given.
        input: String,
        /// Why it was rejected.
        message: String,
    },

    /// `-profile NAME` names a profile the config does not define. cfssl silently falls back to
    /// the default profile here and then fails with a masked error (user-needs.md §3).
    #[error("profile {name:?} is not defined in {config} (defined: {defined})")]
    UnknownProfile {
        /// The requested profile.
        name: String,
        /// The config file (or `config`).
        config: String,
        /// The profiles that do exist, comma-separated, or `none`.
        defined: String,
    },

    /// A signing profile that cannot produce a certificate (no usages, no expiry, …).
    #[error("profile {name:?}: {message}")]
    Profile {
        /// The profile name (`default` for `signing.default`).
        name: String,
        /// What is wrong with it.
        message: String,
    },

    /// PEM text without the expected block, or a block whose base64 does not decode.
    #[error("{what}: {message}")]
    Pem {
        /// Which input, e.g. `ca-key.pem`.
        what: String,
        /// What is wrong with it.
        message: String,
    },

    /// A private key that cannot be parsed or used.
    #[error("{what}: invalid private key: {message}")]
    Key {
        /// Which input.
        what: String,
        /// What is wrong with it.
        message: String,
    },

    /// A certificate (or CSR) that cannot be parsed.
    #[error("{what}: invalid certificate: {message}")]
    Certificate {
        /// Which input.
        what: String,
        /// What is wrong with it.
        message: String,
    },

    /// The private key does not belong to the certificate it was paired with.
    #[error("{key} does not match the public key of {cert}")]
    KeyMismatch {
        /// The certificate.
        cert: String,
        /// The key.
        key: String,
    },

    /// A certificate that was asked to act as a CA but cannot (BasicConstraints CA:FALSE).
    #[error("{0} is not a CA certificate (BasicConstraints CA:FALSE)")]
    NotACa(String),

    /// A request that cannot be signed (empty subject, a CA request the profile forbids, …).
    #[error("{0}")]
    Request(String),

    /// A cryptographic operation failed in aws-lc / rcgen.
    #[error("{what}: {source}")]
    Crypto {
        /// What was being done, e.g. `generating an RSA-2048 key`.
        what: String,
        /// The library's error.
        #[source]
        source: rcgen::Error,
    },

    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn crypto(what: impl Into<String>, source: rcgen::Error) -> Self {
        Error::Crypto {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn field(
        what: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Field {
            what: what.into(),
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn key(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Key {
            what: what.into(),
            message: message.into(),
        }
    }

    pub(crate) fn cert(what: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Certificate {
            what: what.into(),
            message: message.into(),
        }
    }
}
