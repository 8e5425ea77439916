//! The embedded back-end: one redb file in the data directory holds the objects and a bounded
//! revision log, both changed in the same fsync'd transaction before a write is acknowledged.
//!
//! Layout of `DIR/apiservices.redb`:
//! - `objects`: name → (revision, JSON with `metadata.resourceVersion` set);
//! - `log`: revision → (kind, name, object, previous object), one entry per write, the last
//!   [`Options::history_size`] kept. It serves watches older than the watch cache and lists at an
//!   exact revision (the current objects with newer entries undone);
//! - `meta`: `format`, `revision` (the global revision; 1 for an empty store, like etcd) and
//!   `compacted` (the log holds every revision above it).
//!
//! `DIR/LOCK` is locked (`flock`) for as long as the store is open, so a second process gets
//! [`Error::Locked`]; the kernel drops the lock when the process dies, even on `kill -9`.
//!
//! One writer thread owns all writes. It takes every request queued behind the one it is
//! serving (up to [`MAX_BATCH`]) into one transaction — a group commit, so concurrent writers
//! share an fsync — then publishes the batch's events to the hub in revision order and replies.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition,
};
use tokio::sync::oneshot;

use crate::hub::{History, Hub, Rev, too_old};
use crate::{
    APIService, Error, EventType, ListResult, Options, Preconditions, Result, Store, Watch,
    WatchEvent, codec, revision,
};

const DB_FILE: &str = "apiservices.redb";
const LOCK_FILE: &str = "LOCK";
/// Bumped when the table layout changes; a file with another value is refused.
const FORMAT: u64 = 1;
/// redb's page cache.
const CACHE_BYTES: usize = 32 << 20;
/// The most writes committed in one transaction.
const MAX_BATCH: usize = 256;

const OBJECTS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("objects");
/// (kind, name, object after the change or, for a deletion, before it, previous object of an
/// update).
type LogValue = (u8, &'static str, &'static [u8], Option<&'static [u8]>);
const LOG: TableDefinition<u64, LogValue> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const ADDED: u8 = 1;
const MODIFIED: u8 = 2;
const DELETED: u8 = 3;

/// Upstream's message for a stale resourceVersion on update.
const MODIFIED_MESSAGE: &str =
    "the object has been modified; please apply your changes to the latest version and try again";

fn db_error(context: &str, e: impl Into<redb::Error>) -> Error {
    Error::Embedded {
        context: context.to_string(),
        source: Arc::new(e.into()),
    }
}

fn task_error(e: tokio::task::JoinError) -> Error {
    Error::Internal(format!("embedded store task failed: {e}"))
}

fn closed() -> Error {
    Error::Unavailable("the store is closed".into())
}

/// The open database and the directory lock, released in that order when dropped.
struct Files {
    db: Database,
    _lock: File,
}

/// Shared handle to [`Files`]; `None` once the store is closed.
struct DbHandle {
    files: Mutex<Option<Arc<Files>>>,
}

impl DbHandle {
    fn get(&self) -> Result<Arc<Files>> {
        self.files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(closed)
    }

    /// Runs a read on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let files = self.get()?;
        tokio::task::spawn_blocking(move || f(&files.db))
            .await
            .map_err(task_error)?
    }
}

#[async_trait]
impl History for DbHandle {
    async fn check(&self, after: u64) -> Result<()> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
            let meta = txn.open_table(META).map_err(|e| db_error("open meta", e))?;
            let compacted = meta_get(&meta, "compacted")?;
            if after < compacted {
                return Err(too_old(after, compacted));
            }
            Ok(())
        })
        .await
    }

    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Rev>> {
        self.read(move |db| {
            let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
            let meta = txn.open_table(META).map_err(|e| db_error("open meta", e))?;
            let compacted = meta_get(&meta, "compacted")?;
            if after < compacted {
                return Err(too_old(after, compacted));
            }
            let log = txn.open_table(LOG).map_err(|e| db_error("open log", e))?;
            let mut events = Vec::new();
            let range = log
                .range(after.saturating_add(1)..)
                .map_err(|e| db_error("read log", e))?;
            for entry in range.take(limit) {
                let (rev, value) = entry.map_err(|e| db_error("read log", e))?;
                let rev = rev.value();
                let (kind, name, object, _) = value.value();
                events.push((rev, Arc::new(log_event(rev, kind, name, object)?)));
            }
            Ok(events)
        })
        .await
    }
}

/// The watch event a log entry stands for.
fn log_event(rev: u64, kind: u8, name: &str, object: &[u8]) -> Result<WatchEvent> {
    let what = format!("{name} at revision {rev}");
    let object = codec::decode(object, &what)?;
    Ok(match kind {
        ADDED => WatchEvent {
            kind: EventType::Added,
            object,
        },
        MODIFIED => WatchEvent {
            kind: EventType::Modified,
            object,
        },
        DELETED => WatchEvent {
            kind: EventType::Deleted,
            object: codec::with_revision(object, rev),
        },
        other => {
            return Err(Error::Encoding(format!(
                "log entry {what} has unknown kind {other}"
            )));
        }
    })
}

fn meta_get(meta: &impl ReadableTable<&'static str, u64>, key: &str) -> Result<u64> {
    match meta.get(key).map_err(|e| db_error("read meta", e))? {
        Some(v) => Ok(v.value()),
        None => Err(Error::Encoding(format!(
            "the database has no {key:?} entry"
        ))),
    }
}

enum Op {
    Create(APIService),
    Update(APIService),
    Delete {
        name: String,
        preconditions: Option<Preconditions>,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<APIService>>,
}

/// Why one write in a batch failed: the request's own fault (only that request fails) or the
/// database's (the whole batch is abandoned).
enum Fail {
    Request(Error),
    Storage(&'static str, redb::Error),
}

fn storage<E: Into<redb::Error>>(context: &'static str) -> impl FnOnce(E) -> Fail {
    move |e| Fail::Storage(context, e.into())
}

/// The embedded store.
pub(crate) struct EmbeddedStore {
    dir: PathBuf,
    db: Arc<DbHandle>,
    writer: Mutex<Option<(mpsc::Sender<Request>, std::thread::JoinHandle<()>)>>,
    hub: Arc<Hub>,
    committed: Arc<AtomicU64>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir`.
    pub(crate) async fn open(dir: &Path, options: Options) -> Result<Self> {
        let owned = dir.to_path_buf();
        let (files, rev) = tokio::task::spawn_blocking(move || open_files(&owned))
            .await
            .map_err(task_error)??;
        let files = Arc::new(files);
        let db = Arc::new(DbHandle {
            files: Mutex::new(Some(Arc::clone(&files))),
        });
        let history: Arc<dyn History> = db.clone();
        let hub = Hub::new(rev, &options, Some(history));
        let committed = Arc::new(AtomicU64::new(rev));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let hub = Arc::clone(&hub);
            let committed = Arc::clone(&committed);
            let history_size = options.history_size;
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || writer_loop(&files, &rx, &hub, &committed, history_size))
                .map_err(|source| Error::DataDir {
                    dir: dir.display().to_string(),
                    source,
                })?
        };
        Ok(EmbeddedStore {
            dir: dir.to_path_buf(),
            db,
            writer: Mutex::new(Some((tx, writer))),
            hub,
            committed,
        })
    }

    /// The committed revision, read from the database (never behind what a reader has seen).
    async fn current_revision(&self) -> Result<u64> {
        self.db
            .read(|db| {
                let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
                let meta = txn.open_table(META).map_err(|e| db_error("open meta", e))?;
                meta_get(&meta, "revision")
            })
            .await
    }

    async fn write(&self, op: Op) -> Result<APIService> {
        let (reply, rx) = oneshot::channel();
        {
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let (tx, _) = writer.as_ref().ok_or_else(closed)?;
            tx.send(Request { op, reply }).map_err(|_| closed())?;
        }
        rx.await
            .map_err(|_| Error::Internal("the embedded store's writer stopped".into()))?
    }
}

/// Creates the directory, takes its lock and opens (or initialises) the database.
fn open_files(dir: &Path) -> Result<(Files, u64)> {
    let dir_error = |source| Error::DataDir {
        dir: dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(dir_error)?;
    let lock_path = dir.join(LOCK_FILE);
    let mut lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(dir_error)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = lock.read_to_string(&mut holder);
            let holder = holder.trim();
            let detail = if holder.is_empty() {
                format!("{} is held", lock_path.display())
            } else {
                format!("{} is held by process {holder}", lock_path.display())
            };
            return Err(Error::Locked {
                dir: dir.display().to_string(),
                detail,
            });
        }
        Err(TryLockError::Error(e)) => return Err(dir_error(e)),
    }
    // Informational only (shown to the next process that finds the lock held).
    let _ = lock
        .set_len(0)
        .and_then(|()| writeln!(lock, "{}", std::process::id()));

    // Verifying every page's checksum at open turns a damaged file into a clear error (a plain
    // open may panic on one); the file holds only APIServices and a bounded log, so it is cheap.
    let db = match Database::builder()
        .set_check_integrity_on_open(true)
        // redb's default is 1 GiB and grows with the file; the working set (objects plus a
        // bounded log) is a few MiB, and the server has a memory budget.
        .set_cache_size(CACHE_BYTES)
        .create(dir.join(DB_FILE))
    {
        Ok(db) => db,
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
            return Err(Error::Locked {
                dir: dir.display().to_string(),
                detail: format!("{} is open in another process", DB_FILE),
            });
        }
        Err(e) => {
            return Err(db_error(
                &format!("opening {}", dir.join(DB_FILE).display()),
                e,
            ));
        }
    };
    let rev = init(&db)?;
    Ok((Files { db, _lock: lock }, rev))
}

/// Creates the tables of a new database, or checks the format of an existing one; returns the
/// current revision.
fn init(db: &Database) -> Result<u64> {
    let txn = db.begin_write().map_err(|e| db_error("begin write", e))?;
    let rev = {
        let objects = txn
            .open_table(OBJECTS)
            .map_err(|e| db_error("open objects", e))?;
        txn.open_table(LOG).map_err(|e| db_error("open log", e))?;
        let mut meta = txn.open_table(META).map_err(|e| db_error("open meta", e))?;
        let format = meta
            .get("format")
            .map_err(|e| db_error("read meta", e))?
            .map(|v| v.value());
        match format {
            Some(FORMAT) => meta_get(&meta, "revision")?,
            Some(other) => {
                return Err(Error::Encoding(format!(
                    "the database has format {other}; this version reads format {FORMAT}"
                )));
            }
            None => {
                if !objects
                    .is_empty()
                    .map_err(|e| db_error("read objects", e))?
                {
                    return Err(Error::Encoding(
                        "the database has objects but no format entry".into(),
                    ));
                }
                for (key, value) in [("format", FORMAT), ("revision", 1), ("compacted", 1)] {
                    meta.insert(key, value)
                        .map_err(|e| db_error("write meta", e))?;
                }
                1
            }
        }
    };
    txn.commit().map_err(|e| db_error("commit", e))?;
    Ok(rev)
}

fn writer_loop(
    files: &Files,
    rx: &mpsc::Receiver<Request>,
    hub: &Hub,
    committed: &AtomicU64,
    history_size: u64,
) {
    // `recv` fails once the store is closed or dropped and everything queued has been served.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let ops: Vec<&Op> = batch.iter().map(|r| &r.op).collect();
        match commit_batch(&files.db, &ops, history_size) {
            Ok((outcomes, events, rev)) => {
                committed.store(rev, Ordering::SeqCst);
                // Published before replying, so a writer that watches from its own write's
                // revision never misses a later one.
                hub.publish(events);
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            Err((context, e)) => {
                let source: Arc<dyn std::error::Error + Send + Sync> = Arc::new(e);
                tracing::error!(error = %source, context, "embedded store write failed");
                for request in batch {
                    let _ = request.reply.send(Err(Error::Embedded {
                        context: context.to_string(),
                        source: Arc::clone(&source),
                    }));
                }
            }
        }
    }
}

type Outcomes = (Vec<Result<APIService>>, Vec<Rev>, u64);

/// Applies `ops` in one transaction; requests that fail on their own do not affect the others.
fn commit_batch(
    db: &Database,
    ops: &[&Op],
    history_size: u64,
) -> Result<Outcomes, (&'static str, redb::Error)> {
    let wrap = |context: &'static str| move |e: redb::Error| (context, e);
    let mut txn = db
        .begin_write()
        .map_err(|e| wrap("begin write")(e.into()))?;
    // The default, stated because acknowledging a write depends on it: commit() returns only
    // after fsync.
    txn.set_durability(Durability::Immediate)
        .map_err(|e| wrap("set durability")(e.into()))?;
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut events = Vec::new();
    let rev = {
        let mut objects = txn
            .open_table(OBJECTS)
            .map_err(|e| wrap("open objects")(e.into()))?;
        let mut log = txn
            .open_table(LOG)
            .map_err(|e| wrap("open log")(e.into()))?;
        let mut meta = txn
            .open_table(META)
            .map_err(|e| wrap("open meta")(e.into()))?;
        let read_meta =
            |meta: &Table<&str, u64>, key: &str| -> Result<u64, (&'static str, redb::Error)> {
                match meta.get(key).map_err(|e| wrap("read meta")(e.into()))? {
                    Some(v) => Ok(v.value()),
                    None => Err((
                        "read meta",
                        redb::Error::Corrupted(format!("no {key} entry")),
                    )),
                }
            };
        let mut rev = read_meta(&meta, "revision")?;
        let mut compacted = read_meta(&meta, "compacted")?;
        for op in ops {
            match apply(op, &mut objects, &mut log, rev + 1) {
                Ok((stored, event)) => {
                    rev += 1;
                    outcomes.push(Ok(stored));
                    events.push((rev, Arc::new(event)));
                }
                Err(Fail::Request(e)) => outcomes.push(Err(e)),
                Err(Fail::Storage(context, e)) => return Err((context, e)),
            }
        }
        if events.is_empty() {
            drop((objects, log, meta));
            // Nothing changed: no commit, no fsync.
            txn.abort().map_err(|e| wrap("abort")(e.into()))?;
            return Ok((outcomes, events, rev));
        }
        while rev - compacted > history_size {
            compacted += 1;
            log.remove(compacted)
                .map_err(|e| wrap("truncate log")(e.into()))?;
        }
        meta.insert("revision", rev)
            .map_err(|e| wrap("write meta")(e.into()))?;
        meta.insert("compacted", compacted)
            .map_err(|e| wrap("write meta")(e.into()))?;
        rev
    };
    txn.commit().map_err(|e| wrap("commit")(e.into()))?;
    Ok((outcomes, events, rev))
}

type Objects<'t> = Table<'t, &'static str, (u64, &'static [u8])>;
type Log<'t> = Table<'t, u64, LogValue>;

/// Applies one write at revision `rev`.
fn apply(
    op: &Op,
    objects: &mut Objects<'_>,
    log: &mut Log<'_>,
    rev: u64,
) -> Result<(APIService, WatchEvent), Fail> {
    match op {
        Op::Create(object) => {
            let name = codec::name_of(object).map_err(Fail::Request)?;
            if objects.get(name).map_err(storage("read object"))?.is_some() {
                return Err(Fail::Request(Error::AlreadyExists { name: name.into() }));
            }
            let stored = codec::with_revision(object.clone(), rev);
            let bytes = codec::encode(&stored).map_err(Fail::Request)?;
            objects
                .insert(name, (rev, bytes.as_slice()))
                .map_err(storage("write object"))?;
            log.insert(rev, (ADDED, name, bytes.as_slice(), None))
                .map_err(storage("append log"))?;
            let event = WatchEvent {
                kind: EventType::Added,
                object: stored.clone(),
            };
            Ok((stored, event))
        }
        Op::Update(object) => {
            let name = codec::name_of(object).map_err(Fail::Request)?;
            let expected = match object.metadata.resource_version.as_deref() {
                None | Some("") => {
                    return Err(Fail::Request(Error::InvalidObject(
                        "metadata.resourceVersion must be set for an update".into(),
                    )));
                }
                Some(rv) => revision::parse(rv).map_err(Fail::Request)?,
            };
            let (current_rev, prev) = match objects.get(name).map_err(storage("read object"))? {
                Some(v) => {
                    let (r, bytes) = v.value();
                    (r, bytes.to_vec())
                }
                None => return Err(Fail::Request(Error::NotFound { name: name.into() })),
            };
            if current_rev != expected {
                return Err(Fail::Request(Error::Conflict {
                    name: name.into(),
                    message: MODIFIED_MESSAGE.into(),
                }));
            }
            let stored = codec::with_revision(object.clone(), rev);
            let bytes = codec::encode(&stored).map_err(Fail::Request)?;
            objects
                .insert(name, (rev, bytes.as_slice()))
                .map_err(storage("write object"))?;
            log.insert(
                rev,
                (MODIFIED, name, bytes.as_slice(), Some(prev.as_slice())),
            )
            .map_err(storage("append log"))?;
            let event = WatchEvent {
                kind: EventType::Modified,
                object: stored.clone(),
            };
            Ok((stored, event))
        }
        Op::Delete {
            name,
            preconditions,
        } => {
            let (current_rev, prev) =
                match objects.get(name.as_str()).map_err(storage("read object"))? {
                    Some(v) => {
                        let (r, bytes) = v.value();
                        (r, bytes.to_vec())
                    }
                    None => return Err(Fail::Request(Error::NotFound { name: name.clone() })),
                };
            let last = codec::decode(&prev, name).map_err(Fail::Request)?;
            if let Some(p) = preconditions {
                check_preconditions(name, p, current_rev, &last).map_err(Fail::Request)?;
            }
            objects
                .remove(name.as_str())
                .map_err(storage("delete object"))?;
            log.insert(rev, (DELETED, name.as_str(), prev.as_slice(), None))
                .map_err(storage("append log"))?;
            let last = codec::with_revision(last, rev);
            let event = WatchEvent {
                kind: EventType::Deleted,
                object: last.clone(),
            };
            Ok((last, event))
        }
    }
}

/// Checks delete preconditions against the stored object (upstream's messages).
pub(crate) fn check_preconditions(
    name: &str,
    preconditions: &Preconditions,
    current_rev: u64,
    current: &APIService,
) -> Result<()> {
    if let Some(rv) = &preconditions.resource_version
        && revision::parse(rv)? != current_rev
    {
        return Err(Error::Conflict {
            name: name.into(),
            message: format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current_rev}"
            ),
        });
    }
    if let Some(uid) = &preconditions.uid {
        let actual = current.metadata.uid.as_deref().unwrap_or_default();
        if uid != actual {
            return Err(Error::Conflict {
                name: name.into(),
                message: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            });
        }
    }
    Ok(())
}

/// Reads every object, or the objects as they were at revision `at`.
fn list_at(db: &Database, at: Option<u64>) -> Result<ListResult> {
    let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
    let meta = txn.open_table(META).map_err(|e| db_error("open meta", e))?;
    let current = meta_get(&meta, "revision")?;
    let compacted = meta_get(&meta, "compacted")?;
    let at = at.unwrap_or(current);
    if at > current {
        return Err(Error::TooNew {
            requested: revision::format(at),
            current: revision::format(current),
        });
    }
    if at < compacted {
        return Err(too_old(at, compacted));
    }
    let objects = txn
        .open_table(OBJECTS)
        .map_err(|e| db_error("open objects", e))?;
    let mut state = BTreeMap::new();
    for entry in objects.iter().map_err(|e| db_error("read objects", e))? {
        let (name, value) = entry.map_err(|e| db_error("read objects", e))?;
        state.insert(name.value().to_string(), value.value().1.to_vec());
    }
    if at < current {
        let log = txn.open_table(LOG).map_err(|e| db_error("open log", e))?;
        let range = log
            .range(at + 1..=current)
            .map_err(|e| db_error("read log", e))?;
        for entry in range.rev() {
            let (_, value) = entry.map_err(|e| db_error("read log", e))?;
            let (kind, name, object, prev) = value.value();
            match (kind, prev) {
                (ADDED, _) => {
                    state.remove(name);
                }
                (MODIFIED, Some(prev)) => {
                    state.insert(name.to_string(), prev.to_vec());
                }
                (DELETED, _) => {
                    state.insert(name.to_string(), object.to_vec());
                }
                _ => {
                    return Err(Error::Encoding(format!(
                        "log entry for {name} has kind {kind} and no usable previous state"
                    )));
                }
            }
        }
    }
    let items = state
        .iter()
        .map(|(name, bytes)| codec::decode(bytes, name))
        .collect::<Result<Vec<_>>>()?;
    Ok(ListResult {
        items,
        resource_version: revision::format(at),
    })
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn create(&self, object: APIService) -> Result<APIService> {
        self.write(Op::Create(object)).await
    }

    async fn update(&self, object: APIService) -> Result<APIService> {
        self.write(Op::Update(object)).await
    }

    async fn delete(
        &self,
        name: &str,
        preconditions: Option<&Preconditions>,
    ) -> Result<APIService> {
        if let Some(rv) = preconditions.and_then(|p| p.resource_version.as_deref()) {
            revision::parse(rv)?;
        }
        self.write(Op::Delete {
            name: name.to_string(),
            preconditions: preconditions.cloned(),
        })
        .await
    }

    async fn get(&self, name: &str) -> Result<APIService> {
        let name = name.to_string();
        self.db
            .read(move |db| {
                let txn = db.begin_read().map_err(|e| db_error("begin read", e))?;
                let objects = txn
                    .open_table(OBJECTS)
                    .map_err(|e| db_error("open objects", e))?;
                match objects
                    .get(name.as_str())
                    .map_err(|e| db_error("read object", e))?
                {
                    Some(v) => codec::decode(v.value().1, &name),
                    None => Err(Error::NotFound { name }),
                }
            })
            .await
    }

    async fn list(&self, at: Option<&str>) -> Result<ListResult> {
        let at = at.map(revision::parse).transpose()?;
        self.db.read(move |db| list_at(db, at)).await
    }

    async fn watch(&self, from: Option<&str>) -> Result<Watch> {
        let from = match from {
            // "From now" is the last committed revision.
            None => self.current_revision().await?,
            Some(rv) => {
                let from = revision::parse(rv)?;
                self.db.get()?;
                // `committed` is updated just after each commit, so a reader may already have
                // seen a newer revision: only the database can say a revision is in the future.
                if from > self.committed.load(Ordering::SeqCst) {
                    let current = self.current_revision().await?;
                    if from > current {
                        return Err(Error::TooNew {
                            requested: revision::format(from),
                            current: revision::format(current),
                        });
                    }
                }
                from
            }
        };
        self.hub.watch(Some(from)).await
    }

    async fn current_resource_version(&self) -> Result<String> {
        Ok(revision::format(self.current_revision().await?))
    }

    fn compare_resource_versions(&self, a: &str, b: &str) -> Result<std::cmp::Ordering> {
        revision::compare(a, b)
    }

    async fn close(&self) -> Result<()> {
        self.hub.close();
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some((tx, handle)) = writer {
            // Dropping the sender lets the writer finish what is queued, then exit.
            drop(tx);
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(task_error)?
                .map_err(|_| Error::Internal("the embedded store's writer panicked".into()))?;
        }
        let files = self
            .db
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut files) = files {
            // Reads already running hold a reference for a few microseconds; the lock must be
            // released before close() returns so that the directory can be reopened at once.
            loop {
                match Arc::try_unwrap(files) {
                    Ok(files) => {
                        tokio::task::spawn_blocking(move || drop(files))
                            .await
                            .map_err(task_error)?;
                        break;
                    }
                    Err(shared) => {
                        files = shared;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            tracing::debug!(dir = %self.dir.display(), "embedded store closed");
        }
        Ok(())
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Watches end; the writer thread exits once its queue is empty and releases the files.
        self.hub.close();
    }
}
