//! What the file backend's tests share.

use std::sync::Arc;

use kvcache_core::{Backend, Store};

/// The synchronous store of `container` on `backend`.
pub(crate) fn store(backend: &dyn Backend, container: &str) -> Arc<dyn Store> {
    backend
        .open(container)
        .unwrap_or_else(|error| panic!("open({container:?}): {error}"))
        .sync_store()
}
