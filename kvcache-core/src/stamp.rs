//! What a stored value says of its own times, for the containers that serve stale values: when
//! it is due for a refresh, when it expires, how long its generation took, and a failure
//! remembered in its place.
//!
//! A stamped entry is the stamp, then the value's encoding as [`Codec`](crate::codec::Codec)
//! writes it (or, for a remembered failure, its message):
//!
//! ```text
//! [4] [refresh_at u64] [expires_at u64] [retry_at u64] [took_ms u32] [kind u8] [body ...]
//! ```
//!
//! Times are Unix milliseconds on the writer's clock, little-endian, zero for none. The store's
//! own time to live is the hard limit (expiry plus the stale-if-error window); the stamp says
//! what a reader does before it. Every reader understands stamps, whatever its own settings, so
//! instances with different settings share a store.

/// The format byte of a stamped entry (2 is a plain value, 3 a compressed one).
pub(crate) const STAMPED: u8 = 4;
const LEN: usize = 1 + 8 + 8 + 8 + 4 + 1;

/// A stamped entry's times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// When the value is due for a background refresh; 0: never.
    pub(crate) refresh_at: u64,
    /// When the value stops being served but on a generator's failure; 0: never.
    pub(crate) expires_at: u64,
    /// Until when a failed generation is remembered: no caller calls the generator before; 0:
    /// no failure.
    pub(crate) retry_at: u64,
    /// How long the value's generation took, in milliseconds (XFetch's δ).
    pub(crate) took_ms: u32,
    /// The body is a remembered failure's message, not a value.
    pub(crate) failure: bool,
}

/// What a stamped entry is worth to a reader at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Age {
    /// Served as it is.
    Fresh,
    /// Served, and refreshed in the background.
    Due,
    /// Past its expiry: a miss, whose value serves if the generator fails within the
    /// stale-if-error window.
    Stale,
    /// Past its expiry, with a failure remembered: served without calling the generator.
    StaleRemembered,
    /// Past every window: nothing to serve.
    Gone,
}

impl Stamp {
    /// Writes the stamp in front of a body.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.reserve(LEN);
        out.push(STAMPED);
        out.extend_from_slice(&self.refresh_at.to_le_bytes());
        out.extend_from_slice(&self.expires_at.to_le_bytes());
        out.extend_from_slice(&self.retry_at.to_le_bytes());
        out.extend_from_slice(&self.took_ms.to_le_bytes());
        out.push(u8::from(self.failure));
    }

    /// The stamp of `bytes` and the body after it, or `None` when they are not stamped (or are
    /// too short to be).
    pub(crate) fn split(bytes: &[u8]) -> Option<(Stamp, &[u8])> {
        if bytes.first() != Some(&STAMPED) || bytes.len() < LEN {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let stamp = Stamp {
            refresh_at: u64_at(1),
            expires_at: u64_at(9),
            retry_at: u64_at(17),
            took_ms: u32::from_le_bytes(bytes[25..29].try_into().expect("4")),
            failure: match bytes[29] {
                0 => false,
                1 => true,
                _ => return None,
            },
        };
        Some((stamp, &bytes[LEN..]))
    }

    /// What the entry is worth at `now`, for a reader whose stale-if-error window is `window`
    /// milliseconds; `early` says whether XFetch draws an early refresh.
    pub(crate) fn age(&self, now: u64, window: u64, early: impl FnOnce(&Stamp) -> bool) -> Age {
        let expired = self.expires_at != 0 && now >= self.expires_at;
        if !expired {
            // A remembered failure holds refreshes off until its retry time.
            let due = now >= self.retry_at
                && ((self.refresh_at != 0 && now >= self.refresh_at) || early(self));
            return if due { Age::Due } else { Age::Fresh };
        }
        if now >= self.expires_at.saturating_add(window) {
            Age::Gone
        } else if now < self.retry_at {
            Age::StaleRemembered
        } else {
            Age::Stale
        }
    }
}

/// XFetch's rule: refresh at `now` when `now − δ·β·ln(u) ≥ expiry`, `u` uniform in (0, 1].
pub(crate) fn xfetch(stamp: &Stamp, now: u64, beta: f64) -> bool {
    if stamp.expires_at == 0 {
        return false;
    }
    let gap = -(f64::from(stamp.took_ms) * beta * uniform().ln());
    // `now + gap >= expires_at`, in floating point: both are far below 2^53 ms.
    #[allow(clippy::cast_precision_loss)]
    let reaches = now as f64 + gap >= stamp.expires_at as f64;
    reaches
}

/// A uniform draw in (0, 1], from a per-thread xorshift seeded by the operating system.
fn uniform() -> f64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0u8) | 1);
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        // The top 53 bits, as a fraction in (0, 1].
        #[allow(clippy::cast_precision_loss)]
        let fraction = ((x >> 11) + 1) as f64 / (1u64 << 53) as f64;
        fraction
    })
}

#[cfg(test)]
mod tests {
    use super::{Age, Stamp, xfetch};

    #[test]
    fn a_stamp_round_trips_and_a_truncated_one_is_no_stamp() {
        let stamp = Stamp {
            refresh_at: 10,
            expires_at: 20,
            retry_at: 0,
            took_ms: 7,
            failure: true,
        };
        let mut bytes = Vec::new();
        stamp.write(&mut bytes);
        bytes.extend_from_slice(b"body");
        assert_eq!(Stamp::split(&bytes), Some((stamp, &b"body"[..])));
        assert_eq!(Stamp::split(&bytes[..29]), None);
        bytes[29] = 9;
        assert_eq!(Stamp::split(&bytes), None, "an unknown kind");
    }

    #[test]
    fn ages() {
        let stamp = Stamp {
            refresh_at: 100,
            expires_at: 200,
            ..Stamp::default()
        };
        let never = |_: &Stamp| false;
        assert_eq!(stamp.age(50, 0, never), Age::Fresh);
        assert_eq!(stamp.age(100, 0, never), Age::Due);
        assert_eq!(stamp.age(50, 0, |_| true), Age::Due, "XFetch drew");
        assert_eq!(stamp.age(200, 0, never), Age::Gone);
        assert_eq!(stamp.age(200, 50, never), Age::Stale);
        assert_eq!(stamp.age(250, 50, never), Age::Gone);
        let remembered = Stamp {
            retry_at: 230,
            ..stamp
        };
        assert_eq!(remembered.age(220, 50, never), Age::StaleRemembered);
        assert_eq!(
            remembered.age(150, 50, never),
            Age::Fresh,
            "no refresh before the retry"
        );
        assert_eq!(remembered.age(150, 50, |_| true), Age::Fresh);
        assert_eq!(remembered.age(230, 50, never), Age::Stale);
    }

    #[test]
    fn xfetch_refreshes_more_often_near_expiry_and_never_without_one() {
        let stamp = Stamp {
            expires_at: 10_000,
            took_ms: 100,
            ..Stamp::default()
        };
        let rate = |now: u64| (0..10_000).filter(|_| xfetch(&stamp, now, 1.0)).count();
        let (far, near) = (rate(9_000), rate(9_950));
        // P(refresh) = exp(-(e - t) / (δβ)): e^-10 far, e^-0.5 ≈ 0.61 near.
        assert!(far < 10, "{far}");
        assert!((5_500..6_700).contains(&near), "{near}");
        let forever = Stamp {
            expires_at: 0,
            ..stamp
        };
        assert!(!xfetch(&forever, 9_999, 1.0));
    }
}
