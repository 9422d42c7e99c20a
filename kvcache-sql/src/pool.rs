//! Pools of connections to whichever database the URL names, and running a statement on one.
//!
//! A connection is not checked when it leaves the pool: that would cost a round trip per call.
//! Instead, a statement that fails on a connection that turns out to be dead (the server
//! restarted, or went away) runs again on the next one, up to a newly opened one; every
//! statement of the backend can run twice without harm. The dead connection is dropped.

use std::marker::PhantomData;
use std::time::Instant;

use diesel::r2d2::{self, ManageConnection, NopErrorHandler, R2D2Connection};
use diesel::result::DatabaseErrorKind;
use kvcache_core::{Error, Result};

use crate::config::SqlConfig;
use crate::url::Database;

/// How often a statement runs again after losing a deadlock.
const RETRIES: u32 = 5;

/// A pool of connections to one database, of the type its cargo feature compiles in.
pub(crate) enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(r2d2::Pool<Manager<diesel::PgConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(r2d2::Pool<Manager<diesel::MysqlConnection>>),
    #[cfg(feature = "sqlite")]
    Sqlite(r2d2::Pool<Manager<diesel::SqliteConnection>>),
}

/// Opens connections of type `C`, and tells r2d2 which ones to drop.
pub(crate) struct Manager<C> {
    /// What the driver connects with. It may hold the password: never show it.
    url: String,
    /// Statements run on each new connection.
    setup: Option<String>,
    connection: PhantomData<fn() -> C>,
}

/// A pooled connection, and whether it was found dead and must not go back to the pool.
pub(crate) struct Conn<C> {
    diesel: C,
    dead: bool,
}

impl<C: R2D2Connection + 'static> ManageConnection for Manager<C> {
    type Connection = Conn<C>;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Conn<C>, r2d2::Error> {
        let mut diesel = C::establish(&self.url).map_err(r2d2::Error::ConnectionError)?;
        if let Some(setup) = &self.setup {
            diesel
                .batch_execute(setup)
                .map_err(r2d2::Error::QueryError)?;
        }
        Ok(Conn {
            diesel,
            dead: false,
        })
    }

    /// A round trip (`SELECT 1`). r2d2 asks only on check-out, which is off; [`run`] pings
    /// the same way, after a failure only.
    fn is_valid(&self, conn: &mut Conn<C>) -> Result<(), r2d2::Error> {
        conn.diesel.ping().map_err(r2d2::Error::QueryError)
    }

    /// Dead, left inside a transaction, or dropped by a panic in the middle of a statement.
    fn has_broken(&self, conn: &mut Conn<C>) -> bool {
        conn.dead || std::thread::panicking() || conn.diesel.is_broken()
    }
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
    ($pool:expr, |$conn:ident| $body:expr) => {{
        // Typed, for the build with no database, where the match has no arm.
        let result: Result<_, $crate::pool::Failure> = match $pool {
            #[cfg(feature = "postgres")]
            $crate::pool::Pool::Postgres(ref pool) => $crate::pool::run(pool, |$conn| $body),
            #[cfg(feature = "mysql")]
            $crate::pool::Pool::Mysql(ref pool) => $crate::pool::run(pool, |$conn| $body),
            #[cfg(feature = "sqlite")]
            $crate::pool::Pool::Sqlite(ref pool) => $crate::pool::run(pool, |$conn| $body),
        };
        result
    }};
}
pub(crate) use with_connection;

/// Runs `f` on a connection from `pool`, within the pool's connection timeout in all.
///
/// When `f` fails and its connection is dead, `f` runs again on another one: at most
/// `pool_size + 1` times in all, enough to get past every idle connection to a new one. An
/// error of the statement itself, on a live connection, is returned as it is.
pub(crate) fn run<C, T>(
    pool: &r2d2::Pool<Manager<C>>,
    mut f: impl FnMut(&mut C) -> diesel::QueryResult<T>,
) -> Result<T, Failure>
where
    C: R2D2Connection + 'static,
{
    let deadline = Instant::now() + pool.connection_timeout();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut conn = pool
            .get_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(Failure::Connect)?;
        match run_once(&mut conn.diesel, &mut f) {
            Ok(value) => return Ok(value),
            Err(error) => {
                conn.dead = is_lost(&error) || conn.diesel.ping().is_err();
                if !(conn.dead && attempts <= pool.max_size()) {
                    return Err(Failure::Query(error));
                }
            }
        }
    }
}

/// Runs `f` on `conn`, again when the database picked it as the victim of a deadlock.
///
/// Every statement runs alone in its own transaction, so when the database picks it as the
/// victim of a deadlock (MySQL's InnoDB does so between range deletes and upserts) or of a
/// serialization failure, running it again is safe, and is what the database asks for.
fn run_once<C, T>(
    conn: &mut C,
    f: &mut impl FnMut(&mut C) -> diesel::QueryResult<T>,
) -> diesel::QueryResult<T> {
    let mut retries = 0;
    loop {
        match f(conn) {
            Err(diesel::result::Error::DatabaseError(
                DatabaseErrorKind::SerializationFailure,
                _,
            )) if retries < RETRIES => {
                retries += 1;
            }
            result => return result,
        }
    }
}

/// Whether the driver says that `error` lost the connection. Where it cannot tell (MySQL's
/// "server has gone away" is of no particular kind), a failed ping does.
fn is_lost(error: &diesel::result::Error) -> bool {
    matches!(
        error,
        diesel::result::Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        )
    )
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
                build(config, url, None).map(Pool::Postgres)
            }
            #[cfg(feature = "mysql")]
            Database::Mysql => build(config, url.to_owned(), None).map(Pool::Mysql),
            // Wait for another writer's lock instead of failing at once, and write ahead so
            // that readers never wait for a writer.
            #[cfg(feature = "sqlite")]
            Database::Sqlite => {
                let setup = format!(
                    "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
                    config.connect_timeout.as_millis()
                );
                build(config, url.to_owned(), Some(setup)).map(Pool::Sqlite)
            }
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

/// A pool of `config`'s size and timeout, of connections to `url` set up with `setup`; it
/// returns once one connection is open.
fn build<C: R2D2Connection + 'static>(
    config: &SqlConfig,
    url: String,
    setup: Option<String>,
) -> Result<r2d2::Pool<Manager<C>>, r2d2::PoolError> {
    r2d2::Pool::builder()
        .max_size(config.pool_size)
        .min_idle(Some(1))
        .connection_timeout(config.connect_timeout)
        .test_on_check_out(false)
        // Connection errors reach the caller, scrubbed of the password, as errors.
        .error_handler(Box::new(NopErrorHandler))
        .build(Manager {
            url,
            setup,
            connection: PhantomData,
        })
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
        let error = Pool::connect("db", &config)
            .err()
            .unwrap_or_else(|| panic!("{url}: connected with its feature off"));
        let error = error.to_string();
        assert!(
            error.starts_with("backend.db.url: ") && error.contains(feature),
            "{error}"
        );
        assert!(!error.contains("secret"), "{error}");
    }
}
