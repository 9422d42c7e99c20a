//! Single flight: concurrent misses on one key, from threads and tasks alike, run the generator
//! once; the others wait for its outcome without holding a thread (tasks) or while parked
//! (threads).

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use event_listener::{Event, Listener};

use crate::error::Error;

/// What the leader of a flight hands its waiters: the encoded value, or its error.
pub(crate) type Outcome = Result<Arc<[u8]>, Error>;

/// The flights under way in one container, by key.
#[derive(Default)]
pub(crate) struct Flights {
    by_key: Mutex<HashMap<String, Arc<Flight>>>,
    /// How many flights have landed: a caller that read it before its look-up and finds it
    /// unchanged when it leads knows no value was generated in between.
    landed: AtomicU64,
    /// Runs between a landing's two steps, to drive the interleaving the order guards against.
    #[cfg(test)]
    between_steps: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

/// One key's generation under way.
#[derive(Debug, Default)]
pub(crate) struct Flight {
    outcome: OnceLock<Outcome>,
    landed: Event,
}

/// A caller's part in a flight.
pub(crate) enum Role {
    /// No one was generating this key: the caller generates and must [`Leader::land`].
    Leader(Leader),
    /// Someone else is generating it: wait for their outcome.
    Waiter(Arc<Flight>),
}

/// The caller that generates; it may hand itself to a task that goes on when the caller stops
/// waiting. Dropped without landing (its generator panicked, or its task was dropped with its
/// runtime), it releases the waiters with the error `abandoned` makes.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: String,
    flight: Arc<Flight>,
    abandoned: Option<Box<dyn FnOnce() -> Error + Send>>,
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

    /// Whether a flight for `key` is under way.
    pub(crate) fn under_way(&self, key: &str) -> bool {
        lock(&self.by_key).contains_key(key)
    }

    /// Joins the flight for `key`, or starts one. A caller that leads calls `abandoned` for
    /// what makes the error its waiters get if it is dropped without landing; a waiter pays
    /// nothing for it.
    pub(crate) fn join<A>(self: &Arc<Self>, key: &str, abandoned: impl FnOnce() -> A) -> Role
    where
        A: FnOnce() -> Error + Send + 'static,
    {
        let mut by_key = lock(&self.by_key);
        if let Some(flight) = by_key.get(key) {
            return Role::Waiter(Arc::clone(flight));
        }
        let flight = Arc::new(Flight::default());
        by_key.insert(key.to_owned(), Arc::clone(&flight));
        drop(by_key);
        Role::Leader(Leader {
            flights: Arc::clone(self),
            key: key.to_owned(),
            flight,
            abandoned: Some(Box::new(abandoned())),
        })
    }
}

impl Flight {
    /// Blocks the calling thread until the leader lands.
    pub(crate) fn wait(&self) -> Outcome {
        loop {
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            let listener = self.landed.listen();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            listener.wait();
        }
    }

    /// Waits, holding no thread, until the leader lands.
    pub(crate) async fn landed(&self) -> Outcome {
        loop {
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            let listener = self.landed.listen();
            if let Some(outcome) = self.outcome.get() {
                return outcome.clone();
            }
            listener.await;
        }
    }
}

impl Leader {
    /// The key it generates.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// The flight its waiters wait on; the leader's own caller waits on it too when the
    /// generation runs in a task of its own.
    pub(crate) fn flight(&self) -> Arc<Flight> {
        Arc::clone(&self.flight)
    }

    /// Ends the flight: later callers start afresh, the waiters get `outcome`.
    pub(crate) fn land(mut self, outcome: Outcome) {
        self.finish(outcome);
    }

    fn finish(&mut self, outcome: Outcome) {
        self.abandoned = None;
        // Counted before the flight leaves the map: a caller that finds no flight after the
        // removal then sees the count changed and looks the key up again instead of generating.
        self.flights.landed.fetch_add(1, Ordering::AcqRel);
        #[cfg(test)]
        if let Some(hook) = lock(&self.flights.between_steps).as_mut() {
            hook();
        }
        lock(&self.flights.by_key).remove(&self.key);
        // Set once: `finish` runs once per leader, from `land` or from `drop`.
        let _ = self.flight.outcome.set(outcome);
        self.flight.landed.notify(usize::MAX);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(abandoned) = self.abandoned.take() {
            let error = abandoned();
            self.finish(Err(error));
        }
    }
}

impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("under_way", &lock(&self.by_key).len())
            .field("landed", &self.landed())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{Flights, Role, lock};
    use crate::error::Error;

    fn abandoned() -> fn() -> Error {
        || Error::config("test", "abandoned")
    }

    /// A caller read the count and missed before the leader stored its value, and joins between
    /// the two steps of the landing. It must either wait for the flight or see the count changed
    /// (and so look again): never lead with the count unchanged, which generates the key twice.
    #[test]
    fn a_caller_joining_during_a_landing_never_generates_again() {
        let flights = Arc::new(Flights::default());
        let read_before_look_up = flights.landed();
        let Role::Leader(leader) = flights.join("k", abandoned) else {
            panic!("the first caller leads");
        };
        let generates_again = Arc::new(AtomicBool::new(false));
        let (joining, seen) = (Arc::clone(&flights), Arc::clone(&generates_again));
        *lock(&flights.between_steps) = Some(Box::new(move || {
            if let Role::Leader(late) = joining.join("k", abandoned) {
                seen.store(joining.landed() == read_before_look_up, Ordering::SeqCst);
                std::mem::forget(late);
            }
        }));
        leader.land(Ok(Arc::from(&b"value"[..])));
        *lock(&flights.between_steps) = None;
        assert!(!generates_again.load(Ordering::SeqCst));
    }

    #[test]
    fn a_dropped_leader_releases_its_waiters_with_the_abandoned_error() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join("k", abandoned) else {
            panic!("the first caller leads");
        };
        let Role::Waiter(flight) = flights.join("k", abandoned) else {
            panic!("the second caller waits");
        };
        drop(leader);
        let error = flight.wait().unwrap_err();
        assert!(error.to_string().contains("abandoned"), "{error}");
        assert!(matches!(flights.join("k", abandoned), Role::Leader(_)));
    }
}
