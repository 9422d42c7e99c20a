//! What the tests of the three databases share: reaching the service, tables of their own, and
//! the checks each database must pass.

#![allow(dead_code, reason = "each database's tests use a part of it")]

pub(crate) mod upkeep;

use std::any::Any;
use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use kvcache_core::{
    Backend, BackendConfig, Config, ContainerOptions, Error, KvCache, Lease, ManualClock, Store,
    testkit,
};
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
    /// The `url` of connections that can read `table` and cannot write to it, and the
    /// statements that undo what made them; `None` where the tests have no such connections.
    fn read_only(&self, table: &str) -> Option<(String, Vec<String>)> {
        let _ = table;
        None
    }
    /// A session of its own holding a lock on `table` that keeps every other session from
    /// writing it (and, but on SQLite, from reading it), until it is dropped.
    fn lock(&self, table: &str) -> Box<dyn Any>;
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

    /// The name of the leases table beside it.
    pub(crate) fn leases(&self) -> String {
        format!("{}_leases", self.name)
    }
}

impl Drop for Table<'_> {
    /// Drops it and its leases table.
    fn drop(&mut self) {
        for name in [self.name.clone(), self.leases()] {
            let drop = format!("DROP TABLE IF EXISTS {}", self.db.quote(&name));
            if let Err(error) = self.db.execute(&drop) {
                eprintln!("could not drop the test table {name}: {error}");
            }
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

/// The synchronous store of `container` on `backend`.
pub(crate) fn store(backend: &dyn Backend, container: &str) -> Arc<dyn Store> {
    backend
        .open(container)
        .unwrap_or_else(|error| panic!("open({container:?}): {error}"))
        .sync_store()
}

fn clock() -> ManualClock {
    ManualClock::new(1_700_000_000_000)
}

/// The shared conformance suite, the lease contract and the corrupt-value checks, on a table of
/// its own.
pub(crate) fn conformance(db: &dyn Db) {
    let table = Table::new(db, "conf");
    let clock = clock();
    let backend = open(db, &table.name, &clock);
    testkit::run(&backend, testkit::Time::Manual(&clock));
    testkit::leases(&backend, testkit::Time::Manual(&clock));
    testkit::corruption(Arc::new(backend));
}

/// `store.lease`, which must answer.
fn lease(store: &dyn Store, key: &str, token: &str, ttl: Duration) -> Lease {
    store
        .lease(key, token, ttl)
        .unwrap_or_else(|error| panic!("lease({key:?}, {token:?}): {}", full_message(&error)))
}

/// Leases are rows of the leases table, apart from the entries: no container of the `kvcache`
/// command, kept by `clear`, deleted once expired by `purge_expired` and by the writes' upkeep.
pub(crate) fn leases_beside_entries(db: &dyn Db) {
    let table = Table::new(db, "lease");
    let leases = table.leases();
    let clock = clock();
    let backend = open(db, &table.name, &clock);
    assert_eq!(db.count(&leases), 0, "the leases table is created, empty");
    let (entries, leased) = (store(&backend, "entries"), store(&backend, "leased"));
    let ttl = Duration::from_secs(1);
    entries.store("k", b"v", None).expect("store");
    assert_eq!(lease(&*leased, "k", "a", ttl), Lease::Acquired);
    assert_eq!(lease(&*entries, "k", "b", ttl), Lease::Acquired);
    assert_eq!((db.count(&table.name), db.count(&leases)), (1, 2));

    let inspect = backend
        .inspect()
        .expect("the backend answers the kvcache command");
    let containers = inspect
        .containers(&mut |_| {})
        .expect("containers")
        .expect("listed");
    assert_eq!(
        containers,
        ["entries"],
        "a container with leases only is none"
    );
    let keys = inspect.keys("leased", "", None, &mut |_| {}).expect("keys");
    assert!(keys.is_empty(), "a lease is no key: {keys:?}");
    let summary = inspect.summary("leased", &mut |_| {}).expect("summary");
    assert_eq!(
        (summary.entries, summary.expired),
        (0, Some(0)),
        "{summary:?}"
    );
    assert_eq!(
        inspect
            .keys("entries", "", None, &mut |_| {})
            .expect("keys"),
        ["k"]
    );

    leased.clear().expect("clear");
    entries.clear().expect("clear");
    assert_eq!(db.count(&leases), 2, "clear leaves the leases");
    assert_eq!(lease(&*leased, "k", "c", ttl), Lease::Held, "still held");

    clock.advance(ttl);
    assert_eq!(db.count(&leases), 2, "expired, not yet deleted");
    backend.purge_expired().expect("purge_expired");
    assert_eq!(db.count(&leases), 0, "purge_expired deletes expired leases");

    assert_eq!(lease(&*leased, "u", "d", ttl), Lease::Acquired);
    assert_eq!(
        lease(&*leased, "live", "e", Duration::from_secs(3600)),
        Lease::Acquired
    );
    clock.advance(ttl);
    for i in 0..64 {
        entries
            .store(&format!("tick {i}"), b"v", None)
            .expect("store");
    }
    assert_eq!(
        db.count(&leases),
        1,
        "64 writes delete the expired lease, and keep the live one"
    );
    assert_eq!(lease(&*leased, "live", "f", ttl), Lease::Held);
    assert_eq!(lease(&*leased, "u", "f", ttl), Lease::Acquired);
}

/// 16 threads, each with a token of its own, racing for the lease of one key of a fresh
/// container, on as many connections, 20 rounds of a new key each: each round exactly one
/// takes it; the others find it held; released, it is free. Every other round the key's lease
/// is one a dead holder left, expired: all of them race to take it over.
pub(crate) fn threads_racing_for_a_lease(db: &dyn Db) {
    const THREADS: usize = 16;
    const ROUNDS: usize = 20;
    let table = Table::new(db, "race");
    let clock = clock();
    let config = config(db, &table.name, &clock).option("pool_size", THREADS.to_string());
    let backend = SqlBackend::open(&config).unwrap_or_else(|error| panic!("open: {error}"));
    let c = store(&backend, &testkit::unique("race"));
    let ttl = Duration::from_secs(60);
    let barrier = Barrier::new(THREADS);
    // Per round, the threads that took the lease, and every failure: a thread that panicked
    // would leave the others waiting at the barrier.
    let taken: Vec<Mutex<Vec<usize>>> = (0..ROUNDS).map(|_| Mutex::new(Vec::new())).collect();
    let failed = Mutex::new(Vec::new());
    let keys: Vec<String> = (0..ROUNDS).map(|round| format!("key {round}")).collect();
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (c, barrier, taken, failed, keys) = (&c, &barrier, &taken, &failed, &keys);
            let clock = &clock;
            scope.spawn(move || {
                let token = testkit::unique(&format!("thread {t}"));
                for (round, key) in keys.iter().enumerate() {
                    if t == 0 && round % 2 == 1 {
                        let dead = c.lease(key, "dead holder", Duration::from_millis(1));
                        if !matches!(dead, Ok(Lease::Acquired)) {
                            failed
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .push(format!("round {round}: the dead holder's lease: {dead:?}"));
                        }
                        clock.advance(Duration::from_millis(1));
                    }
                    barrier.wait();
                    let outcome = c.lease(key, &token, ttl);
                    let acquired = matches!(outcome, Ok(Lease::Acquired));
                    match outcome {
                        Ok(Lease::Acquired) => taken[round]
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(t),
                        Ok(Lease::Held) => {}
                        other => failed
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("thread {t}, round {round}: lease: {other:?}")),
                    }
                    // Every thread has answered before the lease is given up.
                    barrier.wait();
                    if acquired && let Err(error) = c.release(key, &token) {
                        failed
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(format!("thread {t}, round {round}: release: {error:?}"));
                    }
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_else(PoisonError::into_inner);
    assert!(failed.is_empty(), "{failed:#?}");
    for (round, taken) in taken.into_iter().enumerate() {
        let taken = taken.into_inner().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(taken.len(), 1, "round {round}: taken by threads {taken:?}");
    }
    assert_eq!(db.count(&table.leases()), 0, "every lease was released");
    for key in &keys {
        assert_eq!(
            lease(&*c, key, "after", ttl),
            Lease::Acquired,
            "{key} is free"
        );
        c.release(key, "after").expect("release");
    }
}

/// Keys far longer than a `VARCHAR(255)`, and a key whose hash collides with another's.
pub(crate) fn long_keys(db: &dyn Db) {
    let table = Table::new(db, "long");
    let backend = open(db, &table.name, &clock());
    let c = store(&backend, "long");
    let ascii = "k".repeat(64 * 1024);
    let ascii_other = format!("{}!", "k".repeat(64 * 1024 - 1));
    let multibyte = "ключ🦀".repeat(16 * 1024); // 224 KiB of UTF-8
    let huge = "x".repeat(1024 * 1024);
    for key in [&ascii, &ascii_other, &multibyte, &huge] {
        c.store(key, &key.as_bytes()[key.len() - 8..], None)
            .expect("store a long key");
    }
    let keys = [
        ascii.as_str(),
        ascii_other.as_str(),
        multibyte.as_str(),
        huge.as_str(),
    ];
    let found = c.retrieve_many(&keys).expect("retrieve long keys");
    for (key, value) in keys.iter().zip(found) {
        assert_eq!(
            value.as_deref(),
            Some(&key.as_bytes()[key.len() - 8..]),
            "key of {} bytes",
            key.len()
        );
    }
    assert_eq!(
        c.retrieve(&ascii[1..]).expect("retrieve"),
        None,
        "a prefix is another key"
    );
    c.invalidate(&ascii).expect("invalidate a long key");
    assert_eq!(c.retrieve(&ascii).expect("retrieve"), None);
    assert!(
        c.retrieve(&ascii_other).expect("retrieve").is_some(),
        "its neighbour stays"
    );

    // Make the row of "apple" sit where "pear" hashes to: a collision, as if SHA-256 had one.
    c.store("apple", b"apple's value", None).expect("store");
    let sha = |bytes: &[u8]| Sha256::digest(bytes).to_vec();
    db.execute(&format!(
        "UPDATE {} SET key_hash = {} WHERE key_hash = {}",
        db.quote(&table.name),
        db.bytes_literal(&sha(b"pear")),
        db.bytes_literal(&sha(b"apple")),
    ))
    .expect("move the row");
    assert_eq!(
        c.retrieve("pear").expect("retrieve"),
        None,
        "a collision is a miss"
    );
    assert_eq!(
        c.retrieve_many(&["pear"]).expect("retrieve_many"),
        vec![None]
    );
    c.invalidate("pear").expect("invalidate");
    assert_eq!(
        db.count(&table.name),
        4,
        "invalidating pear left apple's row alone"
    );
    c.store("pear", b"pear's value", None)
        .expect("store over the collision");
    assert_eq!(
        c.retrieve("pear").expect("retrieve").as_deref(),
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
    let (a, b) = (store(&a, "c"), store(&b, "c"));
    a.store("k", b"first", None).expect("store");
    assert_eq!(b.retrieve("k").expect("retrieve"), None);
    b.store("k", b"second", None).expect("store");
    assert_eq!(
        a.retrieve("k").expect("retrieve").as_deref(),
        Some(&b"first"[..])
    );
    b.clear().expect("clear");
    assert_eq!(
        a.retrieve("k").expect("retrieve").as_deref(),
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

    // The same of a table named as the leases table of the backend's.
    let table = Table::new(db, "foreignl");
    let leases = db.quote(&table.leases());
    db.execute(&format!(
        "CREATE TABLE {leases} (id INTEGER PRIMARY KEY, name VARCHAR(20))"
    ))
    .expect("create");
    db.execute(&format!(
        "INSERT INTO {leases} (id, name) VALUES (1, 'mine')"
    ))
    .expect("insert");
    let error = SqlBackend::open(&config(db, &table.name, &clock())).expect_err("other columns");
    let message = full_message(&error);
    assert!(
        message.contains(&format!("table {:?}", table.leases()))
            && message.contains("columns (id, name)")
            && message.contains("a kvcache leases table (container, key, token, expires_at)")
            && message.contains("backend.db.table"),
        "{message}"
    );
    assert_eq!(db.count(&table.leases()), 1, "its row is still there");
}

/// 8 threads storing, reading, deleting, clearing and purging on overlapping keys, some of them
/// expiring as the clock moves: no deadlock, no error, and no write lost.
pub(crate) fn threads_on_overlapping_keys(db: &dyn Db) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 100;
    let table = Table::new(db, "mixed");
    let clock = clock();
    let backend = open(db, &table.name, &clock);
    let (c, scratch) = (store(&backend, "mixed"), store(&backend, "scratch"));
    let shared: Vec<String> = (0..2 * THREADS).map(|k| format!("shared {k}")).collect();
    let shared: Vec<&str> = shared.iter().map(String::as_str).collect();
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (backend, c, scratch) = (&backend, &c, &scratch);
            let (clock, shared, barrier) = (&clock, &shared, &barrier);
            scope.spawn(move || {
                barrier.wait();
                let own = format!("own {t}");
                for i in 0..ROUNDS {
                    let value = format!("{t}:{i}");
                    c.store("hot", value.as_bytes(), None).expect("store hot");
                    for k in 0..4 {
                        let key = shared[(t * 3 + i + k) % shared.len()];
                        let ttl = Duration::from_millis(((i + k) % 4) as u64);
                        c.store(key, value.as_bytes(), Some(ttl)).expect("store");
                    }
                    scratch
                        .store(shared[i % THREADS], b"x", None)
                        .expect("store scratch");
                    clock.advance(Duration::from_millis(1));
                    let found = c.retrieve_many(shared).expect("retrieve_many");
                    for value in found.into_iter().flatten() {
                        let text = String::from_utf8(value).expect("utf-8");
                        assert!(
                            text.split_once(':').is_some(),
                            "a value no thread wrote: {text:?}"
                        );
                    }
                    if i % 4 == 0 {
                        c.invalidate(shared[(t + i) % shared.len()])
                            .expect("invalidate");
                    }
                    if i % 10 == 0 {
                        scratch.clear().expect("clear");
                    }
                    if i % 3 == 0 {
                        backend.purge_expired().expect("purge_expired");
                    }
                    c.store(&own, value.as_bytes(), None).expect("store own");
                    assert_eq!(
                        c.retrieve(&own).expect("retrieve own"),
                        Some(value.into_bytes()),
                        "a thread reads its own last write"
                    );
                }
            });
        }
    });
    let last = ROUNDS - 1;
    for t in 0..THREADS {
        let own = c.retrieve(&format!("own {t}")).expect("retrieve");
        assert_eq!(
            own,
            Some(format!("{t}:{last}").into_bytes()),
            "thread {t}'s last write"
        );
    }
    let hot = c.retrieve("hot").expect("retrieve").expect("hot is there");
    let hot = String::from_utf8(hot).expect("utf-8");
    assert!(
        hot.ends_with(&format!(":{last}")),
        "the hot key holds some thread's last write, not {hot:?}"
    );
}

/// Batches of more entries than one upsert holds, of entries larger than one upsert carries,
/// with a key given twice (its last value wins, as storing one entry after another would
/// leave it), all with one expiry.
pub(crate) fn batches(db: &dyn Db) {
    let table = Table::new(db, "batch");
    let clock = clock();
    let backend = open(db, &table.name, &clock);
    let c = store(&backend, "batch");
    let keys: Vec<String> = (0..300).map(|i| format!("key {i}")).collect();
    let mut entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    entries.insert(0, ("key 9", b"overwritten later in the batch"));
    entries.push(("key 7", b"again"));
    c.store_many(&entries, Some(Duration::from_secs(10)))
        .expect("store_many");
    assert_eq!(db.count(&table.name), 300, "one row per key");
    let asked: Vec<&str> = keys.iter().map(String::as_str).collect();
    let found = c.retrieve_many(&asked).expect("retrieve_many");
    for (key, value) in asked.iter().zip(found) {
        let expected: &[u8] = if *key == "key 7" {
            b"again"
        } else {
            key.as_bytes()
        };
        assert_eq!(value.as_deref(), Some(expected), "key {key:?}");
    }

    let big: Vec<Vec<u8>> = (0..3_u8).map(|i| vec![i; 600 * 1024]).collect();
    let entries: [(&str, &[u8]); 4] = [
        ("big 0", &big[0]),
        ("small", b"small"),
        ("big 1", &big[1]),
        ("big 2", &big[2]),
    ];
    c.store_many(&entries, None)
        .expect("store_many of big entries");
    let found = c
        .retrieve_many(&["big 0", "small", "big 1", "big 2"])
        .expect("retrieve_many");
    for ((key, value), found) in entries.iter().zip(found) {
        assert_eq!(found.as_deref(), Some(*value), "key {key:?}");
    }
    c.store_many(&[], None).expect("an empty batch");

    clock.advance(Duration::from_secs(10));
    assert_eq!(
        c.retrieve_many(&["key 0", "key 7", "key 299", "small"])
            .expect("retrieve_many"),
        vec![None, None, None, Some(b"small".to_vec())],
        "the batch's ttl holds for each of its entries"
    );
}

/// 8 threads storing batches of overlapping keys in different orders, beside clears,
/// invalidations, look-ups and purges of the same container: no deadlock and no error.
pub(crate) fn threads_storing_batches(db: &dyn Db) {
    const THREADS: usize = 8;
    const ROUNDS: usize = 40;
    let table = Table::new(db, "batches");
    let clock = clock();
    let backend = open(db, &table.name, &clock);
    let c = store(&backend, "batches");
    let keys: Vec<String> = (0..24).map(|k| format!("shared {k}")).collect();
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (backend, c, clock, keys, barrier) = (&backend, &c, &clock, &keys, &barrier);
            scope.spawn(move || {
                barrier.wait();
                for i in 0..ROUNDS {
                    let value = format!("{t}:{i}");
                    let mut batch: Vec<&str> = keys.iter().map(String::as_str).collect();
                    batch.rotate_left((t * 5 + i) % keys.len());
                    if t % 2 == 1 {
                        batch.reverse();
                    }
                    batch.truncate(8 + (t + i) % 16);
                    let entries: Vec<(&str, &[u8])> =
                        batch.iter().map(|&key| (key, value.as_bytes())).collect();
                    let ttl = (i % 3 == 0).then(|| Duration::from_millis((t % 3) as u64));
                    c.store_many(&entries, ttl).expect("store_many");
                    clock.advance(Duration::from_millis(1));
                    let all: Vec<&str> = keys.iter().map(String::as_str).collect();
                    for value in c
                        .retrieve_many(&all)
                        .expect("retrieve_many")
                        .into_iter()
                        .flatten()
                    {
                        let text = String::from_utf8(value).expect("utf-8");
                        assert!(
                            text.split_once(':').is_some(),
                            "a value no thread wrote: {text:?}"
                        );
                    }
                    match (t + i) % 8 {
                        0 => c.clear().expect("clear"),
                        1 => backend.purge_expired().expect("purge_expired"),
                        2 => c.invalidate(batch[0]).expect("invalidate"),
                        _ => {}
                    }
                }
            });
        }
    });
    let last = ROUNDS - 1;
    c.store_many(&[("a", b"1"), ("b", b"2")], None)
        .expect("store_many after the threads");
    assert_eq!(
        c.retrieve_many(&["a", "b"]).expect("retrieve_many"),
        vec![Some(b"1".to_vec()), Some(b"2".to_vec())],
        "the container works after round {last} of every thread"
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

/// The bound of the tests of bounded calls, as `statement_timeout` sets it.
pub(crate) const BOUND: Duration = Duration::from_millis(500);
/// What a bounded call may take beyond [`BOUND`].
pub(crate) const SLACK: Duration = Duration::from_millis(100);
/// The circuit breaker's back-off in those tests.
const BACKOFF: Duration = Duration::from_millis(200);

/// The configuration of a backend on `url` whose calls are bounded by [`BOUND`].
fn bounded_config(url: &str) -> BackendConfig {
    BackendConfig::new("db", "sql")
        .option("url", url)
        .option("statement_timeout", "500ms")
        .option("connect_timeout", "2s")
        .option("pool_size", "3")
}

/// `call`'s outcome, and how long it took.
fn timed<T>(call: impl FnOnce() -> T) -> (T, Duration) {
    let started = Instant::now();
    let outcome = call();
    (outcome, started.elapsed())
}

/// Checks that `outcome`, of the call `what` that took `took`, is an [`Error::Unavailable`]
/// within [`BOUND`] + [`SLACK`], saying what it was doing, where (`place`), and the bound in
/// words.
fn check_bounded<T: std::fmt::Debug>(
    what: &str,
    doing: &str,
    place: &str,
    outcome: kvcache_core::Result<T>,
    took: Duration,
) {
    let error = match outcome {
        Ok(value) => panic!("{what} succeeded after {took:?}: {value:?}"),
        Err(error) => error,
    };
    let message = full_message(&error);
    eprintln!("{what}: failed after {} ms: {message}", took.as_millis());
    assert!(
        took <= BOUND + SLACK,
        "{what} took {took:?}, more than {BOUND:?} + {SLACK:?}"
    );
    assert!(error.is_unavailable(), "{what}: {error:?}");
    assert!(
        matches!(&error, Error::Unavailable { backend, retry_in: None, .. } if backend == "db"),
        "{what}: {error:?}"
    );
    for words in [place, doing, "within 500 ms"] {
        assert!(message.contains(words), "{what}: no {words:?} in {message}");
    }
    assert!(!message.contains("os error"), "{what}: {message}");
    let bare_number = message.split('(').skip(1).any(|after| {
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && after[digits..].starts_with(')')
    });
    assert!(!bare_number, "{what}: a bare error number in {message}");
}

/// A call, by name, with what its error says it was doing.
type NamedCall<'a> = (
    &'static str,
    &'static str,
    Box<dyn Fn() -> kvcache_core::Result<()> + 'a>,
);

/// Every call of `c` and `backend`, with what its error says it was doing; the reads first.
fn every_call<'a>(backend: &'a dyn Backend, c: &'a dyn Store) -> Vec<NamedCall<'a>> {
    vec![
        (
            "retrieve",
            "reading from",
            Box::new(|| c.retrieve("k").map(drop)),
        ),
        (
            "retrieve_many",
            "reading from",
            Box::new(|| c.retrieve_many(&["k", "other"]).map(drop)),
        ),
        (
            "store",
            "storing into",
            Box::new(|| c.store("k", b"new", None)),
        ),
        (
            "store_many",
            "storing into",
            Box::new(|| c.store_many(&[("a", b"1"), ("b", b"2")], None)),
        ),
        (
            "invalidate",
            "deleting from",
            Box::new(|| c.invalidate("k")),
        ),
        ("clear", "clearing a container in", Box::new(|| c.clear())),
        (
            "purge_expired",
            "purging expired entries from",
            Box::new(|| backend.purge_expired()),
        ),
    ]
}

/// The lease calls of `c`, with what their errors say they were doing.
fn lease_calls(c: &dyn Store) -> Vec<NamedCall<'_>> {
    let ttl = Duration::from_secs(60);
    vec![
        (
            "lease",
            "taking a lease in",
            Box::new(move || c.lease("k", "token", ttl).map(drop)),
        ),
        (
            "release",
            "releasing a lease in",
            Box::new(|| c.release("k", "token")),
        ),
    ]
}

/// A cache whose container `open`, on `backend` as `db`, serves its generator's values when
/// the backend fails.
fn generating_cache(backend: &Arc<dyn Backend>) -> KvCache {
    let config = Config::from_pairs([
        ("container.open.backend", "db"),
        ("container.open.on_backend_error", "generate"),
    ])
    .expect("config");
    let cache = KvCache::builder(config)
        .backend("db", Arc::clone(backend))
        .outage_backoff("db", BACKOFF)
        .build()
        .unwrap_or_else(|error| panic!("build: {error}"));
    cache
        .register_generator("open", |key: &str| format!("fresh {key}"))
        .expect("register_generator");
    cache
}

/// Checks that `open.get(key)` serves the generator's value within [`BOUND`] + [`SLACK`].
fn check_generated(open: &kvcache_core::Container<String>, key: &str) {
    let (value, took) = timed(|| open.get(key));
    eprintln!(
        "get under on_backend_error = generate: {value:?} after {} ms",
        took.as_millis()
    );
    assert_eq!(
        value.unwrap_or_else(|error| panic!("get: {}", full_message(&error))),
        format!("fresh {key}")
    );
    assert!(took <= BOUND + SLACK, "get took {took:?}");
}

/// A lock on the table held by another session (`db`'s [`lock`](Db::lock)): every call that
/// waits for it fails within [`BOUND`] + [`SLACK`] as unavailable, saying where and what it was
/// doing; reads that do not wait for it (`reads_wait` false: SQLite) still succeed; a container
/// under `on_backend_error = generate` serves its generator's value in the bound; and once the
/// lock is gone, the same backend works.
pub(crate) fn a_held_lock_bounds_calls(db: &dyn Db, place: &str, reads_wait: bool) {
    let table = Table::new(db, "lock");
    let config = bounded_config(&db.url()).option("table", &table.name);
    let backend: Arc<dyn Backend> =
        Arc::new(SqlBackend::open(&config).unwrap_or_else(|error| panic!("open: {error}")));
    let c = store(&*backend, "c");
    c.store("k", b"v", None).expect("store");
    let held = db.lock(&table.name);
    for (what, doing, call) in every_call(&*backend, &*c) {
        let (outcome, took) = timed(&call);
        if !reads_wait && doing == "reading from" {
            eprintln!("{what}: {outcome:?} after {} ms", took.as_millis());
            outcome.unwrap_or_else(|error| panic!("{what}: {}", full_message(&error)));
            assert!(took <= BOUND, "{what} took {took:?}");
            continue;
        }
        check_bounded(what, doing, place, outcome, took);
    }
    if reads_wait {
        let cache = generating_cache(&backend);
        let open = cache.container::<String>("open").expect("container");
        check_generated(&open, "g");
    }
    drop(held);
    thread::sleep(BACKOFF);
    assert_eq!(
        c.retrieve("k")
            .unwrap_or_else(|error| panic!("retrieve after the lock: {}", full_message(&error)))
            .as_deref(),
        Some(&b"v"[..])
    );
    c.store("k", b"after", None).expect("store after the lock");
    let cache = generating_cache(&backend);
    let open = cache.container::<String>("open").expect("container");
    assert_eq!(open.get("g").expect("get"), "fresh g");
    assert_eq!(open.peek("g").expect("peek").as_deref(), Some("fresh g"));

    // The same of the leases table, apart: a lock on it bounds the leases.
    let held = db.lock(&table.leases());
    for (what, doing, call) in lease_calls(&*c) {
        let (outcome, took) = timed(&call);
        check_bounded(what, doing, place, outcome, took);
    }
    drop(held);
    assert_eq!(
        c.lease("l", "after", Duration::from_secs(60))
            .unwrap_or_else(|error| panic!("lease after the lock: {}", full_message(&error))),
        Lease::Acquired
    );
    c.release("l", "after").expect("release after the lock");
}

/// Processes stopped with `SIGSTOP`, continued (`SIGCONT`) when dropped.
pub(crate) struct Frozen(Vec<u32>);

impl Frozen {
    /// Stops `pids`, in order.
    pub(crate) fn new(pids: Vec<u32>) -> Self {
        signal("-STOP", &pids);
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", &self.0);
    }
}

fn signal(signal: &str, pids: &[u32]) {
    let status = Command::new("kill")
        .arg(signal)
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("kill");
    assert!(status.success(), "kill {signal} {pids:?}: {status}");
}

/// A backend on `url`, whose server at `127.0.0.1:port` `freeze` stops with `SIGSTOP` until the
/// guard it returns is dropped: every call fails within [`BOUND`] + [`SLACK`] as unavailable,
/// saying where and what it was doing; a container under `on_backend_error = generate` serves
/// its generator's value in the bound; and once the server runs again, the same backend works.
pub(crate) fn a_frozen_server_bounds_calls(url: &str, port: u16, freeze: impl Fn() -> Frozen) {
    let backend: Arc<dyn Backend> = Arc::new(
        SqlBackend::open(&bounded_config(url)).unwrap_or_else(|error| panic!("open: {error}")),
    );
    let c = store(&*backend, "c");
    // Three pooled connections, whose sockets the watchdog has to cut.
    thread::scope(|scope| {
        for i in 0..3 {
            let c = &c;
            scope.spawn(move || {
                for round in 0..20 {
                    let value = format!("{i}:{round}");
                    c.store(&format!("k{i}"), value.as_bytes(), None)
                        .expect("store");
                }
            });
        }
    });
    c.store("k", b"before", None).expect("store");
    let place = format!("127.0.0.1:{port}");

    let frozen = freeze();
    for (what, doing, call) in every_call(&*backend, &*c)
        .into_iter()
        .chain(lease_calls(&*c))
    {
        let (outcome, took) = timed(&call);
        check_bounded(what, doing, &place, outcome, took);
    }
    let cache = generating_cache(&backend);
    let open = cache.container::<String>("open").expect("container");
    check_generated(&open, "g");
    let (value, took) = timed(|| open.get("g2"));
    eprintln!("a get while the breaker is open: {value:?} after {took:?}");
    assert_eq!(value.expect("get"), "fresh g2");
    assert!(
        took < SLACK,
        "the open breaker answers at once, not after {took:?}"
    );

    drop(frozen);
    // Connections opened while it was frozen may still be on their way, or r2d2 waiting to try
    // again (at most `connect_timeout` / 2): a call that finds none fails in its bound.
    let thawed = Instant::now();
    let value = loop {
        let (value, took) = timed(|| c.retrieve("k"));
        eprintln!(
            "{} ms after the server runs again: {value:?} after {} ms",
            thawed.elapsed().as_millis(),
            took.as_millis()
        );
        assert!(took <= BOUND + SLACK, "retrieve took {took:?}");
        match value {
            Ok(value) => break value,
            Err(error) if thawed.elapsed() < Duration::from_secs(10) => {
                assert!(error.is_unavailable(), "{error:?}");
            }
            Err(error) => panic!("retrieve after: {}", full_message(&error)),
        }
    };
    // The store cut by the watchdog had reached the server's socket: the server may have
    // carried it out once it ran again.
    assert!(
        [&b"before"[..], b"new"].contains(&value.as_deref().expect("an entry")),
        "{value:?}"
    );
    c.store("k", b"after", None).expect("store after");
    thread::sleep(BACKOFF);
    assert_eq!(open.get("g3").expect("get"), "fresh g3");
    assert_eq!(open.peek("g3").expect("peek").as_deref(), Some("fresh g3"));
}

/// A backend on `url`, whose server at `127.0.0.1:port` `stop` shuts down and `start` starts
/// again: calls in between fail within [`BOUND`] + [`SLACK`] as unavailable, naming the server,
/// and the first call after it is back succeeds, on the same backend.
pub(crate) fn goes_away_and_comes_back(url: &str, port: u16, stop: impl Fn(), start: impl Fn()) {
    let backend =
        SqlBackend::open(&bounded_config(url)).unwrap_or_else(|error| panic!("open: {error}"));
    let c = store(&backend, "c");
    // Three pooled connections, all of which the outage kills.
    thread::scope(|scope| {
        for i in 0..3 {
            let c = &c;
            scope.spawn(move || {
                for round in 0..20 {
                    let value = format!("{i}:{round}");
                    c.store(&format!("k{i}"), value.as_bytes(), None)
                        .expect("store");
                }
            });
        }
    });
    c.store("k", b"before", None).expect("store");

    stop();
    let place = format!("127.0.0.1:{port}");
    for (what, doing, call) in every_call(&backend, &*c)
        .into_iter()
        .chain(lease_calls(&*c))
    {
        let (outcome, took) = timed(&call);
        check_bounded(what, doing, &place, outcome, took);
    }

    start();
    let (value, took) = timed(|| c.retrieve("k"));
    eprintln!("the first call after the restart: {value:?} after {took:?}");
    assert_eq!(
        value
            .expect("the first call after the server is back")
            .as_deref(),
        Some(&b"before"[..])
    );
    c.store("k", b"after", None).expect("store");
    assert_eq!(
        c.retrieve("k").expect("retrieve").as_deref(),
        Some(&b"after"[..])
    );
}

/// Statements run on `db` when dropped: what undoes a test's changes to the server.
struct Undo<'a> {
    db: &'a dyn Db,
    statements: Vec<String>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for statement in &self.statements {
            if let Err(error) = self.db.execute(statement) {
                eprintln!("could not undo with {statement:?}: {error}");
            }
        }
    }
}

/// The events logged through `tracing` on the threads that set it as their subscriber: level,
/// then each field, errors with their sources.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        let _ = write!(self.0, " {}={}", field.name(), full_message(value));
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(event.metadata().level().to_string());
        event.record(&mut fields);
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(fields.0);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

/// Expired entries read through a backend whose connections cannot delete them (`db`'s
/// [`read_only`](Db::read_only) connections): misses, not errors, through the store and through
/// a container, on the synchronous and the async path; the failed delete is logged at debug
/// level, and the rows stay for `purge_expired` on a backend that can write.
pub(crate) fn expired_entries_that_cannot_be_deleted_are_misses(db: &dyn Db) {
    let table = Table::new(db, "ro");
    let clock = clock();
    let writer = open(db, &table.name, &clock);
    let written = store(&writer, "c");
    for key in ["gone", "gone too"] {
        written
            .store(key, b"v", Some(Duration::from_secs(1)))
            .expect("store");
    }
    written.store("kept", b"v", None).expect("store");
    clock.advance(Duration::from_secs(1));

    let (url, undo) = db
        .read_only(&table.name)
        .expect("read-only connections for this database");
    let _undo = Undo {
        db,
        statements: undo,
    };
    let config = BackendConfig::new("ro", "sql")
        .option("url", url)
        .option("table", &table.name)
        .clock(Arc::new(clock.clone()));
    let reader =
        Arc::new(SqlBackend::open(&config).unwrap_or_else(|error| panic!("open: {error}")));
    let read = store(&*reader, "c");
    read.store("new", b"v", None)
        .expect_err("the reader's connections cannot write");
    let error = read
        .lease("new", "t", Duration::from_secs(60))
        .expect_err("nor take a lease");
    let message = full_message(&error);
    assert!(
        matches!(error, Error::Backend { .. })
            && message.contains(&format!("taking a lease in table {:?}", table.leases())),
        "{message}"
    );

    let events = Events::default();
    tracing::subscriber::with_default(events.clone(), || {
        assert_eq!(
            read.retrieve("gone")
                .unwrap_or_else(|error| panic!("an expired entry: {}", full_message(&error))),
            None,
            "an expired entry is a miss"
        );
    });
    let logged = events.0.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(
        logged.iter().any(|line| line.starts_with("DEBUG")
            && line.contains("deleting them failed")
            && line.contains("deleting expired entries from table")
            && line.contains(&table.name)),
        "the failed delete is logged at debug level: {logged:#?}"
    );
    drop(logged);
    assert_eq!(
        read.retrieve_many(&["gone", "kept", "gone too"])
            .unwrap_or_else(|error| panic!("expired entries: {}", full_message(&error))),
        vec![None, Some(b"v".to_vec()), None],
        "expired entries are misses in a batch too"
    );

    let runtime = kvcache_core::runtime().expect("kvcache's runtime");
    let space = reader.open("c").expect("open");
    let awaited = space.async_store();
    assert_eq!(
        runtime
            .block_on(awaited.retrieve("gone"))
            .unwrap_or_else(|error| panic!("async: {}", full_message(&error))),
        None,
        "an expired entry is a miss on the async path"
    );
    assert_eq!(
        runtime
            .block_on(awaited.retrieve_many(&["gone too", "kept"]))
            .unwrap_or_else(|error| panic!("async: {}", full_message(&error))),
        vec![None, Some(b"v".to_vec())]
    );

    let cache = KvCache::builder(Config::default())
        .backend("ro", Arc::clone(&reader) as Arc<dyn Backend>)
        .build()
        .expect("a cache on the reader");
    cache
        .create_container("c", "ro", ContainerOptions::default(), None)
        .expect("create_container");
    let container = cache.container::<String>("c").expect("container");
    assert_eq!(
        container
            .peek("gone")
            .unwrap_or_else(|error| panic!("peek: {}", full_message(&error))),
        None
    );
    let error = container.get("gone too").expect_err("no generator");
    assert!(
        error.is_not_found(),
        "get is a miss: {}",
        full_message(&error)
    );
    let container = cache.async_container::<String>("c").expect("container");
    runtime.block_on(async {
        assert_eq!(
            container
                .peek("gone")
                .await
                .unwrap_or_else(|error| panic!("async peek: {}", full_message(&error))),
            None
        );
        let error = container.get("gone too").await.expect_err("no generator");
        assert!(
            error.is_not_found(),
            "async get is a miss: {}",
            full_message(&error)
        );
    });

    assert_eq!(db.count(&table.name), 3, "the expired rows are still there");
    writer.purge_expired().expect("purge_expired");
    assert_eq!(
        db.count(&table.name),
        1,
        "purged by a backend that can write"
    );
}
