#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use kvcache_core::{
    AsyncContainer, AsyncStore, Backend, BackendConfig, BackendRegistration, BoxError, BoxFuture,
    Builder, Change, Clock, Compression, Config, Container, ContainerOptions, Error, Evictions,
    Expiring, Generator, Held, KvCache, LOCK_TIMEOUT, Lease, ManualClock, MemoryStore,
    OnBackendError, Result, Source, Space, Stats, Store, SystemClock, Value, Watcher,
    backend_kinds, init, runtime,
};

pub use kvcache_core::register_backend;

/// What an operator can ask of a backend from outside the application (the `kvcache` command).
pub use kvcache_core::inspect;

#[doc(hidden)]
pub use kvcache_core::__private;

/// The in-memory backend (`backend.NAME = variable`).
#[cfg(feature = "variable")]
#[cfg_attr(docsrs, doc(cfg(feature = "variable")))]
pub use kvcache_variable as variable;

/// The SQLite file backend (`backend.NAME = file`).
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub use kvcache_file as file;

/// The SQL backend (`backend.NAME = sql`): PostgreSQL, MySQL/MariaDB and SQLite.
#[cfg(any(
    feature = "sql-postgres",
    feature = "sql-mysql",
    feature = "sql-sqlite"
))]
#[cfg_attr(
    docsrs,
    doc(cfg(any(
        feature = "sql-postgres",
        feature = "sql-mysql",
        feature = "sql-sqlite"
    )))
)]
pub use kvcache_sql as sql;

/// The Redis backend (`backend.NAME = redis`).
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use kvcache_redis as redis;

/// `#[generator("name")]`: registers a plain function as the generator of the container `name`.
#[cfg(feature = "derive")]
#[cfg_attr(docsrs, doc(cfg(feature = "derive")))]
pub use kvcache_derive::generator;
