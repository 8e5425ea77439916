//! etcd-only behaviour: one shared etcd watch for all watchers, surviving etcd restarts and
//! member loss, and compaction while the store was cut off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use store::{EventType, Store, StoreUrl};
use testkit::etcd::{Etcd, EtcdCluster};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{
    Backend, Kind, apiservice, events_until, eventually, next_event, num, rv, test_options,
    with_priority,
};

fn watcher_total(metrics: &str) -> Result<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .context("etcd reports no etcd_debugging_mvcc_watcher_total")?
        .trim()
        .parse::<f64>()
        .map(|v| v as u64)
        .context("watcher_total is not a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_etcd_watch_serves_every_watcher() -> Result<()> {
    let mut b = Backend::new(Kind::Etcd, test_options()).await?;
    let mut watches = Vec::new();
    for _ in 0..2000 {
        watches.push(b.store.watch(None).await?);
    }
    let etcd = b.etcd.as_mut().context("etcd")?;
    ensure!(
        watcher_total(&etcd.metrics()?)? == 1,
        "one etcd watcher for 2000 store watches"
    );
    let created = b.store.create(apiservice("v1.a.example.com")).await?;
    for w in &mut watches {
        ensure!(next_event(w).await?.object == created);
    }
    Ok(())
}

/// Creates `v{i}.{tag}.example.com` for i = 0, 1, … until `stop`, retrying through outages.
/// A create whose answer was lost may have committed: the retry then finds it (AlreadyExists)
/// and reads it. Returns (name, resourceVersion) of every object.
fn spawn_writer(
    store: Arc<dyn Store>,
    tag: &'static str,
    stop: Arc<AtomicBool>,
    written: Arc<std::sync::Mutex<Vec<(String, u64)>>>,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut i = 0;
        while !stop.load(Ordering::SeqCst) {
            let name = format!("v{i}.{tag}.example.com");
            let object = loop {
                match store.create(apiservice(&name)).await {
                    Ok(o) => break o,
                    Err(store::Error::AlreadyExists { .. }) => match store.get(&name).await {
                        Ok(o) => break o,
                        Err(store::Error::Unavailable(_)) => {}
                        Err(e) => bail!("reading back {name}: {e}"),
                    },
                    Err(store::Error::Unavailable(_)) => {}
                    Err(e) => bail!("creating {name}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            written
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push((name, num(&rv(&object))));
            i += 1;
        }
        Ok(())
    })
}

fn count(written: &std::sync::Mutex<Vec<(String, u64)>>) -> usize {
    written.lock().map(|w| w.len()).unwrap_or(0)
}

/// Checks that `events` hold one ADDED per written object, in strictly increasing revision
/// order, and nothing else.
fn check_exactly_once(events: &[Arc<store::WatchEvent>], written: &[(String, u64)]) -> Result<()> {
    let mut previous = 0;
    let mut names = Vec::new();
    for e in events {
        let rev = num(e.resource_version());
        ensure!(
            rev > previous,
            "revision {rev} after {previous}: repeated or reordered"
        );
        previous = rev;
        ensure!(e.kind == EventType::Added, "unexpected {:?}", e.kind);
        names.push(e.object.metadata.name.clone().unwrap_or_default());
    }
    let mut expected: Vec<(u64, String)> = written.iter().map(|(n, r)| (*r, n.clone())).collect();
    expected.sort();
    let expected: Vec<String> = expected.into_iter().map(|(_, n)| n).collect();
    ensure!(
        names == expected,
        "watch saw {} events, {} objects written",
        names.len(),
        expected.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_after_an_etcd_restart_without_loss_or_repeat() -> Result<()> {
    let mut b = Backend::new(Kind::Etcd, test_options().watcher_buffer(100_000)).await?;
    let listed = b.store.list(None).await?;
    let mut from_list = b.store.watch(Some(&listed.resource_version)).await?;
    let mut from_now = b.store.watch(None).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = spawn_writer(
        Arc::clone(&b.store),
        "restart",
        Arc::clone(&stop),
        Arc::clone(&written),
    );

    eventually("20 writes", Duration::from_secs(30), || async {
        Ok((count(&written) >= 20).then_some(()))
    })
    .await?;
    let mut etcd = b.etcd.take().context("etcd")?;
    etcd = tokio::task::spawn_blocking(move || {
        etcd.kill();
        etcd
    })
    .await?;

    // While etcd is down, callers are told so.
    let store = Arc::clone(&b.store);
    eventually(
        "get to fail with Unavailable",
        Duration::from_secs(20),
        || {
            let store = Arc::clone(&store);
            async move {
                Ok(matches!(
                    store.get("v0.restart.example.com").await,
                    Err(store::Error::Unavailable(_))
                )
                .then_some(()))
            }
        },
    )
    .await?;
    eventually(
        "new watches to fail with Unavailable",
        Duration::from_secs(20),
        || {
            let store = Arc::clone(&store);
            async move {
                Ok(
                    matches!(store.watch(None).await, Err(store::Error::Unavailable(_)))
                        .then_some(()),
                )
            }
        },
    )
    .await?;

    let before_restart = count(&written);
    let etcd = tokio::task::spawn_blocking(move || etcd.restart().map(|()| etcd)).await??;
    b.etcd = Some(etcd);
    eventually(
        "20 writes after the restart",
        Duration::from_secs(30),
        || async { Ok((count(&written) >= before_restart + 20).then_some(())) },
    )
    .await?;
    stop.store(true, Ordering::SeqCst);
    writer.await??;

    let written = written
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let last = written.iter().map(|w| w.1).max().unwrap_or(0);
    for w in [&mut from_list, &mut from_now] {
        let events = events_until(w, last).await?;
        check_exactly_once(&events, &written)?;
    }
    let final_list = b.store.list(None).await?;
    ensure!(final_list.items.len() == written.len());
    // New watches work again.
    let mut again = b.store.watch(Some(&final_list.resource_version)).await?;
    let o = b.store.create(apiservice("v1.after.example.com")).await?;
    ensure!(next_event(&mut again).await?.object == o);
    Ok(())
}

/// A TCP proxy in front of etcd that the test can cut (dropping every connection and refusing
/// new ones) and restore, to take the store off etcd while etcd keeps running.
struct Proxy {
    addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = tokio::sync::watch::Sender::new(true);
        let rx = up.subscribe();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*rx.borrow() {
                    continue; // dropped: refused
                }
                let mut rx = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Ok(Proxy { addr, up })
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_cut_off_ends_watchers_with_too_old() -> Result<()> {
    let etcd = tokio::task::spawn_blocking(Etcd::start).await??;
    let target: SocketAddr = etcd.endpoints()[0].parse()?;
    let proxy = Proxy::start(target).await?;
    let url: StoreUrl = format!("etcd://{}/cut", proxy.addr).parse()?;
    let store = store::open_with(&url, test_options()).await?;
    let direct_url: StoreUrl = format!("{}/cut", etcd.store_url()).parse()?;
    let direct = store::open_with(&direct_url, test_options()).await?;

    let mut w = store.watch(None).await?;
    let a = store.create(apiservice("v1.a.example.com")).await?;
    ensure!(next_event(&mut w).await?.object == a);

    proxy.cut();
    eventually("the store to notice", Duration::from_secs(20), || {
        let store = Arc::clone(&store);
        async move {
            Ok(matches!(store.watch(None).await, Err(store::Error::Unavailable(_))).then_some(()))
        }
    })
    .await?;
    // Meanwhile others write and etcd compacts what the store has not seen.
    let mut b_ = direct.create(apiservice("v1.b.example.com")).await?;
    for i in 0..3 {
        b_ = direct.update(with_priority(b_, i)).await?;
    }
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    client.compact(num(&rv(&b_)) as i64, None).await?;
    proxy.restore();

    match tokio::time::timeout(Duration::from_secs(30), w.next()).await? {
        Some(Err(store::Error::TooOld { .. })) => {}
        other => bail!("expected TooOld after the compaction, got {other:?}"),
    }
    ensure!(w.next().await.is_none());
    // Listing again and watching from there works.
    let listed = eventually("a list", Duration::from_secs(20), || {
        let store = Arc::clone(&store);
        async move { Ok(store.list(None).await.ok()) }
    })
    .await?;
    ensure!(listed.items.len() == 2);
    ensure!(matches!(
        store.watch(Some(&rv(&a))).await,
        Err(store::Error::TooOld { .. })
    ));
    let mut w = store.watch(Some(&listed.resource_version)).await?;
    let c = direct.create(apiservice("v1.c.example.com")).await?;
    ensure!(next_event(&mut w).await?.object == c);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_survive_losing_a_member() -> Result<()> {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3)).await??;
    let url: StoreUrl = format!("{}/members", cluster.store_url()).parse()?;
    let s = store::open_with(&url, test_options().watcher_buffer(100_000)).await?;
    let mut w = s.watch(None).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = spawn_writer(
        Arc::clone(&s),
        "members",
        Arc::clone(&stop),
        Arc::clone(&written),
    );
    eventually("10 writes", Duration::from_secs(30), || async {
        Ok((count(&written) >= 10).then_some(()))
    })
    .await?;
    cluster = tokio::task::spawn_blocking(move || {
        cluster.member(0).kill();
        cluster
    })
    .await?;
    let before = count(&written);
    eventually(
        "30 writes with a member gone",
        Duration::from_secs(60),
        || async { Ok((count(&written) >= before + 30).then_some(())) },
    )
    .await?;
    stop.store(true, Ordering::SeqCst);
    writer.await??;
    let written = written
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let last = written.iter().map(|w| w.1).max().unwrap_or(0);
    let events = events_until(&mut w, last).await?;
    check_exactly_once(&events, &written)?;
    drop(cluster);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_a_clear_error() -> Result<()> {
    let port = testkit::process::free_port();
    let url: StoreUrl = format!("etcd://127.0.0.1:{port}").parse()?;
    match store::open_with(&url, test_options()).await {
        Err(store::Error::Unavailable(message)) => {
            ensure!(
                message.contains(&port.to_string()) || message.contains("connect"),
                "{message}"
            )
        }
        Err(other) => bail!("expected Unavailable, got {other}"),
        Ok(_) => bail!("opened a store on a port where nothing listens"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_parses_the_store_url() -> Result<()> {
    let etcd = tokio::task::spawn_blocking(Etcd::start).await??;
    let s = store::open(&format!("{}/by-url", etcd.store_url())).await?;
    let created = s.create(apiservice("v1.a.example.com")).await?;
    // The object lives at <prefix><name>.
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    let resp = client.get("/by-url/v1.a.example.com", None).await?;
    ensure!(resp.kvs().len() == 1);
    ensure!(num(&rv(&created)) == resp.kvs()[0].mod_revision() as u64);
    let stored: serde_json::Value = serde_json::from_slice(resp.kvs()[0].value())?;
    ensure!(
        stored["metadata"].get("resourceVersion").is_none(),
        "stored without resourceVersion"
    );
    ensure!(matches!(
        store::open("etcd://nowhere").await,
        Err(store::Error::InvalidUrl { .. })
    ));
    Ok(())
}
