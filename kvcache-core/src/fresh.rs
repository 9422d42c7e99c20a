//! How a container judges what it read by its stamp (served, due for a refresh, stale, a
//! remembered failure) and stamps what it stores: the typed side of [`stamp`](crate::stamp).

use std::sync::Arc;
use std::time::Duration;

use crate::codec::Value;
use crate::error::{Error, Result};
use crate::memory::{Held, MemoryStore, weight};
use crate::slot::Typed;
use crate::stamp::{Age, Stamp, xfetch};
use crate::stats::Event;

/// What a look-up of one key found, judged now.
pub(crate) enum Judged<V> {
    /// A value to serve; `refresh` holds its stored bytes when it is due for a background
    /// refresh.
    Serve {
        value: V,
        refresh: Option<Arc<[u8]>>,
    },
    /// Nothing to serve: a miss. `fallback` holds a stale value's stored bytes, served if the
    /// generation fails.
    Miss { fallback: Option<Arc<[u8]>> },
    /// A failure remembered in the store: returned without calling the generator.
    Remembered(Error),
}

/// What to store for one key, and for how long.
pub(crate) struct Entry {
    pub(crate) bytes: Vec<u8>,
    pub(crate) ttl: Option<Duration>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl<V: Value> Typed<V> {
    pub(crate) fn now(&self) -> u64 {
        self.slot.clock.now_millis()
    }

    fn window(&self) -> u64 {
        self.slot.options.stale_window().map_or(0, millis)
    }

    fn age(&self, stamp: &Stamp, now: u64) -> Age {
        let beta = self.slot.options.early_refresh_beta();
        stamp.age(now, self.window(), |stamp| {
            beta.is_some_and(|beta| xfetch(stamp, now, beta))
        })
    }

    /// Judges the stored bytes of `key` (`None`: absent), and counts the look-up.
    pub(crate) fn judge(&self, key: &str, bytes: Option<&[u8]>) -> Judged<V> {
        let Some(bytes) = bytes else {
            self.count_lookup(false, false);
            return Judged::Miss { fallback: None };
        };
        let Some((stamp, body)) = Stamp::split(bytes) else {
            let value = self.codec.decode(bytes);
            self.count_lookup(true, value.is_some());
            return match value {
                Some(value) => Judged::Serve {
                    value,
                    refresh: None,
                },
                None => Judged::Miss { fallback: None },
            };
        };
        let age = self.age(&stamp, self.now());
        if stamp.failure {
            if age == Age::Fresh || age == Age::Due {
                return Judged::Remembered(self.remembered(key, &stamp, body));
            }
            self.count_lookup(false, false);
            return Judged::Miss { fallback: None };
        }
        let Some(value) = self.codec.decode(body) else {
            self.count_lookup(true, false);
            return Judged::Miss { fallback: None };
        };
        self.served(key, age, value, || Arc::from(bytes))
    }

    /// Judges what an in-memory store holds under `key`, and counts the look-up.
    pub(crate) fn judge_held(&self, memory: &Arc<dyn MemoryStore>, key: &str) -> Judged<V> {
        // The hot path, a plain value, is a clone in the closure; the rest is out of line.
        let mut plain = None;
        let mut judged = None;
        let found = memory.get_with(key, &mut |held: &Held| match held.get::<V>() {
            Some(value) => plain = Some(value.clone()),
            None => judged = Some(self.judge_other(key, held)),
        });
        if let Some(value) = plain {
            self.count_hit();
            return Judged::Serve {
                value,
                refresh: None,
            };
        }
        if !found {
            self.count_lookup(false, false);
        }
        judged.unwrap_or(Judged::Miss { fallback: None })
    }

    /// Judges, and counts, a held value that is not a plain `V`: a stamped one, bytes, or
    /// another type's value.
    #[inline(never)]
    fn judge_other(&self, key: &str, held: &Held) -> Judged<V> {
        if let Some(stamped) = held.get_stamped::<V>() {
            let age = self.age(&stamped.stamp, self.now());
            self.served(key, age, stamped.value.clone(), || {
                held.encoded()
                    .map_or_else(|_| Arc::from(&[][..]), Arc::from)
            })
        } else if let Some(bytes) = held.as_bytes() {
            self.judge(key, Some(bytes))
        } else {
            // Another type's value.
            self.count_lookup(true, false);
            Judged::Miss { fallback: None }
        }
    }

    /// A stamped value of `age`, counted; `bytes` makes its stored bytes for a fallback.
    fn served(
        &self,
        key: &str,
        age: Age,
        value: V,
        bytes: impl FnOnce() -> Arc<[u8]>,
    ) -> Judged<V> {
        match age {
            Age::Fresh | Age::Due => {
                self.count_lookup(true, true);
                // A due value whose refresh is under way here is only served.
                let refresh = age == Age::Due && !self.slot.flights.under_way(key);
                Judged::Serve {
                    value,
                    refresh: refresh.then(bytes),
                }
            }
            Age::StaleRemembered => {
                self.count_lookup(true, true);
                self.slot.counters.count(Event::StaleServed);
                tracing::debug!(container = %self.slot.name, key, "serving a stale value: the generator's failure is remembered");
                Judged::Serve {
                    value,
                    refresh: None,
                }
            }
            Age::Stale => {
                self.count_lookup(false, false);
                Judged::Miss {
                    fallback: Some(bytes()),
                }
            }
            Age::Gone => {
                self.count_lookup(false, false);
                Judged::Miss { fallback: None }
            }
        }
    }

    fn remembered(&self, key: &str, stamp: &Stamp, message: &[u8]) -> Error {
        let remaining = stamp.expires_at.saturating_sub(self.now());
        Error::Generator {
            container: self.slot.name.clone(),
            key: key.to_owned(),
            source: format!(
                "{} (a failure remembered by cache_errors: the generator is not called again for {remaining} ms)",
                String::from_utf8_lossy(message)
            )
            .into(),
        }
    }

    /// Whether bytes another caller stored serve a caller that waits for them: a value not past
    /// its expiry (and, for a refresh, no longer due), or a remembered failure.
    pub(crate) fn settles(&self, key: &str, bytes: &[u8], refreshing: bool) -> Option<Result<()>> {
        let Some((stamp, body)) = Stamp::split(bytes) else {
            return self.codec.decode(bytes).map(|_| Ok(()));
        };
        let age = self.age(&stamp, self.now());
        if stamp.failure {
            return matches!(age, Age::Fresh | Age::Due).then(|| {
                self.slot.counters.count(Event::ErrorCached);
                Err(self.remembered(key, &stamp, body))
            });
        }
        let settles = match age {
            Age::Fresh => true,
            Age::Due | Age::StaleRemembered => !refreshing,
            Age::Stale | Age::Gone => false,
        };
        (settles && self.codec.decode(body).is_some()).then_some(Ok(()))
    }

    /// The value in bytes another caller landed: stamped or not.
    pub(crate) fn decode_landed(&self, bytes: &[u8]) -> Option<V> {
        match Stamp::split(bytes) {
            Some((stamp, body)) if !stamp.failure => self.codec.decode(body),
            Some(_) => None,
            None => self.codec.decode(bytes),
        }
    }

    /// The stamp and store ttl of a value generated now in `took`, living `expire` (the
    /// generator's, else the container's); no stamp when the container serves nothing stale.
    pub(crate) fn stamp_for(
        &self,
        expire: Option<Duration>,
        took: Duration,
    ) -> (Option<Stamp>, Option<Duration>) {
        let options = &self.slot.options;
        if !self.slot.stamps() {
            return (None, expire);
        }
        let now = self.now();
        let refresh = options
            .refresh_after()
            .filter(|refresh| expire.is_none_or(|expire| *refresh < expire));
        let stamp = Stamp {
            refresh_at: refresh.map_or(0, |refresh| now.saturating_add(millis(refresh))),
            expires_at: expire.map_or(0, |expire| now.saturating_add(millis(expire))),
            retry_at: 0,
            took_ms: u32::try_from(took.as_millis()).unwrap_or(u32::MAX),
            failure: false,
        };
        let ttl = expire.map(|expire| expire + options.stale_window().unwrap_or_default());
        (Some(stamp), ttl)
    }

    /// Encodes a generated value with its stamp, if it has one.
    pub(crate) fn encode_stamped(
        &self,
        key: &str,
        value: &V,
        stamp: Option<&Stamp>,
    ) -> Result<Vec<u8>> {
        let encoded = self.encode(key, value)?;
        let Some(stamp) = stamp else {
            return Ok(encoded);
        };
        let mut bytes = Vec::with_capacity(encoded.len() + 30);
        stamp.write(&mut bytes);
        bytes.extend_from_slice(&encoded);
        Ok(bytes)
    }

    /// A generator's failure to remember for `cache_errors`, if the container remembers them.
    pub(crate) fn remember(&self, error: &Error) -> Option<Entry> {
        let remember = self.slot.options.errors_remembered()?;
        let mut bytes = Vec::new();
        Stamp {
            expires_at: self.now().saturating_add(millis(remember)),
            failure: true,
            ..Stamp::default()
        }
        .write(&mut bytes);
        let message = match error {
            Error::Generator { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        bytes.extend_from_slice(message.as_bytes());
        self.slot.counters.count(Event::ErrorCached);
        Some(Entry {
            bytes,
            ttl: Some(remember),
        })
    }

    /// The value a failed generation of `key` falls back to, if `fallback` (a stale value's, or
    /// a due one's for a refresh) still serves: counted and reported when past its expiry, and,
    /// with `cache_errors`, re-stamped so that no caller calls the generator before the retry.
    pub(crate) fn fall_back(
        &self,
        key: &str,
        fallback: &Arc<[u8]>,
        error: &Error,
        refreshing: bool,
    ) -> Option<(Arc<[u8]>, Option<Entry>)> {
        let (mut stamp, body) = Stamp::split(fallback)?;
        let now = self.now();
        let age = self.age(&stamp, now);
        if age == Age::Gone {
            return None;
        }
        if !refreshing {
            self.slot.counters.count(Event::StaleServed);
            tracing::warn!(
                container = %self.slot.name,
                key,
                error = error as &dyn std::error::Error,
                "the generator failed: serving the last value, past its expiry (stale_if_error)"
            );
        } else {
            tracing::warn!(
                container = %self.slot.name,
                key,
                error = error as &dyn std::error::Error,
                "a background refresh failed: the current value stays"
            );
        }
        let Some(remember) = self.slot.options.errors_remembered() else {
            return Some((Arc::clone(fallback), None));
        };
        stamp.retry_at = now.saturating_add(millis(remember));
        let mut bytes = Vec::with_capacity(fallback.len());
        stamp.write(&mut bytes);
        bytes.extend_from_slice(body);
        let ttl = match stamp.expires_at {
            0 => None,
            expires_at => Some(Duration::from_millis(
                expires_at
                    .saturating_add(self.window())
                    .saturating_sub(now)
                    .max(1),
            )),
        };
        self.slot.counters.count(Event::ErrorCached);
        Some((Arc::from(bytes.as_slice()), Some(Entry { bytes, ttl })))
    }
}

/// The near tier's side of a container: looking a copy up, and keeping copies of what the
/// shared store serves.
impl<V: Value> Typed<V> {
    /// A near copy of `key` that serves now (fresh, or due for a refresh), counted as a hit;
    /// `None` sends the caller to the shared store, which judges and counts.
    pub(crate) fn near_look(&self, key: &str) -> Option<Judged<V>> {
        let near = self.slot.near.as_ref()?;
        let mut served = None;
        near.memory.get_with(key, &mut |held: &Held| {
            served = if let Some(value) = held.get::<V>() {
                Some(Judged::Serve {
                    value: value.clone(),
                    refresh: None,
                })
            } else if let Some(stamped) = held.get_stamped::<V>() {
                match self.age(&stamped.stamp, self.now()) {
                    Age::Fresh => Some(Judged::Serve {
                        value: stamped.value.clone(),
                        refresh: None,
                    }),
                    Age::Due => Some(Judged::Serve {
                        value: stamped.value.clone(),
                        refresh: (!self.slot.flights.under_way(key))
                            .then(|| held.encoded().ok().map(Arc::from))
                            .flatten(),
                    }),
                    _ => None,
                }
            } else {
                None
            };
        });
        if served.is_some() {
            self.count_hit();
            near.hit();
        }
        served
    }

    /// Keeps a near copy of `value`, which the shared store served as `bytes`.
    pub(crate) fn fill_near(&self, key: &str, bytes: &[u8], value: &V) {
        let stamp = Stamp::split(bytes).map(|(stamp, _)| stamp);
        self.near_insert(key, stamp, value.clone(), bytes.len());
    }

    /// Keeps a near copy of `value`, stamped as stored (or not), `len` bytes encoded; a value
    /// past its expiry, or a failure, is not kept.
    pub(crate) fn near_insert(&self, key: &str, stamp: Option<Stamp>, value: V, len: usize) {
        let Some(near) = &self.slot.near else {
            return;
        };
        let remaining = match stamp {
            Some(stamp) if stamp.failure => return,
            Some(Stamp { expires_at: 0, .. }) | None => None,
            Some(stamp) => match stamp.expires_at.checked_sub(self.now()) {
                Some(left) if left > 0 => Some(Duration::from_millis(left)),
                _ => return,
            },
        };
        // A copy whose stamp says nothing but its expiry is held plain: its time to live ends
        // by then, and a hit on it is a clone, with no stamp to judge.
        let held = match stamp {
            Some(stamp)
                if stamp.refresh_at != 0
                    || stamp.retry_at != 0
                    || self.slot.options.early_refresh_beta().is_some() =>
            {
                Held::stamped(stamp, value)
            }
            _ => Held::value(value),
        };
        near.memory
            .insert(key, held, weight(key, len), near.ttl(remaining));
    }

    /// Drops every near copy of the container.
    pub(crate) fn near_clear(&self) {
        if let Some(near) = &self.slot.near {
            near.memory.clear();
        }
    }

    /// Drops the near copy of `key`, if there is one.
    pub(crate) fn near_remove(&self, key: &str) {
        if let Some(near) = &self.slot.near {
            near.memory.remove(key);
        }
    }
}
