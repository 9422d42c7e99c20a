//! The shared conformance suite, and the eviction policy, on the in-memory backend.

use std::sync::Arc;
use std::time::Duration;

use kvcache_core::{Backend, ManualClock, Store, testkit};
use kvcache_variable::VariableBackend;

/// Container "c" of `backend`.
fn region(backend: &VariableBackend) -> Arc<dyn Store> {
    backend.open("c").unwrap().sync_store()
}

#[test]
fn passes_the_conformance_suite() {
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = VariableBackend::with_clock(Arc::new(clock.clone()));
    testkit::run(&backend, testkit::Time::Manual(&clock));
}

#[test]
fn corrupt_values_are_misses_that_get_regenerated() {
    testkit::corruption(Arc::new(VariableBackend::new()));
}

#[test]
fn passes_the_conformance_suite_when_bounded() {
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = VariableBackend::with_clock(Arc::new(clock.clone())).max_entries(100_000);
    testkit::run(&backend, testkit::Time::Manual(&clock));
}

#[test]
fn a_bounded_store_never_exceeds_its_bound_and_evicts_the_oldest_write_first() {
    let backend = VariableBackend::new().max_entries(10);
    for i in 0..100 {
        region(&backend).store(&i.to_string(), b"v", None).unwrap();
        assert!(backend.len() <= 10, "{} entries after {i}", backend.len());
    }
    // One shard at this size: exactly the ten newest writes survive.
    for i in 0..90 {
        assert_eq!(
            region(&backend).retrieve(&i.to_string()).unwrap(),
            None,
            "key {i}"
        );
    }
    for i in 90..100 {
        assert!(
            region(&backend).retrieve(&i.to_string()).unwrap().is_some(),
            "key {i}"
        );
    }
}

#[test]
fn rewriting_a_key_makes_it_the_newest() {
    let backend = VariableBackend::new().max_entries(3);
    for key in ["a", "b", "c"] {
        region(&backend).store(key, b"v", None).unwrap();
    }
    region(&backend).store("a", b"again", None).unwrap();
    region(&backend).store("d", b"v", None).unwrap();
    assert_eq!(
        region(&backend).retrieve("b").unwrap(),
        None,
        "b is now the oldest write"
    );
    assert_eq!(
        region(&backend).retrieve("a").unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

#[test]
fn a_full_store_drops_expired_entries_before_live_ones() {
    let clock = ManualClock::new(0);
    let backend = VariableBackend::with_clock(Arc::new(clock.clone())).max_entries(3);
    region(&backend).store("forever", b"v", None).unwrap();
    region(&backend)
        .store("brief-1", b"v", Some(Duration::from_secs(1)))
        .unwrap();
    region(&backend)
        .store("brief-2", b"v", Some(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(2));
    region(&backend).store("new", b"v", None).unwrap();
    assert!(
        region(&backend).retrieve("forever").unwrap().is_some(),
        "the oldest live entry stays"
    );
    assert!(region(&backend).retrieve("new").unwrap().is_some());
    assert_eq!(backend.len(), 2);
}

#[test]
fn expired_entries_are_dropped_when_read_and_when_purged() {
    let clock = ManualClock::new(0);
    let backend = VariableBackend::with_clock(Arc::new(clock.clone()));
    region(&backend)
        .store("read", b"v", Some(Duration::from_secs(1)))
        .unwrap();
    region(&backend)
        .store("purged", b"v", Some(Duration::from_secs(1)))
        .unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(backend.len(), 2);
    assert_eq!(region(&backend).retrieve("read").unwrap(), None);
    assert_eq!(backend.len(), 1, "the expired entry read was dropped");
    backend.purge_expired().unwrap();
    assert!(backend.is_empty());
}

#[test]
fn churn_on_few_keys_keeps_the_write_log_small() {
    let backend = VariableBackend::new().max_entries(4);
    for i in 0..10_000 {
        region(&backend)
            .store(&(i % 4).to_string(), b"v", None)
            .unwrap();
    }
    assert_eq!(backend.len(), 4, "rewrites of present keys evict nothing");
}
