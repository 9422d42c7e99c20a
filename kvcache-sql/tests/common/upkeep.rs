//! The table's upkeep, done by writes: `max_entries` holds over the whole table, the entries
//! stored last stay, expired rows go without `purge_expired`, and a failed upkeep fails no write.

use std::sync::PoisonError;
use std::time::Duration;

use kvcache_core::{BackendConfig, ManualClock};
use kvcache_sql::SqlBackend;

use super::{Db, Events, Table, clock, config, full_message, open, store};

/// `db`'s backend on `table` with `max_entries`.
fn bounded(db: &dyn Db, table: &str, clock: &ManualClock, max_entries: u64) -> SqlBackend {
    let config: BackendConfig =
        config(db, table, clock).option("max_entries", max_entries.to_string());
    SqlBackend::open(&config).unwrap_or_else(|error| panic!("open: {error}"))
}

/// Ten times `max_entries` stored into two containers of one backend, one by one and in
/// batches, a millisecond apart, with a time to live: the table never holds more than the bound
/// after a write, the last entries stored are all there, and the entries that never expire,
/// culled last, stay.
pub(crate) fn max_entries_holds_over_the_table(db: &dyn Db) {
    const MAX: u64 = 64;
    let table = Table::new(db, "bound");
    let clock = clock();
    let backend = bounded(db, &table.name, &clock, MAX);
    let containers = [store(&backend, "a"), store(&backend, "b")];
    let ttl = Some(Duration::from_secs(3600));
    for key in ["forever 1", "forever 2"] {
        containers[0].store(key, b"kept", None).expect("store");
    }
    let mut stored = Vec::new();
    let mut batch = Vec::new();
    for i in 0..10 * MAX as usize {
        let key = format!("key {i:04}");
        if i % 50 < 40 {
            containers[i % 2]
                .store(&key, key.as_bytes(), ttl)
                .unwrap_or_else(|error| panic!("store {key}: {}", full_message(&error)));
            stored.push((i % 2, key));
        } else {
            // Of every 50 keys, 10 go in two batches of 5, into the first container.
            batch.push(key.clone());
            stored.push((0, key));
            if batch.len() == 5 {
                let entries: Vec<(&str, &[u8])> = batch
                    .iter()
                    .map(|key| (key.as_str(), key.as_bytes()))
                    .collect();
                containers[0]
                    .store_many(&entries, ttl)
                    .unwrap_or_else(|error| panic!("store_many: {}", full_message(&error)));
                batch.clear();
            }
        }
        clock.advance(Duration::from_millis(1));
        if i % 16 == 15 {
            let rows = db.count(&table.name);
            assert!(
                rows <= MAX as i64,
                "{rows} rows after {} writes, over max_entries = {MAX}",
                i + 1
            );
        }
    }
    let rows = db.count(&table.name);
    assert!(rows <= MAX as i64, "{rows} rows, over {MAX}");
    // Culling goes 1/32 under the bound, by expiry: all those stored since are there.
    let newest = (MAX - MAX / 32) as usize - 2;
    for (container, key) in &stored[stored.len() - newest..] {
        assert_eq!(
            containers[*container]
                .retrieve(key)
                .expect("retrieve")
                .as_deref(),
            Some(key.as_bytes()),
            "{key}, among the {newest} stored last, was culled"
        );
    }
    for key in ["forever 1", "forever 2"] {
        assert_eq!(
            containers[0].retrieve(key).expect("retrieve").as_deref(),
            Some(&b"kept"[..]),
            "{key} never expires: culled last"
        );
    }
}

/// Expired rows go by writes alone, up to 256 an upkeep: no read of them, no `purge_expired`.
pub(crate) fn writes_reclaim_expired_rows(db: &dyn Db) {
    const EXPIRED: usize = 300;
    let table = Table::new(db, "reclaim");
    let clock = clock();
    let backend = open(db, &table.name, &clock);
    let (old, new) = (store(&backend, "old"), store(&backend, "new"));
    let keys: Vec<String> = (0..EXPIRED).map(|i| format!("old {i}")).collect();
    for chunk in keys.chunks(60) {
        let entries: Vec<(&str, &[u8])> =
            chunk.iter().map(|key| (key.as_str(), &b"v"[..])).collect();
        old.store_many(&entries, Some(Duration::from_secs(1)))
            .expect("store_many");
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(
        db.count(&table.name),
        EXPIRED as i64,
        "expired, not yet deleted"
    );
    let tick = |times: usize| {
        for _ in 0..times {
            new.store("tick", b"v", None).expect("store");
        }
    };
    tick(64);
    let rows = db.count(&table.name);
    assert!(
        1 < rows && rows < EXPIRED as i64,
        "64 writes delete some of {EXPIRED} expired rows, and at most 256 at a time: {rows} rows"
    );
    tick(128);
    assert_eq!(db.count(&table.name), 1, "only the live row is left");
}

/// An upkeep that fails (`forbid_deletes` makes every delete from the table an error) is logged
/// at warn level and fails no write.
pub(crate) fn a_failed_upkeep_fails_no_write(db: &dyn Db, forbid_deletes: &str) {
    const MAX: u64 = 8;
    let table = Table::new(db, "fail");
    let clock = clock();
    let backend = bounded(db, &table.name, &clock, MAX);
    let c = store(&backend, "c");
    db.execute(&forbid_deletes.replace("{table}", &table.name))
        .expect("forbid deletes");
    let events = Events::default();
    tracing::subscriber::with_default(events.clone(), || {
        for i in 0..4 * MAX {
            c.store(&format!("k{i}"), b"v", Some(Duration::from_secs(60)))
                .unwrap_or_else(|error| {
                    panic!("a write whose upkeep failed: {}", full_message(&error))
                });
            clock.advance(Duration::from_millis(1));
        }
    });
    assert_eq!(
        db.count(&table.name),
        4 * MAX as i64,
        "nothing could be culled"
    );
    let logged = events.0.lock().unwrap_or_else(PoisonError::into_inner);
    let warnings: Vec<_> = logged
        .iter()
        .filter(|line| line.starts_with("WARN") && line.contains("upkeep"))
        .collect();
    assert!(
        warnings.len() == 1 && warnings[0].contains(&table.name),
        "one warning, naming the table, and a retry 64 writes later: {logged:#?}"
    );
}
