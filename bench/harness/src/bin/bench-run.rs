//! The benchmark driver (`bench/run.sh` builds the binaries and calls it). It starts the
//! backend and the contenders on loopback, drives each with wrk (HTTP/1.1) or h2load (HTTP/2),
//! alternating the contenders run by run, reads CPU time and memory from `/proc`, and writes
//! `<out>/<stamp>.json` and `<out>/<stamp>.md`. See `bench/README.md`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use bench_harness::client::{Client, Tls};
use bench_harness::load::{self, Outcome, Proto};
use bench_harness::procfs;
use bench_harness::report::{self, Apis, Machine, Memory, Report, Run, Target, Watch};
use bench_harness::setup::{self, Bins, Pki, Proc};
use bench_harness::watch;
use clap::Parser;
use http::Method;
use serde_json::json;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "bench-run",
    about = "kube-aggregator benchmark driver (bench/README.md)"
)]
struct Args {
    /// Directory of the release binaries (kube-aggregator, bench-backend, bench-front).
    #[arg(long = "bin-dir")]
    bin_dir: PathBuf,
    /// Where `<stamp>.json` and `<stamp>.md` go.
    #[arg(long = "out-dir", default_value = "bench/results")]
    out_dir: PathBuf,
    /// Scratch directory (certificates, store, logs); default a new temp dir, kept on failure.
    #[arg(long = "work-dir")]
    work_dir: Option<PathBuf>,
    /// Seconds per measured run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unrecorded load before each measured run.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    concurrency: Vec<usize>,
    /// Protocols (h1: wrk, h2: h2load).
    #[arg(long, value_delimiter = ',', default_value = "h1,h2")]
    protos: Vec<String>,
    /// Rounds per cell; contenders rotate their order each round; cells report medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Contenders: direct, nginx, engine (proxy::Engine alone), aggregator, aggregator-h1
    /// (`--proxy-backend-http2=false`: pooled HTTP/1.1 to the backend).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,nginx,engine,aggregator,aggregator-h1"
    )]
    contenders: Vec<String>,
    /// Suites: proxy, apis, watch.
    #[arg(long, value_delimiter = ',', default_value = "proxy,apis,watch")]
    suites: Vec<String>,
    /// APIServices registered for the `/apis` test.
    #[arg(long, default_value_t = 1000)]
    apiservices: usize,
    /// Idle watches.
    #[arg(long, default_value_t = 10000)]
    watches: usize,
    /// Watchers of the fan-out test.
    #[arg(long, default_value_t = 1000)]
    fanout: usize,
    /// Events of the fan-out test.
    #[arg(long, default_value_t = 20)]
    events: u32,
    /// Load generator threads.
    #[arg(long = "load-threads", default_value_t = 1)]
    load_threads: usize,
    /// Worker threads of the backend.
    #[arg(long = "backend-workers", default_value_t = 2)]
    backend_workers: usize,
    /// nginx worker processes (an operator's `auto` on this machine).
    #[arg(long = "nginx-workers", default_value_t = 2)]
    nginx_workers: usize,
    /// Extra flags for `kube-aggregator serve` (repeatable), e.g. `--serve-arg=--worker-threads=1`.
    #[arg(long = "serve-arg", allow_hyphen_values = true)]
    serve_args: Vec<String>,
    /// Access logs of nginx and the aggregator: `on` (both products' default: one line per
    /// request) or `off` (nginx `access_log off`, aggregator `RUST_LOG=info,access=off`).
    #[arg(long = "access-log", default_value = "on", value_parser = ["on", "off"])]
    access_log: String,
    /// Make `bench-front` speak HTTP/1.1 to the backend.
    #[arg(long = "engine-backend-http1")]
    engine_backend_http1: bool,
    /// A short run: 3 s per run, c=1,16,256, 2000 idle watches, 200 watchers, 200 APIServices.
    #[arg(long)]
    quick: bool,
}

const TOKEN: &str = "bench-token-0123456789";
const GROUP: &str = "bench.example.com";
const PATH: &str = "/apis/bench.example.com/v1/namespaces/default/things/x";
const WHOAMI: &str = "/apis/bench.example.com/v1/whoami";
const APISERVICES: &str = "/apis/apiregistration.k8s.io/v1/apiservices";
const AGGREGATED_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

/// One contender's process(es) and address.
struct Contender {
    name: String,
    addr: SocketAddr,
    /// The process whose CPU and memory count (nginx: the master; its workers are added).
    proc: Option<Proc>,
    multi_process: bool,
}

impl Contender {
    fn pids(&self) -> Vec<u32> {
        let Some(p) = &self.proc else {
            return Vec::new();
        };
        let mut pids = vec![p.pid()];
        if self.multi_process {
            pids.extend(procfs::children(p.pid()));
        }
        pids
    }

    fn sample(&self) -> Option<procfs::Sample> {
        let pids = self.pids();
        (!pids.is_empty())
            .then(|| procfs::sample_all(&pids).ok())
            .flatten()
    }

    fn pss_kb(&self) -> u64 {
        self.pids()
            .iter()
            .filter_map(|p| procfs::pss_kb(*p).ok())
            .sum()
    }
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        memory_gib: mem_kb / 1048576.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        load_at_start: procfs::loadavg(),
    }
}

fn utc_stamp() -> (String, String) {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ %Y-%m-%d-%H%M"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let (date, stamp) = out.split_once(' ').unwrap_or(("unknown", "unknown"));
    (date.to_owned(), stamp.to_owned())
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.quick {
        args.duration = 3;
        args.warmup = 1;
        args.concurrency = vec![1, 16, 256];
        args.watches = 2000;
        args.fanout = 200;
        args.events = 10;
        args.apiservices = 200;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let work = match &args.work_dir {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            w.clone()
        }
        None => {
            let dir =
                std::env::temp_dir().join(format!("kube-aggregator-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            dir
        }
    };
    eprintln!("bench-run: work dir {}", work.display());
    let result = run(&args, &work, &runtime);
    match &result {
        Ok(()) if args.work_dir.is_none() => {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok(()) => {}
        Err(_) => eprintln!("bench-run: logs kept in {}", work.display()),
    }
    result
}

struct Env {
    bins: Bins,
    pki: Pki,
    work: PathBuf,
    logs: PathBuf,
    tls: Tls,
}

fn start_aggregator(
    env: &Env,
    args: &Args,
    port: u16,
    backend: SocketAddr,
    name: &str,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let services = env.work.join("services.yaml");
    std::fs::write(
        &services,
        format!(
            "services:\n  - namespace: bench\n    name: backend\n    port: 443\n    addresses: [\"{backend}\"]\n"
        ),
    )?;
    let tokens = env.work.join("tokens.csv");
    std::fs::write(
        &tokens,
        format!("{TOKEN},bench,bench-uid,\"system:masters\"\n"),
    )?;
    let p = |f: &str| env.pki.file(f);
    let mut cmd = Command::new(&env.bins.kube_aggregator);
    cmd.arg("serve")
        .args(["--bind-address", "127.0.0.1", "--secure-port"])
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(p("aggregator.pem"))
        .arg("--tls-private-key-file")
        .arg(p("aggregator-key.pem"))
        .arg("--client-ca-file")
        .arg(p("ca.pem"))
        .arg("--token-auth-file")
        .arg(&tokens)
        .arg("--proxy-client-cert-file")
        .arg(p("front-proxy-client.pem"))
        .arg("--proxy-client-key-file")
        .arg(p("front-proxy-client-key.pem"))
        .arg("--service-map")
        .arg(&services)
        .arg("--store")
        .arg(format!(
            "embedded:{}",
            env.work.join(name).join("data").display()
        ))
        .args(extra)
        .args(&args.serve_args);
    if args.access_log == "off" {
        cmd.env("RUST_LOG", "info,access=off");
    }
    Proc::spawn(name, &mut cmd, &env.logs)
}

async fn wait_ready(addr: SocketAddr, tls: &Tls, proc: &mut Proc) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.check_alive()?;
        if let Ok(client) = Client::connect(addr, tls, TOKEN).await
            && let Ok(reply) = client.get("/readyz").await
            && reply.status.is_success()
        {
            return Ok(client);
        }
        if Instant::now() > deadline {
            bail!("the aggregator never became ready: {}", proc.tail());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn apiservice(
    name: &str,
    group: &str,
    service: Option<serde_json::Value>,
    ca: Option<&str>,
) -> serde_json::Value {
    let mut spec = json!({
        "group": group, "version": "v1",
        "groupPriorityMinimum": 1000, "versionPriority": 15,
    });
    if let Some(service) = service {
        spec["service"] = service;
    }
    if let Some(ca) = ca {
        spec["caBundle"] = json!(ca);
    }
    json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": name}, "spec": spec,
    })
}

/// Registers the benchmark's APIService and waits until the proxied path answers 200.
/// Returns the last answer when it never does (the proxy not wired yet).
async fn register_backend(client: &Client, env: &Env) -> anyhow::Result<Result<(), String>> {
    let ca = std::fs::read(env.pki.file("ca.pem"))?;
    let body = apiservice(
        &format!("v1.{GROUP}"),
        GROUP,
        Some(json!({"namespace": "bench", "name": "backend", "port": 443})),
        Some(&base64::engine::general_purpose::STANDARD.encode(&ca)),
    );
    let existing = client.get(&format!("{APISERVICES}/v1.{GROUP}")).await?;
    if !existing.status.is_success() {
        client
            .send_json(Method::POST, APISERVICES, "application/json", &body)
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let reply = client.get(PATH).await?;
        if reply.status.is_success() {
            return Ok(Ok(()));
        }
        if Instant::now() > deadline {
            return Ok(Err(format!("{} {}", reply.status, reply.text().trim())));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn headers() -> Vec<(String, String)> {
    vec![
        ("Authorization".into(), format!("Bearer {TOKEN}")),
        ("X-Remote-User".into(), "bench".into()),
        ("X-Remote-Group".into(), "system:masters".into()),
        ("Accept".into(), "application/json".into()),
    ]
}

fn run(args: &Args, work: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    let (date, stamp) = utc_stamp();
    let machine = machine();
    let bins = Bins {
        kube_aggregator: args.bin_dir.join("kube-aggregator"),
        backend: args.bin_dir.join("bench-backend"),
        front: args.bin_dir.join("bench-front"),
    };
    let logs = work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let pki = Pki::create(&bins.kube_aggregator, &work.join("pki"))?;
    let tls = Tls::new(&pki.file("ca.pem"), "127.0.0.1")?;
    let env = Env {
        bins,
        pki,
        work: work.to_owned(),
        logs,
        tls,
    };
    let mut notes = Vec::new();
    let clk = procfs::clk_tck() as f64;
    let suites = |s: &str| args.suites.iter().any(|x| x == s);
    let wants = |c: &str| args.contenders.iter().any(|x| x == c);

    // The backend, shared by every contender.
    let p = |f: &str| env.pki.file(f);
    let mut backend = Proc::spawn(
        "backend",
        Command::new(&env.bins.backend)
            .arg("--tls-cert-file")
            .arg(p("backend.pem"))
            .arg("--tls-private-key-file")
            .arg(p("backend-key.pem"))
            .arg("--requestheader-client-ca-file")
            .arg(p("front-proxy-ca.pem"))
            .args([
                "--requestheader-allowed-names",
                "front-proxy-client",
                "--allow-direct",
            ])
            .arg("--worker-threads")
            .arg(args.backend_workers.to_string()),
        &env.logs,
    )?;
    let backend_addr = backend.wait_listening(Duration::from_secs(10))?;
    let mut contenders: Vec<Contender> = Vec::new();
    if wants("direct") {
        contenders.push(Contender {
            name: "direct".into(),
            addr: backend_addr,
            proc: None,
            multi_process: false,
        });
    }
    if wants("nginx") {
        let port = setup::free_port()?;
        let conf = env.work.join("nginx.conf");
        std::fs::write(
            &conf,
            setup::nginx_conf(
                &env.work,
                port,
                backend_addr,
                &env.pki,
                args.nginx_workers,
                args.access_log == "on",
            ),
        )?;
        let mut proc = Proc::spawn(
            "nginx",
            Command::new("nginx")
                .arg("-p")
                .arg(&env.work)
                .arg("-c")
                .arg(&conf),
            &env.logs,
        )?;
        std::thread::sleep(Duration::from_millis(500));
        proc.check_alive()?;
        contenders.push(Contender {
            name: "nginx".into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            proc: Some(proc),
            multi_process: true,
        });
    }
    let services = env.work.join("front-services.yaml");
    std::fs::write(
        &services,
        format!(
            "services:\n  - namespace: bench\n    name: backend\n    port: 443\n    addresses: [\"{backend_addr}\"]\n"
        ),
    )?;
    if wants("engine") {
        let mut cmd = Command::new(&env.bins.front);
        cmd.arg("--tls-cert-file")
            .arg(p("aggregator.pem"))
            .arg("--tls-private-key-file")
            .arg(p("aggregator-key.pem"))
            .arg("--proxy-client-cert-file")
            .arg(p("front-proxy-client.pem"))
            .arg("--proxy-client-key-file")
            .arg(p("front-proxy-client-key.pem"))
            .arg("--service-map")
            .arg(&services)
            .arg("--ca-bundle")
            .arg(p("ca.pem"))
            .args(["--token", TOKEN]);
        if args.engine_backend_http1 {
            cmd.arg("--backend-http1");
        }
        let mut proc = Proc::spawn("engine", &mut cmd, &env.logs)?;
        let addr = proc.wait_listening(Duration::from_secs(10))?;
        contenders.push(Contender {
            name: "engine".into(),
            addr,
            proc: Some(proc),
            multi_process: false,
        });
    }
    let aggregator_port = setup::free_port()?;
    let aggregator_addr = SocketAddr::from(([127, 0, 0, 1], aggregator_port));
    let mut aggregator_client = None;
    if wants("aggregator") || suites("apis") || suites("watch") {
        let mut proc =
            start_aggregator(&env, args, aggregator_port, backend_addr, "aggregator", &[])?;
        let client = rt.block_on(wait_ready(aggregator_addr, &env.tls, &mut proc))?;
        let wired = rt.block_on(register_backend(&client, &env))?;
        aggregator_client = Some(client);
        match wired {
            Ok(()) if wants("aggregator") => contenders.push(Contender {
                name: "aggregator".into(),
                addr: aggregator_addr,
                proc: Some(proc),
                multi_process: false,
            }),
            Ok(()) => drop(proc),
            Err(answer) => {
                notes.push(format!(
                    "the aggregator does not proxy yet (its answer for {PATH} after 45 s: {answer}); its proxy column is missing"
                ));
                // Kept running for the discovery and watch suites.
                contenders.push(Contender {
                    name: "aggregator-unwired".into(),
                    addr: aggregator_addr,
                    proc: Some(proc),
                    multi_process: false,
                });
            }
        }
    }

    // The same server with pooled HTTP/1.1 connections to the backend instead of HTTP/2.
    if wants("aggregator-h1") {
        let port = setup::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut proc = start_aggregator(
            &env,
            args,
            port,
            backend_addr,
            "aggregator-h1",
            &["--proxy-backend-http2=false"],
        )?;
        let client = rt.block_on(wait_ready(addr, &env.tls, &mut proc))?;
        match rt.block_on(register_backend(&client, &env))? {
            Ok(()) => contenders.push(Contender {
                name: "aggregator-h1".into(),
                addr,
                proc: Some(proc),
                multi_process: false,
            }),
            Err(answer) => notes.push(format!(
                "aggregator-h1 does not proxy (its answer for {PATH}: {answer}); its column is missing"
            )),
        }
    }

    // Identity check: each contender reaches the backend and the backend sees `bench`.
    let mut identity = BTreeMap::new();
    for c in contenders.iter().filter(|c| c.name != "aggregator-unwired") {
        let reply = rt.block_on(async {
            let client = Client::connect(c.addr, &env.tls, TOKEN).await?;
            client
                .call(
                    Method::GET,
                    WHOAMI,
                    &[
                        ("x-remote-user", "bench"),
                        ("x-remote-group", "system:masters"),
                    ],
                    None,
                )
                .await
        })?;
        if !reply.status.is_success() {
            bail!(
                "{}: GET {WHOAMI}: {} {}",
                c.name,
                reply.status,
                reply.text()
            );
        }
        identity.insert(c.name.clone(), reply.json()?);
    }
    eprintln!(
        "bench-run: backend sees {}",
        serde_json::to_string(&identity)?
    );

    // Idle memory, after a settle.
    std::thread::sleep(Duration::from_secs(2));
    let mut memory: Vec<Memory> = contenders
        .iter()
        .filter_map(|c| {
            let s = c.sample()?;
            Some(Memory {
                contender: c.name.clone(),
                idle_rss_kb: s.rss_kb,
                idle_pss_kb: c.pss_kb(),
                idle_anon_kb: s.anon_kb,
                ..Memory::default()
            })
        })
        .collect();
    if let Ok(s) = procfs::sample(backend.pid()) {
        memory.push(Memory {
            contender: "backend".into(),
            idle_rss_kb: s.rss_kb,
            idle_pss_kb: procfs::pss_kb(backend.pid()).unwrap_or(0),
            idle_anon_kb: s.anon_kb,
            ..Memory::default()
        });
    }

    // The proxy matrix.
    let mut runs = Vec::new();
    let headers = headers();
    let scratch = env.work.join("load");
    std::fs::create_dir_all(&scratch)?;
    let measured: Vec<&Contender> = contenders
        .iter()
        .filter(|c| c.name != "aggregator-unwired")
        .collect();
    if suites("proxy") {
        let protos: Vec<Proto> = args
            .protos
            .iter()
            .map(|p| Proto::parse(p))
            .collect::<anyhow::Result<_>>()?;
        let mut sequence = 0usize;
        for proto in &protos {
            for &c in &args.concurrency {
                for round in 0..args.rounds {
                    let n = measured.len();
                    for i in 0..n {
                        // Rotate the order each round and each cell, so no contender always
                        // runs first (after the quiet) or last.
                        let who = measured[(i + sequence) % n];
                        let url = format!("https://{}{PATH}", who.addr);
                        let spec = load::Spec {
                            proto: *proto,
                            concurrency: c,
                            duration: Duration::from_secs(args.duration),
                            url: &url,
                            headers: &headers,
                            threads: args.load_threads,
                        };
                        if args.warmup > 0 {
                            let warm = load::Spec {
                                duration: Duration::from_secs(args.warmup),
                                ..spec.clone()
                            };
                            load::run(&warm, &scratch)
                                .with_context(|| format!("warm-up of {}", who.name))?;
                        }
                        let before = who.sample();
                        let backend_before = procfs::sample(backend.pid())?;
                        let machine_before = procfs::machine_cpu()?;
                        let outcome = load::run(&spec, &scratch)
                            .with_context(|| format!("{} {} c={c}", who.name, proto.name()))?;
                        let after = who.sample();
                        let backend_after = procfs::sample(backend.pid())?;
                        let machine_after = procfs::machine_cpu()?;
                        let per_req = |ticks: u64| {
                            if outcome.requests == 0 {
                                0.0
                            } else {
                                ticks as f64 / clk * 1e6 / outcome.requests as f64
                            }
                        };
                        let cpu = match (before, after) {
                            (Some(b), Some(a)) => {
                                Some(per_req(a.cpu_ticks.saturating_sub(b.cpu_ticks)))
                            }
                            _ => None,
                        };
                        let busy = (machine_after.0 - machine_before.0) as f64
                            / (machine_after.1 - machine_before.1).max(1) as f64
                            * 100.0;
                        eprintln!(
                            "bench-run: {:>2} c={c:<3} {:<10} {:>8.0} req/s p50 {:>6.0} µs p99 {:>7.0} µs cpu {} µs/req errors {}",
                            proto.name(),
                            who.name,
                            outcome.rps,
                            outcome.p50_us,
                            outcome.p99_us,
                            cpu.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into()),
                            outcome.errors + outcome.bad_status
                        );
                        runs.push(Run {
                            proto: *proto,
                            concurrency: c,
                            contender: who.name.clone(),
                            round,
                            outcome,
                            cpu_us_per_request: cpu,
                            backend_cpu_us_per_request: per_req(
                                backend_after
                                    .cpu_ticks
                                    .saturating_sub(backend_before.cpu_ticks),
                            ),
                            machine_busy_pct: busy,
                        });
                    }
                    sequence += 1;
                }
            }
        }
        for mem in &mut memory {
            let pids: Vec<u32> = if mem.contender == "backend" {
                vec![backend.pid()]
            } else {
                contenders
                    .iter()
                    .find(|c| c.name == mem.contender)
                    .map(|c| c.pids())
                    .unwrap_or_default()
            };
            if let Ok(s) = procfs::sample_all(&pids) {
                mem.peak_rss_kb = s.hwm_kb;
                mem.after_rss_kb = s.rss_kb;
            }
        }
    }

    // Everything but the aggregator stops: the remaining suites measure it alone.
    let mut aggregator_proc = None;
    for c in contenders.drain(..) {
        // `aggregator-h1` stops too; only the default configuration goes on.
        if c.name == "aggregator" || c.name == "aggregator-unwired" {
            aggregator_proc = c.proc;
        }
    }

    let mut apis_result = None;
    if suites("apis") && aggregator_client.is_some() {
        // A fresh connection: the one made at start-up sat idle through the proxy suite and
        // may be gone (its driver task is only polled inside `block_on`).
        drop(aggregator_client.take());
        let client = rt.block_on(Client::connect(aggregator_addr, &env.tls, TOKEN))?;
        apis_result = Some(rt.block_on(apis_suite(args, &client, aggregator_addr, &scratch))?);
    }

    let mut watch_result = None;
    if suites("watch") && aggregator_proc.is_some() {
        // A fresh process, so the figures start from a fresh heap.
        drop(aggregator_proc.take());
        let mut proc =
            start_aggregator(&env, args, aggregator_port, backend_addr, "aggregator", &[])?;
        let client = rt.block_on(wait_ready(aggregator_addr, &env.tls, &mut proc))?;
        let mut result = rt.block_on(watch_suite(args, &env, &client, aggregator_addr, &proc))?;
        drop(client);
        drop(proc);
        // The same number of watches over HTTP/2, on a fresh process again.
        let mut proc =
            start_aggregator(&env, args, aggregator_port, backend_addr, "aggregator", &[])?;
        let client = rt.block_on(wait_ready(aggregator_addr, &env.tls, &mut proc))?;
        let (before, with) =
            rt.block_on(h2_watches(args, &env, &client, aggregator_addr, &proc))?;
        result.h2_rss_before_kb = before;
        result.h2_rss_with_watches_kb = with;
        result.h2_streams_per_conn = H2_WATCHES_PER_CONN;
        watch_result = Some(result);
        aggregator_proc = Some(proc);
    }
    drop(aggregator_proc);
    drop(backend);

    let cells = report::cells(&runs);
    let targets = targets(&cells, &memory, apis_result.as_ref(), watch_result.as_ref());
    let mut tools = BTreeMap::new();
    tools.insert("wrk".into(), setup::tool_version("wrk", "--version"));
    tools.insert("h2load".into(), setup::tool_version("h2load", "--version"));
    tools.insert("nginx".into(), setup::nginx_version());
    tools.insert(
        "kube-aggregator".into(),
        setup::tool_version(&env.bins.kube_aggregator.display().to_string(), "--version"),
    );
    let report = Report {
        schema: 1,
        date: date.clone(),
        machine,
        tools,
        settings: json!({
            "duration_s": args.duration, "warmup_s": args.warmup, "rounds": args.rounds,
            "concurrency": args.concurrency, "protos": args.protos,
            "load_threads": args.load_threads, "backend_workers": args.backend_workers,
            "nginx_workers": args.nginx_workers, "serve_args": args.serve_args,
            "engine_backend_http1": args.engine_backend_http1,
            "access_log": args.access_log,
            "path": PATH, "identity_seen_by_backend": identity,
        }),
        runs,
        cells,
        memory,
        apis: apis_result,
        watch: watch_result,
        targets,
        notes,
    };
    std::fs::create_dir_all(&args.out_dir)?;
    let json_path = args.out_dir.join(format!("{stamp}.json"));
    let md_path = args.out_dir.join(format!("{stamp}.md"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    let md = report::markdown(&report);
    std::fs::write(&md_path, &md)?;
    println!("{md}");
    eprintln!(
        "bench-run: wrote {} and {}",
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

async fn apis_suite(
    args: &Args,
    client: &Client,
    addr: SocketAddr,
    scratch: &Path,
) -> anyhow::Result<Apis> {
    // Local APIServices (no backend): discovery lists them without any backend fetch.
    let started = Instant::now();
    let mut pending = tokio::task::JoinSet::new();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    for i in 0..args.apiservices {
        let client = client.clone();
        let limit = limit.clone();
        pending.spawn(async move {
            let _permit = limit.acquire().await;
            let group = format!("g{i:04}.{GROUP}");
            let name = format!("v1.{group}");
            if client
                .get(&format!("{APISERVICES}/{name}"))
                .await?
                .status
                .is_success()
            {
                return Ok(());
            }
            client
                .send_json(
                    Method::POST,
                    APISERVICES,
                    "application/json",
                    &apiservice(&name, &group, None, None),
                )
                .await
                .map(|_| ())
        });
    }
    while let Some(done) = pending.join_next().await {
        done??;
    }
    let register_seconds = started.elapsed().as_secs_f64();
    // Discovery is derived asynchronously from the informer: wait until it lists them all.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (aggregated, etag) = loop {
        let reply = client
            .call(Method::GET, "/apis", &[("accept", AGGREGATED_ACCEPT)], None)
            .await?;
        let groups = reply.json()?["items"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0);
        if groups > args.apiservices || Instant::now() > deadline {
            let etag = reply
                .headers
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            break (reply, etag);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let legacy = client.get("/apis").await?;
    let gzipped = client
        .call(
            Method::GET,
            "/apis",
            &[("accept", AGGREGATED_ACCEPT), ("accept-encoding", "gzip")],
            None,
        )
        .await?;
    let aggregated_gzip_bytes = if gzipped.headers.get("content-encoding").is_some() {
        gzipped.body.len()
    } else {
        0
    };
    let conditional = client
        .call(
            Method::GET,
            "/apis",
            &[("accept", AGGREGATED_ACCEPT), ("if-none-match", &etag)],
            None,
        )
        .await?;
    let url = format!("https://{addr}/apis");
    let base = vec![("Authorization".to_owned(), format!("Bearer {TOKEN}"))];
    let with = |extra: &[(&str, &str)]| {
        let mut h = base.clone();
        h.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        h
    };
    let c = 16;
    let go = |headers: Vec<(String, String)>| -> anyhow::Result<Outcome> {
        let spec = load::Spec {
            proto: Proto::H1,
            concurrency: c,
            duration: Duration::from_secs(args.duration),
            url: &url,
            headers: &headers,
            threads: args.load_threads,
        };
        let outcome = tokio::task::block_in_place(|| load::run(&spec, scratch))?;
        eprintln!(
            "bench-run: /apis {:>8.0} req/s p50 {:>6.0} µs failures {}",
            outcome.rps,
            outcome.p50_us,
            outcome.errors + outcome.bad_status
        );
        Ok(outcome)
    };
    let aggregated_run = go(with(&[("Accept", AGGREGATED_ACCEPT)]))?;
    let gzip_run = go(with(&[
        ("Accept", AGGREGATED_ACCEPT),
        ("Accept-Encoding", "gzip"),
    ]))?;
    let not_modified = go(with(&[
        ("Accept", AGGREGATED_ACCEPT),
        ("If-None-Match", &etag),
    ]))?;
    let legacy_run = go(with(&[("Accept", "application/json")]))?;
    Ok(Apis {
        apiservices: args.apiservices + 1,
        concurrency: c,
        aggregated_bytes: aggregated.body.len(),
        legacy_bytes: legacy.body.len(),
        aggregated: Some(aggregated_run),
        aggregated_gzip: Some(gzip_run),
        aggregated_gzip_bytes,
        not_modified: Some(not_modified),
        legacy: Some(legacy_run),
        conditional_status: conditional.status.as_u16(),
        register_seconds,
    })
}

/// Watches per HTTP/2 connection in the HTTP/2 idle-watch test.
const H2_WATCHES_PER_CONN: usize = 100;

async fn h2_watches(
    args: &Args,
    env: &Env,
    client: &Client,
    addr: SocketAddr,
    proc: &Proc,
) -> anyhow::Result<(u64, u64)> {
    let list = client
        .get(&format!("{APISERVICES}?limit=1"))
        .await?
        .json()?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = procfs::sample(proc.pid())?;
    let target = watch::Target {
        addr,
        tls: env.tls.clone(),
        token: TOKEN.to_owned(),
    };
    let path = format!("{APISERVICES}?watch=true&resourceVersion={rv}&timeoutSeconds=3600");
    let open = watch::open_h2(&target, &path, args.watches, H2_WATCHES_PER_CONN).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let with = procfs::sample(proc.pid())?;
    eprintln!(
        "bench-run: {} idle watches over HTTP/2: RSS {} KiB -> {} KiB",
        open.len(),
        before.rss_kb,
        with.rss_kb
    );
    drop(open);
    Ok((before.rss_kb, with.rss_kb))
}

async fn watch_suite(
    args: &Args,
    env: &Env,
    client: &Client,
    addr: SocketAddr,
    proc: &Proc,
) -> anyhow::Result<Watch> {
    let list = client.get(&format!("{APISERVICES}?limit=500")).await?;
    let list = list.json()?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let count = client.get(APISERVICES).await?.json()?["items"]
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = procfs::sample(proc.pid())?;
    let target = watch::Target {
        addr,
        tls: env.tls.clone(),
        token: TOKEN.to_owned(),
    };
    let path = format!("{APISERVICES}?watch=true&resourceVersion={rv}&timeoutSeconds=3600");
    let started = Instant::now();
    let idle = watch::open(&target, &path, args.watches, 64, None).await?;
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let with = procfs::sample(proc.pid())?;
    eprintln!(
        "bench-run: {} idle watches: RSS {} KiB -> {} KiB",
        idle.len(),
        before.rss_kb,
        with.rss_kb
    );
    drop(idle);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Fan-out: one local APIService whose label changes; every watcher waits for each change.
    let name = format!("v1.fanout.{GROUP}");
    if !client
        .get(&format!("{APISERVICES}/{name}"))
        .await?
        .status
        .is_success()
    {
        client
            .send_json(
                Method::POST,
                APISERVICES,
                "application/json",
                &apiservice(&name, &format!("fanout.{GROUP}"), None, None),
            )
            .await?;
    }
    let list = client
        .get(&format!("{APISERVICES}?limit=1"))
        .await?
        .json()?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let path = format!("{APISERVICES}?watch=true&resourceVersion={rv}&timeoutSeconds=3600");
    let watchers = watch::open(&target, &path, args.fanout, 64, Some(tx)).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut delivery_ms = Vec::new();
    let mut last_ms = Vec::new();
    let mut write_ms = Vec::new();
    for event in 0..args.events {
        let patch = json!({"metadata": {"labels": {watch::FANOUT_LABEL: format!("e{event}")}}});
        let t0 = Instant::now();
        client
            .send_json(
                Method::PATCH,
                &format!("{APISERVICES}/{name}"),
                "application/merge-patch+json",
                &patch,
            )
            .await?;
        write_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let seen = watch::collect(&mut rx, event, args.fanout, Duration::from_secs(10)).await;
        let mut ms: Vec<f64> = seen
            .iter()
            .map(|at| at.duration_since(t0).as_secs_f64() * 1e3)
            .collect();
        ms.sort_by(f64::total_cmp);
        if let Some(last) = ms.last() {
            last_ms.push(*last);
        }
        delivery_ms.extend(ms);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(watchers);
    let deliveries = delivery_ms.len();
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    };
    let result = Watch {
        apiservices: count,
        rss_before_kb: before.rss_kb,
        idle_watches: args.watches,
        rss_with_watches_kb: with.rss_kb,
        kb_per_watch: (with.rss_kb as f64 - before.rss_kb as f64) / args.watches.max(1) as f64,
        open_seconds,
        h2_rss_before_kb: 0,
        h2_rss_with_watches_kb: 0,
        h2_streams_per_conn: 0,
        fanout_watchers: args.fanout,
        events: args.events,
        deliveries,
        delivery_p50_ms: pct(&mut delivery_ms, 50.0),
        delivery_p99_ms: pct(&mut delivery_ms, 99.0),
        delivery_max_ms: pct(&mut delivery_ms, 100.0),
        last_watcher_p50_ms: pct(&mut last_ms, 50.0),
        write_p50_ms: pct(&mut write_ms, 50.0),
    };
    eprintln!(
        "bench-run: fan-out to {} watchers: p50 {:.2} ms p99 {:.2} ms ({deliveries} deliveries)",
        args.fanout, result.delivery_p50_ms, result.delivery_p99_ms
    );
    Ok(result)
}

fn targets(
    cells: &[report::Cell],
    memory: &[Memory],
    apis: Option<&Apis>,
    watch: Option<&Watch>,
) -> Vec<Target> {
    let mut out = Vec::new();
    let cell = |proto: Proto, c: usize, who: &str| {
        cells
            .iter()
            .find(|x| x.proto == proto && x.concurrency == c && x.contender == who)
    };
    for who in ["aggregator", "aggregator-h1", "engine"] {
        if !cells.iter().any(|c| c.contender == who) {
            continue;
        }
        for proto in [Proto::H1, Proto::H2] {
            if let Some(x) = cell(proto, 16, who)
                && let Some(r) = x.ratio_to_direct
            {
                out.push(Target {
                    target: format!("{who}, {}: req/s ≥ 0.45× direct at c=16", proto.name()),
                    measured: format!("{r:.2}×"),
                    met: Some(r >= 0.45),
                });
            }
            if let (Some(a), Some(b)) = (cell(proto, 16, who), cell(proto, 256, who)) {
                let r = b.rps / a.rps.max(1.0);
                out.push(Target {
                    target: format!(
                        "{who}, {}: no drop from c=16 to c=256 (≥ 0.95×, noise)",
                        proto.name()
                    ),
                    measured: format!("{:.0} → {:.0} req/s ({r:.2}×)", a.rps, b.rps),
                    met: Some(r >= 0.95),
                });
            }
            if let Some(x) = cell(proto, 1, who)
                && let Some(added) = x.added_p50_us
            {
                out.push(Target {
                    target: format!("{who}, {}: p50 added at c=1 ≤ 60 µs", proto.name()),
                    measured: format!("{added:.0} µs"),
                    met: Some(added <= 60.0),
                });
            }
            let mut worst: Option<(usize, f64)> = None;
            for x in cells
                .iter()
                .filter(|x| x.proto == proto && x.contender == who)
            {
                if let Some(r) = x.ratio_to_nginx
                    && worst.is_none_or(|(_, w)| r < w)
                {
                    worst = Some((x.concurrency, r));
                }
            }
            if let Some((c, r)) = worst {
                out.push(Target {
                    target: format!(
                        "{who}, {}: at least as fast as nginx (every c)",
                        proto.name()
                    ),
                    measured: format!("lowest {r:.2}× nginx (c={c})"),
                    met: Some(r >= 1.0),
                });
            }
        }
    }
    let agg_mem = memory
        .iter()
        .find(|m| m.contender == "aggregator" || m.contender == "aggregator-unwired");
    out.push(Target {
        target: "aggregator idle RSS ≤ 15 MB".into(),
        measured: agg_mem
            .map(|m| format!("{:.1} MiB", m.idle_rss_kb as f64 / 1024.0))
            .unwrap_or_else(|| "–".into()),
        met: agg_mem.map(|m| m.idle_rss_kb as f64 / 1024.0 <= 15.0),
    });
    out.push(Target {
        target: "10k idle watches: RSS ≤ 150 MB (HTTP/1.1, a connection each)".into(),
        measured: watch
            .map(|w| {
                format!(
                    "{:.1} MiB with {} watches",
                    w.rss_with_watches_kb as f64 / 1024.0,
                    w.idle_watches
                )
            })
            .unwrap_or_else(|| "–".into()),
        met: watch
            .filter(|w| w.idle_watches >= 10_000)
            .map(|w| w.rss_with_watches_kb as f64 / 1024.0 <= 150.0),
    });
    out.push(Target {
        target: format!(
            "10k idle watches: RSS ≤ 150 MB (HTTP/2, {H2_WATCHES_PER_CONN} per connection)"
        ),
        measured: watch
            .filter(|w| w.h2_streams_per_conn > 0)
            .map(|w| {
                format!(
                    "{:.1} MiB with {} watches",
                    w.h2_rss_with_watches_kb as f64 / 1024.0,
                    w.idle_watches
                )
            })
            .unwrap_or_else(|| "–".into()),
        met: watch
            .filter(|w| w.idle_watches >= 10_000 && w.h2_streams_per_conn > 0)
            .map(|w| w.h2_rss_with_watches_kb as f64 / 1024.0 <= 150.0),
    });
    out.push(Target {
        target: "aggregated /apis with 1,000 APIServices ≥ 20k req/s at c=16, gzip as kubectl asks"
            .into(),
        measured: apis
            .and_then(|a| {
                a.aggregated_gzip
                    .map(|o| format!("{:.0} req/s ({} APIServices)", o.rps, a.apiservices))
            })
            .unwrap_or_else(|| "–".into()),
        met: apis
            .filter(|a| a.apiservices >= 1000)
            .and_then(|a| a.aggregated_gzip.map(|o| o.rps >= 20_000.0)),
    });
    out.push(Target {
        target: "aggregated /apis with 1,000 APIServices ≥ 20k req/s at c=16, uncompressed".into(),
        measured: apis
            .and_then(|a| {
                a.aggregated
                    .map(|o| format!("{:.0} req/s ({} APIServices)", o.rps, a.apiservices))
            })
            .unwrap_or_else(|| "–".into()),
        met: apis
            .filter(|a| a.apiservices >= 1000)
            .and_then(|a| a.aggregated.map(|o| o.rps >= 20_000.0)),
    });
    out
}
