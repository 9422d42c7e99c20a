//! The contract of [kvcache](https://docs.rs/kvcache): the [`Backend`] trait that storage crates
//! implement, typed read-through [`Container`]s, the [`Config`]uration, the one [`Error`] type,
//! and the registries of backend kinds and generators.
//!
//! Applications use the `kvcache` facade, which re-exports this crate and links the backends its
//! features enable. Backend authors depend on this crate alone:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use kvcache_core::{Backend, BackendConfig, BackendRegistration, Result, Space, Store};
//!
//! /// A backend that stores nothing: every look-up misses.
//! #[derive(Debug)]
//! struct Void;
//!
//! impl Backend for Void {
//!     fn open(&self, _container: &str) -> Result<Space> { Ok(Space::Blocking(Arc::new(Void))) }
//!     fn purge_expired(&self) -> Result<()> { Ok(()) }
//! }
//!
//! impl Store for Void {
//!     fn store(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<()> { Ok(()) }
//!     fn retrieve(&self, _: &str) -> Result<Option<Vec<u8>>> { Ok(None) }
//!     fn invalidate(&self, _: &str) -> Result<()> { Ok(()) }
//!     fn clear(&self) -> Result<()> { Ok(()) }
//! }
//!
//! fn open(_: &BackendConfig) -> Result<Arc<dyn Backend>> {
//!     Ok(Arc::new(Void))
//! }
//!
//! kvcache_core::register_backend!(BackendRegistration::new("void", open));
//!
//! let cache = kvcache_core::init([("backend.nothing", "void"), ("container.c.backend", "nothing")])?;
//! cache.register_generator("c", |key: &str| key.len())?;
//! let lengths = cache.container::<usize>("c")?;
//! assert_eq!(lengths.get("four")?, 4);
//! assert_eq!(lengths.stats().generations, 1);
//! # Ok::<(), kvcache_core::Error>(())
//! ```

mod adapt;
mod async_container;
mod backend;
mod breaker;
mod cache;
mod clock;
mod codec;
mod compress;
mod config;
mod container;
mod error;
mod export;
mod flight;
mod fresh;
mod generator;
pub mod inspect;
mod interval;
mod lead;
mod memory;
mod near;
mod options;
mod registry;
mod runtime;
mod size;
mod slot;
mod stamp;
mod stats;
#[cfg(feature = "testkit")]
pub mod testkit;
mod token;

#[doc(hidden)]
pub mod __private;

pub use async_container::AsyncContainer;
pub use backend::{
    AsyncStore, Backend, BackendConfig, BoxFuture, Change, Lease, Space, Store, Watcher,
};
pub use cache::{Builder, KvCache, init};
pub use clock::{Clock, ManualClock, SystemClock, expires_at};
pub use codec::Value;
pub use config::Config;
pub use container::Container;
pub use error::{BoxError, Error, Result, Source};
pub use generator::{Expiring, Generator};
pub use interval::parse_interval;
pub use memory::{Evictions, Held, MemoryStore};
pub use near::{NEAR_EXPIRE, NEAR_EXPIRE_WATCHED};
pub use options::{COMPRESS_ABOVE, Compression, ContainerOptions, LOCK_TIMEOUT, OnBackendError};
pub use registry::{
    BackendFactory, BackendRegistration, GeneratorRegistration, backend_kind, backend_kinds,
    generators,
};
pub use runtime::{block_on, on_kvcache_runtime, runtime};
pub use size::parse_size;
pub use stats::Stats;
