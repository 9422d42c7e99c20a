//! Bad paths, foreign files and a file that turns read-only: a clear error naming the path, and
//! nothing lost.
//!
//! Root writes through permission bits, so "not writable" is made with `chattr +i` (the immutable
//! attribute binds root too, and descriptors already open); where that is not permitted, a
//! directory falls back to mode 0555, and a case that still cannot be made prints a notice and
//! is skipped.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use kvcache_core::{BackendConfig, Error, backend_kind};
use kvcache_file::FileBackend;
use rusqlite::Connection;

mod common;

use common::store;

/// The error and its sources, as one line.
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        text.push_str(": ");
        text.push_str(&error.to_string());
        source = error.source();
    }
    text
}

fn refused(path: &Path) -> String {
    let error = FileBackend::open(path).expect_err("opening should fail");
    assert!(matches!(error, Error::Backend { .. }), "{error:?}");
    let text = chain(&error);
    assert!(
        text.contains(&path.display().to_string()),
        "the error names the path: {text}"
    );
    text
}

/// Undoes what made paths read-only when dropped.
#[derive(Debug)]
enum ReadOnly {
    Immutable(Vec<PathBuf>),
    Mode(PathBuf, u32),
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        match self {
            ReadOnly::Immutable(paths) => {
                let status = Command::new("chattr").arg("-i").args(&*paths).status();
                assert!(status.is_ok_and(|s| s.success()), "chattr -i {paths:?}");
            }
            ReadOnly::Mode(path, mode) => {
                fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
            }
        }
    }
}

/// `chattr +i` on every path, or `None` when it is not permitted here.
fn immutable(paths: &[&Path]) -> Option<ReadOnly> {
    let chattr = |flag: &str| {
        Command::new("chattr")
            .arg(flag)
            .args(paths)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    if chattr("+i") {
        Some(ReadOnly::Immutable(
            paths.iter().map(|p| p.to_path_buf()).collect(),
        ))
    } else {
        // Undo any that took.
        chattr("-i");
        None
    }
}

/// Makes `dir` unwritable for this process, or `None` when nothing available binds it.
fn unwritable_directory(dir: &Path) -> Option<ReadOnly> {
    if let Some(guard) = immutable(&[dir]) {
        return Some(guard);
    }
    let mode = fs::metadata(dir).unwrap().permissions().mode();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o555)).unwrap();
    let guard = ReadOnly::Mode(dir.to_path_buf(), mode);
    let probe = dir.join("probe");
    if fs::File::create(&probe).is_ok() {
        fs::remove_file(probe).unwrap();
        return None;
    }
    Some(guard)
}

fn skip(case: &str, why: &str) {
    eprintln!("NOTICE: skipped \"{case}\": {why}");
}

const NO_MODES: &str =
    "neither `chattr +i` nor file modes make a directory unwritable for this user";

#[test]
fn a_path_that_is_a_directory_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    fs::create_dir(&path).unwrap();
    fs::write(path.join("inside"), b"kept").unwrap();

    let text = refused(&path);
    assert!(text.contains("it is a directory"), "{text}");
    assert_eq!(fs::read(path.join("inside")).unwrap(), b"kept");
    assert_eq!(
        fs::read_dir(&path).unwrap().count(),
        1,
        "nothing was added to the directory"
    );
}

#[test]
fn a_new_file_in_a_directory_that_is_not_writable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    fs::create_dir(&locked).unwrap();
    let path = locked.join("kv.sqlite3");
    let Some(_guard) = unwritable_directory(&locked) else {
        return skip("a new file in a directory that is not writable", NO_MODES);
    };

    let text = refused(&path);
    assert!(text.contains("cannot create it"), "{text}");
    assert!(!path.exists());
}

#[test]
fn an_existing_file_in_a_directory_that_is_not_writable_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    let path = locked.join("kv.sqlite3");
    store(&FileBackend::open(&path).unwrap(), "c")
        .store("k", b"kept", None)
        .unwrap();
    let before = fs::read(&path).unwrap();
    let Some(guard) = unwritable_directory(&locked) else {
        return skip(
            "an existing file in a directory that is not writable",
            NO_MODES,
        );
    };

    let text = refused(&path);
    // Immutable, SQLite cannot create the -wal and -shm files; by modes, it sees the directory.
    assert!(
        text.contains("directory") && text.contains("writable"),
        "{text}"
    );
    drop(guard);
    assert_eq!(fs::read(&path).unwrap(), before, "the file is unchanged");
    let reopened = FileBackend::open(&path).unwrap();
    assert_eq!(
        store(&reopened, "c").retrieve("k").unwrap().as_deref(),
        Some(&b"kept"[..])
    );
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let text = b"These are my notes, not a database.\nKeep them.\n";
    fs::write(&path, text).unwrap();

    let message = refused(&path);
    assert!(
        message.contains("it is not an SQLite database"),
        "{message}"
    );
    assert!(message.contains("left untouched"), "{message}");
    assert_eq!(fs::read(&path).unwrap(), text, "the file is unchanged");
    let siblings: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(siblings, ["notes.txt"], "nothing was created beside it");
}

/// The file's schema, and every row of `table`, as text.
fn contents(path: &Path, table: &str) -> (Vec<String>, Vec<String>) {
    let connection = Connection::open(path).unwrap();
    let schema = connection
        .prepare("SELECT type || ' ' || name || ': ' || coalesce(sql, '') FROM sqlite_schema ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let rows = connection
        .prepare(&format!(
            "SELECT quote(id) || ' ' || quote(name) FROM {table} ORDER BY id"
        ))
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    (schema, rows)
}

#[test]
fn a_table_with_other_columns_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sqlite3");
    Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TABLE kvcache (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO kvcache (name) VALUES ('first'), ('second');",
        )
        .unwrap();
    let before = contents(&path, "kvcache");

    let text = refused(&path);
    assert!(
        text.contains("the table \"kvcache\" has the columns (id INTEGER, name TEXT)"),
        "{text}"
    );
    assert!(text.contains("`table` option"), "{text}");
    assert_eq!(
        contents(&path, "kvcache"),
        before,
        "the table and the file's schema are unchanged"
    );

    // Another table of the same file is fine, and leaves that one alone.
    let backend = FileBackend::builder(&path)
        .table("cache_entries")
        .open()
        .unwrap();
    store(&backend, "c").store("k", b"v", None).unwrap();
    assert_eq!(contents(&path, "kvcache").1, before.1);
}

#[test]
fn a_table_written_by_a_newer_schema_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    store(&FileBackend::open(&path).unwrap(), "c")
        .store("k", b"kept", None)
        .unwrap();
    Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE kvcache_schema SET version = 2 WHERE name = 'kvcache'",
            [],
        )
        .unwrap();
    let before = fs::read(&path).unwrap();

    let text = refused(&path);
    assert!(
        text.contains("written by kvcache schema version 2, newer than this build's 1"),
        "{text}"
    );
    assert_eq!(fs::read(&path).unwrap(), before, "the file is unchanged");
}

#[test]
fn a_file_that_becomes_read_only_fails_writes_and_still_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::open(&path).unwrap();
    let c = store(&backend, "c");
    c.store("kept", b"stored before", None).unwrap();
    let wal = dir.path().join("kv.sqlite3-wal");
    let shm = dir.path().join("kv.sqlite3-shm");
    assert!(
        wal.exists() && shm.exists(),
        "the backend's open connection keeps the WAL"
    );
    // The database and its WAL: SQLite writes both; the shared-memory index is only mapped.
    let Some(guard) = immutable(&[&path, &wal]) else {
        return skip(
            "a file that becomes read-only while in use",
            "`chattr +i` is not permitted (it needs CAP_LINUX_IMMUTABLE), and file modes do not bind the descriptors already open",
        );
    };

    let error = c
        .store("new", b"refused", None)
        .expect_err("a write to a read-only file");
    let text = chain(&error);
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("storing key \"new\" of container \"c\""),
        "{text}"
    );
    assert!(c.invalidate("kept").is_err(), "a remove is a write too");
    assert_eq!(
        c.retrieve("kept").unwrap().as_deref(),
        Some(&b"stored before"[..])
    );
    assert_eq!(c.retrieve("new").unwrap(), None);

    drop(guard);
    c.store("new", b"accepted", None).unwrap();
    assert_eq!(
        c.retrieve("kept").unwrap().as_deref(),
        Some(&b"stored before"[..])
    );
    assert_eq!(
        c.retrieve("new").unwrap().as_deref(),
        Some(&b"accepted"[..])
    );
}

fn open_config(options: &[(&str, &str)]) -> Error {
    let mut config = BackendConfig::new("disk", "file");
    for (option, value) in options {
        config = config.option(*option, *value);
    }
    backend_kind("file", "backend.disk")
        .unwrap()
        .open(&config)
        .expect_err("the configuration should be refused")
}

#[test]
fn bad_options_name_their_configuration_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let path = path.to_str().unwrap();
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "backend.disk.path: is required"),
        (
            &[("path", " ")],
            "backend.disk.path: expected the path of a file, got an empty one",
        ),
        (
            &[("path", path), ("busy_timeout", "soon")],
            "backend.disk.busy_timeout: expected an interval",
        ),
        (
            &[("path", path), ("table", "my-table")],
            "backend.disk.table: expected a table name of ASCII letters",
        ),
        (
            &[("path", path), ("table", "sqlite_master")],
            "backend.disk.table: the table name \"sqlite_master\" is reserved",
        ),
    ];
    for (options, expected) in cases {
        let error = open_config(options);
        assert!(
            matches!(error, Error::InvalidConfig { .. }),
            "{options:?}: {error:?}"
        );
        assert!(
            error.to_string().starts_with(expected),
            "{options:?}: {error}"
        );
    }
    assert!(
        !Path::new(path).exists(),
        "no file is created for a refused configuration"
    );
}
