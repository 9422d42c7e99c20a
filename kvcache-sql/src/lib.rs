//! The SQL backend of kvcache: `backend.NAME = sql`, on PostgreSQL, MySQL/MariaDB or SQLite.
//!
//! Entries live in one table of a database the application servers already share, so every
//! server sees what any of them stored. The table is created when absent; a table of that name
//! with other columns is an error and is left as it is. Expired entries are misses, deleted when
//! read, by the writes' upkeep (see [below](#size-max_entries-and-upkeep)) and by
//! [`purge_expired`](kvcache_core::Backend::purge_expired). Keys of any length work:
//! the primary key holds a SHA-256 of the key, and the full key is compared on every read.
//!
//! ```
//! # #[cfg(feature = "sqlite")] {
//! use kvcache_core::{Backend, BackendConfig};
//! use kvcache_sql::SqlBackend;
//!
//! let dir = tempfile::tempdir()?;
//! let url = format!("sqlite://{}", dir.path().join("kv.sqlite3").display());
//! let backend = SqlBackend::open(&BackendConfig::new("db", "sql").option("url", url))?;
//! let greetings = backend.open("greeting")?.sync_store();
//! greetings.store("Peter", b"Hello Peter!", None)?;
//! assert_eq!(greetings.retrieve("Peter")?.as_deref(), Some(&b"Hello Peter!"[..]));
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Each container gets a store of its own from [`Backend::open`],
//! with the SHA-256 of its name computed there, once: a blocking store
//! ([`Space::Blocking`](kvcache_core::Space::Blocking)), whose calls the core runs on tokio's
//! blocking pool for async callers.
//!
//! | option | meaning | default |
//! |---|---|---|
//! | `url` | `postgres://` or `postgresql://`, `mysql://` or `mariadb://`, or `sqlite://PATH` with the path as written: `sqlite://kv.sqlite3` is relative to the working directory, `sqlite:///var/cache/kv.sqlite3` absolute | required, or `sqlalchemy.url` |
//! | `sqlalchemy.url` | instead of `url`, as an original configuration writes it, by SQLAlchemy's rules: `sqlite:///kv.sqlite3` is relative, `sqlite:////var/cache/kv.sqlite3` absolute, and a driver may follow the scheme (`postgresql+psycopg2://`, `mysql+pymysql://`) | |
//! | `pool_size` | the most connections held open | `10` |
//! | `connect_timeout` | how long opening a connection may take (PostgreSQL rounds it up to whole seconds, and to at least 2), and opening the backend waits for its first | `5s` |
//! | `statement_timeout` | how long one call may take in all: waiting for a free connection, its statements, and the database's waits for locks held by other sessions; see [below](#every-call-is-bounded) | `5s` |
//! | `table` | the table's name: ASCII letters, digits and `_`; the leases go in `TABLE_leases` beside it (see [below](#leases)) | `kvcache` |
//! | `max_entries` | the most rows of the table, every container's; see [below](#size-max_entries-and-upkeep) | unbounded |
//!
//! Each database needs its cargo feature: `postgres`, `mysql` or `sqlite` here, `sql-postgres`,
//! `sql-mysql` or `sql-sqlite` in the `kvcache` facade. The original's class path
//! `score.kvcache.backend.SQLAlchemyCache` is an alias of the kind.
//!
//! Reading, writing or deleting a key, reading up to 512 keys, or writing up to 64 entries of up
//! to 1 MiB in all, is one statement and one round trip (a larger batch is several statements
//! in one transaction): each connection prepares each statement once, and is not checked before
//! use. A statement that finds its connection dead (the server restarted) runs again on another,
//! up to a new one, so a database that went away and came back is used again without
//! rebuilding the cache; calls made while it is away fail within `statement_timeout`.
//!
//! An expired entry that cannot be deleted when read (a read-only database or role) is a miss
//! all the same: the failure is logged at debug level through `tracing`, and
//! [`purge_expired`](kvcache_core::Backend::purge_expired) deletes the entry later.
//!
//! | database | keys and values | expiry (Unix ms) | one upsert |
//! |---|---|---|---|
//! | PostgreSQL | `BYTEA` | `BIGINT` | `ON CONFLICT ... DO UPDATE` |
//! | MySQL, MariaDB | `LONGBLOB` | `BIGINT` | `ON DUPLICATE KEY UPDATE` |
//! | SQLite | `BLOB` | `INTEGER` | `ON CONFLICT ... DO UPDATE` |
//!
//! # Leases
//!
//! [`Store::lease`](kvcache_core::Store::lease) is how one caller, of every process sharing the
//! table, generates a missing key while the others wait for its value. The leases are rows of
//! a table of their own beside the entries, named after it: `TABLE_leases` (`kvcache_leases`
//! by default). It is created when absent and checked when present as the entries table is,
//! right after it: a table of that name with other columns is an error, and is left as it is.
//! There is nothing to migrate: a backend of a build before leases ignores the table.
//!
//! | column | holds | PostgreSQL | MySQL, MariaDB | SQLite |
//! |---|---|---|---|---|
//! | `container` | the SHA-256 of the container's name | `BYTEA` | `BINARY(32)` | `BLOB` |
//! | `key` | the SHA-256 of the key | `BYTEA` | `BINARY(32)` | `BLOB` |
//! | `token` | the holder's token, as bytes (compared exactly) | `BYTEA` | `LONGBLOB` | `BLOB` |
//! | `expires_at` | when the lease expires: Unix milliseconds by the backend's clock | `BIGINT` | `BIGINT` | `INTEGER` |
//!
//! The primary key is (`container`, `key`), and there is no other index: the table holds only
//! the leases being held and those of holders that died (until they are taken over or
//! purged), so deleting the expired ones reads it through. A lease is live while
//! now < `expires_at`: a lease, not a lock, so a holder that dies keeps others from the key
//! for at most the lease's time to live.
//!
//! Taking a lease is one call of at most three statements, each one round trip: a look-up of
//! the key's lease, a live one being [`Lease::Held`](kvcache_core::Lease::Held) (this token's
//! too, and callers waiting on a held lease write nothing); then one atomic statement that inserts the lease or takes over the row of an expired
//! one, and leaves a live one as it is; then the look-up again, the lease being
//! [`Acquired`](kvcache_core::Lease::Acquired) when it holds the caller's token (tokens are
//! unique), else `Held`. No affected-row count decides: MySQL's connections count the rows
//! found, not those changed.
//!
//! | database | inserting or taking over a lease |
//! |---|---|
//! | PostgreSQL, SQLite | `ON CONFLICT (container, "key") DO UPDATE SET token = excluded.token, expires_at = excluded.expires_at WHERE TABLE_leases.expires_at <= now` |
//! | MySQL, MariaDB | `ON DUPLICATE KEY UPDATE token = IF(expires_at <= now, VALUES(token), token), expires_at = IF(token = VALUES(token) OR expires_at <= now, VALUES(expires_at), expires_at)`: the assignments apply left to right, so the second sees the token the first left; the `OR` keeps it right where they apply at once |
//!
//! InnoDB may pick one of many upserts of one key as the victim of a deadlock: it runs again,
//! with the look-up after it, up to 5 times, as every statement does. Releasing is one
//! `DELETE ... WHERE container = ? AND key = ? AND token = ?`: another holder's lease stays.
//!
//! Expired leases are deleted by [`purge_expired`](kvcache_core::Backend::purge_expired) and by
//! every upkeep of the writes, one `DELETE ... WHERE expires_at <= now` each; the next lease of
//! the key takes one over anyway. [`clear`](kvcache_core::Store::clear) leaves the container's
//! leases alone: they stand for values being generated, which clearing does not stop. The
//! `kvcache` command never sees them: it reads the entries table only.
//!
//! A backend whose role cannot create the leases table (one that may only read and write the
//! entries table) opens all the same: the failure is logged at warn level through `tracing`,
//! every lease then fails with [`Error::Backend`](kvcache_core::Error::Backend) naming the
//! leases table, and purges and upkeeps leave it out until a backend opens with it there.
//!
//! # Size: `max_entries` and upkeep
//!
//! Every 64th write of a backend does the table's *upkeep*, right after the write, in the
//! writer's thread, within a call of its own (`statement_timeout`): it deletes up to 256 expired
//! rows, soonest expired first, through the index on `expires_at` that every kvcache table has
//! had since it was created (no migration), so expired entries go without any read or
//! [`purge_expired`](kvcache_core::Backend::purge_expired); then, in a call of its own, it
//! deletes the expired leases (see [above](#leases)). One thread of a backend does it at
//! a time, the others' writes go on. A failed upkeep fails nothing: it is logged at warn level
//! through `tracing`, the write has succeeded, and the writes 64 later try again.
//!
//! - **What `max_entries` bounds**: the rows of the whole table, every container's, as the
//!   `file` backend's bound (the expired rows not yet deleted included). Counting rows is not
//!   free (`COUNT(*)` reads the table or an index on every database), so a write counts them
//!   only once the writes since the last count could have used a quarter of the room that count
//!   found (with a bound of 1 M entries kept full: every 7,800 or so writes); when over, it culls
//!   to 1/32 under the bound, at most 4 passes of 1024 rows each time.
//! - **Policy: soonest expiry first.** The table has no column for when a row was stored, so
//!   culling goes by the expiry index: rows that expire soonest go first, which for entries
//!   stored with one time to live is the least recently stored; entries that never expire go
//!   last, in the order of their index entries (by key hash on PostgreSQL and MySQL, in effect at
//!   random; by insertion on SQLite). Entries stored in one millisecond tie. A stored-at column
//!   was not added: builds before it refuse a table with columns other than theirs, so a rolling
//!   upgrade would stop old processes from starting, and its index would cost every write
//!   another index update.
//! - **Slack**: one process writing alone keeps the bound after every write it returns from (but
//!   past the 4096 rows one upkeep culls, which the next writes finish). Its threads' writes
//!   made while an upkeep runs, and other processes' writes, are seen at its next count: between
//!   two counts each process may add up to a quarter of the room it last saw, so four writing
//!   evenly stay within the bound, and more exceed it by what they add. With the upkeep failing,
//!   the table grows until the next count 64 writes later.
//! - **Cost**: with no `max_entries`, a 64th of a write pays one indexed `DELETE`; with it, a
//!   count of the table every room/4 writes, and in steady state one deleted row per new row. On
//!   PostgreSQL a count of tens of millions of rows may need more than the default
//!   `statement_timeout`: raise it, or the upkeep fails and is retried.
//!
//! # Every call is bounded
//!
//! A call (`store`, `retrieve`, a batch, `purge_expired`...) has `statement_timeout` from its
//! start for everything it does: waiting for a connection, each statement, and each retry on
//! another connection. Each new connection is told the bound, so that the database itself gives
//! up on a statement that waits for a lock (a `LOCK TABLE` of another session, a row another
//! transaction holds) or runs for that long, and says so:
//!
//! | database | set on each connection |
//! |---|---|
//! | PostgreSQL | `statement_timeout` and `lock_timeout`; and libpq's `tcp_user_timeout`, unless the URL sets it |
//! | MariaDB | `max_statement_time` (every statement), and `lock_wait_timeout` and `innodb_lock_wait_timeout` in whole seconds, rounded up |
//! | MySQL | `max_execution_time` (reads only), and `lock_wait_timeout` and `innodb_lock_wait_timeout` in whole seconds, rounded up |
//! | SQLite | `busy_timeout`: how long a writer waits for another writer's lock |
//!
//! A server that stops answering altogether (frozen, or its host unreachable) cannot say so,
//! and neither libpq nor the MariaDB client library, as diesel drives them, bounds the wait for
//! an answer (TCP keepalives and `tcp_user_timeout` do not help while the server's kernel still
//! acknowledges). So a watchdog thread per backend cuts the connection of a statement still
//! waiting 50 ms after its call's deadline: it shuts down the connection's socket, which the
//! backend finds when it opens the connection (the one socket of the process with the endpoints
//! the server reports), and the driver returns at once. A statement cut that way may still be
//! carried out if the server resumes: its text had reached the server. The watchdog needs Linux
//! and a TCP connection that the server sees directly, and, on MySQL and MariaDB, a process list
//! that shows the client's port (a server run with `--skip-grant-tables` shows none): over a
//! Unix socket, or through a proxy or NAT, calls are bounded by the database's own timeouts
//! only. Opening a connection is bounded by `connect_timeout` on PostgreSQL; on MySQL and
//! MariaDB the client library gives no bound; either way a call waits for a connection no
//! longer than its own bound, and after an outage the pool tries again at least every half
//! bound.
//!
//! A call that cannot reach the database within its bound (refused, lost, no connection, no
//! answer, or a lock waited for all that time) fails with
//! [`Error::Unavailable`](kvcache_core::Error::Unavailable), naming the backend, the database's
//! host, port and name, what the call was doing and the bound: "no answer from PostgreSQL at
//! 127.0.0.1:5433, database "test" within 500 ms while reading from table "kvcache"". It opens
//! the backend's circuit breaker (`backend.NAME.outage_backoff`), and a container with
//! `on_backend_error = generate` serves its generator's value. A statement the database refuses
//! (a syntax error, a constraint, a read-only transaction) fails with
//! [`Error::Backend`](kvcache_core::Error::Backend).
//!
//! # Inspection
//!
//! The backend answers the `kvcache` command ([`Backend::inspect`]):
//! a container's summary is one aggregate statement (`COUNT`, `SUM(LENGTH(entry_value))`,
//! `MIN`/`MAX(expires_at)`), its keys one sorted `SELECT` of a key range, and the containers a
//! walk of the primary key's `container_hash`, one seek each. Each is bounded by
//! `statement_timeout`, and none writes.
//!
//! # Watching: PostgreSQL's `LISTEN/NOTIFY`
//!
//! A near tier (`backend.NAME.near_*`) asks the backend to [`watch`](Backend::watch) each of
//! its containers, so that one instance's writes invalidate the other instances' near copies.
//! On PostgreSQL the backend has a channel for that: `watch` returns `true`. MySQL, MariaDB and
//! SQLite have none: `watch` returns `false`, nothing is published, and near copies live their
//! near expiry alone.
//!
//! - **Channel**: one per table, `kvcache_TABLE` (`kvcache_kvcache` by default), case kept.
//!   A name over PostgreSQL's 63 bytes (a table longer than 55, which `table`'s limit of 48
//!   rules out today) becomes `kvcache_`, the table's first 38 bytes, `_` and 16 hex digits of
//!   the SHA-256 of its name. Notifications are per database; tables of one name in two schemas
//!   of one database share a channel, which costs invalidations, never correctness.
//! - **Payload**: ASCII, space-separated, each field percent-encoded (every byte outside
//!   `!`..`~`, and `%`, as `%XX`): `kv1 INSTANCE k CONTAINER KEY...` for keys stored or
//!   removed, `kv1 INSTANCE c CONTAINER` for a clear. `INSTANCE` is 16 random hex digits per
//!   backend object (two caches in one process are two instances); the container is its name
//!   as given, not its hash. A payload holds at most 7999 bytes (PostgreSQL's limit at its
//!   default block size): a batch's keys are split over several notifications, up to 16 (about
//!   128 KB of keys); a batch that needs more, or a key too long for a payload of its own,
//!   sends `kv1 INSTANCE f CONTAINER` instead, a flush that watchers get as
//!   [`Change::Cleared`](kvcache_core::Change::Cleared).
//! - **Publishing**: once `watch` was called for a container in a backend object, that
//!   container's `store`, `store_many`, `invalidate` and `clear` notify in the write's own
//!   statement, `WITH w AS (the write) SELECT pg_notify(...)`: still one round trip, and the
//!   notification is delivered when the write commits, never without it (a batch of several
//!   statements notifies in its last one, inside its transaction). A container not watched in
//!   that object publishes nothing. The upkeep's culling and the deletes of expired entries
//!   publish nothing: an evicted near copy is still the value, and expired ones expire near too.
//!   A notifying write took about 0.1 ms more than a plain one in our measurements; PostgreSQL
//!   appends notifications to its queue under one lock per cluster at commit, so notifying
//!   commits do that step one at a time, and a write fails if the queue (8 GB) is full, which
//!   only a listening session stuck in a long transaction can cause.
//! - **Listening**: the first `watch` opens one more connection, of its own (not the pool's),
//!   with `application_name=kvcache-listener` (unless the URL names one), TCP keepalives (10 s,
//!   5 s apart, 3 probes, unless the URL sets them) and no `idle_session_timeout`, runs
//!   `LISTEN`, and returns once it succeeded; an error when it cannot (the container publishes
//!   all the same, and the next `watch` tries again). A thread, `kvcache-listen`, then calls
//!   the containers' watchers with each other instance's changes, its own skipped. It waits
//!   for the connection's socket to be readable, waking every 250 ms when idle: about 0.03% of
//!   a core. The socket is found as the watchdog finds pooled ones (see
//!   [above](#every-call-is-bounded)), and over a Unix socket too, as the one that appeared in
//!   the process while the listener connected. Where none is found (not Linux, a proxy,
//!   another socket opened at that moment), it polls libpq every 2 ms instead, which adds up
//!   to 2 ms to each delivery and costs about 1% of a core (measured on a 2-core VM).
//! - **Lost**: when the listener's connection breaks (a restart, `pg_terminate_backend`, failed
//!   keepalives), every watcher gets [`Change::Lost`](kvcache_core::Change::Lost) (its near
//!   tier flushes); the thread reconnects after 50 ms, doubling up to 1 s, for as long as it
//!   takes, with one warning logged per outage, and once `LISTEN` succeeds again it delivers
//!   `Lost` once more, as changes made in between were missed.

#![cfg_attr(docsrs, feature(doc_cfg))]
// With no database compiled in, `SqlBackend::open` can only return the error naming the feature
// to enable: everything that needs a connection is unreachable.
#![cfg_attr(
    not(any(feature = "postgres", feature = "mysql", feature = "sqlite")),
    allow(dead_code, unreachable_code, unused_imports, unused_variables)
)]

mod backend;
mod config;
mod pool;
mod query;
mod socket;
mod sql;
mod url;
mod watch;
mod watchdog;

pub use backend::SqlBackend;

use std::sync::Arc;

use kvcache_core::{Backend, BackendConfig, BackendRegistration, Result};

/// The kind's name in configurations.
pub const KIND: &str = "sql";

fn open(config: &BackendConfig) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(SqlBackend::open(config)?))
}

kvcache_core::register_backend!(
    BackendRegistration::new(KIND, open)
        .aliases(&["score.kvcache.backend.SQLAlchemyCache"])
        .options(&[
            "url",
            "sqlalchemy.url",
            "pool_size",
            "connect_timeout",
            "statement_timeout",
            "table",
            "max_entries"
        ])
);
