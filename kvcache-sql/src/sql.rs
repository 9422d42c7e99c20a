//! The statements, per database, for one table: their SQL text and their binds.
//!
//! A row is one entry. Its primary key is (`container_hash`, `key_hash`): the SHA-256 of the
//! container's name and of the key, a fixed 32 bytes whatever the key's length. The full
//! container name and key are stored beside them and compared on every read, so a hash collision
//! is a miss, never another key's value. Names and keys are stored as bytes, compared exactly on
//! every database (no collation, trailing spaces kept, NUL allowed). `expires_at` is in Unix
//! milliseconds, NULL for no expiry; an entry is live while now < `expires_at`.
//!
//! Beside it, the leases table (`TABLE_leases`) holds one row per key a caller is generating:
//! its primary key (`container`, `key`) the same two hashes (a collision would only make two
//! keys share one lease), the holder's `token` as bytes, and `expires_at` in Unix milliseconds,
//! never NULL; a lease is live while now < `expires_at`, and free to take over after.
//!
//! Each connection prepares each text once (see `query.rs`), so the texts are a bounded set:
//! a look-up of n keys binds the next power of two of hashes, the last one repeated, and an
//! upsert writes 1 to [`STORE_BATCH`] rows, its text made the first time a batch needs it.

use std::sync::OnceLock;

use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use sha2::{Digest, Sha256};

use crate::query::{BY_TEXT, Bind, Statement};
use crate::url::Database;

/// The columns of a kvcache table, in order.
pub(crate) const COLUMNS: [&str; 6] = [
    "container_hash",
    "key_hash",
    "container",
    "entry_key",
    "entry_value",
    "expires_at",
];

/// The most keys one statement looks up: far below every database's limit on bind parameters.
pub(crate) const BATCH: usize = 512;
/// The most rows one upsert writes: 6 binds each, far below every database's limit.
pub(crate) const STORE_BATCH: usize = 64;
/// The most bytes of keys and values one upsert of several rows carries. MySQL refuses a
/// statement larger than its `max_allowed_packet` (16 MiB on MariaDB, 64 MiB on MySQL 8 by
/// default): batching entries never makes a statement that big, and an entry larger than this
/// is written by an upsert of its own, as storing it alone would.
pub(crate) const STORE_BYTES: usize = 1 << 20;

// The keys that name the statements of fixed text (see `query.rs`).
const SELECT_ONE: u8 = 1;
const UPSERT: u8 = 2;
const DELETE: u8 = 3;
const CLEAR: u8 = 4;
const PURGE: u8 = 5;
const COLUMNS_OF: u8 = 6;
const LEASE_HOLDER: u8 = 7;
const LEASE: u8 = 8;
const RELEASE: u8 = 9;
const PURGE_LEASES: u8 = 10;

/// The columns of a kvcache table's leases table, in order: the SHA-256 of the container's
/// name, the SHA-256 of the key, the holder's token and when its lease expires.
pub(crate) const LEASE_COLUMNS: [&str; 4] = ["container", "key", "token", "expires_at"];

/// What a leases table's name adds to the entries table's.
pub(crate) const LEASES_SUFFIX: &str = "_leases";

/// The SQL type of the row of a lease: `token`, `expires_at`.
pub(crate) type HolderSql = (Binary, BigInt);
/// The row of a lease: who holds it, and until when.
pub(crate) type Holder = (Vec<u8>, i64);

/// The SHA-256 of a container's name or of a key.
pub(crate) type Hash = [u8; 32];

/// The SQL type of the rows a look-up returns: `entry_key`, `entry_value`, `expires_at`.
pub(crate) type EntrySql = (Binary, Binary, Nullable<BigInt>);
/// A row a look-up returns: the key, the value, and when it expires.
pub(crate) type Entry = (Vec<u8>, Vec<u8>, Option<i64>);

/// A container's name and its hash, computed once, when the container's store is opened.
#[derive(Debug)]
pub(crate) struct Container {
    pub(crate) name: Box<str>,
    pub(crate) hash: Hash,
}

impl Container {
    pub(crate) fn new(name: &str) -> Self {
        Container {
            name: name.into(),
            hash: hash(name.as_bytes()),
        }
    }
}

/// A key, with its hash.
#[derive(Debug)]
pub(crate) struct Hashed<'a> {
    pub(crate) text: &'a str,
    pub(crate) hash: Hash,
}

impl<'a> Hashed<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        Hashed {
            text,
            hash: hash(text.as_bytes()),
        }
    }
}

/// The SHA-256 of `bytes`.
pub(crate) fn hash(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// The statements for one table on one database.
#[derive(Debug)]
pub(crate) struct Statements {
    database: Database,
    /// The table's name, unquoted.
    name: String,
    create: Vec<String>,
    columns: String,
    upsert: String,
    /// `INSERT INTO table (columns) VALUES ` and what follows the rows: the upserts of
    /// several rows, which `upserts` holds once made.
    insert_into: String,
    on_conflict: String,
    /// `upserts[n - 1]` writes n rows.
    upserts: Vec<OnceLock<String>>,
    delete: String,
    clear: String,
    purge: String,
    /// Look-ups of 1, 2, 4... [`BATCH`] key hashes.
    selects: Vec<String>,
    /// Deletes of 1, 2, 4... [`BATCH`] expired entries.
    deletes_expired: Vec<String>,
    /// The statements of the leases table.
    leases: Leases,
}

/// The statements of the leases table beside the entries table: one row per key whose value a
/// caller is generating, until it releases it or its lease expires.
#[derive(Debug)]
struct Leases {
    /// The table's name, unquoted: the entries table's and [`LEASES_SUFFIX`].
    name: String,
    create: Vec<String>,
    /// Binds of `lease`: the row, then the time once or twice.
    lease: String,
    lease_times: usize,
    holder: String,
    release: String,
    purge: String,
    purge_times: usize,
}

impl Leases {
    fn new(database: Database, table: &str) -> Self {
        let name = format!("{table}{LEASES_SUFFIX}");
        let (quoted, key) = match database {
            // `KEY` is a reserved word of MySQL's; PostgreSQL and SQLite take it quoted too.
            Database::Mysql => (format!("`{name}`"), "`key`"),
            Database::Postgres | Database::Sqlite => (format!("\"{name}\""), "\"key\""),
        };
        let (binary, hash, bigint) = match database {
            Database::Postgres => ("BYTEA", "BYTEA", "BIGINT"),
            Database::Mysql => ("LONGBLOB", "BINARY(32)", "BIGINT"),
            Database::Sqlite => ("BLOB", "BLOB", "INTEGER"),
        };
        let definition = format!(
            "container {hash} NOT NULL, {key} {hash} NOT NULL, token {binary} NOT NULL, \
             expires_at {bigint} NOT NULL, PRIMARY KEY (container, {key})"
        );
        // No index on `expires_at`: the table holds the leases being held and those of
        // holders that died, not yet taken over, a few rows, which deleting the expired ones
        // reads through.
        let create = vec![match database {
            Database::Mysql => {
                format!("CREATE TABLE IF NOT EXISTS {quoted} ({definition}) ENGINE=InnoDB")
            }
            Database::Postgres | Database::Sqlite => {
                format!("CREATE TABLE IF NOT EXISTS {quoted} ({definition})")
            }
        }];
        let insert = format!(
            "INSERT INTO {quoted} (container, {key}, token, expires_at) VALUES (?, ?, ?, ?)"
        );
        // Inserts the lease, or takes over the row of one that has expired: one statement.
        let (lease, lease_times) = match database {
            // MySQL applies the assignments left to right: the second sees the token the first
            // left, ours when it took the row over. It holds too where they are applied at once
            // (MariaDB's SIMULTANEOUS_ASSIGNMENT), the expiry then deciding alone.
            Database::Mysql => (
                format!(
                    "{insert} ON DUPLICATE KEY UPDATE \
                     token = IF(expires_at <= ?, VALUES(token), token), \
                     expires_at = IF(token = VALUES(token) OR expires_at <= ?, \
                     VALUES(expires_at), expires_at)"
                ),
                2,
            ),
            Database::Postgres | Database::Sqlite => (
                format!(
                    "{insert} ON CONFLICT (container, {key}) DO UPDATE \
                     SET token = excluded.token, expires_at = excluded.expires_at \
                     WHERE {quoted}.expires_at <= ?"
                ),
                1,
            ),
        };
        let (purge, purge_times) = match database {
            // Skipping the rows another statement holds, as every delete of expired entries
            // does: those are being taken over or released already.
            Database::Postgres => (
                format!(
                    "DELETE FROM {quoted} WHERE expires_at <= ? AND (container, {key}) IN \
                     (SELECT container, {key} FROM {quoted} WHERE expires_at <= ? \
                     FOR UPDATE SKIP LOCKED)"
                ),
                2,
            ),
            Database::Mysql | Database::Sqlite => {
                (format!("DELETE FROM {quoted} WHERE expires_at <= ?"), 1)
            }
        };
        Leases {
            create,
            lease,
            lease_times,
            holder: format!(
                "SELECT token, expires_at FROM {quoted} WHERE container = ? AND {key} = ?"
            ),
            release: format!(
                "DELETE FROM {quoted} WHERE container = ? AND {key} = ? AND token = ?"
            ),
            purge,
            purge_times,
            name,
        }
    }
}

impl Statements {
    /// The statements for `table` (a name checked to need no escaping) on `database`.
    pub(crate) fn new(database: Database, table: &str) -> Self {
        let quoted = match database {
            Database::Mysql => format!("`{table}`"),
            Database::Postgres | Database::Sqlite => format!("\"{table}\""),
        };
        let index = format!("{table}_expires_at");
        let (binary, hash, bigint) = match database {
            Database::Postgres => ("BYTEA", "BYTEA", "BIGINT"),
            Database::Mysql => ("LONGBLOB", "BINARY(32)", "BIGINT"),
            Database::Sqlite => ("BLOB", "BLOB", "INTEGER"),
        };
        let definition = format!(
            "container_hash {hash} NOT NULL, key_hash {hash} NOT NULL, \
             container {binary} NOT NULL, entry_key {binary} NOT NULL, \
             entry_value {binary} NOT NULL, expires_at {bigint} NULL, \
             PRIMARY KEY (container_hash, key_hash)"
        );
        let create = match database {
            Database::Mysql => vec![format!(
                "CREATE TABLE IF NOT EXISTS {quoted} ({definition}, KEY `{index}` (expires_at)) \
                 ENGINE=InnoDB"
            )],
            Database::Postgres | Database::Sqlite => vec![
                format!("CREATE TABLE IF NOT EXISTS {quoted} ({definition})"),
                format!("CREATE INDEX IF NOT EXISTS \"{index}\" ON {quoted} (expires_at)"),
            ],
        };
        let columns = match database {
            Database::Postgres => "SELECT CAST(column_name AS TEXT) AS name \
                                  FROM information_schema.columns \
                                  WHERE table_schema = current_schema() AND table_name = ?"
                .to_owned(),
            Database::Mysql => "SELECT column_name AS name FROM information_schema.columns \
                                WHERE table_schema = DATABASE() AND table_name = ?"
                .to_owned(),
            Database::Sqlite => "SELECT name FROM pragma_table_info(?)".to_owned(),
        };
        let insert_into = format!("INSERT INTO {quoted} ({}) VALUES ", COLUMNS.join(", "));
        // The hashes stay; everything else is the new entry's.
        let assignments = |assign: fn(&str) -> String| {
            COLUMNS[2..]
                .iter()
                .map(|c| assign(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let on_conflict = match database {
            Database::Mysql => format!(
                "ON DUPLICATE KEY UPDATE {}",
                assignments(|c| format!("{c} = VALUES({c})"))
            ),
            Database::Postgres | Database::Sqlite => format!(
                "ON CONFLICT (container_hash, key_hash) DO UPDATE SET {}",
                assignments(|c| format!("{c} = excluded.{c}"))
            ),
        };
        let upsert = upsert(&insert_into, 1, &on_conflict);
        let counts = || (0..=BATCH.trailing_zeros()).map(|power| 1 << power);
        Statements {
            database,
            name: table.to_owned(),
            create,
            columns,
            upsert,
            insert_into,
            on_conflict,
            upserts: (0..STORE_BATCH).map(|_| OnceLock::new()).collect(),
            delete: format!(
                "DELETE FROM {quoted} WHERE container_hash = ? AND key_hash = ? \
                 AND container = ? AND entry_key = ?"
            ),
            clear: container_rows(database, &quoted),
            purge: expired_rows(database, &quoted, "expires_at <= ?"),
            selects: counts()
                .map(|count| {
                    format!(
                        "SELECT entry_key, entry_value, expires_at FROM {quoted} \
                         WHERE container_hash = ? AND container = ? AND key_hash IN ({})",
                        placeholders(count)
                    )
                })
                .collect(),
            deletes_expired: counts()
                .map(|count| {
                    let condition = format!(
                        "container_hash = ? AND expires_at <= ? AND key_hash IN ({})",
                        placeholders(count)
                    );
                    expired_rows(database, &quoted, &condition)
                })
                .collect(),
            leases: Leases::new(database, table),
        }
    }

    /// Creates the table and its index when absent: statements without binds.
    pub(crate) fn create(&self) -> &[String] {
        &self.create
    }

    /// The table's column names, as `Text`; none when the table is absent.
    pub(crate) fn columns(&self) -> Statement<'_, COLUMNS_OF, Text> {
        Statement::new(&self.columns, vec![Bind::Text(&self.name)]).returning()
    }

    /// The name of the leases table, unquoted.
    pub(crate) fn leases_table(&self) -> &str {
        &self.leases.name
    }

    /// Creates the leases table when absent: statements without binds.
    pub(crate) fn create_leases(&self) -> &[String] {
        &self.leases.create
    }

    /// The leases table's column names, as `Text`; none when it is absent.
    pub(crate) fn lease_columns(&self) -> Statement<'_, COLUMNS_OF, Text> {
        Statement::new(&self.columns, vec![Bind::Text(&self.leases.name)]).returning()
    }

    /// Inserts the lease of `key` in `container` for `token` until `expires_at`, or takes over
    /// the row of a lease expired by `now`; leaves a live one as it is.
    pub(crate) fn lease<'a>(
        &'a self,
        container: &'a Container,
        key: &'a Hash,
        token: &'a str,
        expires_at: i64,
        now: i64,
    ) -> Statement<'a, LEASE> {
        let mut binds = vec![
            Bind::Bytes(&container.hash),
            Bind::Bytes(key),
            Bind::Bytes(token.as_bytes()),
            Bind::Int(Some(expires_at)),
        ];
        binds.extend(std::iter::repeat_n(
            Bind::Int(Some(now)),
            self.leases.lease_times,
        ));
        Statement::new(&self.leases.lease, binds)
    }

    /// The token and expiry of the lease of `key` in `container`, if there is one.
    pub(crate) fn lease_holder<'a>(
        &'a self,
        container: &'a Container,
        key: &'a Hash,
    ) -> Statement<'a, LEASE_HOLDER, HolderSql> {
        let binds = vec![Bind::Bytes(&container.hash), Bind::Bytes(key)];
        Statement::new(&self.leases.holder, binds).returning()
    }

    /// Deletes the lease of `key` in `container` if `token` holds it.
    pub(crate) fn release<'a>(
        &'a self,
        container: &'a Container,
        key: &'a Hash,
        token: &'a str,
    ) -> Statement<'a, RELEASE> {
        let binds = vec![
            Bind::Bytes(&container.hash),
            Bind::Bytes(key),
            Bind::Bytes(token.as_bytes()),
        ];
        Statement::new(&self.leases.release, binds)
    }

    /// Deletes every lease expired by `now`.
    pub(crate) fn purge_leases(&self, now: i64) -> Statement<'_, PURGE_LEASES> {
        let binds = vec![Bind::Int(Some(now)); self.leases.purge_times];
        Statement::new(&self.leases.purge, binds)
    }

    /// Inserts or replaces the entry of `key` in `container`.
    pub(crate) fn upsert<'a>(
        &'a self,
        container: &'a Container,
        key: &'a Hashed<'a>,
        value: &'a [u8],
        expires_at: Option<i64>,
    ) -> Statement<'a, UPSERT> {
        Statement::new(
            &self.upsert,
            row(container, key, value, expires_at).to_vec(),
        )
    }

    /// Inserts or replaces the entries `rows` of `container`, all with one expiry: 1 to
    /// [`STORE_BATCH`] rows, no two with one key hash (PostgreSQL refuses an upsert that would
    /// write a row twice).
    pub(crate) fn upsert_many<'a>(
        &'a self,
        container: &'a Container,
        rows: &'a [(Hashed<'a>, &'a [u8])],
        expires_at: Option<i64>,
    ) -> Statement<'a, BY_TEXT> {
        assert!(
            (1..=STORE_BATCH).contains(&rows.len()),
            "{} rows in one upsert",
            rows.len()
        );
        let binds = rows
            .iter()
            .flat_map(|(key, value)| row(container, key, value, expires_at))
            .collect();
        let sql = self.upserts[rows.len() - 1]
            .get_or_init(|| upsert(&self.insert_into, rows.len(), &self.on_conflict));
        Statement::new(sql, binds)
    }

    /// Deletes the entry of `key` in `container`.
    pub(crate) fn delete<'a>(
        &'a self,
        container: &'a Container,
        key: &'a Hashed<'a>,
    ) -> Statement<'a, DELETE> {
        Statement::new(
            &self.delete,
            vec![
                Bind::Bytes(&container.hash),
                Bind::Bytes(&key.hash),
                Bind::Bytes(container.name.as_bytes()),
                Bind::Bytes(key.text.as_bytes()),
            ],
        )
    }

    /// Deletes the entries of `container`.
    pub(crate) fn clear<'a>(&'a self, container: &'a Container) -> Statement<'a, CLEAR> {
        Statement::new(
            &self.clear,
            vec![
                Bind::Bytes(&container.hash),
                Bind::Bytes(container.name.as_bytes()),
            ],
        )
    }

    /// Deletes every entry expired by `now`.
    pub(crate) fn purge(&self, now: i64) -> Statement<'_, PURGE> {
        let binds = vec![Bind::Int(Some(now)); self.purge.matches('?').count()];
        Statement::new(&self.purge, binds)
    }

    /// The entry of `container` under `hash`: the look-up of one key.
    pub(crate) fn select_one<'a>(
        &'a self,
        container: &'a Container,
        hash: &'a Hash,
    ) -> Statement<'a, SELECT_ONE, EntrySql> {
        let binds = vec![
            Bind::Bytes(&container.hash),
            Bind::Bytes(container.name.as_bytes()),
            Bind::Bytes(hash),
        ];
        Statement::new(&self.selects[0], binds).returning()
    }

    /// The entries of `container` under `hashes` (1 to [`BATCH`] of them).
    pub(crate) fn select<'a>(
        &'a self,
        container: &'a Container,
        hashes: &'a [Hash],
    ) -> Statement<'a, BY_TEXT, EntrySql> {
        let (sql, hashes) = padded(&self.selects, hashes);
        let binds = [
            Bind::Bytes(&container.hash),
            Bind::Bytes(container.name.as_bytes()),
        ]
        .into_iter()
        .chain(hashes)
        .collect();
        Statement::new(sql, binds).returning()
    }

    /// Deletes the entries of the container hashed `container` under `hashes` (1 to [`BATCH`]
    /// of them) that have expired by `now`.
    pub(crate) fn delete_expired<'a>(
        &'a self,
        container: &'a Hash,
        now: i64,
        hashes: &'a [Hash],
    ) -> Statement<'a, BY_TEXT> {
        let (sql, hashes) = padded(&self.deletes_expired, hashes);
        let condition = [Bind::Bytes(container), Bind::Int(Some(now))]
            .into_iter()
            .chain(hashes);
        // PostgreSQL's text states the condition twice.
        let times = match self.database {
            Database::Postgres => 2,
            Database::Mysql | Database::Sqlite => 1,
        };
        let binds = std::iter::repeat_n(condition, times).flatten().collect();
        Statement::new(sql, binds)
    }
}

/// The binds of one row of an upsert, in the order of [`COLUMNS`].
fn row<'a>(
    container: &'a Container,
    key: &'a Hashed<'a>,
    value: &'a [u8],
    expires_at: Option<i64>,
) -> [Bind<'a>; 6] {
    [
        Bind::Bytes(&container.hash),
        Bind::Bytes(&key.hash),
        Bind::Bytes(container.name.as_bytes()),
        Bind::Bytes(key.text.as_bytes()),
        Bind::Bytes(value),
        Bind::Int(expires_at),
    ]
}

/// The upsert of `rows` rows: `insert_into`, their placeholders, then `on_conflict`.
fn upsert(insert_into: &str, rows: usize, on_conflict: &str) -> String {
    let row = format!("({})", placeholders(COLUMNS.len()));
    format!("{insert_into}{} {on_conflict}", vec![row; rows].join(", "))
}

/// How a batch of rows of `sizes` bytes (key and value, in order) is split into upserts: the
/// count of rows of each, in order. Each takes as many rows as fit in [`STORE_BYTES`], up to
/// [`STORE_BATCH`]; a row larger than that goes alone.
pub(crate) fn upsert_chunks(sizes: &[usize]) -> Vec<usize> {
    let mut chunks = Vec::new();
    let mut rest = sizes;
    while let Some((&first, _)) = rest.split_first() {
        let (mut fit, mut bytes) = (1, first);
        while let Some(&size) = rest.get(fit) {
            if fit == STORE_BATCH || bytes + size > STORE_BYTES {
                break;
            }
            (fit, bytes) = (fit + 1, bytes + size);
        }
        chunks.push(fit);
        rest = &rest[fit..];
    }
    chunks
}

/// The text of `texts` (of 1, 2, 4... hashes) for `hashes`, and the binds of `hashes` padded
/// to its count by repeating the last.
fn padded<'a>(
    texts: &'a [String],
    hashes: &'a [Hash],
) -> (&'a str, impl Iterator<Item = Bind<'a>> + Clone) {
    assert!(
        (1..=BATCH).contains(&hashes.len()),
        "{} hashes in one statement",
        hashes.len()
    );
    let count = hashes.len().next_power_of_two();
    let last = &hashes[hashes.len() - 1];
    let binds = hashes
        .iter()
        .chain(std::iter::repeat_n(last, count - hashes.len()))
        .map(|hash| Bind::Bytes(hash));
    (&texts[count.trailing_zeros() as usize], binds)
}

/// Deletes the rows of one container of `table`.
///
/// On PostgreSQL it locks them in the order of their key hashes first, the order in which a
/// batch upserts its rows: a clear and a batch on one container then never wait for each other
/// in a cycle (PostgreSQL would break it by failing one of them after a second).
fn container_rows(database: Database, table: &str) -> String {
    let condition = "container_hash = ? AND container = ?";
    match database {
        Database::Postgres => format!(
            "DELETE FROM {table} WHERE (container_hash, key_hash) IN \
             (SELECT container_hash, key_hash FROM {table} WHERE {condition} \
             ORDER BY key_hash FOR UPDATE)"
        ),
        Database::Mysql | Database::Sqlite => format!("DELETE FROM {table} WHERE {condition}"),
    }
}

/// Deletes the rows of `table` that meet `condition`, which implies that they have expired.
///
/// On PostgreSQL it skips the rows that another statement holds: those are being deleted, or
/// written anew, already. Several such deletes at once then never wait for each other, where
/// plain ones, locking rows in the orders of different indexes, would deadlock.
fn expired_rows(database: Database, table: &str, condition: &str) -> String {
    match database {
        Database::Postgres => format!(
            "DELETE FROM {table} WHERE {condition} AND (container_hash, key_hash) IN \
             (SELECT container_hash, key_hash FROM {table} WHERE {condition} \
             FOR UPDATE SKIP LOCKED)"
        ),
        Database::Mysql | Database::Sqlite => format!("DELETE FROM {table} WHERE {condition}"),
    }
}

/// `count` binds: `?, ?, ?`.
fn placeholders(count: usize) -> String {
    vec!["?"; count].join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(count: u8) -> Vec<Hash> {
        (0..count).map(|i| [i; 32]).collect()
    }

    /// The bytes of each bind that is one.
    fn bytes<'a>(binds: &[Bind<'a>]) -> Vec<&'a [u8]> {
        binds
            .iter()
            .filter_map(|bind| match bind {
                Bind::Bytes(bytes) => Some(*bytes),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn one_upsert_per_database() {
        let pg = Statements::new(Database::Postgres, "kv");
        assert_eq!(
            pg.upsert,
            "INSERT INTO \"kv\" (container_hash, key_hash, container, entry_key, entry_value, \
             expires_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (container_hash, key_hash) \
             DO UPDATE SET container = excluded.container, entry_key = excluded.entry_key, \
             entry_value = excluded.entry_value, expires_at = excluded.expires_at"
        );
        let mysql = Statements::new(Database::Mysql, "kv");
        assert!(
            mysql.upsert.starts_with("INSERT INTO `kv` ("),
            "{}",
            mysql.upsert
        );
        assert!(
            mysql
                .upsert
                .ends_with("VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE container = VALUES(container), entry_key = VALUES(entry_key), entry_value = VALUES(entry_value), expires_at = VALUES(expires_at)"),
            "{}",
            mysql.upsert
        );
        let (container, key) = (Container::new("c"), Hashed::new("k"));
        let upsert = pg.upsert(&container, &key, b"v", Some(7));
        assert_eq!(
            bytes(upsert.binds()),
            [&hash(b"c")[..], &hash(b"k")[..], b"c", b"k", b"v"]
        );
        assert!(matches!(upsert.binds()[5], Bind::Int(Some(7))));
    }

    #[test]
    fn look_ups_bind_a_power_of_two_of_hashes_repeating_the_last() {
        let sqlite = Statements::new(Database::Sqlite, "kv");
        let container = Container::new("c");
        let three = hashes(3);
        let select = sqlite.select(&container, &three);
        assert!(
            select.sql().ends_with("key_hash IN (?, ?, ?, ?)"),
            "{}",
            select.sql()
        );
        assert_eq!(
            bytes(select.binds()),
            [
                &hash(b"c")[..],
                b"c",
                &[0; 32],
                &[1; 32],
                &[2; 32],
                &[2; 32]
            ]
        );
        let one = hashes(1);
        assert!(sqlite.select(&container, &one).sql().ends_with("IN (?)"));
        let all = vec![[0; 32]; BATCH];
        assert_eq!(sqlite.select(&container, &all).binds().len(), 2 + BATCH);
        assert_eq!(sqlite.selects.len(), 10, "1, 2, 4... 512 hashes");
    }

    #[test]
    fn postgres_deletes_expired_rows_without_waiting_for_locked_ones() {
        let pg = Statements::new(Database::Postgres, "kv");
        assert_eq!(
            pg.purge,
            "DELETE FROM \"kv\" WHERE expires_at <= ? AND (container_hash, key_hash) IN \
             (SELECT container_hash, key_hash FROM \"kv\" WHERE expires_at <= ? \
             FOR UPDATE SKIP LOCKED)"
        );
        assert_eq!(pg.purge(5).binds().len(), 2);
        let two = hashes(2);
        let delete = pg.delete_expired(&[9; 32], 5, &two);
        assert!(
            delete
                .sql()
                .ends_with("key_hash IN (?, ?) FOR UPDATE SKIP LOCKED)")
        );
        let condition: [&[u8]; 3] = [&[9; 32], &[0; 32], &[1; 32]];
        assert_eq!(bytes(delete.binds()), [condition, condition].concat());
        let mysql = Statements::new(Database::Mysql, "kv");
        assert_eq!(mysql.purge, "DELETE FROM `kv` WHERE expires_at <= ?");

        assert_eq!(mysql.delete_expired(&[9; 32], 5, &two).binds().len(), 4);
    }

    #[test]
    fn postgres_clears_in_the_order_batches_lock_rows() {
        let pg = Statements::new(Database::Postgres, "kv");
        assert_eq!(
            pg.clear,
            "DELETE FROM \"kv\" WHERE (container_hash, key_hash) IN \
             (SELECT container_hash, key_hash FROM \"kv\" WHERE container_hash = ? \
             AND container = ? ORDER BY key_hash FOR UPDATE)"
        );
        let container = Container::new("c");
        assert_eq!(bytes(pg.clear(&container).binds()), [&hash(b"c")[..], b"c"]);
        let mysql = Statements::new(Database::Mysql, "kv");
        assert_eq!(
            mysql.clear,
            "DELETE FROM `kv` WHERE container_hash = ? AND container = ?"
        );
    }

    #[test]
    fn fixed_texts_are_found_by_distinct_names_varying_ones_by_text() {
        use diesel::query_builder::QueryId;

        fn key<T: QueryId>(_: &T) -> Option<std::any::TypeId> {
            T::query_id()
        }
        let pg = Statements::new(Database::Postgres, "kv");
        let (container, key_) = (Container::new("c"), Hashed::new("k"));
        let one = hashes(1);
        let select_one = pg.select_one(&container, &one[0]);
        assert_eq!(select_one.sql(), pg.select(&container, &one).sql());
        let mut named = vec![
            key(&select_one),
            key(&pg.upsert(&container, &key_, b"v", None)),
            key(&pg.delete(&container, &key_)),
            key(&pg.clear(&container)),
            key(&pg.purge(0)),
            key(&pg.columns()),
            key(&pg.lease_holder(&container, &one[0])),
            key(&pg.lease(&container, &one[0], "t", 1, 0)),
            key(&pg.release(&container, &one[0], "t")),
            key(&pg.purge_leases(0)),
        ];
        assert!(named.iter().all(Option::is_some));
        named.sort();
        named.dedup();
        assert_eq!(named.len(), 10, "one name per text");
        assert_eq!(
            key(&pg.lease_columns()),
            key(&pg.columns()),
            "one text, the table's name bound"
        );
        assert_eq!(key(&pg.select(&container, &one)), None);
        assert_eq!(key(&pg.delete_expired(&[0; 32], 0, &one)), None);
    }

    #[test]
    #[should_panic(expected = "0 hashes in one statement")]
    fn a_look_up_of_no_key_is_a_bug() {
        let sqlite = Statements::new(Database::Sqlite, "kv");
        let _ = sqlite.select(&Container::new("c"), &[]);
    }

    #[test]
    fn batches_are_stored_by_upserts_of_many_rows() {
        let pg = Statements::new(Database::Postgres, "kv");
        assert_eq!(pg.upserts.len(), 64, "1 to 64 rows");
        let container = Container::new("c");
        let rows: Vec<(Hashed<'_>, &[u8])> = ["a", "b"]
            .into_iter()
            .map(|key| (Hashed::new(key), key.as_bytes()))
            .collect();
        let upsert = pg.upsert_many(&container, &rows, Some(7));
        assert!(
            upsert.sql().contains(
                "VALUES (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?) ON CONFLICT (container_hash, key_hash)"
            ),
            "{}",
            upsert.sql()
        );
        assert_eq!(
            bytes(upsert.binds()),
            [
                &hash(b"c")[..],
                &hash(b"a")[..],
                b"c",
                b"a",
                b"a",
                &hash(b"c")[..],
                &hash(b"b")[..],
                b"c",
                b"b",
                b"b"
            ]
        );
        assert!(matches!(upsert.binds()[11], Bind::Int(Some(7))));
        let one = pg.upsert_many(&container, &rows[..1], None);
        assert_eq!(one.sql(), pg.upsert, "one row: the text of a single store");
        let mysql = Statements::new(Database::Mysql, "kv");
        let upsert = mysql.upsert_many(&container, &rows, None);
        assert!(
            upsert.sql().starts_with("INSERT INTO `kv` (")
                && upsert.sql().contains(
                    "VALUES (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE"
                ),
            "{}",
            upsert.sql()
        );
        let all: Vec<(Hashed<'_>, &[u8])> = (0..STORE_BATCH)
            .map(|_| (Hashed::new("k"), &b"v"[..]))
            .collect();
        assert_eq!(
            mysql.upsert_many(&container, &all, None).binds().len(),
            6 * STORE_BATCH
        );
    }

    #[test]
    fn batches_split_by_rows_and_by_bytes() {
        assert_eq!(upsert_chunks(&[]), Vec::<usize>::new());
        assert_eq!(upsert_chunks(&[10; 13]), [13]);
        assert_eq!(upsert_chunks(&[10; 200]), [64, 64, 64, 8]);
        // A row over the budget goes alone; the rest fill upserts up to it.
        let big = STORE_BYTES + 1;
        assert_eq!(upsert_chunks(&[10, big, 10, 10, 10]), [1, 1, 3]);
        let third = STORE_BYTES / 3;
        assert_eq!(upsert_chunks(&[third; 7]), [3, 3, 1]);
        let total: usize = upsert_chunks(&[10; 1000]).iter().sum();
        assert_eq!(total, 1000);
    }

    #[test]
    #[should_panic(expected = "65 rows in one upsert")]
    fn an_upsert_of_more_rows_than_a_batch_is_a_bug() {
        let sqlite = Statements::new(Database::Sqlite, "kv");
        let rows: Vec<(Hashed<'_>, &[u8])> = (0..=STORE_BATCH)
            .map(|_| (Hashed::new("k"), &b"v"[..]))
            .collect();
        let _ = sqlite.upsert_many(&Container::new("c"), &rows, None);
    }

    #[test]
    fn leases_per_database() {
        let pg = Statements::new(Database::Postgres, "kv");
        assert_eq!(pg.leases_table(), "kv_leases");
        assert_eq!(
            pg.create_leases(),
            [
                "CREATE TABLE IF NOT EXISTS \"kv_leases\" (container BYTEA NOT NULL, \
              \"key\" BYTEA NOT NULL, token BYTEA NOT NULL, expires_at BIGINT NOT NULL, \
              PRIMARY KEY (container, \"key\"))"
            ]
        );
        assert_eq!(
            pg.leases.lease,
            "INSERT INTO \"kv_leases\" (container, \"key\", token, expires_at) \
             VALUES (?, ?, ?, ?) ON CONFLICT (container, \"key\") DO UPDATE \
             SET token = excluded.token, expires_at = excluded.expires_at \
             WHERE \"kv_leases\".expires_at <= ?"
        );
        assert_eq!(
            pg.leases.holder,
            "SELECT token, expires_at FROM \"kv_leases\" WHERE container = ? AND \"key\" = ?"
        );
        assert_eq!(
            pg.leases.release,
            "DELETE FROM \"kv_leases\" WHERE container = ? AND \"key\" = ? AND token = ?"
        );
        assert!(
            pg.leases.purge.ends_with("FOR UPDATE SKIP LOCKED)"),
            "{}",
            pg.leases.purge
        );
        let (container, key) = (Container::new("c"), hash(b"k"));
        let lease = pg.lease(&container, &key, "token", 7, 5);
        assert_eq!(
            bytes(lease.binds()),
            [&hash(b"c")[..], &hash(b"k")[..], b"token"]
        );
        assert!(matches!(
            lease.binds()[3..],
            [Bind::Int(Some(7)), Bind::Int(Some(5))]
        ));
        assert_eq!(pg.purge_leases(5).binds().len(), 2);
        assert_eq!(
            bytes(pg.release(&container, &key, "token").binds()),
            [&hash(b"c")[..], &hash(b"k")[..], b"token"]
        );

        let mysql = Statements::new(Database::Mysql, "kv");
        assert_eq!(
            mysql.create_leases(),
            [
                "CREATE TABLE IF NOT EXISTS `kv_leases` (container BINARY(32) NOT NULL, \
              `key` BINARY(32) NOT NULL, token LONGBLOB NOT NULL, expires_at BIGINT NOT NULL, \
              PRIMARY KEY (container, `key`)) ENGINE=InnoDB"
            ]
        );
        assert_eq!(
            mysql.leases.lease,
            "INSERT INTO `kv_leases` (container, `key`, token, expires_at) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE token = IF(expires_at <= ?, VALUES(token), token), \
             expires_at = IF(token = VALUES(token) OR expires_at <= ?, VALUES(expires_at), \
             expires_at)"
        );
        let lease = mysql.lease(&container, &key, "token", 7, 5);
        assert!(matches!(
            lease.binds()[3..],
            [Bind::Int(Some(7)), Bind::Int(Some(5)), Bind::Int(Some(5))]
        ));
        assert_eq!(
            mysql.leases.purge,
            "DELETE FROM `kv_leases` WHERE expires_at <= ?"
        );

        let sqlite = Statements::new(Database::Sqlite, "kv");
        assert!(
            sqlite.create_leases()[0].contains("token BLOB NOT NULL, expires_at INTEGER NOT NULL"),
            "{:?}",
            sqlite.create_leases()
        );
        assert_eq!(
            sqlite.leases.lease, pg.leases.lease,
            "SQLite's upsert is PostgreSQL's"
        );
        assert_eq!(sqlite.purge_leases(5).binds().len(), 1);
    }

    #[test]
    fn types_per_database() {
        let create = |database| Statements::new(database, "kv").create.join("; ");
        assert!(create(Database::Postgres).contains("entry_value BYTEA NOT NULL"));
        assert!(create(Database::Mysql).contains("entry_key LONGBLOB NOT NULL"));
        assert!(create(Database::Mysql).contains("key_hash BINARY(32) NOT NULL"));
        assert!(create(Database::Sqlite).contains("entry_value BLOB NOT NULL"));
        assert!(create(Database::Sqlite).contains("expires_at INTEGER NULL"));
    }
}
