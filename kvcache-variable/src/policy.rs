//! Which entry a full store evicts: W-TinyLFU with an adaptive window, as Caffeine's.
//!
//! New entries enter a small LRU *window*. An entry pushed out of the window is a candidate for
//! the *main* space, a segmented LRU (*probation*, then *protected* once read again): when the
//! store is full, the candidate is admitted only if the frequency sketch says it was asked for
//! more often than main's victim, which is evicted instead. The window's share of the bound is
//! tuned by a hill climber: every sample of accesses, it moves the share a step in the
//! direction that raised the hit ratio, and back when it fell, so recency-heavy workloads get a
//! large window (LRU-like) and frequency-heavy ones a small one (LFU-like).
//!
//! Entries are nodes in a slab, linked into their segment's list by index; the policy knows
//! them by node and key hash only, and the store removes the entries it names.

use crate::sketch::Sketch;

/// A node's index in the slab.
pub(crate) type NodeId = u32;
const NIL: NodeId = NodeId::MAX;

/// The window's share of the bound at first. Caffeine starts at 1%; 20% measured better on
/// short traces, where the climber has few samples to find its way (web07 @ 2,000: 57.8% hit
/// ratio against 53.3%), and no worse on long ones (BENCHMARKS.md).
const INITIAL_WINDOW: f64 = 0.20;
/// The climber's sample, in sketch samples (Caffeine's is one): a longer sample is a less
/// noisy hit ratio, and a noisy one sends the climber the wrong way (orm-night @ 1,000: 67.2%
/// against 66.6%).
const CLIMB_SAMPLES: usize = 4;
/// Protected's share of main.
const PROTECTED: f64 = 0.80;
/// The hill climber's first step, as a share of the bound.
const STEP: f64 = 0.0625;
/// A change of hit ratio this large restarts the climb with a full step.
const RESTART: f64 = 0.05;
/// How much smaller each step is than the last while the hit ratio changes little.
const DECAY: f64 = 0.98;
/// A candidate at least this frequent is admitted now and then even when it loses, so that an
/// attacker cannot pin main with a flood of one hot key's collisions (Caffeine's defence).
const HASH_DOS: u64 = 6;

/// The bound, in entries, bytes or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) entries: Option<u64>,
    pub(crate) bytes: Option<u64>,
}

impl Bounds {
    pub(crate) fn is_bounded(&self) -> bool {
        self.entries.is_some() || self.bytes.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Window,
    Probation,
    Protected,
    Free,
}

#[derive(Debug, Clone)]
struct Node {
    hash: u64,
    weight: u64,
    prev: NodeId,
    next: NodeId,
    segment: Segment,
}

/// An LRU list of nodes: `head` the least recently used, `tail` the most.
#[derive(Debug, Clone, Copy)]
struct List {
    head: NodeId,
    tail: NodeId,
    entries: u64,
    bytes: u64,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            entries: 0,
            bytes: 0,
        }
    }
}

/// The policy's state: nodes, segments, sketch and climber.
#[derive(Debug)]
pub(crate) struct Policy {
    bounds: Bounds,
    nodes: Vec<Node>,
    free: Vec<NodeId>,
    window: List,
    probation: List,
    protected: List,
    sketch: Sketch,
    /// The window's share of the bound, tuned by the climber.
    window_share: f64,
    step: f64,
    previous_hit_ratio: f64,
    hits: usize,
    misses: usize,
    random: u64,
    /// A node just added or rewritten heavier than the whole bound in bytes: it goes first,
    /// alone, instead of emptying the store on its way out.
    oversized: Option<NodeId>,
}

impl Policy {
    pub(crate) fn new(bounds: Bounds) -> Self {
        let expected = bounds.entries.map_or(1024, |max| max.min(1 << 24) as usize);
        Policy {
            bounds,
            nodes: Vec::new(),
            free: Vec::new(),
            window: List::default(),
            probation: List::default(),
            protected: List::default(),
            sketch: Sketch::new(if bounds.is_bounded() { expected } else { 0 }),
            window_share: INITIAL_WINDOW,
            step: -STEP,
            previous_hit_ratio: 0.0,
            hits: 0,
            misses: 0,
            random: 0x2545_f491_4f6c_dd1d,
            oversized: None,
        }
    }

    pub(crate) fn bounds(&self) -> Bounds {
        self.bounds
    }

    /// Live entries.
    pub(crate) fn entries(&self) -> u64 {
        self.window.entries + self.probation.entries + self.protected.entries
    }

    /// Their weight.
    pub(crate) fn bytes(&self) -> u64 {
        self.window.bytes + self.probation.bytes + self.protected.bytes
    }

    /// The key hash of live node `id`.
    pub(crate) fn hash(&self, id: NodeId) -> u64 {
        self.nodes[id as usize].hash
    }

    /// Whether `id` is a live node of key hash `hash`: a read recorded before its entry went is
    /// not applied to the node that took its place.
    pub(crate) fn is(&self, id: NodeId, hash: u32) -> bool {
        self.nodes
            .get(id as usize)
            .is_some_and(|node| node.segment != Segment::Free && node.hash as u32 == hash)
    }

    /// A new entry of key hash `hash` and `weight`: a miss, then a write.
    pub(crate) fn add(&mut self, hash: u64, weight: u64) -> NodeId {
        let node = Node {
            hash,
            weight,
            prev: NIL,
            next: NIL,
            segment: Segment::Window,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = node;
                id
            }
            None => {
                self.nodes.push(node);
                NodeId::try_from(self.nodes.len() - 1).unwrap_or(NIL)
            }
        };
        self.push_tail(id);
        self.check_weight(id);
        if self.bounds.is_bounded() {
            self.grow_sketch();
            self.sketch.increment(hash);
            self.misses += 1;
            self.climb();
        }
        id
    }

    /// Live node `id`'s entry was rewritten with `weight`: an access.
    pub(crate) fn reweigh(&mut self, id: NodeId, weight: u64) {
        let Node {
            segment,
            weight: old,
            ..
        } = self.nodes[id as usize];
        let list = self.list(segment);
        list.bytes = list.bytes - old + weight;
        self.nodes[id as usize].weight = weight;
        self.check_weight(id);
        self.touch(id);
    }

    fn check_weight(&mut self, id: NodeId) {
        if self
            .bounds
            .bytes
            .is_some_and(|max| self.nodes[id as usize].weight > max)
        {
            self.oversized = Some(id);
        }
    }

    /// Live node `id`'s entry was read.
    pub(crate) fn touch(&mut self, id: NodeId) {
        if !self.bounds.is_bounded() {
            return;
        }
        let node = &self.nodes[id as usize];
        let hash = node.hash;
        match node.segment {
            Segment::Window | Segment::Protected => self.move_to_tail(id),
            Segment::Probation => {
                self.unlink(id);
                self.nodes[id as usize].segment = Segment::Protected;
                self.push_tail(id);
                self.demote_protected();
            }
            Segment::Free => return,
        }
        self.sketch.increment(hash);
        self.hits += 1;
        self.climb();
    }

    /// Forgets live node `id`: its entry was removed, evicted or expired.
    pub(crate) fn remove(&mut self, id: NodeId) {
        if self.nodes[id as usize].segment == Segment::Free {
            return;
        }
        self.unlink(id);
        self.nodes[id as usize].segment = Segment::Free;
        self.free.push(id);
    }

    /// The next node to evict to bring the store within its bound, or `None` once it is within.
    /// The caller removes the node's entry and then the node, with [`remove`](Policy::remove).
    pub(crate) fn victim(&mut self) -> Option<NodeId> {
        if let Some(id) = self.oversized.take()
            && self.nodes[id as usize].segment != Segment::Free
        {
            return Some(id);
        }
        if self.over() {
            if self.window.head != NIL && self.window_over() {
                // The window's oldest is a candidate for main, against main's victim.
                let candidate = self.window.head;
                let Some(victim) = self.main_victim() else {
                    return Some(candidate);
                };
                if self.admit(candidate, victim) {
                    self.unlink(candidate);
                    self.nodes[candidate as usize].segment = Segment::Probation;
                    self.push_tail(candidate);
                    return Some(victim);
                }
                return Some(candidate);
            }
            return self
                .main_victim()
                .or((self.window.head != NIL).then_some(self.window.head));
        }
        // Within the bound: the window's overflow moves to main without a contest.
        while self.window.head != NIL && self.window_over() {
            let id = self.window.head;
            self.unlink(id);
            self.nodes[id as usize].segment = Segment::Probation;
            self.push_tail(id);
        }
        None
    }

    fn main_victim(&self) -> Option<NodeId> {
        [self.probation.head, self.protected.head]
            .into_iter()
            .find(|&id| id != NIL)
    }

    fn admit(&mut self, candidate: NodeId, victim: NodeId) -> bool {
        let candidate = self.sketch.frequency(self.nodes[candidate as usize].hash);
        let victim = self.sketch.frequency(self.nodes[victim as usize].hash);
        if candidate > victim {
            return true;
        }
        candidate >= HASH_DOS && self.next_random() & 127 == 0
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: admission's coin needs no more.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    fn over(&self) -> bool {
        self.bounds.entries.is_some_and(|max| self.entries() > max)
            || self.bounds.bytes.is_some_and(|max| self.bytes() > max)
    }

    fn window_over(&self) -> bool {
        exceeds(self.window, self.bounds, self.window_share)
    }

    /// Moves protected's oldest back to probation while protected is over its share.
    fn demote_protected(&mut self) {
        let share = (1.0 - self.window_share) * PROTECTED;
        while self.protected.head != NIL && exceeds(self.protected, self.bounds, share) {
            let id = self.protected.head;
            self.unlink(id);
            self.nodes[id as usize].segment = Segment::Probation;
            self.push_tail(id);
        }
    }

    /// After each sample of accesses, moves the window's share a step up or down the hill of
    /// the hit ratio.
    #[inline]
    fn climb(&mut self) {
        let requests = self.hits + self.misses;
        if requests >= CLIMB_SAMPLES * self.sketch.sample_size() {
            self.step_window(requests);
        }
    }

    #[cold]
    fn step_window(&mut self, requests: usize) {
        let hit_ratio = self.hits as f64 / requests as f64;
        let change = hit_ratio - self.previous_hit_ratio;
        let amount = if change >= 0.0 { self.step } else { -self.step };
        self.step = if change.abs() >= RESTART {
            STEP.copysign(amount)
        } else {
            DECAY * amount
        };
        self.previous_hit_ratio = hit_ratio;
        self.hits = 0;
        self.misses = 0;
        self.window_share = (self.window_share + amount).clamp(0.0, 1.0);
        self.resize_window();
    }

    /// Moves entries between the window and main until each is within its share.
    fn resize_window(&mut self) {
        // A smaller window: its oldest go to probation.
        while self.window.head != NIL && self.window_over() {
            let id = self.window.head;
            self.unlink(id);
            self.nodes[id as usize].segment = Segment::Probation;
            self.push_tail(id);
        }
        // A larger one: main's oldest come into it while they fit.
        while let Some(id) = self.main_victim() {
            let mut grown = self.window;
            grown.entries += 1;
            grown.bytes += self.nodes[id as usize].weight;
            if exceeds(grown, self.bounds, self.window_share) {
                break;
            }
            self.unlink(id);
            self.nodes[id as usize].segment = Segment::Window;
            self.push_tail(id);
        }
        self.demote_protected();
    }

    /// A sketch too small for the entries held (a bound in bytes only) is replaced by a larger
    /// one, as Caffeine does.
    fn grow_sketch(&mut self) {
        let entries = self.entries() as usize;
        if entries > self.sketch.capacity() {
            self.sketch = Sketch::new(entries.saturating_mul(2));
        }
    }

    fn list(&mut self, segment: Segment) -> &mut List {
        match segment {
            Segment::Window | Segment::Free => &mut self.window,
            Segment::Probation => &mut self.probation,
            Segment::Protected => &mut self.protected,
        }
    }

    /// Moves `id` to the most recently used end of its own list: no counts change.
    fn move_to_tail(&mut self, id: NodeId) {
        let Node {
            prev,
            next,
            segment,
            ..
        } = self.nodes[id as usize];
        if next == NIL {
            return; // already the tail
        }
        self.nodes[next as usize].prev = prev;
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        let list = self.list(segment);
        if list.head == id {
            list.head = next;
        }
        let old_tail = list.tail;
        list.tail = id;
        self.nodes[old_tail as usize].next = id;
        let node = &mut self.nodes[id as usize];
        node.prev = old_tail;
        node.next = NIL;
    }

    fn push_tail(&mut self, id: NodeId) {
        let (segment, weight) = {
            let node = &self.nodes[id as usize];
            (node.segment, node.weight)
        };
        let list = self.list(segment);
        let old_tail = list.tail;
        list.tail = id;
        if list.head == NIL {
            list.head = id;
        }
        list.entries += 1;
        list.bytes += weight;
        if old_tail != NIL {
            self.nodes[old_tail as usize].next = id;
        }
        let node = &mut self.nodes[id as usize];
        node.prev = old_tail;
        node.next = NIL;
    }

    fn unlink(&mut self, id: NodeId) {
        let Node {
            prev,
            next,
            segment,
            weight,
            ..
        } = self.nodes[id as usize];
        if segment == Segment::Free {
            return;
        }
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        let list = self.list(segment);
        if list.head == id {
            list.head = next;
        }
        if list.tail == id {
            list.tail = prev;
        }
        list.entries -= 1;
        list.bytes -= weight;
    }
}

/// Whether `list` holds more than `share` of the bound, in entries or in bytes.
fn exceeds(list: List, bounds: Bounds, share: f64) -> bool {
    let over =
        |held: u64, max: Option<u64>| max.is_some_and(|max| held as f64 > max as f64 * share);
    over(list.entries, bounds.entries) || over(list.bytes, bounds.bytes)
}

#[cfg(test)]
mod tests {
    use super::{Bounds, Policy};

    fn bounded(entries: u64) -> Policy {
        Policy::new(Bounds {
            entries: Some(entries),
            bytes: None,
        })
    }

    /// Adds `hash`, evicting what the policy names; returns the victims' hashes.
    fn add(policy: &mut Policy, hash: u64, weight: u64) -> Vec<u64> {
        policy.add(hash, weight);
        let mut evicted = Vec::new();
        while let Some(victim) = policy.victim() {
            evicted.push(policy.hash(victim));
            policy.remove(victim);
        }
        evicted
    }

    #[test]
    fn never_holds_more_than_its_bound() {
        let mut policy = bounded(100);
        for hash in 0..10_000u64 {
            add(&mut policy, hash.wrapping_mul(0x9e37_79b9_7f4a_7c15), 1);
            assert!(policy.entries() <= 100);
        }
        assert_eq!(policy.entries(), 100);
    }

    #[test]
    fn bounds_bytes_too() {
        let mut policy = Policy::new(Bounds {
            entries: Some(1_000),
            bytes: Some(10_000),
        });
        for hash in 0..5_000u64 {
            add(&mut policy, hash, 1 + hash % 200);
            assert!(policy.bytes() <= 10_000, "{}", policy.bytes());
            assert!(policy.entries() <= 1_000);
        }
    }

    #[test]
    fn keeps_a_frequent_key_through_a_scan() {
        let mut policy = bounded(50);
        let hot: Vec<u64> = (1_000_000..1_000_010).collect();
        let mut ids = Vec::new();
        for &hash in &hot {
            ids.push(policy.add(hash, 1));
        }
        for _ in 0..10 {
            for &id in &ids {
                policy.touch(id);
            }
        }
        // A scan of one-hit keys shorter than the sketch's sample (640 here): the hot keys'
        // counts have not aged yet.
        let mut evicted = Vec::new();
        for hash in 0..500u64 {
            evicted.extend(add(&mut policy, hash, 1));
        }
        assert_eq!(evicted.len(), 460);
        assert!(hot.iter().all(|hash| !evicted.contains(hash)));
    }

    #[test]
    fn an_entry_larger_than_the_bound_is_evicted_at_once() {
        let mut policy = Policy::new(Bounds {
            entries: None,
            bytes: Some(100),
        });
        add(&mut policy, 1, 10);
        assert_eq!(add(&mut policy, 2, 1_000), vec![2]);
        assert_eq!(policy.bytes(), 10);
    }
}
