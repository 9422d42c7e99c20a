//! The Redis store: one command per call, `MGET` and a pipeline for batches, `SCAN` + `UNLINK`
//! for `clear`.

use std::fmt;
use std::time::Duration;

use kvcache_core::{Backend, BoxError, Error, Result};
use r2d2::{ManageConnection, Pool};
use redis::{Cmd, Connection, RedisResult};

use crate::config::RedisConfig;
use crate::key::Keys;
use crate::pool::Manager;

/// How many keys one `SCAN` step of `clear` asks for.
const SCAN_COUNT: u32 = 1000;
/// The longest expiry sent, in milliseconds: "never" in practice, and far enough from
/// `i64::MAX` that Redis's `now + PX` cannot overflow.
const MAX_PX: u64 = i64::MAX as u64 / 2;

/// A Redis server as a kvcache backend, shared by every container that names it.
///
/// Built from a [`RedisConfig`], or by `kvcache::init` for `backend.NAME = redis`. Calls borrow
/// a connection from a pool of at most `pool_size`; a connection the server dropped (it
/// restarted) is replaced on the next call. Its `Debug` output names the host and port, never
/// the URL's credentials.
pub struct RedisBackend {
    name: String,
    endpoint: String,
    keys: Keys,
    pool: Pool<Manager>,
}

/// What a store does about expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Never,
    /// `SET ... PX` this many milliseconds.
    After(u64),
    /// A zero ttl: the entry is expired as soon as it is written, so it is deleted.
    Now,
}

impl Expiry {
    /// A ttl in whole milliseconds, rounded up so that an entry never expires early.
    fn of(ttl: Option<Duration>) -> Expiry {
        match ttl {
            None => Expiry::Never,
            Some(ttl) if ttl.is_zero() => Expiry::Now,
            Some(ttl) => Expiry::After(
                u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
                    .map_or(MAX_PX, |ms| ms.min(MAX_PX)),
            ),
        }
    }

    /// The command that stores `value` under `entry` with this expiry.
    fn command(self, entry: &str, value: &[u8]) -> Cmd {
        if self == Expiry::Now {
            let mut unlink = redis::cmd("UNLINK");
            unlink.arg(entry);
            return unlink;
        }
        let mut set = redis::cmd("SET");
        set.arg(entry).arg(value);
        if let Expiry::After(ms) = self {
            set.arg("PX").arg(ms);
        }
        set
    }
}

impl RedisBackend {
    /// Connects as `config` says; `config` has been checked.
    pub(crate) fn open(config: &RedisConfig) -> Result<Self> {
        let unix = config.is_unix()?;
        let client = redis::Client::open(config.url.as_str()).map_err(|error| {
            Error::config(
                config.key("url"),
                format!("not a usable Redis URL: {error}"),
            )
        })?;
        let address = client.get_connection_info().addr().to_string();
        let endpoint = if unix {
            format!("redis at unix socket {address}")
        } else {
            format!("redis at {address}")
        };
        let manager = Manager::new(client, config.connect_timeout, config.command_timeout);
        // Connect and PING once now, so that a wrong address or a wrong or missing password
        // fails here, not at first use.
        let mut first = manager.connect().map_err(|error| {
            Error::backend(
                config.name.clone(),
                format!(
                    "cannot connect to {endpoint} (connect_timeout {:?})",
                    config.connect_timeout
                ),
                error,
            )
        })?;
        manager.is_valid(&mut first).map_err(|error| {
            Error::backend(
                config.name.clone(),
                format!("{endpoint} does not answer PING"),
                error,
            )
        })?;
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(0))
            .test_on_check_out(false)
            // Waiting for a pooled connection: one connect, or one command on another thread's.
            .connection_timeout(config.connect_timeout + config.command_timeout)
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(RedisBackend {
            name: config.name.clone(),
            endpoint,
            keys: Keys::new(&config.prefix),
            pool,
        })
    }

    /// Runs `command` on a pooled connection; `doing` describes it for errors.
    ///
    /// A pooled connection that the server dropped (it restarted) fails at once; the command is
    /// then retried on the next one, up to a freshly opened one. Every command sent is
    /// idempotent, so one that did reach the server before its connection dropped may run twice
    /// without harm.
    fn call<T>(
        &self,
        doing: impl Fn() -> String,
        mut command: impl FnMut(&mut Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut conn = self.pool.get().map_err(|error| self.error(&doing, error))?;
            match command(&mut conn.redis) {
                Ok(value) => return Ok(value),
                Err(error) => {
                    // An error reply leaves the connection in step; any other error may not.
                    conn.broken = error.code().is_none();
                    if !(error.is_connection_dropped() && attempts <= self.pool.max_size()) {
                        return Err(self.error(&doing, error));
                    }
                }
            }
        }
    }

    fn error(&self, doing: &impl Fn() -> String, source: impl Into<BoxError>) -> Error {
        Error::backend(
            self.name.clone(),
            format!("{} on {}", doing(), self.endpoint),
            source,
        )
    }
}

impl Backend for RedisBackend {
    fn store(&self, container: &str, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let command = Expiry::of(ttl).command(&self.keys.entry(container, key), value);
        self.call(
            || format!("storing key {} in container {container:?}", short(key)),
            |conn| command.query(conn),
        )
    }

    fn retrieve(&self, container: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let entry = self.keys.entry(container, key);
        self.call(
            || format!("reading key {} of container {container:?}", short(key)),
            |conn| match redis::cmd("GET").arg(&entry).query(conn) {
                // A hash, a list...: not a value kvcache wrote. A miss; the next store replaces it.
                Err(error) if error.code() == Some("WRONGTYPE") => Ok(None),
                other => other,
            },
        )
    }

    fn invalidate(&self, container: &str, key: &str) -> Result<()> {
        let entry = self.keys.entry(container, key);
        self.call(
            || format!("deleting key {} of container {container:?}", short(key)),
            |conn| redis::cmd("UNLINK").arg(&entry).query(conn),
        )
    }

    fn clear(&self, container: &str) -> Result<()> {
        let pattern = self.keys.pattern(container);
        let doing = || format!("clearing container {container:?}");
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<Vec<u8>>) = self.call(doing, |conn| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query(conn)
            })?;
            if !found.is_empty() {
                self.call(doing, |conn| {
                    redis::cmd("UNLINK").arg(&found).query::<()>(conn)
                })?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Nothing to do: Redis deletes expired keys itself.
    fn purge_expired(&self) -> Result<()> {
        Ok(())
    }

    fn retrieve_many(&self, container: &str, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<String> = keys
            .iter()
            .map(|key| self.keys.entry(container, key))
            .collect();
        self.call(
            || format!("reading {} keys of container {container:?}", keys.len()),
            // MGET answers nil for a key of another type: a miss, as in `retrieve`.
            |conn| redis::cmd("MGET").arg(&entries).query(conn),
        )
    }

    fn store_many(
        &self,
        container: &str,
        entries: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let expiry = Expiry::of(ttl);
        let mut pipeline = redis::pipe();
        for (key, value) in entries {
            pipeline
                .add_command(expiry.command(&self.keys.entry(container, key), value))
                .ignore();
        }
        self.call(
            || format!("storing {} keys in container {container:?}", entries.len()),
            |conn| pipeline.query(conn),
        )
    }
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.keys.prefix())
            .field("pool_size", &self.pool.max_size())
            .finish_non_exhaustive()
    }
}

/// `text` quoted for an error message, cut after 64 characters.
fn short(text: &str) -> String {
    match text.char_indices().nth(64) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &text[..end], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Expiry, MAX_PX, short};

    #[test]
    fn a_ttl_is_whole_milliseconds_rounded_up() {
        let of = |ttl| Expiry::of(Some(ttl));
        assert_eq!(Expiry::of(None), Expiry::Never);
        assert_eq!(of(Duration::ZERO), Expiry::Now);
        assert_eq!(of(Duration::from_nanos(1)), Expiry::After(1));
        assert_eq!(of(Duration::from_millis(1)), Expiry::After(1));
        assert_eq!(of(Duration::from_micros(1_001)), Expiry::After(2));
        assert_eq!(
            of(Duration::from_millis(86_400_123)),
            Expiry::After(86_400_123)
        );
        assert_eq!(of(Duration::MAX), Expiry::After(MAX_PX));
    }

    #[test]
    fn the_commands_set_with_px_or_delete() {
        let args = |expiry: Expiry| {
            let command = expiry.command("p:{1:c}:k", b"v");
            command
                .args_iter()
                .map(|arg| match arg {
                    redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                    _ => panic!("a store sends no cursor"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(args(Expiry::Never), "SET p:{1:c}:k v");
        assert_eq!(args(Expiry::After(1500)), "SET p:{1:c}:k v PX 1500");
        assert_eq!(args(Expiry::Now), "UNLINK p:{1:c}:k");
    }

    #[test]
    fn long_keys_are_cut_in_messages() {
        assert_eq!(short("k"), "\"k\"");
        let long = "é".repeat(1000);
        assert_eq!(short(&long), format!("{:?}… (2000 bytes)", "é".repeat(64)));
    }
}
