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
    /// Keys a caller waited for because another process held their lease (cross-process single
    /// flight), instead of calling its generator.
    pub lease_waits: u64,
    /// Keys a waiting caller generated itself because their lease was given up (the holder's
    /// generator failed) or expired (the holder died) without a stored value.
    pub lease_takeovers: u64,
    /// Values served past their expiry because the generator failed, or because its failure
    /// is remembered (`stale_if_error`).
    pub stale_served: u64,
    /// Background refreshes started: of values past `refresh`, or drawn early by XFetch.
    pub refreshes: u64,
    /// Generator failures remembered in the store (`cache_errors`), and remembered failures
    /// returned to callers instead of calling the generator.
    pub errors_cached: u64,
    /// Hits answered by the near tier, without a call to the shared store; each is also a hit.
    pub near_hits: u64,
    /// Near copies dropped because another instance changed them (keys, or a whole clear),
    /// as the store's channel told.
    pub near_invalidations: u64,
    /// Times the near tier was emptied because the store's channel dropped.
    pub near_flushes: u64,
    /// Entries the in-memory backend dropped to stay within its bound (entries or bytes).
    pub evicted_size: u64,
    /// Entries the in-memory backend dropped because they had expired, without a read or a
    /// purge asking for it.
    pub evicted_expired: u64,
}

/// A container's counters, and their handles on the `metrics` recorder when the feature is on.
#[derive(Debug)]
pub(crate) struct Counters {
    counts: [AtomicU64; EVENTS],
    export: Export,
}

/// One kind of event to count; its discriminant indexes the counters.
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
    LeaseWait,
    LeaseTakeover,
    StaleServed,
    Refresh,
    ErrorCached,
}

/// How many kinds of [`Event`] there are.
pub(crate) const EVENTS: usize = 13;

impl Counters {
    /// The counters of container `container` on the backend declared as `backend`, whose
    /// evictions are exported too when it is in `memory`.
    pub(crate) fn new(
        container: &str,
        backend: &str,
        memory: Option<&Arc<dyn MemoryStore>>,
    ) -> Self {
        Counters {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            export: Export::new(container, backend, memory),
        }
    }

    #[inline]
    pub(crate) fn count(&self, event: Event) {
        self.counts[event as usize].fetch_add(1, Relaxed);
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
        let count = |event: Event| self.counts[event as usize].load(Relaxed);
        Stats {
            hits: count(Event::Hit),
            misses: count(Event::Miss),
            undecodable: count(Event::Undecodable),
            generations: count(Event::Generation),
            generator_errors: count(Event::GeneratorError),
            backend_errors: count(Event::BackendError),
            waits: count(Event::Wait),
            fast_failures: count(Event::FastFailure),
            lease_waits: count(Event::LeaseWait),
            lease_takeovers: count(Event::LeaseTakeover),
            stale_served: count(Event::StaleServed),
            refreshes: count(Event::Refresh),
            errors_cached: count(Event::ErrorCached),
            near_hits: 0,
            near_invalidations: 0,
            near_flushes: 0,
            evicted_size: 0,
            evicted_expired: 0,
        }
    }
}
