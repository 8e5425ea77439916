//! Watch fan-out: a back-end publishes each committed change once; every watcher of the store is
//! fed from that one feed.
//!
//! The hub keeps a bounded ring of recent events (the watch cache). All events with a revision
//! above `floor` are in the ring, so a watch from a revision `>= floor` is served from memory; an
//! older one is served from the back-end's [`History`] (the embedded revision log) or fails with
//! [`Error::TooOld`] (etcd, as upstream's watch cache does).
//!
//! A new watcher joins the live feed only while holding the hub's lock and only when its whole
//! cached backlog fits its free buffer, so nothing published in between can be missed or sent
//! twice; a watcher with a longer backlog is first fed by a catch-up task that waits for it to
//! read (memory stays bounded by the channel), then joins. A live watcher whose buffer is full
//! gets [`Error::WatcherTooSlow`] in the one slot always kept free for it, and is dropped.
//!
//! Per idle watcher the cost is one tokio channel (its first 32-slot block, about 2 KB) and one
//! 16-byte entry in a `Vec`; events are `Arc`s shared by all watchers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::{Error, EventType, Options, Result, Watch, WatchEvent, codec, revision};

/// One event with its revision.
pub(crate) type Rev = (u64, Arc<WatchEvent>);

type Tx = mpsc::Sender<Result<Arc<WatchEvent>>>;

/// How many events a catch-up task moves per step.
const CHUNK: usize = 256;

/// Events older than the watch cache, read from the back-end.
#[async_trait]
pub(crate) trait History: Send + Sync + 'static {
    /// Fails with [`Error::TooOld`] unless every event after revision `after` is retained.
    async fn check(&self, after: u64) -> Result<()>;
    /// Up to `limit` events with a revision greater than `after`, in revision order; fails with
    /// [`Error::TooOld`] when they are no longer retained.
    async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Rev>>;
}

struct Watcher {
    tx: Tx,
    /// The last revision this watcher has been sent or asked to start after.
    pos: u64,
}

struct State {
    ring: VecDeque<Rev>,
    /// Every event with a revision above this is in `ring` (or not yet published).
    floor: u64,
    /// The newest revision published.
    latest: u64,
    watchers: Vec<Watcher>,
    /// Closed receivers are swept out when `watchers` reaches this length.
    sweep_at: usize,
    closed: bool,
    /// Why new watches are refused for now (the back-end's feed is down), if they are.
    down: Option<String>,
}

/// The fan-out point of one store.
pub(crate) struct Hub {
    state: Mutex<State>,
    cache_size: usize,
    buffer: usize,
    history: Option<Arc<dyn History>>,
    closed: tokio::sync::watch::Sender<bool>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock leaves the state consistent (every mutation is a single
    // push/pop/retain), so a poisoned lock is still usable.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) fn too_old(requested: u64, oldest_available: u64) -> Error {
    Error::TooOld {
        requested: revision::format(requested),
        oldest_available: revision::format(oldest_available),
    }
}

fn closed_error() -> Error {
    Error::Unavailable("the store is closed".into())
}

impl Hub {
    /// A hub whose history starts at `revision` (the back-end's current revision). Must be called
    /// inside a tokio runtime when bookmarks are enabled.
    pub(crate) fn new(
        revision: u64,
        options: &Options,
        history: Option<Arc<dyn History>>,
    ) -> Arc<Hub> {
        let hub = Arc::new(Hub {
            state: Mutex::new(State {
                ring: VecDeque::new(),
                floor: revision,
                latest: revision,
                watchers: Vec::new(),
                sweep_at: 64,
                closed: false,
                down: None,
            }),
            cache_size: options.watch_cache_size,
            buffer: options.watcher_buffer,
            history,
            closed: tokio::sync::watch::Sender::new(false),
        });
        if let Some(every) = options.bookmark_interval {
            tokio::spawn(bookmark_loop(Arc::downgrade(&hub), every));
        }
        hub
    }

    /// The newest revision published.
    pub(crate) fn latest(&self) -> u64 {
        lock(&self.state).latest
    }

    /// Number of registered live watchers (closed ones may linger until the next sweep).
    #[cfg(test)]
    pub(crate) fn watcher_count(&self) -> usize {
        lock(&self.state).watchers.len()
    }

    /// Starts a watch after revision `from` (`None`: after the latest published revision).
    pub(crate) async fn watch(self: &Arc<Self>, from: Option<u64>) -> Result<Watch> {
        // One slot more than the buffer: the last one is kept for the error that ends the watch.
        let (tx, rx) = mpsc::channel(self.buffer + 1);
        let (pos, floor) = {
            let mut st = lock(&self.state);
            if st.closed {
                return Err(closed_error());
            }
            if let Some(why) = &st.down {
                return Err(Error::Unavailable(why.clone()));
            }
            let pos = from.unwrap_or(st.latest);
            if pos >= st.floor && self.try_join(&mut st, &tx, pos) {
                return Ok(Watch::new(rx));
            }
            (pos, st.floor)
        };
        if pos < floor {
            match &self.history {
                Some(history) => history.check(pos).await?,
                None => return Err(too_old(pos, floor)),
            }
        }
        tokio::spawn(Arc::clone(self).catch_up(tx, pos));
        Ok(Watch::new(rx))
    }

    /// With the lock held and `pos >= floor`: if the cached backlog after `pos` fits the free
    /// buffer (keeping the error slot), queues it and registers the watcher live. Returns whether
    /// the watcher is done joining (registered, or its receiver is gone).
    fn try_join(&self, st: &mut State, tx: &Tx, pos: u64) -> bool {
        let start = st.ring.partition_point(|(rev, _)| *rev <= pos);
        let backlog = st.ring.len() - start;
        if backlog + 1 > tx.capacity() {
            return false;
        }
        let mut last = pos;
        for (rev, event) in st.ring.range(start..) {
            // Cannot be Full (checked above, and only this code sends to `tx`): an error means
            // the receiver is gone.
            if tx.try_send(Ok(Arc::clone(event))).is_err() {
                return true;
            }
            last = *rev;
        }
        if st.watchers.len() >= st.sweep_at {
            st.watchers.retain(|w| !w.tx.is_closed());
            st.sweep_at = (st.watchers.len() * 2).max(64);
        }
        st.watchers.push(Watcher {
            tx: tx.clone(),
            pos: last,
        });
        true
    }

    /// Feeds a watcher whose backlog does not fit its buffer, at the pace it reads, then joins it
    /// to the live feed.
    async fn catch_up(self: Arc<Self>, tx: Tx, mut pos: u64) {
        enum Next {
            Joined,
            Batch(Vec<Rev>),
            History,
        }
        let mut closed = self.closed.subscribe();
        loop {
            let next = {
                let mut st = lock(&self.state);
                if st.closed {
                    return;
                }
                if pos < st.floor {
                    Next::History
                } else if self.try_join(&mut st, &tx, pos) {
                    Next::Joined
                } else {
                    let start = st.ring.partition_point(|(rev, _)| *rev <= pos);
                    Next::Batch(st.ring.range(start..).take(CHUNK).cloned().collect())
                }
            };
            let batch = match next {
                Next::Joined => return,
                Next::Batch(batch) => batch,
                Next::History => {
                    let floor = lock(&self.state).floor;
                    let fetched = match &self.history {
                        Some(history) => history.events_after(pos, CHUNK).await,
                        None => Err(too_old(pos, floor)),
                    };
                    let fetched = fetched.and_then(|batch| {
                        if batch.iter().any(|(rev, _)| *rev > pos) {
                            Ok(batch)
                        } else {
                            Err(Error::Internal(format!(
                                "revision history after {pos} ends before the watch cache starts at {floor}"
                            )))
                        }
                    });
                    match fetched {
                        Ok(batch) => batch,
                        Err(e) => {
                            send_final(&tx, e, &mut closed).await;
                            return;
                        }
                    }
                }
            };
            if batch.is_empty() {
                // Nothing left to send but no free slot to join with: wait until the watcher
                // reads (or goes away).
                tokio::select! {
                    permit = tx.reserve() => if permit.is_err() { return },
                    _ = closed.wait_for(|c| *c) => return,
                }
                continue;
            }
            for (rev, event) in batch {
                if rev <= pos {
                    continue;
                }
                tokio::select! {
                    sent = tx.send(Ok(event)) => if sent.is_err() { return },
                    _ = closed.wait_for(|c| *c) => return,
                }
                pos = rev;
            }
        }
    }

    /// Publishes committed events (in revision order) to the cache and every live watcher.
    /// Events at or below the latest published revision are ignored, so a back-end that replays
    /// after reconnecting cannot deliver one twice.
    pub(crate) fn publish(&self, events: Vec<Rev>) {
        let mut st = lock(&self.state);
        if st.closed {
            return;
        }
        let mut fresh = Vec::with_capacity(events.len());
        for (rev, event) in events {
            if rev > st.latest {
                st.latest = rev;
                st.ring.push_back((rev, Arc::clone(&event)));
                fresh.push((rev, event));
            }
        }
        while st.ring.len() > self.cache_size {
            if let Some((rev, _)) = st.ring.pop_front() {
                st.floor = rev;
            }
        }
        if fresh.is_empty() {
            return;
        }
        let buffer = self.buffer;
        st.watchers.retain_mut(|w| deliver(w, &fresh, buffer));
    }

    /// Forgets everything before `revision` and ends every live watcher with `error()`: the
    /// back-end lost events it can no longer replay (etcd compacted them while disconnected).
    pub(crate) fn reset(&self, revision: u64, error: impl Fn() -> Error) {
        let mut st = lock(&self.state);
        st.ring.clear();
        st.floor = revision;
        st.latest = revision;
        for w in st.watchers.drain(..) {
            // Live watchers always have their error slot free.
            let _ = w.tx.try_send(Err(error()));
        }
    }

    /// Marks the feed as down (new watches fail with `Unavailable(why)`) or up again (`None`).
    pub(crate) fn set_down(&self, why: Option<String>) {
        lock(&self.state).down = why;
    }

    /// Ends every watch (their `next()` returns `None`) and refuses new ones.
    pub(crate) fn close(&self) {
        {
            let mut st = lock(&self.state);
            st.closed = true;
            st.watchers.clear();
            st.ring.clear();
        }
        self.closed.send_replace(true);
    }

    /// Sends each live watcher with room for it a bookmark at the newest revision it has seen,
    /// and drops watchers whose receiver is gone.
    fn bookmark(&self) {
        let mut st = lock(&self.state);
        let latest = st.latest;
        let mut shared: Option<Rev> = None;
        st.watchers.retain_mut(|w| {
            if w.tx.is_closed() {
                return false;
            }
            // Keep the error slot free: a bookmark never makes a watcher "too slow".
            if w.tx.capacity() < 2 {
                return true;
            }
            let rev = latest.max(w.pos);
            let event = match &shared {
                Some((r, e)) if *r == rev => Arc::clone(e),
                _ => {
                    let e = Arc::new(WatchEvent {
                        kind: EventType::Bookmark,
                        object: codec::bookmark(rev),
                    });
                    shared = Some((rev, Arc::clone(&e)));
                    e
                }
            };
            w.tx.try_send(Ok(event)).is_ok()
        });
    }
}

/// Sends `events` newer than the watcher's position; returns whether it stays registered.
fn deliver(w: &mut Watcher, events: &[Rev], buffer: usize) -> bool {
    for (rev, event) in events {
        if *rev <= w.pos {
            continue;
        }
        if w.tx.capacity() <= 1 {
            let _ =
                w.tx.try_send(Err(Error::WatcherTooSlow { buffered: buffer }));
            return false;
        }
        if w.tx.try_send(Ok(Arc::clone(event))).is_err() {
            return false;
        }
        w.pos = *rev;
    }
    true
}

/// Sends the error that ends a watch, unless the store closes first.
async fn send_final(tx: &Tx, error: Error, closed: &mut tokio::sync::watch::Receiver<bool>) {
    tokio::select! {
        _ = tx.send(Err(error)) => {}
        _ = closed.wait_for(|c| *c) => {}
    }
}

async fn bookmark_loop(hub: Weak<Hub>, every: Duration) {
    let Some(mut closed) = hub.upgrade().map(|h| h.closed.subscribe()) else {
        return;
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            // Also ends when the hub is dropped (the sender goes away).
            _ = closed.wait_for(|c| *c) => return,
        }
        match hub.upgrade() {
            Some(hub) => hub.bookmark(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::APIService;

    fn event(rev: u64) -> Rev {
        let mut object = APIService::default();
        object.metadata.name = Some(format!("o{rev}"));
        (
            rev,
            Arc::new(WatchEvent {
                kind: EventType::Added,
                object: codec::with_revision(object, rev),
            }),
        )
    }

    fn opts(cache: usize, buffer: usize) -> Options {
        Options::default()
            .watch_cache_size(cache)
            .watcher_buffer(buffer)
            .bookmark_interval(None)
    }

    async fn revs(w: &mut Watch, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        for _ in 0..n {
            match w.next().await {
                Some(Ok(e)) => out.push(revision::parse(e.resource_version()).unwrap_or(0)),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        out
    }

    /// History that has every revision from `oldest` on.
    struct FakeHistory {
        oldest_after: u64,
        until: u64,
    }

    #[async_trait]
    impl History for FakeHistory {
        async fn check(&self, after: u64) -> Result<()> {
            if after < self.oldest_after {
                return Err(too_old(after, self.oldest_after));
            }
            Ok(())
        }
        async fn events_after(&self, after: u64, limit: usize) -> Result<Vec<Rev>> {
            self.check(after).await?;
            Ok((after + 1..=self.until).take(limit).map(event).collect())
        }
    }

    #[tokio::test]
    async fn live_watchers_get_every_event_once_in_order() {
        let hub = Hub::new(1, &opts(8, 16), None);
        let mut a = hub
            .watch(None)
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        hub.publish(vec![event(2), event(3)]);
        let mut b = hub
            .watch(Some(2))
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        hub.publish(vec![event(3), event(4)]); // 3 is a replay and must be ignored
        assert_eq!(revs(&mut a, 3).await, vec![2, 3, 4]);
        assert_eq!(revs(&mut b, 2).await, vec![3, 4]);
        assert_eq!(hub.latest(), 4);
    }

    #[tokio::test]
    async fn a_watch_older_than_the_cache_without_history_is_too_old() {
        let hub = Hub::new(1, &opts(2, 16), None);
        hub.publish((2..=6).map(event).collect());
        assert!(matches!(
            hub.watch(Some(3)).await,
            Err(Error::TooOld { .. })
        ));
        let mut w = hub
            .watch(Some(4))
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        assert_eq!(revs(&mut w, 2).await, vec![5, 6]);
    }

    #[tokio::test]
    async fn a_long_backlog_is_caught_up_then_joined_without_gap() {
        let hub = Hub::new(1, &opts(10, 3), None);
        hub.publish((2..=11).map(event).collect());
        let mut w = hub
            .watch(Some(1))
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        let mut got = revs(&mut w, 4).await;
        hub.publish((12..=13).map(event).collect());
        got.extend(revs(&mut w, 8).await);
        assert_eq!(got, (2..=13).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn history_feeds_watchers_older_than_the_cache() {
        let history = Arc::new(FakeHistory {
            oldest_after: 3,
            until: 600,
        });
        let hub = Hub::new(1, &opts(4, 5), Some(history));
        hub.publish((2..=600).map(event).collect());
        assert!(matches!(
            hub.watch(Some(2)).await,
            Err(Error::TooOld { .. })
        ));
        let mut w = hub
            .watch(Some(3))
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        assert_eq!(revs(&mut w, 597).await, (4..=600).collect::<Vec<_>>());
        hub.publish(vec![event(601)]);
        assert_eq!(revs(&mut w, 1).await, vec![601]);
    }

    #[tokio::test]
    async fn a_full_buffer_ends_the_watcher_with_too_slow() {
        let hub = Hub::new(1, &opts(100, 3), None);
        let mut slow = hub
            .watch(None)
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        let mut fast = hub
            .watch(None)
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        for r in 2..=10 {
            hub.publish(vec![event(r)]);
            assert_eq!(revs(&mut fast, 1).await, vec![r]);
        }
        assert_eq!(revs(&mut slow, 3).await, vec![2, 3, 4]);
        assert!(matches!(
            slow.next().await,
            Some(Err(Error::WatcherTooSlow { buffered: 3 }))
        ));
        assert!(slow.next().await.is_none());
        assert_eq!(hub.watcher_count(), 1);
    }

    #[tokio::test]
    async fn close_ends_watches_and_refuses_new_ones() {
        let hub = Hub::new(1, &opts(4, 4), None);
        let mut w = hub
            .watch(None)
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        hub.close();
        assert!(w.next().await.is_none());
        assert!(matches!(hub.watch(None).await, Err(Error::Unavailable(_))));
    }

    #[tokio::test]
    async fn reset_ends_live_watchers_with_the_error() {
        let hub = Hub::new(1, &opts(4, 4), None);
        let mut w = hub
            .watch(None)
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        hub.reset(50, || too_old(1, 50));
        assert!(matches!(w.next().await, Some(Err(Error::TooOld { .. }))));
        assert!(w.next().await.is_none());
        assert!(matches!(
            hub.watch(Some(10)).await,
            Err(Error::TooOld { .. })
        ));
        assert!(hub.watch(Some(50)).await.is_ok());
    }

    #[tokio::test]
    async fn down_refuses_new_watches_until_up() {
        let hub = Hub::new(1, &opts(4, 4), None);
        hub.set_down(Some("etcd is unreachable".into()));
        assert!(matches!(hub.watch(None).await, Err(Error::Unavailable(m)) if m.contains("etcd")));
        hub.set_down(None);
        assert!(hub.watch(None).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn bookmarks_carry_the_latest_revision() {
        let hub = Hub::new(
            1,
            &opts(4, 4).bookmark_interval(Some(Duration::from_secs(60))),
            None,
        );
        let mut w = hub
            .watch(None)
            .await
            .ok()
            .unwrap_or_else(|| panic!("watch"));
        hub.publish(vec![event(2)]);
        assert_eq!(revs(&mut w, 1).await, vec![2]);
        tokio::time::sleep(Duration::from_secs(61)).await;
        match w.next().await {
            Some(Ok(e)) => {
                assert_eq!(e.kind, EventType::Bookmark);
                assert_eq!(e.resource_version(), "2");
            }
            other => panic!("expected a bookmark, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn dropped_watchers_are_swept() {
        let hub = Hub::new(1, &opts(4, 4), None);
        for _ in 0..200 {
            drop(hub.watch(None).await);
        }
        assert!(hub.watcher_count() <= 128, "{}", hub.watcher_count());
        hub.publish(vec![event(2)]);
        assert_eq!(hub.watcher_count(), 0);
    }
}
