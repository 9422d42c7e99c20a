//! The connections to one file: opened as needed, one per caller at a time, kept for reuse, and
//! all of them on the one file the path names.
//!
//! The pool holds one file at a time (a *generation*). Every [`CHECK_EVERY`] a call compares the
//! path with it (`stat`s of the file and its `-wal` and `-shm`), and so does every new
//! connection. When the path names another file, or none, or the file turns out damaged, the
//! pool takes its write lock, which waits for the calls in flight, drops every connection, and
//! opens the file the path names (created if missing), or moves the damaged one aside first. A
//! connection is lent under the read lock: no call ever runs on a file the pool has left.

use std::fmt;
use std::io;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::builder::{self, Refused};
use crate::files::{self, DirectoryLock, Found, Identity};

/// Idle connections kept for reuse; a burst of callers beyond this opens and then closes extra ones.
const MAX_IDLE: usize = 8;
/// Prepared statements each connection keeps: the backend's few, and a batch look-up per size.
const STATEMENTS: usize = 32;
/// How often the path is compared with the file in use: at most one call in this interval pays
/// for it (three `stat`s, about 4 µs), the others one clock read (about 25 ns).
const CHECK_EVERY: Duration = Duration::from_millis(10);
/// How often at most SQLite reads the whole file to tell a truncated file from a shorter one.
const VERIFY_EVERY: Duration = Duration::from_secs(1);
/// How often a pool with no usable file tries the path again when it still names what failed.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How many times one call follows a path that keeps changing before it gives up.
const FOLLOWS: usize = 4;

/// What the pool knows of the file it holds, as it was when the first connection was ready.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Known {
    pub(crate) db: Identity,
    pub(crate) wal: Option<Identity>,
    pub(crate) shm: Option<Identity>,
    /// The file's length.
    pub(crate) size: u64,
    pub(crate) page_size: u64,
    /// Whether SQLite gives freed pages back (auto-vacuum), so the file shrinks in whole pages.
    pub(crate) shrinks: bool,
    /// Whether every table in it is kvcache's (see [`crate::schema::owned`]).
    pub(crate) owned: bool,
}

/// Connections to the one SQLite file a path names. Each caller gets a connection of its own,
/// so reads on different threads run at once (WAL lets them run beside a writer, too).
#[derive(Debug)]
pub(crate) struct Pool {
    path: PathBuf,
    table: String,
    /// Whether the table's entries are counted (a bound on them is set).
    counted: bool,
    busy_timeout: Duration,
    epoch: Instant,
    /// When the next check is due, in nanoseconds since `epoch`.
    next_check: AtomicU64,
    state: RwLock<State>,
}

#[derive(Debug)]
struct State {
    /// Counts the files the pool has held or failed to open.
    generation: u64,
    held: Held,
    /// The damage found in a generation, returned to every call that finds it too.
    damage: Option<(u64, Arc<Reason>)>,
}

#[derive(Debug)]
enum Held {
    File(Opened),
    Nothing(Failure),
}

/// The file in use and its idle connections.
#[derive(Debug)]
struct Opened {
    known: Known,
    /// Its length at the last check.
    size: AtomicU64,
    /// Whether holes in it are a sign of damage: not where the filesystem compresses.
    holes_mean_damage: AtomicBool,
    /// When SQLite last checked it for damage, in nanoseconds since the pool's epoch.
    verified_at: AtomicU64,
    idle: Mutex<Vec<Connection>>,
}

/// Why the pool holds no file, and when to try the path again.
#[derive(Debug)]
struct Failure {
    reason: Arc<Reason>,
    /// What the path named when it failed (`None`: nothing).
    seen: Option<Identity>,
    /// Whether `seen` is a damaged file, which is never reopened.
    damaged: bool,
    /// What changed to make the pool follow the path.
    change: Change,
    /// When, in nanoseconds since the pool's epoch.
    at: u64,
}

/// A connection lent by a [`Pool`], given back when dropped.
struct Pooled<'a> {
    state: RwLockReadGuard<'a, State>,
    connection: Option<Connection>,
}

/// Why a call got no answer from the file.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// The statement failed.
    Sqlite(rusqlite::Error),
    /// No connection to the file in use could be opened.
    Connect(rusqlite::Error),
    /// The pool has no usable file, or this call found it damaged.
    File(Arc<Reason>),
}

/// Why the pool cannot serve calls from the file the path names, or what it did about it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Reason {
    /// The path changed, and what it names now was refused.
    #[error("{change}, and the backend cannot follow the path to its new file")]
    Follow {
        change: Change,
        #[source]
        refused: Refused,
    },
    /// The file is damaged.
    #[error(transparent)]
    Damaged(Damage),
}

/// How the path stopped naming the file the connections hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Deleted,
    Replaced,
    Companions,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Change::Deleted => "the file was deleted while in use",
            Change::Replaced => "the file was replaced by another while in use",
            Change::Companions => "its -wal or -shm was deleted or replaced while in use",
        })
    }
}

/// A damaged file, and what the backend did about it.
#[derive(Debug, thiserror::Error)]
#[error("the file {path:?} is not an SQLite cache file or is damaged: {what}; {outcome}")]
pub(crate) struct Damage {
    path: PathBuf,
    what: String,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    /// Moved to this path, and a new file created in its place.
    MovedAside(PathBuf),
    /// Moved aside, but no new file could be made.
    NotRecreated(PathBuf, Refused),
    /// It holds other tables than kvcache's: left as it is.
    Shared,
    /// It could not be moved.
    NotMoved(io::Error),
    /// Another file took its place before the backend could move it.
    Followed,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::MovedAside(aside) => write!(
                f,
                "it was moved to {aside:?}, with its -wal, and a new, empty cache file took its place"
            ),
            Outcome::NotRecreated(aside, why) => write!(
                f,
                "it was moved to {aside:?}, but no new cache file could take its place: {why}"
            ),
            Outcome::Shared => f.write_str(
                "it holds other tables than kvcache's, so it was left as it is: repair it, or \
                 delete it with its -wal and -shm and the backend starts a new one",
            ),
            Outcome::NotMoved(error) => write!(
                f,
                "it could not be moved aside ({error}): delete it with its -wal and -shm and \
                 the backend starts a new one"
            ),
            Outcome::Followed => f.write_str(
                "another file has taken its place at the path, and the backend uses that one",
            ),
        }
    }
}

/// Whether SQLite's `error` says the file is damaged or is not a database.
fn is_damage(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

/// Why a new connection could not be lent.
enum NewConnection {
    /// The path names another file than the one in use.
    Moved,
    /// The file is truncated below one page.
    Truncated(u64),
    Failed(rusqlite::Error),
}

impl Pool {
    /// A pool of connections to `path`, starting with `first` (opened by
    /// [`builder::open_file`]) on the file `known` describes.
    pub(crate) fn new(
        path: PathBuf,
        table: String,
        counted: bool,
        busy_timeout: Duration,
        first: Connection,
        known: Known,
    ) -> Self {
        Pool {
            path,
            table,
            counted,
            busy_timeout,
            epoch: Instant::now(),
            next_check: AtomicU64::new(nanos(CHECK_EVERY)),
            state: RwLock::new(State {
                generation: 0,
                held: Held::File(Opened::new(first, known)),
                damage: None,
            }),
        }
    }

    /// Runs `op` on a connection to the file the path names. An error of SQLite's that says
    /// the file is damaged has the file dealt with (moved aside and recreated) before it is
    /// returned, as [`PoolError::File`].
    pub(crate) fn run<T>(
        &self,
        op: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T, PoolError> {
        let mut connection = self.get()?;
        match op(&mut connection) {
            Ok(value) => Ok(value),
            Err(error) if is_damage(&error) => {
                let generation = connection.state.generation;
                drop(connection);
                Err(PoolError::File(self.damaged(generation, error.to_string())))
            }
            Err(error) => Err(PoolError::Sqlite(error)),
        }
    }

    /// An idle connection, or a new one, to the file the path names.
    fn get(&self) -> Result<Pooled<'_>, PoolError> {
        let now = self.now();
        let due = self.next_check.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_check
                .compare_exchange(
                    due,
                    now + nanos(CHECK_EVERY),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.check(now)?;
        }
        let mut follows = 0;
        loop {
            let state = self.read();
            let generation = state.generation;
            match &state.held {
                Held::File(opened) => {
                    let idle = opened
                        .idle
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop();
                    let connection = match idle {
                        Some(connection) => Ok(connection),
                        None => opened.connect(&self.path, self.busy_timeout),
                    };
                    let what = match connection {
                        Ok(connection) => {
                            return Ok(Pooled {
                                state,
                                connection: Some(connection),
                            });
                        }
                        Err(NewConnection::Moved) => None,
                        Err(NewConnection::Failed(error)) if is_damage(&error) => {
                            Some(error.to_string())
                        }
                        Err(NewConnection::Failed(error)) => return Err(PoolError::Connect(error)),
                        Err(NewConnection::Truncated(size)) => Some(truncated(size, None)),
                    };
                    if let Some(what) = what {
                        drop(state);
                        return Err(PoolError::File(self.damaged(generation, what)));
                    }
                }
                Held::Nothing(failure) => {
                    if !failure.retry_due(now, &self.path) {
                        return Err(PoolError::File(Arc::clone(&failure.reason)));
                    }
                }
            }
            drop(state);
            follows += 1;
            if follows > FOLLOWS {
                return Err(PoolError::File(self.failure_or(Change::Replaced)));
            }
            self.follow(generation, now)?;
        }
    }

    /// Compares the path with the file in use: follows it when it names another file or none,
    /// and has a truncated file dealt with.
    fn check(&self, now: u64) -> Result<(), PoolError> {
        let state = self.read();
        let Held::File(opened) = &state.held else {
            return Ok(());
        };
        let generation = state.generation;
        // A path that cannot be looked at says nothing: the file in use stays.
        let Ok(found) = Found::stat(&self.path) else {
            return Ok(());
        };
        let known = &opened.known;
        if found.db != Some(known.db) || found.wal != known.wal || found.shm != known.shm {
            drop(state);
            return self.follow(generation, now);
        }
        // SQLite writes whole pages, never leaves a hole (but the one page at 1 GiB it locks),
        // and shrinks a file only by whole pages it gives back (auto-vacuum). A file shorter
        // than it was (where SQLite gives no pages back), not a whole number of pages, or with
        // holes (a truncated file that a checkpoint wrote the pages it had in the -wal back to)
        // is checked before it is called damaged.
        let last = opened.size.load(Ordering::Relaxed);
        let holes = found.allocated.saturating_add(known.page_size) < found.size
            && opened.holes_mean_damage.load(Ordering::Relaxed);
        let suspect =
            (found.size < last && !known.shrinks) || found.size % known.page_size != 0 || holes;
        let what = if found.size < known.page_size {
            Some(truncated(found.size, None))
        } else if !suspect {
            None
        } else if !opened.claim_verification(now) {
            // Verified a moment ago: the next check looks again.
            return Ok(());
        } else {
            let problem = opened.verify(&self.path, self.busy_timeout);
            if problem.is_none() && holes {
                // A filesystem that compresses or shares blocks: holes say nothing here.
                opened.holes_mean_damage.store(false, Ordering::Relaxed);
            }
            problem.map(|problem| truncated(found.size, Some((last, problem))))
        };
        match what {
            None => {
                opened.size.store(found.size, Ordering::Relaxed);
                Ok(())
            }
            Some(what) => {
                drop(state);
                Err(PoolError::File(self.damaged(generation, what)))
            }
        }
    }

    /// Drops every connection and opens the file the path names now, created if missing, unless
    /// the pool has left generation `seen` already. The `-wal` and `-shm` of the file left are
    /// removed first if they are still at the path.
    fn follow(&self, seen: u64, now: u64) -> Result<(), PoolError> {
        let mut state = self.write();
        if state.generation != seen {
            return Ok(());
        }
        let lock = DirectoryLock::take(&self.path);
        let found = Found::stat(&self.path).ok();
        let change = match &mut state.held {
            Held::File(opened) => {
                let known = opened.known;
                match found.and_then(|found| found.db) {
                    None => Change::Deleted,
                    Some(db) if db == known.db => {
                        // The same file with other companions: its connections hold the old
                        // ones, and share the process's index of the log, so they go first.
                        opened
                            .idle
                            .get_mut()
                            .unwrap_or_else(PoisonError::into_inner)
                            .clear();
                        Change::Companions
                    }
                    Some(_) => Change::Replaced,
                }
            }
            Held::Nothing(failure) => failure.change,
        };
        if let (Held::File(opened), Some(found)) = (&state.held, &found)
            && found.db != Some(opened.known.db)
        {
            files::remove_stale(&self.path, found, opened.known.wal, opened.known.shm);
        }
        let held = match builder::open_file(
            &self.path,
            &self.table,
            self.counted,
            self.busy_timeout,
            &lock,
        ) {
            Ok((connection, known)) => Held::File(Opened::new(connection, known)),
            Err(refused) => Held::Nothing(Failure {
                reason: Arc::new(Reason::Follow { change, refused }),
                seen: Found::stat(&self.path).ok().and_then(|found| found.db),
                damaged: false,
                change,
                at: now,
            }),
        };
        drop(lock);
        let result = match &held {
            Held::File(_) => Ok(()),
            Held::Nothing(failure) => Err(PoolError::File(Arc::clone(&failure.reason))),
        };
        // The old connections close after the path has left their file: SQLite then neither
        // checkpoints it nor deletes the -wal and -shm by name, which are the new file's.
        let old = self.replace(&mut state, held);
        drop(state);
        drop(old);
        result
    }

    /// Deals with the damaged file of generation `seen` (`what` says how it is damaged), unless
    /// another call did: moves it aside with its `-wal`, and creates a new file in its place,
    /// if every table in it is kvcache's. The report is returned to every call that finds it.
    fn damaged(&self, seen: u64, what: String) -> Arc<Reason> {
        let mut state = self.write();
        if state.generation != seen {
            return match &state.damage {
                Some((generation, reason)) if *generation == seen => Arc::clone(reason),
                _ => self.damage(what, Outcome::Followed),
            };
        }
        let Held::File(opened) = &mut state.held else {
            return self.damage(what, Outcome::Followed);
        };
        let known = opened.known;
        // The damaged file is not checkpointed into when its connections close.
        for connection in opened
            .idle
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            let _ = connection.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        }
        let now = self.now();
        let lock = DirectoryLock::take(&self.path);
        let found = Found::stat(&self.path).ok();
        let moved = match found {
            Some(found) if found.db == Some(known.db) => {
                if known.owned {
                    files::move_aside(&self.path, &found, known.wal, known.shm)
                        .map(Some)
                        .map_err(Outcome::NotMoved)
                } else {
                    Err(Outcome::Shared)
                }
            }
            Some(found) => {
                files::remove_stale(&self.path, &found, known.wal, known.shm);
                Ok(None)
            }
            None => Ok(None),
        };
        let (held, reason) = match moved {
            Err(outcome) => {
                let reason = self.damage(what, outcome);
                let failure = Failure {
                    reason: Arc::clone(&reason),
                    seen: Some(known.db),
                    damaged: true,
                    change: Change::Replaced,
                    at: now,
                };
                (Held::Nothing(failure), reason)
            }
            Ok(aside) => {
                match builder::open_file(
                    &self.path,
                    &self.table,
                    self.counted,
                    self.busy_timeout,
                    &lock,
                ) {
                    Ok((connection, new)) => {
                        let outcome = aside.map_or(Outcome::Followed, Outcome::MovedAside);
                        (
                            Held::File(Opened::new(connection, new)),
                            self.damage(what, outcome),
                        )
                    }
                    Err(refused) => {
                        let outcome = match aside {
                            Some(aside) => Outcome::NotRecreated(aside, refused),
                            None => Outcome::NotRecreated(self.path.clone(), refused),
                        };
                        let reason = self.damage(what, outcome);
                        let failure = Failure {
                            reason: Arc::clone(&reason),
                            seen: Found::stat(&self.path).ok().and_then(|found| found.db),
                            damaged: false,
                            change: Change::Replaced,
                            at: now,
                        };
                        (Held::Nothing(failure), reason)
                    }
                }
            }
        };
        drop(lock);
        state.damage = Some((seen, Arc::clone(&reason)));
        let old = self.replace(&mut state, held);
        drop(state);
        drop(old);
        reason
    }

    fn damage(&self, what: String, outcome: Outcome) -> Arc<Reason> {
        Arc::new(Reason::Damaged(Damage {
            path: self.path.clone(),
            what,
            outcome,
        }))
    }

    /// The reason the pool has no file, or one saying the path kept changing.
    fn failure_or(&self, change: Change) -> Arc<Reason> {
        match &self.read().held {
            Held::Nothing(failure) => Arc::clone(&failure.reason),
            Held::File(_) => Arc::new(Reason::Follow {
                change,
                refused: Refused::Changed,
            }),
        }
    }

    /// Puts `held` in place as the next generation, and returns what it replaces.
    fn replace(&self, state: &mut RwLockWriteGuard<'_, State>, held: Held) -> Held {
        state.generation += 1;
        std::mem::replace(&mut state.held, held)
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Nanoseconds since the pool's epoch.
    fn now(&self) -> u64 {
        nanos(self.epoch.elapsed())
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// How a truncated file is described: its length, and the longer one it had with what SQLite
/// found wrong.
fn truncated(size: u64, before: Option<(u64, String)>) -> String {
    match before {
        None => format!("it was truncated to {size} bytes while in use, less than one page"),
        Some((last, problem)) if size < last => {
            format!("it was truncated from {last} to {size} bytes while in use ({problem})")
        }
        Some((_, problem)) => {
            format!("it lost pages while in use, truncated or overwritten ({problem})")
        }
    }
}

impl Opened {
    fn new(first: Connection, known: Known) -> Self {
        Opened {
            known,
            size: AtomicU64::new(known.size),
            holes_mean_damage: AtomicBool::new(true),
            verified_at: AtomicU64::new(0),
            idle: Mutex::new(vec![first]),
        }
    }

    /// A new connection, if the path still names the file (and its `-wal`) in use.
    fn connect(&self, path: &Path, busy_timeout: Duration) -> Result<Connection, NewConnection> {
        let same = |found: &Found| found.db == Some(self.known.db) && found.wal == self.known.wal;
        // SQLite takes an empty file for an empty database and deletes the -wal beside it.
        match Found::stat(path) {
            Ok(found) if !same(&found) => return Err(NewConnection::Moved),
            Ok(found) if found.size < self.known.page_size => {
                return Err(NewConnection::Truncated(found.size));
            }
            _ => {}
        }
        let connection = connect(path, busy_timeout).map_err(NewConnection::Failed)?;
        // Its first read opens the -wal, by name: it must still be the one in use.
        connection
            .query_row("PRAGMA schema_version", [], |_| Ok(()))
            .map_err(NewConnection::Failed)?;
        match Found::stat(path) {
            Ok(found) if !same(&found) => Err(NewConnection::Moved),
            _ => Ok(connection),
        }
    }

    /// Whether this call is the one to have SQLite check the file: at most one in
    /// [`VERIFY_EVERY`], for a whole check reads the whole file.
    fn claim_verification(&self, now: u64) -> bool {
        let last = self.verified_at.load(Ordering::Relaxed);
        (last == 0 || now >= last + nanos(VERIFY_EVERY))
            && self
                .verified_at
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    /// What SQLite finds wrong with the file, read afresh by a connection of its own, or `None`
    /// when it finds nothing (or cannot tell).
    fn verify(&self, path: &Path, busy_timeout: Duration) -> Option<String> {
        let connection = match connect(path, busy_timeout) {
            Ok(connection) => connection,
            Err(error) if is_damage(&error) => return Some(error.to_string()),
            Err(_) => return None,
        };
        let _ = connection.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true);
        match Found::stat(path) {
            Ok(found) if found.db == Some(self.known.db) => {}
            _ => return None,
        }
        match connection.query_row("PRAGMA quick_check(1)", [], |row| row.get::<_, String>(0)) {
            Ok(verdict) if verdict == "ok" => None,
            Ok(problem) => Some(problem),
            Err(error) if is_damage(&error) => Some(error.to_string()),
            Err(_) => None,
        }
    }
}

impl Failure {
    /// Whether to try the path again: it names something else than what failed, or a while
    /// has passed and what failed is not a damaged file.
    fn retry_due(&self, now: u64, path: &Path) -> bool {
        let seen = match Found::stat(path) {
            Ok(found) => found.db,
            Err(_) => return false,
        };
        seen != self.seen || (!self.damaged && now >= self.at + nanos(RETRY_EVERY))
    }
}

/// Opens a connection to the existing file `path`, set up for the backend: waits up to
/// `busy_timeout` for another writer, and syncs at WAL checkpoints only (`synchronous=NORMAL`).
///
/// The file is never created here: creating is [`builder::open_file`]'s, which the pool calls
/// when the path stops naming the file in use.
pub(crate) fn connect(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)?;
    connection.busy_timeout(busy_timeout)?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.set_prepared_statement_cache_capacity(STATEMENTS);
    Ok(connection)
}

impl Deref for Pooled<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.connection
            .as_ref()
            .expect("a pooled connection is present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.connection
            .as_mut()
            .expect("a pooled connection is present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        // The read lock is still held: the connection goes back to the file it was opened on.
        if let (Some(connection), Held::File(opened)) = (self.connection.take(), &self.state.held) {
            let mut idle = opened.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < MAX_IDLE {
                idle.push(connection);
            }
        }
    }
}
