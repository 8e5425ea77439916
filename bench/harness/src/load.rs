//! The load generators: wrk for HTTP/1.1 and h2load for HTTP/2, both from Debian.
//!
//! Why these and not oha: on a 2-core machine the load generator takes its CPU from the same
//! cores as the proxy and the backend, and wrk/h2load (C, one event loop per thread) spend far
//! less per request than oha (tokio + hyper + rustls); upstream's reference ratios were also
//! taken with wrk. Neither can present a client certificate, so the aggregator is called with a
//! bearer token (`--token-auth-file`), nginx without client authentication, and the backend
//! directly with `--allow-direct` (see `bench-backend`).
//!
//! Concurrency `C` means `C` requests in flight. HTTP/1.1: `C` keep-alive connections. HTTP/2:
//! `ceil(C/16)` connections with up to 16 concurrent streams each (1×1, 1×16, 4×16, 16×16): a
//! few clients multiplexing, as client-go does, while staying under every server's stream
//! limit (nginx's default is 128).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

/// The protocol spoken by the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Proto {
    /// HTTP/1.1 over TLS, keep-alive (wrk).
    #[serde(rename = "h1")]
    H1,
    /// HTTP/2 over TLS (h2load).
    #[serde(rename = "h2")]
    H2,
}

impl Proto {
    /// `h1` or `h2`.
    pub fn name(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
        }
    }

    /// Parses `h1` or `h2`.
    pub fn parse(s: &str) -> anyhow::Result<Proto> {
        match s {
            "h1" | "http1" | "http/1.1" => Ok(Proto::H1),
            "h2" | "http2" => Ok(Proto::H2),
            other => bail!("unknown protocol {other:?} (h1 or h2)"),
        }
    }
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    /// Protocol.
    pub proto: Proto,
    /// Requests in flight.
    pub concurrency: usize,
    /// Measured duration.
    pub duration: Duration,
    /// `https://127.0.0.1:port/path`.
    pub url: &'a str,
    /// Extra request headers.
    pub headers: &'a [(String, String)],
    /// Load generator threads.
    pub threads: usize,
}

/// What a run measured.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Outcome {
    /// Completed requests (any status).
    pub requests: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// Socket errors and timeouts.
    pub errors: u64,
    /// Responses outside 2xx/3xx.
    pub bad_status: u64,
}

const WRK_REPORT: &str = r#"done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT requests=%d duration_us=%d errors=%d status=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"#;

/// Runs the load generator and parses its report. `scratch` holds its script and log files.
pub fn run(spec: &Spec<'_>, scratch: &Path) -> anyhow::Result<Outcome> {
    match spec.proto {
        Proto::H1 => run_wrk(spec, scratch),
        Proto::H2 => run_h2load(spec, scratch),
    }
}

fn run_wrk(spec: &Spec<'_>, scratch: &Path) -> anyhow::Result<Outcome> {
    let script = scratch.join("wrk-report.lua");
    if !script.exists() {
        std::fs::write(&script, WRK_REPORT)?;
    }
    let mut cmd = Command::new("wrk");
    cmd.arg(format!("-t{}", spec.threads.clamp(1, spec.concurrency)))
        .arg(format!("-c{}", spec.concurrency))
        .arg(format!("-d{}s", spec.duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&script);
    for (k, v) in spec.headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(spec.url);
    let out = cmd
        .output()
        .context("running wrk (scripts/deps bench installs it)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH-RESULT "))
        .with_context(|| format!("no result line in wrk output: {stdout}"))?;
    let get = |key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let requests = get("requests") as u64;
    let seconds = get("duration_us") / 1e6;
    Ok(Outcome {
        requests,
        seconds,
        rps: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        p50_us: get("p50_us"),
        p99_us: get("p99_us"),
        errors: get("errors") as u64,
        bad_status: get("status") as u64,
    })
}

/// Connections and streams per connection for `concurrency` requests in flight over HTTP/2.
pub fn h2_shape(concurrency: usize) -> (usize, usize) {
    let streams = concurrency.clamp(1, 16);
    (concurrency.div_ceil(streams).max(1), streams)
}

fn run_h2load(spec: &Spec<'_>, scratch: &Path) -> anyhow::Result<Outcome> {
    let (clients, streams) = h2_shape(spec.concurrency);
    let log = scratch.join("h2load.log");
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new("h2load");
    cmd.arg("-c")
        .arg(clients.to_string())
        .arg("-m")
        .arg(streams.to_string())
        .arg("-t")
        .arg(spec.threads.clamp(1, clients).to_string())
        .arg("-D")
        .arg(spec.duration.as_secs().max(1).to_string())
        .arg("--log-file")
        .arg(&log);
    for (k, v) in spec.headers {
        cmd.arg("-H")
            .arg(format!("{}: {v}", k.to_ascii_lowercase()));
    }
    cmd.arg(spec.url);
    let out = cmd
        .output()
        .context("running h2load (scripts/deps bench installs nghttp2-client)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "h2load failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !stdout.contains("Application protocol: h2") {
        bail!("h2load did not negotiate h2: {stdout}");
    }
    // "requests: 253683 total, 253699 started, 253683 done, 253683 succeeded, 0 failed, ..."
    let counts = stdout
        .lines()
        .find(|l| l.starts_with("requests:"))
        .with_context(|| format!("no requests line in h2load output: {stdout}"))?;
    let count = |what: &str| -> u64 {
        counts
            .split(',')
            .find_map(|part| {
                let mut it = part.split_whitespace().rev();
                let name = it.next()?;
                let value = it.next()?;
                (name == what).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0)
    };
    let statuses = stdout
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_default();
    let bad_status: u64 = statuses
        .split(',')
        .filter(|p| p.contains("4xx") || p.contains("5xx"))
        .filter_map(|p| p.split_whitespace().rev().nth(1)?.parse::<u64>().ok())
        .sum();
    let errors = count("failed") + count("errored") + count("timeout");
    // Latencies from the per-request log: start (µs since epoch), status, duration (µs).
    let text = std::fs::read_to_string(&log).context("reading the h2load log")?;
    let mut latencies: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    latencies.sort_unstable();
    let requests = latencies.len() as u64;
    let seconds = spec.duration.as_secs_f64();
    Ok(Outcome {
        requests,
        seconds,
        rps: requests as f64 / seconds,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        errors,
        bad_status,
    })
}

/// The `p`th percentile of sorted values (nearest rank).
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2_shapes_keep_the_concurrency() {
        assert_eq!(h2_shape(1), (1, 1));
        assert_eq!(h2_shape(16), (1, 16));
        assert_eq!(h2_shape(64), (4, 16));
        assert_eq!(h2_shape(256), (16, 16));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[7], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
