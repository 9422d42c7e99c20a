//! The in-memory backend against its peers, in one run: `moka::sync::Cache` and a plain
//! `RwLock<HashMap>`, on a 32-byte `String` and a 1 KiB struct; on the async path,
//! `AsyncContainer` against `moka::future::Cache`, and 10 000 tasks missing one key.
//!
//! `cargo bench -p kvcache-bench --bench variable`

// criterion_group! makes an undocumented public function.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kvcache::{Container, KvCache};
use kvcache_bench::{KEYS, Kib, awaited, concurrent, keys, kib, string32, threads};
use tokio::runtime::{Builder, Runtime};

/// A tier bounded as its moka peers are (10,000 entries), so both keep their policy's books.
fn cache() -> KvCache {
    kvcache::init([
        ("backend.mem", "variable"),
        ("backend.mem.max_entries", "10000"),
        ("container.strings.backend", "mem"),
        ("container.structs.backend", "mem"),
    ])
    .unwrap()
}

fn container<V: kvcache::Value>(cache: &KvCache, name: &str) -> Container<V> {
    cache.container(name).unwrap()
}

fn hits(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("variable/hit");
    group.throughput(criterion::Throughput::Elements(1));

    let cache = cache();
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let moka_strings = moka::sync::Cache::new(10_000);
    let moka_structs = moka::sync::Cache::new(10_000);
    let map_strings = RwLock::new(HashMap::new());
    let map_structs = RwLock::new(HashMap::new());
    for (i, key) in keys.iter().enumerate() {
        strings.set(key, &string32(key)).unwrap();
        structs.set(key, &kib(i as u64)).unwrap();
        moka_strings.insert(key.clone(), string32(key));
        moka_structs.insert(key.clone(), kib(i as u64));
        map_strings
            .write()
            .unwrap()
            .insert(key.clone(), string32(key));
        map_structs
            .write()
            .unwrap()
            .insert(key.clone(), kib(i as u64));
    }
    moka_strings.run_pending_tasks();
    moka_structs.run_pending_tasks();

    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        keys[i].as_str()
    };
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| strings.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("moka", "string32"), |b| {
        b.iter(|| moka_strings.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("rwlock-hashmap", "string32"), |b| {
        b.iter(|| {
            map_strings
                .read()
                .unwrap()
                .get(black_box(next()))
                .cloned()
                .unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("kvcache", "struct1k"), |b| {
        b.iter(|| structs.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("moka", "struct1k"), |b| {
        b.iter(|| moka_structs.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("rwlock-hashmap", "struct1k"), |b| {
        b.iter(|| {
            map_structs
                .read()
                .unwrap()
                .get(black_box(next()))
                .cloned()
                .unwrap()
        })
    });
    group.finish();
}

fn sets(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("variable/set");
    let cache = cache();
    let strings = container::<String>(&cache, "strings");
    let moka_strings = moka::sync::Cache::new(10_000);
    let map_strings = RwLock::new(HashMap::new());
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        keys[i].as_str()
    };
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| {
            let key = next();
            strings.set(key, &string32(key)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("moka", "string32"), |b| {
        b.iter(|| {
            let key = next();
            moka_strings.insert(key.to_owned(), string32(key))
        })
    });
    group.bench_function(BenchmarkId::new("rwlock-hashmap", "string32"), |b| {
        b.iter(|| {
            let key = next();
            map_strings
                .write()
                .unwrap()
                .insert(key.to_owned(), string32(key))
        })
    });
    group.finish();
}

/// A miss: the generator runs and its value is stored. Each iteration removes the key first.
fn misses(c: &mut Criterion) {
    let mut group = c.benchmark_group("variable/miss");
    let cache = cache();
    cache.register_generator("strings", string32).unwrap();
    let strings = container::<String>(&cache, "strings");
    let moka_strings: moka::sync::Cache<String, String> = moka::sync::Cache::new(10_000);
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| {
            strings.remove("k").unwrap();
            strings.get(black_box("k")).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("moka-get_with", "string32"), |b| {
        b.iter(|| {
            moka_strings.invalidate("k");
            moka_strings.get_with("k".to_owned(), || string32("k"))
        })
    });
    group.finish();
}

/// Two threads hitting one hot key: the time for both to finish `iters` hits each.
fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("variable/contention");
    let cache = cache();
    let strings = container::<String>(&cache, "strings");
    strings.set("hot", &string32("hot")).unwrap();
    let moka_strings = moka::sync::Cache::new(10_000);
    moka_strings.insert("hot".to_owned(), string32("hot"));
    group.bench_function("kvcache/2-threads-one-key", |b| {
        b.iter_custom(|iters| two_threads(iters, || drop(black_box(strings.get("hot").unwrap()))))
    });
    group.bench_function("moka/2-threads-one-key", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || drop(black_box(moka_strings.get("hot").unwrap())))
        })
    });
    group.finish();

    // 64 threads missing one key: the generator runs exactly once per round.
    let mut group = c.benchmark_group("variable/stampede");
    group.sample_size(20);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    cache
        .register_generator("structs", move |key: &str| {
            counter.fetch_add(1, Ordering::SeqCst);
            thread::sleep(Duration::from_micros(100));
            kib(key.len() as u64)
        })
        .unwrap();
    let structs = container::<Kib>(&cache, "structs");
    let mut rounds = 0;
    group.bench_function("kvcache/64-threads-one-missing-key", |b| {
        b.iter(|| {
            structs.remove("cold").unwrap();
            rounds += 1;
            let barrier = Barrier::new(64);
            thread::scope(|s| {
                for _ in 0..64 {
                    s.spawn(|| {
                        barrier.wait();
                        black_box(structs.get("cold").unwrap());
                    });
                }
            });
        })
    });
    group.finish();
    let (calls, rounds) = (calls.load(Ordering::SeqCst), rounds);
    println!("stampede: {calls} generator calls in {rounds} rounds of 64 threads");
    assert_eq!(calls, rounds, "the generator ran more than once in a round");
}

/// Two threads mixing 90% hits on 5,000 resident keys with 10% misses on new keys, on tiers
/// bounded to 10,000 entries: a miss generates (kvcache) or inserts (moka) a 32-byte string.
fn mixed(c: &mut Criterion) {
    let mut group = c.benchmark_group("variable/mixed-90-10");
    group.throughput(criterion::Throughput::Elements(1));
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("backend.mem.max_entries", "10000"),
        ("container.c.backend", "mem"),
    ])
    .unwrap();
    cache
        .register_generator("c", |key: &str| string32(key))
        .unwrap();
    let ours = container::<String>(&cache, "c");
    let moka = moka::sync::Cache::new(10_000);
    let hot: Vec<String> = (0..5_000).map(|i| format!("hot-{i}")).collect();
    for key in &hot {
        ours.get(key).unwrap();
        moka.insert(key.clone(), string32(key));
    }
    let fresh = AtomicU64::new(0);
    let key_of = |call: usize| -> String {
        if call % 10 == 9 {
            format!("new-{}", fresh.fetch_add(1, Ordering::Relaxed))
        } else {
            hot[call * 7_919 % 5_000].clone()
        }
    };
    group.bench_function("kvcache/2-threads", |b| {
        b.iter_custom(|iters| {
            threads(2, iters, |calls| {
                calls.for_each(|call| drop(black_box(ours.get(&key_of(call)).unwrap())));
            })
        })
    });
    group.bench_function("moka/2-threads", |b| {
        b.iter_custom(|iters| {
            threads(2, iters, |calls| {
                calls.for_each(|call| {
                    let key = key_of(call);
                    if black_box(moka.get(&key)).is_none() {
                        let value = string32(&key);
                        moka.insert(key, value);
                    }
                });
            })
        })
    });
    group.finish();
}

/// The time two threads take to call `f` `iters` times each.
fn two_threads(iters: u64, f: impl Fn() + Sync) -> Duration {
    threads(2, iters * 2, |calls| calls.for_each(|_| f()))
}

/// A runtime of the bench's own: the current-thread kind, or the multi-thread one with a worker
/// per core.
fn runtime(multi_thread: bool) -> Runtime {
    let mut builder = match multi_thread {
        true => Builder::new_multi_thread(),
        false => Builder::new_current_thread(),
    };
    builder.enable_all().build().unwrap()
}

/// Async hits, awaited in a task of a current-thread runtime: `AsyncContainer::get` against
/// `moka::future::Cache::get`, both timed by [`awaited`] (one `block_on` per batch).
fn async_hits(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("variable/async-hit");
    group.throughput(criterion::Throughput::Elements(1));
    let runtime = runtime(false);
    let cache = cache();
    let strings = cache.async_container::<String>("strings").unwrap();
    let moka_strings = moka::future::Cache::new(10_000);
    runtime.block_on(async {
        for key in &keys {
            strings.set(key, &string32(key)).await.unwrap();
            moka_strings.insert(key.clone(), string32(key)).await;
        }
        moka_strings.run_pending_tasks().await;
    });

    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        keys[i].as_str()
    };
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter_custom(|iters| {
            awaited(&runtime, iters, async || {
                strings.get(black_box(next())).await.unwrap()
            })
        })
    });
    group.bench_function(BenchmarkId::new("moka", "string32"), |b| {
        b.iter_custom(|iters| {
            awaited(&runtime, iters, async || {
                moka_strings.get(black_box(next())).await.unwrap()
            })
        })
    });
    group.finish();
}

/// Tasks in a stampede, and how long the generator sleeps.
const STAMPEDE: usize = 10_000;
const GENERATOR_SLEEPS: Duration = Duration::from_millis(50);

/// What a stampede's generator reports: how often it ran, and how long after its round's first
/// `get` it started.
#[derive(Debug)]
struct Probe {
    calls: AtomicUsize,
    epoch: Instant,
    /// When the round's first `get` was made, in nanoseconds after `epoch`; 0 before it.
    first_get: AtomicU64,
    /// For each round, how long after its first `get` the generator started.
    delays: std::sync::Mutex<Vec<Duration>>,
}

impl Probe {
    fn new() -> Self {
        Probe {
            calls: AtomicUsize::new(0),
            epoch: Instant::now(),
            first_get: AtomicU64::new(0),
            delays: std::sync::Mutex::default(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// A task is about to `get`: the first of its round notes the time.
    fn getting(&self) {
        if self.first_get.load(Ordering::Relaxed) == 0 {
            let now = self.now();
            let _ = self
                .first_get
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The generator starts.
    fn generating(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let since = self
            .now()
            .saturating_sub(self.first_get.load(Ordering::Relaxed));
        self.delays
            .lock()
            .unwrap()
            .push(Duration::from_nanos(since));
    }
}

/// The value a stampede's generator makes for `key`, after sleeping 50 ms; `probe` notes it.
async fn slow_string32(key: &str, probe: &Probe) -> String {
    probe.generating();
    tokio::time::sleep(GENERATOR_SLEEPS).await;
    string32(key)
}

/// A hand-written single flight: a map from each key to a `tokio::sync::OnceCell`, whose
/// `get_or_init` runs one initializer and makes the other callers wait for it.
type OnceCells = Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<String>>>>>;

/// 10 000 tasks missing one key whose async generator sleeps 50 ms, on a current-thread runtime
/// and on a multi-thread one: kvcache's `AsyncContainer::get` against `moka::future::Cache`'s
/// `get_with` and a hand-written map of `tokio::sync::OnceCell`s. A fresh key each round; every
/// task must get the value, and the generator must run once a round (both asserted).
fn async_stampede(c: &mut Criterion) {
    let mut group = c.benchmark_group("variable/async-stampede");
    group.sample_size(10);
    let probe = Arc::new(Probe::new());
    let cache = cache();
    let generator_probe = Arc::clone(&probe);
    cache
        .register_async_generator("strings", move |key: String| {
            let probe = Arc::clone(&generator_probe);
            async move { slow_string32(&key, &probe).await }
        })
        .unwrap();
    let strings = cache.async_container::<String>("strings").unwrap();
    let moka_strings: moka::future::Cache<String, String> = moka::future::Cache::new(100_000);
    let cells = OnceCells::default();
    let mut rounds = 0_u64;
    for multi_thread in [false, true] {
        let mut stampede = Stampede {
            runtime: runtime(multi_thread),
            kind: if multi_thread {
                "multi-thread"
            } else {
                "current-thread"
            },
            group: &mut group,
            probe: &probe,
            rounds: &mut rounds,
        };
        stampede.run("kvcache", |key| {
            let strings = strings.clone();
            async move { strings.get(&key).await.unwrap() }
        });
        stampede.run("moka-get_with", |key| {
            let (moka_strings, probe) = (moka_strings.clone(), Arc::clone(&probe));
            async move {
                let init = async { slow_string32(&key, &probe).await };
                moka_strings.get_with(key.to_string(), init).await
            }
        });
        stampede.run("oncecell-map", |key| {
            let (cells, probe) = (Arc::clone(&cells), Arc::clone(&probe));
            async move {
                let cell = Arc::clone(cells.lock().unwrap().entry(key.to_string()).or_default());
                let init = || async { slow_string32(&key, &probe).await };
                cell.get_or_init(init).await.clone()
            }
        });
    }
    group.finish();
}

/// The stampedes of one runtime.
struct Stampede<'a, 'g> {
    runtime: Runtime,
    kind: &'static str,
    group: &'a mut criterion::BenchmarkGroup<'g, criterion::measurement::WallTime>,
    /// The generator's reports, of every side.
    probe: &'a Arc<Probe>,
    /// The rounds run so far, of every side: the next round's key is `cold-N`.
    rounds: &'a mut u64,
}

impl Stampede<'_, '_> {
    /// Times rounds of [`STAMPEDE`] tasks each awaiting `get(key)` of one fresh key, from the
    /// moment all have started to the end of the last (see [`concurrent`]).
    fn run<Fut>(&mut self, name: &str, get: impl Fn(Arc<str>) -> Fut)
    where
        Fut: Future<Output = String> + Send + 'static,
    {
        let (runtime, probe, rounds) = (&self.runtime, self.probe, &mut *self.rounds);
        let (mut these, mut slowest) = (0_u64, Duration::ZERO);
        probe.delays.lock().unwrap().clear();
        let id = format!("{name}/{STAMPEDE}-tasks-{}", self.kind);
        self.group.bench_function(id, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    *rounds += 1;
                    let key: Arc<str> = format!("cold-{rounds}").into();
                    let expected: Arc<str> = string32(&key).into();
                    let before = probe.calls.load(Ordering::SeqCst);
                    probe.first_get.store(0, Ordering::SeqCst);
                    let took = concurrent(runtime, STAMPEDE, STAMPEDE as u64, |_| {
                        let (value, expected) = (get(Arc::clone(&key)), Arc::clone(&expected));
                        let probe = Arc::clone(probe);
                        async move {
                            probe.getting();
                            assert_eq!(*value.await, *expected);
                        }
                    });
                    let called = probe.calls.load(Ordering::SeqCst) - before;
                    assert_eq!(called, 1, "{name}: {called} generator calls in one round");
                    (these, slowest) = (these + 1, slowest.max(took));
                    total += took;
                }
                total
            })
        });
        if these > 0 {
            let mut delays = probe.delays.lock().unwrap().clone();
            delays.sort_unstable();
            println!(
                "{name} stampede, {}: 1 generator call in each of {these} rounds of {STAMPEDE} tasks; slowest round {slowest:.1?}; the generator started a median {:.2?} after the round's first get",
                self.kind,
                delays[delays.len() / 2]
            );
        }
    }
}

criterion_group!(
    benches,
    hits,
    sets,
    misses,
    contention,
    mixed,
    async_hits,
    async_stampede
);
criterion_main!(benches);
