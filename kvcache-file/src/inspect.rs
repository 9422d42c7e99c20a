//! What an operator can ask of the file ([`Inspect`]): reads only, on the backend's pool.
//!
//! A summary is one aggregate statement over the container's rows: the count, the sum of
//! `length(value)` (read from each record's header: SQLite does not load a value to measure
//! it), and the least and greatest expiry, the live rows told from the expired by `expires_at`.
//! Keys come from the primary key's index, in key order, those of a prefix as the range
//! `prefix <= key < end`. The containers are found by walking that index, one seek per
//! container.
//!
//! Leases live in a table of their own (`TABLE_leases`), which nothing here reads: a container
//! that holds only leases is not listed, and no summary or key list counts them.

use kvcache_core::Result;
use kvcache_core::inspect::{Entry, Inspect, Summary, prefix_end};
use rusqlite::{OptionalExtension, params};

use super::FileBackend;

/// Rows between two calls of a walk's `progress`.
const PROGRESS_EVERY: u64 = 4096;

/// Unix milliseconds as the table stores them.
fn millis_of(stored: i64) -> Option<u64> {
    u64::try_from(stored).ok()
}

impl Inspect for FileBackend {
    fn containers(&self, progress: &mut dyn FnMut(u64)) -> Result<Option<Vec<String>>> {
        let file = &*self.file;
        let table = &file.table;
        let first = format!("SELECT min(container) FROM \"{table}\"");
        let next = format!("SELECT min(container) FROM \"{table}\" WHERE container > ?1");
        let names = file.run(
            || "listing the containers".to_owned(),
            |connection| {
                let mut names = Vec::new();
                let mut found: Option<String> = connection
                    .prepare(&first)?
                    .query_row([], |row| row.get(0))?;
                let mut statement = connection.prepare(&next)?;
                while let Some(name) = found {
                    found = statement.query_row([&name], |row| row.get(0))?;
                    names.push(name);
                    progress(names.len() as u64);
                }
                Ok(names)
            },
        )?;
        Ok(Some(names))
    }

    fn summary(&self, container: &str, progress: &mut dyn FnMut(u64)) -> Result<Summary> {
        let file = &*self.file;
        let sql = format!(
            "SELECT count(*),
                 total(expires_at IS NULL OR expires_at > ?1),
                 total(iif(expires_at IS NULL OR expires_at > ?1, length(value), 0)),
                 total(expires_at IS NULL),
                 min(iif(expires_at > ?1, expires_at, NULL)),
                 max(iif(expires_at > ?1, expires_at, NULL))
             FROM \"{}\" WHERE container = ?2",
            file.table
        );
        let now = file.now();
        let (all, live, bytes, forever, oldest, newest) = file.run(
            || format!("summarising container {container:?}"),
            |connection| {
                connection
                    .prepare(&sql)?
                    .query_row(params![now, container], |row| {
                        Ok((
                            row.get::<_, i64>(0)?,
                            row.get::<_, f64>(1)?,
                            row.get::<_, f64>(2)?,
                            row.get::<_, f64>(3)?,
                            row.get::<_, Option<i64>>(4)?,
                            row.get::<_, Option<i64>>(5)?,
                        ))
                    })
            },
        )?;
        let all = u64::try_from(all).unwrap_or(0);
        progress(all);
        // `total` is exact for integers below 2^53.
        let count = |total: f64| total as u64;
        let live = count(live);
        Ok(Summary {
            entries: live,
            bytes: Some(count(bytes)),
            without_expiry: Some(count(forever)),
            oldest_expiry: oldest.and_then(millis_of),
            newest_expiry: newest.and_then(millis_of),
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
        let file = &*self.file;
        let end = prefix_end(prefix);
        let sql = format!(
            "SELECT key FROM \"{}\" WHERE container = ?1 AND key >= ?2 {}
                 AND (expires_at IS NULL OR expires_at > ?4)
             ORDER BY key LIMIT ?5",
            file.table,
            if end.is_some() {
                "AND key < ?3"
            } else {
                "AND ?3 IS NULL"
            }
        );
        let now = file.now();
        let limit = limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(-1));
        file.run(
            || format!("listing the keys of container {container:?}"),
            |connection| {
                let mut statement = connection.prepare(&sql)?;
                let mut rows = statement.query(params![container, prefix, end, now, limit])?;
                let mut keys = Vec::new();
                while let Some(row) = rows.next()? {
                    keys.push(row.get::<_, String>(0)?);
                    if (keys.len() as u64).is_multiple_of(PROGRESS_EVERY) {
                        progress(keys.len() as u64);
                    }
                }
                progress(keys.len() as u64);
                Ok(keys)
            },
        )
    }

    fn entry(&self, container: &str, key: &str) -> Result<Option<Entry>> {
        let file = &*self.file;
        let sql = format!(
            "SELECT value, expires_at FROM \"{}\" WHERE container = ?1 AND key = ?2",
            file.table
        );
        let now = file.now();
        let row = file.run(
            || format!("reading an entry of container {container:?}"),
            |connection| {
                connection
                    .prepare(&sql)?
                    .query_row(params![container, key], |row| {
                        Ok((row.get::<_, Vec<u8>>(0)?, row.get::<_, Option<i64>>(1)?))
                    })
                    .optional()
            },
        )?;
        Ok(row
            .filter(|(_, expires_at)| expires_at.is_none_or(|at| now < at))
            .map(|(value, expires_at)| Entry::new(value, expires_at.and_then(millis_of))))
    }
}
