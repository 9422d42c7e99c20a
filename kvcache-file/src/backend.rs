//! The backend and its containers' stores: each operation is one cached statement on a pooled
//! connection.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kvcache_core::{Backend, BoxError, Clock, Error, Result, Space, Store, expires_at};
use rusqlite::{Connection, OptionalExtension, ToSql, TransactionBehavior, params};

use crate::builder::FileBackendBuilder;
use crate::explain::explain;
use crate::pool::{Pool, PoolError};

/// The most keys one batch look-up binds; batches are padded to a power of two up to this, so a
/// connection caches at most nine batch statements.
const BATCH: usize = 256;
/// Characters of a key shown in an error message: keys may be long.
const KEY_SHOWN: usize = 64;

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
    pool: Pool,
    sql: Sql,
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
}

impl Sql {
    fn new(table: &str) -> Self {
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
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
            ),
            delete: format!("DELETE FROM \"{table}\" WHERE container = ?1 AND key = ?2"),
            delete_expired: format!(
                "DELETE FROM \"{table}\" WHERE container = ?1 AND key = ?2 AND expires_at <= ?3"
            ),
            clear: format!("DELETE FROM \"{table}\" WHERE container = ?1"),
            purge: format!("DELETE FROM \"{table}\" WHERE expires_at <= ?1"),
            select_many,
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
        pool: Pool,
    ) -> Self {
        let sql = Sql::new(&table);
        FileBackend {
            file: Arc::new(File {
                name,
                path,
                table,
                clock,
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

/// No connection to the file could be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open another connection to the file")]
struct Connecting(#[source] BoxError);

impl FileStore {
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

    fn purge_expired(&self) -> Result<()> {
        let file = &*self.file;
        let now = file.now();
        file.run(
            || "deleting expired entries".to_owned(),
            |connection| connection.prepare_cached(&file.sql.purge)?.execute([now]),
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
                    .execute(params![&*self.container, key, value, expiry])
            },
        )?;
        Ok(())
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
                transaction.commit()
            },
        )
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
