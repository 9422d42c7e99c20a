//! The in-process memory backend of kvcache: `backend.NAME = variable`.
//!
//! Values live in this process's memory, in sharded hash tables: reads of different keys take
//! different locks, and reads of one key share a read lock. Expired entries are misses and are
//! dropped when read or purged. Nothing survives the process.
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `max_entries` | the most entries it holds; see [`VariableBackend`] for the eviction policy | unbounded |
//!
//! The original's class path `score.kvcache.backend.VariableCache` is an alias of the kind.
//!
//! ```
//! use kvcache_core::Backend;
//! use kvcache_variable::VariableBackend;
//!
//! let backend = VariableBackend::new();
//! let greetings = backend.open("greeting")?.sync_store();
//! greetings.store("Peter", b"Hello Peter!", None)?;
//! assert_eq!(greetings.retrieve("Peter")?.as_deref(), Some(&b"Hello Peter!"[..]));
//! # Ok::<(), kvcache_core::Error>(())
//! ```

mod backend;

pub use backend::VariableBackend;

use std::sync::Arc;

use kvcache_core::{Backend, BackendConfig, BackendRegistration, Error, Result};

/// The kind's name in configurations.
pub const KIND: &str = "variable";

fn open(config: &BackendConfig) -> Result<Arc<dyn Backend>> {
    let max_entries = config.parse::<usize>("max_entries", "a whole number of entries")?;
    if max_entries == Some(0) {
        return Err(Error::config(
            config.key("max_entries"),
            "expected at least 1 (leave it out for no bound)",
        ));
    }
    let backend = VariableBackend::with_clock(config.clock_handle());
    Ok(Arc::new(match max_entries {
        Some(max) => backend.max_entries(max),
        None => backend,
    }))
}

kvcache_core::register_backend!(
    BackendRegistration::new(KIND, open)
        .aliases(&["score.kvcache.backend.VariableCache"])
        .options(&["max_entries"])
);
