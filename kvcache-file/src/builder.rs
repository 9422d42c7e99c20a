//! Opening a cache file: its options, and the checks that refuse a path without touching it.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kvcache_core::{BoxError, Clock, Error, Result, SystemClock};
use rusqlite::{Connection, ErrorCode};

use crate::backend::FileBackend;
use crate::explain::explain;
use crate::files::{self, DirectoryLock, Found};
use crate::pool::{self, Known, Pool};
use crate::schema::{self, SchemaError};

/// The table used unless [`FileBackendBuilder::table`] names another.
pub const DEFAULT_TABLE: &str = "kvcache";
/// How long a write waits for another writer unless [`FileBackendBuilder::busy_timeout`] says.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The page size of a new file: as fast as SQLite's 4 KiB for small values, faster for large
/// ones, and 1 KiB values waste less of each page (BENCHMARKS.md, issue #14).
const PAGE_SIZE: i64 = 8192;

/// Options for opening a [`FileBackend`]: [`FileBackend::builder`].
///
/// ```
/// use std::time::Duration;
/// use kvcache_file::FileBackend;
///
/// let dir = tempfile::tempdir()?;
/// let backend = FileBackend::builder(dir.path().join("cache/kv.sqlite3"))
///     .table("greetings")
///     .busy_timeout(Duration::from_secs(1))
///     .max_size(64 << 20)
///     .max_entries(100_000)
///     .open()?;
/// assert_eq!(backend.table(), "greetings");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct FileBackendBuilder {
    path: PathBuf,
    busy_timeout: Duration,
    table: String,
    name: String,
    clock: Arc<dyn Clock>,
    bounds: Bounds,
}

/// How large a file may grow: [`FileBackendBuilder::max_size`] and
/// [`FileBackendBuilder::max_entries`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The most bytes of pages in use.
    pub(crate) max_size: Option<u64>,
    /// The most entries in the table.
    pub(crate) max_entries: Option<u64>,
}

/// Why a path cannot be opened as a cache file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    #[error("the path is empty")]
    EmptyPath,
    #[error("cannot make the path absolute: {0}")]
    Absolute(io::Error),
    #[error("it is a directory")]
    Directory,
    #[error("cannot create its directory {0:?}: {1}")]
    CreateDirectory(PathBuf, io::Error),
    #[error("cannot create it: {0}")]
    Create(io::Error),
    #[error("{0}")]
    TableName(String),
    #[error("it is not an SQLite cache file or is damaged: {0}; it was left untouched")]
    NotSqlite(rusqlite::Error),
    #[error(
        "it is not an SQLite cache file or is damaged: it is empty while its -wal holds {wal} bytes \
         (it was truncated while in use); it was left untouched"
    )]
    Truncated { wal: u64 },
    #[error("cannot tell which file it is: {0}")]
    Stat(io::Error),
    #[error("it was deleted or replaced while being opened")]
    Changed,
    #[error("SQLite keeps it in journal mode {0:?} instead of WAL")]
    NotWal(String),
    #[error(transparent)]
    Sqlite(BoxError),
    #[error(transparent)]
    Schema(SchemaError),
}

impl From<rusqlite::Error> for Refused {
    fn from(error: rusqlite::Error) -> Self {
        if matches!(
            error.sqlite_error_code(),
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
        ) {
            Refused::NotSqlite(error)
        } else {
            Refused::Sqlite(explain(error))
        }
    }
}

impl From<SchemaError> for Refused {
    fn from(error: SchemaError) -> Self {
        match error {
            SchemaError::Sqlite(error) => error.into(),
            other => Refused::Schema(other),
        }
    }
}

impl FileBackendBuilder {
    pub(crate) fn new(path: PathBuf) -> Self {
        FileBackendBuilder {
            path,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            table: DEFAULT_TABLE.to_owned(),
            name: crate::KIND.to_owned(),
            clock: Arc::new(SystemClock),
            bounds: Bounds::default(),
        }
    }

    /// Bounds the file's size: past `bytes` of pages in use, each write culls the least recently
    /// stored entries (see the crate's docs). Unbounded by default.
    pub fn max_size(mut self, bytes: u64) -> Self {
        self.bounds.max_size = Some(bytes);
        self
    }

    /// Bounds the table's entries (every container's): past `entries`, each write culls the least
    /// recently stored ones. Unbounded by default. The first backend opened with it on a file
    /// has two triggers count the table's entries from then on.
    pub fn max_entries(mut self, entries: u64) -> Self {
        self.bounds.max_entries = Some(entries);
        self
    }

    /// How long a write waits for another connection's write to finish before it fails
    /// ([`DEFAULT_BUSY_TIMEOUT`]: 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The table holding the entries ([`DEFAULT_TABLE`]: `kvcache`): ASCII letters, digits and
    /// underscores, not starting with a digit. Several tables can share a file.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The name errors give the backend: its name in the configuration (`file` by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The clock expiry is read against (the system clock by default).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Opens the file, creating it and its parent directories when missing, switches it to WAL
    /// and makes sure its table exists with kvcache's columns.
    ///
    /// Nothing that exists is overwritten or deleted: a path that is a directory, a file that is
    /// not an SQLite database or is damaged, a table of that name with other columns, or a table
    /// written by a newer kvcache is refused as it is. Only a `-wal` and `-shm` found beside a
    /// file that did not exist are removed: they are a deleted file's, and SQLite would read them
    /// as the new one's.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] naming the path and saying why it was refused or could not be opened.
    pub fn open(self) -> Result<FileBackend> {
        let FileBackendBuilder {
            path,
            busy_timeout,
            table,
            name,
            clock,
            bounds,
        } = self;
        let refused = |path: &Path, why: Refused| {
            Error::backend(&name, format!("opening the cache file {path:?}"), why)
        };
        if path.as_os_str().is_empty() {
            return Err(refused(&path, Refused::EmptyPath));
        }
        let path =
            std::path::absolute(&path).map_err(|error| refused(&path, Refused::Absolute(error)))?;
        let counted = bounds.max_entries.is_some();
        let lock = DirectoryLock::take(&path);
        let (connection, known) = open_file(&path, &table, counted, busy_timeout, &lock)
            .map_err(|why| refused(&path, why))?;
        drop(lock);
        let pool = Pool::new(
            path.clone(),
            table.clone(),
            counted,
            busy_timeout,
            connection,
            known,
        );
        Ok(FileBackend::new(name, path, table, clock, bounds, pool))
    }
}

/// The first connection to the file at `path`: the file created if missing (8 KiB pages,
/// incremental auto-vacuum), in WAL mode, its table ready (its entries counted if `counted`);
/// and what it is on disk.
///
/// The caller holds `_lock`, the directory's, from before any look at the path until the file is
/// ready: another process creating, following or moving the file aside waits for it.
pub(crate) fn open_file(
    path: &Path,
    table: &str,
    counted: bool,
    busy_timeout: Duration,
    _lock: &DirectoryLock,
) -> Result<(Connection, Known), Refused> {
    schema::check_table_name(table).map_err(Refused::TableName)?;
    if path.is_dir() {
        return Err(Refused::Directory);
    }
    if let Some(directory) = path.parent() {
        fs::create_dir_all(directory)
            .map_err(|error| Refused::CreateDirectory(directory.to_owned(), error))?;
    }
    // Created here rather than by SQLite, whose error would not say why it could not.
    match OpenOptions::new().write(true).create_new(true).open(path) {
        // A -wal or -shm beside a file that did not exist belongs to another, deleted one.
        Ok(_) => files::remove_leftovers(path),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(Refused::Create(error)),
    }
    let before = Found::stat(path).map_err(Refused::Stat)?;
    // An empty file is an empty database to SQLite, which would then delete the -wal beside it,
    // the one other connections are using: an empty file with a log is a truncated one.
    if before.size == 0 {
        let wal = Found::wal_size(path);
        if wal > 0 {
            return Err(Refused::Truncated { wal });
        }
    }
    let mut connection = pool::connect(path, busy_timeout)?;
    if before.size == 0 {
        // Only a database with no table yet takes them; a file made otherwise keeps its own.
        connection.pragma_update(None, "page_size", PAGE_SIZE)?;
        connection.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    // The first statement that reads the file: a file that is not SQLite fails here, unwritten.
    let mode: String =
        connection.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Refused::NotWal(mode));
    }
    schema::prepare(&mut connection, table, counted)?;
    let page_size: i64 = connection.pragma_query_value(None, "page_size", |row| row.get(0))?;
    let auto_vacuum: i64 = connection.pragma_query_value(None, "auto_vacuum", |row| row.get(0))?;
    let owned = schema::owned(&connection)?;
    // Read after the statements above, which opened the -wal and -shm.
    let found = Found::stat(path).map_err(Refused::Stat)?;
    let db = found
        .db
        .filter(|&db| Some(db) == before.db)
        .ok_or(Refused::Changed)?;
    let known = Known {
        db,
        wal: found.wal,
        shm: found.shm,
        size: found.size,
        page_size: u64::try_from(page_size).unwrap_or(0).max(512),
        shrinks: auto_vacuum != 0,
        owned,
    };
    Ok((connection, known))
}
