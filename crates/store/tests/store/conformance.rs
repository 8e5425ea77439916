//! The semantics every back-end must have. Each `async fn` below runs once per back-end through
//! the `conformance!` macro at the bottom (`conformance::embedded::*`, `conformance::etcd::*`).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Result, bail, ensure};
use store::{EventType, Preconditions, WatchEvent};

use crate::harness::{
    Backend, Kind, apiservice, assert_quiet, events_until, next_event, num, rv, test_options,
    with_priority,
};

async fn create_get_and_already_exists(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let s = &b.store;
    let before = s.current_resource_version().await?;
    let created = s.create(apiservice("v1.a.example.com")).await?;
    ensure!(
        num(&rv(&created)) > num(&before),
        "{} after {before}",
        rv(&created)
    );
    ensure!(s.current_resource_version().await? == rv(&created));
    let got = s.get("v1.a.example.com").await?;
    ensure!(got == created, "get returns the created object: {got:?}");
    ensure!(got.spec == apiservice("v1.a.example.com").spec);

    match s.create(apiservice("v1.a.example.com")).await {
        Err(store::Error::AlreadyExists { name }) => ensure!(name == "v1.a.example.com"),
        other => bail!("expected AlreadyExists, got {other:?}"),
    }
    match s.get("v1.missing.example.com").await {
        Err(store::Error::NotFound { name }) => ensure!(name == "v1.missing.example.com"),
        other => bail!("expected NotFound, got {other:?}"),
    }
    let mut nameless = apiservice("v1.x.example.com");
    nameless.metadata.name = None;
    ensure!(matches!(
        s.create(nameless).await,
        Err(store::Error::InvalidObject(_))
    ));
    // A failed create changes nothing.
    ensure!(s.current_resource_version().await? == rv(&created));
    Ok(())
}

async fn create_ignores_a_given_resource_version(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let mut o = apiservice("v1.a.example.com");
    o.metadata.resource_version = Some("999999".into());
    let created = b.store.create(o).await?;
    ensure!(rv(&created) == b.store.current_resource_version().await?);
    ensure!(b.store.get("v1.a.example.com").await? == created);
    Ok(())
}

async fn update_needs_the_current_resource_version(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let s = &b.store;
    let v1 = s.create(apiservice("v1.a.example.com")).await?;
    let v2 = s.update(with_priority(v1.clone(), 20)).await?;
    ensure!(num(&rv(&v2)) > num(&rv(&v1)));
    ensure!(v2.spec.as_ref().map(|s| s.version_priority) == Some(20));
    ensure!(s.get("v1.a.example.com").await? == v2);

    match s.update(with_priority(v1.clone(), 30)).await {
        Err(store::Error::Conflict { name, message }) => {
            ensure!(name == "v1.a.example.com");
            ensure!(message.contains("has been modified"), "{message}");
        }
        other => bail!("expected Conflict for a stale resourceVersion, got {other:?}"),
    }
    ensure!(
        s.get("v1.a.example.com").await? == v2,
        "a conflict changes nothing"
    );

    let mut missing = apiservice("v1.missing.example.com");
    missing.metadata.resource_version = Some(rv(&v2));
    ensure!(matches!(
        s.update(missing).await,
        Err(store::Error::NotFound { .. })
    ));

    let mut unset = v2.clone();
    unset.metadata.resource_version = None;
    ensure!(matches!(
        s.update(unset).await,
        Err(store::Error::InvalidObject(_))
    ));

    let mut garbage = v2.clone();
    garbage.metadata.resource_version = Some("12abc".into());
    ensure!(matches!(
        s.update(garbage).await,
        Err(store::Error::InvalidResourceVersion(v)) if v == "12abc"
    ));
    Ok(())
}

async fn delete_checks_preconditions_and_returns_the_last_state(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let s = &b.store;
    ensure!(matches!(
        s.delete("v1.missing.example.com", None).await,
        Err(store::Error::NotFound { .. })
    ));
    let v1 = s.create(apiservice("v1.a.example.com")).await?;
    let v2 = s.update(with_priority(v1.clone(), 20)).await?;

    let stale = Preconditions {
        resource_version: Some(rv(&v1)),
        uid: None,
    };
    ensure!(matches!(
        s.delete("v1.a.example.com", Some(&stale)).await,
        Err(store::Error::Conflict { .. })
    ));
    let wrong_uid = Preconditions {
        resource_version: None,
        uid: Some("someone-else".into()),
    };
    match s.delete("v1.a.example.com", Some(&wrong_uid)).await {
        Err(store::Error::Conflict { message, .. }) => {
            ensure!(message.contains("UID"), "{message}")
        }
        other => bail!("expected a UID conflict, got {other:?}"),
    }
    ensure!(
        s.get("v1.a.example.com").await? == v2,
        "failed deletes change nothing"
    );

    let right = Preconditions {
        resource_version: Some(rv(&v2)),
        uid: Some("uid-v1.a.example.com".into()),
    };
    let last = s.delete("v1.a.example.com", Some(&right)).await?;
    ensure!(
        num(&rv(&last)) > num(&rv(&v2)),
        "deletion gets its own revision"
    );
    ensure!(last.spec == v2.spec && last.metadata.uid == v2.metadata.uid);
    ensure!(s.current_resource_version().await? == rv(&last));
    ensure!(matches!(
        s.get("v1.a.example.com").await,
        Err(store::Error::NotFound { .. })
    ));
    // An unconditional delete of a re-created object works too.
    s.create(apiservice("v1.a.example.com")).await?;
    s.delete("v1.a.example.com", None).await?;
    Ok(())
}

async fn list_is_a_snapshot_and_can_be_read_at_a_revision(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let s = &b.store;
    let empty = s.list(None).await?;
    ensure!(empty.items.is_empty());
    let c = s.create(apiservice("v1.c.example.com")).await?;
    let a = s.create(apiservice("v1.a.example.com")).await?;
    let at_two = s.list(None).await?;
    ensure!(at_two.resource_version == rv(&a));
    ensure!(at_two.items == vec![a.clone(), c.clone()], "sorted by name");

    let a2 = s.update(with_priority(a.clone(), 7)).await?;
    s.delete("v1.c.example.com", None).await?;
    let b_ = s.create(apiservice("v1.b.example.com")).await?;
    let now = s.list(None).await?;
    ensure!(now.resource_version == rv(&b_));
    ensure!(now.items == vec![a2.clone(), b_.clone()]);

    // Exact reads of the past.
    let past = s.list(Some(&at_two.resource_version)).await?;
    ensure!(
        past == at_two,
        "list at {}: {past:?}",
        at_two.resource_version
    );
    let first = s.list(Some(&rv(&c))).await?;
    ensure!(first.items == vec![c.clone()] && first.resource_version == rv(&c));
    let before_all = s.list(Some(&empty.resource_version)).await?;
    ensure!(before_all.items.is_empty());

    let future = (num(&now.resource_version) + 1000).to_string();
    ensure!(matches!(
        s.list(Some(&future)).await,
        Err(store::Error::TooNew { .. })
    ));
    ensure!(matches!(
        s.list(Some("not-a-version")).await,
        Err(store::Error::InvalidResourceVersion(_))
    ));
    Ok(())
}

async fn watch_delivers_changes_in_order_with_the_deleted_state(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let s = &b.store;
    let listed = s.list(None).await?;
    let mut watch = s.watch(Some(&listed.resource_version)).await?;
    let mut from_now = s.watch(None).await?;

    let v1 = s.create(apiservice("v1.a.example.com")).await?;
    let v2 = s.update(with_priority(v1.clone(), 3)).await?;
    let gone = s.delete("v1.a.example.com", None).await?;
    let expected = vec![
        WatchEvent {
            kind: EventType::Added,
            object: v1.clone(),
        },
        WatchEvent {
            kind: EventType::Modified,
            object: v2.clone(),
        },
        WatchEvent {
            kind: EventType::Deleted,
            object: gone.clone(),
        },
    ];
    for w in [&mut watch, &mut from_now] {
        let got = events_until(w, num(&rv(&gone))).await?;
        let got: Vec<WatchEvent> = got.iter().map(|e| (**e).clone()).collect();
        ensure!(got == expected, "got {got:#?}");
        assert_quiet(w).await?;
    }
    ensure!(gone.spec == v2.spec, "DELETED carries the last state");
    ensure!(rv(&gone) != rv(&v2), "with the deletion's revision");

    // A watch from a revision in the middle replays exactly what came after it.
    let mut replay = s.watch(Some(&rv(&v1))).await?;
    let got = events_until(&mut replay, num(&rv(&gone))).await?;
    let kinds: Vec<EventType> = got.iter().map(|e| e.kind).collect();
    ensure!(
        kinds == vec![EventType::Modified, EventType::Deleted],
        "{kinds:?}"
    );
    Ok(())
}

async fn watch_from_the_future_is_too_new(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let current = b.store.current_resource_version().await?;
    let future = (num(&current) + 1000).to_string();
    ensure!(matches!(
        b.store.watch(Some(&future)).await,
        Err(store::Error::TooNew { .. })
    ));
    ensure!(matches!(
        b.store.watch(Some("-1")).await,
        Err(store::Error::InvalidResourceVersion(_))
    ));
    Ok(())
}

/// Concurrent writers; one watcher from before the writes must see every acknowledged write
/// exactly once in revision order, and list+watch pairs taken during the writes must converge on
/// the final list.
async fn list_then_watch_has_no_gap_or_duplicate_under_concurrent_writers(
    kind: Kind,
) -> Result<()> {
    const WRITERS: usize = 4;
    const OBJECTS_PER_WRITER: usize = 20;
    // The watches are read only after all writes (250 events), so they need room for them.
    let b = Backend::new(kind, test_options().watcher_buffer(1000)).await?;
    let s = Arc::clone(&b.store);
    let start = s.current_resource_version().await?;
    let mut everything = s.watch(Some(&start)).await?;

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let s = Arc::clone(&s);
        writers.push(tokio::spawn(async move {
            let mut acked: Vec<(u64, EventType, String)> = Vec::new();
            for i in 0..OBJECTS_PER_WRITER {
                let name = format!("v{i}.w{w}.example.com");
                let created = s.create(apiservice(&name)).await?;
                acked.push((num(&rv(&created)), EventType::Added, name.clone()));
                let updated = s.update(with_priority(created, i as i32)).await?;
                acked.push((num(&rv(&updated)), EventType::Modified, name.clone()));
                if i % 2 == 0 {
                    let deleted = s.delete(&name, None).await?;
                    acked.push((num(&rv(&deleted)), EventType::Deleted, name));
                }
            }
            anyhow::Ok(acked)
        }));
    }
    let mut observers = Vec::new();
    for _ in 0..3 {
        let s = Arc::clone(&s);
        observers.push(tokio::spawn(async move {
            let mut pairs = Vec::new();
            for _ in 0..4 {
                let list = s.list(None).await?;
                let watch = s.watch(Some(&list.resource_version)).await?;
                pairs.push((list, watch));
                tokio::task::yield_now().await;
            }
            anyhow::Ok(pairs)
        }));
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await??);
    }
    acked.sort_by_key(|a| a.0);
    let final_list = s.list(None).await?;
    let last = acked.last().map(|a| a.0).unwrap_or(0);
    ensure!(num(&final_list.resource_version) == last);

    // Every acknowledged write once, in order, nothing else.
    let seen = events_until(&mut everything, last).await?;
    let seen: Vec<(u64, EventType, String)> = seen
        .iter()
        .map(|e| {
            (
                num(e.resource_version()),
                e.kind,
                e.object.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    ensure!(
        seen == acked,
        "watch saw {} events, {} acked",
        seen.len(),
        acked.len()
    );
    assert_quiet(&mut everything).await?;

    let expected: BTreeMap<String, String> = final_list
        .items
        .iter()
        .map(|o| (o.metadata.name.clone().unwrap_or_default(), rv(o)))
        .collect();
    for observer in observers {
        for (list, mut watch) in observer.await?? {
            let mut state: BTreeMap<String, String> = list
                .items
                .iter()
                .map(|o| (o.metadata.name.clone().unwrap_or_default(), rv(o)))
                .collect();
            let mut previous = num(&list.resource_version);
            if previous < last {
                for event in events_until(&mut watch, last).await? {
                    let rev = num(event.resource_version());
                    ensure!(rev > previous, "revision {rev} after {previous}");
                    previous = rev;
                    let name = event.object.metadata.name.clone().unwrap_or_default();
                    let existed = match event.kind {
                        EventType::Deleted => state.remove(&name).is_some(),
                        _ => state.insert(name.clone(), rv(&event.object)).is_some(),
                    };
                    ensure!(
                        existed == (event.kind != EventType::Added),
                        "{:?} {name} at {rev}: existed={existed}",
                        event.kind
                    );
                }
            }
            ensure!(
                state == expected,
                "list at {} + watch diverged",
                list.resource_version
            );
        }
    }
    Ok(())
}

/// History beyond what the back-end keeps answers "too old" (410 at the API).
async fn too_old_after_compaction_or_log_truncation(kind: Kind) -> Result<()> {
    let options = test_options().watch_cache_size(4).history_size(8);
    let b = Backend::new(kind, options).await?;
    let s = &b.store;
    let first = s.create(apiservice("v1.a.example.com")).await?;
    let mut latest = first.clone();
    for i in 0..20 {
        latest = s.update(with_priority(latest, i)).await?;
    }
    b.forget_history().await?;
    match s.list(Some(&rv(&first))).await {
        Err(store::Error::TooOld { requested, .. }) => ensure!(requested == rv(&first)),
        other => bail!("expected TooOld for an exact list, got {other:?}"),
    }
    match s.watch(Some(&rv(&first))).await {
        Err(store::Error::TooOld { requested, .. }) => ensure!(requested == rv(&first)),
        other => bail!("expected TooOld for a watch, got {other:?}"),
    }
    // Recent history is still there.
    let mut w = s.watch(Some(&rv(&latest))).await?;
    let next = s.update(with_priority(latest.clone(), 99)).await?;
    ensure!(next_event(&mut w).await?.object == next);
    ensure!(s.list(Some(&rv(&next))).await?.items == vec![next]);
    Ok(())
}

async fn a_watcher_that_does_not_read_is_cut_off(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options().watcher_buffer(4)).await?;
    let s = &b.store;
    let mut slow = s.watch(None).await?;
    let mut fast = s.watch(None).await?;
    let mut o = s.create(apiservice("v1.a.example.com")).await?;
    ensure!(next_event(&mut fast).await?.object == o);
    for i in 0..8 {
        o = s.update(with_priority(o, i)).await?;
        ensure!(next_event(&mut fast).await?.object == o);
    }
    for _ in 0..4 {
        next_event(&mut slow).await?;
    }
    match slow.next().await {
        Some(Err(store::Error::WatcherTooSlow { buffered: 4 })) => {}
        other => bail!("expected WatcherTooSlow, got {other:?}"),
    }
    ensure!(
        slow.next().await.is_none(),
        "the watch ends after the error"
    );
    let o2 = s.update(with_priority(o, 100)).await?;
    ensure!(
        next_event(&mut fast).await?.object == o2,
        "others are unaffected"
    );
    Ok(())
}

async fn many_watchers_share_each_event(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let s = &b.store;
    let mut watches = Vec::new();
    for _ in 0..1000 {
        watches.push(s.watch(None).await?);
    }
    let created = s.create(apiservice("v1.a.example.com")).await?;
    let mut first: Option<Arc<WatchEvent>> = None;
    for w in &mut watches {
        let e = next_event(w).await?;
        ensure!(e.object == created);
        match &first {
            Some(f) => ensure!(Arc::ptr_eq(f, &e), "fan-out must not copy events"),
            None => first = Some(e),
        }
    }
    Ok(())
}

async fn close_ends_watches_and_reopen_keeps_the_data(kind: Kind) -> Result<()> {
    let mut b = Backend::new(kind, test_options()).await?;
    let created = b.store.create(apiservice("v1.a.example.com")).await?;
    let mut w = b.store.watch(None).await?;
    b.store.close().await?;
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), w.next()).await?;
    ensure!(ended.is_none(), "close ends watches: {ended:?}");
    ensure!(matches!(
        b.store.get("v1.a.example.com").await,
        Err(store::Error::Unavailable(_))
    ));
    ensure!(matches!(
        b.store.create(apiservice("v1.b.example.com")).await,
        Err(store::Error::Unavailable(_))
    ));
    ensure!(matches!(
        b.store.watch(None).await,
        Err(store::Error::Unavailable(_))
    ));
    b.store.close().await?; // twice is harmless

    b.reopen().await?;
    ensure!(b.store.get("v1.a.example.com").await? == created);
    ensure!(b.store.current_resource_version().await? == rv(&created));
    // History survives too: a watch from before the create replays it.
    let listed = b.store.list(None).await?;
    ensure!(listed.items == vec![created.clone()]);
    let updated = b.store.update(with_priority(created.clone(), 5)).await?;
    let mut w = b.store.watch(Some(&rv(&created))).await?;
    ensure!(next_event(&mut w).await?.object == updated);
    Ok(())
}

async fn resource_versions_compare_as_revisions(kind: Kind) -> Result<()> {
    use std::cmp::Ordering;
    let b = Backend::new(kind, test_options()).await?;
    let s = &b.store;
    let mut previous = s.current_resource_version().await?;
    for i in 0..12 {
        let o = s
            .create(apiservice(&format!("v1.g{i}.example.com")))
            .await?;
        ensure!(s.compare_resource_versions(&previous, &rv(&o))? == Ordering::Less);
        ensure!(s.compare_resource_versions(&rv(&o), &previous)? == Ordering::Greater);
        ensure!(s.compare_resource_versions(&rv(&o), &rv(&o))? == Ordering::Equal);
        previous = rv(&o);
    }
    ensure!(matches!(
        s.compare_resource_versions("1", "x"),
        Err(store::Error::InvalidResourceVersion(_))
    ));
    Ok(())
}

/// A revision a list returned can always be watched from at once, even while writes commit
/// (the list may see a commit before the store's own bookkeeping does).
async fn a_listed_revision_can_always_be_watched_at_once(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let s = Arc::clone(&b.store);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let s = Arc::clone(&s);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut o = s.create(apiservice("v1.a.example.com")).await?;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                o = s.update(with_priority(o, 1)).await?;
            }
            anyhow::Ok(())
        })
    };
    for _ in 0..300 {
        let listed = s.list(None).await?;
        let current = s.current_resource_version().await?;
        ensure!(
            num(&current) >= num(&listed.resource_version),
            "current {current} behind a list"
        );
        drop(s.watch(Some(&listed.resource_version)).await?);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await??;
    Ok(())
}

/// A watch "from now" reports nothing acknowledged before it started.
async fn a_watch_from_now_reports_only_later_writes(kind: Kind) -> Result<()> {
    let b = Backend::new(kind, test_options()).await?;
    let s = &b.store;
    let mut o = s.create(apiservice("v1.a.example.com")).await?;
    for i in 0..50 {
        o = s.update(with_priority(o, i)).await?;
        let mut w = s.watch(None).await?;
        o = s.update(with_priority(o, 1000 + i)).await?;
        let first = next_event(&mut w).await?;
        ensure!(
            first.object == o,
            "saw {} before {}",
            first.resource_version(),
            rv(&o)
        );
    }
    Ok(())
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::$test(crate::harness::Kind::Embedded).await
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() -> anyhow::Result<()> {
                    super::$test(crate::harness::Kind::Etcd).await
                }
            )*
        }
    };
}

conformance!(
    create_get_and_already_exists,
    create_ignores_a_given_resource_version,
    update_needs_the_current_resource_version,
    delete_checks_preconditions_and_returns_the_last_state,
    list_is_a_snapshot_and_can_be_read_at_a_revision,
    watch_delivers_changes_in_order_with_the_deleted_state,
    watch_from_the_future_is_too_new,
    list_then_watch_has_no_gap_or_duplicate_under_concurrent_writers,
    too_old_after_compaction_or_log_truncation,
    a_watcher_that_does_not_read_is_cut_off,
    many_watchers_share_each_event,
    close_ends_watches_and_reopen_keeps_the_data,
    resource_versions_compare_as_revisions,
    a_listed_revision_can_always_be_watched_at_once,
    a_watch_from_now_reports_only_later_writes,
);
