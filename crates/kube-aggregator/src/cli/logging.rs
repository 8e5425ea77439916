//! Log output for the long-running subcommands.
//!
//! Writing each line straight to stderr costs a system call per line; with an access-log line per
//! proxied request that was 8% of the server's CPU under load (`docs/benchmarks.md`). Instead, a
//! line is appended to a shared buffer (a short critical section, no system call) and one thread
//! writes whatever has accumulated in one go. Nothing is delayed when the server is quiet: the
//! writer thread wakes for the first line and writes it at once; under load, lines pile up while
//! it writes and go out together in the next batch.
//!
//! Bounded: when the sink cannot keep up (a stalled pipe), lines beyond [`MAX_PENDING`] bytes are
//! dropped and counted, and the count is written once the sink drains, rather than the server
//! stalling or growing without bound. [`LogGuard`] writes what is left when the subcommand ends.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

/// The most bytes waiting to be written before new lines are dropped.
pub const MAX_PENDING: usize = 8 << 20;

/// Where the lines go.
pub enum Sink {
    /// Standard error (colours when it is a terminal).
    Stderr,
    /// A file, without colours.
    File(std::fs::File),
}

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    dropped: u64,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

/// The `MakeWriter` handed to `tracing_subscriber`: each event's formatted line is one `write`.
#[derive(Clone)]
struct Batched(Arc<Shared>);

impl Write for Batched {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.pending.len() + line.len() > MAX_PENDING {
            state.dropped += 1;
        } else {
            let was_empty = state.pending.is_empty();
            state.pending.extend_from_slice(line);
            if was_empty {
                self.0.wake.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Batched {
    type Writer = Batched;

    fn make_writer(&'a self) -> Batched {
        self.clone()
    }
}

/// Ends the writer thread after writing every pending line (on drop).
pub struct LogGuard {
    shared: Option<Arc<Shared>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .closed = true;
            shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` when set, else `level` (`info`, `debug`, …).
/// When a subscriber is already installed (tests running several commands in one process),
/// nothing changes and the guard does nothing.
pub fn init(level: &str, sink: Sink) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let (ansi, mut out): (bool, Box<dyn Write + Send>) = match sink {
        // Colours only on a terminal: logs written to files stay greppable (`user=alice`).
        Sink::Stderr => (std::io::stderr().is_terminal(), Box::new(std::io::stderr())),
        Sink::File(file) => (false, Box::new(file)),
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
    });
    let installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(Batched(Arc::clone(&shared)))
        .try_init()
        .is_ok();
    if !installed {
        return LogGuard {
            shared: None,
            thread: None,
        };
    }
    let writer_shared = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_loop(&writer_shared, &mut *out));
    match thread {
        Ok(thread) => LogGuard {
            shared: Some(shared),
            thread: Some(thread),
        },
        // Without a thread nothing would ever be written: better to say so than to go silent.
        Err(e) => {
            eprintln!("kube-aggregator: cannot start the log writer thread: {e}");
            LogGuard {
                shared: None,
                thread: None,
            }
        }
    }
}

fn write_loop(shared: &Shared, out: &mut dyn Write) {
    let mut batch = Vec::new();
    loop {
        let (dropped, closed) = {
            let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            while state.pending.is_empty() && state.dropped == 0 && !state.closed {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            std::mem::swap(&mut batch, &mut state.pending);
            (std::mem::take(&mut state.dropped), state.closed)
        };
        // A failing sink (closed stderr) must not take the server down; the lines are lost.
        let _ = out.write_all(&batch);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "kube-aggregator: {dropped} log lines dropped: the log output could not keep up"
            );
        }
        let _ = out.flush();
        batch.clear();
        // Keep the allocation between batches, but not a burst's worth forever.
        batch.shrink_to(64 << 10);
        if closed {
            let state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.pending.is_empty() && state.dropped == 0 {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink that records what reached it, in write order.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<u8>>>);

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn start() -> (Arc<Shared>, Recorder, JoinHandle<()>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let rec = Recorder::default();
        let (s, mut r) = (Arc::clone(&shared), rec.clone());
        let thread = std::thread::spawn(move || write_loop(&s, &mut r));
        (shared, rec, thread)
    }

    #[test]
    fn every_line_arrives_in_order_and_the_guard_drains_on_close() {
        let (shared, rec, thread) = start();
        let mut w = Batched(Arc::clone(&shared));
        let mut expected = Vec::new();
        for i in 0..10_000 {
            let line = format!("line {i}\n");
            w.write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        drop(LogGuard {
            shared: Some(shared),
            thread: Some(thread),
        });
        assert_eq!(*rec.0.lock().unwrap(), expected);
    }

    #[test]
    fn a_stalled_sink_drops_lines_and_says_how_many() {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        // No writer thread yet: everything stays pending, as with a blocked pipe.
        let mut w = Batched(Arc::clone(&shared));
        let line = vec![b'x'; 1 << 20];
        for _ in 0..10 {
            w.write_all(&line).unwrap();
        }
        assert_eq!(shared.state.lock().unwrap().pending.len(), 8 << 20);
        let rec = Recorder::default();
        let (s, mut r) = (Arc::clone(&shared), rec.clone());
        let thread = std::thread::spawn(move || write_loop(&s, &mut r));
        drop(LogGuard {
            shared: Some(shared),
            thread: Some(thread),
        });
        let out = rec.0.lock().unwrap();
        assert_eq!(out.iter().filter(|&&b| b == b'x').count(), 8 << 20);
        let text = String::from_utf8_lossy(&out[8 << 20..]);
        assert!(
            text.contains("2 log lines dropped"),
            "the drop is reported: {text}"
        );
    }
}
