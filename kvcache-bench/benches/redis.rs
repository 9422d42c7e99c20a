//! The Redis backend against the raw `redis` crate, in one run, on a 32-byte `String` and a
//! 1 KiB struct.
//!
//! The peer is what a careful hand-written cache does: `GET`, `SET`, `UNLINK` and `MGET` on keys
//! it formats per call, values encoded by hand (a `String` as its UTF-8 bytes, the struct in
//! bincode's layout, written out, so both sides send as many bytes) where kvcache runs its codec
//! (a type header, then bincode through serde). kvcache holds one multiplexed connection (a
//! `ConnectionManager`) on its own runtime, which its synchronous path drives each call on.
//!
//! - The synchronous groups (`redis/hit`, `/miss`, `/set`, `/batch16`): kvcache's `Container`
//!   against one plain blocking `redis::Connection` kept open.
//! - The async groups (`redis/async-hit`, `redis/async-64-tasks`): kvcache's `AsyncContainer`
//!   against one `redis::aio::MultiplexedConnection` that the peer's tasks share, both awaited
//!   in tasks of one multi-thread runtime of the bench's own (a worker per core); 64 tasks share
//!   the hits of the second group, which also times kvcache's synchronous path on 64 threads.
//! - `redis/hit-turns` and `redis/async-turns`: the string32 hit, one task's async hit and the
//!   64 tasks' hits again, the two sides timed in alternating rounds (`kvcache_bench::Turns`);
//!   the median ratio is printed, steadier than two estimates made seconds apart on a loopback
//!   whose round trip drifts.
//!
//! The server is `KVCACHE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); when it cannot be
//! reached the benchmark prints a notice and measures nothing (under `CI=true` it fails). Every
//! key is under a prefix of this run's own, deleted at the end.
//!
//! `cargo bench -p kvcache-bench --bench redis`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput};
use kvcache::{Container, KvCache};
use kvcache_bench::{
    Hand, KEYS, Kib, Turns, awaited, batches, concurrent, keys, kib, string32, threads,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncCommands, Commands, Connection};
use tokio::runtime::Runtime;

/// The server and this run's prefix; every key under the prefix is deleted when dropped.
struct Server {
    url: String,
    prefix: String,
}

impl Server {
    /// The server of `KVCACHE_TEST_REDIS_URL`, or `None` (with a notice) when it cannot be reached.
    fn reach() -> Option<Server> {
        let url = std::env::var("KVCACHE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let reached = redis::Client::open(url.as_str()).and_then(|client| {
            client
                .get_connection_with_timeout(Duration::from_secs(2))?
                .ping::<String>()
        });
        if let Err(error) = reached {
            let why = format!("cannot reach {url}: {error}");
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis benchmarks under CI=true: {why}"
            );
            println!("redis benchmarks skipped: {why}");
            return None;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let prefix = format!("kvcache-bench-{}-{nanos}", std::process::id());
        Some(Server { url, prefix })
    }

    fn connection(&self) -> Connection {
        redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// A cache whose containers `strings` and `structs` are on this server, under `prefix`.
    fn cache(&self, prefix: &str) -> KvCache {
        let prefix = format!("{}:{prefix}", self.prefix);
        kvcache::init([
            ("backend.shared", "redis"),
            ("backend.shared.url", self.url.as_str()),
            ("backend.shared.prefix", prefix.as_str()),
            ("container.strings.backend", "shared"),
            ("container.structs.backend", "shared"),
        ])
        .unwrap()
    }

    /// The hand-written peer, under `prefix`.
    fn raw(&self, prefix: &str) -> Raw {
        Raw {
            connection: self.connection(),
            prefix: format!("{}:{prefix}", self.prefix),
        }
    }

    /// The hand-written async peer, under `prefix`: one multiplexed connection, whose driver task
    /// runs on `runtime`.
    fn async_raw(&self, runtime: &Runtime, prefix: &str) -> AsyncRaw {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        AsyncRaw {
            connection: runtime
                .block_on(client.get_multiplexed_async_connection())
                .unwrap(),
            prefix: format!("{}:{prefix}", self.prefix).into(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let mut connection = self.connection();
        let found: Vec<String> = connection
            .scan_match(format!("{}:*", self.prefix))
            .unwrap()
            .collect::<redis::RedisResult<_>>()
            .unwrap();
        for chunk in found.chunks(1000) {
            connection.unlink::<_, ()>(chunk).unwrap();
        }
    }
}

fn container<V: kvcache::Value>(cache: &KvCache, name: &str) -> Container<V> {
    cache.container(name).unwrap()
}

/// The hand-written peer: one open connection, one command per call.
struct Raw {
    connection: Connection,
    prefix: String,
}

/// The Redis key the peers store `key` of `container` under.
fn raw_key(prefix: &str, container: &str, key: &str) -> String {
    format!("{prefix}:{container}:{key}")
}

impl Raw {
    fn key(&self, container: &str, key: &str) -> String {
        raw_key(&self.prefix, container, key)
    }

    fn get<V: Hand>(&mut self, container: &str, key: &str) -> Option<V> {
        let key = self.key(container, key);
        let bytes: Option<Vec<u8>> = self.connection.get(key).unwrap();
        bytes.as_deref().and_then(V::decode)
    }

    fn set<V: Hand>(&mut self, container: &str, key: &str, value: &V) {
        let key = self.key(container, key);
        self.connection
            .set::<_, _, ()>(key, value.encode())
            .unwrap();
    }

    fn remove(&mut self, container: &str, key: &str) {
        let key = self.key(container, key);
        self.connection.unlink::<_, ()>(key).unwrap();
    }

    /// The value of `key`, or `generate`'s, which is then stored.
    fn get_or_generate<V: Hand>(
        &mut self,
        container: &str,
        key: &str,
        generate: impl FnOnce(&str) -> V,
    ) -> V {
        self.get(container, key).unwrap_or_else(|| {
            let value = generate(key);
            self.set(container, key, &value);
            value
        })
    }

    /// The values of `keys`, in order, with one `MGET`.
    fn get_many<V: Hand>(&mut self, container: &str, keys: &[&str]) -> Vec<Option<V>> {
        let keys: Vec<String> = keys.iter().map(|key| self.key(container, key)).collect();
        let found: Vec<Option<Vec<u8>>> = self.connection.mget(keys).unwrap();
        found
            .into_iter()
            .map(|bytes| bytes.as_deref().and_then(V::decode))
            .collect()
    }
}

/// The hand-written async peer: one multiplexed connection, which every task clones (as kvcache's
/// tasks share its one `ConnectionManager`), one command per call.
#[derive(Clone)]
struct AsyncRaw {
    connection: MultiplexedConnection,
    prefix: Arc<str>,
}

impl AsyncRaw {
    async fn get<V: Hand>(&mut self, container: &str, key: &str) -> Option<V> {
        let key = raw_key(&self.prefix, container, key);
        let bytes: Option<Vec<u8>> = self.connection.get(key).await.unwrap();
        bytes.as_deref().and_then(V::decode)
    }
}

fn hits(c: &mut Criterion, server: &Server) {
    let keys = keys();
    let mut group = c.benchmark_group("redis/hit");
    let cache = server.cache("hit");
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let mut raw = server.raw("hit-raw");
    for (i, key) in keys.iter().enumerate() {
        strings.set(key, &string32(key)).unwrap();
        structs.set(key, &kib(i as u64)).unwrap();
        raw.set("strings", key, &string32(key));
        raw.set("structs", key, &kib(i as u64));
    }
    assert_eq!(structs.get("key-7").unwrap(), kib(7));
    assert_eq!(raw.get::<Kib>("structs", "key-7"), Some(kib(7)));

    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        keys[i].as_str()
    };
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| strings.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("redis", "string32"), |b| {
        b.iter(|| raw.get::<String>("strings", black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("kvcache", "struct1k"), |b| {
        b.iter(|| structs.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("redis", "struct1k"), |b| {
        b.iter(|| raw.get::<Kib>("structs", black_box(next())).unwrap())
    });
    group.finish();

    // The string32 hit again, the sides in turns (see `Turns`): the ratio is printed.
    let mut group = c.benchmark_group("redis/hit-turns");
    group.sample_size(20);
    let mut turns = Turns::default();
    let (mut kvcache_key, mut raw_key) = (0, 0);
    group.bench_function(BenchmarkId::new("kvcache-vs-redis", "string32"), |b| {
        b.iter_custom(|iters| {
            let kvcache = |n| {
                let start = Instant::now();
                for _ in 0..n {
                    kvcache_key = (kvcache_key + 1) % KEYS;
                    black_box(strings.get(black_box(&keys[kvcache_key])).unwrap());
                }
                start.elapsed()
            };
            let peer = |n| {
                let start = Instant::now();
                for _ in 0..n {
                    raw_key = (raw_key + 1) % KEYS;
                    let key = black_box(&keys[raw_key]);
                    black_box(raw.get::<String>("strings", key).unwrap());
                }
                start.elapsed()
            };
            turns.take(iters, 200, kvcache, peer)
        })
    });
    group.finish();
    println!(
        "redis sync turns, one hit, kvcache ÷ raw: {}",
        turns.summary()
    );
}

/// A miss: the generator runs and its value is stored. Each iteration removes the key first.
fn misses(c: &mut Criterion, server: &Server) {
    let mut group = c.benchmark_group("redis/miss");
    let cache = server.cache("miss");
    cache.register_generator("strings", string32).unwrap();
    cache
        .register_generator("structs", |key: &str| kib(key.len() as u64))
        .unwrap();
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let mut raw = server.raw("miss-raw");
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| {
            strings.remove("k").unwrap();
            strings.get(black_box("k")).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("redis", "string32"), |b| {
        b.iter(|| {
            raw.remove("strings", "k");
            raw.get_or_generate("strings", black_box("k"), string32)
        })
    });
    group.bench_function(BenchmarkId::new("kvcache", "struct1k"), |b| {
        b.iter(|| {
            structs.remove("k").unwrap();
            structs.get(black_box("k")).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("redis", "struct1k"), |b| {
        b.iter(|| {
            raw.remove("structs", "k");
            raw.get_or_generate("structs", black_box("k"), |key| kib(key.len() as u64))
        })
    });
    group.finish();
}

fn sets(c: &mut Criterion, server: &Server) {
    let keys = keys();
    let mut group = c.benchmark_group("redis/set");
    let cache = server.cache("set");
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let mut raw = server.raw("set-raw");
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        (i, keys[i].as_str())
    };
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| {
            let (_, key) = next();
            strings.set(key, &string32(key)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("redis", "string32"), |b| {
        b.iter(|| {
            let (_, key) = next();
            raw.set("strings", key, &string32(key))
        })
    });
    group.bench_function(BenchmarkId::new("kvcache", "struct1k"), |b| {
        b.iter(|| {
            let (i, key) = next();
            structs.set(key, &kib(i as u64)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("redis", "struct1k"), |b| {
        b.iter(|| {
            let (i, key) = next();
            raw.set("structs", key, &kib(i as u64))
        })
    });
    group.finish();
}

/// 16 stored keys: kvcache's `get_many` (`MGET`) and 16 `get`s, the peer's `MGET` and 16 `GET`s.
fn batch(c: &mut Criterion, server: &Server) {
    let keys = keys();
    let batches = batches(&keys);
    let mut group = c.benchmark_group("redis/batch16");
    let cache = server.cache("batch");
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let mut raw = server.raw("batch-raw");
    for (i, key) in keys.iter().enumerate() {
        strings.set(key, &string32(key)).unwrap();
        structs.set(key, &kib(i as u64)).unwrap();
        raw.set("strings", key, &string32(key));
        raw.set("structs", key, &kib(i as u64));
    }
    assert_eq!(
        structs.get_many(&batches[1]).unwrap(),
        raw.get_many::<Kib>("structs", &batches[1])
            .into_iter()
            .map(Option::unwrap)
            .collect::<Vec<_>>()
    );

    let mut i = 0;
    let mut next = || {
        i = (i + 1) % batches.len();
        &batches[i][..]
    };
    group.bench_function(BenchmarkId::new("kvcache-get_many", "string32"), |b| {
        b.iter(|| strings.get_many(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("kvcache-16-gets", "string32"), |b| {
        b.iter(|| {
            next()
                .iter()
                .map(|key| strings.get(black_box(key)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.bench_function(BenchmarkId::new("redis-mget", "string32"), |b| {
        b.iter(|| raw.get_many::<String>("strings", black_box(next())))
    });
    group.bench_function(BenchmarkId::new("redis-16-gets", "string32"), |b| {
        b.iter(|| {
            next()
                .iter()
                .map(|key| raw.get::<String>("strings", black_box(key)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.bench_function(BenchmarkId::new("kvcache-get_many", "struct1k"), |b| {
        b.iter(|| structs.get_many(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("kvcache-16-gets", "struct1k"), |b| {
        b.iter(|| {
            next()
                .iter()
                .map(|key| structs.get(black_box(key)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.bench_function(BenchmarkId::new("redis-mget", "struct1k"), |b| {
        b.iter(|| raw.get_many::<Kib>("structs", black_box(next())))
    });
    group.bench_function(BenchmarkId::new("redis-16-gets", "struct1k"), |b| {
        b.iter(|| {
            next()
                .iter()
                .map(|key| raw.get::<Kib>("structs", black_box(key)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

/// Tasks (and threads) sharing the hits of `redis/async-64-tasks`.
const TASKS: usize = 64;

/// The async path, on one multi-thread runtime with a worker per core: one task's hit latency
/// (`redis/async-hit`), and the throughput of 64 tasks sharing hits on the 1000 stored keys
/// (`redis/async-64-tasks`), against the raw crate's multiplexed connection and against kvcache's
/// synchronous path on 64 threads.
fn async_path(c: &mut Criterion, server: &Server) {
    let keys: Arc<[String]> = keys().into();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = server.cache("async");
    let strings = cache.async_container::<String>("strings").unwrap();
    let sync_strings = strings.to_sync();
    let raw = server.async_raw(&runtime, "async-raw");
    let mut fill = server.raw("async-raw");
    for key in keys.iter() {
        sync_strings.set(key, &string32(key)).unwrap();
        fill.set("strings", key, &string32(key));
    }
    runtime.block_on(async {
        assert_eq!(strings.get("key-7").await.unwrap(), string32("key-7"));
        assert_eq!(
            raw.clone().get::<String>("strings", "key-7").await,
            Some(string32("key-7"))
        );
    });

    // One side's work, as a function of the number of calls, for criterion and for turns.
    let (mut kvcache_key, mut raw_key) = (0, 0);
    let mut one = raw.clone();
    let mut kvcache_hits = |iters| {
        awaited(&runtime, iters, async || {
            kvcache_key = (kvcache_key + 1) % KEYS;
            strings.get(black_box(&keys[kvcache_key])).await.unwrap()
        })
    };
    let mut raw_hits = |iters| {
        awaited(&runtime, iters, async || {
            raw_key = (raw_key + 1) % KEYS;
            let key = black_box(&keys[raw_key]);
            one.get::<String>("strings", key).await.unwrap()
        })
    };
    let kvcache_tasks = |iters| {
        concurrent(&runtime, TASKS, iters, |calls| {
            let (strings, keys) = (strings.clone(), Arc::clone(&keys));
            async move {
                for call in calls {
                    black_box(strings.get(&keys[call % KEYS]).await.unwrap());
                }
            }
        })
    };
    let raw_tasks = |iters| {
        concurrent(&runtime, TASKS, iters, |calls| {
            let (mut raw, keys) = (raw.clone(), Arc::clone(&keys));
            async move {
                for call in calls {
                    let key = &keys[call % KEYS];
                    black_box(raw.get::<String>("strings", key).await.unwrap());
                }
            }
        })
    };

    let mut group = c.benchmark_group("redis/async-hit");
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter_custom(&mut kvcache_hits)
    });
    group.bench_function(BenchmarkId::new("redis", "string32"), |b| {
        b.iter_custom(&mut raw_hits)
    });
    group.finish();

    let mut group = c.benchmark_group(format!("redis/async-{TASKS}-tasks"));
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter_custom(kvcache_tasks)
    });
    group.bench_function(BenchmarkId::new("redis", "string32"), |b| {
        b.iter_custom(raw_tasks)
    });
    group.bench_function(
        BenchmarkId::new(format!("kvcache-sync-{TASKS}-threads"), "string32"),
        |b| {
            b.iter_custom(|iters| {
                threads(TASKS, iters, |calls| {
                    for call in calls {
                        black_box(sync_strings.get(&keys[call % KEYS]).unwrap());
                    }
                })
            })
        },
    );
    group.finish();

    // The same two comparisons with the sides in turns (see `Turns`); criterion's figure is
    // kvcache's time, the ratio is printed.
    let mut group = c.benchmark_group("redis/async-turns");
    group.sample_size(20);
    let (mut hit_turns, mut task_turns) = (Turns::default(), Turns::default());
    group.bench_function(BenchmarkId::new("kvcache-vs-redis-hit", "string32"), |b| {
        b.iter_custom(|iters| hit_turns.take(iters, 200, &mut kvcache_hits, &mut raw_hits))
    });
    group.bench_function(
        BenchmarkId::new(format!("kvcache-vs-redis-{TASKS}-tasks"), "string32"),
        |b| b.iter_custom(|iters| task_turns.take(iters, 20_000, kvcache_tasks, raw_tasks)),
    );
    group.finish();
    for (what, turns) in [
        ("one task's hit", hit_turns),
        ("64 tasks' hits", task_turns),
    ] {
        println!(
            "redis async turns, {what}, kvcache ÷ raw: {}",
            turns.summary()
        );
    }
}

fn main() {
    let Some(server) = Server::reach() else {
        return;
    };
    let mut criterion = Criterion::default().configure_from_args();
    hits(&mut criterion, &server);
    misses(&mut criterion, &server);
    sets(&mut criterion, &server);
    batch(&mut criterion, &server);
    async_path(&mut criterion, &server);
    criterion.final_summary();
}
