//! Hit ratios on real and synthetic traces: the in-memory tier, `moka::sync::Cache` and an exact
//! LRU (`lru::LruCache`) of the same capacity, in one run.
//!
//! `cargo bench -p kvcache-bench --bench traces` replays every trace of the table;
//! `cargo bench -p kvcache-bench --bench traces -- TRACE[@CAPACITY,...]...` replays the ones
//! named. A trace is a path to a cache2k trace (xz-compressed big-endian `u32` keys: see
//! `traces/README.md`) or a synthetic one: `zipf-0.7`, `zipf-0.9`, `zipf-1.1` (1,000,000
//! accesses over 100,000 keys) or `zipf-scan` (Zipf 0.9 with a scan of 10,000 new keys after
//! every 50,000 accesses). Each access is a `get` whose miss calls the generator: hit ratio =
//! 1 − generator calls / accesses.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The table: each trace at its capacities.
const DEFAULT: [&str; 6] = [
    "traces/web07.trace.xz@500,2000,8000",
    "traces/orm-night.trace.xz@1000,10000",
    "zipf-0.7@1000",
    "zipf-0.9@1000",
    "zipf-1.1@1000",
    "zipf-scan@1000",
];
/// How far below the best peer the tier may be, in points of hit ratio.
const SLACK: f64 = 0.5;

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    let specs: Vec<String> = if args.is_empty() {
        DEFAULT.iter().map(|spec| (*spec).to_owned()).collect()
    } else {
        args
    };
    println!(
        "| trace | capacity | kvcache | moka | LRU | kvcache − best peer | within {SLACK} points |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut all_within = true;
    for spec in &specs {
        let (name, capacities) = spec.split_once('@').unwrap_or((spec, "1000"));
        let trace = match load(name) {
            Ok(trace) => trace,
            Err(error) => {
                eprintln!("{name}: {error}");
                std::process::exit(2);
            }
        };
        for capacity in capacities.split(',') {
            let Ok(capacity) = capacity.parse::<usize>() else {
                eprintln!("{spec}: {capacity:?} is not a capacity");
                std::process::exit(2);
            };
            let ours = kvcache_ratio(&trace, capacity);
            let moka = moka_ratio(&trace, capacity);
            let lru = lru_ratio(&trace, capacity);
            let margin = ours - moka.max(lru);
            let within = margin >= -SLACK;
            all_within &= within;
            let label = name.rsplit('/').next().unwrap_or(name);
            println!(
                "| {label} | {capacity} | {ours:.2} | {moka:.2} | {lru:.2} | {margin:+.2} | {} |",
                if within { "yes" } else { "**no**" }
            );
        }
    }
    if !all_within {
        println!("\nsome trace is more than {SLACK} points below its best peer");
    }
}

/// The keys of trace `name`, in order.
fn load(name: &str) -> Result<Vec<u32>, String> {
    match name {
        "zipf-0.7" => Ok(zipf(0.7, 100_000, 1_000_000, None)),
        "zipf-0.9" => Ok(zipf(0.9, 100_000, 1_000_000, None)),
        "zipf-1.1" => Ok(zipf(1.1, 100_000, 1_000_000, None)),
        "zipf-scan" => Ok(zipf(0.9, 100_000, 1_000_000, Some((50_000, 10_000)))),
        path => {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
            let file = std::fs::File::open(&path)
                .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
            let mut bytes = Vec::new();
            lzma_rs::xz_decompress(&mut std::io::BufReader::new(file), &mut bytes)
                .map_err(|error| format!("{} is not an xz file: {error}", path.display()))?;
            if bytes.len() % 4 != 0 {
                return Err(format!(
                    "{} holds {} bytes, not whole 32-bit keys",
                    path.display(),
                    bytes.len()
                ));
            }
            Ok(bytes
                .chunks_exact(4)
                .map(|k| u32::from_be_bytes([k[0], k[1], k[2], k[3]]))
                .collect())
        }
    }
}

/// `accesses` draws from a Zipf distribution of exponent `alpha` over `keys` keys (seeded, so
/// every run replays the same trace); with `scan = (every, length)`, a scan of `length` keys
/// never seen before after every `every` draws.
fn zipf(alpha: f64, keys: u32, accesses: usize, scan: Option<(usize, u32)>) -> Vec<u32> {
    let mut cdf: Vec<f64> = (1..=keys)
        .scan(0.0, |sum, rank| {
            *sum += 1.0 / f64::from(rank).powf(alpha);
            Some(*sum)
        })
        .collect();
    let total = cdf[cdf.len() - 1];
    cdf.iter_mut().for_each(|p| *p /= total);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next_scan_key = keys;
    let mut trace = Vec::with_capacity(accesses);
    for i in 0..accesses {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let uniform = (state >> 11) as f64 / (1u64 << 53) as f64;
        let rank = cdf.partition_point(|&p| p < uniform) as u32;
        // Ranks are scattered over the key space, so that hot keys are not neighbours.
        trace.push(rank.wrapping_mul(0x9e37_79b1));
        if let Some((every, length)) = scan
            && (i + 1) % every == 0
        {
            trace.extend(next_scan_key..next_scan_key + length);
            next_scan_key += length;
        }
    }
    trace
}

fn ratio(misses: u64, accesses: usize) -> f64 {
    100.0 * (1.0 - misses as f64 / accesses as f64)
}

/// The tier through a container, as a service uses it: a miss calls the generator.
fn kvcache_ratio(trace: &[u32], capacity: usize) -> f64 {
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("backend.mem.max_entries", &capacity.to_string()),
        ("container.trace.backend", "mem"),
    ])
    .expect("a valid configuration");
    let calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&calls);
    cache
        .register_generator("trace", move |key: &str| {
            counted.fetch_add(1, Ordering::Relaxed);
            key.len() as u32
        })
        .expect("a new generator");
    let container = cache.container::<u32>("trace").expect("the container");
    let mut key = String::new();
    for &k in trace {
        key.clear();
        std::fmt::Write::write_fmt(&mut key, format_args!("{k}")).expect("a string");
        container.get(&key).expect("a value");
    }
    ratio(calls.load(Ordering::Relaxed), trace.len())
}

fn moka_ratio(trace: &[u32], capacity: usize) -> f64 {
    let cache = moka::sync::Cache::<u32, u32>::new(capacity as u64);
    let mut misses = 0;
    for &key in trace {
        if cache.get(&key).is_none() {
            misses += 1;
            cache.insert(key, key);
        }
    }
    ratio(misses, trace.len())
}

fn lru_ratio(trace: &[u32], capacity: usize) -> f64 {
    let mut cache = lru::LruCache::new(NonZeroUsize::new(capacity.max(1)).expect("not zero"));
    let mut misses = 0;
    for &key in trace {
        if cache.get(&key).is_none() {
            misses += 1;
            cache.put(key, key);
        }
    }
    ratio(misses, trace.len())
}
