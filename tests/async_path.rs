//! The async path: single flight across tasks and threads, cancellation, panics, shared errors,
//! batches, fail-open, and an executor that is never blocked. Every test runs under a timeout, so
//! a hang is a failure.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Counting, Flaky};
use kvcache::{AsyncContainer, Backend, Config, Error, KvCache};

/// The bound that turns a hang into a failure; no test comes near it when it passes.
const HANG: Duration = Duration::from_secs(60);

fn cache() -> KvCache {
    kvcache::init([("backend.mem", "variable"), ("container.c.backend", "mem")]).unwrap()
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `test` on `runtime` under the hang bound.
fn run<F: Future<Output = ()>>(runtime: &tokio::runtime::Runtime, test: F) {
    runtime
        .block_on(async { tokio::time::timeout(HANG, test).await })
        .expect("the test hung");
}

/// A cache whose container `c` has an async generator that sleeps `delay`, counting its calls.
fn slow_generator(delay: Duration) -> (KvCache, Arc<AtomicUsize>) {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    cache
        .register_async_generator("c", move |key: String| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                format!("value of {key}")
            }
        })
        .unwrap();
    (cache, calls)
}

fn stampede(runtime: &tokio::runtime::Runtime) {
    let (cache, calls) = slow_generator(Duration::from_millis(50));
    let container = cache.async_container::<String>("c").unwrap();
    run(runtime, async {
        let tasks: Vec<_> = (0..10_000)
            .map(|_| {
                let container = container.clone();
                tokio::spawn(async move { container.get("hot").await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "value of hot");
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1, "generator calls");
    let stats = container.stats();
    assert_eq!(stats.generations, 1);
    // Every task looked up once; those that missed waited for that one generation, or found its
    // flight landed and its value stored when they looked again.
    assert_eq!(stats.hits + stats.misses, 10_000, "{stats:?}");
    assert!(stats.waits < stats.misses, "{stats:?}");
}

#[test]
fn ten_thousand_tasks_on_a_current_thread_runtime_call_the_generator_once() {
    stampede(&current_thread());
}

#[test]
fn ten_thousand_tasks_on_a_multi_thread_runtime_call_the_generator_once() {
    stampede(&multi_thread());
}

#[test]
fn a_leader_dropped_mid_generation_leaves_it_to_finish_for_everyone() {
    let (cache, calls) = slow_generator(Duration::from_millis(300));
    let container = cache.async_container::<String>("c").unwrap();
    run(&multi_thread(), async {
        // The first caller leads, then gives up (a timeout, a client that hung up).
        let leader = tokio::time::timeout(Duration::from_millis(20), container.get("k")).await;
        assert!(leader.is_err(), "the leader timed out");
        // Callers that come after it join the generation under way instead of starting one.
        let (a, b) = tokio::join!(container.get("k"), container.get("k"));
        assert_eq!(a.unwrap(), "value of k");
        assert_eq!(b.unwrap(), "value of k");
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1, "generator calls");
    assert_eq!(
        container.to_sync().peek("k").unwrap().as_deref(),
        Some("value of k"),
        "the abandoned leader's generation was stored"
    );
}

#[test]
fn a_leader_never_polled_again_stalls_no_waiter() {
    // moka #240: a leader future that is created, polled once and then neither polled nor
    // dropped must not hold up the callers waiting for its key.
    let (cache, calls) = slow_generator(Duration::from_millis(50));
    let container = cache.async_container::<String>("c").unwrap();
    run(&multi_thread(), async {
        let mut stalled = Box::pin(container.get("k"));
        let polled = futures_poll_once(stalled.as_mut()).await;
        assert!(polled.is_none(), "the generation takes 50 ms");
        assert_eq!(container.get("k").await.unwrap(), "value of k");
        // The stalled future is still alive here.
        drop(stalled);
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Polls `future` once, returning its output if it was ready.
async fn futures_poll_once<F: Future + Unpin>(future: F) -> Option<F::Output> {
    let mut future = future;
    std::future::poll_fn(|context| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(context) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[test]
fn a_panicking_async_generator_fails_every_caller_stores_nothing_and_leaves_the_cache_usable() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    cache
        .register_async_generator("c", move |key: String| {
            let counter = Arc::clone(&counter);
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("the upstream client panicked");
                }
                format!("value of {key}")
            }
        })
        .unwrap();
    let container = cache.async_container::<String>("c").unwrap();
    run(&multi_thread(), async {
        let results = futures_join(&container, "k", 20).await;
        for result in results {
            let error = result.unwrap_err();
            assert!(matches!(error, Error::Generator { .. }), "{error}");
            let cause = std::error::Error::source(&error).unwrap().to_string();
            assert!(cause.contains("panicked"), "{cause}");
        }
        assert_eq!(container.peek("k").await.unwrap(), None, "nothing stored");
        assert_eq!(container.get("k").await.unwrap(), "value of k");
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(container.stats().generator_errors, 1);
}

/// `n` concurrent `get(key)`s of `container`, in one task.
async fn futures_join(
    container: &AsyncContainer<String>,
    key: &str,
    n: usize,
) -> Vec<kvcache::Result<String>> {
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (container, key) = (container.clone(), key.to_owned());
        tasks.push(tokio::spawn(async move { container.get(&key).await }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[derive(Debug, PartialEq)]
struct UpstreamDown {
    status: u16,
}

impl std::fmt::Display for UpstreamDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the upstream answered {}", self.status)
    }
}

impl std::error::Error for UpstreamDown {}

#[test]
fn every_waiter_gets_the_generators_own_error_to_downcast() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    cache
        .register_fallible_async_generator("c", move |_key: String| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err::<String, _>(UpstreamDown { status: 503 })
            }
        })
        .unwrap();
    let container = cache.async_container::<String>("c").unwrap();
    run(&multi_thread(), async {
        for result in futures_join(&container, "k", 32).await {
            let error = result.unwrap_err();
            let Error::Generator { source, .. } = &error else {
                panic!("{error}");
            };
            assert_eq!(
                source.downcast_ref::<UpstreamDown>(),
                Some(&UpstreamDown { status: 503 }),
                "every caller can downcast the one error"
            );
            let via_source = std::error::Error::source(&error).unwrap();
            assert!(via_source.downcast_ref::<UpstreamDown>().is_some());
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_thread_and_a_task_missing_one_key_share_one_generation() {
    let cache = cache();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let handle = Arc::new(std::sync::OnceLock::<kvcache::Container<String>>::new());
    let seen = Arc::clone(&handle);
    cache
        .register_async_generator("c", move |key: String| {
            let (counter, seen) = (Arc::clone(&counter), Arc::clone(&seen));
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                // Return only once the other caller waits on this generation.
                let deadline = Instant::now() + HANG;
                while seen.get().map_or(0, |c| c.stats().waits) < 1 {
                    assert!(Instant::now() < deadline, "the other caller never waited");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                format!("value of {key}")
            }
        })
        .unwrap();
    let container = cache.container::<String>("c").unwrap();
    handle.set(container.clone()).unwrap();
    let runtime = multi_thread();
    let thread = {
        let container = container.clone();
        std::thread::spawn(move || container.get("k"))
    };
    run(&runtime, async {
        assert_eq!(container.to_async().get("k").await.unwrap(), "value of k");
    });
    assert_eq!(thread.join().unwrap().unwrap(), "value of k");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_sync_generator_runs_off_the_executor_and_its_panic_is_an_error_for_async_callers() {
    let cache = cache();
    cache
        .register_generator("c", |key: &str| {
            assert_ne!(key, "boom", "the generator panicked on purpose");
            std::thread::sleep(Duration::from_millis(20));
            format!("value of {key}")
        })
        .unwrap();
    let container = cache.async_container::<String>("c").unwrap();
    run(&current_thread(), async {
        assert_eq!(container.get("k").await.unwrap(), "value of k");
        let error = container.get("boom").await.unwrap_err();
        assert!(matches!(error, Error::Generator { .. }), "{error}");
        assert_eq!(container.get("k2").await.unwrap(), "value of k2");
    });
}

#[test]
fn get_many_stores_its_misses_in_one_batch_on_both_paths() {
    let backend = Arc::new(Counting::default());
    let config = Config::from_pairs([("container.c.backend", "counting")]).unwrap();
    let cache = KvCache::builder(config)
        .backend("counting", Arc::clone(&backend) as Arc<dyn Backend>)
        .build()
        .unwrap();
    cache
        .register_async_generator("c", |key: String| async move { format!("value of {key}") })
        .unwrap();
    let container = cache.container::<String>("c").unwrap();
    container.set("b", &"stored b".to_owned()).unwrap();
    let calls = &backend.calls;
    calls.stores.store(0, Ordering::SeqCst);

    let values = container.get_many(&["a", "b", "c", "d"]).unwrap();
    assert_eq!(
        values,
        ["value of a", "stored b", "value of c", "value of d"]
    );
    assert_eq!(calls.store_manys.load(Ordering::SeqCst), 1, "one batch");
    assert_eq!(calls.stores.load(Ordering::SeqCst), 0, "no single stores");

    run(&multi_thread(), async {
        let values = container
            .to_async()
            .get_many(&["e", "b", "f", "e"])
            .await
            .unwrap();
        assert_eq!(
            values,
            ["value of e", "stored b", "value of f", "value of e"]
        );
    });
    assert_eq!(
        calls.store_manys.load(Ordering::SeqCst),
        2,
        "one more batch"
    );
    assert_eq!(calls.stores.load(Ordering::SeqCst), 0);
    assert_eq!(container.stats().generations, 5, "a, c, d, e, f: e once");
}

#[test]
fn fail_open_serves_the_generator_on_the_async_path() {
    let flaky = Arc::new(Flaky::default());
    let config = Config::from_pairs([
        ("container.c.backend", "flaky"),
        ("container.c.on_backend_error", "generate"),
    ])
    .unwrap();
    let cache = KvCache::builder(config)
        .backend("flaky", Arc::clone(&flaky) as Arc<dyn Backend>)
        .build()
        .unwrap();
    cache
        .register_async_generator("c", |key: String| async move { format!("fresh {key}") })
        .unwrap();
    let container = cache.async_container::<String>("c").unwrap();
    run(&multi_thread(), async {
        flaky.down.reads.store(true, Ordering::SeqCst);
        flaky.down.writes.store(true, Ordering::SeqCst);
        assert_eq!(container.get("k").await.unwrap(), "fresh k");
        assert_eq!(
            container.get_many(&["a", "b"]).await.unwrap(),
            ["fresh a", "fresh b"]
        );
        assert!(
            container.peek("k").await.is_err(),
            "peek still reports the error"
        );
        assert!(container.set("k", &"v".to_owned()).await.is_err());
        flaky.down.reads.store(false, Ordering::SeqCst);
        flaky.down.writes.store(false, Ordering::SeqCst);
        assert_eq!(
            container.peek("k").await.unwrap(),
            None,
            "nothing was stored"
        );
        assert_eq!(container.get("k").await.unwrap(), "fresh k");
        assert_eq!(
            container.peek("k").await.unwrap().as_deref(),
            Some("fresh k")
        );
    });
}
