//! The contract a storage backend implements, and the configuration it is built from.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::interval::parse_interval;

/// Where values live: opaque bytes under (container, key), with an optional time to live.
///
/// Two containers on one backend never see each other's keys. A miss is `Ok(None)`, never an
/// error; an expired entry is a miss. Implementations are shared by every container that names
/// them, across threads, so they are `Send + Sync` and take `&self`.
///
/// Only `store`, `retrieve`, `invalidate`, `clear` and `purge_expired` are required; the batch
/// methods loop over them unless a backend has something faster.
pub trait Backend: Send + Sync + Debug {
    /// Stores `value` under (`container`, `key`), replacing what was there. With `ttl`, the entry
    /// expires that long after now; without, it never expires.
    fn store(&self, container: &str, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// The bytes stored under (`container`, `key`), or `None` when absent or expired.
    fn retrieve(&self, container: &str, key: &str) -> Result<Option<Vec<u8>>>;

    /// Deletes the entry under (`container`, `key`). Deleting an absent entry is not an error.
    fn invalidate(&self, container: &str, key: &str) -> Result<()>;

    /// Deletes every entry of `container`, and no other container's.
    fn clear(&self, container: &str) -> Result<()>;

    /// Deletes every expired entry of every container. Backends whose store expires entries by
    /// itself (Redis) have nothing to do here.
    fn purge_expired(&self) -> Result<()>;

    /// Reads the bytes stored under (`container`, `key`) in place: calls `read` with them and
    /// returns `true`, or returns `false` on a miss. Containers read through this method; the
    /// default copies the bytes through [`retrieve`](Backend::retrieve), and a backend that
    /// holds them in memory overrides it to skip that copy.
    fn retrieve_with(
        &self,
        container: &str,
        key: &str,
        read: &mut dyn FnMut(&[u8]),
    ) -> Result<bool> {
        Ok(self
            .retrieve(container, key)?
            .map(|bytes| read(&bytes))
            .is_some())
    }

    /// The bytes stored under each of `keys`, in order.
    fn retrieve_many(&self, container: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter()
            .map(|key| self.retrieve(container, key))
            .collect()
    }

    /// Stores each `(key, value)` of `entries` with one `ttl`.
    fn store_many(
        &self,
        container: &str,
        entries: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<()> {
        entries
            .iter()
            .try_for_each(|(key, value)| self.store(container, key, value, ttl))
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
