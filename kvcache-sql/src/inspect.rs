//! What an operator can ask of the table ([`Inspect`]): each a statement or two, never a write.
//!
//! A summary is one aggregate statement over the container's rows (found by the primary key's
//! `container_hash`): the count, the sum of `LENGTH(entry_value)` and the least and greatest
//! expiry, the live rows told from the expired ones by `expires_at`. Keys are read in key order,
//! those of a prefix as the range `prefix <= entry_key < end`. The containers are found by
//! walking the primary key's `container_hash`, one seek per container. Each statement is bounded
//! by `statement_timeout`, as every call of the backend: raise it in the configuration to
//! summarise a table too large to be read within it.

use diesel::RunQueryDsl;
use diesel::sql_types::{BigInt, Binary, Nullable};
use kvcache_core::Result;
use kvcache_core::inspect::{Entry, Inspect, Summary, prefix_end};

use super::{Db, SqlBackend};
use crate::pool::with_connection;
use crate::query::{BY_TEXT, Bind, Statement};
use crate::sql::{Container, Hashed};
use crate::url::Database;

/// A summary's row: all rows, live rows, their values' bytes, those that never expire, and the
/// least and greatest expiry of the live ones.
type SummarySql = (
    BigInt,
    Nullable<BigInt>,
    Nullable<BigInt>,
    Nullable<BigInt>,
    Nullable<BigInt>,
    Nullable<BigInt>,
);
type SummaryRow = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

impl Db {
    /// The table's name, quoted for its database.
    fn quoted(&self) -> String {
        let table = &self.config.table;
        match self.config.url.database() {
            Database::Mysql => format!("`{table}`"),
            Database::Postgres | Database::Sqlite => format!("\"{table}\""),
        }
    }

    /// `expression` as a 64-bit integer: PostgreSQL's `SUM` of a `BIGINT` is a `NUMERIC`, and
    /// MySQL's of anything a `DECIMAL`.
    fn integer(&self, expression: &str) -> String {
        let integer = match self.config.url.database() {
            Database::Postgres => "BIGINT",
            Database::Mysql => "SIGNED",
            Database::Sqlite => "INTEGER",
        };
        format!("CAST({expression} AS {integer})")
    }
}

/// `millis` as the table stores it.
fn stored(millis: i64) -> Option<u64> {
    u64::try_from(millis).ok()
}

impl Inspect for SqlBackend {
    fn containers(&self, progress: &mut dyn FnMut(u64)) -> Result<Option<Vec<String>>> {
        let db = &*self.db;
        let sql = format!(
            "SELECT container_hash, container FROM {} WHERE container_hash > ? \
             ORDER BY container_hash LIMIT 1",
            db.quoted()
        );
        let mut names = Vec::new();
        let mut after: Vec<u8> = Vec::new();
        loop {
            let next = Statement::<BY_TEXT>::new(&sql, vec![Bind::Bytes(&after)])
                .returning::<(Binary, Binary)>();
            let found: Vec<(Vec<u8>, Vec<u8>)> = with_connection!(db.pool, db.call(), |conn| next
                .load(conn))
            .map_err(db.failed("listing the containers in"))?;
            let Some((container_hash, name)) = found.into_iter().next() else {
                break;
            };
            names.push(String::from_utf8_lossy(&name).into_owned());
            progress(names.len() as u64);
            after = container_hash;
        }
        names.sort();
        Ok(Some(names))
    }

    fn summary(&self, container: &str, progress: &mut dyn FnMut(u64)) -> Result<Summary> {
        let db = &*self.db;
        let container = Container::new(container);
        let live = "expires_at IS NULL OR expires_at > ?";
        let sql = format!(
            "SELECT COUNT(*), {}, {}, {}, {}, {} FROM {} \
             WHERE container_hash = ? AND container = ?",
            db.integer(&format!("SUM(CASE WHEN {live} THEN 1 ELSE 0 END)")),
            db.integer(&format!(
                "SUM(CASE WHEN {live} THEN LENGTH(entry_value) ELSE 0 END)"
            )),
            db.integer("SUM(CASE WHEN expires_at IS NULL THEN 1 ELSE 0 END)"),
            db.integer("MIN(CASE WHEN expires_at > ? THEN expires_at END)"),
            db.integer("MAX(CASE WHEN expires_at > ? THEN expires_at END)"),
            db.quoted()
        );
        let now = db.now();
        let mut binds = vec![Bind::Int(Some(now)); 4];
        binds.extend([
            Bind::Bytes(&container.hash),
            Bind::Bytes(container.name.as_bytes()),
        ]);
        let summary = Statement::<BY_TEXT>::new(&sql, binds).returning::<SummarySql>();
        let rows: Vec<SummaryRow> = with_connection!(db.pool, db.call(), |conn| summary.load(conn))
            .map_err(db.failed("summarising a container in"))?;
        let (all, live, bytes, forever, oldest, newest) = rows
            .into_iter()
            .next()
            .unwrap_or((0, None, None, None, None, None));
        let all = u64::try_from(all).unwrap_or(0);
        progress(all);
        let live = live.and_then(stored).unwrap_or(0);
        Ok(Summary {
            entries: live,
            bytes: Some(bytes.and_then(stored).unwrap_or(0)),
            without_expiry: Some(forever.and_then(stored).unwrap_or(0)),
            oldest_expiry: oldest.and_then(stored),
            newest_expiry: newest.and_then(stored),
            expired: Some(all.saturating_sub(live)),
        })
    }

    fn keys(
        &self,
        container: &str,
        prefix: &str,
        limit: Option<usize>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<String>> {
        let db = &*self.db;
        let container = Container::new(container);
        let end = prefix_end(prefix);
        let sql = format!(
            "SELECT entry_key FROM {} WHERE container_hash = ? AND container = ? \
             AND (expires_at IS NULL OR expires_at > ?) AND entry_key >= ?{} \
             ORDER BY entry_key LIMIT ?",
            db.quoted(),
            if end.is_some() {
                " AND entry_key < ?"
            } else {
                ""
            }
        );
        let mut binds = vec![
            Bind::Bytes(&container.hash),
            Bind::Bytes(container.name.as_bytes()),
            Bind::Int(Some(db.now())),
            Bind::Bytes(prefix.as_bytes()),
        ];
        if let Some(end) = &end {
            binds.push(Bind::Bytes(end.as_bytes()));
        }
        let limit = limit.map_or(i64::MAX, |limit| i64::try_from(limit).unwrap_or(i64::MAX));
        binds.push(Bind::Int(Some(limit)));
        let select = Statement::<BY_TEXT>::new(&sql, binds).returning::<Binary>();
        let keys: Vec<Vec<u8>> = with_connection!(db.pool, db.call(), |conn| select.load(conn))
            .map_err(db.failed("listing the keys of a container in"))?;
        progress(keys.len() as u64);
        Ok(keys
            .into_iter()
            .map(|key| String::from_utf8_lossy(&key).into_owned())
            .collect())
    }

    fn entry(&self, container: &str, key: &str) -> Result<Option<Entry>> {
        let db = &*self.db;
        let container = Container::new(container);
        let key = Hashed::new(key);
        let sql = format!(
            "SELECT entry_value, expires_at FROM {} WHERE container_hash = ? AND key_hash = ? \
             AND container = ? AND entry_key = ?",
            db.quoted()
        );
        let binds = vec![
            Bind::Bytes(&container.hash),
            Bind::Bytes(&key.hash),
            Bind::Bytes(container.name.as_bytes()),
            Bind::Bytes(key.text.as_bytes()),
        ];
        let select =
            Statement::<BY_TEXT>::new(&sql, binds).returning::<(Binary, Nullable<BigInt>)>();
        let rows: Vec<(Vec<u8>, Option<i64>)> = with_connection!(db.pool, db.call(), |conn| select
            .load(conn))
        .map_err(db.failed("reading an entry from"))?;
        let now = db.now();
        Ok(rows
            .into_iter()
            .next()
            .filter(|(_, expires_at)| expires_at.is_none_or(|at| now < at))
            .map(|(value, expires_at)| Entry::new(value, expires_at.and_then(stored))))
    }
}
