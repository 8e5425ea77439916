//! Embedded-only behaviour: the directory lock, damaged files, and history served from the
//! revision log beyond the watch cache.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use store::{EventType, StoreUrl};

use crate::harness::{apiservice, events_until, num, rv, test_options, with_priority};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_open_of_the_directory_is_locked_until_close() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = StoreUrl::Embedded {
        dir: dir.path().join("data"),
    };
    let first = store::open_with(&url, test_options()).await?;
    match store::open_with(&url, test_options()).await {
        Err(store::Error::Locked { dir: d, detail }) => {
            ensure!(d.ends_with("data"), "{d}");
            ensure!(detail.contains(&std::process::id().to_string()), "{detail}");
        }
        Err(other) => bail!("expected Locked, got {other}"),
        Ok(_) => bail!("a second open of the same directory succeeded"),
    }
    first.create(apiservice("v1.a.example.com")).await?;
    first.close().await?;
    let second = store::open_with(&url, test_options()).await?;
    ensure!(second.list(None).await?.items.len() == 1);
    second.close().await?;
    // Dropping without close releases the lock as well (once the writer thread has exited).
    let third = store::open_with(&url, test_options()).await?;
    drop(third);
    crate::harness::eventually("the lock to be released", Duration::from_secs(10), || {
        let url = url.clone();
        async move { Ok(store::open_with(&url, test_options()).await.ok()) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_file_is_a_clear_error() -> Result<()> {
    for (case, bytes) in [
        (
            "garbage",
            b"this is not a redb file at all, just some text".repeat(200),
        ),
        ("zeroes", vec![0u8; 8192]),
    ] {
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("apiservices.redb"), &bytes)?;
        let url = StoreUrl::Embedded {
            dir: dir.path().to_path_buf(),
        };
        match store::open_with(&url, test_options()).await {
            Err(e @ store::Error::Embedded { .. }) => {
                ensure!(e.to_string().contains("Not a redb database"), "{case}: {e}")
            }
            Err(other) => bail!("{case}: expected an Embedded error, got {other}"),
            Ok(_) => bail!("{case}: opened a damaged file"),
        }
    }
    // A file truncated in the middle (after real writes) as well.
    let dir = tempfile::tempdir()?;
    let url = StoreUrl::Embedded {
        dir: dir.path().to_path_buf(),
    };
    let s = store::open_with(&url, test_options()).await?;
    for i in 0..50 {
        s.create(apiservice(&format!("v{i}.t.example.com"))).await?;
    }
    s.close().await?;
    let path = dir.path().join("apiservices.redb");
    let len = std::fs::metadata(&path)?.len();
    let file = std::fs::OpenOptions::new().write(true).open(&path)?;
    file.set_len(len / 3)?;
    drop(file);
    match store::open_with(&url, test_options()).await {
        Err(e @ store::Error::Embedded { .. }) => {
            ensure!(e.to_string().contains("truncated"), "{e}")
        }
        Err(other) => bail!("expected an Embedded error, got {other}"),
        Ok(_) => bail!("opened a truncated file"),
    }
    Ok(())
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_older_than_the_watch_cache_comes_from_the_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url = StoreUrl::Embedded {
        dir: dir.path().to_path_buf(),
    };
    let options = test_options()
        .watch_cache_size(4)
        .history_size(500)
        .watcher_buffer(8);
    let s = store::open_with(&url, options.clone()).await?;
    let first = s.create(apiservice("v1.a.example.com")).await?;
    let mut o = first.clone();
    for i in 0..300 {
        o = s.update(with_priority(o, i)).await?;
    }
    // 300 events after `first`, far more than the cache (4) and the buffer (8): served from the
    // log at the reader's pace, then joined to the live feed.
    let mut w = s.watch(Some(&rv(&first))).await?;
    let events = events_until(&mut w, num(&rv(&o))).await?;
    ensure!(events.len() == 300);
    ensure!(events.iter().all(|e| e.kind == EventType::Modified));
    let revs: Vec<u64> = events.iter().map(|e| num(e.resource_version())).collect();
    ensure!(
        revs.windows(2).all(|p| p[1] == p[0] + 1),
        "consecutive revisions"
    );
    let live = s.update(with_priority(o.clone(), 1000)).await?;
    ensure!(crate::harness::next_event(&mut w).await?.object == live);

    // The same after a restart, when the cache is empty.
    s.close().await?;
    let s = store::open_with(&url, options).await?;
    let mut w = s.watch(Some(&rv(&first))).await?;
    let events = events_until(&mut w, num(&rv(&live))).await?;
    ensure!(events.len() == 301);
    let past = s.list(Some(&rv(&first))).await?;
    ensure!(past.items == vec![first]);
    Ok(())
}
