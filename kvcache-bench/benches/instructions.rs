//! Hits counted in instructions, not seconds: run under callgrind, whose counts do not move with
//! the machine's load. Each run makes N hits on one store; the difference between two runs'
//! totals, divided by the difference of their N, is the cost of one hit.
//!
//! ```text
//! cargo bench -p kvcache-bench --bench instructions --no-run
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null BINARY STORE VALUE N
//! ```
//!
//! STORE is `kvcache` (a tier bounded to 10,000 entries), `kvcache-unbounded` or `moka` (bounded
//! to 10,000); VALUE is
//! `string32` or `struct1k`. `BINARY all` runs every pair under valgrind and prints the table.

use std::hint::black_box;
use std::process::Command;

use kvcache_bench::{Kib, kib, string32};

fn hits(store: &str, value: &str, n: usize) {
    let keys: Vec<String> = (0..1_000).map(|i| format!("key-{i}")).collect();
    match (store, value) {
        ("kvcache" | "kvcache-unbounded", value) => {
            let bound = if store == "kvcache" { "10000" } else { "" };
            let mut pairs = vec![("backend.mem", "variable"), ("container.c.backend", "mem")];
            if !bound.is_empty() {
                pairs.push(("backend.mem.max_entries", bound));
            }
            let cache = kvcache::init(pairs).unwrap();
            if value == "string32" {
                let c = cache.container::<String>("c").unwrap();
                keys.iter().for_each(|k| c.set(k, &string32(k)).unwrap());
                (0..n).for_each(|i| drop(black_box(c.get(&keys[i % 1_000]).unwrap())));
            } else {
                let c = cache.container::<Kib>("c").unwrap();
                keys.iter()
                    .enumerate()
                    .for_each(|(i, k)| c.set(k, &kib(i as u64)).unwrap());
                (0..n).for_each(|i| drop(black_box(c.get(&keys[i % 1_000]).unwrap())));
            }
        }
        ("moka", "string32") => {
            let c = moka::sync::Cache::new(10_000);
            keys.iter().for_each(|k| c.insert(k.clone(), string32(k)));
            (0..n).for_each(|i| drop(black_box(c.get(&keys[i % 1_000]).unwrap())));
        }
        ("moka", _) => {
            let c = moka::sync::Cache::new(10_000);
            keys.iter()
                .enumerate()
                .for_each(|(i, k)| c.insert(k.clone(), kib(i as u64)));
            (0..n).for_each(|i| drop(black_box(c.get(&keys[i % 1_000]).unwrap())));
        }
        other => panic!("unknown store and value {other:?}"),
    }
}

/// The instructions callgrind counts for `N` hits.
fn count(store: &str, value: &str, n: usize) -> u64 {
    let exe = std::env::current_exe().expect("this binary");
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args([store, value, &n.to_string()])
        .output()
        .expect("valgrind (Debian's valgrind package)");
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find_map(|line| line.split("Collected : ").nth(1))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in valgrind's output: {text}"))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    match args.as_slice() {
        [store, value, n] => hits(store, value, n.parse().expect("a number of hits")),
        [all] if all == "all" => {
            println!(
                "| value | kvcache, bounded | moka, bounded | kvcache ÷ moka | kvcache, unbounded |"
            );
            println!("|---|---|---|---|---|");
            for value in ["string32", "struct1k"] {
                let per_hit = |store| {
                    (count(store, value, 200_000) - count(store, value, 100_000)) as f64 / 100_000.0
                };
                let (ours, moka) = (per_hit("kvcache"), per_hit("moka"));
                let unbounded = per_hit("kvcache-unbounded");
                println!(
                    "| {value} | {ours:.0} | {moka:.0} | {:.2} | {unbounded:.0} |",
                    ours / moka
                );
            }
        }
        _ => {} // `cargo bench` runs it with no arguments: nothing to do.
    }
}
