//! The results: one JSON document for machines to compare, and Markdown tables for
//! `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::load::{Outcome, Proto};

/// The machine a run was taken on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `hostname`.
    pub hostname: String,
    /// Online CPUs.
    pub cores: usize,
    /// `/proc/cpuinfo` model name.
    pub cpu: String,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// `uname -r`.
    pub kernel: String,
    /// 1-minute load average when the run started.
    pub load_at_start: f64,
}

/// One measured load run.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Protocol.
    pub proto: Proto,
    /// Requests in flight.
    pub concurrency: usize,
    /// `direct`, `nginx`, `engine` or `aggregator`.
    pub contender: String,
    /// Round number (contenders rotate their order each round).
    pub round: usize,
    /// What the load generator saw.
    pub outcome: Outcome,
    /// CPU time of the contender per completed request, µs (all its processes).
    pub cpu_us_per_request: Option<f64>,
    /// CPU time of the backend per completed request, µs.
    pub backend_cpu_us_per_request: f64,
    /// Busy share of all cores during the run, %.
    pub machine_busy_pct: f64,
}

/// The median over rounds of one contender in one (protocol, concurrency) cell, with ratios to
/// the direct baseline and to nginx measured in the same interleaved sequence.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Protocol.
    pub proto: Proto,
    /// Requests in flight.
    pub concurrency: usize,
    /// Contender.
    pub contender: String,
    /// Requests per second.
    pub rps: f64,
    /// Median latency, µs.
    pub p50_us: f64,
    /// 99th percentile latency, µs.
    pub p99_us: f64,
    /// `rps / rps(direct)`.
    pub ratio_to_direct: Option<f64>,
    /// `rps / rps(nginx)`.
    pub ratio_to_nginx: Option<f64>,
    /// `p50 - p50(direct)`, µs.
    pub added_p50_us: Option<f64>,
    /// Contender CPU per request, µs.
    pub cpu_us_per_request: Option<f64>,
    /// Errors plus responses outside 2xx/3xx, summed over rounds.
    pub failures: u64,
}

/// Memory of one contender.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// Contender.
    pub contender: String,
    /// RSS after start-up (and, for the aggregator, one registered APIService), KiB.
    pub idle_rss_kb: u64,
    /// PSS at the same time (differs from RSS for nginx's shared pages), KiB.
    pub idle_pss_kb: u64,
    /// The anonymous (private) part of the idle RSS, KiB.
    pub idle_anon_kb: u64,
    /// Peak RSS over the whole load matrix (`VmHWM`, summed over processes), KiB.
    pub peak_rss_kb: u64,
    /// RSS after the load matrix, KiB.
    pub after_rss_kb: u64,
}

/// Aggregated discovery with many APIServices.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Apis {
    /// Registered APIServices (plus the benchmark's own).
    pub apiservices: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// Size of the aggregated (v2) document, bytes.
    pub aggregated_bytes: usize,
    /// Size of the legacy `APIGroupList`, bytes.
    pub legacy_bytes: usize,
    /// Aggregated `/apis`, 200s.
    pub aggregated: Option<Outcome>,
    /// Aggregated `/apis` with `Accept-Encoding: gzip` (as client-go sends), 200s.
    pub aggregated_gzip: Option<Outcome>,
    /// Size of the gzip-compressed aggregated document, bytes (0 when not compressed).
    pub aggregated_gzip_bytes: usize,
    /// Aggregated `/apis` with a matching `If-None-Match`: 304s.
    pub not_modified: Option<Outcome>,
    /// Legacy `/apis`.
    pub legacy: Option<Outcome>,
    /// Status of one conditional request (should be 304).
    pub conditional_status: u16,
    /// Time to register the APIServices, s.
    pub register_seconds: f64,
}

/// Watches.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Watch {
    /// APIServices in the store during the test.
    pub apiservices: usize,
    /// RSS of a freshly started aggregator before any watch, KiB.
    pub rss_before_kb: u64,
    /// Idle watches opened (one HTTP/1.1 TLS connection each).
    pub idle_watches: usize,
    /// RSS with them open, KiB.
    pub rss_with_watches_kb: u64,
    /// `(with - before) / watches`, KiB.
    pub kb_per_watch: f64,
    /// Seconds to open them.
    pub open_seconds: f64,
    /// The same number of idle watches over HTTP/2, [`Watch::h2_streams_per_conn`] per
    /// connection (client-go's sharing), on another fresh process: RSS before, KiB.
    pub h2_rss_before_kb: u64,
    /// RSS with them open, KiB.
    pub h2_rss_with_watches_kb: u64,
    /// Streams per HTTP/2 connection.
    pub h2_streams_per_conn: usize,
    /// Watchers of the fan-out test.
    pub fanout_watchers: usize,
    /// Events sent.
    pub events: u32,
    /// Deliveries seen (should be watchers × events).
    pub deliveries: usize,
    /// Delivery latency from the write's start to the watcher reading the event: p50, ms.
    pub delivery_p50_ms: f64,
    /// p99, ms.
    pub delivery_p99_ms: f64,
    /// Slowest, ms.
    pub delivery_max_ms: f64,
    /// Median over events of the time until the last watcher had it, ms.
    pub last_watcher_p50_ms: f64,
    /// Median round trip of the write itself (PATCH), ms.
    pub write_p50_ms: f64,
}

/// One target of issue 7 and what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The target, as the issue words it.
    pub target: String,
    /// The measurement.
    pub measured: String,
    /// Met, missed, or not measured (`None`).
    pub met: Option<bool>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Format version.
    pub schema: u32,
    /// UTC date and time.
    pub date: String,
    /// Machine.
    pub machine: Machine,
    /// Tool versions.
    pub tools: BTreeMap<String, String>,
    /// Settings of this run.
    pub settings: serde_json::Value,
    /// Every measured run.
    pub runs: Vec<Run>,
    /// Medians and ratios.
    pub cells: Vec<Cell>,
    /// Memory per contender.
    pub memory: Vec<Memory>,
    /// `/apis`.
    pub apis: Option<Apis>,
    /// Watches.
    pub watch: Option<Watch>,
    /// Targets.
    pub targets: Vec<Target>,
    /// What the reader must know (missing contenders, failures).
    pub notes: Vec<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians over rounds and the ratios, per (protocol, concurrency, contender).
pub fn cells(runs: &[Run]) -> Vec<Cell> {
    let mut keys: Vec<(Proto, usize, String)> = Vec::new();
    for r in runs {
        let key = (r.proto, r.concurrency, r.contender.clone());
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let pick = |proto: Proto, c: usize, who: &str| -> Vec<&Run> {
        runs.iter()
            .filter(|r| r.proto == proto && r.concurrency == c && r.contender == who)
            .collect()
    };
    let med = |rs: &[&Run], f: &dyn Fn(&Run) -> f64| median(rs.iter().map(|r| f(r)).collect());
    let rank = |who: &str| match who {
        "direct" => 0,
        "nginx" => 1,
        "engine" => 2,
        "aggregator" => 3,
        "aggregator-h1" => 4,
        _ => 5,
    };
    keys.sort_by(|a, b| (a.0.name(), a.1, rank(&a.2)).cmp(&(b.0.name(), b.1, rank(&b.2))));
    keys.iter()
        .map(|(proto, c, who)| {
            let mine = pick(*proto, *c, who);
            let direct = pick(*proto, *c, "direct");
            let nginx = pick(*proto, *c, "nginx");
            let rps = med(&mine, &|r| r.outcome.rps);
            let p50 = med(&mine, &|r| r.outcome.p50_us);
            let ratio = |base: &[&Run]| {
                let b = med(base, &|r| r.outcome.rps);
                (!base.is_empty() && b > 0.0).then(|| rps / b)
            };
            let cpu: Vec<f64> = mine.iter().filter_map(|r| r.cpu_us_per_request).collect();
            Cell {
                proto: *proto,
                concurrency: *c,
                contender: who.clone(),
                rps,
                p50_us: p50,
                p99_us: med(&mine, &|r| r.outcome.p99_us),
                ratio_to_direct: ratio(&direct),
                ratio_to_nginx: ratio(&nginx),
                added_p50_us: (!direct.is_empty())
                    .then(|| p50 - med(&direct, &|r| r.outcome.p50_us)),
                cpu_us_per_request: (!cpu.is_empty()).then(|| median(cpu)),
                failures: mine
                    .iter()
                    .map(|r| r.outcome.errors + r.outcome.bad_status)
                    .sum(),
            }
        })
        .collect()
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "–".into())
}

fn mib(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

/// The Markdown tables of a report.
pub fn markdown(report: &Report) -> String {
    let mut s = String::new();
    let m = &report.machine;
    let _ = writeln!(s, "### Run of {} on `{}`\n", report.date, m.hostname);
    let _ = writeln!(
        s,
        "- machine: {} cores ({}), {:.0} GiB, kernel {}, load average {:.2} at start",
        m.cores, m.cpu, m.memory_gib, m.kernel, m.load_at_start
    );
    for (tool, version) in &report.tools {
        let _ = writeln!(s, "- {tool}: {version}");
    }
    let _ = writeln!(s, "- settings: `{}`", report.settings);
    for note in &report.notes {
        let _ = writeln!(s, "- **note:** {note}");
    }
    s.push('\n');
    for proto in [Proto::H1, Proto::H2] {
        let rows: Vec<&Cell> = report.cells.iter().filter(|c| c.proto == proto).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "#### Proxied GET, {} ({})\n",
            proto.name(),
            match proto {
                Proto::H1 => "wrk, keep-alive connections",
                Proto::H2 => "h2load, ⌈c/16⌉ connections × ≤16 streams",
            }
        );
        s.push_str("| c | contender | req/s | p50 µs | p99 µs | × direct | × nginx | added p50 µs | CPU µs/req | failures |\n");
        s.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for c in rows {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                c.concurrency,
                c.contender,
                c.rps,
                c.p50_us,
                c.p99_us,
                opt(c.ratio_to_direct, 2),
                opt(c.ratio_to_nginx, 2),
                if c.contender == "direct" {
                    "–".into()
                } else {
                    opt(c.added_p50_us, 0)
                },
                opt(c.cpu_us_per_request, 1),
                c.failures
            );
        }
        s.push('\n');
    }
    if !report.memory.is_empty() {
        s.push_str("#### Memory (MiB)\n\n| process | idle RSS | of which anonymous | idle PSS | peak RSS | RSS after load |\n|---|---:|---:|---:|---:|---:|\n");
        for mem in &report.memory {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                mem.contender,
                mib(mem.idle_rss_kb),
                mib(mem.idle_anon_kb),
                mib(mem.idle_pss_kb),
                mib(mem.peak_rss_kb),
                mib(mem.after_rss_kb)
            );
        }
        s.push('\n');
    }
    if let Some(a) = &report.apis {
        let _ = writeln!(
            s,
            "#### `/apis` with {} APIServices (c={}; aggregated document {} bytes, {} gzip-compressed, legacy {} bytes; registered in {:.1} s)\n",
            a.apiservices,
            a.concurrency,
            a.aggregated_bytes,
            a.aggregated_gzip_bytes,
            a.legacy_bytes,
            a.register_seconds
        );
        s.push_str("| request | req/s | p50 µs | p99 µs | failures |\n|---|---:|---:|---:|---:|\n");
        for (name, o) in [
            ("aggregated v2, 200", &a.aggregated),
            (
                "aggregated v2, Accept-Encoding: gzip (as kubectl), 200",
                &a.aggregated_gzip,
            ),
            ("aggregated v2, If-None-Match → 304", &a.not_modified),
            ("legacy APIGroupList, 200", &a.legacy),
        ] {
            if let Some(o) = o {
                let _ = writeln!(
                    s,
                    "| {name} | {:.0} | {:.0} | {:.0} | {} |",
                    o.rps,
                    o.p50_us,
                    o.p99_us,
                    o.errors + o.bad_status
                );
            }
        }
        s.push('\n');
    }
    if let Some(w) = &report.watch {
        let _ = writeln!(s, "#### Watches ({} APIServices stored)\n", w.apiservices);
        let _ = writeln!(
            s,
            "- {} idle watches (one TLS connection each, opened in {:.1} s): RSS {} MiB → {} MiB ({:.1} KiB per watch)",
            w.idle_watches,
            w.open_seconds,
            mib(w.rss_before_kb),
            mib(w.rss_with_watches_kb),
            w.kb_per_watch
        );
        if w.h2_streams_per_conn > 0 {
            let _ = writeln!(
                s,
                "- {} idle watches over HTTP/2 ({} per connection): RSS {} MiB → {} MiB ({:.1} KiB per watch)",
                w.idle_watches,
                w.h2_streams_per_conn,
                mib(w.h2_rss_before_kb),
                mib(w.h2_rss_with_watches_kb),
                (w.h2_rss_with_watches_kb as f64 - w.h2_rss_before_kb as f64)
                    / w.idle_watches.max(1) as f64
            );
        }
        let _ = writeln!(
            s,
            "- one write fanned out to {} watchers, {} events: delivery p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; last watcher p50 {:.2} ms; the write itself p50 {:.2} ms; {} of {} deliveries seen\n",
            w.fanout_watchers,
            w.events,
            w.delivery_p50_ms,
            w.delivery_p99_ms,
            w.delivery_max_ms,
            w.last_watcher_p50_ms,
            w.write_p50_ms,
            w.deliveries,
            w.fanout_watchers * w.events as usize
        );
    }
    if !report.targets.is_empty() {
        s.push_str("#### Targets\n\n| target | measured | met |\n|---|---|---|\n");
        for t in &report.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(s, "| {} | {} | {met} |", t.target, t.measured);
        }
        s.push('\n');
    }
    s
}
