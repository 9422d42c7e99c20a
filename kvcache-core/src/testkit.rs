//! The conformance suite every backend runs: the [`Backend`] contract, checked by assertions.
//!
//! A backend crate's test calls [`run`] on a freshly opened backend:
//!
//! ```no_run
//! # fn open(clock: std::sync::Arc<dyn kvcache_core::Clock>) -> std::sync::Arc<dyn kvcache_core::Backend> { unimplemented!() }
//! use kvcache_core::{ManualClock, testkit};
//! let clock = ManualClock::new(1_000_000);
//! let backend = open(std::sync::Arc::new(clock.clone()));
//! testkit::run(&*backend, testkit::Time::Manual(&clock));
//! ```
//!
//! Every check uses container names of its own, unique to the run, so the suite can run against a
//! shared, persistent database without seeing earlier runs' rows.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use crate::backend::Backend;
use crate::cache::KvCache;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::generator::Generator;
use crate::options::ContainerOptions;

/// How the suite makes time pass.
#[derive(Debug, Clone, Copy)]
pub enum Time<'a> {
    /// The backend reads this clock: the suite advances it.
    Manual(&'a ManualClock),
    /// The backend's store expires entries on its own clock (Redis): the suite sleeps.
    Real,
}

type Check = fn(&dyn Backend, Time<'_>);

/// Runs every check on `backend`; panics with a message naming the check that failed.
pub fn run(backend: &dyn Backend, time: Time<'_>) {
    let checks: [(&str, Check); 14] = [
        ("a missing key is a miss", missing_is_none),
        ("a stored value is retrieved", store_then_retrieve),
        ("store replaces", store_replaces),
        ("invalidate deletes, and a missing key is fine", invalidate),
        (
            "containers never see each other's keys",
            containers_are_isolated,
        ),
        ("clear empties one container only", clear_one_container),
        ("an entry expires at its ttl", expiry),
        ("no ttl never expires", no_ttl_never_expires),
        ("storing again replaces the ttl", restore_replaces_ttl),
        ("purge_expired keeps live entries", purge_keeps_live),
        ("batches keep order", batches),
        ("odd keys and values round-trip", odd_keys_and_values),
        ("large keys and values round-trip", large_keys_and_values),
        ("threads on distinct keys", threads),
    ];
    for (name, check) in checks {
        eprintln!("testkit: {name}");
        check(backend, time);
    }
}

/// A container name no earlier run used.
pub fn unique(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{label}-{}-{nanos}-{n}", std::process::id())
}

fn pass(time: Time<'_>, by: Duration) {
    match time {
        Time::Manual(clock) => clock.advance(by),
        Time::Real => thread::sleep(by),
    }
}

/// A ttl the suite can wait out: long on a manual clock, short in real time.
fn ttl(time: Time<'_>) -> Duration {
    match time {
        Time::Manual(_) => Duration::from_secs(3600),
        Time::Real => Duration::from_millis(400),
    }
}

fn get(backend: &dyn Backend, container: &str, key: &str) -> Option<Vec<u8>> {
    backend
        .retrieve(container, key)
        .unwrap_or_else(|e| panic!("retrieve({container:?}, {key:?}) failed: {e}"))
}

fn put(backend: &dyn Backend, container: &str, key: &str, value: &[u8], ttl: Option<Duration>) {
    backend
        .store(container, key, value, ttl)
        .unwrap_or_else(|e| panic!("store({container:?}, {key:?}) failed: {e}"));
}

fn missing_is_none(backend: &dyn Backend, _: Time<'_>) {
    assert_eq!(get(backend, &unique("missing"), "nothing"), None);
}

fn store_then_retrieve(backend: &dyn Backend, _: Time<'_>) {
    let c = unique("store");
    put(backend, &c, "k", b"value", None);
    assert_eq!(get(backend, &c, "k").as_deref(), Some(&b"value"[..]));
    assert_eq!(get(backend, &c, "other"), None);
    assert_eq!(
        read_in_place(backend, &c, "k").as_deref(),
        Some(&b"value"[..]),
        "retrieve_with"
    );
    assert_eq!(
        read_in_place(backend, &c, "other"),
        None,
        "retrieve_with on a miss"
    );
}

/// What `retrieve_with` hands its reader, checking it calls the reader exactly when it finds.
fn read_in_place(backend: &dyn Backend, container: &str, key: &str) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let found = backend
        .retrieve_with(container, key, &mut |bytes| seen.push(bytes.to_vec()))
        .unwrap_or_else(|e| panic!("retrieve_with({container:?}, {key:?}) failed: {e}"));
    assert_eq!(
        seen.len(),
        usize::from(found),
        "the reader is called once exactly when found"
    );
    seen.pop()
}

fn store_replaces(backend: &dyn Backend, _: Time<'_>) {
    let c = unique("replace");
    put(backend, &c, "k", b"first", None);
    put(backend, &c, "k", b"second, longer", None);
    assert_eq!(
        get(backend, &c, "k").as_deref(),
        Some(&b"second, longer"[..])
    );
}

fn invalidate(backend: &dyn Backend, _: Time<'_>) {
    let c = unique("invalidate");
    put(backend, &c, "k", b"v", None);
    put(backend, &c, "kept", b"v", None);
    backend.invalidate(&c, "k").expect("invalidate");
    assert_eq!(get(backend, &c, "k"), None);
    assert_eq!(get(backend, &c, "kept").as_deref(), Some(&b"v"[..]));
    backend
        .invalidate(&c, "k")
        .expect("invalidating a missing key is not an error");
    backend
        .invalidate(&unique("never-used"), "k")
        .expect("invalidating in an unused container is not an error");
}

fn containers_are_isolated(backend: &dyn Backend, _: Time<'_>) {
    let base = unique("iso");
    // Names that a naive "container:key" concatenation would confuse.
    let pairs = [
        (format!("{base}:a"), "b:c".to_owned()),
        (format!("{base}:a:b"), "c".to_owned()),
        (base.clone(), "a:b:c".to_owned()),
        (format!("{base}:a:b:c"), String::new()),
    ];
    for (i, (c, k)) in pairs.iter().enumerate() {
        put(backend, c, k, format!("value {i}").as_bytes(), None);
    }
    for (i, (c, k)) in pairs.iter().enumerate() {
        assert_eq!(
            get(backend, c, k),
            Some(format!("value {i}").into_bytes()),
            "container {c:?}, key {k:?}"
        );
    }
}

fn clear_one_container(backend: &dyn Backend, _: Time<'_>) {
    let (a, b) = (unique("clear-a"), unique("clear-b"));
    for key in ["1", "2", "3"] {
        put(backend, &a, key, b"a", None);
        put(backend, &b, key, b"b", None);
    }
    backend.clear(&a).expect("clear");
    for key in ["1", "2", "3"] {
        assert_eq!(get(backend, &a, key), None, "cleared key {key:?}");
        assert_eq!(
            get(backend, &b, key).as_deref(),
            Some(&b"b"[..]),
            "other container's key {key:?}"
        );
    }
    backend
        .clear(&unique("never-used"))
        .expect("clearing an unused container");
}

fn expiry(backend: &dyn Backend, time: Time<'_>) {
    let c = unique("expiry");
    let ttl = ttl(time);
    put(backend, &c, "short", b"v", Some(ttl));
    put(backend, &c, "long", b"v", Some(ttl * 10));
    assert_eq!(
        get(backend, &c, "short").as_deref(),
        Some(&b"v"[..]),
        "fresh entry"
    );
    if let Time::Manual(_) = time {
        pass(time, ttl - Duration::from_millis(1));
        assert_eq!(
            get(backend, &c, "short").as_deref(),
            Some(&b"v"[..]),
            "1 ms before its ttl"
        );
        pass(time, Duration::from_millis(1));
    } else {
        pass(time, ttl + Duration::from_millis(200));
    }
    assert_eq!(
        read_in_place(backend, &c, "short"),
        None,
        "at its ttl, in place"
    );
    assert_eq!(get(backend, &c, "short"), None, "at its ttl");
    assert_eq!(
        get(backend, &c, "long").as_deref(),
        Some(&b"v"[..]),
        "the longer ttl"
    );
    assert_eq!(
        backend
            .retrieve_many(&c, &["short", "long"])
            .expect("retrieve_many"),
        vec![None, Some(b"v".to_vec())],
        "batch look-ups honour expiry too"
    );
}

fn no_ttl_never_expires(backend: &dyn Backend, time: Time<'_>) {
    let c = unique("forever");
    put(backend, &c, "k", b"v", None);
    match time {
        Time::Manual(_) => pass(time, Duration::from_secs(100 * 365 * 86_400)),
        Time::Real => pass(time, ttl(time) + Duration::from_millis(200)),
    }
    assert_eq!(get(backend, &c, "k").as_deref(), Some(&b"v"[..]));
}

fn restore_replaces_ttl(backend: &dyn Backend, time: Time<'_>) {
    let c = unique("rettl");
    put(backend, &c, "k", b"v1", Some(ttl(time)));
    put(backend, &c, "k", b"v2", None);
    pass(time, ttl(time) + Duration::from_millis(200));
    assert_eq!(
        get(backend, &c, "k").as_deref(),
        Some(&b"v2"[..]),
        "the second store had no ttl"
    );
    put(backend, &c, "k", b"v3", Some(ttl(time)));
    pass(time, ttl(time) + Duration::from_millis(200));
    assert_eq!(get(backend, &c, "k"), None, "the third store had a ttl");
}

fn purge_keeps_live(backend: &dyn Backend, time: Time<'_>) {
    let c = unique("purge");
    put(backend, &c, "dies", b"v", Some(ttl(time)));
    put(backend, &c, "lives", b"v", Some(ttl(time) * 10));
    put(backend, &c, "forever", b"v", None);
    pass(time, ttl(time) + Duration::from_millis(200));
    backend.purge_expired().expect("purge_expired");
    assert_eq!(get(backend, &c, "dies"), None);
    assert_eq!(get(backend, &c, "lives").as_deref(), Some(&b"v"[..]));
    assert_eq!(get(backend, &c, "forever").as_deref(), Some(&b"v"[..]));
}

fn batches(backend: &dyn Backend, _: Time<'_>) {
    let c = unique("batch");
    let keys: Vec<String> = (0..16).map(|i| format!("key {i}")).collect();
    let entries: Vec<(&str, Vec<u8>)> = keys
        .iter()
        .step_by(2)
        .map(|k| (k.as_str(), k.as_bytes().to_vec()))
        .collect();
    let borrowed: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    backend.store_many(&c, &borrowed, None).expect("store_many");
    let asked: Vec<&str> = keys.iter().map(String::as_str).rev().collect();
    let found = backend.retrieve_many(&c, &asked).expect("retrieve_many");
    assert_eq!(found.len(), asked.len(), "one answer per key");
    for (key, value) in asked.iter().zip(found) {
        let index: usize = key[4..].parse().expect("key index");
        let expected = index.is_multiple_of(2).then(|| key.as_bytes().to_vec());
        assert_eq!(value, expected, "key {key:?}");
    }
    assert_eq!(
        backend.retrieve_many(&c, &[]).expect("an empty batch"),
        Vec::<Option<Vec<u8>>>::new()
    );
    let repeated = backend
        .retrieve_many(&c, &["key 0", "key 0"])
        .expect("a repeated key");
    assert_eq!(
        repeated,
        vec![Some(b"key 0".to_vec()), Some(b"key 0".to_vec())]
    );
}

fn odd_keys_and_values(backend: &dyn Backend, _: Time<'_>) {
    let c = unique("odd");
    let all_bytes: Vec<u8> = (0..=255).collect();
    let cases: [(&str, &[u8]); 6] = [
        ("", b"empty key"),
        ("empty value", b""),
        ("binary", &all_bytes),
        ("ünïcödé 🦀 ключ", b"unicode key"),
        ("quotes ' \" ; -- %s \\ \0 nul", b"sql-ish key"),
        ("  spaces  ", b"spaces kept"),
    ];
    for (key, value) in cases {
        put(backend, &c, key, value, None);
    }
    for (key, value) in cases {
        assert_eq!(get(backend, &c, key).as_deref(), Some(value), "key {key:?}");
    }
    assert_eq!(
        get(backend, &c, "spaces"),
        None,
        "keys are compared exactly"
    );
    assert_eq!(get(backend, &c, "BINARY"), None, "keys are case-sensitive");
}

fn large_keys_and_values(backend: &dyn Backend, _: Time<'_>) {
    let c = unique("large");
    let long_key = "k".repeat(64 * 1024);
    let other_long_key = format!("{}j", "k".repeat(64 * 1024 - 1));
    let big_value: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    put(backend, &c, &long_key, b"long key", None);
    put(backend, &c, &other_long_key, b"other long key", None);
    put(backend, &c, "big", &big_value, None);
    assert_eq!(
        get(backend, &c, &long_key).as_deref(),
        Some(&b"long key"[..])
    );
    assert_eq!(
        get(backend, &c, &other_long_key).as_deref(),
        Some(&b"other long key"[..])
    );
    assert_eq!(get(backend, &c, "big"), Some(big_value));
}

fn threads(backend: &dyn Backend, _: Time<'_>) {
    let c = unique("threads");
    thread::scope(|scope| {
        for t in 0..8 {
            let c = &c;
            scope.spawn(move || {
                for i in 0..50 {
                    let key = format!("{t}/{i}");
                    put(backend, c, &key, key.as_bytes(), None);
                    assert_eq!(get(backend, c, &key).as_deref(), Some(key.as_bytes()));
                }
            });
        }
    });
    let mut seen = BTreeMap::new();
    for t in 0..8 {
        for i in 0..50 {
            let key = format!("{t}/{i}");
            seen.insert(key.clone(), get(backend, &c, &key));
        }
    }
    assert!(seen.iter().all(|(k, v)| v.as_deref() == Some(k.as_bytes())));
}

/// Checks, through a container on `backend`, that corrupt stored values (random bytes, a
/// truncated value, a value of another type) read as misses, are regenerated and overwritten,
/// are counted, and never panic.
pub fn corruption(backend: Arc<dyn Backend>) {
    let cache = KvCache::builder(Config::default())
        .backend("under-test", Arc::clone(&backend))
        .build()
        .expect("a cache on the backend");
    let name = unique("corrupt");
    let generate = |key: &str| format!("generated {key}");
    cache
        .create_container(
            &name,
            "under-test",
            ContainerOptions::default(),
            Some(Generator::new(generate)),
        )
        .expect("create_container");
    let other = unique("corrupt-other-type");
    cache
        .create_container(&other, "under-test", ContainerOptions::default(), None)
        .expect("create_container");
    let strings = cache.container::<String>(&name).expect("container");
    let numbers = cache.container::<u64>(&other).expect("container");

    numbers.set("n", &42).expect("set a number");
    let number_bytes = backend
        .retrieve(&other, "n")
        .expect("retrieve")
        .expect("the number's bytes");
    strings
        .set("s", &"a valid string".to_owned())
        .expect("set a string");
    let string_bytes = backend
        .retrieve(&name, "s")
        .expect("retrieve")
        .expect("the string's bytes");

    let mut random = 0x2545_f491_4f6c_dd1d_u64;
    let random_bytes: Vec<u8> = (0..300)
        .map(|_| {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random.to_le_bytes()[0]
        })
        .collect();
    let cases: [(&str, &[u8]); 6] = [
        ("random bytes", &random_bytes),
        ("no bytes", b""),
        ("a truncated header", &string_bytes[..4]),
        ("a truncated value", &string_bytes[..string_bytes.len() - 1]),
        (
            "a value with bytes over",
            &[string_bytes.as_slice(), b"!"].concat(),
        ),
        ("a value of another type", &number_bytes),
    ];
    for (index, (what, bytes)) in cases.iter().enumerate() {
        let key = format!("key {index}");
        backend
            .store(&name, &key, bytes, None)
            .expect("store corrupt bytes");
        assert_eq!(strings.peek(&key).expect("peek"), None, "{what} is a miss");
        assert_eq!(
            strings.get(&key).expect("get"),
            generate(&key),
            "{what} is regenerated"
        );
        assert_eq!(
            strings.peek(&key).expect("peek").as_deref(),
            Some(generate(&key).as_str()),
            "{what} is overwritten"
        );
    }
    let stats = strings.stats();
    assert_eq!(
        stats.undecodable,
        2 * cases.len() as u64,
        "each corrupt value is counted (peek and get)"
    );
    assert_eq!(stats.generations, cases.len() as u64);
    strings.clear().expect("clear");
    numbers.clear().expect("clear");
}
