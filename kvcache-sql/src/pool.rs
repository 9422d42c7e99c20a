//! Pools of connections to whichever database the URL names, and running a call on one, within
//! the call's bound.
//!
//! A connection is not checked when it leaves the pool: that would cost a round trip per call.
//! Instead, a statement that fails on a connection that turns out to be dead (the server
//! restarted, or went away) runs again on the next one, up to a newly opened one; every
//! statement of the backend can run twice without harm. The dead connection is dropped.
//!
//! Every call has a deadline, `statement_timeout` after it starts, that bounds everything it
//! does: waiting for a connection, each statement, and each retry. Each connection is told the
//! bound (see [`Dialect::prepare`]), so that the server itself gives up on a statement that
//! waits for a lock, or runs, for that long, and answers with an error; and the watchdog cuts
//! the connection of a statement that still has no answer shortly after the deadline (the
//! server is frozen, or its host unreachable), which the driver could otherwise wait for
//! forever.

use std::marker::PhantomData;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::QueryResult;
use diesel::r2d2::{self, ManageConnection, NopErrorHandler, R2D2Connection};
use diesel::result::DatabaseErrorKind;
use kvcache_core::{Error, Result};

use crate::config::SqlConfig;
use crate::socket::{self, Before, End};
use crate::url::Database;
use crate::watchdog::Watchdog;

/// How often a statement runs again after losing a deadlock.
const RETRIES: u32 = 5;
/// How long after a call's deadline the watchdog cuts its connection: time for a server that
/// gave up at the deadline to say so, so that its connection is kept.
pub(crate) const GRACE: Duration = Duration::from_millis(50);
/// How the databases word an error of a statement they gave up on at its timeout, or that
/// waited for a lock for that long.
const TIMEOUT_MESSAGES: [&str; 7] = [
    "statement timeout",                // PostgreSQL's statement_timeout
    "lock timeout",                     // PostgreSQL's lock_timeout
    "max_statement_time",               // MariaDB
    "maximum statement execution time", // MySQL's max_execution_time
    "Lock wait timeout",                // MySQL and MariaDB, InnoDB and metadata locks
    "database is locked",               // SQLite's busy timeout
    "database table is locked",
];

/// A pool of connections to one database, of the type its cargo feature compiles in, and the
/// watchdog of its calls.
pub(crate) struct Pool {
    pub(crate) connections: Connections,
    pub(crate) watchdog: Watchdog,
}

/// The pool of the database's connection type.
pub(crate) enum Connections {
    #[cfg(feature = "postgres")]
    Postgres(r2d2::Pool<Manager<diesel::PgConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(r2d2::Pool<Manager<diesel::MysqlConnection>>),
    #[cfg(feature = "sqlite")]
    Sqlite(r2d2::Pool<Manager<diesel::SqliteConnection>>),
}

/// What a database needs done on each new connection.
pub(crate) trait Dialect: R2D2Connection + 'static {
    /// Whether its connections are sockets to a server, which the watchdog may have to cut.
    const NETWORKED: bool;

    /// Bounds the session's statements and lock waits by `bound`, and returns the connection's
    /// client and server ends as the server sees them, when it is TCP.
    fn prepare(&mut self, bound: Duration) -> QueryResult<Option<(End, End)>>;
}

/// Opens connections of type `C`, and tells r2d2 which ones to drop.
pub(crate) struct Manager<C> {
    /// The backend's name, for logs.
    backend: String,
    /// What the driver connects with. It may hold the password: never show it.
    url: String,
    /// The bound of each call, which each session is told.
    bound: Duration,
    connection: PhantomData<fn() -> C>,
}

/// A pooled connection, whether it was found dead and must not go back to the pool, and a
/// duplicate of its socket for the watchdog to cut, when it was found.
pub(crate) struct Conn<C> {
    diesel: C,
    dead: bool,
    socket: Option<Arc<TcpStream>>,
}

impl<C: Dialect> ManageConnection for Manager<C> {
    type Connection = Conn<C>;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<Conn<C>, r2d2::Error> {
        let before = C::NETWORKED.then(Before::now);
        let mut diesel = C::establish(&self.url).map_err(r2d2::Error::ConnectionError)?;
        let ends = diesel
            .prepare(self.bound)
            .map_err(r2d2::Error::QueryError)?;
        let socket = before
            .zip(ends)
            .and_then(|(before, (client, server))| socket::find(&before, client, server));
        if C::NETWORKED && socket.is_none() {
            tracing::debug!(
                backend = %self.backend,
                "no socket of its own found for a new connection (not TCP, not Linux, behind a \
                 proxy, or the server lists no client port): the server's timeouts alone bound \
                 its calls"
            );
        }
        Ok(Conn {
            diesel,
            dead: false,
            socket: socket.map(Arc::new),
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

/// `bound` in whole milliseconds, rounded up.
fn whole_ms(bound: Duration) -> u128 {
    bound.as_nanos().div_ceil(1_000_000)
}

/// The ends the server reports, each an address (when it is one) and a port; none without
/// ports (a Unix socket).
#[cfg(any(feature = "postgres", feature = "mysql"))]
fn ends(
    client: (Option<&str>, Option<u16>),
    server: (Option<&str>, Option<u16>),
) -> Option<(End, End)> {
    let end = |(ip, port): (Option<&str>, Option<u16>)| {
        Some(End {
            ip: ip.and_then(|ip| ip.parse().ok()),
            port: port?,
        })
    };
    Some((end(client)?, end(server)?))
}

#[cfg(feature = "postgres")]
impl Dialect for diesel::PgConnection {
    const NETWORKED: bool = true;

    /// `statement_timeout` and `lock_timeout`, and the ends, in one round trip.
    fn prepare(&mut self, bound: Duration) -> QueryResult<Option<(End, End)>> {
        use diesel::RunQueryDsl;
        use diesel::sql_types::{Integer, Nullable, Text};

        type Row = (
            Text,
            Text,
            Nullable<Text>,
            Nullable<Integer>,
            Nullable<Text>,
            Nullable<Integer>,
        );
        let ms = whole_ms(bound);
        let sql = format!(
            "SELECT set_config('statement_timeout', '{ms}ms', false), \
             set_config('lock_timeout', '{ms}ms', false), \
             host(inet_client_addr()), inet_client_port(), \
             host(inet_server_addr()), inet_server_port()"
        );
        let statement = crate::query::Statement::<{ crate::query::BY_TEXT }>::new(&sql, Vec::new())
            .returning::<Row>();
        let (_, _, client, client_port, server, server_port): (
            String,
            String,
            Option<String>,
            Option<i32>,
            Option<String>,
            Option<i32>,
        ) = statement.get_result(self)?;
        let port = |port: Option<i32>| port.and_then(|port| u16::try_from(port).ok());
        Ok(ends(
            (client.as_deref(), port(client_port)),
            (server.as_deref(), port(server_port)),
        ))
    }
}

#[cfg(feature = "mysql")]
impl Dialect for diesel::MysqlConnection {
    const NETWORKED: bool = true;

    /// MariaDB's `max_statement_time` (every statement) or MySQL's `max_execution_time`
    /// (reads), and the waits for InnoDB's and for table locks in whole seconds; the client's
    /// end from the process list, the server's port. Two round trips.
    fn prepare(&mut self, bound: Duration) -> QueryResult<Option<(End, End)>> {
        use diesel::RunQueryDsl;
        use diesel::connection::SimpleConnection;
        use diesel::sql_types::{BigInt, Nullable, Text};

        let statement = crate::query::Statement::<{ crate::query::BY_TEXT }>::new(
            "SELECT VERSION(), CAST(@@port AS SIGNED), \
             (SELECT host FROM information_schema.processlist WHERE id = CONNECTION_ID())",
            Vec::new(),
        )
        .returning::<(Text, BigInt, Nullable<Text>)>();
        let (version, port, client): (String, i64, Option<String>) = statement.get_result(self)?;
        let seconds = bound.as_secs() + u64::from(bound.subsec_nanos() > 0);
        let statement_time = if version.contains("MariaDB") {
            format!("max_statement_time = {:.6}", bound.as_secs_f64())
        } else {
            format!("max_execution_time = {}", whole_ms(bound))
        };
        self.batch_execute(&format!(
            "SET SESSION {statement_time}, SESSION lock_wait_timeout = {seconds}, \
             SESSION innodb_lock_wait_timeout = {seconds}"
        ))?;
        // `127.0.0.1:40824`, `localhost:40824`, or `localhost` over a Unix socket.
        let client = client.as_deref().and_then(|host| host.rsplit_once(':'));
        Ok(ends(
            (
                client.map(|(ip, _)| ip),
                client.and_then(|(_, port)| port.parse().ok()),
            ),
            (None, u16::try_from(port).ok()),
        ))
    }
}

#[cfg(feature = "sqlite")]
impl Dialect for diesel::SqliteConnection {
    const NETWORKED: bool = false;

    /// Waits for another writer's lock for `bound` instead of failing at once, and writes ahead
    /// so that readers never wait for a writer.
    fn prepare(&mut self, bound: Duration) -> QueryResult<Option<(End, End)>> {
        use diesel::connection::SimpleConnection;

        self.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
            whole_ms(bound)
        ))?;
        Ok(None)
    }
}

/// One call of a store: its bound, and when it is up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call {
    bound: Duration,
    deadline: Instant,
}

impl Call {
    /// A call starting now, that may take `bound`.
    pub(crate) fn new(bound: Duration) -> Self {
        Call {
            bound,
            deadline: Instant::now() + bound,
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

/// Why a call on a connection failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection within `waited`; the driver's last error, if there was one.
    Connect {
        error: r2d2::PoolError,
        waited: Duration,
    },
    /// No answer by the deadline: the watchdog cut the connection.
    Cut,
    /// The database gave up on a statement at its timeout (a lock held by another session, or
    /// a statement that ran too long).
    Expired(diesel::result::Error),
    /// The connection was lost, and no other worked within the call's bound.
    Lost(diesel::result::Error),
    /// A statement failed, on a live connection.
    Query(diesel::result::Error),
}

impl Failure {
    /// The error of the backend `backend` doing `doing`: it names the table and where the
    /// database is, never the password, and says how long it waited.
    ///
    /// Unreachable, lost, timed out: [`Error::Unavailable`]. A statement that failed: an
    /// [`Error::Backend`].
    pub(crate) fn into_error(self, backend: &str, config: &SqlConfig, doing: &str) -> Error {
        self.into_error_in(backend, config, doing, &config.table)
    }

    /// As [`into_error`](Self::into_error), of a call on `table` (the leases table) instead of
    /// the entries table.
    pub(crate) fn into_error_in(
        self,
        backend: &str,
        config: &SqlConfig,
        doing: &str,
        table: &str,
    ) -> Error {
        let target = config.url.target();
        let bound = words(config.statement_timeout);
        let scrub = |message: String| config.url.scrub(&name_os_errors(message.trim_end()));
        match self {
            Failure::Connect { error, waited } => Error::unavailable(
                backend,
                format!(
                    "no connection to {target} within {} while {doing} table {table:?}",
                    words(waited)
                ),
                scrub(error.to_string()),
            ),
            Failure::Cut => Error::unavailable(
                backend,
                format!("no answer from {target} within {bound} while {doing} table {table:?}"),
                format!(
                    "the call was cut {} after its bound: the server did not answer, and its \
                     connection was closed",
                    words(GRACE)
                ),
            ),
            Failure::Expired(error) => Error::unavailable(
                backend,
                format!(
                    "{target} did not finish within {bound} while {doing} table {table:?} \
                     (a lock held by another session, or a slow statement)"
                ),
                scrub(error.to_string()),
            ),
            Failure::Lost(error) => Error::unavailable(
                backend,
                format!("lost the connection to {target} while {doing} table {table:?}"),
                scrub(error.to_string()),
            ),
            Failure::Query(error) => Error::backend(
                backend,
                format!("{doing} table {table:?} on {target}"),
                scrub(error.to_string()),
            ),
        }
    }
}

/// `message` with each bare OS error number in parentheses, as the MariaDB client library
/// writes them (`Can't connect to server on '127.0.0.1' (111)`), followed by what it means:
/// `(111: Connection refused)`.
fn name_os_errors(message: &str) -> String {
    let mut named = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('(') {
        let (before, after) = rest.split_at(open + 1);
        named.push_str(before);
        rest = after;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let number = rest[..digits]
            .parse::<i32>()
            .ok()
            .filter(|&n| n > 0 && n < 4096);
        if let (Some(number), Some(')')) = (number, rest[digits..].chars().next()) {
            let error = std::io::Error::from_raw_os_error(number).to_string();
            let meaning = error
                .strip_suffix(&format!(" (os error {number})"))
                .unwrap_or(&error);
            named.push_str(&format!("{number}: {meaning}"));
            rest = &rest[digits..];
        }
    }
    named.push_str(rest);
    named
}

/// `duration` in words: `500 ms`, `5 s`, `1500 ms`.
pub(crate) fn words(duration: Duration) -> String {
    let ms = whole_ms(duration);
    if ms >= 1000 && ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}

/// Runs `$body` with `$conn` bound to `&mut C`, a connection from the pool `$pool` of whichever
/// connection type `C` it holds, within the [`Call`] `$call`. `$body` is a `QueryResult<T>`; the
/// whole a `Result<T, Failure>`.
macro_rules! with_connection {
    ($pool:expr, $call:expr, |$conn:ident| $body:expr) => {{
        let pool: &$crate::pool::Pool = &$pool;
        let call: $crate::pool::Call = $call;
        // Typed, for the build with no database, where the match has no arm.
        let result: Result<_, $crate::pool::Failure> = match pool.connections {
            #[cfg(feature = "postgres")]
            $crate::pool::Connections::Postgres(ref connections) => {
                $crate::pool::run(connections, &pool.watchdog, call, |$conn| $body)
            }
            #[cfg(feature = "mysql")]
            $crate::pool::Connections::Mysql(ref connections) => {
                $crate::pool::run(connections, &pool.watchdog, call, |$conn| $body)
            }
            #[cfg(feature = "sqlite")]
            $crate::pool::Connections::Sqlite(ref connections) => {
                $crate::pool::run(connections, &pool.watchdog, call, |$conn| $body)
            }
        };
        result
    }};
}
pub(crate) use with_connection;

/// Runs `f` on a connection from `pool`, within `call`'s bound in all.
///
/// When `f` fails and its connection is dead, `f` runs again on another one: at most
/// `pool_size + 1` times in all, enough to get past every idle connection to a new one, and
/// only while the call has time left. An error of the statement itself, on a live connection,
/// is returned as it is. Each statement (and the ping that tells whether its connection is
/// dead) is watched by `watchdog`, which cuts its connection [`GRACE`] after the deadline.
pub(crate) fn run<C, T>(
    pool: &r2d2::Pool<Manager<C>>,
    watchdog: &Watchdog,
    call: Call,
    mut f: impl FnMut(&mut C) -> QueryResult<T>,
) -> Result<T, Failure>
where
    C: Dialect,
{
    let cut_at = call.deadline + GRACE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut pooled = pool
            .get_timeout(call.remaining())
            .map_err(|error| Failure::Connect {
                error,
                waited: call.bound,
            })?;
        let conn = &mut *pooled;
        let started = Instant::now();
        let watch = watchdog.watch(conn.socket.as_ref(), cut_at);
        let result = run_once(&mut conn.diesel, &mut f);
        if watch.finish() {
            conn.dead = true;
            return result.map_err(|_| Failure::Cut);
        }
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        if expired(&error, started.elapsed(), call.bound) {
            return Err(Failure::Expired(error));
        }
        if !is_lost(&error) {
            let watch = watchdog.watch(conn.socket.as_ref(), cut_at);
            let pinged = conn.diesel.ping();
            if watch.finish() {
                conn.dead = true;
                return Err(Failure::Cut);
            }
            if pinged.is_ok() {
                return Err(Failure::Query(error));
            }
        }
        conn.dead = true;
        if attempts > pool.max_size() || call.remaining().is_zero() {
            return Err(Failure::Lost(error));
        }
    }
}

/// Runs `f` on `conn`, again when the database picked it as the victim of a deadlock.
///
/// Every statement runs alone in its own transaction, so when the database picks it as the
/// victim of a deadlock (MySQL's InnoDB does so between range deletes and upserts) or of a
/// serialization failure, running it again is safe, and is what the database asks for.
fn run_once<C, T>(conn: &mut C, f: &mut impl FnMut(&mut C) -> QueryResult<T>) -> QueryResult<T> {
    let mut retries = 0;
    loop {
        match f(conn) {
            Err(error) if is_deadlock(&error) && retries < RETRIES => retries += 1,
            result => return result,
        }
    }
}

/// Whether `error` says the database picked the statement as the victim of a deadlock or a
/// serialization failure. diesel reads MySQL's deadlock and PostgreSQL's serialization failure
/// (40001) as `SerializationFailure`, but PostgreSQL's deadlock (40P01) as `Unknown`: its
/// message tells it ("deadlock detected", in the server's default English messages).
fn is_deadlock(error: &diesel::result::Error) -> bool {
    match error {
        diesel::result::Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => true,
        diesel::result::Error::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            info.message().contains("deadlock detected")
        }
        _ => false,
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

/// Whether the database gave up on the statement of `error` at its timeout: it says so, or it
/// failed after running for about as long as the bound it was given.
fn expired(error: &diesel::result::Error, took: Duration, bound: Duration) -> bool {
    let diesel::result::Error::DatabaseError(DatabaseErrorKind::Unknown, info) = error else {
        return false;
    };
    let message = info.message();
    TIMEOUT_MESSAGES
        .iter()
        .any(|timeout| message.contains(timeout))
        || took >= bound.mul_f64(0.9)
}

impl Pool {
    /// A pool for `config`'s database, holding one open connection, for the backend `backend`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] when the database's cargo feature is off;
    /// [`Error::Unavailable`] with the last attempt's error when there is no connection after
    /// `connect_timeout`.
    pub(crate) fn connect(backend: &str, config: &SqlConfig) -> Result<Pool> {
        let url = config.url.connect();
        let connections: Result<Connections, r2d2::PoolError> = match config.url.database() {
            #[cfg(feature = "postgres")]
            Database::Postgres => {
                let url = postgres_url(url, config.connect_timeout, config.statement_timeout);
                build(backend, config, url).map(Connections::Postgres)
            }
            #[cfg(feature = "mysql")]
            Database::Mysql => build(backend, config, url.to_owned()).map(Connections::Mysql),
            #[cfg(feature = "sqlite")]
            Database::Sqlite => build(backend, config, url.to_owned()).map(Connections::Sqlite),
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
        let connections = connections.map_err(|error| {
            let waited = config.connect_timeout;
            Failure::Connect { error, waited }.into_error(backend, config, "opening")
        })?;
        Ok(Pool {
            connections,
            watchdog: Watchdog::new(config.statement_timeout),
        })
    }
}

/// A pool of `config`'s size, of connections to `url`, for the backend `backend`; it returns
/// once one connection is open, within `connect_timeout`.
fn build<C: Dialect>(
    backend: &str,
    config: &SqlConfig,
    url: String,
) -> Result<r2d2::Pool<Manager<C>>, r2d2::PoolError> {
    let pool = r2d2::Pool::builder()
        .max_size(config.pool_size)
        .min_idle(Some(1))
        // Calls wait for a connection within their own bound; r2d2 reads this as the longest
        // pause, halved, between its attempts to open a connection after one failed. Half the
        // bound: a call made once the database is back finds a connection.
        .connection_timeout(config.statement_timeout)
        .test_on_check_out(false)
        // Connection errors reach the caller, scrubbed of the password, as errors.
        .error_handler(Box::new(NopErrorHandler))
        .build_unchecked(Manager {
            backend: backend.to_owned(),
            url,
            bound: config.statement_timeout,
            connection: PhantomData,
        });
    drop(pool.get_timeout(config.connect_timeout)?);
    Ok(pool)
}

/// `url` with libpq's `connect_timeout` (whole seconds) and `tcp_user_timeout` (the longest
/// that sent data may stay unacknowledged before the connection is dropped: a host gone away)
/// unless it sets them.
#[cfg(feature = "postgres")]
pub(crate) fn postgres_url(url: &str, connect: Duration, bound: Duration) -> String {
    let mut url = url.to_owned();
    let seconds = connect.as_secs() + u64::from(connect.subsec_nanos() > 0);
    let user_timeout = whole_ms(bound + GRACE);
    for (option, value) in [
        ("connect_timeout", seconds.to_string()),
        ("tcp_user_timeout", user_timeout.to_string()),
    ] {
        if !url.contains(&format!("{option}=")) {
            let separator = if url.contains('?') { '&' } else { '?' };
            url = format!("{url}{separator}{option}={value}");
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[cfg(feature = "postgres")]
    #[test]
    fn postgres_urls_get_a_connect_timeout_in_whole_seconds_and_a_tcp_user_timeout() {
        use super::postgres_url;

        let bound = Duration::from_millis(500);
        let url = "postgres://u@h/db";
        assert_eq!(
            postgres_url(url, Duration::from_millis(1500), bound),
            "postgres://u@h/db?connect_timeout=2&tcp_user_timeout=550"
        );
        let url = "postgres://u@h/db?sslmode=disable";
        assert_eq!(
            postgres_url(url, Duration::from_secs(5), bound),
            "postgres://u@h/db?sslmode=disable&connect_timeout=5&tcp_user_timeout=550"
        );
        let url = "postgres://u@h/db?connect_timeout=9&tcp_user_timeout=0";
        assert_eq!(postgres_url(url, Duration::from_secs(5), bound), url);
    }

    #[test]
    fn durations_in_words() {
        use super::words;

        assert_eq!(words(Duration::from_millis(500)), "500 ms");
        assert_eq!(words(Duration::from_secs(5)), "5 s");
        assert_eq!(words(Duration::from_millis(1500)), "1500 ms");
        assert_eq!(words(Duration::from_micros(1)), "1 ms");
    }

    #[test]
    fn bare_os_error_numbers_are_named() {
        use super::name_os_errors;

        assert_eq!(
            name_os_errors("Can't connect to server on '127.0.0.1' (111)"),
            "Can't connect to server on '127.0.0.1' (111: Connection refused)"
        );
        for kept in [
            "no number (here)",
            "(2002 is not bare)",
            "()",
            "(",
            "(0)",
            "(99999)",
        ] {
            assert_eq!(name_os_errors(kept), kept);
        }
    }

    #[cfg(any(feature = "postgres", feature = "mysql"))]
    #[test]
    fn ends_need_ports() {
        use super::ends;

        let (client, server) = ends(
            (Some("127.0.0.1"), Some(40824)),
            (Some("localhost"), Some(3306)),
        )
        .unwrap();
        assert_eq!(client.ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((client.port, server.ip, server.port), (40824, None, 3306));
        assert!(ends((None, None), (None, None)).is_none(), "a Unix socket");
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
