//! Hot reload of the request-header configuration without a restart (feature `reload`).
//!
//! One writer, cheap readers (house style): an [`AuthenticatorUpdater`] (or the [`CaFileReloader`]
//! that owns one) publishes an `Arc<Authenticator>` snapshot over a `tokio::sync::watch` channel;
//! every [`ReloadingAuthenticator`] clone reads the latest snapshot without I/O. A configuration
//! that fails to load never replaces the last good one.
//!
//! Upstream reloads both sources: the CA file when it changes on disk
//! (`dynamiccertificates.DynamicFileCAContent`) and the ConfigMap's CA and header names
//! (upstream-behaviour.md §6.3).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::read_ca_file;
use crate::{Authenticator, AuthenticatorSource, ConfigError, HeaderNames, RequestHeaderConfig};

/// How often [`CaFileReloader::run`] looks at the file by default: 10 seconds.
///
/// ```
/// assert_eq!(front_proxy::reload::DEFAULT_RELOAD_INTERVAL.as_secs(), 10);
/// ```
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The reading side: always answers with the latest good [`Authenticator`].
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use front_proxy::reload::ReloadingAuthenticator;
/// use front_proxy::test_util::TestCa;
///
/// let old = TestCa::new("old-ca")?;
/// let new = TestCa::new("new-ca")?;
/// let (auth, updater) = ReloadingAuthenticator::new(front_proxy::Authenticator::new(old.request_header_config(&[]))?);
/// assert!(updater.apply(new.request_header_config(&[]))?);
/// assert_eq!(auth.current().config().client_ca_pem, new.ca_pem().as_bytes());
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ReloadingAuthenticator {
    rx: watch::Receiver<Arc<Authenticator>>,
}

impl fmt::Debug for ReloadingAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ReloadingAuthenticator")
            .field(&*self.rx.borrow())
            .finish()
    }
}

impl ReloadingAuthenticator {
    /// Starts from `initial`; the returned updater is the only way to change it.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::reload::ReloadingAuthenticator;
    /// use front_proxy::{test_util::TestCa, Authenticator};
    ///
    /// let ca = TestCa::new("ca")?;
    /// let (auth, updater) = ReloadingAuthenticator::new(Authenticator::new(ca.request_header_config(&[]))?);
    /// assert!(!updater.apply(ca.request_header_config(&[]))?); // identical: nothing published
    /// # let _ = auth;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(initial: Authenticator) -> (Self, AuthenticatorUpdater) {
        let (tx, rx) = watch::channel(Arc::new(initial));
        (ReloadingAuthenticator { rx }, AuthenticatorUpdater { tx })
    }

    /// From `kube-system/extension-apiserver-authentication` data; feed later versions of the
    /// ConfigMap (from your watch on it) to [`AuthenticatorUpdater::apply_configmap`].
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use front_proxy::{reload::ReloadingAuthenticator, ConfigError};
    ///
    /// let empty = BTreeMap::new();
    /// assert!(matches!(ReloadingAuthenticator::from_configmap(&empty), Err(ConfigError::MissingKey { .. })));
    /// ```
    pub fn from_configmap(
        data: &BTreeMap<String, String>,
    ) -> Result<(Self, AuthenticatorUpdater), ConfigError> {
        let initial = Authenticator::new(RequestHeaderConfig::from_configmap(data)?)?;
        Ok(Self::new(initial))
    }

    /// Reads `ca_file` now (it must load) and returns a reloader that re-reads it; run
    /// [`CaFileReloader::run`] on a task. `allowed_names` and `headers` stay fixed, as they are
    /// flags.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::reload::{ReloadOutcome, ReloadingAuthenticator};
    /// use front_proxy::{test_util::TestCa, HeaderNames};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("front-proxy-ca.crt");
    /// std::fs::write(&path, TestCa::new("ca-1")?.ca_pem())?;
    /// let (auth, mut reloader) = ReloadingAuthenticator::watch_ca_file(&path, vec![], HeaderNames::default())?;
    ///
    /// let rotated = TestCa::new("ca-2")?;
    /// std::fs::write(&path, rotated.ca_pem())?;
    /// assert!(matches!(reloader.check().await, ReloadOutcome::Reloaded));
    /// assert_eq!(auth.current().config().client_ca_pem, rotated.ca_pem().as_bytes());
    /// // In a server: tokio::spawn(reloader.run(|outcome| eprintln!("{outcome}")));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn watch_ca_file(
        ca_file: impl Into<PathBuf>,
        allowed_names: Vec<String>,
        headers: HeaderNames,
    ) -> Result<(Self, CaFileReloader), ConfigError> {
        let path = ca_file.into();
        let pem = read_ca_file(&path)?;
        let config = RequestHeaderConfig {
            client_ca_pem: pem.clone(),
            allowed_names,
            headers,
        };
        let (auth, updater) = Self::new(Authenticator::new(config.clone())?);
        let reloader = CaFileReloader {
            path,
            template: config,
            updater,
            interval: DEFAULT_RELOAD_INTERVAL,
            last_seen: Some(Seen::Contents(pem)),
        };
        Ok((auth, reloader))
    }

    /// The latest good authenticator. Never blocks on I/O.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::reload::ReloadingAuthenticator;
    /// use front_proxy::{test_util::TestCa, Authenticator};
    ///
    /// let (auth, _updater) = ReloadingAuthenticator::new(Authenticator::new(TestCa::new("ca")?.request_header_config(&["p"]))?);
    /// assert_eq!(auth.current().config().allowed_names, ["p"]);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn current(&self) -> Arc<Authenticator> {
        Arc::clone(&self.rx.borrow())
    }

    /// Waits until a new authenticator is published; `false` once the updater is gone and no
    /// change can come any more.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::reload::ReloadingAuthenticator;
    /// use front_proxy::{test_util::TestCa, Authenticator};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let (mut auth, updater) = ReloadingAuthenticator::new(Authenticator::new(TestCa::new("a")?.request_header_config(&[]))?);
    /// updater.apply(TestCa::new("b")?.request_header_config(&[]))?;
    /// assert!(auth.changed().await);
    /// drop(updater);
    /// assert!(!auth.changed().await);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

impl AuthenticatorSource for ReloadingAuthenticator {
    fn current(&self) -> Arc<Authenticator> {
        ReloadingAuthenticator::current(self)
    }
}

/// The writing side: publishes a new configuration when it differs and loads.
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use front_proxy::reload::ReloadingAuthenticator;
/// use front_proxy::{test_util::TestCa, Authenticator, RequestHeaderConfig, HeaderNames};
///
/// let ca = TestCa::new("ca")?;
/// let (auth, updater) = ReloadingAuthenticator::new(Authenticator::new(ca.request_header_config(&[]))?);
/// let broken = RequestHeaderConfig { client_ca_pem: b"garbage".to_vec(), allowed_names: vec![], headers: HeaderNames::default() };
/// assert!(updater.apply(broken).is_err());
/// assert_eq!(auth.current().config().client_ca_pem, ca.ca_pem().as_bytes()); // last good kept
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct AuthenticatorUpdater {
    tx: watch::Sender<Arc<Authenticator>>,
}

impl AuthenticatorUpdater {
    /// Loads `config` and publishes it. `Ok(false)` when it equals the current configuration
    /// (nothing published); on error the current authenticator stays.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::reload::ReloadingAuthenticator;
    /// use front_proxy::{test_util::TestCa, Authenticator};
    ///
    /// let ca = TestCa::new("ca")?;
    /// let (auth, updater) = ReloadingAuthenticator::new(Authenticator::new(ca.request_header_config(&[]))?);
    /// assert!(updater.apply(ca.request_header_config(&["front-proxy-client"]))?);
    /// assert_eq!(auth.current().config().allowed_names, ["front-proxy-client"]);
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply(&self, config: RequestHeaderConfig) -> Result<bool, ConfigError> {
        if *self.tx.borrow().config() == config {
            return Ok(false);
        }
        let next = Authenticator::new(config)?;
        self.tx.send_replace(Arc::new(next));
        Ok(true)
    }

    /// [`AuthenticatorUpdater::apply`] for a new version of the
    /// `kube-system/extension-apiserver-authentication` data.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use std::collections::BTreeMap;
    /// use front_proxy::reload::ReloadingAuthenticator;
    /// use front_proxy::{test_util::TestCa, Authenticator};
    ///
    /// let (auth, updater) = ReloadingAuthenticator::new(Authenticator::new(TestCa::new("a")?.request_header_config(&[]))?);
    /// let rotated = TestCa::new("b")?;
    /// let data: BTreeMap<String, String> = [
    ///     ("requestheader-client-ca-file", rotated.ca_pem()),
    ///     ("requestheader-username-headers", r#"["X-Remote-User"]"#),
    /// ].into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    /// assert!(updater.apply_configmap(&data)?);
    /// assert!(auth.current().headers().group.is_empty());
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_configmap(&self, data: &BTreeMap<String, String>) -> Result<bool, ConfigError> {
        self.apply(RequestHeaderConfig::from_configmap(data)?)
    }

    /// The authenticator currently published.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::reload::ReloadingAuthenticator;
    /// use front_proxy::{test_util::TestCa, Authenticator};
    ///
    /// let (auth, updater) = ReloadingAuthenticator::new(Authenticator::new(TestCa::new("a")?.request_header_config(&[]))?);
    /// assert!(std::sync::Arc::ptr_eq(&auth.current(), &updater.current()));
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn current(&self) -> Arc<Authenticator> {
        Arc::clone(&self.tx.borrow())
    }

    /// True once every [`ReloadingAuthenticator`] has been dropped: nobody reads any more.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::reload::ReloadingAuthenticator;
    /// use front_proxy::{test_util::TestCa, Authenticator};
    ///
    /// let (auth, updater) = ReloadingAuthenticator::new(Authenticator::new(TestCa::new("a")?.request_header_config(&[]))?);
    /// assert!(!updater.is_closed());
    /// drop(auth);
    /// assert!(updater.is_closed());
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The result of one look at the CA file.
///
/// ```
/// use front_proxy::reload::ReloadOutcome;
///
/// assert_eq!(ReloadOutcome::Reloaded.to_string(), "reloaded the requestheader client CA bundle");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ReloadOutcome {
    /// The file reads the same as last time (or fails the same way as last time).
    Unchanged,
    /// A new bundle was loaded and published.
    Reloaded,
    /// The file changed but could not be read or loaded; the last good authenticator stays. Each
    /// distinct failure is reported once, not on every tick.
    Failed(ConfigError),
}

impl fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadOutcome::Unchanged => {
                f.write_str("the requestheader client CA bundle is unchanged")
            }
            ReloadOutcome::Reloaded => f.write_str("reloaded the requestheader client CA bundle"),
            ReloadOutcome::Failed(err) => {
                write!(
                    f,
                    "keeping the previous requestheader client CA bundle: {err}"
                )
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Contents(Vec<u8>),
    ReadError(String),
}

/// Re-reads the CA file and publishes it when its contents change. Contents are compared, not
/// modification times: that catches a rewrite within the same second and the symlink swaps with
/// which the kubelet updates ConfigMap and Secret volumes.
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use std::time::Duration;
/// use front_proxy::reload::ReloadingAuthenticator;
/// use front_proxy::{test_util::TestCa, HeaderNames};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("ca.crt");
/// std::fs::write(&path, TestCa::new("ca")?.ca_pem())?;
/// let (_auth, reloader) = ReloadingAuthenticator::watch_ca_file(&path, vec![], HeaderNames::default())?;
/// let reloader = reloader.interval(Duration::from_secs(1));
/// assert_eq!(reloader.path(), path);
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct CaFileReloader {
    path: PathBuf,
    template: RequestHeaderConfig,
    updater: AuthenticatorUpdater,
    interval: Duration,
    last_seen: Option<Seen>,
}

impl CaFileReloader {
    /// How often [`CaFileReloader::run`] looks; by default [`DEFAULT_RELOAD_INTERVAL`]. A zero
    /// interval is raised to one millisecond.
    ///
    /// ```
    /// # fn demo(reloader: front_proxy::reload::CaFileReloader) {
    /// let reloader = reloader.interval(std::time::Duration::from_secs(30));
    /// # let _ = reloader;
    /// # }
    /// ```
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(1));
        self
    }

    /// The file being watched.
    ///
    /// ```
    /// # fn demo(reloader: &front_proxy::reload::CaFileReloader) {
    /// println!("watching {}", reloader.path().display());
    /// # }
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The updater, e.g. to apply new allowed names alongside the file.
    ///
    /// ```
    /// # fn demo(reloader: &front_proxy::reload::CaFileReloader) {
    /// let current = reloader.updater().current();
    /// # let _ = current;
    /// # }
    /// ```
    pub fn updater(&self) -> &AuthenticatorUpdater {
        &self.updater
    }

    /// Reads the file once and publishes it if it changed and loads.
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use front_proxy::reload::{ReloadOutcome, ReloadingAuthenticator};
    /// use front_proxy::{test_util::TestCa, HeaderNames};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("ca.crt");
    /// std::fs::write(&path, TestCa::new("ca")?.ca_pem())?;
    /// let (auth, mut reloader) = ReloadingAuthenticator::watch_ca_file(&path, vec![], HeaderNames::default())?;
    /// assert!(matches!(reloader.check().await, ReloadOutcome::Unchanged));
    /// std::fs::write(&path, "truncated")?;
    /// assert!(matches!(reloader.check().await, ReloadOutcome::Failed(_)));
    /// assert!(matches!(reloader.check().await, ReloadOutcome::Unchanged)); // reported once
    /// # let _ = auth;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn check(&mut self) -> ReloadOutcome {
        let read = tokio::fs::read(&self.path).await;
        let seen = match &read {
            Ok(bytes) => Seen::Contents(bytes.clone()),
            Err(err) => Seen::ReadError(err.to_string()),
        };
        if self.last_seen.as_ref() == Some(&seen) {
            return ReloadOutcome::Unchanged;
        }
        self.last_seen = Some(seen);
        let pem = match read {
            Ok(pem) => pem,
            Err(source) => {
                return ReloadOutcome::Failed(ConfigError::ReadCaFile {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let config = RequestHeaderConfig {
            client_ca_pem: pem,
            ..self.template.clone()
        };
        match self.updater.apply(config) {
            Ok(true) => ReloadOutcome::Reloaded,
            Ok(false) => ReloadOutcome::Unchanged,
            Err(err) => ReloadOutcome::Failed(err),
        }
    }

    /// Checks the file every interval, calling `report` for every [`ReloadOutcome::Reloaded`] and
    /// [`ReloadOutcome::Failed`]. Returns once every [`ReloadingAuthenticator`] is dropped.
    ///
    /// ```no_run
    /// # async fn demo(reloader: front_proxy::reload::CaFileReloader) {
    /// tokio::spawn(reloader.run(|outcome| eprintln!("{outcome}")));
    /// # }
    /// ```
    pub async fn run(mut self, mut report: impl FnMut(&ReloadOutcome) + Send) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick completes at once; the file was just read by `watch_ca_file`.
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if self.updater.is_closed() {
                return;
            }
            let outcome = self.check().await;
            if !matches!(outcome, ReloadOutcome::Unchanged) {
                report(&outcome);
            }
        }
    }
}
