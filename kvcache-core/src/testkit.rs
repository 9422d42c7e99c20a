//! The conformance suite every backend runs: the [`Backend`] contract, checked by assertions,
//! through the synchronous path and again through the async one.
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
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use tokio::runtime::Runtime;

use crate::backend::{AsyncStore, Backend, Lease, Store};
use crate::cache::KvCache;
use crate::clock::ManualClock;
use crate::config::Config;
use crate::error::Result;
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

/// The backend under test, seen through one path.
struct Subject<'a> {
    backend: &'a dyn Backend,
    /// `None`: the synchronous path; else the runtime the async path's calls are awaited on.
    runtime: Option<&'a Runtime>,
}

impl Subject<'_> {
    /// The store of `container`, as this path's callers use it.
    fn open(&self, container: &str) -> Arc<dyn Store> {
        let space = self
            .backend
            .open(container)
            .unwrap_or_else(|e| panic!("open({container:?}) failed: {e}"));
        match self.runtime {
            None => space.sync_store(),
            Some(runtime) => Arc::new(Awaited {
                store: space.async_store(),
                runtime: runtime.handle().clone(),
            }),
        }
    }
}

/// An async store's calls, each awaited on a test runtime, so that the checks read the same on
/// both paths.
struct Awaited {
    store: Arc<dyn AsyncStore>,
    runtime: tokio::runtime::Handle,
}

impl fmt::Debug for Awaited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.store, f)
    }
}

impl Store for Awaited {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.runtime.block_on(self.store.store(key, value, ttl))
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.runtime.block_on(self.store.retrieve(key))
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        self.runtime.block_on(self.store.invalidate(key))
    }

    fn clear(&self) -> Result<()> {
        self.runtime.block_on(self.store.clear())
    }

    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.runtime.block_on(self.store.retrieve_many(keys))
    }

    fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.runtime.block_on(self.store.store_many(entries, ttl))
    }

    fn lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Lease> {
        self.runtime.block_on(self.store.lease(key, token, ttl))
    }

    fn release(&self, key: &str, token: &str) -> Result<()> {
        self.runtime.block_on(self.store.release(key, token))
    }
}

type Check = fn(&Subject<'_>, Time<'_>);

/// The runtime the async path's checks run on: two workers, as a service would have.
fn test_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the async path")
}

/// Runs every check on `backend`, through the synchronous path and then through the async one;
/// panics with a message naming the check and the path that failed.
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
    let runtime = test_runtime();
    for (path, runtime) in [("sync", None), ("async", Some(&runtime))] {
        let subject = Subject { backend, runtime };
        for (name, check) in checks {
            eprintln!("testkit ({path} path): {name}");
            check(&subject, time);
        }
    }
}

/// Checks the lease contract of a backend that other processes share ([`Store::lease`]):
/// one holder at a time, a release that checks its token, leases that expire, apart from the
/// entries and from other containers. Through both paths, as [`run`].
pub fn leases(backend: &dyn Backend, time: Time<'_>) {
    let runtime = test_runtime();
    for (path, runtime) in [("sync", None), ("async", Some(&runtime))] {
        eprintln!("testkit ({path} path): leases");
        let subject = Subject { backend, runtime };
        lease_contract(&subject, time);
    }
}

fn lease_contract(s: &Subject<'_>, time: Time<'_>) {
    let c = unique("lease");
    let store = s.open(&c);
    let lease = |key: &str, token: &str, ttl: Duration| {
        store
            .lease(key, token, ttl)
            .unwrap_or_else(|e| panic!("lease({key:?}, {token:?}) failed: {e}"))
    };
    let release = |key: &str, token: &str| {
        store
            .release(key, token)
            .unwrap_or_else(|e| panic!("release({key:?}, {token:?}) failed: {e}"));
    };
    let long = Duration::from_secs(3600);
    assert_eq!(
        lease("k", "a", long),
        Lease::Acquired,
        "a free lease is taken"
    );
    assert_eq!(
        lease("k", "b", long),
        Lease::Held,
        "a held lease is refused"
    );
    assert_eq!(lease("k", "a", long), Lease::Held, "even to its own token");
    release("k", "b");
    assert_eq!(
        lease("k", "c", long),
        Lease::Held,
        "another token's release leaves it"
    );
    assert_eq!(get(s, &c, "k"), None, "a lease is not an entry");
    put(s, &c, "k", b"value", None);
    assert_eq!(get(s, &c, "k").as_deref(), Some(&b"value"[..]));
    assert_eq!(
        lease("k", "d", long),
        Lease::Held,
        "storing the key keeps the lease"
    );
    release("k", "a");
    assert_eq!(
        lease("k", "b", long),
        Lease::Acquired,
        "released, it is free"
    );
    release("k", "b");
    release("k", "b");
    release("never-leased", "x");
    assert_eq!(
        lease("other", "a", long),
        Lease::Acquired,
        "leases are per key"
    );
    let other = unique("lease-other");
    assert_eq!(
        s.open(&other)
            .lease("k", "z", long)
            .expect("lease in another container"),
        Lease::Acquired,
        "leases are per container"
    );
    let ttl = ttl(time);
    assert_eq!(lease("short", "a", ttl), Lease::Acquired);
    pass(time, ttl / 2);
    assert_eq!(lease("short", "b", ttl), Lease::Held, "held before its ttl");
    pass(time, ttl);
    assert_eq!(
        lease("short", "b", ttl),
        Lease::Acquired,
        "free after its ttl"
    );
    release("short", "a");
    assert_eq!(
        lease("short", "c", ttl),
        Lease::Held,
        "the late holder cannot release the new one's"
    );
    store.clear().expect("clear");
    assert_eq!(
        lease("fresh", "a", long),
        Lease::Acquired,
        "clear leaves leases usable"
    );
    for (key, token) in [("other", "a"), ("short", "b"), ("fresh", "a")] {
        release(key, token);
        assert_eq!(lease(key, "y", long), Lease::Acquired, "{key} released");
        release(key, "y");
    }
    s.open(&other).release("k", "z").expect("release");
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

fn get(s: &Subject<'_>, container: &str, key: &str) -> Option<Vec<u8>> {
    s.open(container)
        .retrieve(key)
        .unwrap_or_else(|e| panic!("retrieve({container:?}, {key:?}) failed: {e}"))
}

fn put(s: &Subject<'_>, container: &str, key: &str, value: &[u8], ttl: Option<Duration>) {
    s.open(container)
        .store(key, value, ttl)
        .unwrap_or_else(|e| panic!("store({container:?}, {key:?}) failed: {e}"));
}

fn missing_is_none(s: &Subject<'_>, _: Time<'_>) {
    assert_eq!(get(s, &unique("missing"), "nothing"), None);
}

fn store_then_retrieve(s: &Subject<'_>, _: Time<'_>) {
    let c = unique("store");
    put(s, &c, "k", b"value", None);
    assert_eq!(get(s, &c, "k").as_deref(), Some(&b"value"[..]));
    assert_eq!(get(s, &c, "other"), None);
    assert_eq!(
        read_in_place(s, &c, "k").as_deref(),
        Some(&b"value"[..]),
        "retrieve_with"
    );
    assert_eq!(
        read_in_place(s, &c, "other"),
        None,
        "retrieve_with on a miss"
    );
}

/// What `retrieve_with` hands its reader, checking it calls the reader exactly when it finds.
fn read_in_place(s: &Subject<'_>, container: &str, key: &str) -> Option<Vec<u8>> {
    let mut seen = Vec::new();
    let found = s
        .open(container)
        .retrieve_with(key, &mut |bytes| seen.push(bytes.to_vec()))
        .unwrap_or_else(|e| panic!("retrieve_with({container:?}, {key:?}) failed: {e}"));
    assert_eq!(
        seen.len(),
        usize::from(found),
        "the reader is called once exactly when found"
    );
    seen.pop()
}

fn store_replaces(s: &Subject<'_>, _: Time<'_>) {
    let c = unique("replace");
    put(s, &c, "k", b"first", None);
    put(s, &c, "k", b"second, longer", None);
    assert_eq!(get(s, &c, "k").as_deref(), Some(&b"second, longer"[..]));
}

fn invalidate(s: &Subject<'_>, _: Time<'_>) {
    let c = unique("invalidate");
    put(s, &c, "k", b"v", None);
    put(s, &c, "kept", b"v", None);
    s.open(&c).invalidate("k").expect("invalidate");
    assert_eq!(get(s, &c, "k"), None);
    assert_eq!(get(s, &c, "kept").as_deref(), Some(&b"v"[..]));
    s.open(&c)
        .invalidate("k")
        .expect("invalidating a missing key is not an error");
    s.open(&unique("never-used"))
        .invalidate("k")
        .expect("invalidating in an unused container is not an error");
}

fn containers_are_isolated(s: &Subject<'_>, _: Time<'_>) {
    let base = unique("iso");
    // Names that a naive "container:key" concatenation would confuse.
    let pairs = [
        (format!("{base}:a"), "b:c".to_owned()),
        (format!("{base}:a:b"), "c".to_owned()),
        (base.clone(), "a:b:c".to_owned()),
        (format!("{base}:a:b:c"), String::new()),
    ];
    for (i, (c, k)) in pairs.iter().enumerate() {
        put(s, c, k, format!("value {i}").as_bytes(), None);
    }
    for (i, (c, k)) in pairs.iter().enumerate() {
        assert_eq!(
            get(s, c, k),
            Some(format!("value {i}").into_bytes()),
            "container {c:?}, key {k:?}"
        );
    }
}

fn clear_one_container(s: &Subject<'_>, _: Time<'_>) {
    let (a, b) = (unique("clear-a"), unique("clear-b"));
    for key in ["1", "2", "3"] {
        put(s, &a, key, b"a", None);
        put(s, &b, key, b"b", None);
    }
    s.open(&a).clear().expect("clear");
    for key in ["1", "2", "3"] {
        assert_eq!(get(s, &a, key), None, "cleared key {key:?}");
        assert_eq!(
            get(s, &b, key).as_deref(),
            Some(&b"b"[..]),
            "other container's key {key:?}"
        );
    }
    s.open(&unique("never-used"))
        .clear()
        .expect("clearing an unused container");
}

fn expiry(s: &Subject<'_>, time: Time<'_>) {
    let c = unique("expiry");
    let ttl = ttl(time);
    put(s, &c, "short", b"v", Some(ttl));
    put(s, &c, "long", b"v", Some(ttl * 10));
    assert_eq!(
        get(s, &c, "short").as_deref(),
        Some(&b"v"[..]),
        "fresh entry"
    );
    if let Time::Manual(_) = time {
        pass(time, ttl - Duration::from_millis(1));
        assert_eq!(
            get(s, &c, "short").as_deref(),
            Some(&b"v"[..]),
            "1 ms before its ttl"
        );
        pass(time, Duration::from_millis(1));
    } else {
        pass(time, ttl + Duration::from_millis(200));
    }
    assert_eq!(read_in_place(s, &c, "short"), None, "at its ttl, in place");
    assert_eq!(get(s, &c, "short"), None, "at its ttl");
    assert_eq!(
        get(s, &c, "long").as_deref(),
        Some(&b"v"[..]),
        "the longer ttl"
    );
    assert_eq!(
        s.open(&c)
            .retrieve_many(&["short", "long"])
            .expect("retrieve_many"),
        vec![None, Some(b"v".to_vec())],
        "batch look-ups honour expiry too"
    );
}

fn no_ttl_never_expires(s: &Subject<'_>, time: Time<'_>) {
    let c = unique("forever");
    put(s, &c, "k", b"v", None);
    match time {
        Time::Manual(_) => pass(time, Duration::from_secs(100 * 365 * 86_400)),
        Time::Real => pass(time, ttl(time) + Duration::from_millis(200)),
    }
    assert_eq!(get(s, &c, "k").as_deref(), Some(&b"v"[..]));
}

fn restore_replaces_ttl(s: &Subject<'_>, time: Time<'_>) {
    let c = unique("rettl");
    put(s, &c, "k", b"v1", Some(ttl(time)));
    put(s, &c, "k", b"v2", None);
    pass(time, ttl(time) + Duration::from_millis(200));
    assert_eq!(
        get(s, &c, "k").as_deref(),
        Some(&b"v2"[..]),
        "the second store had no ttl"
    );
    put(s, &c, "k", b"v3", Some(ttl(time)));
    pass(time, ttl(time) + Duration::from_millis(200));
    assert_eq!(get(s, &c, "k"), None, "the third store had a ttl");
}

fn purge_keeps_live(s: &Subject<'_>, time: Time<'_>) {
    let c = unique("purge");
    put(s, &c, "dies", b"v", Some(ttl(time)));
    put(s, &c, "lives", b"v", Some(ttl(time) * 10));
    put(s, &c, "forever", b"v", None);
    pass(time, ttl(time) + Duration::from_millis(200));
    s.backend.purge_expired().expect("purge_expired");
    assert_eq!(get(s, &c, "dies"), None);
    assert_eq!(get(s, &c, "lives").as_deref(), Some(&b"v"[..]));
    assert_eq!(get(s, &c, "forever").as_deref(), Some(&b"v"[..]));
}

fn batches(s: &Subject<'_>, _: Time<'_>) {
    let c = unique("batch");
    let keys: Vec<String> = (0..16).map(|i| format!("key {i}")).collect();
    let entries: Vec<(&str, Vec<u8>)> = keys
        .iter()
        .step_by(2)
        .map(|k| (k.as_str(), k.as_bytes().to_vec()))
        .collect();
    let borrowed: Vec<(&str, &[u8])> = entries.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    s.open(&c).store_many(&borrowed, None).expect("store_many");
    let asked: Vec<&str> = keys.iter().map(String::as_str).rev().collect();
    let found = s.open(&c).retrieve_many(&asked).expect("retrieve_many");
    assert_eq!(found.len(), asked.len(), "one answer per key");
    for (key, value) in asked.iter().zip(found) {
        let index: usize = key[4..].parse().expect("key index");
        let expected = index.is_multiple_of(2).then(|| key.as_bytes().to_vec());
        assert_eq!(value, expected, "key {key:?}");
    }
    assert_eq!(
        s.open(&c).retrieve_many(&[]).expect("an empty batch"),
        Vec::<Option<Vec<u8>>>::new()
    );
    let repeated = s
        .open(&c)
        .retrieve_many(&["key 0", "key 0"])
        .expect("a repeated key");
    assert_eq!(
        repeated,
        vec![Some(b"key 0".to_vec()), Some(b"key 0".to_vec())]
    );
}

fn odd_keys_and_values(s: &Subject<'_>, _: Time<'_>) {
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
        put(s, &c, key, value, None);
    }
    for (key, value) in cases {
        assert_eq!(get(s, &c, key).as_deref(), Some(value), "key {key:?}");
    }
    assert_eq!(get(s, &c, "spaces"), None, "keys are compared exactly");
    assert_eq!(get(s, &c, "BINARY"), None, "keys are case-sensitive");
}

fn large_keys_and_values(s: &Subject<'_>, _: Time<'_>) {
    let c = unique("large");
    let long_key = "k".repeat(64 * 1024);
    let other_long_key = format!("{}j", "k".repeat(64 * 1024 - 1));
    let big_value: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    put(s, &c, &long_key, b"long key", None);
    put(s, &c, &other_long_key, b"other long key", None);
    put(s, &c, "big", &big_value, None);
    assert_eq!(get(s, &c, &long_key).as_deref(), Some(&b"long key"[..]));
    assert_eq!(
        get(s, &c, &other_long_key).as_deref(),
        Some(&b"other long key"[..])
    );
    assert_eq!(get(s, &c, "big"), Some(big_value));
}

fn threads(s: &Subject<'_>, _: Time<'_>) {
    let c = unique("threads");
    thread::scope(|scope| {
        for t in 0..8 {
            let c = &c;
            scope.spawn(move || {
                for i in 0..50 {
                    let key = format!("{t}/{i}");
                    put(s, c, &key, key.as_bytes(), None);
                    assert_eq!(get(s, c, &key).as_deref(), Some(key.as_bytes()));
                }
            });
        }
    });
    let mut seen = BTreeMap::new();
    for t in 0..8 {
        for i in 0..50 {
            let key = format!("{t}/{i}");
            seen.insert(key.clone(), get(s, &c, &key));
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
    let number_bytes = open(&backend, &other)
        .retrieve("n")
        .expect("retrieve")
        .expect("the number's bytes");
    strings
        .set("s", &"a valid string".to_owned())
        .expect("set a string");
    let string_bytes = open(&backend, &name)
        .retrieve("s")
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
        open(&backend, &name)
            .store(&key, bytes, None)
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
    // The same through the async path.
    let runtime = test_runtime();
    let awaited = strings.to_async();
    for (index, (what, bytes)) in cases.iter().enumerate() {
        let key = format!("async key {index}");
        open(&backend, &name)
            .store(&key, bytes, None)
            .expect("store corrupt bytes");
        runtime.block_on(async {
            assert_eq!(
                awaited.peek(&key).await.expect("peek"),
                None,
                "{what} is a miss (async)"
            );
            assert_eq!(
                awaited.get(&key).await.expect("get"),
                generate(&key),
                "{what} is regenerated (async)"
            );
            assert_eq!(
                awaited.peek(&key).await.expect("peek").as_deref(),
                Some(generate(&key).as_str()),
                "{what} is overwritten (async)"
            );
        });
    }
    let stats = strings.stats();
    assert_eq!(
        stats.undecodable,
        4 * cases.len() as u64,
        "each corrupt value is counted (peek and get, on both paths)"
    );
    assert_eq!(stats.generations, 2 * cases.len() as u64);
    strings.clear().expect("clear");
    numbers.clear().expect("clear");
}

fn open(backend: &Arc<dyn Backend>, container: &str) -> Arc<dyn Store> {
    backend
        .open(container)
        .unwrap_or_else(|e| panic!("open({container:?}) failed: {e}"))
        .sync_store()
}
