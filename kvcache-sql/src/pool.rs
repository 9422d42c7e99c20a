//! Pools of connections to whichever database the URL names, and running code on one.

use diesel::r2d2::{self, ConnectionManager, ManageConnection, NopErrorHandler, R2D2Connection};
use diesel::result::DatabaseErrorKind;
use kvcache_core::{Error, Result};

use crate::config::SqlConfig;
use crate::url::Database;

/// How often a statement runs again after losing a deadlock.
const RETRIES: u32 = 5;

/// A pool of connections to one database, of the type its cargo feature compiles in.
pub(crate) enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(r2d2::Pool<ConnectionManager<diesel::PgConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(r2d2::Pool<ConnectionManager<diesel::MysqlConnection>>),
    #[cfg(feature = "sqlite")]
    Sqlite(r2d2::Pool<ConnectionManager<diesel::SqliteConnection>>),
}

/// Why a call on a connection failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection within `connect_timeout`; the driver's last error, if there was one.
    Connect(r2d2::PoolError),
    /// A statement failed.
    Query(diesel::result::Error),
}

impl Failure {
    /// The [`Error::Backend`] of the backend `backend` doing `doing`: it names the table and
    /// where the database is, never the password.
    pub(crate) fn into_error(self, backend: &str, config: &SqlConfig, doing: &str) -> Error {
        let (context, message) = match self {
            Failure::Connect(error) => (
                format!(
                    "{doing} table {:?}: no connection to {} within {:?}",
                    config.table,
                    config.url.target(),
                    config.connect_timeout
                ),
                error.to_string(),
            ),
            Failure::Query(error) => (
                format!(
                    "{doing} table {:?} on {}",
                    config.table,
                    config.url.target()
                ),
                error.to_string(),
            ),
        };
        Error::backend(backend, context, config.url.scrub(message.trim_end()))
    }
}

/// Runs `$body` with `$conn` bound to `&mut C`, a connection from the pool `$pool` of whichever
/// connection type `C` it holds. `$body` is a `QueryResult<T>`; the whole a `Result<T, Failure>`.
macro_rules! with_connection {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match $pool {
            #[cfg(feature = "postgres")]
            $crate::pool::Pool::Postgres(ref pool) => $crate::pool::run(pool, |$conn| $body),
            #[cfg(feature = "mysql")]
            $crate::pool::Pool::Mysql(ref pool) => $crate::pool::run(pool, |$conn| $body),
            #[cfg(feature = "sqlite")]
            $crate::pool::Pool::Sqlite(ref pool) => $crate::pool::run(pool, |$conn| $body),
        }
    };
}
pub(crate) use with_connection;

/// Runs `f` on a connection from `pool`: one checked out and found alive, or a new one.
///
/// Every statement runs alone in its own transaction, so when the database picks it as the
/// victim of a deadlock (MySQL's InnoDB does so between range deletes and upserts) or of a
/// serialization failure, running it again is safe, and is what the database asks for.
pub(crate) fn run<C, T>(
    pool: &r2d2::Pool<ConnectionManager<C>>,
    mut f: impl FnMut(&mut C) -> diesel::QueryResult<T>,
) -> Result<T, Failure>
where
    C: R2D2Connection + 'static,
{
    let mut connection = pool.get().map_err(Failure::Connect)?;
    let mut retries = 0;
    loop {
        match f(&mut connection) {
            Err(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::SerializationFailure,
                _,
            )) if retries < RETRIES => {
                retries += 1;
            }
            result => return result.map_err(Failure::Query),
        }
    }
}

impl Pool {
    /// A pool for `config`'s database, holding one open connection, for the backend `backend`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the database's cargo feature is off; [`Error::Backend`]
    /// with the last attempt's error when there is no connection after `connect_timeout`.
    pub(crate) fn connect(backend: &str, config: &SqlConfig) -> Result<Pool> {
        let url = config.url.connect();
        let pool: Result<Pool, r2d2::PoolError> = match config.url.database() {
            #[cfg(feature = "postgres")]
            Database::Postgres => {
                let url = postgres_url(url, config.connect_timeout);
                builder(config)
                    .build(ConnectionManager::new(url))
                    .map(Pool::Postgres)
            }
            #[cfg(feature = "mysql")]
            Database::Mysql => builder(config)
                .build(ConnectionManager::new(url))
                .map(Pool::Mysql),
            #[cfg(feature = "sqlite")]
            Database::Sqlite => builder(config)
                .connection_customizer(Box::new(SqliteSetup {
                    busy_timeout_ms: config.connect_timeout.as_millis(),
                }))
                .build(ConnectionManager::new(url))
                .map(Pool::Sqlite),
            #[allow(
                unreachable_patterns,
                reason = "reached when a database's feature is off"
            )]
            database => {
                return Err(Error::config(
                    config.url_key.as_str(),
                    format!(
                        "{} needs the `{}` feature of kvcache (the `{}` feature of kvcache-sql)",
                        database.name(),
                        database.feature(),
                        database.feature().trim_start_matches("sql-"),
                    ),
                ));
            }
        };
        pool.map_err(|error| Failure::Connect(error).into_error(backend, config, "opening"))
    }
}

/// A pool builder with `config`'s size and timeout.
fn builder<M: ManageConnection>(config: &SqlConfig) -> r2d2::Builder<M> {
    r2d2::Pool::builder()
        .max_size(config.pool_size)
        .min_idle(Some(1))
        .connection_timeout(config.connect_timeout)
        // Connection errors reach the caller, scrubbed of the password, as errors.
        .error_handler(Box::new(NopErrorHandler))
}

/// `url` with libpq's `connect_timeout` (whole seconds) unless it sets one.
#[cfg(feature = "postgres")]
fn postgres_url(url: &str, timeout: std::time::Duration) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let seconds = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}connect_timeout={seconds}")
}

/// Sets up each new SQLite connection: wait for locks instead of failing at once, and write
/// ahead so that readers never wait for a writer.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
struct SqliteSetup {
    busy_timeout_ms: u128,
}

#[cfg(feature = "sqlite")]
impl r2d2::CustomizeConnection<diesel::SqliteConnection, r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, connection: &mut diesel::SqliteConnection) -> Result<(), r2d2::Error> {
        use diesel::connection::SimpleConnection;
        connection
            .batch_execute(&format!(
                "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
                self.busy_timeout_ms
            ))
            .map_err(r2d2::Error::QueryError)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_urls_get_a_connect_timeout_in_whole_seconds() {
        use std::time::Duration;

        use super::postgres_url;

        let url = "postgres://u@h/db";
        assert_eq!(
            postgres_url(url, Duration::from_millis(1500)),
            "postgres://u@h/db?connect_timeout=2"
        );
        let url = "postgres://u@h/db?sslmode=disable";
        assert_eq!(
            postgres_url(url, Duration::from_secs(5)),
            "postgres://u@h/db?sslmode=disable&connect_timeout=5"
        );
        let url = "postgres://u@h/db?connect_timeout=9";
        assert_eq!(postgres_url(url, Duration::from_secs(5)), url);
    }

    #[cfg(not(all(feature = "postgres", feature = "mysql", feature = "sqlite")))]
    #[test]
    fn a_database_whose_feature_is_off_is_a_config_error_naming_the_feature() {
        use kvcache_core::BackendConfig;

        use super::{Pool, SqlConfig};

        let (url, feature) = if !cfg!(feature = "postgres") {
            ("postgresql://user:secret@127.0.0.1/test", "`sql-postgres`")
        } else if !cfg!(feature = "mysql") {
            ("mariadb://user:secret@127.0.0.1/test", "`sql-mysql`")
        } else {
            ("sqlite://kv.sqlite3", "`sql-sqlite`")
        };
        let config = SqlConfig::read(&BackendConfig::new("db", "sql").option("url", url)).unwrap();
        let Err(error) = Pool::connect("db", &config) else {
            panic!("{url}: connected with its feature off");
        };
        let error = error.to_string();
        assert!(
            error.starts_with("backend.db.url: ") && error.contains(feature),
            "{error}"
        );
        assert!(!error.contains("secret"), "{error}");
    }
}
