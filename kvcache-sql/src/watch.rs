//! [`Backend::watch`](kvcache_core::Backend::watch) on PostgreSQL: a `LISTEN/NOTIFY` channel per
//! table, which every backend object publishing to it or listening on it shares.
//!
//! - **Channel**: `kvcache_TABLE`, quoted (case kept). A name longer than PostgreSQL's 63
//!   bytes (tables longer than 55) is `kvcache_`, the table's first 38 bytes, `_` and 16 hex
//!   digits of the SHA-256 of the table's name. NOTIFY is per database: tables of one name in
//!   two schemas of one database share the channel, and each sees the other's changes (more
//!   invalidations, never fewer).
//! - **Payload**: ASCII text, fields separated by one space, each field percent-encoded (every
//!   byte outside `!`..`~`, and `%`, as `%XX`), so that keys and container names of any bytes
//!   pass in any server encoding: `kv1 INSTANCE k CONTAINER KEY...` (these keys were stored
//!   or removed), `kv1 INSTANCE c CONTAINER` (cleared), `kv1 INSTANCE f CONTAINER` (a flush:
//!   too many or too long keys to list, read as cleared) and `kv1 INSTANCE *` (every container
//!   flushed: a container name too long for a payload). `INSTANCE` is 16 hex digits, random
//!   per backend object; the container is its name as given.
//! - **Size**: a payload is at most 7999 bytes (PostgreSQL refuses 8000 at its default block
//!   size). Keys that do not fit one are split over several notifications, up to 16 (about
//!   128 KB of encoded keys); more, or one key too long for a payload of its own, flushes the
//!   container instead.
//! - **Publishing**: once `watch` was called for a container of a backend object, its writes
//!   notify, in the write's own statement: `WITH w AS (write) SELECT pg_notify(channel, p)
//!   FROM unnest(string_to_array(payloads, chr(10))) AS p`. One round trip, and the
//!   notifications go out when the write commits, never without it. A batch written by several
//!   statements in one transaction notifies in its last one. Containers nobody watched in this
//!   object publish nothing. The upkeep's culling (`max_entries`) and deletes of expired rows
//!   publish nothing: a near copy of an evicted value is still that value, and expired entries
//!   expire in the near tier too.
//! - **Listening**: the first `watch` opens a connection of its own (not pooled), with
//!   `application_name=kvcache-listener` unless the URL names one, TCP keepalives (10 s idle,
//!   5 s apart, 3 probes) unless the URL sets them, and no `idle_session_timeout`; it runs
//!   `LISTEN`, and returns `true` once that succeeded. A thread (`kvcache-listen`) then waits
//!   for the connection's socket to become readable, drains the notifications through libpq
//!   and calls the container's watchers, skipping its own instance's. The socket is found as
//!   the watchdog finds pooled ones (`socket.rs`): over TCP, by the ends the server reports;
//!   over a Unix socket, as the one Unix stream socket that appeared in the process while
//!   connecting. The thread blocks in `recv(MSG_PEEK)` on it, the socket made blocking for the
//!   wait only, and wakes every 250 ms when idle. Where no socket is found (not Linux, a
//!   proxy, another socket opened at the same moment), it polls libpq every 2 ms instead: one
//!   non-blocking `recv` each.
//! - **Lost**: when the connection breaks (a restart, `pg_terminate_backend`, keepalives that
//!   fail), every watcher gets [`Change::Lost`]; the thread reconnects after 50 ms, doubling to
//!   1 s, forever, logs one warning per outage, and once `LISTEN` succeeds again delivers
//!   `Lost` once more: changes made between the drop and the new `LISTEN` were missed, and a
//!   near tier may have read them in between.
//!
//! MySQL, MariaDB and SQLite have no channel: `watch` returns `false` there, and publishes
//! nothing.

// Without PostgreSQL, nothing listens: the receiving side is never called.
#![cfg_attr(
    not(feature = "postgres"),
    allow(dead_code, reason = "only PostgreSQL listens")
)]

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use kvcache_core::{Change, Result, Watcher};

use crate::config::SqlConfig;
use crate::query::{BY_TEXT, Bind, Statement};
use crate::sql::{STORE_BATCH, hash};
use crate::url::Database;

/// The longest payload: PostgreSQL refuses one of 8000 bytes or more (at its default 8 KiB
/// block size).
const MAX_PAYLOAD: usize = 7999;
/// The most notifications one write sends; more keys than fit flush the container instead.
const MAX_NOTIFICATIONS: usize = 16;
/// What every payload starts with: the format's version.
const VERSION: &str = "kv1";
/// What every channel's name starts with.
const CHANNEL_PREFIX: &str = "kvcache_";
/// PostgreSQL's longest identifier, in bytes.
const MAX_CHANNEL: usize = 63;

/// A write that may carry a notice: which text it is, to find its notifying text again.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write {
    /// An upsert of this many rows (1 to [`STORE_BATCH`]).
    Upsert(usize),
    /// The delete of one key.
    Delete,
    /// The delete of a container's rows.
    Clear,
}

impl Write {
    fn index(self) -> usize {
        match self {
            Write::Delete => 0,
            Write::Clear => 1,
            Write::Upsert(rows) => {
                assert!(
                    (1..=STORE_BATCH).contains(&rows),
                    "{rows} rows in one upsert"
                );
                1 + rows
            }
        }
    }
}

/// One backend object's side of the channel: what it publishes, and its listener.
pub(crate) struct Watch {
    shared: Arc<Shared>,
    database: Database,
    /// Whether any container was watched: writes check the set only then.
    any: AtomicBool,
    /// The notifying texts of the writes, by [`Write::index`], made when first needed.
    texts: Vec<OnceLock<String>>,
    /// Whether the listener runs, and its thread, to wake it when the backend goes.
    listener: Mutex<Option<std::thread::Thread>>,
}

/// What the listener thread shares with the backend.
struct Shared {
    /// The backend's name, for logs.
    backend: String,
    /// This backend object's id in payloads: 16 hex digits.
    instance: String,
    channel: String,
    /// The watchers of each container watched; a container with none (its listener could not
    /// start) still publishes.
    watchers: RwLock<HashMap<Box<str>, Vec<Watcher>>>,
    /// Set when the backend is dropped: the thread ends.
    stop: AtomicBool,
    /// The listener connection's socket, when found: shut down when the backend is dropped,
    /// which wakes the thread.
    socket: Mutex<Option<Arc<TcpStream>>>,
}

/// The payloads a write publishes, one per line, in the statement of the write.
#[derive(Debug)]
pub(crate) struct Notice<'w> {
    watch: &'w Watch,
    payloads: String,
}

impl Watch {
    /// The channel side of the backend `backend` on `config`'s database and table.
    pub(crate) fn new(backend: &str, config: &SqlConfig) -> Self {
        Watch {
            shared: Arc::new(Shared {
                backend: backend.to_owned(),
                instance: instance_id(),
                channel: channel(&config.table),
                watchers: RwLock::new(HashMap::new()),
                stop: AtomicBool::new(false),
                socket: Mutex::new(None),
            }),
            database: config.url.database(),
            any: AtomicBool::new(false),
            texts: (0..STORE_BATCH + 2).map(|_| OnceLock::new()).collect(),
            listener: Mutex::new(None),
        }
    }

    /// Subscribes `watcher` to container `container`'s changes made by other backend objects,
    /// and from now on publishes this object's changes to it: `false` on a database with no
    /// channel (MySQL, MariaDB, SQLite). The first call opens the listener's connection and
    /// runs `LISTEN` before it returns; later ones return at once, `true` even while the
    /// listener reconnects (its watchers get [`Change::Lost`] once it listens again).
    ///
    /// # Errors
    ///
    /// The listener's connection or `LISTEN` failed: the container publishes all the same,
    /// and the next call tries again.
    pub(crate) fn watch(
        &self,
        config: &SqlConfig,
        container: &str,
        watcher: Watcher,
    ) -> Result<bool> {
        if self.database != Database::Postgres {
            return Ok(false);
        }
        self.shared
            .watchers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(container.into())
            .or_default()
            .push(Arc::clone(&watcher));
        self.any.store(true, Ordering::Release);
        let started = self.start(config);
        if started.is_err() {
            let mut watchers = self
                .shared
                .watchers
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(watchers) = watchers.get_mut(container) {
                watchers.retain(|kept| !Arc::ptr_eq(kept, &watcher));
            }
        }
        started.map(|()| true)
    }

    /// Starts the listener unless it runs.
    #[cfg(feature = "postgres")]
    fn start(&self, config: &SqlConfig) -> Result<()> {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if listener.is_some() {
            return Ok(());
        }
        let link = listen::Link::new(&self.shared, config);
        let subscription = listen::subscribe(&link, &self.shared)?;
        let shared = Arc::clone(&self.shared);
        let spawned = std::thread::Builder::new()
            .name("kvcache-listen".to_owned())
            .spawn(move || listen::run(&shared, &link, subscription));
        match spawned {
            Ok(handle) => {
                *listener = Some(handle.thread().clone());
                Ok(())
            }
            Err(error) => Err(kvcache_core::Error::backend(
                &self.shared.backend,
                format!(
                    "listening on channel {:?} of {}",
                    self.shared.channel,
                    config.url.target()
                ),
                format!("no thread for the listener: {error}"),
            )),
        }
    }

    /// A PostgreSQL database needs the feature to be opened at all.
    #[cfg(not(feature = "postgres"))]
    fn start(&self, _config: &SqlConfig) -> Result<()> {
        Ok(())
    }

    /// Whether writes of `container` publish.
    fn publishes(&self, container: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .shared
                .watchers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(container)
    }

    /// What storing or removing `keys` of `container` publishes: `None` when no one watched
    /// it in this backend object, or when there are no keys.
    pub(crate) fn keys<'k>(
        &self,
        container: &str,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Option<Notice<'_>> {
        if !self.publishes(container) {
            return None;
        }
        let payloads = payloads(&self.shared.instance, container, keys)?;
        Some(Notice {
            watch: self,
            payloads,
        })
    }

    /// What clearing `container` publishes: `None` when no one watched it in this object.
    pub(crate) fn cleared(&self, container: &str) -> Option<Notice<'_>> {
        self.publishes(container).then(|| Notice {
            watch: self,
            payloads: whole(&self.shared.instance, 'c', container),
        })
    }
}

impl Notice<'_> {
    /// `statement`, the write `write`, publishing this notice in the same statement: `WITH w
    /// AS (statement) SELECT pg_notify(channel, p) FROM unnest(...) AS p`, which PostgreSQL
    /// runs whole whether or not the `SELECT` reads `w`.
    pub(crate) fn wrap<'a, const KEY: u8>(
        &'a self,
        write: Write,
        statement: &Statement<'a, KEY>,
    ) -> Statement<'a, BY_TEXT> {
        let sql = self.watch.texts[write.index()].get_or_init(|| {
            format!(
                "WITH w AS ({}) SELECT pg_notify(?, p) \
                 FROM unnest(string_to_array(?, chr(10))) AS p",
                statement.sql()
            )
        });
        let extra = [
            Bind::Text(&self.watch.shared.channel),
            Bind::Text(&self.payloads),
        ];
        statement.within(sql, extra)
    }
}

impl Drop for Watch {
    /// Ends the listener: it finds `stop` at its next wake-up, which shutting its socket down
    /// (or unparking it) makes now.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(socket) = self
            .shared
            .socket
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
        if let Some(thread) = self
            .listener
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            thread.unpark();
        }
    }
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("channel", &self.shared.channel)
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Calls the watchers of what `payload` changed, unless this object made the change.
    fn dispatch(&self, payload: &str) {
        let mut fields = payload.split(' ');
        let (Some(VERSION), Some(instance)) = (fields.next(), fields.next()) else {
            tracing::debug!(backend = %self.backend, channel = %self.channel, "a notification of another format was ignored");
            return;
        };
        if instance == self.instance {
            return;
        }
        let kind = fields.next();
        if kind == Some("*") {
            let containers: Vec<Box<str>> = self
                .watchers
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .keys()
                .cloned()
                .collect();
            for container in containers {
                self.deliver(&container, &Change::Cleared);
            }
            return;
        }
        let Some(container) = fields.next().and_then(decode) else {
            tracing::debug!(backend = %self.backend, channel = %self.channel, "a notification naming no container was ignored");
            return;
        };
        let change = match kind {
            Some("k") => match fields.map(decode).collect::<Option<Vec<String>>>() {
                Some(keys) if !keys.is_empty() => Change::Keys(keys),
                _ => Change::Cleared,
            },
            Some("c" | "f") => Change::Cleared,
            _ => {
                tracing::debug!(backend = %self.backend, channel = %self.channel, "a notification of an unknown kind was ignored");
                return;
            }
        };
        self.deliver(&container, &change);
    }

    /// Calls every watcher of `container` with `change`. A watcher that panics is logged, and
    /// the others are called all the same.
    fn deliver(&self, container: &str, change: &Change) {
        let watchers: Vec<Watcher> = match self
            .watchers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(container)
        {
            Some(watchers) => watchers.clone(),
            None => return,
        };
        for watcher in watchers {
            let call = std::panic::AssertUnwindSafe(|| watcher(change.clone()));
            if std::panic::catch_unwind(call).is_err() {
                tracing::error!(backend = %self.backend, container, "a watcher panicked");
            }
        }
    }

    /// Calls every watcher of every container with `change`.
    fn deliver_all(&self, change: &Change) {
        let containers: Vec<Box<str>> = self
            .watchers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for container in containers {
            self.deliver(&container, change);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }
}

/// The payloads of changing `keys` of `container`, one per line: as many as the keys need,
/// up to [`MAX_NOTIFICATIONS`], or one flush of the container. `None` without keys.
fn payloads<'k>(
    instance: &str,
    container: &str,
    keys: impl IntoIterator<Item = &'k str>,
) -> Option<String> {
    let header = format!("{VERSION} {instance} k {}", encode(container));
    let mut all = String::new();
    let mut line = header.clone();
    let (mut lines, mut any) = (1, false);
    let mut key_text = String::new();
    for key in keys {
        key_text.clear();
        encode_into(&mut key_text, key);
        if header.len() + 1 + key_text.len() > MAX_PAYLOAD {
            return Some(whole(instance, 'f', container));
        }
        if line.len() + 1 + key_text.len() > MAX_PAYLOAD {
            lines += 1;
            if lines > MAX_NOTIFICATIONS {
                return Some(whole(instance, 'f', container));
            }
            all.push_str(&line);
            all.push('\n');
            line.clone_from(&header);
        }
        line.push(' ');
        line.push_str(&key_text);
        any = true;
    }
    any.then(|| {
        all.push_str(&line);
        all
    })
}

/// The payload of a change to the whole of `container`: `kind` `c` (cleared) or `f`
/// (flushed); every container flushed when its name does not fit a payload.
fn whole(instance: &str, kind: char, container: &str) -> String {
    let payload = format!("{VERSION} {instance} {kind} {}", encode(container));
    if payload.len() <= MAX_PAYLOAD {
        payload
    } else {
        format!("{VERSION} {instance} *")
    }
}

/// `text` percent-encoded: every byte outside `!`..`~`, and `%`, as `%XX`.
fn encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    encode_into(&mut encoded, text);
    encoded
}

fn encode_into(out: &mut String, text: &str) {
    for byte in text.bytes() {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// The text `field` encodes; `None` when it is not one [`encode`] makes.
fn decode(field: &str) -> Option<String> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The channel of `table`: `kvcache_TABLE`, or, longer than PostgreSQL's 63 bytes, the
/// table's first 38 bytes and 16 hex digits of its SHA-256.
fn channel(table: &str) -> String {
    let name = format!("{CHANNEL_PREFIX}{table}");
    if name.len() <= MAX_CHANNEL {
        return name;
    }
    let digest: String = hash(table.as_bytes())[..8]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let kept = MAX_CHANNEL - CHANNEL_PREFIX.len() - 1 - digest.len();
    // Table names are ASCII (see `config.rs`), so any byte is a boundary; `floor` all the same.
    let mut end = kept.min(table.len());
    while !table.is_char_boundary(end) {
        end -= 1;
    }
    format!("{CHANNEL_PREFIX}{}_{digest}", &table[..end])
}

/// A random id for one backend object: two in one process differ, as do two processes.
fn instance_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

/// The listener: its connection, its thread, and reconnecting.
#[cfg(feature = "postgres")]
mod listen {
    use std::io;
    use std::net::TcpStream;
    use std::sync::{Arc, PoisonError};
    use std::time::{Duration, Instant};

    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection};
    use kvcache_core::{Change, Error, Result};

    use super::Shared;
    use crate::config::SqlConfig;
    use crate::pool::Dialect;
    use crate::socket::{self, Before};
    use crate::url::DatabaseUrl;

    /// How long the thread waits on its socket before it drains libpq and looks at `stop`
    /// again, when nothing wakes it. Dropping the backend shuts the socket down, so this is a
    /// safety net, and the bound on the one wait the socket cannot end: over TLS, bytes that
    /// OpenSSL read and decrypted but libpq did not take yet (a record larger than libpq's
    /// free buffer), which leave nothing for the socket to show.
    const IDLE: Duration = Duration::from_millis(250);
    /// How often the thread polls libpq where it found no socket to wait on.
    const POLL: Duration = Duration::from_millis(2);
    /// The first pause before reconnecting, doubled after each failure up to [`MAX_BACKOFF`].
    const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);
    /// libpq options the listener's connection gets unless the URL sets them: who it is, and
    /// keepalives that find a vanished host within about 25 s.
    const OPTIONS: [(&str, &str); 4] = [
        ("application_name", "kvcache-listener"),
        ("keepalives_idle", "10"),
        ("keepalives_interval", "5"),
        ("keepalives_count", "3"),
    ];

    /// What the listener needs to connect again: owned, as its thread outlives the call.
    pub(super) struct Link {
        backend: String,
        channel: String,
        /// What libpq connects with. It may hold the password: never show it.
        url: String,
        database: DatabaseUrl,
        bound: Duration,
    }

    impl Link {
        pub(super) fn new(shared: &Shared, config: &SqlConfig) -> Self {
            let mut url = crate::pool::postgres_url(
                config.url.connect(),
                config.connect_timeout,
                config.statement_timeout,
            );
            for (option, value) in OPTIONS {
                if !url.contains(&format!("{option}=")) {
                    let separator = if url.contains('?') { '&' } else { '?' };
                    url = format!("{url}{separator}{option}={value}");
                }
            }
            Link {
                backend: shared.backend.clone(),
                channel: shared.channel.clone(),
                url,
                database: config.url.clone(),
                bound: config.statement_timeout,
            }
        }

        fn doing(&self) -> String {
            format!(
                "listening on channel {:?} of {}",
                self.channel,
                self.database.target()
            )
        }

        fn unavailable(&self, error: &dyn std::fmt::Display) -> Error {
            let why = self.database.scrub(error.to_string().trim_end());
            Error::unavailable(&self.backend, self.doing(), why)
        }

        fn refused(&self, error: &dyn std::fmt::Display) -> Error {
            let why = self.database.scrub(error.to_string().trim_end());
            Error::backend(&self.backend, self.doing(), why)
        }
    }

    /// A connection that listens on the channel, and its socket when found.
    pub(super) struct Subscription {
        conn: PgConnection,
        socket: Option<Arc<TcpStream>>,
    }

    /// Why listening stopped.
    enum Broken {
        /// The backend was dropped.
        Stopped,
        Query(diesel::result::Error),
        Socket(io::Error),
    }

    /// Connects, finds the socket, and runs `LISTEN`.
    pub(super) fn subscribe(link: &Link, shared: &Shared) -> Result<Subscription> {
        let before = Before::now();
        let mut conn = PgConnection::establish(&link.url).map_err(|e| link.unavailable(&e))?;
        let ends = conn.prepare(link.bound).map_err(|e| link.refused(&e))?;
        // Over TCP, the socket with the ends the server reports; with none reported, over a
        // Unix socket, the one new Unix stream socket of the process.
        let socket = match ends {
            Some((client, server)) => socket::find(&before, client, server),
            None => socket::find_unix(&before),
        }
        .map(Arc::new);
        if let Some(socket) = &socket {
            socket
                .set_read_timeout(Some(IDLE))
                .map_err(|e| link.unavailable(&e))?;
        }
        // Where the server drops idle sessions (PostgreSQL 14 and later), not this one; a
        // query that finds no such setting on older servers.
        conn.batch_execute(
            "SELECT set_config(name, '0', false) FROM pg_settings \
             WHERE name = 'idle_session_timeout'",
        )
        .map_err(|e| link.refused(&e))?;
        // Last, so that the server's `pg_stat_activity.query` shows it.
        conn.batch_execute(&format!("LISTEN \"{}\"", link.channel))
            .map_err(|e| link.refused(&e))?;
        *shared.socket.lock().unwrap_or_else(PoisonError::into_inner) = socket.clone();
        Ok(Subscription { conn, socket })
    }

    /// The thread: listens until the connection breaks, then reconnects, until the backend
    /// is dropped.
    pub(super) fn run(shared: &Shared, link: &Link, mut subscription: Subscription) {
        loop {
            let broken = subscription.listen(shared);
            drop(subscription);
            shared
                .socket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let why = match broken {
                Broken::Stopped => return,
                _ if shared.stopped() => return,
                Broken::Query(error) => link.unavailable(&error),
                Broken::Socket(error) => link.unavailable(&error),
            };
            shared.deliver_all(&Change::Lost);
            tracing::warn!(
                backend = %link.backend,
                channel = %link.channel,
                error = &why as &dyn std::error::Error,
                "the PostgreSQL channel was lost: near copies are flushed, and the listener \
                 reconnects"
            );
            let lost = Instant::now();
            let mut backoff = FIRST_BACKOFF;
            subscription = loop {
                if !sleep(shared, backoff) {
                    return;
                }
                match subscribe(link, shared) {
                    Ok(subscription) => break subscription,
                    Err(error) => tracing::debug!(
                        backend = %link.backend,
                        channel = %link.channel,
                        error = &error as &dyn std::error::Error,
                        "the listener could not reconnect yet"
                    ),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            };
            if shared.stopped() {
                return;
            }
            // Changes made since the drop were missed, and a near tier may have read their
            // old values since it was flushed.
            shared.deliver_all(&Change::Lost);
            tracing::info!(
                backend = %link.backend,
                channel = %link.channel,
                after = ?lost.elapsed(),
                "the listener listens again"
            );
        }
    }

    /// Sleeps `pause` unless the backend is dropped first: whether it is still there.
    fn sleep(shared: &Shared, pause: Duration) -> bool {
        let until = Instant::now() + pause;
        while !shared.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::park_timeout(left);
        }
        false
    }

    impl Subscription {
        /// Dispatches notifications as they come, until the connection breaks or the backend
        /// is dropped.
        fn listen(&mut self, shared: &Shared) -> Broken {
            let mut closed = false;
            loop {
                for notification in self.conn.notifications_iter() {
                    match notification {
                        Ok(notification) => shared.dispatch(&notification.payload),
                        Err(error) => return Broken::Query(error),
                    }
                }
                if shared.stopped() {
                    return Broken::Stopped;
                }
                if closed {
                    let eof = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    );
                    return Broken::Socket(eof);
                }
                match &self.socket {
                    Some(socket) => match readable(socket) {
                        Ok(open) => closed = !open,
                        Err(error) => return Broken::Socket(error),
                    },
                    None => std::thread::park_timeout(POLL),
                }
            }
        }
    }

    /// Waits up to [`IDLE`] for `socket` to have something to read, without reading it:
    /// whether it is still open (`false` at end-of-file).
    ///
    /// libpq keeps its socket non-blocking, and the flag belongs to the socket, which this
    /// duplicate shares: it is made blocking for the wait, and non-blocking again before libpq
    /// reads, on this thread, the only one that uses the connection.
    fn readable(socket: &TcpStream) -> io::Result<bool> {
        socket.set_nonblocking(false)?;
        let peeked = socket.peek(&mut [0; 1]);
        socket.set_nonblocking(true)?;
        match peeked {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(error) => Err(error),
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::mpsc;

        use diesel::RunQueryDsl;
        use kvcache_core::{BackendConfig, Watcher};

        use super::super::Watch;
        use super::*;

        /// The test server's URL, if it answers; `None` with a notice, but under `CI=true`.
        fn server() -> Option<String> {
            let url = std::env::var("KVCACHE_TEST_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
            match PgConnection::establish(&url) {
                Ok(_) => Some(url),
                Err(error) => {
                    assert!(
                        std::env::var("CI").as_deref() != Ok("true"),
                        "no PostgreSQL (and CI=true): {error}"
                    );
                    eprintln!("SKIPPED: no PostgreSQL at KVCACHE_TEST_POSTGRES_URL: {error}");
                    None
                }
            }
        }

        /// Where no socket was found, the thread polls libpq: changes come all the same, and
        /// dropping the backend's side ends the thread.
        #[test]
        fn without_a_socket_the_listener_polls() {
            let Some(url) = server() else {
                return;
            };
            let table = format!("kvt_poll_{}", std::process::id());
            let config = SqlConfig::read(
                &BackendConfig::new("db", "sql")
                    .option("url", &url)
                    .option("table", &table),
            )
            .unwrap();
            let watch = Watch::new("db", &config);
            let (sender, seen) = mpsc::channel();
            let sender = std::sync::Mutex::new(sender);
            let watcher: Watcher = Arc::new(move |change| {
                let _ = sender.lock().unwrap().send(change);
            });
            watch
                .shared
                .watchers
                .write()
                .unwrap()
                .insert("c".into(), vec![watcher]);
            let link = Link::new(&watch.shared, &config);
            let mut subscription = subscribe(&link, &watch.shared).expect("subscribe");
            subscription.socket = None;
            *watch.shared.socket.lock().unwrap() = None;
            let shared = Arc::clone(&watch.shared);
            let thread = std::thread::spawn(move || run(&shared, &link, subscription));
            *watch.listener.lock().unwrap() = Some(thread.thread().clone());

            let mut other = PgConnection::establish(&url).expect("connect");
            let notify = format!(
                "SELECT pg_notify('kvcache_{table}', 'kv1 0123456789abcdef k c k') IS NULL"
            );
            let started = Instant::now();
            diesel::sql_query(notify)
                .execute(&mut other)
                .expect("notify");
            let change = seen.recv_timeout(Duration::from_secs(1)).expect("a change");
            assert_eq!(change, Change::Keys(vec!["k".to_owned()]));
            assert!(started.elapsed() < Duration::from_millis(500));
            drop(watch);
            let deadline = Instant::now() + Duration::from_secs(1);
            while !thread.is_finished() {
                assert!(Instant::now() < deadline, "the thread outlived its backend");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTANCE: &str = "0123456789abcdef";

    #[test]
    fn fields_round_trip_whatever_their_bytes() {
        for text in ["k", "a b%c", "line\nbreak\0nul", "ключ 日本", "%41", ""] {
            let encoded = encode(text);
            assert!(encoded.bytes().all(|b| b.is_ascii_graphic()), "{encoded}");
            assert_eq!(decode(&encoded).as_deref(), Some(text));
        }
        assert_eq!(encode("a b%"), "a%20b%25");
        assert_eq!(decode("%zz"), None);
        assert_eq!(decode("%4"), None);
    }

    #[test]
    fn keys_fill_payloads_then_split_then_flush() {
        assert_eq!(
            payloads(INSTANCE, "c", ["k", "a b"]).unwrap(),
            "kv1 0123456789abcdef k c k a%20b"
        );
        assert_eq!(payloads(INSTANCE, "c", []), None);
        let keys: Vec<String> = (0..500).map(|i| format!("{i:040}")).collect();
        let split = payloads(INSTANCE, "c", keys.iter().map(String::as_str)).unwrap();
        let lines: Vec<&str> = split.lines().collect();
        assert_eq!(lines.len(), 3, "500 keys of 40 bytes: 3 payloads");
        assert!(lines.iter().all(|line| line.len() <= MAX_PAYLOAD));
        let back: Vec<&str> = lines
            .iter()
            .flat_map(|line| line.split(' ').skip(4))
            .collect();
        assert_eq!(back, keys);
        let many: Vec<String> = (0..5000).map(|i| format!("{i:040}")).collect();
        assert_eq!(
            payloads(INSTANCE, "c", many.iter().map(String::as_str)).unwrap(),
            "kv1 0123456789abcdef f c"
        );
        let long = "x".repeat(MAX_PAYLOAD);
        assert_eq!(
            payloads(INSTANCE, "c", ["k", &long]).unwrap(),
            "kv1 0123456789abcdef f c"
        );
        assert_eq!(
            payloads(INSTANCE, &long, ["k"]).unwrap(),
            "kv1 0123456789abcdef *"
        );
        let fits = "y".repeat(MAX_PAYLOAD - "kv1 0123456789abcdef k c ".len());
        assert_eq!(
            payloads(INSTANCE, "c", [&fits[..]]).unwrap().len(),
            MAX_PAYLOAD
        );
    }

    #[test]
    fn channels_fit_postgres_identifiers() {
        assert_eq!(channel("kvcache"), "kvcache_kvcache");
        let longest = "t".repeat(MAX_CHANNEL - CHANNEL_PREFIX.len());
        assert_eq!(channel(&longest), format!("kvcache_{longest}"));
        let longer = "t".repeat(80);
        let hashed = channel(&longer);
        assert_eq!(hashed.len(), MAX_CHANNEL);
        assert!(hashed.starts_with(&format!("kvcache_{}_", "t".repeat(38))));
        assert_ne!(hashed, channel(&"t".repeat(81)));
    }

    #[test]
    fn instances_differ() {
        let (a, b) = (instance_id(), instance_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn the_write_and_its_notice_are_one_statement() {
        use crate::sql::{Container, Hashed, Statements};

        let config = SqlConfig::read(
            &kvcache_core::BackendConfig::new("db", "sql")
                .option("url", "postgres://u@h/db")
                .option("table", "kv"),
        )
        .unwrap();
        let watch = Watch::new("db", &config);
        let seen: Watcher = Arc::new(|_| {});
        watch
            .shared
            .watchers
            .write()
            .unwrap()
            .insert("c".into(), vec![seen]);
        watch.any.store(true, Ordering::Release);
        assert!(watch.keys("other", ["k"]).is_none(), "unwatched");
        let statements = Statements::new(Database::Postgres, "kv");
        let (container, key) = (Container::new("c"), Hashed::new("k"));
        let delete = statements.delete(&container, &key);
        let notice = watch.keys("c", ["k"]).unwrap();
        let wrapped = notice.wrap(Write::Delete, &delete);
        assert_eq!(
            wrapped.sql(),
            format!(
                "WITH w AS ({}) SELECT pg_notify(?, p) FROM unnest(string_to_array(?, chr(10))) AS p",
                delete.sql()
            )
        );
        assert_eq!(wrapped.binds().len(), delete.binds().len() + 2);
        assert!(matches!(
            wrapped.binds()[delete.binds().len()],
            Bind::Text("kvcache_kv")
        ));
        let cleared = watch.cleared("c").unwrap();
        assert_eq!(
            cleared.payloads,
            format!("kv1 {} c c", watch.shared.instance)
        );
    }

    #[test]
    fn dispatch_skips_its_own_instance_and_reads_every_kind() {
        let config = SqlConfig::read(
            &kvcache_core::BackendConfig::new("db", "sql").option("url", "postgres://u@h/db"),
        )
        .unwrap();
        let watch = Watch::new("db", &config);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let watcher: Watcher = {
            let seen = Arc::clone(&seen);
            Arc::new(move |change| seen.lock().unwrap().push(change))
        };
        watch
            .shared
            .watchers
            .write()
            .unwrap()
            .insert("c d".into(), vec![watcher]);
        let own = watch.shared.instance.clone();
        let shared = &watch.shared;
        shared.dispatch(&format!("kv1 {own} k c%20d k"));
        shared.dispatch(&format!("kv1 {INSTANCE} k c%20d k a%0Ab"));
        shared.dispatch(&format!("kv1 {INSTANCE} k other k"));
        shared.dispatch(&format!("kv1 {INSTANCE} c c%20d"));
        shared.dispatch(&format!("kv1 {INSTANCE} f c%20d"));
        shared.dispatch(&format!("kv1 {INSTANCE} *"));
        shared.dispatch("something else");
        shared.dispatch(&format!("kv1 {INSTANCE} ? c%20d"));
        assert_eq!(
            *seen.lock().unwrap(),
            [
                Change::Keys(vec!["k".into(), "a\nb".into()]),
                Change::Cleared,
                Change::Cleared,
                Change::Cleared,
            ]
        );
    }
}
