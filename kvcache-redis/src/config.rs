//! The options of a Redis backend, read from `backend.NAME.*` or set by hand, and checked.

use std::fmt;
use std::time::Duration;

use kvcache_core::{BackendConfig, Error, Result};

use crate::KIND;
use crate::backend::RedisBackend;

/// The URL used when `url` is not set.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
/// The prefix used when `prefix` is not set.
const DEFAULT_PREFIX: &str = "kvcache";
/// The timeout used when `connect_timeout` or `command_timeout` is not set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest timeout accepted: longer ones are configuration mistakes.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The options of a [`RedisBackend`]: what `backend.NAME.url`, `.prefix`, `.connect_timeout` and
/// `.command_timeout` set. (`.pool_size`, from the pooled versions, is checked and ignored: the
/// backend holds one multiplexed connection.)
///
/// Its `Debug` output leaves the URL out: it may hold a password.
///
/// ```no_run
/// use std::time::Duration;
/// use kvcache_redis::RedisConfig;
///
/// let backend = RedisConfig::new("redis://127.0.0.1:6379/0")
///     .prefix("myapp")
///     .command_timeout(Duration::from_millis(500))
///     .open()?;
/// # Ok::<(), kvcache_core::Error>(())
/// ```
#[derive(Clone)]
pub struct RedisConfig {
    pub(crate) name: String,
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig::new(DEFAULT_URL)
    }
}

impl RedisConfig {
    /// The defaults, on the server at `url` (`redis://`, or `redis+unix://` for a socket), or on
    /// the Redis Cluster whose seed nodes `url` lists
    /// (`redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002`).
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            name: KIND.to_owned(),
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            connect_timeout: DEFAULT_TIMEOUT,
            command_timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The options `backend.NAME.*` set; an error names the key of one that does not parse.
    pub(crate) fn from_backend_config(config: &BackendConfig) -> Result<Self> {
        let mut this = RedisConfig::new(config.get("url").unwrap_or(DEFAULT_URL));
        this.name = config.name().to_owned();
        if let Some(prefix) = config.get("prefix") {
            this.prefix = prefix.to_owned();
        }
        // Accepted so that configurations written for the pooled versions still read, and checked
        // as those versions did; one multiplexed connection serves every call now.
        if let Some(size) = config.parse::<u32>("pool_size", "a whole number of connections")?
            && size == 0
        {
            return Err(Error::config(
                config.key("pool_size"),
                "expected at least 1 connection",
            ));
        }
        if let Some(timeout) = config.duration("connect_timeout")? {
            this.connect_timeout = timeout;
        }
        if let Some(timeout) = config.duration("command_timeout")? {
            this.command_timeout = timeout;
        }
        Ok(this)
    }

    /// The first part of every key (`kvcache` by default): one Redis can hold the caches of
    /// several applications under distinct prefixes. It may not be empty or hold `{` or `}`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Ignored: the backend holds one multiplexed connection, which every call shares (commands
    /// are pipelined on it), and which reconnects by itself. Kept so that code written for the
    /// pooled versions still builds.
    #[deprecated(note = "ignored: the backend holds one multiplexed connection")]
    #[must_use]
    pub fn pool_size(self, _size: u32) -> Self {
        self
    }

    /// How long connecting (resolving the host, connecting and authenticating) may take, in all
    /// (5 s by default).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a call may take, from the moment it is made to its answer (5 s by default). It
    /// bounds every call, including one that waits for a reconnect.
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// Checks the options and connects.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the option that is wrong; [`Error::Backend`] naming the
    /// host and port (or socket) when the server cannot be reached or refuses the credentials
    /// within the connect timeout.
    pub fn open(&self) -> Result<RedisBackend> {
        self.check()?;
        RedisBackend::open(self)
    }

    /// The full configuration key of `option`, for errors.
    pub(crate) fn key(&self, option: &str) -> String {
        format!("backend.{}.{option}", self.name)
    }

    /// Whether the URL names a Unix socket; errors for a scheme this build cannot serve.
    pub(crate) fn is_unix(&self) -> Result<bool> {
        let scheme = self
            .url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::config(
                    self.key("url"),
                    "expected a URL such as redis://127.0.0.1:6379, redis+unix:///run/redis.sock \
                     or redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
                )
            })?;
        match scheme.as_str() {
            "redis" | "redis+cluster" => Ok(false),
            "redis+unix" => Ok(true),
            "rediss" => Err(Error::config(
                self.key("url"),
                "rediss:// (TLS) is not supported: kvcache-redis is built without a TLS stack to \
                 keep builds lean; reach a TLS-only server through a local TLS tunnel with \
                 redis://, or through a Unix socket with redis+unix://",
            )),
            _ => Err(Error::config(
                self.key("url"),
                format!(
                    "unknown scheme {scheme:?}: expected redis://, redis+unix:// or \
                     redis+cluster://"
                ),
            )),
        }
    }

    /// For a `redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]` URL, the
    /// `redis://` URL of each seed node, the credentials on each; `None` for another scheme.
    /// An error names the option and the part that is wrong, never the password.
    pub(crate) fn cluster_nodes(&self) -> Result<Option<Vec<String>>> {
        let Some((scheme, rest)) = self.url.split_once("://") else {
            return Ok(None);
        };
        if !scheme.eq_ignore_ascii_case("redis+cluster") {
            return Ok(None);
        }
        let wrong = |message: String| {
            Error::config(
                self.key("url"),
                format!(
                    "{message}: expected redis+cluster://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]...], \
                     such as redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002"
                ),
            )
        };
        let (credentials, hosts) = match rest.rsplit_once('@') {
            Some((credentials, hosts)) => (Some(credentials), hosts),
            None => (None, rest),
        };
        let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
        if hosts.contains(['/', '?', '#']) {
            return Err(wrong(
                "a cluster URL has no database or query: a Redis Cluster has database 0 only"
                    .to_owned(),
            ));
        }
        let mut nodes = Vec::new();
        for host in hosts.split(',') {
            let host = host.trim();
            if host.is_empty() {
                return Err(wrong("a seed node is empty".to_owned()));
            }
            // `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT`: the port, when there is one, is a number.
            let port = match host.rsplit_once(':') {
                Some((name, port))
                    if !name.is_empty() && (!host.starts_with('[') || name.ends_with(']')) =>
                {
                    Some(port)
                }
                _ => None,
            };
            if let Some(port) = port
                && !port.parse::<u16>().is_ok_and(|port| port > 0)
            {
                return Err(wrong(format!("seed node {host:?} has no valid port")));
            }
            nodes.push(match credentials {
                Some(credentials) => format!("redis://{credentials}@{host}"),
                None => format!("redis://{host}"),
            });
        }
        Ok(Some(nodes))
    }

    fn check(&self) -> Result<()> {
        if self.prefix.is_empty() || self.prefix.contains(['{', '}']) {
            return Err(Error::config(
                self.key("prefix"),
                format!(
                    "expected a non-empty prefix without `{{` or `}}` (braces would change the \
                     Redis Cluster hash tag of every key), got {:?}",
                    self.prefix
                ),
            ));
        }
        for (option, timeout) in [
            ("connect_timeout", self.connect_timeout),
            ("command_timeout", self.command_timeout),
        ] {
            if timeout.is_zero() || timeout > MAX_TIMEOUT {
                return Err(Error::config(
                    self.key(option),
                    format!("expected an interval above 0 and at most 1 day, got {timeout:?}"),
                ));
            }
        }
        self.is_unix()?;
        self.cluster_nodes().map(drop)
    }
}

impl fmt::Debug for RedisConfig {
    /// The URL is left out: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("name", &self.name)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}
