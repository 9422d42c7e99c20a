//! How a container behaves: its expiry, what it does when its backend fails, and whether its
//! values are compressed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What [`Container::get`](crate::Container::get) does when its backend fails
/// (`container.NAME.on_backend_error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnBackendError {
    /// `fail` (the default): the backend's error reaches the caller.
    #[default]
    Fail,
    /// `generate` (fail-open): the generator's value is returned, nothing is stored, and the
    /// error is reported through `tracing` at warn level. Writes (`set`, `remove`, `clear`) and
    /// `peek` still return the error, and so does a miss in a container without a generator.
    Generate,
}

impl FromStr for OnBackendError {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "fail" => Ok(OnBackendError::Fail),
            "generate" => Ok(OnBackendError::Generate),
            other => Err(format!("expected `fail` or `generate`, got {other:?}")),
        }
    }
}

impl fmt::Display for OnBackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnBackendError::Fail => "fail",
            OnBackendError::Generate => "generate",
        })
    }
}

/// How a container's values are compressed before they are stored
/// (`container.NAME.compress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// `zstd` (level 3): the better ratio. Needs the `zstd` feature.
    Zstd,
    /// `lz4`: the faster. Needs the `lz4` feature.
    Lz4,
}

impl Compression {
    /// Whether this build can compress and decompress with it.
    pub fn is_built_in(self) -> bool {
        match self {
            Compression::Zstd => cfg!(feature = "zstd"),
            Compression::Lz4 => cfg!(feature = "lz4"),
        }
    }

    /// The cargo feature that builds it in.
    pub fn feature(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "zstd" => Ok(Compression::Zstd),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!("expected `zstd`, `lz4` or `none`, got {other:?}")),
        }
    }
}

/// Values whose encoding is shorter than this are stored as they are, unless the container says
/// otherwise (`container.NAME.compress_above`): below it, compression saves too little to pay
/// for itself.
pub const COMPRESS_ABOVE: usize = 256;

/// The settings of a container made with
/// [`KvCache::create_container`](crate::KvCache::create_container).
///
/// ```
/// use std::time::Duration;
/// use kvcache_core::{ContainerOptions, OnBackendError};
///
/// let options = ContainerOptions::default()
///     .expire(Duration::from_secs(90))
///     .on_backend_error(OnBackendError::Generate);
/// assert_eq!(options.expire_after(), Some(Duration::from_secs(90)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct ContainerOptions {
    expire: Option<Duration>,
    on_backend_error: OnBackendError,
    compress: Option<Compression>,
    compress_above: Option<usize>,
    lock_timeout: Option<Duration>,
    refresh: Option<Duration>,
    stale_if_error: Option<Duration>,
    cache_errors: Option<Duration>,
    /// The XFetch β's bits: a positive, finite `f64`.
    early_refresh: Option<u64>,
}

/// How long a lease on generating a key lives unless its holder releases it first
/// (`container.NAME.lock_timeout`): the longest a process that dies while generating blocks
/// that key for the others.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

impl ContainerOptions {
    /// Values expire this long after they are stored; zero means never (the default).
    pub fn expire(mut self, expire: Duration) -> Self {
        self.expire = Some(expire).filter(|d| !d.is_zero());
        self
    }

    /// What `get` does when the backend fails (default [`OnBackendError::Fail`]).
    pub fn on_backend_error(mut self, policy: OnBackendError) -> Self {
        self.on_backend_error = policy;
        self
    }

    /// Compresses values with `compression` when their encoding is longer than
    /// [`compress_above`](ContainerOptions::compress_above) bytes. Every process reads
    /// compressed values, whatever its own setting, if its build has that compression; one
    /// without reads them as misses and regenerates them.
    pub fn compress(mut self, compression: Option<Compression>) -> Self {
        self.compress = compression;
        self
    }

    /// The length above which values are compressed (default [`COMPRESS_ABOVE`]).
    pub fn compress_above(mut self, bytes: usize) -> Self {
        self.compress_above = Some(bytes);
        self
    }

    /// How long a lease on generating a key lives (default [`LOCK_TIMEOUT`]); zero turns the
    /// leases off, and each process then generates its own misses.
    ///
    /// On a store that other processes share (Redis, SQL, the file backend), one caller across
    /// every process generates a missing key while the others wait for its value; a caller that
    /// waits past twice this long generates the key itself.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// The lease time to live; zero when leases are off.
    pub fn lease_ttl(&self) -> Duration {
        self.lock_timeout.unwrap_or(LOCK_TIMEOUT)
    }

    /// Stale while revalidate: a value older than `refresh` is still served at once, and one
    /// caller across every process regenerates it in the background; [`expire`] stays the
    /// limit past which it is never served. Zero: off (the default).
    ///
    /// [`expire`]: ContainerOptions::expire
    pub fn refresh(mut self, refresh: Duration) -> Self {
        self.refresh = Some(refresh).filter(|d| !d.is_zero());
        self
    }

    /// Stale if error: when the generator fails, the last value is served instead for up to
    /// this long past its expiry, counted and reported through `tracing`. Zero: off (the
    /// default).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = Some(window).filter(|d| !d.is_zero());
        self
    }

    /// Negative caching: a generator's failure is remembered this long, in the store, so that
    /// callers in every process get it (or the stale value, within
    /// [`stale_if_error`](ContainerOptions::stale_if_error)) without calling a failing upstream
    /// again. Zero: off (the default).
    pub fn cache_errors(mut self, remember: Duration) -> Self {
        self.cache_errors = Some(remember).filter(|d| !d.is_zero());
        self
    }

    /// Early probabilistic refresh (XFetch, Vattani et al., VLDB 2015): a read at time `t` of
    /// a value expiring at `e` that took `δ` to generate refreshes it in the background when
    /// `t − δ·β·ln(u) ≥ e`, `u` uniform in (0, 1]: the closer to its expiry and the slower its
    /// generator, the likelier. `beta` is β (1 is the paper's optimum; larger refreshes
    /// earlier); zero: off (the default). Needs an [`expire`](ContainerOptions::expire).
    pub fn early_refresh(mut self, beta: f64) -> Self {
        self.early_refresh = Some(beta)
            .filter(|b| b.is_finite() && *b > 0.0)
            .map(f64::to_bits);
        self
    }

    /// The stale-while-revalidate interval, if on.
    pub fn refresh_after(&self) -> Option<Duration> {
        self.refresh
    }

    /// The stale-if-error window, if on.
    pub fn stale_window(&self) -> Option<Duration> {
        self.stale_if_error
    }

    /// How long a generator's failure is remembered, if it is.
    pub fn errors_remembered(&self) -> Option<Duration> {
        self.cache_errors
    }

    /// The XFetch β, if early refresh is on.
    pub fn early_refresh_beta(&self) -> Option<f64> {
        self.early_refresh.map(f64::from_bits)
    }

    /// Whether stored values carry their times (a stamp): any of refresh, stale-if-error,
    /// negative caching or early refresh is on.
    pub(crate) fn stamps(&self) -> bool {
        self.refresh.is_some()
            || self.stale_if_error.is_some()
            || self.cache_errors.is_some()
            || self.early_refresh.is_some()
    }

    /// The compression, and the length above which it applies.
    pub fn compression(&self) -> Option<(Compression, usize)> {
        self.compress
            .map(|compression| (compression, self.compress_above.unwrap_or(COMPRESS_ABOVE)))
    }

    /// How long values live; `None`: until removed or evicted.
    pub fn expire_after(&self) -> Option<Duration> {
        self.expire
    }

    /// The backend-error policy.
    pub fn backend_error_policy(&self) -> OnBackendError {
        self.on_backend_error
    }
}
