//! TLS to backends (upstream-behaviour.md §5.3): the proxy client certificate, reloaded when its
//! files change, and one cached `rustls::ClientConfig` pair per (caBundle, insecure flag, client
//! certificate generation), built once and shared, never per request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::sync::watch;

use crate::error::Error;

/// How often [`ClientIdentity::watch_files`] looks at the files by default.
pub const DEFAULT_CERT_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The crypto provider of the whole build (aws-lc-rs), created once. Configs are built with it
/// explicitly, so the engine works whether or not a process-wide default is installed.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}

/// What the proxy client certificate says about itself, for diagnostics (a backend's 401 is
/// explained with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The leaf's subject CN (what `--requestheader-allowed-names` must list).
    pub subject_cn: String,
    /// The leaf's issuer CN (the CA `--requestheader-client-ca-file` must hold).
    pub issuer_cn: String,
    /// The leaf's notAfter.
    pub not_after: SystemTime,
}

impl CertSummary {
    fn from_der(der: &CertificateDer<'_>) -> Option<CertSummary> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let cn = |name: &x509_parser::x509::X509Name<'_>| {
            name.iter_common_name()
                .next()
                .and_then(|c| c.as_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let secs = cert.validity().not_after.timestamp();
        let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
        Some(CertSummary {
            subject_cn: cn(cert.subject()),
            issuer_cn: cn(cert.issuer()),
            not_after,
        })
    }

    /// Whether the certificate has expired at `now`.
    pub fn expired_at(&self, now: SystemTime) -> bool {
        now > self.not_after
    }
}

/// One loaded proxy client certificate (or none), with its generation.
#[derive(Debug)]
pub struct LoadedIdentity {
    /// Increases by one with every successful reload; TLS configs and connection pools are keyed
    /// by it, so a rotated certificate is used by every new connection and old connections retire.
    pub generation: u64,
    key: Option<Arc<CertifiedKey>>,
    /// What the certificate says about itself; `None` without a certificate.
    pub summary: Option<CertSummary>,
}

#[derive(Default)]
struct FileState {
    stamps: Option<[(SystemTime, u64); 2]>,
    contents: (Vec<u8>, Vec<u8>),
}

struct IdentityInner {
    files: Option<(PathBuf, PathBuf)>,
    current: watch::Sender<Arc<LoadedIdentity>>,
    generation: AtomicU64,
    state: Mutex<FileState>,
}

/// The front-proxy client certificate the proxy presents to backends
/// (`--proxy-client-cert-file`, `--proxy-client-key-file`), reloaded when the files change.
/// Keys may be PKCS#1 (`RSA PRIVATE KEY`, cfssl's RSA form), SEC1 (`EC PRIVATE KEY`, cfssl's
/// ECDSA form) or PKCS#8; the key must match the certificate. Without files, no client
/// certificate is sent (aggregation then breaks at the backend, as upstream).
#[derive(Clone)]
pub struct ClientIdentity {
    inner: Arc<IdentityInner>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("files", &self.inner.files)
            .field("current", &self.inner.current.borrow().summary)
            .finish()
    }
}

fn load_key(cert_pem: &[u8], key_pem: &[u8], cert_name: &str) -> Result<LoadedIdentity, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::ClientCertificate {
            message: format!("{cert_name}: {e}"),
        })?;
    let Some(leaf) = chain.first() else {
        return Err(Error::ClientCertificate {
            message: format!("{cert_name}: no PEM certificate found"),
        });
    };
    let summary = CertSummary::from_der(leaf);
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| Error::ClientCertificate {
        message: format!(
            "private key: {e} (expected RSA PRIVATE KEY, EC PRIVATE KEY or PRIVATE KEY)"
        ),
    })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| Error::ClientCertificate {
            message: format!("{cert_name} and its key: {e}"),
        })?;
    Ok(LoadedIdentity {
        generation: 0,
        key: Some(Arc::new(certified)),
        summary,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })
}

fn stamp(path: &Path) -> Result<(SystemTime, u64), Error> {
    let meta = std::fs::metadata(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let modified = meta.modified().map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    Ok((modified, meta.len()))
}

impl ClientIdentity {
    fn with(files: Option<(PathBuf, PathBuf)>, loaded: LoadedIdentity, state: FileState) -> Self {
        let (current, _) = watch::channel(Arc::new(loaded));
        ClientIdentity {
            inner: Arc::new(IdentityInner {
                files,
                current,
                generation: AtomicU64::new(0),
                state: Mutex::new(state),
            }),
        }
    }

    /// No client certificate.
    pub fn none() -> Self {
        ClientIdentity::with(
            None,
            LoadedIdentity {
                generation: 0,
                key: None,
                summary: None,
            },
            FileState::default(),
        )
    }

    /// A fixed certificate chain and key from PEM (not reloaded).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let loaded = load_key(cert_pem, key_pem, "certificate")?;
        Ok(ClientIdentity::with(None, loaded, FileState::default()))
    }

    /// Loads `--proxy-client-cert-file` and `--proxy-client-key-file`; both must be readable and
    /// match. Follow later changes with [`ClientIdentity::watch_files`].
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, Error> {
        let (cert, key) = (cert.into(), key.into());
        let stamps = [stamp(&cert)?, stamp(&key)?];
        let contents = (read(&cert)?, read(&key)?);
        let loaded = load_key(&contents.0, &contents.1, &cert.display().to_string())?;
        Ok(ClientIdentity::with(
            Some((cert, key)),
            loaded,
            FileState {
                stamps: Some(stamps),
                contents,
            },
        ))
    }

    /// The current certificate.
    pub fn current(&self) -> Arc<LoadedIdentity> {
        Arc::clone(&self.inner.current.borrow())
    }

    /// The current generation (cheap: one atomic load).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// A receiver notified on every rotation.
    pub fn subscribe(&self) -> watch::Receiver<Arc<LoadedIdentity>> {
        self.inner.current.subscribe()
    }

    /// Looks at the files once; when either changed and both parse and match, publishes the new
    /// certificate with the next generation and returns `Ok(true)`. A failure keeps the current
    /// certificate (a half-written pair is retried at the next look).
    pub fn reload_if_changed(&self) -> Result<bool, Error> {
        let Some((cert, key)) = &self.inner.files else {
            return Ok(false);
        };
        let stamps = [stamp(cert)?, stamp(key)?];
        let mut state = match self.inner.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if state.stamps == Some(stamps) {
            return Ok(false);
        }
        let contents = (read(cert)?, read(key)?);
        state.stamps = Some(stamps);
        if contents == state.contents {
            return Ok(false);
        }
        // Remembered even when unusable, so a broken pair is reported once, not at every look;
        // a half-written pair changes again when its second file is written.
        state.contents = contents;
        let mut loaded = load_key(
            &state.contents.0,
            &state.contents.1,
            &cert.display().to_string(),
        )?;
        let generation = self.inner.generation.load(Ordering::Acquire) + 1;
        loaded.generation = generation;
        self.inner.current.send_replace(Arc::new(loaded));
        self.inner.generation.store(generation, Ordering::Release);
        Ok(true)
    }

    /// Polls the files every `interval` forever, logging rotations and failures. Spawn it.
    pub async fn watch_files(self, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let this = self.clone();
            match tokio::task::spawn_blocking(move || this.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!(
                    generation = self.generation(),
                    "reloaded the proxy client certificate"
                ),
                Ok(Ok(false)) | Err(_) => {}
                Ok(Err(error)) => {
                    tracing::warn!(%error, "keeping the current proxy client certificate")
                }
            }
        }
    }
}

/// Presents one fixed certificate (the generation's), whatever the server hints.
#[derive(Debug)]
struct FixedClientCert(Option<Arc<CertifiedKey>>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.is_some()
    }
}

/// Accepts any server certificate: used only when an APIService sets
/// `insecureSkipTLSVerify: true`. Handshake signatures are still checked (as Go's
/// `InsecureSkipVerify` does), so the peer must hold the key of the certificate it sent.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which roots verify a backend; also tells a TLS failure's hint which setting to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Roots {
    /// The APIService's `caBundle`.
    CaBundle,
    /// The system roots (empty `caBundle`).
    System,
    /// `insecureSkipTLSVerify: true`.
    Insecure,
}

/// The two client configs of one TLS setting: ALPN `h2, http/1.1` for ordinary requests, and
/// `http/1.1` only for upgrades and probes (§5.3).
#[derive(Debug)]
pub(crate) struct BackendTls {
    pub(crate) normal: Arc<ClientConfig>,
    pub(crate) http1: Arc<ClientConfig>,
    pub(crate) roots: Roots,
}

type TlsKey = (Vec<u8>, bool, u64);

/// Builds and caches [`BackendTls`] values. Only used when a backend is (re)built, never per
/// request.
pub(crate) struct TlsFactory {
    identity: ClientIdentity,
    cache: Mutex<HashMap<TlsKey, Weak<BackendTls>>>,
    system_roots: OnceLock<Arc<RootCertStore>>,
}

impl TlsFactory {
    pub(crate) fn new(identity: ClientIdentity) -> Self {
        TlsFactory {
            identity,
            cache: Mutex::new(HashMap::new()),
            system_roots: OnceLock::new(),
        }
    }

    pub(crate) fn identity(&self) -> &ClientIdentity {
        &self.identity
    }

    fn system_roots(&self) -> Arc<RootCertStore> {
        Arc::clone(self.system_roots.get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            for error in &loaded.errors {
                tracing::warn!(%error, "loading system root certificates");
            }
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
            tracing::debug!(added, ignored, "system root certificates");
            Arc::new(roots)
        }))
    }

    /// The configs for a caBundle and insecure flag at the current certificate generation.
    pub(crate) fn get(&self, ca_bundle: &[u8], insecure: bool) -> Result<Arc<BackendTls>, Error> {
        let identity = self.identity.current();
        let key = (ca_bundle.to_vec(), insecure, identity.generation);
        let mut cache = match self.cache.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(existing) = cache.get(&key).and_then(Weak::upgrade) {
            return Ok(existing);
        }
        let built = Arc::new(self.build(ca_bundle, insecure, identity.key.clone())?);
        cache.retain(|_, weak| weak.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&built));
        Ok(built)
    }

    fn build(
        &self,
        ca_bundle: &[u8],
        insecure: bool,
        client_cert: Option<Arc<CertifiedKey>>,
    ) -> Result<BackendTls, Error> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| Error::InvalidTlsSettings {
                reason: e.to_string(),
            })?;
        let (builder, roots) = if insecure {
            if !ca_bundle.is_empty() {
                // client-go refuses this combination too; validation keeps it out of the store.
                return Err(Error::InvalidTlsSettings {
                    reason: "specifying a root certificates file with the insecure flag is not \
                             allowed"
                        .into(),
                });
            }
            let verifier = Arc::new(AcceptAnyServerCert(Arc::clone(&provider)));
            (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier),
                Roots::Insecure,
            )
        } else {
            let (store, roots) = if ca_bundle.is_empty() {
                (self.system_roots(), Roots::System)
            } else {
                (Arc::new(parse_ca_bundle(ca_bundle)?), Roots::CaBundle)
            };
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::clone(&store), provider)
                    .build()
                    .map_err(|e| Error::InvalidTlsSettings {
                        reason: format!("caBundle: {e}"),
                    })?;
            (builder.with_webpki_verifier(verifier), roots)
        };
        let mut normal = builder.with_client_cert_resolver(Arc::new(FixedClientCert(client_cert)));
        normal.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut http1 = normal.clone();
        http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(BackendTls {
            normal: Arc::new(normal),
            http1: Arc::new(http1),
            roots,
        })
    }
}

/// Parses a PEM `caBundle` into roots; any unreadable block or certificate is an error naming it.
pub(crate) fn parse_ca_bundle(ca_bundle: &[u8]) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    for (index, cert) in CertificateDer::pem_slice_iter(ca_bundle).enumerate() {
        let cert = cert.map_err(|e| Error::InvalidTlsSettings {
            reason: format!("caBundle: {e}"),
        })?;
        store.add(cert).map_err(|e| Error::InvalidTlsSettings {
            reason: format!("caBundle certificate {index}: {e}"),
        })?;
    }
    if store.is_empty() {
        return Err(Error::InvalidTlsSettings {
            reason: "caBundle: unable to load root certificates: no PEM certificate found".into(),
        });
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use front_proxy::test_util::TestCa;

    #[test]
    fn ca_bundle_errors_are_typed() {
        assert!(matches!(
            parse_ca_bundle(b"not pem"),
            Err(Error::InvalidTlsSettings { .. })
        ));
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = parse_ca_bundle(garbage).unwrap_err();
        assert!(err.to_string().contains("caBundle"), "{err}");
        let ca = TestCa::new("ca").unwrap();
        assert_eq!(parse_ca_bundle(ca.ca_pem().as_bytes()).unwrap().len(), 1);
    }

    #[test]
    fn configs_are_cached_per_setting_and_generation() {
        let ca = TestCa::new("ca").unwrap();
        let factory = TlsFactory::new(ClientIdentity::none());
        let a = factory.get(ca.ca_pem().as_bytes(), false).unwrap();
        let b = factory.get(ca.ca_pem().as_bytes(), false).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.roots, Roots::CaBundle);
        assert_eq!(
            a.normal.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(a.http1.alpn_protocols, [b"http/1.1".to_vec()]);
        let insecure = factory.get(b"", true).unwrap();
        assert_eq!(insecure.roots, Roots::Insecure);
        assert!(!Arc::ptr_eq(&a, &insecure));
        assert!(matches!(
            factory.get(ca.ca_pem().as_bytes(), true),
            Err(Error::InvalidTlsSettings { .. })
        ));
    }

    #[test]
    fn client_identity_checks_the_key_matches() {
        let ca = TestCa::new("front-proxy-ca").unwrap();
        let a = ca.client_cert("front-proxy-client").unwrap();
        let b = ca.client_cert("other").unwrap();
        let id = ClientIdentity::from_pem(a.chain_pem().as_bytes(), a.key_pem.as_bytes()).unwrap();
        let summary = id.current().summary.clone().unwrap();
        assert_eq!(summary.subject_cn, "front-proxy-client");
        assert_eq!(summary.issuer_cn, "front-proxy-ca");
        let err =
            ClientIdentity::from_pem(a.chain_pem().as_bytes(), b.key_pem.as_bytes()).unwrap_err();
        assert!(matches!(err, Error::ClientCertificate { .. }), "{err}");
        let err = ClientIdentity::from_pem(b"", a.key_pem.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let err = ClientIdentity::from_pem(a.chain_pem().as_bytes(), b"nope").unwrap_err();
        assert!(err.to_string().contains("private key"), "{err}");
    }
}
