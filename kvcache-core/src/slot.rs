//! The state of one container, and the typed work its synchronous and async handles share:
//! decoding, encoding, counting, and the errors they make.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::backend::{AsyncStore, Space, Store};
use crate::breaker::Breaker;
use crate::clock::Clock;
use crate::codec::{Codec, Value};
use crate::error::{Error, Result, Source};
use crate::flight::{Flights, Leader, Outcome, Role};
use crate::fresh::Judged;
use crate::generator::{Call, Generator};
use crate::memory::{Held, MemoryStore, weight};
use crate::near::Near;
use crate::options::{ContainerOptions, OnBackendError};
use crate::stamp::Stamp;
use crate::stats::{Counters, Event, Stats};

/// What a slot is made of, besides its name, options and generator: the name of the backend
/// it is on, the backend's space for it, the backend's breaker, and the clock.
pub(crate) struct Opened<'a> {
    pub(crate) backend_name: String,
    pub(crate) space: Space,
    pub(crate) breaker: Option<&'a Arc<Breaker>>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The near tier in front of the space, if the backend declares one.
    pub(crate) near: Option<Near>,
}

/// The state of one container, shared by the cache and every handle to it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) backend_name: String,
    pub(crate) options: ContainerOptions,
    /// The backend's space for this container, as synchronous callers use it.
    pub(crate) sync: Arc<dyn Store>,
    /// The same, as async callers use it.
    pub(crate) nonblocking: Arc<dyn AsyncStore>,
    /// The in-memory store, when the backend is one: values are held decoded there, and both
    /// paths call it inline.
    pub(crate) memory: Option<Arc<dyn MemoryStore>>,
    generator: RwLock<Option<Generator>>,
    weigher: RwLock<Option<Weigher>>,
    pub(crate) flights: Arc<Flights>,
    pub(crate) counters: Counters,
    /// Set when the store answered that no other process shares it: leases are not asked for
    /// again.
    unshared: AtomicBool,
    /// What stamps and their ages are read against.
    pub(crate) clock: Arc<dyn Clock>,
    /// The in-memory copies of this container's values, in front of a shared store.
    pub(crate) near: Option<Near>,
}

impl Slot {
    /// The slot of container `name` on `space` of the backend `backend_name`, whose calls go
    /// through `breaker` when it has one.
    pub(crate) fn new(
        name: String,
        Opened {
            backend_name,
            space,
            breaker,
            clock,
            near,
        }: Opened<'_>,
        options: ContainerOptions,
        generator: Option<Generator>,
    ) -> Self {
        // Timed inside the breaker: a call it refuses reaches no backend and is not timed.
        let space = crate::export::timed(space, &name, &backend_name);
        let (sync, nonblocking) = match breaker {
            Some(breaker) => breaker.views(&space),
            None => (space.sync_store(), space.async_store()),
        };
        let memory = space.memory_store();
        let counters = Counters::new(&name, &backend_name, memory.as_ref());
        Slot {
            name,
            backend_name,
            options,
            sync,
            nonblocking,
            generator: RwLock::new(generator),
            weigher: RwLock::default(),
            flights: Arc::default(),
            counters,
            unshared: AtomicBool::new(memory.is_some()),
            memory,
            clock,
            near,
        }
    }

    /// Whether stored values carry their times: the container serves stale values, or has a
    /// near tier, whose copies live as long as their stored originals.
    pub(crate) fn stamps(&self) -> bool {
        self.options.stamps() || self.near.is_some()
    }

    /// Whether a miss asks the store for a lease: the container leases (a non-zero lock
    /// timeout) and the store has not said it is private to this process.
    pub(crate) fn leases(&self) -> bool {
        !self.options.lease_ttl().is_zero() && !self.unshared.load(Ordering::Relaxed)
    }

    /// Notes that the store is private to this process.
    pub(crate) fn unshared(&self) {
        self.unshared.store(true, Ordering::Relaxed);
    }

    pub(crate) fn generator(&self) -> Option<Generator> {
        self.generator
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn weigher(&self) -> Option<Weigher> {
        self.weigher
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_weigher(&self, weigher: Weigher) {
        *self.weigher.write().unwrap_or_else(PoisonError::into_inner) = Some(weigher);
    }

    pub(crate) fn set_generator(&self, generator: Generator) {
        *self
            .generator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(generator);
    }
}

/// A user's weight of a value for an in-memory store's byte bound: `None` when the value is not
/// of the type it was registered for.
#[derive(Clone)]
pub(crate) struct Weigher(pub(crate) Arc<WeighFn>);

type WeighFn = dyn Fn(&str, &dyn std::any::Any) -> Option<u64> + Send + Sync;

impl fmt::Debug for Weigher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Weigher")
    }
}

/// Whether generated values are stored: not when the backend has just failed and the container
/// fails open. `Yes` carries the count of landed flights read before the caller's look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    Yes { landed_before: u64 },
    No,
}

/// What a look-up of several keys found: each key's served value, or its miss.
pub(crate) struct Triage<V> {
    pub(crate) values: Vec<Option<V>>,
    /// The missed keys, by index, with the stale value each falls back to.
    pub(crate) missed: Vec<(usize, Option<Arc<[u8]>>)>,
}

/// A caller's part in the flights of the keys it missed.
pub(crate) struct Roles {
    /// The keys it generates, with their leaders.
    pub(crate) led: Vec<Leader>,
    /// The stale value each led key falls back to.
    pub(crate) fallbacks: Vec<Option<Arc<[u8]>>>,
    /// Every flight it waits on, by index into its keys: its own and other callers'.
    pub(crate) waits: Vec<(usize, Arc<crate::flight::Flight>)>,
}

/// A container's state seen through one value type: what both handles are made of.
pub(crate) struct Typed<V> {
    pub(crate) slot: Arc<Slot>,
    pub(crate) codec: Codec<V>,
}

impl<V> Clone for Typed<V> {
    fn clone(&self) -> Self {
        Typed {
            slot: Arc::clone(&self.slot),
            codec: self.codec,
        }
    }
}

impl<V: Value> Typed<V> {
    /// A view of `slot`, if `V` is its generator's value type.
    pub(crate) fn new(slot: Arc<Slot>) -> Result<Self> {
        let codec = Codec::new().compressing(slot.options.compression());
        let typed = Typed { slot, codec };
        typed.generator()?;
        Ok(typed)
    }

    pub(crate) fn name(&self) -> &str {
        &self.slot.name
    }

    pub(crate) fn expire(&self) -> Option<Duration> {
        self.slot.options.expire_after()
    }

    pub(crate) fn stats(&self) -> Stats {
        let mut stats = self.slot.counters.snapshot();
        if let Some(memory) = &self.slot.memory {
            let evictions = memory.evictions();
            self.slot.counters.evictions(evictions);
            stats.evicted_size = evictions.size;
            stats.evicted_expired = evictions.expired;
        }
        if let Some(near) = &self.slot.near {
            let counts = &near.counts;
            stats.near_hits = counts.hits.load(std::sync::atomic::Ordering::Relaxed);
            stats.near_invalidations = counts
                .invalidations
                .load(std::sync::atomic::Ordering::Relaxed);
            stats.near_flushes = counts.flushes.load(std::sync::atomic::Ordering::Relaxed);
        }
        stats
    }

    /// The container's generator, if it has one of value type `V`.
    pub(crate) fn generator(&self) -> Result<Option<Call<V>>> {
        let Some(generator) = self.slot.generator() else {
            return Ok(None);
        };
        generator
            .typed::<V>()
            .map(Some)
            .ok_or_else(|| Error::TypeMismatch {
                container: self.slot.name.clone(),
                expected: Codec::<V>::type_name(),
                found: generator.value_type(),
            })
    }

    /// The generator a miss on `key` calls, or [`Error::NotFound`].
    pub(crate) fn require_generator(&self, key: &str) -> Result<Call<V>> {
        self.generator()?.ok_or_else(|| Error::NotFound {
            container: self.slot.name.clone(),
            key: key.to_owned(),
        })
    }

    /// Joins the flight of each key `missed` names (indices into `keys`, with the stale value
    /// each falls back to).
    pub(crate) fn join(&self, keys: &[&str], missed: Vec<(usize, Option<Arc<[u8]>>)>) -> Roles {
        let mut roles = Roles {
            led: Vec::new(),
            fallbacks: Vec::new(),
            waits: Vec::new(),
        };
        for (index, fallback) in missed {
            let key = keys[index];
            match self.slot.flights.join(key, || self.abandoned(key)) {
                Role::Leader(leader) => {
                    roles.waits.push((index, leader.flight()));
                    roles.led.push(leader);
                    roles.fallbacks.push(fallback);
                }
                Role::Waiter(flight) => {
                    self.slot.counters.count(Event::Wait);
                    tracing::debug!(container = %self.slot.name, key, "waiting for another caller's generator");
                    roles.waits.push((index, flight));
                }
            }
        }
        roles
    }

    /// What makes the error the waiters of `key` get when its leader is dropped without landing.
    pub(crate) fn abandoned(&self, key: &str) -> impl FnOnce() -> Error + Send + 'static {
        let (this, owned) = (self.clone(), key.to_owned());
        move || {
            this.generator_failed(
                &owned,
                "the generation was abandoned: the generator panicked, or the runtime running it shut down"
                    .into(),
            )
        }
    }

    /// Sorts out what a look-up of `keys` found: the values served, and the misses with the
    /// stale values they fall back to; starts the background refreshes of the values due for
    /// one. A remembered failure is the error of the first key that has one.
    pub(crate) fn triage(&self, keys: &[&str], judged: Vec<Judged<V>>) -> Result<Triage<V>> {
        let mut triage = Triage {
            values: Vec::with_capacity(keys.len()),
            missed: Vec::new(),
        };
        let mut refreshes = Vec::new();
        for (index, judged) in judged.into_iter().enumerate() {
            match judged {
                Judged::Serve { value, refresh } => {
                    if let Some(current) = refresh {
                        refreshes.push((keys[index].to_owned(), current));
                    }
                    triage.values.push(Some(value));
                }
                Judged::Miss { fallback } => {
                    triage.values.push(None);
                    triage.missed.push((index, fallback));
                }
                Judged::Remembered(error) => {
                    self.slot.counters.count(Event::ErrorCached);
                    return Err(error);
                }
            }
        }
        if !refreshes.is_empty() {
            crate::async_container::refresh(self, refreshes);
        }
        Ok(triage)
    }

    /// Whether a leader must look its keys up again before generating: a flight landed since
    /// its caller's look-up, which may have stored them.
    pub(crate) fn look_again(&self, keep: Keep) -> bool {
        matches!(keep, Keep::Yes { landed_before } if self.slot.flights.landed() != landed_before)
    }

    /// The value in a flight's outcome, for the caller that waited on it.
    pub(crate) fn landed(&self, key: &str, outcome: Outcome) -> Result<V> {
        let bytes = outcome?;
        self.decode_landed(&bytes).ok_or_else(|| Error::Codec {
            container: self.slot.name.clone(),
            key: key.to_owned(),
            type_name: Codec::<V>::type_name(),
            source: "the value generated by another caller is of another type".into(),
        })
    }

    /// Under [`OnBackendError::Generate`], reports `error` and lets the caller generate;
    /// otherwise (or with no generator to call) returns it.
    pub(crate) fn fail_open(&self, error: Error) -> Result<()> {
        if self.slot.options.backend_error_policy() != OnBackendError::Generate
            || self.slot.generator().is_none()
        {
            return Err(error);
        }
        tracing::warn!(
            container = %self.slot.name,
            error = &error as &dyn std::error::Error,
            "the backend failed; returning the generator's value without storing it"
        );
        Ok(())
    }

    /// Counts a generator's failure on `key` and makes its error.
    pub(crate) fn generator_failed(&self, key: &str, source: Source) -> Error {
        self.slot.counters.count(Event::GeneratorError);
        Error::Generator {
            container: self.slot.name.clone(),
            key: key.to_owned(),
            source,
        }
    }

    /// Counts a hit.
    #[inline(always)]
    pub(crate) fn count_hit(&self) {
        self.slot.counters.count(Event::Hit);
        tracing::trace!(container = %self.slot.name, "hit");
    }

    /// Counts a look-up that `found` bytes, which `decoded` or not.
    pub(crate) fn count_lookup(&self, found: bool, decoded: bool) {
        if decoded {
            self.count_hit();
            return;
        }
        self.slot.counters.count(Event::Miss);
        if found {
            self.slot.counters.count(Event::Undecodable);
            tracing::debug!(
                container = %self.slot.name,
                value_type = Codec::<V>::type_name(),
                "a stored value does not decode as this container's type: a miss"
            );
        } else {
            tracing::trace!(container = %self.slot.name, "miss");
        }
    }

    pub(crate) fn encode(&self, key: &str, value: &V) -> Result<Vec<u8>> {
        self.codec
            .encode(value)
            .map_err(|source| self.codec_error(key, source))
    }

    /// Counts and reports a backend call's failure.
    pub(crate) fn backend_call<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            self.slot.counters.count(Event::BackendError);
            if matches!(
                error,
                Error::Unavailable {
                    retry_in: Some(_),
                    ..
                }
            ) {
                self.slot.counters.count(Event::FastFailure);
            }
            tracing::debug!(
                container = %self.slot.name,
                error = error as &dyn std::error::Error,
                "backend error"
            );
        }
        result
    }

    /// Checks that a batch look-up answered one entry per key.
    pub(crate) fn check_batch<T>(&self, found: &[T], keys: usize) -> Result<()> {
        if found.len() == keys {
            return Ok(());
        }
        self.backend_call(Err(Error::backend(
            self.slot.backend_name.clone(),
            format!(
                "retrieve_many returned {} values for {keys} keys",
                found.len()
            ),
            "a broken backend",
        )))
    }

    /// What is stored under `key`, judged and counted: read from an in-memory store's values,
    /// or decoded in place by the synchronous store.
    pub(crate) fn look(&self, key: &str) -> Result<Judged<V>> {
        if let Some(memory) = &self.slot.memory {
            return Ok(self.judge_held(memory, key));
        }
        if let Some(served) = self.near_look(key) {
            return Ok(served);
        }
        let mut judged = None;
        self.backend_call(self.slot.sync.retrieve_with(key, &mut |bytes| {
            judged = Some(self.judged_store(key, Some(bytes)));
        }))?;
        Ok(judged.unwrap_or_else(|| self.judge(key, None)))
    }

    /// Judges what the shared store holds under `key`, keeping a near copy of what it serves.
    pub(crate) fn judged_store(&self, key: &str, bytes: Option<&[u8]>) -> Judged<V> {
        let judged = self.judge(key, bytes);
        if let (Some(bytes), Judged::Serve { value, .. }) = (bytes, &judged) {
            self.fill_near(key, bytes, value);
        }
        judged
    }

    /// The stored value of `key` that a `get` would serve now, never calling the generator.
    pub(crate) fn peek(&self, key: &str) -> Result<Option<V>> {
        Ok(match self.look(key)? {
            Judged::Serve { value, .. } => Some(value),
            Judged::Miss { .. } | Judged::Remembered(_) => None,
        })
    }

    /// What a batch look-up found, judged per key, with whether the values generated for its
    /// misses are to be stored. A failed look-up under `generate` is all misses, not to be
    /// stored.
    pub(crate) fn judged_batch(
        &self,
        keys: &[&str],
        found: Result<Vec<Option<Vec<u8>>>>,
        landed_before: u64,
    ) -> Result<(Vec<Judged<V>>, Keep)> {
        if let Some(memory) = &self.slot.memory {
            let judged = keys
                .iter()
                .map(|key| self.judge_held(memory, key))
                .collect();
            return Ok((judged, Keep::Yes { landed_before }));
        }
        let found = self
            .backend_call(found)
            .and_then(|found| self.check_batch(&found, keys.len()).map(|()| found));
        match found {
            Ok(found) => Ok((
                keys.iter()
                    .zip(&found)
                    .map(|(key, bytes)| self.judged_store(key, bytes.as_deref()))
                    .collect(),
                Keep::Yes { landed_before },
            )),
            Err(error) => {
                self.fail_open(error)?;
                Ok((
                    keys.iter()
                        .map(|_| Judged::Miss { fallback: None })
                        .collect(),
                    Keep::No,
                ))
            }
        }
    }

    /// Looks each of `keys` up in the near tier: what it serves, by key, and the keys left for
    /// the shared store.
    pub(crate) fn near_pass<'k>(&self, keys: &[&'k str]) -> (Vec<Option<Judged<V>>>, Vec<&'k str>) {
        if self.slot.near.is_none() {
            return (Vec::new(), keys.to_vec());
        }
        let near: Vec<Option<Judged<V>>> = keys.iter().map(|key| self.near_look(key)).collect();
        let rest = keys
            .iter()
            .zip(&near)
            .filter(|(_, near)| near.is_none())
            .map(|(key, _)| *key)
            .collect();
        (near, rest)
    }

    /// The near tier's answers (none without one) with the shared store's for the rest, in the
    /// keys' order.
    pub(crate) fn merge_near(near: Vec<Option<Judged<V>>>, rest: Vec<Judged<V>>) -> Vec<Judged<V>> {
        if near.is_empty() {
            return rest;
        }
        let mut rest = rest.into_iter();
        near.into_iter()
            .map(|near| {
                near.or_else(|| rest.next())
                    .unwrap_or(Judged::Miss { fallback: None })
            })
            .collect()
    }

    /// The entry `set` stores for `value`: stamped as a generated one, if the container stamps.
    pub(crate) fn entry(
        &self,
        key: &str,
        value: &V,
    ) -> Result<(Vec<u8>, Option<Stamp>, Option<Duration>)> {
        let (stamp, ttl) = self.stamp_for(self.expire(), Duration::ZERO);
        let bytes = self.encode_stamped(key, value, stamp.as_ref())?;
        Ok((bytes, stamp, ttl))
    }

    /// Holds `value` under `key` in an in-memory store for `ttl`, with its stamp if it has
    /// one, weighed by the container's weigher, or as its key and encoded bytes. `encoded_len`
    /// is the encoded size when the caller knows it.
    pub(crate) fn hold(
        &self,
        memory: &Arc<dyn MemoryStore>,
        key: &str,
        value: V,
        encoded_len: Option<usize>,
        stamp: Option<Stamp>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let weighed = self
            .slot
            .weigher()
            .and_then(|weigher| (weigher.0)(key, &value));
        let held = |value: V| match stamp {
            Some(stamp) => Held::stamped(stamp, value),
            None => Held::value(value),
        };
        if let Some(weight) = weighed {
            memory.insert(key, held(value), weight, ttl);
            return Ok(());
        }
        let len = match encoded_len {
            Some(len) => len,
            None => self
                .codec
                .encoded_len(&value)
                .map_err(|source| self.codec_error(key, source))?,
        };
        memory.insert(key, held(value), weight(key, len), ttl);
        Ok(())
    }

    fn codec_error(&self, key: &str, source: crate::error::BoxError) -> Error {
        Error::Codec {
            container: self.slot.name.clone(),
            key: key.to_owned(),
            type_name: Codec::<V>::type_name(),
            source: source.into(),
        }
    }
}

impl<V> fmt::Debug for Typed<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.slot.name)
            .field("backend", &self.slot.backend_name)
            .field("options", &self.slot.options)
            .field("value_type", &std::any::type_name::<V>())
            .finish()
    }
}
