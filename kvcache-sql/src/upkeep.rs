//! The table's upkeep, done by the backend's writes: expired rows reclaimed without anyone
//! calling `purge_expired`, and the rows beyond `max_entries` culled.
//!
//! Every [`UPKEEP_EVERY`]th write of a backend deletes up to [`EXPIRED_PER_UPKEEP`] expired
//! rows, found by the index on `expires_at`, and every expired lease of the leases table (a
//! table of few rows, read through), right after the write, in the writer's thread,
//! within a call of its own (`statement_timeout`). With `max_entries`, a write also counts the
//! table's rows once the writes since the last count could have used a quarter of the room it
//! found (`COUNT(*)` reads the whole table or an index on every database, so it is not done
//! on every write), and culls down to 1/[`CULL_BELOW`] under the bound, in at most
//! [`CULL_PASSES`] passes of [`CULL_ROWS`] rows. One thread of a backend does it at a time; the
//! others' writes go on. An upkeep that fails is logged at warn level and fails nothing: the
//! write has succeeded, and the writes [`UPKEEP_EVERY`] later try again.
//!
//! The table has no column for when a row was stored, so culling goes by expiry: the rows that
//! expire soonest go first (all of them stored with one time to live: the least recently
//! stored), and the rows that never expire last, in the order of their index entries (on
//! PostgreSQL and MySQL by key hash, so in effect at random; on SQLite by rowid, the order
//! they were inserted in). A stored-at column was not added: every build before it refuses a
//! table with columns other than its own, so a rolling upgrade would stop the old processes
//! from starting, and its index would cost every write, an overwrite included, a second index
//! update.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use diesel::RunQueryDsl;
use diesel::sql_types::BigInt;
use kvcache_core::{BackendConfig, Error, Result};

use super::Db;
use crate::pool::{Failure, with_connection};
use crate::query::{BY_TEXT, Bind, Statement};
use crate::url::Database;

/// Writes of one backend between two upkeeps when the bound asks for none sooner.
const UPKEEP_EVERY: u64 = 64;
/// The most expired rows one upkeep deletes: four times what the writes between two add.
const EXPIRED_PER_UPKEEP: i64 = 256;
/// The most rows one culling pass deletes, and the passes of one upkeep.
const CULL_ROWS: u64 = 1024;
const CULL_PASSES: usize = 4;
/// Culling goes this far below the bound (1/32 of it), so that the writes after it find room.
const CULL_BELOW: u64 = 32;

/// When this backend's writes next do the table's upkeep, and its statements.
#[derive(Debug)]
pub(super) struct Upkeep {
    /// `max_entries`: the most rows of the table, every container's.
    pub(super) max_entries: Option<u64>,
    /// Writes since the last deletion of expired rows.
    writes: AtomicU64,
    /// Writes since the last count of the rows.
    uncounted: AtomicU64,
    /// The writes after which the rows are counted again: a quarter of the room the last
    /// count found.
    count_after: AtomicU64,
    /// Whether a thread of this backend is doing it: the others go on.
    busy: AtomicBool,
    sql: Sql,
}

/// The upkeep's statements for one table on one database.
#[derive(Debug)]
struct Sql {
    /// Deletes up to `?` rows expired by `?`, soonest first.
    expire: String,
    /// Binds of `expire`: the time, once or twice, then the limit.
    expire_times: usize,
    count: String,
    /// Deletes up to `?` rows that expire, soonest first.
    cull_expiring: String,
    /// Deletes up to `?` rows that never expire.
    cull_forever: String,
}

impl Sql {
    fn new(database: Database, table: &str) -> Self {
        let quoted = match database {
            Database::Mysql => format!("`{table}`"),
            Database::Postgres | Database::Sqlite => format!("\"{table}\""),
        };
        // Each deletes the first rows of the expiry index that meet `condition`, up to a limit.
        let delete = |condition: &str| match database {
            // Skipping the rows another statement holds, as every delete of expired rows does
            // (sql.rs): those are being deleted, or written anew, already.
            Database::Postgres => format!(
                "DELETE FROM {quoted} WHERE {condition} AND (container_hash, key_hash) IN \
                 (SELECT container_hash, key_hash FROM {quoted} WHERE {condition} \
                 ORDER BY expires_at LIMIT ? FOR UPDATE SKIP LOCKED)"
            ),
            // The primary key breaks ties, as the index orders them: a deterministic order,
            // which statement-based replication wants of a `DELETE ... LIMIT`.
            Database::Mysql => format!(
                "DELETE FROM {quoted} WHERE {condition} \
                 ORDER BY expires_at, container_hash, key_hash LIMIT ?"
            ),
            // SQLite's `DELETE ... LIMIT` is a compile-time option; ties go by rowid.
            Database::Sqlite => format!(
                "DELETE FROM {quoted} WHERE rowid IN (SELECT rowid FROM {quoted} \
                 WHERE {condition} ORDER BY expires_at, rowid LIMIT ?)"
            ),
        };
        Sql {
            expire: delete("expires_at <= ?"),
            expire_times: match database {
                Database::Postgres => 2,
                Database::Mysql | Database::Sqlite => 1,
            },
            count: format!("SELECT COUNT(*) FROM {quoted}"),
            cull_expiring: delete("expires_at IS NOT NULL"),
            cull_forever: delete("expires_at IS NULL"),
        }
    }
}

impl Upkeep {
    /// Reads `max_entries`, with an [`Error::InvalidConfig`] naming it when it is not a whole
    /// number of at least 1.
    pub(super) fn read(config: &BackendConfig, database: Database, table: &str) -> Result<Self> {
        let max_entries = config.parse::<u64>("max_entries", "a whole number of entries")?;
        if max_entries == Some(0) {
            return Err(Error::config(
                config.key("max_entries"),
                "expected at least 1 entry, got 0",
            ));
        }
        Ok(Upkeep {
            max_entries,
            writes: AtomicU64::new(0),
            uncounted: AtomicU64::new(0),
            // The first write counts: the table may be over the bound already.
            count_after: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            sql: Sql::new(database, table),
        })
    }
}

/// What one upkeep is to do.
#[derive(Debug, Clone, Copy)]
struct Due {
    expire: bool,
    count: Option<u64>,
}

impl Db {
    /// Counts a write of `rows` rows, which has succeeded, and does the table's upkeep when it
    /// is due: every [`UPKEEP_EVERY`] writes, and with `max_entries` when the writes since the
    /// last count could have used a quarter of the room it found.
    ///
    /// An upkeep that fails is logged at warn level, and tried again [`UPKEEP_EVERY`] writes
    /// later: it never fails the write.
    pub(super) fn wrote(&self, rows: usize) {
        let upkeep = &self.upkeep;
        let rows = rows as u64;
        let writes = upkeep.writes.fetch_add(rows, Ordering::Relaxed) + rows;
        let uncounted = upkeep.uncounted.fetch_add(rows, Ordering::Relaxed) + rows;
        let due = Due {
            expire: writes >= UPKEEP_EVERY,
            count: upkeep
                .max_entries
                .filter(|_| uncounted >= upkeep.count_after.load(Ordering::Relaxed)),
        };
        if !due.expire && due.count.is_none()
            || upkeep
                .busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // Writes made while it runs count towards the next one.
        upkeep.writes.store(0, Ordering::Relaxed);
        if due.count.is_some() {
            upkeep.uncounted.store(0, Ordering::Relaxed);
        }
        if let Err(failure) = self.upkeep(due) {
            let error = failure.into_error(&self.name, &self.config, "doing the upkeep of");
            tracing::warn!(
                backend = %self.name,
                error = &error as &dyn std::error::Error,
                "the upkeep of the table failed (the write succeeded); the writes {UPKEEP_EVERY} \
                 later try again"
            );
            if due.count.is_some() {
                upkeep
                    .count_after
                    .fetch_max(UPKEEP_EVERY, Ordering::Relaxed);
            }
        }
        if due.expire
            && self.leases
            && let Err(failure) = self.expire_leases()
        {
            let table = self.statements.leases_table();
            let error =
                failure.into_error_in(&self.name, &self.config, "doing the upkeep of", table);
            tracing::warn!(
                backend = %self.name,
                error = &error as &dyn std::error::Error,
                "deleting the expired leases failed (the write succeeded); the writes \
                 {UPKEEP_EVERY} later try again"
            );
        }
        upkeep.busy.store(false, Ordering::Release);
    }

    /// Deletes the expired leases, within a call of its own: the leases table holds few rows,
    /// those of the leases held and of their holders that died, so one statement deletes all.
    fn expire_leases(&self) -> Result<(), Failure> {
        let expire = self.statements.purge_leases(self.now());
        with_connection!(self.pool, self.call(), |conn| expire.execute(conn))?;
        Ok(())
    }

    /// Deletes up to [`EXPIRED_PER_UPKEEP`] expired rows, then counts the rows and culls those
    /// past the bound, as `due` says; sets when the next count is due.
    fn upkeep(&self, due: Due) -> Result<(), Failure> {
        let upkeep = &self.upkeep;
        let sql = &upkeep.sql;
        let call = self.call();
        if due.expire {
            let mut binds = vec![Bind::Int(Some(self.now())); sql.expire_times];
            binds.push(Bind::Int(Some(EXPIRED_PER_UPKEEP)));
            let expire = Statement::<BY_TEXT>::new(&sql.expire, binds);
            with_connection!(self.pool, call, |conn| expire.execute(conn))?;
        }
        let Some(max) = due.count else {
            return Ok(());
        };
        let count = Statement::<BY_TEXT>::new(&sql.count, Vec::new()).returning::<BigInt>();
        let counted: i64 = with_connection!(self.pool, call, |conn| count.get_result(conn))?;
        let mut entries = u64::try_from(counted).unwrap_or(0);
        if entries > max {
            let target = max - max / CULL_BELOW;
            for _ in 0..CULL_PASSES {
                let wanted = (entries - target).min(CULL_ROWS);
                if wanted == 0 {
                    break;
                }
                let mut deleted = self.cull(call, &sql.cull_expiring, wanted)?;
                if deleted < wanted {
                    deleted += self.cull(call, &sql.cull_forever, wanted - deleted)?;
                }
                entries = entries.saturating_sub(deleted);
                if deleted < wanted {
                    break;
                }
            }
        }
        // Another quarter of the room left, and the bound holds for one process; none left
        // (culling did not reach the bound): the next write counts again.
        let room = max.saturating_sub(entries);
        upkeep
            .count_after
            .store((room / 4).max(1), Ordering::Relaxed);
        Ok(())
    }

    /// Deletes up to `rows` rows with `sql` (one of the culls); returns how many went.
    fn cull(&self, call: crate::pool::Call, sql: &str, rows: u64) -> Result<u64, Failure> {
        let limit = i64::try_from(rows).unwrap_or(i64::MAX);
        let cull = Statement::<BY_TEXT>::new(sql, vec![Bind::Int(Some(limit))]);
        let deleted = with_connection!(self.pool, call, |conn| cull.execute(conn))?;
        Ok(deleted as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(value: Option<&str>) -> Result<Upkeep> {
        let config = BackendConfig::new("db", "sql").option("url", "sqlite://kv.sqlite3");
        let config = match value {
            Some(value) => config.option("max_entries", value),
            None => config,
        };
        Upkeep::read(&config, Database::Sqlite, "kv")
    }

    #[test]
    fn max_entries_is_a_positive_whole_number() {
        assert_eq!(read(None).unwrap().max_entries, None);
        assert_eq!(read(Some("1000")).unwrap().max_entries, Some(1000));
        for bad in ["0", "-1", "many", "1.5", "10k"] {
            let error = read(Some(bad)).unwrap_err();
            assert!(
                matches!(error, Error::InvalidConfig { .. }),
                "{bad}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.starts_with("backend.db.max_entries: "),
                "{bad}: {message}"
            );
        }
    }

    #[test]
    fn culls_go_by_the_expiry_index_soonest_first() {
        let pg = Sql::new(Database::Postgres, "kv");
        assert_eq!(
            pg.cull_expiring,
            "DELETE FROM \"kv\" WHERE expires_at IS NOT NULL AND (container_hash, key_hash) IN \
             (SELECT container_hash, key_hash FROM \"kv\" WHERE expires_at IS NOT NULL \
             ORDER BY expires_at LIMIT ? FOR UPDATE SKIP LOCKED)"
        );
        assert_eq!(pg.expire.matches('?').count(), pg.expire_times + 1);
        let mysql = Sql::new(Database::Mysql, "kv");
        assert_eq!(
            mysql.expire,
            "DELETE FROM `kv` WHERE expires_at <= ? \
             ORDER BY expires_at, container_hash, key_hash LIMIT ?"
        );
        assert_eq!(mysql.expire.matches('?').count(), mysql.expire_times + 1);
        let sqlite = Sql::new(Database::Sqlite, "kv");
        assert_eq!(
            sqlite.cull_forever,
            "DELETE FROM \"kv\" WHERE rowid IN (SELECT rowid FROM \"kv\" \
             WHERE expires_at IS NULL ORDER BY expires_at, rowid LIMIT ?)"
        );
        assert_eq!(sqlite.count, "SELECT COUNT(*) FROM \"kv\"");
    }
}
