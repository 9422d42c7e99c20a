//! The cache file and its `-wal` and `-shm` on disk: which files the path names now, the lock
//! that lets one process at a time replace them, and moving a damaged file aside.
//!
//! The database file is only ever `stat`ed here, never opened: closing a descriptor of a file
//! drops every POSIX lock this process holds on it, SQLite's included.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One file, wherever it is named: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Identity {
    device: u64,
    inode: u64,
}

/// What the path and the `-wal` and `-shm` beside it name at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    /// The database file, `None` when the path names nothing.
    pub(crate) db: Option<Identity>,
    /// Its length in bytes (0 when missing).
    pub(crate) size: u64,
    /// The bytes the filesystem holds for it: less than its length where it has holes.
    pub(crate) allocated: u64,
    pub(crate) wal: Option<Identity>,
    pub(crate) shm: Option<Identity>,
}

impl Found {
    /// Three `stat`s. An error other than "not found" (a directory that cannot be searched)
    /// says nothing about which file the path names, and is returned.
    pub(crate) fn stat(path: &Path) -> io::Result<Found> {
        let db = metadata(path)?;
        Ok(Found {
            size: db.as_ref().map_or(0, fs::Metadata::len),
            allocated: db.as_ref().map_or(0, |db| db.blocks().saturating_mul(512)),
            db: db.as_ref().map(identity),
            wal: metadata(&wal(path))?.as_ref().map(identity),
            shm: metadata(&shm(path))?.as_ref().map(identity),
        })
    }

    /// The `-wal`'s length in bytes, 0 when there is none.
    pub(crate) fn wal_size(path: &Path) -> u64 {
        fs::metadata(wal(path)).map_or(0, |metadata| metadata.len())
    }
}

fn metadata(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::metadata(path) {
        Ok(metadata) => Ok(Some(metadata)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn identity(metadata: &fs::Metadata) -> Identity {
    Identity {
        device: metadata.dev(),
        inode: metadata.ino(),
    }
}

/// `path` with `suffix` appended to its last component.
pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path);
    name.push(suffix);
    PathBuf::from(name)
}

/// The write-ahead log SQLite keeps beside the file.
pub(crate) fn wal(path: &Path) -> PathBuf {
    suffixed(path, "-wal")
}

/// The shared-memory index of the log, beside the file.
pub(crate) fn shm(path: &Path) -> PathBuf {
    suffixed(path, "-shm")
}

/// Where a damaged file is moved: `PATH.damaged`.
pub(crate) fn aside(path: &Path) -> PathBuf {
    suffixed(path, ".damaged")
}

/// Removes `path` if it exists.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Removes the `-wal` and `-shm` beside `path` that are still those of a file the path no
/// longer names (`wal`, `shm`), as `found` saw them.
///
/// SQLite finds them by name: left there, they would be taken for the new file's, and its
/// connections would read the old file's pages. The old file's connections keep them open.
pub(crate) fn remove_stale(
    path: &Path,
    found: &Found,
    wal_of_old: Option<Identity>,
    shm_of_old: Option<Identity>,
) {
    if found.wal.is_some() && found.wal == wal_of_old {
        let _ = remove(&wal(path));
    }
    if found.shm.is_some() && found.shm == shm_of_old {
        let _ = remove(&shm(path));
    }
}

/// Removes whatever `-wal` and `-shm` lie beside a file that was just created: they can only
/// be left over from another file of that name.
pub(crate) fn remove_leftovers(path: &Path) {
    let _ = remove(&wal(path));
    let _ = remove(&shm(path));
}

/// Moves the damaged file at `path` to `PATH.damaged`, with its `-wal` (which SQLite pairs with
/// it by name), replacing an earlier one; its `-shm` is only an index, and is removed.
/// `found` is what the path names, `wal_of_damaged` and `shm_of_damaged` the damaged file's.
pub(crate) fn move_aside(
    path: &Path,
    found: &Found,
    wal_of_damaged: Option<Identity>,
    shm_of_damaged: Option<Identity>,
) -> io::Result<PathBuf> {
    let aside = aside(path);
    remove(&wal(&aside))?;
    remove(&shm(&aside))?;
    fs::rename(path, &aside)?;
    if found.wal.is_some() && found.wal == wal_of_damaged {
        let _ = fs::rename(wal(path), wal(&aside));
    }
    if found.shm.is_some() && found.shm == shm_of_damaged {
        let _ = remove(&shm(path));
    }
    Ok(aside)
}

/// An exclusive `flock` of the file's directory, held while the file is created, followed or
/// moved aside: processes that find a change at once deal with it one after another, and each
/// sees what the one before did. A directory that cannot be locked is not locked.
#[derive(Debug)]
pub(crate) struct DirectoryLock(#[expect(dead_code, reason = "held for its lock")] Option<File>);

impl DirectoryLock {
    pub(crate) fn take(path: &Path) -> DirectoryLock {
        let locked = path
            .parent()
            .and_then(|directory| File::open(directory).ok())
            .filter(|directory| directory.lock().is_ok());
        DirectoryLock(locked)
    }
}
