//! Several processes on one file: this test binary runs itself again as workers.
//!
//! Each worker stores, removes and reads overlapping keys of one new file for a few seconds, and
//! logs every operation that succeeded with the wall-clock interval it ran in. Any error, a busy
//! or locked one included, fails the worker. The parent then checks every read, and the file's
//! final state, against the writes: what a read saw must be the effect of a write that began
//! before the read ended and that no write finished before the read began wholly followed. A
//! write that returned but was lost, or a stale read, breaks that. Last, SQLite must find the
//! file intact.

use std::collections::HashMap;
use std::env;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvcache_file::FileBackend;
use rusqlite::Connection;

mod common;

/// Set in a worker's environment: its number.
const WORKER: &str = "KVCACHE_FILE_TEST_WORKER";
const FILE: &str = "KVCACHE_FILE_TEST_FILE";
const LOG: &str = "KVCACHE_FILE_TEST_LOG";
/// When workers stop, in Unix nanoseconds.
const UNTIL: &str = "KVCACHE_FILE_TEST_UNTIL";

const WORKERS: usize = 6;
const KEYS: u64 = 12;
const RUN_FOR: Duration = Duration::from_secs(3);
const CONTAINER: &str = "shared";

fn now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn many_processes_share_one_file() {
    if let Ok(worker) = env::var(WORKER) {
        return work(worker.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    // The workers create the file, all at once.
    let path = dir.path().join("shared.sqlite3");
    let until = now() + RUN_FOR.as_nanos();
    let children: Vec<_> = (0..WORKERS)
        .map(|worker| {
            Command::new(env::current_exe().unwrap())
                .args(["--exact", "many_processes_share_one_file", "--nocapture"])
                .env(WORKER, worker.to_string())
                .env(FILE, &path)
                .env(LOG, dir.path().join(format!("{worker}.log")))
                .env(UNTIL, until.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (worker, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "worker {worker} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    check(dir.path(), &path);
}

/// One operation a worker did, as its log line reads: `set KEY WORKER:SEQ START END`,
/// `remove KEY - START END`, or `get KEY WORKER:SEQ START END` (`-` for a miss).
#[derive(Debug)]
struct Op {
    kind: String,
    key: String,
    value: String,
    start: u128,
    end: u128,
}

fn check(dir: &Path, path: &Path) {
    let mut ops = Vec::new();
    for worker in 0..WORKERS {
        let log = fs::read_to_string(dir.join(format!("{worker}.log"))).unwrap();
        let before = ops.len();
        for line in log.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let [kind, key, value, start, end] = fields[..] else {
                panic!("worker {worker} logged {line:?}");
            };
            ops.push(Op {
                kind: kind.into(),
                key: key.into(),
                value: value.into(),
                start: start.parse().unwrap(),
                end: end.parse().unwrap(),
            });
        }
        let sets = ops[before..].iter().filter(|op| op.kind == "set").count();
        assert!(sets >= 10, "worker {worker} stored only {sets} values");
    }

    eprintln!("{} operations by {WORKERS} workers", ops.len());

    // The final state, read after every worker ended, is checked as one more read.
    let backend = FileBackend::open(path).unwrap();
    let shared = common::store(&backend, CONTAINER);
    let after = now();
    for key in (0..KEYS).map(|k| format!("key-{k}")) {
        let stored = shared.retrieve(&key).unwrap();
        ops.push(Op {
            kind: "get".into(),
            value: stored.as_deref().map_or("-", identity).to_owned(),
            key,
            start: after,
            end: after,
        });
    }
    drop((shared, backend));

    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in &ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    for key_ops in by_key.values() {
        check_reads(key_ops);
    }

    let connection = Connection::open(path).unwrap();
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
}

/// Checks every read of one key: it must see the effect of a write that began before the read
/// ended and that no write finished before the read began wholly followed (or, with no such
/// write at all, the initial miss).
fn check_reads(ops: &[&Op]) {
    // Writes by end, with the latest start among each prefix; removes by start, with the
    // latest end among each prefix; sets by the value they wrote.
    let mut writes: Vec<&Op> = ops.iter().copied().filter(|op| op.kind != "get").collect();
    writes.sort_by_key(|op| op.end);
    let latest_start: Vec<u128> = running_max(writes.iter().map(|op| op.start));
    let mut removes: Vec<&Op> = writes
        .iter()
        .copied()
        .filter(|op| op.kind == "remove")
        .collect();
    removes.sort_by_key(|op| op.start);
    let latest_remove_end: Vec<u128> = running_max(removes.iter().map(|op| op.end));
    let sets: HashMap<&str, &Op> = writes
        .iter()
        .filter(|op| op.kind == "set")
        .map(|op| (op.value.as_str(), *op))
        .collect();

    for read in ops.iter().filter(|op| op.kind == "get") {
        let finished = writes.partition_point(|w| w.end < read.start);
        let floor = finished.checked_sub(1).map(|i| latest_start[i]);
        let seen = if read.value == "-" {
            let begun = removes.partition_point(|r| r.start < read.end);
            let latest_end = begun.checked_sub(1).map(|i| latest_remove_end[i]);
            match floor {
                None => true,
                Some(floor) => latest_end.is_some_and(|end| end >= floor),
            }
        } else {
            sets.get(read.value.as_str()).is_some_and(|set| {
                set.start < read.end && floor.is_none_or(|floor| set.end >= floor)
            })
        };
        assert!(
            seen,
            "{read:?} saw what no write could have left: a write was lost or a read was stale"
        );
    }
}

fn running_max(values: impl Iterator<Item = u128>) -> Vec<u128> {
    values
        .scan(0, |max, value| {
            *max = value.max(*max);
            Some(*max)
        })
        .collect()
}

/// A value's `WORKER:SEQ`: what precedes its padding.
fn identity(value: &[u8]) -> &str {
    let text = std::str::from_utf8(value).unwrap();
    text.split_once(' ').map_or(text, |(identity, _)| identity)
}

fn work(worker: u64) {
    let path = env::var(FILE).unwrap();
    let until: u128 = env::var(UNTIL).unwrap().parse().unwrap();
    let mut log = BufWriter::new(File::create(env::var(LOG).unwrap()).unwrap());
    let fail = |doing: &str, error: kvcache_core::Error| -> ! {
        panic!(
            "worker {worker}: {doing}: {error}: {:?}",
            std::error::Error::source(&error)
        )
    };
    let backend = FileBackend::open(&path).unwrap_or_else(|e| fail("opening", e));
    let shared = common::store(&backend, CONTAINER);
    // xorshift64, seeded per worker.
    let mut state = 0x9E37_79B9_7F4A_7C15 ^ (worker + 1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut seq = 0;
    let value = |seq: &mut u64, random: u64| {
        *seq += 1;
        let padding = "x".repeat((random >> 40) as usize % 5000);
        format!("{worker}:{seq} {padding}")
    };
    while now() < until {
        let random = next();
        // Two more keys, for batches.
        let keys: Vec<String> = (0..3)
            .map(|i| format!("key-{}", (random + i) % KEYS))
            .collect();
        let key = &keys[0];
        let start = now();
        match (random >> 32) % 10 {
            0..=3 => {
                let value = value(&mut seq, random);
                shared
                    .store(key, value.as_bytes(), None)
                    .unwrap_or_else(|e| fail("storing", e));
                writeln!(
                    log,
                    "set {key} {} {start} {}",
                    identity(value.as_bytes()),
                    now()
                )
                .unwrap();
            }
            4 => {
                let values: Vec<String> = keys.iter().map(|_| value(&mut seq, random)).collect();
                let entries: Vec<(&str, &[u8])> = keys
                    .iter()
                    .zip(&values)
                    .map(|(k, v)| (k.as_str(), v.as_bytes()))
                    .collect();
                shared
                    .store_many(&entries, None)
                    .unwrap_or_else(|e| fail("storing a batch", e));
                let end = now();
                for (key, value) in &entries {
                    writeln!(log, "set {key} {} {start} {end}", identity(value)).unwrap();
                }
            }
            5 | 6 => {
                shared
                    .invalidate(key)
                    .unwrap_or_else(|e| fail("removing", e));
                writeln!(log, "remove {key} - {start} {}", now()).unwrap();
            }
            7 | 8 => {
                let value = shared.retrieve(key).unwrap_or_else(|e| fail("reading", e));
                let seen = value.as_deref().map_or("-", identity);
                writeln!(log, "get {key} {seen} {start} {}", now()).unwrap();
            }
            _ => {
                let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
                let values = shared
                    .retrieve_many(&asked)
                    .unwrap_or_else(|e| fail("reading a batch", e));
                let end = now();
                for (key, value) in asked.iter().zip(values) {
                    let seen = value.as_deref().map_or("-", identity);
                    writeln!(log, "get {key} {seen} {start} {end}").unwrap();
                }
            }
        }
    }
    log.flush().unwrap();
}
