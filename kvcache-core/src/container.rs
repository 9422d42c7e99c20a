//! Containers: typed, read-through views of one backend's space for a container, called from
//! threads.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::Value;

use crate::async_container::AsyncContainer;
use crate::error::Result;
use crate::fresh::Judged;
use crate::generator::{Call, block_on_all};
use crate::lead::{Batch, Made};
use crate::options::OnBackendError;
use crate::slot::{Keep, Typed};
use crate::stats::Stats;

/// A named, typed, read-through cache of `V` values on one backend, for synchronous callers.
///
/// [`get`](Container::get) returns the stored value, or calls the container's generator, stores
/// its value with the container's expiry and returns it. Concurrent misses on one key call the
/// generator once, whether they come from threads or from tasks using the container's
/// [`AsyncContainer`]; the other callers wait for its value. Handles are cheap to clone and
/// share one state.
///
/// It needs no runtime: an async generator, or a backend whose store is async (Redis), is driven
/// on kvcache's own [`runtime`](crate::runtime) while the calling thread waits. From async code,
/// use [`AsyncContainer`], which never blocks its executor.
///
/// Values are stored with `bincode` behind a header that fingerprints their type: bytes written
/// by another type, or by an older format, read as a miss and are regenerated.
pub struct Container<V> {
    typed: Typed<V>,
}

impl<V> Clone for Container<V> {
    fn clone(&self) -> Self {
        Container {
            typed: self.typed.clone(),
        }
    }
}

impl<V: Value> Container<V> {
    pub(crate) fn new(typed: Typed<V>) -> Self {
        Container { typed }
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        self.typed.name()
    }

    /// How long a stored value lives; `None`: until it is removed or evicted.
    pub fn expire(&self) -> Option<Duration> {
        self.typed.expire()
    }

    /// What [`get`](Container::get) does when the backend fails.
    pub fn on_backend_error(&self) -> OnBackendError {
        self.typed.slot.options.backend_error_policy()
    }

    /// The name of the backend the values live in.
    pub fn backend(&self) -> &str {
        &self.typed.slot.backend_name
    }

    /// The counters of this container (shared by every handle to it, of both paths).
    pub fn stats(&self) -> Stats {
        self.typed.stats()
    }

    /// The async handle on the same container.
    pub fn to_async(&self) -> AsyncContainer<V>
    where
        V: Send,
    {
        AsyncContainer::new(self.typed.clone())
    }

    /// The value of `key`: the stored one, or the generator's, which is then stored.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`](crate::Error::NotFound) on a miss when the container has no
    /// generator; [`Error::Generator`](crate::Error::Generator) when the generator fails or
    /// panics (in this caller or in the one it waited for), and then nothing is stored;
    /// [`Error::Backend`](crate::Error::Backend) when the backend fails;
    /// [`Error::Codec`](crate::Error::Codec) when the value cannot be encoded;
    /// [`Error::TypeMismatch`](crate::Error::TypeMismatch) when a generator of another value
    /// type was registered after this handle was made.
    ///
    /// # Panics
    ///
    /// When a synchronous generator panics, in the caller that ran it; the callers waiting on
    /// that key get [`Error::Generator`](crate::Error::Generator) instead.
    pub fn get(&self, key: &str) -> Result<V> {
        let _span =
            tracing::trace_span!("kvcache.get", container = %self.typed.slot.name, key).entered();
        let landed_before = self.typed.slot.flights.landed();
        let (missed, keep) = match self.typed.look(key) {
            // A hit that needs no refresh: the hot path, with nothing to sort out.
            Ok(Judged::Serve {
                value,
                refresh: None,
            }) => return Ok(value),
            Ok(judged) => {
                let mut triage = self.typed.triage(&[key], vec![judged])?;
                if let Some(Some(value)) = triage.values.pop() {
                    return Ok(value);
                }
                (triage.missed, Keep::Yes { landed_before })
            }
            Err(error) => {
                self.typed.fail_open(error)?;
                (vec![(0, None)], Keep::No)
            }
        };
        let mut values = self.generate(&[key], missed, keep)?;
        Ok(values.remove(0))
    }

    /// The values of `keys`, in order, read from the backend in one batch where it can; the
    /// misses are generated as [`get`](Container::get) does, and stored in one batch.
    ///
    /// # Errors
    ///
    /// Those of [`get`](Container::get), for the first key that fails.
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<V>> {
        let _span = tracing::trace_span!("kvcache.get_many", container = %self.typed.slot.name, keys = keys.len()).entered();
        let landed_before = self.typed.slot.flights.landed();
        let (near, rest) = self.typed.near_pass(keys);
        let found = match self.typed.slot.memory {
            Some(_) => Ok(Vec::new()),
            None => self.typed.slot.sync.retrieve_many(&rest),
        };
        let (judged, keep) = self.typed.judged_batch(&rest, found, landed_before)?;
        let judged = Typed::merge_near(near, judged);
        let triage = self.typed.triage(keys, judged)?;
        let mut values = triage.values;
        if !triage.missed.is_empty() {
            let indices: Vec<usize> = triage.missed.iter().map(|(index, _)| *index).collect();
            let generated = self.generate(keys, triage.missed, keep)?;
            for (index, value) in indices.into_iter().zip(generated) {
                values[index] = Some(value);
            }
        }
        Ok(values.into_iter().flatten().collect())
    }

    /// The stored value of `key`, never calling the generator.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the backend fails. A value written by
    /// another type is `None`.
    pub fn peek(&self, key: &str) -> Result<Option<V>> {
        self.typed.peek(key)
    }

    /// Stores `value` under `key` with the container's expiry.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`](crate::Error::Codec) when the value cannot be encoded,
    /// [`Error::Backend`](crate::Error::Backend) when the backend fails.
    pub fn set(&self, key: &str, value: &V) -> Result<()> {
        let (bytes, stamp, ttl) = self.typed.entry(key, value)?;
        if let Some(memory) = &self.typed.slot.memory {
            return self
                .typed
                .hold(memory, key, value.clone(), Some(bytes.len()), stamp, ttl);
        }
        self.typed
            .backend_call(self.typed.slot.sync.store(key, &bytes, ttl))?;
        self.typed
            .near_insert(key, stamp, value.clone(), bytes.len());
        Ok(())
    }

    /// Deletes `key`; the next [`get`](Container::get) generates it again. A missing key is not
    /// an error.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the backend fails.
    pub fn remove(&self, key: &str) -> Result<()> {
        let removed = self.typed.slot.sync.invalidate(key);
        self.typed.near_remove(key);
        self.typed.backend_call(removed)
    }

    /// Deletes every key of this container, and no other container's.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the backend fails.
    pub fn clear(&self) -> Result<()> {
        let cleared = self.typed.slot.sync.clear();
        self.typed.near_clear();
        self.typed.backend_call(cleared)
    }

    /// The miss path: joins the flights of `keys[missed]`, generates those this caller leads,
    /// stores them in one batch, and returns every missed key's value in order.
    fn generate(
        &self,
        keys: &[&str],
        missed: Vec<(usize, Option<Arc<[u8]>>)>,
        keep: Keep,
    ) -> Result<Vec<V>> {
        let call = self.typed.require_generator(keys[missed[0].0])?;
        let roles = self.typed.join(keys, missed);
        let batch = Batch::new(self.typed.clone(), roles.led, roles.fallbacks, keep);
        if !batch.is_empty() {
            self.lead(batch, &call);
        }
        roles
            .waits
            .into_iter()
            .map(|(index, flight)| self.typed.landed(keys[index], flight.wait()))
            .collect()
    }

    /// Leads `batch` round by round (see [`lead`](crate::lead)) and lands its flights.
    fn lead(&self, mut batch: Batch<V>, call: &Call<V>) {
        let store = &self.typed.slot.sync;
        loop {
            let asked = batch.to_lease();
            if !asked.is_empty() {
                let ttl = batch.lease_ttl();
                let answers = asked
                    .iter()
                    .map(|(key, token)| store.lease(key, token, ttl))
                    .collect();
                batch.leased(asked, answers);
            }
            if batch.must_look_again() {
                let pending = batch.pending();
                let pending: Vec<&str> = pending.iter().map(String::as_str).collect();
                batch.looked_again(store.retrieve_many(&pending));
            }
            let pending = batch.pending();
            if !pending.is_empty() {
                batch.generated(self.call(&pending, call));
                if !batch.hold() {
                    let results: Vec<Result<()>> = batch
                        .to_store()
                        .into_iter()
                        .map(|(ttl, entries)| match entries.as_slice() {
                            [(key, bytes)] => store.store(key, bytes, ttl),
                            entries => store.store_many(entries, ttl),
                        })
                        .collect();
                    for result in results {
                        batch.stored(result);
                    }
                }
                batch.settle();
            }
            let released = batch.take_leases();
            batch.released(
                released
                    .iter()
                    .map(|(key, token)| store.release(key, token))
                    .collect(),
            );
            let Some(pause) = batch.pause() else { break };
            std::thread::sleep(pause);
            let waiting = batch.waiting();
            let waiting: Vec<&str> = waiting.iter().map(String::as_str).collect();
            batch.polled(store.retrieve_many(&waiting));
        }
        batch.land();
    }

    /// Calls the generator for each of `keys`: a synchronous one on this thread, an async one on
    /// kvcache's runtime, all keys at once.
    fn call(&self, keys: &[String], call: &Call<V>) -> Vec<Made<V>> {
        let _span = tracing::debug_span!("kvcache.generate", container = %self.typed.slot.name, keys = keys.len()).entered();
        let stopwatch = self.typed.slot.counters.stopwatch();
        match call {
            Call::Sync(generate) => keys
                .iter()
                .map(|key| {
                    let start = Instant::now();
                    let result = stopwatch
                        .time(|| generate(key))
                        .map_err(|source| self.typed.generator_failed(key, source.into()));
                    (result, start.elapsed())
                })
                .collect(),
            Call::Async(generate) => {
                let start = Instant::now();
                let generations = keys
                    .iter()
                    .map(|key| stopwatch.time_future(generate(key.clone())))
                    .collect();
                let results = block_on_all(generations);
                let took = start.elapsed();
                keys.iter()
                    .zip(results)
                    .map(|(key, result)| {
                        let result = result
                            .map_err(|source| self.typed.generator_failed(key, source.into()));
                        (result, took)
                    })
                    .collect()
            }
        }
    }
}

impl<V> fmt::Debug for Container<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.typed, f)
    }
}
