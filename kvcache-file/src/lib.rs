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
//! | `max_size` | the most bytes of pages in use (`1GiB`, `500MB`, `1048576`; ≥ 64 KiB) | unbounded |
//! | `max_entries` | the most entries of the table, every container's | unbounded |
//!
//! The original's class path `score.kvcache.backend.FileCache` is an alias of the kind.
//!
//! One table holds every container: `(container, key)` is its primary key, the value a BLOB and
//! the expiry Unix milliseconds (`NULL`: never); a new file has 8 KiB pages. The table is
//! created, or checked, when the backend opens, and its schema version is recorded in the table
//! `kvcache_schema` (version 3 now): a table of version 1 (before the size bound) is upgraded in
//! place, a column added and no row rewritten, and one of version 2 (before leases) gains its
//! leases table; a build of an older version then refuses the file when it opens it, and one
//! already running on it goes on. An expired entry is a miss and is deleted when read;
//! [`purge_expired`](kvcache_core::Backend::purge_expired) deletes every expired entry at once.
//!
//! Leases ([`Store::lease`](kvcache_core::Store::lease): one caller, of every process on the
//! file, generates a missing key while the others wait) live in a table of their own beside the
//! entries, `TABLE_leases` (`kvcache_leases` by default): `(container, key)` its primary key, the
//! holder's token, and the expiry in Unix milliseconds by the backend's clock. Taking a lease is
//! one statement, `INSERT ... ON CONFLICT (container, key) DO UPDATE SET token = excluded.token,
//! expires_at = excluded.expires_at WHERE expires_at <= now`: SQLite runs it under the file's
//! write lock, so of the processes that race for a free or expired lease exactly one changes the
//! row and gets [`Lease::Acquired`](kvcache_core::Lease::Acquired), and a live lease is
//! [`Held`](kvcache_core::Lease::Held), to its own token too. Like every write, it waits up to
//! the busy timeout for another process's write. Releasing deletes the row only while it still
//! holds the caller's token. A holder that dies blocks the key until its lease expires;
//! `purge_expired` and the writes' upkeep delete expired leases. `clear` leaves a container's
//! leases alone (a generation in flight goes on), and no listing, count or bound sees them: they
//! are not entries, `max_entries` counts only the entries' table, and the few pages of the leases
//! table are the only part of them `max_size` sees. Processes on one file should share a clock:
//! one whose clock runs ahead takes another's lease that early.
//!
//! Opening refuses, with an error naming the path and leaving it as it is, a path that is a
//! directory, a file that is not SQLite or is damaged (truncated, say), a table of that name (or
//! of its leases table's) with other columns, and a table written by a newer kvcache. A file
//! that becomes read-only while in use fails writes and still serves reads.
//!
//! # Size: the bounds, culling and upkeep
//!
//! Every 64th write of a backend, and sooner when a bound is near, does the file's *upkeep*,
//! right after the write, on its connection: it deletes up to 256 expired entries (found by an
//! index on the expiry: expired entries go without any read or `purge_expired`) and every
//! expired lease, culls while a bound is passed, and gives free pages back. It reads first and
//! takes the write lock only when there is something to do; at most 4 passes of 1024 entries
//! and 1024 pages (4 MiB) each time. A failed upkeep (another writer held the lock past the busy
//! timeout) fails nothing: the write succeeded, and the next one tries again. An unbounded
//! file's writes pay about 1% for it.
//!
//! - **What `max_size` bounds**: the bytes of the file's pages in use, `(page_count -
//!   freelist_count) × page_size`, read from SQLite's header: the entries with the index, the
//!   tree's inner pages and the pages' free space, so no write keeps a count. Values take less:
//!   about 85% of the bound with 1 KiB values. The `-wal` beside the file is not counted:
//!   SQLite writes it back into the file every 1000 pages (8 MiB), and keeps its length.
//! - **What `max_entries` bounds**: the rows of the table. The first backend opened with it on a
//!   file creates two triggers that keep the count in `kvcache_schema` from then on, on every
//!   insert and delete of any process.
//! - **Policy: least recently stored**, as Python's diskcache by default. Entries are culled in
//!   rowid order, the order they were inserted in, down to 1/32 below the bound. An entry stored
//!   again over a live one is written in place, marked (`overwritten`); when culling reaches it,
//!   it is moved to the newest end and unmarked instead (a second chance, as in the CLOCK
//!   algorithm), so an entry always outlives those that were older when it was last stored and
//!   have not been stored since. Moving a row on every overwrite would be exact, and cost a set
//!   of an existing key 10 to 25 times as much (several pages written instead of one). Reads are
//!   not recorded: an LRU would turn every hit into a write (see BENCHMARKS.md).
//! - **Slack**: a backend's upkeep comes before its writes since the last one could have used a
//!   quarter of the room left then, so one process keeps the bound after every write it
//!   returns from (but one larger than the 4096 oldest entries, which the next writes finish
//!   making room for). Several processes each see the others' writes at their next upkeep:
//!   between upkeeps, each may add up to a quarter of the room it last saw. Four processes
//!   writing ten times a 2 MiB bound in 1 KiB values kept the file within 1.03× of it
//!   (`tests/bounds.rs`).
//! - **Pages back**: a new file is made with `auto_vacuum = INCREMENTAL`, and an upkeep gives
//!   back the free pages past an allowance (1/16 of `max_size`, else 1/8 of the file, at least
//!   1 MiB). A file made without it (by kvcache before version 2, or by another program) keeps
//!   its length: its free pages are reused by later writes, so a bound still holds, but it does
//!   not shrink. Converting it takes a `VACUUM`, which rewrites the whole file under the write
//!   lock, so the backend does not: delete the file (it is a cache), or run `PRAGMA auto_vacuum
//!   = INCREMENTAL; VACUUM;` in `sqlite3` while no process uses it.
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
//!   `SQLITE_NOTADB`), or the check finds it truncated (shorter than a page, or not a whole
//!   number of pages, or shorter than it was where it has no auto-vacuum to give pages back, and
//!   `PRAGMA quick_check` agrees; a file with auto-vacuum cut by whole pages is found when SQLite
//!   reads a page it lost), that call fails with
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
    if let Some(bytes) = config.size("max_size")? {
        if bytes < MIN_SIZE {
            return Err(Error::config(
                config.key("max_size"),
                format!(
                    "expected at least 64 KiB (an empty file's own pages take some), got {:?}",
                    config.get("max_size").unwrap_or_default()
                ),
            ));
        }
        builder = builder.max_size(bytes);
    }
    if let Some(entries) = config.parse::<u64>("max_entries", "a whole number of entries")? {
        if entries == 0 {
            return Err(Error::config(
                config.key("max_entries"),
                "expected at least 1 entry, got 0",
            ));
        }
        builder = builder.max_entries(entries);
    }
    Ok(Arc::new(builder.open()?))
}

/// The smallest `max_size`: an empty file's own pages take a few of them.
const MIN_SIZE: u64 = 64 << 10;

kvcache_core::register_backend!(
    BackendRegistration::new(KIND, open)
        .aliases(&["score.kvcache.backend.FileCache"])
        .options(&["path", "busy_timeout", "table", "max_size", "max_entries"])
);
