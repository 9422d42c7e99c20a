//! The SQLite file backend against raw `rusqlite`, in one run, on a 32-byte `String` and a 1 KiB
//! struct.
//!
//! The peer is what a careful hand-written cache does: one connection kept open on a file of its
//! own, with the backend's pragmas (WAL, `synchronous=NORMAL`, a busy timeout), its table and its
//! SQL text, prepared once (`prepare_cached`). It encodes values by hand (a `String` as its
//! UTF-8 bytes, the struct in bincode's layout, written out, so both sides store as many bytes)
//! and decodes them from the borrowed row, where kvcache runs its codec (a type header, then
//! bincode through serde).
//!
//! `cargo bench -p kvcache-bench --bench file`

// criterion_group! makes an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kvcache::{Container, KvCache};
use kvcache_bench::{BATCH, Hand, KEYS, Kib, Turns, batches, keys, kib, string32};
use rusqlite::{Connection, OpenFlags, OptionalExtension, ToSql, params};

/// A directory of this process's own, deleted when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("kvcache-bench-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cache(dir: &TempDir) -> KvCache {
    let path = dir.0.join("kvcache.sqlite3");
    kvcache::init([
        ("backend.disk", "file"),
        ("backend.disk.path", path.to_str().unwrap()),
        ("container.strings.backend", "disk"),
        ("container.structs.backend", "disk"),
    ])
    .unwrap()
}

fn container<V: kvcache::Value>(cache: &KvCache, name: &str) -> Container<V> {
    cache.container(name).unwrap()
}

// The backend's schema and statements (kvcache-file/src/schema.rs and backend.rs), as text.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS \"kvcache\" (
        container TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        expires_at INTEGER,
        overwritten INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (container, key)
    );
    CREATE INDEX IF NOT EXISTS \"kvcache_expires_at\" ON \"kvcache\" (expires_at)
        WHERE expires_at IS NOT NULL;";
const SELECT: &str = "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM \"kvcache\" WHERE container = ?1 AND key = ?2";
const UPSERT: &str =
    "INSERT INTO \"kvcache\" (container, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (container, key)
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
                     overwritten = 1";
const DELETE: &str = "DELETE FROM \"kvcache\" WHERE container = ?1 AND key = ?2";
const SELECT_16: &str = "SELECT key, iif(expires_at IS NULL OR expires_at > ?2, value, NULL) FROM \"kvcache\"
                     WHERE container = ?1 AND key IN (?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)";

/// The hand-written peer: one open connection, the backend's pragmas and statements.
struct Raw(Connection);

impl Raw {
    fn open(path: &Path) -> Raw {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).unwrap();
        // The backend's page size for new files.
        connection.pragma_update(None, "page_size", 8192).unwrap();
        connection.busy_timeout(Duration::from_secs(5)).unwrap();
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .unwrap();
        let mode: String = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        connection.execute_batch(SCHEMA).unwrap();
        Raw(connection)
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    }

    fn get<V: Hand>(&self, container: &str, key: &str) -> Option<V> {
        let mut statement = self.0.prepare_cached(SELECT).unwrap();
        statement
            .query_row(params![container, key, Self::now()], |row| {
                Ok(row.get_ref(0)?.as_blob_or_null()?.and_then(V::decode))
            })
            .optional()
            .unwrap()
            .flatten()
    }

    fn set<V: Hand>(&self, container: &str, key: &str, value: &V) {
        let mut statement = self.0.prepare_cached(UPSERT).unwrap();
        statement
            .execute(params![container, key, value.encode(), None::<i64>])
            .unwrap();
    }

    /// The value of `key`, or `generate`'s, which is then stored.
    fn get_or_generate<V: Hand>(
        &self,
        container: &str,
        key: &str,
        generate: impl FnOnce(&str) -> V,
    ) -> V {
        self.get(container, key).unwrap_or_else(|| {
            let value = generate(key);
            self.set(container, key, &value);
            value
        })
    }

    fn remove(&self, container: &str, key: &str) {
        let mut statement = self.0.prepare_cached(DELETE).unwrap();
        statement.execute(params![container, key]).unwrap();
    }

    /// The values of 16 distinct `keys`, in order, with one `IN (...)`.
    fn get_16<V: Hand>(&self, container: &str, keys: &[&str]) -> Vec<Option<V>> {
        assert_eq!(keys.len(), BATCH);
        let now = Self::now();
        let mut parameters: Vec<&dyn ToSql> = vec![&container, &now];
        parameters.extend(keys.iter().map(|key| key as &dyn ToSql));
        let mut found: Vec<Option<V>> = std::iter::repeat_with(|| None).take(BATCH).collect();
        let mut statement = self.0.prepare_cached(SELECT_16).unwrap();
        let mut rows = statement.query(&*parameters).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let key = row.get_ref(0).unwrap().as_str().unwrap();
            let position = keys.iter().position(|k| *k == key).unwrap();
            found[position] = row
                .get_ref(1)
                .unwrap()
                .as_blob_or_null()
                .unwrap()
                .and_then(V::decode);
        }
        found
    }
}

fn raw(dir: &TempDir) -> Raw {
    Raw::open(&dir.0.join("raw.sqlite3"))
}

fn hits(c: &mut Criterion) {
    let dir = TempDir::new();
    let keys = keys();
    let mut group = c.benchmark_group("file/hit");
    let cache = cache(&dir);
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let raw = raw(&dir);
    for (i, key) in keys.iter().enumerate() {
        strings.set(key, &string32(key)).unwrap();
        structs.set(key, &kib(i as u64)).unwrap();
        raw.set("strings", key, &string32(key));
        raw.set("structs", key, &kib(i as u64));
    }
    assert_eq!(structs.get("key-7").unwrap(), kib(7));
    assert_eq!(raw.get::<Kib>("structs", "key-7"), Some(kib(7)));

    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        keys[i].as_str()
    };
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| strings.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("rusqlite", "string32"), |b| {
        b.iter(|| raw.get::<String>("strings", black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("kvcache", "struct1k"), |b| {
        b.iter(|| structs.get(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("rusqlite", "struct1k"), |b| {
        b.iter(|| raw.get::<Kib>("structs", black_box(next())).unwrap())
    });
    group.finish();
}

/// A miss: the generator runs and its value is stored. Each iteration removes the key first.
fn misses(c: &mut Criterion) {
    let dir = TempDir::new();
    let mut group = c.benchmark_group("file/miss");
    let cache = cache(&dir);
    cache.register_generator("strings", string32).unwrap();
    cache
        .register_generator("structs", |key: &str| kib(key.len() as u64))
        .unwrap();
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let raw = raw(&dir);
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| {
            strings.remove("k").unwrap();
            strings.get(black_box("k")).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("rusqlite", "string32"), |b| {
        b.iter(|| {
            raw.remove("strings", "k");
            raw.get_or_generate("strings", black_box("k"), string32)
        })
    });
    group.bench_function(BenchmarkId::new("kvcache", "struct1k"), |b| {
        b.iter(|| {
            structs.remove("k").unwrap();
            structs.get(black_box("k")).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("rusqlite", "struct1k"), |b| {
        b.iter(|| {
            raw.remove("structs", "k");
            raw.get_or_generate("structs", black_box("k"), |key| kib(key.len() as u64))
        })
    });
    group.finish();
}

fn sets(c: &mut Criterion) {
    let dir = TempDir::new();
    let keys = keys();
    let mut group = c.benchmark_group("file/set");
    let cache = cache(&dir);
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let raw = raw(&dir);
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % KEYS;
        (i, keys[i].as_str())
    };
    group.bench_function(BenchmarkId::new("kvcache", "string32"), |b| {
        b.iter(|| {
            let (_, key) = next();
            strings.set(key, &string32(key)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("rusqlite", "string32"), |b| {
        b.iter(|| {
            let (_, key) = next();
            raw.set("strings", key, &string32(key))
        })
    });
    group.bench_function(BenchmarkId::new("kvcache", "struct1k"), |b| {
        b.iter(|| {
            let (i, key) = next();
            structs.set(key, &kib(i as u64)).unwrap()
        })
    });
    group.bench_function(BenchmarkId::new("rusqlite", "struct1k"), |b| {
        b.iter(|| {
            let (i, key) = next();
            raw.set("structs", key, &kib(i as u64))
        })
    });
    group.finish();
}

/// 16 stored keys: kvcache's `get_many` and 16 `get`s, the peer's `IN (...)` and 16 look-ups.
fn batch(c: &mut Criterion) {
    let dir = TempDir::new();
    let keys = keys();
    let batches = batches(&keys);
    let mut group = c.benchmark_group("file/batch16");
    let cache = cache(&dir);
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let raw = raw(&dir);
    for (i, key) in keys.iter().enumerate() {
        strings.set(key, &string32(key)).unwrap();
        structs.set(key, &kib(i as u64)).unwrap();
        raw.set("strings", key, &string32(key));
        raw.set("structs", key, &kib(i as u64));
    }
    assert_eq!(
        structs.get_many(&batches[1]).unwrap(),
        raw.get_16::<Kib>("structs", &batches[1])
            .into_iter()
            .map(Option::unwrap)
            .collect::<Vec<_>>()
    );

    let mut i = 0;
    let mut next = || {
        i = (i + 1) % batches.len();
        &batches[i][..]
    };
    group.bench_function(BenchmarkId::new("kvcache-get_many", "string32"), |b| {
        b.iter(|| strings.get_many(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("kvcache-16-gets", "string32"), |b| {
        b.iter(|| {
            next()
                .iter()
                .map(|key| strings.get(black_box(key)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.bench_function(BenchmarkId::new("rusqlite-in", "string32"), |b| {
        b.iter(|| raw.get_16::<String>("strings", black_box(next())))
    });
    group.bench_function(BenchmarkId::new("rusqlite-16-gets", "string32"), |b| {
        b.iter(|| {
            next()
                .iter()
                .map(|key| raw.get::<String>("strings", black_box(key)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.bench_function(BenchmarkId::new("kvcache-get_many", "struct1k"), |b| {
        b.iter(|| structs.get_many(black_box(next())).unwrap())
    });
    group.bench_function(BenchmarkId::new("kvcache-16-gets", "struct1k"), |b| {
        b.iter(|| {
            next()
                .iter()
                .map(|key| structs.get(black_box(key)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.bench_function(BenchmarkId::new("rusqlite-in", "struct1k"), |b| {
        b.iter(|| raw.get_16::<Kib>("structs", black_box(next())))
    });
    group.bench_function(BenchmarkId::new("rusqlite-16-gets", "struct1k"), |b| {
        b.iter(|| {
            next()
                .iter()
                .map(|key| raw.get::<Kib>("structs", black_box(key)).unwrap())
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Issue #14: the layouts, the backend against raw rusqlite in turns, and the price of the bounds.

/// One candidate layout: its tables, its look-up (`?1` container, `?2` key, `?3` now, `?4` the
/// key's hash: those it uses) and its set (`?1` container, `?2` key, `?3` value, `?4` expiry,
/// `?5` the key's hash: those it uses).
struct Layout {
    name: &'static str,
    schema: &'static str,
    select: &'static str,
    upsert: &'static str,
}

/// Each candidate's look-up is the backend's; the sets differ in how they keep an order for
/// culling: `rowid` is the backend's (rowid order, overwrites in place), `-replace` and `seq-`
/// move an overwritten row to the end, `-stored` keep an index on a store sequence; `hash` keys
/// the rowid by a 64-bit hash of (container, key).
const LAYOUTS: &[Layout] = &[
    Layout {
        name: "rowid",
        schema: "CREATE TABLE t (container TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                     expires_at INTEGER, overwritten INTEGER NOT NULL DEFAULT 0,
                     PRIMARY KEY (container, key));
                 CREATE INDEX t_expires_at ON t (expires_at) WHERE expires_at IS NOT NULL;",
        select: "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM t
                 WHERE container = ?1 AND key = ?2",
        upsert: "INSERT INTO t (container, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (container, key)
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
                     overwritten = 1",
    },
    Layout {
        name: "rowid-replace",
        schema: "CREATE TABLE t (container TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                     expires_at INTEGER, PRIMARY KEY (container, key));
                 CREATE INDEX t_expires_at ON t (expires_at) WHERE expires_at IS NOT NULL;",
        select: "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM t
                 WHERE container = ?1 AND key = ?2",
        upsert: "INSERT OR REPLACE INTO t (container, key, value, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
    },
    Layout {
        name: "without-rowid",
        schema: "CREATE TABLE t (container TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                     expires_at INTEGER, PRIMARY KEY (container, key)) WITHOUT ROWID;
                 CREATE INDEX t_expires_at ON t (expires_at) WHERE expires_at IS NOT NULL;",
        select: "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM t
                 WHERE container = ?1 AND key = ?2",
        upsert: "INSERT INTO t (container, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (container, key)
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
    },
    Layout {
        name: "without-rowid-stored",
        schema: "CREATE TABLE t (container TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                     expires_at INTEGER, stored INTEGER NOT NULL, PRIMARY KEY (container, key))
                     WITHOUT ROWID;
                 CREATE INDEX t_expires_at ON t (expires_at) WHERE expires_at IS NOT NULL;
                 CREATE INDEX t_stored ON t (stored);",
        select: "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM t
                 WHERE container = ?1 AND key = ?2",
        upsert: "INSERT INTO t (container, key, value, expires_at, stored)
                 VALUES (?1, ?2, ?3, ?4, (SELECT coalesce(max(stored), 0) + 1 FROM t))
                 ON CONFLICT (container, key)
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at,
                     stored = excluded.stored",
    },
    Layout {
        name: "hash",
        schema: "CREATE TABLE t (h INTEGER PRIMARY KEY, container TEXT NOT NULL, key TEXT NOT NULL,
                     value BLOB NOT NULL, expires_at INTEGER);
                 CREATE INDEX t_expires_at ON t (expires_at) WHERE expires_at IS NOT NULL;",
        select: "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM t
                 WHERE h = ?4 AND container = ?1 AND key = ?2",
        upsert: "INSERT INTO t (h, container, key, value, expires_at) VALUES (?5, ?1, ?2, ?3, ?4)
                 ON CONFLICT (h) DO UPDATE SET container = excluded.container, key = excluded.key,
                     value = excluded.value, expires_at = excluded.expires_at",
    },
    Layout {
        name: "hash-stored",
        schema: "CREATE TABLE t (h INTEGER PRIMARY KEY, container TEXT NOT NULL, key TEXT NOT NULL,
                     value BLOB NOT NULL, expires_at INTEGER, stored INTEGER NOT NULL);
                 CREATE INDEX t_expires_at ON t (expires_at) WHERE expires_at IS NOT NULL;
                 CREATE INDEX t_stored ON t (stored);",
        select: "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM t
                 WHERE h = ?4 AND container = ?1 AND key = ?2",
        upsert: "INSERT INTO t (h, container, key, value, expires_at, stored)
                 VALUES (?5, ?1, ?2, ?3, ?4, (SELECT coalesce(max(stored), 0) + 1 FROM t))
                 ON CONFLICT (h) DO UPDATE SET container = excluded.container, key = excluded.key,
                     value = excluded.value, expires_at = excluded.expires_at,
                     stored = excluded.stored",
    },
    Layout {
        name: "seq-hash",
        schema: "CREATE TABLE t (id INTEGER PRIMARY KEY, h INTEGER NOT NULL UNIQUE,
                     container TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
                     expires_at INTEGER);
                 CREATE INDEX t_expires_at ON t (expires_at) WHERE expires_at IS NOT NULL;",
        select: "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM t
                 WHERE h = ?4 AND container = ?1 AND key = ?2",
        upsert: "INSERT OR REPLACE INTO t (h, container, key, value, expires_at)
                 VALUES (?5, ?1, ?2, ?3, ?4)",
    },
];

fn layout(name: &str) -> &'static Layout {
    LAYOUTS.iter().find(|layout| layout.name == name).unwrap()
}

/// Recording a hit, as an LRU (or CLOCK) policy would: the row's mark set in place.
const RECORD: &str = "UPDATE t SET overwritten = 1 WHERE container = ?1 AND key = ?2";

/// FNV-1a over the container, a zero byte and the key.
fn fnv(container: &str, key: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in container
        .as_bytes()
        .iter()
        .chain(&[0])
        .chain(key.as_bytes())
    {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Raw rusqlite on a file of one layout, page size and mmap size, with the backend's pragmas.
struct Laid {
    connection: Connection,
    layout: &'static Layout,
}

impl Laid {
    fn open(path: &Path, layout: &'static Layout, page_size: u32, mmap: i64) -> Laid {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let connection = Connection::open(path).unwrap();
        connection
            .pragma_update(None, "page_size", page_size)
            .unwrap();
        connection.busy_timeout(Duration::from_secs(5)).unwrap();
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .unwrap();
        connection.pragma_update(None, "mmap_size", mmap).unwrap();
        let mode: String = connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        connection.execute_batch(layout.schema).unwrap();
        Laid { connection, layout }
    }

    /// The value of `key`, read in place by `read`.
    fn get<T>(&self, container: &str, key: &str, read: impl FnOnce(&[u8]) -> T) -> Option<T> {
        let mut statement = self.connection.prepare_cached(self.layout.select).unwrap();
        let hash = fnv(container, key);
        let values: [&dyn ToSql; 4] = [&container, &key, &Raw::now(), &hash];
        for (i, value) in values.iter().take(statement.parameter_count()).enumerate() {
            statement.raw_bind_parameter(i + 1, value).unwrap();
        }
        let mut rows = statement.raw_query();
        let row = rows.next().unwrap()?;
        row.get_ref(0).unwrap().as_blob_or_null().unwrap().map(read)
    }

    fn set(&self, container: &str, key: &str, value: &[u8]) {
        let mut statement = self.connection.prepare_cached(self.layout.upsert).unwrap();
        let hash = fnv(container, key);
        let values: [&dyn ToSql; 5] = [&container, &key, &value, &None::<i64>, &hash];
        for (i, value) in values.iter().take(statement.parameter_count()).enumerate() {
            statement.raw_bind_parameter(i + 1, value).unwrap();
        }
        assert_eq!(statement.raw_execute().unwrap(), 1);
    }

    fn record(&self, keys: &[&str]) {
        let transaction = self.connection.unchecked_transaction().unwrap();
        {
            let mut statement = transaction.prepare_cached(RECORD).unwrap();
            for key in keys {
                statement.execute(params!["c", key]).unwrap();
            }
        }
        transaction.commit().unwrap();
    }

    fn file_kib(&self) -> i64 {
        let pages: i64 = self
            .connection
            .pragma_query_value(None, "page_count", |row| row.get(0))
            .unwrap();
        let size: i64 = self
            .connection
            .pragma_query_value(None, "page_size", |row| row.get(0))
            .unwrap();
        pages * size / 1024
    }
}

/// Raw rusqlite on every candidate layout, and on three page sizes and mmap for the three
/// fastest-looking ones: a hit and a set (an overwrite) of 32-byte, 1 KiB and 1 MiB values; then,
/// on the backend's layout, a hit that records itself, per hit or 64 at a time.
fn layouts(c: &mut Criterion) {
    let dir = TempDir::new();
    let path = dir.0.join("layout.sqlite3");
    let keys = keys();
    let sizes: [(&str, usize, usize); 3] = [
        ("32B", 32, KEYS),
        ("1KiB", 1024, KEYS),
        ("1MiB", 1 << 20, 16),
    ];
    let mut configs = Vec::new();
    for candidate in LAYOUTS {
        configs.push((candidate, 4096, 0));
    }
    for name in ["rowid", "without-rowid", "hash"] {
        configs.push((layout(name), 8192, 0));
        configs.push((layout(name), 16384, 0));
        configs.push((layout(name), 4096, 256 << 20));
    }
    for (label, size, count) in sizes {
        let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut group = c.benchmark_group(format!("file/layout/{label}"));
        if size > 4096 {
            group.sample_size(20);
        }
        for &(candidate, page_size, mmap) in &configs {
            let laid = Laid::open(&path, candidate, page_size, mmap);
            for key in &keys[..count] {
                laid.set("c", key, &value);
            }
            assert_eq!(laid.get("c", &keys[1], <[u8]>::len), Some(size));
            let id = format!(
                "{}-p{page_size}{}",
                candidate.name,
                if mmap > 0 { "-mmap" } else { "" }
            );
            let mut i = 0;
            let mut next = || {
                i = (i + 1) % count;
                keys[i].as_str()
            };
            group.bench_function(BenchmarkId::new("hit", &id), |b| {
                b.iter(|| laid.get("c", black_box(next()), <[u8]>::len).unwrap())
            });
            group.bench_function(BenchmarkId::new("set", &id), |b| {
                b.iter(|| laid.set("c", black_box(next()), &value))
            });
            println!("layout {label} {id}: {} KiB in the file", laid.file_kib());
        }
        let laid = Laid::open(&path, layout("rowid"), 4096, 0);
        for key in &keys[..count] {
            laid.set("c", key, &value);
        }
        let mut i = 0;
        let mut next = || {
            i = (i + 1) % count;
            keys[i].as_str()
        };
        group.bench_function(BenchmarkId::new("hit-recorded", "rowid-p4096"), |b| {
            b.iter(|| {
                let key = black_box(next());
                let found = laid.get("c", key, <[u8]>::len).unwrap();
                laid.record(&[key]);
                found
            })
        });
        let mut recorded = Vec::with_capacity(64);
        group.bench_function(BenchmarkId::new("hit-recorded-64", "rowid-p4096"), |b| {
            b.iter(|| {
                let key = black_box(next());
                let found = laid.get("c", key, <[u8]>::len).unwrap();
                recorded.push(key);
                if recorded.len() == 64 {
                    laid.record(&recorded);
                    recorded.clear();
                }
                found
            })
        });
        group.finish();
    }
}

/// `Turns` over `iters` calls of `kvcache` and `peer`, each given the call's number.
fn in_turns(
    turns: &mut Turns,
    iters: u64,
    mut kvcache: impl FnMut(usize),
    mut peer: impl FnMut(usize),
) -> Duration {
    let (mut k, mut p) = (0, 0);
    turns.take(
        iters,
        200,
        |n| {
            let start = Instant::now();
            for _ in 0..n {
                k += 1;
                kvcache(k);
            }
            start.elapsed()
        },
        |n| {
            let start = Instant::now();
            for _ in 0..n {
                p += 1;
                peer(p);
            }
            start.elapsed()
        },
    )
}

/// The hit and the set of the `hit` and `set` groups, kvcache and raw rusqlite in turns (see
/// `Turns`), against two peers: on the backend's layout and statements (`rusqlite`), and on a
/// `WITHOUT ROWID` table keyed by (container, key) with a plain upsert (`without-rowid`), both
/// on the backend's 8 KiB pages.
fn turns(c: &mut Criterion) {
    let dir = TempDir::new();
    let keys = keys();
    let cache = cache(&dir);
    let strings = container::<String>(&cache, "strings");
    let structs = container::<Kib>(&cache, "structs");
    let raw = raw(&dir);
    let plain = Laid::open(
        &dir.0.join("without-rowid.sqlite3"),
        layout("without-rowid"),
        8192,
        0,
    );
    for (i, key) in keys.iter().enumerate() {
        strings.set(key, &string32(key)).unwrap();
        structs.set(key, &kib(i as u64)).unwrap();
        raw.set("strings", key, &string32(key));
        raw.set("structs", key, &kib(i as u64));
        plain.set("strings", key, &string32(key).encode());
        plain.set("structs", key, &kib(i as u64).encode());
    }
    let key = |i: usize| keys[i % KEYS].as_str();
    let mut group = c.benchmark_group("file/turns");
    group.sample_size(20);
    let mut report = Vec::new();
    // The backend alone, under the core: its store's hit, the value decoded by hand as the
    // peer's is, against the peer on the same layout.
    let backend = kvcache::file::FileBackend::open(dir.0.join("store.sqlite3")).unwrap();
    let (store_strings, store_structs) = (
        kvcache::Backend::open(&backend, "strings")
            .unwrap()
            .sync_store(),
        kvcache::Backend::open(&backend, "structs")
            .unwrap()
            .sync_store(),
    );
    for (i, key) in keys.iter().enumerate() {
        store_strings
            .store(key, &string32(key).encode(), None)
            .unwrap();
        store_structs
            .store(key, &kib(i as u64).encode(), None)
            .unwrap();
    }
    for (name, store) in [
        ("store-hit/string32", &store_strings),
        ("store-hit/struct1k", &store_structs),
    ] {
        let structs = name.ends_with("struct1k");
        let mut turns = Turns::default();
        group.bench_function(BenchmarkId::new("backend-vs-rusqlite", name), |b| {
            b.iter_custom(|iters| {
                in_turns(
                    &mut turns,
                    iters,
                    |i| {
                        let mut decoded = false;
                        store
                            .retrieve_with(black_box(key(i)), &mut |bytes| {
                                decoded = if structs {
                                    Kib::decode(bytes).is_some()
                                } else {
                                    String::decode(bytes).is_some()
                                }
                            })
                            .unwrap();
                        assert!(decoded);
                    },
                    |i| {
                        let found = if structs {
                            raw.get::<Kib>("structs", key(i)).is_some()
                        } else {
                            raw.get::<String>("strings", key(i)).is_some()
                        };
                        assert!(found);
                    },
                )
            })
        });
        report.push((
            format!("file {name}, the backend's store vs rusqlite"),
            turns,
        ));
    }
    for peer in ["rusqlite", "without-rowid"] {
        let mut run = |name: &str, kvcache: &mut dyn FnMut(usize), other: &mut dyn FnMut(usize)| {
            let mut turns = Turns::default();
            group.bench_function(BenchmarkId::new(format!("kvcache-vs-{peer}"), name), |b| {
                b.iter_custom(|iters| in_turns(&mut turns, iters, &mut *kvcache, &mut *other))
            });
            report.push((format!("file {name}, kvcache vs {peer}"), turns));
        };
        let raw_or_plain_get = |container: &str, i: usize, decode: fn(&[u8]) -> bool| match peer {
            "rusqlite" => {
                if container == "strings" {
                    raw.get::<String>(container, key(i)).is_some()
                } else {
                    raw.get::<Kib>(container, key(i)).is_some()
                }
            }
            _ => plain.get(container, key(i), decode).unwrap(),
        };
        run(
            "hit/string32",
            &mut |i| assert!(!strings.get(black_box(key(i))).unwrap().is_empty()),
            &mut |i| {
                assert!(raw_or_plain_get("strings", i, |bytes| {
                    String::decode(bytes).is_some()
                }))
            },
        );
        run(
            "hit/struct1k",
            &mut |i| assert!(structs.get(black_box(key(i))).unwrap().id < KEYS as u64),
            &mut |i| {
                assert!(raw_or_plain_get("structs", i, |bytes| {
                    Kib::decode(bytes).is_some()
                }))
            },
        );
        run(
            "set/string32",
            &mut |i| strings.set(key(i), &string32(key(i))).unwrap(),
            &mut |i| match peer {
                "rusqlite" => raw.set("strings", key(i), &string32(key(i))),
                _ => plain.set("strings", key(i), &string32(key(i)).encode()),
            },
        );
        run(
            "set/struct1k",
            &mut |i| structs.set(key(i), &kib((i % KEYS) as u64)).unwrap(),
            &mut |i| match peer {
                "rusqlite" => raw.set("structs", key(i), &kib((i % KEYS) as u64)),
                _ => plain.set("structs", key(i), &kib((i % KEYS) as u64).encode()),
            },
        );
    }
    group.finish();
    print_turns(report);
}

/// What the bounds cost a set of a new struct1k key: into a file past `max_size` (8 MiB) or
/// `max_entries` (20 000), where the writes cull, against the same set into an unbounded file
/// filled alike (which grows), in turns.
fn bounded(c: &mut Criterion) {
    let dir = TempDir::new();
    let mut group = c.benchmark_group("file/bounded");
    group.sample_size(20);
    let mut report = Vec::new();
    for (bound, option, value) in [
        ("max_size", "max_size", "8MiB"),
        ("max_entries", "max_entries", "20000"),
    ] {
        let path = |name: &str| {
            let path = dir.0.join(format!("{bound}-{name}.sqlite3"));
            path.to_str().unwrap().to_owned()
        };
        let cache = kvcache::init([
            ("backend.plain".to_owned(), "file".to_owned()),
            ("backend.plain.path".to_owned(), path("plain")),
            ("backend.bounded".to_owned(), "file".to_owned()),
            ("backend.bounded.path".to_owned(), path("bounded")),
            (format!("backend.bounded.{option}"), value.to_owned()),
            ("container.plain.backend".to_owned(), "plain".to_owned()),
            ("container.bounded.backend".to_owned(), "bounded".to_owned()),
        ])
        .unwrap();
        let plain = container::<Kib>(&cache, "plain");
        let bounded = container::<Kib>(&cache, "bounded");
        // Past the bound before the clock starts; the unbounded file as full.
        for i in 0..40_000 {
            bounded.set(&format!("fill-{i}"), &kib(i)).unwrap();
            plain.set(&format!("fill-{i}"), &kib(i)).unwrap();
        }
        let mut turns = Turns::default();
        group.bench_function(
            BenchmarkId::new(format!("{bound}-vs-unbounded"), "struct1k"),
            |b| {
                b.iter_custom(|iters| {
                    in_turns(
                        &mut turns,
                        iters,
                        |i| bounded.set(&format!("new-{i}"), &kib(i as u64)).unwrap(),
                        |i| plain.set(&format!("new-{i}"), &kib(i as u64)).unwrap(),
                    )
                })
            },
        );
        report.push((
            format!("file set of a new struct1k key, {bound} vs unbounded"),
            turns,
        ));
    }
    group.finish();
    print_turns(report);
}

/// Prints each summary of turns that ran.
fn print_turns(report: Vec<(String, Turns)>) {
    for (what, turns) in report {
        let summary = turns.summary();
        if summary != "no full round" {
            println!("{what}: {summary}");
        }
    }
}

/// The backend's layout on 8 KiB pages against 4 KiB ones (SQLite's default), raw, in turns:
/// a hit and an overwrite of 32-byte and 1 KiB values.
fn page_size(c: &mut Criterion) {
    let dir = TempDir::new();
    let keys = keys();
    let key = |i: usize| keys[i % KEYS].as_str();
    let mut group = c.benchmark_group("file/page-size");
    group.sample_size(20);
    let mut report = Vec::new();
    for (label, size) in [("32B", 32), ("1KiB", 1024)] {
        let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let small = Laid::open(
            &dir.0.join(format!("{label}-4k.sqlite3")),
            layout("rowid"),
            4096,
            0,
        );
        let large = Laid::open(
            &dir.0.join(format!("{label}-8k.sqlite3")),
            layout("rowid"),
            8192,
            0,
        );
        for key in &keys {
            small.set("c", key, &value);
            large.set("c", key, &value);
        }
        let mut turns = Turns::default();
        group.bench_function(BenchmarkId::new("hit-8k-vs-4k", label), |b| {
            b.iter_custom(|iters| {
                in_turns(
                    &mut turns,
                    iters,
                    |i| assert!(large.get("c", key(i), <[u8]>::len).is_some()),
                    |i| assert!(small.get("c", key(i), <[u8]>::len).is_some()),
                )
            })
        });
        report.push((format!("file hit {label}, 8 KiB pages vs 4 KiB"), turns));
        let mut turns = Turns::default();
        group.bench_function(BenchmarkId::new("set-8k-vs-4k", label), |b| {
            b.iter_custom(|iters| {
                in_turns(
                    &mut turns,
                    iters,
                    |i| large.set("c", key(i), &value),
                    |i| small.set("c", key(i), &value),
                )
            })
        });
        report.push((format!("file set {label}, 8 KiB pages vs 4 KiB"), turns));
        println!(
            "file {label}: {} KiB in 4 KiB pages, {} KiB in 8 KiB pages",
            small.file_kib(),
            large.file_kib()
        );
    }
    group.finish();
    print_turns(report);
}

criterion_group!(
    benches, hits, misses, sets, batch, layouts, page_size, turns, bounded
);
criterion_main!(benches);
