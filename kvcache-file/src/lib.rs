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
//! directory, a file that is not SQLite or is damaged (truncated, say), a table of that name with
//! other columns, and a table written by a newer kvcache. A file that becomes read-only while in
//! use fails writes and still serves reads.
//!
//! # A file deleted, replaced or damaged while in use
//!
//! A backend uses one file at a time, the one its path names: its connections are never on two
//! files. At most every 10 ms, the next call compares the path with that file (the device and
//! inode of the file, its `-wal` and its `-shm`: three `stat`s, about 4 µs), and so does every
//! new connection before it is lent; every other call pays a clock read and an uncontended read
//! lock, about 30 ns (180 instructions of a hit's 11 000, under callgrind). A `stat` on every
//! call would cost 1.3 µs of a hit of about 3 µs, and SQLite has nothing cheaper that sees
//! another file at the path: `PRAGMA data_version` counts commits to the file it has open, and
//! the `SQLITE_FCNTL_HAS_MOVED` file control is a `stat` too. For those 10 ms a process may still
//! read and write the file it has, and only that one.
//!
//! - **Deleted or replaced**, the file is *followed*: the backend waits for the calls in flight,
//!   drops every connection, and opens the file the path names now, creating it and its table if
//!   it names none. The calls go on without an error. It is a cache: deleting the file is how
//!   one empties it, and a process that went on with the deleted file would write values no one
//!   reads and serve values no other process sees. A file moved over the path, as `mv` does,
//!   leaves the old file's `-wal` and `-shm` beside it, which SQLite, finding them by name, would
//!   take for the new file's: the backend removes them first (the old file's connections keep
//!   them open). If what the path names cannot be used (a file of another program, a damaged
//!   one, a directory that is not writable), calls fail with an error that names the path, says
//!   what happened to the file and why the new one was refused; the path is tried again when it
//!   changes, and otherwise once a second.
//! - **Damaged**, the file is *replaced*. When SQLite finds it damaged (`SQLITE_CORRUPT`,
//!   `SQLITE_NOTADB`), or the check finds it truncated (shorter than a page, or shorter than it
//!   was or not a whole number of pages and `PRAGMA quick_check` agrees), that call fails with
//!   an error naming the path: "the file … is not an SQLite cache file or is damaged: …". The
//!   backend moves the file to `PATH.damaged`, with its `-wal` (an older one there is replaced),
//!   and creates a new, empty file in its place, which the calls after it use, and so do other
//!   processes, which see the path change. Losing the entries is a cache's lot; failing every
//!   call until someone steps in would take the service using the cache down with it. The file
//!   is moved, not deleted, and only if every table in it is kvcache's: a file that also holds
//!   another program's tables is left as it is, and calls fail until it is repaired or deleted.
//!   A file found damaged while opening is refused instead (see above): nothing says yet that it
//!   is the cache's, the path may be a mistake, and the error shows at once.
//!
//! Processes that find a change at the same moment deal with it one after another, under an
//! exclusive `flock` of the file's directory. A file overwritten in place, at the same length, is
//! noticed when SQLite reads a damaged page.

mod backend;
mod builder;
mod explain;
mod files;
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
