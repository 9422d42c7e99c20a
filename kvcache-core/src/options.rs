//! How a container behaves: its expiry and what it does when its backend fails.

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
}

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

    /// How long values live; `None`: until removed or evicted.
    pub fn expire_after(&self) -> Option<Duration> {
        self.expire
    }

    /// The backend-error policy.
    pub fn backend_error_policy(&self) -> OnBackendError {
        self.on_backend_error
    }
}
