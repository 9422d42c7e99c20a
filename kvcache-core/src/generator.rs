//! Generators: the functions that compute a missing value, sync or async, with their value type
//! erased.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Value;

use futures_util::future::join_all;

use crate::backend::BoxFuture;
use crate::error::BoxError;
use crate::runtime;

/// A synchronous generator.
type SyncFn<V> = dyn Fn(&str) -> Result<Expiring<V>, BoxError> + Send + Sync;
/// An async generator.
type AsyncFn<V> = dyn Fn(String) -> BoxFuture<'static, Result<Expiring<V>, BoxError>> + Send + Sync;
/// An async generator's call for one key.
pub(crate) type Generation<V> = BoxFuture<'static, Result<Expiring<V>, BoxError>>;

/// A generated value with how long it lives, from a generator that knows (an HTTP response's
/// `Cache-Control: max-age`, a token's own expiry): made with [`Generator::expiring`].
///
/// ```
/// use std::time::Duration;
/// use kvcache_core::Expiring;
///
/// let page = Expiring::from_cache_control("<html>", "public, max-age=60");
/// assert_eq!(page.expire, Some(Duration::from_secs(60)));
/// assert_eq!(Expiring::from_cache_control("x", "no-store").expire, Some(Duration::ZERO));
/// assert_eq!(Expiring::from_cache_control("x", "public").expire, None);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiring<V> {
    /// The value.
    pub value: V,
    /// How long it lives from now: `None` for the container's expiry, zero for not at all (it
    /// is returned to the callers waiting for it, and not stored).
    pub expire: Option<Duration>,
}

impl<V> Expiring<V> {
    /// `value`, living `expire` from now.
    pub fn new(value: V, expire: Duration) -> Self {
        Expiring {
            value,
            expire: Some(expire),
        }
    }

    /// `value`, living as an HTTP `Cache-Control` header says: `s-maxage`, else `max-age`
    /// seconds; `no-store`, `no-cache` and `private` mean zero (not stored); a header with none
    /// of them leaves the container's expiry.
    pub fn from_cache_control(value: V, header: &str) -> Self {
        let mut max_age = None;
        let mut shared_max_age = None;
        for directive in header.split(',').map(str::trim) {
            let (name, argument) = directive.split_once('=').unwrap_or((directive, ""));
            let seconds = || argument.trim().trim_matches('"').parse::<u64>().ok();
            match name.trim().to_ascii_lowercase().as_str() {
                "no-store" | "no-cache" | "private" => {
                    return Expiring::new(value, Duration::ZERO);
                }
                "s-maxage" => shared_max_age = seconds(),
                "max-age" => max_age = seconds(),
                _ => {}
            }
        }
        Expiring {
            value,
            expire: shared_max_age.or(max_age).map(Duration::from_secs),
        }
    }

    /// `value` with the container's expiry.
    pub(crate) fn plain(value: V) -> Self {
        Expiring {
            value,
            expire: None,
        }
    }
}

/// A typed generator, as a container calls it.
pub(crate) enum Call<V> {
    /// Called on the caller's thread (or, for an async caller, on tokio's blocking pool).
    Sync(Arc<SyncFn<V>>),
    /// Awaited on the caller's runtime; for a synchronous caller, its calls for every key are
    /// driven all at once on kvcache's own runtime ([`block_on_all`]).
    Async(Arc<AsyncFn<V>>),
}

impl<V> Clone for Call<V> {
    fn clone(&self) -> Self {
        match self {
            Call::Sync(f) => Call::Sync(Arc::clone(f)),
            Call::Async(f) => Call::Async(Arc::clone(f)),
        }
    }
}

/// Drives `generations` all at once on kvcache's runtime while the calling thread waits: how a
/// synchronous caller calls an async generator.
pub(crate) fn block_on_all<V: Send + 'static>(
    generations: Vec<Generation<V>>,
) -> Vec<Result<Expiring<V>, BoxError>> {
    let count = generations.len();
    match runtime::block_on(join_all(generations)) {
        Ok(Some(results)) => results,
        Ok(None) => (0..count)
            .map(|_| Err("the generator panicked".into()))
            .collect(),
        Err(error) => (0..count).map(|_| Err(error.clone().into())).collect(),
    }
}

/// A function that computes the value for a key, with its value type erased so that containers
/// of every type can be held in one map.
///
/// Made from a plain function or closure with [`Generator::new`], one that can fail with
/// [`Generator::fallible`], or an async one with [`Generator::new_async`] and
/// [`Generator::fallible_async`]. Either kind serves both the synchronous and the async path.
/// Asking a container for a value type other than its generator's is
/// [`Error::TypeMismatch`](crate::Error::TypeMismatch).
#[derive(Clone)]
pub struct Generator {
    value_type: &'static str,
    asynchronous: bool,
    function: Arc<dyn Any + Send + Sync>,
}

impl Generator {
    /// A generator that always succeeds.
    pub fn new<V, F>(f: F) -> Self
    where
        V: Value,
        F: Fn(&str) -> V + Send + Sync + 'static,
    {
        Self::erase::<V>(Call::Sync(Arc::new(move |key: &str| {
            Ok(Expiring::plain(f(key)))
        })))
    }

    /// A generator that can fail; its error reaches the caller of `get` as
    /// [`Error::Generator`](crate::Error::Generator), and nothing is stored.
    pub fn fallible<V, E, F>(f: F) -> Self
    where
        V: Value,
        E: Into<BoxError>,
        F: Fn(&str) -> Result<V, E> + Send + Sync + 'static,
    {
        Self::erase::<V>(Call::Sync(Arc::new(move |key: &str| {
            f(key).map(Expiring::plain).map_err(Into::into)
        })))
    }

    /// A generator that can fail and says how long each value lives: value-derived expiry.
    /// An [`Expiring`] with no expiry gets the container's.
    ///
    /// ```
    /// # use kvcache_core::{Expiring, Generator};
    /// let quotes = Generator::expiring(|symbol: &str| {
    ///     // An upstream answer with its headers, say.
    ///     let (price, cache_control) = (symbol.len() as u64, "max-age=15");
    ///     Ok::<_, std::io::Error>(Expiring::from_cache_control(price, cache_control))
    /// });
    /// ```
    pub fn expiring<V, E, F>(f: F) -> Self
    where
        V: Value,
        E: Into<BoxError>,
        F: Fn(&str) -> Result<Expiring<V>, E> + Send + Sync + 'static,
    {
        Self::erase::<V>(Call::Sync(Arc::new(move |key: &str| {
            f(key).map_err(Into::into)
        })))
    }

    /// An async generator that can fail and says how long each value lives, as
    /// [`expiring`](Generator::expiring).
    pub fn expiring_async<V, E, F, Fut>(f: F) -> Self
    where
        V: Value,
        E: Into<BoxError>,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Expiring<V>, E>> + Send + 'static,
    {
        let future: Arc<AsyncFn<V>> = Arc::new(move |key: String| {
            let future = f(key);
            Box::pin(async move { future.await.map_err(Into::into) })
        });
        Self::erase::<V>(Call::Async(future))
    }

    /// An async generator that always succeeds. It is given the key as an owned `String`, so
    /// its future borrows nothing and can finish on its own when the caller that started it
    /// stops waiting:
    ///
    /// ```
    /// # use kvcache_core::Generator;
    /// let lengths = Generator::new_async(|key: String| async move { key.len() });
    /// ```
    pub fn new_async<V, F, Fut>(f: F) -> Self
    where
        V: Value,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = V> + Send + 'static,
    {
        Self::fallible_async(move |key: String| {
            let future = f(key);
            async move { Ok::<V, BoxError>(future.await) }
        })
    }

    /// An async generator that can fail, as [`fallible`](Generator::fallible).
    pub fn fallible_async<V, E, F, Fut>(f: F) -> Self
    where
        V: Value,
        E: Into<BoxError>,
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let future: Arc<AsyncFn<V>> = Arc::new(move |key: String| {
            let future = f(key);
            Box::pin(async move { future.await.map(Expiring::plain).map_err(Into::into) })
        });
        Self::erase::<V>(Call::Async(future))
    }

    fn erase<V: 'static>(call: Call<V>) -> Self {
        Generator {
            value_type: std::any::type_name::<V>(),
            asynchronous: matches!(call, Call::Async(_)),
            function: Arc::new(call),
        }
    }

    /// The name of the type of value it computes.
    pub fn value_type(&self) -> &'static str {
        self.value_type
    }

    /// Whether it is async.
    pub fn is_async(&self) -> bool {
        self.asynchronous
    }

    /// The typed function, if `V` is its value type.
    pub(crate) fn typed<V: 'static>(&self) -> Option<Call<V>> {
        self.function.downcast_ref::<Call<V>>().cloned()
    }
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("value_type", &self.value_type)
            .field("async", &self.asynchronous)
            .finish_non_exhaustive()
    }
}
