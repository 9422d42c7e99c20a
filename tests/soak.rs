//! A bounded soak: 16 threads of mixed operations on one container per backend, then invariant
//! checks. Ignored by default; `.ci/run` runs it with
//! `cargo test --all-features --test soak -- --ignored --test-threads 1`.
//! `KVCACHE_SOAK_SECS` sets the time per backend (default 20).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kvcache::{Error, KvCache};

const THREADS: u64 = 16;
const KEYS: u64 = 64;

fn seconds() -> u64 {
    std::env::var("KVCACHE_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

fn unique(label: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("soak-{label}-{}-{nanos}", std::process::id())
}

/// Opens the cache, or reports why the soak of this backend is skipped (a failure under CI=true).
fn open(label: &str, pairs: Vec<(String, String)>) -> Option<KvCache> {
    match kvcache::init(pairs) {
        Ok(cache) => Some(cache),
        Err(error @ Error::Backend { .. }) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: the {label} soak: its service cannot be reached: {error}");
            None
        }
        Err(error) => panic!("the {label} soak cannot open its backend: {error}"),
    }
}

#[derive(Default)]
struct Tally {
    gets: AtomicU64,
    peeks: AtomicU64,
    sets: AtomicU64,
    removes: AtomicU64,
    batches: AtomicU64,
    batch_keys: AtomicU64,
}

fn soak(label: &str, backend: Vec<(&str, String)>) {
    let container = unique(label);
    let mut pairs: Vec<(String, String)> = backend
        .into_iter()
        .map(|(k, v)| (format!("backend.b{k}"), v))
        .collect();
    pairs.push((format!("container.{container}.backend"), "b".to_owned()));
    pairs.push((format!("container.{container}.expire"), "2s".to_owned()));
    let Some(cache) = open(label, pairs) else {
        return;
    };

    let generated = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&generated);
    cache
        .register_generator(&container, move |key: &str| {
            counter.fetch_add(1, Ordering::Relaxed);
            format!("generated {key}")
        })
        .unwrap();
    let c = cache.container::<String>(&container).unwrap();
    // Every value any thread wrote, by key.
    let written: Mutex<HashMap<String, HashSet<String>>> = Mutex::default();
    let tally = Tally::default();
    let deadline = Instant::now() + Duration::from_secs(seconds());

    thread::scope(|scope| {
        for t in 0..THREADS {
            let (c, written, tally) = (&c, &written, &tally);
            scope.spawn(move || {
                let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ (t + 1);
                let mut seq = 0;
                while Instant::now() < deadline {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let key = format!("key {}", state % KEYS);
                    match (state >> 8) % 10 {
                        0..=3 => {
                            let value = c.get(&key).unwrap_or_else(|e| panic!("get {key}: {e}"));
                            assert!(
                                value == format!("generated {key}")
                                    || value.ends_with(&format!("/{key}")),
                                "{value}"
                            );
                            tally.gets.fetch_add(1, Ordering::Relaxed);
                        }
                        4..=5 => {
                            c.peek(&key).unwrap_or_else(|e| panic!("peek {key}: {e}"));
                            tally.peeks.fetch_add(1, Ordering::Relaxed);
                        }
                        6..=7 => {
                            seq += 1;
                            let value = format!("thread {t} write {seq}/{key}");
                            written
                                .lock()
                                .unwrap()
                                .entry(key.clone())
                                .or_default()
                                .insert(value.clone());
                            c.set(&key, &value)
                                .unwrap_or_else(|e| panic!("set {key}: {e}"));
                            tally.sets.fetch_add(1, Ordering::Relaxed);
                        }
                        8 => {
                            c.remove(&key)
                                .unwrap_or_else(|e| panic!("remove {key}: {e}"));
                            tally.removes.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            let keys: Vec<String> = (0..4)
                                .map(|i| format!("key {}", (state + i) % KEYS))
                                .collect();
                            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                            c.get_many(&keys)
                                .unwrap_or_else(|e| panic!("get_many: {e}"));
                            tally.batches.fetch_add(1, Ordering::Relaxed);
                            tally
                                .batch_keys
                                .fetch_add(keys.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });

    // Every key holds nothing, its generated value, or a value some thread wrote.
    let written = written.into_inner().unwrap();
    for k in 0..KEYS {
        let key = format!("key {k}");
        if let Some(value) = c.peek(&key).unwrap() {
            let ok = value == format!("generated {key}")
                || written.get(&key).is_some_and(|w| w.contains(&value));
            assert!(
                ok,
                "{label}: key {key:?} holds {value:?}, which no thread wrote"
            );
        }
    }
    // The counters add up.
    let stats = c.stats();
    let lookups = tally.gets.load(Ordering::Relaxed)
        + tally.peeks.load(Ordering::Relaxed)
        + tally.batch_keys.load(Ordering::Relaxed)
        + KEYS;
    assert_eq!(
        stats.hits + stats.misses,
        lookups,
        "{label}: hits + misses = look-ups"
    );
    assert_eq!(
        stats.generations,
        generated.load(Ordering::Relaxed),
        "{label}: generations = generator calls"
    );
    assert!(
        stats.generations + stats.waits <= stats.misses,
        "{label}: each miss generates or waits at most once"
    );
    assert_eq!(
        (
            stats.backend_errors,
            stats.generator_errors,
            stats.undecodable
        ),
        (0, 0, 0),
        "{label}"
    );
    println!(
        "soak {label}: {} s, {THREADS} threads: {} gets, {} peeks, {} sets, {} removes, {} batches; {} hits, {} misses, {} generations, {} waits",
        seconds(),
        tally.gets.load(Ordering::Relaxed),
        tally.peeks.load(Ordering::Relaxed),
        tally.sets.load(Ordering::Relaxed),
        tally.removes.load(Ordering::Relaxed),
        tally.batches.load(Ordering::Relaxed),
        stats.hits,
        stats.misses,
        stats.generations,
        stats.waits,
    );
    c.clear().unwrap();
}

#[cfg(any(feature = "sql-postgres", feature = "sql-mysql", feature = "redis"))]
fn env_url(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

#[cfg(feature = "variable")]
#[test]
#[ignore = "a soak of about 20 s; run by .ci/run"]
fn soak_variable() {
    soak("variable", vec![("", "variable".to_owned())]);
}

#[cfg(feature = "file")]
#[test]
#[ignore = "a soak of about 20 s; run by .ci/run"]
fn soak_file() {
    let dir = std::env::temp_dir().join(unique("file"));
    let path = dir.join("soak.sqlite3").display().to_string();
    soak("file", vec![("", "file".to_owned()), (".path", path)]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "sql-sqlite")]
#[test]
#[ignore = "a soak of about 20 s; run by .ci/run"]
fn soak_sql_sqlite() {
    let dir = std::env::temp_dir().join(unique("sqlite"));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("soak.sqlite3").display());
    soak("sql-sqlite", vec![("", "sql".to_owned()), (".url", url)]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(feature = "sql-postgres")]
#[test]
#[ignore = "a soak of about 20 s; run by .ci/run"]
fn soak_sql_postgres() {
    let url = env_url(
        "KVCACHE_TEST_POSTGRES_URL",
        "postgres://postgres@127.0.0.1:5432/test",
    );
    soak(
        "sql-postgres",
        vec![
            ("", "sql".to_owned()),
            (".url", url),
            (".table", "kvcache_soak".to_owned()),
        ],
    );
}

#[cfg(feature = "sql-mysql")]
#[test]
#[ignore = "a soak of about 20 s; run by .ci/run"]
fn soak_sql_mysql() {
    let url = env_url("KVCACHE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test");
    soak(
        "sql-mysql",
        vec![
            ("", "sql".to_owned()),
            (".url", url),
            (".table", "kvcache_soak".to_owned()),
        ],
    );
}

#[cfg(feature = "redis")]
#[test]
#[ignore = "a soak of about 20 s; run by .ci/run"]
fn soak_redis() {
    let url = env_url("KVCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379");
    soak(
        "redis",
        vec![
            ("", "redis".to_owned()),
            (".url", url),
            (".prefix", unique("redis")),
        ],
    );
}

#[cfg(feature = "redis")]
#[test]
#[ignore = "a soak of about 20 s; run by .ci/run"]
fn soak_redis_cluster() {
    let url = env_url(
        "KVCACHE_TEST_REDIS_CLUSTER_URL",
        "redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002",
    );
    soak(
        "redis-cluster",
        vec![
            ("", "redis".to_owned()),
            (".url", url),
            (".prefix", unique("redis-cluster")),
        ],
    );
}
