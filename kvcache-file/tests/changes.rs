//! The file deleted, replaced or truncated while two processes use it: this test binary runs
//! itself again as the workers.
//!
//! The parent writes marker entries (`before`) and closes the file; two workers, four threads
//! each, read the markers and write entries of their own. When both are under way, the parent
//! changes the file. Each worker must notice (a read that is no longer `before`, or an error),
//! and from then on never read `before` again: not on another thread, not on another connection.
//! A file deleted or replaced is followed without an error; a truncated one gives errors that
//! name the path and say it is damaged, and is replaced by a new file.

use std::env;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kvcache_file::FileBackend;
use rusqlite::Connection;

mod common;

/// Set in a worker's environment: the test it works for.
const WORKER: &str = "KVCACHE_FILE_CHANGE_WORKER";
/// The worker's directory: the file, the logs, and the `stop` file.
const DIR: &str = "KVCACHE_FILE_CHANGE_DIR";

const WORKERS: usize = 2;
const THREADS: usize = 4;
const MARKERS: usize = 8;
/// How long the workers run on after the change.
const AFTER: Duration = Duration::from_secs(3);
/// How soon after the change every read must see it, on a busy machine.
const NOTICED_WITHIN: Duration = Duration::from_secs(2);

const FILE: &str = "kv.sqlite3";

fn now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn marker(i: usize) -> String {
    format!("marker-{i}")
}

/// Stores `value` under every marker of a file at `path`, with filler entries after them so
/// that the file spans many pages, and closes it: its -wal is checkpointed and removed.
fn write_markers(path: &Path, value: &str) {
    let backend = FileBackend::open(path).unwrap();
    let markers = common::store(&backend, "markers");
    for i in 0..MARKERS {
        markers.store(&marker(i), value.as_bytes(), None).unwrap();
    }
    let filler = common::store(&backend, "filler");
    for i in 0..200 {
        filler.store(&format!("f{i}"), &[b'f'; 2000], None).unwrap();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Delete,
    Replace,
    Truncate,
}

#[test]
fn a_file_deleted_while_two_processes_use_it_is_followed_by_both() {
    run(
        Change::Delete,
        "a_file_deleted_while_two_processes_use_it_is_followed_by_both",
    );
}

#[test]
fn a_file_replaced_while_two_processes_use_it_is_followed_by_both() {
    run(
        Change::Replace,
        "a_file_replaced_while_two_processes_use_it_is_followed_by_both",
    );
}

#[test]
fn a_file_truncated_while_two_processes_use_it_is_reported_damaged_and_replaced() {
    run(
        Change::Truncate,
        "a_file_truncated_while_two_processes_use_it_is_reported_damaged_and_replaced",
    );
}

fn run(change: Change, test: &str) {
    if env::var(WORKER).is_ok() {
        return work();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE);
    write_markers(&path, "before");
    let children: Vec<Child> = (0..WORKERS)
        .map(|worker| {
            let own = dir.path().join(worker.to_string());
            fs::create_dir(&own).unwrap();
            Command::new(env::current_exe().unwrap())
                .args(["--exact", test, "--nocapture"])
                .env(WORKER, worker.to_string())
                .env(DIR, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Both workers read every marker, then run for a while on the file before it changes.
    let start = Instant::now();
    while (0..WORKERS).any(|worker| !dir.path().join(format!("ready-{worker}")).exists()) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "workers not ready"
        );
        thread::sleep(Duration::from_millis(5));
    }
    thread::sleep(Duration::from_millis(100));
    let changed = apply(change, dir.path(), &path);
    thread::sleep(AFTER);
    fs::write(dir.path().join("stop"), b"").unwrap();
    for (worker, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "worker {worker} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for worker in 0..WORKERS {
        check(change, worker, dir.path(), &path, changed);
    }
    check_file(change, &path);
}

/// Changes the file as `change` says; returns when, in Unix nanoseconds.
fn apply(change: Change, dir: &Path, path: &Path) -> u128 {
    let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", path.display()));
    match change {
        Change::Delete => {
            for suffix in ["", "-wal", "-shm"] {
                fs::remove_file(with(suffix)).unwrap();
            }
        }
        Change::Replace => {
            // A file made elsewhere and moved over the path, as `mv` does: the old file's
            // -wal and -shm stay beside it.
            let other = dir.join("other.sqlite3");
            write_markers(&other, "replacement");
            fs::rename(&other, path).unwrap();
        }
        Change::Truncate => {
            // What the workers have written goes to the file first, for the cut to lose it.
            let connection = Connection::open(path).unwrap();
            connection
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                .unwrap();
            drop(connection);
            let file = fs::OpenOptions::new().write(true).open(path).unwrap();
            let size = file.metadata().unwrap().len();
            file.set_len(size / 2 + 100).unwrap();
        }
    }
    now()
}

/// One line of a worker's log.
#[derive(Debug)]
struct Op {
    thread: usize,
    kind: String,
    value: String,
    start: u128,
    end: u128,
}

fn check(change: Change, worker: usize, dir: &Path, path: &Path, changed: u128) {
    let mut ops = Vec::new();
    for thread in 0..THREADS {
        let log = fs::read_to_string(dir.join(format!("{worker}/{thread}.log"))).unwrap();
        for line in log.lines() {
            let mut fields = line.splitn(4, ' ');
            let mut field = || fields.next().unwrap().to_owned();
            let (kind, start, end, value) = (field(), field(), field(), field());
            ops.push(Op {
                thread,
                kind,
                value,
                start: start.parse().unwrap(),
                end: end.parse().unwrap(),
            });
        }
    }
    let reads = |op: &&Op| op.kind == "get";
    let errors: Vec<&Op> = ops.iter().filter(|op| op.kind == "error").collect();
    let before = ops.iter().filter(reads).filter(|op| op.end < changed);
    assert!(
        before.clone().count() >= THREADS * WARM_UP / 2,
        "worker {worker} read the markers {} times before the change",
        before.clone().count()
    );
    for read in before {
        assert_eq!(read.value, "before", "worker {worker}: {read:?}");
    }
    // The first sign of the change: a read that is no longer `before`, or an error.
    let noticed = ops
        .iter()
        .filter(|op| op.start >= changed)
        .filter(|op| op.kind == "error" || (op.kind == "get" && op.value != "before"))
        .map(|op| op.end)
        .min()
        .unwrap_or_else(|| panic!("worker {worker} never noticed the change: {:?}", ops.last()));
    let late = changed + NOTICED_WITHIN.as_nanos();
    let mut after = 0;
    for read in ops.iter().filter(reads).filter(|op| op.start > noticed) {
        after += 1;
        assert_ne!(
            read.value,
            "before",
            "worker {worker} read the old file after it noticed the change ({} ms after it): {read:?}",
            (read.start - noticed) / 1_000_000
        );
    }
    for read in ops.iter().filter(reads).filter(|op| op.start > late) {
        assert_ne!(
            read.value, "before",
            "worker {worker}, long after the change: {read:?}"
        );
        let expected = if change == Change::Replace {
            "replacement"
        } else {
            "-"
        };
        assert_eq!(read.value, expected, "worker {worker}: {read:?}");
    }
    assert!(after > 0, "worker {worker} never read after the change");
    eprintln!(
        "{change:?}: worker {worker} noticed after {} ms; {} operations, {after} reads after, {} errors",
        (noticed - changed) / 1_000_000,
        ops.len(),
        errors.len()
    );
    match change {
        Change::Delete | Change::Replace => {
            assert!(errors.is_empty(), "worker {worker}: {errors:#?}");
        }
        Change::Truncate => {
            for error in errors {
                assert!(
                    error.value.contains(&path.display().to_string()),
                    "the error names the path: {error:?}"
                );
                assert!(
                    error
                        .value
                        .contains("is not an SQLite cache file or is damaged"),
                    "the error says the file is damaged: {error:?}"
                );
                assert!(
                    !error.value.contains("busy timeout"),
                    "not a busy error: {error:?}"
                );
                assert!(error.thread < THREADS);
            }
        }
    }
}

/// The file at the path after the workers ended: whole, and the one the change left.
fn check_file(change: Change, path: &Path) {
    let connection = Connection::open(path).unwrap();
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    drop(connection);
    let backend = FileBackend::open(path).unwrap();
    let markers = common::store(&backend, "markers");
    let expected = (change == Change::Replace).then_some(&b"replacement"[..]);
    for i in 0..MARKERS {
        assert_eq!(markers.retrieve(&marker(i)).unwrap().as_deref(), expected);
    }
    let aside = PathBuf::from(format!("{}.damaged", path.display()));
    assert_eq!(aside.exists(), change == Change::Truncate, "{aside:?}");
}

/// The error and its sources, as one line.
fn chain(error: &kvcache_core::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text.replace('\n', " ")
}

fn work() {
    let worker: usize = env::var(WORKER).unwrap().parse().unwrap();
    let dir = PathBuf::from(env::var(DIR).unwrap());
    let backend = Arc::new(FileBackend::open(dir.join(FILE)).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let warm = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let (backend, stop, warm) =
                (Arc::clone(&backend), Arc::clone(&stop), Arc::clone(&warm));
            let log = dir.join(format!("{worker}/{thread}.log"));
            thread::spawn(move || hammer(&backend, worker, thread, &log, &stop, &warm))
        })
        .collect();
    while warm.load(Ordering::Relaxed) < THREADS {
        thread::sleep(Duration::from_millis(1));
    }
    fs::write(dir.join(format!("ready-{worker}")), b"").unwrap();
    while !dir.join("stop").exists() {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
}

/// Operations each thread logs before its worker says it is ready.
const WARM_UP: usize = 40;

/// Reads the markers, and writes an entry of this thread's, until told to stop; counts itself
/// in `warm` after its first [`WARM_UP`] operations.
fn hammer(
    backend: &FileBackend,
    worker: usize,
    thread: usize,
    log: &Path,
    stop: &AtomicBool,
    warm: &AtomicUsize,
) {
    let markers = common::store(backend, "markers");
    let own = common::store(backend, "own");
    let mut log = BufWriter::new(fs::File::create(log).unwrap());
    // Every marker once, before the worker says it is ready.
    for i in 0..MARKERS {
        let value = markers.retrieve(&marker(i)).unwrap();
        assert_eq!(value.as_deref(), Some(&b"before"[..]));
    }
    let mut seq = 0_usize;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        if seq == WARM_UP {
            warm.fetch_add(1, Ordering::Relaxed);
        }
        let start = now();
        if seq.is_multiple_of(4) {
            let key = format!("{worker}-{thread}");
            match own.store(&key, seq.to_string().as_bytes(), None) {
                Ok(()) => writeln!(log, "set {start} {} -", now()).unwrap(),
                Err(error) => writeln!(log, "error {start} {} {}", now(), chain(&error)).unwrap(),
            }
        } else {
            match markers.retrieve(&marker(seq % MARKERS)) {
                Ok(value) => {
                    let value = value.map_or("-".to_owned(), |v| String::from_utf8(v).unwrap());
                    writeln!(log, "get {start} {} {value}", now()).unwrap();
                }
                Err(error) => writeln!(log, "error {start} {} {}", now(), chain(&error)).unwrap(),
            }
        }
    }
    log.flush().unwrap();
}
