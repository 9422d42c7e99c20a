//! The shared conformance suite on the file backend, built by hand and through its registration.

use std::sync::Arc;

use kvcache_core::{BackendConfig, ManualClock, backend_kind, testkit};
use kvcache_file::FileBackend;

#[test]
fn passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let backend = FileBackend::builder(dir.path().join("kv.sqlite3"))
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    testkit::run(&backend, testkit::Time::Manual(&clock));
    testkit::leases(&backend, testkit::Time::Manual(&clock));
}

#[test]
fn passes_the_conformance_suite_when_opened_by_its_alias_in_another_table() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let config = BackendConfig::new("disk", "score.kvcache.backend.FileCache")
        .option("path", dir.path().join("kv.sqlite3").to_str().unwrap())
        .option("table", "other_entries")
        .option("busy_timeout", "2 sec")
        .clock(Arc::new(clock.clone()));
    let backend = backend_kind(config.kind(), "backend.disk")
        .unwrap()
        .open(&config)
        .unwrap();
    testkit::run(&*backend, testkit::Time::Manual(&clock));
    testkit::leases(&*backend, testkit::Time::Manual(&clock));
}

#[test]
fn corrupt_values_are_misses_that_get_regenerated() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FileBackend::open(dir.path().join("kv.sqlite3")).unwrap();
    testkit::corruption(Arc::new(backend));
}
