//! The watchdog: a thread per backend that cuts the connection of a call still waiting for the
//! server at its deadline.
//!
//! A call registers its connection's socket (see `socket.rs`) and deadline before each statement
//! and takes them back after; the registration is a lock and a slot, no system call. The thread
//! sleeps until the earliest deadline, or for the idle period when nothing is watched, and is
//! woken early only by a call whose deadline comes before its next wake-up. At a deadline it
//! shuts the socket down: the driver, blocked reading, reads end-of-file and returns, and the
//! call reports that it was cut. A socket is shut down only while its call is registered, that
//! is while the connection is alive and in use.

use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The thread of one backend, started by the first call it watches; it ends when the backend
/// is dropped.
#[derive(Debug)]
pub(crate) struct Watchdog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// How long the thread sleeps when nothing is watched. A call that registers a deadline at
    /// least this far ahead does not need to wake it.
    idle: Duration,
}

#[derive(Debug, Default)]
struct State {
    /// The calls being watched; a `None` slot is free, and listed in `free`.
    slots: Vec<Option<Watched>>,
    free: Vec<usize>,
    /// When the thread wakes up next; `None` when it is not running.
    wake_at: Option<Instant>,
    running: bool,
    closed: bool,
}

#[derive(Debug)]
struct Watched {
    deadline: Instant,
    socket: Arc<TcpStream>,
    cut: bool,
}

/// One statement being watched: dropping it, or [`finish`](Watch::finish), ends the watch.
#[derive(Debug)]
pub(crate) struct Watch<'a> {
    dog: &'a Watchdog,
    slot: Option<usize>,
}

impl Watchdog {
    /// A watchdog whose thread, when nothing is watched, wakes every `idle`.
    pub(crate) fn new(idle: Duration) -> Self {
        Watchdog {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                idle,
            }),
        }
    }

    /// Watches the statement about to run on `socket` (none: nothing to cut, nothing to do) until
    /// `deadline`.
    pub(crate) fn watch(&self, socket: Option<&Arc<TcpStream>>, deadline: Instant) -> Watch<'_> {
        let Some(socket) = socket else {
            return Watch {
                dog: self,
                slot: None,
            };
        };
        let mut state = self.shared.lock();
        if !state.running && !self.start(&mut state) {
            return Watch {
                dog: self,
                slot: None,
            };
        }
        let watched = Watched {
            deadline,
            socket: Arc::clone(socket),
            cut: false,
        };
        let slot = match state.free.pop() {
            Some(slot) => {
                state.slots[slot] = Some(watched);
                slot
            }
            None => {
                state.slots.push(Some(watched));
                state.slots.len() - 1
            }
        };
        if state.wake_at.is_none_or(|at| deadline < at) {
            self.shared.wake.notify_one();
        }
        Watch {
            dog: self,
            slot: Some(slot),
        }
    }

    /// Starts the thread; `false`, logged, when the system refuses one.
    fn start(&self, state: &mut State) -> bool {
        let shared = Arc::clone(&self.shared);
        let started = std::thread::Builder::new()
            .name("kvcache-sql-watchdog".to_owned())
            .spawn(move || shared.patrol());
        match started {
            Ok(_) => {
                state.running = true;
                true
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "no watchdog thread: calls are bounded by the server's timeouts only"
                );
                false
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The thread: cuts what is due, then sleeps until the next deadline.
    fn patrol(&self) {
        let mut state = self.lock();
        while !state.closed {
            let now = Instant::now();
            let mut next = now + self.idle;
            for watched in state.slots.iter_mut().flatten() {
                if watched.cut {
                    continue;
                }
                if watched.deadline <= now {
                    // An error means the socket is closed already: nothing is waiting on it.
                    let _ = watched.socket.shutdown(Shutdown::Both);
                    watched.cut = true;
                } else {
                    next = next.min(watched.deadline);
                }
            }
            state.wake_at = Some(next);
            state = self
                .wake
                .wait_timeout(state, next.saturating_duration_since(now))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Watch<'_> {
    /// Ends the watch: whether the watchdog cut the connection, which is then unusable.
    pub(crate) fn finish(mut self) -> bool {
        self.release()
    }

    fn release(&mut self) -> bool {
        let Some(slot) = self.slot.take() else {
            return false;
        };
        let mut state = self.dog.shared.lock();
        let watched = state.slots[slot].take();
        state.free.push(slot);
        watched.is_some_and(|watched| watched.cut)
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    fn connected() -> (Arc<TcpStream>, TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let duplicate = client.try_clone().unwrap();
        (Arc::new(duplicate), client, server)
    }

    #[test]
    fn a_read_that_outlives_its_deadline_is_cut_at_it() {
        let dog = Watchdog::new(Duration::from_secs(60));
        let (socket, mut client, _server) = connected();
        let started = Instant::now();
        let watch = dog.watch(Some(&socket), started + Duration::from_millis(100));
        let mut buffer = [0; 1];
        assert_eq!(client.read(&mut buffer).unwrap(), 0, "end of file");
        let took = started.elapsed();
        assert!(watch.finish(), "reported as cut");
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(300),
            "cut after {took:?}"
        );
    }

    #[test]
    fn a_statement_done_in_time_is_left_alone() {
        let dog = Watchdog::new(Duration::from_millis(10));
        let (socket, mut client, mut server) = connected();
        let first = dog.watch(Some(&socket), Instant::now() + Duration::from_millis(30));
        assert!(!first.finish());
        let second = dog.watch(Some(&socket), Instant::now() + Duration::from_millis(30));
        drop(second);
        std::thread::sleep(Duration::from_millis(60));
        server.write_all(b"x").unwrap();
        let mut buffer = [0; 1];
        assert_eq!(
            client.read(&mut buffer).unwrap(),
            1,
            "the socket still works"
        );
        let state = dog.shared.lock();
        assert_eq!(state.slots.iter().flatten().count(), 0);
        assert_eq!(state.free.len(), state.slots.len(), "slots are reused");
    }

    #[test]
    fn nothing_to_cut_starts_no_thread() {
        let dog = Watchdog::new(Duration::from_secs(1));
        assert!(!dog.watch(None, Instant::now()).finish());
        assert!(!dog.shared.lock().running);
    }
}
