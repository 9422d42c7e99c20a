//! Single flight: concurrent misses on one key run the generator once; the others wait for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::error::Error;

/// What the leader of a flight hands its waiters: the encoded value, or its error.
pub(crate) type Outcome = Result<Arc<[u8]>, Error>;

/// The flights under way in one container, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    by_key: Mutex<HashMap<String, Arc<Flight>>>,
    /// How many flights have landed: a caller that read it before its look-up and finds it
    /// unchanged when it leads knows no value was generated in between.
    landed: AtomicU64,
}

#[derive(Debug, Default)]
pub(crate) struct Flight {
    outcome: Mutex<Option<Outcome>>,
    landed: Condvar,
}

/// A caller's part in a flight.
pub(crate) enum Role<'a> {
    /// No one was generating this key: the caller generates and must [`Leader::land`].
    Leader(Leader<'a>),
    /// Someone else is generating it: [`Flight::wait`] for their outcome.
    Waiter(Arc<Flight>),
}

/// The caller that generates. Dropped without landing (its generator panicked), it releases the
/// waiters with an error.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: &'a str,
    flight: Arc<Flight>,
    landed: bool,
    on_abandon: &'a dyn Fn() -> Error,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; a poisoned one holds consistent data.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Flights {
    /// The number of flights landed so far; read it before the look-up that precedes a flight.
    pub(crate) fn landed(&self) -> u64 {
        self.landed.load(Ordering::Acquire)
    }

    /// Joins the flight for `key`, or starts one. `on_abandon` makes the error waiters get if
    /// the leader unwinds without landing.
    pub(crate) fn join<'a>(&'a self, key: &'a str, on_abandon: &'a dyn Fn() -> Error) -> Role<'a> {
        let mut by_key = lock(&self.by_key);
        if let Some(flight) = by_key.get(key) {
            return Role::Waiter(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::default());
        by_key.insert(key.to_owned(), Arc::clone(&flight));
        Role::Leader(Leader {
            flights: self,
            key,
            flight,
            landed: false,
            on_abandon,
        })
    }
}

impl Flight {
    /// Blocks until the leader lands.
    pub(crate) fn wait(&self) -> Outcome {
        let mut outcome = lock(&self.outcome);
        loop {
            if let Some(outcome) = outcome.as_ref() {
                return match outcome {
                    Ok(bytes) => Ok(Arc::clone(bytes)),
                    Err(error) => Err(error.share()),
                };
            }
            outcome = self
                .landed
                .wait(outcome)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Leader<'_> {
    /// Ends the flight: later callers start afresh, the waiters get `outcome`.
    pub(crate) fn land(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        self.landed = true;
        lock(&self.flights.by_key).remove(self.key);
        self.flights.landed.fetch_add(1, Ordering::Release);
        *lock(&self.flight.outcome) = Some(outcome);
        self.flight.landed.notify_all();
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.landed {
            let error = (self.on_abandon)();
            self.finish(Err(error));
        }
    }
}
