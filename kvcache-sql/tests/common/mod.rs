//! What the tests of the three databases share: reaching the service, tables of their own, and
//! the checks each database must pass.

#![allow(dead_code, reason = "each database's tests use a part of it")]

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use kvcache_core::{Backend, BackendConfig, ManualClock, testkit};
use kvcache_sql::SqlBackend;
use sha2::{Digest, Sha256};

/// A database the tests write to directly, beside the backend.
pub(crate) trait Db {
    /// The backend's `url` option.
    fn url(&self) -> String;
    /// The same database as an original configuration's `sqlalchemy.url` names it.
    fn sqlalchemy_url(&self) -> String {
        self.url()
    }
    /// Runs `sql`, one or more statements.
    fn execute(&self, sql: &str) -> Result<(), String>;
    /// The number of rows of `table`.
    fn count(&self, table: &str) -> i64;
    /// `bytes` as an SQL literal.
    fn bytes_literal(&self, bytes: &[u8]) -> String;
    /// `table`, quoted.
    fn quote(&self, table: &str) -> String;
}

/// The URL in the environment variable `var`, or `default`, if its server answers on TCP.
///
/// Unreachable, it prints a notice and is `None`, except under `CI=true`, where it panics.
pub(crate) fn service_url(var: &str, default: &str) -> Option<String> {
    let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
    let authority = url
        .split_once("://")
        .map_or("", |(_, rest)| rest.split(['/', '?']).next().unwrap_or(""));
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    let reachable = host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .is_some_and(|address| {
            TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok()
        });
    if reachable {
        return Some(url);
    }
    let notice = format!("{var}: nothing answers at {host_port:?}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{notice} (and CI=true)"
    );
    eprintln!("SKIPPED: {notice}; set {var} or start the server to run this test");
    None
}

/// The answer of `SELECT COUNT(*) AS n`.
#[derive(QueryableByName)]
pub(crate) struct Count {
    #[diesel(sql_type = BigInt)]
    pub(crate) n: i64,
}

/// `bytes` in hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `error`'s message followed by those of its sources.
pub(crate) fn full_message(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(error) = source {
        message = format!("{message}: {error}");
        source = error.source();
    }
    message
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub(crate) fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

/// A table that no other test or run uses, dropped when the guard goes.
pub(crate) struct Table<'a> {
    db: &'a dyn Db,
    pub(crate) name: String,
}

impl<'a> Table<'a> {
    pub(crate) fn new(db: &'a dyn Db, label: &str) -> Self {
        let name = format!("kvt_{}", testkit::unique(label).replace('-', "_"));
        assert!(
            name.len() <= 48,
            "table name {name:?} too long for the backend"
        );
        Table { db, name }
    }
}

impl Drop for Table<'_> {
    fn drop(&mut self) {
        let drop = format!("DROP TABLE IF EXISTS {}", self.db.quote(&self.name));
        if let Err(error) = self.db.execute(&drop) {
            eprintln!("could not drop the test table {}: {error}", self.name);
        }
    }
}

/// The backend configuration `db` and `table`, on `clock`.
pub(crate) fn config(db: &dyn Db, table: &str, clock: &ManualClock) -> BackendConfig {
    BackendConfig::new("db", "sql")
        .option("url", db.url())
        .option("table", table)
        .clock(Arc::new(clock.clone()))
}

pub(crate) fn open(db: &dyn Db, table: &str, clock: &ManualClock) -> SqlBackend {
    SqlBackend::open(&config(db, table, clock)).unwrap_or_else(|error| panic!("open: {error}"))
}

fn clock() -> ManualClock {
    ManualClock::new(1_700_000_000_000)
}

/// The shared conformance suite and the corrupt-value checks, on a table of its own.
pub(crate) fn conformance(db: &dyn Db) {
    let table = Table::new(db, "conf");
    let clock = clock();
    let backend = open(db, &table.name, &clock);
    testkit::run(&backend, testkit::Time::Manual(&clock));
    testkit::corruption(Arc::new(backend));
}

/// Keys far longer than a `VARCHAR(255)`, and a key whose hash collides with another's.
pub(crate) fn long_keys(db: &dyn Db) {
    let table = Table::new(db, "long");
    let backend = open(db, &table.name, &clock());
    let c = "long";
    let ascii = "k".repeat(64 * 1024);
    let ascii_other = format!("{}!", "k".repeat(64 * 1024 - 1));
    let multibyte = "ключ🦀".repeat(16 * 1024); // 224 KiB of UTF-8
    let huge = "x".repeat(1024 * 1024);
    for key in [&ascii, &ascii_other, &multibyte, &huge] {
        backend
            .store(c, key, &key.as_bytes()[key.len() - 8..], None)
            .expect("store a long key");
    }
    let keys = [
        ascii.as_str(),
        ascii_other.as_str(),
        multibyte.as_str(),
        huge.as_str(),
    ];
    let found = backend.retrieve_many(c, &keys).expect("retrieve long keys");
    for (key, value) in keys.iter().zip(found) {
        assert_eq!(
            value.as_deref(),
            Some(&key.as_bytes()[key.len() - 8..]),
            "key of {} bytes",
            key.len()
        );
    }
    assert_eq!(
        backend.retrieve(c, &ascii[1..]).expect("retrieve"),
        None,
        "a prefix is another key"
    );
    backend
        .invalidate(c, &ascii)
        .expect("invalidate a long key");
    assert_eq!(backend.retrieve(c, &ascii).expect("retrieve"), None);
    assert!(
        backend
            .retrieve(c, &ascii_other)
            .expect("retrieve")
            .is_some(),
        "its neighbour stays"
    );

    // Make the row of "apple" sit where "pear" hashes to: a collision, as if SHA-256 had one.
    backend
        .store(c, "apple", b"apple's value", None)
        .expect("store");
    let sha = |bytes: &[u8]| Sha256::digest(bytes).to_vec();
    db.execute(&format!(
        "UPDATE {} SET key_hash = {} WHERE key_hash = {}",
        db.quote(&table.name),
        db.bytes_literal(&sha(b"pear")),
        db.bytes_literal(&sha(b"apple")),
    ))
    .expect("move the row");
    assert_eq!(
        backend.retrieve(c, "pear").expect("retrieve"),
        None,
        "a collision is a miss"
    );
    assert_eq!(
        backend.retrieve_many(c, &["pear"]).expect("retrieve_many"),
        vec![None]
    );
    backend.invalidate(c, "pear").expect("invalidate");
    assert_eq!(
        db.count(&table.name),
        4,
        "invalidating pear left apple's row alone"
    );
    backend
        .store(c, "pear", b"pear's value", None)
        .expect("store over the collision");
    assert_eq!(
        backend.retrieve(c, "pear").expect("retrieve").as_deref(),
        Some(&b"pear's value"[..])
    );
}

/// Two backends on two tables of one database never see each other's rows.
pub(crate) fn tables_are_isolated(db: &dyn Db) {
    let (first, second) = (Table::new(db, "iso1"), Table::new(db, "iso2"));
    let clock = clock();
    let (a, b) = (
        open(db, &first.name, &clock),
        open(db, &second.name, &clock),
    );
    a.store("c", "k", b"first", None).expect("store");
    assert_eq!(b.retrieve("c", "k").expect("retrieve"), None);
    b.store("c", "k", b"second", None).expect("store");
    assert_eq!(
        a.retrieve("c", "k").expect("retrieve").as_deref(),
        Some(&b"first"[..])
    );
    b.clear("c").expect("clear");
    assert_eq!(
        a.retrieve("c", "k").expect("retrieve").as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!((db.count(&first.name), db.count(&second.name)), (1, 0));
}

/// Two containers of a configuration, on one `sql` backend named by the original's class path
/// and `sqlalchemy.url`, share its table.
pub(crate) fn containers_share_a_table(db: &dyn Db) {
    let table = Table::new(db, "share");
    let cache = kvcache_core::init([
        (
            "backend.db",
            "score.kvcache.backend.SQLAlchemyCache".to_owned(),
        ),
        ("backend.db.sqlalchemy.url", db.sqlalchemy_url()),
        ("backend.db.table", table.name.clone()),
        ("container.first.backend", "db".to_owned()),
        ("container.second.backend", "db".to_owned()),
    ])
    .unwrap_or_else(|error| panic!("init: {error}"));
    let (first, second) = (
        cache.container::<String>("first").expect("first"),
        cache.container::<String>("second").expect("second"),
    );
    first.set("k", &"one".to_owned()).expect("set");
    second.set("k", &"two".to_owned()).expect("set");
    assert_eq!(first.peek("k").expect("peek").as_deref(), Some("one"));
    assert_eq!(second.peek("k").expect("peek").as_deref(), Some("two"));
    assert_eq!(
        db.count(&table.name),
        2,
        "both containers' rows are in the one table"
    );
}

/// A table of that name with other columns: an error naming it and the option, and the table
/// with its row as it was.
pub(crate) fn a_foreign_table_is_left_alone(db: &dyn Db) {
    let table = Table::new(db, "foreign");
    let quoted = db.quote(&table.name);
    db.execute(&format!(
        "CREATE TABLE {quoted} (id INTEGER PRIMARY KEY, name VARCHAR(20))"
    ))
    .expect("create");
    db.execute(&format!(
        "INSERT INTO {quoted} (id, name) VALUES (1, 'mine')"
    ))
    .expect("insert");
    let error = SqlBackend::open(&config(db, &table.name, &clock())).expect_err("other columns");
    let message = full_message(&error);
    assert!(
        message.contains(&format!("table {:?}", table.name)),
        "{message}"
    );
    assert!(
        message.contains("columns (id, name)") && message.contains("backend.db.table"),
        "{message}"
    );
    assert_eq!(db.count(&table.name), 1, "its row is still there");
    db.execute(&format!(
        "INSERT INTO {quoted} (id, name) VALUES (2, 'still mine')"
    ))
    .expect("its columns are unchanged");
}

/// 8 threads storing, reading, deleting, clearing and purging on overlapping keys, some of them
/// expiring as the clock moves: no deadlock, no error, and no write lost.
pub(crate) fn threads_on_overlapping_keys(db: &dyn Db) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 100;
    let table = Table::new(db, "mixed");
    let clock = clock();
    let backend = open(db, &table.name, &clock);
    let c = "mixed";
    let shared: Vec<String> = (0..2 * THREADS).map(|k| format!("shared {k}")).collect();
    let shared: Vec<&str> = shared.iter().map(String::as_str).collect();
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (backend, clock, shared, barrier) = (&backend, &clock, &shared, &barrier);
            scope.spawn(move || {
                barrier.wait();
                let own = format!("own {t}");
                for i in 0..ROUNDS {
                    let value = format!("{t}:{i}");
                    backend
                        .store(c, "hot", value.as_bytes(), None)
                        .expect("store hot");
                    for k in 0..4 {
                        let key = shared[(t * 3 + i + k) % shared.len()];
                        let ttl = Duration::from_millis(((i + k) % 4) as u64);
                        backend
                            .store(c, key, value.as_bytes(), Some(ttl))
                            .expect("store");
                    }
                    backend
                        .store("scratch", shared[i % THREADS], b"x", None)
                        .expect("store scratch");
                    clock.advance(Duration::from_millis(1));
                    let found = backend.retrieve_many(c, shared).expect("retrieve_many");
                    for value in found.into_iter().flatten() {
                        let text = String::from_utf8(value).expect("utf-8");
                        assert!(
                            text.split_once(':').is_some(),
                            "a value no thread wrote: {text:?}"
                        );
                    }
                    if i % 4 == 0 {
                        backend
                            .invalidate(c, shared[(t + i) % shared.len()])
                            .expect("invalidate");
                    }
                    if i % 10 == 0 {
                        backend.clear("scratch").expect("clear");
                    }
                    if i % 3 == 0 {
                        backend.purge_expired().expect("purge_expired");
                    }
                    backend
                        .store(c, &own, value.as_bytes(), None)
                        .expect("store own");
                    assert_eq!(
                        backend.retrieve(c, &own).expect("retrieve own"),
                        Some(value.into_bytes()),
                        "a thread reads its own last write"
                    );
                }
            });
        }
    });
    let last = ROUNDS - 1;
    for t in 0..THREADS {
        let own = backend.retrieve(c, &format!("own {t}")).expect("retrieve");
        assert_eq!(
            own,
            Some(format!("{t}:{last}").into_bytes()),
            "thread {t}'s last write"
        );
    }
    let hot = backend
        .retrieve(c, "hot")
        .expect("retrieve")
        .expect("hot is there");
    let hot = String::from_utf8(hot).expect("utf-8");
    assert!(
        hot.ends_with(&format!(":{last}")),
        "the hot key holds some thread's last write, not {hot:?}"
    );
}

/// Opening a backend on `url`, whose server is at `127.0.0.1:port` and does not answer, fails
/// within `connect_timeout` (1 s) with an error naming host, port and `database`; neither the
/// error, its sources nor any `Debug` holds `secret`.
pub(crate) fn unreachable(url: &str, port: u16, database: &str, secret: &str) {
    let config = BackendConfig::new("db", "sql")
        .option("url", url)
        .option("connect_timeout", "1s");
    assert!(!format!("{config:?}").contains(secret), "{config:?}");
    let started = std::time::Instant::now();
    let error = SqlBackend::open(&config).expect_err("nothing answers");
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "gave up after {elapsed:?}, not within about 1s"
    );
    let (message, debug) = (full_message(&error), format!("{error:?}"));
    assert!(
        message.contains(&format!("127.0.0.1:{port}, database {database:?}")),
        "{message}"
    );
    assert!(
        debug.contains(&format!("127.0.0.1:{port}")) && debug.contains(database),
        "{debug}"
    );
    for text in [&message, &debug] {
        assert!(!text.contains(secret), "the password shows in {text}");
    }
}

/// A backend on `url`, whose server at `127.0.0.1:port` `stop` shuts down and `start` starts
/// again: calls in between fail within `connect_timeout` with an error naming the server, and
/// the first call after it is back succeeds, on the same backend.
pub(crate) fn goes_away_and_comes_back(url: &str, port: u16, stop: impl Fn(), start: impl Fn()) {
    let connect_timeout = Duration::from_secs(2);
    let config = BackendConfig::new("db", "sql")
        .option("url", url)
        .option("connect_timeout", "2s")
        .option("pool_size", "3");
    let backend = SqlBackend::open(&config).unwrap_or_else(|error| panic!("open: {error}"));
    // Three pooled connections, all of which the outage kills.
    thread::scope(|scope| {
        for i in 0..3 {
            let backend = &backend;
            scope.spawn(move || {
                for round in 0..20 {
                    let value = format!("{i}:{round}");
                    backend
                        .store("c", &format!("k{i}"), value.as_bytes(), None)
                        .expect("store");
                }
            });
        }
    });
    backend.store("c", "k", b"before", None).expect("store");

    stop();
    let address = format!("127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let error = backend.retrieve("c", "k").expect_err("the server is away");
    let elapsed = started.elapsed();
    assert!(full_message(&error).contains(&address), "{error}");
    assert!(
        elapsed < connect_timeout + Duration::from_secs(2),
        "a call while the server is away took {elapsed:?}, connect_timeout is {connect_timeout:?}"
    );
    backend
        .store("c", "k", b"lost", None)
        .expect_err("the server is still away");

    start();
    assert_eq!(
        backend
            .retrieve("c", "k")
            .expect("the first call after the server is back")
            .as_deref(),
        Some(&b"before"[..])
    );
    backend.store("c", "k", b"after", None).expect("store");
    assert_eq!(
        backend.retrieve("c", "k").expect("retrieve").as_deref(),
        Some(&b"after"[..])
    );
}
