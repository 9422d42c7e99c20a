//! The backend and its containers' stores: each operation is one cached statement on a pooled
//! connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kvcache_core::{Backend, BoxError, Clock, Error, Lease, Result, Space, Store, expires_at};
use rusqlite::{Connection, OptionalExtension, ToSql, TransactionBehavior, params};

use crate::builder::{Bounds, FileBackendBuilder};
use crate::explain::explain;
use crate::pool::{Pool, PoolError};
use crate::schema;

/// The most keys one batch look-up binds; batches are padded to a power of two up to this, so a
/// connection caches at most nine batch statements.
const BATCH: usize = 256;
/// Characters of a key shown in an error message: keys may be long.
const KEY_SHOWN: usize = 64;

/// Writes of one backend between two upkeeps when no bound asks for one sooner.
const UPKEEP_EVERY: u64 = 64;
/// The most expired rows one upkeep deletes: more than the writes between two upkeeps add.
const EXPIRED_PER_UPKEEP: i64 = 256;
/// The most rows one culling pass looks at, and the passes of one upkeep.
const CULL_ROWS: i64 = 1024;
const CULL_PASSES: usize = 4;
/// What a row costs beyond its container, key and value, as culling estimates what it frees.
const ROW_OVERHEAD: u64 = 16;
/// Culling goes this far below a bound (1/32 of it), so that the writes after it find room.
const CULL_BELOW: u64 = 32;
/// The most pages one upkeep gives back to the filesystem.
const VACUUM_PAGES: u64 = 1024;

// A child of this module, to read the file's state: what an operator can ask of it.
#[path = "inspect.rs"]
mod inspect;

/// An SQLite file holding the entries of every container that names it, shared by threads and
/// by processes.
///
/// Open it with [`FileBackend::open`], or [`FileBackend::builder`] for options. The file is in
/// WAL mode: reads run beside each other and beside a writer, and writers wait for each other up
/// to the busy timeout. Each thread works on a connection of its own from a small pool, with
/// its statements prepared once.
///
/// [`Backend::open`] gives each container a blocking store ([`Space::Blocking`]) on the shared
/// file: the core runs its calls on tokio's blocking pool for async callers.
pub struct FileBackend {
    file: Arc<File>,
}

/// What every container's store of one backend shares: the file, its pool and its statements.
struct File {
    name: String,
    path: PathBuf,
    table: String,
    clock: Arc<dyn Clock>,
    bounds: Bounds,
    upkeep: Upkeep,
    pool: Pool,
    sql: Sql,
}

/// When this backend's writes next do the file's upkeep: what they wrote since the last one,
/// and the room the bounds had left then.
#[derive(Debug)]
struct Upkeep {
    writes: AtomicU64,
    bytes: AtomicU64,
    room_bytes: AtomicU64,
    room_entries: AtomicU64,
    /// Whether a thread of this backend is doing it: the others go on.
    busy: AtomicBool,
}

/// The file's pages and the table's entries, as an upkeep reads them.
#[derive(Debug, Clone, Copy)]
struct Measure {
    page_size: u64,
    pages: u64,
    free_pages: u64,
    /// Whether the file gives free pages back (incremental auto-vacuum).
    vacuums: bool,
    /// `None` unless counted.
    entries: Option<u64>,
}

impl Measure {
    /// The bytes of the pages in use.
    fn used(&self) -> u64 {
        self.pages.saturating_sub(self.free_pages) * self.page_size
    }
}

/// One container's entries in the file: the store [`Backend::open`] gives it.
struct FileStore {
    file: Arc<File>,
    container: Box<str>,
}

/// The backend's statements, written for its table.
struct Sql {
    select: String,
    upsert: String,
    delete: String,
    delete_expired: String,
    clear: String,
    purge: String,
    /// `select_many[i]` looks up `2^i` keys.
    select_many: Vec<String>,
    /// Whether an expired row or lease is left, for upkeep.
    any_expired: String,
    expire_some: String,
    /// Takes a lease that is free or expired; changes no row when another holds it.
    lease: String,
    release: String,
    /// Deletes every expired lease, of every container.
    purge_leases: String,
    pages: String,
    entries: String,
    oldest: String,
    cull: String,
    again: String,
}

impl Sql {
    fn new(table: &str) -> Self {
        let leases = schema::leases_table(table);
        // Whether a row is live at the time bound to parameter `now`.
        let live = |now: &str| format!("expires_at IS NULL OR expires_at > {now}");
        let select_many = (0..=BATCH.ilog2())
            .map(|power| {
                let slots: Vec<String> = (0..1_usize << power)
                    .map(|i| format!("?{}", i + 3))
                    .collect();
                format!(
                    "SELECT key, iif({}, value, NULL) FROM \"{table}\"
                     WHERE container = ?1 AND key IN ({})",
                    live("?2"),
                    slots.join(", ")
                )
            })
            .collect();
        Sql {
            select: format!(
                "SELECT iif({}, value, NULL) FROM \"{table}\" WHERE container = ?1 AND key = ?2",
                live("?3")
            ),
            upsert: format!(
                "INSERT INTO \"{table}\" (container, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (container, key)
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
                     overwritten = 1"
            ),
            delete: format!("DELETE FROM \"{table}\" WHERE container = ?1 AND key = ?2"),
            delete_expired: format!(
                "DELETE FROM \"{table}\" WHERE container = ?1 AND key = ?2 AND expires_at <= ?3"
            ),
            clear: format!("DELETE FROM \"{table}\" WHERE container = ?1"),
            purge: format!("DELETE FROM \"{table}\" WHERE expires_at <= ?1"),
            select_many,
            any_expired: format!(
                "SELECT EXISTS (SELECT 1 FROM \"{table}\" WHERE expires_at <= ?1)
                     OR EXISTS (SELECT 1 FROM \"{leases}\" WHERE expires_at <= ?1)"
            ),
            expire_some: format!(
                "DELETE FROM \"{table}\" WHERE rowid IN
                     (SELECT rowid FROM \"{table}\" WHERE expires_at <= ?1 LIMIT ?2)"
            ),
            lease: format!(
                "INSERT INTO \"{leases}\" (container, key, token, expires_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (container, key)
                 DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at
                 WHERE \"{leases}\".expires_at <= ?5"
            ),
            release: format!(
                "DELETE FROM \"{leases}\" WHERE container = ?1 AND key = ?2 AND token = ?3"
            ),
            purge_leases: format!("DELETE FROM \"{leases}\" WHERE expires_at <= ?1"),
            pages: "SELECT page_size, page_count, freelist_count, auto_vacuum = 2
                    FROM pragma_page_size(), pragma_page_count(), pragma_freelist_count(),
                        pragma_auto_vacuum()"
                .to_owned(),
            entries: schema::entries_sql(table),
            oldest: format!(
                "SELECT rowid, overwritten,
                     octet_length(container) + octet_length(key) + length(value)
                 FROM \"{table}\" ORDER BY rowid LIMIT ?1"
            ),
            cull: format!("DELETE FROM \"{table}\" WHERE rowid <= ?1 AND NOT overwritten"),
            again: format!(
                "UPDATE \"{table}\" SET rowid = (SELECT max(rowid) + 1 FROM \"{table}\"),
                     overwritten = 0
                 WHERE rowid = ?1"
            ),
        }
    }
}

impl FileBackend {
    /// Opens (or creates) the cache file at `path` with the default options.
    ///
    /// # Errors
    ///
    /// Those of [`FileBackendBuilder::open`].
    pub fn open(path: impl Into<PathBuf>) -> Result<FileBackend> {
        Self::builder(path).open()
    }

    /// A builder for the cache file at `path`, to set options before opening it.
    pub fn builder(path: impl Into<PathBuf>) -> FileBackendBuilder {
        FileBackendBuilder::new(path.into())
    }

    pub(crate) fn new(
        name: String,
        path: PathBuf,
        table: String,
        clock: Arc<dyn Clock>,
        bounds: Bounds,
        pool: Pool,
    ) -> Self {
        let sql = Sql::new(&table);
        // A bounded file's first write measures it.
        let room = |bound: Option<u64>| if bound.is_some() { 0 } else { u64::MAX };
        let upkeep = Upkeep {
            writes: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            room_bytes: AtomicU64::new(room(bounds.max_size)),
            room_entries: AtomicU64::new(room(bounds.max_entries)),
            busy: AtomicBool::new(false),
        };
        FileBackend {
            file: Arc::new(File {
                name,
                path,
                table,
                clock,
                bounds,
                upkeep,
                pool,
                sql,
            }),
        }
    }

    /// The file's absolute path.
    pub fn path(&self) -> &Path {
        &self.file.path
    }

    /// The table holding the entries.
    pub fn table(&self) -> &str {
        &self.file.table
    }

    /// The bound on the bytes of the file's pages in use, if any.
    pub fn max_size(&self) -> Option<u64> {
        self.file.bounds.max_size
    }

    /// The bound on the table's entries, if any.
    pub fn max_entries(&self) -> Option<u64> {
        self.file.bounds.max_entries
    }
}

impl File {
    /// The time, in Unix milliseconds, as SQLite stores it.
    fn now(&self) -> i64 {
        millis(self.clock.now_millis())
    }

    fn expiry(&self, ttl: Option<Duration>) -> Option<i64> {
        ttl.map(|ttl| millis(expires_at(self.clock.now_millis(), ttl)))
    }

    /// Runs `op` on a connection to the file; `doing` says what it does, for its error.
    fn run<T>(
        &self,
        doing: impl FnOnce() -> String,
        op: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.pool
            .run(op)
            .map_err(|error| self.error(doing(), error))
    }

    /// An error of this backend: `doing`, in its table and file, failed with `error`.
    fn error(&self, doing: String, error: PoolError) -> Error {
        let source: BoxError = match error {
            PoolError::Sqlite(error) => explain(error),
            PoolError::Connect(error) => Box::new(Connecting(explain(error))),
            PoolError::File(reason) => Box::new(reason),
        };
        Error::backend(
            &self.name,
            format!("{doing} in table {:?} of {:?}", self.table, self.path),
            source,
        )
    }
}

impl File {
    /// Counts a write of `rows` rows and about `bytes` bytes, and does the file's upkeep on
    /// `connection` when it is due: every [`UPKEEP_EVERY`] writes, or sooner when the writes
    /// since the last one may have used a quarter of the room a bound had left.
    ///
    /// The write has succeeded: an upkeep that fails (another writer held the lock past the
    /// busy timeout) fails nothing, and the next write tries again.
    fn wrote(&self, connection: &mut Connection, rows: u64, bytes: u64) {
        let upkeep = &self.upkeep;
        let writes = upkeep.writes.fetch_add(rows, Ordering::Relaxed) + rows;
        let written = upkeep.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let due = writes >= UPKEEP_EVERY
            || written.saturating_mul(4) >= upkeep.room_bytes.load(Ordering::Relaxed)
            || writes.saturating_mul(4) >= upkeep.room_entries.load(Ordering::Relaxed);
        if !due
            || upkeep
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        if let Ok(measure) = self.upkeep(connection) {
            let room = |bound: Option<u64>, now: Option<u64>| match (bound, now) {
                (Some(bound), Some(now)) => bound.saturating_sub(now),
                (Some(_), None) => 0,
                (None, _) => u64::MAX,
            };
            let bounds = self.bounds;
            upkeep.writes.store(0, Ordering::Relaxed);
            upkeep.bytes.store(0, Ordering::Relaxed);
            upkeep.room_bytes.store(
                room(bounds.max_size, Some(measure.used())),
                Ordering::Relaxed,
            );
            upkeep
                .room_entries
                .store(room(bounds.max_entries, measure.entries), Ordering::Relaxed);
        }
        upkeep.busy.store(false, Ordering::Release);
    }

    /// The file's upkeep: deletes up to [`EXPIRED_PER_UPKEEP`] expired rows and every expired
    /// lease, culls the least recently stored entries while a bound is passed, and gives free
    /// pages back past an allowance. Reads first, and takes the write lock only when there is
    /// something to do.
    fn upkeep(&self, connection: &mut Connection) -> rusqlite::Result<Measure> {
        let now = self.now();
        let expired = |connection: &Connection| -> rusqlite::Result<bool> {
            connection
                .prepare_cached(&self.sql.any_expired)?
                .query_row([now], |row| row.get(0))
        };
        if !expired(connection)? {
            let measure = self.measure(connection)?;
            if !self.over(&measure) && self.vacuum_pages(&measure) == 0 {
                return Ok(measure);
            }
        }
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        transaction
            .prepare_cached(&self.sql.expire_some)?
            .execute(params![now, EXPIRED_PER_UPKEEP])?;
        transaction
            .prepare_cached(&self.sql.purge_leases)?
            .execute([now])?;
        let mut measure = self.measure(&transaction)?;
        if self.over(&measure) {
            for _ in 0..CULL_PASSES {
                let (bytes, entries) = self.excess(&measure);
                if (bytes == 0 && entries == 0) || !self.cull(&transaction, bytes, entries)? {
                    break;
                }
                measure = self.measure(&transaction)?;
            }
        }
        let pages = self.vacuum_pages(&measure);
        if pages > 0 {
            // It answers a row for each page it gives back.
            let mut statement =
                transaction.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
            let mut rows = statement.query([])?;
            while rows.next()?.is_some() {}
            drop(rows);
            drop(statement);
            measure = self.measure(&transaction)?;
        }
        transaction.commit()?;
        Ok(measure)
    }

    fn measure(&self, connection: &Connection) -> rusqlite::Result<Measure> {
        let (page_size, pages, free_pages, vacuums) = connection
            .prepare_cached(&self.sql.pages)?
            .query_row([], |row| {
            Ok((
                natural(row, 0)?,
                natural(row, 1)?,
                natural(row, 2)?,
                row.get(3)?,
            ))
        })?;
        let entries = match self.bounds.max_entries {
            Some(_) => connection
                .prepare_cached(&self.sql.entries)?
                .query_row([], |row| row.get::<_, Option<i64>>(0))
                .optional()?
                .flatten()
                .map(|entries| u64::try_from(entries).unwrap_or(0)),
            None => None,
        };
        Ok(Measure {
            page_size,
            pages,
            free_pages,
            vacuums,
            entries,
        })
    }

    /// Whether a bound is passed.
    fn over(&self, measure: &Measure) -> bool {
        self.bounds.max_size.is_some_and(|max| measure.used() > max)
            || self
                .bounds
                .max_entries
                .zip(measure.entries)
                .is_some_and(|(max, entries)| entries > max)
    }

    /// How many bytes and entries to cull to come back [`CULL_BELOW`] under the bounds.
    fn excess(&self, measure: &Measure) -> (u64, u64) {
        let below = |max: u64| max - max / CULL_BELOW;
        let bytes = self
            .bounds
            .max_size
            .map_or(0, |max| measure.used().saturating_sub(below(max)));
        let entries = self
            .bounds
            .max_entries
            .zip(measure.entries)
            .map_or(0, |(max, entries)| entries.saturating_sub(below(max)));
        (bytes, entries)
    }

    /// One culling pass over the oldest rows (the lowest rowids: a row takes the next one when
    /// it is inserted): deletes them until about `bytes` and at least `entries` are gone. A row
    /// overwritten since it took its place is not deleted but moved to the newest end, its mark
    /// cleared: it gets a second chance. Returns whether it deleted or moved anything.
    fn cull(&self, connection: &Connection, bytes: u64, entries: u64) -> rusqlite::Result<bool> {
        let (mut freed, mut deleted, mut last) = (0_u64, 0_u64, None);
        let mut again = Vec::new();
        {
            let mut statement = connection.prepare_cached(&self.sql.oldest)?;
            let mut rows = statement.query([CULL_ROWS])?;
            while let Some(row) = rows.next()? {
                if freed >= bytes && deleted >= entries {
                    break;
                }
                let rowid: i64 = row.get(0)?;
                last = Some(rowid);
                if row.get::<_, bool>(1)? {
                    again.push(rowid);
                } else {
                    freed += natural(row, 2)? + ROW_OVERHEAD;
                    deleted += 1;
                }
            }
        }
        let Some(last) = last else {
            return Ok(false);
        };
        connection.prepare_cached(&self.sql.cull)?.execute([last])?;
        let mut statement = connection.prepare_cached(&self.sql.again)?;
        for rowid in again {
            statement.execute([rowid])?;
        }
        Ok(true)
    }

    /// How many free pages to give back: those past an allowance (1/16 of a size bound, else
    /// 1/8 of the file, and at least 1 MiB), down to half of it, at most [`VACUUM_PAGES`]; none
    /// where the file was made without auto-vacuum.
    fn vacuum_pages(&self, measure: &Measure) -> u64 {
        if !measure.vacuums {
            return 0;
        }
        let page_size = measure.page_size.max(512);
        let allowance = match self.bounds.max_size {
            Some(max) => max / 16 / page_size,
            None => measure.pages / 8,
        }
        .max((1 << 20) / page_size);
        if measure.free_pages <= allowance {
            0
        } else {
            (measure.free_pages - allowance / 2).min(VACUUM_PAGES)
        }
    }
}

/// No connection to the file could be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open another connection to the file")]
struct Connecting(#[source] BoxError);

impl FileStore {
    /// About the bytes a row of `key` and `value` takes.
    fn bytes(&self, key: &str, value: &[u8]) -> u64 {
        (self.container.len() + key.len() + value.len()) as u64 + ROW_OVERHEAD
    }

    /// Deletes the entry under `key` if it is still expired at `now`.
    ///
    /// The entry is a miss either way, so a failure (a read-only file, a writer holding the lock
    /// past the busy timeout) is no reason to fail the read: `purge_expired` deletes it later.
    fn drop_expired(&self, connection: &Connection, key: &str, now: i64) {
        let _ = connection
            .prepare_cached(&self.file.sql.delete_expired)
            .and_then(|mut statement| statement.execute(params![&*self.container, key, now]));
    }

    /// Runs `op` on a connection to the file; `doing` says what it does to the container.
    fn run<T>(
        &self,
        doing: impl FnOnce() -> String,
        op: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        self.file.run(
            || format!("{} of container {:?}", doing(), self.container),
            op,
        )
    }
}

/// Column `index` of `row`, an integer that cannot be negative.
fn natural(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(index)?).unwrap_or(0))
}

/// Unix milliseconds as an SQLite integer; "practically never" saturates.
fn millis(millis: u64) -> i64 {
    i64::try_from(millis).unwrap_or(i64::MAX)
}

/// `key`, cut short for an error message.
fn shown(key: &str) -> String {
    match key.char_indices().nth(KEY_SHOWN) {
        Some((end, _)) => format!("{:?}… ({} bytes)", &key[..end], key.len()),
        None => format!("{key:?}"),
    }
}

impl Backend for FileBackend {
    /// The container's store: every call of it is a blocking statement on the file.
    fn open(&self, container: &str) -> Result<Space> {
        Ok(Space::Blocking(Arc::new(FileStore {
            file: Arc::clone(&self.file),
            container: container.into(),
        })))
    }

    fn inspect(&self) -> Option<&dyn kvcache_core::inspect::Inspect> {
        Some(self)
    }

    fn purge_expired(&self) -> Result<()> {
        let file = &*self.file;
        let now = file.now();
        file.run(
            || "deleting expired entries and leases".to_owned(),
            |connection| {
                connection.prepare_cached(&file.sql.purge)?.execute([now])?;
                connection
                    .prepare_cached(&file.sql.purge_leases)?
                    .execute([now])
            },
        )?;
        Ok(())
    }
}

impl Store for FileStore {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let expiry = self.file.expiry(ttl);
        self.run(
            || format!("storing key {}", shown(key)),
            |connection| {
                connection
                    .prepare_cached(&self.file.sql.upsert)?
                    .execute(params![&*self.container, key, value, expiry])?;
                self.file.wrote(connection, 1, self.bytes(key, value));
                Ok(())
            },
        )
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut found = None;
        self.retrieve_with(key, &mut |bytes| found = Some(bytes.to_vec()))?;
        Ok(found)
    }

    /// Reads the value in place, in SQLite's row, without copying it out.
    fn retrieve_with(&self, key: &str, read: &mut dyn FnMut(&[u8])) -> Result<bool> {
        let now = self.file.now();
        self.run(
            || format!("reading key {}", shown(key)),
            |connection| {
                // No row: absent. A row with NULL: expired.
                let row: Option<bool> = connection
                    .prepare_cached(&self.file.sql.select)?
                    .query_row(params![&*self.container, key, now], |row| {
                        Ok(row.get_ref(0)?.as_blob_or_null()?.map(&mut *read).is_some())
                    })
                    .optional()?;
                if row == Some(false) {
                    self.drop_expired(connection, key, now);
                }
                Ok(row == Some(true))
            },
        )
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        self.run(
            || format!("removing key {}", shown(key)),
            |connection| {
                connection
                    .prepare_cached(&self.file.sql.delete)?
                    .execute(params![&*self.container, key])
            },
        )?;
        Ok(())
    }

    /// Deletes the container's entries; its leases are left alone: a caller generating a key
    /// goes on holding it, and the others go on waiting for its value.
    fn clear(&self) -> Result<()> {
        self.file.run(
            || format!("clearing container {:?}", self.container),
            |connection| {
                connection
                    .prepare_cached(&self.file.sql.clear)?
                    .execute([&*self.container])
            },
        )?;
        Ok(())
    }

    /// Looks the keys up with one statement per 256 distinct keys.
    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let now = self.file.now();
        let container: &str = &self.container;
        // The positions of `keys` in key order: a key's positions are neighbours, found by
        // binary search when its row comes back.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_unstable_by_key(|&position| keys[position]);
        let mut distinct: Vec<&str> = order.iter().map(|&position| keys[position]).collect();
        distinct.dedup();
        let mut found: Vec<Option<Vec<u8>>> = vec![None; keys.len()];
        self.run(
            || format!("reading {} keys", keys.len()),
            |connection| {
                let mut expired = Vec::new();
                for chunk in distinct.chunks(BATCH) {
                    let power = chunk.len().next_power_of_two().ilog2() as usize;
                    let mut parameters: Vec<&dyn ToSql> = Vec::with_capacity(2 + (1 << power));
                    parameters.extend([&container as &dyn ToSql, &now]);
                    parameters.extend(chunk.iter().map(|key| key as &dyn ToSql));
                    // Padding repeats the chunk's first key, which the answer holds once.
                    parameters.resize(2 + (1 << power), &chunk[0]);
                    let mut statement =
                        connection.prepare_cached(&self.file.sql.select_many[power])?;
                    let mut rows = statement.query(&*parameters)?;
                    while let Some(row) = rows.next()? {
                        let key = row.get_ref(0)?.as_str()?;
                        let Some(value) = row.get_ref(1)?.as_blob_or_null()? else {
                            expired.push(key.to_owned());
                            continue;
                        };
                        let start = order.partition_point(|&position| keys[position] < key);
                        for &position in order[start..]
                            .iter()
                            .take_while(|&&position| keys[position] == key)
                        {
                            found[position] = Some(value.to_vec());
                        }
                    }
                }
                for key in expired {
                    self.drop_expired(connection, &key, now);
                }
                Ok(())
            },
        )?;
        Ok(found)
    }

    /// Stores the entries in one transaction: all of them, or none.
    fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let expiry = self.file.expiry(ttl);
        self.run(
            || format!("storing {} keys", entries.len()),
            |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut statement = transaction.prepare_cached(&self.file.sql.upsert)?;
                    for (key, value) in entries {
                        statement.execute(params![&*self.container, key, value, expiry])?;
                    }
                }
                transaction.commit()?;
                let bytes = entries
                    .iter()
                    .map(|(key, value)| self.bytes(key, value))
                    .sum();
                self.file.wrote(connection, entries.len() as u64, bytes);
                Ok(())
            },
        )
    }

    /// One statement, which inserts the lease, or takes over an expired one, or changes nothing
    /// when a live lease holds the key (its own token's included): the row it changed says
    /// which. Like every write, it waits up to the busy timeout for another connection's.
    fn lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Lease> {
        let at = self.file.clock.now_millis();
        let (now, expiry) = (millis(at), millis(expires_at(at, ttl)));
        let changed = self.run(
            || format!("taking the lease on key {}", shown(key)),
            |connection| {
                connection
                    .prepare_cached(&self.file.sql.lease)?
                    .execute(params![&*self.container, key, token, expiry, now])
            },
        )?;
        Ok(if changed == 1 {
            Lease::Acquired
        } else {
            Lease::Held
        })
    }

    fn release(&self, key: &str, token: &str) -> Result<()> {
        self.run(
            || format!("releasing the lease on key {}", shown(key)),
            |connection| {
                connection
                    .prepare_cached(&self.file.sql.release)?
                    .execute(params![&*self.container, key, token])
            },
        )?;
        Ok(())
    }
}

impl fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileBackend")
            .field("name", &self.file.name)
            .field("path", &self.file.path)
            .field("table", &self.file.table)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for FileStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStore")
            .field("backend", &self.file.name)
            .field("path", &self.file.path)
            .field("table", &self.file.table)
            .field("container", &self.container)
            .finish_non_exhaustive()
    }
}
