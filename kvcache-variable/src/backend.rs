//! The in-memory store: sharded tables of decoded values, one policy over all of them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::{DefaultHashBuilder, HashTable};
use kvcache_core::{
    Backend, Clock, Evictions, Held, MemoryStore, Result, Space, SystemClock, expires_at,
};

use crate::policy::{Bounds, NodeId, Policy};
use crate::reads::Reads;

/// Shards of the tables: enough that threads rarely meet on one lock.
const SHARDS: usize = 16;
/// `expires_at` of an entry without expiry.
const NEVER: u64 = u64::MAX;
/// Expired entries a write or a drain of reads reclaims at most: more than one, so that
/// reclaiming keeps ahead of a stream of new keys.
const EXPIRE_BUDGET: usize = 8;

/// An in-process store of decoded values, shared by every container that names it.
///
/// A hit hands out a clone of the value (containers' values are `Clone`), never decodes it.
/// Entries are spread over shards by the hash of (container, key), each behind its own
/// read-write lock; a read takes only its shard's read lock.
///
/// # Bounds and eviction
///
/// [`max_entries`](VariableBackend::max_entries) and [`max_bytes`](VariableBackend::max_bytes)
/// bound the whole store, across its containers; both may be set. An entry weighs its key's
/// length plus its value's encoded length (what a byte store would hold), not its size in the
/// heap. The bound holds at every moment: the entries a write evicts are gone before its own
/// entry is in, so no reader ever sees the store over it.
///
/// What goes is chosen by W-TinyLFU with an adaptive window, as Caffeine does: a new entry
/// enters a small LRU window; pushed out of it, it is admitted to the main segmented LRU only
/// if a frequency sketch says it is asked for more often than main's victim; a hill climber
/// tunes the window's share from the hit ratio. Reads are recorded in lossy buffers and applied
/// to the policy by the next write (or by the reader that fills a buffer), so a read never
/// waits for the policy's lock; a read recorded while the buffers are full is dropped.
///
/// # Expiry
///
/// An expired entry is a miss at once. It is reclaimed without anyone asking: each write, and
/// each drain of the read buffers, drops up to eight of the entries that expired first, so
/// memory stays bounded under a stream of new keys. [`purge_expired`](Backend::purge_expired)
/// drops them all.
///
/// Cloning it gives another handle on the same entries.
#[derive(Debug, Clone)]
pub struct VariableBackend {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shards: Box<[RwLock<HashTable<Entry>>]>,
    hasher: DefaultHashBuilder,
    clock: Arc<dyn Clock>,
    bounded: bool,
    reads: Reads,
    state: Mutex<State>,
    containers: Mutex<HashMap<Box<str>, Opened>>,
}

/// A container opened on the store: its number in entries, and its eviction counters.
type Opened = (u32, Arc<Evicted>);

/// What writers change under one lock: the policy, the expiry queue, the counters.
#[derive(Debug)]
struct State {
    policy: Policy,
    /// (expires at, node, key hash) of entries with an expiry, soonest first. A record whose
    /// entry was rewritten or removed since is skipped when it comes due.
    timers: BinaryHeap<Reverse<(u64, NodeId, u64)>>,
    /// Eviction counters, by container number.
    evicted: Vec<Arc<Evicted>>,
}

#[derive(Debug, Default)]
struct Evicted {
    size: AtomicU64,
    expired: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    container: u32,
    node: NodeId,
    key: Box<str>,
    expires_at: u64,
    value: Held,
}

impl Entry {
    fn is(&self, container: u32, key: &str) -> bool {
        self.container == container && &*self.key == key
    }
}

impl Default for VariableBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl VariableBackend {
    /// An empty, unbounded store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty, unbounded store that reads expiry against `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::build(clock, Bounds::default())
    }

    /// Bounds the store to `max` entries (at least 1). It makes a new, empty store with the
    /// other settings kept: call it before storing.
    #[must_use]
    pub fn max_entries(self, max: u64) -> Self {
        let bounds = Bounds {
            entries: Some(max.max(1)),
            ..self.bounds()
        };
        Self::build(Arc::clone(&self.inner.clock), bounds)
    }

    /// Bounds the store to `max` bytes of keys and encoded values (at least 1). It makes a new,
    /// empty store with the other settings kept: call it before storing.
    #[must_use]
    pub fn max_bytes(self, max: u64) -> Self {
        let bounds = Bounds {
            bytes: Some(max.max(1)),
            ..self.bounds()
        };
        Self::build(Arc::clone(&self.inner.clock), bounds)
    }

    fn bounds(&self) -> Bounds {
        self.inner.state().policy.bounds()
    }

    fn build(clock: Arc<dyn Clock>, bounds: Bounds) -> Self {
        VariableBackend {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
                hasher: DefaultHashBuilder::default(),
                clock,
                bounded: bounds.is_bounded(),
                reads: Reads::default(),
                state: Mutex::new(State {
                    policy: Policy::new(bounds),
                    timers: BinaryHeap::new(),
                    evicted: Vec::new(),
                }),
                containers: Mutex::default(),
            }),
        }
    }

    /// The number of entries held, expired ones included until they are reclaimed.
    pub fn len(&self) -> usize {
        usize::try_from(self.inner.state().policy.entries()).unwrap_or(usize::MAX)
    }

    /// Whether it holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The weight of the entries held: their keys' and encoded values' lengths.
    pub fn bytes(&self) -> u64 {
        self.inner.state().policy.bytes()
    }
}

/// One container's entries.
#[derive(Debug)]
struct Region {
    inner: Arc<Inner>,
    container: u32,
    evicted: Arc<Evicted>,
}

impl Backend for VariableBackend {
    fn open(&self, container: &str) -> Result<Space> {
        let mut containers = lock(&self.inner.containers);
        let next = u32::try_from(containers.len()).unwrap_or(u32::MAX);
        let (number, evicted) = containers
            .entry(container.into())
            .or_insert_with(|| {
                let evicted = Arc::<Evicted>::default();
                self.inner.state().evicted.push(Arc::clone(&evicted));
                (next, evicted)
            })
            .clone();
        Ok(Space::Memory(Arc::new(Region {
            inner: Arc::clone(&self.inner),
            container: number,
            evicted,
        })))
    }

    fn purge_expired(&self) -> Result<()> {
        let mut state = self.inner.state();
        self.inner.expire(&mut state, usize::MAX);
        Ok(())
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn hash(&self, container: u32, key: &str) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        container.hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    }

    fn rehash(&self) -> impl Fn(&Entry) -> u64 + '_ {
        |entry| self.hash(entry.container, &entry.key)
    }

    fn shard(&self, hash: u64) -> &RwLock<HashTable<Entry>> {
        // The table uses the low bits of the hash; the shard the high ones.
        &self.shards[(hash >> 32) as usize % SHARDS]
    }

    fn now(&self) -> u64 {
        self.clock.now_millis()
    }

    /// Applies the recorded reads to the policy, then reclaims a few expired entries.
    fn drain(&self, state: &mut State) {
        if self.bounded {
            let policy = &mut state.policy;
            self.reads.drain(|token| {
                let node = NodeId::try_from((token >> 32) - 1).unwrap_or(NodeId::MAX);
                if policy.is(node, token as u32) {
                    policy.touch(node);
                }
            });
        }
        self.expire(state, EXPIRE_BUDGET);
    }

    /// Removes node `node`'s entry (of key hash `hash`) and forgets the node; `true` if it was
    /// there. With `due`, only if it still expires then: a timer came due.
    fn remove_node(&self, state: &mut State, node: NodeId, hash: u64, due: Option<u64>) -> bool {
        let removed = {
            let mut shard = write(self.shard(hash));
            match shard.find_entry(hash, |e| {
                e.node == node && due.is_none_or(|expires| e.expires_at == expires)
            }) {
                Ok(entry) => Some(entry.remove().0.container),
                Err(_) => None,
            }
        };
        let Some(container) = removed else {
            return false;
        };
        state.policy.remove(node);
        if let Some(evicted) = state.evicted.get(container as usize) {
            let counter = match due {
                Some(_) => &evicted.expired,
                None => &evicted.size,
            };
            counter.fetch_add(1, Relaxed);
        }
        true
    }

    /// Reclaims up to `budget` expired entries, soonest expired first.
    fn expire(&self, state: &mut State, budget: usize) {
        if state.timers.is_empty() {
            return;
        }
        let now = self.now();
        for _ in 0..budget {
            match state.timers.peek() {
                Some(&Reverse((expires, node, hash))) if expires <= now => {
                    state.timers.pop();
                    self.remove_node(state, node, hash, Some(expires));
                }
                _ => break,
            }
        }
        // Records of rewritten or removed entries pile up with rewrites: rebuild from the
        // tables when they outnumber the live entries.
        let live = usize::try_from(state.policy.entries()).unwrap_or(usize::MAX);
        if state.timers.len() > 2 * live + 1024 {
            let mut timers = Vec::new();
            for shard in &self.shards {
                let shard = read(shard);
                timers.extend(
                    shard
                        .iter()
                        .filter(|e| e.expires_at != NEVER)
                        .map(|e| Reverse((e.expires_at, e.node, self.hash(e.container, &e.key)))),
                );
            }
            state.timers = BinaryHeap::from(timers);
        }
    }
}

impl MemoryStore for Region {
    fn insert(&self, key: &str, value: Held, weight: u64, ttl: Option<Duration>) {
        let inner = &*self.inner;
        let hash = inner.hash(self.container, key);
        let expires = ttl.map_or(NEVER, |ttl| expires_at(inner.now(), ttl));
        let mut state = inner.state();
        let state = &mut *state;
        inner.drain(state);
        let existing = read(inner.shard(hash))
            .find(hash, |e| e.is(self.container, key))
            .map(|e| e.node);
        let node = match existing {
            Some(node) => {
                state.policy.reweigh(node, weight);
                node
            }
            None => state.policy.add(hash, weight),
        };
        // Make room before the entry goes in: no reader sees the store over its bound.
        let mut admitted = true;
        while let Some(victim) = state.policy.victim() {
            if victim == node {
                admitted = false;
                if existing.is_none() {
                    // Refused admission: as good as evicted.
                    self.evicted.size.fetch_add(1, Relaxed);
                    state.policy.remove(node);
                } else if !inner.remove_node(state, node, hash, None) {
                    state.policy.remove(node);
                }
                continue;
            }
            let victim_hash = state.policy.hash(victim);
            if !inner.remove_node(state, victim, victim_hash, None) {
                state.policy.remove(victim);
            }
        }
        if !admitted {
            return;
        }
        {
            let mut shard = write(inner.shard(hash));
            match shard.find_mut(hash, |e| e.node == node && e.is(self.container, key)) {
                Some(entry) => {
                    entry.value = value;
                    entry.expires_at = expires;
                }
                None => {
                    let entry = Entry {
                        container: self.container,
                        node,
                        key: key.into(),
                        expires_at: expires,
                        value,
                    };
                    shard.insert_unique(hash, entry, inner.rehash());
                }
            }
        }
        if expires != NEVER {
            state.timers.push(Reverse((expires, node, hash)));
        }
    }

    fn get_with(&self, key: &str, read_value: &mut dyn FnMut(&Held)) -> bool {
        let inner = &*self.inner;
        let hash = inner.hash(self.container, key);
        let node = {
            let shard = read(inner.shard(hash));
            let Some(entry) = shard.find(hash, |e| e.is(self.container, key)) else {
                return false;
            };
            // The clock is read only for entries that can expire: it costs as much as the
            // look-up.
            if entry.expires_at != NEVER && entry.expires_at <= inner.now() {
                return false;
            }
            read_value(&entry.value);
            entry.node
        };
        if inner.bounded
            && inner
                .reads
                .record((u64::from(node) + 1) << 32 | (hash & 0xffff_ffff))
            && let Ok(mut state) = inner.state.try_lock()
        {
            inner.drain(&mut state);
        }
        true
    }

    fn remove(&self, key: &str) {
        let inner = &*self.inner;
        let hash = inner.hash(self.container, key);
        let mut state = inner.state();
        let removed = write(inner.shard(hash))
            .find_entry(hash, |e| e.is(self.container, key))
            .ok()
            .map(|entry| entry.remove().0.node);
        if let Some(node) = removed {
            state.policy.remove(node);
        }
    }

    fn clear(&self) {
        let inner = &*self.inner;
        let mut state = inner.state();
        for shard in &inner.shards {
            write(shard).retain(|entry| {
                let keep = entry.container != self.container;
                if !keep {
                    state.policy.remove(entry.node);
                }
                keep
            });
        }
    }

    fn evictions(&self) -> Evictions {
        Evictions::new(
            self.evicted.size.load(Relaxed),
            self.evicted.expired.load(Relaxed),
        )
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
