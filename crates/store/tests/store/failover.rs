//! The etcd back-end across member failures, without errors for the callers: a dead member is
//! skipped (the balanced channel used before kept choosing it), and a write whose answer was
//! lost is recognised in etcd's history instead of being reported as `AlreadyExists`,
//! `Conflict` or `NotFound` when repeated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use store::{Error, Store, StoreUrl};
use testkit::etcd::{Etcd, EtcdCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{apiservice, next_event, num, rv, test_options, with_priority};

/// The member that leads the cluster, asked of each member in turn.
async fn leader(cluster: &EtcdCluster) -> Result<usize> {
    for endpoint in cluster.endpoints() {
        let Ok(mut client) = etcd_client::Client::connect([endpoint.as_str()], None).await else {
            continue;
        };
        let Ok(status) = client.status().await else {
            continue;
        };
        let me = status.header().map(|h| h.member_id());
        if me == Some(status.leader()) {
            return cluster
                .endpoints()
                .iter()
                .position(|e| *e == endpoint)
                .context("leader endpoint");
        }
    }
    anyhow::bail!("no member says it leads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_leader_costs_callers_no_errors() -> Result<()> {
    let mut cluster = tokio::task::spawn_blocking(|| EtcdCluster::start(3)).await??;
    let url: StoreUrl = format!("{}/failover", cluster.store_url()).parse()?;
    let s = store::open_with(&url, test_options()).await?;
    let mut w = s.watch(None).await?;
    let mut objects = Vec::new();
    for i in 0..5 {
        objects.push(
            s.create(apiservice(&format!("v{i}.before.example.com")))
                .await?,
        );
    }
    // The leader, and with it the connections every member had open to it.
    let index = leader(&cluster).await?;
    cluster = tokio::task::spawn_blocking(move || {
        cluster.member(index).kill();
        cluster
    })
    .await?;
    // Every call succeeds: the store waits out the election instead of failing. Each kind of
    // request, many times, so that the old balanced channel (which picked the dead member for
    // about half of them) cannot pass by luck.
    for i in 0..30 {
        let name = format!("v{i}.after.example.com");
        let created = s.create(apiservice(&name)).await.context("create")?;
        ensure!(s.get(&name).await.context("get")? == created);
        let updated = s
            .update(with_priority(created, 7))
            .await
            .context("update")?;
        s.list(None).await.context("list")?;
        s.watch(None).await.context("a new watch")?;
        s.delete(&name, None).await.context("delete")?;
        objects.push(updated);
    }
    // The open watch saw all of it, once and in order.
    let mut last = 0;
    for _ in 0..5 + 30 * 3 {
        let e = next_event(&mut w).await?;
        let rev = num(e.resource_version());
        ensure!(rev > last, "{rev} after {last}");
        last = rev;
    }
    drop(cluster);
    Ok(())
}

/// What [`Flaky`] does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward requests, drop every answer: etcd applies writes the client never hears about.
    Swallow,
    /// Close every connection and refuse new ones.
    Cut,
}

/// A TCP proxy in front of etcd that can lose etcd's answers.
struct Flaky {
    addr: SocketAddr,
    mode: tokio::sync::watch::Sender<Mode>,
}

impl Flaky {
    async fn start(target: SocketAddr) -> Result<Flaky> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mode = tokio::sync::watch::Sender::new(Mode::Pass);
        let rx = mode.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *rx.borrow() == Mode::Cut {
                    continue;
                }
                let mut cut = rx.clone();
                let answers = rx.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let requests = tokio::io::copy(&mut client_read, &mut server_write);
                    let replies = async move {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = server_read.read(&mut buf).await?;
                            if n == 0 {
                                return Ok::<_, std::io::Error>(());
                            }
                            if *answers.borrow() == Mode::Pass {
                                client_write.write_all(&buf[..n]).await?;
                            }
                        }
                    };
                    tokio::select! {
                        _ = requests => {}
                        _ = replies => {}
                        _ = cut.wait_for(|m| *m == Mode::Cut) => {}
                    }
                });
            }
        });
        Ok(Flaky { addr, mode })
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

/// Starts `op` while `proxy` swallows answers, cuts the connection once etcd has had time to
/// apply it, and returns what the store answered.
async fn with_lost_answer<T: Send + 'static>(
    proxy: &Flaky,
    op: impl std::future::Future<Output = store::Result<T>> + Send + 'static,
) -> Result<store::Result<T>> {
    proxy.set(Mode::Swallow);
    let pending = tokio::spawn(op);
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.set(Mode::Cut);
    let answer = tokio::time::timeout(Duration::from_secs(20), pending).await??;
    proxy.set(Mode::Pass);
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_was_lost_is_recognised_not_repeated() -> Result<()> {
    let etcd = tokio::task::spawn_blocking(Etcd::start).await??;
    let target: SocketAddr = etcd.endpoints()[0].parse()?;
    // Two "members" that are two ways to the same etcd: the store fails over from one to the
    // other, and each lost answer is on the one in use (a, then b, then a).
    let a = Flaky::start(target).await?;
    let b = Flaky::start(target).await?;
    let url: StoreUrl = format!("etcd://{},{}/lost", a.addr, b.addr).parse()?;
    let s: Arc<dyn Store> = store::open_with(&url, test_options()).await?;
    let mut direct = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    let key = "/lost/v1.x.example.com";

    let store = Arc::clone(&s);
    let created = with_lost_answer(&a, async move {
        store.create(apiservice("v1.x.example.com")).await
    })
    .await?
    .context("a create whose answer was lost")?;
    let kv = direct
        .get(key, None)
        .await?
        .kvs()
        .first()
        .cloned()
        .context("stored")?;
    ensure!(kv.version() == 1, "written once");
    ensure!(num(&rv(&created)) == kv.mod_revision() as u64);

    let store = Arc::clone(&s);
    let update = with_priority(created.clone(), 42);
    let updated = with_lost_answer(&b, async move { store.update(update).await })
        .await?
        .context("an update whose answer was lost")?;
    let kv = direct
        .get(key, None)
        .await?
        .kvs()
        .first()
        .cloned()
        .context("stored")?;
    ensure!(kv.version() == 2, "updated once");
    ensure!(num(&rv(&updated)) == kv.mod_revision() as u64);
    ensure!(updated.spec.as_ref().map(|s| s.version_priority) == Some(42));

    let store = Arc::clone(&s);
    let deleted = with_lost_answer(
        &a,
        async move { store.delete("v1.x.example.com", None).await },
    )
    .await?
    .context("a delete whose answer was lost")?;
    ensure!(direct.get(key, None).await?.kvs().is_empty(), "deleted");
    ensure!(
        deleted.spec == updated.spec,
        "the deletion returns the last state"
    );
    ensure!(num(&rv(&deleted)) > num(&rv(&updated)));

    // A conflict is still a conflict, and a create of an existing name still AlreadyExists,
    // when the lost attempt was not ours to recognise.
    let again = s.create(apiservice("v1.y.example.com")).await?;
    s.update(with_priority(again.clone(), 1)).await?;
    ensure!(matches!(
        s.update(with_priority(again, 2)).await,
        Err(Error::Conflict { .. })
    ));
    ensure!(matches!(
        s.create(apiservice("v1.y.example.com")).await,
        Err(Error::AlreadyExists { .. })
    ));
    Ok(())
}
