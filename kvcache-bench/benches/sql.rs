//! The SQL backend against raw diesel, one group per database (`sql/postgres`, `sql/mysql`,
//! `sql/sqlite`), on a 32-byte `String` and a 1 KiB struct.
//!
//! The peer is the same work done by hand with diesel: the same table, the same SQL text kvcache
//! sends, on a plain r2d2 pool of as many diesel connections that does not test them on
//! check-out; each statement is prepared once per connection and found again in diesel's
//! statement cache by its type. Its key hashes are the key zero-padded to 32 bytes, free to
//! compute, where kvcache computes SHA-256s; its values are encoded by hand in bincode's layout.
//!
//! `cargo bench -p kvcache-bench --bench sql`. `KVCACHE_TEST_POSTGRES_URL` and
//! `KVCACHE_TEST_MYSQL_URL` name the servers (`postgres://postgres@127.0.0.1:5432/test`,
//! `mysql://root@127.0.0.1:3306/test` by default); one that does not answer is skipped with a
//! notice.

// criterion_group! makes an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkGroup, BenchmarkId, Criterion, criterion_group, criterion_main};
use diesel::backend::Backend;
use diesel::connection::SimpleConnection;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::r2d2::{Builder, ConnectionManager, CustomizeConnection, ManageConnection, Pool};
use diesel::serialize::ToSql;
use diesel::sql_types::{BigInt, Binary, HasSqlType, Nullable};
use diesel::{MysqlConnection, PgConnection, QueryResult, RunQueryDsl, SqliteConnection};
use kvcache::{Container, KvCache};
use kvcache_bench::{BATCH, Hand, Kib, keys, kib, service_url, string32};

const POOL_SIZE: u32 = 10;
const TIMEOUT: Duration = Duration::from_secs(5);

// ---- the peer: raw diesel ------------------------------------------------------------------

/// A value bound to one `?`.
#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Bytes(&'a [u8]),
    Expiry(Option<i64>),
}

/// A statement: SQL text with a `?` for each bind. `OP` names it for diesel's statement cache
/// (each pooled connection serves one table); `Row` is the SQL type of its rows.
struct Raw<'a, const OP: u8, Row = ()> {
    sql: &'a str,
    binds: Vec<Value<'a>>,
    row: PhantomData<Row>,
}

impl<'a, const OP: u8, Row> Raw<'a, OP, Row> {
    fn new(sql: &'a str, binds: Vec<Value<'a>>) -> Self {
        Raw {
            sql,
            binds,
            row: PhantomData,
        }
    }
}

impl<DB, const OP: u8, Row> QueryFragment<DB> for Raw<'_, OP, Row>
where
    DB: Backend + HasSqlType<Binary> + HasSqlType<BigInt>,
    [u8]: ToSql<Binary, DB>,
    Option<i64>: ToSql<Nullable<BigInt>, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> QueryResult<()> {
        let mut pieces = self.sql.split('?');
        out.push_sql(pieces.next().unwrap_or_default());
        for (bind, piece) in self.binds.iter().zip(pieces) {
            match bind {
                Value::Bytes(bytes) => out.push_bind_param::<Binary, [u8]>(bytes)?,
                Value::Expiry(at) => out.push_bind_param::<Nullable<BigInt>, Option<i64>>(at)?,
            }
            out.push_sql(piece);
        }
        Ok(())
    }
}

impl<const OP: u8, Row: 'static> QueryId for Raw<'_, OP, Row> {
    type QueryId = Raw<'static, OP, Row>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<const OP: u8, Row> Query for Raw<'_, OP, Row> {
    type SqlType = Row;
}

impl<Conn, const OP: u8, Row> RunQueryDsl<Conn> for Raw<'_, OP, Row> {}

type EntrySql = (Binary, Binary, Nullable<BigInt>);
type Entry = (Vec<u8>, Vec<u8>, Option<i64>);
const SELECT_ONE: u8 = 0;
const SELECT_BATCH: u8 = 1;
const UPSERT: u8 = 2;
const DELETE: u8 = 3;

/// kvcache's statements for the table, as it sends them.
struct Sql {
    select_one: String,
    select_batch: String,
    upsert: String,
    delete: String,
}

impl Sql {
    fn new(database: Database, table: &str) -> Self {
        let quoted = match database {
            Database::Mysql => format!("`{table}`"),
            Database::Postgres | Database::Sqlite => format!("\"{table}\""),
        };
        let select = |count| {
            format!(
                "SELECT entry_key, entry_value, expires_at FROM {quoted} \
                 WHERE container_hash = ? AND container = ? AND key_hash IN ({})",
                vec!["?"; count].join(", ")
            )
        };
        let insert = format!(
            "INSERT INTO {quoted} (container_hash, key_hash, container, entry_key, entry_value, \
             expires_at) VALUES (?, ?, ?, ?, ?, ?)"
        );
        let upsert = match database {
            Database::Mysql => format!(
                "{insert} ON DUPLICATE KEY UPDATE container = VALUES(container), \
                 entry_key = VALUES(entry_key), entry_value = VALUES(entry_value), \
                 expires_at = VALUES(expires_at)"
            ),
            Database::Postgres | Database::Sqlite => format!(
                "{insert} ON CONFLICT (container_hash, key_hash) DO UPDATE SET \
                 container = excluded.container, entry_key = excluded.entry_key, \
                 entry_value = excluded.entry_value, expires_at = excluded.expires_at"
            ),
        };
        Sql {
            select_one: select(1),
            select_batch: select(BATCH),
            upsert,
            delete: format!(
                "DELETE FROM {quoted} WHERE container_hash = ? AND key_hash = ? \
                 AND container = ? AND entry_key = ?"
            ),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Database {
    Postgres,
    Mysql,
    Sqlite,
}

/// A pool of the database's connection type.
enum Connections {
    Postgres(Pool<ConnectionManager<PgConnection>>),
    Mysql(Pool<ConnectionManager<MysqlConnection>>),
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
}

/// Runs `$body` with `$conn` a pooled connection of whichever type `$pool` holds.
macro_rules! on_connection {
    ($pool:expr, |$conn:ident| $body:expr) => {
        match $pool {
            Connections::Postgres(pool) => {
                let $conn = &mut *pool.get().unwrap();
                $body
            }
            Connections::Mysql(pool) => {
                let $conn = &mut *pool.get().unwrap();
                $body
            }
            Connections::Sqlite(pool) => {
                let $conn = &mut *pool.get().unwrap();
                $body
            }
        }
    };
}

/// kvcache's SQLite pragmas on each new connection.
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL;",
            TIMEOUT.as_millis()
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// `text` zero-padded to 32 bytes: the peer's stand-in for a SHA-256.
fn padded(text: &str) -> [u8; 32] {
    let mut hash = [0; 32];
    hash[..text.len()].copy_from_slice(text.as_bytes());
    hash
}

fn now_millis() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// A pool like kvcache's: as many connections, none tested on check-out.
fn builder<M: ManageConnection>() -> Builder<M> {
    Pool::builder()
        .max_size(POOL_SIZE)
        .min_idle(Some(1))
        .connection_timeout(TIMEOUT)
        .test_on_check_out(false)
}

/// The same work as kvcache's, by hand.
struct Peer {
    connections: Connections,
    sql: Sql,
}

impl Peer {
    fn new(database: Database, url: &str, table: &str) -> Self {
        let connections = match database {
            Database::Postgres => {
                Connections::Postgres(builder().build(ConnectionManager::new(url)).unwrap())
            }
            Database::Mysql => Connections::Mysql(
                builder()
                    .build(ConnectionManager::new(url.replacen(
                        "mariadb://",
                        "mysql://",
                        1,
                    )))
                    .unwrap(),
            ),
            Database::Sqlite => Connections::Sqlite(
                builder()
                    .connection_customizer(Box::new(SqlitePragmas))
                    .build(ConnectionManager::new(url.trim_start_matches("sqlite://")))
                    .unwrap(),
            ),
        };
        Peer {
            connections,
            sql: Sql::new(database, table),
        }
    }

    /// The live value of `key`, decoded.
    fn get<V: Hand>(&self, container: &str, key: &str) -> Option<V> {
        let (container_hash, key_hash) = (padded(container), padded(key));
        let select = Raw::<SELECT_ONE, EntrySql>::new(
            &self.sql.select_one,
            vec![
                Value::Bytes(&container_hash),
                Value::Bytes(container.as_bytes()),
                Value::Bytes(&key_hash),
            ],
        );
        let rows: Vec<Entry> =
            on_connection!(&self.connections, |conn| select.load(conn)).expect("select");
        let now = now_millis();
        rows.into_iter()
            .find(|(entry_key, _, at)| entry_key == key.as_bytes() && at.is_none_or(|at| now < at))
            .and_then(|(_, value, _)| V::decode(&value))
    }

    /// The live values of `keys` (16 of them), decoded, in one statement.
    fn get_batch<V: Hand>(&self, container: &str, keys: &[&str]) -> Vec<Option<V>> {
        let container_hash = padded(container);
        let hashes: Vec<[u8; 32]> = keys.iter().map(|key| padded(key)).collect();
        let binds = [
            Value::Bytes(&container_hash),
            Value::Bytes(container.as_bytes()),
        ]
        .into_iter()
        .chain(hashes.iter().map(|hash| Value::Bytes(hash)))
        .collect();
        let select = Raw::<SELECT_BATCH, EntrySql>::new(&self.sql.select_batch, binds);
        let rows: Vec<Entry> =
            on_connection!(&self.connections, |conn| select.load(conn)).expect("select");
        let now = now_millis();
        keys.iter()
            .map(|key| {
                rows.iter()
                    .find(|(entry_key, _, at)| {
                        entry_key == key.as_bytes() && at.is_none_or(|at| now < at)
                    })
                    .and_then(|(_, value, _)| V::decode(value))
            })
            .collect()
    }

    fn set<V: Hand>(&self, container: &str, key: &str, value: &V) {
        let (container_hash, key_hash) = (padded(container), padded(key));
        let value = value.encode();
        let upsert = Raw::<UPSERT>::new(
            &self.sql.upsert,
            vec![
                Value::Bytes(&container_hash),
                Value::Bytes(&key_hash),
                Value::Bytes(container.as_bytes()),
                Value::Bytes(key.as_bytes()),
                Value::Bytes(&value),
                Value::Expiry(None),
            ],
        );
        on_connection!(&self.connections, |conn| upsert.execute(conn)).expect("upsert");
    }

    fn remove(&self, container: &str, key: &str) {
        let (container_hash, key_hash) = (padded(container), padded(key));
        let delete = Raw::<DELETE>::new(
            &self.sql.delete,
            vec![
                Value::Bytes(&container_hash),
                Value::Bytes(&key_hash),
                Value::Bytes(container.as_bytes()),
                Value::Bytes(key.as_bytes()),
            ],
        );
        on_connection!(&self.connections, |conn| delete.execute(conn)).expect("delete");
    }

    /// A read-through miss: nothing there, so generate and store.
    fn get_or_generate<V: Hand>(&self, container: &str, key: &str, generate: fn(&str) -> V) -> V {
        self.get(container, key).unwrap_or_else(|| {
            let value = generate(key);
            self.set(container, key, &value);
            value
        })
    }

    /// Vacuums and analyses the freshly filled table, so that the database's own upkeep does
    /// not start in the middle of the first rows measured.
    fn settle(&self, table: &str) {
        let settle = match self.connections {
            Connections::Postgres(_) => format!("VACUUM ANALYZE \"{table}\""),
            Connections::Mysql(_) => format!("ANALYZE TABLE `{table}`"),
            Connections::Sqlite(_) => "ANALYZE; PRAGMA wal_checkpoint(TRUNCATE);".to_owned(),
        };
        on_connection!(&self.connections, |conn| conn.batch_execute(&settle)).expect("settle");
    }

    fn drop_table(&self, table: &str) {
        let quoted = match self.connections {
            Connections::Mysql(_) => format!("`{table}`"),
            Connections::Postgres(_) | Connections::Sqlite(_) => format!("\"{table}\""),
        };
        let drop = format!("DROP TABLE IF EXISTS {quoted}");
        on_connection!(&self.connections, |conn| conn.batch_execute(&drop)).expect("drop");
    }
}

// ---- the benches ---------------------------------------------------------------------------

fn cache(url: &str, table: &str) -> KvCache {
    let cache = kvcache::init([
        ("backend.db", "sql".to_owned()),
        ("backend.db.url", url.to_owned()),
        ("backend.db.table", table.to_owned()),
        ("backend.db.pool_size", POOL_SIZE.to_string()),
        ("container.strings.backend", "db".to_owned()),
        ("container.structs.backend", "db".to_owned()),
        ("container.gen_strings.backend", "db".to_owned()),
        ("container.gen_structs.backend", "db".to_owned()),
    ])
    .unwrap();
    cache.register_generator("gen_strings", string32).unwrap();
    cache
        .register_generator("gen_structs", |key: &str| kib(key.len() as u64))
        .unwrap();
    cache
}

/// Every row of one database's group: kvcache and the peer on the same table.
fn database(c: &mut Criterion, name: &str, database: Database, url: &str) {
    let table = format!("kvbench_{}", std::process::id());
    let cache = cache(url, &table);
    let peer = Peer::new(database, url, &table);
    let strings: Container<String> = cache.container("strings").unwrap();
    let structs: Container<Kib> = cache.container("structs").unwrap();
    let keys = keys();
    for (i, key) in keys.iter().enumerate() {
        strings.set(key, &string32(key)).unwrap();
        structs.set(key, &kib(i as u64)).unwrap();
        peer.set("peer-strings", key, &string32(key));
        peer.set("peer-structs", key, &kib(i as u64));
    }
    peer.settle(&table);
    let mut group = c.benchmark_group(format!("sql/{name}"));
    hits(&mut group, &keys, &strings, &structs, &peer);
    misses(&mut group, &cache, &peer);
    sets(&mut group, &keys, &strings, &structs, &peer);
    batches(&mut group, &keys, &strings, &structs, &peer);
    group.finish();
    peer.drop_table(&table);
}

/// `keys`, one after another, round and round.
fn cycle<'a>(keys: &'a [String]) -> impl FnMut() -> &'a str {
    let mut i = 0;
    move || {
        i = (i + 1) % keys.len();
        keys[i].as_str()
    }
}

type Group<'a> = BenchmarkGroup<'a, criterion::measurement::WallTime>;

fn hits(
    group: &mut Group<'_>,
    keys: &[String],
    strings: &Container<String>,
    structs: &Container<Kib>,
    peer: &Peer,
) {
    let mut next = cycle(keys);
    group.bench_function(BenchmarkId::new("hit/kvcache", "string32"), |b| {
        b.iter(|| strings.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("hit/diesel", "string32"), |b| {
        b.iter(|| {
            peer.get::<String>("peer-strings", black_box(next()))
                .unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("hit/kvcache", "struct1k"), |b| {
        b.iter(|| structs.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("hit/diesel", "struct1k"), |b| {
        b.iter(|| peer.get::<Kib>("peer-structs", black_box(next())).unwrap())
    });
}

/// A miss: the key is deleted, then read through: looked up, generated and stored.
fn misses(group: &mut Group<'_>, cache: &KvCache, peer: &Peer) {
    let strings: Container<String> = cache.container("gen_strings").unwrap();
    let structs: Container<Kib> = cache.container("gen_structs").unwrap();
    group.bench_function(BenchmarkId::new("miss/kvcache", "string32"), |b| {
        b.iter(|| {
            strings.remove("k").unwrap();
            strings.get(black_box("k")).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("miss/diesel", "string32"), |b| {
        b.iter(|| {
            peer.remove("peer-gen-strings", "k");
            peer.get_or_generate("peer-gen-strings", black_box("k"), string32)
        })
    });
    group.bench_function(BenchmarkId::new("miss/kvcache", "struct1k"), |b| {
        b.iter(|| {
            structs.remove("k").unwrap();
            structs.get(black_box("k")).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("miss/diesel", "struct1k"), |b| {
        b.iter(|| {
            peer.remove("peer-gen-structs", "k");
            peer.get_or_generate("peer-gen-structs", black_box("k"), |key| {
                kib(key.len() as u64)
            })
        })
    });
}

fn sets(
    group: &mut Group<'_>,
    keys: &[String],
    strings: &Container<String>,
    structs: &Container<Kib>,
    peer: &Peer,
) {
    let mut next = cycle(keys);
    group.bench_function(BenchmarkId::new("set/kvcache", "string32"), |b| {
        b.iter(|| {
            let key = next();
            strings.set(key, &string32(key)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("set/diesel", "string32"), |b| {
        b.iter(|| {
            let key = next();
            peer.set("peer-strings", key, &string32(key))
        })
    });
    let value = kib(7);
    group.bench_function(BenchmarkId::new("set/kvcache", "struct1k"), |b| {
        b.iter(|| structs.set(next(), black_box(&value)).unwrap())
    });
    group.bench_function(BenchmarkId::new("set/diesel", "struct1k"), |b| {
        b.iter(|| peer.set("peer-structs", next(), black_box(&value)))
    });
}

/// 16 keys: kvcache's `get_many`, kvcache's 16 single `get`s, and the peer's one `IN (...)`.
fn batches(
    group: &mut Group<'_>,
    keys: &[String],
    strings: &Container<String>,
    structs: &Container<Kib>,
    peer: &Peer,
) {
    let batches: Vec<Vec<&str>> = keys
        .chunks_exact(BATCH)
        .map(|chunk| chunk.iter().map(String::as_str).collect())
        .collect();
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % batches.len();
        batches[i].as_slice()
    };
    group.bench_function(
        BenchmarkId::new("batch16/kvcache-get_many", "string32"),
        |b| b.iter(|| strings.get_many(black_box(next())).unwrap()),
    );
    group.bench_function(
        BenchmarkId::new("batch16/kvcache-16-gets", "string32"),
        |b| {
            b.iter(|| {
                next()
                    .iter()
                    .map(|key| strings.get(key).unwrap())
                    .collect::<Vec<_>>()
            })
        },
    );
    group.bench_function(BenchmarkId::new("batch16/diesel-in", "string32"), |b| {
        b.iter(|| all_found(peer.get_batch::<String>("peer-strings", black_box(next()))))
    });
    group.bench_function(
        BenchmarkId::new("batch16/kvcache-get_many", "struct1k"),
        |b| b.iter(|| structs.get_many(black_box(next())).unwrap()),
    );
    group.bench_function(
        BenchmarkId::new("batch16/kvcache-16-gets", "struct1k"),
        |b| {
            b.iter(|| {
                next()
                    .iter()
                    .map(|key| structs.get(key).unwrap())
                    .collect::<Vec<_>>()
            })
        },
    );
    group.bench_function(BenchmarkId::new("batch16/diesel-in", "struct1k"), |b| {
        b.iter(|| all_found(peer.get_batch::<Kib>("peer-structs", black_box(next()))))
    });
}

/// Every value of a batch, each one found.
fn all_found<V>(found: Vec<Option<V>>) -> Vec<V> {
    found.into_iter().map(Option::unwrap).collect()
}

fn postgres(c: &mut Criterion) {
    let default = "postgres://postgres@127.0.0.1:5432/test";
    if let Some(url) = service_url("KVCACHE_TEST_POSTGRES_URL", default, TIMEOUT) {
        database(c, "postgres", Database::Postgres, &url);
    }
}

fn mysql(c: &mut Criterion) {
    let default = "mysql://root@127.0.0.1:3306/test";
    if let Some(url) = service_url("KVCACHE_TEST_MYSQL_URL", default, TIMEOUT) {
        database(c, "mysql", Database::Mysql, &url);
    }
}

fn sqlite(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("kvcache-bench-sql-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("kv.sqlite3").display());
    database(c, "sqlite", Database::Sqlite, &url);
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group!(benches, postgres, mysql, sqlite);
criterion_main!(benches);
