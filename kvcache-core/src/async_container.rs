//! Async containers: the same containers, called from tasks, never blocking their executor.

use std::fmt;
use std::time::Duration;

use std::panic::AssertUnwindSafe;

use crate::codec::Value;
use futures_util::FutureExt;
use futures_util::future::join_all;

use crate::container::Container;
use crate::error::Result;
use crate::generator::Call;
use crate::lead::Batch;
use crate::runtime;
use crate::slot::{Keep, Typed};
use crate::stats::Stats;

/// A container, for async callers: the methods of [`Container`], as futures that never block
/// the executor's thread.
///
/// Made by [`KvCache::async_container`](crate::KvCache::async_container) or
/// [`Container::to_async`]; both handles share one state, so a thread and a task that miss the
/// same key share one generation. Usable from any task of a tokio runtime, multi-thread or
/// current-thread.
///
/// - A backend whose store blocks (file, SQL) runs each call on tokio's blocking pool; an
///   in-memory one is called inline; an async one (Redis) is awaited.
/// - On a miss the first caller drives the generation, shared with a task spawned on its
///   runtime, and every caller that joins it awaits its outcome. A caller whose future is
///   dropped (a timeout, a client that hung up), or never polled again, leaves the task to
///   finish the generation, store its value and give it to the others: nobody waits on a future
///   that no one polls.
/// - A synchronous generator runs on the blocking pool, an async one in that task.
pub struct AsyncContainer<V> {
    typed: Typed<V>,
}

impl<V> Clone for AsyncContainer<V> {
    fn clone(&self) -> Self {
        AsyncContainer {
            typed: self.typed.clone(),
        }
    }
}

impl<V: Value> AsyncContainer<V> {
    pub(crate) fn new(typed: Typed<V>) -> Self {
        AsyncContainer { typed }
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        self.typed.name()
    }

    /// How long a stored value lives; `None`: until it is removed or evicted.
    pub fn expire(&self) -> Option<Duration> {
        self.typed.expire()
    }

    /// The counters of this container (shared by every handle to it, of both paths).
    pub fn stats(&self) -> Stats {
        self.typed.stats()
    }

    /// The synchronous handle on the same container.
    pub fn to_sync(&self) -> Container<V> {
        Container::new(self.typed.clone())
    }

    /// The value of `key`: the stored one, or the generator's, which is then stored.
    ///
    /// # Errors
    ///
    /// Those of [`Container::get`]. A generator that panics is
    /// [`Error::Generator`](crate::Error::Generator) for every caller, its first included.
    pub async fn get(&self, key: &str) -> Result<V> {
        let landed_before = self.typed.slot.flights.landed();
        let keep = match self.peek(key).await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => Keep::Yes { landed_before },
            Err(error) => {
                self.typed.fail_open(error)?;
                Keep::No
            }
        };
        // The miss path's future is boxed: it is large, and every `get` future would otherwise
        // carry it, hits included (10,000 tasks in a stampede move it several times each).
        let mut values = Box::pin(self.generate(&[key], vec![0], keep)).await?;
        Ok(values.remove(0))
    }

    /// The values of `keys`, in order, as [`Container::get_many`].
    ///
    /// # Errors
    ///
    /// Those of [`get`](AsyncContainer::get), for the first key that fails.
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<V>> {
        let landed_before = self.typed.slot.flights.landed();
        let (mut values, keep) = match &self.typed.slot.memory {
            Some(memory) => (
                keys.iter()
                    .map(|key| self.typed.held(memory, key))
                    .collect(),
                Keep::Yes { landed_before },
            ),
            None => {
                let found = self.typed.slot.nonblocking.retrieve_many(keys).await;
                self.typed.looked_up(keys.len(), found, landed_before)?
            }
        };
        let missed: Vec<usize> = (0..keys.len()).filter(|&i| values[i].is_none()).collect();
        if !missed.is_empty() {
            let generated = Box::pin(self.generate(keys, missed.clone(), keep)).await?;
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
    /// Those of [`Container::peek`].
    pub async fn peek(&self, key: &str) -> Result<Option<V>> {
        if self.typed.slot.memory.is_some() {
            return self.typed.peek(key);
        }
        let found = self
            .typed
            .backend_call(self.typed.slot.nonblocking.retrieve(key).await)?;
        Ok(self.typed.decode_counted(found.as_deref()))
    }

    /// Stores `value` under `key` with the container's expiry.
    ///
    /// # Errors
    ///
    /// Those of [`Container::set`].
    pub async fn set(&self, key: &str, value: &V) -> Result<()> {
        if let Some(memory) = &self.typed.slot.memory {
            return self.typed.hold(memory, key, value.clone(), None);
        }
        let bytes = self.typed.encode(key, value)?;
        let stored = self
            .typed
            .slot
            .nonblocking
            .store(key, &bytes, self.expire())
            .await;
        self.typed.backend_call(stored)
    }

    /// Deletes `key`, as [`Container::remove`].
    ///
    /// # Errors
    ///
    /// Those of [`Container::remove`].
    pub async fn remove(&self, key: &str) -> Result<()> {
        let removed = match self.typed.slot.memory.is_some() {
            true => self.typed.slot.sync.invalidate(key),
            false => self.typed.slot.nonblocking.invalidate(key).await,
        };
        self.typed.backend_call(removed)
    }

    /// Deletes every key of this container, as [`Container::clear`].
    ///
    /// # Errors
    ///
    /// Those of [`Container::clear`].
    pub async fn clear(&self) -> Result<()> {
        let cleared = match self.typed.slot.memory.is_some() {
            true => self.typed.slot.sync.clear(),
            false => self.typed.slot.nonblocking.clear().await,
        };
        self.typed.backend_call(cleared)
    }

    /// The miss path: joins the flights of `keys[missed]`, hands those this caller leads to a
    /// task of their own, and awaits every missed key's value in order.
    async fn generate(&self, keys: &[&str], missed: Vec<usize>, keep: Keep) -> Result<Vec<V>> {
        let call = self.typed.require_generator(keys[missed[0]])?;
        let runtime = runtime::current()?;
        let roles = self.typed.join(keys, missed);
        let batch = Batch::new(self.typed.clone(), roles.led, keep);
        if !batch.is_empty() {
            // Shared between this caller and a task of its own: awaited here it starts at once
            // (a spawned task alone would wait behind every task the runtime has queued, 10,000
            // in a stampede); the task drives it when this caller stops polling (moka #240) or
            // stops waiting. A generator that panics is caught: the lead is dropped, its
            // leaders land the abandoned error, and every caller reads it from its flight.
            let lead = AssertUnwindSafe(lead(batch, self.typed.clone(), call))
                .catch_unwind()
                .map(drop)
                .boxed()
                .shared();
            drop(runtime.spawn(lead.clone()));
            lead.await;
        }
        let mut values = Vec::with_capacity(roles.waits.len());
        for (index, flight) in roles.waits {
            values.push(self.typed.landed(keys[index], flight.landed().await)?);
        }
        Ok(values)
    }
}

/// Generates, stores and lands the keys of `batch`.
async fn lead<V>(mut batch: Batch<V>, typed: Typed<V>, call: Call<V>)
where
    V: Value,
{
    let store = &typed.slot.nonblocking;
    if batch.must_look_again() {
        let pending = batch.pending();
        let pending: Vec<&str> = pending.iter().map(String::as_str).collect();
        batch.looked_again(store.retrieve_many(&pending).await);
    }
    let pending = batch.pending();
    batch.generated(generate(&typed, pending, call).await);
    if !batch.hold()
        && let Some(entries) = batch.to_store()
    {
        let ttl = typed.expire();
        let result = match entries.as_slice() {
            [(key, bytes)] => store.store(key, bytes, ttl).await,
            entries => store.store_many(entries, ttl).await,
        };
        batch.stored(result);
    }
    batch.land();
}

/// Calls the generator for each of `keys`, all at once: an async one in this task, a
/// synchronous one on the blocking pool.
async fn generate<V>(typed: &Typed<V>, keys: Vec<String>, call: Call<V>) -> Vec<Result<V>>
where
    V: Value,
{
    let failed = |key: &str, source: crate::error::Source| typed.generator_failed(key, source);
    let stopwatch = typed.slot.counters.stopwatch();
    match call {
        Call::Async(generate) => {
            let futures: Vec<_> = keys
                .iter()
                .map(|key| stopwatch.time_future(generate(key.clone())))
                .collect();
            let results = join_all(futures).await;
            keys.iter()
                .zip(results)
                .map(|(key, result)| result.map_err(|source| failed(key, source.into())))
                .collect()
        }
        Call::Sync(generate) => {
            let owned = keys.clone();
            let task = tokio::task::spawn_blocking(move || {
                owned
                    .iter()
                    .map(|key| stopwatch.time(|| generate(key)))
                    .collect::<Vec<_>>()
            });
            match task.await {
                Ok(results) => keys
                    .iter()
                    .zip(results)
                    .map(|(key, result)| result.map_err(|source| failed(key, source.into())))
                    .collect(),
                Err(error) => {
                    let why = if error.is_panic() {
                        "the generator panicked"
                    } else {
                        "the generator's task was cancelled: its runtime shut down"
                    };
                    keys.iter()
                        .map(|key| Err(failed(key, why.into())))
                        .collect()
                }
            }
        }
    }
}

impl<V> fmt::Debug for AsyncContainer<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.typed, f)
    }
}
