//! The node sampler: one writer that reads `/proc` on a timer and publishes the latest window
//! over a `watch` channel; request handlers only read the published snapshot.
//!
//! CPU usage needs two samples. The first window is short (`initial_window`, 1 s by default) so
//! the first request waits about a second instead of the full resolution, and nothing is served
//! before a real window exists: no zero, no guess.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;
use crate::proc::{CpuStat, cpu_usage_nanocores, parse_meminfo, parse_stat};

/// One measured window of the node's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSample {
    /// The end of the window (wall clock).
    pub timestamp: jiff::Timestamp,
    /// The window's length, rounded to milliseconds.
    pub window: Duration,
    /// Average CPU usage over the window, in nanocores.
    pub cpu_nanocores: u64,
    /// Memory working set at the end of the window, in bytes (MemTotal − MemAvailable).
    pub memory_working_set_bytes: u64,
    /// MemTotal, in bytes (the node's memory capacity).
    pub memory_total_bytes: u64,
    /// Online CPUs (the node's CPU capacity).
    pub cpus: u32,
    /// Boot time, when `/proc/stat` has `btime` (the sample Node's creationTimestamp).
    pub boot_time: Option<jiff::Timestamp>,
}

/// What request handlers see.
#[derive(Debug, Clone)]
pub enum NodeState {
    /// No window measured yet.
    Pending,
    /// The latest window.
    Ready(Arc<NodeSample>),
    /// The last attempt to read `/proc` failed; the message says why.
    Failed(Arc<str>),
}

/// The pure part of the sampler: turns successive readings into windows.
#[derive(Debug, Default)]
pub struct Sampler {
    previous: Option<(CpuStat, Instant)>,
}

impl Sampler {
    /// Feeds one reading of `/proc/stat` and `/proc/meminfo` taken at `at` (monotonic) and
    /// `wall`. Returns the window since the previous reading, or `None` for the first reading
    /// and when no CPU time passed. A parse error forgets the previous reading.
    pub fn step(
        &mut self,
        stat: &str,
        meminfo: &str,
        at: Instant,
        wall: jiff::Timestamp,
    ) -> Result<Option<NodeSample>, Error> {
        let parsed = parse_stat(stat).and_then(|s| Ok((s, parse_meminfo(meminfo)?)));
        let (stat, mem) = match parsed {
            Ok(v) => v,
            Err(e) => {
                self.previous = None;
                return Err(e);
            }
        };
        let previous = self.previous.replace((stat, at));
        let Some((prev_stat, prev_at)) = previous else {
            return Ok(None);
        };
        let Some(cpu_nanocores) = cpu_usage_nanocores(&prev_stat, &stat) else {
            return Ok(None);
        };
        let elapsed = at.saturating_duration_since(prev_at);
        let window = Duration::from_millis(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        Ok(Some(NodeSample {
            timestamp: wall,
            window,
            cpu_nanocores,
            memory_working_set_bytes: mem.working_set_bytes(),
            memory_total_bytes: mem.total_bytes,
            cpus: stat.online_cpus,
            boot_time: stat
                .boot_time
                .and_then(|t| jiff::Timestamp::from_second(t).ok()),
        }))
    }
}

/// Reads `<proc_dir>/stat` and `<proc_dir>/meminfo`. procfs reads are served from kernel
/// memory and do not block, so they run on the async thread.
pub fn read_proc(proc_dir: &Path) -> Result<(String, String), Error> {
    let read = |name: &str| {
        let path = proc_dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| Error::Proc {
            file: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    Ok((read("stat")?, read("meminfo")?))
}

/// Runs the sampler until every reader is gone: a reading now, the next after
/// `initial_window`, then one every `resolution`.
pub async fn run(
    mut read: impl FnMut() -> Result<(String, String), Error> + Send,
    initial_window: Duration,
    resolution: Duration,
    tx: watch::Sender<NodeState>,
) {
    let mut sampler = Sampler::default();
    loop {
        if tx.is_closed() {
            return;
        }
        let outcome = read().and_then(|(stat, meminfo)| {
            sampler.step(&stat, &meminfo, Instant::now(), jiff::Timestamp::now())
        });
        match outcome {
            Ok(Some(sample)) => {
                tx.send_replace(NodeState::Ready(Arc::new(sample)));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!("node metrics: {e}");
                tx.send_replace(NodeState::Failed(e.to_string().into()));
            }
        }
        let ready = matches!(*tx.borrow(), NodeState::Ready(_));
        tokio::time::sleep(if ready { resolution } else { initial_window }).await;
    }
}

/// Starts [`run`] on `proc_dir` and returns the reading side.
pub fn spawn(
    proc_dir: PathBuf,
    initial_window: Duration,
    resolution: Duration,
) -> (watch::Receiver<NodeState>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(NodeState::Pending);
    let task = tokio::spawn(run(
        move || read_proc(&proc_dir),
        initial_window,
        resolution,
        tx,
    ));
    (rx, task)
}

/// Waits up to `wait` for the first window; `Err` carries the reason there is none.
pub async fn current(
    rx: &watch::Receiver<NodeState>,
    wait: Duration,
) -> Result<Arc<NodeSample>, String> {
    let mut rx = rx.clone();
    let state = tokio::time::timeout(wait, rx.wait_for(|s| !matches!(s, NodeState::Pending))).await;
    match state {
        Ok(Ok(state)) => match &*state {
            NodeState::Ready(sample) => Ok(Arc::clone(sample)),
            NodeState::Failed(reason) => Err(format!("failed reading node metrics: {reason}")),
            NodeState::Pending => Err("metrics not available yet".into()),
        },
        Ok(Err(_)) => Err("the node sampler stopped".into()),
        Err(_) => Err("metrics not available yet".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    const IDLE: &str = "cpu 0 0 0 1000\ncpu0 0 0 0 500\ncpu1 0 0 0 500\nbtime 1700000000\n";
    // 200 more ticks (1 s on 2 CPUs at USER_HZ=100), 50 of them busy: 0.5 CPU.
    const QUARTER_BUSY: &str = "cpu 50 0 0 1150\ncpu0 25 0 0 575\ncpu1 25 0 0 575\n";
    // 2000 more ticks, 2000 busy: both CPUs fully used.
    const ALL_BUSY: &str = "cpu 2050 0 0 1150\ncpu0 1025 0 0 575\ncpu1 1025 0 0 575\n";
    const MEM: &str = "MemTotal: 4096 kB\nMemAvailable: 1024 kB\n";

    fn wall() -> jiff::Timestamp {
        jiff::Timestamp::from_second(1_800_000_000).unwrap_or_default()
    }

    #[test]
    fn first_reading_gives_nothing_then_windows() -> Result<(), Error> {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        assert_eq!(s.step(IDLE, MEM, t0, wall())?, None);
        let t1 = t0 + Duration::from_micros(1_000_400);
        let sample = s.step(QUARTER_BUSY, MEM, t1, wall())?;
        let sample = sample.ok_or_else(|| Error::Proc {
            file: "test".into(),
            reason: "no sample".into(),
        })?;
        assert_eq!(sample.cpu_nanocores, 500_000_000);
        assert_eq!(sample.window, Duration::from_millis(1000));
        assert_eq!(sample.memory_working_set_bytes, 3072 * 1024);
        assert_eq!(sample.memory_total_bytes, 4096 * 1024);
        assert_eq!(sample.cpus, 2);
        // btime is only in the first fixture.
        assert_eq!(sample.boot_time, None);
        Ok(())
    }

    #[test]
    fn a_bad_reading_resets_the_window() -> Result<(), Error> {
        let mut s = Sampler::default();
        let t0 = Instant::now();
        assert_eq!(s.step(IDLE, MEM, t0, wall())?, None);
        assert!(s.step("garbage", MEM, t0, wall()).is_err());
        // The next good reading starts a new window instead of spanning the failure.
        assert_eq!(s.step(QUARTER_BUSY, MEM, t0, wall())?, None);
        Ok(())
    }

    #[tokio::test(start_paused = true)]
    async fn run_publishes_after_the_initial_window_then_every_resolution() {
        let readings: VecDeque<Result<(String, String), Error>> = [IDLE, QUARTER_BUSY, ALL_BUSY]
            .into_iter()
            .map(|s| Ok((s.to_owned(), MEM.to_owned())))
            .collect();
        let readings = Mutex::new(readings);
        let read = move || {
            readings
                .lock()
                .ok()
                .and_then(|mut q| q.pop_front())
                .unwrap_or_else(|| {
                    Err(Error::Proc {
                        file: "stat".into(),
                        reason: "no more fixtures".into(),
                    })
                })
        };
        let (tx, mut rx) = watch::channel(NodeState::Pending);
        let start = Instant::now();
        let task = tokio::spawn(run(
            read,
            Duration::from_secs(1),
            Duration::from_secs(10),
            tx,
        ));

        let first = current(&rx, Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(first.as_ref().map(|s| s.cpu_nanocores), Ok(500_000_000));
        assert_eq!(first.as_ref().map(|s| s.window), Ok(Duration::from_secs(1)));

        rx.mark_unchanged();
        assert!(rx.changed().await.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(11));
        let second = current(&rx, Duration::ZERO).await;
        assert_eq!(second.as_ref().map(|s| s.cpu_nanocores), Ok(2_000_000_000));
        assert_eq!(
            second.as_ref().map(|s| s.window),
            Ok(Duration::from_secs(10))
        );

        // The fixtures run out: the failure is published, not the stale window.
        assert!(rx.changed().await.is_ok());
        let third = current(&rx, Duration::ZERO).await;
        assert!(
            matches!(&third, Err(m) if m.contains("no more fixtures")),
            "{third:?}"
        );

        drop(rx);
        let _ = task.await;
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_readers_time_out_while_pending() {
        let (_tx, rx) = watch::channel(NodeState::Pending);
        let got = current(&rx, Duration::from_secs(3)).await;
        assert_eq!(got.err().as_deref(), Some("metrics not available yet"));
    }
}
