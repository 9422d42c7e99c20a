//! Clock skew between instances sharing a store, within and past the documented bound: two
//! caches on one file, each on its own manual clock. Leases and stamps are read on each
//! instance's clock (Redis leases on the server's), so skew below the lock timeout changes
//! nothing for single flight, and a skew past it costs at most one duplicate generation, never
//! a wrong value.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use kvcache::{Config, Container, KvCache, ManualClock};

const START: u64 = 1_000_000_000;

/// An instance on `path`, its clock `skew` ms ahead of the first one's, whose generator takes
/// 300 ms and counts its calls in `calls`.
fn instance(path: &str, skew: u64, calls: &Arc<AtomicUsize>) -> (Container<String>, ManualClock) {
    let clock = ManualClock::new(START + skew);
    let cache = KvCache::builder(
        Config::from_pairs([
            ("backend.b", "file"),
            ("backend.b.path", path),
            ("container.c.backend", "b"),
            ("container.c.expire", "10s"),
            ("container.c.lock_timeout", "5s"),
        ])
        .unwrap(),
    )
    .clock(Arc::new(clock.clone()))
    .build()
    .unwrap();
    let calls = Arc::clone(calls);
    cache
        .register_generator("c", move |key: &str| {
            calls.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(300));
            format!("{key} from an instance")
        })
        .unwrap();
    (cache.container("c").unwrap(), clock)
}

/// Two instances miss one key at once; returns how many generator calls they made.
fn race(skew: u64) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3").display().to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let (first, _) = instance(&path, 0, &calls);
    let (second, _) = instance(&path, skew, &calls);
    let leader = thread::spawn(move || first.get("k").unwrap());
    thread::sleep(Duration::from_millis(100));
    assert_eq!(second.get("k").unwrap(), "k from an instance");
    assert_eq!(leader.join().unwrap(), "k from an instance");
    calls.load(Ordering::SeqCst)
}

#[test]
fn a_skew_below_the_lock_timeout_keeps_one_generation() {
    assert_eq!(race(0), 1);
    assert_eq!(race(4_000), 1, "4 s ahead, lock timeout 5 s");
}

#[test]
fn a_skew_past_the_lock_timeout_costs_one_duplicate_generation_at_most() {
    // 6 s ahead: the second instance reads the first one's lease as expired.
    assert_eq!(race(6_000), 2);
}

#[test]
fn a_value_expires_on_each_readers_clock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3").display().to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let (writer, writer_clock) = instance(&path, 0, &calls);
    let (ahead, ahead_clock) = instance(&path, 500, &calls);
    writer.get("k").unwrap();
    writer_clock.advance(Duration::from_millis(9_600));
    ahead_clock.advance(Duration::from_millis(9_600));
    assert!(
        writer.peek("k").unwrap().is_some(),
        "9.6 s old on the writer's clock"
    );
    assert_eq!(
        ahead.peek("k").unwrap(),
        None,
        "10.1 s old on a clock 500 ms ahead"
    );
}
