//! `Backend::watch`: PostgreSQL's `LISTEN/NOTIFY` channel between backend objects on one table
//! (`KVCACHE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`), and no
//! channel on MySQL/MariaDB and SQLite.

// Without PostgreSQL, no change ever comes: the waiting half of `Seen` is unused.
#![cfg_attr(
    not(feature = "postgres"),
    allow(dead_code, reason = "only PostgreSQL delivers changes")
)]

#[cfg(feature = "postgres")]
#[allow(
    dead_code,
    reason = "the tests here restart the cluster, never freeze it"
)]
mod cluster;
mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kvcache_core::{Backend, BackendConfig, Change, Watcher};
use kvcache_sql::SqlBackend;

/// How long a change may take to reach the other backend object.
const WITHIN: Duration = Duration::from_secs(1);

/// The changes one watcher was given, in order, with when each came.
#[derive(Default)]
struct Seen {
    changes: Mutex<VecDeque<(Change, Instant)>>,
    came: Condvar,
}

impl Seen {
    fn new() -> Arc<Self> {
        Arc::new(Seen::default())
    }

    fn watcher(self: &Arc<Self>) -> Watcher {
        let seen = Arc::clone(self);
        Arc::new(move |change| {
            let mut changes = seen.changes.lock().unwrap_or_else(PoisonError::into_inner);
            changes.push_back((change, Instant::now()));
            seen.came.notify_all();
        })
    }

    /// The next change and when it came, waiting up to `within` for it.
    fn next_at(&self, within: Duration) -> Option<(Change, Instant)> {
        let deadline = Instant::now() + within;
        let mut changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(change) = changes.pop_front() {
                return Some(change);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            changes = self
                .came
                .wait_timeout(changes, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn next(&self, within: Duration) -> Option<Change> {
        self.next_at(within).map(|(change, _)| change)
    }

    /// The next change, which must come within [`WITHIN`].
    fn expect(&self, what: &str) -> Change {
        self.next(WITHIN)
            .unwrap_or_else(|| panic!("no change within {WITHIN:?} after {what}"))
    }

    /// The keys of the next change, sorted: it must be [`Change::Keys`].
    fn keys(&self, what: &str) -> Vec<String> {
        match self.expect(what) {
            Change::Keys(mut keys) => {
                keys.sort();
                keys
            }
            other => panic!("{what}: expected keys, got {other:?}"),
        }
    }

    fn pending(&self) -> Vec<Change> {
        let changes = self.changes.lock().unwrap_or_else(PoisonError::into_inner);
        changes.iter().map(|(change, _)| change.clone()).collect()
    }
}

fn open(url: &str, table: &str) -> SqlBackend {
    let config = BackendConfig::new("db", "sql")
        .option("url", url)
        .option("table", table);
    SqlBackend::open(&config).unwrap_or_else(|error| panic!("open: {error}"))
}

fn watch(backend: &SqlBackend, container: &str, seen: &Arc<Seen>) -> bool {
    backend
        .watch(container, seen.watcher())
        .unwrap_or_else(|error| panic!("watch({container:?}): {}", common::full_message(&error)))
}

#[cfg(feature = "postgres")]
mod postgres {
    use std::any::Any;

    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection, RunQueryDsl};

    use super::*;
    use crate::common::{Count, Db, Table};

    struct Postgres {
        url: String,
    }

    impl Postgres {
        fn from_env() -> Option<Self> {
            let url = common::service_url(
                "KVCACHE_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            )?;
            Some(Postgres { url })
        }

        fn connect(&self) -> PgConnection {
            PgConnection::establish(&self.url).expect("connect")
        }

        /// How many sessions listen on `table`'s channel.
        fn listeners(&self, table: &str) -> i64 {
            let sql = format!(
                "SELECT COUNT(*) AS n FROM pg_stat_activity \
                 WHERE application_name = 'kvcache-listener' \
                 AND query = 'LISTEN \"kvcache_{table}\"'"
            );
            diesel::sql_query(sql)
                .get_result::<Count>(&mut self.connect())
                .expect("count the listeners")
                .n
        }

        /// Terminates the listeners of `table`'s channel: how many there were.
        fn terminate_listeners(&self, table: &str) -> i64 {
            let sql = format!(
                "SELECT COUNT(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
                 WHERE application_name = 'kvcache-listener' \
                 AND query = 'LISTEN \"kvcache_{table}\"'"
            );
            diesel::sql_query(sql)
                .get_result::<Count>(&mut self.connect())
                .expect("terminate")
                .n
        }
    }

    impl Db for Postgres {
        fn url(&self) -> String {
            self.url.clone()
        }

        fn execute(&self, sql: &str) -> Result<(), String> {
            self.connect()
                .batch_execute(sql)
                .map_err(|error| error.to_string())
        }

        fn count(&self, table: &str) -> i64 {
            let sql = format!("SELECT COUNT(*) AS n FROM \"{table}\"");
            diesel::sql_query(sql)
                .get_result::<Count>(&mut self.connect())
                .expect("count")
                .n
        }

        fn bytes_literal(&self, bytes: &[u8]) -> String {
            format!("'\\x{}'::bytea", common::hex(bytes))
        }

        fn quote(&self, table: &str) -> String {
            format!("\"{table}\"")
        }

        fn lock(&self, _table: &str) -> Box<dyn Any> {
            unimplemented!("not needed here")
        }
    }

    /// Stores, batches, removals and clears of one backend object reach the other's watcher,
    /// never its own; a container this object did not watch publishes nothing.
    #[test]
    fn changes_reach_the_other_instance_only() {
        let Some(db) = Postgres::from_env() else {
            return;
        };
        let table = Table::new(&db, "watch");
        let (a, b) = (open(&db.url, &table.name), open(&db.url, &table.name));
        let (seen_a, seen_b, seen_b_unwatched) = (Seen::new(), Seen::new(), Seen::new());
        assert!(watch(&b, "c", &seen_b));
        // B watches `u`, A does not: A's writes of `u` publish nothing.
        assert!(watch(&b, "u", &seen_b_unwatched));
        assert!(watch(&a, "c", &seen_a));
        let (c, u) = (common::store(&a, "c"), common::store(&a, "u"));

        u.store("k", b"v", None).expect("store u");
        c.store("k", b"v", None).expect("store");
        assert_eq!(seen_b.keys("store"), ["k"]);
        // Notifications come in commit order: `u`'s would have come first.
        assert_eq!(seen_b_unwatched.pending(), []);
        assert_eq!(c.retrieve("k").unwrap().as_deref(), Some(&b"v"[..]));

        c.store_many(&[("x", b"1"), ("y", b"2"), ("x", b"3")], None)
            .expect("store_many");
        assert_eq!(seen_b.keys("store_many"), ["x", "y"]);
        c.invalidate("k").expect("invalidate");
        assert_eq!(seen_b.keys("invalidate"), ["k"]);
        c.clear().expect("clear");
        assert_eq!(seen_b.expect("clear"), Change::Cleared);

        // And the other way: B's writes reach A, not B.
        common::store(&b, "c")
            .store("z", b"v", None)
            .expect("B stores");
        assert_eq!(seen_a.keys("B's store"), ["z"]);
        c.store("marker", b"v", None).expect("store");
        assert_eq!(seen_b.keys("A's store after B's"), ["marker"]);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(seen_a.pending(), [], "A's own changes never reach A");
        assert_eq!(seen_b.pending(), [], "nor B's B");
        assert_eq!(seen_b_unwatched.pending(), []);
    }

    /// Keys of any bytes arrive as they were; batches too large for one payload are split,
    /// and those too large for 16, or keys too long for one, flush the container.
    #[test]
    fn odd_long_and_many_keys() {
        let Some(db) = Postgres::from_env() else {
            return;
        };
        let table = Table::new(&db, "watchkeys");
        let (a, b) = (open(&db.url, &table.name), open(&db.url, &table.name));
        let (seen_a, seen_b) = (Seen::new(), Seen::new());
        assert!(watch(&b, "c ä%", &seen_b));
        assert!(watch(&a, "c ä%", &seen_a));
        let c = common::store(&a, "c ä%");

        let odd = "a b%\n日本\0'\"\\ ?$1";
        c.store(odd, b"v", None).expect("store");
        assert_eq!(seen_b.keys("an odd key"), [odd]);

        let keys: Vec<String> = (0..300).map(|i| format!("key-{i:046}")).collect();
        let entries: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        c.store_many(&entries, None).expect("store_many");
        let mut got = seen_b.keys("300 keys");
        got.extend(seen_b.keys("300 keys, the second payload"));
        got.sort();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(got, want, "two payloads");

        let many: Vec<String> = (0..3000).map(|i| format!("key-{i:046}")).collect();
        let entries: Vec<(&str, &[u8])> = many.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        c.store_many(&entries, None).expect("store_many of 3000");
        assert_eq!(seen_b.expect("3000 keys"), Change::Cleared, "a flush");

        let long = "k".repeat(9000);
        c.store(&long, b"v", None).expect("a long key");
        assert_eq!(seen_b.expect("a 9000-byte key"), Change::Cleared);
        c.invalidate(&long).expect("invalidate a long key");
        assert_eq!(seen_b.expect("removing it"), Change::Cleared);
        assert_eq!(seen_b.pending(), []);
        assert_eq!(seen_a.pending(), []);
    }

    /// A listener whose connection is terminated gives its watchers `Lost`, reconnects, gives
    /// them `Lost` again once it listens, and delivers changes as before.
    #[test]
    fn a_terminated_listener_is_lost_then_listens_again() {
        let Some(db) = Postgres::from_env() else {
            return;
        };
        let table = Table::new(&db, "watchlost");
        let (a, b) = (open(&db.url, &table.name), open(&db.url, &table.name));
        let (seen_a, seen_b) = (Seen::new(), Seen::new());
        assert!(watch(&b, "c", &seen_b));
        assert!(watch(&a, "c", &seen_a));
        let c = common::store(&a, "c");
        c.store("before", b"v", None).expect("store");
        assert_eq!(seen_b.keys("store"), ["before"]);

        assert_eq!(db.terminate_listeners(&table.name), 2, "A's and B's");
        assert_eq!(seen_b.expect("terminating"), Change::Lost);
        assert_eq!(
            seen_b.next(Duration::from_secs(5)),
            Some(Change::Lost),
            "once it listens again"
        );
        c.store("after", b"v", None).expect("store");
        assert_eq!(seen_b.keys("a store after reconnecting"), ["after"]);
        assert_eq!(seen_a.next(WITHIN), Some(Change::Lost));
        assert_eq!(seen_a.next(Duration::from_secs(5)), Some(Change::Lost));
        assert_eq!(seen_a.pending(), []);
    }

    /// One listener per backend object, however many containers it watches, started by the
    /// first `watch`; dropping the backend ends it and closes its connection.
    #[test]
    fn one_listener_per_backend_object_until_it_is_dropped() {
        let Some(db) = Postgres::from_env() else {
            return;
        };
        let table = Table::new(&db, "watchdrop");
        let (a, b) = (open(&db.url, &table.name), open(&db.url, &table.name));
        assert_eq!(db.listeners(&table.name), 0, "none before `watch`");
        let seen = Seen::new();
        for container in ["c", "d", "e"] {
            assert!(watch(&a, container, &seen));
        }
        assert!(watch(&b, "c", &seen));
        assert_eq!(db.listeners(&table.name), 2);
        drop(a);
        let deadline = Instant::now() + Duration::from_secs(2);
        while db.listeners(&table.name) > 1 {
            assert!(Instant::now() < deadline, "A's listener outlived A");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(b);
        while db.listeners(&table.name) > 0 {
            assert!(Instant::now() < deadline, "B's listener outlived B");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(seen.pending(), []);
    }

    /// A server that stops and starts again: `Lost`, then, after the back-off, `Lost` once
    /// listening again, and changes as before.
    #[test]
    fn a_restarted_server_is_lost_then_listened_to_again() {
        let Some(cluster) = crate::cluster::Cluster::start() else {
            return;
        };
        let url = cluster.url();
        let (a, b) = (open(&url, "kvcache"), open(&url, "kvcache"));
        let (seen_a, seen_b) = (Seen::new(), Seen::new());
        assert!(watch(&b, "c", &seen_b));
        assert!(watch(&a, "c", &seen_a));
        cluster.stop();
        assert_eq!(seen_b.next(Duration::from_secs(5)), Some(Change::Lost));
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(seen_b.pending(), [], "nothing while the server is away");
        cluster.start_again();
        assert_eq!(
            seen_b.next(Duration::from_secs(10)),
            Some(Change::Lost),
            "once it listens again"
        );
        let c = common::store(&a, "c");
        c.store("k", b"v", None)
            .expect("store once the server is back");
        assert_eq!(seen_b.keys("a store after the restart"), ["k"]);
    }

    /// The Unix socket's path of the local server, when it has one.
    fn unix_socket_url() -> Option<String> {
        let dir = "/var/run/postgresql";
        if !std::path::Path::new(dir).join(".s.PGSQL.5432").exists() {
            eprintln!("SKIPPED: no PostgreSQL socket in {dir}");
            return None;
        }
        Some(format!("postgres://postgres@/test?host={dir}"))
    }

    /// Over a Unix socket, whose socket the listener finds and waits on, as over TCP.
    #[test]
    fn a_listener_over_a_unix_socket() {
        let Some(db) = Postgres::from_env() else {
            return;
        };
        if !db.url.ends_with("127.0.0.1:5432/test") {
            eprintln!("SKIPPED: KVCACHE_TEST_POSTGRES_URL names another server");
            return;
        }
        let Some(socket_url) = unix_socket_url() else {
            return;
        };
        let table = Table::new(&db, "watchunix");
        let (a, b) = (open(&db.url, &table.name), open(&socket_url, &table.name));
        let (seen_a, seen_b) = (Seen::new(), Seen::new());
        assert!(watch(&b, "c", &seen_b));
        assert!(watch(&a, "c", &seen_a));
        common::store(&a, "c")
            .store("k", b"v", None)
            .expect("store");
        assert_eq!(seen_b.keys("store"), ["k"]);
        common::store(&b, "c").clear().expect("clear");
        assert_eq!(seen_a.expect("clear"), Change::Cleared);
        assert_eq!(db.terminate_listeners(&table.name), 2);
        assert_eq!(seen_b.expect("terminating"), Change::Lost);
        assert_eq!(seen_b.next(Duration::from_secs(5)), Some(Change::Lost));
    }

    /// The time each change takes from the start of the write to the other object's
    /// watcher, and the listeners' CPU time idle and busy. Run alone:
    /// `cargo test -p kvcache-sql --all-features --test watch -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run alone, with --nocapture"]
    fn measure_latency_and_cpu() {
        let Some(db) = Postgres::from_env() else {
            return;
        };
        let mut urls = vec![("tcp", db.url.clone())];
        urls.extend(unix_socket_url().map(|url| ("unix socket", url)));
        for (how, listener_url) in urls {
            let table = Table::new(&db, "watchmeasure");
            let (a, b) = (open(&db.url, &table.name), open(&listener_url, &table.name));
            let (seen_a, seen_b) = (Seen::new(), Seen::new());
            assert!(watch(&b, "c", &seen_b));
            assert!(watch(&a, "c", &seen_a));
            let c = common::store(&a, "c");
            let idle = Duration::from_secs(10);
            let before = listener_cpu();
            std::thread::sleep(idle);
            let idle_cpu = listener_cpu() - before;
            let rounds = 2000;
            let (mut whole, mut writes, mut after) = (Vec::new(), Vec::new(), Vec::new());
            let before = listener_cpu();
            let started = Instant::now();
            for i in 0..rounds {
                let start = Instant::now();
                c.store(&format!("k{i}"), b"v", None).expect("store");
                let returned = Instant::now();
                let (_, came) = seen_b.next_at(WITHIN).expect("a change");
                whole.push(came.duration_since(start));
                writes.push(returned.duration_since(start));
                after.push(came.saturating_duration_since(returned));
            }
            let busy = started.elapsed();
            let busy_cpu = listener_cpu() - before;
            // The same writes of a container no one watched: what notifying adds to a write.
            let unwatched = common::store(&a, "unwatched");
            let plain: Vec<Duration> = (0..rounds)
                .map(|i| {
                    let start = Instant::now();
                    unwatched
                        .store(&format!("k{i}"), b"v", None)
                        .expect("store");
                    start.elapsed()
                })
                .collect();
            let quantiles = |mut all: Vec<Duration>| {
                all.sort();
                let at = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
                format!(
                    "p50 {:?}, p99 {:?}, max {:?}",
                    at(0.5),
                    at(0.99),
                    all[all.len() - 1]
                )
            };
            println!(
                "{how}, {rounds} stores:\n  write start to watcher: {}\n  the write (its \
                 commit inside): {}\n  an unwatched write: {}\n  write returned to watcher \
                 (0 when before): {}\n  \
                 listeners' CPU: {:?} in {idle:?} idle ({:.4}% of a core), {:?} in {busy:?} \
                 busy ({:.2}%)",
                quantiles(whole),
                quantiles(writes),
                quantiles(plain),
                quantiles(after),
                idle_cpu,
                idle_cpu.as_secs_f64() / idle.as_secs_f64() * 100.0,
                busy_cpu,
                busy_cpu.as_secs_f64() / busy.as_secs_f64() * 100.0,
            );
        }
    }

    /// The CPU time of this process's listener threads (`kvcache-listen`), from the kernel's
    /// scheduler statistics.
    fn listener_cpu() -> Duration {
        let mut total = 0;
        for task in std::fs::read_dir("/proc/self/task")
            .expect("tasks")
            .flatten()
        {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if comm.trim() == "kvcache-listen" {
                let stat =
                    std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
                total += stat
                    .split_whitespace()
                    .next()
                    .and_then(|ns| ns.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Duration::from_nanos(total)
    }
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_has_no_channel() {
    let dir = tempfile::tempdir().expect("a directory");
    let url = format!("sqlite://{}", dir.path().join("kv.sqlite3").display());
    let backend = open(&url, "kvcache");
    let seen = Seen::new();
    assert!(!watch(&backend, "c", &seen));
    common::store(&backend, "c")
        .store("k", b"v", None)
        .expect("store");
    assert_eq!(seen.pending(), []);
}

#[cfg(feature = "mysql")]
#[test]
fn mysql_and_mariadb_have_no_channel() {
    let Some(url) =
        common::service_url("KVCACHE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
    else {
        return;
    };
    let table = format!(
        "kvt_{}",
        kvcache_core::testkit::unique("watch").replace('-', "_")
    );
    let backend = open(&url, &table);
    let seen = Seen::new();
    assert!(!watch(&backend, "c", &seen));
    common::store(&backend, "c")
        .store("k", b"v", None)
        .expect("store");
    assert_eq!(seen.pending(), []);
    drop(backend);
    let mut conn = <diesel::MysqlConnection as diesel::Connection>::establish(&url.replacen(
        "mariadb://",
        "mysql://",
        1,
    ))
    .expect("connect");
    diesel::connection::SimpleConnection::batch_execute(
        &mut conn,
        &format!("DROP TABLE IF EXISTS `{table}`, `{table}_leases`"),
    )
    .expect("drop the test tables");
}
