//! The sharded in-memory store.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use kvcache_core::{Backend, Clock, Result, Space, Store, SystemClock, expires_at};

/// Shards of an unbounded store: enough that threads rarely meet on one lock.
const SHARDS: usize = 16;
/// How many of a full shard's oldest writes are checked for expired entries before one is
/// evicted.
const EXPIRED_PROBE: usize = 8;
/// `expires_at` of an entry without expiry.
const NEVER: u64 = u64::MAX;

/// An in-process store, shared by every container that names it.
///
/// Entries are spread over shards by the hash of (container, key), each behind its own
/// read-write lock. A container decodes a value straight from the table, under a read lock.
///
/// # Eviction
///
/// With [`max_entries`](VariableBackend::max_entries) the store never holds more entries than
/// that. The bound is split evenly over the shards; when a new key arrives in a full shard, the
/// shard first drops the expired entries among its eight oldest writes and then, if it is still
/// full, evicts its entries in the order they were last written (first in, first out). Reads do not reorder entries, so a read
/// never takes a write lock. Expired entries are dropped when read, when evicted in their turn,
/// and by [`purge_expired`](Backend::purge_expired); a write never scans its shard.
///
/// Cloning it gives another handle on the same entries.
#[derive(Debug, Clone)]
pub struct VariableBackend {
    tables: Arc<Tables>,
}

/// The entries of every container.
#[derive(Debug)]
struct Tables {
    shards: Box<[RwLock<Shard>]>,
    hasher: DefaultHashBuilder,
    clock: Arc<dyn Clock>,
    shard_capacity: Option<usize>,
}

#[derive(Debug, Default)]
struct Shard {
    table: HashTable<Entry>,
    /// (hash, seq) of writes, oldest first; kept only when bounded. A record whose entry was
    /// rewritten or removed since is skipped.
    order: VecDeque<(u64, u64)>,
    next_seq: u64,
    /// Whether an entry with an expiry was ever stored here: only then are a full shard's oldest
    /// writes probed for expired entries (each probe is a look-up, likely a cache miss).
    expiring: bool,
}

#[derive(Debug)]
struct Entry {
    /// The container's length (4 bytes, little-endian), the container, then the key.
    key: Box<[u8]>,
    value: Box<[u8]>,
    expires_at: u64,
    seq: u64,
}

impl Entry {
    fn is(&self, container: &str, key: &str) -> bool {
        let (c, k) = split(&self.key);
        c == container.as_bytes() && k == key.as_bytes()
    }

    fn container_is(&self, container: &str) -> bool {
        split(&self.key).0 == container.as_bytes()
    }

    fn live(&self, now: u64) -> bool {
        now < self.expires_at
    }
}

fn join(container: &str, key: &str) -> Box<[u8]> {
    let len = u32::try_from(container.len()).unwrap_or(u32::MAX);
    let mut bytes = Vec::with_capacity(4 + container.len() + key.len());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(container.as_bytes());
    bytes.extend_from_slice(key.as_bytes());
    bytes.into_boxed_slice()
}

fn split(joined: &[u8]) -> (&[u8], &[u8]) {
    let (len, rest) = joined.split_at(4);
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    rest.split_at(len)
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
        Self::build(clock, SHARDS, None)
    }

    /// Bounds the store to `max` entries (at least 1); see the type's docs for the eviction
    /// policy. It makes a new, empty store on the same clock: call it before storing.
    #[must_use]
    pub fn max_entries(self, max: usize) -> Self {
        let max = max.max(1);
        // Small bounds get fewer shards, so that each shard holds a useful number of entries.
        let shards = (max / 64).clamp(1, SHARDS);
        let shards = 1 << shards.ilog2();
        Self::build(Arc::clone(&self.tables.clock), shards, Some(max / shards))
    }

    fn build(clock: Arc<dyn Clock>, shards: usize, shard_capacity: Option<usize>) -> Self {
        VariableBackend {
            tables: Arc::new(Tables {
                shards: (0..shards).map(|_| RwLock::default()).collect(),
                hasher: DefaultHashBuilder::default(),
                clock,
                shard_capacity,
            }),
        }
    }

    /// The number of entries held, expired ones included until they are dropped.
    pub fn len(&self) -> usize {
        self.tables
            .shards
            .iter()
            .map(|shard| read_lock(shard).table.len())
            .sum()
    }

    /// Whether it holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One container's entries: its name is all its calls need.
#[derive(Debug)]
struct Region {
    tables: Arc<Tables>,
    container: Box<str>,
}

impl Backend for VariableBackend {
    fn open(&self, container: &str) -> Result<Space> {
        Ok(Space::Memory(Arc::new(Region {
            tables: Arc::clone(&self.tables),
            container: container.into(),
        })))
    }

    fn purge_expired(&self) -> Result<()> {
        let tables = &self.tables;
        let now = tables.now();
        for shard in &tables.shards {
            write(shard).table.retain(|entry| entry.live(now));
        }
        Ok(())
    }
}

impl Tables {
    fn hash(&self, container: &str, key: &str) -> u64 {
        let mut hasher = self.hasher.build_hasher();
        container.hash(&mut hasher);
        key.hash(&mut hasher);
        hasher.finish()
    }

    fn hash_entry(&self, entry: &Entry) -> u64 {
        let (c, k) = split(&entry.key);
        // Keys are stored from `&str`, so both halves are UTF-8.
        let text = |bytes| std::str::from_utf8(bytes).unwrap_or_default();
        self.hash(text(c), text(k))
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard> {
        // The table uses the low bits of the hash; the shard the high ones.
        let index = (hash >> 32) as usize & (self.shards.len() - 1);
        &self.shards[index]
    }

    fn now(&self) -> u64 {
        self.clock.now_millis()
    }
}

fn read_lock(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    shard.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(shard: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    shard.write().unwrap_or_else(PoisonError::into_inner)
}

impl Store for Region {
    fn store(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        let (tables, container) = (&*self.tables, &*self.container);
        let hash = tables.hash(container, key);
        let expires = ttl.map_or(NEVER, |ttl| expires_at(tables.now(), ttl));
        let mut shard = write(tables.shard(hash));
        let shard = &mut *shard;
        shard.expiring |= expires != NEVER;
        let seq = shard.next_seq;
        shard.next_seq += 1;
        if let Some(entry) = shard.table.find_mut(hash, |e| e.is(container, key)) {
            entry.value = value.into();
            entry.expires_at = expires;
            entry.seq = seq;
        } else {
            if let Some(capacity) = tables.shard_capacity {
                if shard.expiring && shard.table.len() >= capacity {
                    // Expired entries among the oldest few writes go first; then the oldest
                    // write, expired or not. A full shard never scans itself.
                    let now = tables.now();
                    let Shard { table, order, .. } = &mut *shard;
                    for &(old_hash, old_seq) in order.iter().take(EXPIRED_PROBE) {
                        if let Ok(entry) =
                            table.find_entry(old_hash, |e| e.seq == old_seq && !e.live(now))
                        {
                            entry.remove();
                        }
                    }
                }
                while shard.table.len() >= capacity {
                    let Some((old_hash, old_seq)) = shard.order.pop_front() else {
                        break;
                    };
                    if let Ok(entry) = shard.table.find_entry(old_hash, |e| e.seq == old_seq) {
                        entry.remove();
                    }
                }
            }
            let entry = Entry {
                key: join(container, key),
                value: value.into(),
                expires_at: expires,
                seq,
            };
            shard
                .table
                .insert_unique(hash, entry, |e| tables.hash_entry(e));
        }
        if tables.shard_capacity.is_some() {
            shard.order.push_back((hash, seq));
            if shard.order.len() > 2 * shard.table.len() + 16 {
                // Too many records of rewritten or removed entries: rebuild from the table.
                let mut live: Vec<(u64, u64)> = shard
                    .table
                    .iter()
                    .map(|e| (e.seq, tables.hash_entry(e)))
                    .collect();
                live.sort_unstable();
                shard.order = live.into_iter().map(|(seq, hash)| (hash, seq)).collect();
            }
        }
        Ok(())
    }

    fn retrieve(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut value = None;
        self.retrieve_with(key, &mut |bytes| value = Some(bytes.to_vec()))?;
        Ok(value)
    }

    fn retrieve_with(&self, key: &str, read: &mut dyn FnMut(&[u8])) -> Result<bool> {
        let (tables, container) = (&*self.tables, &*self.container);
        let hash = tables.hash(container, key);
        let lock = tables.shard(hash);
        let now;
        {
            let shard = read_lock(lock);
            let Some(entry) = shard.table.find(hash, |e| e.is(container, key)) else {
                return Ok(false);
            };
            // The clock is read only for entries that can expire: it costs as much as the look-up.
            if entry.expires_at == NEVER {
                read(&entry.value);
                return Ok(true);
            }
            now = tables.now();
            if entry.live(now) {
                read(&entry.value);
                return Ok(true);
            }
        }
        // Expired: drop it, unless it was rewritten in between.
        let mut shard = write(lock);
        if let Ok(entry) = shard
            .table
            .find_entry(hash, |e| e.is(container, key) && !e.live(now))
        {
            entry.remove();
        }
        Ok(false)
    }

    fn invalidate(&self, key: &str) -> Result<()> {
        let (tables, container) = (&*self.tables, &*self.container);
        let hash = tables.hash(container, key);
        let mut shard = write(tables.shard(hash));
        if let Ok(entry) = shard.table.find_entry(hash, |e| e.is(container, key)) {
            entry.remove();
        }
        Ok(())
    }

    fn clear(&self) -> Result<()> {
        for shard in &self.tables.shards {
            write(shard)
                .table
                .retain(|entry| !entry.container_is(&self.container));
        }
        Ok(())
    }
}
