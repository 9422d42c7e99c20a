//! The one error type of kvcache.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A boxed error from a backend driver, a generator or a codec.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The cause of an [`Error`], shared by every caller that receives it.
///
/// Concurrent callers of one key receive the same generator error: each gets a clone of one
/// `Arc`, so each can downcast it to the generator's own error type, through
/// [`source`](std::error::Error::source) or by dereferencing:
///
/// ```
/// # use kvcache_core::Source;
/// let source = Source::from(std::io::Error::other("upstream down"));
/// assert!(source.downcast_ref::<std::io::Error>().is_some());
/// ```
#[derive(Clone)]
pub struct Source(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl Deref for Source {
    type Target = dyn std::error::Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl<E: Into<BoxError>> From<E> for Source {
    fn from(error: E) -> Self {
        Source(Arc::from(error.into()))
    }
}

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

/// `Result` with kvcache's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kvcache.
///
/// Every variant names what was wrong and where: the container, the key, the configuration key or
/// the backend. Driver errors are kept as shared [`source`](std::error::Error::source)s, so no
/// driver type appears in this API, and no message ever holds a password. Errors are cheap to
/// clone: the callers that waited on one generation all receive the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key is not in the cache and its container has no generator.
    #[error("key {key:?} is not in container {container:?}, which has no generator")]
    NotFound {
        /// The container.
        container: String,
        /// The key.
        key: String,
    },

    /// A container of that name exists already.
    #[error("container {name:?} is already configured")]
    ContainerAlreadyConfigured {
        /// The container's name.
        name: String,
    },

    /// No container of that name exists.
    #[error("there is no container {name:?} (known containers: {})", list(known))]
    UnknownContainer {
        /// The name asked for.
        name: String,
        /// The containers there are, sorted.
        known: Vec<String>,
    },

    /// No backend kind of that name is registered.
    #[error(
        "{key}: unknown backend kind {kind:?} (known kinds: {}; is the crate's cargo feature enabled?)",
        list(known)
    )]
    UnknownBackend {
        /// The configuration key that named it.
        key: String,
        /// The kind asked for.
        kind: String,
        /// The registered kinds and aliases, sorted.
        known: Vec<String>,
    },

    /// Two registrations claim one name: a backend kind, an alias or a generator.
    #[error("{what} {name:?} is registered twice: by {first} and by {second}")]
    DuplicateRegistration {
        /// What kind of name: `backend kind` or `generator`.
        what: &'static str,
        /// The name.
        name: String,
        /// Where the first registration comes from.
        first: String,
        /// Where the second registration comes from.
        second: String,
    },

    /// A configuration value is missing, unknown or malformed.
    #[error("{key}: {message}")]
    InvalidConfig {
        /// The configuration key, in the flat form (`container.greeting.expire`).
        key: String,
        /// What was expected.
        message: String,
    },

    /// A container was asked for with a value type other than its generator's.
    #[error(
        "container {container:?} holds values of type `{found}` (its generator's), not `{expected}`"
    )]
    TypeMismatch {
        /// The container.
        container: String,
        /// The type asked for.
        expected: &'static str,
        /// The type of the container's generator.
        found: &'static str,
    },

    /// A backend failed: the database is unreachable, the file is corrupt, a query failed.
    #[error("backend {backend:?}: {context}")]
    Backend {
        /// The backend's name in the configuration (or its kind, for one built by hand).
        backend: String,
        /// What it was doing, with the path, host or table involved.
        context: String,
        /// The driver's error.
        #[source]
        source: Source,
    },

    /// A backend cannot be reached: the connection was refused or lost, or no answer came
    /// within its bound. After one such failure the backend's circuit breaker fails its calls at
    /// once for a back-off interval (`retry_in` is then set): an outage costs a caller
    /// nothing, and under `on_backend_error = generate` the generator serves at its own speed.
    #[error("backend {backend:?} is unavailable: {context}")]
    Unavailable {
        /// The backend's name in the configuration.
        backend: String,
        /// What it was doing, with the host or path, and why it could not.
        context: String,
        /// When its circuit breaker lets the next call through, for a call it refused without
        /// trying the backend; `None` for a call that tried.
        retry_in: Option<std::time::Duration>,
        /// The driver's error (for a refused call, the one that opened the breaker).
        #[source]
        source: Source,
    },

    /// A generator returned an error or panicked.
    #[error("the generator of container {container:?} failed for key {key:?}")]
    Generator {
        /// The container.
        container: String,
        /// The key it was called with.
        key: String,
        /// The generator's error: downcast it to the generator's own error type.
        #[source]
        source: Source,
    },

    /// A backend cannot do what was asked: an operator's inspection (listing keys, reading an
    /// entry's size and expiry) of a backend that offers none ([`Backend::inspect`]), or an
    /// operation that means nothing outside the process holding the entries (an in-memory
    /// backend seen from another process).
    ///
    /// [`Backend::inspect`]: crate::Backend::inspect
    #[error(
        "backend {backend:?}: {operation} is not supported by this backend{}",
        because(reason)
    )]
    Unsupported {
        /// The backend's name in the configuration.
        backend: String,
        /// What was asked, in words: `listing the keys of container "c"`.
        operation: String,
        /// Why, when there is more to say than that the backend offers no such operation.
        reason: Option<String>,
    },

    /// A value could not be encoded.
    #[error("container {container:?}, key {key:?}: cannot encode a value of type `{type_name}`")]
    Codec {
        /// The container.
        container: String,
        /// The key.
        key: String,
        /// The value's type.
        type_name: &'static str,
        /// The encoder's error.
        #[source]
        source: Source,
    },
}

impl Error {
    /// A [`Error::Backend`] for the backend named `backend`, doing `context`.
    pub fn backend(
        backend: impl Into<String>,
        context: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            context: context.into(),
            source: source.into(),
        }
    }

    /// An [`Error::Unavailable`] for the backend named `backend`, which could not be reached
    /// while doing `context`: refused, lost, or timed out. Backends return it for
    /// connection-level failures, and only for those: it opens the backend's circuit breaker.
    pub fn unavailable(
        backend: impl Into<String>,
        context: impl Into<String>,
        source: impl Into<Source>,
    ) -> Self {
        Error::Unavailable {
            backend: backend.into(),
            context: context.into(),
            retry_in: None,
            source: source.into(),
        }
    }

    /// Whether this says a backend could not be reached ([`Error::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// An [`Error::InvalidConfig`] for the configuration key `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            key: key.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Unsupported`]: the backend named `backend` cannot do `operation`.
    pub fn unsupported(backend: impl Into<String>, operation: impl Into<String>) -> Self {
        Error::Unsupported {
            backend: backend.into(),
            operation: operation.into(),
            reason: None,
        }
    }

    /// Whether this is [`Error::Unsupported`].
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

fn because(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map_or_else(String::new, |reason| format!(": {reason}"))
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
