//! Test backends shared by the facade's tests.

#![allow(dead_code, unreachable_pub)]

pub mod services;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvcache::variable::VariableBackend;
use kvcache::{Backend, Error, Result, Space, Store};

/// Which of a [`Flaky`] backend's calls fail.
#[derive(Debug, Default)]
pub struct Down {
    pub reads: AtomicBool,
    pub writes: AtomicBool,
}

/// An in-memory backend whose reads and writes fail on demand, as a database that went away.
/// It declares its calls blocking, so the async path runs them on the blocking pool.
#[derive(Debug, Default)]
pub struct Flaky {
    inner: VariableBackend,
    pub down: Arc<Down>,
}

#[derive(Debug)]
struct FlakyStore {
    inner: Arc<dyn Store>,
    down: Arc<Down>,
}

impl Down {
    fn check(&self, down: &AtomicBool, doing: &str) -> Result<()> {
        if down.load(Ordering::SeqCst) {
            return Err(Error::backend(
                "flaky",
                format!("{doing} at 127.0.0.1:1"),
                "connection refused",
            ));
        }
        Ok(())
    }
}

impl Backend for Flaky {
    fn open(&self, container: &str) -> Result<Space> {
        Ok(Space::Blocking(Arc::new(FlakyStore {
            inner: self.inner.open(container)?.sync_store(),
            down: Arc::clone(&self.down),
        })))
    }

    fn purge_expired(&self) -> Result<()> {
        self.down.check(&self.down.writes, "purging")?;
        self.inner.purge_expired()
    }
}

impl Store for FlakyStore {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.down.check(&self.down.writes, "storing")?;
        self.inner.store(key, value, ttl)
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.down.check(&self.down.reads, "retrieving")?;
        self.inner.retrieve(key)
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        self.down.check(&self.down.writes, "deleting")?;
        self.inner.invalidate(key)
    }

    fn clear(&self) -> Result<()> {
        self.down.check(&self.down.writes, "clearing")?;
        self.inner.clear()
    }
}

/// Counts the calls a backend's stores get, by kind, and blocks each call for `delay` as a slow
/// driver would (a blocking store: the async path runs it on the blocking pool).
#[derive(Debug, Default)]
pub struct Counting {
    inner: VariableBackend,
    pub calls: Arc<Calls>,
    pub delay: Duration,
}

/// What a [`Counting`] backend's stores were asked.
#[derive(Debug, Default)]
pub struct Calls {
    pub retrieves: std::sync::atomic::AtomicUsize,
    pub stores: std::sync::atomic::AtomicUsize,
    pub store_manys: std::sync::atomic::AtomicUsize,
}

#[derive(Debug)]
struct CountingStore {
    inner: Arc<dyn Store>,
    calls: Arc<Calls>,
    delay: Duration,
}

impl Counting {
    /// A counting backend whose every call blocks its thread for `delay`.
    pub fn blocking_for(delay: Duration) -> Self {
        Counting {
            delay,
            ..Counting::default()
        }
    }
}

impl Backend for Counting {
    fn open(&self, container: &str) -> Result<Space> {
        Ok(Space::Blocking(Arc::new(CountingStore {
            inner: self.inner.open(container)?.sync_store(),
            calls: Arc::clone(&self.calls),
            delay: self.delay,
        })))
    }

    fn purge_expired(&self) -> Result<()> {
        self.inner.purge_expired()
    }
}

impl CountingStore {
    fn block(&self) {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
    }
}

impl Store for CountingStore {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.block();
        self.calls.stores.fetch_add(1, Ordering::SeqCst);
        self.inner.store(key, value, ttl)
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.block();
        self.calls.retrieves.fetch_add(1, Ordering::SeqCst);
        self.inner.retrieve(key)
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        self.block();
        self.inner.invalidate(key)
    }

    fn clear(&self) -> Result<()> {
        self.block();
        self.inner.clear()
    }

    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.block();
        self.inner.retrieve_many(keys)
    }

    fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.block();
        self.calls.store_manys.fetch_add(1, Ordering::SeqCst);
        self.inner.store_many(entries, ttl)
    }
}
