//! Concurrent misses on one key run the generator once; misses on different keys never wait.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use kvcache::{Container, Error, KvCache};

const THREADS: usize = 64;

fn cache() -> KvCache {
    kvcache::init([("backend.mem", "variable"), ("container.c.backend", "mem")]).unwrap()
}

/// Blocks until `handle`'s container has counted `waits` waiting callers. The bound only turns a
/// broken single flight into a failure instead of a hang; it is not a timing assertion.
fn until_waits(handle: &OnceLock<Container<String>>, waits: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while handle.get().map_or(0, |c| c.stats().waits) < waits {
        assert!(Instant::now() < deadline, "the other callers never waited");
        thread::yield_now();
    }
}

/// Runs `get(key)` on `THREADS` threads released together; returns their results.
fn stampede(container: &Container<String>, key: &str) -> Vec<Result<String, Error>> {
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    container.get(key)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
            .collect()
    })
}

/// What a caller whose generator panicked reports in these tests.
fn panicked() -> Error {
    Error::NotFound {
        container: "the caller panicked".into(),
        key: String::new(),
    }
}

#[test]
fn sixty_four_threads_missing_one_key_call_the_generator_once() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = Arc::new(OnceLock::new());
    let (c, h) = (Arc::clone(&calls), Arc::clone(&handle));
    cache
        .register_generator("c", move |key: &str| {
            c.fetch_add(1, Ordering::SeqCst);
            // Return only once every other caller is waiting on this call.
            until_waits(&h, THREADS as u64 - 1);
            format!("value of {key}")
        })
        .unwrap();
    let container = cache.container::<String>("c").unwrap();
    handle.set(container.clone()).unwrap();

    let results = stampede(&container, "hot");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "generator calls");
    for result in results {
        assert_eq!(result.unwrap(), "value of hot");
    }
    let stats = container.stats();
    assert_eq!((stats.generations, stats.waits), (1, THREADS as u64 - 1));
    assert_eq!(
        container.peek("hot").unwrap().as_deref(),
        Some("value of hot")
    );
}

#[test]
fn misses_on_different_keys_never_wait_for_each_other() {
    let cache = cache();
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    cache
        .register_generator("c", move |key: &str| {
            if key == "slow" {
                // Finishes only after the generator of "fast" has run: if "fast" waited on this
                // flight, neither would finish and the receive would time out.
                let received = rx.lock().unwrap().recv_timeout(Duration::from_secs(30));
                assert!(
                    received.is_ok(),
                    "the miss on \"fast\" waited for the one on \"slow\""
                );
            } else {
                tx.send(()).unwrap();
            }
            key.to_owned()
        })
        .unwrap();
    let container = cache.container::<String>("c").unwrap();
    thread::scope(|scope| {
        let slow = scope.spawn(|| container.get("slow"));
        let fast = scope.spawn(|| container.get("fast"));
        assert_eq!(fast.join().unwrap().unwrap(), "fast");
        assert_eq!(slow.join().unwrap().unwrap(), "slow");
    });
    assert_eq!(container.stats().waits, 0);
}

#[test]
fn a_failing_generator_releases_its_waiters_with_an_error_and_stores_nothing() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = Arc::new(OnceLock::new());
    let (c, h) = (Arc::clone(&calls), Arc::clone(&handle));
    cache
        .register_fallible_generator("c", move |key: &str| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                until_waits(&h, THREADS as u64 - 1);
                Err(format!("the service behind {key} is down"))
            } else {
                Ok(format!("value of {key}"))
            }
        })
        .unwrap();
    let container = cache.container::<String>("c").unwrap();
    handle.set(container.clone()).unwrap();

    for result in stampede(&container, "k") {
        let error = result.unwrap_err();
        assert!(matches!(error, Error::Generator { .. }), "{error:?}");
        let source = std::error::Error::source(&error).unwrap().to_string();
        assert!(source.contains("the service behind k is down"), "{source}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(container.peek("k").unwrap(), None, "nothing was stored");
    assert_eq!(container.stats().generator_errors, 1);
    assert_eq!(
        container.get("k").unwrap(),
        "value of k",
        "the next get generates again"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_panicking_generator_releases_its_waiters_and_leaves_the_cache_usable() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let handle = Arc::new(OnceLock::new());
    let (c, h) = (Arc::clone(&calls), Arc::clone(&handle));
    cache
        .register_generator("c", move |key: &str| {
            if c.fetch_add(1, Ordering::SeqCst) == 0 {
                until_waits(&h, THREADS as u64 - 1);
                panic!("generator bug on {key}");
            }
            format!("value of {key}")
        })
        .unwrap();
    let container = cache.container::<String>("c").unwrap();
    handle.set(container.clone()).unwrap();

    let results = stampede(&container, "k");
    let panics = results
        .iter()
        .filter(|r| matches!(r, Err(Error::NotFound { container, .. }) if container == "the caller panicked"))
        .count();
    assert_eq!(
        panics, 1,
        "the panic reaches the caller that ran the generator"
    );
    let released: Vec<String> = results
        .into_iter()
        .filter_map(|r| match r {
            Err(Error::Generator { source, .. }) => Some(source.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(released.len(), THREADS - 1, "every waiter gets an error");
    assert!(
        released.iter().all(|s| s.contains("panicked")),
        "{released:?}"
    );
    assert_eq!(container.peek("k").unwrap(), None, "nothing was stored");
    assert_eq!(
        container.get("k").unwrap(),
        "value of k",
        "the cache is still usable"
    );
    assert_eq!(container.get("other").unwrap(), "value of other");
    let stats = container.stats();
    assert_eq!((stats.generator_errors, stats.generations), (1, 2));
}

/// An in-memory backend whose next `retrieve` misses, then waits for a signal before returning:
/// the window between a caller's look-up and its flight, held open.
#[derive(Debug, Default)]
struct SlowMiss {
    inner: kvcache::variable::VariableBackend,
    hold: Arc<Hold>,
}

#[derive(Debug, Default)]
struct Hold {
    next: std::sync::atomic::AtomicBool,
    release: std::sync::Mutex<Option<mpsc::Receiver<()>>>,
}

#[derive(Debug)]
struct SlowStore {
    inner: Arc<dyn kvcache::MemoryStore>,
    hold: Arc<Hold>,
}

impl kvcache::Backend for SlowMiss {
    fn open(&self, container: &str) -> kvcache::Result<kvcache::Space> {
        let inner = self
            .inner
            .open(container)?
            .memory_store()
            .expect("in memory");
        Ok(kvcache::Space::Memory(Arc::new(SlowStore {
            inner,
            hold: Arc::clone(&self.hold),
        })))
    }
    fn purge_expired(&self) -> kvcache::Result<()> {
        self.inner.purge_expired()
    }
}

impl kvcache::MemoryStore for SlowStore {
    fn insert(&self, k: &str, v: kvcache::Held, weight: u64, ttl: Option<Duration>) {
        self.inner.insert(k, v, weight, ttl);
    }
    fn get_with(&self, k: &str, read: &mut dyn FnMut(&kvcache::Held)) -> bool {
        let found = self.inner.get_with(k, read);
        if self.hold.next.swap(false, Ordering::SeqCst) {
            let release = self.hold.release.lock().unwrap().take().unwrap();
            release
                .recv_timeout(Duration::from_secs(30))
                .expect("released");
        }
        found
    }
    fn remove(&self, k: &str) {
        self.inner.remove(k);
    }
    fn clear(&self) {
        self.inner.clear();
    }
}

#[test]
fn a_value_generated_between_a_look_up_and_its_flight_is_not_generated_again() {
    let (release, released) = mpsc::channel();
    let backend = Arc::new(SlowMiss::default());
    *backend.hold.release.lock().unwrap() = Some(released);
    let config = kvcache::Config::from_pairs([("container.c.backend", "slow")]).unwrap();
    let cache = KvCache::builder(config)
        .backend("slow", Arc::clone(&backend) as Arc<dyn kvcache::Backend>)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    cache
        .register_generator("c", move |key: &str| {
            counter.fetch_add(1, Ordering::SeqCst);
            format!("value of {key}")
        })
        .unwrap();
    let container = cache.container::<String>("c").unwrap();
    backend.hold.next.store(true, Ordering::SeqCst);
    thread::scope(|scope| {
        // A misses, and is held before it can start a flight.
        let a = scope.spawn(|| container.get("k"));
        while backend.hold.next.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        // B misses, generates, stores and lands its flight meanwhile.
        assert_eq!(container.get("k").unwrap(), "value of k");
        release.send(()).unwrap();
        assert_eq!(a.join().unwrap().unwrap(), "value of k");
    });
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "A found B's value instead of generating"
    );
}
