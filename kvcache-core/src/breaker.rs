//! Fast failure during an outage: a circuit breaker per backend, around its native store.
//!
//! Closed, every call goes through. A call that fails with [`Error::Unavailable`] (refused,
//! lost, timed out) opens it: for the back-off interval every call fails at once with
//! `Unavailable { retry_in: Some(..) }`, without touching the backend. After the interval one
//! call at a time goes through as a probe: if the backend answers (even with an error of
//! another kind), the breaker closes; if it is still unreachable, the interval starts again.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::backend::{AsyncStore, BoxFuture, Lease, Space, Store};
use crate::error::{Error, Result};

/// The back-off interval when `backend.NAME.outage_backoff` is not set.
pub(crate) const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);

/// One backend's breaker, shared by every container on it.
pub(crate) struct Breaker {
    backend: String,
    backoff: Duration,
    /// Whether it is open (or probing): the one load a call pays while the backend is healthy.
    tripped: AtomicBool,
    state: Mutex<Open>,
}

/// What an open breaker knows.
struct Open {
    /// Until when calls are refused.
    until: Instant,
    /// Whether a probe is under way.
    probing: bool,
    /// The failure that opened it, for the errors of refused calls.
    cause: Option<Error>,
}

/// A call let through: a probe must report how it went, or give its turn back when dropped.
struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    /// A breaker for `backend` that refuses calls for `backoff` after an outage; zero turns it
    /// off.
    pub(crate) fn new(backend: &str, backoff: Duration) -> Self {
        Breaker {
            backend: backend.to_owned(),
            backoff,
            tripped: AtomicBool::new(false),
            state: Mutex::new(Open {
                until: Instant::now(),
                probing: false,
                cause: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call through, or refuses it with the error of the outage under way.
    fn admit(&self) -> Result<Permit<'_>> {
        if !self.tripped.load(Ordering::Acquire) {
            return Ok(Permit {
                breaker: self,
                probe: false,
            });
        }
        let mut open = self.lock();
        let now = Instant::now();
        if now < open.until || open.probing {
            let retry_in = open.until.saturating_duration_since(now);
            return Err(self.refused(open.cause.as_ref(), retry_in));
        }
        open.probing = true;
        Ok(Permit {
            breaker: self,
            probe: true,
        })
    }

    /// The error of a call refused while the breaker is open.
    fn refused(&self, cause: Option<&Error>, retry_in: Duration) -> Error {
        let (context, source) = match cause {
            Some(Error::Unavailable {
                context, source, ..
            }) => (context.clone(), source.clone()),
            _ => ("unreachable".to_owned(), "the backend is down".into()),
        };
        Error::Unavailable {
            backend: self.backend.clone(),
            context: format!(
                "not called: it was unreachable moments ago ({context}); the next try is in {} ms",
                retry_in.as_millis()
            ),
            retry_in: Some(retry_in),
            source,
        }
    }

    /// Takes the outcome of a call it let through.
    fn record<T>(&self, permit: Permit<'_>, outcome: &Result<T>) {
        let probe = permit.probe;
        std::mem::forget(permit);
        match outcome {
            Err(error) if error.is_unavailable() => {
                let mut open = self.lock();
                let was_closed = !self.tripped.swap(true, Ordering::AcqRel);
                open.until = Instant::now() + self.backoff;
                open.probing = false;
                open.cause = Some(error.clone());
                if was_closed || probe {
                    tracing::warn!(
                        backend = %self.backend,
                        error = error as &dyn std::error::Error,
                        backoff_ms = self.backoff.as_millis() as u64,
                        "the backend is unreachable: its calls fail at once until a probe gets through"
                    );
                }
            }
            _ if probe || self.tripped.load(Ordering::Acquire) => {
                let mut open = self.lock();
                open.probing = false;
                open.cause = None;
                if self.tripped.swap(false, Ordering::AcqRel) {
                    tracing::info!(backend = %self.backend, "the backend answers again");
                }
            }
            _ => {}
        }
    }

    /// Runs a blocking call through the breaker.
    fn call<T>(&self, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let permit = self.admit()?;
        let outcome = call();
        self.record(permit, &outcome);
        outcome
    }

    /// Runs an async call through the breaker. A probe whose future is dropped gives its turn
    /// back.
    async fn call_async<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let permit = self.admit()?;
        let outcome = call.await;
        self.record(permit, &outcome);
        outcome
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.breaker.lock().probing = false;
        }
    }
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("backend", &self.backend)
            .field("backoff", &self.backoff)
            .field("open", &self.tripped.load(Ordering::Relaxed))
            .finish()
    }
}

impl Breaker {
    /// The two views of `space`, synchronous and async, with their calls run through this
    /// breaker. The views are guarded, not the native store, so that a call refused during an
    /// outage costs no adapter: no hop to kvcache's runtime, no task on the blocking pool. A
    /// memory space is never unreachable and is left as it is.
    pub(crate) fn views(self: &Arc<Self>, space: &Space) -> (Arc<dyn Store>, Arc<dyn AsyncStore>) {
        let (sync, nonblocking) = (space.sync_store(), space.async_store());
        if space.is_memory() || self.backoff.is_zero() {
            return (sync, nonblocking);
        }
        (
            Arc::new(Guarded {
                store: sync,
                breaker: Arc::clone(self),
            }),
            Arc::new(Guarded {
                store: nonblocking,
                breaker: Arc::clone(self),
            }),
        )
    }
}

/// A store whose calls go through a breaker.
struct Guarded<S: ?Sized> {
    store: Arc<S>,
    breaker: Arc<Breaker>,
}

impl<S: ?Sized + fmt::Debug> fmt::Debug for Guarded<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.store, f)
    }
}

impl Store for Guarded<dyn Store> {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.breaker.call(|| self.store.store(key, value, ttl))
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.breaker.call(|| self.store.retrieve(key))
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        self.breaker.call(|| self.store.invalidate(key))
    }

    fn clear(&self) -> Result<()> {
        self.breaker.call(|| self.store.clear())
    }

    fn retrieve_with(&self, key: &str, read: &mut dyn FnMut(&[u8])) -> Result<bool> {
        self.breaker.call(|| self.store.retrieve_with(key, read))
    }

    fn retrieve_many(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>> {
        self.breaker.call(|| self.store.retrieve_many(keys))
    }

    fn store_many(&self, entries: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.breaker.call(|| self.store.store_many(entries, ttl))
    }

    fn lease(&self, key: &str, token: &str, ttl: Duration) -> Result<Lease> {
        self.breaker.call(|| self.store.lease(key, token, ttl))
    }

    fn release(&self, key: &str, token: &str) -> Result<()> {
        self.breaker.call(|| self.store.release(key, token))
    }
}

impl AsyncStore for Guarded<dyn AsyncStore> {
    fn store<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.breaker.call_async(self.store.store(key, value, ttl)))
    }

    fn retrieve<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(self.breaker.call_async(self.store.retrieve(key)))
    }

    fn invalidate<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.breaker.call_async(self.store.invalidate(key)))
    }

    fn clear(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.breaker.call_async(self.store.clear()))
    }

    fn retrieve_many<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Option<Vec<u8>>>>> {
        Box::pin(self.breaker.call_async(self.store.retrieve_many(keys)))
    }

    fn store_many<'a>(
        &'a self,
        entries: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.breaker.call_async(self.store.store_many(entries, ttl)))
    }

    fn lease<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Lease>> {
        Box::pin(self.breaker.call_async(self.store.lease(key, token, ttl)))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.breaker.call_async(self.store.release(key, token)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Breaker;
    use crate::error::{Error, Result};

    fn down() -> Result<()> {
        Err(Error::unavailable(
            "b",
            "reading at 127.0.0.1:1",
            "connection refused",
        ))
    }

    #[test]
    fn an_outage_opens_it_a_probe_after_the_backoff_closes_it() {
        let breaker = Breaker::new("b", Duration::from_millis(50));
        let mut calls = 0;
        assert!(
            breaker
                .call(|| {
                    calls += 1;
                    down()
                })
                .is_err()
        );
        // Open: refused without a call, naming the cause and when to retry.
        let refused = breaker
            .call(|| {
                calls += 1;
                Ok(())
            })
            .unwrap_err();
        assert_eq!(calls, 1, "the open breaker did not call the backend");
        let Error::Unavailable {
            retry_in: Some(retry_in),
            ..
        } = &refused
        else {
            panic!("{refused}");
        };
        assert!(*retry_in <= Duration::from_millis(50));
        assert!(refused.to_string().contains("127.0.0.1:1"), "{refused}");
        std::thread::sleep(Duration::from_millis(60));
        // The probe goes through, succeeds, and closes it.
        assert!(
            breaker
                .call(|| {
                    calls += 1;
                    Ok(())
                })
                .is_ok()
        );
        assert!(
            breaker
                .call(|| {
                    calls += 1;
                    Ok(())
                })
                .is_ok()
        );
        assert_eq!(calls, 3);
    }

    #[test]
    fn one_probe_at_a_time_and_a_failed_probe_reopens_it() {
        let breaker = Breaker::new("b", Duration::from_millis(20));
        assert!(breaker.call(down).is_err());
        std::thread::sleep(Duration::from_millis(30));
        let probe = breaker.admit().expect("the probe is let through");
        assert!(
            breaker.admit().is_err(),
            "a second caller is refused while the probe runs"
        );
        breaker.record(probe, &down());
        assert!(breaker.admit().is_err(), "the failed probe reopened it");
    }

    #[test]
    fn a_dropped_probe_gives_its_turn_back() {
        let breaker = Breaker::new("b", Duration::from_millis(10));
        assert!(breaker.call(down).is_err());
        std::thread::sleep(Duration::from_millis(20));
        drop(breaker.admit().expect("the probe"));
        assert!(breaker.admit().is_ok(), "the next caller probes");
    }

    #[test]
    fn errors_of_another_kind_leave_it_closed() {
        let breaker = Breaker::new("b", Duration::from_secs(60));
        let other: Result<()> = Err(Error::backend("b", "a query", "syntax error"));
        assert!(breaker.call(|| other).is_err());
        assert!(breaker.call(|| Ok(())).is_ok());
    }
}
