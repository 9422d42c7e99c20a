//! The connections to one file: opened as needed, one per caller at a time, kept for reuse.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Idle connections kept for reuse; a burst of callers beyond this opens and then closes extra ones.
const MAX_IDLE: usize = 8;
/// Prepared statements each connection keeps: the backend's few, and a batch look-up per size.
const STATEMENTS: usize = 32;

/// Connections to one SQLite file. Each caller gets a connection of its own, so reads on
/// different threads run at once (WAL lets them run beside a writer, too).
#[derive(Debug)]
pub(crate) struct Pool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

/// A connection lent by a [`Pool`], given back when dropped.
pub(crate) struct Pooled<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
}

impl Pool {
    /// A pool of connections to `path`, starting with `first`, opened by [`connect`].
    pub(crate) fn new(path: PathBuf, busy_timeout: Duration, first: Connection) -> Self {
        Pool {
            path,
            busy_timeout,
            idle: Mutex::new(vec![first]),
        }
    }

    /// An idle connection, or a new one.
    pub(crate) fn get(&self) -> rusqlite::Result<Pooled<'_>> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let connection = match idle {
            Some(connection) => connection,
            None => connect(&self.path, self.busy_timeout)?,
        };
        Ok(Pooled {
            pool: self,
            connection: Some(connection),
        })
    }
}

/// Opens a connection to the existing file `path`, set up for the backend: waits up to
/// `busy_timeout` for another writer, and syncs at WAL checkpoints only (`synchronous=NORMAL`).
///
/// The file is never created here: a file deleted while in use is an error, not a new empty one.
pub(crate) fn connect(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(busy_timeout)?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.set_prepared_statement_cache_capacity(STATEMENTS);
    Ok(connection)
}

impl Deref for Pooled<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            let mut idle = self
                .pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
    }
}
