//! Per-container counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::export::{Export, Stopwatch};
use crate::memory::{Evictions, MemoryStore};

/// What a container has done since it was created, read with
/// [`Container::stats`](crate::Container::stats).
///
/// With the `metrics` feature, each field is also a counter of the `metrics` facade
/// (`kvcache_hits_total` and so on, labelled `container` and `backend`; the evictions are
/// `kvcache_evictions_total{cause="size"}` and `{cause="expired"}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Look-ups that found a value.
    pub hits: u64,
    /// Look-ups that found nothing usable: absent, expired, or undecodable.
    pub misses: u64,
    /// Stored values that did not decode as the container's type: written by another type or an
    /// older format, or corrupt. Each is also a miss, and is regenerated and overwritten.
    pub undecodable: u64,
    /// Generator calls that returned a value.
    pub generations: u64,
    /// Generator calls that failed or panicked.
    pub generator_errors: u64,
    /// Backend calls that failed.
    pub backend_errors: u64,
    /// Callers that waited for another caller's generator instead of running their own.
    pub waits: u64,
    /// Backend calls refused at once by the backend's circuit breaker, during an outage, without
    /// trying the backend; each is also a backend error.
    pub fast_failures: u64,
    /// Entries the in-memory backend dropped to stay within its bound (entries or bytes).
    pub evicted_size: u64,
    /// Entries the in-memory backend dropped because they had expired, without a read or a
    /// purge asking for it.
    pub evicted_expired: u64,
}

/// A container's counters, and their handles on the `metrics` recorder when the feature is on.
#[derive(Debug)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    undecodable: AtomicU64,
    generations: AtomicU64,
    generator_errors: AtomicU64,
    backend_errors: AtomicU64,
    waits: AtomicU64,
    fast_failures: AtomicU64,
    export: Export,
}

/// One kind of event to count; its discriminant indexes the exported counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Event {
    Hit,
    Miss,
    Undecodable,
    Generation,
    GeneratorError,
    BackendError,
    Wait,
    FastFailure,
}

impl Counters {
    /// The counters of container `container` on the backend declared as `backend`, whose
    /// evictions are exported too when it is in `memory`.
    pub(crate) fn new(
        container: &str,
        backend: &str,
        memory: Option<&Arc<dyn MemoryStore>>,
    ) -> Self {
        Counters {
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            generations: AtomicU64::new(0),
            generator_errors: AtomicU64::new(0),
            backend_errors: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            fast_failures: AtomicU64::new(0),
            export: Export::new(container, backend, memory),
        }
    }

    #[inline]
    pub(crate) fn count(&self, event: Event) {
        let counter = match event {
            Event::Hit => &self.hits,
            Event::Miss => &self.misses,
            Event::Undecodable => &self.undecodable,
            Event::Generation => &self.generations,
            Event::GeneratorError => &self.generator_errors,
            Event::BackendError => &self.backend_errors,
            Event::Wait => &self.waits,
            Event::FastFailure => &self.fast_failures,
        };
        counter.fetch_add(1, Relaxed);
        self.export.count(event);
    }

    /// Times the container's generator calls.
    pub(crate) fn stopwatch(&self) -> Stopwatch {
        self.export.stopwatch()
    }

    /// Exports the in-memory backend's eviction counts, just read.
    pub(crate) fn evictions(&self, evictions: Evictions) {
        self.export.evictions(evictions);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            undecodable: self.undecodable.load(Relaxed),
            generations: self.generations.load(Relaxed),
            generator_errors: self.generator_errors.load(Relaxed),
            backend_errors: self.backend_errors.load(Relaxed),
            waits: self.waits.load(Relaxed),
            fast_failures: self.fast_failures.load(Relaxed),
            evicted_size: 0,
            evicted_expired: 0,
        }
    }
}
