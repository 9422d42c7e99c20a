//! What faults cost (issue #15): calls to a Redis that was stopped, with the default options,
//! and a set into a full in-memory bound of 1,000,000 entries against one into the same bound
//! not yet filled (600,000 entries held).
//!
//! `cargo bench -p kvcache-bench --bench faults`
//!
//! The outage figures need `redis-server` on the PATH: the bench starts a private one on a free
//! loopback port, kills it, and times the calls that follow.

// criterion_group! makes an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use kvcache::{Container, KvCache};
use kvcache_bench::{string32, threads};

/// A private `redis-server` on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Option<Server> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A generator that takes 0.1 ms, as a fast upstream.
fn upstream(key: &str) -> String {
    let until = Instant::now() + Duration::from_micros(100);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    string32(key)
}

fn outage(c: &mut Criterion) {
    let Some(mut server) = Server::start() else {
        eprintln!("faults: SKIPPED the outage figures: no redis-server could be started");
        return;
    };
    let url = format!("redis://127.0.0.1:{}", server.port);
    // Default options: connect_timeout and command_timeout 5 s, outage_backoff 1 s.
    let cache: KvCache = kvcache::init([
        ("backend.r", "redis"),
        ("backend.r.url", url.as_str()),
        ("container.strict.backend", "r"),
        ("container.open.backend", "r"),
        ("container.open.on_backend_error", "generate"),
    ])
    .unwrap();
    cache.register_generator("strict", upstream).unwrap();
    cache.register_generator("open", upstream).unwrap();
    let strict: Container<String> = cache.container("strict").unwrap();
    let open: Container<String> = cache.container("open").unwrap();
    strict.get("warm").unwrap();

    server.kill();
    let start = Instant::now();
    let first = strict.get("k").unwrap_err();
    println!(
        "faults: Redis stopped, default options: the first call failed after {:?} (connect_timeout 5 s): {first}",
        start.elapsed()
    );

    let mut group = c.benchmark_group("faults/redis-stopped");
    group.bench_function(BenchmarkId::new("kvcache", "a call after the first"), |b| {
        b.iter(|| black_box(strict.get("k").unwrap_err()))
    });
    group.throughput(criterion::Throughput::Elements(1));
    group.bench_function(
        BenchmarkId::new("kvcache", "generate, 8 threads, 0.1 ms generator"),
        |b| {
            b.iter_custom(|iters| {
                threads(8, iters, |calls| {
                    for call in calls {
                        black_box(open.get(&format!("key {call}")).unwrap());
                    }
                })
            })
        },
    );
    group.finish();
    let stats = open.stats();
    println!(
        "faults: while stopped, the fail-open container served {} values; {} of its backend calls failed fast",
        stats.generations, stats.fast_failures
    );
}

/// A set of a new key into an in-memory backend bounded to `BOUND` entries: while the bound is
/// not reached, and once it is full (each set evicts).
fn full_bound(c: &mut Criterion) {
    const BOUND: usize = 1_000_000;
    let mut group = c.benchmark_group("faults/memory-set-1m-bound");
    group.throughput(criterion::Throughput::Elements(1));
    let bounded = || -> (KvCache, Container<String>) {
        let cache = kvcache::init([
            ("backend.mem", "variable"),
            ("backend.mem.max_entries", "1000000"),
            ("container.c.backend", "mem"),
        ])
        .unwrap();
        let container = cache.container("c").unwrap();
        (cache, container)
    };
    let value = string32("value");

    // Before the bound: new keys into stores holding 600,000 entries already, so that the table
    // is as large as the full one's, but never more than 300,000 sets into each, so that none
    // fills. Only the sets are timed, each formatting its key as the full case does.
    const FILLED: u64 = 600_000;
    group.bench_function(BenchmarkId::new("kvcache", "filling"), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let chunk = left.min(BOUND as u64 - FILLED - 100_000);
                let (_cache, container) = bounded();
                for i in 0..FILLED {
                    container.set(&format!("old {i}"), &value).unwrap();
                }
                let start = Instant::now();
                for i in 0..chunk {
                    container.set(&format!("new {i}"), &value).unwrap();
                }
                timed += start.elapsed();
                left -= chunk;
            }
            timed
        })
    });

    // Full: a million entries first, then every set is of a new key and evicts one.
    let (_cache, full) = bounded();
    for i in 0..BOUND {
        full.set(&format!("old {i}"), &value).unwrap();
    }
    let mut next = 0_u64;
    group.bench_function(BenchmarkId::new("kvcache", "full"), |b| {
        b.iter(|| {
            next += 1;
            full.set(&format!("new {next}"), &value).unwrap();
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    outage(&mut criterion);
    full_bound(&mut criterion);
    criterion.final_summary();
}
