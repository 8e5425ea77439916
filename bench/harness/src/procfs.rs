//! CPU time and memory of running processes, read from `/proc` (Linux only).

use std::fs;
use std::io;

/// One look at a process.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// utime + stime of all its threads (dead ones included), in clock ticks.
    pub cpu_ticks: u64,
    /// `VmRSS`, KiB.
    pub rss_kb: u64,
    /// `VmHWM` (peak RSS), KiB.
    pub hwm_kb: u64,
    /// `RssAnon`: the private (heap, stacks) part of the RSS, KiB; the rest is mostly the
    /// mapped executable and libraries, shared and reclaimable.
    pub anon_kb: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn sample(pid: u32) -> io::Result<Sample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14, stime 15.
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let cpu_ticks = field(14) + field(15);
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(Sample {
        cpu_ticks,
        rss_kb: status_kb(&status, "VmRSS:"),
        hwm_kb: status_kb(&status, "VmHWM:"),
        anon_kb: status_kb(&status, "RssAnon:"),
    })
}

fn status_kb(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The sum over several processes (nginx's master and workers).
pub fn sample_all(pids: &[u32]) -> io::Result<Sample> {
    let mut total = Sample::default();
    for pid in pids {
        let s = sample(*pid)?;
        total.cpu_ticks += s.cpu_ticks;
        total.rss_kb += s.rss_kb;
        total.hwm_kb += s.hwm_kb;
        total.anon_kb += s.anon_kb;
    }
    Ok(total)
}

/// Proportional set size (shared pages divided among their users), KiB: the fair memory figure
/// for a group of processes sharing pages, like nginx's master and workers.
pub fn pss_kb(pid: u32) -> io::Result<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(status_kb(&rollup, "Pss:"))
}

/// The direct children of `pid` (all its threads' children).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = fs::read_to_string(path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on).
pub fn clk_tck() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Machine-wide CPU counters from `/proc/stat`: (busy, total) jiffies over all cores.
pub fn machine_cpu() -> io::Result<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}
