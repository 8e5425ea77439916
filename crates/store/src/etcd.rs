//! The etcd back-end: each object is one key (`prefix + name`) holding its JSON without
//! `metadata.resourceVersion`; the resourceVersion is the key's `mod_revision` (for a deletion,
//! the deletion's revision), as upstream's etcd3 storage does.
//!
//! - create: txn `create_revision(key) == 0` → put, else get ([`Error::AlreadyExists`]);
//! - update: txn `mod_revision(key) == rv && version(key) > 0` → put, else get to tell
//!   [`Error::NotFound`] from [`Error::Conflict`];
//! - delete: get, check the preconditions (if any), then txn `mod_revision(key) == seen` →
//!   delete, retried if the object changed in between (upstream's guaranteed delete);
//! - list reads the prefix (at a revision for exact lists) and carries the header revision.
//!
//! **Members.** Each endpoint of the URL gets its own connection and requests stick to one
//! member, moving to the next when it fails (as etcd's Go client pins an endpoint). A request
//! that fails without an answer is retried on the next member until one answers or
//! `request_timeout` has passed and every member was tried; a member without a leader is
//! skipped at once (`require_leader`). Reads are simply repeated. A write whose first attempt may
//! have been applied (the connection broke mid-request, or etcd timed out waiting for a lost
//! leader) is repeated too, and when the repeat then finds the key changed, etcd's history
//! decides: the write succeeded if the first change after the revision it was conditioned on is
//! exactly that write. So a member's death costs the callers latency, not errors and not
//! duplicate or phantom writes.
//!
//! One etcd watch per store (the *feed*, with `prev_kv` so a deletion carries the last state)
//! publishes to the hub. When the stream is lost the feed resumes on the next member at once;
//! only when every member has failed in a row is the store marked down (new watches get
//! [`Error::Unavailable`]; existing ones wait) and the retries back off exponentially. It always
//! resumes from the last revision it published + 1, so no event is lost or repeated. If etcd
//! has compacted that revision in the meantime, every watcher gets [`Error::TooOld`] (it must
//! list again) and the feed restarts at the oldest revision etcd still has.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Compare, CompareOp, ConnectOptions, EventType as EtcdEventType, GetOptions, GetResponse,
    KeyValue, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions,
};
use tokio::sync::watch;

use self::members::{Change, History, Members, call, history};
use crate::hub::{Hub, Rev, too_old};
use crate::{
    APIService, Error, EventType, ListResult, Options, Preconditions, Result, Store, Watch,
    WatchEvent, codec, embedded::check_preconditions, revision,
};

mod members;

/// gRPC status codes (tonic's `Code` as `i32`) that mean "try again later".
const RETRYABLE_CODES: [i32; 4] = [
    1,  // Cancelled (tonic's timeout surfaces as this)
    4,  // DeadlineExceeded
    14, // Unavailable
    2,  // Unknown: connection errors reported by the transport
];

/// Largest response accepted (a list of many APIServices with CA bundles).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// How many times a conditional delete is retried when the object keeps changing under it.
const DELETE_RETRIES: usize = 16;

fn etcd_error(context: &str, e: etcd_client::Error) -> Error {
    let retryable = match &e {
        etcd_client::Error::GRpcStatus(status) => {
            RETRYABLE_CODES.contains(&(status.code() as i32))
                || status.message().contains("etcdserver: request timed out")
                || status.message().contains("no leader")
        }
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_) => true,
        _ => false,
    };
    if retryable {
        Error::Unavailable(format!("etcd: {context}: {e}"))
    } else {
        Error::Internal(format!("etcd: {context}: {e}"))
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision has been compacted"))
}

fn is_future(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("required revision is a future revision"))
}

fn closed() -> Error {
    Error::Unavailable("the store is closed".into())
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<u64> {
    header
        .map(|h| h.revision())
        .and_then(|r| u64::try_from(r).ok())
        .ok_or_else(|| Error::Internal("etcd: response without a header revision".into()))
}

fn to_i64(rev: u64) -> Result<i64> {
    i64::try_from(rev).map_err(|_| Error::InvalidResourceVersion(revision::format(rev)))
}

/// `(create_revision, mod_revision)` of the key a failed create or update txn read in its
/// `else` branch (`None`: no such key).
fn existing(resp: &TxnResponse) -> Option<(i64, i64)> {
    resp.op_responses().iter().find_map(|r| match r {
        TxnOpResponse::Get(get) => get
            .kvs()
            .first()
            .map(|kv| (kv.create_revision(), kv.mod_revision())),
        _ => None,
    })
}

/// The stored form: the object without its resourceVersion.
fn encode_stored(object: &APIService) -> Result<(APIService, Vec<u8>)> {
    let mut stored = object.clone();
    stored.metadata.resource_version = None;
    let bytes = codec::encode(&stored)?;
    Ok((stored, bytes))
}

/// A key's object with its resourceVersion (= `mod_revision`).
fn decode_kv(kv: &KeyValue) -> Result<APIService> {
    let what = String::from_utf8_lossy(kv.key());
    let object = codec::decode(kv.value(), &what)?;
    let rev = u64::try_from(kv.mod_revision()).unwrap_or_default();
    Ok(codec::with_revision(object, rev))
}

/// etcd's current revision, read with a count-only range over the prefix.
async fn revision_of(
    members: &Members,
    closed: &AtomicBool,
    budget: Duration,
    prefix: &str,
) -> Result<u64> {
    let (resp, _) = call(members, closed, budget, |mut kv| async move {
        kv.get(
            prefix,
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
    })
    .await
    .map_err(|e| etcd_error("reading the current revision", e))?;
    header_revision(resp.header())
}

/// The etcd store.
pub(crate) struct EtcdStore {
    members: Arc<Members>,
    /// How long a request keeps trying other members (`Options::request_timeout`).
    budget: Duration,
    prefix: String,
    hub: Arc<Hub>,
    closed: AtomicBool,
    stop: watch::Sender<bool>,
    feed: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl EtcdStore {
    /// Connects to `endpoints` (`host:port`), reads the current revision and starts the feed.
    pub(crate) async fn open(endpoints: &[String], prefix: &str, options: Options) -> Result<Self> {
        let urls: Vec<String> = endpoints.iter().map(|e| format!("http://{e}")).collect();
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout)
            // Detects an etcd that stopped answering without closing the connection.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true)
            // A member cut off from the leader refuses requests at once ("no leader", sent
            // elsewhere) and ends watches, instead of holding them until a timeout.
            .with_require_leader(true);
        let members = Arc::new(Members::connect(&urls, connect).await?);
        let budget = options.request_timeout;
        let rev = revision_of(&members, &AtomicBool::new(false), budget, prefix).await?;
        let hub = Hub::new(rev, &options, None);
        let stop = watch::Sender::new(false);
        let feed = Feed {
            members: Arc::clone(&members),
            member: 0,
            prefix: prefix.to_string(),
            hub: Arc::clone(&hub),
            last: rev,
            max_backoff: options.max_reconnect_backoff,
        };
        let handle = tokio::spawn(feed.run(stop.subscribe()));
        Ok(EtcdStore {
            members,
            budget,
            prefix: prefix.to_string(),
            hub,
            closed: AtomicBool::new(false),
            stop,
            feed: tokio::sync::Mutex::new(Some(handle)),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// [`call`] on this store's members, failing at once once the store is closed.
    async fn call<T, F, Fut>(&self, op: F) -> std::result::Result<(T, bool), etcd_client::Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        call(&self.members, &self.closed, self.budget, op).await
    }

    fn open_check(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        Ok(())
    }

    async fn get_key(&self, key: &str, what: &str) -> Result<GetResponse> {
        self.open_check()?;
        let (resp, _) = self
            .call(|mut kv| async move { kv.get(key, None).await })
            .await
            .map_err(|e| etcd_error(what, e))?;
        Ok(resp)
    }

    async fn txn(&self, txn: Txn, what: &str) -> Result<(TxnResponse, bool)> {
        self.open_check()?;
        self.call(|mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
        .map_err(|e| etcd_error(what, e))
    }

    /// etcd's current revision (of the whole keyspace, so possibly above our last event).
    async fn etcd_revision(&self) -> Result<u64> {
        self.open_check()?;
        revision_of(&self.members, &self.closed, self.budget, &self.prefix).await
    }

    /// The first change of `key` after revision `after`, read from etcd's history with a watch
    /// from `after + 1`: `Ok(None)` when there was none.
    async fn first_change_after(
        &self,
        key: &str,
        after: u64,
        what: &str,
    ) -> Result<Option<Change>> {
        let unknown = |why: String| {
            Error::Unavailable(format!(
                "etcd: {what}: an attempt failed without an answer and whether it was applied cannot be told: {why}"
            ))
        };
        let start = to_i64(after.saturating_add(1))?;
        let mut why = String::from("no member answered");
        for _ in 0..self.members.len() {
            let (index, client) = self.members.current();
            match tokio::time::timeout(self.budget, history(client, key, start)).await {
                Ok(Ok(change)) => return Ok(change),
                Ok(Err(History::Gone(reason))) => return Err(unknown(reason)),
                Ok(Err(History::Member(e))) => why = e,
                Err(_) => why = format!("no answer within {:?}", self.budget),
            }
            self.members.failed(index);
        }
        Err(unknown(why))
    }

    /// After a write attempt without an answer and a repeat that found `key` changed: whether
    /// the first attempt is the first change after revision `after` — a put of exactly `value`,
    /// or a deletion when `value` is `None`. Returns its revision.
    async fn applied(
        &self,
        key: &str,
        after: u64,
        value: Option<&[u8]>,
        what: &str,
    ) -> Result<Option<u64>> {
        let change = self.first_change_after(key, after, what).await?;
        Ok(change.and_then(|c| match value {
            Some(v) => (c.put && c.value == v).then_some(c.revision),
            None => (!c.put).then_some(c.revision),
        }))
    }

    /// The oldest revision etcd still has, learnt from a watch that etcd cancels as compacted.
    async fn compacted_revision(&self, requested: u64) -> Option<u64> {
        let probe = async {
            let options = WatchOptions::new()
                .with_start_revision(to_i64(requested).ok()?)
                .with_prefix();
            let mut stream = self
                .members
                .current()
                .1
                .watch_client()
                .watch(self.prefix.as_str(), Some(options))
                .await
                .ok()?;
            while let Ok(Some(resp)) = stream.message().await {
                if resp.canceled() {
                    return u64::try_from(resp.compact_revision()).ok();
                }
                if !resp.created() {
                    return None;
                }
            }
            None
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn create(&self, object: APIService) -> Result<APIService> {
        let name = codec::name_of(&object)?.to_string();
        let key = self.key(&name);
        let (stored, bytes) = encode_stored(&object)?;
        let txn = Txn::new()
            .when(vec![Compare::create_revision(
                key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(key.as_str(), bytes.clone(), None)])
            .or_else(vec![TxnOp::get(key.as_str(), None)]);
        let what = format!("creating {name}");
        let (resp, ambiguous) = self.txn(txn, &what).await?;
        if resp.succeeded() {
            return Ok(codec::with_revision(
                stored,
                header_revision(resp.header())?,
            ));
        }
        if ambiguous
            && let Some((created, _)) = existing(&resp)
            && let Some(rev) = self
                .applied(
                    &key,
                    u64::try_from(created - 1).unwrap_or_default(),
                    Some(&bytes),
                    &what,
                )
                .await?
        {
            // The attempt without an answer created it.
            return Ok(codec::with_revision(stored, rev));
        }
        Err(Error::AlreadyExists { name })
    }

    async fn update(&self, object: APIService) -> Result<APIService> {
        let name = codec::name_of(&object)?.to_string();
        let expected = match object.metadata.resource_version.as_deref() {
            None | Some("") => {
                return Err(Error::InvalidObject(
                    "metadata.resourceVersion must be set for an update".into(),
                ));
            }
            Some(rv) => to_i64(revision::parse(rv)?)?,
        };
        let key = self.key(&name);
        let (stored, bytes) = encode_stored(&object)?;
        let txn = Txn::new()
            .when(vec![
                Compare::mod_revision(key.as_str(), CompareOp::Equal, expected),
                // A missing key has mod_revision 0: never let "0" create it.
                Compare::version(key.as_str(), CompareOp::Greater, 0),
            ])
            .and_then(vec![TxnOp::put(key.as_str(), bytes.clone(), None)])
            .or_else(vec![TxnOp::get(key.as_str(), None)]);
        let what = format!("updating {name}");
        let (resp, ambiguous) = self.txn(txn, &what).await?;
        if resp.succeeded() {
            return Ok(codec::with_revision(
                stored,
                header_revision(resp.header())?,
            ));
        }
        let current = existing(&resp);
        // Our write would sit above `expected`; a key still at or below it was not written.
        let may_be_ours = current.is_none_or(|(_, modified)| modified > expected);
        if ambiguous
            && may_be_ours
            && let Some(rev) = self
                .applied(
                    &key,
                    u64::try_from(expected).unwrap_or_default(),
                    Some(&bytes),
                    &what,
                )
                .await?
        {
            return Ok(codec::with_revision(stored, rev));
        }
        if current.is_some() {
            Err(Error::Conflict {
                name,
                message: "the object has been modified; please apply your changes to the latest version and try again".into(),
            })
        } else {
            Err(Error::NotFound { name })
        }
    }

    async fn delete(
        &self,
        name: &str,
        preconditions: Option<&Preconditions>,
    ) -> Result<APIService> {
        // Without preconditions too: read, then delete exactly the version read (upstream's
        // guaranteed delete), so that an attempt without an answer can be recognised in etcd's
        // history as the first change after that version.
        let preconditions = preconditions.cloned().unwrap_or_default();
        if let Some(rv) = &preconditions.resource_version {
            revision::parse(rv)?;
        }
        let key = self.key(name);
        let what = format!("deleting {name}");
        for _ in 0..DELETE_RETRIES {
            let resp = self.get_key(&key, &format!("reading {name}")).await?;
            let Some(kv) = resp.kvs().first() else {
                return Err(Error::NotFound { name: name.into() });
            };
            let current = decode_kv(kv)?;
            let seen = kv.mod_revision();
            check_preconditions(
                name,
                &preconditions,
                u64::try_from(seen).unwrap_or_default(),
                &current,
            )?;
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    seen,
                )])
                .and_then(vec![TxnOp::delete(key.as_str(), None)]);
            let (resp, ambiguous) = self.txn(txn, &what).await?;
            if resp.succeeded() {
                let rev = header_revision(resp.header())?;
                // The object as it was when deleted (equal to `current`: the txn checked it).
                return Ok(codec::with_revision(current, rev));
            }
            if ambiguous
                && let Some(rev) = self
                    .applied(&key, u64::try_from(seen).unwrap_or_default(), None, &what)
                    .await?
            {
                return Ok(codec::with_revision(current, rev));
            }
            // Changed between the read and the delete: check the preconditions again.
        }
        Err(Error::Conflict {
            name: name.into(),
            message: "the object kept changing while it was being deleted; try again".into(),
        })
    }

    async fn get(&self, name: &str) -> Result<APIService> {
        let resp = self
            .get_key(&self.key(name), &format!("reading {name}"))
            .await?;
        match resp.kvs().first() {
            Some(kv) => decode_kv(kv),
            None => Err(Error::NotFound { name: name.into() }),
        }
    }

    async fn list(&self, at: Option<&str>) -> Result<ListResult> {
        let at = at.map(revision::parse).transpose()?;
        let mut options = GetOptions::new().with_prefix();
        if let Some(at) = at {
            if at == 0 {
                // etcd reads revision 0 as "latest"; for us it is before everything.
                return Err(too_old(0, 1));
            }
            options = options.with_revision(to_i64(at)?);
        }
        self.open_check()?;
        let prefix = self.prefix.as_str();
        let listed = self
            .call(|mut kv| {
                let options = options.clone();
                async move { kv.get(prefix, Some(options)).await }
            })
            .await;
        let resp = match listed {
            Ok((resp, _)) => resp,
            Err(e) if is_compacted(&e) => {
                let requested = at.unwrap_or_default();
                let oldest = self.compacted_revision(requested).await;
                return Err(Error::TooOld {
                    requested: revision::format(requested),
                    oldest_available: oldest.map_or_else(|| "unknown".into(), revision::format),
                });
            }
            Err(e) if is_future(&e) => {
                return Err(Error::TooNew {
                    requested: revision::format(at.unwrap_or_default()),
                    current: revision::format(self.etcd_revision().await.unwrap_or_default()),
                });
            }
            Err(e) => return Err(etcd_error("listing", e)),
        };
        let items = resp
            .kvs()
            .iter()
            .map(decode_kv)
            .collect::<Result<Vec<_>>>()?;
        let rev = match at {
            Some(at) => at,
            None => header_revision(resp.header())?,
        };
        Ok(ListResult {
            items,
            resource_version: revision::format(rev),
        })
    }

    async fn watch(&self, from: Option<&str>) -> Result<Watch> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed());
        }
        let from = match from {
            // "From now" is etcd's current revision (a quorum read), not the last event the
            // feed happens to have delivered: a write acknowledged before this call is not
            // reported.
            None => self.etcd_revision().await?,
            Some(rv) => {
                let from = revision::parse(rv)?;
                if from > self.hub.latest() {
                    let current = self.etcd_revision().await?;
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
        Ok(revision::format(self.etcd_revision().await?))
    }

    fn compare_resource_versions(&self, a: &str, b: &str) -> Result<std::cmp::Ordering> {
        revision::compare(a, b)
    }

    async fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        self.stop.send_replace(true);
        if let Some(feed) = self.feed.lock().await.take() {
            feed.await
                .map_err(|e| Error::Internal(format!("etcd watch task failed: {e}")))?;
        }
        self.hub.close();
        Ok(())
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        self.hub.close();
    }
}

/// The store's one etcd watch.
struct Feed {
    members: Arc<Members>,
    /// The member the current stream is on.
    member: usize,
    prefix: String,
    hub: Arc<Hub>,
    /// The newest revision published to the hub; the watch resumes after it.
    last: u64,
    max_backoff: Duration,
}

/// Why a watch stream ended.
enum End {
    /// etcd no longer has the revisions after `last`; it has everything from this one on.
    Compacted(u64),
    /// The connection or the stream failed.
    Failed(String),
}

impl Feed {
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(50);
        // Streams lost in a row without one being established.
        let mut failures = 0;
        loop {
            let mut connected = false;
            let end = tokio::select! {
                end = self.stream(&mut connected) => end,
                _ = stop.wait_for(|s| *s) => return,
            };
            if connected {
                backoff = Duration::from_millis(50);
                failures = 0;
            }
            match end {
                End::Compacted(oldest) => {
                    let last = self.last;
                    tracing::warn!(
                        last,
                        oldest,
                        "etcd compacted revisions the watch had not seen; watchers must list again"
                    );
                    let resume = oldest.saturating_sub(1).max(last);
                    self.hub.reset(resume, || too_old(last, oldest));
                    self.last = resume;
                }
                End::Failed(why) => {
                    self.members.failed(self.member);
                    failures += 1;
                    if failures < self.members.len() {
                        // Another member may still serve it: resume there at once, and keep
                        // accepting watches meanwhile (they wait, as open ones do).
                        tracing::warn!(error = %why, "etcd watch lost; resuming on another member");
                        continue;
                    }
                    tracing::warn!(error = %why, retry_in = ?backoff, "etcd watch lost; reconnecting");
                    self.hub.set_down(Some(format!("etcd watch lost: {why}")));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(self.max_backoff);
                }
            }
        }
    }

    /// Watches from `last + 1` and publishes until the stream ends.
    async fn stream(&mut self, connected: &mut bool) -> End {
        let Ok(start) = i64::try_from(self.last.saturating_add(1)) else {
            return End::Failed("revision out of range".into());
        };
        let options = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(start);
        let (member, client) = self.members.current();
        self.member = member;
        let mut watch_client = client
            .watch_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let mut stream = match watch_client
            .watch(self.prefix.as_str(), Some(options))
            .await
        {
            Ok(stream) => stream,
            Err(e) => return End::Failed(e.to_string()),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => return End::Failed("etcd closed the watch stream".into()),
                Err(e) => return End::Failed(e.to_string()),
            };
            if resp.canceled() {
                let compacted = resp.compact_revision();
                if compacted > 0 {
                    return End::Compacted(u64::try_from(compacted).unwrap_or_default());
                }
                return End::Failed(format!("etcd canceled the watch: {}", resp.cancel_reason()));
            }
            if resp.created() {
                *connected = true;
                self.hub.set_down(None);
            }
            let events = self.convert(resp.events());
            if let Some((rev, _)) = events.last() {
                self.last = *rev;
                self.hub.publish(events);
            }
        }
    }

    /// Watch events → hub events. A value that does not decode is logged and skipped (it was
    /// not written by a kube-aggregator; a list reports it as an error).
    fn convert(&self, events: &[etcd_client::Event]) -> Vec<Rev> {
        let mut out = Vec::with_capacity(events.len());
        for event in events {
            let Some(kv) = event.kv() else { continue };
            let Ok(rev) = u64::try_from(kv.mod_revision()) else {
                continue;
            };
            let converted = match event.event_type() {
                EtcdEventType::Put => decode_kv(kv).map(|object| WatchEvent {
                    kind: if kv.create_revision() == kv.mod_revision() {
                        EventType::Added
                    } else {
                        EventType::Modified
                    },
                    object,
                }),
                EtcdEventType::Delete => self.deleted(event, kv, rev),
            };
            match converted {
                Ok(e) => out.push((rev, Arc::new(e))),
                Err(error) => tracing::error!(
                    key = %String::from_utf8_lossy(kv.key()),
                    rev,
                    %error,
                    "skipping an etcd watch event that is not an APIService"
                ),
            }
        }
        out
    }

    fn deleted(&self, event: &etcd_client::Event, kv: &KeyValue, rev: u64) -> Result<WatchEvent> {
        let object = match event.prev_kv() {
            Some(prev) => decode_kv(prev)?,
            None => {
                // etcd omits prev_kv when that revision was compacted away; the name is all
                // that is left.
                let name = String::from_utf8_lossy(kv.key())
                    .strip_prefix(self.prefix.as_str())
                    .unwrap_or_default()
                    .to_string();
                let mut object = APIService::default();
                object.metadata.name = Some(name);
                object
            }
        };
        Ok(WatchEvent {
            kind: EventType::Deleted,
            object: codec::with_revision(object, rev),
        })
    }
}
