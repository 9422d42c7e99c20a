//! What the file backend keeps on disk: its schema, expiry, large entries, batches, locking, and
//! values that outlive the cache that wrote them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvcache_core::{Backend, ManualClock};
use kvcache_file::FileBackend;
use rusqlite::Connection;

mod common;

use common::store;

const NOW: u64 = 1_700_000_000_000;

fn open(path: &Path) -> (FileBackend, ManualClock) {
    let clock = ManualClock::new(NOW);
    let backend = FileBackend::builder(path)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    (backend, clock)
}

/// The rows of the table `kvcache`: (container, key, expires_at), sorted.
fn rows(path: &Path) -> Vec<(String, String, Option<i64>)> {
    Connection::open(path)
        .unwrap()
        .prepare("SELECT container, key, expires_at FROM kvcache ORDER BY container, key")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[test]
fn the_schema_is_created_and_recorded_when_the_backend_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new/parents/kv.sqlite3");
    let (backend, _) = open(&path);
    assert_eq!(backend.path(), path);

    let connection = Connection::open(&path).unwrap();
    let version: i64 = connection
        .query_row(
            "SELECT version FROM kvcache_schema WHERE name = 'kvcache'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(version, 2);
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(rows(&path).is_empty(), "the table exists before any write");
}

#[test]
fn expiry_is_stored_in_unix_milliseconds_and_no_ttl_is_null() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, _) = open(&path);
    let c = store(&backend, "c");
    c.store("brief", b"v", Some(Duration::from_secs(90)))
        .unwrap();
    c.store("forever", b"v", None).unwrap();
    c.store("huge", b"v", Some(Duration::MAX)).unwrap();
    assert_eq!(
        rows(&path),
        [
            ("c".into(), "brief".into(), Some(1_700_000_090_000)),
            ("c".into(), "forever".into(), None),
            ("c".into(), "huge".into(), Some(i64::MAX)),
        ]
    );
}

#[test]
fn an_expired_row_is_a_miss_and_is_deleted_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, clock) = open(&path);
    let c = store(&backend, "c");
    c.store("one", b"v", Some(Duration::from_secs(1))).unwrap();
    c.store("many", b"v", Some(Duration::from_secs(1))).unwrap();
    c.store("kept", b"v", Some(Duration::from_secs(2))).unwrap();
    clock.advance(Duration::from_secs(1));

    assert_eq!(c.retrieve("one").unwrap(), None);
    assert_eq!(rows(&path).len(), 2, "the expired row read was deleted");
    assert_eq!(
        c.retrieve_many(&["many", "kept"]).unwrap(),
        [None, Some(b"v".to_vec())]
    );
    assert_eq!(
        rows(&path),
        [("c".into(), "kept".into(), Some(1_700_000_002_000))]
    );
}

#[test]
fn purge_expired_deletes_every_expired_row_of_every_container() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, clock) = open(&path);
    for container in ["a", "b"] {
        let c = store(&backend, container);
        for i in 0..50_u32 {
            let ttl = i.is_multiple_of(2).then(|| Duration::from_secs(10));
            c.store(&i.to_string(), b"v", ttl).unwrap();
        }
    }
    store(&backend, "a")
        .store("later", b"v", Some(Duration::from_secs(11)))
        .unwrap();
    clock.advance(Duration::from_secs(10));
    backend.purge_expired().unwrap();
    let left = rows(&path);
    assert_eq!(
        left.len(),
        51,
        "25 rows without expiry in each container, and the later one"
    );
    assert!(
        left.iter()
            .all(|(_, key, expiry)| expiry.is_none() || key == "later")
    );
}

#[test]
fn clear_deletes_one_container_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, _) = open(&path);
    let (a, b) = (store(&backend, "a"), store(&backend, "b"));
    a.store("k", b"v", None).unwrap();
    b.store("k", b"v", None).unwrap();
    a.clear().unwrap();
    assert_eq!(rows(&path), [("b".into(), "k".into(), None)]);
}

#[test]
fn a_64_kib_key_holds_a_16_mib_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, _) = open(&path);
    let key = "ключ🦀".repeat(64 * 1024 / "ключ🦀".len() + 1);
    assert!(key.len() > 64 * 1024);
    let value: Vec<u8> = (0..16 * 1024 * 1024 + 1)
        .map(|i: u32| (i % 253) as u8)
        .collect();
    store(&backend, "c").store(&key, &value, None).unwrap();
    drop(backend);
    let (reopened, _) = open(&path);
    assert_eq!(store(&reopened, "c").retrieve(&key).unwrap(), Some(value));
}

#[test]
fn batches_span_many_statements_and_keep_order_and_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, _) = open(&path);
    let keys: Vec<String> = (0..1000).map(|i| format!("key {i}")).collect();
    let entries: Vec<(&str, &[u8])> = keys
        .iter()
        .step_by(3)
        .map(|k| (k.as_str(), k.as_bytes()))
        .collect();
    let c = store(&backend, "c");
    c.store_many(&entries, None).unwrap();

    // Every key, each twice, in an order unlike the table's.
    let asked: Vec<&str> = keys.iter().chain(&keys).rev().map(String::as_str).collect();
    let found = c.retrieve_many(&asked).unwrap();
    assert_eq!(found.len(), asked.len());
    for (key, value) in asked.iter().zip(found) {
        let index: usize = key[4..].parse().unwrap();
        assert_eq!(
            value,
            index.is_multiple_of(3).then(|| key.as_bytes().to_vec()),
            "key {key:?}"
        );
    }
}

#[test]
fn reads_go_on_beside_a_writer_and_writes_wait_up_to_the_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::builder(&path)
        .busy_timeout(Duration::from_millis(50))
        .open()
        .unwrap();
    let c = store(&backend, "c");
    c.store("k", b"before", None).unwrap();

    // Another process's writer, in the middle of its transaction.
    let mut other = Connection::open(&path).unwrap();
    let transaction = other
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    transaction
        .execute("UPDATE kvcache SET value = x'00' WHERE key = 'k'", [])
        .unwrap();

    assert_eq!(
        c.retrieve("k").unwrap().as_deref(),
        Some(&b"before"[..]),
        "reads see the last commit"
    );
    let error = c
        .store("k", b"blocked", None)
        .expect_err("the lock is held past the busy timeout");
    let text = format!("{error}: {}", std::error::Error::source(&error).unwrap());
    assert!(text.contains("longer than the busy timeout"), "{text}");

    transaction.rollback().unwrap();
    c.store("k", b"after", None).unwrap();
    assert_eq!(c.retrieve("k").unwrap().as_deref(), Some(&b"after"[..]));
}

#[test]
fn threads_share_the_file_through_connections_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, _) = open(&path);
    let shared = store(&backend, "shared");
    std::thread::scope(|scope| {
        for t in 0..8 {
            let shared = &shared;
            scope.spawn(move || {
                for i in 0..200_u32 {
                    let key = format!("{}", i % 20);
                    shared.store(&key, format!("{t}").as_bytes(), None).unwrap();
                    // Another thread may have removed it since.
                    if let Some(value) = shared.retrieve(&key).unwrap() {
                        assert!(std::str::from_utf8(&value).unwrap().parse::<u32>().unwrap() < 8);
                    }
                    if i.is_multiple_of(7) {
                        shared.invalidate(&key).unwrap();
                    }
                }
            });
        }
    });
}

#[test]
fn values_outlive_the_cache_that_generated_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache/greetings.sqlite3");
    let calls = Arc::new(AtomicUsize::new(0));
    for _run in 0..2 {
        let cache = kvcache_core::init([
            ("backend.disk", "score.kvcache.backend.FileCache"),
            ("backend.disk.path", path.to_str().unwrap()),
            ("container.greeting.backend", "disk"),
        ])
        .unwrap();
        let counter = Arc::clone(&calls);
        cache
            .register_generator("greeting", move |name: &str| {
                counter.fetch_add(1, Ordering::SeqCst);
                format!("Hello {name}!")
            })
            .unwrap();
        let greeting = cache.container::<String>("greeting").unwrap();
        assert_eq!(greeting.get("Peter").unwrap(), "Hello Peter!");
        assert_eq!(greeting.get("William").unwrap(), "Hello William!");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the second cache read both values from the file"
    );
}
