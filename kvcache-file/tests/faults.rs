//! Bad paths, foreign files, a file that turns read-only, and a file deleted, replaced or damaged
//! while in use: a clear error naming the path, nothing lost that is not the cache's, and one
//! file in use at a time.
//!
//! Root writes through permission bits, so "not writable" is made with `chattr +i` (the immutable
//! attribute binds root too, and descriptors already open); where that is not permitted, a
//! directory falls back to mode 0555, and a case that still cannot be made prints a notice and
//! is skipped.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
        message.contains("it is not an SQLite cache file or is damaged: file is not a database"),
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
            "UPDATE kvcache_schema SET version = 4 WHERE name = 'kvcache'",
            [],
        )
        .unwrap();
    let before = fs::read(&path).unwrap();

    let text = refused(&path);
    assert!(
        text.contains("written by kvcache schema version 4, newer than this build's 3"),
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

/// `path` with `suffix` appended: its -wal, -shm, or the place a damaged file is moved to.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", path.display()))
}

/// Longer than the backend waits between two looks at the path.
const NOTICE: Duration = Duration::from_millis(30);

#[test]
fn a_file_deleted_while_in_use_is_followed_to_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::open(&path).unwrap();
    let c = store(&backend, "c");
    c.store("k", b"old", None).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        fs::remove_file(beside(&path, suffix)).unwrap();
    }
    thread::sleep(NOTICE);

    assert_eq!(
        c.retrieve("k").unwrap(),
        None,
        "the deleted file is not read"
    );
    c.store("k", b"new", None).unwrap();
    assert!(path.exists(), "a new file was created at the path");
    let other = FileBackend::open(&path).unwrap();
    assert_eq!(
        store(&other, "c").retrieve("k").unwrap().as_deref(),
        Some(&b"new"[..]),
        "the backend writes to the file the path names"
    );
}

#[test]
fn a_file_replaced_while_in_use_is_followed_and_the_old_log_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::open(&path).unwrap();
    let c = store(&backend, "c");
    c.store("k", b"old", None).unwrap();
    c.store("only-old", b"old", None).unwrap();
    // Another file moved over the path, as `mv` does: the old -wal and -shm stay, and
    // SQLite, which finds them by name, would read the old file's pages through them.
    let other = dir.path().join("other.sqlite3");
    store(&FileBackend::open(&other).unwrap(), "c")
        .store("k", b"replacement", None)
        .unwrap();
    fs::rename(&other, &path).unwrap();
    thread::sleep(NOTICE);

    assert_eq!(
        c.retrieve("k").unwrap().as_deref(),
        Some(&b"replacement"[..])
    );
    assert_eq!(c.retrieve("only-old").unwrap(), None);
    c.store("k", b"written after", None).unwrap();
    let reopened = FileBackend::open(&path).unwrap();
    let r = store(&reopened, "c");
    assert_eq!(
        r.retrieve("k").unwrap().as_deref(),
        Some(&b"written after"[..])
    );
    assert_eq!(r.retrieve("only-old").unwrap(), None);
}

#[test]
fn many_threads_on_a_file_deleted_while_in_use_never_read_both_files() {
    // More threads than the pool keeps idle connections: some open new ones after the
    // change, which once reached the new file while the others stayed on the deleted one.
    const THREADS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::open(&path).unwrap();
    let c = store(&backend, "c");
    c.store("k", b"old", None).unwrap();
    let deleted = std::sync::OnceLock::new();
    let new_seen = std::sync::OnceLock::<Instant>::new();
    thread::scope(|scope| {
        for thread in 0..THREADS {
            let (c, path, deleted, new_seen) = (&c, &path, &deleted, &new_seen);
            scope.spawn(move || {
                let start = Instant::now();
                let give_up = start + Duration::from_secs(30);
                // Until a while after some thread read the new file.
                while new_seen
                    .get()
                    .is_none_or(|seen| seen.elapsed() < Duration::from_millis(300))
                {
                    assert!(Instant::now() < give_up, "the new file was never read");
                    if thread == 0
                        && deleted.get().is_none()
                        && start.elapsed() > Duration::from_millis(200)
                    {
                        for suffix in ["", "-wal", "-shm"] {
                            fs::remove_file(beside(path, suffix)).unwrap();
                        }
                        // Another process would recreate the path; a second backend does.
                        let other = FileBackend::open(path).unwrap();
                        store(&other, "c").store("k", b"new", None).unwrap();
                        deleted.set(Instant::now()).unwrap();
                    }
                    let started = Instant::now();
                    match c.retrieve("k").unwrap().as_deref() {
                        Some(b"old") => {
                            if let Some(seen) = new_seen.get() {
                                assert!(
                                    started < *seen,
                                    "thread {thread} read the deleted file after another thread \
                                     read the new one"
                                );
                            }
                        }
                        // A miss is the new file too, before the other backend's write.
                        None | Some(b"new") => {
                            let _ = new_seen.set(Instant::now());
                        }
                        other => panic!("thread {thread} read {other:?}"),
                    }
                }
            });
        }
    });
    assert!(deleted.get().is_some(), "the file was deleted");
}

/// Writes `bytes` at `offset` of the file, in place.
fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut file = fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(bytes).unwrap();
}

/// Copies what is in the -wal into the file, as a checkpoint of another process would, so that
/// reads come from the file.
fn checkpoint(path: &Path) {
    Connection::open(path)
        .unwrap()
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
}

#[test]
fn a_file_damaged_while_in_use_is_reported_moved_aside_and_replaced_by_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let backend = FileBackend::open(&path).unwrap();
    let c = store(&backend, "c");
    c.store("k", b"stored before", None).unwrap();
    checkpoint(&path);
    overwrite(&path, 0, &[0xAB; 100]);
    let damaged = fs::read(&path).unwrap();

    let error = c.retrieve("k").expect_err("the damaged file is not read");
    let text = chain(&error);
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("reading key \"k\" of container \"c\""),
        "{text}"
    );
    assert!(
        text.contains("is not an SQLite cache file or is damaged: file is not a database"),
        "{text}"
    );
    let aside = beside(&path, ".damaged");
    assert!(text.contains(&format!("moved to {aside:?}")), "{text}");
    assert_eq!(
        fs::read(&aside).unwrap(),
        damaged,
        "the damaged file is kept"
    );

    // The calls after it use a new, empty file at the path.
    serves_a_new_file(&*c, &path);
}

#[test]
fn a_damaged_file_shared_with_other_tables_is_reported_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.sqlite3");
    Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    let backend = FileBackend::open(&path).unwrap();
    let c = store(&backend, "c");
    c.store("k", b"v", None).unwrap();
    checkpoint(&path);
    overwrite(&path, 0, &[0xAB; 100]);
    let damaged = fs::read(&path).unwrap();

    for _ in 0..2 {
        let text = chain(&c.retrieve("k").expect_err("the damaged file is not read"));
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(
            text.contains("is not an SQLite cache file or is damaged"),
            "{text}"
        );
        assert!(text.contains("holds other tables than kvcache's"), "{text}");
    }
    assert_eq!(
        fs::read(&path).unwrap(),
        damaged,
        "the file is left as it is"
    );
    assert!(!beside(&path, ".damaged").exists());

    // Deleted by hand, it is followed.
    fs::remove_file(&path).unwrap();
    thread::sleep(NOTICE);
    assert_eq!(c.retrieve("k").unwrap(), None);
}

#[test]
fn a_file_truncated_while_in_use_is_damaged_not_busy_for_every_backend_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kv.sqlite3");
    let busy_timeout = Duration::from_secs(2);
    let backend = FileBackend::builder(&path)
        .busy_timeout(busy_timeout)
        .open()
        .unwrap();
    let c = store(&backend, "c");
    c.store("k", b"stored before", None).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();

    // Reopened while another connection still holds its log: SQLite would wait for a lock
    // it never gets, and then say the database is locked.
    let started = Instant::now();
    let error = FileBackend::builder(&path)
        .busy_timeout(busy_timeout)
        .open()
        .expect_err("a truncated file is refused");
    let text = chain(&error);
    assert!(started.elapsed() < busy_timeout, "refused at once");
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("is not an SQLite cache file or is damaged"),
        "{text}"
    );
    assert!(text.contains("truncated"), "{text}");
    assert!(!text.contains("busy timeout"), "{text}");

    // The backend that had it open finds it too, and carries on with a new file.
    thread::sleep(NOTICE);
    let text = chain(&c.retrieve("k").expect_err("the truncated file is not read"));
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(
        text.contains("is not an SQLite cache file or is damaged: it was truncated"),
        "{text}"
    );
    assert!(beside(&path, ".damaged").exists());
    serves_a_new_file(&*c, &path);
}

#[test]
fn a_file_deleted_where_no_new_one_can_be_created_fails_naming_the_path_until_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let locked = dir.path().join("locked");
    let path = locked.join("kv.sqlite3");
    let backend = FileBackend::open(&path).unwrap();
    let c = store(&backend, "c");
    c.store("k", b"old", None).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        fs::remove_file(beside(&path, suffix)).unwrap();
    }
    let Some(guard) = unwritable_directory(&locked) else {
        return skip("a file deleted where no new one can be created", NO_MODES);
    };
    thread::sleep(NOTICE);

    for _ in 0..2 {
        let text = chain(&c.retrieve("k").expect_err("no file to read"));
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("the file was deleted while in use"), "{text}");
        assert!(text.contains("cannot create it"), "{text}");
    }
    drop(guard);
    // Tried again a while later.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(c.retrieve("k").unwrap(), None);
    c.store("k", b"new", None).unwrap();
    assert!(path.exists());
}

/// Checks container "c" of a backend whose file at `path` was set aside: its calls use a new,
/// empty file there, which another backend opening `path` reads too.
fn serves_a_new_file(c: &dyn kvcache_core::Store, path: &Path) {
    assert_eq!(c.retrieve("k").unwrap(), None);
    c.store("k", b"stored after", None).unwrap();
    let reopened = FileBackend::open(path).unwrap();
    assert_eq!(
        store(&reopened, "c").retrieve("k").unwrap().as_deref(),
        Some(&b"stored after"[..])
    );
}
