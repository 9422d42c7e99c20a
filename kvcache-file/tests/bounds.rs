//! The file stays within its bounds: `max_size` and `max_entries` cull the least recently stored
//! entries, with one process or several writing at once; expired entries are reclaimed by writes
//! alone; freed pages go back to the filesystem; bad options are refused with their key.

use std::env;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvcache_core::{BackendConfig, Error, ManualClock, backend_kind};
use kvcache_file::FileBackend;
use rusqlite::Connection;

mod common;

use common::store;

const NOW: u64 = 1_700_000_000_000;
const KIB: usize = 1024;
const MIB: u64 = 1 << 20;

/// A 1 KiB value that says which key it is.
fn value(key: &str) -> Vec<u8> {
    let mut value = key.as_bytes().to_vec();
    value.resize(KIB, b'.');
    value
}

/// The bytes of the file's pages, and of those in use, as SQLite counts them.
fn pages(path: &Path) -> (u64, u64) {
    let connection = Connection::open(path).unwrap();
    let (size, count, free): (i64, i64, i64) = connection
        .query_row(
            "SELECT page_size, page_count, freelist_count
             FROM pragma_page_size(), pragma_page_count(), pragma_freelist_count()",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .unwrap();
    ((count * size) as u64, ((count - free) * size) as u64)
}

/// The file's length on disk once the -wal is written back into it.
fn checkpointed_len(path: &Path) -> u64 {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap();
    std::fs::metadata(path).unwrap().len()
}

fn rows(path: &Path) -> u64 {
    Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM kvcache", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap() as u64
}

#[test]
fn overfilling_ten_times_keeps_the_file_within_its_size_and_recent_keys_hit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let max = 4 * MIB;
    let backend = FileBackend::builder(&path).max_size(max).open().unwrap();
    let c = store(&backend, "c");
    let keys: Vec<String> = (0..10 * max as usize / KIB)
        .map(|i| format!("key-{i}"))
        .collect();
    let mut largest = 0;
    for (i, key) in keys.iter().enumerate() {
        c.store(key, &value(key), None).unwrap();
        if i % 500 == 0 {
            largest = largest.max(pages(&path).0);
        }
    }
    let (file, used) = pages(&path);
    largest = largest.max(file);
    eprintln!(
        "max_size {max}: largest {largest}, last {file} ({used} in use); {} rows",
        rows(&path)
    );
    assert!(used <= max, "{used} bytes in use past {max}");
    assert!(
        largest * 10 <= max * 11,
        "the file reached {largest} bytes, past 1.1 × {max}"
    );
    let on_disk = checkpointed_len(&path);
    assert!(on_disk * 10 <= max * 11, "{on_disk} bytes on disk");

    // The keys stored last, half the bound's worth of values: at least 95% are there.
    let recent = &keys[keys.len() - max as usize / 2 / KIB..];
    let hits = recent
        .iter()
        .filter(|key| c.retrieve(key).unwrap() == Some(value(key)))
        .count();
    eprintln!("{hits} hits of the {} keys stored last", recent.len());
    assert!(
        hits * 100 >= recent.len() * 95,
        "{hits} of {}",
        recent.len()
    );
}

#[test]
fn max_entries_holds_after_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::builder(&path).max_entries(100).open().unwrap();
    let (a, b) = (store(&backend, "a"), store(&backend, "b"));
    for i in 0..1000 {
        let key = format!("key-{i}");
        if i % 10 == 9 {
            let entries: Vec<(&str, &[u8])> = vec![(&key, b"v"), ("other", b"w")];
            b.store_many(&entries, None).unwrap();
        } else {
            a.store(&key, b"v", None).unwrap();
        }
        assert!(
            rows(&path) <= 100,
            "{} entries after write {i}",
            rows(&path)
        );
    }
    assert!(
        rows(&path) >= 90,
        "culling stops near the bound: {}",
        rows(&path)
    );
    assert_eq!(a.retrieve("key-998").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(
        a.retrieve("key-100").unwrap(),
        None,
        "the oldest went first"
    );
}

#[test]
fn an_overwritten_entry_gets_a_second_chance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::builder(&path).max_entries(10).open().unwrap();
    let c = store(&backend, "c");
    for i in 0..10 {
        c.store(&format!("k{i}"), b"v", None).unwrap();
    }
    c.store("k0", b"again", None).unwrap();
    c.store("k10", b"v", None).unwrap();
    assert_eq!(
        c.retrieve("k1").unwrap(),
        None,
        "the oldest not stored again"
    );
    assert_eq!(c.retrieve("k0").unwrap().as_deref(), Some(&b"again"[..]));
    for i in 11..19 {
        c.store(&format!("k{i}"), b"v", None).unwrap();
    }
    // k0 went to the newest end when culling reached it, behind k10 and before k11.
    assert_eq!(c.retrieve("k9").unwrap(), None);
    assert_eq!(c.retrieve("k0").unwrap().as_deref(), Some(&b"again"[..]));
    c.store("k19", b"v", None).unwrap();
    assert_eq!(c.retrieve("k10").unwrap(), None);
    assert_eq!(c.retrieve("k0").unwrap().as_deref(), Some(&b"again"[..]));
    c.store("k20", b"v", None).unwrap();
    assert_eq!(c.retrieve("k0").unwrap(), None, "its second chance is over");
    assert_eq!(rows(&path), 10);
}

#[test]
fn expired_entries_are_reclaimed_by_writes_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let clock = ManualClock::new(NOW);
    let backend = FileBackend::builder(&path)
        .clock(Arc::new(clock.clone()))
        .open()
        .unwrap();
    let c = store(&backend, "c");
    for i in 0..1000 {
        c.store(
            &format!("brief-{i}"),
            &value("brief"),
            Some(Duration::from_secs(1)),
        )
        .unwrap();
    }
    let expired = || -> u64 {
        Connection::open(&path)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM kvcache WHERE expires_at <= ?1",
                [NOW as i64 + 1000],
                |row| row.get::<_, i64>(0),
            )
            .unwrap() as u64
    };
    clock.advance(Duration::from_secs(1));
    // No read, no purge_expired: only other writes. Each upkeep deletes at most 256.
    for i in 0..64 {
        c.store(&format!("kept-{i}"), b"v", None).unwrap();
    }
    let left = expired();
    assert!((1000 - 256..1000).contains(&left), "{left} expired left");
    for i in 64..64 * 4 {
        c.store(&format!("kept-{i}"), b"v", None).unwrap();
    }
    assert_eq!(expired(), 0);
    assert_eq!(rows(&path), 256);
}

#[test]
fn freed_pages_go_back_to_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::open(&path).unwrap();
    let mode: i64 = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA auto_vacuum", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, 2, "a new file is made with incremental auto-vacuum");
    let (big, small) = (store(&backend, "big"), store(&backend, "small"));
    for i in 0..8 * 1024 {
        big.store(&i.to_string(), &value("big"), None).unwrap();
    }
    let full = checkpointed_len(&path);
    assert!(full > 8 * MIB, "{full}");
    big.clear().unwrap();
    // Each upkeep gives back up to 4 MiB.
    for i in 0..64 * 4 {
        small.store(&i.to_string(), b"v", None).unwrap();
    }
    let emptied = checkpointed_len(&path);
    assert!(emptied < 2 * MIB, "{full} bytes, then {emptied}");
}

/// A file of schema version 1, as kvcache wrote it before the bound: its rows survive the
/// upgrade, and a bound holds on it though it has no auto-vacuum (its free pages are reused).
#[test]
fn a_version_1_file_is_upgraded_in_place_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let connection = Connection::open(&path).unwrap();
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE kvcache_schema (name TEXT PRIMARY KEY COLLATE NOCASE,
                 version INTEGER NOT NULL);
             CREATE TABLE kvcache (container TEXT NOT NULL, key TEXT NOT NULL,
                 value BLOB NOT NULL, expires_at INTEGER, PRIMARY KEY (container, key));
             CREATE INDEX kvcache_expires_at ON kvcache (expires_at)
                 WHERE expires_at IS NOT NULL;
             INSERT INTO kvcache_schema VALUES ('kvcache', 1);
             INSERT INTO kvcache VALUES ('c', 'old', x'6f6c64', NULL);",
        )
        .unwrap();
    drop(connection);

    let max = MIB;
    let backend = FileBackend::builder(&path)
        .max_size(max)
        .max_entries(5000)
        .open()
        .unwrap();
    let c = store(&backend, "c");
    assert_eq!(c.retrieve("old").unwrap().as_deref(), Some(&b"old"[..]));
    let version: i64 = Connection::open(&path)
        .unwrap()
        .query_row(
            "SELECT version FROM kvcache_schema WHERE name = 'kvcache'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(version, 3);
    for i in 0..10 * 1024 {
        let key = i.to_string();
        c.store(&key, &value(&key), None).unwrap();
    }
    let (file, used) = pages(&path);
    assert!(used <= max, "{used} in use");
    assert!(file * 10 <= max * 11, "{file} bytes of pages");
    assert_eq!(c.retrieve("old").unwrap(), None, "culled first");
}

/// Set in a child's environment: the file it writes to.
const CHILD_FILE: &str = "KVCACHE_FILE_TEST_BOUND_FILE";
/// Set in a child's environment: its number.
const CHILD: &str = "KVCACHE_FILE_TEST_BOUND_CHILD";
const CHILDREN: usize = 4;
const PROCESS_MAX: u64 = 2 * MIB;

#[test]
fn the_size_bound_holds_with_several_processes_writing_at_once() {
    if let (Ok(path), Ok(child)) = (env::var(CHILD_FILE), env::var(CHILD)) {
        let backend = FileBackend::builder(&path)
            .max_size(PROCESS_MAX)
            .open()
            .unwrap();
        let c = store(&backend, "shared");
        // Together, ten times the bound.
        for i in 0..10 * PROCESS_MAX as usize / KIB / CHILDREN {
            let key = format!("{child}-{i}");
            c.store(&key, &value(&key), None).unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.sqlite3");
    drop(FileBackend::open(&path).unwrap());
    let children: Vec<_> = (0..CHILDREN)
        .map(|child| {
            Command::new(env::current_exe().unwrap())
                .args([
                    "--exact",
                    "the_size_bound_holds_with_several_processes_writing_at_once",
                    "--nocapture",
                ])
                .env(CHILD_FILE, &path)
                .env(CHILD, child.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Sampled while they write.
    let (mut largest, mut most_used, mut samples) = (0, 0, 0);
    let start = Instant::now();
    let mut children = children;
    while !children.is_empty() {
        let (file, used) = pages(&path);
        (largest, most_used, samples) = (largest.max(file), most_used.max(used), samples + 1);
        std::thread::sleep(Duration::from_millis(5));
        let mut running = Vec::new();
        for mut child in children {
            match child.try_wait().unwrap() {
                None => running.push(child),
                Some(_) => {
                    let output = child.wait_with_output().unwrap();
                    assert!(
                        output.status.success(),
                        "a child failed:\n{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                }
            }
        }
        children = running;
        assert!(start.elapsed() < Duration::from_secs(300), "children hang");
    }
    let (file, used) = pages(&path);
    eprintln!(
        "{CHILDREN} processes, max_size {PROCESS_MAX}: largest {largest} ({most_used} in use) \
         in {samples} samples; last {file} ({used} in use)"
    );
    for (what, bytes) in [("file", largest.max(file)), ("in use", most_used.max(used))] {
        assert!(
            bytes * 10 <= PROCESS_MAX * 11,
            "{what}: {bytes} bytes, past 1.1 × {PROCESS_MAX}"
        );
    }
    let on_disk = checkpointed_len(&path);
    assert!(on_disk * 10 <= PROCESS_MAX * 11, "{on_disk} bytes on disk");
    let integrity: String = Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

#[test]
fn bad_bounds_are_refused_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let open = |option: &str, value: &str| {
        let config = BackendConfig::new("disk", "file")
            .option("path", path.to_str().unwrap())
            .option(option, value);
        backend_kind(config.kind(), "backend.disk")
            .unwrap()
            .open(&config)
            .map(drop)
    };
    for bad in [
        "lots",
        "-1",
        "1 GiB 2",
        "10",
        "5 parsecs",
        "99999999999 TiB",
    ] {
        let error = open("max_size", bad).expect_err(bad);
        assert!(
            matches!(error, Error::InvalidConfig { .. }),
            "{bad}: {error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("backend.disk.max_size"), "{bad}: {text}");
        assert!(text.contains(&format!("{bad:?}")), "{bad}: {text}");
    }
    for bad in ["0", "many", "-3", "1.5"] {
        let error = open("max_entries", bad).expect_err(bad);
        assert!(
            matches!(error, Error::InvalidConfig { .. }),
            "{bad}: {error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("backend.disk.max_entries"), "{bad}: {text}");
    }
    for good in ["1GiB", "500MB", "1048576", "64 KiB"] {
        open("max_size", good).unwrap();
    }
    open("max_entries", "1000").unwrap();
}
