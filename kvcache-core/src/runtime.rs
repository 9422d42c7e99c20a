//! kvcache's own tokio runtime: where native async stores keep their connections, and where the
//! synchronous path drives their futures.

use std::cell::Cell;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{Error, Result};

/// The runtime kvcache starts for itself, on first use: one worker thread named `kvcache`.
///
/// Native async stores (Redis) open their connections on it, so that the tasks driving those
/// connections outlive any runtime of the application's (a `#[tokio::test]`'s, or one built for
/// a single request); tasks of every runtime then share those connections. The synchronous path
/// of a container whose store is async sends each call here and waits for its answer, so it
/// needs no runtime of the caller's and works inside one too.
///
/// # Errors
///
/// [`Error::Backend`] when the operating system refuses the thread or the I/O driver.
pub fn runtime() -> Result<&'static Handle> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("kvcache")
                .on_thread_start(|| ON_KVCACHE_RUNTIME.set(true))
                .enable_all()
                .build()
                .map_err(|error| error.to_string())
        })
        .as_ref()
        .map(Runtime::handle)
        .map_err(|error| Error::backend("kvcache", "starting kvcache's runtime", error.clone()))
}

thread_local! {
    /// Whether this thread is one of kvcache's runtime's.
    static ON_KVCACHE_RUNTIME: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is one of kvcache's runtime's: blocking it on a future that runs
/// there would wait forever.
pub fn on_kvcache_runtime() -> bool {
    ON_KVCACHE_RUNTIME.get()
}

/// The runtime of the calling task, or kvcache's own when the caller runs on none.
pub(crate) fn current() -> Result<Handle> {
    match Handle::try_current() {
        Ok(handle) => Ok(handle),
        Err(_) => runtime().cloned(),
    }
}

/// Runs `future` on kvcache's runtime and blocks the calling thread until it ends: how the
/// synchronous path drives async stores, and how such a store can connect when it is opened
/// (from any thread, a task of another runtime's included). `None` when it panicked (the panic
/// has been reported by the panic hook).
///
/// # Errors
///
/// [`Error::Backend`] when called from kvcache's own runtime (a synchronous container call made
/// inside an async generator driven for a synchronous caller), where it would wait forever.
pub fn block_on<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> Result<Option<T>> {
    if on_kvcache_runtime() {
        return Err(Error::backend(
            "kvcache",
            "a synchronous call from inside kvcache's own runtime",
            "it would wait forever for the runtime it blocks: call the AsyncContainer instead",
        ));
    }
    let (sender, receiver) = mpsc::sync_channel(1);
    runtime()?.spawn(async move {
        // The receiver is gone only if the caller's thread is; nothing is left to tell.
        let _ = sender.send(future.await);
    });
    Ok(receiver.recv().ok())
}
