//! The table's layout: checked, and created when missing, as the backend opens; versioned.
//!
//! One table holds every container: `(container, key)` is its primary key, `value` the bytes,
//! `expires_at` the expiry in Unix milliseconds (`NULL`: never) and `overwritten` whether the
//! entry was stored again since it took its place in the table (its rowid, the order culling
//! follows). The table `kvcache_schema` records, for each kvcache table of the file, the schema
//! version that wrote it and, once a backend bounds its entries, their number, which two
//! triggers keep.
//!
//! Each kvcache table has a table of leases beside it, `TABLE_leases` (see [`leases_table`]):
//! `(container, key)` its primary key, the holder's `token`, and `expires_at`, the lease's expiry
//! in Unix milliseconds. It is no kvcache table of its own: it has no record, no count and no
//! expiry index (it holds only the leases in flight and those of holders that died, which
//! `purge_expired` and the writes' upkeep delete).
//!
//! Version 1 had no `overwritten`: opening adds it (`ALTER TABLE ... ADD COLUMN`, which
//! rewrites no row), and goes on as from version 2. Version 2 had no leases table: opening
//! creates it, and records version 3.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// The schema version this build writes, and the newest it reads.
pub(crate) const VERSION: i64 = 3;

/// The table that records each kvcache table's schema version.
const META: &str = "kvcache_schema";

/// The columns of a kvcache table: name, declared type, position in the primary key (0: none).
/// Version 1 had the first four.
const COLUMNS: [(&str, &str, i64); 5] = [
    ("container", "TEXT", 1),
    ("key", "TEXT", 2),
    ("value", "BLOB", 0),
    ("expires_at", "INTEGER", 0),
    ("overwritten", "INTEGER", 0),
];
/// The columns of a version 1 table.
const V1_COLUMNS: usize = 4;
/// The columns of a leases table, as [`COLUMNS`].
const LEASE_COLUMNS: [(&str, &str, i64); 4] = [
    ("container", "TEXT", 1),
    ("key", "TEXT", 2),
    ("token", "TEXT", 0),
    ("expires_at", "INTEGER", 0),
];

/// Why a file's table cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    /// The table exists with other columns.
    #[error(
        "the table {table:?} has the columns ({found}), not those of a kvcache table \
         (container TEXT, key TEXT, value BLOB, expires_at INTEGER, overwritten INTEGER; \
         primary key (container, key)); \
         it was left as it is: name another table with the `table` option"
    )]
    OtherColumns {
        /// The table.
        table: String,
        /// Its columns, described.
        found: String,
    },
    /// The table where the leases of `table` go exists with other columns.
    #[error(
        "the table {leases:?}, where the table {table:?} keeps its leases, has the columns \
         ({found}), not those of a kvcache leases table (container TEXT, key TEXT, token TEXT, \
         expires_at INTEGER; primary key (container, key)); \
         it was left as it is: name another table with the `table` option"
    )]
    OtherLeaseColumns {
        /// The kvcache table.
        table: String,
        /// Its leases table.
        leases: String,
        /// Its columns, described.
        found: String,
    },
    /// A newer kvcache wrote the table.
    #[error(
        "the table {table:?} was written by kvcache schema version {version}, newer than this \
         build's {VERSION}: open it with a newer kvcache, or use another file or table"
    )]
    Newer {
        /// The table.
        table: String,
        /// Its schema version.
        version: i64,
    },
    /// SQLite failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Whether `table` is a name the backend accepts: ASCII letters, digits and underscores, not
/// starting with a digit, not SQLite's own (`sqlite_`) nor the schema record's.
pub(crate) fn check_table_name(table: &str) -> Result<(), String> {
    let well_formed = table.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        Err(format!(
            "expected a table name of ASCII letters, digits and underscores, not starting with a digit, got {table:?}"
        ))
    } else if table.to_ascii_lowercase().starts_with("sqlite_") || table.eq_ignore_ascii_case(META)
    {
        Err(format!("the table name {table:?} is reserved"))
    } else {
        Ok(())
    }
}

/// Makes sure `table` and its leases table exist with kvcache's columns and `table` is recorded
/// at [`VERSION`], a version 1 or 2 table upgraded; and, when `counted`, that its entries are
/// counted.
///
/// Reads first: a file whose table is ready is never written to, and a table with other columns
/// or a newer version is refused before anything is written. Creation runs in one immediate
/// transaction that checks again, so processes opening one new file at once create it once.
pub(crate) fn prepare(
    connection: &mut Connection,
    table: &str,
    counted: bool,
) -> Result<(), SchemaError> {
    if inspect(connection, table, counted)? == State::Ready {
        return Ok(());
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    match inspect(&transaction, table, counted)? {
        State::Ready => {}
        State::Incomplete => create(&transaction, table, counted)?,
        State::Version1 => {
            transaction.execute_batch(&format!(
                "ALTER TABLE \"{table}\" ADD COLUMN overwritten INTEGER NOT NULL DEFAULT 0"
            ))?;
            create(&transaction, table, counted)?;
        }
    }
    transaction.commit()?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// The table has kvcache's columns and is recorded at this version (and counted if asked).
    Ready,
    /// The table, its index, its leases table, its record or its counting is missing, or the
    /// record is of version 2 (which had no leases table).
    Incomplete,
    /// The table has version 1's columns.
    Version1,
}

fn inspect(connection: &Connection, table: &str, counted: bool) -> Result<State, SchemaError> {
    let version = if exists(connection, "table", META)? {
        connection
            .query_row(
                &format!("SELECT version FROM {META} WHERE name = ?1"),
                [table],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
    } else {
        None
    };
    if let Some(version) = version.filter(|&version| version > VERSION) {
        return Err(SchemaError::Newer {
            table: table.to_owned(),
            version,
        });
    }
    // Checked before the table itself: nothing is written to a file where the leases would go
    // to another program's table.
    let leases = leases_table(table);
    let lease_columns = columns(connection, &leases)?;
    let has_leases = !lease_columns.is_empty();
    if has_leases && !same(&lease_columns, &LEASE_COLUMNS) {
        return Err(SchemaError::OtherLeaseColumns {
            table: table.to_owned(),
            leases,
            found: described(&lease_columns),
        });
    }
    let columns = columns(connection, table)?;
    if columns.is_empty() {
        return Ok(State::Incomplete);
    }
    let expected = (columns.len() == COLUMNS.len() || columns.len() == V1_COLUMNS)
        && same(&columns, &COLUMNS[..columns.len()]);
    if !expected {
        return Err(SchemaError::OtherColumns {
            table: table.to_owned(),
            found: described(&columns),
        });
    }
    if columns.len() == V1_COLUMNS {
        return Ok(State::Version1);
    }
    let ready = version == Some(VERSION)
        && has_leases
        && exists(connection, "index", &expiry_index(table))?
        && (!counted || exists(connection, "trigger", &count_trigger(table, "delete"))?);
    Ok(if ready {
        State::Ready
    } else {
        State::Incomplete
    })
}

/// The columns of `table` (none when it does not exist): name, declared type, position in the
/// primary key.
fn columns(connection: &Connection, table: &str) -> rusqlite::Result<Vec<(String, String, i64)>> {
    let mut statement =
        connection.prepare_cached("SELECT name, type, pk FROM pragma_table_info(?1)")?;
    statement
        .query_map([table], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect()
}

/// Whether `columns` are exactly `expected`, names and types in any case.
fn same(columns: &[(String, String, i64)], expected: &[(&str, &str, i64)]) -> bool {
    columns.len() == expected.len()
        && columns
            .iter()
            .zip(expected)
            .all(|((name, kind, pk), (n, k, p))| {
                name.eq_ignore_ascii_case(n) && kind.eq_ignore_ascii_case(k) && pk == p
            })
}

/// `columns` as an error shows them: `name TYPE, ...`.
fn described(columns: &[(String, String, i64)]) -> String {
    columns
        .iter()
        .map(|(name, kind, _)| format!("{name} {kind}").trim_end().to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

fn exists(connection: &Connection, kind: &str, name: &str) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = ?1 AND name = ?2 COLLATE NOCASE)",
        [kind, name],
        |row| row.get(0),
    )
}

fn create(connection: &Connection, table: &str, counted: bool) -> rusqlite::Result<()> {
    let index = expiry_index(table);
    let leases = leases_table(table);
    connection.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {META} (
             name TEXT PRIMARY KEY COLLATE NOCASE,
             version INTEGER NOT NULL,
             entries INTEGER
         );
         CREATE TABLE IF NOT EXISTS \"{table}\" (
             container TEXT NOT NULL,
             key TEXT NOT NULL,
             value BLOB NOT NULL,
             expires_at INTEGER,
             overwritten INTEGER NOT NULL DEFAULT 0,
             PRIMARY KEY (container, key)
         );
         CREATE INDEX IF NOT EXISTS \"{index}\" ON \"{table}\" (expires_at)
             WHERE expires_at IS NOT NULL;
         CREATE TABLE IF NOT EXISTS \"{leases}\" (
             container TEXT NOT NULL,
             key TEXT NOT NULL,
             token TEXT NOT NULL,
             expires_at INTEGER NOT NULL,
             PRIMARY KEY (container, key)
         ) WITHOUT ROWID;"
    ))?;
    connection.execute(
        &format!(
            "INSERT INTO {META} (name, version) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET version = excluded.version"
        ),
        (table, VERSION),
    )?;
    if counted && !exists(connection, "trigger", &count_trigger(table, "delete"))? {
        count(connection, table)?;
    }
    Ok(())
}

/// Starts counting `table`'s entries in its record: adds the column to a record written by
/// version 1, counts the rows once, and creates the triggers that keep the count.
fn count(connection: &Connection, table: &str) -> rusqlite::Result<()> {
    let has_entries: bool = connection.query_row(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM pragma_table_info('{META}') WHERE name = 'entries')"
        ),
        [],
        |row| row.get(0),
    )?;
    if !has_entries {
        connection.execute_batch(&format!("ALTER TABLE {META} ADD COLUMN entries INTEGER"))?;
    }
    let (insert, delete) = (
        count_trigger(table, "insert"),
        count_trigger(table, "delete"),
    );
    connection.execute_batch(&format!(
        "UPDATE {META} SET entries = (SELECT count(*) FROM \"{table}\") WHERE name = '{table}';
         CREATE TRIGGER IF NOT EXISTS \"{insert}\" AFTER INSERT ON \"{table}\" BEGIN
             UPDATE {META} SET entries = entries + 1 WHERE name = '{table}';
         END;
         CREATE TRIGGER IF NOT EXISTS \"{delete}\" AFTER DELETE ON \"{table}\" BEGIN
             UPDATE {META} SET entries = entries - 1 WHERE name = '{table}';
         END;"
    ))
}

/// The index that lets `purge_expired` and the writes' upkeep find expired rows without reading
/// the whole table.
fn expiry_index(table: &str) -> String {
    format!("{table}_expires_at")
}

/// The table of `table`'s leases, beside it: `TABLE_leases`.
pub(crate) fn leases_table(table: &str) -> String {
    format!("{table}_leases")
}

/// A trigger that keeps the count of `table`'s entries on `event` (`insert`, `delete`).
fn count_trigger(table: &str, event: &str) -> String {
    format!("{table}_entries_{event}")
}

/// The statement that reads the count of `table`'s entries (`NULL` until counted).
pub(crate) fn entries_sql(table: &str) -> String {
    format!("SELECT entries FROM {META} WHERE name = '{table}'")
}

/// Whether every table of the file is kvcache's: its schema record, the tables it records and
/// their leases tables. Only such a file is the backend's to move aside when it is damaged.
pub(crate) fn owned(connection: &Connection) -> rusqlite::Result<bool> {
    connection.query_row(
        &format!(
            "SELECT NOT EXISTS (
                 SELECT 1 FROM sqlite_schema AS s
                 WHERE s.type = 'table' AND s.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
                   AND s.name <> '{META}' COLLATE NOCASE
                   AND NOT EXISTS (
                       SELECT 1 FROM {META} AS k
                       WHERE k.name = s.name
                          OR k.name || '_leases' = s.name COLLATE NOCASE
                   )
             )"
        ),
        [],
        |row| row.get(0),
    )
}
