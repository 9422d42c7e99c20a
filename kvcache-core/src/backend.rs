//! The contract a storage backend implements, and the configuration it is built from.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::inspect::Inspect;
use crate::interval::parse_interval;
use crate::memory::MemoryStore;
use crate::size::parse_size;

/// Where values live: a named store that gives each container a [`Space`] of its own.
///
/// A backend is opened once per configuration and shared by every container that names it,
/// across threads and tasks. [`open`](Backend::open) runs once per container, when the container
/// is made: whatever every call of that container needs (a key prefix, a hash of its name) is
/// computed there, not per call. Two containers never see each other's keys.
pub trait Backend: Send + Sync + Debug {
    /// The space of container `name`, as this backend natively serves it: with blocking calls
    /// ([`Space::Blocking`]), calls that never block ([`Space::Memory`]) or futures
    /// ([`Space::Async`]). The core adapts it to the other path.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the backend cannot serve that container.
    fn open(&self, container: &str) -> Result<Space>;

    /// Deletes every expired entry of every container. Backends whose store expires entries by
    /// itself (Redis) have nothing to do here.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store fails.
    fn purge_expired(&self) -> Result<()>;

    /// What an operator can ask of this backend from outside the application: its containers,
    /// their sizes, keys and entries ([`Inspect`], for the `kvcache` command). `None`, the
    /// default, for a backend that cannot tell.
    fn inspect(&self) -> Option<&dyn Inspect> {
        None
    }

    /// Subscribes `watcher` to the changes every instance sharing the store makes to container
    /// `container`'s entries, through the store's channel (Redis pub/sub, PostgreSQL
    /// `LISTEN/NOTIFY`), and from then on publishes this process's own changes to it (stores,
    /// removals, clears) on that channel. Returns `false`, the default, for a store with no
    /// channel: a near tier in front of it relies on its near expiry alone.
    ///
    /// The watcher is called from the backend's own thread or task and must not block. A
    /// change this backend object made itself is not delivered to it. When the channel drops,
    /// the watcher gets [`Change::Lost`] before the backend resubscribes.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] when the store cannot subscribe.
    fn watch(&self, container: &str, watcher: Watcher) -> Result<bool> {
        let _ = (container, watcher);
        Ok(false)
    }
}

/// A change to a container's entries that another instance made, as a store's channel tells
/// it ([`Backend::watch`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These keys were stored (a new value) or removed.
    Keys(Vec<String>),
    /// Every key of the container was cleared.
    Cleared,
    /// The channel dropped: changes may have been missed. Delivered before resubscribing.
    Lost,
}

/// Where a store's channel delivers a container's [`Change`]s.
pub type Watcher = Arc<dyn Fn(Change) + Send + Sync>;

/// One container's entries in a backend, as the backend natively serves them.
///
/// A backend implements the side that is natural to its driver, once; the core derives the
/// other: a container's synchronous calls drive an [`AsyncStore`] on kvcache's own runtime
/// ([`runtime`](crate::runtime)), and its async calls run a blocking [`Store`] on tokio's
/// blocking pool, or call a memory one inline.
#[derive(Debug, Clone)]
pub enum Space {
    /// An in-process store that keeps values decoded: both paths call it inline, and a hit
    /// clones the value instead of decoding it.
    Memory(Arc<dyn MemoryStore>),
    /// A store whose calls block their thread on I/O (rusqlite, diesel): the async path runs
    /// them on tokio's blocking pool.
    Blocking(Arc<dyn Store>),
    /// A native async store (Redis): the synchronous path drives its futures on kvcache's own
    /// runtime.
    Async(Arc<dyn AsyncStore>),
}

/// The synchronous side of a container's [`Space`]: its entries, by key, with an optional time
/// to live.
///
/// A miss is `Ok(None)`, never an error; an expired entry is a miss. Only `store`, `retrieve`,
/// `invalidate` and `clear` are required; the others loop over them unless the store has
/// something faster.
pub trait Store: Send + Sync + Debug {
    /// Stores `value` under `key`, replacing what was there. With `ttl`, the entry expires that
    /// long after now; without, it never expires.
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// The bytes stored under `key`, or `None` when absent or expired.
    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>>;

    /// Deletes the entry under `key`. Deleting an absent entry is not an error.
    fn invalidate(&self, key: &str) -> Result<()>;

    /// Deletes every entry of this container, and no other container's.
    fn clear(&self) -> Result<()>;

    /// Reads the bytes stored under `key` in place: calls `read` with them and returns `true`,
    /// or returns `false` on a miss. Containers read through this method; the default copies
    /// the bytes through [`retrieve`](Store::retrieve), and a store that holds them in memory
    /// overrides it to skip that copy.
    fn retrieve_with(&self, key: &str, read: &mut dyn FnMut(&[u8])) -> Result<bool> {
        Ok(self.retrieve(key)?.map(|bytes| read(&bytes)).is_some())
    }

    /// The bytes stored under each of `keys`, in order.
    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|key| self.retrieve(key)).collect()
    }

    /// Stores each `(key, value)` of `entries` with one `ttl`.
    fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        entries
            .iter()
            .try_for_each(|(key, value)| self.store(key, value, ttl))
    }

    /// Takes the lease on generating `key` for `ttl`, under `token`, unless another live lease
    /// holds it: how one caller across every process sharing the store generates a missing key
    /// while the others wait for its value. A lease held past its `ttl` (its holder died) is
    /// free again. Leases are kept apart from the entries: no read, clear or listing sees them.
    ///
    /// The default, for a store no other process shares, is [`Lease::Unshared`].
    fn lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Lease> {
        let _ = (key, token, ttl);
        Ok(Lease::Unshared)
    }

    /// Gives up the lease on `key` if `token` still holds it; another holder's lease is left
    /// alone.
    fn release(&self, key: &str, token: &str) -> Result<()> {
        let _ = (key, token);
        Ok(())
    }
}

/// The answer to [`Store::lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This caller holds it now, until it releases it or its time to live passes.
    Acquired,
    /// Another caller, in this process or another, holds it.
    Held,
    /// The store is private to this process: single flight within the process is enough.
    Unshared,
}

/// A boxed future that can move between threads, as [`AsyncStore`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The async side of a container's [`Space`]: [`Store`]'s calls, as futures.
///
/// Futures may be dropped at any await point (a caller that timed out): an implementation
/// leaves its connections in a usable state when that happens.
pub trait AsyncStore: Send + Sync + Debug {
    /// As [`Store::store`].
    fn store<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>>;

    /// As [`Store::retrieve`].
    fn retrieve<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;

    /// As [`Store::invalidate`].
    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>>;

    /// As [`Store::clear`].
    fn clear(&self) -> BoxFuture<'_, Result<()>>;

    /// As [`Store::retrieve_many`]; the default awaits one key after another.
    fn retrieve_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        Box::pin(async move {
            let mut found = Vec::with_capacity(keys.len());
            for key in keys {
                found.push(self.retrieve(key).await?);
            }
            Ok(found)
        })
    }

    /// As [`Store::store_many`]; the default awaits one entry after another.
    fn store_many<'a>(
        &'a self,
        entries: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for (key, value) in entries {
                self.store(key, value, ttl).await?;
            }
            Ok(())
        })
    }

    /// As [`Store::lease`].
    fn lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease>> {
        let _ = (key, token, ttl);
        Box::pin(std::future::ready(Ok(Lease::Unshared)))
    }

    /// As [`Store::release`].
    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        let _ = (key, token);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What a backend factory gets: the backend's name, its kind, its options and the clock.
///
/// Options are the configuration's `backend.NAME.OPTION` values, as text. The accessors turn them
/// into typed values and, when they cannot, into an [`Error::InvalidConfig`] naming the full key.
#[derive(Clone)]
pub struct BackendConfig {
    name: String,
    kind: String,
    options: BTreeMap<String, String>,
    clock: Arc<dyn Clock>,
}

impl BackendConfig {
    /// A configuration for the backend `name` of kind `kind`, with no options, on the system clock.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        BackendConfig {
            name: name.into(),
            kind: kind.into(),
            options: BTreeMap::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// Sets the option `key` (without the `backend.NAME.` prefix).
    #[must_use]
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.options.insert(key.into(), value.into());
        self
    }

    /// Sets the clock the backend reads expiry against.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The backend's name in the configuration (`disk` in `backend.disk = file`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind asked for, as written (`file`, or an alias).
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The clock to read expiry against.
    pub fn clock_handle(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    /// Every option, by key.
    pub fn options(&self) -> &BTreeMap<String, String> {
        &self.options
    }

    /// The full configuration key of option `option`: `backend.NAME.OPTION`.
    pub fn key(&self, option: &str) -> String {
        format!("backend.{}.{option}", self.name)
    }

    /// The text of option `option`, if set.
    pub fn get(&self, option: &str) -> Option<&str> {
        self.options.get(option).map(String::as_str)
    }

    /// The text of the first of `options` that is set: an option and its aliases.
    pub fn get_any<'a>(&'a self, options: &[&'a str]) -> Option<(&'a str, &'a str)> {
        options
            .iter()
            .find_map(|&option| self.get(option).map(|value| (option, value)))
    }

    /// The text of option `option`, or an error naming its key.
    pub fn require(&self, option: &str) -> Result<&str> {
        self.get(option)
            .ok_or_else(|| Error::config(self.key(option), "is required"))
    }

    /// Option `option` parsed as a `T`, if set; `expected` says what it should be in the error.
    pub fn parse<T: FromStr>(&self, option: &str, expected: &str) -> Result<Option<T>> {
        self.get(option)
            .map(|text| {
                text.trim().parse().map_err(|_| {
                    Error::config(
                        self.key(option),
                        format!("expected {expected}, got {text:?}"),
                    )
                })
            })
            .transpose()
    }

    /// Option `option` parsed as a size in bytes (`1048576`, `64 KiB`, `1GiB`), if set.
    pub fn size(&self, option: &str) -> Result<Option<u64>> {
        self.get(option)
            .map(|text| {
                parse_size(text).map_err(|message| Error::config(self.key(option), message))
            })
            .transpose()
    }

    /// Option `option` parsed as an interval (`5s`, `1h 30m`), if set.
    pub fn duration(&self, option: &str) -> Result<Option<Duration>> {
        self.get(option)
            .map(|text| {
                parse_interval(text).map_err(|message| Error::config(self.key(option), message))
            })
            .transpose()
    }
}

impl Debug for BackendConfig {
    /// Option values are left out: a URL may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
