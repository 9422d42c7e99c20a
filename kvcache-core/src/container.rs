//! Containers: typed, read-through views of one backend's space for a container, called from
//! threads.

use std::fmt;
use std::time::Duration;

use crate::codec::Value;

use crate::async_container::AsyncContainer;
use crate::error::Result;
use crate::generator::{Call, block_on_all};
use crate::lead::Batch;
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
        let keep = match self.peek(key) {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => Keep::Yes { landed_before },
            Err(error) => {
                self.typed.fail_open(error)?;
                Keep::No
            }
        };
        let mut values = self.generate(&[key], vec![0], keep)?;
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
        let (mut values, keep) = match &self.typed.slot.memory {
            Some(memory) => (
                keys.iter()
                    .map(|key| self.typed.held(memory, key))
                    .collect(),
                Keep::Yes { landed_before },
            ),
            None => {
                let found = self.typed.slot.sync.retrieve_many(keys);
                self.typed.looked_up(keys.len(), found, landed_before)?
            }
        };
        let missed: Vec<usize> = (0..keys.len()).filter(|&i| values[i].is_none()).collect();
        if !missed.is_empty() {
            let generated = self.generate(keys, missed.clone(), keep)?;
            for (index, value) in missed.into_iter().zip(generated) {
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
        if let Some(memory) = &self.typed.slot.memory {
            return self.typed.hold(memory, key, value.clone(), None);
        }
        let bytes = self.typed.encode(key, value)?;
        self.typed
            .backend_call(self.typed.slot.sync.store(key, &bytes, self.expire()))
    }

    /// Deletes `key`; the next [`get`](Container::get) generates it again. A missing key is not
    /// an error.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the backend fails.
    pub fn remove(&self, key: &str) -> Result<()> {
        self.typed
            .backend_call(self.typed.slot.sync.invalidate(key))
    }

    /// Deletes every key of this container, and no other container's.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`](crate::Error::Backend) when the backend fails.
    pub fn clear(&self) -> Result<()> {
        self.typed.backend_call(self.typed.slot.sync.clear())
    }

    /// The miss path: joins the flights of `keys[missed]`, generates those this caller leads,
    /// stores them in one batch, and returns every missed key's value in order.
    fn generate(&self, keys: &[&str], missed: Vec<usize>, keep: Keep) -> Result<Vec<V>> {
        let call = self.typed.require_generator(keys[missed[0]])?;
        let roles = self.typed.join(keys, missed);
        let mut batch = Batch::new(self.typed.clone(), roles.led, keep);
        if !batch.is_empty() {
            if batch.must_look_again() {
                let pending = batch.pending();
                let pending: Vec<&str> = pending.iter().map(String::as_str).collect();
                batch.looked_again(self.typed.slot.sync.retrieve_many(&pending));
            }
            let pending = batch.pending();
            batch.generated(self.call(&pending, &call));
            if !batch.hold()
                && let Some(entries) = batch.to_store()
            {
                let ttl = self.expire();
                let result = match entries.as_slice() {
                    [(key, bytes)] => self.typed.slot.sync.store(key, bytes, ttl),
                    entries => self.typed.slot.sync.store_many(entries, ttl),
                };
                batch.stored(result);
            }
            batch.land();
        }
        roles
            .waits
            .into_iter()
            .map(|(index, flight)| self.typed.landed(keys[index], flight.wait()))
            .collect()
    }

    /// Calls the generator for each of `keys`: a synchronous one on this thread, an async one on
    /// kvcache's runtime, all keys at once.
    fn call(&self, keys: &[String], call: &Call<V>) -> Vec<Result<V>> {
        let _span = tracing::debug_span!("kvcache.generate", container = %self.typed.slot.name, keys = keys.len()).entered();
        let stopwatch = self.typed.slot.counters.stopwatch();
        match call {
            Call::Sync(generate) => keys
                .iter()
                .map(|key| {
                    stopwatch
                        .time(|| generate(key))
                        .map_err(|source| self.typed.generator_failed(key, source.into()))
                })
                .collect(),
            Call::Async(generate) => {
                let generations = keys
                    .iter()
                    .map(|key| stopwatch.time_future(generate(key.clone())))
                    .collect();
                keys.iter()
                    .zip(block_on_all(generations))
                    .map(|(key, result)| {
                        result.map_err(|source| self.typed.generator_failed(key, source.into()))
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
