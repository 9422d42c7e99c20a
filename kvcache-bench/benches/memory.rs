//! Resident memory per entry: 1M entries of 32-byte `String` values in the in-memory backend and
//! in `moka::sync::Cache`, each measured in a process of its own; then the resident size over 60 s
//! of a stream of unique keys with a 1 s expiry into an unbounded tier (200,000 keys a second).
//!
//! `cargo bench -p kvcache-bench --bench memory`

use std::process::Command;

const ENTRIES: usize = 1_000_000;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn key(i: usize) -> String {
    format!("key-{i:08}")
}

fn value(i: usize) -> String {
    format!("{i:0>32}")
}

fn fill(which: &str) -> usize {
    let before = resident_bytes();
    match which {
        "kvcache" => {
            // Bounded as moka is, so that both keep their policy's books.
            let bound = (ENTRIES * 2).to_string();
            let cache = kvcache::init([
                ("backend.mem", "variable"),
                ("backend.mem.max_entries", bound.as_str()),
                ("container.c.backend", "mem"),
            ])
            .unwrap();
            let container = cache.container::<String>("c").unwrap();
            for i in 0..ENTRIES {
                container.set(&key(i), &value(i)).unwrap();
            }
            let used = resident_bytes() - before;
            assert_eq!(container.get(&key(7)).unwrap(), value(7));
            used
        }
        "moka" => {
            let cache = moka::sync::Cache::new(ENTRIES as u64 * 2);
            for i in 0..ENTRIES {
                cache.insert(key(i), value(i));
            }
            cache.run_pending_tasks();
            let used = resident_bytes() - before;
            assert_eq!(cache.get(&key(7)), Some(value(7)));
            used
        }
        other => panic!("unknown store {other:?}"),
    }
}

/// Unique keys with a 1 s expiry, `RATE` a second for `SECONDS`, nothing bounded and nothing
/// purged: prints the resident size every five seconds.
fn stream() {
    const RATE: u64 = 200_000;
    const SECONDS: u64 = 60;
    let cache = kvcache::init([
        ("backend.mem", "variable"),
        ("container.c.backend", "mem"),
        ("container.c.expire", "1s"),
    ])
    .unwrap();
    let container = cache.container::<String>("c").unwrap();
    let start = std::time::Instant::now();
    let mut written = 0u64;
    let mut next_report = 0;
    while start.elapsed().as_secs() < SECONDS {
        let due = (start.elapsed().as_secs_f64() * RATE as f64) as u64;
        while written < due {
            container
                .set(&key(written as usize), &value(written as usize))
                .unwrap();
            written += 1;
        }
        let second = start.elapsed().as_secs();
        if second >= next_report {
            println!(
                "t = {second:>2} s: {written:>9} keys written, resident {:>4} MiB, {:>6} expired entries reclaimed",
                resident_bytes() >> 20,
                container.stats().evicted_expired
            );
            next_report += 5;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

fn main() {
    if std::env::args().any(|a| a == "stream") {
        stream();
        return;
    }
    if let Some(which) = std::env::args()
        .nth(1)
        .filter(|a| a == "kvcache" || a == "moka")
    {
        println!("{}", fill(&which));
        return;
    }
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` asks for a list; there is nothing to test here.
    }
    let exe = std::env::current_exe().expect("this binary");
    let measure = |which: &str| -> f64 {
        let out = Command::new(&exe)
            .arg(which)
            .output()
            .expect("a child process");
        assert!(
            out.status.success(),
            "{which}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<f64>()
            .expect("a byte count")
            / ENTRIES as f64
    };
    let (kvcache, moka) = (measure("kvcache"), measure("moka"));
    println!(
        "memory/1M entries of 32-byte strings: kvcache variable {kvcache:.0} B/entry, moka {moka:.0} B/entry, ratio {:.2}",
        kvcache / moka
    );
    let out = Command::new(&exe)
        .arg("stream")
        .output()
        .expect("a child process");
    assert!(
        out.status.success(),
        "stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("memory/stream of unique keys, 1 s expiry, 200,000 a second, unbounded tier:");
    print!("{}", String::from_utf8_lossy(&out.stdout));
}
