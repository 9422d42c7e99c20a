//! What a leader does with the keys it leads, round by round: take the store's leases on them
//! (so that one caller across every process sharing the store generates each), look again,
//! generate, store the generated values in one batch, release the leases, then wait for the
//! keys another process leads and take over those it gives up. The steps are written once; the
//! synchronous and the async path each drive them with their own calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::Lease;
use crate::codec::Value;
use crate::error::{Error, Result};
use crate::flight::{Leader, Outcome};
use crate::fresh::Entry;
use crate::generator::Expiring;
use crate::memory::{Held, weight};
use crate::slot::{Keep, Typed};
use crate::stamp::Stamp;
use crate::stats::Event;

/// Entries to store with one time to live: `(ttl, [(key, bytes)])`.
pub(crate) type Group<'a> = (Option<Duration>, Vec<(&'a str, &'a [u8])>);

/// A generator's result for one key, with how long the call took.
pub(crate) type Made<V> = (Result<Expiring<V>>, Duration);

/// The first pause of a caller waiting for another process's value; each pause doubles, up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(2);
/// The longest pause between two looks at a key another process generates: what its value can
/// be late by, at most, once stored.
const MAX_PAUSE: Duration = Duration::from_millis(10);

/// The keys one caller leads, and what it has got for each so far.
pub(crate) struct Batch<V> {
    typed: Typed<V>,
    leaders: Vec<Leader>,
    got: Vec<Option<Got<V>>>,
    shares: Vec<Share>,
    /// Per key, the stored bytes of a value to fall back to if the generation fails: a stale
    /// one (stale if error), or the current one of a refresh.
    fallbacks: Vec<Option<Arc<[u8]>>>,
    keep: Keep,
    /// A background refresh of values still served: a key another process refreshes, or whose
    /// refresh fails, keeps its current value.
    refreshing: bool,
    /// A lease was taken since the last look: the previous holder may have stored the key.
    leased_since_look: bool,
    /// When this caller started waiting for other processes, and its next pause.
    waiting: Option<(Instant, Duration)>,
}

/// Where a key's generation stands across processes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Share {
    /// Not asked yet.
    Unasked,
    /// To be asked again, after a wait for another process found no value.
    Again,
    /// Generated here, under no lease: the store is private, the lease failed, the container
    /// leases nothing, or the wait for another process ran past its bound.
    Alone,
    /// This caller holds the store's lease, under this token.
    Mine(String),
    /// Another process holds it: wait for its value.
    Theirs,
}

enum Got<V> {
    /// Settled: found (stored by another caller since this caller's look-up), or decided here
    /// and stored already or not to be stored.
    Done(Outcome),
    /// To store (or hold, in memory), then land: a generated value (kept as a value too, with
    /// its stamp, when the store holds values), a stale value re-stamped after a failure, or a
    /// remembered failure, whose callers get `failed`.
    Store {
        entry: Entry,
        value: Option<(Option<Stamp>, V)>,
        failed: Option<Error>,
    },
}

impl Share {
    /// Whether its lease is to be asked for.
    fn is_asked(&self) -> bool {
        matches!(self, Share::Unasked | Share::Again)
    }

    /// Whether this caller does not generate it now: its lease is to be asked for, or another
    /// process holds it.
    fn waits(&self) -> bool {
        matches!(self, Share::Unasked | Share::Again | Share::Theirs)
    }
}

impl<V: Value> Batch<V> {
    /// The batch of a caller that missed `leaders`' keys; `fallbacks` holds, per key, a stale
    /// value's stored bytes that serve if the generation fails.
    pub(crate) fn new(
        typed: Typed<V>,
        leaders: Vec<Leader>,
        fallbacks: Vec<Option<Arc<[u8]>>>,
        keep: Keep,
    ) -> Self {
        Self::make(typed, leaders, fallbacks, keep, false)
    }

    /// The batch of a background refresh of `leaders`' keys, whose current values are
    /// `fallbacks`.
    pub(crate) fn refresh(
        typed: Typed<V>,
        leaders: Vec<Leader>,
        fallbacks: Vec<Arc<[u8]>>,
    ) -> Self {
        let keep = Keep::Yes {
            landed_before: typed.slot.flights.landed(),
        };
        let fallbacks = fallbacks.into_iter().map(Some).collect();
        Self::make(typed, leaders, fallbacks, keep, true)
    }

    fn make(
        typed: Typed<V>,
        leaders: Vec<Leader>,
        fallbacks: Vec<Option<Arc<[u8]>>>,
        keep: Keep,
        refreshing: bool,
    ) -> Self {
        let got = leaders.iter().map(|_| None).collect();
        // A failing store is not asked for leases: its error has been reported, and the
        // generated values are not stored anyway.
        let share = if keep == Keep::No || !typed.slot.leases() {
            Share::Alone
        } else {
            Share::Unasked
        };
        let shares = leaders.iter().map(|_| share.clone()).collect();
        Batch {
            typed,
            leaders,
            got,
            shares,
            fallbacks,
            keep,
            refreshing,
            leased_since_look: false,
            waiting: None,
        }
    }

    /// The leases to ask for, as (key, token), before the pending keys are generated.
    pub(crate) fn to_lease(&self) -> Vec<(String, String)> {
        self.leaders
            .iter()
            .zip(&self.got)
            .zip(&self.shares)
            .filter(|((_, got), share)| got.is_none() && share.is_asked())
            .map(|((leader, _), _)| (leader.key().to_owned(), crate::token::new()))
            .collect()
    }

    /// How long a lease asked for now lives: the container's lock timeout.
    pub(crate) fn lease_ttl(&self) -> Duration {
        self.typed.slot.options.lease_ttl()
    }

    /// Takes the answers to the leases [`to_lease`](Batch::to_lease) asked for, in order.
    pub(crate) fn leased(&mut self, asked: Vec<(String, String)>, answers: Vec<Result<Lease>>) {
        let mut answers = answers.into_iter();
        let mut asked = asked.into_iter();
        for (((leader, got), share), fallback) in self
            .leaders
            .iter()
            .zip(&mut self.got)
            .zip(&mut self.shares)
            .zip(&self.fallbacks)
        {
            if got.is_some() || !share.is_asked() {
                continue;
            }
            let again = *share == Share::Again;
            let (Some((_, token)), Some(answer)) = (asked.next(), answers.next()) else {
                *share = Share::Alone;
                continue;
            };
            if self.refreshing && matches!(answer, Ok(Lease::Held)) {
                // Another process refreshes it: the current value stays.
                *share = Share::Alone;
                *got = fallback.clone().map(|bytes| Got::Done(Ok(bytes)));
                continue;
            }
            *share = match self.typed.backend_call(answer) {
                Ok(Lease::Acquired) => {
                    self.leased_since_look = true;
                    if again {
                        self.typed.slot.counters.count(Event::LeaseTakeover);
                        tracing::debug!(container = %self.typed.slot.name, key = leader.key(), "took over a lease another process gave up or let expire");
                    }
                    Share::Mine(token)
                }
                Ok(Lease::Held) => {
                    if !again {
                        self.typed.slot.counters.count(Event::LeaseWait);
                        tracing::debug!(container = %self.typed.slot.name, key = leader.key(), "waiting for another process's generator");
                    }
                    Share::Theirs
                }
                Ok(Lease::Unshared) => {
                    self.typed.slot.unshared();
                    Share::Alone
                }
                Err(error) => {
                    tracing::warn!(
                        container = %self.typed.slot.name,
                        key = leader.key(),
                        error = &error as &dyn std::error::Error,
                        "the store's lease failed; generating without it"
                    );
                    Share::Alone
                }
            };
        }
    }

    /// The leases to give up, as (key, token): those of the keys generated (or given up) this
    /// round.
    pub(crate) fn take_leases(&mut self) -> Vec<(String, String)> {
        let mut released = Vec::new();
        for (leader, share) in self.leaders.iter().zip(&mut self.shares) {
            if let Share::Mine(token) = share {
                released.push((leader.key().to_owned(), std::mem::take(token)));
                *share = Share::Alone;
            }
        }
        released
    }

    /// Counts the failures to release a lease; the lease then expires by itself.
    pub(crate) fn released(&self, results: Vec<Result<()>>) {
        for result in results {
            if let Err(error) = self.typed.backend_call(result) {
                tracing::warn!(
                    container = %self.typed.slot.name,
                    error = &error as &dyn std::error::Error,
                    "releasing a lease failed: it expires at its lock timeout"
                );
            }
        }
    }

    /// The keys another process generates, to look at after [`pause`](Batch::pause).
    pub(crate) fn waiting(&self) -> Vec<String> {
        self.leaders
            .iter()
            .zip(&self.got)
            .zip(&self.shares)
            .filter(|((_, got), share)| got.is_none() && **share == Share::Theirs)
            .map(|((leader, _), _)| leader.key().to_owned())
            .collect()
    }

    /// How long to pause before looking at the keys other processes generate, or `None` when
    /// there are none: 2 ms, doubling up to [`MAX_PAUSE`].
    pub(crate) fn pause(&mut self) -> Option<Duration> {
        let waits = self
            .got
            .iter()
            .zip(&self.shares)
            .any(|(got, share)| got.is_none() && *share == Share::Theirs);
        if !waits {
            return None;
        }
        let (since, pause) = *self.waiting.get_or_insert((Instant::now(), FIRST_PAUSE));
        self.waiting = Some((since, (pause * 2).min(MAX_PAUSE)));
        Some(pause)
    }

    /// Takes what looking at the waited-for keys found: a value that serves (or a remembered
    /// failure) is this caller's; a key still missing is asked for its lease again, or
    /// generated alone once the wait has run past twice the lock timeout (a holder that keeps
    /// its lease but never stores).
    pub(crate) fn polled(&mut self, found: Result<Vec<Option<Vec<u8>>>>) {
        let waited = self
            .waiting
            .map_or(Duration::ZERO, |(since, _)| since.elapsed());
        let give_up = waited > 2 * self.lease_ttl();
        let found = self.typed.backend_call(found).ok();
        let mut found = found.into_iter().flatten();
        for i in 0..self.leaders.len() {
            if self.got[i].is_some() || self.shares[i] != Share::Theirs {
                continue;
            }
            if let Some(bytes) = found.next().flatten()
                && self.take_found(i, bytes)
            {
                continue;
            }
            self.shares[i] = if give_up {
                self.typed.slot.counters.count(Event::LeaseTakeover);
                tracing::warn!(container = %self.typed.slot.name, waited = ?waited, "waited past twice the lock timeout for another process's value: generating it here");
                Share::Alone
            } else {
                Share::Again
            };
        }
    }

    /// Takes bytes found for key `i` since the caller's look-up, and says whether they settle
    /// it; a stale value that does not becomes its fallback.
    fn take_found(&mut self, i: usize, bytes: Vec<u8>) -> bool {
        let key = self.leaders[i].key();
        match self.typed.settles(key, &bytes, self.refreshing) {
            Some(Ok(())) => {
                self.got[i] = Some(Got::Done(Ok(Arc::from(bytes))));
                true
            }
            Some(Err(remembered)) => {
                self.got[i] = Some(Got::Done(Err(remembered)));
                true
            }
            None => {
                if !self.refreshing && Stamp::split(&bytes).is_some_and(|(stamp, _)| !stamp.failure)
                {
                    self.fallbacks[i] = Some(Arc::from(bytes));
                }
                false
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.leaders.is_empty()
    }

    /// The keys it has nothing for yet and generates itself.
    pub(crate) fn pending(&self) -> Vec<String> {
        self.pending_indices()
            .into_iter()
            .map(|i| self.leaders[i].key().to_owned())
            .collect()
    }

    /// Whether the pending keys must be looked up again before they are generated: a flight
    /// landed since the caller's look-up, or a lease was taken since, whose previous holder may
    /// have stored them.
    pub(crate) fn must_look_again(&mut self) -> bool {
        let again = std::mem::take(&mut self.leased_since_look) || self.typed.look_again(self.keep);
        again && !self.pending().is_empty()
    }

    /// Takes what looking the pending keys up again found.
    pub(crate) fn looked_again(&mut self, found: Result<Vec<Option<Vec<u8>>>>) {
        let pending = self.pending_indices();
        let found = self.typed.backend_call(found).and_then(|found| {
            self.typed
                .check_batch(&found, pending.len())
                .map(|()| found)
        });
        match found {
            Ok(found) => {
                for (i, bytes) in pending.into_iter().zip(found) {
                    if let Some(bytes) = bytes {
                        self.take_found(i, bytes);
                    }
                }
            }
            Err(error) => match self.typed.fail_open(error) {
                Ok(()) => self.keep = Keep::No,
                Err(error) => self.fail_pending(&error),
            },
        }
    }

    fn pending_indices(&self) -> Vec<usize> {
        (0..self.leaders.len())
            .filter(|&i| self.got[i].is_none() && !self.shares[i].waits())
            .collect()
    }

    /// Takes the generator's results for the pending keys, in order: each value is stamped and
    /// encoded to be stored; a failure falls back to a stale value, or is remembered, or
    /// reaches the callers.
    pub(crate) fn generated(&mut self, results: Vec<Made<V>>) {
        let holds = self.typed.slot.memory.is_some() || self.typed.slot.near.is_some();
        let mut results = results.into_iter();
        for i in self.pending_indices() {
            let Some((result, took)) = results.next() else {
                break;
            };
            let key = self.leaders[i].key();
            self.got[i] = Some(match result {
                Ok(made) => self.made(key, made, took, holds),
                Err(error) => self.failed(i, error),
            });
        }
    }

    fn made(&self, key: &str, made: Expiring<V>, took: Duration, holds: bool) -> Got<V> {
        self.typed.slot.counters.count(Event::Generation);
        let expire = made.expire.or_else(|| self.typed.expire());
        if expire == Some(Duration::ZERO) {
            // Not to be stored: its callers get it, and the next miss generates again.
            return Got::Done(self.typed.encode(key, &made.value).map(Arc::from));
        }
        let (stamp, ttl) = self.typed.stamp_for(expire, took);
        match self.typed.encode_stamped(key, &made.value, stamp.as_ref()) {
            Ok(bytes) => Got::Store {
                entry: Entry { bytes, ttl },
                value: holds.then_some((stamp, made.value)),
                failed: None,
            },
            Err(error) => Got::Done(Err(error)),
        }
    }

    fn failed(&self, i: usize, error: Error) -> Got<V> {
        let key = self.leaders[i].key();
        if let Some(fallback) = &self.fallbacks[i]
            && let Some((bytes, entry)) =
                self.typed.fall_back(key, fallback, &error, self.refreshing)
        {
            return match entry {
                Some(entry) => Got::Store {
                    entry,
                    value: None,
                    failed: None,
                },
                None => Got::Done(Ok(bytes)),
            };
        }
        match self.typed.remember(&error) {
            Some(entry) => Got::Store {
                entry,
                value: None,
                failed: Some(error),
            },
            None => Got::Done(Err(error)),
        }
    }

    /// With an in-memory store, holds the entries to store there (generated values as values)
    /// and returns `true`; otherwise returns `false`, and the caller stores
    /// [`to_store`](Batch::to_store).
    pub(crate) fn hold(&mut self) -> bool {
        let Some(memory) = self.typed.slot.memory.clone() else {
            return false;
        };
        if self.keep == Keep::No {
            return true;
        }
        for (leader, got) in self.leaders.iter().zip(&mut self.got) {
            let Some(Got::Store { entry, value, .. }) = got else {
                continue;
            };
            let (key, len) = (leader.key(), entry.bytes.len());
            let held = match value.take() {
                Some((stamp, value)) => {
                    self.typed
                        .hold(&memory, key, value, Some(len), stamp, entry.ttl)
                }
                None => {
                    memory.insert(key, Held::bytes(&entry.bytes), weight(key, len), entry.ttl);
                    Ok(())
                }
            };
            if let Err(error) = held {
                *got = Some(Got::Done(Err(error)));
            }
        }
        true
    }

    /// The entries to store, grouped by time to live, if they are to be stored.
    pub(crate) fn to_store(&self) -> Vec<Group<'_>> {
        let mut groups: Vec<Group<'_>> = Vec::new();
        if self.keep == Keep::No {
            return groups;
        }
        for (leader, got) in self.leaders.iter().zip(&self.got) {
            let Some(Got::Store { entry, .. }) = got else {
                continue;
            };
            let item = (leader.key(), entry.bytes.as_slice());
            match groups.iter_mut().find(|(ttl, _)| *ttl == entry.ttl) {
                Some((_, entries)) => entries.push(item),
                None => groups.push((entry.ttl, vec![item])),
            }
        }
        tracing::trace!(container = %self.typed.slot.name, groups = groups.len(), "store");
        groups
    }

    /// Takes the outcome of storing them: under `fail`, a failed store fails their keys.
    pub(crate) fn stored(&mut self, result: Result<()>) {
        if let Err(error) = self.typed.backend_call(result)
            && let Err(error) = self.typed.fail_open(error)
        {
            for got in &mut self.got {
                if matches!(got, Some(Got::Store { failed: None, .. })) {
                    *got = Some(Got::Done(Err(error.clone())));
                }
            }
        }
    }

    /// Ends a round: what was stored (or held) is settled, and not stored again in a later
    /// round.
    pub(crate) fn settle(&mut self) {
        for (leader, got) in self.leaders.iter().zip(&mut self.got) {
            if let Some(Got::Store {
                entry,
                value,
                failed,
            }) = got
                && self.typed.slot.near.is_some()
            {
                // The near tier keeps what was stored, and forgets what a failure replaced.
                match value.take() {
                    Some((stamp, value)) => {
                        self.typed
                            .near_insert(leader.key(), stamp, value, entry.bytes.len());
                    }
                    None if failed.is_none() => self.typed.near_remove(leader.key()),
                    None => {}
                }
            }
            if let Some(Got::Store { entry, failed, .. }) = got {
                let outcome = match failed.take() {
                    Some(error) => Err(error),
                    None => Ok(Arc::from(std::mem::take(&mut entry.bytes))),
                };
                *got = Some(Got::Done(outcome));
            }
        }
    }

    /// Lands every flight with what it got; a refresh that got nothing keeps the current value.
    pub(crate) fn land(mut self) {
        self.settle();
        for ((leader, got), fallback) in self.leaders.into_iter().zip(self.got).zip(self.fallbacks)
        {
            let outcome = match (got, fallback) {
                (Some(Got::Done(outcome)), _) => outcome,
                (None, Some(current)) if self.refreshing => Ok(current),
                _ => Err(self.typed.generator_failed(
                    leader.key(),
                    "the generator returned fewer values than it was asked for".into(),
                )),
            };
            leader.land(outcome);
        }
    }

    fn fail_pending(&mut self, error: &Error) {
        for i in self.pending_indices() {
            self.got[i] = Some(Got::Done(Err(error.clone())));
        }
    }
}
