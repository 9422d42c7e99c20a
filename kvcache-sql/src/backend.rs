//! The backend: entries in one table of a shared database, reached through a pool.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use diesel::{QueryableByName, RunQueryDsl};
use kvcache_core::{Backend, BackendConfig, Clock, Error, Result, expires_at};
use sha2::{Digest, Sha256};

use crate::config::SqlConfig;
use crate::pool::{Failure, Pool, with_connection};
use crate::sql::{COLUMNS, Statements};

/// Keys looked up per statement: far below every database's limit on bind parameters.
const BATCH: usize = 500;

/// A cache in a table of a PostgreSQL, MySQL/MariaDB or SQLite database, shared by every process
/// that names the same table.
///
/// Connections come from a pool of `pool_size`; each is checked before use, so a database that
/// went away and came back is used again without rebuilding the backend. Calls made while it is
/// away fail with an [`Error::Backend`] after `connect_timeout`.
pub struct SqlBackend {
    name: String,
    config: SqlConfig,
    statements: Statements,
    pool: Pool,
    clock: Arc<dyn Clock>,
}

/// One entry, as read.
#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Binary)]
    entry_key: Vec<u8>,
    #[diesel(sql_type = Binary)]
    entry_value: Vec<u8>,
    #[diesel(sql_type = Nullable<BigInt>)]
    expires_at: Option<i64>,
}

/// One column of a table, as the database's catalogue lists it.
#[derive(QueryableByName)]
struct Column {
    #[diesel(sql_type = Text)]
    name: String,
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
            let created = self.call("creating", |statements| {
                with_connection!(self.pool, |conn| statements
                    .create
                    .iter()
                    .try_for_each(|statement| conn.batch_execute(statement)))
            });
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
        let columns: Vec<Column> = self.call("reading the columns of", |statements| {
            with_connection!(self.pool, |conn| diesel::sql_query(&statements.columns)
                .bind::<Text, _>(&self.config.table)
                .load::<Column>(conn))
        })?;
        Ok(columns.into_iter().map(|column| column.name).collect())
    }

    /// Runs `f`, turning its failure into an error saying it was `doing` it.
    fn call<T>(&self, doing: &str, f: impl FnOnce(&Statements) -> Result<T, Failure>) -> Result<T> {
        f(&self.statements).map_err(|failure| failure.into_error(&self.name, &self.config, doing))
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_millis()).unwrap_or(i64::MAX)
    }
}

fn hash(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

impl Backend for SqlBackend {
    fn store(&self, container: &str, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let expires = ttl.map(|ttl| {
            let at = expires_at(self.clock.now_millis(), ttl);
            i64::try_from(at).unwrap_or(i64::MAX)
        });
        self.call("storing into", |statements| {
            with_connection!(self.pool, |conn| diesel::sql_query(&statements.upsert)
                .bind::<Binary, _>(hash(container.as_bytes()))
                .bind::<Binary, _>(hash(key.as_bytes()))
                .bind::<Binary, _>(container.as_bytes())
                .bind::<Binary, _>(key.as_bytes())
                .bind::<Binary, _>(value)
                .bind::<Nullable<BigInt>, _>(expires)
                .execute(conn))
        })?;
        Ok(())
    }

    fn retrieve(&self, container: &str, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.retrieve_many(container, &[key])?.pop().flatten())
    }

    fn invalidate(&self, container: &str, key: &str) -> Result<()> {
        self.call("deleting from", |statements| {
            with_connection!(self.pool, |conn| diesel::sql_query(&statements.delete)
                .bind::<Binary, _>(hash(container.as_bytes()))
                .bind::<Binary, _>(hash(key.as_bytes()))
                .bind::<Binary, _>(container.as_bytes())
                .bind::<Binary, _>(key.as_bytes())
                .execute(conn))
        })?;
        Ok(())
    }

    fn clear(&self, container: &str) -> Result<()> {
        self.call("clearing a container in", |statements| {
            with_connection!(self.pool, |conn| diesel::sql_query(&statements.clear)
                .bind::<Binary, _>(hash(container.as_bytes()))
                .bind::<Binary, _>(container.as_bytes())
                .execute(conn))
        })?;
        Ok(())
    }

    fn purge_expired(&self) -> Result<()> {
        let now = self.now();
        self.call("purging expired entries from", |statements| {
            with_connection!(self.pool, |conn| diesel::sql_query(&statements.purge)
                .bind::<BigInt, _>(now)
                .execute(conn))
        })?;
        Ok(())
    }

    /// Looks up to 500 keys up in one statement; deletes the expired entries it finds in one more.
    fn retrieve_many(&self, container: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let container_hash = hash(container.as_bytes());
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH) {
            let hashes: Vec<Vec<u8>> = chunk.iter().map(|key| hash(key.as_bytes())).collect();
            let rows: Vec<Row> = self.call("reading from", |statements| {
                let sql = statements.select(hashes.len());
                with_connection!(self.pool, |conn| {
                    let query = diesel::sql_query(&sql)
                        .into_boxed()
                        .bind::<Binary, _>(&container_hash)
                        .bind::<Binary, _>(container.as_bytes());
                    hashes
                        .iter()
                        .fold(query, |query, hash| query.bind::<Binary, _>(hash))
                        .load::<Row>(conn)
                })
            })?;
            let now = self.now();
            let mut live = HashMap::with_capacity(rows.len());
            let mut expired = Vec::new();
            for row in rows {
                if row.expires_at.is_none_or(|at| now < at) {
                    live.insert(row.entry_key, row.entry_value);
                } else {
                    expired.push(hash(&row.entry_key));
                }
            }
            if !expired.is_empty() {
                self.call("deleting expired entries from", |statements| {
                    let sql = statements.delete_expired(expired.len());
                    with_connection!(self.pool, |conn| {
                        let query = diesel::sql_query(&sql)
                            .into_boxed()
                            .bind::<Binary, _>(&container_hash)
                            .bind::<BigInt, _>(now);
                        expired
                            .iter()
                            .fold(query, |query, hash| query.bind::<Binary, _>(hash))
                            .execute(conn)
                    })
                })?;
            }
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
