//! Tunables shared by both back-ends. Every field has a default suited to one aggregator serving
//! a cluster's APIServices (a few hundred objects, a few writes a minute, thousands of watchers).

use std::time::Duration;

use crate::{Error, Result};

/// Store tunables; [`Options::default`] gives the values documented on each field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Events kept in memory (the watch cache) so that a watch starting from a recent revision is
    /// served without touching the back-end. A watch from an older revision is served from the
    /// embedded revision log, or fails with [`Error::TooOld`] on etcd (as upstream's watch cache
    /// does). By default 1024.
    pub watch_cache_size: usize,
    /// Events buffered per watcher before it is cut off with [`Error::WatcherTooSlow`]. Memory
    /// for the buffer is allocated as events arrive (32 at a time), so idle watchers stay small.
    /// By default 100.
    pub watcher_buffer: usize,
    /// Entries of the embedded revision log (one per write). A watch or exact list from a
    /// revision older than the log fails with [`Error::TooOld`]. By default 5000.
    pub history_size: u64,
    /// How often every watcher receives a [`crate::EventType::Bookmark`] carrying the latest
    /// revision it has seen (`None` disables bookmarks). By default 60 s.
    pub bookmark_interval: Option<Duration>,
    /// etcd: how long one request may take before it fails with [`Error::Unavailable`].
    /// By default 10 s.
    pub request_timeout: Duration,
    /// etcd: how long connecting to an endpoint may take. By default 3 s.
    pub connect_timeout: Duration,
    /// etcd: the longest pause between attempts to re-establish the shared watch after etcd
    /// went away (the pause starts at 50 ms and doubles). By default 2 s.
    pub max_reconnect_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            watch_cache_size: 1024,
            watcher_buffer: 100,
            history_size: 5000,
            bookmark_interval: Some(Duration::from_secs(60)),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            max_reconnect_backoff: Duration::from_secs(2),
        }
    }
}

impl Options {
    /// Sets [`Options::watch_cache_size`].
    pub fn watch_cache_size(mut self, events: usize) -> Self {
        self.watch_cache_size = events;
        self
    }

    /// Sets [`Options::watcher_buffer`].
    pub fn watcher_buffer(mut self, events: usize) -> Self {
        self.watcher_buffer = events;
        self
    }

    /// Sets [`Options::history_size`].
    pub fn history_size(mut self, entries: u64) -> Self {
        self.history_size = entries;
        self
    }

    /// Sets [`Options::bookmark_interval`].
    pub fn bookmark_interval(mut self, interval: Option<Duration>) -> Self {
        self.bookmark_interval = interval;
        self
    }

    /// Sets [`Options::request_timeout`].
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`Options::connect_timeout`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`Options::max_reconnect_backoff`].
    pub fn max_reconnect_backoff(mut self, backoff: Duration) -> Self {
        self.max_reconnect_backoff = backoff;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::InvalidOptions(what.to_string()));
        if self.watcher_buffer == 0 {
            return bad("watcher_buffer must be at least 1");
        }
        // The channel holds the buffer plus one slot reserved for the final error.
        if self.watcher_buffer >= tokio::sync::Semaphore::MAX_PERMITS - 1 {
            return bad("watcher_buffer is too large");
        }
        if self.history_size == 0 {
            return bad("history_size must be at least 1");
        }
        if self.bookmark_interval.is_some_and(|d| d.is_zero()) {
            return bad("bookmark_interval must be positive");
        }
        if self.request_timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("etcd timeouts must be positive");
        }
        if self.max_reconnect_backoff.is_zero() {
            return bad("max_reconnect_backoff must be positive");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zeroes_are_not() {
        assert!(Options::default().validate().is_ok());
        assert!(Options::default().watcher_buffer(0).validate().is_err());
        assert!(Options::default().history_size(0).validate().is_err());
        assert!(
            Options::default()
                .bookmark_interval(Some(Duration::ZERO))
                .validate()
                .is_err()
        );
        assert!(Options::default().watch_cache_size(0).validate().is_ok());
    }
}
