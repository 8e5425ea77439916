//! `watch=true`: a stream of `{"type":…,"object":…}` lines, one chunk (h1) or DATA frame (h2)
//! per event, written as events arrive.
//!
//! The stream is a state machine (style.md §5): `Initial` sends synthetic `ADDED` events for the
//! objects of a list (for `resourceVersion` unset or `"0"`), `Streaming` forwards store events
//! through the selectors, and `Done` ends the body cleanly — at `timeoutSeconds`, on server
//! shutdown, when the client goes away, or after an `ERROR` event.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use apimachinery::Status;
use apimachinery::table::{IncludeObject, ListMeta};
use apimachinery::watch::{EventType, frame};
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use proxy::body::Body;
use serde_json::json;
use store::{APIService, Store};
use tokio::sync::{mpsc, watch};

use super::encode::{self, Output};
use super::list::ListOptions;
use super::table;
use crate::metrics::Metrics;

/// Everything a watch needs besides the store.
#[derive(Debug, Clone)]
pub struct WatchParams {
    /// The list options (selectors, resourceVersion, bookmarks, timeout).
    pub opts: ListOptions,
    /// JSON objects or Table rows.
    pub output: Output,
    /// Only this object (from `/watch/apiservices/NAME` or `/apiservices/NAME?watch=true`).
    pub name: Option<String>,
    /// How long the watch lasts.
    pub duration: Duration,
}

enum State {
    Initial(VecDeque<APIService>),
    Streaming,
    Done,
}

struct Encoder {
    output: Output,
    include: IncludeObject,
    columns_sent: bool,
}

impl Encoder {
    fn event(&mut self, kind: EventType, obj: &APIService) -> Bytes {
        let object = match self.output {
            Output::Table(v) => {
                let meta = ListMeta {
                    resource_version: obj.metadata.resource_version.clone(),
                    ..ListMeta::default()
                };
                let with_columns = !self.columns_sent;
                self.columns_sent = true;
                serde_json::to_vec(&table::table(
                    v,
                    [obj],
                    meta,
                    self.include,
                    with_columns,
                    super::strategy::now(),
                ))
            }
            _ => serde_json::to_vec(obj),
        };
        Bytes::from(frame(kind, &object.unwrap_or_default()))
    }

    fn bookmark(&self, rv: &str, initial_events_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": rv });
        if initial_events_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        let object = match self.output {
            Output::Table(v) => {
                json!({"kind": "Table", "apiVersion": format!("meta.k8s.io/{v}"), "metadata": meta, "columnDefinitions": [], "rows": []})
            }
            _ => {
                json!({"kind": "APIService", "apiVersion": "apiregistration.k8s.io/v1", "metadata": meta})
            }
        };
        Bytes::from(frame(
            EventType::Bookmark,
            &serde_json::to_vec(&object).unwrap_or_default(),
        ))
    }
}

/// Selector filtering with transitions: an object that stops matching is reported `DELETED`,
/// one that starts matching `ADDED` (when the watch began with a full list, so membership is
/// known), as upstream's watch cache does.
struct Filter {
    opts: ListOptions,
    name: Option<String>,
    matching: HashSet<String>,
    complete: bool,
}

impl Filter {
    fn passes(&self, obj: &APIService) -> bool {
        self.name
            .as_deref()
            .is_none_or(|n| obj.metadata.name.as_deref() == Some(n))
            && self.opts.matches(obj)
    }

    fn classify(&mut self, kind: store::EventType, obj: &APIService) -> Option<EventType> {
        let name = obj.metadata.name.clone().unwrap_or_default();
        let now = self.passes(obj);
        let before = self.matching.contains(&name);
        match kind {
            store::EventType::Added => {
                if now {
                    self.matching.insert(name);
                    Some(EventType::Added)
                } else {
                    None
                }
            }
            store::EventType::Modified => {
                if now {
                    let kind = if before || !self.complete {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    self.matching.insert(name);
                    Some(kind)
                } else if before {
                    self.matching.remove(&name);
                    Some(EventType::Deleted)
                } else {
                    None
                }
            }
            store::EventType::Deleted => {
                self.matching.remove(&name);
                (now || before).then_some(EventType::Deleted)
            }
            store::EventType::Bookmark => Some(EventType::Bookmark),
        }
    }
}

fn store_error(e: store::Error) -> Status {
    super::store_error(e, "")
}

/// Starts a watch: errors before the first byte (410 for a compacted resourceVersion, 400 for
/// an invalid one) are answered as a `Status`; afterwards problems become an `ERROR` event.
pub async fn start(
    store: Arc<dyn Store>,
    params: WatchParams,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<Metrics>,
) -> Result<Response<Body>, Status> {
    let rv = params.opts.resource_version.clone();
    let send_initial = params
        .opts
        .send_initial_events
        .unwrap_or(rv.is_empty() || rv == "0");
    let (initial, from) = if send_initial
        && (rv.is_empty() || rv == "0" || params.opts.send_initial_events == Some(true))
    {
        let list = store.list(None).await.map_err(store_error)?;
        (list.items, list.resource_version)
    } else {
        (Vec::new(), rv.clone())
    };
    let mut w = store.watch(Some(&from)).await.map_err(store_error)?;

    let mut filter = Filter {
        opts: params.opts.clone(),
        name: params.name.clone(),
        matching: HashSet::new(),
        complete: send_initial,
    };
    let initial: VecDeque<APIService> = initial.into_iter().filter(|o| filter.passes(o)).collect();
    for o in &initial {
        filter
            .matching
            .insert(o.metadata.name.clone().unwrap_or_default());
    }
    let mut encoder = Encoder {
        output: params.output,
        include: params.opts.include_object,
        columns_sent: false,
    };
    let bookmarks = params.opts.allow_watch_bookmarks;
    let initial_events_end = params.opts.send_initial_events == Some(true) && bookmarks;

    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let deadline = tokio::time::Instant::now() + params.duration;
    tokio::spawn(async move {
        let _guard = metrics.watch_guard();
        let mut state = State::Initial(initial);
        let mut last_rv = from;
        loop {
            state = match state {
                State::Initial(mut items) => match items.pop_front() {
                    Some(o) => {
                        if tx.send(encoder.event(EventType::Added, &o)).await.is_err() {
                            State::Done
                        } else {
                            State::Initial(items)
                        }
                    }
                    None => {
                        if initial_events_end
                            && tx.send(encoder.bookmark(&last_rv, true)).await.is_err()
                        {
                            State::Done
                        } else {
                            State::Streaming
                        }
                    }
                },
                State::Streaming => {
                    tokio::select! {
                        ev = w.next() => match ev {
                            None => State::Done,
                            Some(Err(store::Error::TooOld { requested, oldest_available })) => {
                                let s = Status::expired(format!("too old resource version: {requested} ({oldest_available})"));
                                let _ = tx.send(Bytes::from(frame(EventType::Error, &s.to_json()))).await;
                                State::Done
                            }
                            // A watcher that fell behind is ended; clients re-list and re-watch.
                            Some(Err(_)) => State::Done,
                            Some(Ok(ev)) => {
                                let rv = ev.resource_version().to_owned();
                                let out = match filter.classify(ev.kind, &ev.object) {
                                    Some(EventType::Bookmark) if bookmarks => Some(encoder.bookmark(&rv, false)),
                                    Some(EventType::Bookmark) | None => None,
                                    Some(kind) => Some(encoder.event(kind, &ev.object)),
                                };
                                last_rv = rv;
                                match out {
                                    Some(b) => {
                                        if tx.send(b).await.is_err() { State::Done } else { State::Streaming }
                                    }
                                    None => State::Streaming,
                                }
                            }
                        },
                        _ = tokio::time::sleep_until(deadline) => State::Done,
                        _ = shutdown.changed() => State::Done,
                        _ = tx.closed() => State::Done,
                    }
                }
                State::Done => break,
            };
            if *shutdown.borrow() {
                break;
            }
        }
        tracing::debug!(resource_version = %last_rv, "watch ended");
    });

    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| {
            (
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)),
                rx,
            )
        })
    });
    let body: Body = StreamBody::new(stream)
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    if let Ok(v) = http::HeaderValue::from_str(&encode::watch_content_type(params.output)) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}
