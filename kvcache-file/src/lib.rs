//! The SQLite file backend of kvcache: `backend.NAME = file`.
//!
//! Values live in one SQLite file, built into the crate (nothing to install), and survive the
//! process. Threads and processes can share the file: it is in WAL mode, so reads run beside
//! each other and beside a writer, and a write waits up to the busy timeout for another.
//!
//! ```
//! use kvcache_core::Backend;
//! use kvcache_file::FileBackend;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("kv.sqlite3");
//! let greetings = FileBackend::open(&path)?.open("greeting")?.sync_store();
//! greetings.store("Peter", b"Hello Peter!", None)?;
//!
//! // Another process, or a later run, finds it.
//! let reopened = FileBackend::open(&path)?.open("greeting")?.sync_store();
//! assert_eq!(reopened.retrieve("Peter")?.as_deref(), Some(&b"Hello Peter!"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each container gets a store of its own from [`Backend::open`]:
//! a blocking one ([`Space::Blocking`](kvcache_core::Space::Blocking)), whose calls the core runs
//! on tokio's blocking pool for async callers.
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `path` | the file; its parent directories are created | required |
//! | `busy_timeout` | how long a write waits for another process's write (`5s`, `500ms`) | `5s` |
//! | `table` | the table holding the entries; several can share a file | `kvcache` |
//!
//! The original's class path `score.kvcache.backend.FileCache` is an alias of the kind.
//!
//! One table holds every container: `(container, key)` is its primary key, the value a BLOB and
//! the expiry Unix milliseconds (`NULL`: never). The table is created, or checked, when the
//! backend opens, and its schema version is recorded in the table `kvcache_schema`. An expired
//! entry is a miss and is deleted when read; [`purge_expired`](kvcache_core::Backend::purge_expired)
//! deletes every expired entry at once.
//!
//! Opening refuses, with an error naming the path and leaving it as it is, a path that is a
//! directory, a file that is not SQLite, a table of that name with other columns, and a table
//! written by a newer kvcache. A file that becomes read-only while in use fails writes and still
//! serves reads.

mod backend;
mod builder;
mod explain;
mod pool;
mod schema;

pub use backend::FileBackend;
pub use builder::{DEFAULT_BUSY_TIMEOUT, DEFAULT_TABLE, FileBackendBuilder};

use std::sync::Arc;

use kvcache_core::{Backend, BackendConfig, BackendRegistration, Error, Result};

/// The kind's name in configurations.
pub const KIND: &str = "file";

fn open(config: &BackendConfig) -> Result<Arc<dyn Backend>> {
    let path = config.require("path")?;
    if path.trim().is_empty() {
        return Err(Error::config(
            config.key("path"),
            "expected the path of a file, got an empty one",
        ));
    }
    let mut builder = FileBackend::builder(path)
        .name(config.name())
        .clock(config.clock_handle());
    if let Some(timeout) = config.duration("busy_timeout")? {
        builder = builder.busy_timeout(timeout);
    }
    if let Some(table) = config.get("table") {
        schema::check_table_name(table)
            .map_err(|message| Error::config(config.key("table"), message))?;
        builder = builder.table(table);
    }
    Ok(Arc::new(builder.open()?))
}

kvcache_core::register_backend!(
    BackendRegistration::new(KIND, open)
        .aliases(&["score.kvcache.backend.FileCache"])
        .options(&["path", "busy_timeout", "table"])
);
