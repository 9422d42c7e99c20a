//! Async containers: the same containers, called from tasks, never blocking their executor.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use crate::codec::Value;
use futures_util::FutureExt;
use futures_util::future::join_all;

use crate::container::Container;
use crate::error::Result;
use crate::flight::Role;
use crate::fresh::Judged;
use crate::generator::Call;
use crate::lead::{Batch, Made};
use crate::runtime;
use crate::slot::{Keep, Typed};
use crate::stats::Event;
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
        let (missed, keep) = match self.look(key).await {
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
        // The miss path's future is boxed: it is large, and every `get` future would otherwise
        // carry it, hits included (10,000 tasks in a stampede move it several times each).
        let mut values = Box::pin(self.generate(&[key], missed, keep)).await?;
        Ok(values.remove(0))
    }

    /// The values of `keys`, in order, as [`Container::get_many`].
    ///
    /// # Errors
    ///
    /// Those of [`get`](AsyncContainer::get), for the first key that fails.
    pub async fn get_many(&self, keys: &[&str]) -> Result<Vec<V>> {
        let landed_before = self.typed.slot.flights.landed();
        let (near, rest) = self.typed.near_pass(keys);
        let found = match self.typed.slot.memory {
            Some(_) => Ok(Vec::new()),
            None => self.typed.slot.nonblocking.retrieve_many(&rest).await,
        };
        let (judged, keep) = self.typed.judged_batch(&rest, found, landed_before)?;
        let judged = Typed::merge_near(near, judged);
        let triage = self.typed.triage(keys, judged)?;
        let mut values = triage.values;
        if !triage.missed.is_empty() {
            let indices: Vec<usize> = triage.missed.iter().map(|(index, _)| *index).collect();
            let generated = Box::pin(self.generate(keys, triage.missed, keep)).await?;
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
    /// Those of [`Container::peek`].
    pub async fn peek(&self, key: &str) -> Result<Option<V>> {
        Ok(match self.look(key).await? {
            Judged::Serve { value, .. } => Some(value),
            Judged::Miss { .. } | Judged::Remembered(_) => None,
        })
    }

    /// What is stored under `key`, judged and counted.
    async fn look(&self, key: &str) -> Result<Judged<V>> {
        if self.typed.slot.memory.is_some() {
            return self.typed.look(key);
        }
        if let Some(served) = self.typed.near_look(key) {
            return Ok(served);
        }
        let found = self
            .typed
            .backend_call(self.typed.slot.nonblocking.retrieve(key).await)?;
        Ok(self.typed.judged_store(key, found.as_deref()))
    }

    /// Stores `value` under `key` with the container's expiry.
    ///
    /// # Errors
    ///
    /// Those of [`Container::set`].
    pub async fn set(&self, key: &str, value: &V) -> Result<()> {
        let (bytes, stamp, ttl) = self.typed.entry(key, value)?;
        if let Some(memory) = &self.typed.slot.memory {
            return self
                .typed
                .hold(memory, key, value.clone(), Some(bytes.len()), stamp, ttl);
        }
        let stored = self.typed.slot.nonblocking.store(key, &bytes, ttl).await;
        self.typed.backend_call(stored)?;
        self.typed
            .near_insert(key, stamp, value.clone(), bytes.len());
        Ok(())
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
        self.typed.near_remove(key);
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
        self.typed.near_clear();
        self.typed.backend_call(cleared)
    }

    /// The miss path: joins the flights of `keys[missed]`, hands those this caller leads to a
    /// task of their own, and awaits every missed key's value in order.
    async fn generate(
        &self,
        keys: &[&str],
        missed: Vec<(usize, Option<Arc<[u8]>>)>,
        keep: Keep,
    ) -> Result<Vec<V>> {
        let call = self.typed.require_generator(keys[missed[0].0])?;
        let runtime = runtime::current()?;
        let roles = self.typed.join(keys, missed);
        let batch = Batch::new(self.typed.clone(), roles.led, roles.fallbacks, keep);
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

/// Starts the background refresh of `keys` (with their current stored bytes) in a task of the
/// caller's runtime, or of kvcache's for a caller on none: one per key in this process (a key
/// whose flight is under way is left to it), one across processes (the store's lease). Its
/// callers are served the current values meanwhile; a failed refresh keeps them.
pub(crate) fn refresh<V: Value>(typed: &Typed<V>, keys: Vec<(String, Arc<[u8]>)>) {
    let Ok(Some(call)) = typed.generator() else {
        return;
    };
    let Ok(runtime) = runtime::current() else {
        return;
    };
    let (mut leaders, mut currents) = (Vec::new(), Vec::new());
    for (key, current) in keys {
        if let Role::Leader(leader) = typed.slot.flights.join(&key, || typed.abandoned(&key)) {
            typed.slot.counters.count(Event::Refresh);
            tracing::debug!(container = %typed.slot.name, key, "refreshing in the background");
            leaders.push(leader);
            currents.push(current);
        }
    }
    if leaders.is_empty() {
        return;
    }
    let batch = Batch::refresh(typed.clone(), leaders, currents);
    let lead = AssertUnwindSafe(lead(batch, typed.clone(), call)).catch_unwind();
    drop(runtime.spawn(lead));
}

/// Generates, stores and lands the keys of `batch`.
async fn lead<V>(mut batch: Batch<V>, typed: Typed<V>, call: Call<V>)
where
    V: Value,
{
    let store = &typed.slot.nonblocking;
    loop {
        let asked = batch.to_lease();
        if !asked.is_empty() {
            let ttl = batch.lease_ttl();
            let mut answers = Vec::with_capacity(asked.len());
            for (key, token) in &asked {
                answers.push(store.lease(key, token, ttl).await);
            }
            batch.leased(asked, answers);
        }
        if batch.must_look_again() {
            let pending = batch.pending();
            let pending: Vec<&str> = pending.iter().map(String::as_str).collect();
            batch.looked_again(store.retrieve_many(&pending).await);
        }
        let pending = batch.pending();
        if !pending.is_empty() {
            batch.generated(generate(&typed, pending, call.clone()).await);
            if !batch.hold() {
                let mut results = Vec::new();
                for (ttl, entries) in batch.to_store() {
                    results.push(match entries.as_slice() {
                        [(key, bytes)] => store.store(key, bytes, ttl).await,
                        entries => store.store_many(entries, ttl).await,
                    });
                }
                for result in results {
                    batch.stored(result);
                }
            }
            batch.settle();
        }
        let mut released = Vec::new();
        for (key, token) in batch.take_leases() {
            released.push(store.release(&key, &token).await);
        }
        batch.released(released);
        let Some(pause) = batch.pause() else { break };
        sleep(pause).await;
        let waiting = batch.waiting();
        let waiting: Vec<&str> = waiting.iter().map(String::as_str).collect();
        batch.polled(store.retrieve_many(&waiting).await);
    }
    batch.land();
}

/// Waits `pause` on kvcache's runtime, whose timer is always on (the caller's runtime may have
/// none).
async fn sleep(pause: Duration) {
    if let Ok(runtime) = runtime::runtime() {
        let _ = runtime.spawn(tokio::time::sleep(pause)).await;
    }
}

/// Calls the generator for each of `keys`, all at once: an async one in this task, a
/// synchronous one on the blocking pool; each result with how long its call took.
async fn generate<V>(typed: &Typed<V>, keys: Vec<String>, call: Call<V>) -> Vec<Made<V>>
where
    V: Value,
{
    let failed = |key: &str, source: crate::error::Source| typed.generator_failed(key, source);
    let stopwatch = typed.slot.counters.stopwatch();
    match call {
        Call::Async(generate) => {
            let futures: Vec<_> = keys
                .iter()
                .map(|key| {
                    let generation = stopwatch.time_future(generate(key.clone()));
                    async move {
                        let start = Instant::now();
                        let result = generation.await;
                        (result, start.elapsed())
                    }
                })
                .collect();
            let results = join_all(futures).await;
            keys.iter()
                .zip(results)
                .map(|(key, (result, took))| {
                    (result.map_err(|source| failed(key, source.into())), took)
                })
                .collect()
        }
        Call::Sync(generate) => {
            let owned = keys.clone();
            let task = tokio::task::spawn_blocking(move || {
                owned
                    .iter()
                    .map(|key| {
                        let start = Instant::now();
                        let result = stopwatch.time(|| generate(key));
                        (result, start.elapsed())
                    })
                    .collect::<Vec<_>>()
            });
            match task.await {
                Ok(results) => keys
                    .iter()
                    .zip(results)
                    .map(|(key, (result, took))| {
                        (result.map_err(|source| failed(key, source.into())), took)
                    })
                    .collect(),
                Err(error) => {
                    let why = if error.is_panic() {
                        "the generator panicked"
                    } else {
                        "the generator's task was cancelled: its runtime shut down"
                    };
                    keys.iter()
                        .map(|key| (Err(failed(key, why.into())), Duration::ZERO))
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
