//! The table's layout: checked, and created when missing, as the backend opens; versioned.
//!
//! One table holds every container: `(container, key)` is its primary key, `value` the bytes and
//! `expires_at` the expiry in Unix milliseconds (`NULL`: never). The table `kvcache_schema`
//! records, for each kvcache table of the file, the schema version that wrote it.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

/// The schema version this build writes, and the newest it reads.
pub(crate) const VERSION: i64 = 1;

/// The table that records each kvcache table's schema version.
const META: &str = "kvcache_schema";

/// The columns of a kvcache table: name, declared type, position in the primary key (0: none).
const COLUMNS: [(&str, &str, i64); 4] = [
    ("container", "TEXT", 1),
    ("key", "TEXT", 2),
    ("value", "BLOB", 0),
    ("expires_at", "INTEGER", 0),
];

/// Why a file's table cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    /// The table exists with other columns.
    #[error(
        "the table {table:?} has the columns ({found}), not those of a kvcache table \
         (container TEXT, key TEXT, value BLOB, expires_at INTEGER; primary key (container, key)); \
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

/// Makes sure `table` exists with kvcache's columns and is recorded at [`VERSION`].
///
/// Reads first: a file whose table is ready is never written to, and a table with other columns
/// or a newer version is refused before anything is written. Creation runs in one immediate
/// transaction that checks again, so processes opening one new file at once create it once.
pub(crate) fn prepare(connection: &mut Connection, table: &str) -> Result<(), SchemaError> {
    if inspect(connection, table)? == State::Ready {
        return Ok(());
    }
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if inspect(&transaction, table)? == State::Incomplete {
        create(&transaction, table)?;
    }
    transaction.commit()?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// The table has kvcache's columns and is recorded at this version.
    Ready,
    /// The table, its index or its record is missing.
    Incomplete,
}

fn inspect(connection: &Connection, table: &str) -> Result<State, SchemaError> {
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
    let expected = columns.len() == COLUMNS.len()
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
    let ready = version == Some(VERSION) && exists(connection, "index", &expiry_index(table))?;
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

fn create(connection: &Connection, table: &str) -> rusqlite::Result<()> {
    let index = expiry_index(table);
    connection.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {META} (
             name TEXT PRIMARY KEY COLLATE NOCASE,
             version INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS \"{table}\" (
             container TEXT NOT NULL,
             key TEXT NOT NULL,
             value BLOB NOT NULL,
             expires_at INTEGER,
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
    Ok(())
}

/// The index that lets `purge_expired` find expired rows without reading the whole table.
fn expiry_index(table: &str) -> String {
    format!("{table}_expires_at")
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
