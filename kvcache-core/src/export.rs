//! Metrics export through the `metrics` facade, behind the `metrics` feature.
//!
//! Each container registers its handles once, when its slot is made: a counter per event of
//! [`Stats`](crate::Stats), labelled `container` and `backend`, a histogram of its generator's
//! calls, one of its native store's calls per operation, and, on an in-memory backend, the
//! backend's own eviction counters, set to their absolute values by a refresher thread. A hit
//! then pays one more counter increment through a handle it already holds: no label, no
//! allocation, no look-up in the recorder.
//!
//! Without the feature every type here is empty and every call does nothing.

use std::sync::Arc;

use crate::backend::{BoxFuture, Space};
use crate::memory::{Evictions, MemoryStore};
use crate::stats::{EVENTS, Event};

#[cfg(feature = "metrics")]
pub(crate) use enabled::{Export, Stopwatch, timed};

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::{Export, Stopwatch, timed};

/// The counter of each [`Event`], in the order of its discriminant, with its help text.
const COUNTERS: [(Event, &str, &str); EVENTS] = [
    (
        Event::Hit,
        "kvcache_hits_total",
        "Look-ups that found a value.",
    ),
    (
        Event::Miss,
        "kvcache_misses_total",
        "Look-ups that found nothing usable: absent, expired or undecodable.",
    ),
    (
        Event::Undecodable,
        "kvcache_undecodable_total",
        "Stored values that did not decode as the container's type; each is also a miss.",
    ),
    (
        Event::Generation,
        "kvcache_generations_total",
        "Generator calls that returned a value.",
    ),
    (
        Event::GeneratorError,
        "kvcache_generator_errors_total",
        "Generator calls that failed or panicked.",
    ),
    (
        Event::BackendError,
        "kvcache_backend_errors_total",
        "Backend calls that failed.",
    ),
    (
        Event::Wait,
        "kvcache_waits_total",
        "Callers that waited for another caller's generator instead of running their own.",
    ),
    (
        Event::FastFailure,
        "kvcache_fast_failures_total",
        "Backend calls refused at once by the backend's circuit breaker during an outage; each is also a backend error.",
    ),
    (
        Event::LeaseWait,
        "kvcache_lease_waits_total",
        "Keys a caller waited for because another process held their lease.",
    ),
    (
        Event::LeaseTakeover,
        "kvcache_lease_takeovers_total",
        "Keys a waiting caller generated itself: their lease was given up or expired without a value.",
    ),
    (
        Event::StaleServed,
        "kvcache_stale_served_total",
        "Values served past their expiry because the generator failed or its failure is remembered.",
    ),
    (
        Event::Refresh,
        "kvcache_refreshes_total",
        "Background refreshes started, past the refresh interval or drawn early by XFetch.",
    ),
    (
        Event::ErrorCached,
        "kvcache_errors_cached_total",
        "Generator failures remembered in the store, and remembered failures returned.",
    ),
];

// Each counter sits at its event's discriminant, which `Export::count` indexes by.
const _: () = {
    let mut index = 0;
    while index < COUNTERS.len() {
        assert!(COUNTERS[index].0 as usize == index);
        index += 1;
    }
};

#[cfg(feature = "metrics")]
mod enabled {
    use std::fmt;
    use std::future::Future;
    use std::sync::{Mutex, PoisonError, Weak};
    use std::thread;
    use std::time::{Duration, Instant};

    use metrics::{Counter, Histogram, Label, Unit};

    use super::{Arc, BoxFuture, COUNTERS, Event, Evictions, MemoryStore, Space};
    use crate::backend::{AsyncStore, Lease, Store};
    use crate::error::Result;

    const EVICTIONS: &str = "kvcache_evictions_total";
    const GENERATOR: &str = "kvcache_generator_seconds";
    const BACKEND: &str = "kvcache_backend_seconds";

    /// How often the refresher sets the eviction counters to the backends' own counts.
    const REFRESH: Duration = Duration::from_secs(1);

    /// Sends the help text of every series to the recorder. Called per container: a recorder
    /// installed after an earlier cache was built still gets it.
    fn describe() {
        for (_, name, help) in COUNTERS {
            metrics::describe_counter!(name, help);
        }
        metrics::describe_counter!(
            EVICTIONS,
            "Entries the in-memory backend dropped by itself, by cause: `size` to stay within its bound, `expired` once they had expired."
        );
        metrics::describe_histogram!(
            GENERATOR,
            Unit::Seconds,
            "Time of each generator call for one key, whether it returned a value or failed."
        );
        metrics::describe_histogram!(
            BACKEND,
            Unit::Seconds,
            "Time of each call to the backend's native store, by operation; calls refused by its circuit breaker are not timed."
        );
    }

    fn labels(container: &str, backend: &str) -> Vec<Label> {
        vec![
            Label::new("container", container.to_owned()),
            Label::new("backend", backend.to_owned()),
        ]
    }

    /// A container's handles on the recorder installed when it was made.
    pub(crate) struct Export {
        counters: [Counter; COUNTERS.len()],
        generator: Histogram,
        evictions: Option<Arc<Watched>>,
    }

    impl Export {
        /// The handles of container `container` on the backend declared as `backend`, whose
        /// eviction counts are exported when it is in memory.
        pub(crate) fn new(
            container: &str,
            backend: &str,
            memory: Option<&Arc<dyn MemoryStore>>,
        ) -> Self {
            describe();
            let labels = labels(container, backend);
            let counters = COUNTERS.map(|(_, name, _)| metrics::counter!(name, labels.clone()));
            let generator = metrics::histogram!(GENERATOR, labels.clone());
            let evictions = memory.map(|memory| {
                let counter = |cause: &'static str| {
                    let mut labels = labels.clone();
                    labels.push(Label::new("cause", cause));
                    metrics::counter!(EVICTIONS, labels)
                };
                let watched = Arc::new(Watched {
                    memory: Arc::clone(memory),
                    size: counter("size"),
                    expired: counter("expired"),
                });
                watch(&watched);
                watched
            });
            Export {
                counters,
                generator,
                evictions,
            }
        }

        #[inline]
        pub(crate) fn count(&self, event: Event) {
            self.counters[event as usize].increment(1);
        }

        /// Sets the eviction counters to `evictions`, the backend's counts read just now.
        pub(crate) fn evictions(&self, evictions: Evictions) {
            if let Some(watched) = &self.evictions {
                watched.set(evictions);
            }
        }

        pub(crate) fn stopwatch(&self) -> Stopwatch {
            Stopwatch(self.generator.clone())
        }
    }

    impl fmt::Debug for Export {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Export").finish_non_exhaustive()
        }
    }

    /// Times generator calls into a container's histogram.
    #[derive(Clone)]
    pub(crate) struct Stopwatch(Histogram);

    impl Stopwatch {
        pub(crate) fn time<T>(&self, call: impl FnOnce() -> T) -> T {
            let start = Instant::now();
            let output = call();
            self.0.record(start.elapsed());
            output
        }

        /// `future`, timed from its first poll to its end (not recorded if it is dropped).
        pub(crate) fn time_future<T: 'static>(
            &self,
            future: BoxFuture<'static, T>,
        ) -> BoxFuture<'static, T> {
            let histogram = self.0.clone();
            Box::pin(timed_future(histogram, future))
        }
    }

    async fn timed_future<T>(histogram: Histogram, future: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let output = future.await;
        histogram.record(start.elapsed());
        output
    }

    /// An in-memory container's eviction counters, and the store they count.
    struct Watched {
        memory: Arc<dyn MemoryStore>,
        size: Counter,
        expired: Counter,
    }

    impl Watched {
        fn set(&self, evictions: Evictions) {
            self.size.absolute(evictions.size);
            self.expired.absolute(evictions.expired);
        }

        fn refresh(&self) {
            self.set(self.memory.evictions());
        }
    }

    /// The in-memory containers alive, and whether the refresher runs.
    struct Watchlist {
        watched: Vec<Weak<Watched>>,
        running: bool,
    }

    static WATCHLIST: Mutex<Watchlist> = Mutex::new(Watchlist {
        watched: Vec::new(),
        running: false,
    });

    fn watchlist() -> std::sync::MutexGuard<'static, Watchlist> {
        WATCHLIST.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `watched` to the refresher's list, starting the refresher if it is not running.
    fn watch(watched: &Arc<Watched>) {
        let mut list = watchlist();
        list.watched.push(Arc::downgrade(watched));
        if list.running {
            return;
        }
        match thread::Builder::new()
            .name("kvcache-metrics".to_owned())
            .spawn(refresh)
        {
            Ok(_) => list.running = true,
            Err(error) => tracing::warn!(
                error = &error as &dyn std::error::Error,
                "cannot start the thread that exports the in-memory backends' evictions: they are exported only when `stats()` is read"
            ),
        }
    }

    /// The refresher: every second, sets each live container's eviction counters; it ends when
    /// none is left, and the next in-memory container starts it again.
    fn refresh() {
        loop {
            thread::sleep(REFRESH);
            let live: Vec<Arc<Watched>> = {
                let mut list = watchlist();
                list.watched.retain(|watched| watched.strong_count() > 0);
                if list.watched.is_empty() {
                    list.running = false;
                    return;
                }
                list.watched.iter().filter_map(Weak::upgrade).collect()
            };
            for watched in live {
                watched.refresh();
            }
        }
    }

    /// `space` with its native store's calls timed, unless it is in memory: a memory call
    /// never blocks, and two clock reads would cost as much as the hit itself.
    pub(crate) fn timed(space: Space, container: &str, backend: &str) -> Space {
        match space {
            Space::Memory(_) => space,
            Space::Blocking(store) => Space::Blocking(Arc::new(Timed {
                store,
                calls: Calls::new(container, backend),
            })),
            Space::Async(store) => Space::Async(Arc::new(Timed {
                store,
                calls: Calls::new(container, backend),
            })),
        }
    }

    /// A container's backend call histograms, by operation.
    struct Calls {
        retrieve: Histogram,
        retrieve_many: Histogram,
        store: Histogram,
        store_many: Histogram,
        invalidate: Histogram,
        clear: Histogram,
        lease: Histogram,
        release: Histogram,
    }

    impl Calls {
        fn new(container: &str, backend: &str) -> Self {
            let labels = labels(container, backend);
            let histogram = |operation: &'static str| {
                let mut labels = labels.clone();
                labels.push(Label::new("operation", operation));
                metrics::histogram!(BACKEND, labels)
            };
            Calls {
                retrieve: histogram("retrieve"),
                retrieve_many: histogram("retrieve_many"),
                store: histogram("store"),
                store_many: histogram("store_many"),
                invalidate: histogram("invalidate"),
                clear: histogram("clear"),
                lease: histogram("lease"),
                release: histogram("release"),
            }
        }
    }

    /// A native store whose calls are timed.
    struct Timed<S: ?Sized> {
        store: Arc<S>,
        calls: Calls,
    }

    impl<S: ?Sized + fmt::Debug> fmt::Debug for Timed<S> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(&self.store, f)
        }
    }

    fn time<T>(histogram: &Histogram, call: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let output = call();
        histogram.record(start.elapsed());
        output
    }

    impl Store for Timed<dyn Store> {
        fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
            time(&self.calls.store, || self.store.store(key, value, ttl))
        }

        fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
            time(&self.calls.retrieve, || self.store.retrieve(key))
        }

        fn invalidate(&self, key: &str) -> Result<()> {
            time(&self.calls.invalidate, || self.store.invalidate(key))
        }

        fn clear(&self) -> Result<()> {
            time(&self.calls.clear, || self.store.clear())
        }

        fn retrieve_with(&self, key: &str, read: &mut dyn FnMut(&[u8])) -> Result<bool> {
            time(&self.calls.retrieve, || self.store.retrieve_with(key, read))
        }

        fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
            time(&self.calls.retrieve_many, || self.store.retrieve_many(keys))
        }

        fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
            time(&self.calls.store_many, || {
                self.store.store_many(entries, ttl)
            })
        }

        fn lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Lease> {
            time(&self.calls.lease, || self.store.lease(key, token, ttl))
        }

        fn release(&self, key: &str, token: &str) -> Result<()> {
            time(&self.calls.release, || self.store.release(key, token))
        }
    }

    impl AsyncStore for Timed<dyn AsyncStore> {
        fn store<'a>(
            &'a self,
            key: &'a str,
            value: &'a [u8],
            ttl: Option<Duration>,
        ) -> BoxFuture<'a, Result<()>> {
            Box::pin(timed_future(
                self.calls.store.clone(),
                self.store.store(key, value, ttl),
            ))
        }

        fn retrieve<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
            Box::pin(timed_future(
                self.calls.retrieve.clone(),
                self.store.retrieve(key),
            ))
        }

        fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
            Box::pin(timed_future(
                self.calls.invalidate.clone(),
                self.store.invalidate(key),
            ))
        }

        fn clear(&self) -> BoxFuture<'_, Result<()>> {
            Box::pin(timed_future(self.calls.clear.clone(), self.store.clear()))
        }

        fn retrieve_many<'a>(
            &'a self,
            keys: &'a [&'a str],
        ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
            Box::pin(timed_future(
                self.calls.retrieve_many.clone(),
                self.store.retrieve_many(keys),
            ))
        }

        fn store_many<'a>(
            &'a self,
            entries: &'a [(&'a str, &'a [u8])],
            ttl: Option<Duration>,
        ) -> BoxFuture<'a, Result<()>> {
            Box::pin(timed_future(
                self.calls.store_many.clone(),
                self.store.store_many(entries, ttl),
            ))
        }

        fn lease<'a>(
            &'a self,
            key: &'a str,
            token: &'a str,
            ttl: Duration,
        ) -> BoxFuture<'a, Result<Lease>> {
            Box::pin(timed_future(
                self.calls.lease.clone(),
                self.store.lease(key, token, ttl),
            ))
        }

        fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
            Box::pin(timed_future(
                self.calls.release.clone(),
                self.store.release(key, token),
            ))
        }
    }
}

#[cfg(not(feature = "metrics"))]
mod disabled {
    use super::{Arc, BoxFuture, Event, Evictions, MemoryStore, Space};

    /// Nothing: the `metrics` feature is off.
    #[derive(Debug)]
    pub(crate) struct Export;

    impl Export {
        #[inline(always)]
        pub(crate) fn new(_: &str, _: &str, _: Option<&Arc<dyn MemoryStore>>) -> Self {
            Export
        }

        #[inline(always)]
        pub(crate) fn count(&self, _: Event) {}

        #[inline(always)]
        pub(crate) fn evictions(&self, _: Evictions) {}

        #[inline(always)]
        pub(crate) fn stopwatch(&self) -> Stopwatch {
            Stopwatch
        }
    }

    /// Times nothing: the `metrics` feature is off.
    #[derive(Clone, Copy)]
    pub(crate) struct Stopwatch;

    impl Stopwatch {
        #[inline(always)]
        pub(crate) fn time<T>(&self, call: impl FnOnce() -> T) -> T {
            call()
        }

        #[inline(always)]
        pub(crate) fn time_future<T: 'static>(
            &self,
            future: BoxFuture<'static, T>,
        ) -> BoxFuture<'static, T> {
            future
        }
    }

    #[inline(always)]
    pub(crate) fn timed(space: Space, _: &str, _: &str) -> Space {
        space
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures_util::FutureExt;
    use metrics::{
        Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString,
        Unit,
    };

    use super::{COUNTERS, Export, timed};
    use crate::backend::{AsyncStore, BoxFuture, Space, Store};
    use crate::error::Result;

    /// A recorder that keeps every series by its name and labels.
    #[derive(Default)]
    struct Registry {
        counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
        histograms: Mutex<BTreeMap<String, Arc<Samples>>>,
    }

    #[derive(Default)]
    struct Samples(Mutex<Vec<f64>>);

    impl HistogramFn for Samples {
        fn record(&self, value: f64) {
            self.0.lock().unwrap().push(value);
        }
    }

    fn id(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|label| format!("{}={}", label.key(), label.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Registry {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let mut counters = self.counters.lock().unwrap();
            Counter::from_arc(Arc::clone(counters.entry(id(key)).or_default()))
        }

        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }

        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            let mut histograms = self.histograms.lock().unwrap();
            Histogram::from_arc(Arc::clone(histograms.entry(id(key)).or_default()))
        }
    }

    impl Registry {
        fn counter(&self, id: &str) -> u64 {
            self.counters.lock().unwrap()[id].load(Ordering::Relaxed)
        }

        fn samples(&self, id: &str) -> usize {
            self.histograms.lock().unwrap()[id].0.lock().unwrap().len()
        }
    }

    #[test]
    fn each_event_counts_on_its_own_series() {
        let registry = Registry::default();
        let export = metrics::with_local_recorder(&registry, || Export::new("c", "b", None));
        for (times, (event, _, _)) in COUNTERS.iter().enumerate() {
            for _ in 0..=times {
                export.count(*event);
            }
        }
        for (times, (_, name, _)) in COUNTERS.iter().enumerate() {
            let series = format!("{name}{{container=c,backend=b}}");
            assert_eq!(registry.counter(&series), times as u64 + 1, "{series}");
        }
        let stopwatch = export.stopwatch();
        assert_eq!(stopwatch.time(|| 7), 7);
        let future = stopwatch.time_future(Box::pin(async { 8 }));
        assert_eq!(future.now_or_never(), Some(8));
        assert_eq!(
            registry.samples("kvcache_generator_seconds{container=c,backend=b}"),
            2
        );
    }

    /// A store that answers every call at once.
    #[derive(Debug)]
    struct Stub;

    impl Store for Stub {
        fn store(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<()> {
            Ok(())
        }
        fn retrieve(&self, _: &str) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
        fn invalidate(&self, _: &str) -> Result<()> {
            Ok(())
        }
        fn clear(&self) -> Result<()> {
            Ok(())
        }
    }

    impl AsyncStore for Stub {
        fn store<'a>(
            &'a self,
            _: &'a str,
            _: &'a [u8],
            _: Option<Duration>,
        ) -> BoxFuture<'a, Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn retrieve<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
            Box::pin(async { Ok(None) })
        }
        fn invalidate<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<()>> {
            Box::pin(async { Ok(()) })
        }
        fn clear(&self) -> BoxFuture<'_, Result<()>> {
            Box::pin(async { Ok(()) })
        }
    }

    fn histogram(backend: &str, operation: &str) -> String {
        format!("kvcache_backend_seconds{{container=c,backend={backend},operation={operation}}}")
    }

    #[test]
    fn a_blocking_store_is_timed_by_operation() {
        let registry = Registry::default();
        let space = metrics::with_local_recorder(&registry, || {
            timed(Space::Blocking(Arc::new(Stub)), "c", "blocking")
        });
        let Space::Blocking(store) = &space else {
            panic!("still a blocking space");
        };
        store.store("k", b"v", None).unwrap();
        store.retrieve("k").unwrap();
        store.retrieve_with("k", &mut |_| {}).unwrap();
        store.retrieve_many(&["k", "l"]).unwrap();
        store.store_many(&[("k", b"v")], None).unwrap();
        store.invalidate("k").unwrap();
        store.clear().unwrap();
        for (operation, calls) in [
            ("store", 1),
            ("retrieve", 2),
            ("retrieve_many", 1),
            ("store_many", 1),
            ("invalidate", 1),
            ("clear", 1),
        ] {
            assert_eq!(
                registry.samples(&histogram("blocking", operation)),
                calls,
                "{operation}"
            );
        }
    }

    #[test]
    fn an_async_store_is_timed_by_operation() {
        let registry = Registry::default();
        let space = metrics::with_local_recorder(&registry, || {
            timed(Space::Async(Arc::new(Stub)), "c", "async")
        });
        let Space::Async(store) = &space else {
            panic!("still an async space");
        };
        store
            .store("k", b"v", None)
            .now_or_never()
            .unwrap()
            .unwrap();
        store.retrieve("k").now_or_never().unwrap().unwrap();
        store.retrieve_many(&["k"]).now_or_never().unwrap().unwrap();
        store
            .store_many(&[("k", b"v")], None)
            .now_or_never()
            .unwrap()
            .unwrap();
        store.invalidate("k").now_or_never().unwrap().unwrap();
        store.clear().now_or_never().unwrap().unwrap();
        for operation in [
            "store",
            "retrieve",
            "retrieve_many",
            "store_many",
            "invalidate",
            "clear",
        ] {
            assert_eq!(
                registry.samples(&histogram("async", operation)),
                1,
                "{operation}"
            );
        }
    }
}
