//! Two `KvCache` instances on one shared backend, which behave exactly as two processes do (they
//! share the store and nothing else): what the store's leases cost the caller that waits, and
//! what background refreshes cost the hits they run beside; and, in one instance, what a hit of
//! the near tier (the in-memory copy each instance keeps of a shared backend's values) costs
//! beside a hit of the in-memory backend itself.
//!
//! - `lease_wait/<backend>`, for Redis, PostgreSQL, MariaDB, the file backend and the SQL backend
//!   on SQLite: each iteration takes a fresh key. Instance A calls `get` in a thread of its own,
//!   with a generator that sleeps 50 ms; 5 ms after it started, instance B calls `get` on the same key. In
//!   `waits` (the default `lock_timeout`) A holds the store's lease, B polls the store until A's
//!   value is there and must get it (checked, as is that B's generator was never called); in
//!   `alone`, the peer, the container has `lock_timeout = 0`, so B generates the key itself with
//!   the same 50 ms generator. Both time B's whole `get`, from B's call. For `waits` the bench
//!   also prints the median and p90, over every iteration run, of the wait the lease protocol
//!   adds over the generator's own time: from A's generator returning to B's `get` returning.
//! - `refresh_hits/<backend>`, for Redis and the file backend: `get` of one hot key, stored once,
//!   in a container with `expire = 1h` and a generator that sleeps 5 ms. In `refreshing` the
//!   container also has `refresh`, 20 ms or 1 s (`refreshing/20ms`, `refreshing/1s`), so
//!   background refreshes keep running while the hits are measured (the number that ran is
//!   printed); `fresh` is the same container without `refresh`. The two sides are timed in
//!   turns (`kvcache_bench::Turns`): a round of calls on one, then as many on the other (about
//!   20 ms a side: 500 calls on Redis, 10,000 on the file backend), who goes first alternating,
//!   so that a machine whose speed drifts (a Redis loopback round trip between 15 and 80 µs)
//!   slows both alike. Both functions of an interval run such turns: `refreshing/<interval>`
//!   hands criterion the refreshing side's time, `fresh/<interval>` the fresh side's, so
//!   criterion's figures are each side's mean a call. Each call is timed on its own; over every
//!   call of both functions (warm-up included) the bench prints each side's mean, p50, p90, p99
//!   and p99.9 and their ratio (refreshing ÷ fresh), each side's p50, p99 and p99.9 apart from
//!   and beside a refresh (from 0.5 ms before its generation to 2 ms after), and the median
//!   ratio of the rounds (`Turns::summary`): a refresh in the background should leave the p99
//!   hit latency unchanged.
//! - `near_hit/<backend>`, for Redis and the file backend: `get` of a 32-byte `String`, cycling
//!   through 1,000 keys (`kvcache_bench::keys`), all stored and read once before. In `near` the
//!   container is on the shared backend with `near_max_entries = 10000` and `near_expire = 1h`
//!   (so that no copy lapses during the run: without a channel the file backend's copies would
//!   otherwise live 1 s, and be read from the file again), so every measured get is a near hit,
//!   answered from memory (checked: `stats().near_hits` grows by every call of the side, warm-up
//!   included, and nothing misses); `variable`, the peer, is the same get on a container of the
//!   plain in-memory backend (`backend.mem = variable`), bounded the same (`max_entries =
//!   10000`). The two sides are timed in turns (`kvcache_bench::Turns`) of 10,000 calls a side
//!   (1.5 to 3 ms), who goes first alternating; `near` hands criterion the near side's
//!   time, `variable` the in-memory side's, and after both the bench prints the median ratio of
//!   all their rounds (near ÷ variable; the target is at most 1.5).
//!
//! The servers are `KVCACHE_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`),
//! `KVCACHE_TEST_POSTGRES_URL` (`postgres://postgres@127.0.0.1:5432/test`) and
//! `KVCACHE_TEST_MYSQL_URL` (`mysql://root@127.0.0.1:3306/test`); a backend whose server does not
//! answer is skipped with a notice (under `CI=true` the bench fails). Each backend is configured
//! afresh for this run (a Redis prefix, SQL tables, SQLite files of its own), deleted at the end.
//!
//! `cargo bench -p kvcache-bench --bench instances` (one group: `... -- near_hit`)

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use diesel::connection::SimpleConnection;
use diesel::{Connection as _, MysqlConnection, PgConnection};
use kvcache::{Container, KvCache};
use kvcache_bench::{KEYS, Turns, keys, string32};
use redis::Commands;

/// How long A's and B's generators take in `lease_wait`.
const GENERATION: Duration = Duration::from_millis(50);
/// How long after A's generator starts B calls.
const HEAD_START: Duration = Duration::from_millis(5);
/// How long the hot key's generator takes in `refresh_hits`.
const REFRESH_GENERATION: Duration = Duration::from_millis(5);
/// The key `refresh_hits` reads.
const HOT: &str = "hot";
const TIMEOUT: Duration = Duration::from_secs(2);

/// How a backend's store is deleted at the end.
enum Cleanup {
    Redis { url: String, prefix: String },
    Postgres { url: String, table: String },
    Mysql { url: String, table: String },
    Directory(PathBuf),
}

/// One shared backend of this run: its name in the groups and its `backend.shared` options.
struct Backend {
    name: &'static str,
    options: Vec<(String, String)>,
    cleanup: Cleanup,
}

/// `var`'s URL or `default` when its server answers; under `CI=true` a server that does not is a
/// failure.
fn service_url(var: &str, default: &str) -> Option<String> {
    let url = kvcache_bench::service_url(var, default, TIMEOUT);
    assert!(
        url.is_some() || std::env::var("CI").as_deref() != Ok("true"),
        "instances benchmarks under CI=true: nothing answers for {var}"
    );
    url
}

/// A name of this run's own: a Redis prefix, a table, a directory.
fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "kvbench_instances_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000
    )
}

impl Backend {
    /// The backend `name` (`redis`, `postgres`, `mariadb`, `file`, `sql-sqlite`), or `None` when
    /// its server does not answer.
    fn new(name: &'static str) -> Option<Backend> {
        let unique = unique();
        let (options, cleanup): (Vec<(&str, String)>, Cleanup) = match name {
            "redis" => {
                let url = service_url("KVCACHE_TEST_REDIS_URL", "redis://127.0.0.1:6379")?;
                let options = vec![
                    ("", "redis".to_owned()),
                    ("url", url.clone()),
                    ("prefix", unique.clone()),
                ];
                let prefix = unique;
                (options, Cleanup::Redis { url, prefix })
            }
            "postgres" => {
                let url = service_url(
                    "KVCACHE_TEST_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1:5432/test",
                )?;
                let options = vec![
                    ("", "sql".to_owned()),
                    ("url", url.clone()),
                    ("table", unique.clone()),
                ];
                let table = unique;
                (options, Cleanup::Postgres { url, table })
            }
            "mariadb" => {
                let url =
                    service_url("KVCACHE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")?;
                let options = vec![
                    ("", "sql".to_owned()),
                    ("url", url.clone()),
                    ("table", unique.clone()),
                ];
                let table = unique;
                (options, Cleanup::Mysql { url, table })
            }
            "file" | "sql-sqlite" => {
                let dir = std::env::temp_dir().join(format!("kvcache-bench-{unique}-{name}"));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join("cache.sqlite3").display().to_string();
                let options = if name == "file" {
                    vec![("", "file".to_owned()), ("path", path)]
                } else {
                    vec![("", "sql".to_owned()), ("url", format!("sqlite://{path}"))]
                };
                (options, Cleanup::Directory(dir))
            }
            other => panic!("unknown backend {other}"),
        };
        let options = options
            .into_iter()
            .map(|(option, value)| match option {
                "" => ("backend.shared".to_owned(), value),
                option => (format!("backend.shared.{option}"), value),
            })
            .collect();
        Some(Backend {
            name,
            options,
            cleanup,
        })
    }

    /// A cache on this backend with `containers`, each given as its name and settings.
    fn cache(&self, containers: &[(&str, &[(&str, &str)])]) -> KvCache {
        let mut pairs = self.options.clone();
        for (container, settings) in containers {
            pairs.push((format!("container.{container}.backend"), "shared".into()));
            for (setting, value) in *settings {
                pairs.push((format!("container.{container}.{setting}"), (*value).into()));
            }
        }
        kvcache::init(pairs).unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Redis { url, prefix } => {
                let mut connection = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let found: Vec<String> = connection
                    .scan_match(format!("{prefix}:*"))
                    .unwrap()
                    .collect::<redis::RedisResult<_>>()
                    .unwrap();
                for chunk in found.chunks(1000) {
                    connection.unlink::<_, ()>(chunk).unwrap();
                }
            }
            Cleanup::Postgres { url, table } => PgConnection::establish(url)
                .unwrap()
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS \"{table}\", \"{table}_leases\""
                ))
                .unwrap(),
            Cleanup::Mysql { url, table } => MysqlConnection::establish(url)
                .unwrap()
                .batch_execute(&format!("DROP TABLE IF EXISTS `{table}`, `{table}_leases`"))
                .unwrap(),
            Cleanup::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// The `p` quantile (0 to 1) of `times`, sorted in place.
fn quantile(times: &mut [Duration], p: f64) -> Duration {
    times.sort_unstable();
    times[((times.len() - 1) as f64 * p).round() as usize]
}

// ---- lease_wait ----------------------------------------------------------------------------

/// One instance of `lease_wait`: its own cache on the shared backend, whose generator sleeps
/// [`GENERATION`], tags its values with the instance's name, counts its calls and records when
/// its last call returned.
struct Instance {
    cache: KvCache,
    tag: &'static str,
    calls: Arc<AtomicU64>,
    generated: Arc<Mutex<Option<Instant>>>,
}

/// The containers of `lease_wait`: `waits` with the default lock timeout, `alone` without leases.
const LEASE_CONTAINERS: &[(&str, &[(&str, &str)])] = &[
    ("waits", &[("expire", "10m")]),
    ("alone", &[("expire", "10m"), ("lock_timeout", "0")]),
];

impl Instance {
    fn new(backend: &Backend, tag: &'static str) -> Instance {
        let cache = backend.cache(LEASE_CONTAINERS);
        let calls = Arc::new(AtomicU64::new(0));
        let generated = Arc::new(Mutex::new(None));
        for (container, _) in LEASE_CONTAINERS {
            let (calls, generated) = (Arc::clone(&calls), Arc::clone(&generated));
            cache
                .register_generator(container, move |key: &str| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    thread::sleep(GENERATION);
                    let value = format!("{tag} {key}");
                    *generated.lock().unwrap_or_else(PoisonError::into_inner) =
                        Some(Instant::now());
                    value
                })
                .unwrap();
        }
        Instance {
            cache,
            tag,
            calls,
            generated,
        }
    }

    fn value(&self, key: &str) -> String {
        format!("{} {key}", self.tag)
    }

    fn container(&self, name: &str) -> Container<String> {
        self.cache.container(name).unwrap()
    }

    /// When this instance's generator last returned, taken.
    fn generated(&self) -> Option<Instant> {
        self.generated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// One race on `key`: A calls `get` in a thread, B calls it [`HEAD_START`] after A's generator
/// started (so a loaded machine that is slow to run A's thread cannot let B lead). Checks what B
/// got: A's value, B's generator not called, when `leased`; B's own value otherwise. Returns B's
/// latency (from its call) and how long after A's generator returned B's `get` returned.
fn race(
    (a, a_container): (&Instance, &Container<String>),
    (b, b_container): (&Instance, &Container<String>),
    key: &str,
    leased: bool,
) -> (Duration, Duration) {
    let b_calls = b.calls.load(Ordering::SeqCst);
    let a_calls = a.calls.load(Ordering::SeqCst);
    let started = Barrier::new(2);
    let (led, got, start, done) = thread::scope(|s| {
        let leader = s.spawn(|| {
            started.wait();
            a_container.get(key).unwrap()
        });
        started.wait();
        while a.calls.load(Ordering::SeqCst) == a_calls {
            thread::sleep(Duration::from_micros(100));
        }
        thread::sleep(HEAD_START);
        let start = Instant::now();
        let got = b_container.get(key).unwrap();
        let done = Instant::now();
        (leader.join().unwrap(), got, start, done)
    });
    let a_end = a.generated().expect("A's generator ran");
    assert_eq!(led, a.value(key), "A generated the key");
    if leased {
        assert_eq!(got, led, "B got A's value");
        assert_eq!(
            b.calls.load(Ordering::SeqCst),
            b_calls,
            "B's generator was not called"
        );
    } else {
        assert_eq!(got, b.value(key), "B generated the key itself");
    }
    let _ = b.generated();
    (done - start, done.saturating_duration_since(a_end))
}

fn lease_wait(c: &mut Criterion, backend: &Backend) {
    let (a, b) = (Instance::new(backend, "a"), Instance::new(backend, "b"));
    let mut group = c.benchmark_group(format!("lease_wait/{}", backend.name));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for (function, leased) in [("waits", true), ("alone", false)] {
        let (a_container, b_container) = (a.container(function), b.container(function));
        // The connections, schema and leases table are there before the first race.
        race(
            (&a, &a_container),
            (&b, &b_container),
            &format!("{function}-first"),
            leased,
        );
        let waits_before = b_container.stats().lease_waits;
        let (mut latencies, mut added) = (Vec::new(), Vec::new());
        let mut next = 0_u64;
        group.bench_function(function, |bencher| {
            bencher.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    next += 1;
                    let key = format!("{function}-{next}");
                    let (latency, after) =
                        race((&a, &a_container), (&b, &b_container), &key, leased);
                    latencies.push(latency);
                    added.push(after);
                    total += latency;
                }
                total
            })
        });
        let lease_waits = b_container.stats().lease_waits - waits_before;
        let n = latencies.len();
        if n == 0 {
            // Filtered out.
            continue;
        }
        let latency = quantile(&mut latencies, 0.5);
        if leased {
            assert_eq!(lease_waits, n as u64, "B waited on A's lease each time");
            eprintln!(
                "lease_wait/{}/waits: over {n} iterations, B's get p50 {latency:.2?}; the wait added \
                 (A's generator returned → B's get returned): median {:.2?}, p90 {:.2?}",
                backend.name,
                quantile(&mut added, 0.5),
                quantile(&mut added, 0.9),
            );
        } else {
            eprintln!(
                "lease_wait/{}/alone: over {n} iterations, B's get p50 {latency:.2?} (B generated itself)",
                backend.name
            );
        }
    }
    group.finish();
}

// ---- refresh_hits --------------------------------------------------------------------------

/// Calls of each side in one round of `refresh_hits`, per backend: about 20 ms a side, as long
/// as the shorter refresh interval.
fn refresh_round(backend: &Backend) -> u64 {
    match backend.name {
        "redis" => 500,
        _ => 10_000,
    }
}

/// The refresh intervals of `refresh_hits`, each with its container's name and how long
/// criterion measures each of its two functions (the other side's turns add as much again).
const REFRESH_INTERVALS: &[(&str, &str, Duration)] = &[
    ("20ms", "refreshing_20ms", Duration::from_secs(2)),
    ("1s", "refreshing_1s", Duration::from_secs(4)),
];

/// How long before a refresh's generation starts (its lease) and after it ends (the store, the
/// lease's release) a hit counts as beside the refresh.
const REFRESH_LEAD: Duration = Duration::from_micros(500);
const REFRESH_TAIL: Duration = Duration::from_millis(2);

/// When each run of a generator started and ended.
type Runs = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// One timed hit: when it started, how long it took.
type Hit = (Instant, Duration);

/// `n` hits of [`HOT`] in `container`, each timed on its own and pushed onto `hits`; returns
/// their total time.
fn timed_hits(container: &Container<String>, n: u64, hits: &mut Vec<Hit>) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let start = Instant::now();
        let value = container.get(black_box(HOT)).unwrap();
        let took = start.elapsed();
        black_box(value);
        hits.push((start, took));
        total += took;
    }
    total
}

/// Whether `hit` overlaps one of `runs` (sorted, one after another), widened by
/// [`REFRESH_LEAD`] and [`REFRESH_TAIL`].
fn beside(runs: &[(Instant, Instant)], (start, took): Hit) -> bool {
    let next = runs.partition_point(|&(_, end)| end + REFRESH_TAIL < start);
    runs.get(next)
        .is_some_and(|&(begin, _)| begin.checked_sub(REFRESH_LEAD).unwrap_or(begin) <= start + took)
}

/// The mean, p50, p90, p99 and p99.9 of `times`, sorted in place.
fn profile(times: &mut [Duration]) -> [Duration; 5] {
    let mean = times.iter().sum::<Duration>() / u32::try_from(times.len()).unwrap_or(u32::MAX);
    [
        mean,
        quantile(times, 0.5),
        quantile(times, 0.9),
        quantile(times, 0.99),
        quantile(times, 0.999),
    ]
}

/// `hits` apart from and beside `runs`: their count, p50, p99 and p99.9, or `-`.
fn split(hits: &[Hit], runs: &[(Instant, Instant)]) -> [String; 2] {
    let (near, apart): (Vec<Hit>, Vec<Hit>) =
        hits.iter().copied().partition(|&hit| beside(runs, hit));
    [apart, near].map(|hits| {
        let mut times: Vec<Duration> = hits.iter().map(|&(_, took)| took).collect();
        if times.is_empty() {
            return "-".to_owned();
        }
        format!(
            "{:>7} calls, p50 {:>9.2?}, p99 {:>9.2?}, p99.9 {:>9.2?}",
            times.len(),
            quantile(&mut times, 0.5),
            quantile(&mut times, 0.99),
            quantile(&mut times, 0.999)
        )
    })
}

fn refresh_hits(c: &mut Criterion, backend: &Backend) {
    let settings: Vec<(&str, Vec<(&str, &str)>)> = REFRESH_INTERVALS
        .iter()
        .map(|&(interval, name, _)| (name, vec![("expire", "1h"), ("refresh", interval)]))
        .chain([("fresh", vec![("expire", "1h")])])
        .collect();
    let containers: Vec<(&str, &[(&str, &str)])> = settings
        .iter()
        .map(|(name, settings)| (*name, settings.as_slice()))
        .collect();
    let cache = backend.cache(&containers);
    let runs: Vec<Runs> = containers.iter().map(|_| Runs::default()).collect();
    for ((container, _), runs) in containers.iter().zip(&runs) {
        let runs = Arc::clone(runs);
        cache
            .register_generator(container, move |key: &str| {
                let start = Instant::now();
                thread::sleep(REFRESH_GENERATION);
                let value = string32(key);
                let mut runs = runs.lock().unwrap_or_else(PoisonError::into_inner);
                runs.push((start, Instant::now()));
                value
            })
            .unwrap();
    }
    let fresh: Container<String> = cache.container("fresh").unwrap();
    assert_eq!(fresh.get(HOT).unwrap(), string32(HOT));
    let round = refresh_round(backend);
    let mut group = c.benchmark_group(format!("refresh_hits/{}", backend.name));
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500));
    for (&(interval, name, measurement), runs) in REFRESH_INTERVALS.iter().zip(&runs) {
        group.measurement_time(measurement);
        let refreshing: Container<String> = cache.container(name).unwrap();
        assert_eq!(refreshing.get(HOT).unwrap(), string32(HOT));
        runs.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let (before, fresh_before) = (refreshing.stats(), fresh.stats());
        let started = Instant::now();
        let mut refreshing_hits: Vec<Hit> = Vec::with_capacity(1 << 20);
        let mut fresh_hits: Vec<Hit> = Vec::with_capacity(1 << 20);
        // Both functions time both sides in turns; each hands criterion its own side's time.
        let mut refreshing_turns = Turns::default();
        group.bench_function(BenchmarkId::new("refreshing", interval), |bencher| {
            bencher.iter_custom(|iters| {
                refreshing_turns.take(
                    iters,
                    round,
                    |n| timed_hits(&refreshing, n, &mut refreshing_hits),
                    |n| timed_hits(&fresh, n, &mut fresh_hits),
                )
            })
        });
        let mut fresh_turns = Turns::default();
        group.bench_function(BenchmarkId::new("fresh", interval), |bencher| {
            bencher.iter_custom(|iters| {
                fresh_turns.take(
                    iters,
                    round,
                    |n| timed_hits(&fresh, n, &mut fresh_hits),
                    |n| timed_hits(&refreshing, n, &mut refreshing_hits),
                )
            })
        });
        let (after, fresh_after) = (refreshing.stats(), fresh.stats());
        let window = started.elapsed();
        assert_eq!(refreshing.get(HOT).unwrap(), string32(HOT));
        assert_eq!(after.misses, before.misses, "every refreshing call hit");
        assert_eq!(
            fresh_after.misses, fresh_before.misses,
            "every fresh call hit"
        );
        assert_eq!(
            fresh_after.refreshes, fresh_before.refreshes,
            "fresh never refreshed"
        );
        if refreshing_hits.is_empty() || fresh_hits.is_empty() {
            // Filtered out.
            continue;
        }
        let mut runs = runs.lock().unwrap_or_else(PoisonError::into_inner).clone();
        runs.sort_unstable();
        let generating: Duration = runs.iter().map(|&(start, end)| end - start).sum();
        let what = format!("refresh_hits/{}/{interval}", backend.name);
        eprintln!(
            "{what}: {} refreshing and {} fresh calls, in turns of {round} a side over \
             {window:.1?}; {} background refreshes ran, generating {:.1}% of the time",
            refreshing_hits.len(),
            fresh_hits.len(),
            after.refreshes - before.refreshes,
            100.0 * generating.as_secs_f64() / window.as_secs_f64(),
        );
        let times =
            |hits: &[Hit]| profile(&mut hits.iter().map(|&(_, took)| took).collect::<Vec<_>>());
        let (r, f) = (times(&refreshing_hits), times(&fresh_hits));
        for (i, label) in ["mean", "p50", "p90", "p99", "p99.9"]
            .into_iter()
            .enumerate()
        {
            eprintln!(
                "{what}: {label:<5} refreshing {:>9.2?}  fresh {:>9.2?}  ratio {:.3}",
                r[i],
                f[i],
                r[i].as_secs_f64() / f[i].as_secs_f64(),
            );
        }
        for (side, hits) in [("refreshing", &refreshing_hits), ("fresh", &fresh_hits)] {
            let [apart, near] = split(hits, &runs);
            eprintln!("{what}: {side:<10} apart from refreshes {apart}; beside one {near}");
        }
        for (timed, turns) in [
            ("refreshing ÷ fresh", refreshing_turns),
            ("fresh ÷ refreshing", fresh_turns),
        ] {
            eprintln!("{what}: rounds, {timed}: {}", turns.summary());
        }
    }
    group.finish();
}

// ---- near_hit ------------------------------------------------------------------------------

/// The entries the near tier and its in-memory peer hold at most: ten times the keys, so that
/// neither evicts.
const NEAR_ENTRIES: &str = "10000";

/// Calls of each side in one round of `near_hit`: 1.5 to 3 ms a side.
const NEAR_ROUND: u64 = 10_000;

/// `n` gets in `container`, cycling through `keys` after `*next` as the variable bench does;
/// returns their time.
fn cycled_gets(
    container: &Container<String>,
    keys: &[String],
    next: &mut usize,
    n: u64,
) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        *next = (*next + 1) % KEYS;
        black_box(container.get(black_box(keys[*next].as_str())).unwrap());
    }
    start.elapsed()
}

fn near_hit(c: &mut Criterion, backend: &Backend) {
    let mut pairs = backend.options.clone();
    pairs.extend(
        [
            ("backend.shared.near_max_entries", NEAR_ENTRIES),
            ("backend.shared.near_expire", "1h"),
            ("container.near.backend", "shared"),
            ("backend.mem", "variable"),
            ("backend.mem.max_entries", NEAR_ENTRIES),
            ("container.mem.backend", "mem"),
        ]
        .map(|(option, value)| (option.to_owned(), value.to_owned())),
    );
    let cache = kvcache::init(pairs).unwrap();
    let near: Container<String> = cache.container("near").unwrap();
    let mem: Container<String> = cache.container("mem").unwrap();
    let keys = keys();
    for key in &keys {
        near.set(key, &string32(key)).unwrap();
        mem.set(key, &string32(key)).unwrap();
    }
    for key in &keys {
        assert_eq!(near.get(key).unwrap(), string32(key));
        assert_eq!(mem.get(key).unwrap(), string32(key));
    }
    let (near_before, mem_before) = (near.stats(), mem.stats());
    let mut group = c.benchmark_group(format!("near_hit/{}", backend.name));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    // Both functions time both sides in turns; each hands criterion its own side's time, and
    // the rounds of both make one median.
    let mut turns = Turns::default();
    let (mut near_next, mut mem_next) = (0, 0);
    let (mut near_calls, mut mem_calls) = (0_u64, 0_u64);
    group.bench_function("near", |bencher| {
        bencher.iter_custom(|iters| {
            (near_calls, mem_calls) = (near_calls + iters, mem_calls + iters);
            turns.take(
                iters,
                NEAR_ROUND,
                |n| cycled_gets(&near, &keys, &mut near_next, n),
                |n| cycled_gets(&mem, &keys, &mut mem_next, n),
            )
        })
    });
    group.bench_function("variable", |bencher| {
        bencher.iter_custom(|iters| {
            (near_calls, mem_calls) = (near_calls + iters, mem_calls + iters);
            let mut peer = Duration::ZERO;
            turns.take(
                iters,
                NEAR_ROUND,
                |n| cycled_gets(&near, &keys, &mut near_next, n),
                |n| {
                    let took = cycled_gets(&mem, &keys, &mut mem_next, n);
                    peer += took;
                    took
                },
            );
            peer
        })
    });
    group.finish();
    let (near_after, mem_after) = (near.stats(), mem.stats());
    assert_eq!(
        near_after.near_hits - near_before.near_hits,
        near_calls,
        "every near get was a near hit"
    );
    assert_eq!(near_after.misses, near_before.misses, "no near get missed");
    assert_eq!(
        mem_after.hits - mem_before.hits,
        mem_calls,
        "every in-memory get hit"
    );
    assert_eq!(
        mem_after.misses, mem_before.misses,
        "no in-memory get missed"
    );
    if near_calls == 0 {
        // Filtered out.
        return;
    }
    eprintln!(
        "near_hit/{}: {near_calls} near gets (all near hits) and {mem_calls} in-memory gets, in \
         turns of {NEAR_ROUND} a side; rounds, near ÷ variable (target ≤ 1.5): {}",
        backend.name,
        turns.summary(),
    );
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    for name in ["redis", "postgres", "mariadb", "file", "sql-sqlite"] {
        if let Some(backend) = Backend::new(name) {
            lease_wait(&mut criterion, &backend);
            if matches!(name, "redis" | "file") {
                refresh_hits(&mut criterion, &backend);
                near_hit(&mut criterion, &backend);
            }
        }
    }
    criterion.final_summary();
}
