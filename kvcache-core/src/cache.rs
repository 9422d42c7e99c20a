//! The cache: the backends and containers a configuration declares.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use crate::codec::Value;

use crate::async_container::AsyncContainer;
use crate::backend::{Backend, BackendConfig};
use crate::breaker::{Breaker, DEFAULT_BACKOFF};
use crate::clock::{Clock, SystemClock};
use crate::config::{BackendSpec, Config};
use crate::container::Container;
use crate::error::{BoxError, Error, Result};
use crate::generator::Generator;
use crate::interval::parse_interval;
use crate::near::{NearBackend, NearSpec};
use crate::options::ContainerOptions;
use crate::registry::{self, BackendRegistration};
use crate::slot::{Opened, Slot, Typed, Weigher};

/// The option of every backend that sets how long its calls fail at once after it was found
/// unreachable (`0`: never).
const OUTAGE_BACKOFF: &str = "outage_backoff";

/// What opening a declared backend takes.
pub(crate) struct Prepared {
    pub(crate) registration: &'static BackendRegistration,
    /// Its configuration, the core's own options taken out.
    pub(crate) config: BackendConfig,
    /// Its outage backoff, when set.
    pub(crate) backoff: Option<Duration>,
    /// Its near tier, when one is declared.
    pub(crate) near: Option<NearSpec>,
}

/// What opening the declared backend `name` on `clock` takes.
pub(crate) fn prepare_backend(
    name: &str,
    spec: &BackendSpec,
    clock: Arc<dyn Clock>,
) -> Result<Prepared> {
    let (kind, key) = spec
        .kind
        .as_ref()
        .expect("Config::check ensures every backend has a kind");
    let registration = registry::backend_kind(kind, key)?;
    let mut config = BackendConfig::new(name, kind.clone()).clock(clock);
    let mut backoff = None;
    let mut near = None;
    for (option, value) in &spec.options {
        if NearSpec::take(&mut near, name, option, value)? {
            continue;
        }
        // The core's own option: every kind has it, no factory sees it.
        if option == OUTAGE_BACKOFF {
            let parsed = parse_interval(value).map_err(|message| {
                Error::config(format!("backend.{name}.{OUTAGE_BACKOFF}"), message)
            })?;
            backoff = Some(parsed);
            continue;
        }
        config = config.option(option.clone(), value.clone());
    }
    Ok(Prepared {
        registration,
        config,
        backoff,
        near,
    })
}

/// The container name a backend is opened for to learn whether it is in memory.
const NEAR_PROBE: &str = "kvcache near probe";

/// The backend kind that containers declared only by a generator are given.
const IMPLICIT_KIND: &str = "variable";

/// Builds a cache from a flat configuration map: any iterator of (key, value) string pairs.
///
/// See [`Config`] for the keys; [`KvCache::new`] takes a [`Config`] read from TOML.
///
/// # Errors
///
/// Every error of [`Config::from_pairs`] and [`KvCache::new`].
pub fn init<I, K, V>(pairs: I) -> Result<KvCache>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    KvCache::new(Config::from_pairs(pairs)?)
}

/// A set of named containers on named backends, built from a [`Config`].
///
/// `Send + Sync`: share it across threads in an `Arc`. Containers are looked up by name and value
/// type with [`container`](KvCache::container).
pub struct KvCache {
    backends: BTreeMap<String, Arc<dyn Backend>>,
    /// Each backend's near tier, for those that declare one.
    nears: BTreeMap<String, NearBackend>,
    /// Each backend's circuit breaker, shared by its containers.
    breakers: BTreeMap<String, Arc<Breaker>>,
    containers: RwLock<BTreeMap<String, Arc<Slot>>>,
    clock: Arc<dyn Clock>,
    implicit: OnceLock<Arc<dyn Backend>>,
}

/// Builds a [`KvCache`] with settings beyond its configuration: [`KvCache::builder`].
#[derive(Debug)]
#[must_use]
pub struct Builder {
    config: Config,
    clock: Arc<dyn Clock>,
    backends: BTreeMap<String, Arc<dyn Backend>>,
    backoffs: BTreeMap<String, Duration>,
}

impl Builder {
    /// The clock every backend reads expiry against (the system clock by default).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a backend built in code under `name`, for containers to name as the configuration's
    /// own backends are named. It reads its own clock, not the builder's.
    pub fn backend(mut self, name: impl Into<String>, backend: Arc<dyn Backend>) -> Self {
        self.backends.insert(name.into(), backend);
        self
    }

    /// How long the calls of the backend `name` fail at once after it was found unreachable
    /// (one second unless set; zero: never), as `backend.NAME.outage_backoff` sets it for a
    /// backend of the configuration.
    pub fn outage_backoff(mut self, name: impl Into<String>, backoff: Duration) -> Self {
        self.backoffs.insert(name.into(), backoff);
        self
    }

    /// Opens every backend, makes every container and gives each its generator.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownBackend`] for a kind no linked crate registers (listing those that are);
    /// [`Error::InvalidConfig`] for an option the backend does not accept, a generator name no
    /// `#[generator]` registers, or a generator's container that needs the in-memory backend
    /// while it is not linked; [`Error::DuplicateRegistration`] for two generators of one name or
    /// two backends of one kind; [`Error::Backend`] when a backend cannot be opened.
    pub fn build(self) -> Result<KvCache> {
        let Builder {
            config,
            clock,
            mut backends,
            backoffs,
        } = self;
        let mut breakers: BTreeMap<String, Arc<Breaker>> = backoffs
            .iter()
            .map(|(name, &backoff)| (name.clone(), Arc::new(Breaker::new(name, backoff))))
            .collect();
        let mut nears = BTreeMap::new();
        for (name, spec) in &config.backends {
            if backends.contains_key(name) {
                return Err(Error::config(
                    format!("backend.{name}"),
                    "is declared twice: in the configuration and with Builder::backend",
                ));
            }
            let prepared = prepare_backend(name, spec, Arc::clone(&clock))?;
            if let Some(backoff) = prepared.backoff {
                breakers.insert(name.clone(), Arc::new(Breaker::new(name, backoff)));
            }
            let backend = prepared.registration.open(&prepared.config)?;
            if let Some(near) = prepared.near {
                if backend
                    .open(NEAR_PROBE)
                    .is_ok_and(|space| space.is_memory())
                {
                    return Err(Error::config(
                        format!("backend.{name}.near_max_entries"),
                        "a near tier is for a shared backend; this one is in memory already",
                    ));
                }
                nears.insert(name.clone(), near.open(name, Arc::clone(&clock))?);
            }
            backends.insert(name.clone(), backend);
        }
        for name in backends.keys() {
            breakers
                .entry(name.clone())
                .or_insert_with(|| Arc::new(Breaker::new(name, DEFAULT_BACKOFF)));
        }
        let cache = KvCache {
            backends,
            nears,
            breakers,
            containers: RwLock::default(),
            clock,
            implicit: OnceLock::new(),
        };

        let generators = registry::generators()?;
        for (name, spec) in &config.containers {
            let backend_name = spec
                .backend
                .as_ref()
                .expect("Config::check ensures every container has a backend");
            let generator = match &spec.generator {
                Some(generator) => Some(generators.get(generator.as_str()).ok_or_else(|| {
                    Error::config(
                        format!("container.{name}.generator"),
                        format!(
                            "no generator is registered as {generator:?} (registered: {})",
                            if generators.is_empty() {
                                "none".to_owned()
                            } else {
                                generators.keys().copied().collect::<Vec<_>>().join(", ")
                            }
                        ),
                    )
                })?),
                None => generators.get(name.as_str()),
            };
            let backend = cache.backends.get(backend_name).ok_or_else(|| {
                Error::config(
                    format!("container.{name}.backend"),
                    format!(
                        "names the backend {backend_name:?}, which is not declared (declared: {})",
                        cache.backend_list()
                    ),
                )
            })?;
            cache.insert_slot(Slot::new(
                name.clone(),
                cache.open(backend_name, backend, name)?,
                spec.options,
                generator.map(|registration| registration.generator()),
            ))?;
        }

        let claimed: Vec<&str> = config
            .containers
            .values()
            .filter_map(|spec| spec.generator.as_deref())
            .collect();
        for (name, registration) in generators {
            if !config.containers.contains_key(name) && !claimed.contains(&name) {
                cache.implicit_container(
                    name,
                    registration.function(),
                    registration.generator(),
                )?;
            }
        }
        Ok(cache)
    }
}

impl KvCache {
    /// Builds the cache `config` declares, on the system clock.
    ///
    /// # Errors
    ///
    /// Those of [`Builder::build`].
    pub fn new(config: Config) -> Result<KvCache> {
        Self::builder(config).build()
    }

    /// A builder for the cache `config` declares, for settings beyond the configuration.
    pub fn builder(config: Config) -> Builder {
        Builder {
            config,
            clock: Arc::new(SystemClock),
            backends: BTreeMap::new(),
            backoffs: BTreeMap::new(),
        }
    }

    /// The container `name`, holding values of type `V`.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownContainer`] (listing the containers there are); [`Error::TypeMismatch`]
    /// when the container's generator makes values of another type.
    pub fn container<V>(&self, name: &str) -> Result<Container<V>>
    where
        V: Value,
    {
        self.typed(name).map(Container::new)
    }

    /// The container `name`, holding values of type `V`, for async callers.
    ///
    /// ```no_run
    /// # async fn f() -> kvcache_core::Result<()> {
    /// // The `variable` kind is linked by the `kvcache` facade.
    /// let cache = kvcache_core::init([("backend.mem", "variable"), ("container.lengths.backend", "mem")])?;
    /// cache.register_async_generator("lengths", |key: String| async move { key.len() })?;
    /// let lengths = cache.async_container::<usize>("lengths")?;
    /// assert_eq!(lengths.get("four").await?, 4);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// Those of [`container`](KvCache::container).
    pub fn async_container<V>(&self, name: &str) -> Result<AsyncContainer<V>>
    where
        V: Value,
    {
        self.typed(name).map(AsyncContainer::new)
    }

    fn typed<V>(&self, name: &str) -> Result<Typed<V>>
    where
        V: Value,
    {
        let slot = self.slot(name).ok_or_else(|| Error::UnknownContainer {
            name: name.to_owned(),
            known: self.containers(),
        })?;
        Typed::new(slot)
    }

    /// The names of every container, sorted.
    pub fn containers(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The backend declared as `name`.
    pub fn backend(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.backends.get(name)
    }

    /// Makes `f` the generator of the container `name`, replacing the one it had.
    ///
    /// A name no container has gets a container of its own on a fresh in-memory backend,
    /// without expiry, and a warning through `tracing`, as the original did.
    ///
    /// ```no_run
    /// // The `variable` kind is linked by the `kvcache` facade.
    /// let cache = kvcache_core::init([("backend.mem", "variable"), ("container.greeting.backend", "mem")])?;
    /// cache.register_generator("greeting", |name: &str| format!("Hello {name}!"))?;
    /// assert_eq!(cache.container::<String>("greeting")?.get("Peter")?, "Hello Peter!");
    /// # Ok::<(), kvcache_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when a new container is needed and no in-memory backend is linked.
    pub fn register_generator<V, F>(&self, name: &str, f: F) -> Result<()>
    where
        V: Value,
        F: Fn(&str) -> V + Send + Sync + 'static,
    {
        self.set_generator(name, Generator::new(f))
    }

    /// Registers `generator` for container `name`: any kind of [`Generator`], such as one that
    /// says how long its values live ([`Generator::expiring`]).
    ///
    /// # Errors
    ///
    /// Those of [`register_generator`](KvCache::register_generator).
    pub fn register(&self, name: &str, generator: Generator) -> Result<()> {
        self.set_generator(name, generator)
    }

    /// Like [`register_generator`](KvCache::register_generator), for a generator that can fail.
    ///
    /// # Errors
    ///
    /// Those of [`register_generator`](KvCache::register_generator).
    pub fn register_fallible_generator<V, E, F>(&self, name: &str, f: F) -> Result<()>
    where
        V: Value,
        E: Into<BoxError>,
        F: Fn(&str) -> Result<V, E> + Send + Sync + 'static,
    {
        self.set_generator(name, Generator::fallible(f))
    }

    /// Like [`register_generator`](KvCache::register_generator), for an async generator. It is
    /// given the key as an owned `String`, so its future borrows nothing and can run on when the
    /// caller that started it stops waiting.
    ///
    /// # Errors
    ///
    /// Those of [`register_generator`](KvCache::register_generator).
    pub fn register_async_generator<V, F, Fut>(&self, name: &str, f: F) -> Result<()>
    where
        V: Value,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        self.set_generator(name, Generator::new_async(f))
    }

    /// Like [`register_async_generator`](KvCache::register_async_generator), for an async
    /// generator that can fail.
    ///
    /// # Errors
    ///
    /// Those of [`register_generator`](KvCache::register_generator).
    pub fn register_fallible_async_generator<V, E, F, Fut>(&self, name: &str, f: F) -> Result<()>
    where
        V: Value,
        E: Into<BoxError>,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        self.set_generator(name, Generator::fallible_async(f))
    }

    /// Makes a container that the configuration did not declare, on the backend declared as
    /// `backend`.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use kvcache_core::{ContainerOptions, Generator};
    ///
    /// // The `variable` kind is linked by the `kvcache` facade.
    /// let cache = kvcache_core::init([("backend.mem", "variable")])?;
    /// cache.create_container(
    ///     "lengths",
    ///     "mem",
    ///     ContainerOptions::default().expire(Duration::from_secs(90)),
    ///     Some(Generator::new(|key: &str| key.len())),
    /// )?;
    /// assert_eq!(cache.container::<usize>("lengths")?.get("four")?, 4);
    /// # Ok::<(), kvcache_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ContainerAlreadyConfigured`] when the name is taken; [`Error::InvalidConfig`]
    /// when `backend` names no declared backend.
    pub fn create_container(
        &self,
        name: &str,
        backend: &str,
        options: ContainerOptions,
        generator: Option<Generator>,
    ) -> Result<()> {
        let instance = self.backends.get(backend).ok_or_else(|| {
            Error::config(
                format!("container.{name}.backend"),
                format!(
                    "names the backend {backend:?}, which is not declared (declared: {})",
                    self.backend_list()
                ),
            )
        })?;
        self.insert_slot(Slot::new(
            name.to_owned(),
            self.open(backend, instance, name)?,
            options,
            generator,
        ))
    }

    /// Deletes the expired entries of every backend.
    ///
    /// # Errors
    ///
    /// The first backend error; the other backends are still purged.
    pub fn purge_expired(&self) -> Result<()> {
        let implicit = self.implicit.get().into_iter();
        let mut first_error = None;
        for backend in self.backends.values().chain(implicit) {
            if let Err(error) = backend.purge_expired() {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Weighs the values of container `name` with `weigher` (its key and value to a weight in
    /// bytes) for an in-memory backend's `max_bytes`, instead of their key and encoded length:
    /// for values whose encoding says little of what they hold (an `Arc` of a large buffer).
    /// Other backends ignore it.
    ///
    /// ```no_run
    /// // The `variable` kind is linked by the `kvcache` facade.
    /// let cache = kvcache_core::init([("backend.mem", "variable"), ("container.c.backend", "mem")])?;
    /// cache.register_weigher("c", |key: &str, value: &Vec<u8>| (key.len() + value.capacity()) as u64)?;
    /// # Ok::<(), kvcache_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::UnknownContainer`] when the configuration has no container `name`.
    pub fn register_weigher<V, F>(&self, name: &str, weigher: F) -> Result<()>
    where
        V: Value,
        F: Fn(&str, &V) -> u64 + Send + Sync + 'static,
    {
        let slot = self.slot(name).ok_or_else(|| Error::UnknownContainer {
            name: name.to_owned(),
            known: self.containers(),
        })?;
        slot.set_weigher(Weigher(Arc::new(move |key, value| {
            value.downcast_ref::<V>().map(|value| weigher(key, value))
        })));
        Ok(())
    }

    fn set_generator(&self, name: &str, generator: Generator) -> Result<()> {
        match self.slot(name) {
            Some(slot) => {
                slot.set_generator(generator);
                Ok(())
            }
            None => self.implicit_container(name, "register_generator", generator),
        }
    }

    fn implicit_container(&self, name: &str, origin: &str, generator: Generator) -> Result<()> {
        let backend = match self.implicit.get() {
            Some(backend) => Arc::clone(backend),
            None => {
                let key = format!("container.{name}.backend");
                let config =
                    BackendConfig::new(IMPLICIT_KIND, IMPLICIT_KIND).clock(Arc::clone(&self.clock));
                let opened = registry::backend_kind(IMPLICIT_KIND, &key)
                    .and_then(|registration| registration.open(&config))
                    .map_err(|error| {
                        Error::config(
                            key,
                            format!(
                                "the generator {origin} is for container {name:?}, which the configuration does not declare, \
                                 and no in-memory backend can hold it ({error}); declare the container or enable the `variable` feature"
                            ),
                        )
                    })?;
                Arc::clone(self.implicit.get_or_init(|| opened))
            }
        };
        tracing::warn!(
            container = name,
            generator = origin,
            "the configuration does not declare this container: it gets one of its own on the in-memory backend"
        );
        self.insert_slot(Slot::new(
            name.to_owned(),
            Opened {
                backend_name: IMPLICIT_KIND.to_owned(),
                space: backend.open(name)?,
                breaker: None,
                clock: Arc::clone(&self.clock),
                near: None,
            },
            ContainerOptions::default(),
            Some(generator),
        ))
    }

    /// What a slot of container `container` on the backend declared as `name` is made of: the
    /// backend's name, its space for the container, the backend's breaker, and the clock.
    fn open(&self, name: &str, backend: &Arc<dyn Backend>, container: &str) -> Result<Opened<'_>> {
        Ok(Opened {
            backend_name: name.to_owned(),
            space: backend.open(container)?,
            breaker: self.breakers.get(name),
            clock: Arc::clone(&self.clock),
            near: self
                .nears
                .get(name)
                .map(|near| near.near(backend, container))
                .transpose()?,
        })
    }

    fn insert_slot(&self, slot: Slot) -> Result<()> {
        let mut containers = self
            .containers
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if containers.contains_key(&slot.name) {
            return Err(Error::ContainerAlreadyConfigured { name: slot.name });
        }
        containers.insert(slot.name.clone(), Arc::new(slot));
        Ok(())
    }

    fn backend_list(&self) -> String {
        if self.backends.is_empty() {
            "none".to_owned()
        } else {
            self.backends.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    fn slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.read().get(name).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Slot>>> {
        self.containers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for KvCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KvCache")
            .field("backends", &self.backends.keys().collect::<Vec<_>>())
            .field("containers", &self.containers())
            .finish_non_exhaustive()
    }
}
