//! The sql backend on PostgreSQL: the shared one (`KVCACHE_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`) and a private cluster the tests stop and start.

mod cluster;
mod common;

use std::any::Any;
use std::net::TcpListener;
use std::sync::{Mutex, PoisonError};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection, RunQueryDsl};
use kvcache_core::BackendConfig;
use kvcache_sql::SqlBackend;

use common::{Count, Db};

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

    fn connect(&self) -> Result<PgConnection, String> {
        PgConnection::establish(&self.url).map_err(|error| error.to_string())
    }
}

impl Db for Postgres {
    fn url(&self) -> String {
        self.url.clone()
    }

    fn execute(&self, sql: &str) -> Result<(), String> {
        self.connect()?
            .batch_execute(sql)
            .map_err(|error| error.to_string())
    }

    fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM {}", self.quote(table));
        let mut connection = self.connect().expect("connect");
        diesel::sql_query(sql)
            .get_result::<Count>(&mut connection)
            .expect("count")
            .n
    }

    fn bytes_literal(&self, bytes: &[u8]) -> String {
        format!("'\\x{}'::bytea", common::hex(bytes))
    }

    fn quote(&self, table: &str) -> String {
        format!("\"{table}\"")
    }

    /// `LOCK TABLE ... IN ACCESS EXCLUSIVE MODE` in a transaction left open: no other session
    /// reads or writes the table.
    fn lock(&self, table: &str) -> Box<dyn Any> {
        let mut connection = self.connect().expect("connect");
        connection
            .batch_execute(&format!(
                "BEGIN; LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                self.quote(table)
            ))
            .expect("lock the table");
        Box::new(connection)
    }

    /// The same URL, with libpq's `options` making every transaction of its connections
    /// read-only (`default_transaction_read_only`).
    fn read_only(&self, _table: &str) -> Option<(String, Vec<String>)> {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        let options = "options=-c%20default_transaction_read_only%3Don";
        Some((format!("{}{separator}{options}", self.url), Vec::new()))
    }
}

#[test]
fn passes_the_conformance_suite() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::conformance(&db);
}

#[test]
fn keys_of_any_length_and_hash_collisions() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::long_keys(&db);
}

#[test]
fn tables_are_isolated() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::tables_are_isolated(&db);
}

#[test]
fn containers_share_a_table() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::containers_share_a_table(&db);
}

#[test]
fn a_table_with_other_columns_is_an_error_and_left_alone() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::a_foreign_table_is_left_alone(&db);
}

#[test]
fn batches_of_many_large_and_repeated_entries() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::batches(&db);
}

#[test]
fn threads_storing_batches() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::threads_storing_batches(&db);
}

#[test]
fn threads_on_overlapping_keys() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::threads_on_overlapping_keys(&db);
}

#[test]
fn leases_beside_the_entries() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::leases_beside_entries(&db);
}

#[test]
fn threads_racing_for_a_lease() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::threads_racing_for_a_lease(&db);
}

#[test]
fn expired_entries_on_a_read_only_database_are_misses() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::expired_entries_that_cannot_be_deleted_are_misses(&db);
}

#[test]
fn a_closed_port_is_a_clear_error_without_the_password() {
    let port = common::closed_port();
    let url = format!("postgres://kvuser:s3cret-pw@127.0.0.1:{port}/cachedb");
    common::unreachable(&url, port, "cachedb", "s3cret-pw");
}

#[test]
fn a_silent_server_is_an_error_within_connect_timeout() {
    // The kernel accepts the connection; nothing ever answers it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let url = format!("postgresql://kvuser:s3cret-pw@127.0.0.1:{port}/cachedb");
    common::unreachable(&url, port, "cachedb", "s3cret-pw");
}

/// Every line logged through `log` while the test binary runs.
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = format!("{} {}: {}", record.level(), record.target(), record.args());
        LOGGED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn flush(&self) {}
}

#[test]
fn a_password_libpq_would_echo_is_in_no_error_and_no_log_line() {
    log::set_logger(&Capture).expect("the only logger");
    log::set_max_level(log::LevelFilter::Trace);
    // libpq's message for a bad percent-encoding quotes the whole token: "s3cret%zz".
    let port = common::closed_port();
    let url = format!("postgres://kvuser:s3cret%zz@127.0.0.1:{port}/cachedb");
    let config = BackendConfig::new("db", "sql")
        .option("url", url)
        .option("connect_timeout", "1s");
    let error = SqlBackend::open(&config).expect_err("a bad URL");
    let message = common::full_message(&error);
    assert!(
        message.contains("invalid percent-encoded token"),
        "{message}"
    );
    assert!(
        !message.contains("s3cret") && !format!("{error:?}").contains("s3cret"),
        "{message}"
    );
    let logged = LOGGED.lock().unwrap_or_else(PoisonError::into_inner);
    assert!(
        logged.iter().all(|line| !line.contains("s3cret")),
        "{logged:#?}"
    );
}

#[test]
fn the_password_is_not_in_debug_output() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    // Trust authentication ignores the password, so this one connects.
    let url = db.url.replacen("postgres@", "postgres:s3cret-pw@", 1);
    assert!(
        url.contains("s3cret-pw"),
        "KVCACHE_TEST_POSTGRES_URL names no user `postgres`"
    );
    let table = common::Table::new(&db, "debug");
    let config = BackendConfig::new("db", "sql")
        .option("url", url)
        .option("table", &table.name);
    let backend = SqlBackend::open(&config).unwrap_or_else(|error| panic!("open: {error}"));
    let debug = format!("{backend:?}");
    assert!(
        debug.contains("PostgreSQL at") && !debug.contains("s3cret"),
        "{debug}"
    );
}

#[test]
fn a_table_lock_held_by_another_session_bounds_every_call() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    let authority = db.url.split_once('@').map_or("", |(_, rest)| rest);
    let host_port = authority.split('/').next().unwrap_or(authority);
    common::a_held_lock_bounds_calls(&db, &format!("PostgreSQL at {host_port}"), true);
}

#[test]
fn a_frozen_server_bounds_every_call() {
    let Some(cluster) = cluster::Cluster::start() else {
        return;
    };
    common::a_frozen_server_bounds_calls(&cluster.url(), cluster.port, || cluster.freeze());
}

#[test]
fn a_server_that_goes_away_and_comes_back() {
    let Some(cluster) = cluster::Cluster::start() else {
        return;
    };
    common::goes_away_and_comes_back(
        &cluster.url(),
        cluster.port,
        || cluster.stop(),
        || cluster.start_again(),
    );
}

#[test]
fn max_entries_holds_over_the_table() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::upkeep::max_entries_holds_over_the_table(&db);
}

#[test]
fn writes_reclaim_expired_rows() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    common::upkeep::writes_reclaim_expired_rows(&db);
}

#[test]
fn a_failed_upkeep_fails_no_write() {
    let Some(db) = Postgres::from_env() else {
        return;
    };
    // The function stays after the table is dropped: it is shared by every run, and harmless.
    common::upkeep::a_failed_upkeep_fails_no_write(
        &db,
        "CREATE OR REPLACE FUNCTION kvt_no_delete() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'no deletes'; END $$; \
         CREATE TRIGGER \"{table}_no_delete\" BEFORE DELETE ON \"{table}\" \
         FOR EACH ROW EXECUTE FUNCTION kvt_no_delete()",
    );
}
