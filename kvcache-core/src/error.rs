//! The one error type of kvcache.

/// A boxed error from a backend driver, a generator or a codec.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with kvcache's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in kvcache.
///
/// Every variant names what was wrong and where: the container, the key, the configuration key or
/// the backend. Driver errors are kept as boxed [`source`](std::error::Error::source)s, so no
/// driver type appears in this API, and no message ever holds a password.
#[derive(Debug, thiserror::Error)]
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
        source: BoxError,
    },

    /// A generator returned an error or panicked.
    #[error("the generator of container {container:?} failed for key {key:?}")]
    Generator {
        /// The container.
        container: String,
        /// The key it was called with.
        key: String,
        /// The generator's error.
        #[source]
        source: BoxError,
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
        source: BoxError,
    },
}

impl Error {
    /// A [`Error::Backend`] for the backend named `backend`, doing `context`.
    pub fn backend(
        backend: impl Into<String>,
        context: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Error::Backend {
            backend: backend.into(),
            context: context.into(),
            source: source.into(),
        }
    }

    /// An [`Error::InvalidConfig`] for the configuration key `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A copy of this error for the callers that waited on the one that failed: the same variant
    /// and message, with the source kept as its text.
    pub(crate) fn share(&self) -> Error {
        let text = |source: &BoxError| -> BoxError { source.to_string().into() };
        match self {
            Error::NotFound { container, key } => Error::NotFound {
                container: container.clone(),
                key: key.clone(),
            },
            Error::ContainerAlreadyConfigured { name } => {
                Error::ContainerAlreadyConfigured { name: name.clone() }
            }
            Error::UnknownContainer { name, known } => Error::UnknownContainer {
                name: name.clone(),
                known: known.clone(),
            },
            Error::UnknownBackend { key, kind, known } => Error::UnknownBackend {
                key: key.clone(),
                kind: kind.clone(),
                known: known.clone(),
            },
            Error::DuplicateRegistration {
                what,
                name,
                first,
                second,
            } => Error::DuplicateRegistration {
                what,
                name: name.clone(),
                first: first.clone(),
                second: second.clone(),
            },
            Error::InvalidConfig { key, message } => Error::config(key.clone(), message.clone()),
            Error::TypeMismatch {
                container,
                expected,
                found,
            } => Error::TypeMismatch {
                container: container.clone(),
                expected,
                found,
            },
            Error::Backend {
                backend,
                context,
                source,
            } => Error::backend(backend.clone(), context.clone(), text(source)),
            Error::Generator {
                container,
                key,
                source,
            } => Error::Generator {
                container: container.clone(),
                key: key.clone(),
                source: text(source),
            },
            Error::Codec {
                container,
                key,
                type_name,
                source,
            } => Error::Codec {
                container: container.clone(),
                key: key.clone(),
                type_name,
                source: text(source),
            },
        }
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
