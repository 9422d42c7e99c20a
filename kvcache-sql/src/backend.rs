//! The backend and its containers' stores: entries in one table of a shared database, reached
//! through a pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};
use kvcache_core::{Backend, BackendConfig, Clock, Error, Result, Space, Store, expires_at};

use crate::config::SqlConfig;
use crate::pool::{Call, Failure, Pool, with_connection};
use crate::query::Statement;
use crate::sql::{
    BATCH, COLUMNS, Container, Entry, EntrySql, Hash, Hashed, Statements, hash, upsert_chunks,
};

// A child of this module, to read the backend's state: what an operator can ask of the table.
#[path = "inspect.rs"]
mod inspect;

// A child of this module, as `inspect`: the table's upkeep, done by the writes.
#[path = "upkeep.rs"]
mod upkeep;

/// A cache in a table of a PostgreSQL, MySQL/MariaDB or SQLite database, shared by every process
/// that names the same table.
///
/// Connections come from a pool of `pool_size`. A statement that finds its connection dead runs
/// again on another, so a database that went away and came back is used again without
/// rebuilding the backend. Every call takes at most `statement_timeout` in all; one that cannot
/// reach the database within it (refused, lost, no answer, or a lock held by another session
/// all that time) fails with an [`Error::Unavailable`], which opens the backend's circuit
/// breaker; a statement the database refuses fails with an [`Error::Backend`].
///
/// [`Backend::open`] gives each container a blocking store ([`Space::Blocking`]) on the shared
/// pool, with the SHA-256 of the container's name computed once, there: the core runs its calls
/// on tokio's blocking pool for async callers.
pub struct SqlBackend {
    db: Arc<Db>,
}

/// What every container's store of one backend shares: the pool, the statements, the clock.
struct Db {
    name: String,
    config: SqlConfig,
    statements: Statements,
    pool: Pool,
    clock: Arc<dyn Clock>,
    upkeep: upkeep::Upkeep,
}

/// One container's entries in the table: the store [`Backend::open`] gives it.
struct SqlStore {
    db: Arc<Db>,
    container: Container,
}

impl SqlBackend {
    /// Connects to the database of `config`'s `url` and creates the table when it is absent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the option that is wrong, or whose database's feature
    /// is off; [`Error::Unavailable`] naming the host, port and database when no connection
    /// opens within `connect_timeout`; [`Error::Backend`] naming the table when it exists with
    /// other columns (it is left as it is) or cannot be created.
    pub fn open(config: &BackendConfig) -> Result<Self> {
        let sql_config = SqlConfig::read(config)?;
        let upkeep = upkeep::Upkeep::read(config, sql_config.url.database(), &sql_config.table)?;
        let pool = Pool::connect(config.name(), &sql_config)?;
        let db = Db {
            name: config.name().to_owned(),
            statements: Statements::new(sql_config.url.database(), &sql_config.table),
            config: sql_config,
            pool,
            clock: config.clock_handle(),
            upkeep,
        };
        db.ensure_table()?;
        Ok(SqlBackend { db: Arc::new(db) })
    }
}

impl Db {
    /// Creates the table when absent; checks that one present has the columns of a kvcache table.
    fn ensure_table(&self) -> Result<()> {
        let mut columns = self.columns()?;
        if columns.is_empty() {
            let create = self.statements.create();
            let created = with_connection!(self.pool, self.call(), |conn| create
                .iter()
                .try_for_each(|statement| conn.batch_execute(statement)))
            .map_err(self.failed("creating"));
            columns = self.columns()?;
            // Another process may have created it at the same moment: then the columns decide.
            if columns.is_empty() {
                created?;
            }
        }
        let mut expected = COLUMNS.map(str::to_owned).to_vec();
        expected.sort();
        columns.sort();
        if columns != expected {
            return Err(Error::backend(
                &self.name,
                format!(
                    "opening table {:?} on {}",
                    self.config.table,
                    self.config.url.target()
                ),
                format!(
                    "the table exists with columns ({}), not those of a kvcache table ({}); \
                     it was left as it is: choose another name with `backend.{}.table`",
                    columns.join(", "),
                    COLUMNS.join(", "),
                    self.name
                ),
            ));
        }
        Ok(())
    }

    /// The table's column names; none when it does not exist.
    fn columns(&self) -> Result<Vec<String>> {
        let columns = self.statements.columns();
        with_connection!(self.pool, self.call(), |conn| columns.load(conn))
            .map_err(self.failed("reading the columns of"))
    }

    /// Turns a failure into an error saying that it happened `doing` something to the table.
    fn failed<'a>(&'a self, doing: &'a str) -> impl FnOnce(Failure) -> Error + 'a {
        move |failure| failure.into_error(&self.name, &self.config, doing)
    }

    /// A call starting now, bounded by `statement_timeout`.
    fn call(&self) -> Call {
        Call::new(self.config.statement_timeout)
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX)
    }

    /// When an entry stored now with `ttl` expires, in Unix milliseconds.
    fn expires(&self, ttl: Option<Duration>) -> Option<i64> {
        ttl.map(|ttl| {
            let at = expires_at(self.clock.now_millis(), ttl);
            i64::try_from(at).unwrap_or(i64::MAX)
        })
    }
}

impl SqlStore {
    /// The live entries that `select` finds, by key; deletes the expired ones it finds in one
    /// more statement, within the same `call`.
    ///
    /// Expired entries are misses whether or not that delete works, so its failure (a read-only
    /// database or role, a lock held past the timeout) does not fail the read: it is logged at
    /// debug level, and [`purge_expired`](Backend::purge_expired) deletes them later.
    fn look_up<const KEY: u8>(
        &self,
        call: Call,
        select: Statement<'_, KEY, EntrySql>,
    ) -> Result<HashMap<Vec<u8>, Vec<u8>>> {
        let db = &*self.db;
        let rows: Vec<Entry> = with_connection!(db.pool, call, |conn| select.load(conn))
            .map_err(db.failed("reading from"))?;
        let now = db.now();
        let mut live = HashMap::with_capacity(rows.len());
        let mut expired = Vec::new();
        for (key, value, expires_at) in rows {
            if expires_at.is_none_or(|at| now < at) {
                live.insert(key, value);
            } else {
                expired.push(hash(&key));
            }
        }
        if !expired.is_empty() {
            let delete = db
                .statements
                .delete_expired(&self.container.hash, now, &expired);
            let deleted: Result<usize, Failure> =
                with_connection!(db.pool, call, |conn| delete.execute(conn));
            if let Err(failure) = deleted {
                let error =
                    failure.into_error(&db.name, &db.config, "deleting expired entries from");
                tracing::debug!(
                    backend = %db.name,
                    container = %self.container.name,
                    entries = expired.len(),
                    error = &error as &dyn std::error::Error,
                    "expired entries read as misses stay in the table: deleting them failed"
                );
            }
        }
        Ok(live)
    }
}

impl Backend for SqlBackend {
    /// The container's store: every call of it is a blocking statement on a pooled connection.
    fn open(&self, container: &str) -> Result<Space> {
        Ok(Space::Blocking(Arc::new(SqlStore {
            db: Arc::clone(&self.db),
            container: Container::new(container),
        })))
    }

    fn inspect(&self) -> Option<&dyn kvcache_core::inspect::Inspect> {
        Some(self)
    }

    fn purge_expired(&self) -> Result<()> {
        let db = &*self.db;
        let purge = db.statements.purge(db.now());
        with_connection!(db.pool, db.call(), |conn| purge.execute(conn))
            .map_err(db.failed("purging expired entries from"))?;
        Ok(())
    }
}

impl Store for SqlStore {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let db = &*self.db;
        let key = Hashed::new(key);
        let upsert = db
            .statements
            .upsert(&self.container, &key, value, db.expires(ttl));
        with_connection!(db.pool, db.call(), |conn| upsert.execute(conn))
            .map_err(db.failed("storing into"))?;
        db.wrote(1);
        Ok(())
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key_hash = hash(key.as_bytes());
        let select = self.db.statements.select_one(&self.container, &key_hash);
        Ok(self.look_up(self.db.call(), select)?.remove(key.as_bytes()))
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        let db = &*self.db;
        let key = Hashed::new(key);
        let delete = db.statements.delete(&self.container, &key);
        with_connection!(db.pool, db.call(), |conn| delete.execute(conn))
            .map_err(db.failed("deleting from"))?;
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        let db = &*self.db;
        let clear = db.statements.clear(&self.container);
        with_connection!(db.pool, db.call(), |conn| clear.execute(conn))
            .map_err(db.failed("clearing a container in"))?;
        Ok(())
    }

    /// Looks up to 512 keys up in one statement; deletes the expired entries it finds in one more.
    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let call = self.db.call();
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let hashes: Vec<Hash> = chunk.iter().map(|key| hash(key.as_bytes())).collect();
            let select = self.db.statements.select(&self.container, &hashes);
            let live = self.look_up(call, select)?;
            found.extend(chunk.iter().map(|key| live.get(key.as_bytes()).cloned()));
        }
        Ok(found)
    }

    /// Stores the entries with upserts of up to 64 rows (and 1 MiB of keys and values) each: one
    /// statement and one round trip for a batch that fits, else several in one transaction: all
    /// of them, or none.
    ///
    /// A key given twice is stored once, with its last value, as storing one entry after
    /// another would leave it. Rows are written in the order of their primary key, so that
    /// batches on overlapping keys never wait for each other in a cycle.
    fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if let [(key, value)] = entries {
            return self.store(key, value, ttl);
        }
        let db = &*self.db;
        let expires = db.expires(ttl);
        // Reversed, so that the stable sort puts the last entry of a key first, and dedup keeps it.
        let mut rows: Vec<(Hashed<'_>, &[u8])> = entries
            .iter()
            .rev()
            .map(|&(key, value)| (Hashed::new(key), value))
            .collect();
        rows.sort_by_key(|(key, _)| key.hash);
        rows.dedup_by(|(later, _), (kept, _)| later.hash == kept.hash);
        let sizes: Vec<usize> = rows
            .iter()
            .map(|(key, value)| key.text.len() + value.len())
            .collect();
        let mut rest = &rows[..];
        let upserts: Vec<_> = upsert_chunks(&sizes)
            .into_iter()
            .map(|count| {
                let (chunk, after) = rest.split_at(count);
                rest = after;
                db.statements.upsert_many(&self.container, chunk, expires)
            })
            .collect();
        with_connection!(db.pool, db.call(), |conn| match &upserts[..] {
            [] => Ok(()),
            [upsert] => upsert.execute(conn).map(drop),
            all => conn.transaction(|conn| {
                all.iter()
                    .try_for_each(|upsert| upsert.execute(conn).map(drop))
            }),
        })
        .map_err(db.failed("storing into"))?;
        db.wrote(rows.len());
        Ok(())
    }
}

impl fmt::Debug for SqlBackend {
    /// The database's host, port and name or file, never the URL: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = &*self.db;
        f.debug_struct("SqlBackend")
            .field("name", &db.name)
            .field("database", &db.config.url.target())
            .field("table", &db.config.table)
            .field("pool_size", &db.config.pool_size)
            .field("connect_timeout", &db.config.connect_timeout)
            .field("statement_timeout", &db.config.statement_timeout)
            .field("max_entries", &db.upkeep.max_entries)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for SqlStore {
    /// As the backend's, with the container: never the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let db = &*self.db;
        f.debug_struct("SqlStore")
            .field("backend", &db.name)
            .field("database", &db.config.url.target())
            .field("table", &db.config.table)
            .field("container", &self.container.name)
            .finish_non_exhaustive()
    }
}
