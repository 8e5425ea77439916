//! APIService storage with Kubernetes semantics; the only place that creates, parses or compares a
//! `resourceVersion`.
//!
//! Every other crate sees a resourceVersion as an opaque string: it is copied from a stored object or
//! a list into a request and handed back to this crate, never computed or ordered outside it.
//!
//! The server uses one [`Store`] (`Arc<dyn Store>`) without knowing which back-end is active:
//! - the embedded back-end (`embedded:DIR`, the default `embedded:./data`): one process, one data dir;
//! - the etcd back-end (`etcd://host:port[,host:port…][/prefix]`): several aggregator replicas share it.
//!
//! Semantics shared by both back-ends (the conformance suite in `tests/` runs against each):
//! - one global, strictly increasing revision; every successful write gets a new one, and the object it
//!   returns carries it in `metadata.resourceVersion`;
//! - create fails with [`Error::AlreadyExists`]; update and delete with a stale resourceVersion fail
//!   with [`Error::Conflict`]; missing objects give [`Error::NotFound`];
//! - a list is a consistent snapshot and carries the revision it was taken at;
//! - a watch from revision R delivers every change with a revision greater than R, in revision order,
//!   exactly once; a watch from a revision whose history is gone fails with [`Error::TooOld`]
//!   (HTTP 410 Gone at the API); a watcher that cannot keep up is ended with
//!   [`Error::WatcherTooSlow`] instead of buffering without bound.
//!
//! Open a store with [`open`] (a `--store` URL, see [`StoreUrl`]) or [`open_with`] (explicit
//! [`Options`]); shut it down with [`Store::close`], which ends every watch and releases the
//! embedded directory lock. Design, limits and benchmark numbers: `docs/store.md`.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
pub use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;

mod codec;
mod embedded;
mod etcd;
mod hub;
mod options;
mod revision;
mod url;

pub use options::Options;
pub use url::{DEFAULT_ETCD_PREFIX, DEFAULT_STORE_URL, StoreUrl};

/// Opens the store named by a `--store` URL (`embedded:DIR` or
/// `etcd://host:port[,host:port…][/prefix]`) with default [`Options`].
///
/// Fails with [`Error::InvalidUrl`] for a malformed URL, [`Error::Locked`] when another process
/// holds the embedded data directory, and [`Error::Unavailable`] when etcd cannot be reached.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with(&url.parse()?, Options::default()).await
}

/// Opens the store named by `url` with explicit [`Options`] (cache and buffer sizes, history
/// length, bookmark interval, etcd timeouts).
pub async fn open_with(url: &StoreUrl, options: Options) -> Result<Arc<dyn Store>> {
    options.validate()?;
    match url {
        StoreUrl::Embedded { dir } => {
            Ok(Arc::new(embedded::EmbeddedStore::open(dir, options).await?))
        }
        StoreUrl::Etcd { endpoints, prefix } => Ok(Arc::new(
            etcd::EtcdStore::open(endpoints, prefix, options).await?,
        )),
    }
}

/// The result type of every store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong in a store operation.
///
/// The API layer maps each variant to one Kubernetes `Status` reason; the messages here are written
/// for people (they end up in `Status.message`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No object with this name exists (404 NotFound).
    #[error("not found: {name}")]
    NotFound {
        /// The object name.
        name: String,
    },
    /// An object with this name already exists (409 AlreadyExists).
    #[error("already exists: {name}")]
    AlreadyExists {
        /// The object name.
        name: String,
    },
    /// The expected resourceVersion (or uid precondition) does not match the stored object
    /// (409 Conflict).
    #[error("conflict on {name}: {message}")]
    Conflict {
        /// The object name.
        name: String,
        /// Why the precondition failed, e.g. "the object has been modified; please apply your
        /// changes to the latest version and try again".
        message: String,
    },
    /// The requested revision's history has been compacted or truncated (410 Gone, reason
    /// `Expired`): the client must list again.
    #[error("too old resource version: {requested} ({oldest_available})")]
    TooOld {
        /// The revision the caller asked for.
        requested: String,
        /// The oldest revision still available.
        oldest_available: String,
    },
    /// The requested revision is newer than anything the store has seen (504 Timeout with
    /// "Too large resource version" upstream).
    #[error("too large resource version: {requested}, current resource version is {current}")]
    TooNew {
        /// The revision the caller asked for.
        requested: String,
        /// The newest revision the store has.
        current: String,
    },
    /// The string is not a resourceVersion this store ever produced (400 BadRequest).
    #[error("invalid resource version {0:?}")]
    InvalidResourceVersion(String),
    /// The watcher fell too far behind and was cut off; it must list and watch again.
    #[error("watcher too slow: more than {buffered} events buffered")]
    WatcherTooSlow {
        /// The per-watcher buffer size that was exceeded.
        buffered: usize,
    },
    /// The data directory is in use by another process.
    #[error("data directory {dir} is locked by another process: {detail}")]
    Locked {
        /// The data directory.
        dir: String,
        /// What the lock attempt reported.
        detail: String,
    },
    /// The store URL given on the command line is not valid.
    #[error("invalid store URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The back-end cannot be reached or answered with an error; the operation may be retried
    /// (503 at the API).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes could not be decoded, or an object could not be encoded.
    #[error("storage encoding error: {0}")]
    Encoding(String),
    /// The object cannot be stored as given, e.g. it has no `metadata.name` (the API layer
    /// validates objects first, so reaching this is a bug there: 500 at the API).
    #[error("invalid object: {0}")]
    InvalidObject(String),
    /// The store's options are out of range (e.g. a zero watcher buffer).
    #[error("invalid store options: {0}")]
    InvalidOptions(String),
    /// The embedded database failed: an I/O error or a damaged file (500 at the API).
    #[error("embedded database error ({context}): {source}")]
    Embedded {
        /// What the store was doing.
        context: String,
        /// The database's error (shared: one failed commit fails every write batched into it).
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The data directory or its database file could not be opened, created or locked.
    #[error("cannot open data directory {dir}: {source}")]
    DataDir {
        /// The data directory.
        dir: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Any other back-end failure (500 at the API).
    #[error("storage error: {0}")]
    Internal(String),
}

/// Kind of a watch event, as in Kubernetes `WatchEvent.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object was updated.
    Modified,
    /// The object was deleted; the event carries its last state.
    Deleted,
    /// No change: the store has progressed to the event's revision (for `allowWatchBookmarks`).
    Bookmark,
}

impl EventType {
    /// The Kubernetes wire name: `ADDED`, `MODIFIED`, `DELETED` or `BOOKMARK`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
            EventType::Bookmark => "BOOKMARK",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchEvent {
    /// What happened.
    pub kind: EventType,
    /// The object after the change; for [`EventType::Deleted`] its last state. Its
    /// `metadata.resourceVersion` is the revision of this event (for a deletion: the deletion's
    /// revision). For [`EventType::Bookmark`] only `metadata.resourceVersion` is meaningful.
    pub object: APIService,
}

impl WatchEvent {
    /// The revision of this event (the object's `metadata.resourceVersion`).
    pub fn resource_version(&self) -> &str {
        self.object
            .metadata
            .resource_version
            .as_deref()
            .unwrap_or_default()
    }
}

/// A consistent snapshot of all objects.
#[derive(Debug, Clone, PartialEq)]
pub struct ListResult {
    /// All objects, sorted by name.
    pub items: Vec<APIService>,
    /// The revision this snapshot was taken at; a watch from it misses nothing and repeats nothing.
    pub resource_version: String,
}

/// Preconditions for a delete, as in Kubernetes `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    /// Delete only if the stored object has this resourceVersion.
    pub resource_version: Option<String>,
    /// Delete only if the stored object has this uid.
    pub uid: Option<String>,
}

/// A stream of changes; dropping it ends the watch and frees its resources.
///
/// Events are shared (`Arc`) between all watchers of a store: fan-out never copies an object.
pub struct Watch {
    rx: tokio::sync::mpsc::Receiver<Result<Arc<WatchEvent>>>,
}

impl Watch {
    /// Wraps a receiver fed by a back-end. An `Err` item ends the stream: the back-end sends at most
    /// one and then closes the channel.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Result<Arc<WatchEvent>>>) -> Self {
        Watch { rx }
    }

    /// The next event; `None` when the store is shutting down. After an `Err` the watch is over.
    pub async fn next(&mut self) -> Option<Result<Arc<WatchEvent>>> {
        self.rx.recv().await
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

/// APIService storage. Implemented by the embedded and the etcd back-ends; the server holds an
/// `Arc<dyn Store>`.
///
/// Objects are stored as given (the API layer has already defaulted and validated them); the store
/// only sets `metadata.resourceVersion`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a new object. Fails with [`Error::AlreadyExists`] if the name is taken and
    /// [`Error::InvalidObject`] without a `metadata.name`. Any resourceVersion on `object` is
    /// ignored (rejecting one is the API layer's choice). Returns the stored object with its new
    /// resourceVersion.
    async fn create(&self, object: APIService) -> Result<APIService>;

    /// Replaces an existing object if its stored resourceVersion equals
    /// `object.metadata.resourceVersion`, otherwise [`Error::Conflict`]; a missing object gives
    /// [`Error::NotFound`]. An unset resourceVersion gives [`Error::InvalidObject`] (upstream
    /// rejects unconditional updates of APIServices before storage) and one this store never
    /// produced [`Error::InvalidResourceVersion`]. Returns the stored object with its new
    /// resourceVersion.
    async fn update(&self, object: APIService) -> Result<APIService>;

    /// Deletes an object, checking the preconditions if given ([`Error::Conflict`] with
    /// upstream's "Precondition failed: …" message when one does not hold). Returns the object's
    /// last state with the deletion's resourceVersion.
    async fn delete(&self, name: &str, preconditions: Option<&Preconditions>)
    -> Result<APIService>;

    /// Reads one object at the latest revision.
    async fn get(&self, name: &str) -> Result<APIService>;

    /// Lists all objects. `at = None` reads the latest revision; `at = Some(rv)` reads exactly at
    /// that revision (Kubernetes `resourceVersionMatch=Exact`), failing with [`Error::TooOld`] when
    /// that history is gone and [`Error::TooNew`] when it is in the future.
    ///
    /// `"0"` is not special here: it is older than any history, so it gives [`Error::TooOld`].
    /// Kubernetes' "any resourceVersion" meaning of `"0"` (and of `""`) is the API layer's to
    /// implement, e.g. as `at = None`.
    async fn list(&self, at: Option<&str>) -> Result<ListResult>;

    /// Watches all objects for changes after revision `from` (exclusive). `None` means "from now":
    /// after the store's current revision, so no write acknowledged before the call is reported.
    /// Fails with [`Error::TooOld`] if `from` is older than the retained history (the embedded
    /// revision log; on etcd the in-memory watch cache, as upstream's watch cache), with
    /// [`Error::TooNew`] if it is newer than the store's current revision, and with
    /// [`Error::Unavailable`] while the back-end is unreachable (watches already open stay open
    /// and resume without a gap). As for [`Store::list`], `"0"` is not special.
    ///
    /// A watch may also end with an `Err` item: [`Error::WatcherTooSlow`] when its buffer
    /// ([`Options::watcher_buffer`]) filled up, [`Error::TooOld`] when etcd compacted events the
    /// store had not yet seen. Either way the client must list and watch again.
    async fn watch(&self, from: Option<&str>) -> Result<Watch>;

    /// The latest revision the store has committed (on etcd: etcd's current revision, which also
    /// counts writes to keys outside the prefix).
    async fn current_resource_version(&self) -> Result<String>;

    /// Orders two resourceVersions produced by this store (for `resourceVersionMatch=NotOlderThan`
    /// and watch-cache decisions in the API layer), or [`Error::InvalidResourceVersion`].
    fn compare_resource_versions(&self, a: &str, b: &str) -> Result<std::cmp::Ordering>;

    /// Shuts the store down: every open [`Watch`] ends (its `next()` returns `None`), writes that
    /// were already accepted are committed, the back-end connection or the embedded database file
    /// and its directory lock are released. Afterwards every operation fails with
    /// [`Error::Unavailable`]. Calling it twice is harmless.
    async fn close(&self) -> Result<()>;
}
