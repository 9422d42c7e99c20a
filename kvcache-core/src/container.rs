//! Containers: typed, read-through views of one backend's (container, key) space.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::Backend;
use crate::codec::Codec;
use crate::error::{BoxError, Error, Result};
use crate::flight::{Flights, Role};
use crate::generator::{Generator, GeneratorFn};
use crate::options::{ContainerOptions, OnBackendError};
use crate::stats::{Counters, Event, Stats};

/// The state of one container, shared by the cache and every handle to it.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) backend_name: String,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) options: ContainerOptions,
    generator: RwLock<Option<Generator>>,
    flights: Flights,
    counters: Counters,
}

impl Slot {
    pub(crate) fn new(
        name: String,
        (backend_name, backend): (String, Arc<dyn Backend>),
        options: ContainerOptions,
        generator: Option<Generator>,
    ) -> Self {
        Slot {
            name,
            backend_name,
            backend,
            options,
            generator: RwLock::new(generator),
            flights: Flights::default(),
            counters: Counters::default(),
        }
    }

    pub(crate) fn generator(&self) -> Option<Generator> {
        self.generator
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_generator(&self, generator: Generator) {
        *self
            .generator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(generator);
    }
}

/// Whether a generated value is stored: not when the backend has just failed and the container
/// fails open. `Yes` carries the count of landed flights read before the caller's look-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Store {
    Yes { landed_before: u64 },
    No,
}

/// A named, typed, read-through cache of `V` values on one backend.
///
/// [`get`](Container::get) returns the stored value, or calls the container's generator, stores
/// its value with the container's expiry and returns it. Concurrent misses on one key call the
/// generator once; the other callers wait for its value. Handles are cheap to clone and share
/// one state.
///
/// Values are stored with `bincode` behind a header that names their type: bytes written by
/// another type, or by an older format, read as a miss and are regenerated.
pub struct Container<V> {
    slot: Arc<Slot>,
    codec: Codec<V>,
}

impl<V> Clone for Container<V> {
    fn clone(&self) -> Self {
        Container {
            slot: Arc::clone(&self.slot),
            codec: self.codec,
        }
    }
}

impl<V: Serialize + DeserializeOwned + 'static> Container<V> {
    /// A handle on `slot`, if `V` is its generator's value type.
    pub(crate) fn new(slot: Arc<Slot>) -> Result<Self> {
        let container = Container {
            slot,
            codec: Codec::new(),
        };
        container.generator()?;
        Ok(container)
    }

    /// The container's name.
    pub fn name(&self) -> &str {
        &self.slot.name
    }

    /// How long a stored value lives; `None`: until it is removed or evicted.
    pub fn expire(&self) -> Option<Duration> {
        self.slot.options.expire_after()
    }

    /// What [`get`](Container::get) does when the backend fails.
    pub fn on_backend_error(&self) -> OnBackendError {
        self.slot.options.backend_error_policy()
    }

    /// The name of the backend the values live in.
    pub fn backend(&self) -> &str {
        &self.slot.backend_name
    }

    /// The counters of this container (shared by every handle to it).
    pub fn stats(&self) -> Stats {
        self.slot.counters.snapshot()
    }

    /// The value of `key`: the stored one, or the generator's, which is then stored.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] on a miss when the container has no generator; [`Error::Generator`]
    /// when the generator fails or panics (in this caller or in the one it waited for), and then
    /// nothing is stored; [`Error::Backend`] when the backend fails; [`Error::Codec`] when the
    /// value cannot be encoded; [`Error::TypeMismatch`] when a generator of another value type
    /// was registered after this handle was made.
    ///
    /// # Panics
    ///
    /// When the generator panics, in the caller that ran it; the callers waiting on that key get
    /// [`Error::Generator`] instead.
    pub fn get(&self, key: &str) -> Result<V> {
        let _span = tracing::trace_span!("kvcache.get", container = %self.slot.name, key).entered();
        let landed_before = self.slot.flights.landed();
        match self.peek(key) {
            Ok(Some(value)) => Ok(value),
            Ok(None) => self.generate(key, Store::Yes { landed_before }),
            Err(error) => {
                self.fail_open(error)?;
                self.generate(key, Store::No)
            }
        }
    }

    /// The values of `keys`, in order, read from the backend in one batch where it can; each
    /// miss is generated as [`get`](Container::get) does.
    ///
    /// # Errors
    ///
    /// Those of [`get`](Container::get), for the first key that fails.
    pub fn get_many(&self, keys: &[&str]) -> Result<Vec<V>> {
        let _span = tracing::trace_span!("kvcache.get_many", container = %self.slot.name, keys = keys.len()).entered();
        let landed_before = self.slot.flights.landed();
        let found = match self.backend_call(self.slot.backend.retrieve_many(&self.slot.name, keys))
        {
            Ok(found) => found,
            Err(error) => {
                self.fail_open(error)?;
                return keys
                    .iter()
                    .map(|key| self.generate(key, Store::No))
                    .collect();
            }
        };
        if found.len() != keys.len() {
            return Err(Error::backend(
                self.slot.backend_name.clone(),
                format!(
                    "retrieve_many returned {} values for {} keys",
                    found.len(),
                    keys.len()
                ),
                "a broken backend",
            ));
        }
        keys.iter()
            .zip(found)
            .map(|(key, bytes)| match self.decode_counted(bytes) {
                Some(value) => Ok(value),
                None => self.generate(key, Store::Yes { landed_before }),
            })
            .collect()
    }

    /// The stored value of `key`, never calling the generator.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend fails. A value written by another type is `None`.
    pub fn peek(&self, key: &str) -> Result<Option<V>> {
        let mut value = None;
        let found = self.backend_call(self.slot.backend.retrieve_with(
            &self.slot.name,
            key,
            &mut |bytes| value = self.codec.decode(bytes),
        ))?;
        self.count_lookup(found, value.is_some());
        Ok(value)
    }

    /// Stores `value` under `key` with the container's expiry.
    ///
    /// # Errors
    ///
    /// [`Error::Codec`] when the value cannot be encoded, [`Error::Backend`] when the backend fails.
    pub fn set(&self, key: &str, value: &V) -> Result<()> {
        let bytes = self.encode(key, value)?;
        self.store(key, &bytes)
    }

    /// Deletes `key`; the next [`get`](Container::get) generates it again. A missing key is not
    /// an error.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend fails.
    pub fn remove(&self, key: &str) -> Result<()> {
        self.backend_call(self.slot.backend.invalidate(&self.slot.name, key))
    }

    /// Deletes every key of this container, and no other container's.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend fails.
    pub fn clear(&self) -> Result<()> {
        self.backend_call(self.slot.backend.clear(&self.slot.name))
    }

    fn generator(&self) -> Result<Option<GeneratorFn<V>>> {
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

    /// Under [`OnBackendError::Generate`], reports `error` and lets the caller generate;
    /// otherwise (or with no generator to call) returns it.
    fn fail_open(&self, error: Error) -> Result<()> {
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

    /// The miss path: one caller per key runs the generator, the others wait for its outcome.
    fn generate(&self, key: &str, store: Store) -> Result<V> {
        let generator = self.generator()?.ok_or_else(|| Error::NotFound {
            container: self.slot.name.clone(),
            key: key.to_owned(),
        })?;
        let on_abandon = || self.generator_failed(key, "the generator panicked".into());
        match self.slot.flights.join(key, &on_abandon) {
            Role::Waiter(flight) => {
                self.slot.counters.count(Event::Wait);
                tracing::debug!(container = %self.slot.name, key, "waiting for another caller's generator");
                let bytes = flight.wait()?;
                self.codec.decode(&bytes).ok_or_else(|| Error::Codec {
                    container: self.slot.name.clone(),
                    key: key.to_owned(),
                    type_name: Codec::<V>::type_name(),
                    source: "the value generated by another caller is of another type".into(),
                })
            }
            Role::Leader(leader) => {
                let result = self.lead(key, &generator, store);
                leader.land(match &result {
                    Ok((_, bytes)) => Ok(Arc::from(bytes.as_slice())),
                    Err(error) => Err(error.share()),
                });
                result.map(|(value, _)| value)
            }
        }
    }

    fn lead(
        &self,
        key: &str,
        generator: &GeneratorFn<V>,
        mut store: Store,
    ) -> Result<(V, Vec<u8>)> {
        // Another leader may have stored the value between this caller's look-up and its flight;
        // unless no flight has landed since, which spares an uncontended miss a second look-up.
        if let Store::Yes { landed_before } = store
            && self.slot.flights.landed() != landed_before
        {
            match self.backend_call(self.slot.backend.retrieve(&self.slot.name, key)) {
                Ok(Some(bytes)) => {
                    if let Some(value) = self.codec.decode(&bytes) {
                        return Ok((value, bytes));
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    self.fail_open(error)?;
                    store = Store::No;
                }
            }
        }
        let _span =
            tracing::debug_span!("kvcache.generate", container = %self.slot.name, key).entered();
        let value = generator(key).map_err(|source| self.generator_failed(key, source))?;
        self.slot.counters.count(Event::Generation);
        let bytes = self.encode(key, &value)?;
        if store != Store::No
            && let Err(error) = self.store(key, &bytes)
        {
            self.fail_open(error)?;
        }
        Ok((value, bytes))
    }

    /// Counts a generator's failure on `key` and makes its error.
    fn generator_failed(&self, key: &str, source: BoxError) -> Error {
        self.slot.counters.count(Event::GeneratorError);
        Error::Generator {
            container: self.slot.name.clone(),
            key: key.to_owned(),
            source,
        }
    }

    fn decode_counted(&self, bytes: Option<Vec<u8>>) -> Option<V> {
        let value = bytes.as_deref().and_then(|bytes| self.codec.decode(bytes));
        self.count_lookup(bytes.is_some(), value.is_some());
        value
    }

    /// Counts a look-up that `found` bytes, which `decoded` or not.
    fn count_lookup(&self, found: bool, decoded: bool) {
        if decoded {
            self.slot.counters.count(Event::Hit);
            tracing::trace!(container = %self.slot.name, "hit");
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

    fn encode(&self, key: &str, value: &V) -> Result<Vec<u8>> {
        self.codec.encode(value).map_err(|source| Error::Codec {
            container: self.slot.name.clone(),
            key: key.to_owned(),
            type_name: Codec::<V>::type_name(),
            source,
        })
    }

    fn store(&self, key: &str, bytes: &[u8]) -> Result<()> {
        tracing::trace!(container = %self.slot.name, key, len = bytes.len(), "store");
        self.backend_call(self.slot.backend.store(
            &self.slot.name,
            key,
            bytes,
            self.slot.options.expire_after(),
        ))
    }

    fn backend_call<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            self.slot.counters.count(Event::BackendError);
            tracing::debug!(
                container = %self.slot.name,
                error = error as &dyn std::error::Error,
                "backend error"
            );
        }
        result
    }
}

impl<V> fmt::Debug for Container<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Container")
            .field("name", &self.slot.name)
            .field("backend", &self.slot.backend_name)
            .field("options", &self.slot.options)
            .field("value_type", &std::any::type_name::<V>())
            .finish()
    }
}
