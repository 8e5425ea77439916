//! The in-process informer: one list+watch loop over the store that publishes an `Arc`
//! snapshot of all APIServices over `tokio::sync::watch` (one writer; readers clone the `Arc`
//! and never wait on the store). On `TooOld`, a watcher cut-off or a store outage it lists
//! again, with a capped back-off, so the server keeps working across store restarts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use store::{APIService, EventType, Store};
use tokio::sync::watch;

/// All APIServices at one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The store revision the snapshot reflects (opaque).
    pub resource_version: String,
    /// Objects by name.
    pub items: BTreeMap<String, Arc<APIService>>,
    /// False until the first list succeeded (readiness).
    pub synced: bool,
}

enum State {
    List,
    Watch(store::Watch),
    Backoff(Duration),
}

/// Runs the list+watch loop until `shutdown` turns true, publishing into `tx`.
pub async fn run(
    store: Arc<dyn Store>,
    tx: watch::Sender<Arc<Snapshot>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut state = State::List;
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        state = match state {
            State::List => match store.list(None).await {
                Ok(list) => {
                    let snap = Snapshot {
                        items: list
                            .items
                            .into_iter()
                            .map(|o| (o.metadata.name.clone().unwrap_or_default(), Arc::new(o)))
                            .collect(),
                        resource_version: list.resource_version.clone(),
                        synced: true,
                    };
                    tx.send_replace(Arc::new(snap));
                    match store.watch(Some(&list.resource_version)).await {
                        Ok(w) => {
                            backoff = Duration::from_millis(100);
                            State::Watch(w)
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "informer: watch failed; listing again");
                            State::Backoff(backoff)
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "informer: list failed");
                    State::Backoff(backoff)
                }
            },
            State::Backoff(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                State::List
            }
            State::Watch(mut w) => {
                tokio::select! {
                    ev = w.next() => match ev {
                        Some(Ok(ev)) => {
                            apply(&tx, &ev);
                            State::Watch(w)
                        }
                        Some(Err(e)) => {
                            tracing::info!(error = %e, "informer: watch ended; listing again");
                            State::List
                        }
                        None => State::Backoff(backoff),
                    },
                    _ = shutdown.changed() => return,
                }
            }
        };
    }
}

fn apply(tx: &watch::Sender<Arc<Snapshot>>, ev: &store::WatchEvent) {
    let name = ev.object.metadata.name.clone().unwrap_or_default();
    let rv = ev.resource_version().to_owned();
    if ev.kind == EventType::Bookmark {
        // Progress only: record the revision without waking readers.
        tx.send_if_modified(|snap| {
            Arc::make_mut(snap).resource_version = rv;
            false
        });
        return;
    }
    tx.send_modify(|snap| {
        let s = Arc::make_mut(snap);
        match ev.kind {
            EventType::Added | EventType::Modified => {
                s.items.insert(name, Arc::new(ev.object.clone()));
            }
            EventType::Deleted => {
                s.items.remove(&name);
            }
            EventType::Bookmark => {}
        }
        s.resource_version = rv;
    });
}
