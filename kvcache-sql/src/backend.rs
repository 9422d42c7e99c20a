//! The backend and its containers' stores: entries in one table of a shared database, reached
//! through a pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl};
use kvcache_core::{
    Backend, BackendConfig, Clock, Error, Lease, Result, Space, Store, Watcher, expires_at,
};

use crate::config::SqlConfig;
use crate::pool::{Call, Failure, Pool, with_connection};
use crate::query::Statement;
use crate::sql::{
    BATCH, COLUMNS, Container, Entry, EntrySql, Hash, Hashed, Holder, LEASE_COLUMNS, Statements,
    hash, upsert_chunks,
};
use crate::watch::{Watch, Write};

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
    /// Whether the leases table was there when the backend opened (found, or created): when
    /// it was not, purges and upkeeps leave it out, and leases fail naming it.
    leases: bool,
    /// The channel of `watch`: what the writes of watched containers publish, and the
    /// listener (PostgreSQL only; see `watch.rs`).
    watch: Watch,
}

/// One container's entries in the table: the store [`Backend::open`] gives it.
struct SqlStore {
    db: Arc<Db>,
    container: Container,
}

impl SqlBackend {
    /// Connects to the database of `config`'s `url` and creates the table, and the leases
    /// table beside it, when they are absent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the option that is wrong, or whose database's feature
    /// is off; [`Error::Unavailable`] naming the host, port and database when no connection
    /// opens within `connect_timeout`; [`Error::Backend`] naming the table when it, or the
    /// leases table, exists with other columns (it is left as it is), or when the table cannot
    /// be created. A leases table that cannot be created (a role without the right to) fails
    /// nothing here: it is logged at warn level, and every lease then fails naming it.
    pub fn open(config: &BackendConfig) -> Result<Self> {
        let sql_config = SqlConfig::read(config)?;
        let upkeep = upkeep::Upkeep::read(config, sql_config.url.database(), &sql_config.table)?;
        let pool = Pool::connect(config.name(), &sql_config)?;
        let mut db = Db {
            name: config.name().to_owned(),
            watch: Watch::new(config.name(), &sql_config),
            statements: Statements::new(sql_config.url.database(), &sql_config.table),
            config: sql_config,
            pool,
            clock: config.clock_handle(),
            upkeep,
            leases: false,
        };
        db.ensure_table()?;
        db.leases = db.ensure_leases()?;
        Ok(SqlBackend { db: Arc::new(db) })
    }
}

impl Db {
    /// Creates the table when absent; checks that one present has the columns of a kvcache table.
    fn ensure_table(&self) -> Result<()> {
        let table = &self.config.table;
        let columns = || self.columns_of(self.statements.columns(), table);
        match self.ensure(table, self.statements.create(), &columns, &COLUMNS)? {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Creates the leases table when absent; checks that one present has the columns of a
    /// kvcache leases table. Whether it is there: one absent that cannot be created (the
    /// role may not) is logged at warn level, and leases fail.
    fn ensure_leases(&self) -> Result<bool> {
        let table = self.statements.leases_table();
        let columns = || self.columns_of(self.statements.lease_columns(), table);
        let create = self.statements.create_leases();
        let Some(error) = self.ensure(table, create, &columns, &LEASE_COLUMNS)? else {
            return Ok(true);
        };
        tracing::warn!(
            backend = %self.name,
            table = %table,
            error = &error as &dyn std::error::Error,
            "the leases table is absent and could not be created: entries work, every lease \
             fails until the table exists"
        );
        Ok(false)
    }

    /// Creates `table` with `create` when `columns` finds none of its columns, and checks that
    /// those of one present are `expected`. The error of creating it when it is still absent.
    ///
    /// # Errors
    ///
    /// The columns cannot be read, or are others than `expected`.
    fn ensure(
        &self,
        table: &str,
        create: &[String],
        columns: &dyn Fn() -> Result<Vec<String>>,
        expected: &[&str],
    ) -> Result<Option<Error>> {
        let mut found = columns()?;
        if found.is_empty() {
            let created = with_connection!(self.pool, self.call(), |conn| create
                .iter()
                .try_for_each(|statement| conn.batch_execute(statement)))
            .map_err(self.failed_in("creating", table));
            found = columns()?;
            // Another process may have created it at the same moment: then the columns decide.
            if found.is_empty()
                && let Err(error) = created
            {
                return Ok(Some(error));
            }
        }
        let mut sorted: Vec<&str> = expected.to_vec();
        sorted.sort_unstable();
        found.sort();
        if found != sorted {
            let what = if table == self.config.table {
                "a kvcache table"
            } else {
                "a kvcache leases table"
            };
            return Err(Error::backend(
                &self.name,
                format!("opening table {table:?} on {}", self.config.url.target()),
                format!(
                    "the table exists with columns ({}), not those of {what} ({}); \
                     it was left as it is: choose another name with `backend.{}.table`",
                    found.join(", "),
                    expected.join(", "),
                    self.name
                ),
            ));
        }
        Ok(None)
    }

    /// The column names that `columns` reads of `table`; none when it does not exist.
    fn columns_of<const KEY: u8>(
        &self,
        columns: Statement<'_, KEY, diesel::sql_types::Text>,
        table: &str,
    ) -> Result<Vec<String>> {
        with_connection!(self.pool, self.call(), |conn| columns.load(conn))
            .map_err(self.failed_in("reading the columns of", table))
    }

    /// Turns a failure into an error saying that it happened `doing` something to the table.
    fn failed<'a>(&'a self, doing: &'a str) -> impl FnOnce(Failure) -> Error + 'a {
        move |failure| failure.into_error(&self.name, &self.config, doing)
    }

    /// As [`failed`](Self::failed), of `doing` something to `table`.
    fn failed_in<'a>(
        &'a self,
        doing: &'a str,
        table: &'a str,
    ) -> impl FnOnce(Failure) -> Error + 'a {
        move |failure| failure.into_error_in(&self.name, &self.config, doing, table)
    }

    /// As [`failed`](Self::failed), of `doing` something to the leases table.
    fn failed_leases<'a>(&'a self, doing: &'a str) -> impl FnOnce(Failure) -> Error + 'a {
        self.failed_in(doing, self.statements.leases_table())
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

    /// On PostgreSQL, `LISTEN` on the table's channel, and `NOTIFY` with the watched
    /// containers' writes (see the crate's documentation); `false` on MySQL, MariaDB and
    /// SQLite, which have no channel.
    fn watch(&self, container: &str, watcher: Watcher) -> Result<bool> {
        self.db.watch.watch(&self.db.config, container, watcher)
    }

    /// Deletes the expired entries, then the expired leases, in one call.
    fn purge_expired(&self) -> Result<()> {
        let db = &*self.db;
        let (call, now) = (db.call(), db.now());
        let purge = db.statements.purge(now);
        with_connection!(db.pool, call, |conn| purge.execute(conn))
            .map_err(db.failed("purging expired entries from"))?;
        if db.leases {
            let purge = db.statements.purge_leases(now);
            with_connection!(db.pool, call, |conn| purge.execute(conn))
                .map_err(db.failed_leases("purging expired leases from"))?;
        }
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
        let notice = db.watch.keys(&self.container.name, [key.text]);
        let notifying = notice.as_ref().map(|n| n.wrap(Write::Upsert(1), &upsert));
        with_connection!(db.pool, db.call(), |conn| match &notifying {
            Some(notifying) => notifying.execute(conn),
            None => upsert.execute(conn),
        })
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
        let notice = db.watch.keys(&self.container.name, [key.text]);
        let notifying = notice.as_ref().map(|n| n.wrap(Write::Delete, &delete));
        with_connection!(db.pool, db.call(), |conn| match &notifying {
            Some(notifying) => notifying.execute(conn),
            None => delete.execute(conn),
        })
        .map_err(db.failed("deleting from"))?;
        Ok(())
    }

    /// Deletes the container's entries; its leases stay: they stand for values being generated
    /// now, which clearing does not stop, and go when released or expired.
    fn clear(&self) -> Result<()> {
        let db = &*self.db;
        let clear = db.statements.clear(&self.container);
        let notice = db.watch.cleared(&self.container.name);
        let notifying = notice.as_ref().map(|n| n.wrap(Write::Clear, &clear));
        with_connection!(db.pool, db.call(), |conn| match &notifying {
            Some(notifying) => notifying.execute(conn),
            None => clear.execute(conn),
        })
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
        let notice = db
            .watch
            .keys(&self.container.name, rows.iter().map(|(key, _)| key.text));
        let mut rest = &rows[..];
        let counts = upsert_chunks(&sizes);
        let mut upserts: Vec<_> = counts
            .iter()
            .map(|&count| {
                let (chunk, after) = rest.split_at(count);
                rest = after;
                db.statements.upsert_many(&self.container, chunk, expires)
            })
            .collect();
        // The last statement publishes the whole batch (at commit, when there are several).
        if let (Some(notice), Some(last), Some(&count)) =
            (&notice, upserts.last_mut(), counts.last())
        {
            *last = notice.wrap(Write::Upsert(count), last);
        }
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

    /// Takes the lease in at most three statements, each one round trip, within one call:
    ///
    /// 1. a look-up of the key's lease: a live one, whoever holds it (this token included),
    ///    is [`Lease::Held`];
    /// 2. one atomic statement that inserts the lease, or takes over the row of one that has
    ///    expired, and leaves a live one as it is;
    /// 3. the look-up again, on the same connection: the lease is [`Lease::Acquired`] when it
    ///    holds this token (tokens are unique), else [`Lease::Held`].
    ///
    /// No affected-row count decides (MySQL's count found rows, not changed ones). 2 and 3 run
    /// again together, as every statement does, when the database picks them as the victim of
    /// a deadlock (InnoDB can, between upserts of one key from many connections), up to 5
    /// times; and on another connection when theirs was lost: the upsert's second run finds
    /// the lease it may have taken already, and 3 tells.
    fn lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Lease> {
        let db = &*self.db;
        let key = hash(key.as_bytes());
        let now_millis = db.clock.now_millis();
        let now = i64::try_from(now_millis).unwrap_or(i64::MAX);
        let expires = i64::try_from(expires_at(now_millis, ttl)).unwrap_or(i64::MAX);
        let call = db.call();
        let holder = db.statements.lease_holder(&self.container, &key);
        let held: Vec<Holder> = with_connection!(db.pool, call, |conn| holder.load(conn))
            .map_err(db.failed_leases("taking a lease in"))?;
        if held.iter().any(|&(_, expires_at)| now < expires_at) {
            return Ok(Lease::Held);
        }
        let lease = db
            .statements
            .lease(&self.container, &key, token, expires, now);
        let held: Vec<Holder> = with_connection!(db.pool, call, |conn| {
            lease.execute(conn)?;
            holder.load(conn)
        })
        .map_err(db.failed_leases("taking a lease in"))?;
        Ok(
            if held.iter().any(|(holder, _)| holder == token.as_bytes()) {
                Lease::Acquired
            } else {
                Lease::Held
            },
        )
    }

    /// Deletes the lease if `token` holds it: one statement.
    fn release(&self, key: &str, token: &str) -> Result<()> {
        let db = &*self.db;
        let key = hash(key.as_bytes());
        let release = db.statements.release(&self.container, &key, token);
        with_connection!(db.pool, db.call(), |conn| release.execute(conn))
            .map_err(db.failed_leases("releasing a lease in"))?;
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
