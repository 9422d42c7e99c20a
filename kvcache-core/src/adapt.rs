//! The adapters between a store's native side and the other path: a blocking store run on
//! tokio's blocking pool for async callers, an async store driven on kvcache's runtime for
//! synchronous callers.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{AsyncStore, BoxFuture, Lease, Space, Store};
use crate::error::{Error, Result};
use crate::memory::{ByteView, MemoryStore};
use crate::runtime;

impl Space {
    /// The store as synchronous callers use it.
    pub fn sync_store(&self) -> Arc<dyn Store> {
        match self {
            Space::Memory(store) => Arc::new(ByteView(Arc::clone(store))),
            Space::Blocking(store) => Arc::clone(store),
            Space::Async(store) => Arc::new(Driven(Arc::clone(store))),
        }
    }

    /// The store as async callers use it. A [`Space::Memory`] store is wrapped too, though
    /// containers call it inline (see [`is_memory`](Space::is_memory)).
    pub fn async_store(&self) -> Arc<dyn AsyncStore> {
        match self {
            Space::Memory(store) => Arc::new(Inline(Arc::new(ByteView(Arc::clone(store))))),
            Space::Blocking(store) => Arc::new(OnBlockingPool(Arc::clone(store))),
            Space::Async(store) => Arc::clone(store),
        }
    }

    /// Whether its calls never block, so async callers may call its synchronous side inline.
    pub fn is_memory(&self) -> bool {
        matches!(self, Space::Memory(_))
    }

    /// The in-memory store, for a [`Space::Memory`].
    pub fn memory_store(&self) -> Option<Arc<dyn MemoryStore>> {
        match self {
            Space::Memory(store) => Some(Arc::clone(store)),
            _ => None,
        }
    }
}

/// A memory store's calls, answered at once.
struct Inline(Arc<dyn Store>);

impl AsyncStore for Inline {
    fn store<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.0.store(key, value, ttl)))
    }

    fn retrieve<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(std::future::ready(self.0.retrieve(key)))
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.0.invalidate(key)))
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(std::future::ready(self.0.clear()))
    }

    fn retrieve_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        Box::pin(std::future::ready(self.0.retrieve_many(keys)))
    }

    fn store_many<'a>(
        &'a self,
        entries: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.0.store_many(entries, ttl)))
    }

    fn lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease>> {
        Box::pin(std::future::ready(self.0.lease(key, token, ttl)))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.0.release(key, token)))
    }
}

/// A blocking store's calls, each run on the blocking pool of the caller's runtime (or of
/// kvcache's own, for a caller on none). A caller that drops its future leaves the call to
/// finish there; its result is dropped.
struct OnBlockingPool(Arc<dyn Store>);

impl OnBlockingPool {
    async fn run<T: Send + 'static>(
        &self,
        call: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = Arc::clone(&self.0);
        let task = runtime::current()?.spawn_blocking(move || call(&*store));
        match task.await {
            Ok(result) => result,
            Err(error) => Err(Error::backend(
                "kvcache",
                format!("a call of {:?} on tokio's blocking pool", self.0),
                error,
            )),
        }
    }
}

impl AsyncStore for OnBlockingPool {
    fn store<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        let (key, value) = (key.to_owned(), value.to_vec());
        Box::pin(self.run(move |store| store.store(&key, &value, ttl)))
    }

    fn retrieve<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let key = key.to_owned();
        Box::pin(self.run(move |store| store.retrieve(&key)))
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let key = key.to_owned();
        Box::pin(self.run(move |store| store.invalidate(&key)))
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.run(|store| store.clear()))
    }

    fn retrieve_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        let keys: Vec<String> = keys.iter().map(|&key| key.to_owned()).collect();
        Box::pin(self.run(move |store| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            store.retrieve_many(&keys)
        }))
    }

    fn store_many<'a>(
        &'a self,
        entries: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|&(key, value)| (key.to_owned(), value.to_vec()))
            .collect();
        Box::pin(self.run(move |store| {
            let entries: Vec<(&str, &[u8])> = entries
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_slice()))
                .collect();
            store.store_many(&entries, ttl)
        }))
    }

    fn lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease>> {
        let (key, token) = (key.to_owned(), token.to_owned());
        Box::pin(self.run(move |store| store.lease(&key, &token, ttl)))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        let (key, token) = (key.to_owned(), token.to_owned());
        Box::pin(self.run(move |store| store.release(&key, &token)))
    }
}

/// An async store's calls, each driven on kvcache's runtime while the calling thread waits.
struct Driven(Arc<dyn AsyncStore>);

impl Driven {
    fn run<T, F, Fut>(&self, call: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn AsyncStore>) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        runtime::block_on(call(Arc::clone(&self.0)))?.unwrap_or_else(|| {
            Err(Error::backend(
                "kvcache",
                format!("a call of {:?} driven on kvcache's runtime", self.0),
                "it panicked",
            ))
        })
    }
}

impl Store for Driven {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let (key, value) = (key.to_owned(), value.to_vec());
        self.run(move |store| async move { store.store(&key, &value, ttl).await })
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let key = key.to_owned();
        self.run(move |store| async move { store.retrieve(&key).await })
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.run(move |store| async move { store.invalidate(&key).await })
    }

    fn clear(&self) -> Result<()> {
        self.run(|store| async move { store.clear().await })
    }

    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        let keys: Vec<String> = keys.iter().map(|&key| key.to_owned()).collect();
        self.run(move |store| async move {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            store.retrieve_many(&keys).await
        })
    }

    fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let entries: Vec<(String, Vec<u8>)> = entries
            .iter()
            .map(|&(key, value)| (key.to_owned(), value.to_vec()))
            .collect();
        self.run(move |store| async move {
            let entries: Vec<(&str, &[u8])> = entries
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_slice()))
                .collect();
            store.store_many(&entries, ttl).await
        })
    }

    fn lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Lease> {
        let (key, token) = (key.to_owned(), token.to_owned());
        self.run(move |store| async move { store.lease(&key, &token, ttl).await })
    }

    fn release(&self, key: &str, token: &str) -> Result<()> {
        let (key, token) = (key.to_owned(), token.to_owned());
        self.run(move |store| async move { store.release(&key, &token).await })
    }
}

impl fmt::Debug for Inline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Debug for OnBlockingPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Debug for Driven {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}
