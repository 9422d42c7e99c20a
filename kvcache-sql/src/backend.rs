//! The backend: entries in one table of a shared database, reached through a pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use diesel::RunQueryDsl;
use diesel::connection::SimpleConnection;
use kvcache_core::{Backend, BackendConfig, Clock, Error, Result, expires_at};

use crate::config::SqlConfig;
use crate::pool::{Failure, Pool, with_connection};
use crate::query::Statement;
use crate::sql::{BATCH, COLUMNS, Entry, EntrySql, Hash, Hashed, Statements, hash};

/// A cache in a table of a PostgreSQL, MySQL/MariaDB or SQLite database, shared by every process
/// that names the same table.
///
/// Connections come from a pool of `pool_size`. A statement that finds its connection dead runs
/// again on another, so a database that went away and came back is used again without
/// rebuilding the backend. Calls made while it is away fail with an [`Error::Backend`] within
/// `connect_timeout`.
pub struct SqlBackend {
    name: String,
    config: SqlConfig,
    statements: Statements,
    pool: Pool,
    clock: Arc<dyn Clock>,
}

impl SqlBackend {
    /// Connects to the database of `config`'s `url` and creates the table when it is absent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the option that is wrong, or whose database's feature
    /// is off; [`Error::Backend`] naming the host, port and database when no connection opens
    /// within `connect_timeout`, or naming the table when it exists with other columns (it is
    /// left as it is) or cannot be created.
    pub fn open(config: &BackendConfig) -> Result<Self> {
        let sql_config = SqlConfig::read(config)?;
        let pool = Pool::connect(config.name(), &sql_config)?;
        let backend = SqlBackend {
            name: config.name().to_owned(),
            statements: Statements::new(sql_config.url.database(), &sql_config.table),
            config: sql_config,
            pool,
            clock: config.clock_handle(),
        };
        backend.ensure_table()?;
        Ok(backend)
    }

    /// Creates the table when absent; checks that one present has the columns of a kvcache table.
    fn ensure_table(&self) -> Result<()> {
        let mut columns = self.columns()?;
        if columns.is_empty() {
            let create = self.statements.create();
            let created = with_connection!(self.pool, |conn| create
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
        with_connection!(self.pool, |conn| columns.load(conn))
            .map_err(self.failed("reading the columns of"))
    }

    /// The live entries of `container` that `select` finds, by key; deletes the expired ones
    /// it finds in one more statement.
    fn look_up<const KEY: u8>(
        &self,
        container: &Hashed<'_>,
        select: Statement<'_, KEY, EntrySql>,
    ) -> Result<HashMap<Vec<u8>, Vec<u8>>> {
        let rows: Vec<Entry> = with_connection!(self.pool, |conn| select.load(conn))
            .map_err(self.failed("reading from"))?;
        let now = self.now();
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
            let delete = self
                .statements
                .delete_expired(&container.hash, now, &expired);
            with_connection!(self.pool, |conn| delete.execute(conn))
                .map_err(self.failed("deleting expired entries from"))?;
        }
        Ok(live)
    }

    /// Turns a failure into an error saying that it happened `doing` something to the table.
    fn failed<'a>(&'a self, doing: &'a str) -> impl FnOnce(Failure) -> Error + 'a {
        move |failure| failure.into_error(&self.name, &self.config, doing)
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX)
    }
}

impl Backend for SqlBackend {
    fn store(&self, container: &str, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let expires = ttl.map(|ttl| {
            let at = expires_at(self.clock.now_millis(), ttl);
            i64::try_from(at).unwrap_or(i64::MAX)
        });
        let (container, key) = (Hashed::new(container), Hashed::new(key));
        let upsert = self.statements.upsert(&container, &key, value, expires);
        with_connection!(self.pool, |conn| upsert.execute(conn))
            .map_err(self.failed("storing into"))?;
        Ok(())
    }

    fn retrieve(&self, container: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let (container, key_hash) = (Hashed::new(container), hash(key.as_bytes()));
        let select = self.statements.select_one(&container, &key_hash);
        Ok(self.look_up(&container, select)?.remove(key.as_bytes()))
    }

    fn invalidate(&self, container: &str, key: &str) -> Result<()> {
        let (container, key) = (Hashed::new(container), Hashed::new(key));
        let delete = self.statements.delete(&container, &key);
        with_connection!(self.pool, |conn| delete.execute(conn))
            .map_err(self.failed("deleting from"))?;
        Ok(())
    }

    fn clear(&self, container: &str) -> Result<()> {
        let container = Hashed::new(container);
        let clear = self.statements.clear(&container);
        with_connection!(self.pool, |conn| clear.execute(conn))
            .map_err(self.failed("clearing a container in"))?;
        Ok(())
    }

    fn purge_expired(&self) -> Result<()> {
        let purge = self.statements.purge(self.now());
        with_connection!(self.pool, |conn| purge.execute(conn))
            .map_err(self.failed("purging expired entries from"))?;
        Ok(())
    }

    /// Looks up to 512 keys up in one statement; deletes the expired entries it finds in one more.
    fn retrieve_many(&self, container: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let container = Hashed::new(container);
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let hashes: Vec<Hash> = chunk.iter().map(|key| hash(key.as_bytes())).collect();
            let select = self.statements.select(&container, &hashes);
            let live = self.look_up(&container, select)?;
            found.extend(chunk.iter().map(|key| live.get(key.as_bytes()).cloned()));
        }
        Ok(found)
    }
}

impl fmt::Debug for SqlBackend {
    /// The database's host, port and name or file, never the URL: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlBackend")
            .field("name", &self.name)
            .field("database", &self.config.url.target())
            .field("table", &self.config.table)
            .field("pool_size", &self.config.pool_size)
            .field("connect_timeout", &self.config.connect_timeout)
            .finish_non_exhaustive()
    }
}
