//! Serving TLS: the certificate (re-read when `--tls-cert-file`/`--tls-private-key-file` change,
//! published over `tokio::sync::watch` so handshakes never lock), the client-certificate
//! verifier (client CA plus request-header CA, certificates optional so token clients pass), and
//! ALPN for HTTP/2 and HTTP/1.1 on one port.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::watch;

use crate::error::Error;

/// The one crypto provider of the build (docs/decisions.md §1).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads a PEM certificate chain and private key into a rustls `CertifiedKey`.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, Error> {
    let cert_pem = std::fs::read(cert).map_err(|e| Error::read(cert, e))?;
    let key_pem = std::fs::read(key).map_err(|e| Error::read(key, e))?;
    certified_key_from_pem(&cert_pem, &key_pem).map_err(|m| {
        Error::parse(
            if m.starts_with("key") { key } else { cert },
            m.trim_start_matches("key: ").trim_start_matches("cert: "),
        )
    })
}

/// Builds a `CertifiedKey` from PEM bytes; the error says whether the `cert` or the `key` is bad.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cert: not a PEM certificate chain: {e}"))?;
    if certs.is_empty() {
        return Err("cert: no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("key: not a PEM private key: {e}"))?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("key: unsupported private key: {e}"))?;
    let ck = CertifiedKey::new(certs, signing);
    ck.keys_match()
        .map_err(|e| format!("key: does not match the certificate: {e}"))?;
    Ok(Arc::new(ck))
}

/// Reads a PEM CA bundle (one or more certificates).
pub fn load_ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem = std::fs::read(path).map_err(|e| Error::read(path, e))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::parse(path, format!("not a PEM certificate bundle: {e}")))?;
    if certs.is_empty() {
        return Err(Error::parse(path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// A self-signed serving certificate for `localhost`, `127.0.0.1` and `::1`, used when no
/// `--tls-cert-file` is given (upstream generates one too).
pub fn self_signed() -> Result<Arc<CertifiedKey>, Error> {
    let ca = pki::CertificateAuthority::new_root_with(
        &pki::CertRequest::ca("kube-aggregator-self-signed-ca").key(pki::KeyAlgorithm::EcdsaP256),
    )
    .map_err(Error::SelfSigned)?;
    let leaf = ca
        .issue(
            &pki::CertRequest::server("localhost", &["localhost", "127.0.0.1", "::1"])
                .key(pki::KeyAlgorithm::EcdsaP256),
        )
        .map_err(Error::SelfSigned)?;
    let chain = format!("{}{}", leaf.cert_pem, ca.cert_pem());
    certified_key_from_pem(chain.as_bytes(), leaf.key_pem.as_bytes()).map_err(Error::Tls)
}

/// Resolves the serving certificate from the latest published value.
#[derive(Debug)]
pub struct CertResolver {
    current: watch::Receiver<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.borrow().clone())
    }
}

/// Watches `--tls-cert-file`/`--tls-private-key-file` and publishes a new key pair when either
/// changes and the pair is valid; a broken intermediate state (one file written, the other not
/// yet) keeps the old pair.
#[derive(Debug)]
pub struct CertReloader {
    cert: PathBuf,
    key: PathBuf,
    tx: watch::Sender<Arc<CertifiedKey>>,
    last: Option<(SystemTime, SystemTime, u64, u64)>,
}

impl CertReloader {
    fn stamp(&self) -> Option<(SystemTime, SystemTime, u64, u64)> {
        let c = std::fs::metadata(&self.cert).ok()?;
        let k = std::fs::metadata(&self.key).ok()?;
        Some((c.modified().ok()?, k.modified().ok()?, c.len(), k.len()))
    }

    /// Checks the files once; returns true if a new pair was published.
    pub fn check(&mut self) -> bool {
        let stamp = self.stamp();
        if stamp.is_none() || stamp == self.last {
            return false;
        }
        // Remember the stamp even on failure: a half-written pair is retried when the other file
        // changes, without a warning on every poll.
        self.last = stamp;
        match load_certified_key(&self.cert, &self.key) {
            Ok(ck) => {
                let changed = self.tx.borrow().cert != ck.cert;
                if changed {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                    self.tx.send_replace(ck);
                }
                changed
            }
            Err(e) => {
                tracing::warn!(error = %e, "serving certificate not reloaded; keeping the previous one");
                false
            }
        }
    }

    /// Polls every `every` until the resolver side is dropped.
    pub async fn run(mut self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.tx.is_closed() {
                return;
            }
            self.check();
        }
    }
}

/// The serving side: a resolver for the TLS config and, when the certificate comes from files,
/// a reloader to run.
pub fn serving_cert(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<(Arc<CertResolver>, Option<CertReloader>), Error> {
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let ck = load_certified_key(cert, key)?;
            let (tx, rx) = watch::channel(ck);
            let mut reloader = CertReloader {
                cert: cert.to_owned(),
                key: key.to_owned(),
                tx,
                last: None,
            };
            reloader.last = reloader.stamp();
            Ok((Arc::new(CertResolver { current: rx }), Some(reloader)))
        }
        _ => {
            let (tx, rx) = watch::channel(self_signed()?);
            // Nothing to reload; keep the sender alive with the resolver's lifetime.
            std::mem::forget(tx);
            Ok((Arc::new(CertResolver { current: rx }), None))
        }
    }
}

/// The rustls server config: client certificates verified against `client_roots` (the client CA
/// and the request-header CA) when presented, optional so that bearer-token clients still
/// connect; ALPN `h2`, `http/1.1`.
pub fn server_config(
    resolver: Arc<CertResolver>,
    client_roots: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = if client_roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for c in client_roots {
            roots
                .add(c.clone())
                .map_err(|e| Error::Tls(format!("client CA: {e}")))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .map_err(|e| Error::Tls(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let ca = pki::CertificateAuthority::new_root_with(
            &pki::CertRequest::ca("ca").key(pki::KeyAlgorithm::EcdsaP256),
        );
        let ca = match ca {
            Ok(ca) => ca,
            Err(e) => panic!("{e}"),
        };
        match ca
            .issue(&pki::CertRequest::server(cn, &["localhost"]).key(pki::KeyAlgorithm::EcdsaP256))
        {
            Ok(i) => (i.cert_pem, i.key_pem),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn mismatched_key_is_refused() {
        let (c1, _k1) = pair("a");
        let (_c2, k2) = pair("b");
        let err = certified_key_from_pem(c1.as_bytes(), k2.as_bytes())
            .err()
            .unwrap_or_default();
        assert!(err.starts_with("key: does not match"), "{err}");
        assert!(certified_key_from_pem(b"junk", k2.as_bytes()).is_err());
    }

    #[test]
    fn reloader_publishes_new_pairs_and_keeps_old_on_garbage() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (c1, k1) = pair("one");
        std::fs::write(&cert, &c1)?;
        std::fs::write(&key, &k1)?;
        let (resolver, reloader) = serving_cert(Some(&cert), Some(&key))?;
        let mut reloader = reloader.ok_or_else(|| anyhow::anyhow!("no reloader"))?;
        let first = resolver.current.borrow().cert.clone();
        assert!(!reloader.check(), "unchanged files are not reloaded");

        // A half-written pair (new cert, old key) is ignored.
        let (c2, k2) = pair("two");
        std::fs::write(&cert, format!("{c2}\n"))?;
        assert!(!reloader.check());
        assert_eq!(resolver.current.borrow().cert, first);

        std::fs::write(&key, format!("{k2}\n"))?;
        assert!(reloader.check());
        assert_ne!(resolver.current.borrow().cert, first);
        Ok(())
    }
}
