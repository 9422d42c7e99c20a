//! The sql backend on a SQLite file.

mod common;

use std::any::Any;
use std::path::PathBuf;

use diesel::connection::SimpleConnection;
use diesel::{Connection, RunQueryDsl, SqliteConnection};
use kvcache_core::BackendConfig;
use kvcache_sql::SqlBackend;

use common::{Count, Db};

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Sqlite {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("kv.sqlite3");
        Sqlite { _dir: dir, path }
    }

    /// A connection of the test's own, which waits for the backend's locks (a checkpoint of
    /// its last connection closing, say) rather than failing at once.
    fn connect(&self) -> Result<SqliteConnection, String> {
        let path = self.path.to_str().expect("a UTF-8 path");
        let mut connection =
            SqliteConnection::establish(path).map_err(|error| error.to_string())?;
        connection
            .batch_execute("PRAGMA busy_timeout = 5000")
            .map_err(|error| error.to_string())?;
        Ok(connection)
    }
}

impl Db for Sqlite {
    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    /// `sqlite:///` and the absolute path: four slashes.
    fn sqlalchemy_url(&self) -> String {
        format!("sqlite:///{}", self.path.display())
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
        format!("X'{}'", common::hex(bytes))
    }

    fn quote(&self, table: &str) -> String {
        format!("\"{table}\"")
    }

    /// `BEGIN EXCLUSIVE`: no other connection writes the file (readers go on: it is in WAL
    /// mode).
    fn lock(&self, _table: &str) -> Box<dyn Any> {
        let mut connection = self.connect().expect("connect");
        connection
            .batch_execute("BEGIN EXCLUSIVE")
            .expect("lock the database");
        Box::new(connection)
    }
}

#[test]
fn passes_the_conformance_suite() {
    common::conformance(&Sqlite::new());
}

#[test]
fn keys_of_any_length_and_hash_collisions() {
    common::long_keys(&Sqlite::new());
}

#[test]
fn tables_are_isolated() {
    common::tables_are_isolated(&Sqlite::new());
}

#[test]
fn containers_share_a_table() {
    common::containers_share_a_table(&Sqlite::new());
}

#[test]
fn a_table_with_other_columns_is_an_error_and_left_alone() {
    common::a_foreign_table_is_left_alone(&Sqlite::new());
}

#[test]
fn batches_of_many_large_and_repeated_entries() {
    common::batches(&Sqlite::new());
}

#[test]
fn threads_storing_batches() {
    common::threads_storing_batches(&Sqlite::new());
}

#[test]
fn threads_on_overlapping_keys() {
    common::threads_on_overlapping_keys(&Sqlite::new());
}

#[test]
fn leases_beside_the_entries() {
    common::leases_beside_entries(&Sqlite::new());
}

#[test]
fn threads_racing_for_a_lease() {
    common::threads_racing_for_a_lease(&Sqlite::new());
}

#[test]
fn another_writers_lock_bounds_every_write() {
    let db = Sqlite::new();
    let place = format!("SQLite file {:?}", db.path.display().to_string());
    common::a_held_lock_bounds_calls(&db, &place, false);
}

#[test]
fn a_file_in_a_missing_directory_is_an_error_naming_it() {
    let db = Sqlite::new();
    let path = db.path.with_file_name("missing").join("kv.sqlite3");
    let url = format!("sqlite://{}", path.display());
    let config = BackendConfig::new("db", "sql")
        .option("url", url)
        .option("connect_timeout", "1s");
    let error = SqlBackend::open(&config).expect_err("no such directory");
    let message = common::full_message(&error);
    assert!(
        message.contains(&format!("SQLite file {:?}", path.display().to_string())),
        "{message}"
    );
}

/// `sqlalchemy.url` follows SQLAlchemy: `sqlite:///PATH` is relative to the working directory,
/// `sqlite:////PATH` absolute; `url` takes `sqlite://PATH` as written.
#[test]
fn sqlalchemy_urls_are_relative_after_three_slashes_and_absolute_after_four() {
    let db = Sqlite::new();
    let absolute = db.path.to_str().expect("a UTF-8 path");
    let absolute = absolute.strip_prefix('/').expect("an absolute path");
    // The same file, from the working directory: up to the root, then down.
    let cwd = std::env::current_dir().expect("the working directory");
    let relative = format!("{}{absolute}", "../".repeat(cwd.components().count() - 1));
    for (key, url) in [
        ("sqlalchemy.url", format!("sqlite:///{relative}")),
        ("sqlalchemy.url", format!("sqlite:////{absolute}")),
        ("url", format!("sqlite://{relative}")),
        ("url", format!("sqlite:///{absolute}")),
    ] {
        let config = BackendConfig::new("db", "sql")
            .option(key, &url)
            .option("table", format!("kv_{}", key.len()));
        let backend = SqlBackend::open(&config).unwrap_or_else(|error| panic!("{url}: {error}"));
        common::store(&backend, "c")
            .store(&url, b"here", None)
            .expect("store");
    }
    assert_eq!(
        db.count("kv_14"),
        2,
        "both sqlalchemy.url rows are in the one file"
    );
    assert_eq!(db.count("kv_3"), 2, "both url rows are in the one file");
}

#[test]
fn max_entries_holds_over_the_table() {
    common::upkeep::max_entries_holds_over_the_table(&Sqlite::new());
}

#[test]
fn writes_reclaim_expired_rows() {
    common::upkeep::writes_reclaim_expired_rows(&Sqlite::new());
}

#[test]
fn a_failed_upkeep_fails_no_write() {
    common::upkeep::a_failed_upkeep_fails_no_write(
        &Sqlite::new(),
        "CREATE TRIGGER \"{table}_no_delete\" BEFORE DELETE ON \"{table}\" \
         BEGIN SELECT RAISE(ABORT, 'no deletes'); END",
    );
}
