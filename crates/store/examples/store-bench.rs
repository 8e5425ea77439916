//! Store benchmark (not a test; run through `bench/store/run.sh`): acknowledged writes per second,
//! watch delivery latency, and memory for idle watchers, for the embedded back-end and for etcd
//! (a real etcd started on free loopback ports).
//!
//! Usage: `store-bench [embedded|etcd|both] [--writes N] [--watchers N]`
//! (defaults: both, 4000 writes per concurrency level, 10000 idle watchers).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::{
    APIServiceSpec, ServiceReference,
};
use store::{APIService, Options, Store, StoreUrl};

struct Args {
    backends: Vec<&'static str>,
    writes: usize,
    watchers: usize,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        backends: vec!["embedded", "etcd"],
        writes: 4000,
        watchers: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "embedded" => args.backends = vec!["embedded"],
            "etcd" => args.backends = vec!["etcd"],
            "both" => args.backends = vec!["embedded", "etcd"],
            "--writes" => args.writes = it.next().context("--writes N")?.parse()?,
            "--watchers" => args.watchers = it.next().context("--watchers N")?.parse()?,
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(args)
}

fn apiservice(name: &str) -> APIService {
    APIService {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        },
        spec: Some(APIServiceSpec {
            group: Some(format!("{name}.example.com")),
            version: Some("v1".into()),
            group_priority_minimum: 1000,
            version_priority: 15,
            // About the size of a real CA bundle.
            ca_bundle: Some(k8s_openapi::ByteString(vec![b'x'; 1200])),
            service: Some(ServiceReference {
                name: Some("svc".into()),
                namespace: Some("ns".into()),
                port: Some(443),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

/// Resident set size of this process, in KiB.
fn rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/self/status")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `writes` creates spread over `concurrency` tasks; returns acknowledged writes per second.
async fn writes_per_second(
    store: &Arc<dyn Store>,
    tag: &str,
    writes: usize,
    concurrency: usize,
) -> Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let store = Arc::clone(store);
        let tag = tag.to_string();
        let n = writes / concurrency;
        tasks.push(tokio::spawn(async move {
            for i in 0..n {
                store
                    .create(apiservice(&format!("v{i}.{tag}c{concurrency}t{t}")))
                    .await?;
            }
            anyhow::Ok(n)
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Sequential updates of one object while `watchers` watchers read; returns per-write latency
/// (call to acknowledgement) and delivery latency (call to the event reaching a watcher: the
/// first and the last of them).
async fn delivery_latency(
    store: &Arc<dyn Store>,
    tag: &str,
    writes: usize,
    watchers: usize,
) -> Result<(Vec<Duration>, Vec<Duration>, Vec<Duration>)> {
    let mut object = store
        .create(apiservice(&format!("v1.latency{tag}w{watchers}")))
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let mut readers = Vec::new();
    for _ in 0..watchers {
        let mut w = store
            .watch(object.metadata.resource_version.as_deref())
            .await?;
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(e)) = w.next().await {
                if tx
                    .send((e.resource_version().to_string(), Instant::now()))
                    .is_err()
                {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut sent = HashMap::new();
    let mut ack = Vec::with_capacity(writes);
    let mut arrivals: HashMap<String, (Instant, Instant, usize)> = HashMap::new();
    for i in 0..writes {
        let mut next = object.clone();
        if let Some(spec) = next.spec.as_mut() {
            spec.version_priority = (i % 1000) as i32;
        }
        let t0 = Instant::now();
        object = store.update(next).await?;
        ack.push(t0.elapsed());
        let rv = object.metadata.resource_version.clone().unwrap_or_default();
        sent.insert(rv.clone(), t0);
        // Wait until every watcher has this event, so writes do not overlap deliveries.
        loop {
            if arrivals.get(&rv).is_some_and(|a| a.2 == watchers) {
                break;
            }
            let Some((rv_seen, at)) = rx.recv().await else {
                bail!("watchers ended");
            };
            let entry = arrivals.entry(rv_seen).or_insert((at, at, 0));
            entry.0 = entry.0.min(at);
            entry.1 = entry.1.max(at);
            entry.2 += 1;
        }
    }
    for r in readers {
        r.abort();
    }
    let mut first = Vec::new();
    let mut last = Vec::new();
    for (rv, t0) in sent {
        if let Some((a, b, _)) = arrivals.get(&rv) {
            first.push(a.duration_since(t0));
            last.push(b.duration_since(t0));
        }
    }
    ack.sort();
    first.sort();
    last.sort();
    Ok((ack, first, last))
}

async fn run(backend: &str, store: Arc<dyn Store>, args: &Args) -> Result<()> {
    println!("## {backend}");
    println!();
    // First, on a fresh process: idle watchers (nobody reads them; only the store's per-watcher
    // state is held).
    store
        .create(apiservice(&format!("v1.warmup{backend}")))
        .await?;
    let before = rss_kib()?;
    let mut idle = Vec::with_capacity(args.watchers);
    for _ in 0..args.watchers {
        idle.push(store.watch(None).await?);
    }
    let after = rss_kib()?;
    let grown = after.saturating_sub(before);
    println!(
        "- {} idle watchers: process RSS {:.1} MiB -> {:.1} MiB (+{:.1} MiB, {:.0} bytes per watcher)",
        args.watchers,
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        grown as f64 / 1024.0,
        grown as f64 * 1024.0 / args.watchers as f64
    );
    // One write reaching all of them (read back after the write is acknowledged).
    let t0 = Instant::now();
    store
        .create(apiservice(&format!("v1.fanout{backend}")))
        .await?;
    for w in &mut idle {
        match w.next().await {
            Some(Ok(_)) => {}
            other => bail!("idle watcher: {other:?}"),
        }
    }
    println!(
        "- one write delivered to all {} watchers and read back: {}",
        args.watchers,
        ms(t0.elapsed())
    );
    drop(idle);
    println!();

    println!("| concurrent writers | acknowledged creates/s |");
    println!("|---|---|");
    for concurrency in [1, 16, 64] {
        let per_s = writes_per_second(&store, backend, args.writes, concurrency).await?;
        println!("| {concurrency} | {per_s:.0} |");
    }
    println!();
    println!(
        "| watchers | update p50 / p99 | update call → event at first watcher p50 / p99 | → at last watcher p50 / p99 |"
    );
    println!("|---|---|---|---|");
    for watchers in [1, 1000] {
        let (ack, first, last) = delivery_latency(&store, backend, 300, watchers).await?;
        println!(
            "| {watchers} | {} / {} | {} / {} | {} / {} |",
            ms(percentile(&ack, 0.5)),
            ms(percentile(&ack, 0.99)),
            ms(percentile(&first, 0.5)),
            ms(percentile(&first, 0.99)),
            ms(percentile(&last, 0.5)),
            ms(percentile(&last, 0.99)),
        );
    }
    println!();
    println!("- peak RSS: {:.1} MiB", peak_rss_kib()? as f64 / 1024.0);
    println!();
    store.close().await?;
    Ok(())
}

/// Peak resident set size of this process, in KiB.
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmHWM in /proc/self/status")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let options = Options::default()
        .bookmark_interval(None)
        .watcher_buffer(1000);
    for backend in args.backends.clone() {
        match backend {
            "embedded" => {
                let dir = tempfile::tempdir()?;
                let url = StoreUrl::Embedded {
                    dir: dir.path().to_path_buf(),
                };
                let store = store::open_with(&url, options.clone()).await?;
                run("embedded", store, &args).await?;
            }
            _ => {
                let etcd = tokio::task::spawn_blocking(testkit::etcd::Etcd::start).await??;
                let url: StoreUrl = format!("{}/bench", etcd.store_url()).parse()?;
                let store = store::open_with(&url, options.clone()).await?;
                run("etcd", store, &args).await?;
                drop(etcd);
            }
        }
    }
    Ok(())
}
