//! The table's layout: checked, and created when missing, as the backend opens; versioned.
//!
//! One table holds every container: `(container, key)` is its primary key, `value` the bytes,
//! `expires_at` the expiry in Unix milliseconds (`NULL`: never) and `overwritten` whether the
//! entry was stored again since it took its place in the table (its rowid, the order culling
//! follows). The table `kvcache_schema` records, for each kvcache table of the file, the schema
//! version that wrote it and, once a backend bounds its entries, their number, which two
//! triggers keep.
//!
//! Version 1 had no `overwritten`: opening adds it (`ALTER TABLE ... ADD COLUMN`, which
//! rewrites no row), and records version 2.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// The schema version this build writes, and the newest it reads.
pub(crate) const VERSION: i64 = 2;

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

/// Makes sure `table` exists with kvcache's columns and is recorded at [`VERSION`], a version 1
/// table upgraded; and, when `counted`, that its entries are counted.
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
    /// The table, its index, its record or its counting is missing.
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
    let mut statement = connection.prepare("SELECT name, type, pk FROM pragma_table_info(?1)")?;
    let columns = statement
        .query_map([table], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if columns.is_empty() {
        return Ok(State::Incomplete);
    }
    let expected = (columns.len() == COLUMNS.len() || columns.len() == V1_COLUMNS)
        && columns
            .iter()
            .zip(COLUMNS)
            .all(|((name, kind, pk), (n, k, p))| {
                name.eq_ignore_ascii_case(n) && kind.eq_ignore_ascii_case(k) && *pk == p
            });
    if !expected {
        let found = columns
            .iter()
            .map(|(name, kind, _)| format!("{name} {kind}").trim_end().to_owned())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(SchemaError::OtherColumns {
            table: table.to_owned(),
            found,
        });
    }
    if columns.len() == V1_COLUMNS {
        return Ok(State::Version1);
    }
    let ready = version == Some(VERSION)
        && exists(connection, "index", &expiry_index(table))?
        && (!counted || exists(connection, "trigger", &count_trigger(table, "delete"))?);
    Ok(if ready {
        State::Ready
    } else {
        State::Incomplete
    })
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
             WHERE expires_at IS NOT NULL;"
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

/// A trigger that keeps the count of `table`'s entries on `event` (`insert`, `delete`).
fn count_trigger(table: &str, event: &str) -> String {
    format!("{table}_entries_{event}")
}

/// The statement that reads the count of `table`'s entries (`NULL` until counted).
pub(crate) fn entries_sql(table: &str) -> String {
    format!("SELECT entries FROM {META} WHERE name = '{table}'")
}

/// Whether every table of the file is kvcache's: its schema record and the tables it records.
/// Only such a file is the backend's to move aside when it is damaged.
pub(crate) fn owned(connection: &Connection) -> rusqlite::Result<bool> {
    connection.query_row(
        &format!(
            "SELECT NOT EXISTS (
                 SELECT 1 FROM sqlite_schema AS s
                 WHERE s.type = 'table' AND s.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
                   AND s.name <> '{META}' COLLATE NOCASE
                   AND NOT EXISTS (SELECT 1 FROM {META} AS k WHERE k.name = s.name)
             )"
        ),
        [],
        |row| row.get(0),
    )
}
