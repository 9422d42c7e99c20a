//! The sql backend on MySQL/MariaDB (`KVCACHE_TEST_MYSQL_URL`, default
//! `mysql://root@127.0.0.1:3306/test`).

mod common;
mod mariadb_server;

use std::any::Any;
use std::net::TcpListener;

use diesel::connection::SimpleConnection;
use diesel::{Connection, MysqlConnection, RunQueryDsl};
use sha2::{Digest, Sha256};

use common::{Count, Db};

struct Mysql {
    url: String,
}

impl Mysql {
    fn from_env() -> Option<Self> {
        let url =
            common::service_url("KVCACHE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")?;
        Some(Mysql { url })
    }

    fn connect(&self) -> Result<MysqlConnection, String> {
        let url = self.url.replacen("mariadb://", "mysql://", 1);
        MysqlConnection::establish(&url).map_err(|error| error.to_string())
    }
}

impl Db for Mysql {
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
        format!("X'{}'", common::hex(bytes))
    }

    fn quote(&self, table: &str) -> String {
        format!("`{table}`")
    }

    /// `LOCK TABLES ... WRITE`: no other session reads or writes the table.
    fn lock(&self, table: &str) -> Box<dyn Any> {
        let mut connection = self.connect().expect("connect");
        connection
            .batch_execute(&format!("LOCK TABLES {} WRITE", self.quote(table)))
            .expect("lock the table");
        Box::new(connection)
    }

    /// The same URL as a new user, without a password, granted `SELECT` on `table` only.
    fn read_only(&self, table: &str) -> Option<(String, Vec<String>)> {
        let user = format!("kvro_{}", &common::hex(&Sha256::digest(table))[..16]);
        let account = format!("'{user}'@'%'");
        self.execute(&format!(
            "DROP USER IF EXISTS {account}; CREATE USER {account}; \
             GRANT SELECT ON {} TO {account}",
            self.quote(table)
        ))
        .expect("a user that can only read the table");
        let (scheme, rest) = self.url.split_once("://").expect("a URL");
        let host = rest.split_once('@').map_or(rest, |(_, host)| host);
        Some((
            format!("{scheme}://{user}@{host}"),
            vec![format!("DROP USER IF EXISTS {account}")],
        ))
    }
}

#[test]
fn passes_the_conformance_suite() {
    let Some(db) = Mysql::from_env() else { return };
    common::conformance(&db);
}

#[test]
fn keys_of_any_length_and_hash_collisions() {
    let Some(db) = Mysql::from_env() else { return };
    common::long_keys(&db);
}

#[test]
fn tables_are_isolated() {
    let Some(db) = Mysql::from_env() else { return };
    common::tables_are_isolated(&db);
}

#[test]
fn containers_share_a_table() {
    let Some(db) = Mysql::from_env() else { return };
    common::containers_share_a_table(&db);
}

#[test]
fn mariadb_urls_work_too() {
    let Some(db) = Mysql::from_env() else { return };
    let db = Mysql {
        url: db.url.replacen("mysql://", "mariadb://", 1),
    };
    assert!(db.url.starts_with("mariadb://"), "{}", db.url);
    common::tables_are_isolated(&db);
}

#[test]
fn a_table_with_other_columns_is_an_error_and_left_alone() {
    let Some(db) = Mysql::from_env() else { return };
    common::a_foreign_table_is_left_alone(&db);
}

#[test]
fn batches_of_many_large_and_repeated_entries() {
    let Some(db) = Mysql::from_env() else { return };
    common::batches(&db);
}

#[test]
fn threads_storing_batches() {
    let Some(db) = Mysql::from_env() else { return };
    common::threads_storing_batches(&db);
}

#[test]
fn threads_on_overlapping_keys() {
    let Some(db) = Mysql::from_env() else { return };
    common::threads_on_overlapping_keys(&db);
}

#[test]
fn leases_beside_the_entries() {
    let Some(db) = Mysql::from_env() else { return };
    common::leases_beside_entries(&db);
}

#[test]
fn threads_racing_for_a_lease() {
    let Some(db) = Mysql::from_env() else { return };
    common::threads_racing_for_a_lease(&db);
}

#[test]
fn expired_entries_for_a_user_who_cannot_delete_are_misses() {
    let Some(db) = Mysql::from_env() else { return };
    common::expired_entries_that_cannot_be_deleted_are_misses(&db);
}

#[test]
fn a_closed_port_is_a_clear_error_without_the_password() {
    let port = common::closed_port();
    let url = format!("mysql://kvuser:s3cret-pw@127.0.0.1:{port}/cachedb");
    common::unreachable(&url, port, "cachedb", "s3cret-pw");
}

#[test]
fn a_silent_server_is_an_error_within_connect_timeout() {
    // The kernel accepts the connection; nothing ever answers it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = listener.local_addr().expect("its address").port();
    let url = format!("mariadb://kvuser:s3cret-pw@127.0.0.1:{port}/cachedb");
    common::unreachable(&url, port, "cachedb", "s3cret-pw");
}

#[test]
fn a_table_lock_held_by_another_session_bounds_every_call() {
    let Some(db) = Mysql::from_env() else { return };
    let authority = db.url.split_once('@').map_or("", |(_, rest)| rest);
    let host_port = authority.split('/').next().unwrap_or(authority);
    common::a_held_lock_bounds_calls(&db, &format!("MySQL at {host_port}"), true);
}

#[test]
fn a_frozen_server_bounds_every_call() {
    let Some(server) = mariadb_server::Server::start() else {
        return;
    };
    common::a_frozen_server_bounds_calls(&server.url(), server.port, || server.freeze());
}

#[test]
fn a_server_that_goes_away_and_comes_back() {
    let Some(server) = mariadb_server::Server::start() else {
        return;
    };
    common::goes_away_and_comes_back(
        &server.url(),
        server.port,
        || server.stop(),
        || server.start_again(),
    );
}

#[test]
fn max_entries_holds_over_the_table() {
    let Some(db) = Mysql::from_env() else {
        return;
    };
    common::upkeep::max_entries_holds_over_the_table(&db);
}

#[test]
fn writes_reclaim_expired_rows() {
    let Some(db) = Mysql::from_env() else {
        return;
    };
    common::upkeep::writes_reclaim_expired_rows(&db);
}

#[test]
fn a_failed_upkeep_fails_no_write() {
    let Some(db) = Mysql::from_env() else {
        return;
    };
    common::upkeep::a_failed_upkeep_fails_no_write(
        &db,
        "CREATE TRIGGER `{table}_no_delete` BEFORE DELETE ON `{table}` FOR EACH ROW \
         SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'no deletes'",
    );
}
