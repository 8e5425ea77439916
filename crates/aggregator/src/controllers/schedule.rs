//! The per-key timetable every controller loop keeps: when each key is next due, which keys are
//! being worked on, and which were asked for again while running. Plain data over
//! `tokio::time::Instant`, so the loops' timers can be tested with paused time.

use std::collections::HashMap;
use std::hash::Hash;

use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// When the key should run next; `None` while running or when nothing is planned.
    due: Option<Instant>,
    /// A job for the key is in flight.
    running: bool,
    /// Asked for again while running: run once more as soon as the job finishes.
    again: bool,
}

/// Keys and when they are due. At most one job per key runs at a time, so each key has one
/// writer.
#[derive(Debug)]
pub(crate) struct Schedule<K> {
    entries: HashMap<K, Entry>,
}

impl<K> Default for Schedule<K> {
    fn default() -> Self {
        Schedule {
            entries: HashMap::new(),
        }
    }
}

impl<K: Clone + Eq + Hash + Ord> Schedule<K> {
    /// Makes `key` due at `at` (the earlier time wins). A running key runs again right after
    /// its current job.
    pub(crate) fn due_at(&mut self, key: K, at: Instant) {
        let entry = self.entries.entry(key).or_insert(Entry {
            due: None,
            running: false,
            again: false,
        });
        if entry.running {
            entry.again = true;
        } else {
            entry.due = Some(entry.due.map_or(at, |d| d.min(at)));
        }
    }

    /// Forgets `key`; a job still running for it finishes without being rescheduled.
    pub(crate) fn remove(&mut self, key: &K) {
        self.entries.remove(key);
    }

    /// The earliest due time of the keys that are not running.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| !e.running)
            .filter_map(|e| e.due)
            .min()
    }

    /// Takes up to `limit` keys due at `now` (earliest first, then by key, so the order is
    /// stable) and marks them running.
    pub(crate) fn take_due(&mut self, now: Instant, limit: usize) -> Vec<K> {
        let mut ready: Vec<(Instant, K)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.running)
            .filter_map(|(k, e)| e.due.filter(|d| *d <= now).map(|d| (d, k.clone())))
            .collect();
        ready.sort();
        ready.truncate(limit);
        ready
            .into_iter()
            .map(|(_, key)| {
                if let Some(e) = self.entries.get_mut(&key) {
                    e.running = true;
                    e.due = None;
                }
                key
            })
            .collect()
    }

    /// A job for `key` finished: it is next due at `next`, or at `now` when it was asked for
    /// while running. Unknown (removed) keys are ignored.
    pub(crate) fn finished(&mut self, key: &K, now: Instant, next: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.running = false;
            e.due = Some(if e.again { now } else { next });
            e.again = false;
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for (a `select!` branch).
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_run_once_at_a_time_and_again_when_asked_while_running() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut sched = Schedule::default();
        sched.due_at("b", t0 + s);
        sched.due_at("a", t0 + s);
        sched.due_at("c", t0 + 3 * s);
        sched.due_at("c", t0 + 2 * s);
        assert_eq!(sched.next_due(), Some(t0 + s));
        assert!(sched.take_due(t0, 10).is_empty());
        assert_eq!(sched.take_due(t0 + s, 1), ["a"]);
        assert_eq!(sched.take_due(t0 + s, 10), ["b"]);
        assert_eq!(sched.next_due(), Some(t0 + 2 * s));
        // Asked for while running: due again as soon as it finishes.
        sched.due_at("a", t0 + s);
        sched.finished(&"a", t0 + 2 * s, t0 + 30 * s);
        sched.finished(&"b", t0 + 2 * s, t0 + 30 * s);
        assert_eq!(sched.take_due(t0 + 2 * s, 10), ["a", "c"]);
        sched.remove(&"c");
        sched.finished(&"c", t0 + 3 * s, t0 + 4 * s);
        assert!(!sched.entries.contains_key(&"c"));
        assert_eq!(sched.next_due(), Some(t0 + 30 * s));
        assert_eq!(sched.entries.len(), 2);
    }
}
