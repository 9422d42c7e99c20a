//! Several processes on one file: this test binary runs itself again as workers.
//!
//! In the first test, each worker stores, removes and reads overlapping keys of one new file for
//! a few seconds, and logs every operation that succeeded with the wall-clock interval it ran
//! in. Any error, a busy or locked one included, fails the worker. The parent then checks every
//! read, and the file's final state, against the writes: what a read saw must be the effect of a
//! write that began before the read ended and that no write finished before the read began
//! wholly followed. A write that returned but was lost, or a stale read, breaks that. Last,
//! SQLite must find the file intact.
//!
//! In the second, the workers race for the lease on a new key of one new file in each of many
//! rounds, all at one agreed instant, and log what each got: exactly one must have acquired it.

use std::collections::HashMap;
use std::env;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kvcache_core::Lease;
use kvcache_file::FileBackend;
use rusqlite::Connection;

mod common;

/// Set in a worker's environment: its number.
const WORKER: &str = "KVCACHE_FILE_TEST_WORKER";
const FILE: &str = "KVCACHE_FILE_TEST_FILE";
const LOG: &str = "KVCACHE_FILE_TEST_LOG";
/// When workers stop, in Unix nanoseconds.
const UNTIL: &str = "KVCACHE_FILE_TEST_UNTIL";
/// When the lease workers start their first round, in Unix nanoseconds.
const START: &str = "KVCACHE_FILE_TEST_START";

const WORKERS: usize = 6;
const KEYS: u64 = 12;
const RUN_FOR: Duration = Duration::from_secs(3);
const CONTAINER: &str = "shared";
/// The lease test's rounds, and the time between the starts of two.
const ROUNDS: u64 = 20;
const ROUND_EVERY: Duration = Duration::from_millis(100);
/// Longer than the test: no lease expires while it runs.
const LEASE_TTL: Duration = Duration::from_secs(600);

fn now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs [`WORKERS`] workers of `test`, this binary run again with only that test, on the file
/// `path`, each logging to `WORKER.log` in `dir`, with `var` set to `value`; waits for them all
/// and fails if one did.
fn run_workers(test: &str, dir: &Path, path: &Path, var: &str, value: u128) {
    let children: Vec<_> = (0..WORKERS)
        .map(|worker| {
            Command::new(env::current_exe().unwrap())
                .args(["--exact", test, "--nocapture"])
                .env(WORKER, worker.to_string())
                .env(FILE, path)
                .env(LOG, dir.join(format!("{worker}.log")))
                .env(var, value.to_string())
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
}

/// Worker `worker`'s log.
fn read_log(dir: &Path, worker: usize) -> String {
    fs::read_to_string(dir.join(format!("{worker}.log"))).unwrap()
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
    run_workers(
        "many_processes_share_one_file",
        dir.path(),
        &path,
        UNTIL,
        until,
    );
    check(dir.path(), &path);
}

/// Each round, every worker asks for the lease on the round's key at the same instant, under a
/// token of its own, and none releases it: exactly one gets it, and the file holds its token.
#[test]
fn processes_racing_for_a_lease_get_it_once() {
    if let Ok(worker) = env::var(WORKER) {
        return race_for_leases(worker.parse().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    // The workers create the file, all at once, before the first round.
    let path = dir.path().join("leases.sqlite3");
    let start = now() + Duration::from_secs(2).as_nanos();
    run_workers(
        "processes_racing_for_a_lease_get_it_once",
        dir.path(),
        &path,
        START,
        start,
    );

    // (round, token) of every acquired lease, and the outcomes per round.
    let mut acquired: HashMap<u64, Vec<String>> = HashMap::new();
    let mut answers: HashMap<u64, usize> = HashMap::new();
    for worker in 0..WORKERS {
        let log = read_log(dir.path(), worker);
        let mut rounds = Vec::new();
        for line in log.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let [round, token, outcome] = fields[..] else {
                panic!("worker {worker} logged {line:?}");
            };
            let round: u64 = round.parse().unwrap();
            assert_eq!(token, format!("{worker}-{round}"), "worker {worker}");
            match outcome {
                "Acquired" => acquired.entry(round).or_default().push(token.to_owned()),
                "Held" => {}
                other => panic!("worker {worker}, round {round}: {other}"),
            }
            *answers.entry(round).or_default() += 1;
            rounds.push(round);
        }
        assert_eq!(
            rounds,
            (0..ROUNDS).collect::<Vec<_>>(),
            "worker {worker} logged every round"
        );
    }
    let held: HashMap<String, String> = Connection::open(&path)
        .unwrap()
        .prepare("SELECT key, token FROM kvcache_leases WHERE container = ?1")
        .unwrap()
        .query_map([CONTAINER], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    for round in 0..ROUNDS {
        assert_eq!(answers[&round], WORKERS, "round {round}");
        let winners = acquired.get(&round).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one worker acquired the lease, not {winners:?}"
        );
        assert_eq!(
            held.get(&round_key(round)),
            Some(&winners[0]),
            "round {round}: the file holds the winner's token"
        );
    }
    assert_eq!(held.len(), ROUNDS as usize, "one lease per round, no other");
}

fn round_key(round: u64) -> String {
    format!("round-{round}")
}

fn race_for_leases(worker: u64) {
    let path = env::var(FILE).unwrap();
    let start: u128 = env::var(START).unwrap().parse().unwrap();
    let mut log = BufWriter::new(File::create(env::var(LOG).unwrap()).unwrap());
    let fail = |doing: &str, error: kvcache_core::Error| -> ! {
        panic!(
            "worker {worker}: {doing}: {error}: {:?}",
            std::error::Error::source(&error)
        )
    };
    let backend = FileBackend::open(&path).unwrap_or_else(|e| fail("opening", e));
    let shared = common::store(&backend, CONTAINER);
    for round in 0..ROUNDS {
        let at = start + u128::from(round) * ROUND_EVERY.as_nanos();
        let wait = at.saturating_sub(now());
        std::thread::sleep(Duration::from_nanos(u64::try_from(wait).unwrap()));
        let token = format!("{worker}-{round}");
        let outcome: Lease = shared
            .lease(&round_key(round), &token, LEASE_TTL)
            .unwrap_or_else(|e| fail("leasing", e));
        writeln!(log, "{round} {token} {outcome:?}").unwrap();
    }
    log.flush().unwrap();
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
        let log = read_log(dir, worker);
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
