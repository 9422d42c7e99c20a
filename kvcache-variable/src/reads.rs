//! Reads, recorded for the policy without taking its lock: a few striped, lossy buffers that
//! the next writer, or a reader that fills one, drains into the policy (Caffeine's read
//! buffer). A read recorded while a buffer is full is dropped: the policy misses an access, the
//! reader never waits.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 4;
/// Reads a stripe holds before it asks to be drained.
pub(crate) const SLOTS: usize = 32;

/// One stripe, on cache lines of its own.
#[repr(align(128))]
#[derive(Debug)]
struct Stripe {
    next: AtomicUsize,
    slots: [AtomicU64; SLOTS],
}

/// The buffers.
#[derive(Debug)]
pub(crate) struct Reads {
    stripes: [Stripe; STRIPES],
}

impl Default for Reads {
    fn default() -> Self {
        Reads {
            stripes: std::array::from_fn(|_| Stripe {
                next: AtomicUsize::new(0),
                slots: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        }
    }
}

thread_local! {
    /// This thread's stripe: threads take stripes in turn.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        stripe.get()
    })
}

impl Reads {
    /// Records a read (`token` is never 0); `true` when its stripe is full and should be
    /// drained.
    pub(crate) fn record(&self, token: u64) -> bool {
        let stripe = &self.stripes[stripe()];
        let slot = stripe.next.fetch_add(1, Ordering::Relaxed);
        if slot < SLOTS {
            stripe.slots[slot].store(token, Ordering::Release);
            return slot == SLOTS - 1;
        }
        true
    }

    /// Hands every recorded read to `apply`, stripe by stripe, and empties the buffers.
    pub(crate) fn drain(&self, mut apply: impl FnMut(u64)) {
        for stripe in &self.stripes {
            let recorded = stripe.next.load(Ordering::Acquire).min(SLOTS);
            if recorded == 0 {
                continue;
            }
            for slot in &stripe.slots[..recorded] {
                let token = slot.swap(0, Ordering::AcqRel);
                if token != 0 {
                    apply(token);
                }
            }
            stripe.next.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Reads, SLOTS};

    #[test]
    fn drains_what_it_recorded_in_order_and_drops_the_overflow() {
        let reads = Reads::default();
        let full: Vec<bool> = (1..=SLOTS as u64 + 3).map(|t| reads.record(t)).collect();
        assert!(!full[SLOTS - 2] && full[SLOTS - 1] && full[SLOTS]);
        let mut drained = Vec::new();
        reads.drain(|token| drained.push(token));
        assert_eq!(drained, (1..=SLOTS as u64).collect::<Vec<_>>());
        reads.drain(|token| drained.push(token));
        assert_eq!(drained.len(), SLOTS);
    }
}
