//! What the file backend keeps on disk: its schema, expiry, large entries, batches, locking, and
//! values that outlive the cache that wrote them.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvcache_core::{Backend, Lease, ManualClock};
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
    assert_eq!(version, 3);
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert!(rows(&path).is_empty(), "the table exists before any write");
}

/// The rows of the table `kvcache_leases`: (container, key, token, expires_at), sorted.
fn leases(path: &Path) -> Vec<(String, String, String, i64)> {
    Connection::open(path)
        .unwrap()
        .prepare(
            "SELECT container, key, token, expires_at FROM kvcache_leases
             ORDER BY container, key",
        )
        .unwrap()
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

/// A file of schema version 2, as kvcache wrote it before leases (its entries counted, as a
/// backend with `max_entries` left it): it opens, gains its leases table and keeps its rows.
#[test]
fn a_version_2_file_gains_its_leases_table_and_leases_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let connection = Connection::open(&path).unwrap();
    connection
        .execute_batch(
            "PRAGMA page_size = 8192;
             PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             CREATE TABLE kvcache_schema (
                 name TEXT PRIMARY KEY COLLATE NOCASE,
                 version INTEGER NOT NULL,
                 entries INTEGER
             );
             CREATE TABLE \"kvcache\" (
                 container TEXT NOT NULL,
                 key TEXT NOT NULL,
                 value BLOB NOT NULL,
                 expires_at INTEGER,
                 overwritten INTEGER NOT NULL DEFAULT 0,
                 PRIMARY KEY (container, key)
             );
             CREATE INDEX \"kvcache_expires_at\" ON \"kvcache\" (expires_at)
                 WHERE expires_at IS NOT NULL;
             INSERT INTO kvcache_schema (name, version) VALUES ('kvcache', 2);
             UPDATE kvcache_schema SET entries = 0 WHERE name = 'kvcache';
             CREATE TRIGGER \"kvcache_entries_insert\" AFTER INSERT ON \"kvcache\" BEGIN
                 UPDATE kvcache_schema SET entries = entries + 1 WHERE name = 'kvcache';
             END;
             CREATE TRIGGER \"kvcache_entries_delete\" AFTER DELETE ON \"kvcache\" BEGIN
                 UPDATE kvcache_schema SET entries = entries - 1 WHERE name = 'kvcache';
             END;
             INSERT INTO kvcache (container, key, value) VALUES ('c', 'old', x'6f6c64');",
        )
        .unwrap();
    drop(connection);

    let clock = ManualClock::new(NOW);
    let backend = FileBackend::builder(&path)
        .clock(Arc::new(clock.clone()))
        .max_entries(1000)
        .open()
        .unwrap();
    let c = store(&backend, "c");
    assert_eq!(c.retrieve("old").unwrap().as_deref(), Some(&b"old"[..]));
    let (version, entries): (i64, i64) = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT version, entries FROM kvcache_schema WHERE name = 'kvcache'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!(version, 3);

    let ttl = Duration::from_secs(60);
    assert_eq!(c.lease("old", "a", ttl).unwrap(), Lease::Acquired);
    assert_eq!(c.lease("old", "b", ttl).unwrap(), Lease::Held);
    assert_eq!(
        leases(&path),
        [("c".into(), "old".into(), "a".into(), 1_700_000_060_000)]
    );
    c.release("old", "a").unwrap();
    assert_eq!(c.lease("old", "b", ttl).unwrap(), Lease::Acquired);
    let counted: i64 = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT entries FROM kvcache_schema WHERE name = 'kvcache'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!((entries, counted), (1, 1), "leases are not entries");

    // Opened again, the file is ready: nothing is written.
    drop((c, backend));
    let before = std::fs::read(&path).unwrap();
    let (reopened, _) = open(&path);
    assert_eq!(
        store(&reopened, "c").lease("old", "c", ttl).unwrap(),
        Lease::Held
    );
    drop(reopened);
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn leases_are_kept_apart_from_entries_listings_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, _) = open(&path);
    let ttl = Duration::from_secs(60);
    let only = store(&backend, "only-leases");
    assert_eq!(only.lease("k", "a", ttl).unwrap(), Lease::Acquired);
    let c = store(&backend, "c");
    c.store("k", b"v", None).unwrap();
    assert_eq!(c.lease("other", "a", ttl).unwrap(), Lease::Acquired);

    let inspect = backend.inspect().unwrap();
    assert_eq!(
        inspect.containers(&mut |_| {}).unwrap(),
        Some(vec!["c".to_owned()])
    );
    assert_eq!(
        inspect.summary("only-leases", &mut |_| {}).unwrap().entries,
        0
    );
    assert_eq!(inspect.summary("c", &mut |_| {}).unwrap().entries, 1);
    assert_eq!(inspect.keys("c", "", None, &mut |_| {}).unwrap(), ["k"]);
    assert!(
        inspect
            .keys("only-leases", "", None, &mut |_| {})
            .unwrap()
            .is_empty()
    );

    c.clear().unwrap();
    assert!(rows(&path).is_empty());
    assert_eq!(leases(&path).len(), 2, "clear leaves the leases alone");
    assert_eq!(c.lease("other", "b", ttl).unwrap(), Lease::Held);
}

#[test]
fn purge_expired_and_the_writes_upkeep_delete_expired_leases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let (backend, clock) = open(&path);
    let (a, b) = (store(&backend, "a"), store(&backend, "b"));
    a.lease("brief", "t", Duration::from_secs(10)).unwrap();
    b.lease("brief", "t", Duration::from_secs(10)).unwrap();
    a.lease("long", "t", Duration::from_secs(3600)).unwrap();
    clock.advance(Duration::from_secs(10));
    backend.purge_expired().unwrap();
    assert_eq!(
        leases(&path),
        [("a".into(), "long".into(), "t".into(), 1_700_003_600_000)]
    );

    a.lease("brief", "u", Duration::from_secs(10)).unwrap();
    clock.advance(Duration::from_secs(10));
    // 64 writes: the last one's upkeep.
    for i in 0..64 {
        a.store(&i.to_string(), b"v", None).unwrap();
    }
    assert_eq!(
        leases(&path),
        [("a".into(), "long".into(), "t".into(), 1_700_003_600_000)]
    );
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
