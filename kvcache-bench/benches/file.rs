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
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use kvcache::{Container, KvCache};
use kvcache_bench::{BATCH, Hand, KEYS, Kib, batches, keys, kib, string32};
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

fn container<V: kvcache::Value>(
    cache: &KvCache,
    name: &str,
) -> Container<V> {
    cache.container(name).unwrap()
}

// The backend's schema and statements (kvcache-file/src/schema.rs and backend.rs), as text.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS \"kvcache\" (
        container TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        expires_at INTEGER,
        PRIMARY KEY (container, key)
    );
    CREATE INDEX IF NOT EXISTS \"kvcache_expires_at\" ON \"kvcache\" (expires_at)
        WHERE expires_at IS NOT NULL;";
const SELECT: &str = "SELECT iif(expires_at IS NULL OR expires_at > ?3, value, NULL) FROM \"kvcache\" WHERE container = ?1 AND key = ?2";
const UPSERT: &str =
    "INSERT INTO \"kvcache\" (container, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (container, key)
                 DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at";
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

criterion_group!(benches, hits, misses, sets, batch);
criterion_main!(benches);
