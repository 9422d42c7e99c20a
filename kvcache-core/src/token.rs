//! Lease tokens: unique across the processes that share a store, so that no process releases
//! another's lease.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A token no other lease, in this process or another, has: this process's random seed (from
/// the operating system's randomness, through `RandomState`), its id, and a counter.
pub(crate) fn new() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        RandomState::new().hash_one((std::process::id(), nanos))
    });
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{seed:016x}-{:x}-{count:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_differ() {
        let (a, b) = (super::new(), super::new());
        assert_ne!(a, b);
        assert_eq!(
            a.split('-').next(),
            b.split('-').next(),
            "one seed per process"
        );
    }
}
