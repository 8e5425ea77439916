//! Crash safety of the embedded store: a child process (this test binary, re-executed) writes
//! under load and is killed with SIGKILL, over and over on the same data directory. After every
//! kill the store must open cleanly and hold every write the child had acknowledged.
//!
//! The child appends one line per acknowledged write to an ack file *after* the store returned:
//! `C name rv` (created), `U name rv` (updated), `S name` (a delete is about to be sent) and
//! `D name rv` (deleted). An acknowledged state may only have been overtaken by the one write
//! that was in flight for that name when the child died.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use store::StoreUrl;
use testkit::process::{ChildGuard, wait_for};

use crate::harness::{apiservice, events_until, num, rv, test_options, with_priority};

const CHILD_DATA: &str = "STORE_CRASH_CHILD_DATA";
const CHILD_ACKS: &str = "STORE_CRASH_CHILD_ACKS";
const CHILD_CYCLE: &str = "STORE_CRASH_CHILD_CYCLE";
const CYCLES: usize = 24;
const WRITERS: usize = 8;

/// The child process's body, started by [`embedded_store_survives_repeated_sigkill`] through
/// `--exact crash::crash_child`. Run without its environment variables (as part of the normal
/// test run) it does nothing.
#[test]
fn crash_child() -> Result<()> {
    let (Ok(data), Ok(acks), Ok(cycle)) = (
        std::env::var(CHILD_DATA),
        std::env::var(CHILD_ACKS),
        std::env::var(CHILD_CYCLE),
    ) else {
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let url = StoreUrl::Embedded { dir: data.into() };
        let store = store::open_with(&url, test_options()).await?;
        let acks = Arc::new(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&acks)?,
        ));
        let ack = move |line: String| -> Result<()> {
            let mut file = acks.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            // One write(2) per line on an O_APPEND file: the kernel has it once this returns,
            // so it survives the SIGKILL of this process.
            file.write_all(line.as_bytes())?;
            Ok(())
        };
        let ack = Arc::new(ack);
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&store);
            let ack = Arc::clone(&ack);
            let cycle = cycle.clone();
            tasks.push(tokio::spawn(async move {
                // Bounded so that a parent that failed to kill us does not leave us running.
                for i in 0..100_000 {
                    let name = format!("v{i}.c{cycle}w{w}.example.com");
                    let created = store.create(apiservice(&name)).await?;
                    ack(format!("C {name} {}\n", rv(&created)))?;
                    let updated = store.update(with_priority(created, i % 1000)).await?;
                    ack(format!("U {name} {}\n", rv(&updated)))?;
                    if i % 3 == 0 {
                        ack(format!("S {name}\n"))?;
                        let deleted = store.delete(&name, None).await?;
                        ack(format!("D {name} {}\n", rv(&deleted)))?;
                    }
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })
}

/// What the acknowledgements say about one object.
#[derive(Debug, Default)]
struct Expect {
    /// The revision of its last acknowledged create or update.
    acked_rv: u64,
    /// A delete was sent (it may have committed without being acknowledged).
    delete_sent: bool,
    /// The delete was acknowledged.
    deleted: bool,
}

fn read_acks(path: &Path, expect: &mut BTreeMap<String, Expect>) -> Result<(usize, u64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut count = 0;
    let mut max_rv = 0;
    // A line cut by the kill has no newline; it was never acknowledged.
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["C" | "U", name, rev] => {
                let e = expect.entry(name.to_string()).or_default();
                e.acked_rv = num(rev);
                max_rv = max_rv.max(num(rev));
                count += 1;
            }
            ["S", name] => expect.entry(name.to_string()).or_default().delete_sent = true,
            ["D", name, rev] => {
                expect.entry(name.to_string()).or_default().deleted = true;
                max_rv = max_rv.max(num(rev));
                count += 1;
            }
            _ => bail!("malformed ack line {line:?}"),
        }
    }
    Ok((count, max_rv))
}

/// Checks a set of objects (name → resourceVersion) against the acknowledgements.
fn check(
    what: &str,
    objects: &BTreeMap<String, u64>,
    expect: &BTreeMap<String, Expect>,
) -> Result<()> {
    for (name, e) in expect {
        match objects.get(name) {
            Some(_) if e.deleted => {
                bail!("{what}: {name} was deleted (acknowledged) but is present")
            }
            Some(&rev) => ensure!(
                rev >= e.acked_rv,
                "{what}: {name} is at {rev}, older than its acknowledged {}",
                e.acked_rv
            ),
            None if e.deleted || e.delete_sent => {}
            None => bail!(
                "{what}: {name} is missing although written at {} (acknowledged)",
                e.acked_rv
            ),
        }
    }
    Ok(())
}

#[test]
fn embedded_store_survives_repeated_sigkill() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let url = StoreUrl::Embedded { dir: data.clone() };
    let exe = std::env::current_exe()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut expect = BTreeMap::new();
    let mut total_acks = 0;
    for cycle in 0..CYCLES {
        let acks = tmp.path().join(format!("acks-{cycle}.log"));
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "crash::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DATA, &data)
        .env(CHILD_ACKS, &acks)
        .env(CHILD_CYCLE, cycle.to_string());
        let mut child =
            ChildGuard::spawn(&format!("child-{cycle}"), cmd, &tmp.path().join("logs"))?;

        // Vary the moment of death: every fourth cycle dies while starting up or recovering,
        // the others after a varying number of acknowledged writes.
        if cycle % 4 == 3 {
            std::thread::sleep(Duration::from_millis((cycle as u64 * 7) % 40));
        } else {
            let want = 1 + (cycle * 53) % 300;
            wait_for(
                &format!("{want} acknowledged writes"),
                Duration::from_secs(60),
                || {
                    if !child.is_running() {
                        bail!("the child exited:\n{}", child.log());
                    }
                    let lines = std::fs::read_to_string(&acks)
                        .unwrap_or_default()
                        .lines()
                        .count();
                    Ok((lines >= want).then_some(()))
                },
            )?;
        }
        if cycle == 1 {
            // A second process (this one) must be refused while the child holds the directory.
            let err = runtime
                .block_on(store::open_with(&url, test_options()))
                .err();
            match err {
                Some(store::Error::Locked { detail, .. }) => {
                    ensure!(detail.contains(&child.pid().to_string()), "{detail}")
                }
                other => bail!("expected Locked while the child runs, got {other:?}"),
            }
        }
        child.signal("KILL")?;
        let code = child.wait_timeout(Duration::from_secs(10))?;
        ensure!(
            code.is_none(),
            "the child exited with {code:?} instead of being killed:\n{}",
            child.log()
        );

        let (count, max_rv) = read_acks(&acks, &mut expect)?;
        total_acks += count;
        runtime
            .block_on(verify(&url, &expect, max_rv, cycle))
            .with_context(|| format!("after kill #{cycle} ({count} writes acknowledged)"))?;
    }
    ensure!(
        total_acks > 1000,
        "only {total_acks} writes acknowledged over {CYCLES} kills"
    );
    Ok(())
}

/// Opens the store after a kill and checks it against the acknowledgements.
async fn verify(
    url: &StoreUrl,
    expect: &BTreeMap<String, Expect>,
    max_rv: u64,
    cycle: usize,
) -> Result<()> {
    let store = store::open_with(url, test_options()).await?;
    let current = num(&store.current_resource_version().await?);
    ensure!(
        current >= max_rv,
        "revision {current} is behind acknowledged {max_rv}"
    );

    let listed = store.list(None).await?;
    let objects: BTreeMap<String, u64> = listed
        .items
        .iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), num(&rv(o))))
        .collect();
    check("list", &objects, expect)?;
    for (name, &rev) in &objects {
        ensure!(
            num(&rv(&store.get(name).await?)) == rev,
            "get {name} disagrees with list"
        );
    }

    // The revision log survived too: the state at the last acknowledged revision is
    // reconstructable and also holds every acknowledged write.
    if max_rv > 0 {
        let past = store.list(Some(&max_rv.to_string())).await?;
        let objects: BTreeMap<String, u64> = past
            .items
            .iter()
            .map(|o| (o.metadata.name.clone().unwrap_or_default(), num(&rv(o))))
            .collect();
        check("list at the last acknowledged revision", &objects, expect)?;
        // Every revision is one log entry here; replaying the last ones must decode each.
        let from = max_rv.saturating_sub(100).max(1);
        let mut w = store.watch(Some(&from.to_string())).await?;
        let events = events_until(&mut w, max_rv).await?;
        let revs: Vec<u64> = events.iter().map(|e| num(e.resource_version())).collect();
        ensure!(
            revs == (from + 1..=max_rv).collect::<Vec<_>>(),
            "replayed revisions {revs:?}"
        );
    }

    // And it takes writes.
    let probe = store
        .create(apiservice(&format!("v1.probe{cycle}.example.com")))
        .await?;
    ensure!(num(&rv(&probe)) == current + 1);
    store
        .delete(&format!("v1.probe{cycle}.example.com"), None)
        .await?;
    store.close().await?;
    Ok(())
}
