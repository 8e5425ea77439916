//! The members of an etcd cluster and how requests move between them.
//!
//! Each endpoint gets its own connection and requests stick to one member, moving to the next
//! when it fails (as etcd's Go client pins an endpoint) — not one tonic balanced channel over
//! all endpoints: once a member has been connected, tonic's reconnecting service stays "ready"
//! after the member dies and fails each call with "tcp connect error" instead, and the balancer,
//! seeing no load on it, keeps choosing it (the replicas end-to-end test saw about half the
//! requests of healthy aggregator replicas fail for as long as the member stayed down).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType as EtcdEventType, KvClient, WatchOptions};

use super::{MAX_RESPONSE_BYTES, RETRYABLE_CODES, etcd_error};
use crate::Result;

/// What a failed request tells about its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// It never reached a member (no connection, or the member has no leader and refused it):
    /// safe to send again anywhere.
    NotSent,
    /// It may or may not have been applied (the connection broke mid-request, a timeout, a
    /// leader lost while it was pending).
    Ambiguous,
    /// etcd answered (compacted, future revision, invalid request …): do not retry.
    Final,
}

fn classify(e: &etcd_client::Error) -> Failure {
    match e {
        etcd_client::Error::GRpcStatus(status) => {
            let message = status.message();
            // tonic reports a refused or failed connect as `Unavailable` "tcp connect error"
            // with hyper's ConnectError as the source; only its Debug form names it.
            if message.contains("etcdserver: no leader")
                || message.contains("tcp connect error")
                || format!("{status:?}").contains("ConnectError(")
            {
                Failure::NotSent
            } else if RETRYABLE_CODES.contains(&(status.code() as i32))
                || message.contains("etcdserver: request timed out")
                || message.contains("etcdserver: leader changed")
            {
                Failure::Ambiguous
            } else {
                Failure::Final
            }
        }
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_) => Failure::Ambiguous,
        _ => Failure::Final,
    }
}

/// Longest pause between rounds of retries over all members.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// One connection per etcd member and the member requests go to.
pub(super) struct Members {
    clients: Vec<Client>,
    kvs: Vec<KvClient>,
    current: AtomicUsize,
}

impl Members {
    pub(super) async fn connect(urls: &[String], options: ConnectOptions) -> Result<Members> {
        let mut clients = Vec::with_capacity(urls.len());
        for url in urls {
            // Connecting is lazy: a member that is down now costs nothing until it is used.
            let client = Client::connect([url], Some(options.clone()))
                .await
                .map_err(|e| etcd_error(&format!("connecting to {url}"), e))?;
            clients.push(client);
        }
        let kvs = clients
            .iter()
            .map(|c| c.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES))
            .collect();
        Ok(Members {
            clients,
            kvs,
            current: AtomicUsize::new(0),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.clients.len()
    }

    /// The member in use: its index and client.
    pub(super) fn current(&self) -> (usize, &Client) {
        let i = self.current.load(Ordering::SeqCst) % self.clients.len();
        (i, &self.clients[i])
    }

    /// Member `index` failed: move to the next one, unless another request already moved on.
    pub(super) fn failed(&self, index: usize) {
        let next = (index + 1) % self.clients.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// The first change of a key after a revision, from etcd's history.
pub(super) struct Change {
    /// A put (else a deletion).
    pub(super) put: bool,
    /// The value put.
    pub(super) value: Vec<u8>,
    /// The revision of the change.
    pub(super) revision: u64,
}

/// Why [`history`] has no answer.
pub(super) enum History {
    /// etcd no longer has it (compacted).
    Gone(String),
    /// This member failed; another may answer.
    Member(String),
}

/// The first change of `key` from revision `start` on, through a watch on `client`.
pub(super) async fn history(
    client: &Client,
    key: &str,
    start: i64,
) -> std::result::Result<Option<Change>, History> {
    let options = WatchOptions::new().with_start_revision(start);
    let mut stream = client
        .watch_client()
        .watch(key, Some(options))
        .await
        .map_err(|e| History::Member(e.to_string()))?;
    let mut created = false;
    loop {
        let next = if created {
            // etcd sends the history right after the creation; silence means there is none.
            match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
                Err(_) => return Ok(None),
                Ok(next) => next,
            }
        } else {
            stream.message().await
        };
        let Some(resp) = next.map_err(|e| History::Member(e.to_string()))? else {
            return Err(History::Member("the watch ended".into()));
        };
        if resp.canceled() {
            return Err(History::Gone(format!(
                "etcd no longer has revision {start} (compacted at {})",
                resp.compact_revision()
            )));
        }
        if let Some(change) = first_change(&resp) {
            return Ok(Some(change));
        }
        created |= resp.created();
    }
}

fn first_change(resp: &etcd_client::WatchResponse) -> Option<Change> {
    let event = resp.events().first()?;
    let kv = event.kv()?;
    Some(Change {
        put: event.event_type() == EtcdEventType::Put,
        value: kv.value().to_vec(),
        revision: u64::try_from(kv.mod_revision()).ok()?,
    })
}

/// Runs `op` on the current member; when it fails without an answer, moves to the next member
/// and tries again (pausing 25 ms, doubling up to 500 ms, after each round over all members)
/// until an answer comes or `budget` has passed and every member was tried. Also returns
/// whether an attempt before the answer may have been applied (only writes care).
pub(super) async fn call<T, F, Fut>(
    members: &Members,
    closed: &AtomicBool,
    budget: Duration,
    op: F,
) -> std::result::Result<(T, bool), etcd_client::Error>
where
    F: Fn(KvClient) -> Fut,
    Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
{
    let start = tokio::time::Instant::now();
    let mut ambiguous = false;
    let mut failures = 0;
    let mut pause = Duration::from_millis(25);
    loop {
        let (index, _) = members.current();
        let error = match op(members.kvs[index].clone()).await {
            Ok(answer) => return Ok((answer, ambiguous)),
            Err(e) => e,
        };
        let failure = classify(&error);
        failures += 1;
        if failure == Failure::Final
            || closed.load(Ordering::SeqCst)
            || (start.elapsed() >= budget && failures >= members.len())
        {
            return Err(error);
        }
        ambiguous |= failure == Failure::Ambiguous;
        tracing::debug!(member = index, %error, "etcd request failed; trying the next member");
        members.failed(index);
        if failures % members.len() == 0 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }
}
