//! Resident memory per entry: 1M entries of 32-byte `String` values in the in-memory backend and
//! in `moka::sync::Cache`, each measured in a process of its own.
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
            let cache =
                kvcache::init([("backend.mem", "variable"), ("container.c.backend", "mem")])
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

fn main() {
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
}
