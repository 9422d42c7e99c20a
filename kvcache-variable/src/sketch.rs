//! How often keys were asked for, recently: a count-min sketch of 4-bit counters that halves
//! itself every few accesses per entry, as Caffeine's `FrequencySketch`.

/// Seeds of the four hash functions (Caffeine's).
const SEEDS: [u64; 4] = [
    0xc3a5_c85c_97cb_3127,
    0xb492_b66f_be98_f273,
    0x9ae1_6a3b_2f90_404f,
    0xcbf2_9ce4_8422_2325,
];
/// The most a 4-bit counter holds.
const MAX: u64 = 15;

/// The estimated frequency of keys, by hash.
#[derive(Debug)]
pub(crate) struct Sketch {
    /// Sixteen 4-bit counters a word.
    table: Vec<u64>,
    /// Increments since the last halving.
    additions: usize,
    /// Increments between halvings: ten per counter word.
    sample_size: usize,
}

impl Sketch {
    /// A sketch for about `entries` entries.
    pub(crate) fn new(entries: usize) -> Self {
        let words = entries.clamp(16, 1 << 30).next_power_of_two();
        Sketch {
            table: vec![0; words],
            additions: 0,
            sample_size: 10 * words,
        }
    }

    /// How many entries it is sized for.
    pub(crate) fn capacity(&self) -> usize {
        self.table.len()
    }

    /// The number of accesses between halvings: also the hill climber's sample.
    pub(crate) fn sample_size(&self) -> usize {
        self.sample_size
    }

    /// The estimated number of recent accesses of `hash`, at most 15.
    pub(crate) fn frequency(&self, hash: u64) -> u64 {
        let start = (hash & 3) << 2;
        (0..4)
            .map(|i| {
                let word = self.table[self.index(hash, i)];
                (word >> ((start + i as u64) << 2)) & MAX
            })
            .min()
            .unwrap_or(0)
    }

    /// Counts an access of `hash`.
    pub(crate) fn increment(&mut self, hash: u64) {
        let start = (hash & 3) << 2;
        let mut added = false;
        for i in 0..4 {
            let index = self.index(hash, i);
            let offset = (start + i as u64) << 2;
            if (self.table[index] >> offset) & MAX < MAX {
                self.table[index] += 1 << offset;
                added = true;
            }
        }
        if added {
            self.additions += 1;
            if self.additions >= self.sample_size {
                self.halve();
            }
        }
    }

    /// Halves every counter, so that old popularity fades.
    fn halve(&mut self) {
        let mut odd = 0;
        for word in &mut self.table {
            odd += (*word & 0x1111_1111_1111_1111).count_ones() as usize;
            *word = (*word >> 1) & 0x7777_7777_7777_7777;
        }
        self.additions = (self.additions - odd / 4) / 2;
    }

    fn index(&self, hash: u64, i: usize) -> usize {
        let mut h = hash.wrapping_add(SEEDS[i]).wrapping_mul(SEEDS[i]);
        h = h.wrapping_add(h >> 32);
        (h as usize) & (self.table.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::Sketch;

    #[test]
    fn counts_up_to_fifteen_and_halves() {
        let mut sketch = Sketch::new(64);
        for _ in 0..20 {
            sketch.increment(42);
        }
        assert_eq!(sketch.frequency(42), 15);
        assert_eq!(sketch.frequency(7), 0);
        sketch.halve();
        assert_eq!(sketch.frequency(42), 7);
    }

    #[test]
    fn halves_after_its_sample() {
        let mut sketch = Sketch::new(16);
        let sample = sketch.sample_size();
        for hash in 0..sample as u64 {
            sketch.increment(hash.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        }
        assert!(sketch.additions < sample / 2 + 1, "{}", sketch.additions);
    }
}
