//! The shared conformance suite, the bounds, the eviction policy and expiry, on the in-memory
//! backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use kvcache_core::{Backend, Clock, ManualClock, Store, testkit};
use kvcache_variable::VariableBackend;
use proptest::prelude::*;

/// Container `name` of `backend`, as bytes.
fn region(backend: &VariableBackend, name: &str) -> Arc<dyn Store> {
    backend.open(name).unwrap().sync_store()
}

fn manual() -> (ManualClock, VariableBackend) {
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = VariableBackend::with_clock(Arc::new(clock.clone()));
    (clock, backend)
}

#[test]
fn passes_the_conformance_suite() {
    let (clock, backend) = manual();
    testkit::run(&backend, testkit::Time::Manual(&clock));
}

#[test]
fn passes_the_conformance_suite_when_bounded() {
    let (clock, backend) = manual();
    let backend = backend.max_entries(100_000).max_bytes(64 << 20);
    testkit::run(&backend, testkit::Time::Manual(&clock));
}

#[test]
fn corrupt_values_are_misses_that_get_regenerated() {
    testkit::corruption(Arc::new(VariableBackend::new()));
}

#[test]
fn a_bounded_store_never_exceeds_its_bound() {
    let backend = VariableBackend::new().max_entries(10).max_bytes(200);
    let store = region(&backend, "c");
    for i in 0..1_000 {
        let value = vec![7; i % 30];
        store.store(&i.to_string(), &value, None).unwrap();
        assert!(backend.len() <= 10, "{} entries after {i}", backend.len());
        assert!(
            backend.bytes() <= 200,
            "{} bytes after {i}",
            backend.bytes()
        );
    }
    let held = (0..1_000)
        .filter(|i| store.retrieve(&i.to_string()).unwrap().is_some())
        .count();
    assert_eq!(held, backend.len(), "the count is what can be read");
}

#[test]
fn a_value_larger_than_the_bound_is_not_kept_and_evicts_nothing() {
    let backend = VariableBackend::new().max_bytes(100);
    let store = region(&backend, "c");
    store.store("small", b"v", None).unwrap();
    store.store("huge", &[0; 1_000], None).unwrap();
    assert_eq!(store.retrieve("huge").unwrap(), None);
    assert!(store.retrieve("small").unwrap().is_some());
}

#[test]
fn a_frequently_read_key_survives_a_scan_of_new_ones() {
    let backend = VariableBackend::new().max_entries(100);
    let store = region(&backend, "c");
    for i in 0..100 {
        store.store(&format!("hot-{i}"), b"v", None).unwrap();
    }
    for _ in 0..5 {
        for i in 0..20 {
            assert!(store.retrieve(&format!("hot-{i}")).unwrap().is_some());
        }
    }
    // A scan of 500 one-time keys, fewer than the sketch's sample (so its counts have not aged).
    for i in 0..500 {
        store.store(&format!("scan-{i}"), b"v", None).unwrap();
    }
    for i in 0..20 {
        assert!(
            store.retrieve(&format!("hot-{i}")).unwrap().is_some(),
            "hot-{i} was evicted by the scan"
        );
    }
    assert!(backend.len() <= 100);
}

#[test]
fn rewrites_of_present_keys_evict_nothing() {
    let backend = VariableBackend::new().max_entries(4);
    let store = region(&backend, "c");
    for i in 0..10_000 {
        store.store(&(i % 4).to_string(), b"v", None).unwrap();
    }
    assert_eq!(backend.len(), 4);
    for i in 0..4 {
        assert!(store.retrieve(&i.to_string()).unwrap().is_some());
    }
}

#[test]
fn expired_entries_are_misses_at_once_and_purged_all_at_once() {
    let (clock, backend) = manual();
    let store = region(&backend, "c");
    for key in ["a", "b", "c"] {
        store
            .store(key, b"v", Some(Duration::from_secs(1)))
            .unwrap();
    }
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.retrieve("a").unwrap(), None);
    assert_eq!(
        backend.len(),
        3,
        "a read reclaims nothing: reads take no write lock"
    );
    backend.purge_expired().unwrap();
    assert!(backend.is_empty());
}

#[test]
fn expired_entries_are_reclaimed_by_writes_without_reads_or_purges() {
    let (clock, backend) = manual();
    let store = region(&backend, "c");
    // A stream of unique keys with a one-second expiry, 100 a (manual) millisecond-tick of
    // 10 ms: about 10,000 keys are live at any moment.
    for i in 0..200_000u64 {
        store
            .store(&format!("key-{i}"), b"v", Some(Duration::from_secs(1)))
            .unwrap();
        if i % 100 == 99 {
            clock.advance(Duration::from_millis(10));
        }
        if i > 20_000 {
            assert!(
                backend.len() <= 10_100 + 200,
                "{} entries held after {i} writes",
                backend.len()
            );
        }
    }
    let stats = backend
        .open("c")
        .unwrap()
        .memory_store()
        .unwrap()
        .evictions();
    assert!(stats.expired > 185_000, "{stats:?}");
    assert_eq!(stats.size, 0);
}

#[test]
fn containers_are_isolated_and_bounded_together() {
    let backend = VariableBackend::new().max_entries(100);
    let (a, b) = (region(&backend, "a"), region(&backend, "b"));
    a.store("k", b"from a", None).unwrap();
    b.store("k", b"from b", None).unwrap();
    assert_eq!(a.retrieve("k").unwrap().as_deref(), Some(&b"from a"[..]));
    b.clear().unwrap();
    assert_eq!(b.retrieve("k").unwrap(), None);
    assert!(a.retrieve("k").unwrap().is_some());
    for i in 0..200 {
        b.store(&i.to_string(), b"v", None).unwrap();
    }
    assert_eq!(backend.len(), 100, "one bound over both containers");
}

#[test]
fn the_bound_holds_under_sixteen_threads_of_mixed_operations() {
    const MAX_ENTRIES: usize = 500;
    const MAX_BYTES: u64 = 16 << 10;
    let backend = VariableBackend::new()
        .max_entries(MAX_ENTRIES as u64)
        .max_bytes(MAX_BYTES);
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(17));
    let checker = {
        let (backend, done, start) = (backend.clone(), Arc::clone(&done), Arc::clone(&start));
        std::thread::spawn(move || {
            start.wait();
            let mut checks = 0u64;
            while !done.load(Ordering::Relaxed) {
                assert!(backend.len() <= MAX_ENTRIES, "{} entries", backend.len());
                assert!(backend.bytes() <= MAX_BYTES, "{} bytes", backend.bytes());
                checks += 1;
            }
            checks
        })
    };
    let workers: Vec<_> = (0..16u64)
        .map(|thread| {
            let (backend, start) = (backend.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                let store = region(&backend, &format!("c{}", thread % 3));
                start.wait();
                let mut x = thread + 1;
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = (x % 2_000).to_string();
                    match x % 10 {
                        0..=5 => drop(store.retrieve(&key).unwrap()),
                        6..=8 => {
                            let value = vec![1; (x % 100) as usize];
                            store
                                .store(
                                    &key,
                                    &value,
                                    (x % 2 == 0).then_some(Duration::from_millis(5)),
                                )
                                .unwrap();
                        }
                        _ => store.invalidate(&key).unwrap(),
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    assert!(checker.join().unwrap() > 0);
    assert!(backend.len() <= MAX_ENTRIES && backend.bytes() <= MAX_BYTES);
}

/// One operation of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    Store { key: u8, len: u8, ttl: Option<u8> },
    Retrieve(u8),
    Invalidate(u8),
    Clear,
    Advance(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..40u8, 0..60u8, proptest::option::of(1..20u8))
            .prop_map(|(key, len, ttl)| Op::Store { key, len, ttl }),
        4 => (0..40u8).prop_map(Op::Retrieve),
        1 => (0..40u8).prop_map(Op::Invalidate),
        1 => Just(Op::Clear),
        2 => (1..10u8).prop_map(Op::Advance),
    ]
}

proptest! {
    /// Against a map with expiry: the store never answers a value the model does not hold
    /// (stale, removed, expired or another write's), answers every live one when unbounded, and
    /// stays within its bound after every operation.
    #[test]
    fn behaves_as_a_map_with_expiry_within_its_bound(
        ops in proptest::collection::vec(op(), 1..300),
        bounded in any::<bool>(),
    ) {
        let (clock, mut backend) = manual();
        if bounded {
            backend = backend.max_entries(10).max_bytes(300);
        }
        let store = region(&backend, "c");
        let mut model: HashMap<u8, (Vec<u8>, u64)> = HashMap::new();
        let mut version = 0u8;
        for op in ops {
            let now = clock.now_millis();
            match op {
                Op::Store { key, len, ttl } => {
                    version = version.wrapping_add(1);
                    let value = vec![version; usize::from(len)];
                    let ttl = ttl.map(|s| Duration::from_millis(u64::from(s) * 10));
                    store.store(&key.to_string(), &value, ttl).unwrap();
                    let expires = ttl.map_or(u64::MAX, |ttl| now + ttl.as_millis() as u64);
                    model.insert(key, (value, expires));
                }
                Op::Retrieve(key) => {
                    let found = store.retrieve(&key.to_string()).unwrap();
                    let live = model.get(&key).filter(|(_, expires)| now < *expires);
                    match (found, live) {
                        (Some(found), Some((value, _))) => prop_assert_eq!(&found, value),
                        (Some(found), None) => prop_assert!(false, "{key} answered {found:?}, the model has nothing live"),
                        (None, Some(_)) => prop_assert!(bounded, "{key} lost without a bound"),
                        (None, None) => {}
                    }
                }
                Op::Invalidate(key) => {
                    store.invalidate(&key.to_string()).unwrap();
                    model.remove(&key);
                }
                Op::Clear => {
                    store.clear().unwrap();
                    model.clear();
                }
                Op::Advance(tens) => clock.advance(Duration::from_millis(u64::from(tens) * 10)),
            }
            if bounded {
                prop_assert!(backend.len() <= 10);
                prop_assert!(backend.bytes() <= 300);
            } else {
                prop_assert!(backend.len() <= model.len());
            }
        }
    }
}
