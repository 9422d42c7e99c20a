//! SQLite's terse errors, with what they most likely mean for a cache file.

use kvcache_core::BoxError;
use rusqlite::{ErrorCode, ffi};

/// An SQLite error and its likely meaning; the error itself is the source.
#[derive(Debug, thiserror::Error)]
#[error("{meaning}")]
struct Explained {
    meaning: &'static str,
    #[source]
    error: rusqlite::Error,
}

/// `error`, led by its likely meaning when SQLite's own message does not say it.
pub(crate) fn explain(error: rusqlite::Error) -> BoxError {
    let Some(sqlite) = error.sqlite_error() else {
        return error.into();
    };
    let meaning = match (sqlite.code, sqlite.extended_code) {
        (_, ffi::SQLITE_READONLY_DIRECTORY) => {
            "its directory is not writable, and SQLite needs to create the -wal and -shm files beside it"
        }
        (_, ffi::SQLITE_READONLY_DBMOVED) => "the file was moved or deleted while in use",
        (ErrorCode::ReadOnly, _) => "the file is read-only",
        (ErrorCode::SystemIoFailure, _) => {
            "the system refused to read or write the file or the -wal beside it (is one of them read-only?)"
        }
        (ErrorCode::CannotOpen, _) => {
            "SQLite cannot open the file, or create the -wal and -shm files it needs beside it \
             (are they and their directory writable?)"
        }
        (ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked, _) => {
            "another connection held the write lock for longer than the busy timeout"
        }
        _ => return error.into(),
    };
    Box::new(Explained { meaning, error })
}
