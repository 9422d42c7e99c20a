//! The near tier: an in-memory copy, in each instance, of the values a shared backend holds,
//! kept coherent by the backend's channel where it has one ([`Backend::watch`]) and by a short
//! near expiry where it has none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::backend::{Backend, BackendConfig, Change, Space, Watcher};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::interval::parse_interval;
use crate::memory::MemoryStore;
use crate::registry;
use crate::size::parse_size;

/// The backend options that put a near tier in front of every container of a backend.
pub(crate) const OPTIONS: [&str; 3] = ["near_max_entries", "near_max_bytes", "near_expire"];

/// How long a near copy lives at most where the store has no channel, unless `near_expire`
/// says: the bound on a stale read after another instance's write.
pub const NEAR_EXPIRE: Duration = Duration::from_secs(1);

/// How long a near copy lives at most where the store's channel invalidates it, unless
/// `near_expire` says: the bound on a stale read left by a read racing a write.
pub const NEAR_EXPIRE_WATCHED: Duration = Duration::from_secs(30);

/// A backend's near tier, as its options declare it.
#[derive(Debug, Clone, Default)]
pub(crate) struct NearSpec {
    /// The in-memory backend's options: `max_entries`, `max_bytes`.
    bounds: BTreeMap<String, String>,
    expire: Option<Duration>,
}

impl NearSpec {
    /// Takes `option = value` into the spec if it is a near option of backend `backend`;
    /// returns whether it was one.
    pub(crate) fn take(
        spec: &mut Option<NearSpec>,
        backend: &str,
        option: &str,
        value: &str,
    ) -> Result<bool> {
        if !OPTIONS.contains(&option) {
            return Ok(false);
        }
        let key = format!("backend.{backend}.{option}");
        let near = spec.get_or_insert_with(NearSpec::default);
        match option {
            "near_max_entries" => {
                let entries: u64 = value.trim().parse().map_err(|_| {
                    Error::config(&key, format!("expected a number of entries, got {value:?}"))
                })?;
                near.bounds
                    .insert("max_entries".into(), entries.to_string());
            }
            "near_max_bytes" => {
                let bytes = parse_size(value).map_err(|message| Error::config(&key, message))?;
                near.bounds.insert("max_bytes".into(), bytes.to_string());
            }
            _ => {
                let expire =
                    parse_interval(value).map_err(|message| Error::config(&key, message))?;
                near.expire = Some(expire);
            }
        }
        Ok(true)
    }

    /// Opens the in-memory backend that holds the near copies of backend `backend`'s
    /// containers.
    pub(crate) fn open(&self, backend: &str, clock: Arc<dyn Clock>) -> Result<NearBackend> {
        let key = format!("backend.{backend}.near_max_entries");
        let mut config = BackendConfig::new(backend, "variable").clock(clock);
        for (option, value) in &self.bounds {
            config = config.option(option.clone(), value.clone());
        }
        let memory = registry::backend_kind("variable", &key)
            .and_then(|registration| registration.open(&config))
            .map_err(|error| {
                Error::config(
                    key,
                    format!("a near tier is held by the in-memory backend (the `variable` feature): {error}"),
                )
            })?;
        Ok(NearBackend {
            memory,
            expire: self.expire,
        })
    }
}

/// The in-memory backend of one backend's near tier.
#[derive(Debug, Clone)]
pub(crate) struct NearBackend {
    memory: Arc<dyn Backend>,
    expire: Option<Duration>,
}

impl NearBackend {
    /// Container `container`'s near tier in front of `shared`, watched through its channel.
    pub(crate) fn near(&self, shared: &Arc<dyn Backend>, container: &str) -> Result<Near> {
        let Space::Memory(memory) = self.memory.open(container)? else {
            return Err(Error::backend(
                "kvcache",
                "opening a near tier",
                "the in-memory backend did not open an in-memory space",
            ));
        };
        let counts = Arc::new(NearCounts::default());
        let watcher: Watcher = {
            let (memory, counts) = (Arc::clone(&memory), Arc::clone(&counts));
            Arc::new(move |change| match change {
                Change::Keys(keys) => {
                    for key in &keys {
                        memory.remove(key);
                    }
                    counts.invalidations.fetch_add(keys.len() as u64, Relaxed);
                }
                Change::Cleared => {
                    memory.clear();
                    counts.invalidations.fetch_add(1, Relaxed);
                }
                Change::Lost => {
                    memory.clear();
                    counts.flushes.fetch_add(1, Relaxed);
                }
            })
        };
        let watched = match shared.watch(container, watcher) {
            Ok(watched) => watched,
            Err(error) => {
                tracing::warn!(
                    container,
                    error = &error as &dyn std::error::Error,
                    "the backend's channel could not be watched: near copies live their near expiry alone"
                );
                false
            }
        };
        // With a channel, a copy lives until invalidated, within its own expiry; without one,
        // the near expiry bounds how stale a copy can be.
        let expire = match (watched, self.expire) {
            (_, Some(expire)) => expire,
            (true, None) => NEAR_EXPIRE_WATCHED,
            (false, None) => NEAR_EXPIRE,
        };
        Ok(Near {
            memory,
            expire,
            counts,
        })
    }
}

/// One container's near tier.
#[derive(Debug)]
pub(crate) struct Near {
    pub(crate) memory: Arc<dyn MemoryStore>,
    /// The longest a copy lives, within its value's own expiry.
    pub(crate) expire: Duration,
    pub(crate) counts: Arc<NearCounts>,
}

/// What a near tier has done.
#[derive(Debug, Default)]
pub(crate) struct NearCounts {
    pub(crate) hits: AtomicU64,
    pub(crate) invalidations: AtomicU64,
    pub(crate) flushes: AtomicU64,
}

impl Near {
    /// The time to live of a copy of a value with `remaining` life in the store.
    pub(crate) fn ttl(&self, remaining: Option<Duration>) -> Option<Duration> {
        Some(remaining.map_or(self.expire, |remaining| remaining.min(self.expire)))
    }

    pub(crate) fn hit(&self) {
        self.counts.hits.fetch_add(1, Relaxed);
    }
}
