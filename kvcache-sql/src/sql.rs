//! The SQL text of every statement, per database, for one table.
//!
//! A row is one entry. Its primary key is (`container_hash`, `key_hash`): the SHA-256 of the
//! container's name and of the key, a fixed 32 bytes whatever the key's length. The full
//! container name and key are stored beside them and compared on every read, so a hash collision
//! is a miss, never another key's value. Names and keys are stored as bytes, compared exactly on
//! every database (no collation, trailing spaces kept, NUL allowed). `expires_at` is in Unix
//! milliseconds, NULL for no expiry; an entry is live while now < `expires_at`.

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

/// The statements for one table on one database. Binds are listed as `(name: SQL type)`.
#[derive(Debug)]
pub(crate) struct Statements {
    database: Database,
    table: String,
    /// Creates the table and its index when absent.
    pub(crate) create: Vec<String>,
    /// `(table: Text)` → the table's column names, as `name`; none when the table is absent.
    pub(crate) columns: String,
    /// `(container_hash, key_hash, container, entry_key, entry_value: Binary,
    /// expires_at: Nullable<BigInt>)`: inserts or replaces one entry.
    pub(crate) upsert: String,
    /// `(container_hash, key_hash, container, entry_key: Binary)`: deletes one entry.
    pub(crate) delete: String,
    /// `(container_hash, container: Binary)`: deletes a container's entries.
    pub(crate) clear: String,
    /// `(now: BigInt)`: deletes every expired entry.
    pub(crate) purge: String,
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
                                  WHERE table_schema = current_schema() AND table_name = $1"
                .to_owned(),
            Database::Mysql => "SELECT column_name AS name FROM information_schema.columns \
                                WHERE table_schema = DATABASE() AND table_name = ?"
                .to_owned(),
            Database::Sqlite => "SELECT name FROM pragma_table_info(?)".to_owned(),
        };
        let p = |n| placeholder(database, n);
        let insert = format!(
            "INSERT INTO {quoted} ({}) VALUES ({})",
            COLUMNS.join(", "),
            (1..=COLUMNS.len()).map(p).collect::<Vec<_>>().join(", ")
        );
        // The hashes stay; everything else is the new entry's.
        let assignments = |assign: fn(&str) -> String| {
            COLUMNS[2..]
                .iter()
                .map(|c| assign(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let upsert = match database {
            Database::Mysql => format!(
                "{insert} ON DUPLICATE KEY UPDATE {}",
                assignments(|c| format!("{c} = VALUES({c})"))
            ),
            Database::Postgres | Database::Sqlite => format!(
                "{insert} ON CONFLICT (container_hash, key_hash) DO UPDATE SET {}",
                assignments(|c| format!("{c} = excluded.{c}"))
            ),
        };
        Statements {
            database,
            create,
            columns,
            upsert,
            delete: format!(
                "DELETE FROM {quoted} WHERE container_hash = {} AND key_hash = {} \
                 AND container = {} AND entry_key = {}",
                p(1),
                p(2),
                p(3),
                p(4)
            ),
            clear: format!(
                "DELETE FROM {quoted} WHERE container_hash = {} AND container = {}",
                p(1),
                p(2)
            ),
            purge: expired_rows(database, &quoted, &format!("expires_at <= {}", p(1))),
            table: quoted,
        }
    }

    /// `(container_hash, container: Binary, key_hash: Binary × count)` → `entry_key`,
    /// `entry_value`, `expires_at` of the container's entries under those hashes.
    pub(crate) fn select(&self, count: usize) -> String {
        format!(
            "SELECT entry_key, entry_value, expires_at FROM {} \
             WHERE container_hash = {} AND container = {} AND key_hash IN ({})",
            self.table,
            placeholder(self.database, 1),
            placeholder(self.database, 2),
            self.placeholders(3, count)
        )
    }

    /// `(container_hash: Binary, now: BigInt, key_hash: Binary × count)`: deletes the entries
    /// under those hashes that have expired by now.
    pub(crate) fn delete_expired(&self, count: usize) -> String {
        let condition = format!(
            "container_hash = {} AND expires_at <= {} AND key_hash IN ({})",
            placeholder(self.database, 1),
            placeholder(self.database, 2),
            self.placeholders(3, count)
        );
        expired_rows(self.database, &self.table, &condition)
    }

    fn placeholders(&self, first: usize, count: usize) -> String {
        (first..first + count)
            .map(|n| placeholder(self.database, n))
            .collect::<Vec<_>>()
            .join(", ")
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

/// The `n`th bind parameter (from 1): `$n` on PostgreSQL, `?` elsewhere.
fn placeholder(database: Database, n: usize) -> String {
    match database {
        Database::Postgres => format!("${n}"),
        Database::Mysql | Database::Sqlite => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upsert_per_database() {
        let pg = Statements::new(Database::Postgres, "kv");
        assert_eq!(
            pg.upsert,
            "INSERT INTO \"kv\" (container_hash, key_hash, container, entry_key, entry_value, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (container_hash, key_hash) \
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
    }

    #[test]
    fn batches_number_their_binds() {
        let pg = Statements::new(Database::Postgres, "kv");
        assert!(
            pg.select(3).ends_with("key_hash IN ($3, $4, $5)"),
            "{}",
            pg.select(3)
        );
        let sqlite = Statements::new(Database::Sqlite, "kv");
        assert!(sqlite.delete_expired(2).ends_with("key_hash IN (?, ?)"));
    }

    #[test]
    fn postgres_deletes_expired_rows_without_waiting_for_locked_ones() {
        let pg = Statements::new(Database::Postgres, "kv");
        assert_eq!(
            pg.purge,
            "DELETE FROM \"kv\" WHERE expires_at <= $1 AND (container_hash, key_hash) IN \
             (SELECT container_hash, key_hash FROM \"kv\" WHERE expires_at <= $1 \
             FOR UPDATE SKIP LOCKED)"
        );
        assert!(
            pg.delete_expired(1)
                .ends_with("key_hash IN ($3) FOR UPDATE SKIP LOCKED)")
        );
        let mysql = Statements::new(Database::Mysql, "kv");
        assert_eq!(mysql.purge, "DELETE FROM `kv` WHERE expires_at <= ?");
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
