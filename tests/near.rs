//! The near tier: an in-memory copy of a shared backend's values in each instance, kept
//! coherent through the store's channel (Redis pub/sub, PostgreSQL LISTEN/NOTIFY) or, where it
//! has none (the file backend, MariaDB, SQLite), bounded by a short near expiry. Two `KvCache`s
//! on one store are two instances: they share the store and nothing else.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::services::{from_lines, shared_backend, to_lines};
use kvcache::{Config, Container, Error, KvCache, ManualClock};

mod common;

/// An instance: backend `b` of `backend` options with a near tier of `near` options, and
/// container `c` on it, generated as `"{key} by {name}"`.
fn instance(
    name: &'static str,
    backend: &[(String, String)],
    near: &[(&str, &str)],
    clock: Option<&ManualClock>,
) -> (KvCache, Container<String>) {
    let mut pairs = backend.to_vec();
    for (option, value) in near {
        pairs.push((format!("backend.b.{option}"), (*value).to_owned()));
    }
    pairs.push(("container.c.backend".into(), "b".into()));
    pairs.push(("container.c.expire".into(), "1h".into()));
    let mut builder = KvCache::builder(Config::from_pairs(pairs).unwrap());
    if let Some(clock) = clock {
        builder = builder.clock(Arc::new(clock.clone()));
    }
    let cache = builder.build().unwrap();
    cache
        .register_generator("c", move |key: &str| format!("{key} by {name}"))
        .unwrap();
    let container = cache.container("c").unwrap();
    (cache, container)
}

fn file_backend(path: &str) -> Vec<(String, String)> {
    vec![
        ("backend.b".into(), "file".into()),
        ("backend.b.path".into(), path.into()),
    ]
}

#[test]
fn near_hits_come_from_memory_and_a_store_without_a_channel_bounds_them_by_near_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3").display().to_string();
    let clock = ManualClock::new(1_000_000_000);
    let near = [("near_max_entries", "1000"), ("near_expire", "2s")];
    let (_a_cache, a) = instance("a", &file_backend(&path), &near, Some(&clock));
    let (_b_cache, b) = instance("b", &file_backend(&path), &near, Some(&clock));
    assert_eq!(b.get("k").unwrap(), "k by b");
    assert_eq!(b.get("k").unwrap(), "k by b");
    assert_eq!(b.stats().near_hits, 1, "the second get is a near hit");
    a.set("k", &"k set by a".to_owned()).unwrap();
    assert_eq!(
        a.get("k").unwrap(),
        "k set by a",
        "the writer's own near copy is its new value"
    );
    assert_eq!(
        b.get("k").unwrap(),
        "k by b",
        "within near_expire, b's copy stands"
    );
    clock.advance(Duration::from_millis(2_100));
    assert_eq!(
        b.get("k").unwrap(),
        "k set by a",
        "past near_expire, b reads the store"
    );
    // A removal on the instance itself is seen at once.
    b.remove("k").unwrap();
    assert_eq!(b.peek("k").unwrap(), None);
}

#[test]
fn a_near_copy_never_outlives_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3").display().to_string();
    let clock = ManualClock::new(1_000_000_000);
    let mut backend = file_backend(&path);
    backend.push(("container.short.backend".into(), "b".into()));
    backend.push(("container.short.expire".into(), "500ms".into()));
    let (cache, _) = instance("a", &backend, &[("near_expire", "1h")], Some(&clock));
    cache
        .register_generator("short", |key: &str| format!("{key} short"))
        .unwrap();
    let short = cache.container::<String>("short").unwrap();
    short.get("k").unwrap();
    assert!(short.peek("k").unwrap().is_some());
    clock.advance(Duration::from_millis(600));
    assert_eq!(
        short.peek("k").unwrap(),
        None,
        "expired in the store, and near"
    );
}

#[test]
fn a_near_tier_bounded_in_bytes_stays_within_its_bound_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3").display().to_string();
    let (_cache, c) = instance(
        "a",
        &file_backend(&path),
        &[("near_max_bytes", "64KiB")],
        None,
    );
    let value = "x".repeat(1024);
    let keys: Vec<String> = (0..500).map(|k| format!("k{k}")).collect();
    for key in &keys {
        c.set(key, &value).unwrap();
    }
    for _ in 0..3 {
        let before = c.stats().near_hits;
        for key in &keys {
            assert_eq!(c.get(key).unwrap().len(), 1024);
        }
        // 500 KiB of values read in turn through 64 KiB: at most 64 of them are near.
        let near = c.stats().near_hits - before;
        assert!(
            near <= 64,
            "{near} near hits in a round of 500 keys of 1 KiB"
        );
    }
    assert_eq!(
        c.stats().hits,
        1500,
        "every get is served, near or from the file"
    );
}

#[test]
fn near_options_are_checked() {
    let error = kvcache::init([
        ("backend.mem", "variable"),
        ("backend.mem.near_max_entries", "10"),
        ("container.c.backend", "mem"),
    ])
    .unwrap_err();
    assert!(matches!(error, Error::InvalidConfig { .. }), "{error}");
    assert!(error.to_string().contains("near_max_entries"), "{error}");
    for (option, value) in [
        ("near_max_entries", "many"),
        ("near_max_bytes", "lots"),
        ("near_expire", "soon"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3").display().to_string();
        let error = kvcache::init([
            ("backend.f", "file"),
            ("backend.f.path", path.as_str()),
            (&format!("backend.f.{option}"), value),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains(&format!("backend.f.{option}")),
            "{option}: {error}"
        );
    }
}

/// Held by every test that uses a store's channel: dropping a channel (CLIENT KILL TYPE pubsub,
/// pg_terminate_backend) cuts every subscriber's, so those tests must not overlap the others.
static CHANNELS: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn channels() -> std::sync::MutexGuard<'static, ()> {
    CHANNELS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Two instances with a near tier on a store with a channel: a write on one invalidates the
/// other's copy; the invalidation latency over `trials` writes, p50 and p99.
fn coherent(kind: &str, backend: Vec<(String, String)>, trials: usize) {
    let _channels = channels();
    let near = [("near_max_entries", "10000")];
    let (_a_cache, a) = instance("a", &backend, &near, None);
    let (_b_cache, b) = instance("b", &backend, &near, None);
    let mut latencies = Vec::with_capacity(trials);
    for trial in 0..trials {
        let key = format!("k{}", trial % 10);
        b.get(&key).unwrap();
        let new = format!("{key} #{trial}");
        let written = Instant::now();
        a.set(&key, &new).unwrap();
        loop {
            if b.get(&key).unwrap() == new {
                latencies.push(written.elapsed());
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "{kind}: b never saw a's write of {key}"
            );
            thread::sleep(Duration::from_micros(200));
        }
    }
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "{kind}: invalidation latency over {trials} writes: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        latencies.last().unwrap()
    );
    let stats = b.stats();
    assert!(
        stats.near_invalidations >= trials as u64,
        "{kind}: {stats:?}"
    );
    assert!(stats.near_hits > 0, "{kind}: {stats:?}");
    b.clear().unwrap();
}

/// Set in a child process: the backend configuration of the instance it is, as `key=value`
/// lines.
const CHILD: &str = "KVCACHE_NEAR_CHILD";

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// The reader instance, in a child process: for each trial, reads the trial's key (so its near
/// tier holds the old value), says `ready`, then reads until the parent's new value shows and
/// says when, on the wall clock both processes share.
fn reader_child() -> bool {
    let Ok(config) = std::env::var(CHILD) else {
        return false;
    };
    let backend = from_lines(&config);
    let (_cache, b) = instance("b", &backend, &[("near_max_entries", "10000")], None);
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let trial: usize = line.unwrap().trim().parse().unwrap();
        let key = format!("k{}", trial % 10);
        b.get(&key).unwrap();
        writeln!(out, "@ready").unwrap();
        out.flush().unwrap();
        let new = format!("{key} #{trial}");
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.get(&key).unwrap() != new {
            assert!(
                Instant::now() < deadline,
                "never saw {new}: {:?}",
                b.stats()
            );
            std::hint::spin_loop();
        }
        writeln!(out, "@seen {}", now_nanos()).unwrap();
        out.flush().unwrap();
    }
    true
}

/// Invalidation latency between two processes on loopback: the parent writes, a child with a
/// near tier reads; printed over `trials` writes (BENCHMARKS.md, issue #13).
fn two_processes(kind: &str, test: &str, backend: Vec<(String, String)>, trials: usize) {
    if reader_child() {
        return;
    }
    let _channels = channels();
    let (_a_cache, a) = instance("a", &backend, &[("near_max_entries", "10000")], None);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(CHILD, to_lines(&backend))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut next = |line: &mut String| {
        // The test harness prints its own text too, on the same lines: find our marks.
        loop {
            line.clear();
            assert!(from_child.read_line(line).unwrap() > 0, "the child stopped");
            if let Some(at) = line.find('@') {
                return line[at + 1..].trim().to_owned();
            }
        }
    };
    let mut latencies = Vec::with_capacity(trials);
    for trial in 0..trials {
        writeln!(to_child, "{trial}").unwrap();
        assert_eq!(next(&mut line), "ready");
        let key = format!("k{}", trial % 10);
        let written = now_nanos();
        a.set(&key, &format!("{key} #{trial}")).unwrap();
        let seen: u128 = next(&mut line)
            .strip_prefix("seen ")
            .unwrap()
            .parse()
            .unwrap();
        latencies.push(Duration::from_nanos(
            u64::try_from(seen.saturating_sub(written)).unwrap(),
        ));
    }
    drop(to_child);
    assert!(child.wait().unwrap().success());
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    eprintln!(
        "{kind}, two processes: invalidation latency over {trials} writes: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        latencies.last().unwrap()
    );
    a.clear().unwrap();
}

/// Backend `b` of `kind`, a service on loopback, on a prefix or table of its own; `None` when
/// the service is down.
fn service(kind: &str) -> Option<Vec<(String, String)>> {
    shared_backend("b", kind, Path::new("."))
}

#[test]
fn redis_two_processes() {
    let Some(backend) = service("redis") else {
        return;
    };
    two_processes("redis", "redis_two_processes", backend, 1000);
}

#[test]
fn postgres_two_processes() {
    let Some(backend) = service("postgres") else {
        return;
    };
    two_processes("postgres", "postgres_two_processes", backend, 1000);
}

#[test]
fn redis_invalidates_other_instances_near_copies() {
    let Some(backend) = service("redis") else {
        return;
    };
    coherent("redis", backend, 1000);
}

#[test]
fn postgres_invalidates_other_instances_near_copies() {
    let Some(backend) = service("postgres") else {
        return;
    };
    coherent("postgres", backend, 1000);
}

/// Drops the store's channel under two instances: the reader flushes its near tier (a lost
/// message may cost a miss, never a stale read), resubscribes, and is invalidated again.
fn dropped_channel(kind: &str, backend: Vec<(String, String)>, drop_channel: impl Fn()) {
    let _channels = channels();
    let near = [("near_max_entries", "10000")];
    let (_a_cache, a) = instance("a", &backend, &near, None);
    let (_b_cache, b) = instance("b", &backend, &near, None);
    assert_eq!(b.get("k").unwrap(), "k by b");
    drop_channel();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.stats().near_flushes == 0 {
        assert!(
            Instant::now() < deadline,
            "{kind}: no flush after the channel dropped"
        );
        thread::sleep(Duration::from_millis(5));
    }
    // Resubscribed (the second flush), a write is seen again through the channel.
    while b.stats().near_flushes < 2 {
        assert!(Instant::now() < deadline, "{kind}: never resubscribed");
        thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(b.get("k").unwrap(), "k by b", "read again from the store");
    let invalidations = b.stats().near_invalidations;
    a.set("k", &"k set by a".to_owned()).unwrap();
    while b.get("k").unwrap() != "k set by a" {
        assert!(
            Instant::now() < deadline,
            "{kind}: a's write unseen after resubscribing"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert!(b.stats().near_invalidations > invalidations, "{kind}");
    b.clear().unwrap();
}

#[test]
fn redis_a_dropped_channel_flushes_and_resubscribes() {
    let Some(backend) = service("redis") else {
        return;
    };
    dropped_channel("redis", backend, || {
        // CLIENT KILL TYPE pubsub, inline: every subscriber's connection is cut.
        let mut redis = TcpStream::connect("127.0.0.1:6379").unwrap();
        redis.write_all(b"CLIENT KILL TYPE pubsub\r\n").unwrap();
        let mut answer = String::new();
        BufReader::new(redis).read_line(&mut answer).unwrap();
        assert!(answer.starts_with(':'), "CLIENT KILL answered {answer:?}");
    });
}

#[test]
fn postgres_a_dropped_channel_flushes_and_resubscribes() {
    let Some(backend) = service("postgres") else {
        return;
    };
    let table = backend
        .iter()
        .find(|(key, _)| key == "backend.b.table")
        .map(|(_, table)| table.clone())
        .unwrap();
    dropped_channel("postgres", backend, || {
        // This table's listeners only: other tests' channels stay up.
        let sql = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'kvcache-listener' AND query = 'LISTEN \"kvcache_{table}\"'"
        );
        let status = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-qAtc",
                &sql,
            ])
            .stdout(Stdio::null())
            .status()
            .expect("psql");
        assert!(status.success());
    });
}

#[test]
fn a_toml_configuration_declares_a_near_tier_as_the_flat_one_does() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.sqlite3").display().to_string();
    let config = Config::from_toml_str(&format!(
        r#"
        [backend.b]
        kind = "file"
        path = {path:?}
        near_max_entries = 100
        near_expire = "5s"

        [container.c]
        backend = "b"
        "#
    ))
    .unwrap();
    let cache = KvCache::new(config).unwrap();
    cache
        .register_generator("c", |key: &str| key.to_uppercase())
        .unwrap();
    let c = cache.container::<String>("c").unwrap();
    assert_eq!(c.get("k").unwrap(), "K");
    assert_eq!(c.get("k").unwrap(), "K");
    assert_eq!(c.stats().near_hits, 1);
}
