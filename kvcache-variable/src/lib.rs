//! The in-process memory backend of kvcache: `backend.NAME = variable`.
//!
//! Values live in this process's memory, decoded, in sharded hash tables: a hit clones the
//! value, reads of different keys take different locks, and reads of one key share a read lock.
//! A bounded store evicts by W-TinyLFU with an adaptive window (Caffeine's policy); expired
//! entries are misses at once and are reclaimed by later writes without a purge. Nothing
//! survives the process.
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `max_entries` | the most entries it holds, over all its containers | unbounded |
//! | `max_bytes` | the most bytes of keys and encoded values it holds (`64 MiB`, `1GiB`, `1048576`) | unbounded |
//!
//! See [`VariableBackend`] for the policy and what the bounds count.
//!
//! The original's class path `score.kvcache.backend.VariableCache` is an alias of the kind.
//!
//! ```
//! use kvcache_core::Backend;
//! use kvcache_variable::VariableBackend;
//!
//! let backend = VariableBackend::new().max_entries(10_000);
//! let greetings = backend.open("greeting")?.sync_store();
//! greetings.store("Peter", b"Hello Peter!", None)?;
//! assert_eq!(greetings.retrieve("Peter")?.as_deref(), Some(&b"Hello Peter!"[..]));
//! # Ok::<(), kvcache_core::Error>(())
//! ```

mod backend;
mod policy;
mod reads;
mod sketch;

pub use backend::VariableBackend;

use std::sync::Arc;

use kvcache_core::{Backend, BackendConfig, BackendRegistration, Error, Result};

/// The kind's name in configurations.
pub const KIND: &str = "variable";

fn open(config: &BackendConfig) -> Result<Arc<dyn Backend>> {
    let max_entries = config.parse::<u64>("max_entries", "a whole number of entries")?;
    let max_bytes = config.size("max_bytes")?;
    for (option, max) in [("max_entries", max_entries), ("max_bytes", max_bytes)] {
        if max == Some(0) {
            return Err(Error::config(
                config.key(option),
                "expected at least 1 (leave it out for no bound)",
            ));
        }
    }
    let mut backend = VariableBackend::with_clock(config.clock_handle());
    if let Some(max) = max_entries {
        backend = backend.max_entries(max);
    }
    if let Some(max) = max_bytes {
        backend = backend.max_bytes(max);
    }
    Ok(Arc::new(backend))
}

kvcache_core::register_backend!(
    BackendRegistration::new(KIND, open)
        .aliases(&["score.kvcache.backend.VariableCache"])
        .options(&["max_entries", "max_bytes"])
);
