//! Watch load: many idle watches (the server's memory per watcher) and one event fanned out to
//! many watchers (delivery latency). Each watcher is its own HTTP/1.1 TLS connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::BodyExt;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

use crate::client::{Client, Tls, open_stream};

/// Where watches go.
#[derive(Clone)]
pub struct Target {
    /// The aggregator.
    pub addr: SocketAddr,
    /// TLS to it.
    pub tls: Tls,
    /// Bearer token.
    pub token: String,
}

/// The label the fan-out test changes; watchers look for `"bench-fanout":"e<N>"` in events.
pub const FANOUT_LABEL: &str = "bench-fanout";

/// Open watches; dropping this closes them.
pub struct Watches {
    tasks: JoinSet<()>,
}

impl Watches {
    /// How many are still open.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether none are open.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// Arrival of event `event` at watcher `watcher`.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// Which event (the label's number).
    pub event: u32,
    /// When it was read.
    pub at: Instant,
}

fn marker_number(line: &[u8]) -> Option<u32> {
    let needle = format!("\"{FANOUT_LABEL}\":\"e");
    let at = line
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    let digits: Vec<u8> = line[at + needle.len()..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Opens `count` watches on `path` (at most `parallel` handshakes at once). With `arrivals`,
/// each watcher reports every fan-out event it reads; otherwise events are read and dropped.
pub async fn open(
    target: &Target,
    path: &str,
    count: usize,
    parallel: usize,
    arrivals: Option<mpsc::UnboundedSender<Arrival>>,
) -> anyhow::Result<Watches> {
    let limit = Arc::new(Semaphore::new(parallel.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<anyhow::Result<()>>();
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let target = target.clone();
        let path = path.to_owned();
        let limit = limit.clone();
        let ready = ready_tx.clone();
        let arrivals = arrivals.clone();
        tasks.spawn(async move {
            let opened = {
                let _permit = limit.acquire().await;
                open_stream(target.addr, &target.tls, &target.token, &path).await
            };
            let mut body = match opened {
                Ok(response) => {
                    let _ = ready.send(Ok(()));
                    response.into_body()
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let mut line = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(arrivals) = &arrivals else {
                    continue;
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let at = Instant::now();
                for chunk in data.split_inclusive(|b| *b == b'\n') {
                    line.extend_from_slice(chunk);
                    if line.ends_with(b"\n") {
                        if let Some(event) = marker_number(&line) {
                            let _ = arrivals.send(Arrival { event, at });
                        }
                        line.clear();
                    }
                }
            }
        });
    }
    drop(ready_tx);
    let mut opened = 0;
    let mut first_error = None;
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(()) => opened += 1,
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
        }
        if opened + usize::from(first_error.is_some()) >= count {
            break;
        }
    }
    if let Some(e) = first_error {
        return Err(e).context(format!("opened {opened} of {count} watches"));
    }
    Ok(Watches { tasks })
}

/// Opens `count` watches on `path` multiplexed over HTTP/2, `per_conn` streams per connection
/// (client-go shares one connection per client this way). Events are read and dropped.
pub async fn open_h2(
    target: &Target,
    path: &str,
    count: usize,
    per_conn: usize,
) -> anyhow::Result<Watches> {
    let per_conn = per_conn.max(1);
    let mut tasks = JoinSet::new();
    let mut opened = 0;
    while opened < count {
        let client = Client::connect(target.addr, &target.tls, &target.token).await?;
        let n = per_conn.min(count - opened);
        let mut heads = JoinSet::new();
        for _ in 0..n {
            let client = client.clone();
            let path = path.to_owned();
            heads.spawn(async move { client.stream(&path).await });
        }
        while let Some(head) = heads.join_next().await {
            let mut body = head??;
            tasks.spawn(async move { while let Some(Ok(_)) = body.frame().await {} });
            opened += 1;
        }
    }
    Ok(Watches { tasks })
}

/// Waits until `count` arrivals of `event` were seen or `timeout` passes; returns them.
pub async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Arrival>,
    event: u32,
    count: usize,
    timeout: Duration,
) -> Vec<Instant> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen = Vec::with_capacity(count);
    while seen.len() < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(a)) if a.event == event => seen.push(a.at),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found_in_event_lines() {
        let line =
            br#"{"type":"MODIFIED","object":{"metadata":{"labels":{"bench-fanout":"e17"}}}}"#;
        assert_eq!(marker_number(line), Some(17));
        assert_eq!(marker_number(br#"{"type":"ADDED"}"#), None);
    }
}
